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
    if let Some(ms) = utc_rfc3339_ms(b) {
        return Some(ms);
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

/// The form trainers and `kubectl logs --timestamps` write, `2026-01-01T00:00:00.123456Z`, read
/// without chrono's general parser (a fifth of the parse time of a typical line). `None` for any other
/// form; chrono then decides. Agrees with chrono to the millisecond (the tests compare them).
pub(super) fn utc_rfc3339_ms(b: &[u8]) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b.get(r)?.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac_ms = 0;
    if sep(i, b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        // Milliseconds, truncated like chrono's `timestamp_millis`.
        let ms_digits = digits.min(3);
        frac_ms = num(i + 1..i + 1 + ms_digits)? * 10i64.pow(3 - ms_digits as u32);
        i += 1 + digits;
    }
    if !(i + 1 == b.len() && (b[i] == b'Z' || b[i] == b'z')) {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return None;
    }
    // Leap seconds (:60) are left to chrono.
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + frac_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_utc_form_agrees_with_chrono() {
        let mut next = crate::telemetry::xorshift(0x853c_49e6_748f_ea9b);
        let mut taken = 0;
        for n in 0..100_000 {
            let r = next();
            let frac = match r % 5 {
                0 => String::new(),
                k => {
                    let width = [1, 3, 6, 9][k as usize - 1];
                    format!(".{:0width$}", next() % 10u64.pow(width as u32))
                }
            };
            // Mostly valid dates across four centuries (leap years included), some invalid ones.
            let s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{}",
                1900 + next() % 500,
                1 + next() % if n % 10 == 0 { 13 } else { 12 },
                1 + next() % if n % 10 == 1 { 32 } else { 29 + next() % 3 },
                next() % 24,
                next() % 60,
                next() % if n % 50 == 0 { 61 } else { 60 },
                if r.is_multiple_of(3) { "z" } else { "Z" },
            );
            let chrono = DateTime::parse_from_rfc3339(&s)
                .ok()
                .map(|d| d.timestamp_millis());
            match utc_rfc3339_ms(s.as_bytes()) {
                Some(ms) => {
                    taken += 1;
                    assert_eq!(Some(ms), chrono, "{s}");
                }
                None => assert!(chrono.is_none() || s.contains(":60"), "{s}"),
            }
        }
        assert!(taken > 90_000, "{taken}");
        for s in [
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1234567890Z",
            "2026-01-01T00:00:00+01:00",
            "2026-01-01 00:00:00Z",
            "2026-1-01T00:00:00Z",
            "2026-01-01T00:00:00Zx",
        ] {
            assert_eq!(utc_rfc3339_ms(s.as_bytes()), None, "{s}");
        }
    }

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
