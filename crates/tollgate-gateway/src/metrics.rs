//! Metric names in one place (the docs list them), and the Prometheus recorder the admin listener
//! renders. Without an installed recorder every metric call is a no-op, which is what tests want.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tollgate_config::Route;

/// Requests by `route` and `outcome` (`forwarded`, `replayed`, or the rejection code).
pub const REQUESTS: &str = "tollgate_requests_total";
/// Rejections by `route` and `reason`.
pub const REJECTIONS: &str = "tollgate_rejections_total";
/// Successful verifications by `route` and `key` label.
pub const VERIFIED: &str = "tollgate_verified_total";
/// Verification latency by `route`, seconds.
pub const VERIFY_SECONDS: &str = "tollgate_verify_seconds";
/// Upstream latency by `route`, seconds.
pub const UPSTREAM_SECONDS: &str = "tollgate_upstream_seconds";
/// Duplicates answered from the store by `route`.
pub const DUPLICATES: &str = "tollgate_duplicates_total";
/// Store failures by `op`.
pub const STORE_ERRORS: &str = "tollgate_store_errors_total";
/// Local time minus signed time by `route`, seconds (last seen).
pub const CLOCK_SKEW: &str = "tollgate_clock_skew_seconds";
/// Config reloads by `result`.
pub const RELOADS: &str = "tollgate_reloads_total";
/// Queue-mode events stored by `route` and `result` (`new`, `duplicate`).
pub const ENQUEUED: &str = "tollgate_enqueued_total";
/// Delivery attempts by `route` and `outcome` (`delivered`, `retry`, `dead`, `stale`).
pub const DELIVERIES: &str = "tollgate_delivery_attempts_total";
/// Events dead-lettered by `route` and `reason` (`4xx`, `max_attempts`, `max_age`).
pub const DEAD_LETTERS: &str = "tollgate_dead_letters_total";
/// Undelivered events (pending + leased) by `route`.
pub const QUEUE_DEPTH: &str = "tollgate_queue_depth";
/// Age of the oldest undelivered event by `route`, seconds (0 when none).
pub const QUEUE_OLDEST_AGE: &str = "tollgate_queue_oldest_age_seconds";
/// Dead letters waiting for an operator by `route`.
pub const QUEUE_DEAD: &str = "tollgate_queue_dead";
/// Circuit breaker by `route`: 0 closed, 1 open (probing).
pub const BREAKER_OPEN: &str = "tollgate_breaker_open";
/// Queue store failures in the delivery workers by `op`.
pub const QUEUE_ERRORS: &str = "tollgate_queue_errors_total";

/// Installs the global Prometheus recorder and returns the handle `/metrics` renders.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
            ],
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS, "Requests by route and outcome");
    describe_counter!(REJECTIONS, "Rejected requests by route and reason");
    describe_counter!(VERIFIED, "Verified requests by route and key label");
    describe_histogram!(VERIFY_SECONDS, Unit::Seconds, "Signature verification time");
    describe_histogram!(UPSTREAM_SECONDS, Unit::Seconds, "Upstream round trip time");
    describe_counter!(DUPLICATES, "Duplicate deliveries answered from the store");
    describe_counter!(STORE_ERRORS, "Replay store failures by operation");
    describe_gauge!(
        CLOCK_SKEW,
        Unit::Seconds,
        "Local time minus the provider's signed time"
    );
    describe_counter!(RELOADS, "Config reloads by result");
    describe_counter!(ENQUEUED, "Queue-mode events stored by route and result");
    describe_counter!(DELIVERIES, "Queue delivery attempts by route and outcome");
    describe_counter!(DEAD_LETTERS, "Events dead-lettered by route and reason");
    describe_gauge!(QUEUE_DEPTH, "Undelivered queued events by route");
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest undelivered event by route"
    );
    describe_gauge!(QUEUE_DEAD, "Dead letters waiting for an operator by route");
    describe_gauge!(BREAKER_OPEN, "Delivery circuit breaker by route (1 = open)");
    describe_counter!(
        QUEUE_ERRORS,
        "Queue failures in the delivery workers by operation"
    );
}

/// One route's per-request metric handles, resolved on first use and then kept with the route
/// table: a handle is an `Arc` to the recorder's cell, where a `counter!(..., "route" => name)`
/// call allocates its labels and hashes them into the registry on every request. Resolving on
/// first use (not when the table is built) keeps a series out of `/metrics` until it happens, as
/// the macros do, and works whenever the recorder is installed.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    route: String,
    forwarded: OnceLock<Counter>,
    replayed: OnceLock<Counter>,
    queued: OnceLock<Counter>,
    duplicates: OnceLock<Counter>,
    /// `tollgate_enqueued_total{result}`: new, duplicate.
    enqueued: [OnceLock<Counter>; 2],
    verify_seconds: OnceLock<Histogram>,
    upstream_seconds: OnceLock<Histogram>,
    clock_skew: OnceLock<Gauge>,
    /// `tollgate_verified_total` by key label, in the key ring's order.
    verified: Vec<(std::sync::Arc<str>, OnceLock<Counter>)>,
}

impl RouteMetrics {
    pub(crate) fn new(route: &Route) -> Self {
        RouteMetrics {
            route: route.name.clone(),
            forwarded: OnceLock::new(),
            replayed: OnceLock::new(),
            queued: OnceLock::new(),
            duplicates: OnceLock::new(),
            enqueued: Default::default(),
            verify_seconds: OnceLock::new(),
            upstream_seconds: OnceLock::new(),
            clock_skew: OnceLock::new(),
            verified: route
                .keys
                .keys()
                .iter()
                .map(|k| (k.label.clone(), OnceLock::new()))
                .collect(),
        }
    }

    /// `tollgate_requests_total{outcome}` for an answered request.
    pub(crate) fn request(&self, outcome: &'static str) {
        let cell = match outcome {
            "forwarded" => &self.forwarded,
            "replayed" => &self.replayed,
            "queued" => &self.queued,
            _ => {
                metrics::counter!(REQUESTS, "route" => self.route.clone(), "outcome" => outcome)
                    .increment(1);
                return;
            }
        };
        cell.get_or_init(
            || metrics::counter!(REQUESTS, "route" => self.route.clone(), "outcome" => outcome),
        )
        .increment(1);
    }

    pub(crate) fn duplicate(&self) {
        self.duplicates
            .get_or_init(|| metrics::counter!(DUPLICATES, "route" => self.route.clone()))
            .increment(1);
    }

    /// `tollgate_enqueued_total{result}` for a stored event (`new`) or a known one.
    pub(crate) fn enqueued(&self, new: bool) {
        let result = if new { "new" } else { "duplicate" };
        self.enqueued[usize::from(!new)]
            .get_or_init(
                || metrics::counter!(ENQUEUED, "route" => self.route.clone(), "result" => result),
            )
            .increment(1);
    }

    pub(crate) fn verify_seconds(&self, secs: f64) {
        self.verify_seconds
            .get_or_init(|| metrics::histogram!(VERIFY_SECONDS, "route" => self.route.clone()))
            .record(secs);
    }

    pub(crate) fn upstream_seconds(&self, secs: f64) {
        self.upstream_seconds
            .get_or_init(|| metrics::histogram!(UPSTREAM_SECONDS, "route" => self.route.clone()))
            .record(secs);
    }

    pub(crate) fn clock_skew(&self, skew: f64) {
        self.clock_skew
            .get_or_init(|| metrics::gauge!(CLOCK_SKEW, "route" => self.route.clone()))
            .set(skew);
    }

    /// `tollgate_verified_total{key}`.
    pub(crate) fn verified(&self, key: &str) {
        match self.verified.iter().find(|(label, _)| &**label == key) {
            Some((label, cell)) => cell
                .get_or_init(|| {
                    metrics::counter!(VERIFIED, "route" => self.route.clone(), "key" => label.to_string())
                })
                .increment(1),
            // A label outside the ring cannot verify; counted all the same rather than lost.
            None => {
                metrics::counter!(VERIFIED, "route" => self.route.clone(), "key" => key.to_owned())
                    .increment(1);
            }
        }
    }
}
