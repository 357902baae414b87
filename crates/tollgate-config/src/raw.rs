//! The TOML file exactly as users write it. Every table refuses unknown keys, except a route, whose
//! keys outside the common set are the provider's own options: those are refused later by the
//! provider's `deny_unknown_fields` when the verifier is built at load time.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Permit literal secrets in this file (refused by default: config files leak).
    #[serde(default)]
    pub allow_inline_secrets: bool,
    /// `[server]`.
    #[serde(default)]
    pub server: RawServer,
    /// `[tls]`.
    pub tls: Option<RawTls>,
    /// `[state]`.
    #[serde(default)]
    pub state: RawState,
    /// `[[route]]`, with their spans for error lines.
    #[serde(default)]
    pub route: Vec<toml::Spanned<RawRoute>>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Public listener, `host:port`.
    pub listen: Option<String>,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: Option<String>,
    /// What providers call, e.g. `https://hooks.example.com`.
    pub public_url: Option<String>,
    /// CIDRs allowed to set X-Forwarded-*.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Largest accepted body.
    pub max_body_bytes: Option<u64>,
    /// Time allowed for the request head.
    pub header_timeout_ms: Option<u64>,
    /// Time allowed for the body.
    pub body_timeout_ms: Option<u64>,
    /// `json` or `pretty`.
    pub log_format: Option<String>,
    /// Failed verifications allowed per client IP per minute before 429.
    pub failed_verify_per_minute: Option<u32>,
    /// How often the config file's modification time is polled for reload; 0 disables.
    pub reload_poll_secs: Option<u64>,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout_secs: Option<u64>,
}

/// `[tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    pub client_ca: Option<String>,
}

/// `[state]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// `sqlite`, `redis` or `memory`.
    pub backend: Option<String>,
    /// SQLite file.
    pub path: Option<String>,
    /// `always` (fsync every commit; default) or `batch` (WAL with synchronous=NORMAL).
    pub fsync: Option<String>,
    /// Redis: `redis://…`, `env:NAME` or `file:PATH`.
    pub url: Option<String>,
    /// Redis: prepended to every key.
    pub key_prefix: Option<String>,
    /// Redis: one connection attempt.
    pub connect_timeout_ms: Option<u64>,
    /// Redis: one operation, reconnection included.
    pub operation_timeout_ms: Option<u64>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    /// Name used in logs and metrics.
    pub name: Option<String>,
    /// Path prefix, segment-wise.
    pub path: Option<String>,
    /// Provider id.
    pub provider: Option<String>,
    /// Key ring.
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// CIDRs; empty = any.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Freshness window.
    pub tolerance_secs: Option<u64>,
    /// How long an event id is remembered.
    pub dedupe_ttl_secs: Option<u64>,
    /// Where verified requests go.
    pub upstream: Option<String>,
    /// Upstream timeout.
    pub upstream_timeout_ms: Option<u64>,
    /// Remove the route's path from the forwarded path.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Secret tollgate signs forwarded requests with (Standard Webhooks).
    pub app_secret: Option<String>,
    /// `proxy` (only mode so far).
    pub mode: Option<String>,
    /// Everything else: the provider's options.
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
}

/// One key of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Operator's name for the key.
    pub label: Option<String>,
    /// `env:NAME`, `file:PATH` or (with `allow_inline_secrets`) the literal.
    pub secret: String,
    /// RFC 3339 time after which the key no longer verifies.
    pub not_after: Option<toml::Value>,
    /// When the key was created (date or date-time), for the 90-day rotation lint.
    pub created: Option<toml::Value>,
}
