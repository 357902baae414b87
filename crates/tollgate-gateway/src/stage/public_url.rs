//! Stage 4: the URL the provider called, which URL-signing schemes sign. `public_url` + the raw
//! request target when configured; else scheme + Host + raw target, where the scheme and host a
//! proxy reports (`Forwarded: proto=;host=`, or X-Forwarded-Proto/-Host) count only from a trusted
//! proxy, as [`super::client_ip::via`] decided. The target is used exactly as received.

use http::request::Parts;

use super::client_ip::Via;
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
    via: &Via,
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
            url: [base, target].concat(),
            scheme: scheme.to_owned(),
            host: host.to_owned(),
        });
    }
    // Only a trusted proxy's word counts here; `via` is empty of it otherwise (see client_ip).
    let scheme = via.proto.unwrap_or(if tls { "https" } else { "http" });
    let host = via
        .host
        .as_deref()
        .or_else(|| parts.headers.get(http::header::HOST)?.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .filter(|h| usable_host(h))
        .ok_or(GatewayError::BadRequest("no usable Host header"))?;
    Ok(PublicUrl {
        url: [scheme, "://", host, target].concat(),
        scheme: scheme.to_owned(),
        host: host.to_owned(),
    })
}

/// RFC 3986 `host [":" port]` characters only: nothing that would end the authority (`/ ? # @`)
/// or that a URL parser might read differently from the provider's signer (`\ "` and spaces).
fn usable_host(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn parts(target: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(target);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn via(proto: Option<&'static str>, host: Option<&str>) -> Via {
        Via {
            client_ip: IpAddr::from([198, 51, 100, 7]),
            proto,
            host: host.map(str::to_owned),
        }
    }

    #[test]
    fn a_trusted_proxys_scheme_and_host_replace_the_connections() {
        let p = parts("/hooks/voice?a=1%2F", Some("internal:8080"));
        let u = build(
            &p,
            None,
            false,
            &via(Some("https"), Some("hooks.example.com")),
        )
        .expect("url");
        assert_eq!(u.url, "https://hooks.example.com/hooks/voice?a=1%2F");
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str()),
            ("https", "hooks.example.com")
        );
        let u = build(&p, None, true, &via(None, None)).expect("url");
        assert_eq!(u.url, "https://internal:8080/hooks/voice?a=1%2F");
        let u = build(&p, None, true, &via(Some("http"), None)).expect("url");
        assert_eq!(u.url, "http://internal:8080/hooks/voice?a=1%2F");
    }

    #[test]
    fn configured_public_url_wins_over_everything() {
        let p = parts("/hooks/voice", Some("internal:8080"));
        let u = build(
            &p,
            Some("https://hooks.example.com"),
            false,
            &via(Some("http"), Some("evil.example")),
        )
        .expect("url");
        assert_eq!(u.url, "https://hooks.example.com/hooks/voice");
    }

    #[test]
    fn a_host_that_could_move_the_authority_is_refused() {
        for bad in ["", "a/b", "evil@a", "a?b", "a#b", "a\\b", "a\"b", "a b"] {
            let p = parts("/hooks", Some("ok.example"));
            let got = build(&p, None, false, &via(None, Some(bad)));
            assert!(
                matches!(got, Err(GatewayError::BadRequest("no usable Host header"))),
                "{bad:?}"
            );
        }
        let p = parts("/hooks", Some("[2001:db8::1]:8443"));
        let u = build(&p, None, false, &via(None, None)).expect("url");
        assert_eq!(u.url, "http://[2001:db8::1]:8443/hooks");
    }
}
