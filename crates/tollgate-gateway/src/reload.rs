//! Reloading: SIGHUP, or a changed modification time of the config file, loads the file again.
//! A valid file replaces routes, keys and per-request server settings; an invalid one is refused
//! with every error logged and the running config kept. Settings that need new sockets or a new
//! store (`listen`, `admin_listen`, `workers`, `[tls]`, `[state]`) are reported as needing a
//! restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tollgate_config::{Config, ConfigErrors, Env};

use crate::{metrics as m, Gateway};

impl Gateway {
    /// Loads `path` and swaps it in if valid; the running config is kept otherwise.
    pub fn reload_file(&self, path: &Path, env: &dyn Env) -> Result<(), ConfigErrors> {
        match Config::load(path, env) {
            Ok(new) => {
                let old = self.config();
                if old.server.listen != new.server.listen
                    || old.server.admin_listen != new.server.admin_listen
                    || old.server.workers != new.server.workers
                    || old.tls.is_some() != new.tls.is_some()
                    || old.state != new.state
                {
                    tracing::warn!("listen, admin_listen, workers, [tls] and [state] changes take effect after a restart");
                }
                let routes = new.routes.len();
                self.reload(new);
                metrics::counter!(m::RELOADS, "result" => "ok").increment(1);
                tracing::info!(routes, "config reloaded");
                Ok(())
            }
            Err(errors) => {
                metrics::counter!(m::RELOADS, "result" => "refused").increment(1);
                for e in &errors.0 {
                    tracing::error!(error = %e, "config reload refused; keeping the running config");
                }
                Err(errors)
            }
        }
    }

    /// Watches for SIGHUP and (every `poll`, unless zero) for a changed mtime of `path`.
    pub fn spawn_reloader(
        &self,
        path: PathBuf,
        env: Arc<dyn Env>,
        poll: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let gw = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut last = mtime(&path);
            let tick = if poll.is_zero() {
                Duration::from_secs(3600)
            } else {
                poll
            };
            let mut interval = tokio::time::interval(tick);
            interval.tick().await;
            loop {
                #[cfg(unix)]
                let hup_fired = async {
                    match hup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hup_fired = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = hup_fired => {
                        tracing::info!("SIGHUP: reloading config");
                        last = mtime(&path);
                        let _ = gw.reload_file(&path, env.as_ref());
                    }
                    _ = interval.tick() => {
                        if poll.is_zero() { continue; }
                        let now = mtime(&path);
                        if now != last {
                            last = now;
                            tracing::info!("config file changed: reloading");
                            let _ = gw.reload_file(&path, env.as_ref());
                        }
                    }
                }
            }
        })
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
