//! Stage 5: signature and freshness with the route's key ring. Records which key verified, how
//! long it took and the clock skew; on a mismatch, asks `diagnose::explain` why — at a bounded
//! rate, because a diagnosis costs several verifications and forgeries must stay cheap.

use std::num::NonZeroU32;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::request::Parts;
use tollgate_config::Route;
use tollgate_verify::{diagnose, Hints, Reject, Request, Verified};

use crate::metrics::RouteMetrics;
use crate::GatewayError;

/// Diagnoses per minute, process-wide.
const DIAGNOSES_PER_MINUTE: u32 = 30;

/// Budget for diagnoses.
pub struct DiagnosisBudget(DefaultDirectRateLimiter);

impl std::fmt::Debug for DiagnosisBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiagnosisBudget")
    }
}

impl DiagnosisBudget {
    pub(crate) fn new() -> Self {
        let n = NonZeroU32::new(DIAGNOSES_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        DiagnosisBudget(RateLimiter::direct(Quota::per_minute(n)))
    }
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Verifies the request as received.
pub(crate) fn run(
    route: &Route,
    handles: &RouteMetrics,
    parts: &Parts,
    url: &str,
    body: &[u8],
    budget: &DiagnosisBudget,
) -> Result<Verified, GatewayError> {
    let req = Request {
        method: parts.method.as_str(),
        url,
        headers: &parts.headers,
        body,
    };
    let now = now_unix();
    let started = Instant::now();
    let result = route.verifier.verify(&req, now);
    handles.verify_seconds(started.elapsed().as_secs_f64());
    match result {
        Ok(v) => {
            handles.verified(v.key_label());
            if let Some(t) = v.signed_time() {
                record_skew(route, handles, now.saturating_sub(t));
            }
            Ok(v)
        }
        Err(r) => {
            if let Reject::TimestampOutOfWindow { skew_secs, .. } = r {
                record_skew(route, handles, skew_secs);
            }
            let diagnosis = (matches!(r, Reject::SignatureMismatch | Reject::BodyHashMismatch)
                && budget.0.check().is_ok())
            .then(|| {
                let host = parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok());
                let alt: Vec<&str> = host.into_iter().collect();
                diagnose::explain(
                    route.verifier.as_ref(),
                    &req,
                    now,
                    &Hints { alt_hosts: &alt },
                )
            })
            .flatten()
            .map(Box::new);
            Err(GatewayError::Reject(r, diagnosis))
        }
    }
}

fn record_skew(route: &Route, handles: &RouteMetrics, skew: i64) {
    handles.clock_skew(skew as f64);
    let third = route.settings.tolerance_secs / 3;
    if skew.unsigned_abs() > third {
        tracing::warn!(
            route = %route.name,
            skew_secs = skew,
            tolerance_secs = route.settings.tolerance_secs,
            "clock skew with the provider exceeds a third of the tolerance: check NTP here and the provider's timestamps"
        );
    }
}
