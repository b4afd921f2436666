//! JSON with unique object keys. serde_json keeps the last copy of a repeated key, while a reviewer
//! (or another tool) may read the first, so a file could show one value and act on another. Every
//! document a person may review before it takes effect — plans, passports, the watch state — is
//! parsed here, where a key repeated in any object, at any depth, is an error
//! (`duplicate key <name> at line L column C`).

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A key as an error line shows it: bare when plain, else quoted and cut to 64 characters.
pub(crate) fn key_name(k: &str) -> String {
    let plain = k.len() <= 64
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/'));
    if plain && !k.is_empty() {
        k.to_string()
    } else {
        crate::plan::quoted(k)
    }
}

/// `bytes` as a [`Value`], refusing a duplicate key in any object.
pub fn parse_unique(bytes: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<UniqueKeys>(bytes).map(|UniqueKeys(v)| v)
}

/// `bytes` as a `T`, refusing a duplicate key in any object (also in parts `T` ignores).
pub fn from_slice_unique<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    serde_json::from_value(parse_unique(bytes)?)
}

struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(UniqueKeys(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut o = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if o.contains_key(&k) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {}",
                    key_name(&k)
                )));
            }
            let UniqueKeys(v) = map.next_value()?;
            o.insert(k, v);
        }
        Ok(Value::Object(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_repeated_at_any_depth_is_refused() {
        assert_eq!(
            parse_unique(br#"{"a": [1, {"b": {}}], "c": null}"#).unwrap(),
            serde_json::json!({"a": [1, {"b": {}}], "c": null})
        );
        for dup in [
            r#"{"a": 1, "a": 1}"#,
            r#"{"x": {"a": 1, "a": 2}}"#,
            r#"[{"ok": true}, {"k": 0, "k": 0}]"#,
        ] {
            let e = parse_unique(dup.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with("duplicate key "), "{dup}: {e}");
        }
        let e = parse_unique(br#"{"x y": 1, "x y": 2}"#).unwrap_err();
        assert!(
            e.to_string().contains(r#"duplicate key "x y" at line 1"#),
            "{e}"
        );
    }

    #[test]
    fn a_typed_read_refuses_duplicates_even_in_fields_it_ignores() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            n: u64,
        }
        assert_eq!(
            from_slice_unique::<T>(br#"{"n": 18446744073709551615}"#)
                .unwrap()
                .n,
            u64::MAX
        );
        assert!(from_slice_unique::<T>(br#"{"n": 1, "n": 2}"#).is_err());
        assert!(from_slice_unique::<T>(br#"{"n": 1, "other": {"z": 0, "z": 1}}"#).is_err());
    }
}
