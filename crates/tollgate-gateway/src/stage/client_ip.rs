//! Stage 2: who is calling. The socket peer, unless the peer is a trusted proxy: then the
//! right-most X-Forwarded-For address that is not itself a trusted proxy (addresses further left
//! were written by the client and prove nothing).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// Whether `ip` is one of `trusted`.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&canonical(ip)))
}

/// The client IP.
pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if !is_trusted(peer_ip, trusted) {
        return peer_ip;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else { return peer_ip };
        for item in v.split(',') {
            match parse_hop(item.trim()) {
                Some(ip) => hops.push(ip),
                // An unparsable hop means we cannot tell who wrote what to its right; stop trusting.
                None => return peer_ip,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip, trusted))
        .unwrap_or(peer_ip)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", xff.parse().expect("header"));
        m
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
}
