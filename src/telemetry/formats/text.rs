//! Byte-level helpers shared by the text readers: ANSI stripping, log prefixes (timestamps, ranks),
//! and numbers found after a key. No allocation unless a line carries ANSI codes.

use std::borrow::Cow;

use memchr::memmem::{self, Finder};

use super::super::timestamp::parse_timestamp_ms;

/// Removes ANSI escape sequences (`ESC [ … final-byte`); borrows when there are none.
pub fn strip_ansi(line: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(0x1b, line).is_none() {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] != 0x1b {
            out.push(line[i]);
            i += 1;
            continue;
        }
        i += 1;
        if line.get(i) == Some(&b'[') {
            i += 1;
            while i < line.len() && !(0x40..=0x7e).contains(&line[i]) {
                i += 1;
            }
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// A substring searcher for a literal, built once per call site: `memmem::find` builds one per call,
/// which cost more than the search itself on short trainer lines (most of the time spent on a line
/// that is no telemetry at all).
macro_rules! key {
    ($lit:literal) => {{
        static KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new($lit));
        &*KEY
    }};
}
pub(super) use key;

pub fn find(hay: &[u8], key: &Finder<'_>) -> Option<usize> {
    key.find(hay)
}

pub fn contains(hay: &[u8], key: &Finder<'_>) -> bool {
    key.find(hay).is_some()
}

/// For needles that are not literals (few lines, short haystacks).
pub fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memmem::find(hay, needle)
}

/// A number at the start of `b` after separators (spaces, `:`, `=`): its value and the index just past
/// it. `nan`/`inf` are read (a diverged loss prints as `nan`); `5,123` is five thousand one hundred
/// twenty-three (torchtitan), while `4.2, time` stops at the comma.
pub fn number_at(b: &[u8]) -> Option<(f64, usize)> {
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b':' | b'=') {
        i += 1;
    }
    let start = i;
    if matches!(b.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let rest = &b[i..];
    if rest.len() >= 3 {
        let word = &rest[..3];
        let v = if word.eq_ignore_ascii_case(b"nan") {
            Some(f64::NAN)
        } else if word.eq_ignore_ascii_case(b"inf") {
            Some(f64::INFINITY)
        } else {
            None
        };
        if let Some(v) = v {
            let mut end = i + 3;
            if rest.len() >= 8 && rest[..8].eq_ignore_ascii_case(b"infinity") {
                end = i + 8;
            }
            let v = if b[start] == b'-' { -v } else { v };
            return Some((v, end));
        }
    }
    let mut buf = [0u8; 48];
    let mut n = 0;
    if i > start {
        buf[0] = b[start];
        n = 1;
    }
    let mut digits = 0;
    let mut seen_dot = false;
    let mut seen_exp = false;
    while i < b.len() && n < buf.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            digits += 1;
        } else if c == b',' && !seen_dot && !seen_exp && digits > 0 {
            // A thousands separator only when exactly three digits follow.
            let next = &b[i + 1..];
            let three = next.len() >= 3 && next[..3].iter().all(u8::is_ascii_digit);
            if three && !next.get(3).is_some_and(u8::is_ascii_digit) {
                i += 1;
                continue;
            }
            break;
        } else if c == b'.' && !seen_dot && !seen_exp {
            seen_dot = true;
        } else if (c == b'e' || c == b'E') && digits > 0 && !seen_exp {
            let sign = matches!(b.get(i + 1), Some(b'+' | b'-'));
            if !b.get(i + 1 + sign as usize).is_some_and(u8::is_ascii_digit) {
                break;
            }
            seen_exp = true;
            buf[n] = c;
            n += 1;
            i += 1;
            if sign {
                buf[n] = b[i];
                n += 1;
                i += 1;
            }
            continue;
        } else {
            break;
        }
        buf[n] = c;
        n += 1;
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    let v = match exact_decimal(&buf[..n]) {
        Some(v) => v,
        None => std::str::from_utf8(&buf[..n]).ok()?.parse::<f64>().ok()?,
    };
    Some((v, i))
}

/// `[-+]digits[.digits]` with at most 15 significant digits, exactly as `str::parse` reads it: an
/// integer mantissa below 2^53 divided by a power of ten up to 10^22 is one correctly rounded
/// operation (both operands are exact). Anything else (exponents, long mantissas) takes the general
/// parser. Trainer lines are mostly such numbers, and the general parser was a tenth of a line's cost.
fn exact_decimal(b: &[u8]) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.len() > 16 {
        return None;
    }
    let (mut m, mut frac, mut dot, mut n) = (0u64, 0usize, false, 0usize);
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                m = m * 10 + u64::from(c - b'0');
                n += 1;
                frac += usize::from(dot);
            }
            b'.' if !dot => dot = true,
            _ => return None,
        }
    }
    if n == 0 || n > 15 {
        return None;
    }
    let v = m as f64 / POW10[frac];
    Some(if neg { -v } else { v })
}

/// The number right after the first occurrence of `key`.
pub fn num_after(hay: &[u8], key: &Finder<'_>) -> Option<f64> {
    let at = find(hay, key)? + key.needle().len();
    number_at(&hay[at..]).map(|(v, _)| v)
}

/// The number right after `key`, and what follows it (for a unit suffix).
pub fn num_unit_after<'a>(hay: &'a [u8], key: &Finder<'_>) -> Option<(f64, &'a [u8])> {
    let at = find(hay, key)? + key.needle().len();
    let (v, end) = number_at(&hay[at..])?;
    Some((v, &hay[at + end..]))
}

/// A non-negative integer that fits a u64.
pub fn as_step(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= (1u64 << 53) as f64).then_some(v as u64)
}

/// What a line's prefix said: when and which rank.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Prefix {
    pub ts_ms: Option<i64>,
    pub rank: Option<u32>,
}

/// Strips the prefixes launchers and loggers put before a trainer's own text, in any order:
/// `kubectl logs --timestamps` (`2026-01-01T00:00:00Z `), a bracketed time (`[2024-10-24 21:02:46]`),
/// srun's rank (`3: `), DeepSpeed's `[Rank 0] ` and torchtitan's `[rank0]:`.
pub fn strip_prefixes(mut b: &[u8]) -> (Prefix, &[u8]) {
    let mut p = Prefix::default();
    for _ in 0..6 {
        b = b.trim_ascii_start();
        if let Some((ts, rest)) = super::super::line::split_timestamp_prefix(b) {
            p.ts_ms.get_or_insert(ts);
            b = rest;
            continue;
        }
        if b.first() == Some(&b'[') {
            if let Some(end) = memchr::memchr(b']', b) {
                let inner = &b[1..end];
                if let Some(r) = rank_word(inner) {
                    p.rank.get_or_insert(r);
                    b = &b[end + 1..];
                    b = b.strip_prefix(b":").unwrap_or(b);
                    continue;
                }
                if inner.len() >= 19
                    && inner[0].is_ascii_digit()
                    && inner[4] == b'-'
                    && let Some(ts) = bracket_time_ms(inner)
                {
                    p.ts_ms.get_or_insert(ts);
                    b = &b[end + 1..];
                    continue;
                }
                // A logger's tag (`[INFO]`, `[logging.py:60:log_dist]`, `[titan]`).
                if b.get(end + 1) == Some(&b' ') && !inner.contains(&b' ') && !inner.is_empty() {
                    b = &b[end + 1..];
                    continue;
                }
            }
            break;
        }
        // srun --label: `3: `.
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0
            && digits <= 6
            && b.get(digits) == Some(&b':')
            && b.get(digits + 1) == Some(&b' ')
        {
            if let Some(r) = std::str::from_utf8(&b[..digits])
                .ok()
                .and_then(|s| s.parse().ok())
            {
                p.rank.get_or_insert(r);
            }
            b = &b[digits + 2..];
            continue;
        }
        break;
    }
    (p, b.trim_ascii_start())
}

/// `2024-10-24 21:02:46`, optionally with `,123` or `.123` (Python logging), as UTC; read by hand on
/// the common shape (it is on every line of such logs), by the general parser otherwise.
fn bracket_time_ms(b: &[u8]) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = b.get(r)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
    };
    let fixed = b.len() >= 19
        && b[7] == b'-'
        && (b[10] == b' ' || b[10] == b'T')
        && b[13] == b':'
        && b[16] == b':';
    let frac_ok = b.len() == 19 || (b.len() == 23 && matches!(b[19], b',' | b'.'));
    if fixed && frac_ok {
        let ms = if b.len() == 23 { num(20..23)? } else { 0 };
        let dt = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?
            .and_hms_milli_opt(num(11..13)?, num(14..16)?, num(17..19)?, ms)?;
        return Some(dt.and_utc().timestamp_millis());
    }
    let s = std::str::from_utf8(b).ok()?;
    parse_timestamp_ms(&s.replace(',', "."))
}

/// `Rank 0`, `rank0`, `RANK 3`.
fn rank_word(inner: &[u8]) -> Option<u32> {
    if inner.len() < 5 || !inner[..4].eq_ignore_ascii_case(b"rank") {
        return None;
    }
    let n = inner[4..].trim_ascii();
    if n.is_empty() || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(n).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_decimal_path_reads_as_the_general_parser_does() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let int = x % 10u64.pow((x >> 60) as u32 % 12);
            let frac_digits = (x >> 40) as usize % 8;
            let text = if frac_digits == 0 {
                format!("{int}")
            } else {
                format!(
                    "{int}.{:0w$}",
                    (x >> 8) % 10u64.pow(frac_digits as u32),
                    w = frac_digits
                )
            };
            for t in [text.clone(), format!("-{text}")] {
                let want: f64 = t.parse().unwrap();
                if let Some(got) = exact_decimal(t.as_bytes()) {
                    assert_eq!(got.to_bits(), want.to_bits(), "{t}");
                }
                assert_eq!(
                    number_at(t.as_bytes()).map(|(v, _)| v.to_bits()),
                    Some(want.to_bits()),
                    "{t}"
                );
            }
        }
        for t in [
            "0.1",
            "812.50",
            "4.2345",
            "1234567.891",
            "0.000001",
            "-0.0",
            "7.",
        ] {
            assert_eq!(
                exact_decimal(t.as_bytes()).map(f64::to_bits),
                Some(t.parse::<f64>().unwrap().to_bits()),
                "{t}"
            );
        }
        assert_eq!(exact_decimal(b"1234567890123456"), None);
        assert_eq!(exact_decimal(b"1e5"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(number_at(b": 1.244238E+01 |"), Some((12.44238, 14)));
        assert_eq!(number_at(b" 4.2345, time"), Some((4.2345, 7)));
        assert_eq!(number_at(b"  5,123  tflops"), Some((5123.0, 7)));
        assert_eq!(number_at(b"=100, skipped"), Some((100.0, 4)));
        assert!(number_at(b" nan,").unwrap().0.is_nan());
        assert_eq!(number_at(b"-inf"), Some((f64::NEG_INFINITY, 4)));
        assert_eq!(number_at(b"123.45ms"), Some((123.45, 6)));
        assert_eq!(number_at(b"2e"), Some((2.0, 1)));
        assert_eq!(number_at(b" x1"), None);
        assert_eq!(
            num_after(b"a | lm loss 2.2E-03 |", key!(b"lm loss")),
            Some(0.0022)
        );
    }

    #[test]
    fn prefixes() {
        let (p, rest) = strip_prefixes(b"[2024-10-24 21:02:46] 3:  iteration 1/");
        assert_eq!(p.ts_ms, Some(1_729_803_766_000));
        assert_eq!(p.rank, Some(3));
        assert_eq!(rest, b"iteration 1/");
        let (p, rest) = strip_prefixes(b"[Rank 7] step=1");
        assert_eq!((p.rank, rest), (Some(7), &b"step=1"[..]));
        let (p, rest) = strip_prefixes(b"[rank0]:[titan] step: 1");
        assert_eq!((p.rank, rest), (Some(0), &b"step: 1"[..]));
        let (p, rest) = strip_prefixes(
            b"[2021-06-10 20:47:51,885] [INFO] [logging.py:60:log_dist] [Rank 0] step=0, skipped=0",
        );
        assert_eq!((p.rank, rest), (Some(0), &b"step=0, skipped=0"[..]));
        assert_eq!(p.ts_ms, Some(1_623_358_071_885));
        for (text, want) in [
            ("2024-10-24 21:02:46", Some(1_729_803_766_000)),
            ("2024-10-24T21:02:46.5", Some(1_729_803_766_500)),
            ("2024-10-24 21:02:46+01:00", Some(1_729_800_166_000)),
            ("2024-13-24 21:02:46", None),
        ] {
            assert_eq!(bracket_time_ms(text.as_bytes()), want, "{text}");
        }
        let (p, _) = strip_prefixes(b"2026-01-01T00:00:00.5Z iter 1: loss 2");
        assert_eq!(p.ts_ms, Some(1_767_225_600_500));
        assert_eq!(strip_ansi(b"\x1b[31mstep: 1\x1b[39m").as_ref(), b"step: 1");
    }
}
