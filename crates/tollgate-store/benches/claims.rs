//! Claims per second for each backend: one caller at a time (latency-bound: each SQLite claim is
//! its own transaction) and 64 concurrent callers (what a busy gateway does; SQLite's writer then
//! commits many claims per transaction). Every claim is of a fresh key, so each one writes.
//! Redis runs on a private `redis-server` (no persistence) on loopback, so its figures are the
//! round trip plus one script, the floor of what a networked Redis gives.
// criterion_group! generates an undocumented public fn.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tollgate_store::redis_server::RedisServer;
use tollgate_store::{Claim, Durability, MemoryStore, RedisStore, ReplayStore, SqliteStore};

const LEASE: Duration = Duration::from_secs(30);
const TASKS: u64 = 64;

/// Distinct keys across all iterations and backends of one run.
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn fresh_key() -> String {
    format!("bench:{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed))
}

async fn claim_fresh(store: &dyn ReplayStore) {
    let claim = store.claim(&fresh_key(), LEASE).await;
    // A bench that silently measured errors would report nonsense speeds.
    assert!(matches!(claim, Ok(Claim::Claimed)), "{claim:?}");
}

async fn sequential(store: &dyn ReplayStore, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        claim_fresh(store).await;
    }
    start.elapsed()
}

async fn concurrent(store: Arc<dyn ReplayStore>, iters: u64) -> Duration {
    let per_task = iters.div_ceil(TASKS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    claim_fresh(&*store).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("claim task");
    }
    // Report time per claim as if exactly `iters` claims had run.
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * TASKS) as f64)
}

fn claims(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let redis_server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let redis = rt
        .block_on(RedisStore::connect(
            &redis_server.url(),
            Arc::new(tollgate_store::SystemClock),
        ))
        .expect("connect to the private redis-server");
    let backends: Vec<(&str, Arc<dyn ReplayStore>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        (
            "sqlite_always",
            Arc::new(
                SqliteStore::open(dir.path().join("always.db"), Durability::Always)
                    .expect("open SQLite"),
            ),
        ),
        (
            "sqlite_batch",
            Arc::new(
                SqliteStore::open(dir.path().join("batch.db"), Durability::Batch)
                    .expect("open SQLite"),
            ),
        ),
        ("redis", Arc::new(redis)),
    ];

    let mut group = c.benchmark_group("claims");
    group.throughput(Throughput::Elements(1));
    for (name, store) in &backends {
        group.bench_function(BenchmarkId::new("sequential", name), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| sequential(&**store, iters))
        });
        group.bench_function(BenchmarkId::new("concurrent_64", name), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| concurrent(Arc::clone(store), iters))
        });
    }
    group.finish();
    // The server outlives every measurement that uses it.
    drop(backends);
    drop(redis_server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = claims
}
criterion_main!(benches);
