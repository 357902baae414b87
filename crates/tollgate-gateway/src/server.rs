//! Accepting connections: plain or TLS, HTTP/1.1 and HTTP/2 (hyper-util's auto builder), with a
//! header read timeout so a slow client cannot hold a connection open, and graceful drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::pipeline::{self, Conn};
use crate::Gateway;

impl Gateway {
    /// Serves the public listener until `shutdown` resolves, then stops accepting and waits up
    /// to `drain_timeout_secs` for in-flight requests.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let config = self.config();
        let header_timeout = Duration::from_millis(config.server.header_timeout_ms);
        let drain = Duration::from_secs(config.server.drain_timeout_secs);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let shared = Arc::clone(&self.shared);
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = tls.clone();
            tokio::spawn(async move {
                let conn = Conn {
                    peer,
                    tls: tls.is_some(),
                };
                let svc = service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    async move {
                        Ok::<_, std::convert::Infallible>(pipeline::handle(shared, req, conn).await)
                    }
                });
                let result = match tls {
                    None => {
                        watcher
                            .watch(
                                builder
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .into_owned(),
                            )
                            .await
                    }
                    Some(acceptor) => {
                        // The handshake gets the same bound as a request head.
                        let stream = match tokio::time::timeout(
                            header_timeout,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(peer = %peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        watcher
                            .watch(
                                builder
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .into_owned(),
                            )
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!("draining in-flight requests");
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                drain_timeout_secs = drain.as_secs(),
                "drain timed out; closing remaining connections"
            );
        }
        Ok(())
    }
}
