//! Accepting connections: plain or TLS, HTTP/1.1 and HTTP/2 (hyper-util's auto builder), with a
//! header read timeout so a slow client cannot hold a connection open, and graceful drain.
//!
//! [`Gateway::spawn_workers`] serves one listener from several threads, nginx's model: each thread
//! runs its own single-threaded event loop with its own accept loop and its own upstream
//! connections, so a request is read, verified, forwarded and answered on one thread without a
//! cross-thread wake-up (on a busy machine those wake-ups and the work stealing behind them cost
//! more than the proxying). The store, the admin listener, reload and delivery stay on the
//! caller's runtime.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::pipeline::{self, Conn};
use crate::{stage, Gateway, Shared};

/// What a request handler on one serving loop reaches: the shared state and this loop's own
/// upstream connections (driven by this loop).
struct Local {
    shared: Arc<Shared>,
    upstreams: stage::forward::Upstreams,
}

impl Gateway {
    /// Serves the public listener until `shutdown` resolves, then stops accepting and waits up
    /// to `drain_timeout_secs` for in-flight requests. Upstream connections are made and pooled
    /// on the calling runtime.
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
        let local = Arc::new(Local {
            shared: Arc::clone(&self.shared),
            upstreams: stage::forward::Upstreams::new(),
        });
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
            let local = Arc::clone(&local);
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = tls.clone();
            tokio::spawn(async move {
                let conn = Conn {
                    peer,
                    tls: tls.is_some(),
                };
                let svc = service_fn(move |req| {
                    let local = Arc::clone(&local);
                    // Boxed: the pipeline's state machine is large, and hyper moves the
                    // service's future a few times before polling it; a box moves as a pointer.
                    Box::pin(async move {
                        Ok::<_, std::convert::Infallible>(
                            pipeline::handle(&local.shared, &local.upstreams, req, conn).await,
                        )
                    })
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
        tracing::debug!("draining in-flight requests");
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

/// The worker threads serving the public listener, from [`Gateway::spawn_workers`].
#[derive(Debug)]
pub struct Workers {
    drained: Vec<oneshot::Receiver<std::io::Result<()>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    exit: watch::Sender<bool>,
}

impl Gateway {
    /// Serves `listener` from `workers` threads (at least one), each with its own
    /// single-threaded runtime, accept loop and upstream client, until `stop` turns true; then
    /// each drains as [`Gateway::serve`] does. The threads' runtimes keep running (idle) until
    /// [`Workers::join`], so a connection another component opened on one of them (a store's
    /// lazily made connection) outlives the drain.
    pub fn spawn_workers(
        &self,
        listener: std::net::TcpListener,
        tls: Option<TlsAcceptor>,
        workers: usize,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Workers> {
        listener.set_nonblocking(true)?;
        let (exit, _) = watch::channel(false);
        let mut spawned = Workers {
            drained: Vec::new(),
            threads: Vec::new(),
            exit,
        };
        for i in 0..workers.max(1) {
            // Every clone shares the one listening socket; the kernel hands each connection to
            // whichever loop accepts first, so an idle thread picks up the next connection.
            let listener = listener.try_clone()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (done_tx, done_rx) = oneshot::channel();
            let mut exit_rx = spawned.exit.subscribe();
            let mut stop = stop.clone();
            let tls = tls.clone();
            let gateway = self.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tollgate-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let result = match TcpListener::from_std(listener) {
                            Ok(listener) => {
                                gateway
                                    .serve(listener, tls, async move {
                                        let _ = stop.wait_for(|s| *s).await;
                                    })
                                    .await
                            }
                            Err(e) => Err(e),
                        };
                        let _ = done_tx.send(result);
                        let _ = exit_rx.wait_for(|e| *e).await;
                    });
                })?;
            spawned.drained.push(done_rx);
            spawned.threads.push(thread);
        }
        Ok(spawned)
    }
}

impl Workers {
    /// Waits until every worker stopped accepting and drained; the first error, if any.
    pub async fn drained(&mut self) -> std::io::Result<()> {
        let mut first = Ok(());
        for rx in self.drained.drain(..) {
            let result = rx.await.unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "a serving thread ended without draining",
                ))
            });
            if first.is_ok() {
                first = result;
            }
        }
        first
    }

    /// Ends the worker threads and waits for them.
    pub fn join(self) {
        let _ = self.exit.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
