//! Canonical JSON (RFC 8785 style: object keys sorted by UTF-16 code units, no whitespace, minimal
//! string escapes, ECMAScript number formatting) and the sha256 digest built on it. Pure.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical text of a JSON value. Equal values give equal bytes whatever their key order.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// `sha256:<64 lowercase hex digits>` of the bytes.
pub fn sha256_prefixed(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&es_number(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// ECMAScript `Number.prototype.toString` for a finite double: shortest round-trip digits, plain
/// notation for 1e-6 ≤ |v| < 1e21, else `d.ddde±x`. (JSON cannot hold NaN or infinities.)
fn es_number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-6..1e21).contains(&a) {
        return format!("{v}");
    }
    let e = format!("{v:e}");
    match e.split_once('e') {
        Some((m, x)) if !x.starts_with('-') => format!("{m}e+{x}"),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, {"z": null, "a": true}], "a": "x" }"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":"x","b":[1,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+E000 sorts after U+1F600 in UTF-16 (the emoji is a surrogate pair starting 0xD83D).
        let v = json!({"\u{e000}": 1, "\u{1f600}": 2, "a": 3});
        assert_eq!(
            canonical_json(&v),
            "{\"a\":3,\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn escapes_only_what_rfc8785_escapes() {
        let v = json!("q\"b\\n\n\u{1}\u{1f}\u{7f}é\u{2028}/");
        assert_eq!(
            canonical_json(&v),
            "\"q\\\"b\\\\n\\n\\u0001\\u001f\u{7f}é\u{2028}/\""
        );
    }

    #[test]
    #[allow(clippy::excessive_precision)] // RFC 8785's own literal
    fn numbers_follow_ecmascript() {
        // RFC 8785 appendix values, built from Rust literals (exact) rather than parsed text.
        for (v, want) in [
            (json!(333333333.33333329_f64), "333333333.3333333"),
            (json!(1e30_f64), "1e+30"),
            (json!(4.50_f64), "4.5"),
            (json!(2e-3_f64), "0.002"),
            (json!(0.000000000000000000000000001_f64), "1e-27"),
            (json!(-0.0_f64), "0"),
            (json!(1e21_f64), "1e+21"),
            (json!(1e-7_f64), "1e-7"),
            (json!(123), "123"),
            (json!(-9007199254740993_i64), "-9007199254740993"),
            (json!(u64::MAX), "18446744073709551615"),
        ] {
            assert_eq!(canonical_json(&v), want, "{v}");
        }
    }

    #[test]
    fn digest_format() {
        let d = sha256_prefixed(b"abc");
        assert_eq!(
            d,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
