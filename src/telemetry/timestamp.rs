//! Timestamp parsing: RFC 3339 (with `T`, `t` or a space, any fraction length, `Z` or an offset, or no
//! offset meaning UTC), epoch seconds or epoch milliseconds, as numbers or numeric strings.

use chrono::{DateTime, NaiveDateTime};

/// Numbers above this are epoch milliseconds, below it epoch seconds (1e11 s is the year 5138; 1e11 ms
/// is 1973), the same rule the reference implementation used.
const MS_THRESHOLD: f64 = 1e11;

/// Epoch milliseconds from a numeric timestamp, or `None` when it is not finite or out of range.
pub fn epoch_number_to_ms(v: f64) -> Option<i64> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let ms = if v > MS_THRESHOLD { v } else { v * 1000.0 };
    // Year 9999 in ms; anything beyond is garbage, not a timestamp.
    (ms < 253_402_300_800_000.0).then_some(ms as i64)
}

/// Parses a textual timestamp: a numeric string (epoch s/ms) or RFC 3339.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    if b.iter()
        .all(|c| c.is_ascii_digit() || *c == b'.' || *c == b'-' || *c == b'+')
        && !s[1..].contains(['-', '+'])
    {
        return s.parse::<f64>().ok().and_then(epoch_number_to_ms);
    }
    if b.len() < 19 || !b[0].is_ascii_digit() {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    // RFC 3339 without an offset ("2026-01-01 00:00:01", "2026-01-01T00:00:01.5"): UTC.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    // A space separator with an offset: "2026-01-01 00:00:01+01:00".
    if b[10] == b' ' {
        let mut t = s.to_owned();
        t.replace_range(10..11, "T");
        return DateTime::parse_from_rfc3339(&t)
            .ok()
            .map(|d| d.timestamp_millis());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        let base = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        assert_eq!(parse_timestamp_ms("2026-01-01T00:00:00Z"), Some(base));
        assert_eq!(
            parse_timestamp_ms("2026-01-01T00:00:00.123456789Z"),
            Some(base + 123)
        );
        assert_eq!(parse_timestamp_ms("2026-01-01 00:00:01"), Some(base + 1000));
        assert_eq!(
            parse_timestamp_ms("2026-01-01t00:00:01z"),
            Some(base + 1000)
        );
        assert_eq!(parse_timestamp_ms("1767225602.5"), Some(base + 2500));
        assert_eq!(parse_timestamp_ms("1767225603"), Some(base + 3000));
        assert_eq!(parse_timestamp_ms("1767225603000"), Some(base + 3000));
        assert_eq!(
            parse_timestamp_ms("2026-01-01T01:00:04+01:00"),
            Some(base + 4000)
        );
        assert_eq!(
            parse_timestamp_ms("2026-01-01 01:00:04+01:00"),
            Some(base + 4000)
        );
        assert_eq!(epoch_number_to_ms(1_767_225_603.0), Some(base + 3000));
        assert_eq!(epoch_number_to_ms(1_767_225_603_000.0), Some(base + 3000));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "garbage",
            "12:00",
            "2026-13-01T00:00:00Z",
            "-5",
            "1e400",
            "NaN",
        ] {
            assert_eq!(parse_timestamp_ms(s), None, "{s}");
        }
        assert_eq!(epoch_number_to_ms(f64::NAN), None);
        assert_eq!(epoch_number_to_ms(-1.0), None);
    }
}
