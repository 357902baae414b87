//! Delivery workers of `mode = "queue"` routes: lease stored events, post them to the upstream,
//! and settle each lease from the answer.
//!
//! - **2xx** → `ack`.
//! - **4xx other than 408/429** → dead letter at once (with `dead_letter_on_4xx`, the default): the
//!   app refused this event and will refuse it again.
//! - **anything else** (5xx, 408, 429, 3xx, connection error, timeout) → `retry` after a backoff,
//!   until `max_attempts` attempts or `max_age_secs` since receipt, then dead letter with the last
//!   error.
//!
//! The backoff is exponential with *equal* jitter: the nominal delay `retry_initial_ms · 2^(n-1)`
//! (capped at `retry_max_ms`) is halved and a random share of the other half added. Retries of
//! events that failed together still spread out (the point of jitter), and, unlike full jitter, a
//! retry never comes back almost at once: every wait is at least half the nominal one, so each
//! attempt waits at least as long as the previous one did until the cap.
//!
//! One dispatcher task serves every queue route of the current config (a reload applies to the
//! next lease): per route, it leases as many events as the route has free delivery slots
//! (`concurrency`) and runs each delivery as its own task. A per-route circuit breaker opens after
//! `breaker_failures` consecutive failed deliveries; while open, the route gets one probe delivery
//! per `breaker_probe_ms`, and the first success closes it. A 4xx dead letter counts as success
//! for the breaker: the upstream is up.
//!
//! Shutdown stops leasing and gives deliveries in flight the drain time; a delivery cut short
//! leaves its lease to expire, and the event is delivered again after a restart (at least once;
//! the app deduplicates on `Idempotency-Key`).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use http_body_util::Full;
use metrics::{Counter, Histogram};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tollgate_config::{Config, Mode, QueueSettings, Route};
use tollgate_store::{EventQueue, Leased, QueuedEvent, Settled, Settlement};

use crate::stage::enqueue::{now_ms, TARGET};
use crate::stage::forward::{app_signature, round_trip, upstream_uri, Upstream, Upstreams};
use crate::{metrics as m, Gateway, GatewayError, Shared};

/// Added to the upstream timeout for the lease, so a lease outlives its delivery attempt.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How long the dispatcher waits, after a lease found the queue empty, before leasing again:
/// events that arrive one at a time would otherwise be leased one at a time, a queue round trip
/// (a write on SQLite) each; this gathers those arriving meanwhile into one lease.
const LEASE_GATHER: Duration = Duration::from_millis(2);

/// Most settlements sent to the queue in one call.
const MAX_SETTLE_BATCH: usize = 256;

/// Tuning of the delivery workers.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// How often the dispatcher looks for due events when nothing woke it (retries coming due,
    /// leases of a crashed process running out).
    pub poll: Duration,
    /// How often the queue gauges are refreshed from `stats()`.
    pub stats_every: Duration,
    /// How long delivered events are kept at least (for duplicate detection and `tollgate queue
    /// ls`); raised to the longest `dedupe_ttl_secs` of the queue routes.
    pub keep_delivered: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(100),
            stats_every: Duration::from_secs(5),
            keep_delivered: Duration::from_secs(24 * 3600),
        }
    }
}

/// The running workers; [`DeliveryHandle::shutdown`] stops them.
#[derive(Debug)]
pub struct DeliveryHandle {
    stop: watch::Sender<bool>,
    /// Fires when the dispatcher has finished (deliveries drained and their leases settled).
    done: oneshot::Receiver<()>,
    stats: tokio::task::JoinHandle<()>,
}

impl DeliveryHandle {
    /// Stops leasing, waits up to `drain` for deliveries in flight, then abandons the rest (their
    /// leases expire and the events are delivered again later).
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(true);
        self.stats.abort();
        // The dispatcher bounds its own drain; the margin covers settling what finished.
        let _ = tokio::time::timeout(drain + Duration::from_secs(1), self.done).await;
    }
}

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Gateway {
    /// Starts the delivery workers and the queue gauges; `None` when the gateway has no queue.
    /// `drain` is how long shutdown waits for deliveries in flight.
    ///
    /// The deliveries run on a thread of their own with a single-threaded event loop, as each
    /// serving thread does: their upstream connections, the deliveries and the settling of their
    /// leases hand work to each other without a cross-thread wake-up. Should the thread not
    /// start, they run on the caller's runtime instead.
    pub fn spawn_delivery(&self, opts: DeliveryOptions, drain: Duration) -> Option<DeliveryHandle> {
        let queue = self.shared.queue.clone()?;
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let q = Arc::clone(&queue);
        let o = opts.clone();
        let work: Work = Box::pin(async move {
            dispatch(shared, q, o, stop_rx, drain).await;
            let _ = done_tx.send(());
        });
        if let Err(work) = on_own_thread(work) {
            tokio::spawn(work);
        }
        let stats = tokio::spawn(refresh_gauges(Arc::clone(&self.shared), queue, opts));
        Some(DeliveryHandle { stop, done, stats })
    }
}

/// Runs `work` on a new thread's single-threaded runtime; gives it back if there is none.
fn on_own_thread(work: Work) -> Result<(), Work> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "no runtime for the delivery thread; delivering on the shared one");
            return Err(work);
        }
    };
    // The work is handed over once the thread runs, so it comes back if the thread cannot start.
    let (hand, take) = std::sync::mpsc::channel::<Work>();
    let started = std::thread::Builder::new()
        .name("tollgate-delivery".into())
        .spawn(move || {
            if let Ok(work) = take.recv() {
                runtime.block_on(work);
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "no delivery thread; delivering on the shared runtime");
        return Err(work);
    }
    hand.send(work).map_err(|back| back.0)
}

/// Per-route worker state, kept across reloads by route name.
struct RouteState {
    slots: Arc<Semaphore>,
    concurrency: u32,
    breaker: Arc<Mutex<Breaker>>,
    metrics: Arc<DeliveryMetrics>,
}

/// One route's delivery metric handles, resolved on first use (see `RouteMetrics`): a
/// `counter!` with a route label allocates and hashes its labels on every call.
#[derive(Debug)]
struct DeliveryMetrics {
    route: String,
    outcomes: [OnceLock<Counter>; OUTCOMES.len()],
    upstream_seconds: OnceLock<Histogram>,
}

/// `tollgate_delivery_attempts_total` outcomes.
const OUTCOMES: [&str; 5] = ["delivered", "retry", "dead", "stale", "settle_failed"];

impl DeliveryMetrics {
    fn new(route: &str) -> Self {
        Self {
            route: route.to_owned(),
            outcomes: Default::default(),
            upstream_seconds: OnceLock::new(),
        }
    }

    fn attempt(&self, outcome: &'static str) {
        match OUTCOMES.iter().position(|o| *o == outcome) {
            Some(i) => self.outcomes[i]
                .get_or_init(|| {
                    metrics::counter!(m::DELIVERIES, "route" => self.route.clone(), "outcome" => outcome)
                })
                .increment(1),
            None => {
                metrics::counter!(m::DELIVERIES, "route" => self.route.clone(), "outcome" => outcome)
                    .increment(1)
            }
        }
    }

    fn upstream(&self, took: Duration) {
        self.upstream_seconds
            .get_or_init(|| metrics::histogram!(m::UPSTREAM_SECONDS, "route" => self.route.clone()))
            .record(took.as_secs_f64());
    }
}

/// A finished attempt, waiting to be settled: the lease, what to make of it, and the delivery
/// slot it holds until then.
struct Attempted {
    lease: Leased,
    to: Settlement,
    /// The outcome counted once the settlement applied.
    outcome: &'static str,
    metrics: Arc<DeliveryMetrics>,
    _slot: OwnedSemaphorePermit,
}

async fn dispatch(
    shared: Arc<Shared>,
    queue: Arc<dyn EventQueue>,
    opts: DeliveryOptions,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let upstreams = Arc::new(Upstreams::new());
    let (attempted, to_settle) = mpsc::unbounded_channel();
    let settler = tokio::spawn(settle(Arc::clone(&shared), Arc::clone(&queue), to_settle));
    let mut routes: HashMap<String, RouteState> = HashMap::new();
    let mut inflight = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        while inflight.try_join_next().is_some() {}
        let table = shared.table();
        let mut leased = 0usize;
        let mut emptied = false;
        for route in table.routes.iter().filter(|r| r.mode == Mode::Queue) {
            let Some(settings) = route.queue.as_ref() else {
                continue;
            };
            let st = routes
                .entry(route.name.clone())
                .or_insert_with(|| RouteState {
                    slots: Arc::new(Semaphore::new(settings.concurrency as usize)),
                    concurrency: settings.concurrency,
                    breaker: Arc::new(Mutex::new(Breaker::new(&route.name))),
                    metrics: Arc::new(DeliveryMetrics::new(&route.name)),
                });
            if st.concurrency != settings.concurrency {
                // Deliveries in flight keep their permits of the old semaphore.
                st.slots = Arc::new(Semaphore::new(settings.concurrency as usize));
                st.concurrency = settings.concurrency;
            }
            let mut max = st.slots.available_permits();
            if max == 0 {
                continue;
            }
            let gate = lock(&st.breaker).gate(settings, Instant::now());
            match gate {
                // While deliveries are in flight, wait until a batch of slots is free: a lease is
                // a queue round trip (a write on SQLite), and leasing one event per completion
                // made it one per event under load.
                Gate::Closed
                    if max < lease_batch(settings.concurrency) && max < st.concurrency as usize =>
                {
                    continue
                }
                Gate::Closed => {}
                Gate::Probe => max = 1,
                Gate::Shut => continue,
            }
            let lease_for = Duration::from_millis(route.upstream_timeout_ms) + LEASE_MARGIN;
            let leases = match queue.lease(Some(&route.name), max, lease_for).await {
                Ok(l) => l,
                Err(e) => {
                    metrics::counter!(m::QUEUE_ERRORS, "op" => "lease").increment(1);
                    tracing::warn!(route = %route.name, error = %e, "lease failed; retrying");
                    Vec::new()
                }
            };
            if leases.is_empty() && gate == Gate::Probe {
                lock(&st.breaker).probing = false;
            }
            emptied |= leases.len() < max;
            for lease in leases {
                let Ok(slot) = Arc::clone(&st.slots).try_acquire_owned() else {
                    // Cannot happen (only this task takes permits); the lease expires and the
                    // event comes back.
                    break;
                };
                leased += 1;
                let attempted = attempted.clone();
                let upstreams = Arc::clone(&upstreams);
                let table = Arc::clone(&table);
                let breaker = Arc::clone(&st.breaker);
                let metrics = Arc::clone(&st.metrics);
                let name = route.name.clone();
                inflight.spawn(async move {
                    let mut lease = lease;
                    let Some(route) = table.route(&name) else {
                        return;
                    };
                    if let Some((to, outcome)) =
                        deliver(&upstreams, route, &breaker, &metrics, &mut lease).await
                    {
                        // Only a gone settler (shutdown) refuses it; the lease then expires.
                        let _ = attempted.send(Attempted {
                            lease,
                            to,
                            outcome,
                            metrics,
                            _slot: slot,
                        });
                    }
                });
            }
        }
        if leased == 0 || emptied {
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep(opts.poll) => {}
                _ = stop.changed() => {}
            }
            if emptied {
                tokio::select! {
                    () = tokio::time::sleep(LEASE_GATHER) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    let finished = tokio::time::timeout(drain, async {
        while inflight.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            abandoned = inflight.len(),
            "deliveries still in flight at shutdown; their leases expire and they are delivered again after a restart"
        );
        inflight.abort_all();
    }
    // The settler ends once the last attempt is settled and every sender is gone.
    drop(attempted);
    drop(inflight);
    let _ = settler.await;
}

/// Settles finished attempts in batches: whatever finished while the previous batch was being
/// written goes into the next, one queue operation (one SQLite transaction) for all of them.
async fn settle(
    shared: Arc<Shared>,
    queue: Arc<dyn EventQueue>,
    mut to_settle: mpsc::UnboundedReceiver<Attempted>,
) {
    let mut attempts = Vec::with_capacity(MAX_SETTLE_BATCH);
    while to_settle.recv_many(&mut attempts, MAX_SETTLE_BATCH).await > 0 {
        let (batch, rest): (Vec<_>, Vec<_>) = attempts
            .drain(..)
            .map(|a| ((a.lease, a.to), (a.outcome, a.metrics, a._slot)))
            .unzip();
        let results = queue.settle_many(&batch).await;
        for (((lease, _), (outcome, metrics, slot)), result) in batch.iter().zip(rest).zip(results)
        {
            let outcome = match result {
                Ok(Settled::Applied) => outcome,
                Ok(Settled::Stale) => "stale",
                Err(e) => {
                    metrics::counter!(m::QUEUE_ERRORS, "op" => "settle").increment(1);
                    tracing::warn!(route = %metrics.route, error = %e, "settling a delivery failed; the lease will expire and the event be delivered again");
                    "settle_failed"
                }
            };
            metrics.attempt(outcome);
            if outcome == "dead" {
                tracing::warn!(route = %metrics.route, event = %lease.event.id, attempts = lease.attempts, "event dead-lettered");
            }
            drop(slot);
        }
        shared.wake.notify_one();
    }
}

/// Free slots worth a lease while others are busy: a quarter of the route's concurrency, 1..=32.
fn lease_batch(concurrency: u32) -> usize {
    (concurrency as usize / 4).clamp(1, 32)
}

fn lock(b: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one attempt decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: done.
    Delivered,
    /// The app refused the event for good (4xx other than 408/429).
    Refused(String),
    /// Worth trying again.
    Failed(String),
}

/// Classifies an attempt's result (the app's status, or why there was none) with the route's
/// settings.
pub fn verdict(result: Result<u16, &GatewayError>, q: &QueueSettings) -> Verdict {
    match result {
        Ok(status) if (200..300).contains(&status) => Verdict::Delivered,
        Ok(status) => {
            let why = format!("upstream answered {status}");
            if q.dead_letter_on_4xx && (400..500).contains(&status) && !matches!(status, 408 | 429)
            {
                Verdict::Refused(why)
            } else {
                Verdict::Failed(why)
            }
        }
        Err(e) => Verdict::Failed(e.to_string()),
    }
}

/// The wait before attempt `attempts + 1`, in ms: equal jitter over the nominal exponential delay
/// (see the module docs), `random` in `[0, 1]` drawn by the caller.
pub fn backoff_ms(q: &QueueSettings, attempts: u32, random: f64) -> u64 {
    let shift = attempts.saturating_sub(1).min(40);
    let nominal = q
        .retry_initial_ms
        .saturating_mul(1u64 << shift)
        .min(q.retry_max_ms);
    let half = nominal / 2;
    half + ((nominal - half) as f64 * random.clamp(0.0, 1.0)) as u64
}

/// A number in `[0, 1]` for jitter (not for anything secret).
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// One attempt: posts the event to the app and says how to settle its lease and which outcome
/// to count once settled (nothing for a route without queue settings: the lease runs out). The
/// event's headers and body are moved into the request.
async fn deliver(
    upstreams: &Upstreams,
    route: &Route,
    breaker: &Mutex<Breaker>,
    metrics: &DeliveryMetrics,
    lease: &mut Leased,
) -> Option<(Settlement, &'static str)> {
    let q = route.queue.as_ref()?;
    let verdict = match request(route, &mut lease.event) {
        Ok(req) => {
            let (result, took) = round_trip(upstreams, route, req).await;
            metrics.upstream(took);
            verdict(result.as_ref().map(|u: &Upstream| u.status.as_u16()), q)
        }
        // The event cannot be turned into a request for this upstream (its target no longer
        // maps after a config change): retrying cannot help.
        Err(e) => Verdict::Refused(format!("cannot build the request: {e}")),
    };
    let age_ms = now_ms().saturating_sub(lease.event.received_at_ms);
    let dead = |reason: &'static str| {
        metrics::counter!(m::DEAD_LETTERS, "route" => route.name.clone(), "reason" => reason)
            .increment(1);
    };
    let settled = match &verdict {
        Verdict::Delivered => (Settlement::Delivered, "delivered"),
        Verdict::Refused(why) => {
            dead("4xx");
            (Settlement::Dead { error: why.clone() }, "dead")
        }
        Verdict::Failed(why) => {
            let out_of = if lease.attempts >= q.max_attempts {
                Some("max_attempts")
            } else if age_ms >= q.max_age_secs.saturating_mul(1000) {
                Some("max_age")
            } else {
                None
            };
            match out_of {
                Some(reason) => {
                    dead(reason);
                    let error = format!("{why} (gave up: {reason}, {} attempts)", lease.attempts);
                    (Settlement::Dead { error }, "dead")
                }
                None => {
                    let at_ms = now_ms().saturating_add(backoff_ms(q, lease.attempts, jitter()));
                    let error = why.clone();
                    (Settlement::Retry { at_ms, error }, "retry")
                }
            }
        }
    };
    lock(breaker).record(!matches!(verdict, Verdict::Failed(_)), q, Instant::now());
    Some(settled)
}

/// The upstream request for a stored event: original method, mapped target, stored headers (minus
/// tollgate's pseudo-headers), `Idempotency-Key` and `webhook-id` = the event id, and the
/// Standard Webhooks signature with the route's `app_secret`. The event's headers and body move
/// into the request (the lease only needs the event's id and route afterwards).
pub fn request(
    route: &Route,
    ev: &mut QueuedEvent,
) -> Result<http::Request<Full<Bytes>>, GatewayError> {
    let target = ev
        .headers
        .iter()
        .find(|(k, _)| k == TARGET)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .unwrap_or("/");
    let uri = upstream_uri(route, target)?;
    let method = http::Method::from_bytes(ev.method.as_bytes())
        .map_err(|_| GatewayError::BadRequest("stored method is not a method"))?;
    let mut headers = HeaderMap::with_capacity(ev.headers.len() + 4);
    for (k, v) in std::mem::take(&mut ev.headers) {
        if k.starts_with(':') {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k),
            HeaderValue::from_maybe_shared(Bytes::from(v)),
        ) {
            headers.append(k, v);
        }
    }
    let id = message_id(&ev.id);
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(HeaderName::from_static("idempotency-key"), v);
    }
    let body = Bytes::from(std::mem::take(&mut ev.body));
    for (k, v) in app_signature(route, method.as_str(), &uri.to_string(), &body, &id)? {
        headers.insert(k, v);
    }
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// The id the app sees: the event id, or a digest of it when it cannot be a header value.
pub fn message_id(event_id: &str) -> String {
    if HeaderValue::from_str(event_id).is_ok() && !event_id.is_empty() {
        return event_id.to_owned();
    }
    use sha2::{Digest, Sha256};
    format!(
        "tg_{}",
        hex::encode(&Sha256::digest(event_id.as_bytes())[..16])
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Deliver as many as there are slots.
    Closed,
    /// The breaker is open and a probe is due: one delivery.
    Probe,
    /// The breaker is open: nothing now.
    Shut,
}

/// Per-route circuit breaker.
#[derive(Debug)]
struct Breaker {
    route: String,
    failures: u32,
    open: bool,
    probing: bool,
    next_probe: Instant,
}

impl Breaker {
    fn new(route: &str) -> Self {
        Self {
            route: route.to_owned(),
            failures: 0,
            open: false,
            probing: false,
            next_probe: Instant::now(),
        }
    }

    fn gate(&mut self, q: &QueueSettings, now: Instant) -> Gate {
        if !self.open || q.breaker_failures == 0 {
            Gate::Closed
        } else if self.probing || now < self.next_probe {
            Gate::Shut
        } else {
            self.probing = true;
            Gate::Probe
        }
    }

    fn record(&mut self, ok: bool, q: &QueueSettings, now: Instant) {
        self.probing = false;
        if ok {
            self.failures = 0;
            if self.open {
                self.open = false;
                metrics::gauge!(m::BREAKER_OPEN, "route" => self.route.clone()).set(0.0);
                tracing::info!(route = %self.route, "upstream recovered; circuit breaker closed");
            }
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if self.open {
            self.next_probe = now + Duration::from_millis(q.breaker_probe_ms);
        } else if q.breaker_failures > 0 && self.failures >= q.breaker_failures {
            self.open = true;
            self.next_probe = now + Duration::from_millis(q.breaker_probe_ms);
            metrics::gauge!(m::BREAKER_OPEN, "route" => self.route.clone()).set(1.0);
            tracing::warn!(
                route = %self.route,
                failures = self.failures,
                probe_ms = q.breaker_probe_ms,
                "upstream failing; circuit breaker open, probing one event per interval"
            );
        }
    }
}

/// How long delivered events are kept: at least `floor`, and at least every queue route's
/// `dedupe_ttl_secs`, because in queue mode the queue is what recognises a provider's retry.
pub fn retention(table: &Config, floor: Duration) -> Duration {
    table
        .routes
        .iter()
        .filter(|r| r.mode == Mode::Queue)
        .map(|r| Duration::from_secs(r.dedupe_ttl_secs))
        .fold(floor, Duration::max)
}

/// Refreshes the queue gauges of every queue route and purges old delivered events.
async fn refresh_gauges(shared: Arc<Shared>, queue: Arc<dyn EventQueue>, opts: DeliveryOptions) {
    let mut tick = tokio::time::interval(opts.stats_every);
    let mut last_purge = Instant::now();
    loop {
        tick.tick().await;
        let table: Arc<Config> = shared.config();
        let keep = retention(&table, opts.keep_delivered);
        queue.retain_delivered(keep);
        match queue.stats().await {
            Ok(stats) => {
                for route in table.routes.iter().filter(|r| r.mode == Mode::Queue) {
                    let s = stats.route(&route.name).cloned().unwrap_or_default();
                    let name = route.name.clone();
                    metrics::gauge!(m::QUEUE_DEPTH, "route" => name.clone()).set(s.depth() as f64);
                    metrics::gauge!(m::QUEUE_DEAD, "route" => name.clone()).set(s.dead as f64);
                    metrics::gauge!(m::QUEUE_OLDEST_AGE, "route" => name)
                        .set(s.oldest_undelivered_age.map_or(0.0, |d| d.as_secs_f64()));
                }
            }
            Err(e) => {
                metrics::counter!(m::QUEUE_ERRORS, "op" => "stats").increment(1);
                tracing::warn!(error = %e, "queue stats failed");
            }
        }
        if last_purge.elapsed() >= Duration::from_secs(60) {
            last_purge = Instant::now();
            if let Err(e) = queue.purge_delivered(keep).await {
                metrics::counter!(m::QUEUE_ERRORS, "op" => "purge").increment(1);
                tracing::warn!(error = %e, "purging delivered events failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> QueueSettings {
        QueueSettings {
            response: tollgate_config::StaticResponse {
                status: 200,
                content_type: None,
                body: String::new(),
            },
            max_attempts: 10,
            max_age_secs: 60,
            concurrency: 1,
            order_key: None,
            retry_initial_ms: 100,
            retry_max_ms: 1000,
            dead_letter_on_4xx: true,
            breaker_failures: 3,
            breaker_probe_ms: 1000,
        }
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_the_cap() {
        let q = settings();
        for (attempts, low, high) in [(1, 50, 100), (2, 100, 200), (3, 200, 400), (4, 400, 800)] {
            assert_eq!(backoff_ms(&q, attempts, 0.0), low);
            assert_eq!(backoff_ms(&q, attempts, 1.0), high);
        }
        assert_eq!(backoff_ms(&q, 5, 0.0), 500);
        assert_eq!(backoff_ms(&q, 64, 1.0), 1000);
        assert_eq!(backoff_ms(&q, u32::MAX, 1.0), 1000);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..=1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn verdicts() {
        let q = settings();
        let ans = Ok;
        assert_eq!(verdict(ans(204), &q), Verdict::Delivered);
        assert_eq!(
            verdict(ans(404), &q),
            Verdict::Refused("upstream answered 404".into())
        );
        for s in [408, 429, 500, 503, 302] {
            assert_eq!(
                verdict(ans(s), &q),
                Verdict::Failed(format!("upstream answered {s}"))
            );
        }
        assert_eq!(
            verdict(Err(&GatewayError::UpstreamTimeout), &q),
            Verdict::Failed("upstream timed out".into())
        );
        let keep = QueueSettings {
            dead_letter_on_4xx: false,
            ..settings()
        };
        assert_eq!(
            verdict(ans(404), &keep),
            Verdict::Failed("upstream answered 404".into())
        );
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_and_probes_one_at_a_time() {
        let q = settings();
        let t0 = Instant::now();
        let mut b = Breaker::new("r");
        for _ in 0..2 {
            b.record(false, &q, t0);
        }
        assert_eq!(b.gate(&q, t0), Gate::Closed);
        b.record(true, &q, t0);
        for _ in 0..3 {
            b.record(false, &q, t0);
        }
        assert_eq!(b.gate(&q, t0), Gate::Shut);
        let later = t0 + Duration::from_millis(1000);
        assert_eq!(b.gate(&q, later), Gate::Probe);
        assert_eq!(b.gate(&q, later), Gate::Shut, "one probe at a time");
        b.record(false, &q, later);
        assert_eq!(b.gate(&q, later), Gate::Shut);
        let again = later + Duration::from_millis(1000);
        assert_eq!(b.gate(&q, again), Gate::Probe);
        b.record(true, &q, again);
        assert_eq!(b.gate(&q, again), Gate::Closed);
        let off = QueueSettings {
            breaker_failures: 0,
            ..settings()
        };
        let mut b = Breaker::new("r");
        for _ in 0..10 {
            b.record(false, &off, t0);
        }
        assert_eq!(b.gate(&off, t0), Gate::Closed);
    }

    #[test]
    fn message_id_is_the_event_id_when_it_can_be_a_header() {
        assert_eq!(message_id("hooks:id:msg_1"), "hooks:id:msg_1");
        let odd = message_id("hooks:id:a\nb");
        assert!(odd.starts_with("tg_") && odd.len() == 35, "{odd}");
    }
}
