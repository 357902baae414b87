//! `tollgate serve`: load the config, pick the replay store and the event queue, and run the
//! public and admin listeners and the queue's delivery workers until SIGTERM/Ctrl-C, reloading on
//! SIGHUP or a changed file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tollgate_config::{Config, Env, ProcessEnv, StateBackend};
use tollgate_gateway::delivery::DeliveryOptions;
use tollgate_gateway::{metrics, telemetry, tls, Gateway};
use tollgate_store::{EventQueue, ReplayStore};

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
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let admin = tokio::net::TcpListener::bind(config.server.admin_listen)
        .await
        .with_context(|| format!("binding {}", config.server.admin_listen))?;
    tracing::info!(
        listen = %config.server.listen,
        admin = %config.server.admin_listen,
        tls = acceptor.is_some(),
        routes = config.routes.len(),
        "tollgate serving"
    );
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
    let signal = async move {
        terminate().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    gateway.serve(listener, acceptor, signal).await?;
    if let Some(d) = delivery {
        d.shutdown(drain).await;
    }
    admin_task.await??;
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
