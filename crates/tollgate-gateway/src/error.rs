//! Everything that can stop a request, typed, with the source kept. [`crate::rescue`] is the only
//! place that turns one into an answer.

use tollgate_verify::{Diagnosis, Reject};

/// Why a request was not forwarded (or forwarding failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No route matches the path.
    #[error("no route for this path")]
    NotFound,
    /// The client IP is not in the route's `allow_ips`.
    #[error("client IP not allowed")]
    IpNotAllowed,
    /// The request is not usable HTTP for a webhook (no Host and no public_url, bad framing).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The body exceeds `max_body_bytes`.
    #[error("body exceeds the limit")]
    BodyTooLarge,
    /// The body did not arrive within `body_timeout_ms`.
    #[error("body not received in time")]
    BodyTimeout,
    /// The client broke off while sending the body.
    #[error("body read failed: {0}")]
    BodyRead(#[source] hyper::Error),
    /// Verification failed; the diagnosis (if computed) goes to the audit log only.
    #[error("{0}")]
    Reject(Reject, Option<Box<Diagnosis>>),
    /// Too many failed verifications from this client IP.
    #[error("too many failed verifications from this client")]
    RateLimited,
    /// The same event is being forwarded right now.
    #[error("the first delivery of this event is still in flight")]
    InFlight,
    /// The replay store failed; tollgate fails closed.
    #[error("{0}")]
    Store(#[source] tollgate_store::StoreError),
    /// The event queue could not store the event; tollgate fails closed so the provider retries.
    #[error("event queue unavailable: {0}")]
    Queue(#[source] tollgate_store::StoreError),
    /// The upstream refused or broke the connection, or answered unreadably.
    #[error("upstream unavailable: {0}")]
    Upstream(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The upstream did not answer within `upstream_timeout_ms`.
    #[error("upstream timed out")]
    UpstreamTimeout,
}

impl GatewayError {
    /// Status and stable code for the answer, the metric and the audit line.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            GatewayError::NotFound => (404, "not_found"),
            GatewayError::IpNotAllowed => (403, "ip_not_allowed"),
            GatewayError::BadRequest(_) => (400, "bad_request"),
            GatewayError::BodyTooLarge => (413, "body_too_large"),
            GatewayError::BodyTimeout => (408, "body_timeout"),
            GatewayError::BodyRead(_) => (400, "body_read_failed"),
            GatewayError::Reject(r, _) if r.is_missing_credentials() => (401, r.reason()),
            GatewayError::Reject(r, _) => (403, r.reason()),
            GatewayError::RateLimited => (429, "rate_limited"),
            GatewayError::InFlight => (409, "in_flight"),
            GatewayError::Store(_) => (503, "store_unavailable"),
            GatewayError::Queue(_) => (503, "queue_unavailable"),
            GatewayError::Upstream(_) => (502, "upstream_unavailable"),
            GatewayError::UpstreamTimeout => (504, "upstream_timeout"),
        }
    }

    /// Whether the provider's retry of the same request may succeed (drives retries in queue mode).
    pub fn is_retryable(&self) -> bool {
        match self {
            GatewayError::Store(e) | GatewayError::Queue(e) => e.is_retryable(),
            GatewayError::Upstream(_)
            | GatewayError::UpstreamTimeout
            | GatewayError::InFlight
            | GatewayError::RateLimited
            | GatewayError::BodyTimeout => true,
            _ => false,
        }
    }
}
