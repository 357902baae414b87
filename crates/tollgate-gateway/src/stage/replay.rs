//! Stage 6: replay and idempotency. The event key is the route name plus the provider's event id,
//! or, for schemes without one, a SHA-256 of method, URL and body. The first delivery claims it;
//! a duplicate gets the stored answer (or 409 while the first is in flight). A store failure fails
//! closed (503): forwarding without the claim could deliver a replay.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tollgate_config::Route;
use tollgate_store::{Claim, ReplayStore, StoredResponse};
use tollgate_verify::Verified;

use crate::metrics::{self as m, RouteMetrics};
use crate::GatewayError;

/// Added to the upstream timeout for the in-flight lease, so the lease outlives the forward.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The event key.
pub fn key(route: &Route, verified: &Verified, method: &str, url: &str, body: &[u8]) -> String {
    match verified.event_id_str() {
        Some(id) => {
            let mut key = start(&route.name, ":id:", id.len());
            key.push_str(id);
            key
        }
        None => digest_key(&route.name, method, url, body),
    }
}

/// `<route>:sha256:<hex of SHA-256 over method, URL and body>`, for schemes without an event id.
fn digest_key(route: &str, method: &str, url: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(url.as_bytes());
    h.update(b"\n");
    h.update(body);
    let mut key = start(route, ":sha256:", 64);
    for b in h.finalize() {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 15)]));
    }
    key
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `route` + `kind` with room for `rest` more bytes: one allocation for the whole key, which is
/// made for every request (`format!` with `hex::encode` cost several times the key's SHA-256).
fn start(route: &str, kind: &str, rest: usize) -> String {
    let mut key = String::with_capacity(route.len() + kind.len() + rest);
    key.push_str(route);
    key.push_str(kind);
    key
}

/// Claims the key.
pub(crate) async fn claim(
    store: &dyn ReplayStore,
    route: &Route,
    handles: &RouteMetrics,
    key: &str,
) -> Result<Claim, GatewayError> {
    let lease = Duration::from_millis(route.upstream_timeout_ms) + LEASE_MARGIN;
    let claim = store.claim(key, lease).await.map_err(|e| {
        metrics::counter!(m::STORE_ERRORS, "op" => "claim").increment(1);
        GatewayError::Store(e)
    })?;
    if !matches!(claim, Claim::Claimed) {
        handles.duplicate();
    }
    Ok(claim)
}

/// After forwarding: keep the app's answer (status < 500) for `dedupe_ttl_secs`, else release the
/// claim so the provider's retry is forwarded. A failure here is logged, not answered: the app
/// already has the request. `complete_soon`, because the provider's answer need not wait for the
/// disk: with `fsync = "batch"` SQLite's commit follows in the background (a refused write still
/// fails later claims closed); with `"always"` it is waited for.
pub async fn finish(
    store: &dyn ReplayStore,
    route: &Route,
    key: &str,
    answer: Option<&StoredResponse>,
) {
    let (op, result) = match answer {
        Some(r) if r.status < 500 => (
            "complete",
            store
                .complete_soon(key, r, Duration::from_secs(route.dedupe_ttl_secs))
                .await,
        ),
        _ => ("release", store.release(key).await),
    };
    if let Err(e) = result {
        metrics::counter!(m::STORE_ERRORS, "op" => op).increment(1);
        tracing::error!(route = %route.name, op, error = %e, "replay store failed after forwarding");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are persisted (SQLite, Redis): the format must not drift between versions.
    #[test]
    fn digest_key_format_is_stable() {
        let body = b"CallSid=CA1&From=%2B15005550006";
        let mut h = Sha256::new();
        h.update(b"POST\nhttps://h.example/hook?x=1\n");
        h.update(body);
        let want = format!("twilio:sha256:{}", hex::encode(h.finalize()));
        assert_eq!(
            digest_key("twilio", "POST", "https://h.example/hook?x=1", body),
            want
        );
        assert_eq!(want.len(), "twilio:sha256:".len() + 64);
    }
}
