//! The numeric bounds of every lifetime and ratio meshca takes, checked in one place. The CLI's
//! flags, the policy's fields, the Python binding and the CRD schema all use these, so a value
//! accepted by one is accepted by all. The caller names the field: `format!("{field} {e}")`.

use time::Duration;

/// CA lifetimes in days (`--days`, `ttlDays`, `ttl_days=`): 1 to 36500 (100 years), so date
/// arithmetic can never overflow.
pub const CA_TTL_DAYS: (i64, i64) = (1, 36_500);

/// Workload certificate lifetimes in hours: 1 to 2160 (istiod's 90-day maximum).
pub const LEAF_TTL_HOURS: (i64, i64) = (1, 2_160);

/// A root rotation's dwell between steps, in hours: 0 to 8760 (a year).
pub const DWELL_HOURS: (i64, i64) = (0, 8_760);

/// A value outside its bounds. Displays as `must be ...`, for the caller to put after the
/// field's name.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OutOfRange {
    /// An integer outside `lo..=hi`.
    #[error("must be between {lo} and {hi}, got {got}")]
    Integer {
        /// Lowest allowed.
        lo: i64,
        /// Highest allowed.
        hi: i64,
        /// Given.
        got: i64,
    },
    /// A ratio not strictly between 0 and 1.
    #[error("must be in (0,1), got {got}")]
    Ratio {
        /// Given.
        got: f64,
    },
}

fn within((lo, hi): (i64, i64), got: i64) -> Result<i64, OutOfRange> {
    if (lo..=hi).contains(&got) {
        Ok(got)
    } else {
        Err(OutOfRange::Integer { lo, hi, got })
    }
}

/// A CA lifetime of `days` days, within [`CA_TTL_DAYS`].
pub fn ca_ttl_days(days: i64) -> Result<Duration, OutOfRange> {
    within(CA_TTL_DAYS, days).map(Duration::days)
}

/// A workload certificate lifetime of `hours` hours, within [`LEAF_TTL_HOURS`].
pub fn leaf_ttl_hours(hours: i64) -> Result<Duration, OutOfRange> {
    within(LEAF_TTL_HOURS, hours).map(Duration::hours)
}

/// A dwell of `hours` hours, within [`DWELL_HOURS`].
pub fn dwell_hours(hours: i64) -> Result<Duration, OutOfRange> {
    within(DWELL_HOURS, hours).map(Duration::hours)
}

/// A rotation grace ratio (`secretRotationGracePeriodRatio`), strictly between 0 and 1.
pub fn grace_ratio(ratio: f64) -> Result<f64, OutOfRange> {
    if ratio > 0.0 && ratio < 1.0 {
        Ok(ratio)
    } else {
        Err(OutOfRange::Ratio { got: ratio })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_for_integers_and_exclusive_for_the_ratio() {
        assert!(ca_ttl_days(1).is_ok() && ca_ttl_days(36_500).is_ok());
        assert_eq!(ca_ttl_days(0).unwrap_err().to_string(), "must be between 1 and 36500, got 0");
        assert!(ca_ttl_days(i64::MAX).is_err() && ca_ttl_days(i64::MIN).is_err());
        assert!(leaf_ttl_hours(2160).is_ok() && leaf_ttl_hours(2161).is_err());
        assert!(dwell_hours(0).is_ok() && dwell_hours(-1).is_err());
        assert!(grace_ratio(0.5).is_ok());
        for bad in [0.0, 1.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(grace_ratio(bad).is_err(), "{bad}");
        }
        assert_eq!(grace_ratio(1.5).unwrap_err().to_string(), "must be in (0,1), got 1.5");
    }
}
