//! Stage 7 of a `mode = "queue"` route: store the verified event durably, then (in the pipeline)
//! answer the provider with the route's static response. [`event`] takes a `&Verified`, which only
//! `tollgate-verify` can make, so unverified bytes cannot be queued.
//!
//! What is stored is what delivery needs later, fixed at receipt: the method, the public URL, the
//! end-to-end headers as received (hop-by-hop and client-supplied `X-Forwarded-*` /
//! `Tollgate-Verified` removed, as the forward stage does), the `X-Forwarded-For/-Proto/-Host` and
//! `Tollgate-Verified` values tollgate determined, and the request target as received in the
//! pseudo-header [`TARGET`] (the public URL may carry a `public_url` prefix, so the target cannot
//! be recovered from it). The Standard Webhooks signature for the app is made at each delivery, so
//! its timestamp is fresh even for a retry hours later.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::request::Parts;
use tollgate_config::{Route, StaticResponse};
use tollgate_store::{Enqueued, EventQueue, QueuedEvent, StoredResponse};
use tollgate_verify::Verified;

use super::forward::{connection_named, verified_header, DROP};
use super::public_url::PublicUrl;
use crate::metrics::{self as m, RouteMetrics};
use crate::GatewayError;

/// Pseudo-header holding the request target (path and query) as received. Names starting with
/// `:` are tollgate's own metadata: never sent to the app.
pub const TARGET: &str = ":target";

/// What the event is made of besides the route and the proof.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// The request head as received.
    pub parts: &'a Parts,
    /// The body as received.
    pub body: &'a [u8],
    /// The client IP tollgate determined.
    pub client_ip: IpAddr,
    /// The URL the provider called.
    pub public: &'a PublicUrl,
    /// The replay key: the event id, the queue's primary key and the app's `Idempotency-Key`.
    pub event_key: &'a str,
}

/// The event to store for a verified request.
pub fn event(route: &Route, verified: &Verified, inc: &Incoming<'_>) -> QueuedEvent {
    let received = &inc.parts.headers;
    let mut headers: Vec<(String, Vec<u8>)> = Vec::with_capacity(received.len() + 5);
    headers.push((
        TARGET.to_owned(),
        inc.parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes()
            .to_vec(),
    ));
    // What `strip_in_place` keeps, read in place rather than from a filtered copy of the map.
    let named = connection_named(received);
    headers.extend(
        received
            .iter()
            .filter(|(k, _)| !DROP.contains(&k.as_str()) && !named.contains(k))
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())),
    );
    for (k, v) in [
        ("x-forwarded-for", inc.client_ip.to_string()),
        ("x-forwarded-proto", inc.public.scheme.clone()),
        ("x-forwarded-host", inc.public.host.clone()),
        ("tollgate-verified", verified_header(verified)),
    ] {
        headers.push((k.to_owned(), v.into_bytes()));
    }
    let order_key = route
        .queue
        .as_ref()
        .and_then(|q| q.order_key.as_deref())
        .and_then(|field| order_value(&inc.parts.headers, inc.body, field));
    QueuedEvent {
        id: inc.event_key.to_owned(),
        route: route.name.clone(),
        method: inc.parts.method.as_str().to_owned(),
        url: inc.public.url.clone(),
        headers,
        body: inc.body.to_vec(),
        received_at_ms: now_ms(),
        order_key,
    }
}

/// Stores the event; `Ok` only once it is durable. A duplicate id (the provider's retry of an
/// event already stored) is acknowledged again without a second copy.
pub(crate) async fn store(
    queue: &dyn EventQueue,
    route: &Route,
    handles: &RouteMetrics,
    verified: &Verified,
    inc: &Incoming<'_>,
) -> Result<Enqueued, GatewayError> {
    let result = queue
        .enqueue_owned(event(route, verified, inc))
        .await
        .map_err(|e| {
            metrics::counter!(m::STORE_ERRORS, "op" => "enqueue").increment(1);
            GatewayError::Queue(e)
        })?;
    handles.enqueued(result == Enqueued::New);
    Ok(result)
}

/// The static answer as a stored response (also what provider retries are answered with).
pub fn static_answer(r: &StaticResponse) -> StoredResponse {
    StoredResponse {
        status: r.status,
        headers: r
            .content_type
            .iter()
            .map(|ct| ("content-type".to_owned(), ct.as_bytes().to_vec()))
            .collect(),
        body: r.body.as_bytes().to_vec(),
    }
}

/// The value of body field `field`: a form parameter (form bodies) or a top-level JSON string or
/// number (JSON bodies). `None` when absent, empty or not a scalar: the event is then unordered.
pub fn order_value(headers: &http::HeaderMap, body: &[u8], field: &str) -> Option<String> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let value = if ct.starts_with("application/x-www-form-urlencoded") {
        tollgate_verify::form::parse(body)
            .into_iter()
            .find(|(k, _)| k.as_ref() == field.as_bytes())
            .and_then(|(_, v)| String::from_utf8(v.into_owned()).ok())
    } else {
        match serde_json::from_slice::<serde_json::Value>(body)
            .ok()?
            .get(field)?
        {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    value.filter(|v| !v.is_empty())
}

/// Unix ms now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, v.parse().expect("hv"));
        h
    }

    #[test]
    fn order_value_from_form_and_json() {
        let form = ct("application/x-www-form-urlencoded");
        assert_eq!(
            order_value(&form, b"A=1&CallSid=CA%20x&CallSid=second", "CallSid").as_deref(),
            Some("CA x")
        );
        assert_eq!(order_value(&form, b"A=1", "CallSid"), None);
        assert_eq!(order_value(&form, b"CallSid=", "CallSid"), None);
        let json = ct("application/json");
        assert_eq!(
            order_value(&json, br#"{"call_id":"c1","n":2}"#, "call_id").as_deref(),
            Some("c1")
        );
        assert_eq!(
            order_value(&json, br#"{"n":42}"#, "n").as_deref(),
            Some("42")
        );
        assert_eq!(order_value(&json, br#"{"o":{"a":1}}"#, "o"), None);
        assert_eq!(order_value(&json, b"not json", "o"), None);
    }
}
