//! One telemetry line through every line-level parser, with differentials:
//! - the JSON fast path (record_fast.rs) against the general serde parser (record.rs): whenever the
//!   fast path answers, both agree to the bit;
//! - `--format jsonl` against `--format log`/`auto`: the same outcome, except that text (and braces
//!   that do not parse) is a log line in one and a `not_json` skip in the other;
//! - a CSV header + row against the JSON object of the same cells as strings (the documented rule:
//!   CSV cells are read like JSON string values, blank cells are absent);
//! - the fast RFC 3339 reader against chrono and against `parse_timestamp_ms`.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use modekeeper::telemetry::fuzzing::{fast_and_general, utc_rfc3339_ms};
use modekeeper::telemetry::{Format, LineOutcome, LineParser, SkipReason, parse_timestamp_ms};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

/// docs/telemetry.md: ingest stays under 64 MiB whatever the input; one line must need far less.
const CAP: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    common::bounded(CAP, "telemetry line", || {
        fast_vs_general(data);
        jsonl_vs_log(data);
        csv_vs_json(data);
        timestamps(data);
    })
});

fn fast_vs_general(data: &[u8]) {
    if let Some((fast, general)) = fast_and_general(data) {
        let agree = match (&fast, &general) {
            (Ok(a), Ok(b)) => common::same_sample(a, b),
            _ => fast == general,
        };
        assert!(
            agree,
            "fast path {fast:?} != serde {general:?} for {:?}",
            String::from_utf8_lossy(data)
        );
    }
}

fn outcome_eq(a: &LineOutcome, b: &LineOutcome) -> bool {
    match (a, b) {
        (LineOutcome::Blank, LineOutcome::Blank) | (LineOutcome::Log, LineOutcome::Log) => true,
        (LineOutcome::Skip(x), LineOutcome::Skip(y)) => x == y,
        (LineOutcome::Record(x), LineOutcome::Record(y)) => common::same_sample(x, y),
        _ => false,
    }
}

fn jsonl_vs_log(data: &[u8]) {
    let strict = LineParser::new(Format::Jsonl).parse(data);
    let log = LineParser::new(Format::Log).parse(data);
    let auto = LineParser::new(Format::Auto).parse(data);
    assert!(outcome_eq(&log, &auto), "log {log:?} != auto {auto:?}");
    let fine = outcome_eq(&strict, &log)
        || matches!(
            (&strict, &log),
            (LineOutcome::Skip(SkipReason::NotJson), LineOutcome::Log)
        );
    assert!(
        fine,
        "jsonl {strict:?} vs log {log:?} for {:?}",
        String::from_utf8_lossy(data)
    );
}

/// The input's first line is the header, the second a row.
fn csv_vs_json(data: &[u8]) {
    let mut lines = data.splitn(3, |c| *c == b'\n');
    let (Some(header), Some(row)) = (lines.next(), lines.next()) else {
        return;
    };
    let mut p = LineParser::new(Format::Csv);
    if header.trim_ascii().is_empty() {
        return;
    }
    assert!(
        matches!(p.parse(header), LineOutcome::Blank),
        "a CSV header"
    );
    let got = p.parse(row);
    if row.trim_ascii().is_empty() {
        assert!(matches!(got, LineOutcome::Blank));
        return;
    }
    // The same cells, split by a real CSV reader (quotes, doubled quotes), as a JSON object.
    let (Some(names), Some(cells)) = (
        split_csv(header.trim_ascii_end()),
        split_csv(row.trim_ascii_end()),
    ) else {
        return;
    };
    // csv-core's cell bound (a longer row is `line_too_long`).
    if names.len() > 4000 || cells.len() > 4000 {
        return;
    }
    if names.len() != cells.len() {
        assert!(
            matches!(got, LineOutcome::Skip(SkipReason::CsvRowShape)),
            "{got:?}"
        );
        return;
    }
    let mut obj = String::from("{");
    for (name, cell) in names.iter().zip(&cells) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let key = name.trim().to_ascii_lowercase();
        if !modekeeper::telemetry::fuzzing::is_field_name(&key) {
            continue;
        }
        let Ok(cell) = std::str::from_utf8(cell) else {
            // A known field's cell that is not UTF-8 makes the whole row the wrong type.
            assert!(
                matches!(got, LineOutcome::Skip(SkipReason::WrongType)),
                "{got:?}"
            );
            return;
        };
        if cell.trim().is_empty() {
            continue;
        }
        if obj.len() > 1 {
            obj.push(',');
        }
        obj.push_str(&serde_json::to_string(&key).unwrap());
        obj.push(':');
        obj.push_str(&serde_json::to_string(cell).unwrap());
    }
    obj.push('}');
    let want = LineParser::new(Format::Jsonl).parse(obj.as_bytes());
    assert!(
        outcome_eq(&got, &want),
        "csv {got:?} != json {want:?} ({obj})"
    );
}

/// RFC 4180 cells of one line (csv-core's rules: `"` opens a quoted cell only at its start).
/// `None` for a line whose quotes are unbalanced (csv-core's recovery is not worth modelling).
fn split_csv(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut cells = vec![Vec::new()];
    let (mut quoted, mut at_start, mut i) = (false, true, 0);
    while i < line.len() {
        let c = line[i];
        let cell = cells.last_mut().unwrap();
        if quoted {
            if c == b'"' {
                if line.get(i + 1) == Some(&b'"') {
                    cell.push(b'"');
                    i += 1;
                } else {
                    quoted = false;
                }
            } else {
                cell.push(c);
            }
        } else if c == b'"' && at_start {
            quoted = true;
        } else if c == b'"' {
            return None;
        } else if c == b',' {
            cells.push(Vec::new());
            at_start = true;
            i += 1;
            continue;
        } else if c == b'\r' || c == b'\n' {
            return None;
        } else {
            cell.push(c);
        }
        at_start = false;
        i += 1;
    }
    (!quoted).then_some(cells)
}

fn timestamps(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_timestamp_ms(s);
    if let Some(ms) = utc_rfc3339_ms(data) {
        let chrono = chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis());
        assert_eq!(Some(ms), chrono, "fast RFC 3339 reader vs chrono for {s:?}");
        assert_eq!(
            parsed,
            Some(ms),
            "parse_timestamp_ms vs the fast reader for {s:?}"
        );
    }
    // Epoch numbers: non-negative and before year 10000 (timestamp.rs's documented range).
    let t = s.trim();
    if !t.is_empty()
        && t.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && let Some(ms) = parsed
    {
        assert!((0..253_402_300_800_000).contains(&ms), "{s:?} -> {ms}");
    }
}
