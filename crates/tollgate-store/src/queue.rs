//! The durable event queue behind `mode = "queue"` routes: the gateway writes a verified callback
//! here and only then acknowledges it to the provider; delivery workers lease events, post them to
//! the app, and [`ack`](EventQueue::ack), [`retry`](EventQueue::retry) or
//! [`dead_letter`](EventQueue::dead_letter) them. Backends: [`crate::queue_memory`] (tests, single
//! process, lost on restart) and [`crate::queue_sqlite`] (the embedded default, fsynced with group
//! commit). Every backend passes the same suite (`queue_conformance`, behind the `conformance`
//! feature).
//!
//! Guarantees every backend gives:
//! - **Durable acknowledgement**: once [`EventQueue::enqueue`] returns `Ok`, the event survives a
//!   crash of the process (and, with fsync, of the machine). An error means "not stored": the
//!   gateway answers 503 and the provider retries.
//! - **At-least-once delivery**: a leased event that is neither acked, retried nor dead-lettered
//!   before its lease ends is due again, so a crashed worker's events come back.
//! - **Fenced leases**: each lease carries a fresh [`LeaseToken`]; settling with an older token
//!   (the worker was too slow and someone else leased the event since) changes nothing and
//!   answers [`Settled::Stale`]. A token whose lease ran out but was not taken over still
//!   settles: the delivery it reports did happen.
//! - **Per-key order**: events of one route sharing an `order_key` form a line; only its head
//!   (the oldest event received that is pending or leased) can be leased, so they are delivered
//!   one at a time in receipt order. A head waiting for its retry time holds the line; a
//!   delivered, dead-lettered or removed head frees it.
//!
//! Time comes from the backend's injected [`Clock`](crate::clock::Clock): "due" means
//! `next_attempt_at_ms <= now` for pending events and `lease_until_ms <= now` for leased ones.

use std::fmt;
use std::time::Duration;

use crate::StoreError;

/// A verified callback as received, stored until the app has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// The event id: unique per event, the queue's primary key and the `Idempotency-Key` sent to
    /// the app, so the app can deduplicate an at-least-once redelivery.
    pub id: String,
    /// The route the event arrived on.
    pub route: String,
    /// HTTP method as received.
    pub method: String,
    /// The public URL the provider called.
    pub url: String,
    /// Headers as received: order and duplicates kept, values raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body as received, byte for byte.
    pub body: Vec<u8>,
    /// When the gateway received it, unix ms.
    pub received_at_ms: u64,
    /// Events of one route with the same key are delivered one at a time, in receipt order.
    pub order_key: Option<String>,
}

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventStatus {
    /// Waiting for delivery (new, or waiting for a retry time).
    Pending,
    /// A worker holds it until its lease ends.
    Leased,
    /// The app accepted it. Kept (for duplicate detection and inspection) until purged.
    Delivered,
    /// Given up on; kept with its last error until an operator requeues or removes it.
    Dead,
}

impl EventStatus {
    /// Every status, in life order.
    pub const ALL: [EventStatus; 4] = [
        EventStatus::Pending,
        EventStatus::Leased,
        EventStatus::Delivered,
        EventStatus::Dead,
    ];

    /// A stable lowercase name, for the CLI, metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Leased => "leased",
            EventStatus::Delivered => "delivered",
            EventStatus::Dead => "dead",
        }
    }

    /// The status named `name` (as printed by [`EventStatus::as_str`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one lease of one event. Opaque to workers; backends hand out a fresh token per lease
/// so a stale holder can be told apart from the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(u64);

impl LeaseToken {
    /// A token with the backend-chosen value `v` (for backends; workers only pass tokens back).
    pub fn new(v: u64) -> Self {
        Self(v)
    }

    /// The backend-chosen value.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// An event handed to a worker, to be settled with `ack`, `retry` or `dead_letter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// The event.
    pub event: QueuedEvent,
    /// Delivery attempts started, this one included (1 on the first lease). Counted at lease time
    /// so an event that crashes its worker every time still runs out of attempts.
    pub attempts: u32,
    /// When the lease ends and the event is due again, unix ms.
    pub lease_until_ms: u64,
    /// Proof of this lease; settling with an older token is ignored.
    pub token: LeaseToken,
}

/// What [`EventQueue::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored; durable.
    New,
    /// An event with this id is already held (in any status); nothing changed. The provider's
    /// retry of an event already acknowledged: acknowledge it again.
    Duplicate,
}

/// What settling a lease (`ack`, `retry`, `dead_letter`) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The lease was current; the event changed state.
    Applied,
    /// The lease was superseded (the event was leased again, settled, or removed); nothing
    /// changed.
    Stale,
}

/// How a lease ends, for [`EventQueue::settle_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// As [`EventQueue::ack`]: the app accepted the event.
    Delivered,
    /// As [`EventQueue::retry`]: pending again, due at `at_ms`.
    Retry {
        /// When the event is due again, unix ms.
        at_ms: u64,
        /// Why the attempt failed.
        error: String,
    },
    /// As [`EventQueue::dead_letter`]: given up on, with `error`.
    Dead {
        /// Why the event was given up on.
        error: String,
    },
}

/// Everything the queue knows about an event, for `tollgate queue ls|show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The event.
    pub event: QueuedEvent,
    /// Where it is.
    pub status: EventStatus,
    /// Delivery attempts started since enqueue or the last requeue.
    pub attempts: u32,
    /// For a pending event, when it is due, unix ms; otherwise when it was last due.
    pub next_attempt_at_ms: u64,
    /// For a leased event, when its lease ends, unix ms.
    pub lease_until_ms: Option<u64>,
    /// Why the last attempt failed (kept across a requeue, for the operator).
    pub last_error: Option<String>,
}

/// Which events [`EventQueue::list`] returns; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Only this status.
    pub status: Option<EventStatus>,
    /// Only events received at least this long ago (by the queue's clock).
    pub older_than: Option<Duration>,
}

impl ListFilter {
    /// Whether `entry` passes the filter at time `now_ms`.
    pub fn matches(&self, entry: &QueueEntry, now_ms: u64) -> bool {
        self.route.as_ref().is_none_or(|r| *r == entry.event.route)
            && self.status.is_none_or(|s| s == entry.status)
            && self
                .older_than
                .is_none_or(|d| entry.event.received_at_ms <= received_cutoff(now_ms, d))
    }
}

/// The latest `received_at_ms` that counts as "older than `d`" at `now_ms`.
pub(crate) fn received_cutoff(now_ms: u64, d: Duration) -> u64 {
    now_ms.saturating_sub(crate::clock::duration_ms(d))
}

/// Queue figures for one route, for metrics and `/readyz`-style dashboards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// The route.
    pub route: String,
    /// Events waiting for delivery.
    pub pending: u64,
    /// Events a worker holds now.
    pub leased: u64,
    /// Dead letters waiting for an operator.
    pub dead: u64,
    /// How long the oldest undelivered (pending or leased) event has been waiting, by receipt
    /// time; `None` when there is none.
    pub oldest_undelivered_age: Option<Duration>,
}

impl RouteStats {
    /// Events not yet delivered nor given up on: the queue depth.
    pub fn depth(&self) -> u64 {
        self.pending + self.leased
    }
}

/// Figures for every route that has pending, leased or dead events, sorted by route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// One entry per route.
    pub routes: Vec<RouteStats>,
}

impl QueueStats {
    /// The figures of `route`, if it has any undelivered or dead event.
    pub fn route(&self, route: &str) -> Option<&RouteStats> {
        self.routes.iter().find(|r| r.route == route)
    }
}

/// A durable queue of verified callbacks. See the [module docs](self) for the guarantees.
#[async_trait::async_trait]
pub trait EventQueue: Send + Sync + fmt::Debug + 'static {
    /// Stores `event` durably (per the backend's durability setting) before returning `Ok`.
    /// An id already held is a no-op answering [`Enqueued::Duplicate`].
    async fn enqueue(&self, event: &QueuedEvent) -> Result<Enqueued, StoreError>;

    /// [`enqueue`](EventQueue::enqueue) of an event the caller has no further use for, which a
    /// backend may keep without copying it (the SQLite queue moves it to its writer thread).
    async fn enqueue_owned(&self, event: QueuedEvent) -> Result<Enqueued, StoreError> {
        self.enqueue(&event).await
    }

    /// Leases up to `max` due events (of `route` only, if given) for `lease_for`, earliest due
    /// first. Never returns an event whose `order_key` line has an earlier event pending or
    /// leased, so a line has at most one event in flight.
    async fn lease(
        &self,
        route: Option<&str>,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Leased>, StoreError>;

    /// The app accepted the event: mark it delivered.
    async fn ack(&self, lease: &Leased) -> Result<Settled, StoreError>;

    /// The attempt failed: make the event pending again, due at `next_attempt_at_ms`.
    async fn retry(
        &self,
        lease: &Leased,
        next_attempt_at_ms: u64,
        error: &str,
    ) -> Result<Settled, StoreError>;

    /// Give up on the event: keep it as a dead letter with `error`.
    async fn dead_letter(&self, lease: &Leased, error: &str) -> Result<Settled, StoreError>;

    /// Settles each lease of `batch` as [`ack`](EventQueue::ack),
    /// [`retry`](EventQueue::retry) or [`dead_letter`](EventQueue::dead_letter) would, in order,
    /// and answers each one's outcome in the same order. A backend may apply them together (the
    /// SQLite queue: one operation, one transaction); this default settles one after the other.
    async fn settle_many(
        &self,
        batch: &[(Leased, Settlement)],
    ) -> Vec<Result<Settled, StoreError>> {
        let mut out = Vec::with_capacity(batch.len());
        for (lease, to) in batch {
            out.push(match to {
                Settlement::Delivered => self.ack(lease).await,
                Settlement::Retry { at_ms, error } => self.retry(lease, *at_ms, error).await,
                Settlement::Dead { error } => self.dead_letter(lease, error).await,
            });
        }
        out
    }

    /// Up to `limit` events matching `filter`, in receipt order.
    async fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<QueueEntry>, StoreError>;

    /// The event with this id, in any status.
    async fn get(&self, id: &str) -> Result<Option<QueueEntry>, StoreError>;

    /// Operator redelivery: a dead or pending event becomes pending, due now, with its attempts
    /// reset. Returns whether such an event existed (a leased or delivered one is left alone).
    async fn requeue(&self, id: &str) -> Result<bool, StoreError>;

    /// Deletes the event in any status; returns whether it existed. A worker holding it will find
    /// its lease stale.
    async fn remove(&self, id: &str) -> Result<bool, StoreError>;

    /// Deletes delivered events whose delivery is at least `older_than` old; returns how many.
    async fn purge_delivered(&self, older_than: Duration) -> Result<u64, StoreError>;

    /// Makes the backend's own periodic purge, if it has one, keep delivered events at least
    /// `at_least` (never less than it was opened with). Delivered events are how a late provider
    /// retry is recognised, so the gateway raises this to its routes' `dedupe_ttl_secs`.
    fn retain_delivered(&self, at_least: Duration) {
        let _ = at_least;
    }

    /// Per-route depth, oldest undelivered age and dead letters.
    async fn stats(&self) -> Result<QueueStats, StoreError>;

    /// Cheap health check for `/readyz`: `Ok` when the queue can take an enqueue now.
    async fn ping(&self) -> Result<(), StoreError>;
}
