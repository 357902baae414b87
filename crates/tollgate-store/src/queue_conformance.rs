//! The behaviour every [`EventQueue`] backend must show, written once and run against each
//! backend (enabled by the `conformance` feature), like the replay store's
//! [`conformance`](crate::conformance).
//!
//! A backend's test file makes a [`QueueSubject`] from a [`ManualClock`] and invokes
//! [`queue_conformance_suite!`](crate::queue_conformance_suite) once; each case becomes its own
//! `#[tokio::test]`, so a failure names the case and the backend:
//!
//! ```text
//! async fn memory(clock: Arc<ManualClock>) -> QueueSubject {
//!     QueueSubject::new(MemoryQueue::with_clock(clock))
//! }
//! tollgate_store::queue_conformance_suite!(memory_queue, memory);
//! ```
//!
//! Time only moves when a case advances the clock, so a backend must take "now" from the clock it
//! was given.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Barrier;

use crate::clock::{Clock, ManualClock};
use crate::conformance::START_MS;
use crate::queue::{
    Enqueued, EventQueue, EventStatus, Leased, ListFilter, QueueEntry, QueuedEvent, Settled,
    Settlement,
};

const LEASE: Duration = Duration::from_secs(30);

/// A backend under test, plus whatever must live as long as it (a temporary directory, a server).
pub struct QueueSubject {
    /// The queue.
    pub queue: Arc<dyn EventQueue>,
    _keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl QueueSubject {
    /// Wraps a queue.
    pub fn new(queue: impl EventQueue) -> Self {
        Self {
            queue: Arc::new(queue),
            _keep_alive: None,
        }
    }

    /// Keeps `guard` alive until the case ends (dropped after the queue).
    pub fn keep_alive(mut self, guard: impl Any + Send + Sync) -> Self {
        self._keep_alive = Some(Box::new(guard));
        self
    }
}

/// Expands to one `#[tokio::test]` per queue conformance case inside `mod $name`, each building
/// its queue with `$make` (an `async fn(Arc<ManualClock>) -> QueueSubject` in the enclosing
/// module).
#[macro_export]
macro_rules! queue_conformance_suite {
    ($name:ident, $make:ident) => {
        $crate::queue_conformance_suite!(@cases $name, $make;
            enqueue_lease_ack,
            duplicate_enqueue_is_a_noop,
            lease_respects_next_attempt_at,
            expired_lease_returns_the_event,
            stale_settlements_are_ignored,
            late_settlement_of_an_unclaimed_lease_applies,
            lease_filters_by_route_and_max,
            order_key_lines_deliver_one_at_a_time_in_order,
            order_key_line_waits_for_its_head_retry,
            concurrent_leasers_keep_every_line_in_order,
            retry_increments_attempts_and_keeps_the_error,
            settle_many_settles_each_in_order,
            dead_letter_requeue_remove,
            list_filters,
            stats_per_route,
            purge_delivered_keeps_the_rest,
            concurrent_enqueuers,
            concurrent_duplicate_enqueues_store_once,
            binary_bodies_and_headers_intact,
            ping_answers_while_the_backend_is_up,
        );
    };
    (@cases $name:ident, $make:ident; $($case:ident),* $(,)?) => {
        mod $name {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let clock = $crate::clock::ManualClock::new($crate::conformance::START_MS);
                    let subject = super::$make(::std::sync::Arc::clone(&clock)).await;
                    $crate::queue_conformance::$case(&subject, &clock).await;
                }
            )*
        }
    };
}

/// A plain event on `route` with id `id`.
pub fn event(id: &str, route: &str) -> QueuedEvent {
    QueuedEvent {
        id: id.to_owned(),
        route: route.to_owned(),
        method: "POST".to_owned(),
        url: format!("https://hooks.example.com/{route}"),
        headers: vec![(
            "content-type".to_owned(),
            b"application/x-www-form-urlencoded".to_vec(),
        )],
        body: format!("CallSid=CA1&Event={id}").into_bytes(),
        received_at_ms: START_MS,
        order_key: None,
    }
}

/// An event whose every field could be mangled in storage: non-UTF-8 and NUL bytes in header
/// values, duplicate header names in order, a body of every byte value, unicode id, route and key.
pub fn awkward_event(id: &str) -> QueuedEvent {
    QueuedEvent {
        id: id.to_owned(),
        route: "röute/日本".to_owned(),
        method: "PUT".to_owned(),
        url: "https://h.example/p?q=%00&x=é".to_owned(),
        headers: vec![
            (
                "x-raw".to_owned(),
                vec![0xff, 0xfe, 0x00, 0x80, b'\r', b'\n'],
            ),
            ("x-raw".to_owned(), Vec::new()),
            ("X-Twilio-Signature".to_owned(), b"abc+/=".to_vec()),
        ],
        body: (0..=255u8).chain((0..=255u8).rev()).collect(),
        received_at_ms: START_MS - 1,
        order_key: Some("ключ\0🙂".to_owned()),
    }
}

async fn enqueue(s: &QueueSubject, e: &QueuedEvent) -> Enqueued {
    s.queue
        .enqueue(e)
        .await
        .unwrap_or_else(|err| panic!("enqueue({:?}) failed: {err}", e.id))
}

async fn lease(s: &QueueSubject, route: Option<&str>, max: usize) -> Vec<Leased> {
    s.queue
        .lease(route, max, LEASE)
        .await
        .unwrap_or_else(|err| panic!("lease failed: {err}"))
}

fn ids(leased: &[Leased]) -> Vec<&str> {
    leased.iter().map(|l| l.event.id.as_str()).collect()
}

async fn ack(s: &QueueSubject, l: &Leased) -> Settled {
    s.queue
        .ack(l)
        .await
        .unwrap_or_else(|err| panic!("ack({:?}) failed: {err}", l.event.id))
}

async fn retry(s: &QueueSubject, l: &Leased, at_ms: u64, error: &str) -> Settled {
    s.queue
        .retry(l, at_ms, error)
        .await
        .unwrap_or_else(|err| panic!("retry({:?}) failed: {err}", l.event.id))
}

async fn dead_letter(s: &QueueSubject, l: &Leased, error: &str) -> Settled {
    s.queue
        .dead_letter(l, error)
        .await
        .unwrap_or_else(|err| panic!("dead_letter({:?}) failed: {err}", l.event.id))
}

async fn get(s: &QueueSubject, id: &str) -> Option<QueueEntry> {
    s.queue
        .get(id)
        .await
        .unwrap_or_else(|err| panic!("get({id:?}) failed: {err}"))
}

async fn status(s: &QueueSubject, id: &str) -> Option<EventStatus> {
    get(s, id).await.map(|e| e.status)
}

/// The basic life: enqueue, lease (once), ack, and it is delivered and never leased again.
pub async fn enqueue_lease_ack(s: &QueueSubject, _clock: &ManualClock) {
    let e = event("evt-1", "voice");
    assert_eq!(enqueue(s, &e).await, Enqueued::New);
    let entry = get(s, "evt-1").await.expect("enqueued event");
    assert_eq!(entry.status, EventStatus::Pending);
    assert_eq!(entry.attempts, 0);
    assert_eq!(entry.event, e);

    let leased = lease(s, None, 10).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].event, e);
    assert_eq!(leased[0].attempts, 1);
    assert_eq!(leased[0].lease_until_ms, START_MS + 30_000);
    assert_eq!(status(s, "evt-1").await, Some(EventStatus::Leased));
    assert!(lease(s, None, 10).await.is_empty(), "leased twice");

    assert_eq!(ack(s, &leased[0]).await, Settled::Applied);
    assert_eq!(status(s, "evt-1").await, Some(EventStatus::Delivered));
    assert_eq!(ack(s, &leased[0]).await, Settled::Stale, "acked twice");
    assert!(lease(s, None, 10).await.is_empty());
    assert!(get(s, "evt-2").await.is_none());
}

/// A second enqueue of an id (a provider retry) changes nothing, whatever its content.
pub async fn duplicate_enqueue_is_a_noop(s: &QueueSubject, _clock: &ManualClock) {
    let first = event("dup", "voice");
    assert_eq!(enqueue(s, &first).await, Enqueued::New);
    let mut second = event("dup", "other");
    second.body = b"different".to_vec();
    assert_eq!(enqueue(s, &second).await, Enqueued::Duplicate);
    let leased = lease(s, None, 10).await;
    assert_eq!(ids(&leased), ["dup"]);
    assert_eq!(leased[0].event, first);
    // Still a duplicate while leased and after delivery: the event must not be delivered again.
    assert_eq!(enqueue(s, &first).await, Enqueued::Duplicate);
    assert_eq!(ack(s, &leased[0]).await, Settled::Applied);
    assert_eq!(enqueue(s, &first).await, Enqueued::Duplicate);
    assert!(lease(s, None, 10).await.is_empty());
}

/// A retried event is not due before its `next_attempt_at_ms`, and is due exactly then.
pub async fn lease_respects_next_attempt_at(s: &QueueSubject, clock: &ManualClock) {
    enqueue(s, &event("e", "voice")).await;
    let l = lease(s, None, 1).await;
    assert_eq!(ids(&l), ["e"]);
    let at = clock.now_ms() + 10_000;
    assert_eq!(retry(s, &l[0], at, "503 from app").await, Settled::Applied);
    let entry = get(s, "e").await.expect("event");
    assert_eq!(entry.status, EventStatus::Pending);
    assert_eq!(entry.next_attempt_at_ms, at);
    assert!(lease(s, None, 1).await.is_empty());
    clock.advance(Duration::from_millis(9_999));
    assert!(lease(s, None, 1).await.is_empty());
    clock.advance(Duration::from_millis(1));
    let l = lease(s, None, 1).await;
    assert_eq!(ids(&l), ["e"]);
    assert_eq!(l[0].attempts, 2);
}

/// A crashed worker's lease runs out and the event is leased again, with a new token.
pub async fn expired_lease_returns_the_event(s: &QueueSubject, clock: &ManualClock) {
    enqueue(s, &event("e", "voice")).await;
    let first = lease(s, None, 1).await;
    assert_eq!(ids(&first), ["e"]);
    clock.advance(LEASE - Duration::from_millis(1));
    assert!(lease(s, None, 1).await.is_empty());
    clock.advance(Duration::from_millis(1));
    let second = lease(s, None, 1).await;
    assert_eq!(ids(&second), ["e"]);
    assert_eq!(second[0].attempts, 2);
    assert_ne!(first[0].token, second[0].token);
    assert_eq!(second[0].lease_until_ms, clock.now_ms() + 30_000);
}

/// A worker whose lease was taken over cannot ack, retry or dead-letter the newer lease.
pub async fn stale_settlements_are_ignored(s: &QueueSubject, clock: &ManualClock) {
    enqueue(s, &event("e", "voice")).await;
    let old = lease(s, None, 1).await.remove(0);
    clock.advance(LEASE);
    let new = lease(s, None, 1).await.remove(0);
    assert_eq!(ack(s, &old).await, Settled::Stale);
    assert_eq!(retry(s, &old, 0, "late").await, Settled::Stale);
    assert_eq!(dead_letter(s, &old, "late").await, Settled::Stale);
    let entry = get(s, "e").await.expect("event");
    assert_eq!(entry.status, EventStatus::Leased);
    assert_eq!(entry.last_error, None);
    assert_eq!(entry.lease_until_ms, Some(new.lease_until_ms));
    assert!(
        lease(s, None, 1).await.is_empty(),
        "the new lease still holds"
    );
    assert_eq!(ack(s, &new).await, Settled::Applied);
    assert_eq!(status(s, "e").await, Some(EventStatus::Delivered));

    // Removing a leased event also makes its lease stale.
    enqueue(s, &event("gone", "voice")).await;
    let l = lease(s, None, 1).await.remove(0);
    assert!(s.queue.remove("gone").await.expect("remove"));
    assert_eq!(ack(s, &l).await, Settled::Stale);
    assert!(get(s, "gone").await.is_none(), "a stale ack resurrected it");
}

/// A lease that ran out but that nobody took over still settles: the delivery did happen.
pub async fn late_settlement_of_an_unclaimed_lease_applies(s: &QueueSubject, clock: &ManualClock) {
    enqueue(s, &event("e", "voice")).await;
    let l = lease(s, None, 1).await.remove(0);
    clock.advance(LEASE * 2);
    assert_eq!(ack(s, &l).await, Settled::Applied);
    assert!(lease(s, None, 1).await.is_empty());
}

/// `lease` takes only the asked route and at most `max` events, oldest first.
pub async fn lease_filters_by_route_and_max(s: &QueueSubject, _clock: &ManualClock) {
    for i in 0..5 {
        enqueue(s, &event(&format!("v{i}"), "voice")).await;
        enqueue(s, &event(&format!("m{i}"), "sms")).await;
    }
    assert!(lease(s, Some("nope"), 10).await.is_empty());
    assert!(lease(s, Some("voice"), 0).await.is_empty());
    assert_eq!(ids(&lease(s, Some("voice"), 2).await), ["v0", "v1"]);
    assert_eq!(ids(&lease(s, Some("sms"), 3).await), ["m0", "m1", "m2"]);
    assert_eq!(
        ids(&lease(s, None, 10).await),
        ["v2", "v3", "m3", "v4", "m4"]
    );
}

/// Events sharing an order key come out one at a time in receipt order; other keys and keyless
/// events are not held up; the same key on another route is another line.
pub async fn order_key_lines_deliver_one_at_a_time_in_order(
    s: &QueueSubject,
    _clock: &ManualClock,
) {
    let keyed = |id: &str, route: &str, key: &str| QueuedEvent {
        order_key: Some(key.to_owned()),
        ..event(id, route)
    };
    for i in 0..3 {
        enqueue(s, &keyed(&format!("a{i}"), "voice", "CA-a")).await;
        enqueue(s, &keyed(&format!("b{i}"), "voice", "CA-b")).await;
        enqueue(s, &keyed(&format!("x{i}"), "sms", "CA-a")).await;
    }
    enqueue(s, &event("free", "voice")).await;
    let l = lease(s, None, 100).await;
    assert_eq!(ids(&l), ["a0", "b0", "x0", "free"]);
    assert!(
        lease(s, None, 100).await.is_empty(),
        "a second event of a line"
    );
    // Settling a head lets exactly the next one of its line through.
    assert_eq!(ack(s, &l[0]).await, Settled::Applied);
    assert_eq!(dead_letter(s, &l[1], "gone").await, Settled::Applied);
    let next = lease(s, None, 100).await;
    assert_eq!(ids(&next), ["a1", "b1"]);
    // x0 is still leased, so its line waits for it.
    let later = lease(s, Some("sms"), 100).await;
    assert!(later.is_empty());
    // Removing a head frees its line too.
    assert!(s.queue.remove("x0").await.expect("remove"));
    assert_eq!(ids(&lease(s, Some("sms"), 100).await), ["x1"]);
}

/// A head waiting for its retry holds its line (order over throughput); other lines go on.
pub async fn order_key_line_waits_for_its_head_retry(s: &QueueSubject, clock: &ManualClock) {
    let keyed = |id: &str, key: &str| QueuedEvent {
        order_key: Some(key.to_owned()),
        ..event(id, "voice")
    };
    enqueue(s, &keyed("k1", "K")).await;
    enqueue(s, &keyed("k2", "K")).await;
    enqueue(s, &keyed("j1", "J")).await;
    let l = lease(s, None, 10).await;
    assert_eq!(ids(&l), ["k1", "j1"]);
    let at = clock.now_ms() + 5_000;
    assert_eq!(retry(s, &l[0], at, "timeout").await, Settled::Applied);
    assert_eq!(ack(s, &l[1]).await, Settled::Applied);
    assert!(lease(s, None, 10).await.is_empty(), "k2 overtook k1");
    // The lease of the head expiring also keeps the line waiting for the head.
    clock.advance(Duration::from_millis(5_000));
    let again = lease(s, None, 10).await;
    assert_eq!(ids(&again), ["k1"]);
    clock.advance(LEASE);
    let taken_over = lease(s, None, 10).await;
    assert_eq!(ids(&taken_over), ["k1"]);
    assert_eq!(ack(s, &taken_over[0]).await, Settled::Applied);
    assert_eq!(ids(&lease(s, None, 10).await), ["k2"]);
}

/// Four workers, three keys of 50 events plus keyless ones, some attempts failing: every line
/// is delivered in receipt order and never has two events in flight.
pub async fn concurrent_leasers_keep_every_line_in_order(s: &QueueSubject, clock: &ManualClock) {
    const KEYS: usize = 3;
    const PER_KEY: usize = 50;
    const FREE: usize = 30;
    for i in 0..PER_KEY {
        for k in 0..KEYS {
            let e = QueuedEvent {
                order_key: Some(format!("key-{k}")),
                ..event(&format!("k{k}-{i:03}"), "voice")
            };
            enqueue(s, &e).await;
        }
        if i < FREE {
            enqueue(s, &event(&format!("free-{i:03}"), "voice")).await;
        }
    }
    let total = KEYS * PER_KEY + FREE;
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let delivered: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let now = clock.now_ms();
    let mut workers = Vec::new();
    for w in 0..4 {
        let queue = Arc::clone(&s.queue);
        let in_flight = Arc::clone(&in_flight);
        let delivered = Arc::clone(&delivered);
        workers.push(tokio::spawn(async move {
            // Bounded so a backend that stalls fails instead of hanging the test.
            for round in 0..100_000usize {
                let done: usize = lock(&delivered).values().map(Vec::len).sum();
                if done == total {
                    return Ok::<_, crate::StoreError>(());
                }
                let batch = queue.lease(None, 4, LEASE).await?;
                for l in &batch {
                    if let Some(key) = &l.event.order_key {
                        assert!(
                            lock(&in_flight).insert(key.clone()),
                            "two events of {key} in flight (worker {w} got {})",
                            l.event.id
                        );
                    }
                }
                tokio::task::yield_now().await;
                for (i, l) in batch.iter().enumerate() {
                    let key = l.event.order_key.clone();
                    if let Some(key) = &key {
                        lock(&in_flight).remove(key);
                    }
                    // Fail every first attempt of some events, retrying at once (the clock
                    // stands still), to check that a retried head keeps its place.
                    if l.attempts == 1 && (round + i + w) % 3 == 0 {
                        assert_eq!(queue.retry(l, now, "flaky").await?, Settled::Applied);
                        continue;
                    }
                    // Record before acking, so the next of the line cannot be recorded first.
                    lock(&delivered)
                        .entry(key.unwrap_or_else(|| "-".to_owned()))
                        .or_default()
                        .push(l.event.id.clone());
                    assert_eq!(queue.ack(l).await?, Settled::Applied);
                }
            }
            panic!("worker {w} gave up with events left");
        }));
    }
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("worker failed: {e}"),
            Err(e) => panic!("worker panicked: {e}"),
        }
    }
    let delivered = lock(&delivered);
    for k in 0..KEYS {
        let expected: Vec<String> = (0..PER_KEY).map(|i| format!("k{k}-{i:03}")).collect();
        assert_eq!(
            delivered[&format!("key-{k}")],
            expected,
            "key-{k} out of order"
        );
    }
    let mut free = delivered["-"].clone();
    free.sort();
    assert_eq!(free.len(), FREE, "keyless events lost or duplicated");
    free.dedup();
    assert_eq!(free.len(), FREE);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means another worker's assertion already failed; its panic is the report.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `settle_many` settles every lease as `ack`, `retry` and `dead_letter` would, in order,
/// answering each outcome: a stale token is `Stale` without failing the others, a lease settled
/// twice in one batch applies once, and a settled head lets the next of its line through.
pub async fn settle_many_settles_each_in_order(s: &QueueSubject, clock: &ManualClock) {
    let keyed = |id: &str| QueuedEvent {
        order_key: Some("CA-1".to_owned()),
        ..event(id, "voice")
    };
    for e in [
        event("ok", "voice"),
        event("flaky", "voice"),
        event("bad", "voice"),
    ] {
        enqueue(s, &e).await;
    }
    enqueue(s, &keyed("head")).await;
    enqueue(s, &keyed("next")).await;
    enqueue(s, &event("taken", "voice")).await;
    assert!(s.queue.settle_many(&[]).await.is_empty());
    let l = lease(s, None, 10).await;
    assert_eq!(ids(&l), ["ok", "flaky", "bad", "head", "taken"]);
    // "taken" is leased again by someone else once its lease ran out: its first token is stale.
    let stale = l[4].clone();
    assert_eq!(
        retry(s, &stale, clock.now_ms(), "slow").await,
        Settled::Applied
    );
    let taken = lease(s, None, 10).await.remove(0);
    assert_eq!(taken.event.id, "taken");
    let at = clock.now_ms() + 1_000;
    let results = s
        .queue
        .settle_many(&[
            (l[0].clone(), Settlement::Delivered),
            (
                l[1].clone(),
                Settlement::Retry {
                    at_ms: at,
                    error: "503".into(),
                },
            ),
            (
                l[2].clone(),
                Settlement::Dead {
                    error: "410".into(),
                },
            ),
            (stale, Settlement::Delivered),
            (l[3].clone(), Settlement::Delivered),
            (l[3].clone(), Settlement::Delivered),
        ])
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("settle_many failed: {e}")))
        .collect::<Vec<_>>();
    assert_eq!(
        results,
        [
            Settled::Applied,
            Settled::Applied,
            Settled::Applied,
            Settled::Stale,
            Settled::Applied,
            Settled::Stale
        ]
    );
    assert_eq!(status(s, "ok").await, Some(EventStatus::Delivered));
    let flaky = get(s, "flaky").await.expect("flaky");
    assert_eq!(
        (
            flaky.status,
            flaky.next_attempt_at_ms,
            flaky.last_error.as_deref()
        ),
        (EventStatus::Pending, at, Some("503"))
    );
    let bad = get(s, "bad").await.expect("bad");
    assert_eq!(
        (bad.status, bad.last_error.as_deref()),
        (EventStatus::Dead, Some("410"))
    );
    assert_eq!(status(s, "taken").await, Some(EventStatus::Leased));
    assert_eq!(enqueue(s, &event("ok", "voice")).await, Enqueued::Duplicate);
    assert_eq!(ids(&lease(s, None, 10).await), ["next"]);
    clock.advance(Duration::from_millis(1_000));
    assert_eq!(ids(&lease(s, None, 10).await), ["flaky"]);
}

/// Each lease counts an attempt; a retry keeps the count and records the error.
pub async fn retry_increments_attempts_and_keeps_the_error(s: &QueueSubject, _clock: &ManualClock) {
    enqueue(s, &event("e", "voice")).await;
    for attempt in 1..=4u32 {
        let l = lease(s, None, 1).await.remove(0);
        assert_eq!(l.attempts, attempt);
        let err = format!("HTTP 500 on attempt {attempt}");
        assert_eq!(retry(s, &l, 0, &err).await, Settled::Applied);
        let entry = get(s, "e").await.expect("event");
        assert_eq!(entry.attempts, attempt);
        assert_eq!(entry.last_error.as_deref(), Some(err.as_str()));
        assert_eq!(entry.status, EventStatus::Pending);
    }
}

/// Dead letters stay out of delivery until requeued (attempts reset), and can be removed.
pub async fn dead_letter_requeue_remove(s: &QueueSubject, _clock: &ManualClock) {
    enqueue(s, &event("e", "voice")).await;
    let l = lease(s, None, 1).await.remove(0);
    assert_eq!(dead_letter(s, &l, "410 Gone").await, Settled::Applied);
    let entry = get(s, "e").await.expect("event");
    assert_eq!(entry.status, EventStatus::Dead);
    assert_eq!(entry.last_error.as_deref(), Some("410 Gone"));
    assert!(lease(s, None, 10).await.is_empty());
    let stats = s.queue.stats().await.expect("stats");
    assert_eq!(stats.route("voice").map(|r| r.dead), Some(1));

    assert!(s.queue.requeue("e").await.expect("requeue"));
    let entry = get(s, "e").await.expect("event");
    assert_eq!(entry.status, EventStatus::Pending);
    assert_eq!(entry.attempts, 0);
    let l = lease(s, None, 1).await.remove(0);
    assert_eq!(l.attempts, 1);
    // Neither a leased nor a delivered event is requeued behind its worker's back.
    assert!(!s.queue.requeue("e").await.expect("requeue"));
    assert_eq!(dead_letter(s, &l, "still gone").await, Settled::Applied);

    assert!(s.queue.remove("e").await.expect("remove"));
    assert!(get(s, "e").await.is_none());
    assert!(!s.queue.remove("e").await.expect("remove"));
    assert!(!s.queue.requeue("e").await.expect("requeue"));
    assert!(!s.queue.requeue("never").await.expect("requeue"));
    assert_eq!(s.queue.stats().await.expect("stats").route("voice"), None);
    // A removed id may be enqueued afresh.
    assert_eq!(enqueue(s, &event("e", "voice")).await, Enqueued::New);
}

/// `list` filters by route, status and age, in receipt order, up to `limit`.
pub async fn list_filters(s: &QueueSubject, clock: &ManualClock) {
    let at = |id: &str, route: &str, ago_ms: u64| QueuedEvent {
        received_at_ms: START_MS - ago_ms,
        ..event(id, route)
    };
    enqueue(s, &at("old-voice", "voice", 60_000)).await;
    enqueue(s, &at("old-sms", "sms", 50_000)).await;
    enqueue(s, &at("new-voice", "voice", 0)).await;
    enqueue(s, &at("dead-voice", "voice", 1_000)).await;
    let l = lease(s, Some("voice"), 10).await;
    assert_eq!(ids(&l), ["old-voice", "new-voice", "dead-voice"]);
    assert_eq!(dead_letter(s, &l[2], "no").await, Settled::Applied);
    assert_eq!(ack(s, &l[0]).await, Settled::Applied);

    let list = |filter: ListFilter, limit: usize| {
        let queue = Arc::clone(&s.queue);
        async move {
            queue
                .list(&filter, limit)
                .await
                .expect("list")
                .into_iter()
                .map(|e| e.event.id)
                .collect::<Vec<_>>()
        }
    };
    let all = ListFilter::default();
    assert_eq!(
        list(all.clone(), 100).await,
        ["old-voice", "old-sms", "new-voice", "dead-voice"]
    );
    assert_eq!(list(all, 2).await, ["old-voice", "old-sms"]);
    let voice = ListFilter {
        route: Some("voice".into()),
        ..ListFilter::default()
    };
    assert_eq!(
        list(voice, 100).await,
        ["old-voice", "new-voice", "dead-voice"]
    );
    let by_status = |status| ListFilter {
        status: Some(status),
        ..ListFilter::default()
    };
    assert_eq!(
        list(by_status(EventStatus::Dead), 100).await,
        ["dead-voice"]
    );
    assert_eq!(
        list(by_status(EventStatus::Leased), 100).await,
        ["new-voice"]
    );
    assert_eq!(
        list(by_status(EventStatus::Pending), 100).await,
        ["old-sms"]
    );
    assert_eq!(
        list(by_status(EventStatus::Delivered), 100).await,
        ["old-voice"]
    );
    let older = |secs| ListFilter {
        older_than: Some(Duration::from_secs(secs)),
        ..ListFilter::default()
    };
    assert_eq!(list(older(50), 100).await, ["old-voice", "old-sms"]);
    assert_eq!(list(older(51), 100).await, ["old-voice"]);
    clock.advance(Duration::from_secs(10));
    assert_eq!(list(older(51), 100).await, ["old-voice", "old-sms"]);
    let combined = ListFilter {
        route: Some("voice".into()),
        status: Some(EventStatus::Leased),
        older_than: Some(Duration::from_secs(10)),
    };
    assert_eq!(list(combined, 100).await, ["new-voice"]);
    let entry = &s
        .queue
        .list(&by_status(EventStatus::Dead), 1)
        .await
        .expect("list")[0];
    assert_eq!(entry.last_error.as_deref(), Some("no"));
}

/// `stats` reports per-route depth, oldest undelivered age and dead letters.
pub async fn stats_per_route(s: &QueueSubject, clock: &ManualClock) {
    assert!(s.queue.stats().await.expect("stats").routes.is_empty());
    let at = |id: &str, route: &str, ago_ms: u64| QueuedEvent {
        received_at_ms: START_MS - ago_ms,
        ..event(id, route)
    };
    enqueue(s, &at("v-old", "voice", 9_000)).await;
    enqueue(s, &at("v-mid", "voice", 4_000)).await;
    enqueue(s, &at("v-new", "voice", 0)).await;
    enqueue(s, &at("v-dead", "voice", 0)).await;
    enqueue(s, &at("s-1", "sms", 2_000)).await;
    enqueue(s, &at("d-1", "done", 2_000)).await;
    let l = lease(s, None, 10).await;
    assert_eq!(l.len(), 6);
    // v-old stays leased, v-mid goes back to pending, v-dead dies, the rest are delivered.
    assert_eq!(retry(s, &l[1], 0, "e").await, Settled::Applied);
    assert_eq!(dead_letter(s, &l[3], "e").await, Settled::Applied);
    for i in [2, 4, 5] {
        assert_eq!(ack(s, &l[i]).await, Settled::Applied);
    }
    clock.advance(Duration::from_secs(1));
    let stats = s.queue.stats().await.expect("stats");
    let names: Vec<&str> = stats.routes.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(names, ["voice"], "routes with nothing undelivered or dead");
    let voice = &stats.routes[0];
    assert_eq!((voice.pending, voice.leased, voice.dead), (1, 1, 1));
    assert_eq!(voice.depth(), 2);
    assert_eq!(voice.oldest_undelivered_age, Some(Duration::from_secs(10)));

    enqueue(s, &at("s-2", "sms", 0)).await;
    let stats = s.queue.stats().await.expect("stats");
    let sms = stats.route("sms").expect("sms stats");
    assert_eq!((sms.pending, sms.leased, sms.dead), (1, 0, 0));
    assert_eq!(sms.oldest_undelivered_age, Some(Duration::from_secs(1)));
    // A route with only dead letters has depth 0 and no undelivered age.
    let l = lease(s, None, 10).await;
    assert_eq!(ids(&l), ["v-mid", "s-2"]);
    assert_eq!(dead_letter(s, &l[1], "e").await, Settled::Applied);
    let stats = s.queue.stats().await.expect("stats");
    let sms = stats.route("sms").expect("sms stats");
    assert_eq!(
        (sms.depth(), sms.dead, sms.oldest_undelivered_age),
        (0, 1, None)
    );
}

/// Purging drops delivered events older than asked, nothing else.
pub async fn purge_delivered_keeps_the_rest(s: &QueueSubject, clock: &ManualClock) {
    for id in ["a", "b", "c", "d"] {
        enqueue(s, &event(id, "voice")).await;
    }
    let l = lease(s, None, 10).await;
    assert_eq!(ack(s, &l[0]).await, Settled::Applied);
    assert_eq!(dead_letter(s, &l[1], "x").await, Settled::Applied);
    clock.advance(Duration::from_secs(60));
    assert_eq!(ack(s, &l[2]).await, Settled::Applied);
    assert_eq!(
        s.queue
            .purge_delivered(Duration::from_secs(61))
            .await
            .expect("purge"),
        0
    );
    assert_eq!(
        s.queue
            .purge_delivered(Duration::from_secs(60))
            .await
            .expect("purge"),
        1
    );
    assert!(get(s, "a").await.is_none());
    assert_eq!(status(s, "b").await, Some(EventStatus::Dead));
    assert_eq!(status(s, "c").await, Some(EventStatus::Delivered));
    assert_eq!(status(s, "d").await, Some(EventStatus::Leased));
}

/// 64 tasks enqueueing at once: every event stored once, none lost.
pub async fn concurrent_enqueuers(s: &QueueSubject, _clock: &ManualClock) {
    const TASKS: usize = 64;
    const EACH: usize = 20;
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let queue = Arc::clone(&s.queue);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                for i in 0..EACH {
                    let e = event(&format!("t{t}-{i}"), "voice");
                    assert_eq!(queue.enqueue(&e).await?, Enqueued::New);
                }
                Ok::<_, crate::StoreError>(())
            })
        })
        .collect();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("enqueue failed: {e}"),
            Err(e) => panic!("enqueuer panicked: {e}"),
        }
    }
    let mut seen = HashSet::new();
    loop {
        let l = lease(s, None, 500).await;
        if l.is_empty() {
            break;
        }
        for e in l {
            assert!(
                seen.insert(e.event.id.clone()),
                "{} leased twice",
                e.event.id
            );
        }
    }
    assert_eq!(seen.len(), TASKS * EACH);
}

/// 64 racing enqueues of one id: exactly one is new.
pub async fn concurrent_duplicate_enqueues_store_once(s: &QueueSubject, _clock: &ManualClock) {
    const TASKS: usize = 64;
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let queue = Arc::clone(&s.queue);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                queue.enqueue(&event("same", "voice")).await
            })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(Enqueued::New)) => new += 1,
            Ok(Ok(Enqueued::Duplicate)) => {}
            Ok(Err(e)) => panic!("enqueue failed: {e}"),
            Err(e) => panic!("enqueuer panicked: {e}"),
        }
    }
    assert_eq!(new, 1);
    assert_eq!(lease(s, None, 100).await.len(), 1);
}

/// Bodies, headers, ids, routes and keys come back byte for byte.
pub async fn binary_bodies_and_headers_intact(s: &QueueSubject, _clock: &ManualClock) {
    let e = awkward_event("évt/日本\0'; DROP TABLE queue_events; --");
    let empty = QueuedEvent {
        headers: Vec::new(),
        body: Vec::new(),
        order_key: None,
        ..event("", "")
    };
    let big = QueuedEvent {
        body: (0..1_000_000u32).map(|i| (i % 251) as u8).collect(),
        ..event("big", "voice")
    };
    for ev in [&e, &empty, &big] {
        assert_eq!(enqueue(s, ev).await, Enqueued::New);
        assert_eq!(get(s, &ev.id).await.map(|x| x.event).as_ref(), Some(ev));
    }
    let mut leased: Vec<QueuedEvent> = lease(s, None, 10)
        .await
        .into_iter()
        .map(|l| l.event)
        .collect();
    leased.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want = vec![e, empty, big];
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(leased, want);
}

/// A queue that takes enqueues answers its health check, before and after use.
pub async fn ping_answers_while_the_backend_is_up(s: &QueueSubject, _clock: &ManualClock) {
    s.queue.ping().await.expect("ping of a fresh queue");
    s.queue
        .enqueue(&event("p", "voice"))
        .await
        .expect("enqueue");
    s.queue.ping().await.expect("ping after an enqueue");
}
