//! The behaviour every [`ReplayStore`] backend must show, written once and run against each
//! backend (enabled by the `conformance` feature).
//!
//! A backend's test file makes a [`Subject`] from a [`ManualClock`] and invokes
//! [`conformance_suite!`](crate::conformance_suite) once; each case becomes its own `#[tokio::test]`
//! so a failure names the case and the backend:
//!
//! ```text
//! async fn memory(clock: Arc<ManualClock>) -> Subject {
//!     Subject::new(MemoryStore::with_clock(clock))
//! }
//! tollgate_store::conformance_suite!(memory_backend, memory);
//! ```
//!
//! Time only moves when a case advances the clock, so a backend must take "now" from the clock it
//! was given (a Redis backend passes it into its script rather than trusting server-side `PX`).

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;

use crate::clock::ManualClock;
use crate::{Claim, ReplayStore, StoreError, StoredResponse};

/// Where every case's clock starts: a realistic unix-ms value, so a backend mixing up seconds and
/// milliseconds or signed and unsigned fails.
pub const START_MS: u64 = 1_700_000_000_000;

/// How many tasks race in the concurrency cases.
pub const RACERS: usize = 64;

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3600);

/// A backend under test, plus whatever must live as long as it (a temporary directory, a server).
pub struct Subject {
    /// The store.
    pub store: Arc<dyn ReplayStore>,
    _keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl Subject {
    /// Wraps a store.
    pub fn new(store: impl ReplayStore) -> Self {
        Self {
            store: Arc::new(store),
            _keep_alive: None,
        }
    }

    /// Keeps `guard` alive until the case ends (dropped after the store).
    pub fn keep_alive(mut self, guard: impl Any + Send + Sync) -> Self {
        self._keep_alive = Some(Box::new(guard));
        self
    }
}

/// Expands to one `#[tokio::test]` per conformance case inside `mod $name`, each building its
/// store with `$make` (an `async fn(Arc<ManualClock>) -> Subject` in the enclosing module).
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $make:ident) => {
        $crate::conformance_suite!(@cases $name, $make;
            first_claim_wins,
            concurrent_claims_have_exactly_one_winner,
            in_flight_is_seen_until_completed,
            expired_lease_lets_one_new_claim_through,
            complete_stores_the_exact_response,
            done_expires_after_ttl,
            claims_never_overwrite_done,
            release_lets_the_next_claim_through,
            release_never_removes_done,
            release_of_unknown_key_is_harmless,
            awkward_keys_are_distinct,
            many_keys_are_independent,
            ping_answers,
            identical_answers_are_replayed_for_every_key,
            expired_keys_are_forgotten_at_scale,
        );
    };
    (@cases $name:ident, $make:ident; $($case:ident),* $(,)?) => {
        mod $name {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let clock = $crate::clock::ManualClock::new($crate::conformance::START_MS);
                    let subject = super::$make(::std::sync::Arc::clone(&clock)).await;
                    $crate::conformance::$case(&subject, &clock).await;
                }
            )*
        }
    };
}

/// A backend that keeps state in a file (or another place that outlives the process), opened
/// again and again on the same place: what a restart, or a second process, would see.
pub struct Reopenable {
    open: Box<dyn Fn() -> Result<Arc<dyn ReplayStore>, StoreError> + Send + Sync>,
    _keep_alive: Box<dyn Any + Send + Sync>,
}

impl Reopenable {
    /// `open` opens the store on the same place each time; `guard` (a temporary directory)
    /// lives as long as the subject.
    pub fn new(
        open: impl Fn() -> Result<Arc<dyn ReplayStore>, StoreError> + Send + Sync + 'static,
        guard: impl Any + Send + Sync,
    ) -> Self {
        Self {
            open: Box::new(open),
            _keep_alive: Box::new(guard),
        }
    }

    fn open(&self) -> Arc<dyn ReplayStore> {
        (self.open)().unwrap_or_else(|e| panic!("open: {e}"))
    }
}

/// Expands to one `#[tokio::test]` per restart case inside `mod $name`, each building its
/// subject with `$make` (an `async fn(Arc<ManualClock>) -> Reopenable`). For backends whose
/// state outlives the process that owns it and whose place may have only one owner.
#[macro_export]
macro_rules! restart_conformance_suite {
    ($name:ident, $make:ident) => {
        // The cases take the same (subject, clock) as the general suite's, so its arm makes them.
        $crate::conformance_suite!(@cases $name, $make;
            restart_replays_completed_answers_only,
            restart_forgets_expired_answers,
            a_second_owner_is_refused,
        );
    };
}

/// A response with everything that could be mangled in storage: non-UTF-8 and NUL bytes in
/// header values, duplicate header names kept in order, and a body of every byte value.
pub fn awkward_response() -> StoredResponse {
    StoredResponse {
        status: 203,
        headers: vec![
            (
                "content-type".into(),
                b"application/xml; charset=utf-8".to_vec(),
            ),
            ("x-raw".into(), vec![0xff, 0xfe, 0x00, 0x80, b'\r']),
            ("x-raw".into(), Vec::new()),
            ("set-cookie".into(), b"a=1".to_vec()),
        ],
        body: (0..=255u8).chain((0..=255u8).rev()).collect(),
    }
}

async fn claim(s: &Subject, key: &str) -> Claim {
    match s.store.claim(key, LEASE).await {
        Ok(c) => c,
        Err(e) => panic!("claim({key:?}) failed: {e}"),
    }
}

async fn complete(s: &Subject, key: &str, response: &StoredResponse) {
    if let Err(e) = s.store.complete(key, response, TTL).await {
        panic!("complete({key:?}) failed: {e}");
    }
}

async fn release(s: &Subject, key: &str) {
    if let Err(e) = s.store.release(key).await {
        panic!("release({key:?}) failed: {e}");
    }
}

/// Runs `RACERS` claims on `key` released together; returns how many got each answer.
async fn race(s: &Subject, key: &str) -> (usize, usize, usize) {
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::with_capacity(RACERS);
    for _ in 0..RACERS {
        let store = Arc::clone(&s.store);
        let barrier = Arc::clone(&barrier);
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.claim(&key, LEASE).await
        }));
    }
    let (mut claimed, mut in_flight, mut done) = (0, 0, 0);
    for t in tasks {
        match t.await.map_err(|e| e.to_string()) {
            Ok(Ok(Claim::Claimed)) => claimed += 1,
            Ok(Ok(Claim::InFlight)) => in_flight += 1,
            Ok(Ok(Claim::Done(_))) => done += 1,
            Ok(Err(e)) => panic!("racing claim failed: {e}"),
            Err(e) => panic!("racing task failed: {e}"),
        }
    }
    (claimed, in_flight, done)
}

/// The first claim of a key wins; the next sees it in flight.
pub async fn first_claim_wins(s: &Subject, _clock: &ManualClock) {
    assert_eq!(claim(s, "evt-1").await, Claim::Claimed);
    assert_eq!(claim(s, "evt-1").await, Claim::InFlight);
    assert_eq!(claim(s, "evt-2").await, Claim::Claimed);
}

/// Of `RACERS` concurrent claims on one key exactly one is `Claimed`.
pub async fn concurrent_claims_have_exactly_one_winner(s: &Subject, _clock: &ManualClock) {
    assert_eq!(race(s, "race").await, (1, RACERS - 1, 0));
}

/// A claimed key is in flight until completed, then done.
pub async fn in_flight_is_seen_until_completed(s: &Subject, clock: &ManualClock) {
    assert_eq!(claim(s, "k").await, Claim::Claimed);
    clock.advance(LEASE - Duration::from_millis(1));
    assert_eq!(claim(s, "k").await, Claim::InFlight);
    let response = awkward_response();
    complete(s, "k", &response).await;
    assert_eq!(claim(s, "k").await, Claim::Done(response));
}

/// A crashed forwarder's claim expires at its lease, and then exactly one racer takes it over.
pub async fn expired_lease_lets_one_new_claim_through(s: &Subject, clock: &ManualClock) {
    assert_eq!(claim(s, "k").await, Claim::Claimed);
    clock.advance(LEASE - Duration::from_millis(1));
    assert_eq!(claim(s, "k").await, Claim::InFlight);
    clock.advance(Duration::from_millis(1));
    assert_eq!(race(s, "k").await, (1, RACERS - 1, 0));
}

/// `complete` stores the response byte for byte.
pub async fn complete_stores_the_exact_response(s: &Subject, _clock: &ManualClock) {
    let response = awkward_response();
    assert_eq!(claim(s, "k").await, Claim::Claimed);
    complete(s, "k", &response).await;
    assert_eq!(claim(s, "k").await, Claim::Done(response));

    let empty = StoredResponse {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    };
    assert_eq!(claim(s, "empty").await, Claim::Claimed);
    complete(s, "empty", &empty).await;
    assert_eq!(claim(s, "empty").await, Claim::Done(empty));
}

/// A stored answer is replayed until its ttl, then the key is new again.
pub async fn done_expires_after_ttl(s: &Subject, clock: &ManualClock) {
    assert_eq!(claim(s, "k").await, Claim::Claimed);
    clock.advance(Duration::from_secs(5));
    // The ttl runs from completion, not from the claim.
    complete(s, "k", &awkward_response()).await;
    clock.advance(TTL - Duration::from_millis(1));
    assert_eq!(claim(s, "k").await, Claim::Done(awkward_response()));
    clock.advance(Duration::from_millis(1));
    assert_eq!(claim(s, "k").await, Claim::Claimed);
}

/// Claims of a done key, even racing ones, all get the stored answer and change nothing.
pub async fn claims_never_overwrite_done(s: &Subject, _clock: &ManualClock) {
    assert_eq!(claim(s, "k").await, Claim::Claimed);
    complete(s, "k", &awkward_response()).await;
    assert_eq!(race(s, "k").await, (0, 0, RACERS));
    assert_eq!(claim(s, "k").await, Claim::Done(awkward_response()));
}

/// After a failed forward, `release` lets the provider's retry claim the key.
pub async fn release_lets_the_next_claim_through(s: &Subject, _clock: &ManualClock) {
    assert_eq!(claim(s, "k").await, Claim::Claimed);
    release(s, "k").await;
    assert_eq!(claim(s, "k").await, Claim::Claimed);
    assert_eq!(claim(s, "k").await, Claim::InFlight);
}

/// A late or duplicate `release` must not erase a delivered answer.
pub async fn release_never_removes_done(s: &Subject, _clock: &ManualClock) {
    assert_eq!(claim(s, "k").await, Claim::Claimed);
    complete(s, "k", &awkward_response()).await;
    release(s, "k").await;
    assert_eq!(claim(s, "k").await, Claim::Done(awkward_response()));
}

/// Releasing a key never claimed is a no-op and does not create it.
pub async fn release_of_unknown_key_is_harmless(s: &Subject, _clock: &ManualClock) {
    release(s, "never-claimed").await;
    assert_eq!(claim(s, "never-claimed").await, Claim::Claimed);
}

/// Keys are opaque strings: unicode, separators, prefixes, case and length all matter exactly.
pub async fn awkward_keys_are_distinct(s: &Subject, _clock: &ManualClock) {
    let long = "x".repeat(8 * 1024);
    let long_other = format!("{}y", "x".repeat(8 * 1024 - 1));
    let keys: Vec<&str> = vec![
        "twilio:AC123:SM456",
        "twilio:AC123",
        "twilio:AC123:",
        "twilio::AC123",
        "TWILIO:AC123:SM456",
        "événement:日本語:🙂",
        "e\u{301}v\u{e9}nement", // same glyphs as a precomposed form, different bytes
        "événement",
        "",
        " ",
        "with\nnewline",
        "with\0nul",
        "'; DROP TABLE claims; --",
        "%_*?[]",
        &long,
        &long_other,
    ];
    assert_eq!(
        keys.iter().collect::<HashSet<_>>().len(),
        keys.len(),
        "test keys must differ"
    );
    for key in &keys {
        assert_eq!(claim(s, key).await, Claim::Claimed, "key {key:?}");
    }
    for key in &keys {
        assert_eq!(claim(s, key).await, Claim::InFlight, "key {key:?}");
    }
    let response = awkward_response();
    complete(s, "twilio:AC123", &response).await;
    assert_eq!(claim(s, "twilio:AC123").await, Claim::Done(response));
    assert_eq!(claim(s, "twilio:AC123:").await, Claim::InFlight);
    release(s, &long).await;
    assert_eq!(claim(s, &long).await, Claim::Claimed);
    assert_eq!(claim(s, &long_other).await, Claim::InFlight);
}

/// Thousands of keys, claimed concurrently, each claimed exactly once.
pub async fn many_keys_are_independent(s: &Subject, _clock: &ManualClock) {
    const KEYS: usize = 5_000;
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let store = Arc::clone(&s.store);
        tasks.push(tokio::spawn(async move {
            let mut claimed = 0;
            for i in (worker..KEYS).step_by(16) {
                if store.claim(&format!("key-{i}"), LEASE).await? == Claim::Claimed {
                    claimed += 1;
                }
            }
            Ok::<_, crate::StoreError>(claimed)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("worker failed: {e}"));
    }
    assert_eq!(total, KEYS);
    for i in (0..KEYS).step_by(97) {
        assert_eq!(claim(s, &format!("key-{i}")).await, Claim::InFlight);
    }
    assert_eq!(claim(s, &format!("key-{KEYS}")).await, Claim::Claimed);
}

/// A healthy store answers its health check.
pub async fn ping_answers(s: &Subject, _clock: &ManualClock) {
    if let Err(e) = s.store.ping().await {
        panic!("ping failed: {e}");
    }
}

/// Many keys completed with the same answer (the common case: every event gets `<Response/>`)
/// each replay it, however the others end (released, re-answered, expired).
pub async fn identical_answers_are_replayed_for_every_key(s: &Subject, clock: &ManualClock) {
    let common = StoredResponse {
        status: 200,
        headers: vec![("content-type".into(), b"text/xml".to_vec())],
        body: b"<Response/>".to_vec(),
    };
    for i in 0..100 {
        let key = format!("evt-{i}");
        assert_eq!(claim(s, &key).await, Claim::Claimed);
        if i % 10 == 0 {
            // A few keys only live a second: their expiry must not take the answer with it.
            if let Err(e) = s
                .store
                .complete(&key, &common, Duration::from_secs(1))
                .await
            {
                panic!("complete({key:?}) failed: {e}");
            }
        } else {
            complete(s, &key, &common).await;
        }
    }
    complete(s, "evt-1", &awkward_response()).await;
    clock.advance(Duration::from_secs(1));
    for i in 0..100 {
        let key = format!("evt-{i}");
        let expect = match i {
            1 => Claim::Done(awkward_response()),
            i if i % 10 == 0 => Claim::Claimed,
            _ => Claim::Done(common.clone()),
        };
        assert_eq!(claim(s, &key).await, expect, "{key}");
    }
}

/// Thousands of expired keys, in flight and done, are all new again, and new keys still work.
pub async fn expired_keys_are_forgotten_at_scale(s: &Subject, clock: &ManualClock) {
    const KEYS: usize = 3_000;
    for i in 0..KEYS {
        let key = format!("old-{i}");
        assert_eq!(claim(s, &key).await, Claim::Claimed);
        if i % 2 == 0 {
            complete(s, &key, &awkward_response()).await;
        }
    }
    clock.advance(TTL);
    for i in (0..KEYS).step_by(7) {
        assert_eq!(
            claim(s, &format!("old-{i}")).await,
            Claim::Claimed,
            "old-{i}"
        );
    }
    assert_eq!(claim(s, "new").await, Claim::Claimed);
    assert_eq!(claim(s, "new").await, Claim::InFlight);
}

/// After a restart, completed answers are replayed (shared ones included); in-flight claims are
/// gone, so the provider's retry is forwarded again.
pub async fn restart_replays_completed_answers_only(s: &Reopenable, _clock: &ManualClock) {
    let store = s.open();
    let other = StoredResponse {
        status: 200,
        headers: Vec::new(),
        body: b"<Response/>".to_vec(),
    };
    for key in ["a", "b", "c", "in-flight"] {
        assert_eq!(store.claim(key, LEASE).await.ok(), Some(Claim::Claimed));
    }
    for (key, answer) in [
        ("a", &awkward_response()),
        ("b", &other),
        ("c", &awkward_response()),
    ] {
        store
            .complete(key, answer, TTL)
            .await
            .unwrap_or_else(|e| panic!("complete({key:?}): {e}"));
    }
    drop(store);
    let store = s.open();
    let seen = |key: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .claim(key, LEASE)
                .await
                .unwrap_or_else(|e| panic!("claim({key:?}): {e}"))
        }
    };
    assert_eq!(seen("a").await, Claim::Done(awkward_response()));
    assert_eq!(seen("b").await, Claim::Done(other));
    assert_eq!(seen("c").await, Claim::Done(awkward_response()));
    assert_eq!(seen("in-flight").await, Claim::Claimed);
    assert_eq!(seen("in-flight").await, Claim::InFlight);
}

/// Deadlines are absolute: an answer whose ttl ended while the store was closed is not replayed.
pub async fn restart_forgets_expired_answers(s: &Reopenable, clock: &ManualClock) {
    let store = s.open();
    assert_eq!(store.claim("k", LEASE).await.ok(), Some(Claim::Claimed));
    if let Err(e) = store.complete("k", &awkward_response(), TTL).await {
        panic!("complete: {e}");
    }
    drop(store);
    clock.advance(TTL - Duration::from_millis(1));
    let store = s.open();
    assert_eq!(
        store.claim("k", LEASE).await.ok(),
        Some(Claim::Done(awkward_response()))
    );
    drop(store);
    clock.advance(Duration::from_millis(1));
    let store = s.open();
    assert_eq!(store.claim("k", LEASE).await.ok(), Some(Claim::Claimed));
}

/// Two owners of one place would each claim the same event: the second is refused, retryably,
/// and the first keeps working; once the first is gone the place can be opened again.
pub async fn a_second_owner_is_refused(s: &Reopenable, _clock: &ManualClock) {
    let first = s.open();
    match (s.open)() {
        Ok(_) => panic!("a second owner was let in"),
        Err(e) => assert!(e.is_retryable(), "{e}"),
    }
    assert_eq!(first.claim("k", LEASE).await.ok(), Some(Claim::Claimed));
    assert_eq!(first.claim("k", LEASE).await.ok(), Some(Claim::InFlight));
    drop(first);
    let again = s.open();
    assert_eq!(again.claim("k", LEASE).await.ok(), Some(Claim::Claimed));
}
