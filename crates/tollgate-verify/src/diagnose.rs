//! Explaining a signature mismatch. When a URL-bound signature fails, the commonest cause is not a
//! forgery but infrastructure: a TLS terminator that hides `https`, a port that appears or vanishes,
//! a proxy that adds or strips a path prefix or a trailing slash. [`explain`] recomputes the signature
//! for each such variant and reports the one that would have matched. It never makes a request pass,
//! and it costs one verification per variant, so callers run it off the hot path (the CLI always,
//! the gateway at a bounded rate).

use crate::provider::Verifier;
use crate::reject::Reject;
use crate::request::Request;
use crate::url::Url;

/// What the caller knows about how the request reached it, to widen the variants tried.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints<'a> {
    /// Other hosts the provider may have called: the Host header, an untrusted X-Forwarded-Host.
    pub alt_hosts: &'a [&'a str],
}

/// A variant that would have verified, and what it means for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// Stable code: `scheme`, `port_added`, `port_dropped`, `trailing_slash`, `path_prefix`,
    /// `query`, `host`, `body_newline`, `body_line_endings`.
    pub code: &'static str,
    /// The URL the provider signed, for URL variants.
    pub signed_url: Option<String>,
    /// One sentence a person can act on.
    pub message: String,
}

/// Tries the usual infrastructure mistakes for a request that failed with
/// [`Reject::SignatureMismatch`]; `None` when no variant matches (a wrong key or a forgery).
pub fn explain(
    v: &dyn Verifier,
    req: &Request<'_>,
    now: i64,
    hints: &Hints<'_>,
) -> Option<Diagnosis> {
    if v.signs_url() {
        if let Ok(url) = Url::parse(req.url) {
            for (code, candidate, message) in url_variants(&url, hints) {
                if candidate != req.url && v.verify(&req.with_url(&candidate), now).is_ok() {
                    return Some(Diagnosis {
                        code,
                        signed_url: Some(candidate),
                        message,
                    });
                }
            }
        }
    }
    for (code, body, message) in body_variants(req.body) {
        if v.verify(&req.with_body(&body), now).is_ok() {
            return Some(Diagnosis {
                code,
                signed_url: None,
                message,
            });
        }
    }
    None
}

/// Runs the verifier and, on a mismatch, [`explain`].
pub fn verify_explained(
    v: &dyn Verifier,
    req: &Request<'_>,
    now: i64,
    hints: &Hints<'_>,
) -> Result<crate::Verified, (Reject, Option<Diagnosis>)> {
    v.verify(req, now).map_err(|r| {
        let d = matches!(r, Reject::SignatureMismatch | Reject::BodyHashMismatch)
            .then(|| explain(v, req, now, hints));
        (r, d.flatten())
    })
}

type Variant = (&'static str, String, String);

fn url_variants(u: &Url<'_>, hints: &Hints<'_>) -> Vec<Variant> {
    let mut out: Vec<Variant> = Vec::new();
    let seen = u.scheme.to_ascii_lowercase();
    let other = if seen == "https" { "http" } else { "https" };
    let flipped = Url {
        scheme: other,
        ..*u
    };
    let default_for = |s: &str| if s == "https" { "443" } else { "80" };

    // Scheme, with and without the port the other scheme would imply.
    for cand in [flipped.as_string(), flipped.to_string_with_port(None)] {
        out.push((
            "scheme",
            cand.clone(),
            format!(
                "the signature matches {cand}, but this server saw {seen}: the TLS terminator or proxy in front \
                 does not pass X-Forwarded-Proto, or it is not listed in trusted_proxies (or set server.public_url)"
            ),
        ));
    }
    match u.port {
        Some(p) => {
            let cand = u.to_string_with_port(None);
            out.push((
                "port_added",
                cand.clone(),
                format!(
                    "the signature matches {cand} without port {p}: the URL tollgate rebuilt carries a port the \
                     provider did not call (a Host header with the backend port?); set server.public_url"
                ),
            ));
        }
        None => {
            let p = default_for(&seen);
            let cand = u.to_string_with_port(Some(p));
            out.push((
                "port_dropped",
                cand.clone(),
                format!(
                    "the signature matches {cand} with the explicit port {p}: the webhook URL configured at the \
                     provider names the port; configure it without, or put the port in server.public_url"
                ),
            ));
        }
    }
    let path = u.path;
    let toggled = if let Some(p) = path.strip_suffix('/') {
        p.to_owned()
    } else {
        format!("{path}/")
    };
    if !toggled.is_empty() {
        let cand = Url {
            path: &toggled,
            ..*u
        }
        .as_string();
        out.push((
            "trailing_slash",
            cand.clone(),
            format!(
                "the signature matches {cand}: the trailing slash differs between the webhook URL configured at \
                 the provider and the path tollgate received (a proxy rewriting it?)"
            ),
        ));
    }
    // A proxy that adds a prefix before tollgate: the provider signed a shorter path.
    let mut rest = path;
    for _ in 0..3 {
        let Some(next) = rest
            .get(1..)
            .and_then(|r| r.find('/'))
            .map(|i| &rest[i + 1..])
        else {
            break;
        };
        rest = next;
        let cand = Url { path: rest, ..*u }.as_string();
        let prefix = &path[..path.len() - rest.len()];
        out.push((
            "path_prefix",
            cand.clone(),
            format!(
                "the signature matches {cand}: a proxy in front adds the prefix {prefix}; set server.public_url \
                 or the route's path to what the provider calls"
            ),
        ));
    }
    if u.query.is_some() {
        let cand = Url { query: None, ..*u }.as_string();
        out.push((
            "query",
            cand.clone(),
            format!("the signature matches {cand} without the query string: something appends query parameters"),
        ));
    }
    for host in hints.alt_hosts {
        let (h, p) = match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => {
                (h, Some(p))
            }
            _ => (*host, None),
        };
        if h == u.host && p == u.port {
            continue;
        }
        let cand = Url {
            host: h,
            port: p,
            ..*u
        }
        .as_string();
        out.push((
            "host",
            cand.clone(),
            format!(
                "the signature matches {cand}: the provider called host {host}; set server.public_url, or list \
                 the proxy that rewrites Host in trusted_proxies so X-Forwarded-Host is honoured"
            ),
        ));
    }
    out
}

fn body_variants(body: &[u8]) -> Vec<(&'static str, Vec<u8>, String)> {
    let mut out = Vec::new();
    match body.strip_suffix(b"\n") {
        Some(b) => out.push((
            "body_newline",
            b.to_vec(),
            "the signature matches the body without its final newline: something appended one"
                .to_owned(),
        )),
        None if !body.is_empty() => out.push((
            "body_newline",
            [body, b"\n"].concat(),
            "the signature matches the body with a final newline: something stripped it".to_owned(),
        )),
        None => {}
    }
    if body.windows(2).any(|w| w == b"\r\n") {
        let lf: Vec<u8> = body.iter().copied().filter(|&b| b != b'\r').collect();
        out.push((
            "body_line_endings",
            lf,
            "the signature matches the body with LF line endings: something rewrote them to CRLF"
                .to_owned(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_variants_cover_scheme_port_slash_prefix_query_and_host() {
        let u = Url::parse("http://hooks.example.com:8080/api/twilio/voice?x=1").unwrap();
        let v = url_variants(
            &u,
            &Hints {
                alt_hosts: &["public.example.com"],
            },
        );
        let urls: Vec<&str> = v.iter().map(|(_, u, _)| u.as_str()).collect();
        for expected in [
            "https://hooks.example.com:8080/api/twilio/voice?x=1",
            "https://hooks.example.com/api/twilio/voice?x=1",
            "http://hooks.example.com/api/twilio/voice?x=1",
            "http://hooks.example.com:8080/api/twilio/voice/?x=1",
            "http://hooks.example.com:8080/twilio/voice?x=1",
            "http://hooks.example.com:8080/voice?x=1",
            "http://hooks.example.com:8080/api/twilio/voice",
            "http://public.example.com/api/twilio/voice?x=1",
        ] {
            assert!(urls.contains(&expected), "missing {expected} in {urls:#?}");
        }
    }
}
