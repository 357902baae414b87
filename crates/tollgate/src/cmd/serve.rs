//! `tollgate serve`: load the config, pick the replay store and the event queue, and run the
//! public and admin listeners and the queue's delivery workers until SIGTERM/Ctrl-C, reloading on
//! SIGHUP or a changed file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::OnceCell;
use tollgate_config::{Config, Env, ProcessEnv, RedisState, StateBackend};
use tollgate_gateway::delivery::DeliveryOptions;
use tollgate_gateway::{metrics, telemetry, tls, Gateway};
use tollgate_store::{
    Claim, EventQueue, RedisOptions, RedisStore, RedisTarget, RedisTls, ReplayStore, StoreError,
    StoredResponse,
};

/// Arguments of `tollgate serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (see docs/config.md).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let env: Arc<dyn Env> = Arc::new(ProcessEnv);
    let config =
        Config::load(&args.config, env.as_ref()).map_err(|e| anyhow!("invalid config:\n{e}"))?;
    telemetry::init(config.server.log_format);
    let store = open_store(&config.state)?;
    // Opened whatever the routes' modes, so a reload may turn a route to queue mode.
    let queue = super::queue::open(&config.state)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config, store, queue, args.config, env))?;
    Ok(ExitCode::SUCCESS)
}

/// The replay store named by `[state]`.
fn open_store(state: &StateBackend) -> anyhow::Result<Arc<dyn ReplayStore>> {
    match state {
        StateBackend::Memory => Ok(Arc::new(tollgate_store::memory::MemoryStore::new())),
        StateBackend::Sqlite { path, fsync } => {
            let durability = match fsync {
                tollgate_config::Fsync::Always => tollgate_store::Durability::Always,
                tollgate_config::Fsync::Batch => tollgate_store::Durability::Batch,
            };
            let store = tollgate_store::SqliteStore::open(path, durability)
                .with_context(|| format!("cannot open the state database {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StateBackend::Redis(redis) => Ok(Arc::new(LazyRedisStore::new(redis)?)),
    }
}

/// A [`RedisStore`] that connects on first use instead of at start-up, so an instance started
/// while Redis is down runs (not ready, every claim failing closed with 503) and begins serving
/// the moment Redis answers, instead of exiting and crash-looping. Once connected, the
/// [`RedisStore`] reconnects by itself.
struct LazyRedisStore {
    /// Holds the password, if any: only ever passed to the client.
    target: RedisTarget,
    /// Where, with the password masked, for logs.
    shown: String,
    options: RedisOptions,
    store: OnceCell<RedisStore>,
}

impl std::fmt::Debug for LazyRedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyRedisStore")
            .field("url", &self.shown)
            .field("key_prefix", &self.options.key_prefix)
            .finish_non_exhaustive()
    }
}

/// The store options `[state]` asks for; the replay store and the queue share them.
pub(crate) fn redis_options(state: &RedisState) -> RedisOptions {
    let operation = Duration::from_millis(state.operation_timeout_ms);
    let mut options = RedisOptions::new().with_key_prefix(state.key_prefix.clone());
    options.connect_timeout = Duration::from_millis(state.connect_timeout_ms);
    options.response_timeout = operation;
    options.operation_timeout = operation;
    options
}

/// The Redis node or cluster `[state]` names, with its TLS files read and checked now: a
/// missing or unreadable file, or one that is not PEM, stops the start (and fails `tollgate
/// check`) with the key's name, instead of showing later as refused connections.
pub(crate) fn redis_target(state: &RedisState) -> anyhow::Result<RedisTarget> {
    let url = state.url.expose();
    let target = if state.cluster {
        RedisTarget::cluster(url, &state.cluster_nodes)
    } else {
        RedisTarget::node(url)
    }
    .map_err(|e| anyhow!("[state] url {}: {}", state.url.redacted(), e.reason()))?;
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("[state] {key}: reading {}", path.display()))
    };
    let tls = &state.tls;
    if tls.ca.is_none() && tls.client.is_none() {
        return Ok(target);
    }
    let material = RedisTls {
        ca: tls.ca.as_deref().map(|p| read("tls_ca", p)).transpose()?,
        client: match &tls.client {
            Some((cert, key)) => Some((read("tls_cert", cert)?, read("tls_key", key)?)),
            None => None,
        },
    };
    target
        .with_tls(material)
        .map_err(|e| anyhow!("[state] tls_ca / tls_cert / tls_key: {}", e.reason()))
}

/// How the log names the Redis state store.
pub(crate) fn redis_shown(state: &RedisState) -> String {
    if state.cluster {
        format!(
            "{} (cluster, {} more seed nodes)",
            state.url.redacted(),
            state.cluster_nodes.len()
        )
    } else {
        state.url.redacted()
    }
}

impl LazyRedisStore {
    fn new(state: &RedisState) -> anyhow::Result<Self> {
        Ok(Self {
            target: redis_target(state)?,
            shown: redis_shown(state),
            options: redis_options(state),
            store: OnceCell::new(),
        })
    }

    /// The connected store; connects first if no connection was ever made. A failed attempt
    /// leaves the cell empty, so the next operation tries again.
    async fn get(&self) -> Result<&RedisStore, StoreError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        // Callers queue behind one connection attempt; none waits longer than one operation may
        // take (a silent, firewalled Redis would otherwise make the queue grow).
        let limit = self.options.operation_timeout;
        let init = self.store.get_or_try_init(|| async {
            let r = RedisStore::connect_to(&self.target, self.options.clone()).await;
            match &r {
                Ok(_) => tracing::info!(redis = %self.shown, "connected to the Redis state store"),
                Err(e) => tracing::warn!(
                    redis = %self.shown,
                    error = %e.reason(),
                    "Redis state store unreachable"
                ),
            }
            r
        });
        tokio::time::timeout(limit, init).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                format!("no connection to Redis within {limit:?}").into(),
            ))
        })
    }
}

#[async_trait::async_trait]
impl ReplayStore for LazyRedisStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        self.get().await?.claim(key, lease).await
    }

    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.get().await?.complete(key, response, ttl).await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.get().await?.release(key).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.get().await?.ping().await
    }
}

async fn serve(
    config: Config,
    store: Arc<dyn ReplayStore>,
    queue: Arc<dyn EventQueue>,
    path: PathBuf,
    env: Arc<dyn Env>,
) -> anyhow::Result<()> {
    let handle = metrics::install_prometheus().context("installing the metrics recorder")?;
    let acceptor = config
        .tls
        .as_ref()
        .map(tls::acceptor)
        .transpose()
        .context("[tls]")?;
    let listener = std::net::TcpListener::bind(config.server.listen)
        .with_context(|| format!("binding {}", config.server.listen))?;
    let admin = tokio::net::TcpListener::bind(config.server.admin_listen)
        .await
        .with_context(|| format!("binding {}", config.server.admin_listen))?;
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    tracing::info!(
        listen = %config.server.listen,
        admin = %config.server.admin_listen,
        tls = acceptor.is_some(),
        workers,
        routes = config.routes.len(),
        "tollgate serving"
    );
    // Say at start-up whether the state store answers (a Redis one connects here); serving
    // starts either way: requests fail closed with 503 and /readyz says not ready until it does.
    if let Err(e) = store.ping().await {
        tracing::warn!(error = %e, "state store not reachable yet; answering 503 until it is");
    }
    let poll = Duration::from_secs(config.server.reload_poll_secs);
    let drain = Duration::from_secs(config.server.drain_timeout_secs);
    let gateway = Gateway::with_queue(config, store, Some(queue));
    gateway.spawn_reloader(path, env, poll);
    let delivery = gateway.spawn_delivery(DeliveryOptions::default(), drain);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_gw = gateway.clone();
    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(async move {
        admin_gw
            .serve_admin(admin, Some(handle), async move {
                let _ = admin_stop.changed().await;
            })
            .await
    });
    let mut serving = gateway
        .spawn_workers(listener, acceptor, workers, stop_rx)
        .context("starting the serving threads")?;
    terminate().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    tracing::info!("draining in-flight requests");
    let drained = serving.drained().await;
    if let Some(d) = delivery {
        d.shutdown(drain).await;
    }
    let admin_result = admin_task.await;
    // Only now: a store connection made lazily on a serving thread stays usable for the delivery
    // drain above.
    tokio::task::spawn_blocking(move || serving.join()).await?;
    drained?;
    admin_result??;
    Ok(())
}

async fn terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
