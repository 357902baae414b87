//! The admin listener: `/metrics` (Prometheus), `/healthz` (the process answers), `/readyz` (the
//! replay store answers its ping, and so does the event queue while a route is in queue mode).
//! Kept off the public listener so providers and scanners never see it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use tollgate_config::Mode;

use crate::{Gateway, Shared};

impl Gateway {
    /// Serves the admin endpoints until `shutdown` resolves.
    pub async fn serve_admin(
        &self,
        listener: TcpListener,
        metrics: Option<PrometheusHandle>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let metrics = Arc::new(metrics);
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                () = &mut shutdown => return Ok(()),
            };
            let shared = Arc::clone(&self.shared);
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let shared = Arc::clone(&shared);
                    let metrics = Arc::clone(&metrics);
                    async move {
                        let (status, body) = match req.uri().path() {
                            "/healthz" => (200, "ok\n".to_owned()),
                            "/readyz" => readyz(&shared).await,
                            "/metrics" => match metrics.as_ref() {
                                Some(h) => (200, h.render()),
                                None => (404, "metrics recorder not installed\n".to_owned()),
                            },
                            _ => (404, String::new()),
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() =
                            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }
}

/// Ready when the replay store answers and, while any route is in queue mode, the event queue
/// does too: a queue route answers 503 to every provider while its queue is unreachable, so a
/// load balancer should send the traffic to an instance whose queue is up.
async fn readyz(shared: &Shared) -> (u16, String) {
    if let Err(e) = shared.store.ping().await {
        tracing::warn!(error = %e, "not ready: replay store ping failed");
        return (503, "state store unavailable\n".to_owned());
    }
    let queued = shared.table().routes.iter().any(|r| r.mode == Mode::Queue);
    if let (true, Some(queue)) = (queued, shared.queue.as_ref()) {
        if let Err(e) = queue.ping().await {
            tracing::warn!(error = %e, "not ready: event queue ping failed");
            return (503, "event queue unavailable\n".to_owned());
        }
    }
    (200, "ready\n".to_owned())
}
