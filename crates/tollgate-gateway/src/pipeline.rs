//! The request pipeline, top to bottom in request order. Each line says why the stage sits where
//! it does; the integration test `stage_order_is_pinned` checks the order from outside.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use tollgate_config::Mode;
use tollgate_store::{Claim, Enqueued, StoreError, StoredResponse};

use crate::metrics::RouteMetrics;
use crate::stage::{self, forward::Outgoing};
use crate::{rescue, GatewayError, Shared, Table};

/// Response type of the public listener.
pub type Response = http::Response<Full<Bytes>>;

/// What the connection knows about a request.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// Socket peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// What rescue needs to write the audit line.
#[derive(Debug, Default)]
pub(crate) struct Ctx<'t> {
    pub(crate) route: Option<&'t str>,
    pub(crate) client_ip: Option<IpAddr>,
}

/// Handles one request; never fails (failures become answers in [`rescue`]).
pub(crate) async fn handle(
    shared: &Shared,
    upstreams: &stage::forward::Upstreams,
    req: http::Request<Incoming>,
    conn: Conn,
) -> Response {
    let table = shared.table();
    let mut ctx = Ctx::default();
    match run(shared, &table, upstreams, req, conn, &mut ctx).await {
        Ok((resp, handles, outcome)) => {
            handles.request(outcome);
            resp
        }
        Err(e) => rescue::rescue(e, &ctx),
    }
}

async fn run<'t>(
    shared: &Shared,
    table: &'t Table,
    upstreams: &stage::forward::Upstreams,
    req: http::Request<Incoming>,
    conn: Conn,
    ctx: &mut Ctx<'t>,
) -> Result<(Response, &'t RouteMetrics, &'static str), GatewayError> {
    let server = &table.server;
    let (parts, body) = req.into_parts();

    // 1. Route first: an unknown path costs nothing and learns nothing (404, no body read).
    let (route, handles) = table.select(parts.uri.path())?;
    ctx.route = Some(&route.name);

    // 2. Client IP next: allow_ips, the failure budget and the audit line all need it.
    let via = stage::client_ip::via(conn.peer, &parts.headers, &server.trusted_proxies);
    let client_ip = via.client_ip;
    ctx.client_ip = Some(client_ip);
    stage::allow_ips::check(route, client_ip)?;
    // A client that spent its failure budget is refused before its body is read or verified.
    shared.failures.check(client_ip)?;

    // 3. Body, bounded in size and time, before verification: the signature covers these bytes.
    let content_length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = stage::body::read(
        body,
        content_length,
        server.max_body_bytes,
        Duration::from_millis(server.body_timeout_ms),
    )
    .await?;

    // 4. Public URL: URL-signing schemes sign what the provider called, not what we received.
    let public = stage::public_url::build(&parts, server.public_url.as_deref(), conn.tls, &via)?;

    // 5. Verify: nothing below runs for an unauthenticated request.
    let verified = match stage::verify::run(
        route,
        handles,
        &parts,
        &public.url,
        &body,
        &shared.diagnoses,
    ) {
        Ok(v) => v,
        Err(e) => {
            shared.failures.record_failure(client_ip)?;
            return Err(e);
        }
    };

    // 6. The event key, after verification, so forgeries cannot fill the store or block real ids.
    let key = stage::replay::key(route, &verified, parts.method.as_str(), &public.url, &body);

    // 7a. Queue mode: the queue itself is the dedupe authority (its enqueue is atomic per event
    // key and keeps delivered events at least `dedupe_ttl_secs`), so an acknowledgement costs one
    // durable write and no replay claim. Only once the event is stored is the static response
    // sent; a failed store answers 503, so the provider retries rather than believing an
    // unstored event delivered.
    if route.mode == Mode::Queue {
        let inc = stage::enqueue::Incoming {
            parts: &parts,
            body: &body,
            client_ip,
            public: &public,
            event_key: &key,
        };
        let (queue, settings) = match (shared.queue.as_deref(), route.queue.as_ref()) {
            (Some(queue), Some(settings)) => (queue, settings),
            _ => {
                return Err(GatewayError::Queue(StoreError::Unavailable(
                    "this gateway runs without an event queue".into(),
                )))
            }
        };
        let enqueued = stage::enqueue::store(queue, route, handles, &verified, &inc).await?;
        let ans = stage::enqueue::static_answer(&settings.response);
        return Ok(match enqueued {
            Enqueued::New => {
                shared.wake.notify_one();
                (answer(&ans, false), handles, "queued")
            }
            Enqueued::Duplicate => {
                handles.duplicate();
                (answer(&ans, true), handles, "replayed")
            }
        });
    }

    // 7b. Proxy mode: the replay claim, then forward; the claim is completed with the app's
    // answer or released for the retry.
    match stage::replay::claim(shared.store.as_ref(), route, handles, &key).await? {
        Claim::Claimed => {}
        Claim::InFlight => return Err(GatewayError::InFlight),
        Claim::Done(first) => return Ok((answer(&first, true), handles, "replayed")),
    }
    let out = Outgoing {
        parts,
        body,
        client_ip,
        public: &public,
        event_key: &key,
    };
    let result = stage::forward::send(upstreams, route, handles, &verified, out).await;
    // Copied into the store's form only when it is kept; the client gets the answer as received.
    let kept = match &result {
        Ok(up) if up.status.as_u16() < 500 => Some(up.to_stored()),
        _ => None,
    };
    stage::replay::finish(shared.store.as_ref(), route, &key, kept.as_ref()).await;
    let upstream = result?;
    let mut resp = http::Response::new(Full::new(upstream.body));
    *resp.status_mut() = upstream.status;
    *resp.headers_mut() = upstream.headers;
    Ok((resp, handles, "forwarded"))
}

/// The upstream's answer, unchanged (a replay is marked so operators can tell).
fn answer(r: &StoredResponse, replayed: bool) -> Response {
    let mut resp = http::Response::new(Full::new(Bytes::copy_from_slice(&r.body)));
    *resp.status_mut() =
        http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let headers = resp.headers_mut();
    for (k, v) in &r.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::try_from(k.as_str()),
            http::HeaderValue::from_bytes(v),
        ) {
            headers.append(k, v);
        }
    }
    if replayed {
        headers.insert("tollgate-replayed", http::HeaderValue::from_static("true"));
    }
    resp
}
