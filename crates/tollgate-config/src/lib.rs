//! tollgate's configuration. [`raw`] is the TOML as users write it (serde, unknown keys refused);
//! [`Config`] is what the gateway runs on: addresses parsed, secrets resolved from `env:`/`file:`
//! references, and every route's verifier already built, so a config that loads is a config that
//! can verify. Loading collects every error with its path (`route[1].keys[0].secret: …`) and, where
//! cheap, its line, instead of stopping at the first.
//!
//! The environment is read only through [`Env`], so tests inject it and nothing calls `set_var`.
//! [`lint`] holds the warnings of `tollgate check`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use tollgate_verify::{Key, KeyRing, Options, ProviderSpec, Secret, Settings, Verifier};

pub mod lint;
pub mod raw;
mod secret;
mod state;

pub use lint::{lints, Lint};
pub use secret::{readable_by_others, SecretSource};
pub use state::{RedisState, RedisTlsFiles, RedisUrl};

use raw::{RawConfig, RawKey, RawRoute};

/// Where environment variables come from: the process, or a map in tests.
pub trait Env: Send + Sync {
    /// The variable's value, `None` when unset or not UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<string>`).
    pub origin: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// Key path, e.g. `route[1].keys[0].secret`; empty for file-level errors.
    pub path: String,
    /// What is wrong. Never contains secret material or config text.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct Server {
    /// Public listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Scheme + authority providers call (no trailing slash), if configured.
    pub public_url: Option<String>,
    /// Peers allowed to set X-Forwarded-*.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest accepted body.
    pub max_body_bytes: u64,
    /// Time allowed for the request head.
    pub header_timeout_ms: u64,
    /// Time allowed for the body.
    pub body_timeout_ms: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Failed verifications allowed per client IP per minute.
    pub failed_verify_per_minute: u32,
    /// Config mtime poll interval; 0 = off.
    pub reload_poll_secs: u64,
    /// SIGTERM drain limit.
    pub drain_timeout_secs: u64,
    /// Threads serving the public listener, each with its own event loop and upstream
    /// connections; 0 = one per available core.
    pub workers: usize,
}

/// `[tls]`, validated (files are read by the gateway at start).
#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// CA for client certificates (mTLS), if required.
    pub client_ca: Option<PathBuf>,
}

/// SQLite durability (`[state] fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Every commit is on disk before it is answered (survives power loss); commits are grouped.
    #[default]
    Always,
    /// WAL with `synchronous = NORMAL`: survives a process crash; the last moments may be lost
    /// on power loss.
    Batch,
}

/// Replay-store backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// SQLite file.
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// When a commit reaches the disk.
        fsync: Fsync,
    },
    /// In-process (lost on restart).
    Memory,
    /// A Redis server shared by every instance of the deployment.
    Redis(RedisState),
}

/// What a key's config said besides its material, for lints and metrics.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Whether the operator gave a label (else one was made up).
    pub labelled: bool,
    /// Where the secret came from.
    pub source: SecretSource,
    /// Creation time, unix seconds.
    pub created: Option<i64>,
}

/// How a route delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward synchronously; the app's answer goes back to the provider.
    Proxy,
    /// Store durably, answer the provider with a static response, deliver in the background
    /// (settings in [`Route::queue`]).
    Queue,
}

/// The static answer of a queue-mode route, given once the event is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticResponse {
    /// HTTP status, always 2xx (anything else would make the provider retry).
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Body.
    pub body: String,
}

/// Delivery settings of a queue-mode route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// What the provider gets once the event is stored.
    pub response: StaticResponse,
    /// Delivery attempts before the event is dead-lettered (at least 1).
    pub max_attempts: u32,
    /// Age since receipt after which a failing event is dead-lettered instead of retried.
    pub max_age_secs: u64,
    /// Deliveries of this route in flight at once (at least 1).
    pub concurrency: u32,
    /// Form or JSON body field whose value orders delivery, if any.
    pub order_key: Option<String>,
    /// Nominal first retry delay; doubles per attempt up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Largest nominal retry delay.
    pub retry_max_ms: u64,
    /// A 4xx answer other than 408/429 dead-letters at once (else it is retried).
    pub dead_letter_on_4xx: bool,
    /// Consecutive failures that open the route's circuit breaker; 0 disables it.
    pub breaker_failures: u32,
    /// While the breaker is open, one probe delivery per this interval.
    pub breaker_probe_ms: u64,
}

/// One validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name (logs, metrics, replay keys).
    pub name: String,
    /// Path prefix, starting with `/`, without trailing slash (except `/` itself).
    pub path: String,
    /// The provider.
    pub spec: &'static ProviderSpec,
    /// The provider's own options.
    pub options: Options,
    /// Key ring.
    pub keys: KeyRing,
    /// Per-key metadata, same order as `keys`.
    pub key_info: Vec<KeyInfo>,
    /// Verification settings.
    pub settings: Settings,
    /// The built verifier.
    pub verifier: Arc<dyn Verifier>,
    /// Allowed sources; empty = any.
    pub allow_ips: Vec<IpNet>,
    /// Replay memory.
    pub dedupe_ttl_secs: u64,
    /// Upstream URL.
    pub upstream: http::Uri,
    /// Upstream timeout.
    pub upstream_timeout_ms: u64,
    /// Remove `path` from the forwarded path.
    pub strip_prefix: bool,
    /// Key tollgate signs forwarded requests with.
    pub app_secret: Option<(Secret, SecretSource)>,
    /// Delivery mode.
    pub mode: Mode,
    /// Queue-mode settings; `Some` exactly when `mode` is [`Mode::Queue`].
    pub queue: Option<QueueSettings>,
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any (reload watches it).
    pub source: Option<PathBuf>,
    /// `allow_inline_secrets`.
    pub allow_inline_secrets: bool,
    /// `[server]`.
    pub server: Server,
    /// `[tls]`.
    pub tls: Option<Tls>,
    /// `[state]`.
    pub state: StateBackend,
    /// Routes in file order.
    pub routes: Vec<Route>,
}

/// What `tollgate verify --config FILE --route NAME` needs.
#[derive(Debug, Clone)]
pub struct RouteSetup {
    /// The provider.
    pub spec: &'static ProviderSpec,
    /// Its options.
    pub options: Options,
    /// The key ring.
    pub keys: KeyRing,
    /// Settings.
    pub settings: Settings,
}

/// Defaults, in one place so docs and code agree.
pub mod defaults {
    /// `server.listen`.
    pub const LISTEN: &str = "0.0.0.0:8080";
    /// `server.admin_listen`.
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9090";
    /// `server.max_body_bytes`.
    pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
    /// `server.header_timeout_ms`.
    pub const HEADER_TIMEOUT_MS: u64 = 10_000;
    /// `server.body_timeout_ms`.
    pub const BODY_TIMEOUT_MS: u64 = 10_000;
    /// `server.failed_verify_per_minute`.
    pub const FAILED_VERIFY_PER_MINUTE: u32 = 60;
    /// `server.reload_poll_secs`.
    pub const RELOAD_POLL_SECS: u64 = 2;
    /// `server.drain_timeout_secs`.
    pub const DRAIN_TIMEOUT_SECS: u64 = 30;
    /// `route.tolerance_secs`.
    pub const TOLERANCE_SECS: u64 = 300;
    /// `route.dedupe_ttl_secs`.
    pub const DEDUPE_TTL_SECS: u64 = 86_400;
    /// `route.upstream_timeout_ms`.
    pub const UPSTREAM_TIMEOUT_MS: u64 = 10_000;
    /// `state.path`.
    pub const STATE_PATH: &str = "tollgate.db";
    /// `route.response.status` (queue mode).
    pub const QUEUE_RESPONSE_STATUS: u16 = 200;
    /// `route.max_attempts` (queue mode).
    pub const MAX_ATTEMPTS: u32 = 10;
    /// `route.max_age_secs` (queue mode).
    pub const MAX_AGE_SECS: u64 = 86_400;
    /// `route.concurrency` (queue mode).
    pub const CONCURRENCY: u32 = 8;
    /// Largest `route.concurrency`.
    pub const MAX_CONCURRENCY: u32 = 1024;
    /// `route.retry_initial_ms` (queue mode).
    pub const RETRY_INITIAL_MS: u64 = 1_000;
    /// `route.retry_max_ms` (queue mode).
    pub const RETRY_MAX_MS: u64 = 300_000;
    /// `route.breaker_failures` (queue mode).
    pub const BREAKER_FAILURES: u32 = 5;
    /// `route.breaker_probe_ms` (queue mode).
    pub const BREAKER_PROBE_MS: u64 = 5_000;
    /// `state.key_prefix` (Redis).
    pub const REDIS_KEY_PREFIX: &str = "tollgate:";
    /// `state.connect_timeout_ms` (Redis).
    pub const REDIS_CONNECT_TIMEOUT_MS: u64 = 500;
    /// `state.operation_timeout_ms` (Redis).
    pub const REDIS_OPERATION_TIMEOUT_MS: u64 = 1_000;
}

/// Collects errors with file, line and path.
struct Errors<'a> {
    origin: &'a str,
    text: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn push(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        path: impl Into<String>,
        msg: impl Into<String>,
    ) {
        let line = span.map(|s| line_of(self.text, s.start));
        self.list.push(ConfigError {
            origin: self.origin.to_owned(),
            line,
            path: path.into(),
            message: msg.into(),
        });
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Config {
    /// Loads and validates a config file.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: origin.clone(),
                line: None,
                path: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let mut cfg = Config::from_toml(&text, &origin, env)?;
        cfg.source = Some(path.to_owned());
        Ok(cfg)
    }

    /// Validates config text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str, env: &dyn Env) -> Result<Config, ConfigErrors> {
        let raw = parse_raw(text, origin)?;
        let mut errs = Errors {
            origin,
            text,
            list: Vec::new(),
        };
        let server = server(&raw.server, env, &mut errs);
        let tls = raw.tls.as_ref().map(|t| Tls {
            cert: PathBuf::from(&t.cert),
            key: PathBuf::from(&t.key),
            client_ca: t.client_ca.as_ref().map(PathBuf::from),
        });
        let state = state::state(&raw.state, raw.allow_inline_secrets, env, &mut errs);
        if raw.route.is_empty() {
            errs.push(
                None,
                "route",
                "no [[route]]: tollgate would refuse everything",
            );
        }
        let mut routes = Vec::new();
        for (i, r) in raw.route.iter().enumerate() {
            if let Some(route) = route(i, r, raw.allow_inline_secrets, env, &mut errs) {
                routes.push(route);
            }
        }
        for (i, r) in routes.iter().enumerate() {
            if routes[..i].iter().any(|o| o.name == r.name) {
                errs.push(
                    None,
                    format!("route[{i}].name"),
                    format!("duplicate route name {:?}", r.name),
                );
            }
            if routes[..i].iter().any(|o| o.path == r.path) {
                errs.push(
                    None,
                    format!("route[{i}].path"),
                    format!("duplicate route path {:?}", r.path),
                );
            }
        }
        match (errs.list.is_empty(), server) {
            (true, Some(server)) => Ok(Config {
                source: None,
                allow_inline_secrets: raw.allow_inline_secrets,
                server,
                tls,
                state,
                routes,
            }),
            _ => Err(ConfigErrors(errs.list)),
        }
    }

    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// Loads only `[state]` of a file: what `tollgate queue` needs to find the queue, without
/// requiring the routes' secrets to be present.
pub fn load_state(path: &Path, env: &dyn Env) -> Result<StateBackend, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: None,
            path: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let raw = parse_raw(&text, &origin)?;
    let mut errs = Errors {
        origin: &origin,
        text: &text,
        list: Vec::new(),
    };
    let state = state::state(&raw.state, raw.allow_inline_secrets, env, &mut errs);
    if errs.list.is_empty() {
        Ok(state)
    } else {
        Err(ConfigErrors(errs.list))
    }
}

fn parse_raw(text: &str, origin: &str) -> Result<RawConfig, ConfigErrors> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        ConfigErrors(vec![ConfigError {
            origin: origin.to_owned(),
            line,
            path: String::new(),
            // toml's message alone: its Display quotes the offending source line, which may be a secret.
            message: e.message().to_owned(),
        }])
    })
}

/// Loads only the route `name` of a file: what `tollgate verify --config FILE --route NAME` needs,
/// without requiring every other route's secrets to be present.
pub fn load_route(path: &Path, name: &str, env: &dyn Env) -> Result<RouteSetup, ConfigErrors> {
    let origin = path.display().to_string();
    let one = |message: String| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: None,
            path: String::new(),
            message,
        }])
    };
    let text = std::fs::read_to_string(path).map_err(|e| one(format!("cannot read: {e}")))?;
    let raw = parse_raw(&text, &origin)?;
    let Some((i, r)) = raw
        .route
        .iter()
        .enumerate()
        .find(|(_, r)| r.get_ref().name.as_deref() == Some(name))
    else {
        return Err(one(format!("no route named {name:?}")));
    };
    let mut errs = Errors {
        origin: &origin,
        text: &text,
        list: Vec::new(),
    };
    match route(i, r, raw.allow_inline_secrets, env, &mut errs) {
        Some(r) if errs.list.is_empty() => Ok(RouteSetup {
            spec: r.spec,
            options: r.options,
            keys: r.keys,
            settings: r.settings,
        }),
        _ => Err(ConfigErrors(errs.list)),
    }
}

fn server(raw: &raw::RawServer, env: &dyn Env, errs: &mut Errors<'_>) -> Option<Server> {
    let mut ok = true;
    let mut addr = |key: &str, var: &str, value: Option<&str>, default: &str| {
        let text = env.var(var).or_else(|| value.map(str::to_owned));
        let text = text.as_deref().unwrap_or(default);
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(
                    None,
                    format!("server.{key}"),
                    format!("{text:?} is not ip:port (from {var} or the file)"),
                );
                ok = false;
                None
            }
        }
    };
    let listen = addr(
        "listen",
        "TOLLGATE_LISTEN",
        raw.listen.as_deref(),
        defaults::LISTEN,
    );
    let admin_listen = addr(
        "admin_listen",
        "TOLLGATE_ADMIN_LISTEN",
        raw.admin_listen.as_deref(),
        defaults::ADMIN_LISTEN,
    );
    let public_url = env
        .var("TOLLGATE_PUBLIC_URL")
        .or_else(|| raw.public_url.clone());
    let public_url = match public_url {
        None => None,
        Some(u) => match u.parse::<http::Uri>() {
            Ok(p)
                if matches!(p.scheme_str(), Some("http" | "https"))
                    && p.authority().is_some()
                    && p.query().is_none() =>
            {
                Some(u.trim_end_matches('/').to_owned())
            }
            _ => {
                errs.push(
                    None,
                    "server.public_url",
                    "must be http(s)://host[:port][/prefix] with no query",
                );
                ok = false;
                None
            }
        },
    };
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        match parse_net(p) {
            Some(n) => trusted_proxies.push(n),
            None => {
                errs.push(
                    None,
                    format!("server.trusted_proxies[{i}]"),
                    format!("{p:?} is not an IP or CIDR"),
                );
                ok = false;
            }
        }
    }
    let log_format = match env
        .var("TOLLGATE_LOG_FORMAT")
        .or_else(|| raw.log_format.clone())
        .as_deref()
    {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errs.push(
                None,
                "server.log_format",
                format!("{other:?}: use \"json\" or \"pretty\""),
            );
            ok = false;
            LogFormat::Pretty
        }
    };
    let positive = |v: Option<u64>, d: u64, key: &str, errs: &mut Errors<'_>| {
        let v = v.unwrap_or(d);
        if v == 0 {
            errs.push(None, format!("server.{key}"), "must be greater than 0");
        }
        v
    };
    let n = errs.list.len();
    let max_body_bytes = positive(
        raw.max_body_bytes,
        defaults::MAX_BODY_BYTES,
        "max_body_bytes",
        errs,
    );
    let header_timeout_ms = positive(
        raw.header_timeout_ms,
        defaults::HEADER_TIMEOUT_MS,
        "header_timeout_ms",
        errs,
    );
    let body_timeout_ms = positive(
        raw.body_timeout_ms,
        defaults::BODY_TIMEOUT_MS,
        "body_timeout_ms",
        errs,
    );
    let failed_verify_per_minute = raw
        .failed_verify_per_minute
        .unwrap_or(defaults::FAILED_VERIFY_PER_MINUTE);
    if failed_verify_per_minute == 0 {
        errs.push(
            None,
            "server.failed_verify_per_minute",
            "must be greater than 0",
        );
    }
    let workers = match env.var("TOLLGATE_WORKERS") {
        Some(v) => v.trim().parse::<usize>().unwrap_or_else(|_| {
            errs.push(
                None,
                "server.workers",
                format!("TOLLGATE_WORKERS={v:?}: use a whole number (0 = one per core)"),
            );
            0
        }),
        None => raw.workers.unwrap_or(0),
    };
    if workers > MAX_WORKERS {
        errs.push(
            None,
            "server.workers",
            format!("{workers}: at most {MAX_WORKERS}"),
        );
    }
    ok &= errs.list.len() == n;
    Some(Server {
        listen: listen?,
        admin_listen: admin_listen?,
        public_url,
        trusted_proxies,
        max_body_bytes,
        header_timeout_ms,
        body_timeout_ms,
        log_format,
        failed_verify_per_minute,
        reload_poll_secs: raw.reload_poll_secs.unwrap_or(defaults::RELOAD_POLL_SECS),
        drain_timeout_secs: raw
            .drain_timeout_secs
            .unwrap_or(defaults::DRAIN_TIMEOUT_SECS),
        workers,
    })
    .filter(|_| ok)
}

/// Largest `server.workers`: more threads than this only add memory and context switches.
pub const MAX_WORKERS: usize = 1024;

/// An address or CIDR (a bare address is a /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn route(
    i: usize,
    spanned: &toml::Spanned<RawRoute>,
    allow_inline: bool,
    env: &dyn Env,
    errs: &mut Errors<'_>,
) -> Option<Route> {
    let span = Some(spanned.span());
    let r = spanned.get_ref();
    let p = |k: &str| format!("route[{i}].{k}");
    let before = errs.list.len();
    let name = r.name.clone().unwrap_or_else(|| {
        errs.push(span.clone(), p("name"), "missing");
        String::new()
    });
    let path = match r.path.as_deref() {
        None => {
            errs.push(span.clone(), p("path"), "missing");
            String::new()
        }
        Some(s) if !s.starts_with('/') || s.contains(['?', '#']) || s.contains("//") => {
            errs.push(
                span.clone(),
                p("path"),
                format!("{s:?} must start with / and hold no query, fragment or empty segment"),
            );
            String::new()
        }
        Some("/") => "/".to_owned(),
        Some(s) => s.trim_end_matches('/').to_owned(),
    };
    let spec = match r.provider.as_deref() {
        None => {
            errs.push(
                span.clone(),
                p("provider"),
                "missing: a route without a provider would be an open door",
            );
            None
        }
        Some(id) => tollgate_verify::find_provider(id).or_else(|| {
            let known: Vec<&str> = tollgate_verify::PROVIDERS.iter().map(|s| s.id).collect();
            errs.push(
                span.clone(),
                p("provider"),
                format!("unknown provider {id:?}; known: {}", known.join(", ")),
            );
            None
        }),
    };
    if r.keys.is_empty() {
        errs.push(span.clone(), p("keys"), "a route needs at least one key");
    }
    let mut keys = Vec::new();
    let mut key_info = Vec::new();
    for (j, k) in r.keys.iter().enumerate() {
        if let Some((key, info)) = key(i, j, k, allow_inline, env, span.clone(), errs) {
            keys.push(key);
            key_info.push(info);
        }
    }
    let mut allow_ips = Vec::new();
    for (j, s) in r.allow_ips.iter().enumerate() {
        match parse_net(s) {
            Some(n) => allow_ips.push(n),
            None => errs.push(
                span.clone(),
                p(&format!("allow_ips[{j}]")),
                format!("{s:?} is not an IP or CIDR"),
            ),
        }
    }
    let upstream = match r.upstream.as_deref() {
        None => {
            errs.push(span.clone(), p("upstream"), "missing");
            None
        }
        Some(u) => match u.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() =>
            {
                Some(uri)
            }
            _ => {
                errs.push(
                    span.clone(),
                    p("upstream"),
                    format!("{u:?} is not an http(s) URL"),
                );
                None
            }
        },
    };
    let mode = match r.mode.as_deref() {
        None | Some("proxy") => Mode::Proxy,
        Some("queue") => Mode::Queue,
        Some(other) => {
            errs.push(
                span.clone(),
                p("mode"),
                format!("unknown mode {other:?}; use \"proxy\" or \"queue\""),
            );
            Mode::Proxy
        }
    };
    let queue = queue_settings(r, mode, &p, span.clone(), errs);
    let app_secret =
        r.app_secret
            .as_deref()
            .and_then(|s| match secret::resolve(s, allow_inline, env) {
                Ok(v) => Some(v),
                Err(m) => {
                    errs.push(span.clone(), p("app_secret"), m);
                    None
                }
            });
    let upstream_timeout_ms = r
        .upstream_timeout_ms
        .unwrap_or(defaults::UPSTREAM_TIMEOUT_MS);
    if upstream_timeout_ms == 0 {
        errs.push(
            span.clone(),
            p("upstream_timeout_ms"),
            "must be greater than 0",
        );
    }
    let settings = Settings {
        tolerance_secs: r.tolerance_secs.unwrap_or(defaults::TOLERANCE_SECS),
    };
    let mut options = Options::new();
    for (k, v) in &r.options {
        match serde_json::to_value(v) {
            Ok(j) => {
                options.insert(k.clone(), j);
            }
            Err(e) => errs.push(span.clone(), p(k), format!("unusable value: {e}")),
        }
    }
    if errs.list.len() != before {
        return None;
    }
    let spec = spec?;
    let keys = match KeyRing::new(keys) {
        Ok(k) => k,
        Err(e) => {
            errs.push(span, p("keys"), e.to_string());
            return None;
        }
    };
    let verifier = match (spec.build)(&options, &keys, &settings) {
        Ok(v) => Arc::<dyn Verifier>::from(v),
        Err(e) => {
            // The provider's own errors name unknown options; they never echo key material.
            errs.push(span, format!("route[{i}] ({})", spec.id), e.to_string());
            return None;
        }
    };
    Some(Route {
        name,
        path,
        spec,
        options,
        keys,
        key_info,
        settings,
        verifier,
        allow_ips,
        dedupe_ttl_secs: r.dedupe_ttl_secs.unwrap_or(defaults::DEDUPE_TTL_SECS),
        upstream: upstream?,
        upstream_timeout_ms,
        strip_prefix: r.strip_prefix,
        app_secret,
        mode,
        queue,
    })
}

/// The queue keys of a route: validated for `mode = "queue"`, refused for a proxy route (where
/// they would silently do nothing).
fn queue_settings(
    r: &RawRoute,
    mode: Mode,
    p: &dyn Fn(&str) -> String,
    span: Option<std::ops::Range<usize>>,
    errs: &mut Errors<'_>,
) -> Option<QueueSettings> {
    let set: Vec<&str> = [
        ("response", r.response.is_some()),
        ("max_attempts", r.max_attempts.is_some()),
        ("max_age_secs", r.max_age_secs.is_some()),
        ("concurrency", r.concurrency.is_some()),
        ("order_key", r.order_key.is_some()),
        ("retry_initial_ms", r.retry_initial_ms.is_some()),
        ("retry_max_ms", r.retry_max_ms.is_some()),
        ("dead_letter_on_4xx", r.dead_letter_on_4xx.is_some()),
        ("breaker_failures", r.breaker_failures.is_some()),
        ("breaker_probe_ms", r.breaker_probe_ms.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, is_set)| is_set.then_some(k))
    .collect();
    if mode != Mode::Queue {
        for k in set {
            errs.push(span.clone(), p(k), "only applies to mode = \"queue\"");
        }
        return None;
    }
    let mut bad = |k: &str, msg: &str| errs.push(span.clone(), p(k), msg.to_owned());
    let response = match &r.response {
        None => StaticResponse {
            status: defaults::QUEUE_RESPONSE_STATUS,
            content_type: None,
            body: String::new(),
        },
        Some(raw) => {
            let status = raw.status.unwrap_or(defaults::QUEUE_RESPONSE_STATUS);
            if !(200..300).contains(&status) {
                bad(
                    "response.status",
                    "must be 2xx: any other answer makes the provider retry an event already stored",
                );
            }
            if let Some(ct) = &raw.content_type {
                if http::HeaderValue::from_str(ct).is_err() {
                    bad("response.content_type", "is not a valid header value");
                }
            }
            StaticResponse {
                status,
                content_type: raw.content_type.clone(),
                body: raw.body.clone().unwrap_or_default(),
            }
        }
    };
    let max_attempts = r.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS);
    if max_attempts == 0 {
        bad("max_attempts", "must be at least 1");
    }
    let max_age_secs = r.max_age_secs.unwrap_or(defaults::MAX_AGE_SECS);
    if max_age_secs == 0 {
        bad("max_age_secs", "must be greater than 0");
    }
    let concurrency = r.concurrency.unwrap_or(defaults::CONCURRENCY);
    if concurrency == 0 || concurrency > defaults::MAX_CONCURRENCY {
        bad("concurrency", "must be between 1 and 1024");
    }
    let order_key = r.order_key.clone();
    if order_key.as_deref().is_some_and(str::is_empty) {
        bad("order_key", "must name a body field");
    }
    let retry_initial_ms = r.retry_initial_ms.unwrap_or(defaults::RETRY_INITIAL_MS);
    if retry_initial_ms == 0 {
        bad("retry_initial_ms", "must be greater than 0");
    }
    let retry_max_ms = r
        .retry_max_ms
        .unwrap_or(defaults::RETRY_MAX_MS.max(retry_initial_ms));
    if retry_max_ms < retry_initial_ms {
        bad("retry_max_ms", "must be at least retry_initial_ms");
    }
    let breaker_probe_ms = r.breaker_probe_ms.unwrap_or(defaults::BREAKER_PROBE_MS);
    if breaker_probe_ms == 0 {
        bad("breaker_probe_ms", "must be greater than 0");
    }
    Some(QueueSettings {
        response,
        max_attempts,
        max_age_secs,
        concurrency,
        order_key,
        retry_initial_ms,
        retry_max_ms,
        dead_letter_on_4xx: r.dead_letter_on_4xx.unwrap_or(true),
        breaker_failures: r.breaker_failures.unwrap_or(defaults::BREAKER_FAILURES),
        breaker_probe_ms,
    })
}

#[allow(clippy::too_many_arguments)]
fn key(
    i: usize,
    j: usize,
    k: &RawKey,
    allow_inline: bool,
    env: &dyn Env,
    span: Option<std::ops::Range<usize>>,
    errs: &mut Errors<'_>,
) -> Option<(Key, KeyInfo)> {
    let p = |f: &str| format!("route[{i}].keys[{j}].{f}");
    let n = errs.list.len();
    let resolved = secret::resolve(&k.secret, allow_inline, env)
        .map_err(|m| errs.push(span.clone(), p("secret"), m))
        .ok();
    let not_after = k.not_after.as_ref().and_then(|v| {
        time_value(v, false)
            .map_err(|m| errs.push(span.clone(), p("not_after"), m))
            .ok()
    });
    let created = k.created.as_ref().and_then(|v| {
        time_value(v, true)
            .map_err(|m| errs.push(span.clone(), p("created"), m))
            .ok()
    });
    if errs.list.len() != n {
        return None;
    }
    let (secret, source) = resolved?;
    let labelled = k.label.is_some();
    let label = k.label.clone().unwrap_or_else(|| format!("key{j}"));
    let mut key = Key::new(label, secret);
    key.not_after = not_after;
    Some((
        key,
        KeyInfo {
            labelled,
            source,
            created,
        },
    ))
}

/// A TOML datetime or RFC 3339 string (or, when `date_ok`, a plain date) as unix seconds.
fn time_value(v: &toml::Value, date_ok: bool) -> Result<i64, String> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => return Err("must be an RFC 3339 date-time".into()),
    };
    if let Ok(t) =
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t.unix_timestamp());
    }
    if date_ok {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        if let Ok(d) = time::Date::parse(&text, &fmt) {
            return Ok(d.midnight().assume_utc().unix_timestamp());
        }
        return Err(format!(
            "{text:?} is not a date (YYYY-MM-DD) or RFC 3339 date-time"
        ));
    }
    Err(format!(
        "{text:?} is not an RFC 3339 date-time (e.g. 2026-12-31T00:00:00Z)"
    ))
}

#[cfg(test)]
mod tests;
