//! The admin listener: `/metrics` (Prometheus), `/healthz` (the process answers), `/readyz` (the
//! replay store answers its ping). Kept off the public listener so providers and scanners never
//! see it.

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

use crate::Gateway;

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
            let store = Arc::clone(&self.shared.store);
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let store = Arc::clone(&store);
                    let metrics = Arc::clone(&metrics);
                    async move {
                        let (status, body) = match req.uri().path() {
                            "/healthz" => (200, "ok\n".to_owned()),
                            "/readyz" => match store.ping().await {
                                Ok(()) => (200, "ready\n".to_owned()),
                                Err(e) => {
                                    tracing::warn!(error = %e, "not ready: replay store ping failed");
                                    (503, "state store unavailable\n".to_owned())
                                }
                            },
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
