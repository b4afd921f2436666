//! Small formatting helpers for terminal summaries and reports (pure; the CLI and the report share them).

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in milliseconds as `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// An offset from the start of the run as `+MM:SS` or `+H:MM:SS`.
pub fn offset_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("+{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("+{:02}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(245_000), "4m 05s");
        assert_eq!(offset_ms(38_500), "+00:38");
        assert_eq!(offset_ms(3_725_000), "+1:02:05");
    }
}
