//! Runs the shared conformance suite against every backend of this crate. Adding a backend is
//! one `make_*` function and one `conformance_suite!` line.

use std::sync::Arc;
use std::time::Duration;

use tollgate_store::conformance::{Reopenable, Subject};
use tollgate_store::redis_server::{patient_options, private_target, Private, RedisServer};
use tollgate_store::{
    Durability, ManualClock, MemoryStore, RedisOptions, RedisStore, ReplayStore, SqliteOptions,
    SqliteStore,
};

async fn memory(clock: Arc<ManualClock>) -> Subject {
    Subject::new(MemoryStore::with_clock(clock))
}

fn sqlite(clock: Arc<ManualClock>, durability: Durability) -> Subject {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open_with(
        dir.path().join("state.db"),
        SqliteOptions::new(durability).with_clock(clock),
    )
    .expect("open SQLite store");
    Subject::new(store).keep_alive(dir)
}

async fn sqlite_always(clock: Arc<ManualClock>) -> Subject {
    sqlite(clock, Durability::Always)
}

async fn sqlite_batch(clock: Arc<ManualClock>) -> Subject {
    sqlite(clock, Durability::Batch)
}

/// Each case gets its own private redis-server, so cases cannot see each other's keys.
async fn redis(clock: Arc<ManualClock>) -> Subject {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = RedisStore::connect_with(&server.url(), RedisOptions::new().with_clock(clock))
        .await
        .unwrap_or_else(|e| panic!("connect to the private redis-server: {e}"));
    Subject::new(store).keep_alive(server)
}

/// A private TLS server or cluster (each case its own, so cases cannot see each other's keys).
async fn redis_private(kind: Private, clock: Arc<ManualClock>) -> Subject {
    let (target, keep) = private_target(kind).unwrap_or_else(|e| panic!("{e}"));
    let store = RedisStore::connect_to(&target, patient_options(clock))
        .await
        .unwrap_or_else(|e| panic!("connect to the private {kind:?} Redis: {e}"));
    Subject::new(store).keep_alive(keep)
}

/// Over TLS (`rediss://`), trusting the private CA that signed the server's certificate.
async fn redis_tls(clock: Arc<ManualClock>) -> Subject {
    redis_private(Private::Tls, clock).await
}

/// A three-primary Redis Cluster, so keys land on every node.
async fn redis_cluster(clock: Arc<ManualClock>) -> Subject {
    redis_private(Private::Cluster, clock).await
}

tollgate_store::conformance_suite!(memory_backend, memory);
tollgate_store::conformance_suite!(sqlite_always_backend, sqlite_always);
tollgate_store::conformance_suite!(sqlite_batch_backend, sqlite_batch);
tollgate_store::conformance_suite!(redis_backend, redis);
tollgate_store::conformance_suite!(redis_tls_backend, redis_tls);
tollgate_store::conformance_suite!(redis_cluster_backend, redis_cluster);

/// Reopens one file, with a short lock wait so the refused-second-owner case is quick (a dropped
/// owner's writer thread releases the lock within milliseconds).
fn sqlite_file(clock: Arc<ManualClock>, durability: Durability) -> Reopenable {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("state.db");
    let mut options = SqliteOptions::new(durability).with_clock(clock);
    options.busy_timeout = Duration::from_millis(300);
    Reopenable::new(
        move || {
            SqliteStore::open_with(&path, options.clone())
                .map(|s| Arc::new(s) as Arc<dyn ReplayStore>)
        },
        dir,
    )
}

async fn sqlite_always_file(clock: Arc<ManualClock>) -> Reopenable {
    sqlite_file(clock, Durability::Always)
}

async fn sqlite_batch_file(clock: Arc<ManualClock>) -> Reopenable {
    sqlite_file(clock, Durability::Batch)
}

tollgate_store::restart_conformance_suite!(sqlite_always_restart, sqlite_always_file);
tollgate_store::restart_conformance_suite!(sqlite_batch_restart, sqlite_batch_file);
