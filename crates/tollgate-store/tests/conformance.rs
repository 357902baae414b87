//! Runs the shared conformance suite against every backend of this crate. Adding a backend is
//! one `make_*` function and one `conformance_suite!` line.

use std::sync::Arc;

use tollgate_store::conformance::Subject;
use tollgate_store::redis_server::RedisServer;
use tollgate_store::{
    Durability, ManualClock, MemoryStore, RedisOptions, RedisStore, SqliteOptions, SqliteStore,
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

tollgate_store::conformance_suite!(memory_backend, memory);
tollgate_store::conformance_suite!(sqlite_always_backend, sqlite_always);
tollgate_store::conformance_suite!(sqlite_batch_backend, sqlite_batch);
tollgate_store::conformance_suite!(redis_backend, redis);
