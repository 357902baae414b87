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
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The open connections of each serving thread, so that a thread with more than its share lets
/// the others take the next connection. All threads wait on one listening socket and the kernel
/// wakes them all; whichever is scheduled first accepts, which with keep-alive clients (a
/// provider's, a load balancer's) left one thread with 60 % of the connections and the p99 of a
/// saturated core while the other had room.
#[derive(Debug, Clone)]
struct Balance {
    open: Arc<[AtomicUsize]>,
    me: usize,
}

/// How long a thread over its share waits before accepting anyway (another thread may be busy
/// or gone; nobody waits longer than this for the accept).
const YIELD_ACCEPT: Duration = Duration::from_micros(300);

impl Balance {
    fn over_share(&self) -> bool {
        let mine = self.open[self.me].load(Ordering::Relaxed);
        self.open
            .iter()
            .enumerate()
            .any(|(i, n)| i != self.me && n.load(Ordering::Relaxed) < mine)
    }

    fn opened(&self) -> OpenGuard {
        self.open[self.me].fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.clone())
    }
}

/// Counts a connection as open on its thread until dropped.
struct OpenGuard(Balance);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open[self.0.me].fetch_sub(1, Ordering::Relaxed);
    }
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
        self.serve_shared(listener, tls, shutdown, None).await
    }

    async fn serve_shared(
        &self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: impl Future<Output = ()>,
        balance: Option<Balance>,
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
            if balance.as_ref().is_some_and(Balance::over_share) {
                tokio::select! {
                    () = tokio::time::sleep(YIELD_ACCEPT) => {}
                    () = &mut shutdown => break,
                }
            }
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
            let open = balance.as_ref().map(Balance::opened);
            tokio::spawn(async move {
                let _open = open;
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
        let open: Arc<[AtomicUsize]> = (0..workers.max(1)).map(|_| AtomicUsize::new(0)).collect();
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
            let balance = Balance {
                open: Arc::clone(&open),
                me: i,
            };
            let thread = std::thread::Builder::new()
                .name(format!("tollgate-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let result = match TcpListener::from_std(listener) {
                            Ok(listener) => {
                                gateway
                                    .serve_shared(
                                        listener,
                                        tls,
                                        async move {
                                            let _ = stop.wait_for(|s| *s).await;
                                        },
                                        Some(balance),
                                    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_over_its_share_defers_until_its_connections_close() {
        let open: Arc<[AtomicUsize]> = (0..2).map(|_| AtomicUsize::new(0)).collect();
        let a = Balance {
            open: Arc::clone(&open),
            me: 0,
        };
        let b = Balance { open, me: 1 };
        assert!(!a.over_share() && !b.over_share());
        let first = a.opened();
        assert!(a.over_share(), "one more than the other thread");
        assert!(!b.over_share());
        let second = b.opened();
        assert!(!a.over_share() && !b.over_share());
        drop(second);
        assert!(a.over_share());
        drop(first);
        assert!(!a.over_share());
    }
}
