//! Warnings of `tollgate check`: things that load and run but weaken the protection. Errors are
//! [`crate::ConfigErrors`]; these never stop the gateway.

use std::fmt;

use crate::{Config, SecretSource, StateBackend};

/// One warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// Key path.
    pub path: String,
    /// What is weak and what to do.
    pub message: String,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Keys older than this (by `created`) should be rotated.
pub const MAX_KEY_AGE_SECS: i64 = 90 * 86_400;

/// Shortest secret not flagged, bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Least estimated entropy not flagged, bits (length × Shannon entropy per byte of the decoded key;
/// 16 random bytes score about 60).
pub const MIN_SECRET_BITS: f64 = 48.0;

/// Every warning for `config` at `now` (unix seconds).
pub fn lints(config: &Config, now: i64) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut warn = |path: String, message: String| out.push(Lint { path, message });
    let s = &config.server;
    if config.tls.is_none() && !s.listen.ip().is_loopback() {
        warn(
            "tls".into(),
            format!(
                "no [tls] while listening on {}: terminate TLS here or in a trusted proxy in front",
                s.listen
            ),
        );
    }
    for (i, n) in s.trusted_proxies.iter().enumerate() {
        if n.prefix_len() == 0 {
            warn(
                format!("server.trusted_proxies[{i}]"),
                format!("{n} trusts every peer to set X-Forwarded-For: any client can then pick its own IP"),
            );
        }
    }
    if let StateBackend::Redis(r) = &config.state {
        let hosts =
            std::iter::once(r.url.host()).chain(r.cluster_nodes.iter().map(|(h, _)| h.as_str()));
        let remote = hosts.into_iter().find(|h| !is_loopback(h));
        if let (false, true, Some(host)) = (r.url.is_tls(), r.url.has_password(), remote) {
            warn(
                "state.url".into(),
                format!(
                    "redis:// sends the Redis password and every event to {host} in clear text: \
                     use rediss:// (TLS), or keep Redis on this host"
                ),
            );
        }
    }
    if config.allow_inline_secrets {
        warn(
            "allow_inline_secrets".into(),
            "literal secrets are permitted in this file".into(),
        );
    }
    for (i, r) in config.routes.iter().enumerate() {
        for (k, v) in &r.options {
            if k.starts_with("insecure_") && v != &serde_json::Value::Bool(false) {
                warn(format!("route[{i}].{k}"), "weakens verification".into());
            }
        }
        for m in (r.spec.lint)(&r.options) {
            warn(format!("route[{i}] ({})", r.spec.id), m);
        }
        if r.app_secret.is_none() {
            warn(
                format!("route[{i}].app_secret"),
                "not set: the app cannot tell requests that went through tollgate from ones that bypassed it".into(),
            );
        }
        for (j, (key, info)) in r.keys.keys().iter().zip(&r.key_info).enumerate() {
            let p = format!("route[{i}].keys[{j}]");
            if !info.labelled {
                warn(
                    format!("{p}.label"),
                    "missing: metrics cannot show which key is still in use".into(),
                );
            }
            if info.source == SecretSource::Inline {
                warn(
                    format!("{p}.secret"),
                    "inline secret: use env:NAME or file:PATH".into(),
                );
            }
            if let Some(why) = weak(key.secret.expose()) {
                warn(format!("{p}.secret"), why);
            }
            if let Some(c) = info.created {
                if now - c > MAX_KEY_AGE_SECS {
                    warn(
                        format!("{p}.created"),
                        format!("key is {} days old: rotate it", (now - c) / 86_400),
                    );
                }
            }
        }
        if let Some((secret, source)) = &r.app_secret {
            if *source == SecretSource::Inline {
                warn(
                    format!("route[{i}].app_secret"),
                    "inline secret: use env:NAME or file:PATH".into(),
                );
            }
            if let Some(why) = weak(secret.expose()) {
                warn(format!("route[{i}].app_secret"), why);
            }
        }
    }
    out
}

/// Whether `host` (a name or an address) is this machine.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a secret is weak, if it is. Never includes the material.
fn weak(text: &[u8]) -> Option<String> {
    let decoded = decoded(text);
    let bytes = decoded.as_deref().unwrap_or(text);
    if bytes.len() < MIN_SECRET_LEN {
        return Some(format!(
            "weak secret: {} bytes, use at least {MIN_SECRET_LEN}",
            bytes.len()
        ));
    }
    let bits = estimated_bits(bytes);
    (bits < MIN_SECRET_BITS).then(|| {
        format!(
            "weak secret: about {bits:.0} bits of entropy, use a random one (`tollgate keygen`)"
        )
    })
}

/// The key bytes behind a textual encoding (`whsec_<base64>`, hex auth tokens), because the
/// text of an encoded key looks random even when the key is `aaaa…`.
fn decoded(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(text).ok()?;
    let body = match text.split_once('_') {
        Some((prefix, rest))
            if prefix.len() <= 6 && prefix.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            rest
        }
        _ => text,
    };
    if body.len() % 2 == 0 && body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(body).ok();
    }
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Length × Shannon entropy of the byte distribution: crude, but catches `aaaa…` and `password…`.
fn estimated_bits(bytes: &[u8]) -> f64 {
    let mut counts = [0usize; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    let per_byte: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_byte * n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_short_secrets_are_weak_random_ones_are_not() {
        assert!(weak(b"short").is_some());
        assert!(weak(&[b'a'; 64]).is_some());
        assert!(weak(b"abababababababababababab").is_some());
        assert!(weak(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        // Encoded keys are judged by what they decode to.
        assert!(weak(b"whsec_YWFhYWFhYWFhYWFhYWFhYQ==").is_some());
        assert!(weak(b"00000000000000000000000000000001").is_some());
        assert!(weak(b"9f86d081884c7d659a2feaa0c55ad015").is_none());
    }
}
