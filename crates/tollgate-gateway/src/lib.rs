//! tollgate's gateway: a verifying reverse proxy. A request walks the stages of [`pipeline`] in
//! order (route, client IP, allow list, body, public URL, verification, replay claim, forward);
//! any stage may fail, and only [`rescue`] turns a failure into a status, a small JSON body, a
//! metric and an audit line. [`server`] accepts connections (plain or TLS), [`admin`] serves
//! `/metrics`, `/healthz` and `/readyz` on a separate listener, [`reload`] swaps routes and keys
//! without dropping connections. `mode = "queue"` routes store the event instead of forwarding it
//! ([`stage::enqueue`]) and [`delivery`] workers post it to the app in the background.
//!
//! What this crate does not do: verify signatures (that is `tollgate-verify`) or keep replay state
//! (that is `tollgate-store`; the caller picks the backend).
#![forbid(unsafe_code)]

use std::sync::{Arc, RwLock};

use tollgate_config::{Config, Route};
use tollgate_store::{EventQueue, ReplayStore};

pub mod admin;
pub mod delivery;
pub mod error;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod rescue;
pub mod server;
pub mod stage;
pub mod telemetry;
pub mod tls;

pub use error::GatewayError;

/// What every request reads: the current route table (swapped on reload), the store, the
/// queue and the limiters.
#[derive(Debug)]
pub(crate) struct Shared {
    table: RwLock<Arc<Table>>,
    pub(crate) store: Arc<dyn ReplayStore>,
    pub(crate) failures: stage::rate_limit::FailureLimiter,
    pub(crate) diagnoses: stage::verify::DiagnosisBudget,
    /// The durable queue of `mode = "queue"` routes; without one they answer 503.
    pub(crate) queue: Option<Arc<dyn EventQueue>>,
    /// Wakes the delivery dispatcher: an event was stored or a delivery slot freed.
    pub(crate) wake: tokio::sync::Notify,
}

impl Shared {
    /// The table in force when the request arrived; a reload does not change it mid-request.
    pub(crate) fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            // A panic while swapping cannot leave a half-written Arc; keep serving.
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The config in force.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.table().config.clone()
    }
}

/// The config in force with what each route keeps beside it for the requests (swapped whole on
/// reload, so a new route starts with its own handles).
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) config: Arc<Config>,
    /// Same order as `config.routes`.
    metrics: Vec<metrics::RouteMetrics>,
}

impl Table {
    fn new(config: Config) -> Self {
        let config = sorted(config);
        let metrics = config
            .routes
            .iter()
            .map(metrics::RouteMetrics::new)
            .collect();
        Table {
            config: Arc::new(config),
            metrics,
        }
    }

    /// The route for `path` (see [`stage::route::select`]) and its metric handles.
    pub(crate) fn select(
        &self,
        path: &str,
    ) -> Result<(&Route, &metrics::RouteMetrics), GatewayError> {
        self.config
            .routes
            .iter()
            .zip(&self.metrics)
            .find(|(r, _)| stage::route::matches_segment(&r.path, path))
            .ok_or(GatewayError::NotFound)
    }
}

impl std::ops::Deref for Table {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

/// A running gateway's shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) shared: Arc<Shared>,
}

impl Gateway {
    /// A gateway for `config` with `store` for replay state and no event queue (queue-mode routes
    /// answer 503).
    pub fn new(config: Config, store: Arc<dyn ReplayStore>) -> Self {
        Self::with_queue(config, store, None)
    }

    /// A gateway with `queue` for `mode = "queue"` routes. Delivery starts with
    /// [`Gateway::spawn_delivery`].
    pub fn with_queue(
        config: Config,
        store: Arc<dyn ReplayStore>,
        queue: Option<Arc<dyn EventQueue>>,
    ) -> Self {
        let failures =
            stage::rate_limit::FailureLimiter::new(config.server.failed_verify_per_minute);
        Gateway {
            shared: Arc::new(Shared {
                table: RwLock::new(Arc::new(Table::new(config))),
                store,
                failures,
                diagnoses: stage::verify::DiagnosisBudget::new(),
                queue,
                wake: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Swaps in a new config for the next requests; requests in flight finish on the old one.
    pub fn reload(&self, config: Config) {
        let new = Arc::new(Table::new(config));
        match self.shared.table.write() {
            Ok(mut t) => *t = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    /// The event queue, if any.
    pub fn queue(&self) -> Option<Arc<dyn EventQueue>> {
        self.shared.queue.clone()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config()
    }
}

/// Routes longest path first, so the first segment-wise match is the longest.
fn sorted(mut config: Config) -> Config {
    config
        .routes
        .sort_by_key(|r| std::cmp::Reverse(r.path.len()));
    config
}
