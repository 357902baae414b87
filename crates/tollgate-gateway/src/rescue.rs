//! The one place a failure becomes an answer: status, `{"error":"<code>"}` (nothing for 404, so
//! scanners learn nothing), a metric and one audit line. The diagnosis of a signature mismatch
//! goes to the audit line only, never to the client.

use bytes::Bytes;
use http_body_util::Full;

use crate::pipeline::{Ctx, Response};
use crate::{metrics as m, GatewayError};

/// Turns `err` into the client's answer.
pub(crate) fn rescue(err: GatewayError, ctx: &Ctx) -> Response {
    let (status, code) = err.status_and_code();
    let route = ctx.route.unwrap_or_default().to_owned();
    metrics::counter!(m::REQUESTS, "route" => route.clone(), "outcome" => code).increment(1);
    if status < 500 && status != 404 {
        metrics::counter!(m::REJECTIONS, "route" => route.clone(), "reason" => code).increment(1);
    }
    let client_ip = ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let diagnosis = match &err {
        GatewayError::Reject(_, Some(d)) => Some(&**d),
        _ => None,
    };
    let source = std::error::Error::source(&err).map(|s| s.to_string());
    match status {
        404 => {
            tracing::debug!(target: "tollgate::audit", status, reason = code, client_ip, "no route")
        }
        500.. => tracing::error!(
            target: "tollgate::audit",
            route, client_ip, status, reason = code, detail = %err, source = source.as_deref().unwrap_or(""),
            "request failed"
        ),
        _ => tracing::warn!(
            target: "tollgate::audit",
            route, client_ip, status, reason = code, detail = %err,
            diagnosis = diagnosis.map(|d| d.code).unwrap_or(""),
            diagnosis_message = diagnosis.map(|d| d.message.as_str()).unwrap_or(""),
            "request refused"
        ),
    }
    let body = if status == 404 {
        Bytes::new()
    } else {
        Bytes::from(serde_json::json!({ "error": code }).to_string())
    };
    let mut resp = http::Response::new(Full::new(body));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if status != 404 {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    if status == 408 {
        // The body stream is in an unknown state; the connection cannot be reused.
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}
