//! The evidence seal: an HMAC-SHA256 over a verify report's canonical JSON, with a key only this
//! user can read, so apply can tell a report `k8s verify` wrote from one edited (or written) by
//! hand. `k8s verify` seals what it writes; apply refuses a report whose seal is missing or does not
//! match (`verify_report_unauthenticated`) and records how it checked the evidence.
//!
//! The key: 32 random bytes, hex, in `$MODEKEEPER_STATE_DIR/evidence.key`, else
//! `$XDG_STATE_HOME/modekeeper/evidence.key`, else `~/.local/state/modekeeper/evidence.key`;
//! created by the first verify (directory 0700, file 0600, never overwritten). Apply refuses a key
//! file that group or others can read or write. The MAC covers every field but the seal itself, in
//! RFC 8785 canonical form, so reformatting a report keeps it valid and changing any value does not.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::plan::canonical_json;

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

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn key_id(key: &[u8; 32]) -> String {
    format!("{:x}", Sha256::digest(key))[..16].to_string()
}

fn mac_of(doc: &Value, key: &[u8; 32]) -> String {
    let mut unsealed = doc.clone();
    if let Some(o) = unsealed.as_object_mut() {
        o.remove(SEAL_FIELD);
    }
    let mac = hmac_sha256(key, canonical_json(&unsealed).as_bytes());
    mac.iter().map(|b| format!("{b:02x}")).collect()
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
    let want = mac_of(doc, &key.key);
    // Constant time: no early exit on the first differing byte.
    let got = mac.unwrap_or_default().as_bytes();
    let same = got.len() == want.len()
        && got
            .iter()
            .zip(want.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
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
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("MODEKEEPER_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("modekeeper")))
        .or_else(|| env("HOME").map(|h| h.join(".local").join("state").join("modekeeper")))
}

fn parse_key(path: &Path, text: &str) -> Result<EvidenceKey, String> {
    let t = text.trim();
    let mut key = [0u8; 32];
    if t.len() != 64 || !t.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{} is not 64 hex digits", path.display()));
    }
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
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
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{} is readable or writable by others (mode {:o}); it must be 0600",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(256).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_key(path, &text)
}

/// Reads the key, creating it (0600, in a 0700 directory) when there is none (verify).
pub fn load_or_create_key() -> Result<EvidenceKey, String> {
    let dir = state_dir().ok_or("no state directory (set HOME or XDG_STATE_HOME)")?;
    let path = dir.join(KEY_FILE);
    if std::fs::symlink_metadata(&path).is_ok() {
        return load_key_from(&path);
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| format!("no randomness: {e}"))?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(&path) {
        Ok(mut f) => {
            let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
            f.write_all(format!("{text}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(EvidenceKey { key, path })
        }
        // Another verify created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_key_from(&path),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexs(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc4231() {
        // Test cases 1, 2 and 6 (a key longer than the block).
        assert_eq!(
            hexs(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hexs(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hexs(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn key(b: u8) -> Result<EvidenceKey, String> {
        Ok(EvidenceKey {
            key: [b; 32],
            path: "k".into(),
        })
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
