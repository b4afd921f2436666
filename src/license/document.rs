//! The `license.v1` document: its fields, strict parsing, the signed message and minting.
//!
//! ```json
//! {"bindings":{"cluster_server":"https://10.0.0.1:6443"},"entitlements":["apply"],
//!  "expires_at":1798761600,"issued_at":1767225600,"kid":"3f1c0d2e9a8b7c6d",
//!  "license_id":"lic-5e0b1c2d3e4f5a6b","not_before":1767225600,"schema_version":"license.v1",
//!  "signature":"<base64 of 64 bytes>","subject":"Acme ML Platform"}
//! ```
//!
//! The signature is ed25519 over `SIGNING_DOMAIN || canonical(document without "signature")`.
//! Every field is covered; unknown fields are errors, not ignored.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::Serialize;

use super::canonical::{Document, Field, MAX_SAFE_INTEGER, Scalar};
use super::keyring::{is_kid, kid_of};

/// Schema of a license document.
pub const LICENSE_SCHEMA: &str = "license.v1";
/// Prefix of every signed message, so a license signature can never be replayed as another kind
/// of signature made with the same key (and vice versa).
pub const SIGNING_DOMAIN: &[u8] = b"modekeeper-license-v1\0";
/// Entitlements this build knows. Others may appear in a license (a newer issuer) and are reported,
/// but they grant nothing here; `license mint` refuses them.
pub const KNOWN_ENTITLEMENTS: [&str; 2] = [ENTITLEMENT_APPLY, ENTITLEMENT_CHORDS_ADVANCED];
/// Changing a cluster: `k8s apply`, `closed-loop run --apply`.
pub const ENTITLEMENT_APPLY: &str = "apply";
/// Running advanced chord policies.
pub const ENTITLEMENT_CHORDS_ADVANCED: &str = "chords.advanced";
/// Binding keys a license may carry (any other is an error: a binding this build cannot check
/// must not be ignored).
pub const BINDING_KEYS: [&str; 2] = [BINDING_CLUSTER_SERVER, BINDING_CLUSTER_UID];
/// The API server URL of the one cluster the license is for (compared normalized).
pub const BINDING_CLUSTER_SERVER: &str = "cluster_server";
/// The uid of that cluster's `kube-system` namespace.
pub const BINDING_CLUSTER_UID: &str = "cluster_uid";

const FIELDS: [&str; 10] = [
    "schema_version",
    "license_id",
    "subject",
    "issued_at",
    "not_before",
    "expires_at",
    "entitlements",
    "bindings",
    "kid",
    "signature",
];

/// What a license says (everything but the signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LicenseClaims {
    pub license_id: String,
    pub subject: String,
    /// Epoch seconds.
    pub issued_at: i64,
    pub not_before: i64,
    pub expires_at: i64,
    pub entitlements: BTreeSet<String>,
    pub bindings: BTreeMap<String, String>,
}

/// A parsed (not yet verified) license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub claims: LicenseClaims,
    pub kid: Option<String>,
    pub signature: Signature,
    /// The exact bytes the signature must cover.
    pub signed_message: Vec<u8>,
}

fn is_entitlement_name(s: &str) -> bool {
    s.len() <= 64
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_lowercase()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
        })
}

fn is_license_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_printable(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

impl LicenseClaims {
    /// Checks the claims on their own (names, lengths, the time window).
    pub fn check(&self) -> Result<(), String> {
        if !is_license_id(&self.license_id) {
            return Err("license_id: 1-128 characters of [A-Za-z0-9._-]".into());
        }
        if !is_printable(&self.subject, 256) {
            return Err("subject: a non-empty line of at most 256 bytes".into());
        }
        for (name, t) in [
            ("issued_at", self.issued_at),
            ("not_before", self.not_before),
            ("expires_at", self.expires_at),
        ] {
            if !(0..=MAX_SAFE_INTEGER).contains(&t) {
                return Err(format!("{name}: epoch seconds, not negative"));
            }
        }
        if self.not_before >= self.expires_at {
            return Err("not_before must be earlier than expires_at".into());
        }
        if self.issued_at >= self.expires_at {
            return Err("issued_at must be earlier than expires_at".into());
        }
        if let Some(e) = self.entitlements.iter().find(|e| !is_entitlement_name(e)) {
            return Err(format!(
                "entitlements: {e:?} is not an entitlement name (dot-separated snake_case)"
            ));
        }
        for (k, v) in &self.bindings {
            if !BINDING_KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "bindings: unknown binding {k:?} (known: {})",
                    BINDING_KEYS.join(", ")
                ));
            }
            if !is_printable(v, 1024) {
                return Err(format!(
                    "bindings.{k}: a non-empty line of at most 1024 bytes"
                ));
            }
        }
        Ok(())
    }

    /// The document without its signature, as a restricted document.
    fn unsigned_document(&self, kid: Option<&str>) -> Document {
        let s = |v: &str| Field::Scalar(Scalar::Str(v.to_string()));
        let i = |v: i64| Field::Scalar(Scalar::Int(v));
        let mut fields = BTreeMap::from([
            ("schema_version".to_string(), s(LICENSE_SCHEMA)),
            ("license_id".to_string(), s(&self.license_id)),
            ("subject".to_string(), s(&self.subject)),
            ("issued_at".to_string(), i(self.issued_at)),
            ("not_before".to_string(), i(self.not_before)),
            ("expires_at".to_string(), i(self.expires_at)),
            (
                "entitlements".to_string(),
                Field::List(
                    self.entitlements
                        .iter()
                        .map(|e| Scalar::Str(e.clone()))
                        .collect(),
                ),
            ),
        ]);
        if !self.bindings.is_empty() {
            fields.insert(
                "bindings".into(),
                Field::Map(
                    self.bindings
                        .iter()
                        .map(|(k, v)| (k.clone(), Scalar::Str(v.clone())))
                        .collect(),
                ),
            );
        }
        if let Some(kid) = kid {
            fields.insert("kid".into(), s(kid));
        }
        Document { fields }
    }
}

/// The bytes a signature covers.
fn signed_message(unsigned: &Document) -> Vec<u8> {
    let mut m = SIGNING_DOMAIN.to_vec();
    m.extend_from_slice(unsigned.canonical().as_bytes());
    m
}

/// Signs `claims` and returns the license file text: canonical JSON and a final newline. With
/// `with_kid` the license names its key (the usual case); without, verifiers try every trusted key.
pub fn mint(key: &SigningKey, claims: &LicenseClaims, with_kid: bool) -> Result<String, String> {
    claims.check()?;
    let kid = with_kid.then(|| kid_of(&key.verifying_key()));
    let mut doc = claims.unsigned_document(kid.as_deref());
    let signature = key.sign(&signed_message(&doc));
    doc.fields.insert(
        "signature".into(),
        Field::Scalar(Scalar::Str(STANDARD.encode(signature.to_bytes()))),
    );
    let mut text = doc.canonical();
    text.push('\n');
    Ok(text)
}

fn string(doc: &Document, key: &str) -> Result<Option<String>, String> {
    match doc.fields.get(key) {
        None => Ok(None),
        Some(Field::Scalar(Scalar::Str(s))) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key}: must be a string")),
    }
}

fn required_string(doc: &Document, key: &str) -> Result<String, String> {
    string(doc, key)?.ok_or_else(|| format!("{key}: missing"))
}

fn required_int(doc: &Document, key: &str) -> Result<i64, String> {
    match doc.fields.get(key) {
        None => Err(format!("{key}: missing")),
        Some(Field::Scalar(Scalar::Int(i))) => Ok(*i),
        Some(_) => Err(format!("{key}: must be an integer (epoch seconds)")),
    }
}

/// Parses license bytes strictly. The error (one line) means `license_malformed`.
pub fn parse_license(bytes: &[u8]) -> Result<License, String> {
    let doc = Document::parse(bytes).map_err(|e| format!("not a license.v1 document: {e}"))?;
    if let Some(k) = doc.fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field {k:?}"));
    }
    match string(&doc, "schema_version")? {
        Some(s) if s == LICENSE_SCHEMA => {}
        Some(s) => return Err(format!("schema_version {s:?} is not {LICENSE_SCHEMA}")),
        None => return Err("schema_version: missing".into()),
    }
    let entitlements = match doc.fields.get("entitlements") {
        None => return Err("entitlements: missing".into()),
        Some(Field::List(l)) => {
            let mut set = BTreeSet::new();
            for e in l {
                let Scalar::Str(e) = e else {
                    return Err("entitlements: must be strings".into());
                };
                if !set.insert(e.clone()) {
                    return Err(format!("entitlements: {e:?} is listed twice"));
                }
            }
            set
        }
        Some(_) => return Err("entitlements: must be an array of strings".into()),
    };
    let bindings = match doc.fields.get("bindings") {
        None => BTreeMap::new(),
        Some(Field::Map(m)) if !m.is_empty() => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let Scalar::Str(v) = v else {
                    return Err(format!("bindings.{k}: must be a string"));
                };
                out.insert(k.clone(), v.clone());
            }
            out
        }
        Some(_) => return Err("bindings: must be a non-empty object of strings".into()),
    };
    let claims = LicenseClaims {
        license_id: required_string(&doc, "license_id")?,
        subject: required_string(&doc, "subject")?,
        issued_at: required_int(&doc, "issued_at")?,
        not_before: required_int(&doc, "not_before")?,
        expires_at: required_int(&doc, "expires_at")?,
        entitlements,
        bindings,
    };
    claims.check()?;
    let kid = string(&doc, "kid")?;
    if let Some(k) = &kid
        && !is_kid(k)
    {
        return Err("kid: 16 lowercase hex digits".into());
    }
    let sig_b64 = required_string(&doc, "signature")?;
    let sig = STANDARD
        .decode(&sig_b64)
        .map_err(|e| format!("signature: not standard base64 ({e})"))?;
    let sig: [u8; 64] = sig
        .as_slice()
        .try_into()
        .map_err(|_| format!("signature: {} bytes, not 64", sig.len()))?;
    let mut unsigned = doc;
    unsigned.fields.remove("signature");
    Ok(License {
        claims,
        kid,
        signature: Signature::from_bytes(&sig),
        signed_message: signed_message(&unsigned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn claims() -> LicenseClaims {
        LicenseClaims {
            license_id: "lic-test".into(),
            subject: "Acme ML".into(),
            issued_at: 1_700_000_000,
            not_before: 1_700_000_000,
            expires_at: 1_900_000_000,
            entitlements: BTreeSet::from(["apply".to_string()]),
            bindings: BTreeMap::new(),
        }
    }

    #[test]
    fn mint_then_parse_round_trips() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let mut c = claims();
        c.bindings.insert(
            BINDING_CLUSTER_SERVER.into(),
            "https://k8s.example:6443".into(),
        );
        let text = mint(&key, &c, true).unwrap();
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1 && !text.contains("\": "));
        let lic = parse_license(text.as_bytes()).unwrap();
        assert_eq!(lic.claims, c);
        assert_eq!(
            lic.kid.as_deref(),
            Some(kid_of(&key.verifying_key()).as_str())
        );
        assert!(lic.signed_message.starts_with(SIGNING_DOMAIN));
        key.verifying_key()
            .verify_strict(&lic.signed_message, &lic.signature)
            .unwrap();
        // Formatting is irrelevant: a pretty-printed copy parses to the same message.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        assert_eq!(parse_license(pretty.as_bytes()).unwrap(), lic);
    }

    #[test]
    fn rejects_bad_documents() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let text = mint(&key, &claims(), true).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let with = |k: &str, val: serde_json::Value| {
            let mut v = v.clone();
            v[k] = val;
            v.to_string()
        };
        let without = |k: &str| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove(k);
            v.to_string()
        };
        for (doc, want) in [
            (with("extra", "x".into()), "unknown field"),
            (
                with("schema_version", "license.v2".into()),
                "is not license.v1",
            ),
            (without("schema_version"), "schema_version: missing"),
            (without("signature"), "signature: missing"),
            (with("signature", "AAAA".into()), "3 bytes, not 64"),
            (with("signature", "@@".into()), "not standard base64"),
            (with("expires_at", "2030".into()), "must be an integer"),
            (
                with("expires_at", 1_600_000_000.into()),
                "must be earlier than expires_at",
            ),
            (with("issued_at", (-5).into()), "not negative"),
            (
                with("entitlements", serde_json::json!(["apply", "apply"])),
                "listed twice",
            ),
            (
                with("entitlements", serde_json::json!(["Apply"])),
                "not an entitlement name",
            ),
            (
                with("entitlements", serde_json::json!([1])),
                "must be strings",
            ),
            (
                with("bindings", serde_json::json!({"node": "x"})),
                "unknown binding",
            ),
            (with("bindings", serde_json::json!({})), "non-empty object"),
            (with("kid", "ABC".into()), "16 lowercase hex"),
            (with("subject", " ".into()), "subject"),
            (with("license_id", "a b".into()), "license_id"),
        ] {
            let e = parse_license(doc.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{doc}: {e}");
        }
    }

    #[test]
    fn unknown_entitlements_parse_but_mint_checks_names() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let mut c = claims();
        c.entitlements.insert("future.thing".into());
        let lic = parse_license(mint(&key, &c, false).unwrap().as_bytes()).unwrap();
        assert!(lic.claims.entitlements.contains("future.thing"));
        assert_eq!(lic.kid, None);
    }
}
