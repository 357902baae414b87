//! Stage 4: the URL the provider called, which URL-signing schemes sign. `public_url` + the raw
//! request target when configured; else scheme + Host + raw target, where X-Forwarded-Proto and
//! X-Forwarded-Host count only from a trusted proxy. The target is used exactly as received.

use http::request::Parts;

use crate::GatewayError;

/// The rebuilt URL and its parts, for forwarding headers.
#[derive(Debug, Clone)]
pub struct PublicUrl {
    /// Full URL.
    pub url: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Host (and port) the provider called.
    pub host: String,
}

/// Builds the public URL.
pub fn build(
    parts: &Parts,
    public_url: Option<&str>,
    tls: bool,
    peer_trusted: bool,
) -> Result<PublicUrl, GatewayError> {
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if let Some(base) = public_url {
        let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
        let host = rest.split('/').next().unwrap_or(rest);
        return Ok(PublicUrl {
            url: format!("{base}{target}"),
            scheme: scheme.to_owned(),
            host: host.to_owned(),
        });
    }
    let forwarded = |name: &str| {
        peer_trusted
            .then(|| parts.headers.get(name)?.to_str().ok())
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = match forwarded("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ if tls => "https",
        _ => "http",
    };
    let host = forwarded("x-forwarded-host")
        .or_else(|| parts.headers.get(http::header::HOST)?.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@')
        })
        .ok_or(GatewayError::BadRequest("no usable Host header"))?;
    Ok(PublicUrl {
        url: format!("{scheme}://{host}{target}"),
        scheme: scheme.to_owned(),
        host: host.to_owned(),
    })
}
