//! Where the store reads "now". Expiry is decided from stored deadlines in unix milliseconds, so
//! backends take the time from an injected [`Clock`]: production uses [`SystemClock`], tests use
//! [`ManualClock`] and move time forward instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in unix milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the unix epoch.
    fn now_ms(&self) -> u64;
}

/// A clock shared by a store and whoever drives it.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock set before 1970 is a broken host; treating it as the epoch keeps deadlines
        // monotone in the stored value rather than panicking.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to. For tests of leases and TTLs.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            now_ms: AtomicU64::new(now_ms),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now_ms.fetch_add(duration_ms(by), Ordering::SeqCst);
    }

    /// Sets the clock to `now_ms`.
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// `d` in whole milliseconds, saturating: a lease of "forever" must not wrap into the past.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The deadline `d` after `now_ms`, saturating.
pub(crate) fn deadline(now_ms: u64, d: Duration) -> u64 {
    now_ms.saturating_add(duration_ms(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        clock.set(5);
        assert_eq!(clock.now_ms(), 5);
    }

    #[test]
    fn deadlines_saturate_instead_of_wrapping() {
        assert_eq!(deadline(u64::MAX - 1, Duration::from_secs(10)), u64::MAX);
        assert_eq!(deadline(10, Duration::MAX), u64::MAX);
        assert_eq!(deadline(10, Duration::from_millis(5)), 15);
    }

    #[test]
    fn system_clock_is_after_2020() {
        // 2020-01-01 in unix ms: catches a seconds/milliseconds mix-up.
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
