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
    /// Threads serving the public listener; 0 or absent = one per available core.
    pub workers: Option<usize>,
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
    /// Redis: `url` is a seed node of a Redis Cluster.
    pub cluster: Option<bool>,
    /// Redis Cluster: more seed nodes, `host:port`.
    pub cluster_nodes: Option<Vec<String>>,
    /// Redis over TLS: PEM CA certificates to trust instead of the system's roots.
    pub tls_ca: Option<String>,
    /// Redis over TLS: PEM client certificate chain (with `tls_key`).
    pub tls_cert: Option<String>,
    /// Redis over TLS: PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
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
    /// `proxy` (default) or `queue`.
    pub mode: Option<String>,
    /// Queue mode: the static answer given to the provider once the event is stored.
    pub response: Option<RawResponse>,
    /// Queue mode: delivery attempts before an event is dead-lettered.
    pub max_attempts: Option<u32>,
    /// Queue mode: age (since receipt) after which an undelivered event is dead-lettered.
    pub max_age_secs: Option<u64>,
    /// Queue mode: deliveries of this route in flight at once.
    pub concurrency: Option<u32>,
    /// Queue mode: form or JSON body field whose value orders delivery (e.g. `CallSid`).
    pub order_key: Option<String>,
    /// Queue mode: first retry delay (the nominal delay doubles per attempt).
    pub retry_initial_ms: Option<u64>,
    /// Queue mode: largest nominal retry delay.
    pub retry_max_ms: Option<u64>,
    /// Queue mode: a 4xx answer other than 408/429 dead-letters at once.
    pub dead_letter_on_4xx: Option<bool>,
    /// Queue mode: consecutive failed deliveries that open the circuit breaker; 0 = no breaker.
    pub breaker_failures: Option<u32>,
    /// Queue mode: while the breaker is open, one probe delivery per this interval.
    pub breaker_probe_ms: Option<u64>,
    /// Everything else: the provider's options.
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
}

/// A queue-mode route's static answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    /// HTTP status (2xx).
    pub status: Option<u16>,
    /// `Content-Type` of the answer; none when unset.
    pub content_type: Option<String>,
    /// Body of the answer.
    pub body: Option<String>,
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
