//! Stage 2: who is calling, and what a trusted proxy says the provider called (stage 4 reads the
//! scheme and host from here).
//!
//! The socket peer, unless the peer is one of `trusted_proxies`. Then the proxy headers count, and
//! only one family of them, never hops mixed from both:
//! - RFC 7239 `Forwarded` when the request carries any: walking its elements right to left, the
//!   first whose `for=` is not a trusted proxy is the client, and the `proto=` and `host=` of that
//!   same element (written by the trusted proxy that received the client's request) are what the
//!   provider called. An `unknown` or obfuscated (`_hidden`) `for=`, or an element without one,
//!   ends the walk there: the client is then the nearest trusted proxy we know of.
//! - else `X-Forwarded-For` (the right-most address that is not a trusted proxy; addresses further
//!   left were written by the client and prove nothing) with the first `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` values.
//!
//! A proxy header that does not parse (or is larger than [`MAX_FORWARDED_BYTES`] or
//! [`MAX_FORWARDED_ELEMENTS`]) is not half-believed: the client is the peer and the scheme and host
//! come from the connection.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

/// Largest total size of the `Forwarded` headers of one request that is parsed.
pub const MAX_FORWARDED_BYTES: usize = 8 * 1024;
/// Largest number of `Forwarded` elements (hops) of one request that is parsed.
pub const MAX_FORWARDED_ELEMENTS: usize = 64;

/// What tollgate believes about where a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The client IP (the peer, or what a trusted proxy reported).
    pub client_ip: IpAddr,
    /// `http` or `https` as reported by a trusted proxy; `None`: the connection's own scheme.
    pub proto: Option<&'static str>,
    /// Host (and port) as reported by a trusted proxy, unvalidated; `None`: the Host header.
    pub host: Option<String>,
}

/// Whether `ip` is one of `trusted`.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&canonical(ip)))
}

/// The client IP alone (see [`via`]).
pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    via(peer, headers, trusted).client_ip
}

/// The client IP and the scheme and host a trusted proxy reported.
pub fn via(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Via {
    let peer_ip = canonical(peer.ip());
    if !is_trusted(peer_ip, trusted) {
        return direct(peer_ip);
    }
    if headers.contains_key(http::header::FORWARDED) {
        match parse_forwarded(headers.get_all(http::header::FORWARDED)) {
            Some(elements) => from_forwarded(peer_ip, &elements, trusted),
            None => direct(peer_ip),
        }
    } else {
        from_x_forwarded(peer_ip, headers, trusted)
    }
}

fn direct(ip: IpAddr) -> Via {
    Via {
        client_ip: ip,
        proto: None,
        host: None,
    }
}

fn from_forwarded(peer_ip: IpAddr, elements: &[Element], trusted: &[IpNet]) -> Via {
    // The right-most element was written by the peer; each element was written by the proxy that
    // received the request from its `for=`. While that is a trusted proxy, step one hop left.
    let mut nearest_known = peer_ip;
    for el in elements.iter().rev() {
        match el.node {
            Some(Node::Ip(ip)) if is_trusted(ip, trusted) => nearest_known = ip,
            Some(Node::Ip(ip)) => return reported(ip, el),
            Some(Node::Unknown) | None => return reported(nearest_known, el),
        }
    }
    // Every hop is a trusted proxy: the left-most one originated the request.
    match elements.first() {
        Some(first) => reported(nearest_known, first),
        None => direct(peer_ip),
    }
}

fn reported(client_ip: IpAddr, el: &Element) -> Via {
    Via {
        client_ip,
        proto: el.proto.as_deref().and_then(scheme),
        host: el.host.clone(),
    }
}

fn from_x_forwarded(peer_ip: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Via {
    let first = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .split(',')
            .next()
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let proto = first("x-forwarded-proto").and_then(scheme);
    let host = first("x-forwarded-host").map(str::to_owned);
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else {
            return direct(peer_ip);
        };
        for item in v.split(',') {
            match parse_hop(item.trim()) {
                Some(ip) => hops.push(ip),
                // An unparsable hop means we cannot tell who wrote what to its right; stop trusting.
                None => return direct(peer_ip),
            }
        }
    }
    let client_ip = hops
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip, trusted))
        .unwrap_or(peer_ip);
    Via {
        client_ip,
        proto,
        host,
    }
}

fn scheme(p: &str) -> Option<&'static str> {
    if p.eq_ignore_ascii_case("https") {
        Some("https")
    } else if p.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

fn parse_hop(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses compare as IPv4, so `10.0.0.0/8` also covers `::ffff:10.1.2.3`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The `for=` of a `Forwarded` element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// An address (the port, if any, is dropped).
    Ip(IpAddr),
    /// `unknown` or an obfuscated identifier: a hop we cannot check against `trusted_proxies`.
    Unknown,
}

/// One hop of a `Forwarded` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// `for=`, if present.
    pub node: Option<Node>,
    /// `proto=`, as written.
    pub proto: Option<String>,
    /// `host=`, as written.
    pub host: Option<String>,
}

/// Parses every `Forwarded` header value, in order, into one list of elements; `None` if any of
/// them is malformed (RFC 7239 §4: `1#( [pair] *( ";" [pair] ) )`, pair `token "=" value`, value a
/// token or a quoted string), names a parameter twice in one element, has a `for=` that is not a
/// node, or exceeds the size bounds. Parameter names are case-insensitive; unknown ones (and `by=`)
/// are skipped.
pub fn parse_forwarded<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Option<Vec<Element>> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for v in values {
        total = total.saturating_add(v.len());
        if total > MAX_FORWARDED_BYTES {
            return None;
        }
        parse_value(v.as_bytes(), &mut out)?;
    }
    Some(out)
}

fn parse_value(v: &[u8], out: &mut Vec<Element>) -> Option<()> {
    let mut i = 0;
    let mut el = Element::default();
    let mut has_pair = false;
    let mut seen_by = false;
    let mut push = |el: &mut Element, has_pair: &mut bool, seen_by: &mut bool| {
        // Empty list members (", ,") are allowed by the list syntax and mean nothing.
        if std::mem::take(has_pair) {
            if out.len() >= MAX_FORWARDED_ELEMENTS {
                return None;
            }
            out.push(std::mem::take(el));
        }
        *seen_by = false;
        Some(())
    };
    loop {
        i = skip_ows(v, i);
        let Some(&b) = v.get(i) else {
            return push(&mut el, &mut has_pair, &mut seen_by);
        };
        match b {
            b',' => {
                push(&mut el, &mut has_pair, &mut seen_by)?;
                i += 1;
                continue;
            }
            b';' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let start = i;
        while v.get(i).is_some_and(|&c| is_tchar(c)) {
            i += 1;
        }
        let name = v.get(start..i).filter(|n| !n.is_empty())?;
        if v.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        let (value, next) = parse_param_value(v, i)?;
        i = next;
        has_pair = true;
        let slot = if name.eq_ignore_ascii_case(b"for") {
            if el.node.is_some() {
                return None;
            }
            el.node = Some(parse_node(&value)?);
            continue_after(v, &mut i)?;
            continue;
        } else if name.eq_ignore_ascii_case(b"proto") {
            &mut el.proto
        } else if name.eq_ignore_ascii_case(b"host") {
            &mut el.host
        } else if name.eq_ignore_ascii_case(b"by") {
            if std::mem::replace(&mut seen_by, true) {
                return None;
            }
            continue_after(v, &mut i)?;
            continue;
        } else {
            // An extension parameter: syntactically checked, otherwise ignored.
            continue_after(v, &mut i)?;
            continue;
        };
        if slot.replace(value).is_some() {
            return None;
        }
        continue_after(v, &mut i)?;
    }
}

/// After a pair: optional whitespace, then the end, `;` or `,`.
fn continue_after(v: &[u8], i: &mut usize) -> Option<()> {
    *i = skip_ows(v, *i);
    match v.get(*i) {
        None | Some(b';') | Some(b',') => Some(()),
        Some(_) => None,
    }
}

/// A token, or a quoted string with its escapes undone; returns the value and the index after it.
fn parse_param_value(v: &[u8], mut i: usize) -> Option<(String, usize)> {
    if v.get(i) == Some(&b'"') {
        i += 1;
        let mut value = Vec::new();
        loop {
            match *v.get(i)? {
                b'"' => return Some((String::from_utf8(value).ok()?, i + 1)),
                b'\\' => {
                    let c = *v.get(i + 1)?;
                    if c != b'\t' && !(0x20..0x7f).contains(&c) && c < 0x80 {
                        return None;
                    }
                    value.push(c);
                    i += 2;
                }
                c if c == b'\t' || c >= 0x20 && c != 0x7f => {
                    value.push(c);
                    i += 1;
                }
                _ => return None,
            }
        }
    }
    let start = i;
    while v.get(i).is_some_and(|&c| is_tchar(c)) {
        i += 1;
    }
    let token = v.get(start..i).filter(|t| !t.is_empty())?;
    // tchars are ASCII, so this cannot fail; no unwrap on client input all the same.
    Some((String::from_utf8(token.to_vec()).ok()?, i))
}

/// RFC 7239 §6: `unknown`, `_obfuscated`, IPv4, or `[IPv6]`, each with an optional `:port`
/// (digits or `_obfuscated`).
fn parse_node(s: &str) -> Option<Node> {
    if s.eq_ignore_ascii_case("unknown") {
        return Some(Node::Unknown);
    }
    if s.starts_with('_') {
        let (id, port) = match s.split_once(':') {
            Some((id, port)) => (id, Some(port)),
            None => (s, None),
        };
        return (is_obfuscated(id) && port.is_none_or(is_port)).then_some(Node::Unknown);
    }
    let (ip, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            let ip: IpAddr = inside.parse::<std::net::Ipv6Addr>().ok()?.into();
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (ip, port)
        }
        None => match s.split_once(':') {
            Some((ip, port)) => (IpAddr::V4(ip.parse().ok()?), Some(port)),
            None => (IpAddr::V4(s.parse().ok()?), None),
        },
    };
    port.is_none_or(is_port).then_some(Node::Ip(canonical(ip)))
}

fn is_port(p: &str) -> bool {
    (p.starts_with('_') && is_obfuscated(p))
        || (!p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok())
}

/// `"_" 1*( ALPHA / DIGIT / "." / "_" / "-" )`
fn is_obfuscated(s: &str) -> bool {
    s.len() > 1
        && s.starts_with('_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn skip_ows(v: &[u8], mut i: usize) -> usize {
    while matches!(v.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", xff.parse().expect("header"));
        m
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::try_from(*k).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().expect("net"),
            "fd00::/8".parse().expect("net"),
        ]
    }

    const PROXY: &str = "10.0.0.1:5000";

    fn via_proxy(pairs: &[(&str, &str)]) -> Via {
        via(PROXY.parse().expect("addr"), &headers(pairs), &trusted())
    }

    fn fwd(v: &str) -> Option<Vec<Element>> {
        parse_forwarded([&HeaderValue::from_str(v).expect("value")])
    }

    #[test]
    fn untrusted_peer_cannot_pick_its_ip() {
        let trusted = ["10.0.0.0/8".parse().expect("net")];
        let peer = "203.0.113.9:5000".parse().expect("addr");
        assert_eq!(resolve(peer, &h("1.2.3.4"), &trusted), peer.ip());
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_hop() {
        let trusted = ["10.0.0.0/8".parse().expect("net")];
        let peer = "10.0.0.1:5000".parse().expect("addr");
        let got = resolve(peer, &h("6.6.6.6, 198.51.100.7, 10.0.0.2"), &trusted);
        assert_eq!(got, "198.51.100.7".parse::<IpAddr>().expect("ip"));
        assert_eq!(resolve(peer, &h("garbage, 10.0.0.2"), &trusted), peer.ip());
    }

    #[test]
    fn forwarded_from_an_untrusted_peer_is_ignored_entirely() {
        let peer: SocketAddr = "203.0.113.9:5000".parse().expect("addr");
        let got = via(
            peer,
            &headers(&[(
                "forwarded",
                "for=198.51.100.7;proto=https;host=evil.example",
            )]),
            &trusted(),
        );
        assert_eq!(got, direct(peer.ip()));
    }

    #[test]
    fn forwarded_rightmost_untrusted_element_gives_ip_proto_and_host() {
        // The client prepended a fake element; the trusted edge proxy wrote the second one, the
        // inner trusted proxy (10.0.0.1, the peer) the third.
        let got = via_proxy(&[(
            "forwarded",
            "for=6.6.6.6;proto=http;host=evil.example, \
             for=198.51.100.7;proto=https;host=hooks.example.com, for=10.0.0.2;proto=http;host=internal",
        )]);
        assert_eq!(
            got,
            Via {
                client_ip: ip("198.51.100.7"),
                proto: Some("https"),
                host: Some("hooks.example.com".into()),
            }
        );
    }

    #[test]
    fn forwarded_elements_span_several_headers_in_order() {
        let got = via_proxy(&[
            ("forwarded", "for=6.6.6.6"),
            ("forwarded", "for=198.51.100.7;proto=https, for=10.0.0.2"),
        ]);
        assert_eq!(got.client_ip, ip("198.51.100.7"));
        assert_eq!(got.proto, Some("https"));
        let got = via_proxy(&[
            ("forwarded", "for=198.51.100.7"),
            ("forwarded", "for=10.0.0.3;proto=https"),
        ]);
        assert_eq!(got.client_ip, ip("198.51.100.7"));
        assert_eq!(
            got.proto, None,
            "proto of a trusted hop's element is not the edge's"
        );
    }

    #[test]
    fn forwarded_quoted_ipv6_with_port_and_ipv4_with_port() {
        let got = via_proxy(&[("forwarded", r#"for="[2001:db8::1]:4711";proto=https"#)]);
        assert_eq!(got.client_ip, ip("2001:db8::1"));
        let got = via_proxy(&[("forwarded", r#"for="[2001:db8::2]""#)]);
        assert_eq!(got.client_ip, ip("2001:db8::2"));
        let got = via_proxy(&[("forwarded", r#"for="192.0.2.43:4711""#)]);
        assert_eq!(got.client_ip, ip("192.0.2.43"));
        let got = via_proxy(&[("forwarded", r#"for="[::ffff:198.51.100.9]:80""#)]);
        assert_eq!(
            got.client_ip,
            ip("198.51.100.9"),
            "IPv4-mapped compares as IPv4"
        );
        // A trusted IPv6 hop is skipped like a trusted IPv4 one.
        let got = via_proxy(&[("forwarded", r#"for=192.0.2.1, for="[fd00::5]:8080""#)]);
        assert_eq!(got.client_ip, ip("192.0.2.1"));
    }

    #[test]
    fn forwarded_parameter_names_are_case_insensitive_and_whitespace_tolerated() {
        let got = via_proxy(&[(
            "forwarded",
            r#"For=198.51.100.7 ; PROTO=HTTPS ; Host="hooks.example.com:8443""#,
        )]);
        assert_eq!(
            got,
            Via {
                client_ip: ip("198.51.100.7"),
                proto: Some("https"),
                host: Some("hooks.example.com:8443".into()),
            }
        );
    }

    #[test]
    fn forwarded_unknown_or_obfuscated_for_stops_the_walk_at_the_nearest_known_hop() {
        for node in [
            "unknown",
            "UNKNOWN",
            "_hidden",
            r#""_SEVKISEK:_4711""#,
            r#""_x.y-z:80""#,
        ] {
            let got = via_proxy(&[(
                "forwarded",
                &format!(
                    "for=6.6.6.6, for={node};proto=https;host=hooks.example.com, for=10.0.0.2"
                ),
            )]);
            assert_eq!(
                got,
                Via {
                    client_ip: ip("10.0.0.2"),
                    proto: Some("https"),
                    host: Some("hooks.example.com".into()),
                },
                "{node}"
            );
        }
        // An element without for= is as unknown as for=unknown; here the peer is the nearest.
        let got = via_proxy(&[("forwarded", "for=6.6.6.6, proto=https")]);
        assert_eq!(got.client_ip, ip("10.0.0.1"));
        assert_eq!(got.proto, Some("https"));
    }

    #[test]
    fn forwarded_all_trusted_hops_yield_the_leftmost() {
        let got = via_proxy(&[("forwarded", "for=10.9.9.9;proto=https, for=10.0.0.2")]);
        assert_eq!(got.client_ip, ip("10.9.9.9"));
        assert_eq!(got.proto, Some("https"));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_and_hops_are_never_mixed() {
        let got = via_proxy(&[
            ("x-forwarded-for", "203.0.113.50"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "xfh.example"),
            ("forwarded", "for=198.51.100.7"),
        ]);
        assert_eq!(
            got,
            Via {
                client_ip: ip("198.51.100.7"),
                proto: None,
                host: None,
            }
        );
        // A malformed Forwarded does not fall back to X-Forwarded-*: the peer, the connection.
        let got = via_proxy(&[
            ("x-forwarded-for", "203.0.113.50"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=198.51.100.7;proto"),
        ]);
        assert_eq!(got, direct(ip("10.0.0.1")));
    }

    #[test]
    fn x_forwarded_family_still_works_without_forwarded() {
        let got = via_proxy(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2"),
            ("x-forwarded-proto", "HTTPS, http"),
            ("x-forwarded-host", "hooks.example.com"),
        ]);
        assert_eq!(
            got,
            Via {
                client_ip: ip("198.51.100.7"),
                proto: Some("https"),
                host: Some("hooks.example.com".into()),
            }
        );
        let got = via_proxy(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(got.proto, None);
    }

    #[test]
    fn forwarded_syntax_accepted() {
        let e = fwd(r#" , for=192.0.2.60;proto=http;by=203.0.113.43, ,for="\"_a\"" ;ext="x,y;z""#);
        assert_eq!(
            e, None,
            r#"a quote inside an obfuscated node is not a node"#
        );
        let e = fwd(r#" , for=192.0.2.60;proto=http;by=203.0.113.43, ,for="_a" ;ext="x,y;z""#)
            .expect("valid");
        assert_eq!(
            e,
            vec![
                Element {
                    node: Some(Node::Ip(ip("192.0.2.60"))),
                    proto: Some("http".into()),
                    host: None,
                },
                Element {
                    node: Some(Node::Unknown),
                    proto: None,
                    host: None,
                },
            ]
        );
        let e = fwd(r#"host="a\"b";;proto=https"#).expect("valid");
        assert_eq!(e[0].host.as_deref(), Some("a\"b"));
        assert_eq!(fwd(" , ,").expect("valid"), vec![]);
    }

    #[test]
    fn forwarded_syntax_refused() {
        for bad in [
            "for",
            "for=",
            "=x",
            "for=1.2.3.4 x",
            "for=1.2.3.4;for=5.6.7.8",
            "proto=http;PROTO=https",
            "host=a;Host=b",
            "by=a;by=b",
            r#"for="1.2.3.4"#,
            r#"for="1.2.3.4\"#,
            "for=1.2.3.4:99999",
            "for=1.2.3.4:",
            "for=2001:db8::1",
            r#"for="[2001:db8::1"#,
            r#"for="[2001:db8::1]x""#,
            r#"for="[1.2.3.4]""#,
            "for=hostname",
            "for=_",
            "for=_a/b",
            "for=\"1.2.3.4\"x",
        ] {
            assert_eq!(fwd(bad), None, "{bad}");
        }
    }

    #[test]
    fn forwarded_is_bounded() {
        let many = vec!["for=192.0.2.1"; MAX_FORWARDED_ELEMENTS].join(",");
        assert_eq!(fwd(&many).map(|e| e.len()), Some(MAX_FORWARDED_ELEMENTS));
        let too_many = vec!["for=192.0.2.1"; MAX_FORWARDED_ELEMENTS + 1].join(",");
        assert_eq!(fwd(&too_many), None);
        let long = format!("ext=\"{}\"", "a".repeat(MAX_FORWARDED_BYTES));
        assert_eq!(fwd(&long), None);
        // Too large or too many: the peer, as for any malformed header.
        let got = via_proxy(&[("forwarded", &too_many)]);
        assert_eq!(got, direct(ip("10.0.0.1")));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn trusted_peer() -> SocketAddr {
            PROXY.parse().expect("addr")
        }

        proptest! {
            #[test]
            fn arbitrary_forwarded_bytes_never_panic(values in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..200), 1..4)
            ) {
                let mut m = HeaderMap::new();
                for v in &values {
                    if let Ok(v) = HeaderValue::from_bytes(v) {
                        m.append(http::header::FORWARDED, v);
                    }
                }
                let got = via(trusted_peer(), &m, &trusted());
                // A header that does not parse is not half-believed.
                if parse_forwarded(m.get_all(http::header::FORWARDED)).is_none() {
                    prop_assert_eq!(got, direct(trusted_peer().ip()));
                } else {
                    prop_assert!(matches!(got.proto, None | Some("http") | Some("https")));
                }
            }

            #[test]
            fn forwarded_shaped_input_never_panics(s in r#"((([Ff][Oo][Rr]|proto|host|by|x)=("?[\[\]_a-f0-9.:;,\\" ]{0,20}"?))[;, ]{0,2}){0,8}"#) {
                if let Ok(v) = HeaderValue::from_str(&s) {
                    let mut m = HeaderMap::new();
                    m.insert(http::header::FORWARDED, v);
                    let got = via(trusted_peer(), &m, &trusted());
                    if parse_forwarded(m.get_all(http::header::FORWARDED)).is_none() {
                        prop_assert_eq!(got, direct(trusted_peer().ip()));
                    }
                }
            }

            #[test]
            fn a_well_formed_element_round_trips(a in any::<[u8; 4]>(), port in proptest::option::of(any::<u16>()), v6 in any::<[u16; 8]>()) {
                let v4 = std::net::Ipv4Addr::from(a);
                let node = match port {
                    Some(p) => format!("\"{v4}:{p}\""),
                    None => v4.to_string(),
                };
                let e = fwd(&format!("for={node};proto=https")).expect("valid");
                prop_assert_eq!(e[0].node, Some(Node::Ip(IpAddr::V4(v4))));
                let v6 = std::net::Ipv6Addr::from(v6);
                let e = fwd(&format!("for=\"[{v6}]:{}\"", port.unwrap_or(1))).expect("valid");
                prop_assert_eq!(e[0].node, Some(Node::Ip(canonical(IpAddr::V6(v6)))));
            }
        }
    }
}
