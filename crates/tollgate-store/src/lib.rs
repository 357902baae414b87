//! Replay and idempotency state shared by the gateway's requests (and, with the Redis backend, by
//! several gateway instances), and the durable event queue of queue-mode routes ([`queue`]:
//! [`EventQueue`], backends [`MemoryQueue`], [`SqliteQueue`] and [`RedisQueue`]). For replay, one trait,
//! [`ReplayStore`]; backends: [`memory`] (tests, single process, lost on restart), [`sqlite`] (the
//! embedded default: the same in-memory index, plus completed answers kept in a file) and
//! [`redis`] (shared by several instances). Every backend passes the same
//! conformance suite (`conformance`, behind the `conformance` feature). Both Redis backends reach
//! Redis through [`redis_client`]: one node or a Redis Cluster ([`RedisTarget`]), optionally over
//! TLS with a private CA ([`RedisTls`]).
//!
//! Expiry is decided against stored unix-millisecond deadlines read from an injected
//! [`clock::Clock`], so tests move time instead of sleeping.
//!
//! A claim is the atomic "first one wins" on an event key. The first delivery gets
//! [`Claim::Claimed`] and, after forwarding, records the app's answer with [`ReplayStore::complete`];
//! a redelivery meanwhile sees [`Claim::InFlight`], afterwards [`Claim::Done`] with the stored answer,
//! so a provider retry gets the same TwiML. If forwarding fails, [`ReplayStore::release`] lets the
//! provider's retry through. An in-flight claim expires after its lease so a crash cannot block an
//! event forever.
#![forbid(unsafe_code)]

use std::time::Duration;

pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
mod group_commit;
mod index;
pub mod memory;
pub mod queue;
#[cfg(feature = "conformance")]
pub mod queue_conformance;
pub mod queue_memory;
pub mod queue_redis;
pub mod queue_sqlite;
pub mod redis;
pub mod redis_client;
#[cfg(feature = "conformance")]
pub mod redis_server;
pub mod sqlite;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use memory::MemoryStore;
pub use queue::{
    Enqueued, EventQueue, EventStatus, LeaseToken, Leased, ListFilter, QueueEntry, QueueStats,
    QueuedEvent, RouteStats, Settled, Settlement,
};
pub use queue_memory::MemoryQueue;
pub use queue_redis::RedisQueue;
pub use queue_sqlite::{QueueOptions, SqliteQueue};
pub use redis::{RedisOptions, RedisStore};
pub use redis_client::{RedisTarget, RedisTls};
pub use sqlite::{Durability, SqliteOptions, SqliteStore};

/// The app's answer to the first delivery, replayed to duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers (end-to-end only).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// Result of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller is the first: forward, then `complete` or `release`.
    Claimed,
    /// Another delivery of the same event is being forwarded now.
    InFlight,
    /// Already delivered; here is what the app answered.
    Done(StoredResponse),
}

/// The store cannot be used; the gateway fails closed (503) unless a route says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend is unreachable or refused the operation (I/O error, disk full, read-only,
    /// connection lost). Retrying later may succeed.
    #[error("state store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend answered something this version cannot read (corrupt row, schema mismatch).
    #[error("state store data is invalid: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// What went wrong down to the backend's own reason (a refused certificate, a refused
    /// password), for a log line that already says the store is unavailable: the message
    /// without that framing, then each source, `: `-separated. Never holds a Redis URL.
    pub fn reason(&self) -> String {
        let (mut out, mut source) = match self {
            StoreError::Unavailable(inner) => (inner.to_string(), inner.source()),
            StoreError::Corrupt(why) => (why.clone(), None),
        };
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

/// Replay/idempotency claims.
#[async_trait::async_trait]
pub trait ReplayStore: Send + Sync + std::fmt::Debug + 'static {
    /// Atomically claims `key`. A new claim is in flight for `lease` (then it expires, so a crash
    /// mid-forward does not block the event forever).
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError>;

    /// Records the answer of a claimed key and keeps it for `ttl` (the route's `dedupe_ttl_secs`).
    /// A backend may leave out a `date` header (the memory and SQLite backends do, so identical
    /// answers are stored once): the HTTP server sends a current one with the replay.
    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// [`complete`](Self::complete) for a caller that need not wait for the durable write (the
    /// gateway, whose app already answered): once it returns, this process's duplicates get the
    /// answer; the write may still be on its way, and a backend whose write later fails must
    /// behave as if `complete` had failed (refuse claims until it recovers). The default waits.
    async fn complete_soon(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.complete(key, response, ttl).await
    }

    /// Drops a claim whose forwarding failed, so the provider's retry is forwarded.
    async fn release(&self, key: &str) -> Result<(), StoreError>;

    /// Cheap health check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
