//! The fast path for the common telemetry line: one flat JSON object whose keys and strings are
//! plain (no escapes) and whose values are numbers, strings, `null` or lists of numbers.
//!
//! It answers only for lines it reads exactly as the general serde parser in `record.rs` does, and
//! gives up (`None`) on anything else: escapes, nested objects, booleans, negative or very long
//! numbers, malformed JSON. The general parser then decides, so every error is still classified in
//! one place. The values go through the same `RecordBuilder` setters, so aliases, first-wins and range
//! checks cannot drift apart. Numbers are built the way serde_json builds them (an exact integer
//! significand times or divided by an exact power of ten), so the floats are bit-identical; the tests
//! compare both paths.

use super::field::{Field, Num, ValueError, parse_list_text, parse_number_text};
use super::record::{NodeName, RecordBuilder, TrainerEvent, WorkerLatencies};
use super::stats::SkipReason;
use super::timestamp::{epoch_number_to_ms, parse_timestamp_ms, utc_rfc3339_ms};

/// Powers of ten that are exact in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Largest significand an f64 holds exactly.
const MAX_EXACT: u64 = 1 << 53;

/// Lists longer than this go to the general parser (it caps its own preallocation).
const MAX_LIST: usize = 256;

enum Value<'a> {
    /// A number as serde_json hands it over: integers exactly, the rest as f64.
    Num(Num),
    Str(Text<'a>),
    Null,
    List(WorkerLatencies),
}

/// A string's bytes between the quotes: no escapes, no control characters.
#[derive(Clone, Copy)]
struct Text<'a> {
    bytes: &'a [u8],
    ascii: bool,
}

impl<'a> Text<'a> {
    /// `None` when it is not UTF-8 (serde_json rejects the line).
    fn str(self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes).ok()
    }

    fn is_utf8(self) -> bool {
        self.ascii || self.str().is_some()
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    /// JSON whitespace only (not form feed or vertical tab, which serde_json rejects).
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.bump()? == c).then_some(())
    }

    /// A string without escapes or control characters; the opening quote is next. One pass: these
    /// strings are short, and most are keys.
    fn string(&mut self) -> Option<Text<'a>> {
        self.expect(b'"')?;
        let start = self.i;
        let mut high = 0u8;
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => high |= c,
            }
        }
        Some(Text {
            bytes: &self.b[start..self.i - 1],
            ascii: high < 0x80,
        })
    }

    fn digits(&mut self) -> (u64, usize) {
        let (mut v, mut n) = (0u64, 0usize);
        while let Some(c @ b'0'..=b'9') = self.peek() {
            // 19 digits always fit a u64; more go to the general parser.
            v = v.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            n += 1;
            self.i += 1;
        }
        (v, n)
    }

    /// A non-negative JSON number; `None` for anything the exact construction does not cover.
    fn number(&mut self) -> Option<Num> {
        let first = self.peek()?;
        let (int, int_digits) = self.digits();
        if int_digits == 0 || (first == b'0' && int_digits > 1) || int_digits > 19 {
            return None;
        }
        let (mut sig, mut digits, mut exp) = (int, int_digits, 0i32);
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            let start = self.i;
            while let Some(c @ b'0'..=b'9') = self.peek() {
                sig = sig.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                self.i += 1;
            }
            let frac = self.i - start;
            if frac == 0 {
                return None;
            }
            digits += frac;
            exp -= frac as i32;
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            let neg = match self.peek() {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let (e, n) = self.digits();
            if n == 0 || n > 3 {
                return None;
            }
            exp += if neg { -(e as i32) } else { e as i32 };
            integer = false;
        }
        if integer {
            return Some(Num::int(sig));
        }
        if digits > 19 || sig > MAX_EXACT {
            return None;
        }
        let pow = *POW10.get(exp.unsigned_abs() as usize)?;
        let f = sig as f64;
        Some(Num::float(if exp >= 0 { f * pow } else { f / pow }))
    }

    fn list(&mut self) -> Option<WorkerLatencies> {
        self.expect(b'[')?;
        let mut out = WorkerLatencies::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Some(out);
        }
        loop {
            self.ws();
            out.push(self.number()?.value);
            if out.len() > MAX_LIST {
                return None;
            }
            self.ws();
            match self.bump()? {
                b',' => {}
                b']' => return Some(out),
                _ => return None,
            }
        }
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Value::Str),
            b'[' => self.list().map(Value::List),
            b'n' => {
                let rest = self.b.get(self.i..self.i + 4)?;
                self.i += 4;
                (rest == b"null").then_some(Value::Null)
            }
            b'0'..=b'9' => self.number().map(Value::Num),
            _ => None,
        }
    }
}

/// Reads `payload` (already trimmed, starting with `{`) when it has the common flat shape.
pub(super) fn parse_flat_object(payload: &[u8]) -> Option<RecordBuilder<'_>> {
    let mut c = Cursor { b: payload, i: 0 };
    let mut rec = RecordBuilder::default();
    c.expect(b'{')?;
    c.ws();
    if c.peek() == Some(b'}') {
        c.i += 1;
    } else {
        loop {
            c.ws();
            let key = c.string()?;
            c.ws();
            c.expect(b':')?;
            c.ws();
            let value = c.value()?;
            match Field::from_name_bytes(key.bytes) {
                _ if !key.is_utf8() => return None,
                Some(field) => put(&mut rec, field, value)?,
                None if matches!(value, Value::Str(t) if !t.is_utf8()) => return None,
                None => {}
            }
            c.ws();
            match c.bump()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.ws();
    (c.i == payload.len()).then_some(rec)
}

/// What the general parser's value visitors do for each field and value kind. `None` leaves the
/// rare combinations (a numeric node name) to the general parser.
fn put<'a>(rec: &mut RecordBuilder<'a>, field: Field, value: Value<'a>) -> Option<()> {
    match field {
        Field::Ts => rec.put_ts(match value {
            Value::Num(n) => epoch_number_to_ms(n.value)
                .map(Some)
                .ok_or(SkipReason::BadTimestamp),
            Value::Str(t) if !t.is_utf8() => return None,
            Value::Str(t) => utc_rfc3339_ms(t.bytes)
                .or_else(|| parse_timestamp_ms(t.str()?))
                .map(Some)
                .ok_or(SkipReason::BadTimestamp),
            Value::Null => Ok(None),
            Value::List(_) => Err(SkipReason::BadTimestamp),
        }),
        Field::WorkerLatenciesMs => rec.put_workers(match value {
            Value::List(l) => Ok(Some(l)),
            Value::Str(t) => parse_list_text(t.str()?).map(Some),
            Value::Null => Ok(None),
            Value::Num(..) => Err(ValueError::WrongType),
        }),
        Field::Node => rec.put_node(match value {
            Value::Str(t) => Ok(Some(NodeName::Borrowed(t.str()?))),
            Value::Null => Ok(None),
            Value::Num(Num { int: None, .. }) | Value::List(_) => Err(ValueError::WrongType),
            Value::Num(Num { int: Some(_), .. }) => return None,
        }),
        Field::Event => rec.put_event(match value {
            Value::Str(t) => TrainerEvent::from_name(t.str()?),
            _ => None,
        }),
        _ => rec.put_num(
            field,
            match value {
                Value::Num(n) => Ok(Some(n)),
                Value::Str(t) => match t.str()? {
                    s if s.trim().is_empty() => Ok(None),
                    s => parse_number_text(s).map(Some),
                },
                Value::Null => Ok(None),
                Value::List(_) => Err(ValueError::WrongType),
            },
        ),
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::telemetry::record::{Sample, parse_json_object_general};

    fn finish(b: Result<RecordBuilder<'_>, SkipReason>) -> Result<Sample, SkipReason> {
        b.and_then(|b| b.finish(&mut |n| Arc::from(n)))
    }

    /// Whenever the fast path answers, it answers like the general parser, to the bit.
    fn same(line: &[u8]) -> bool {
        let Some(fast) = parse_flat_object(line) else {
            return false;
        };
        let fast = finish(Ok(fast));
        let general = finish(parse_json_object_general(line));
        match (&fast, &general) {
            (Ok(a), Ok(b)) => {
                let bits = |s: &Sample| {
                    [
                        Some(s.step_time_ms),
                        s.loss,
                        s.data_wait_ms,
                        s.gpu_util_pct,
                        s.gpu_mem_util_pct,
                        s.comm_ms,
                    ]
                    .map(|x| x.map(f64::to_bits))
                };
                assert_eq!(a, b, "{}", String::from_utf8_lossy(line));
                assert_eq!(bits(a), bits(b), "{}", String::from_utf8_lossy(line));
                let wa: Vec<u64> = a.worker_latencies_ms.iter().map(|x| x.to_bits()).collect();
                let wb: Vec<u64> = b.worker_latencies_ms.iter().map(|x| x.to_bits()).collect();
                assert_eq!(wa, wb);
            }
            _ => assert_eq!(fast, general, "{}", String::from_utf8_lossy(line)),
        }
        true
    }

    #[test]
    fn takes_the_common_lines_and_reads_them_like_serde() {
        for line in [
            r#"{"ts": "2026-01-01T00:00:00.028319Z", "step": 1, "step_time_ms": 28.319, "data_wait_ms": 0.368, "loss": 9.28906, "worker_latencies_ms": [7.525, 7.775, 7.723, 8.236], "gpu_util_pct": 85.9, "node": "gpu-node-0"}"#,
            r#"{"ts": 1795347992159, "step": 1, "step_time_ms": 572.678, "throughput": 21457.1, "worker_latencies_ms": [8.097, 0.0, 0.0, 0.0], "seq_len": 512, "node": "gpu-node-0", "gpu_model": "H100", "gpu_util_pct": 14.0}"#,
            r#"{}"#,
            r#"{ "step_time_ms" : 1e2 , "loss":null,"rank":3,"worker_latencies_ms":[]}"#,
            r#"{"step_time_ms":1,"step":1.5}"#,
            r#"{"step_time_ms":"12.5ms","gpu_util":"95%","step":"7"}"#,
            r#"{"step_time_ms":1,"gpu_util_pct":250}"#,
            r#"{"step_time_ms":1,"ts":"garbage"}"#,
            r#"{"step_time_ms":1,"ts":1.5e9,"timestamp":"x"}"#,
            r#"{"step_time_ms":10,"latency_ms":99}"#,
            r#"{"step_time_ms":1,"node":"  "}"#,
            r#"{"step_time_ms":1,"node":"nœud-1"}"#,
            r#"{"step_time_ms":1,"worker_latencies_ms":"1;2"}"#,
            r#"{"step_time_ms":1,"worker_latencies_ms":5}"#,
            r#"{"step_time_ms":[1]}"#,
            r#"{"ts":1,"step":1}"#,
            r#"{"step_time_ms":1844674407370955161,"step":9999999999999999999}"#,
            r#"{"step_time_ms":9007199254740.992e-5,"loss":0.000001}"#,
            r#"{"step_time_ms":1,"loss":"nan","event":"checkpoint","tokens_per_s":9.5,"global_batch_size":8,"seq_len":512}"#,
            r#"{"step_time_ms":1,"event":7,"trainer_event":"eval","samples_per_s":"3"}"#,
            r#"{"step_time_ms":1,"event":null,"gbs":1.5}"#,
        ] {
            assert!(same(line.as_bytes()), "{line}");
        }
    }

    #[test]
    fn leaves_everything_else_to_the_general_parser() {
        for line in [
            r#"{"step_time_ms":1,"extra":{"a":1}}"#,
            r#"{"step_time_ms":1,"ok":true}"#,
            r#"{"step_time_ms":-1}"#,
            r#"{"step_time_ms":01}"#,
            r#"{"step_time_ms":1.}"#,
            r#"{"step_time_ms":1e}"#,
            r#"{"step_time_ms":1e400}"#,
            r#"{"step_time_ms":NaN}"#,
            r#"{"node":"a\"b","step_time_ms":1}"#,
            r#"{"node":1,"step_time_ms":1}"#,
            r#"{"step_time_ms":1,"worker_latencies_ms":[1,"x"]}"#,
            r#"{"step_time_ms":1"#,
            r#"{"step_time_ms":1} trailing"#,
            r#"{"step_time_ms":1,}"#,
            r#"{"step_time_ms":1 "loss":2}"#,
            "{\"step_time_ms\":1,\"node\":\"a\tb\"}",
            "{\"step_time_ms\":1}\x0c",
            r#"{"step_time_ms":12345678901234567890.5}"#,
            r#"{"step_time_ms":nul}"#,
            r#"{"step_time_ms":-0.0}"#,
            r#"{"step_time_ms":18446744073709551615}"#,
            r#"{"step_time_ms":0.30000000000000004}"#,
        ] {
            assert!(parse_flat_object(line.as_bytes()).is_none(), "{line}");
        }
        // Not UTF-8, wherever it is (serde_json refuses the line, or skips an unknown field's value
        // unchecked: either way the general parser decides).
        for line in [
            &b"{\"step_time_ms\":1,\"node\":\"\xff\"}"[..],
            b"{\"\xc3\":1,\"step_time_ms\":1}",
            b"{\"ts\":\"2026-01-01T00:00:00\xffZ\",\"step_time_ms\":1}",
            b"{\"step_time_ms\":1,\"model\":\"H\xff\"}",
        ] {
            assert!(parse_flat_object(line).is_none());
        }
    }

    #[test]
    fn numbers_are_bit_identical_to_serde_json() {
        // A fixed xorshift sequence: significands and exponents across the exact range and beyond.
        let mut next = crate::telemetry::xorshift(0x2545_f491_4f6c_dd1d);
        let mut taken = 0;
        for _ in 0..200_000 {
            let r = next();
            let digits = 1 + (r % 19) as usize;
            let sig = next() % 10u64.pow(digits as u32);
            let frac = (next() % (digits as u64 + 3)) as usize;
            let mut text = sig.to_string();
            if frac > 0 {
                while text.len() <= frac {
                    text.insert(0, '0');
                }
                text.insert(text.len() - frac, '.');
            }
            if r.is_multiple_of(7) {
                text.push_str(&format!("e{}", (next() % 50) as i64 - 25));
            }
            let line = format!("{{\"step_time_ms\":{text},\"loss\":{text}}}");
            if same(line.as_bytes()) {
                taken += 1;
            }
        }
        // Most of them are in the exact range: the fast path is not vacuous.
        assert!(taken > 100_000, "{taken}");
    }

    #[test]
    fn mutated_lines_never_disagree() {
        let base = br#"{"ts": "2026-01-01T00:00:00.028319Z", "step": 12, "step_time_ms": 28.319, "data_wait_ms": 0.368, "loss": 9.28906, "worker_latencies_ms": [7.525, 7.775], "gpu_util_pct": 85.9, "node": "gpu-node-0", "rank": 2, "seq_len": 512}"#;
        let alphabet = b"{}[]\",:. 0123456789eE-+nul\\xa\t\xff\xc3\xa9";
        let mut next = crate::telemetry::xorshift(0x9e37_79b9_7f4a_7c15);
        let (mut taken, mut refused) = (0, 0);
        for _ in 0..100_000 {
            let mut line = base.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % line.len();
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => line[at] = c,
                    1 => line.insert(at, c),
                    _ => {
                        line.remove(at);
                    }
                }
            }
            if same(&line) {
                taken += 1;
            } else {
                refused += 1;
            }
        }
        assert!(taken > 1000 && refused > 1000, "{taken} {refused}");
    }
}
