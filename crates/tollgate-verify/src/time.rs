//! Freshness. The caller passes "now" (unix seconds); nothing here reads a clock.

use crate::reject::Reject;

/// Default tolerance of a timestamp window, seconds.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Parses a decimal unix-seconds timestamp as the schemes send it (no sign, no spaces, at most 12
/// digits so absurd values cannot overflow the arithmetic below).
pub fn parse_unix(s: &str, header: &'static str) -> Result<i64, Reject> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reject::TimestampMalformed { header });
    }
    s.parse().map_err(|_| Reject::TimestampMalformed { header })
}

/// Accepts `signed_at` when it is within ±`tolerance_secs` of `now`.
pub fn check_window(signed_at: i64, now: i64, tolerance_secs: u64) -> Result<(), Reject> {
    let skew_secs = now.saturating_sub(signed_at);
    if skew_secs.unsigned_abs() > tolerance_secs {
        return Err(Reject::TimestampOutOfWindow {
            skew_secs,
            tolerance_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_inclusive_and_symmetric() {
        assert_eq!(check_window(1000, 1300, 300), Ok(()));
        assert_eq!(check_window(1600, 1300, 300), Ok(()));
        assert_eq!(
            check_window(999, 1300, 300),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check_window(1601, 1300, 300),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        assert!(check_window(i64::MIN, i64::MAX, 300).is_err());
    }

    #[test]
    fn parse_unix_refuses_non_digits_and_overlong() {
        assert_eq!(parse_unix("1700000000", "t"), Ok(1_700_000_000));
        for bad in ["", "-1", "+1", "1.5", " 1", "1234567890123", "0x10"] {
            assert_eq!(
                parse_unix(bad, "t"),
                Err(Reject::TimestampMalformed { header: "t" }),
                "{bad}"
            );
        }
    }
}
