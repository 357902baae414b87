//! Queue throughput per backend. `enqueue/concurrent_64`: durable enqueues per second with 64
//! concurrent callers, what the gateway does under load (each acknowledgement to a provider waits
//! for one); SQLite's writer then commits many enqueues per transaction and fsync. `lease_ack`:
//! events per second that 16 delivery workers lease (16 at a time) and ack (concurrently, as a
//! worker delivering its batch in parallel would), with a no-op upstream: the queue's own ceiling
//! on delivery throughput.
//!
//! Redis runs on private `redis-server`s on loopback: `redis` without persistence (the round trips
//! and scripts alone), `redis_aof_always` with `appendonly yes` + `appendfsync always` (every
//! write on disk before the reply, the setting that matches `sqlite_always`).
// criterion_group! generates an undocumented public fn.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tollgate_store::redis_server::{Persistence, RedisServer};
use tollgate_store::{
    Durability, Enqueued, EventQueue, MemoryQueue, QueuedEvent, RedisOptions, RedisQueue, Settled,
    SqliteQueue,
};

const TASKS: u64 = 64;
const WORKERS: u64 = 16;
const LEASE: Duration = Duration::from_secs(300);

/// Distinct ids across all iterations and backends of one run.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A Twilio-status-callback-sized event.
fn fresh_event() -> QueuedEvent {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    QueuedEvent {
        id: format!("evt-{n}"),
        route: "twilio-status".into(),
        method: "POST".into(),
        url: "https://hooks.example.com/twilio/status".into(),
        headers: vec![
            (
                "content-type".into(),
                b"application/x-www-form-urlencoded".to_vec(),
            ),
            (
                "x-twilio-signature".into(),
                b"0mL6KJ5Fy6Pp7VAGj7nTkq2gYfQ=".to_vec(),
            ),
            ("user-agent".into(), b"TwilioProxy/1.1".to_vec()),
        ],
        body: format!(
            "AccountSid=AC0123456789abcdef&CallSid=CA{n:032}&CallStatus=completed&\
             CallDuration=42&From=%2B15551230000&To=%2B15559870000&ApiVersion=2010-04-01&{}",
            "x".repeat(300)
        )
        .into_bytes(),
        received_at_ms: 1_700_000_000_000,
        order_key: None,
    }
}

async fn enqueue_fresh(queue: &dyn EventQueue) {
    let r = queue.enqueue(&fresh_event()).await;
    // A bench that silently measured errors would report nonsense speeds.
    assert!(matches!(r, Ok(Enqueued::New)), "{r:?}");
}

async fn enqueue_concurrent(queue: Arc<dyn EventQueue>, iters: u64) -> Duration {
    let per_task = iters.div_ceil(TASKS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    enqueue_fresh(&*queue).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("enqueue task");
    }
    // Report time per enqueue as if exactly `iters` had run.
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * TASKS) as f64)
}

async fn lease_ack(queue: Arc<dyn EventQueue>, iters: u64) -> Duration {
    // Filling is not measured; 64 concurrent enqueuers make it quick.
    enqueue_concurrent(Arc::clone(&queue), iters).await;
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                let mut done = 0u64;
                loop {
                    let batch = queue.lease(None, 16, LEASE).await.expect("lease");
                    if batch.is_empty() {
                        return done;
                    }
                    done += batch.len() as u64;
                    // A worker delivers its batch concurrently and acks each as it completes,
                    // so acks of all workers share the writer's transactions.
                    let mut acks = tokio::task::JoinSet::new();
                    for l in batch {
                        let queue = Arc::clone(&queue);
                        acks.spawn(async move {
                            assert_eq!(queue.ack(&l).await.expect("ack"), Settled::Applied);
                        });
                    }
                    while let Some(r) = acks.join_next().await {
                        r.expect("ack task");
                    }
                }
            })
        })
        .collect();
    let mut done = 0;
    for w in workers {
        done += w.await.expect("worker");
    }
    let elapsed = start.elapsed();
    assert!(done >= iters, "delivered {done} of {iters}");
    elapsed.mul_f64(iters as f64 / done as f64)
}

fn queue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // On the target directory's disk, so fsync means what it means in production.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    let redis_plain = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let redis_aof =
        RedisServer::start_with(Persistence::AppendFsyncAlways).unwrap_or_else(|e| panic!("{e}"));
    let redis_queue = |server: &RedisServer| -> Arc<dyn EventQueue> {
        Arc::new(
            rt.block_on(RedisQueue::connect(&server.url(), RedisOptions::new()))
                .expect("connect to the private redis-server"),
        )
    };
    let backends: Vec<(&str, Arc<dyn EventQueue>)> = vec![
        ("memory", Arc::new(MemoryQueue::new())),
        (
            "sqlite_batch",
            Arc::new(
                SqliteQueue::open(dir.path().join("batch.db"), Durability::Batch)
                    .expect("open SQLite"),
            ),
        ),
        (
            "sqlite_always",
            Arc::new(
                SqliteQueue::open(dir.path().join("always.db"), Durability::Always)
                    .expect("open SQLite"),
            ),
        ),
        ("redis", redis_queue(&redis_plain)),
        ("redis_aof_always", redis_queue(&redis_aof)),
    ];

    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(1));
    for (name, queue) in &backends {
        group.bench_function(BenchmarkId::new("enqueue_concurrent_64", name), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| enqueue_concurrent(Arc::clone(queue), iters))
        });
        group.bench_function(BenchmarkId::new("lease16_ack_x16_workers", name), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| lease_ack(Arc::clone(queue), iters))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = queue
}
criterion_main!(benches);
