//! Splits one physical line of JSONL or trainer stdout into "blank", "a JSON payload (with the timestamp
//! prefix `kubectl logs --timestamps` adds, if any)" or "ordinary text".

use super::timestamp::parse_timestamp_ms;

#[derive(Debug, PartialEq)]
pub enum LineKind<'a> {
    Blank,
    /// A JSON value that starts the line (after an optional timestamp prefix): a parse failure is a bad
    /// record.
    Json {
        payload: &'a [u8],
        prefix_ts_ms: Option<i64>,
    },
    /// A JSON object embedded after a log prefix (`INFO metrics {...}`): a parse failure means it was
    /// just text.
    Embedded {
        payload: &'a [u8],
        prefix_ts_ms: Option<i64>,
    },
    Text,
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// A leading RFC 3339 token such as `2026-11-23T01:02:03.123456789Z ` (what `--timestamps` prints).
pub(super) fn split_timestamp_prefix(b: &[u8]) -> Option<(i64, &[u8])> {
    if b.len() < 21 || !b[0].is_ascii_digit() || b[4] != b'-' || !(b[10] == b'T' || b[10] == b't') {
        return None;
    }
    let end = b.iter().position(|c| *c == b' ')?;
    let ts = parse_timestamp_ms(std::str::from_utf8(&b[..end]).ok()?)?;
    Some((ts, &b[end + 1..]))
}

pub fn classify(line: &[u8]) -> LineKind<'_> {
    let b = trim(line);
    if b.is_empty() {
        return LineKind::Blank;
    }
    if b[0] == b'{' {
        return LineKind::Json {
            payload: b,
            prefix_ts_ms: None,
        };
    }
    // `[1,2]` is JSON of the wrong shape, `[trainer] epoch 3` is a log line: let the parser decide.
    if b[0] == b'[' && b.last() == Some(&b']') {
        return LineKind::Embedded {
            payload: b,
            prefix_ts_ms: None,
        };
    }
    let (prefix_ts_ms, rest) = match split_timestamp_prefix(b) {
        Some((ts, rest)) => (Some(ts), trim(rest)),
        None => (None, b),
    };
    if rest.first() == Some(&b'{') {
        return LineKind::Json {
            payload: rest,
            prefix_ts_ms,
        };
    }
    if rest.last() == Some(&b'}')
        && let Some(start) = rest.iter().position(|c| *c == b'{')
    {
        return LineKind::Embedded {
            payload: &rest[start..],
            prefix_ts_ms,
        };
    }
    LineKind::Text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(classify(b"  \r\n"), LineKind::Blank);
        assert_eq!(
            classify(b"{\"a\":1}\r\n"),
            LineKind::Json {
                payload: b"{\"a\":1}",
                prefix_ts_ms: None
            }
        );
        assert_eq!(
            classify(b"2026-01-01T00:00:00.5Z {\"a\":1}"),
            LineKind::Json {
                payload: b"{\"a\":1}",
                prefix_ts_ms: Some(1_767_225_600_500)
            }
        );
        assert_eq!(
            classify(b"[trainer] metrics {\"a\":1}"),
            LineKind::Embedded {
                payload: b"{\"a\":1}",
                prefix_ts_ms: None
            }
        );
        assert_eq!(
            classify(b"[trainer] scenario=combo workers=4"),
            LineKind::Text
        );
        assert_eq!(
            classify(b"[1, 2]"),
            LineKind::Embedded {
                payload: b"[1, 2]",
                prefix_ts_ms: None
            }
        );
        assert_eq!(
            classify(b"2026-01-01T00:00:00Z epoch 3 done"),
            LineKind::Text
        );
    }
}
