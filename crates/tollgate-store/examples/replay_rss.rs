//! Resident memory of the embedded replay stores holding N completed events (default 300 000),
//! each answered with the same `<Response/>` as most webhook apps do, with keys shaped like the
//! gateway's (`<route>:id:<event id>`):
//!
//! ```text
//! cargo run --release -p tollgate-store --example replay_rss -- [memory|sqlite] [N]
//! ```
//!
//! Prints RSS before and after, and the difference per event. One store per process, so the
//! figures do not mix.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tollgate_store::{Durability, MemoryStore, ReplayStore, SqliteStore, StoredResponse};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "memory".into());
    let n: usize = args.next().map_or(300_000, |s| s.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let before = rss_kib();
    let store: std::sync::Arc<dyn ReplayStore> = match backend.as_str() {
        "memory" => std::sync::Arc::new(MemoryStore::new()),
        "sqlite" => std::sync::Arc::new(
            SqliteStore::open(dir.path().join("state.db"), Durability::Batch).unwrap(),
        ),
        other => panic!("unknown backend {other}"),
    };
    let answer = StoredResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), b"text/xml".to_vec()),
            ("date".into(), b"Mon, 23 Nov 2026 13:00:00 GMT".to_vec()),
        ],
        body: b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".to_vec(),
    };
    let start = Instant::now();
    // 64 concurrent callers, as a busy gateway has, so SQLite's group commit batches.
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let store = std::sync::Arc::clone(&store);
            let answer = answer.clone();
            tokio::spawn(async move {
                for i in (w..n).step_by(64) {
                    let key = format!("twilio-sms:id:SM{i:032x}");
                    store.claim(&key, Duration::from_secs(15)).await.unwrap();
                    store
                        .complete(&key, &answer, Duration::from_secs(86_400))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let after = rss_kib();
    println!(
        "{backend}: {n} events in {:.2} s ({:.0}/s); RSS {before} KiB -> {after} KiB: {:.1} bytes/event",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        (after.saturating_sub(before) * 1024) as f64 / n as f64
    );
}
