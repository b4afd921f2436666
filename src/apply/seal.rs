//! The evidence seal: an HMAC-SHA256 over a verify report's canonical JSON, with a key only this
//! user can read, so apply can tell a report `k8s verify` wrote from one edited (or written) by
//! hand. `k8s verify` seals what it writes; apply refuses a report whose seal is missing or does not
//! match (`verify_report_unauthenticated`) and records how it checked the evidence.
//!
//! The key: 32 random bytes, hex, in `$MODEKEEPER_STATE_DIR/evidence.key`, else
//! `$XDG_STATE_HOME/modekeeper/evidence.key`, else `~/.local/state/modekeeper/evidence.key`;
//! created by the first verify (directory 0700, file 0600, never overwritten). Apply refuses a key
//! file that group or others can read or write, or that another user owns (the same rules as the
//! policy cache's key: [`crate::private_file`]). The MAC covers every field but the seal itself, in
//! RFC 8785 canonical form, so reformatting a report keeps it valid and changing any value does not.

use std::path::{Path, PathBuf};

use ring::hmac;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::plan::canonical_json;
use crate::private_file::{
    PrivateError, SECRET, decode_hex, hex, read_or_create_secret, read_private,
};

/// The report field that carries the seal.
pub const SEAL_FIELD: &str = "evidence_seal";
/// The key file's name in the state directory.
pub const KEY_FILE: &str = "evidence.key";
const ALG: &str = "hmac-sha256";

/// The sealing key and where it lives.
pub struct EvidenceKey {
    key: [u8; 32],
    pub path: PathBuf,
}

impl std::fmt::Debug for EvidenceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EvidenceKey({})", self.path.display())
    }
}

/// How apply checked a verify report, as the apply report records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceCheck {
    /// `hmac-sha256`.
    pub method: &'static str,
    pub key_path: Option<PathBuf>,
    /// The seal's `key_id`, when the report had one.
    pub key_id: Option<String>,
    pub ok: bool,
    pub detail: String,
}

fn key_id(key: &[u8; 32]) -> String {
    format!("{:x}", Sha256::digest(key))[..16].to_string()
}

/// What the MAC covers: the report without its seal, in canonical form.
fn signed_bytes(doc: &Value) -> Vec<u8> {
    let mut unsealed = doc.clone();
    if let Some(o) = unsealed.as_object_mut() {
        o.remove(SEAL_FIELD);
    }
    canonical_json(&unsealed).into_bytes()
}

fn hmac_key(key: &[u8; 32]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, key)
}

fn mac_of(doc: &Value, key: &[u8; 32]) -> String {
    hex(hmac::sign(&hmac_key(key), &signed_bytes(doc)).as_ref())
}

/// `report` as JSON with its seal added.
pub fn seal<T: Serialize>(report: &T, key: &EvidenceKey) -> serde_json::Result<Value> {
    let mut doc = serde_json::to_value(report)?;
    let mac = mac_of(&doc, &key.key);
    if let Some(o) = doc.as_object_mut() {
        o.insert(
            SEAL_FIELD.into(),
            json!({"alg": ALG, "key_id": key_id(&key.key), "mac": mac}),
        );
    }
    Ok(doc)
}

/// `report` sealed with this user's key (created if need be); unsealed, with the reason, when the
/// key cannot be had (apply will then refuse the report).
pub fn seal_with_user_key<T: Serialize>(report: &T) -> serde_json::Result<(Value, Option<String>)> {
    match load_or_create_key() {
        Ok(k) => Ok((seal(report, &k)?, None)),
        Err(e) => Ok((serde_json::to_value(report)?, Some(e))),
    }
}

/// Checks the seal of a report document with `key` (`Err` = the reason the key could not be read).
pub fn check_seal(doc: &Value, key: &Result<EvidenceKey, String>) -> EvidenceCheck {
    let seal = doc.get(SEAL_FIELD);
    let key_id_of_seal = seal
        .and_then(|s| s.get("key_id"))
        .and_then(Value::as_str)
        .map(|s| s.chars().take(64).collect());
    let mut check = EvidenceCheck {
        method: ALG,
        key_path: key.as_ref().ok().map(|k| k.path.clone()),
        key_id: key_id_of_seal,
        ok: false,
        detail: String::new(),
    };
    let key = match key {
        Ok(k) => k,
        Err(e) => {
            check.detail = format!("no evidence key to check the seal with: {e}");
            return check;
        }
    };
    let Some(seal) = seal else {
        check.detail = format!("the report has no {SEAL_FIELD} (not written by k8s verify here)");
        return check;
    };
    let (alg, mac) = (
        seal.get("alg").and_then(Value::as_str),
        seal.get("mac").and_then(Value::as_str),
    );
    if alg != Some(ALG) || mac.is_none() {
        check.detail = format!("{SEAL_FIELD} is not an {ALG} seal");
        return check;
    }
    // ring compares in constant time.
    let same = decode_hex(mac.unwrap_or_default().as_bytes())
        .is_some_and(|tag| hmac::verify(&hmac_key(&key.key), &signed_bytes(doc), &tag).is_ok());
    if same {
        check.ok = true;
        check.detail = format!("{ALG} seal valid (key {})", key.path.display());
    } else if check.key_id.as_deref() != Some(key_id(&key.key).as_str()) {
        check.detail = format!(
            "sealed with another key (key_id {}); verify again on this machine as this user",
            check.key_id.as_deref().unwrap_or("none")
        );
    } else {
        check.detail =
            "the seal does not match: the report was changed after k8s verify wrote it".into();
    }
    check
}

/// The state directory the key lives in.
pub fn state_dir() -> Option<PathBuf> {
    crate::fsio::env_path("MODEKEEPER_STATE_DIR").or_else(|| {
        crate::fsio::xdg_base("XDG_STATE_HOME", ".local/state").map(|d| d.join("modekeeper"))
    })
}

fn parse_key(path: &Path, bytes: &[u8]) -> Result<EvidenceKey, String> {
    let key = std::str::from_utf8(bytes)
        .ok()
        .map(str::trim)
        .filter(|t| t.len() == 64)
        .and_then(|t| decode_hex(t.as_bytes()))
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| format!("{} is not 64 hex digits", path.display()))?;
    Ok(EvidenceKey {
        key,
        path: path.to_path_buf(),
    })
}

/// Reads the key (apply): a regular file of this user's only (mode without group/other bits).
pub fn load_key() -> Result<EvidenceKey, String> {
    let dir = state_dir().ok_or("no state directory (set HOME or XDG_STATE_HOME)")?;
    load_key_from(&dir.join(KEY_FILE))
}

/// Reads the key at `path` (same checks as [`load_key`]).
pub fn load_key_from(path: &Path) -> Result<EvidenceKey, String> {
    match read_private(path, KEY_FILE_CAP, SECRET) {
        Ok(Some(bytes)) => parse_key(path, &bytes),
        Ok(None) => Err(format!("cannot read {}: no such file", path.display())),
        Err(e) => Err(key_refused(path, e)),
    }
}

/// Reads the key, creating it (0600, in a 0700 directory) when there is none (verify).
pub fn load_or_create_key() -> Result<EvidenceKey, String> {
    let dir = state_dir().ok_or("no state directory (set HOME or XDG_STATE_HOME)")?;
    let path = dir.join(KEY_FILE);
    let bytes = read_or_create_secret(&path, KEY_FILE_CAP, |k| format!("{}\n", hex(k)).into())
        .map_err(|e| key_refused(&path, e))?;
    parse_key(&path, &bytes)
}

/// 64 hex digits and a newline; room for a CRLF or some blanks a hand-copied key might carry.
const KEY_FILE_CAP: u64 = 256;

fn key_refused(path: &Path, e: PrivateError) -> String {
    match e {
        e @ (PrivateError::Mode { .. } | PrivateError::Owner { .. }) => {
            format!("{} is {e}; it must be a 0600 file of yours", path.display())
        }
        e => format!("cannot read {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Result<EvidenceKey, String> {
        Ok(EvidenceKey {
            key: [b; 32],
            path: "k".into(),
        })
    }

    #[test]
    fn the_seal_is_hmac_sha256_of_the_canonical_report() {
        // Pins the on-disk format: computed independently (Python's hmac over the RFC 8785 form).
        let report = json!({"plan_digest": "sha256:ab", "ok": false, "n": 1.5});
        let sealed = seal(&report, key(1).as_ref().unwrap()).unwrap();
        assert_eq!(
            sealed[SEAL_FIELD],
            json!({
                "alg": "hmac-sha256",
                "key_id": "72cd6e8422c407fb",
                "mac": "3916f8fb7ed35123ef319eacc0f737b895da05b72703d1344eb5f3548da728e4",
            })
        );
    }

    #[test]
    fn an_edited_report_or_another_key_fails_the_seal() {
        let report = json!({"ok": false, "plan_digest": "sha256:ab", "n": 1.5});
        let sealed = seal(&report, key(1).as_ref().unwrap()).unwrap();
        assert!(check_seal(&sealed, &key(1)).ok);
        // Reformatting (key order) keeps it valid.
        let text = serde_json::to_string_pretty(&sealed).unwrap();
        assert!(check_seal(&serde_json::from_str(&text).unwrap(), &key(1)).ok);
        let mut edited = sealed.clone();
        edited["ok"] = json!(true);
        let c = check_seal(&edited, &key(1));
        assert!(!c.ok);
        assert!(c.detail.contains("changed after"), "{}", c.detail);
        let c = check_seal(&sealed, &key(2));
        assert!(!c.ok && c.detail.contains("another key"), "{}", c.detail);
        assert!(!check_seal(&report, &key(1)).ok);
        assert!(!check_seal(&sealed, &Err("none".into())).ok);
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(KEY_FILE);
        std::fs::write(&p, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_key_from(&p).unwrap_err().contains("0600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_key_from(&p).is_ok());
    }
}
