//! The keys a license may be signed with: a keyring `{ "<kid>": "<base64 of the raw 32-byte ed25519
//! public key>" }`, where every kid must be the key's own [`kid_of`]. The built-in keyring holds the
//! production public keys only, and only in a release build: the release pipeline supplies it at build
//! time (`MODEKEEPER_PRODUCTION_KEYRING`, see build.rs); a build from source embeds none and trusts no
//! production key. Any other keyring must be named explicitly (`--keyring` or `MODEKEEPER_KEYRING`)
//! and is recorded as an override in every report that used it.
//!
//! A keyring is all-or-nothing: one bad entry (bad base64, wrong length, a weak key, a kid that is
//! not the key's hash) rejects the whole file. Nothing here is ever silently dropped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::canonical::{Document, Field, Scalar};

/// The production public keys of a release build; `None` in a build from source (build.rs writes an
/// empty file unless `MODEKEEPER_PRODUCTION_KEYRING` named one).
pub const BUILTIN_KEYRING: Option<&str> = {
    let text = include_str!(concat!(env!("OUT_DIR"), "/production_keyring.json"));
    if text.is_empty() { None } else { Some(text) }
};
/// The environment variable that names a keyring file to use instead of the built-in one.
pub const KEYRING_ENV: &str = "MODEKEEPER_KEYRING";
/// More keys than this is not a keyring anyone maintains.
pub const MAX_KEYS: usize = 64;

/// The key id of a public key: the first 16 hex digits of sha256 of its 32 raw bytes.
pub fn kid_of(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` has the form of a kid (16 lowercase hex digits).
pub fn is_kid(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Where a keyring came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyringSource {
    /// Compiled into the binary: the production keys.
    Builtin,
    /// `--keyring PATH`.
    Flag,
    /// `MODEKEEPER_KEYRING=PATH`.
    Env,
}

/// Which keyring a run used, as recorded in reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyringInfo {
    pub source: KeyringSource,
    /// The file, for an override.
    pub path: Option<PathBuf>,
    /// True when the built-in production keyring was replaced.
    #[serde(rename = "override")]
    pub is_override: bool,
    /// The kids it trusts (empty when it could not be loaded).
    pub kids: Vec<String>,
}

/// Why no keyring could be used. One line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// None was named and this build embeds none (a build from source): `keyring_missing`.
    #[error("{0}")]
    Missing(String),
    /// The named (or embedded) keyring cannot be read or is not a valid keyring: `keyring_malformed`.
    #[error("{0}")]
    Malformed(String),
}

/// A validated set of trusted public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: BTreeMap<String, VerifyingKey>,
}

impl Keyring {
    /// Parses keyring JSON (see the module doc). The error is one line.
    pub fn parse(bytes: &[u8]) -> Result<Keyring, String> {
        let doc = Document::parse(bytes).map_err(|e| format!("not a keyring: {e}"))?;
        if doc.fields.is_empty() {
            return Err("the keyring holds no keys".into());
        }
        if doc.fields.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
        let mut keys = BTreeMap::new();
        for (kid, field) in &doc.fields {
            let Field::Scalar(Scalar::Str(b64)) = field else {
                return Err(format!(
                    "{kid:?}: the value must be a base64 public key string"
                ));
            };
            let key = decode_public_key(b64).map_err(|e| format!("{kid:?}: {e}"))?;
            let want = kid_of(&key);
            if *kid != want {
                return Err(format!(
                    "{kid:?}: the kid of this key is {want} (kid = first 16 hex digits of sha256 of the key)"
                ));
            }
            keys.insert(want, key);
        }
        Ok(Keyring { keys })
    }

    /// The production keyring compiled into a release binary; `Err` (one line) when this build has
    /// none or the one it was given is not a keyring.
    pub fn builtin() -> Result<Keyring, KeyringError> {
        let text = BUILTIN_KEYRING.ok_or_else(|| {
            KeyringError::Missing(format!(
                "this build trusts no production key (built from source): name a keyring with --keyring or {KEYRING_ENV}"
            ))
        })?;
        Keyring::parse(text.as_bytes())
            .map_err(|e| KeyringError::Malformed(format!("the built-in keyring: {e}")))
    }

    /// A keyring of the given keys (for tests and `license keygen`).
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> Keyring {
        Keyring {
            keys: keys.into_iter().map(|k| (kid_of(&k), k)).collect(),
        }
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    pub fn kids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    pub fn keys(&self) -> impl Iterator<Item = (&str, &VerifyingKey)> {
        self.keys.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The keyring file text: `{kid: key}` sorted, pretty, with a final newline.
    pub fn to_json(&self) -> String {
        let m: BTreeMap<&str, String> = self
            .keys
            .iter()
            .map(|(k, v)| (k.as_str(), STANDARD.encode(v.as_bytes())))
            .collect();
        let mut s = serde_json::to_string_pretty(&m).expect("keyrings serialize");
        s.push('\n');
        s
    }

    /// Adds a key (replacing nothing: a kid names exactly one key).
    pub fn insert(&mut self, key: VerifyingKey) {
        self.keys.insert(kid_of(&key), key);
    }
}

/// Decodes standard base64 (with padding, canonical trailing bits) of a 32-byte ed25519 public key
/// that is a valid, non-weak curve point.
pub fn decode_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let raw = STANDARD
        .decode(b64)
        .map_err(|e| format!("the public key is not standard base64 ({e})"))?;
    let raw: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("the public key has {} bytes, not 32", raw.len()))?;
    let key = VerifyingKey::from_bytes(&raw)
        .map_err(|_| "the public key is not a valid ed25519 point".to_string())?;
    if key.is_weak() {
        return Err("the public key is a weak (small-order) point".into());
    }
    Ok(key)
}

/// Loads the keyring a run must use: `--keyring` first, then `MODEKEEPER_KEYRING` (when set and
/// non-empty), else the built-in production keyring (an error in a build without one). `env` is the variable's value, passed in so
/// callers and tests decide where it comes from. The error (one line) says which reason applies;
/// the info is returned in both cases so reports can say which keyring failed.
pub fn resolve_keyring(
    flag: Option<&Path>,
    env: Option<OsString>,
) -> (KeyringInfo, Result<Keyring, KeyringError>) {
    let (source, path) = match (flag, env.filter(|v| !v.is_empty())) {
        (Some(p), _) => (KeyringSource::Flag, Some(p.to_path_buf())),
        (None, Some(v)) => (KeyringSource::Env, Some(PathBuf::from(v))),
        (None, None) => (KeyringSource::Builtin, None),
    };
    let result = match &path {
        None => Keyring::builtin(),
        Some(p) => load_keyring_file(p).map_err(KeyringError::Malformed),
    };
    let info = KeyringInfo {
        is_override: source != KeyringSource::Builtin,
        source,
        path,
        kids: result.as_ref().map(Keyring::kids).unwrap_or_default(),
    };
    (info, result)
}

fn load_keyring_file(path: &Path) -> Result<Keyring, String> {
    let shown = path.display();
    let bytes = crate::fsio::read_capped(path, super::canonical::MAX_DOCUMENT_BYTES as u64)
        .map_err(|e| format!("{shown}: cannot read the keyring: {e}"))?;
    Keyring::parse(&bytes).map_err(|e| format!("{shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> VerifyingKey {
        SigningKey::from_bytes(&[seed; 32]).verifying_key()
    }

    #[test]
    fn a_source_build_embeds_no_production_key_unless_given_one() {
        // build.rs embeds a keyring only when the build was given one (a release build).
        match option_env!("MODEKEEPER_PRODUCTION_KEYRING").filter(|v| !v.is_empty()) {
            None => {
                assert_eq!(BUILTIN_KEYRING, None);
                let e = Keyring::builtin().unwrap_err();
                assert!(matches!(e, KeyringError::Missing(_)), "{e}");
                let e = e.to_string();
                assert!(e.contains("trusts no production key"), "{e}");
                assert!(e.contains("--keyring") && e.contains(KEYRING_ENV), "{e}");
            }
            Some(path) => {
                let given = std::fs::read_to_string(path).unwrap();
                assert_eq!(BUILTIN_KEYRING, Some(given.as_str()));
                let ring = Keyring::builtin().expect("the release keyring is valid");
                assert!(!ring.kids().is_empty());
            }
        }
        // The compromised key of the first release is in no build, whatever it was given.
        if let Ok(ring) = Keyring::builtin() {
            assert!(ring.get("170ede17c5f0bd50").is_none());
        }
    }

    #[test]
    fn builtin_keyring_trusts_no_key_with_a_guessable_seed() {
        // The first implementation shipped keys derived from bytes(0..32) and bytes(32..64).
        let Ok(ring) = Keyring::builtin() else {
            return; // a source build trusts no key at all
        };
        let mut seeds: Vec<[u8; 32]> = (0..=255u8).map(|b| [b; 32]).collect();
        seeds.push(std::array::from_fn(|i| i as u8));
        seeds.push(std::array::from_fn(|i| i as u8 + 32));
        for seed in seeds {
            let kid = kid_of(&SigningKey::from_bytes(&seed).verifying_key());
            assert!(ring.get(&kid).is_none(), "seed {seed:?} is trusted");
        }
    }

    #[test]
    fn round_trips_and_checks_kids() {
        let ring = Keyring::from_keys([key(1), key(2)]);
        let text = ring.to_json();
        assert_eq!(Keyring::parse(text.as_bytes()).unwrap(), ring);

        let b64 = STANDARD.encode(key(1).as_bytes());
        let wrong_kid = format!(r#"{{"0000000000000000": "{b64}"}}"#);
        assert!(
            Keyring::parse(wrong_kid.as_bytes())
                .unwrap_err()
                .contains("the kid of this key is")
        );
    }

    #[test]
    fn rejects_bad_entries_whole() {
        let good = Keyring::from_keys([key(1)]).to_json();
        for bad in [
            "{}".to_string(),
            "[]".to_string(),
            r#"{"a": 1}"#.to_string(),
            r#"{"a": "not base64!"}"#.to_string(),
            format!(r#"{{"a": "{}"}}"#, STANDARD.encode([7u8; 31])),
            // The identity point is a weak key.
            {
                let mut id = [0u8; 32];
                id[0] = 1;
                let k = STANDARD.encode(id);
                format!(r#"{{"x": "{k}"}}"#)
            },
            good.replace('}', r#", "0123456789abcdef": "AAAA"}"#),
        ] {
            assert!(Keyring::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolution_order_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        std::fs::write(&p, Keyring::from_keys([key(3)]).to_json()).unwrap();

        let (info, ring) = resolve_keyring(None, None);
        assert_eq!(info.source, KeyringSource::Builtin);
        assert!(!info.is_override);
        assert_eq!(ring, Keyring::builtin());
        assert_eq!(
            info.kids,
            Keyring::builtin().map(|k| k.kids()).unwrap_or_default()
        );

        let (info, ring) = resolve_keyring(None, Some(p.clone().into_os_string()));
        assert_eq!(info.source, KeyringSource::Env);
        assert!(info.is_override);
        assert_eq!(info.kids, vec![kid_of(&key(3))]);
        assert!(ring.is_ok());

        let (info, _) = resolve_keyring(Some(&p), Some("/nonexistent".into()));
        assert_eq!(info.source, KeyringSource::Flag);

        let (info, _) = resolve_keyring(None, Some(OsString::new()));
        assert_eq!(info.source, KeyringSource::Builtin);

        let (info, ring) = resolve_keyring(Some(Path::new("/nonexistent/k.json")), None);
        assert!(info.kids.is_empty() && info.is_override);
        assert!(
            ring.unwrap_err()
                .to_string()
                .contains("cannot read the keyring")
        );
    }
}
