//! Formatting of timestamps in messages: RFC 3339, UTC, whole seconds.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// `2026-11-28T00:56:20Z`; falls back to the debug form for years RFC 3339 cannot show.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC).replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| format!("{t:?}"))
}

/// A duration as a human reads it: `364d 23h`, `2h 5m`, `45s`.
pub fn human_duration(d: time::Duration) -> String {
    let neg = d.is_negative();
    let secs = d.whole_seconds().unsigned_abs();
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let s = if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {}s", secs % 60)
    } else {
        format!("{secs}s")
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_utc_whole_seconds() {
        assert_eq!(rfc3339(datetime!(2026-11-28 00:56:20.5 UTC)), "2026-11-28T00:56:20Z");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(time::Duration::days(365)), "365d 0h");
        assert_eq!(human_duration(time::Duration::minutes(125)), "2h 5m");
        assert_eq!(human_duration(time::Duration::seconds(-45)), "-45s");
    }
}
