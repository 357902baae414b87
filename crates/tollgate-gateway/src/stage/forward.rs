//! Stage 7: forward a verified request to the route's upstream and bring its answer back. Takes a
//! `&Verified`, which only `tollgate-verify` can make, so unverified bytes cannot reach the app.
//!
//! The app gets the original method, body and end-to-end headers, plus `X-Forwarded-For/-Proto/
//! -Host`, `Tollgate-Verified`, and Standard Webhooks headers signed with the route's `app_secret`
//! (made by the `standard-webhooks` provider's own signer), so it can refuse whatever bypassed
//! tollgate.

use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderMap, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tollgate_config::Route;
use tollgate_store::StoredResponse;
use tollgate_verify::{Options, SignInput, Verified};

use super::public_url::PublicUrl;
use crate::metrics::RouteMetrics;
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

/// One serving loop's way to the upstreams: plain-http upstreams (always HTTP/1.1, as the pooled
/// client would speak to them too) go over this loop's own keep-alive connections, driven by this
/// loop, taken and put back without the pooled client's checkout, locking across threads and
/// background pool task; https upstreams (TLS, HTTP/2 by ALPN) go through [`Client`].
#[derive(Debug)]
pub struct Upstreams {
    client: Client,
    /// One slot per upstream authority, found by a linear scan: a gateway has a handful of
    /// upstreams, and comparing a short authority is cheaper than hashing it with SipHash.
    idle: std::sync::Mutex<Vec<Slot>>,
}

/// One upstream's idle connections and the `Host` value its requests carry (made once).
#[derive(Debug)]
struct Slot {
    authority: Authority,
    host: Option<HeaderValue>,
    conns: Vec<Idle>,
}

/// A kept-alive HTTP/1.1 connection with nothing in flight.
#[derive(Debug)]
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// Idle connections older than this are closed rather than reused (the pooled client's figure).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream and serving loop; more are closed.
const MAX_IDLE: usize = 512;

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstreams {
    /// No connections yet.
    pub fn new() -> Self {
        Upstreams {
            client: client(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` (absolute URI) and returns the answer's head, plus the connection to put back
    /// once its body has been read.
    async fn request(
        &self,
        mut req: http::Request<Full<Bytes>>,
    ) -> Result<(http::Response<Incoming>, Option<Reusable>), GatewayError> {
        let authority = match (req.uri().scheme(), req.uri().authority()) {
            (Some(s), Some(a)) if *s == http::uri::Scheme::HTTP => a.clone(),
            _ => {
                let resp = self
                    .client
                    .request(req)
                    .await
                    .map_err(|e| GatewayError::Upstream(Box::new(e)))?;
                return Ok((resp, None));
            }
        };
        let (mut kept, host) = self.take(&authority);
        if let Some(host) = host {
            req.headers_mut().entry(http::header::HOST).or_insert(host);
        }
        // Origin form, as the pooled client sends to a server (not a proxy).
        let pq = req.uri().path_and_query().cloned();
        *req.uri_mut() = match pq {
            Some(pq) if pq.as_str() != "/" => {
                let mut parts = http::uri::Parts::default();
                parts.path_and_query = Some(pq);
                Uri::from_parts(parts).unwrap_or_default()
            }
            _ => Uri::default(),
        };
        // A kept connection the upstream closed meanwhile gives the request back unsent; it then
        // goes on a new connection (never a second time once written: a POST is not repeatable).
        while let Some(mut sender) = kept.take() {
            // Ready at once unless its connection is still finishing the previous exchange.
            if sender.ready().await.is_err() {
                kept = self.take(&authority).0;
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Some((authority, sender)))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        req = unsent;
                        kept = self.take(&authority).0;
                    }
                    None => return Err(GatewayError::Upstream(Box::new(e.into_error()))),
                },
            }
        }
        let mut sender = connect(&authority).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| GatewayError::Upstream(Box::new(e)))?;
        Ok((resp, Some((authority, sender))))
    }

    /// An idle connection to `authority`, if one is usable, and the `Host` value for it.
    fn take(
        &self,
        authority: &Authority,
    ) -> (Option<SendRequest<Full<Bytes>>>, Option<HeaderValue>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match idle.iter().position(|s| s.authority == *authority) {
            Some(i) => &mut idle[i],
            None => {
                idle.push(Slot {
                    authority: authority.clone(),
                    host: host_value(authority),
                    conns: Vec::new(),
                });
                let last = idle.len() - 1;
                &mut idle[last]
            }
        };
        while let Some(c) = slot.conns.pop() {
            if !c.sender.is_closed() && c.since.elapsed() < IDLE_TIMEOUT {
                return (Some(c.sender), slot.host.clone());
            }
        }
        (None, slot.host.clone())
    }

    fn put_back(&self, authority: Authority, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = idle.iter_mut().find(|s| s.authority == authority) {
            if slot.conns.len() < MAX_IDLE {
                slot.conns.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }
}

/// `Host` for an upstream authority: its host, and its port unless it is 80 (no user info).
fn host_value(authority: &Authority) -> Option<HeaderValue> {
    match authority.port_u16() {
        Some(p) if p != 80 => HeaderValue::from_str(&format!("{}:{p}", authority.host())).ok(),
        _ => HeaderValue::from_str(authority.host()).ok(),
    }
}

/// A new HTTP/1.1 connection to a plain-http upstream, driven by a task on this runtime.
async fn connect(authority: &Authority) -> Result<SendRequest<Full<Bytes>>, GatewayError> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    // An IPv6 literal comes bracketed in a URI; the socket address wants it bare.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| GatewayError::Upstream(Box::new(e)))?;
    // Nagle against the upstream's delayed ACK would hold back a request written in two segments.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| GatewayError::Upstream(Box::new(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
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

/// Removes, in place, the headers named in `extra` (such as [`DROP`]) and those the Connection
/// header lists (the order of the remaining fields may change; their values and their order per
/// name do not).
///
/// One pass over the names present (a webhook carries about ten) finds the few to remove; asking
/// the map for each listed name instead parsed and hashed all seventeen of them on every request,
/// about a tenth of the gateway's own work per request (callgrind).
pub fn strip_in_place(headers: &mut HeaderMap, extra: &[&str]) {
    let named = connection_named(headers);
    let gone: Vec<HeaderName> = headers
        .keys()
        .filter(|k| extra.contains(&k.as_str()) || named.contains(k))
        .cloned()
        .collect();
    for name in &gone {
        headers.remove(name);
    }
}

/// The header names the Connection header lists (hop-by-hop by its say); usually none.
pub fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect()
}

/// What the forward needs besides the route and the proof.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The request head as received (its headers are filtered in place and sent on).
    pub parts: Parts,
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
    let slash = if base.starts_with('/') || (base.is_empty() && path.starts_with('/')) {
        ""
    } else {
        "/"
    };
    let pq = match query {
        Some(q) => [slash, base, path, "?", q].concat(),
        None => [slash, base, path].concat(),
    };
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
pub(crate) async fn send(
    upstreams: &Upstreams,
    route: &Route,
    handles: &RouteMetrics,
    verified: &Verified,
    out: Outgoing<'_>,
) -> Result<Upstream, GatewayError> {
    let Outgoing {
        parts,
        body,
        client_ip,
        public,
        event_key,
    } = out;
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri = upstream_uri(route, target)?;
    let mut headers = parts.headers;
    strip_in_place(&mut headers, DROP);
    let mut set = |name: &'static str, value: Result<HeaderValue, _>| {
        if let Ok(v) = value {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-forwarded-for", ip_value(client_ip));
    set(
        "x-forwarded-proto",
        match public.scheme.as_str() {
            "https" => Ok(HeaderValue::from_static("https")),
            "http" => Ok(HeaderValue::from_static("http")),
            other => HeaderValue::from_str(other),
        },
    );
    set("x-forwarded-host", HeaderValue::from_str(&public.host));
    set(
        "tollgate-verified",
        HeaderValue::try_from(verified_header(verified)),
    );
    if route.app_secret.is_some() {
        let uri_text = uri.to_string();
        for (k, v) in app_signature(
            route,
            parts.method.as_str(),
            &uri_text,
            &body,
            &app_message_id(event_key),
        )? {
            headers.insert(k, v);
        }
    }
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = parts.method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    // Boxed: the exchange's state machine (the request, the timeout, the body collector) is
    // most of the pipeline's future; unboxed, every enclosing future carries it and each move
    // of one copies it (≈ 3 KiB a level).
    let (result, elapsed) =
        Box::pin(exchange(route, upstreams.request(req), Some(upstreams))).await;
    handles.upstream_seconds(elapsed.as_secs_f64());
    result
}

/// An IP address as a header value. IPv4 is written by hand: through `Display` it went through the
/// formatting machinery octet by octet, several times the cost of the bytes themselves.
fn ip_value(ip: IpAddr) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string());
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    HeaderValue::from_bytes(&buf[..n])
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

/// A connection to give back to [`Upstreams`] once the answer is read.
type Reusable = (Authority, SendRequest<Full<Bytes>>);

/// The upstream's answer, hop-by-hop headers removed, the body as read.
#[derive(Debug)]
pub struct Upstream {
    /// Its status.
    pub status: http::StatusCode,
    /// Its end-to-end headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Upstream {
    /// The answer as the replay store keeps it (a copy: only made when it is stored).
    pub fn to_stored(&self) -> StoredResponse {
        StoredResponse {
            status: self.status.as_u16(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: self.body.to_vec(),
        }
    }
}

/// Sends `req` over `upstreams` within the route's `upstream_timeout_ms` and reads the answer
/// (bounded); also says how long it took.
pub async fn round_trip(
    upstreams: &Upstreams,
    route: &Route,
    req: http::Request<Full<Bytes>>,
) -> (Result<Upstream, GatewayError>, Duration) {
    exchange(route, upstreams.request(req), Some(upstreams)).await
}

/// Sends and reads the answer as received (bounded in time and size); also says how long it took.
async fn exchange(
    route: &Route,
    sent: impl Future<Output = Result<(http::Response<Incoming>, Option<Reusable>), GatewayError>>,
    pool: Option<&Upstreams>,
) -> (Result<Upstream, GatewayError>, Duration) {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(route.upstream_timeout_ms);
    let result = tokio::time::timeout_at(deadline, async {
        let (resp, conn) = sent.await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_UPSTREAM_BODY)
            .collect()
            .await
            .map_err(GatewayError::Upstream)?
            .to_bytes();
        // Only a connection whose answer was read whole can carry the next request.
        if let (Some(pool), Some((authority, sender))) = (pool, conn) {
            pool.put_back(authority, sender);
        }
        Ok::<_, GatewayError>((parts, body))
    })
    .await;
    let elapsed = started.elapsed();
    let result = match result {
        Err(_) => Err(GatewayError::UpstreamTimeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok((parts, body))) => {
            let mut headers = parts.headers;
            strip_in_place(&mut headers, &DROP[..9]);
            Ok(Upstream {
                status: parts.status,
                headers,
                body,
            })
        }
    };
    (result, elapsed)
}

/// The `webhook-id` tollgate sends the app: derived from the event key, so a provider retry that
/// gets through (after a released claim) carries the same id and the app can deduplicate too.
fn app_message_id(event_key: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(event_key.as_bytes());
    format!("tg_{}", hex::encode(&d[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_values_are_what_display_writes() {
        let edges = [0u8, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255];
        for a in edges {
            for b in edges {
                let ip = IpAddr::from([a, b, 255 - a, 9]);
                assert_eq!(ip_value(ip).unwrap(), ip.to_string().as_str());
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_value(v6).unwrap(), "2001:db8::1");
    }

    #[test]
    fn strip_removes_listed_and_connection_named_headers_and_keeps_the_rest() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "hooks.example.com"),
            ("connection", "keep-alive, X-Hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("content-length", "12"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-twilio-signature", "sig"),
            ("accept", "a"),
            ("accept", "b"),
            ("content-type", "application/x-www-form-urlencoded"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_in_place(&mut h, DROP);
        let mut left: Vec<(&str, &str)> = h
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ("accept", "a"),
                ("accept", "b"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-twilio-signature", "sig"),
            ]
        );

        // An answer keeps what only a request must lose (the first nine are hop-by-hop proper).
        let mut answer = HeaderMap::new();
        answer.insert("content-length", HeaderValue::from_static("3"));
        answer.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        strip_in_place(&mut answer, &DROP[..9]);
        assert_eq!(answer.len(), 1);
        assert!(answer.contains_key("content-length"));
    }
}
