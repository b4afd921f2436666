//! Durations on the command line: `250ms`, `1.5s`, `2m`, `1h`, or a bare number of seconds.

/// Parses a duration into whole milliseconds.
pub fn parse_duration_ms(raw: &str) -> Result<u64, String> {
    let s = raw.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (s.as_str(), 1_000.0)
    };
    let bad = || format!("invalid duration '{raw}' (use e.g. 250ms, 1.5s, 2m)");
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let ms = v * mult;
    if !ms.is_finite() || !(0.0..=1e15).contains(&ms) || ms.fract() != 0.0 {
        return Err(bad());
    }
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("2"), Ok(2000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1H"), Ok(3_600_000));
        assert!(parse_duration_ms("-1s").is_err());
        assert!(parse_duration_ms("0.0001s").is_err());
        assert!(parse_duration_ms("soon").is_err());
    }
}
