//! Failed-verification budget per client IP (governor). A client that spends its budget is
//! refused with 429 before its body is read or verified, so a flood of forgeries costs little.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Instant;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::GatewayError;

/// Cap on remembered blocked IPs; past it, expired entries are dropped first.
const MAX_BLOCKED: usize = 65_536;

/// Per-IP budget of failed verifications.
pub struct FailureLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl std::fmt::Debug for FailureLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLimiter").finish_non_exhaustive()
    }
}

impl FailureLimiter {
    /// `per_minute` failures allowed per IP (0 is treated as 1).
    pub fn new(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        FailureLimiter {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Stage: refuse an IP that is over budget.
    pub fn check(&self, ip: IpAddr) -> Result<(), GatewayError> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(&ip) {
            Some(until) if *until > Instant::now() => Err(GatewayError::RateLimited),
            Some(_) => {
                blocked.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records one failed verification; `Err(RateLimited)` when that exhausts the budget.
    pub fn record_failure(&self, ip: IpAddr) -> Result<(), GatewayError> {
        let Err(not_until) = self.limiter.check_key(&ip) else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.len() >= MAX_BLOCKED {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            self.limiter.retain_recent();
        }
        if blocked.len() < MAX_BLOCKED {
            blocked.insert(ip, Instant::now() + wait);
        }
        Err(GatewayError::RateLimited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_exhaustion_blocks_only_that_ip() {
        let l = FailureLimiter::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(l.record_failure(a).is_ok());
        assert!(l.record_failure(a).is_ok());
        assert!(matches!(
            l.record_failure(a),
            Err(GatewayError::RateLimited)
        ));
        assert!(matches!(l.check(a), Err(GatewayError::RateLimited)));
        assert!(l.check(b).is_ok());
    }
}
