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
