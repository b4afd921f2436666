//! License signing keys on disk (`license keygen`, `license mint`). A key file is
//! `{"schema_version":"license_signing_key.v1","algorithm":"ed25519","kid":..,"seed_b64":..}`,
//! created with mode 0600 and never overwritten. This module is the only place that handles private
//! keys; nothing in a verifying path reads one.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use super::canonical::{Document, Field, Scalar};
use super::keyring::{Keyring, kid_of};

/// Schema of a signing key file.
pub const SIGNING_KEY_SCHEMA: &str = "license_signing_key.v1";

/// A fresh key from the operating system's random source.
pub fn generate_signing_key() -> anyhow::Result<SigningKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut seed[..])
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The key file text of `key`.
pub fn signing_key_json(key: &SigningKey) -> Zeroizing<String> {
    let seed = Zeroizing::new(STANDARD.encode(key.to_bytes()));
    Zeroizing::new(format!(
        "{{\n  \"schema_version\": \"{SIGNING_KEY_SCHEMA}\",\n  \"algorithm\": \"ed25519\",\n  \"kid\": \"{}\",\n  \"seed_b64\": \"{}\"\n}}\n",
        kid_of(&key.verifying_key()),
        seed.as_str()
    ))
}

/// Parses a key file; the kid it states must be the key's own.
pub fn parse_signing_key(bytes: &[u8]) -> Result<SigningKey, String> {
    let doc = Document::parse(bytes).map_err(|e| format!("not a signing key file: {e}"))?;
    let get = |k: &str| match doc.fields.get(k) {
        Some(Field::Scalar(Scalar::Str(s))) => Ok(s.as_str()),
        _ => Err(format!("{k}: missing or not a string")),
    };
    if doc.fields.len() != 4 {
        return Err("expected exactly schema_version, algorithm, kid, seed_b64".into());
    }
    if get("schema_version")? != SIGNING_KEY_SCHEMA || get("algorithm")? != "ed25519" {
        return Err(format!("not a {SIGNING_KEY_SCHEMA} ed25519 key"));
    }
    let seed = Zeroizing::new(
        STANDARD
            .decode(get("seed_b64")?)
            .map_err(|e| format!("seed_b64: not standard base64 ({e})"))?,
    );
    let seed: &[u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| "seed_b64: not 32 bytes".to_string())?;
    let key = SigningKey::from_bytes(seed);
    let kid = kid_of(&key.verifying_key());
    if get("kid")? != kid {
        return Err(format!("kid does not match the key (its kid is {kid})"));
    }
    Ok(key)
}

/// Reads a key file, refusing one that others may read (like ssh does).
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let shown = path.display();
    let cannot = |e| anyhow::anyhow!("{shown}: cannot read the signing key: {e}");
    let f = crate::fsio::open_regular(path).map_err(cannot)?;
    let meta = f
        .metadata()
        .map_err(|e| cannot(crate::fsio::ReadError::Read(e)))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{shown}: the signing key is accessible to others (mode {mode:o}); run chmod 600 on it"
            );
        }
    }
    let bytes = Zeroizing::new(crate::fsio::read_open_capped(f, 4096).map_err(|e| match e {
        crate::fsio::ReadError::TooLarge { .. } => {
            anyhow::anyhow!("{shown}: not a signing key file (too large)")
        }
        e => cannot(e),
    })?);
    parse_signing_key(&bytes).map_err(|e| anyhow::anyhow!("{shown}: {e}"))
}

/// What `license keygen` wrote.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub kid: String,
    pub private_key_path: PathBuf,
    pub keyring_path: PathBuf,
    pub public_key_b64: String,
}

/// Generates a key in `dir`: `license_signing_<kid>.key.json` (0600, created exclusively) and
/// `keyring.json` (the public key added to the keyring already there, if any, which must be valid).
pub fn keygen(dir: &Path) -> anyhow::Result<GeneratedKey> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let keyring_path = dir.join("keyring.json");
    let limit = super::canonical::MAX_DOCUMENT_BYTES as u64;
    let mut ring = match crate::fsio::read_capped(&keyring_path, limit) {
        Ok(b) => Keyring::parse(&b)
            .map_err(|e| anyhow::anyhow!("{}: {e}; not adding to it", keyring_path.display()))?,
        Err(e) if e.is_not_found() => Keyring::from_keys([]),
        Err(e) => anyhow::bail!("cannot read {}: {e}", keyring_path.display()),
    };
    let key = generate_signing_key()?;
    let kid = kid_of(&key.verifying_key());
    let private_key_path = dir.join(format!("license_signing_{kid}.key.json"));
    write_private(&private_key_path, signing_key_json(&key).as_bytes())?;
    ring.insert(key.verifying_key());
    crate::artifacts::write_atomic(&keyring_path, |w| w.write_all(ring.to_json().as_bytes()))?;
    // A keyring is public: readable by everyone who verifies licenses.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keyring_path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| anyhow::anyhow!("cannot chmod {}: {e}", keyring_path.display()))?;
    }
    Ok(GeneratedKey {
        kid,
        private_key_path,
        keyring_path,
        public_key_b64: STANDARD.encode(key.verifying_key().as_bytes()),
    })
}

/// Creates `path` exclusively with mode 0600 from the first byte on.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_0600_key_and_merges_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let a = keygen(dir.path()).unwrap();
        let b = keygen(dir.path()).unwrap();
        assert_ne!(a.kid, b.kid);
        let ring = Keyring::parse(&std::fs::read(&a.keyring_path).unwrap()).unwrap();
        assert_eq!(ring.kids().len(), 2);
        let key = load_signing_key(&a.private_key_path).unwrap();
        assert_eq!(kid_of(&key.verifying_key()), a.kid);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a.private_key_path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&a.private_key_path, std::fs::Permissions::from_mode(0o644))
                .unwrap();
            let e = load_signing_key(&a.private_key_path)
                .unwrap_err()
                .to_string();
            assert!(e.contains("accessible to others"), "{e}");
        }
    }

    #[test]
    fn key_file_kid_must_match() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let text = signing_key_json(&key);
        assert_eq!(
            parse_signing_key(text.as_bytes()).unwrap().to_bytes(),
            key.to_bytes()
        );
        let other = kid_of(&SigningKey::from_bytes(&[6; 32]).verifying_key());
        let forged = text.replace(&kid_of(&key.verifying_key()), &other);
        assert!(
            parse_signing_key(forged.as_bytes())
                .unwrap_err()
                .contains("kid does not match")
        );
    }
}
