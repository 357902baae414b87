//! `[state]`: where replay claims (and queue-mode events) live. SQLite (the embedded default),
//! memory (tests), or Redis, shared by several tollgate instances.
//!
//! The Redis URL may carry a password, so it is a secret reference like a key's: `env:NAME` or
//! `file:PATH`, or the literal URL. A literal with a password is refused unless
//! `allow_inline_secrets = true`, and the URL is only ever shown with its password masked.
//! `rediss://` is TLS (`tls_ca` for a private CA, `tls_cert`/`tls_key` for a client certificate);
//! `cluster = true` makes the URL a seed node of a Redis Cluster (`cluster_nodes` adds seeds).

use std::fmt;
use std::path::PathBuf;

use crate::raw::RawState;
use crate::{defaults, secret, Env, Errors, Fsync, SecretSource, StateBackend};

/// A Redis connection URL. `Debug` and [`RedisUrl::redacted`] mask the password; only
/// [`RedisUrl::expose`] gives it, for the connection itself.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: String,
    source: SecretSource,
}

impl RedisUrl {
    /// The URL as configured, password included: pass it to the client, never to a log.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// Where the URL came from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// Whether the URL carries a password.
    pub fn has_password(&self) -> bool {
        has_password(&self.url)
    }

    /// The host the URL names, without brackets or port.
    pub fn host(&self) -> &str {
        host_port(authority(&self.url)).map_or("", |(h, _)| h)
    }

    /// The database the URL selects (`/N`; 0 when absent).
    fn db(&self) -> Option<u64> {
        let rest = self.url.split_once("://").map_or("", |(_, r)| r);
        let path = rest
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .split_once('/')
            .map_or("", |(_, p)| p);
        if path.is_empty() {
            Some(0)
        } else {
            path.parse().ok()
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisUrl").field(&self.redacted()).finish()
    }
}

/// `[state] backend = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisState {
    /// Where the server is.
    pub url: RedisUrl,
    /// Prepended to every key; every instance of one deployment uses the same prefix.
    pub key_prefix: String,
    /// Longest wait for one TCP connection attempt.
    pub connect_timeout_ms: u64,
    /// Longest any store operation may take (reconnection included) before the request fails
    /// closed with 503.
    pub operation_timeout_ms: u64,
    /// `url` is a seed node of a Redis Cluster.
    pub cluster: bool,
    /// Further seed nodes of the cluster, reached with `url`'s scheme, user and password.
    pub cluster_nodes: Vec<(String, u16)>,
    /// TLS files (`rediss://` only).
    pub tls: RedisTlsFiles,
}

/// The PEM files of a `rediss://` connection; read when tollgate starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTlsFiles {
    /// CA certificates to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and its private key, for a server that requires one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The authority part of a URL: `[userinfo@]host[:port]`.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

/// The userinfo part of a `redis://` URL, if any.
fn userinfo(url: &str) -> Option<&str> {
    authority(url).rsplit_once('@').map(|(u, _)| u)
}

/// `host[:port]` of an authority (after any userinfo); `[v6]` loses its brackets. `None` for
/// an empty host or a port that is not a number.
fn host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let hp = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = match hp.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match hp.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0)?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

fn has_password(url: &str) -> bool {
    userinfo(url).is_some_and(|u| u.contains(':'))
}

fn redact(url: &str) -> String {
    match userinfo(url) {
        Some(u) if u.contains(':') => {
            let user = u.split_once(':').map_or(u, |(user, _)| user);
            url.replacen(u, &format!("{user}:***"), 1)
        }
        _ => url.to_owned(),
    }
}

/// Validates `[state]`, pushing every error with its path.
pub(crate) fn state(
    raw: &RawState,
    allow_inline: bool,
    env: &dyn Env,
    errs: &mut Errors<'_>,
) -> StateBackend {
    let backend = raw.backend.as_deref().unwrap_or("sqlite");
    // Keys of another backend are a mistake (a typo in `backend`, or a half-edited file), not
    // something to ignore silently.
    let sqlite_keys = [("path", raw.path.is_some()), ("fsync", raw.fsync.is_some())];
    let redis_keys = [
        ("url", raw.url.is_some()),
        ("key_prefix", raw.key_prefix.is_some()),
        ("connect_timeout_ms", raw.connect_timeout_ms.is_some()),
        ("operation_timeout_ms", raw.operation_timeout_ms.is_some()),
        ("cluster", raw.cluster.is_some()),
        ("cluster_nodes", raw.cluster_nodes.is_some()),
        ("tls_ca", raw.tls_ca.is_some()),
        ("tls_cert", raw.tls_cert.is_some()),
        ("tls_key", raw.tls_key.is_some()),
    ];
    let mut foreign = |keys: &[(&str, bool)], owner: &str| {
        for (key, set) in keys {
            if *set {
                errs.push(
                    None,
                    format!("state.{key}"),
                    format!("applies only to backend = \"{owner}\", not {backend:?}"),
                );
            }
        }
    };
    match backend {
        "sqlite" => {
            foreign(&redis_keys, "redis");
            StateBackend::Sqlite {
                path: PathBuf::from(raw.path.as_deref().unwrap_or(defaults::STATE_PATH)),
                fsync: match raw.fsync.as_deref() {
                    None | Some("always") => Fsync::Always,
                    Some("batch") => Fsync::Batch,
                    Some(other) => {
                        errs.push(
                            None,
                            "state.fsync",
                            format!("unknown value {other:?}; use \"always\" or \"batch\""),
                        );
                        Fsync::Always
                    }
                },
            }
        }
        "memory" => {
            foreign(&sqlite_keys, "sqlite");
            foreign(&redis_keys, "redis");
            StateBackend::Memory
        }
        "redis" => {
            foreign(&sqlite_keys, "sqlite");
            redis(raw, allow_inline, env, errs).map_or(StateBackend::Memory, StateBackend::Redis)
        }
        other => {
            errs.push(
                None,
                "state.backend",
                format!("unknown backend {other:?}; use \"sqlite\", \"redis\" or \"memory\""),
            );
            StateBackend::Memory
        }
    }
}

fn redis(
    raw: &RawState,
    allow_inline: bool,
    env: &dyn Env,
    errs: &mut Errors<'_>,
) -> Option<RedisState> {
    let url = match raw.url.as_deref() {
        None => {
            errs.push(
                None,
                "state.url",
                "backend = \"redis\" needs url = \"redis://host:port/db\" (or env:NAME)",
            );
            None
        }
        Some(text) => redis_url(text, allow_inline, env)
            .map_err(|msg| errs.push(None, "state.url", msg))
            .ok(),
    };
    let key_prefix = raw
        .key_prefix
        .clone()
        .unwrap_or_else(|| defaults::REDIS_KEY_PREFIX.into());
    let mut ok = true;
    if key_prefix.contains(['{', '}']) {
        // Redis Cluster would take a `{…}` in the prefix as every key's hash tag and put the
        // whole deployment in one slot.
        errs.push(None, "state.key_prefix", "must not contain '{' or '}'");
        ok = false;
    }
    let mut millis = |value: Option<u64>, default: u64, key: &str| match value {
        Some(0) => {
            errs.push(None, format!("state.{key}"), "must be at least 1");
            ok = false;
            default
        }
        Some(v) => v,
        None => default,
    };
    let connect_timeout_ms = millis(
        raw.connect_timeout_ms,
        defaults::REDIS_CONNECT_TIMEOUT_MS,
        "connect_timeout_ms",
    );
    let operation_timeout_ms = millis(
        raw.operation_timeout_ms,
        defaults::REDIS_OPERATION_TIMEOUT_MS,
        "operation_timeout_ms",
    );
    let cluster = raw.cluster.unwrap_or(false);
    let mut cluster_nodes = Vec::new();
    if let Some(nodes) = &raw.cluster_nodes {
        if !cluster {
            errs.push(
                None,
                "state.cluster_nodes",
                "applies only with cluster = true",
            );
            ok = false;
        }
        for (i, node) in nodes.iter().enumerate() {
            match host_port(node) {
                Some((host, Some(port))) if !node.contains(['@', '/']) => {
                    cluster_nodes.push((host.to_owned(), port))
                }
                _ => {
                    errs.push(
                        None,
                        format!("state.cluster_nodes[{i}]"),
                        format!("{node:?} is not host:port (e.g. \"10.0.0.2:7000\")"),
                    );
                    ok = false;
                }
            }
        }
    }
    if let Some(url) = &url {
        if cluster && url.db() != Some(0) {
            errs.push(
                None,
                "state.url",
                "Redis Cluster has only database 0: drop the /N from the URL",
            );
            ok = false;
        }
    }
    let tls = tls_files(raw, url.as_ref(), errs);
    Some(RedisState {
        url: url?,
        key_prefix,
        connect_timeout_ms,
        operation_timeout_ms,
        cluster,
        cluster_nodes,
        tls: tls?,
    })
    .filter(|_| ok)
}

/// `tls_ca`, `tls_cert` and `tls_key`: files that exist, a certificate and a key together, and
/// only for a `rediss://` URL (`url` is `None` when the URL itself was refused).
fn tls_files(
    raw: &RawState,
    url: Option<&RedisUrl>,
    errs: &mut Errors<'_>,
) -> Option<RedisTlsFiles> {
    let mut ok = true;
    let mut file = |key: &str, value: &Option<String>| -> Option<PathBuf> {
        let path = PathBuf::from(value.as_ref()?);
        let problem = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && key == "tls_key" && crate::readable_by_others(&m).is_some() => {
                "is readable by group or others (a private key); chmod 600 it".to_owned()
            }
            Ok(m) if m.is_file() => return Some(path),
            Ok(_) => "is not a file".to_owned(),
            Err(e) => e.to_string(),
        };
        errs.push(
            None,
            format!("state.{key}"),
            format!("{}: {problem}", path.display()),
        );
        ok = false;
        None
    };
    let ca = file("tls_ca", &raw.tls_ca);
    let cert = file("tls_cert", &raw.tls_cert);
    let key = file("tls_key", &raw.tls_key);
    let unpaired = match (raw.tls_cert.is_some(), raw.tls_key.is_some()) {
        (true, false) => Some(("state.tls_cert", "needs tls_key as well")),
        (false, true) => Some(("state.tls_key", "needs tls_cert as well")),
        _ => None,
    };
    if let Some((key, why)) = unpaired {
        errs.push(None, key, why);
        ok = false;
    }
    let set = [
        ("tls_ca", &raw.tls_ca),
        ("tls_cert", &raw.tls_cert),
        ("tls_key", &raw.tls_key),
    ];
    if let (Some(url), Some((key, _))) = (url, set.iter().find(|(_, v)| v.is_some())) {
        if !url.is_tls() {
            errs.push(
                None,
                format!("state.{key}"),
                "needs a rediss:// URL (TLS); state.url is redis://",
            );
            ok = false;
        }
    }
    let client = cert.zip(key);
    ok.then_some(RedisTlsFiles { ca, client })
}

/// Resolves `env:NAME` / `file:PATH` / the literal and checks it is a URL this build can use.
/// Messages never contain the URL: it may hold a password.
fn redis_url(text: &str, allow_inline: bool, env: &dyn Env) -> Result<RedisUrl, String> {
    let (url, source) = if text.starts_with("env:") || text.starts_with("file:") {
        let (secret, source) = secret::resolve(text, false, env)?;
        let url = std::str::from_utf8(secret.expose())
            .map_err(|_| "the Redis URL is not UTF-8".to_owned())?
            .trim()
            .to_owned();
        (url, source)
    } else {
        if has_password(text) && !allow_inline {
            return Err("the URL holds a password: use env:NAME or file:PATH \
                        (or set allow_inline_secrets = true)"
                .into());
        }
        (text.to_owned(), SecretSource::Inline)
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("not a URL; expected redis://host:port/db".into());
    };
    if !matches!(scheme, "redis" | "rediss") {
        return Err("unsupported scheme; expected redis://host:port/db or rediss:// (TLS)".into());
    }
    if rest.contains('#') {
        // The client takes `#insecure` as "skip the certificate check".
        return Err("a #fragment is refused: certificate checks cannot be turned off".into());
    }
    if host_port(authority(&url)).is_none() {
        return Err("the URL names no host (or a bad port); expected redis://host:port/db".into());
    }
    Ok(RedisUrl { url, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_only_the_password() {
        assert_eq!(redact("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact("redis://u@h:6379/0"), "redis://u@h:6379/0");
        assert_eq!(redact("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(
            redact("redis://user:p@ss:w@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert!(has_password("redis://:pw@h"));
        assert!(!has_password("redis://user@h/0?x=a:b@c"));
    }
}
