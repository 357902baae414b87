//! The SQLite queue's cost per event in the gateway's steady state: 64 tasks enqueue N events
//! shaped like the bench's Twilio webhooks (78-byte `sha256` ids, the headers the gateway stores,
//! an 806-byte body) while a delivery loop leases up to 16 at a time into 64 slots and acks each
//! from its own task, as the delivery workers do against an upstream that answers at once.
//!
//! ```text
//! cargo run --release -p tollgate-store --example queue_cycle -- [N] [batch|always]
//! ```
//!
//! Prints the wall time, the process CPU time per event (user + system) and the bytes written
//! to files and sockets per event (`wchar`), so writer changes can be compared without the
//! HTTP side and its noise. Linux only (reads `/proc/self`).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tollgate_store::{Durability, Enqueued, EventQueue, QueuedEvent, Settled, SqliteQueue};

const PRODUCERS: usize = 64;
const SLOTS: usize = 64;
const LEASE_BATCH: usize = 16;

fn event(i: usize) -> QueuedEvent {
    use std::fmt::Write;
    let mut id = String::from("twilio:sha256:");
    // Spread like digests: consecutive events land far apart in the id index.
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..4 {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let _ = write!(id, "{x:016x}");
    }
    let h = |k: &str, v: &str| (k.to_owned(), v.as_bytes().to_vec());
    QueuedEvent {
        id,
        route: "twilio".into(),
        method: "POST".into(),
        url: "https://hooks.example.com/hooks/twilio".into(),
        headers: vec![
            h(":target", "/hooks/twilio"),
            h("content-type", "application/x-www-form-urlencoded"),
            h("x-twilio-signature", "l2lQ9i0TAqcF5czXQKIF/UDrHwM="),
            h(
                "i-twilio-idempotency-token",
                &format!("bench-s30842-{i:09}"),
            ),
            h("x-forwarded-for", "127.0.0.1"),
            h("x-forwarded-proto", "https"),
            h("x-forwarded-host", "hooks.example.com"),
            h("tollgate-verified", "provider=twilio; key=bench"),
        ],
        body: format!("CallSid=CA{i:032x}&{}", "AccountSid=AC0&x=".repeat(46)).into_bytes(),
        received_at_ms: 1_700_000_000_000,
        order_key: None,
    }
}

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the comm.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn wchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: ")?.parse().ok())
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(100_000, |s| s.parse().unwrap());
    let durability = match args.next().as_deref() {
        Some("always") => Durability::Always,
        _ => Durability::Batch,
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteQueue::open(dir.path().join("queue.db"), durability).unwrap());
    let queue: Arc<dyn EventQueue> = sqlite.clone();
    let events: Vec<QueuedEvent> = (0..n).map(event).collect();
    let events = Arc::new(events);
    let (cpu0, w0, start) = (cpu_secs(), wchar(), Instant::now());

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = Arc::clone(&queue);
            let events = Arc::clone(&events);
            tokio::spawn(async move {
                for e in events.iter().skip(p).step_by(PRODUCERS) {
                    assert_eq!(queue.enqueue(e).await.unwrap(), Enqueued::New);
                }
            })
        })
        .collect();
    let delivered = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(SLOTS));
    let wake = Arc::new(tokio::sync::Notify::new());
    while delivered.load(Ordering::Relaxed) < n as u64 {
        let free = slots.available_permits();
        if free < LEASE_BATCH.min(SLOTS) {
            wake.notified().await;
            continue;
        }
        let leases = queue
            .lease(None, free, Duration::from_secs(300))
            .await
            .unwrap();
        if leases.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for l in leases {
            let permit = Arc::clone(&slots).try_acquire_owned().unwrap();
            let queue = Arc::clone(&queue);
            let delivered = Arc::clone(&delivered);
            let wake = Arc::clone(&wake);
            tokio::spawn(async move {
                assert_eq!(queue.ack(&l).await.unwrap(), Settled::Applied);
                delivered.fetch_add(1, Ordering::Relaxed);
                drop(permit);
                wake.notify_one();
            });
        }
    }
    for p in producers {
        p.await.unwrap();
    }
    let (cpu, written, wall) = (cpu_secs() - cpu0, wchar() - w0, start.elapsed());
    println!(
        "{n} events in {:.2} s ({:.0}/s): CPU {:.1} µs/event, written {:.1} KiB/event",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        cpu * 1e6 / n as f64,
        written as f64 / 1024.0 / n as f64
    );
    drop(queue);
    // The last acks' tasks may still hold the queue for a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Ok(q) = Arc::try_unwrap(sqlite) {
        q.close().await;
    }
}
