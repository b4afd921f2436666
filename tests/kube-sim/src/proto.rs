//! Just enough Kubernetes protobuf to read the review objects kubectl sends that way
//! (`kubectl auth can-i` posts SelfSubjectAccessReviews as `application/vnd.kubernetes.protobuf`).
//!
//! Wire format: the magic `k8s\0`, then a `runtime.Unknown` {typeMeta{apiVersion, kind}, raw}
//! whose `raw` is the object's own message. Decoded objects become the JSON the same request
//! would have carried; responses are always JSON (clients accept it).

use serde_json::{Map, Value, json};

use crate::status::ApiError;

const MAGIC: &[u8] = b"k8s\0";

/// One field of a message: number and (for length-delimited fields) its bytes.
struct Field<'a> {
    number: u64,
    bytes: Option<&'a [u8]>,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut pos = 0;
    let mut out = vec![];
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        let bytes = match wire {
            0 => {
                varint(buf, &mut pos)?;
                None
            }
            1 => {
                pos = pos.checked_add(8).filter(|p| *p <= buf.len())?;
                None
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let b = &buf[pos..end];
                pos = end;
                Some(b)
            }
            5 => {
                pos = pos.checked_add(4).filter(|p| *p <= buf.len())?;
                None
            }
            _ => return None,
        };
        out.push(Field { number, bytes });
    }
    Some(out)
}

fn field<'a>(fs: &[Field<'a>], number: u64) -> Option<&'a [u8]> {
    fs.iter()
        .rev()
        .find(|f| f.number == number)
        .and_then(|f| f.bytes)
}

/// String fields of a message, by field number, into a JSON object.
fn strings(buf: &[u8], names: &[(u64, &str)]) -> Option<Value> {
    let fs = fields(buf)?;
    let mut m = Map::new();
    for (n, name) in names {
        if let Some(b) = field(&fs, *n) {
            m.insert(name.to_string(), json!(std::str::from_utf8(b).ok()?));
        }
    }
    Some(Value::Object(m))
}

fn review_spec(kind: &str, spec: &[u8]) -> Option<Value> {
    let fs = fields(spec)?;
    match kind {
        "SelfSubjectAccessReview" => {
            let mut out = Map::new();
            if let Some(ra) = field(&fs, 1) {
                let names = [
                    (1, "namespace"),
                    (2, "verb"),
                    (3, "group"),
                    (4, "version"),
                    (5, "resource"),
                    (6, "subresource"),
                    (7, "name"),
                ];
                out.insert("resourceAttributes".into(), strings(ra, &names)?);
            }
            if let Some(nra) = field(&fs, 2) {
                out.insert(
                    "nonResourceAttributes".into(),
                    strings(nra, &[(1, "path"), (2, "verb")])?,
                );
            }
            Some(Value::Object(out))
        }
        "SelfSubjectRulesReview" => strings(spec, &[(1, "namespace")]),
        _ => Some(json!({})),
    }
}

/// Decodes a protobuf-encoded review into its JSON form.
pub fn decode_review(body: &[u8]) -> Result<Value, ApiError> {
    let bad = || {
        ApiError::bad_request("the body of the request was not a valid Kubernetes protobuf object")
    };
    let rest = body.strip_prefix(MAGIC).ok_or_else(bad)?;
    let unknown = fields(rest).ok_or_else(bad)?;
    let type_meta = strings(
        field(&unknown, 1).unwrap_or_default(),
        &[(1, "apiVersion"), (2, "kind")],
    )
    .ok_or_else(bad)?;
    let kind = type_meta["kind"].as_str().unwrap_or_default().to_string();
    let raw = field(&unknown, 2).unwrap_or_default();
    let object = fields(raw).ok_or_else(bad)?;
    let spec = review_spec(&kind, field(&object, 2).unwrap_or_default()).ok_or_else(bad)?;
    Ok(json!({
        "kind": kind,
        "apiVersion": type_meta["apiVersion"],
        "metadata": {"creationTimestamp": null},
        "spec": spec,
    }))
}

/// `metadata.name` of a protobuf-encoded object (every object's field 1 is its ObjectMeta, whose
/// field 1 is the name): what `kubectl create namespace NAME` sends.
pub fn decode_object_name(body: &[u8]) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request("the body of the request was not a valid Kubernetes protobuf object")
    };
    let rest = body.strip_prefix(MAGIC).ok_or_else(bad)?;
    let unknown = fields(rest).ok_or_else(bad)?;
    let object = fields(field(&unknown, 2).unwrap_or_default()).ok_or_else(bad)?;
    let meta = fields(field(&object, 1).unwrap_or_default()).ok_or_else(bad)?;
    let name = field(&meta, 1).unwrap_or_default();
    std::str::from_utf8(name)
        .map(str::to_string)
        .map_err(|_| bad())
}

/// Whether a body is protobuf (else JSON).
/// The `key → value` entries of a protobuf map field (`map<string, string|bytes>`: repeated
/// entries with key 1 and value 2), values as text (`bytes_as_base64`: base64, as JSON carries
/// bytes).
fn map_entries(fs: &[Field<'_>], number: u64, bytes_as_base64: bool) -> Option<Map<String, Value>> {
    use base64::Engine;
    let mut out = Map::new();
    for f in fs.iter().filter(|f| f.number == number) {
        let entry = fields(f.bytes?)?;
        let key = std::str::from_utf8(field(&entry, 1).unwrap_or_default()).ok()?;
        let raw = field(&entry, 2).unwrap_or_default();
        let value = if bytes_as_base64 {
            base64::engine::general_purpose::STANDARD.encode(raw)
        } else {
            std::str::from_utf8(raw).ok()?.to_string()
        };
        out.insert(key.to_string(), json!(value));
    }
    Some(out)
}

/// A protobuf ConfigMap or Secret (what `kubectl create configmap|secret` posts) as JSON: its
/// metadata's name, generateName, namespace, labels and annotations, and its data (a Secret's
/// `data` and a ConfigMap's `binaryData` base64, a Secret's `type` and `stringData`). Not
/// decoded: `immutable` and other metadata.
pub fn decode_data_object(kind: &str, body: &[u8]) -> Result<Value, ApiError> {
    let bad = || {
        ApiError::bad_request("the body of the request was not a valid Kubernetes protobuf object")
    };
    let rest = body.strip_prefix(MAGIC).ok_or_else(bad)?;
    let unknown = fields(rest).ok_or_else(bad)?;
    let object = fields(field(&unknown, 2).unwrap_or_default()).ok_or_else(bad)?;
    let meta_fields = fields(field(&object, 1).unwrap_or_default()).ok_or_else(bad)?;
    let mut meta = strings(
        field(&object, 1).unwrap_or_default(),
        &[(1, "name"), (2, "generateName"), (3, "namespace")],
    )
    .ok_or_else(bad)?;
    for (n, name) in [(11, "labels"), (12, "annotations")] {
        let m = map_entries(&meta_fields, n, false).ok_or_else(bad)?;
        if !m.is_empty() {
            meta[name] = Value::Object(m);
        }
    }
    let mut out = json!({"kind": kind, "apiVersion": "v1", "metadata": meta});
    let maps: &[(u64, &str, bool)] = match kind {
        "ConfigMap" => &[(2, "data", false), (3, "binaryData", true)],
        "Secret" => &[(2, "data", true), (4, "stringData", false)],
        _ => return Err(bad()),
    };
    for (n, name, b64) in maps {
        let m = map_entries(&object, *n, *b64).ok_or_else(bad)?;
        if !m.is_empty() {
            out[*name] = Value::Object(m);
        }
    }
    if kind == "Secret"
        && let Some(t) = field(&object, 3)
    {
        out["type"] = json!(std::str::from_utf8(t).map_err(|_| bad())?);
    }
    Ok(out)
}

pub fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_an_objects_name() {
        let meta = ld(1, b"demo");
        let object = [ld(1, &meta), ld(2, b"")].concat();
        let body = [MAGIC, &ld(1, b""), &ld(2, &object)].concat();
        assert!(is_protobuf(&body));
        assert_eq!(decode_object_name(&body).unwrap(), "demo");
        assert!(decode_object_name(b"{}").is_err());
        assert!(!is_protobuf(b"{}"));
    }

    #[test]
    fn decodes_a_secret_with_maps() {
        let entry = |k: &[u8], v: &[u8]| [ld(1, k), ld(2, v)].concat();
        let meta = [ld(1, b"lic"), ld(3, b"ns"), ld(11, &entry(b"a", b"b"))].concat();
        let object = [
            ld(1, &meta),
            ld(2, &entry(b"k", b"\x00\xff")),
            ld(2, &entry(b"j", b"v")),
            ld(3, b"Opaque"),
            ld(4, &entry(b"s", b"text")),
        ]
        .concat();
        let body = [MAGIC, &ld(1, b""), &ld(2, &object)].concat();
        let v = decode_data_object("Secret", &body).unwrap();
        assert_eq!(
            v["metadata"],
            json!({"name": "lic", "namespace": "ns", "labels": {"a": "b"}})
        );
        assert_eq!(v["data"], json!({"k": "AP8=", "j": "dg=="}));
        assert_eq!(v["stringData"], json!({"s": "text"}));
        assert_eq!(v["type"], "Opaque");
        // A ConfigMap's data are strings: bytes that are not UTF-8 are refused.
        assert!(decode_data_object("ConfigMap", &body).is_err());
        assert!(decode_data_object("Pod", &body).is_err());
    }

    #[test]
    fn decodes_a_self_subject_access_review() {
        let ra = [
            ld(1, b"ml"),
            ld(2, b"patch"),
            ld(3, b"apps"),
            ld(5, b"deployments"),
        ]
        .concat();
        let spec = ld(1, &ra);
        let object = [ld(1, b""), ld(2, &spec), ld(3, b"")].concat();
        let type_meta = [
            ld(1, b"authorization.k8s.io/v1"),
            ld(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [
            MAGIC.to_vec(),
            ld(1, &type_meta),
            ld(2, &object),
            ld(3, b""),
            ld(4, b""),
        ]
        .concat();
        let v = decode_review(&body).unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"namespace": "ml", "verb": "patch", "group": "apps", "resource": "deployments"})
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode_review(b"{}").unwrap_err().code, 400);
        assert_eq!(decode_review(b"k8s\0\x0a\xff").unwrap_err().code, 400);
    }
}
