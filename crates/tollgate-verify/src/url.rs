//! Splitting a URL into the pieces the schemes sign, without normalising anything: percent-encoding,
//! query order and case stay as received. Also the port variants the SDKs try.

use crate::reject::Reject;

/// The pieces of `scheme://[userinfo@]host[:port]path[?query][#fragment]`, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Url<'a> {
    /// `http` or `https` as written.
    pub scheme: &'a str,
    /// `user:pass` when present.
    pub userinfo: Option<&'a str>,
    /// Host, with brackets for IPv6.
    pub host: &'a str,
    /// Port digits when present.
    pub port: Option<&'a str>,
    /// Raw path; empty when the URL has none.
    pub path: &'a str,
    /// Raw query without `?`; `None` when there is no `?`.
    pub query: Option<&'a str>,
}

impl<'a> Url<'a> {
    /// Splits an absolute http(s) URL. The fragment, which never reaches a server, is dropped.
    pub fn parse(url: &'a str) -> Result<Self, Reject> {
        let url = url.split('#').next().unwrap_or("");
        let (scheme, rest) = url.split_once("://").ok_or(Reject::UrlMalformed)?;
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return Err(Reject::UrlMalformed);
        }
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(auth_end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (host, port) = if hostport.starts_with('[') {
            let close = hostport.find(']').ok_or(Reject::UrlMalformed)?;
            let after = &hostport[close + 1..];
            match after.strip_prefix(':') {
                Some(p) => (&hostport[..=close], Some(p)),
                None if after.is_empty() => (&hostport[..=close], None),
                None => return Err(Reject::UrlMalformed),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty()
            || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Reject::UrlMalformed);
        }
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };
        Ok(Url {
            scheme,
            userinfo,
            host,
            port,
            path,
            query,
        })
    }

    /// `443` for https, `80` for http.
    pub fn default_port(&self) -> &'static str {
        if self.scheme.eq_ignore_ascii_case("https") {
            "443"
        } else {
            "80"
        }
    }

    /// `scheme://[userinfo@]host[:port]` with the given port.
    pub fn origin_with_port(&self, port: Option<&str>) -> String {
        let mut s = String::with_capacity(self.scheme.len() + self.host.len() + 16);
        s.push_str(self.scheme);
        s.push_str("://");
        if let Some(u) = self.userinfo {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(self.host);
        if let Some(p) = port {
            s.push(':');
            s.push_str(p);
        }
        s
    }

    /// The whole URL (without fragment) with the given port.
    pub fn to_string_with_port(&self, port: Option<&str>) -> String {
        let mut s = self.origin_with_port(port);
        s.push_str(self.path);
        if let Some(q) = self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }

    /// The whole URL as parsed (without fragment).
    pub fn as_string(&self) -> String {
        self.to_string_with_port(self.port)
    }

    /// Twilio's two port variants, as twilio-python tries them: the URL with any port removed, and
    /// the URL with the default port added when it has none (else as given). The first entry is the
    /// URL as received, the likeliest match.
    pub fn twilio_port_variants(&self) -> [String; 2] {
        let with = self.to_string_with_port(Some(self.port.unwrap_or(self.default_port())));
        let without = self.to_string_with_port(None);
        if self.port.is_some() {
            [with, without]
        } else {
            [without, with]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_all_parts_without_normalising() {
        let u = Url::parse("https://u:p@Host.example:8443/a%2Fb/?x=1&y=%27#frag").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.userinfo, Some("u:p"));
        assert_eq!(u.host, "Host.example");
        assert_eq!(u.port, Some("8443"));
        assert_eq!(u.path, "/a%2Fb/");
        assert_eq!(u.query, Some("x=1&y=%27"));
        assert_eq!(
            u.as_string(),
            "https://u:p@Host.example:8443/a%2Fb/?x=1&y=%27"
        );
    }

    #[test]
    fn ipv6_and_bare_hosts() {
        let u = Url::parse("http://[::1]:8080?q").unwrap();
        assert_eq!(
            (u.host, u.port, u.path, u.query),
            ("[::1]", Some("8080"), "", Some("q"))
        );
        let u = Url::parse("http://[::1]").unwrap();
        assert_eq!((u.host, u.port), ("[::1]", None));
    }

    #[test]
    fn rejects_what_is_not_an_http_url() {
        for bad in [
            "",
            "/path",
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://h:8a/",
            "http://[::1/",
            "http://h:/",
        ] {
            assert_eq!(Url::parse(bad), Err(Reject::UrlMalformed), "{bad}");
        }
    }

    #[test]
    fn twilio_port_variants_put_the_received_form_first() {
        let u = Url::parse("https://h/p?q=1").unwrap();
        assert_eq!(
            u.twilio_port_variants(),
            ["https://h/p?q=1".to_string(), "https://h:443/p?q=1".into()]
        );
        let u = Url::parse("http://h:1234/p").unwrap();
        assert_eq!(
            u.twilio_port_variants(),
            ["http://h:1234/p".to_string(), "http://h/p".into()]
        );
    }
}
