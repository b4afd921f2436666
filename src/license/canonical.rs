//! The restricted JSON that licenses and keyrings are written in, and its canonical bytes.
//!
//! A document is one object whose values are integers, strings, booleans, or one level of arrays or
//! objects holding those. Floats, nulls, duplicate keys, integers outside ±(2^53 − 1) and anything
//! nested deeper are rejected while parsing, so two parsers can never disagree about what was signed.
//! The canonical text is RFC 8785 (keys sorted by UTF-16 code units, no whitespace, minimal string
//! escapes), produced by [`crate::plan::canonical_json`]. Pure.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Largest integer a document may hold (I-JSON: exact in every JSON implementation).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;
/// Documents larger than this are refused before parsing.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// At most this many keys in the top-level object, and elements in one array or object.
pub const MAX_ENTRIES: usize = 256;

/// A leaf value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Int(i64),
    Str(String),
    Bool(bool),
}

/// A top-level value: a leaf, or one level of list or map of leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Scalar(Scalar),
    List(Vec<Scalar>),
    Map(BTreeMap<String, Scalar>),
}

/// A parsed document: the top-level object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    pub fields: BTreeMap<String, Field>,
}

/// Why bytes are not a restricted document. One line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonError(pub String);

impl fmt::Display for CanonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CanonError {}

impl Document {
    /// Parses bytes strictly (see the module doc).
    pub fn parse(bytes: &[u8]) -> Result<Document, CanonError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(CanonError(format!(
                "larger than {} KiB",
                MAX_DOCUMENT_BYTES / 1024
            )));
        }
        serde_json::from_slice::<Document>(bytes).map_err(|e| CanonError(e.to_string()))
    }

    /// The document as a JSON value.
    pub fn to_value(&self) -> Value {
        let scalar = |s: &Scalar| match s {
            Scalar::Int(i) => Value::from(*i),
            Scalar::Str(s) => Value::String(s.clone()),
            Scalar::Bool(b) => Value::Bool(*b),
        };
        let mut m = Map::new();
        for (k, f) in &self.fields {
            let v = match f {
                Field::Scalar(s) => scalar(s),
                Field::List(l) => Value::Array(l.iter().map(scalar).collect()),
                Field::Map(o) => {
                    Value::Object(o.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
                }
            };
            m.insert(k.clone(), v);
        }
        Value::Object(m)
    }

    /// The RFC 8785 canonical text.
    pub fn canonical(&self) -> String {
        crate::plan::canonical_json(&self.to_value())
    }
}

/// Parses `bytes` as a restricted document and returns its canonical text. Idempotent:
/// `canonicalize(canonicalize(x)) == canonicalize(x)`.
pub fn canonicalize(bytes: &[u8]) -> Result<String, CanonError> {
    Document::parse(bytes).map(|d| d.canonical())
}

fn int_in_range<E: de::Error>(v: i128) -> Result<i64, E> {
    if v.unsigned_abs() > MAX_SAFE_INTEGER as u128 {
        return Err(E::custom(format!("integer {v} is outside ±(2^53 - 1)")));
    }
    Ok(v as i64)
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer, a string or a boolean")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        int_in_range(v.into()).map(Scalar::Int)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        int_in_range(v.into()).map(Scalar::Int)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Err(E::custom(format!(
            "number {v} is not an integer (floats are not allowed)"
        )))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Err(E::custom("null is not allowed"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
        Err(de::Error::custom("arrays are not allowed at this depth"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Scalar, A::Error> {
        Err(de::Error::custom("objects are not allowed at this depth"))
    }
}

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// Reads an object's entries, refusing duplicate keys and more than [`MAX_ENTRIES`].
fn entries<'de, A, V>(mut map: A) -> Result<BTreeMap<String, V>, A::Error>
where
    A: MapAccess<'de>,
    V: de::Deserialize<'de>,
{
    let mut out = BTreeMap::new();
    while let Some(k) = map.next_key::<String>()? {
        if out.len() == MAX_ENTRIES {
            return Err(de::Error::custom(format!(
                "more than {MAX_ENTRIES} entries"
            )));
        }
        if out.contains_key(&k) {
            return Err(de::Error::custom(format!("duplicate key {k:?}")));
        }
        let v = map.next_value::<V>()?;
        out.insert(k, v);
    }
    Ok(out)
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer, a string, a boolean, or an array or object of those")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Field, E> {
        ScalarVisitor.visit_bool(v).map(Field::Scalar)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Field, E> {
        ScalarVisitor.visit_i64(v).map(Field::Scalar)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field, E> {
        ScalarVisitor.visit_u64(v).map(Field::Scalar)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Field, E> {
        ScalarVisitor.visit_f64(v).map(Field::Scalar)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        ScalarVisitor.visit_str(v).map(Field::Scalar)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Field, E> {
        ScalarVisitor.visit_string(v).map(Field::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
        ScalarVisitor.visit_unit().map(Field::Scalar)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element::<Scalar>()? {
            if out.len() == MAX_ENTRIES {
                return Err(de::Error::custom(format!(
                    "more than {MAX_ENTRIES} entries"
                )));
            }
            out.push(s);
        }
        Ok(Field::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field, A::Error> {
        entries::<A, Scalar>(map).map(Field::Map)
    }
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Document, A::Error> {
        entries::<A, Field>(map).map(|fields| Document { fields })
    }
}

impl<'de> de::Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Document, D::Error> {
        d.deserialize_map(DocumentVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Document::parse(text.as_bytes()).unwrap_err().0
    }

    #[test]
    fn canonical_text_sorts_and_compacts() {
        let c = canonicalize(br#" { "b" : [ "x", 1, true ], "a": {"z": "1", "y": -2} } "#).unwrap();
        assert_eq!(c, r#"{"a":{"y":-2,"z":"1"},"b":["x",1,true]}"#);
        assert_eq!(canonicalize(c.as_bytes()).unwrap(), c);
    }

    #[test]
    fn rejects_what_two_parsers_could_read_differently() {
        assert!(err(r#"{"a": 1, "a": 2}"#).contains("duplicate key"));
        assert!(err(r#"{"m": {"k": "1", "k": "2"}}"#).contains("duplicate key"));
        assert!(err(r#"{"a": 1.0}"#).contains("floats are not allowed"));
        assert!(err(r#"{"a": 1e3}"#).contains("floats are not allowed"));
        assert!(err(r#"{"a": 9007199254740992}"#).contains("outside"));
        assert!(err(r#"{"a": -9007199254740992}"#).contains("outside"));
        assert!(err(r#"{"a": 18446744073709551616}"#).contains("floats"));
        assert!(err(r#"{"a": null}"#).contains("null"));
        assert!(err(r#"{"a": [[1]]}"#).contains("arrays are not allowed"));
        assert!(err(r#"{"a": [{"b": 1}]}"#).contains("objects are not allowed"));
        assert!(err(r#"{"a": {"b": {}}}"#).contains("objects are not allowed"));
        assert!(err(r#"[1]"#).contains("expected a JSON object"));
        assert!(err(r#"{"a": 1} x"#).contains("trailing characters"));
        // Lone surrogates cannot be UTF-8: refused, not replaced.
        let e = err(r#"{"a": "\ud800"}"#);
        assert!(e.contains("escape") || e.contains("surrogate"), "{e}");
        assert!(Document::parse(br#"{"a": 9007199254740991, "b": -9007199254740991}"#).is_ok());
    }

    #[test]
    fn size_and_entry_limits() {
        let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(err(&big).contains("larger than"));
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("\"k{i}\": 1")).collect();
        assert!(err(&format!("{{{}}}", many.join(","))).contains("more than"));
        let list: Vec<String> = (0..=MAX_ENTRIES).map(|i| i.to_string()).collect();
        assert!(err(&format!(r#"{{"a": [{}]}}"#, list.join(","))).contains("more than"));
    }
}
