//! Stage 2b: the route's source allow list (empty = any source).

use std::net::IpAddr;

use tollgate_config::Route;

use crate::GatewayError;

/// `Err(IpNotAllowed)` when the route has an allow list without `ip`.
pub fn check(route: &Route, ip: IpAddr) -> Result<(), GatewayError> {
    if route.allow_ips.is_empty() || route.allow_ips.iter().any(|n| n.contains(&ip)) {
        Ok(())
    } else {
        Err(GatewayError::IpNotAllowed)
    }
}
