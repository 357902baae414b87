//! Runs the shared queue conformance suite against every queue backend of this crate. Adding a
//! backend is one `make_*` function and one `queue_conformance_suite!` line.

use std::sync::Arc;

use tollgate_store::queue_conformance::QueueSubject;
use tollgate_store::redis_server::{patient_options, RedisCluster, RedisServer, TestPki};
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

/// Over TLS (`rediss://`), trusting the private CA that signed the server's certificate.
async fn redis_tls(clock: Arc<ManualClock>) -> QueueSubject {
    let pki = TestPki::generate().unwrap_or_else(|e| panic!("{e}"));
    let server = RedisServer::start_tls(&pki, false).unwrap_or_else(|e| panic!("{e}"));
    let target = server
        .tls_target(&pki, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let queue = RedisQueue::connect_to(&target, patient_options(clock))
        .await
        .unwrap_or_else(|e| panic!("connect to the private TLS redis-server: {e}"));
    QueueSubject::new(queue).keep_alive((server, pki))
}

/// Each case gets its own private three-primary Redis Cluster, so routes, event ids and the
/// queue's metadata land on different nodes.
async fn redis_cluster(clock: Arc<ManualClock>) -> QueueSubject {
    let cluster = RedisCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let target = cluster.target().unwrap_or_else(|e| panic!("{e}"));
    let queue = RedisQueue::connect_to(&target, patient_options(clock))
        .await
        .unwrap_or_else(|e| panic!("connect to the private cluster: {e}"));
    QueueSubject::new(queue).keep_alive(cluster)
}

tollgate_store::queue_conformance_suite!(memory_queue, memory);
tollgate_store::queue_conformance_suite!(sqlite_always_queue, sqlite_always);
tollgate_store::queue_conformance_suite!(sqlite_batch_queue, sqlite_batch);
tollgate_store::queue_conformance_suite!(redis_queue, redis);
tollgate_store::queue_conformance_suite!(redis_tls_queue, redis_tls);
tollgate_store::queue_conformance_suite!(redis_cluster_queue, redis_cluster);
