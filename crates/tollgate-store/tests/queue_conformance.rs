//! Runs the shared queue conformance suite against every queue backend of this crate. Adding a
//! backend is one `make_*` function and one `queue_conformance_suite!` line.

use std::sync::Arc;

use tollgate_store::queue_conformance::QueueSubject;
use tollgate_store::redis_server::{patient_options, private_target, Private, RedisServer};
use tollgate_store::{
    Durability, ManualClock, MemoryQueue, QueueOptions, RedisOptions, RedisQueue, SqliteQueue,
};

async fn memory(clock: Arc<ManualClock>) -> QueueSubject {
    QueueSubject::new(MemoryQueue::with_clock(clock))
}

fn sqlite(clock: Arc<ManualClock>, durability: Durability) -> QueueSubject {
    let dir = tempfile::tempdir().expect("temporary directory");
    let queue = SqliteQueue::open_with(
        dir.path().join("queue.db"),
        QueueOptions::new(durability).with_clock(clock),
    )
    .expect("open SQLite queue");
    QueueSubject::new(queue).keep_alive(dir)
}

async fn sqlite_always(clock: Arc<ManualClock>) -> QueueSubject {
    sqlite(clock, Durability::Always)
}

async fn sqlite_batch(clock: Arc<ManualClock>) -> QueueSubject {
    sqlite(clock, Durability::Batch)
}

/// Each case gets its own private redis-server, so cases cannot see each other's keys.
async fn redis(clock: Arc<ManualClock>) -> QueueSubject {
    let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let queue = RedisQueue::connect(&server.url(), RedisOptions::new().with_clock(clock))
        .await
        .unwrap_or_else(|e| panic!("connect to the private redis-server: {e}"));
    QueueSubject::new(queue).keep_alive(server)
}

/// A private TLS server or cluster (each case its own, so cases cannot see each other's keys).
async fn redis_private(kind: Private, clock: Arc<ManualClock>) -> QueueSubject {
    let (target, keep) = private_target(kind).unwrap_or_else(|e| panic!("{e}"));
    let queue = RedisQueue::connect_to(&target, patient_options(clock))
        .await
        .unwrap_or_else(|e| panic!("connect to the private {kind:?} Redis: {e}"));
    QueueSubject::new(queue).keep_alive(keep)
}

/// Over TLS (`rediss://`), trusting the private CA that signed the server's certificate.
async fn redis_tls(clock: Arc<ManualClock>) -> QueueSubject {
    redis_private(Private::Tls, clock).await
}

/// A three-primary Redis Cluster, so keys land on every node.
async fn redis_cluster(clock: Arc<ManualClock>) -> QueueSubject {
    redis_private(Private::Cluster, clock).await
}

tollgate_store::queue_conformance_suite!(memory_queue, memory);
tollgate_store::queue_conformance_suite!(sqlite_always_queue, sqlite_always);
tollgate_store::queue_conformance_suite!(sqlite_batch_queue, sqlite_batch);
tollgate_store::queue_conformance_suite!(redis_queue, redis);
tollgate_store::queue_conformance_suite!(redis_tls_queue, redis_tls);
tollgate_store::queue_conformance_suite!(redis_cluster_queue, redis_cluster);
