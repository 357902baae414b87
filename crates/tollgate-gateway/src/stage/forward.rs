//! Stage 7: forward a verified request to the route's upstream and bring its answer back. Takes a
//! `&Verified`, which only `tollgate-verify` can make, so unverified bytes cannot reach the app.
//!
//! The app gets the original method, body and end-to-end headers, plus `X-Forwarded-For/-Proto/
//! -Host`, `Tollgate-Verified`, and Standard Webhooks headers signed with the route's `app_secret`
//! (made by the `standard-webhooks` provider's own signer), so it can refuse whatever bypassed
//! tollgate.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate_config::Route;
use tollgate_store::StoredResponse;
use tollgate_verify::{Options, SignInput, Verified};

use super::public_url::PublicUrl;
use crate::metrics as m;
use crate::GatewayError;

/// The pooled keep-alive upstream client (HTTP/1.1; HTTP/2 by ALPN on https upstreams).
pub type Client =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest upstream answer kept (it is stored for replays).
const MAX_UPSTREAM_BODY: usize = 16 * 1024 * 1024;

/// Builds the client.
pub fn client() -> Client {
    // Nagle's algorithm against the peer's delayed ACK adds up to tens of milliseconds to a small
    // request written in two segments; hyper-util leaves it on.
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https)
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones
/// tollgate sets itself and must not take from the client.
pub const DROP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "tollgate-verified",
    "tollgate-replayed",
];

/// Removes hop-by-hop headers, including those the Connection header names.
pub fn strip_hop_by_hop(headers: &HeaderMap, extra: &[&str]) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        let name = k.as_str();
        if extra.contains(&name) || named.iter().any(|n| n == name) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// What the forward needs besides the route and the proof.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The request head as received.
    pub parts: &'a Parts,
    /// The body as received.
    pub body: Bytes,
    /// The client IP tollgate determined.
    pub client_ip: IpAddr,
    /// The URL the provider called.
    pub public: &'a PublicUrl,
    /// The replay key (the app's `webhook-id` derives from it, stable across provider retries).
    pub event_key: &'a str,
}

/// The upstream URI: upstream's scheme, authority and path prefix, then the request's raw path
/// (minus the route prefix with `strip_prefix`) and raw query.
pub fn upstream_uri(route: &Route, target: &str) -> Result<Uri, GatewayError> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = if route.strip_prefix && route.path != "/" {
        path.strip_prefix(route.path.as_str()).unwrap_or(path)
    } else {
        path
    };
    let base = route.upstream.path().trim_end_matches('/');
    let mut pq = format!("{base}{path}");
    if !pq.starts_with('/') {
        pq.insert(0, '/');
    }
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    let mut b = Uri::builder().path_and_query(pq);
    if let Some(s) = route.upstream.scheme() {
        b = b.scheme(s.clone());
    }
    if let Some(a) = route.upstream.authority() {
        b = b.authority(a.clone());
    }
    b.build()
        .map_err(|_| GatewayError::BadRequest("request target cannot be mapped to the upstream"))
}

/// Forwards and returns the upstream's answer.
pub async fn send(
    client: &Client,
    route: &Route,
    verified: &Verified,
    out: Outgoing<'_>,
) -> Result<StoredResponse, GatewayError> {
    let target = out
        .parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri = upstream_uri(route, target)?;
    let mut headers = strip_hop_by_hop(&out.parts.headers, DROP);
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-forwarded-for", out.client_ip.to_string());
    set("x-forwarded-proto", out.public.scheme.clone());
    set("x-forwarded-host", out.public.host.clone());
    set("tollgate-verified", verified_header(verified));
    let uri_text = uri.to_string();
    for (k, v) in app_signature(
        route,
        out.parts.method.as_str(),
        &uri_text,
        &out.body,
        &app_message_id(out.event_key),
    )? {
        headers.insert(k, v);
    }
    let mut req = http::Request::builder()
        .method(out.parts.method.clone())
        .uri(uri)
        .body(Full::new(out.body))
        .map_err(|e| GatewayError::Upstream(Box::new(e)))?;
    *req.headers_mut() = headers;
    round_trip(client, route, req).await
}

/// The `Tollgate-Verified` value: which provider and key verified the request.
pub fn verified_header(verified: &Verified) -> String {
    format!(
        "provider={}; key={}",
        verified.provider(),
        verified.key_label()
    )
}

/// Standard Webhooks headers (`webhook-id` = `message_id`, `webhook-timestamp` = now,
/// `webhook-signature`) signed with the route's `app_secret`; none without one.
pub fn app_signature(
    route: &Route,
    method: &str,
    uri: &str,
    body: &[u8],
    message_id: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, GatewayError> {
    let Some((secret, _)) = &route.app_secret else {
        return Ok(Vec::new());
    };
    let spec = tollgate_verify::find_provider("standard-webhooks").ok_or(
        GatewayError::BadRequest("standard-webhooks signer missing from this build"),
    )?;
    let input = SignInput {
        method: method.to_owned(),
        url: uri.to_owned(),
        content_type: None,
        body: body.to_vec(),
        now: super::verify::now_unix(),
        nonce: message_id.to_owned(),
    };
    let signed = (spec.sign)(&Options::new(), secret, &input)
        .map_err(|e| GatewayError::Upstream(format!("signing for the app failed: {e}").into()))?;
    Ok(signed
        .headers
        .into_iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::try_from(k).ok()?,
                HeaderValue::try_from(v).ok()?,
            ))
        })
        .collect())
}

/// Sends `req` within the route's `upstream_timeout_ms` and reads the answer (bounded).
pub async fn round_trip(
    client: &Client,
    route: &Route,
    req: http::Request<Full<Bytes>>,
) -> Result<StoredResponse, GatewayError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(route.upstream_timeout_ms);
    let result = tokio::time::timeout_at(deadline, async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| GatewayError::Upstream(Box::new(e)))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_UPSTREAM_BODY)
            .collect()
            .await
            .map_err(GatewayError::Upstream)?
            .to_bytes();
        Ok::<_, GatewayError>((parts, body))
    })
    .await;
    metrics::histogram!(m::UPSTREAM_SECONDS, "route" => route.name.clone())
        .record(started.elapsed().as_secs_f64());
    let (parts, body) = result.map_err(|_| GatewayError::UpstreamTimeout)??;
    let headers = strip_hop_by_hop(&parts.headers, &DROP[..9])
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    Ok(StoredResponse {
        status: parts.status.as_u16(),
        headers,
        body: body.to_vec(),
    })
}

/// The `webhook-id` tollgate sends the app: derived from the event key, so a provider retry that
/// gets through (after a released claim) carries the same id and the app can deduplicate too.
fn app_message_id(event_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(event_key.as_bytes());
    format!("tg_{}", hex::encode(&d[..16]))
}
