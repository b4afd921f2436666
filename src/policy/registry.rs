//! Where policies come from: the components embedded in the binary (policies/dist/, pinned by
//! policies/dist/policies.lock) and a policy directory that `policy add` fills, with its own lock.
//! Lock entries pin each component by sha256; `verify` re-hashes the bytes against them.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cache::sha256_hex;
use super::error::PolicyError;
use super::metadata::{PolicyMetadata, read_metadata};

/// The components built by scripts/build-policies.sh, embedded so a plain `cargo install` needs no
/// wasm toolchain.
const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "safe-chords.wasm",
        include_bytes!("../../policies/dist/safe-chords.wasm"),
    ),
    (
        "timeout-guard.wasm",
        include_bytes!("../../policies/dist/timeout-guard.wasm"),
    ),
    (
        "comm-congestion.wasm",
        include_bytes!("../../policies/dist/comm-congestion.wasm"),
    ),
];
const EMBEDDED_LOCK: &str = include_str!("../../policies/dist/policies.lock");

/// Component files larger than this are not policies (the built ones are well under 1 MiB).
pub const MAX_COMPONENT_BYTES: u64 = 16 * 1024 * 1024;

/// The policy `closed-loop run` and `policy test` use when none is named.
pub const DEFAULT_POLICY: &str = "safe-chords";
pub const LOCK_FILE: &str = "policies.lock";
const LOCK_SCHEMA: &str = "modekeeper.policy-lock.v1";
/// A lock lists a handful of components; a larger file is not one.
const MAX_LOCK_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    pub name: String,
    pub version: String,
    pub wit_version: String,
    pub file: String,
    pub sha256: String,
    pub advanced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub schema: String,
    pub policies: Vec<LockEntry>,
}

impl Lock {
    fn empty() -> Lock {
        Lock {
            schema: LOCK_SCHEMA.into(),
            policies: Vec::new(),
        }
    }

    pub fn parse(text: &str) -> Result<Lock, PolicyError> {
        let lock: Lock = serde_json::from_str(text)
            .map_err(|e| PolicyError::Lock(format!("unreadable lock file: {e}")))?;
        if lock.schema != LOCK_SCHEMA {
            return Err(PolicyError::Lock(format!(
                "lock schema {:?}, expected {LOCK_SCHEMA}",
                lock.schema
            )));
        }
        Ok(lock)
    }

    pub fn embedded() -> Lock {
        Lock::parse(EMBEDDED_LOCK).expect("policies/dist/policies.lock is built by xtask")
    }

    /// The lock of a policy directory (empty when the directory has none yet).
    pub fn read(dir: &Path) -> Result<Lock, PolicyError> {
        let path = dir.join(LOCK_FILE);
        match crate::fsio::read_capped_text(&path, MAX_LOCK_BYTES) {
            Ok(t) => Lock::parse(&t),
            Err(e) if e.is_not_found() => Ok(Lock::empty()),
            Err(crate::fsio::ReadError::Open(e) | crate::fsio::ReadError::Read(e)) => Err(e.into()),
            Err(e) => Err(PolicyError::Lock(format!("{}: {e}", path.display()))),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<PathBuf, PolicyError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(
            &mut tmp,
            (serde_json::to_string_pretty(self).expect("lock serializes") + "\n").as_bytes(),
        )?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }

    fn entry_for(meta: &PolicyMetadata, file: &str, sha: &str) -> LockEntry {
        LockEntry {
            name: meta.id.clone(),
            version: meta.version.clone(),
            wit_version: meta.wit_version.clone(),
            file: file.into(),
            sha256: sha.into(),
            advanced: meta.advanced,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Embedded,
    Dir(PathBuf),
    File(PathBuf),
}

impl Origin {
    pub fn describe(&self) -> String {
        match self {
            Origin::Embedded => "embedded".into(),
            Origin::Dir(p) | Origin::File(p) => p.display().to_string(),
        }
    }
}

/// One available component, its metadata already read (nothing compiled yet).
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub meta: PolicyMetadata,
    pub sha256: String,
    pub origin: Origin,
    pub bytes: Cow<'static, [u8]>,
}

impl PolicySource {
    pub fn from_file(path: &Path) -> Result<PolicySource, PolicyError> {
        let bytes = read_component(path)?;
        let meta = read_metadata(&bytes).map_err(|e| match e {
            PolicyError::NotAComponent(m) => {
                PolicyError::NotAComponent(format!("{}: {m}", path.display()))
            }
            PolicyError::Metadata(m) => PolicyError::Metadata(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(PolicySource {
            sha256: sha256_hex(&bytes),
            meta,
            origin: Origin::File(path.to_path_buf()),
            bytes: Cow::Owned(bytes),
        })
    }
}

/// `$MODEKEEPER_POLICY_DIR`, else `$XDG_DATA_HOME/modekeeper/policies`, else
/// `~/.local/share/modekeeper/policies`.
pub fn default_policy_dir() -> Option<PathBuf> {
    crate::fsio::env_path("MODEKEEPER_POLICY_DIR").or_else(|| {
        crate::fsio::xdg_base("XDG_DATA_HOME", ".local/share")
            .map(|d| d.join("modekeeper").join("policies"))
    })
}

/// Every policy available: embedded first, then the policy directory's locked components.
#[derive(Debug, Clone, Default)]
pub struct PolicyCatalog {
    pub sources: Vec<PolicySource>,
}

impl PolicyCatalog {
    pub fn embedded() -> PolicyCatalog {
        let sources = EMBEDDED
            .iter()
            .map(|(_, bytes)| PolicySource {
                meta: read_metadata(bytes).expect("embedded policies carry metadata"),
                sha256: sha256_hex(bytes),
                origin: Origin::Embedded,
                bytes: Cow::Borrowed(*bytes),
            })
            .collect();
        PolicyCatalog { sources }
    }

    /// Embedded policies plus those recorded in `dir`'s lock (a missing directory adds nothing).
    pub fn load(dir: Option<&Path>) -> Result<PolicyCatalog, PolicyError> {
        let mut cat = PolicyCatalog::embedded();
        if let Some(dir) = dir {
            for e in Lock::read(dir)?.policies {
                let path = dir.join(&e.file);
                let mut src = PolicySource::from_file(&path)?;
                if src.sha256 != e.sha256 {
                    return Err(PolicyError::Lock(format!(
                        "{} has sha256 {} but the lock pins {} (run `policy verify`)",
                        path.display(),
                        src.sha256,
                        e.sha256
                    )));
                }
                src.origin = Origin::Dir(path);
                cat.sources.push(src);
            }
        }
        Ok(cat)
    }

    /// A policy by id (the policy directory's copy wins over the embedded one), by `id@version`,
    /// or by a path to a component file.
    pub fn find(&self, what: &str) -> Result<PolicySource, PolicyError> {
        let (id, version) = what
            .split_once('@')
            .map_or((what, None), |(i, v)| (i, Some(v)));
        let hit = self.sources.iter().rev().find(|s| {
            s.meta.id == id
                && version.is_none_or(|v| {
                    s.meta.version == v || s.sha256.starts_with(v.trim_start_matches("sha256:"))
                })
        });
        if let Some(s) = hit {
            return Ok(s.clone());
        }
        let path = Path::new(what);
        if what.ends_with(".wasm") || path.is_file() {
            return PolicySource::from_file(path);
        }
        Err(PolicyError::UnknownPolicy(what.into()))
    }
}

impl PolicyCatalog {
    /// The policy ids of `wanted`, which names advanced policies by id or by a chord they provide
    /// (`TIMEOUT-GUARD`), without repeats. `Err` carries the chord no advanced policy provides.
    pub fn advanced_ids(&self, wanted: &[String]) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for w in wanted {
            let id = if crate::passport::ChordId::parse(w).is_some() {
                self.sources
                    .iter()
                    .rev()
                    .find(|s| s.meta.advanced && s.meta.chords.iter().any(|c| c == w))
                    .map(|s| s.meta.id.clone())
                    .ok_or_else(|| w.clone())?
            } else {
                w.clone()
            };
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }
}

/// Copies a component into `dir` as `<id>-<version>.wasm` and records it in the lock (replacing an
/// entry with the same id and version).
pub fn add_policy(dir: &Path, component: &Path) -> Result<LockEntry, PolicyError> {
    let src = PolicySource::from_file(component)?;
    std::fs::create_dir_all(dir)?;
    let file = format!("{}-{}.wasm", src.meta.id, src.meta.version);
    let target = dir.join(&file);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &src.bytes)?;
    tmp.persist(&target).map_err(|e| e.error)?;
    let mut lock = Lock::read(dir)?;
    lock.policies
        .retain(|e| !(e.name == src.meta.id && e.version == src.meta.version));
    let entry = Lock::entry_for(&src.meta, &file, &src.sha256);
    lock.policies.push(entry.clone());
    lock.policies
        .sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    lock.write(dir)?;
    Ok(entry)
}

/// Rewrites `dir`'s lock from the components present in it.
pub fn lock_dir(dir: &Path) -> Result<Lock, PolicyError> {
    let mut lock = Lock::empty();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    for path in files {
        let src = PolicySource::from_file(&path)?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        lock.policies
            .push(Lock::entry_for(&src.meta, &file, &src.sha256));
    }
    lock.write(dir)?;
    Ok(lock)
}

/// One lock entry checked against the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyResult {
    pub name: String,
    pub version: String,
    pub location: String,
    pub locked_sha256: String,
    pub actual_sha256: Option<String>,
    /// `ok`, `mismatch`, `missing`, `unlocked` (a component the lock does not list), `bad_metadata`.
    pub status: &'static str,
}

/// Re-hashes the embedded components against the embedded lock and, with `dir`, the directory's
/// components against its lock.
pub fn verify(dir: Option<&Path>) -> Result<Vec<VerifyResult>, PolicyError> {
    let mut out = Vec::new();
    let embedded = Lock::embedded();
    for e in &embedded.policies {
        let bytes = EMBEDDED.iter().find(|(f, _)| *f == e.file).map(|(_, b)| *b);
        out.push(check_entry(e, "embedded".into(), bytes.map(|b| b.to_vec())));
    }
    for (f, _) in EMBEDDED {
        if !embedded.policies.iter().any(|e| e.file == *f) {
            out.push(unlocked(f, "embedded".into()));
        }
    }
    if let Some(dir) = dir {
        let lock = Lock::read(dir)?;
        for e in &lock.policies {
            let path = dir.join(&e.file);
            out.push(check_entry(
                e,
                path.display().to_string(),
                read_component(&path).ok(),
            ));
        }
        if dir.is_dir() {
            for p in std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())) {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if p.extension().is_some_and(|x| x == "wasm")
                    && !lock.policies.iter().any(|e| e.file == name)
                {
                    out.push(unlocked(&name, p.display().to_string()));
                }
            }
        }
    }
    Ok(out)
}

/// A component file's bytes: a regular file within [`MAX_COMPONENT_BYTES`]; anything else is not a
/// component (a FIFO or a device is refused before it is read).
fn read_component(path: &Path) -> Result<Vec<u8>, PolicyError> {
    use crate::fsio::ReadError;
    crate::fsio::read_capped(path, MAX_COMPONENT_BYTES).map_err(|e| match e {
        ReadError::Open(io) | ReadError::Read(io) => PolicyError::Io(std::io::Error::new(
            io.kind(),
            format!("{}: {io}", path.display()),
        )),
        e => PolicyError::NotAComponent(format!("{}: {e}", path.display())),
    })
}

fn check_entry(e: &LockEntry, location: String, bytes: Option<Vec<u8>>) -> VerifyResult {
    let actual = bytes.as_ref().map(|b| sha256_hex(b));
    let status = match &bytes {
        None => "missing",
        Some(b) if sha256_hex(b) != e.sha256 => "mismatch",
        Some(b) => match read_metadata(b) {
            Ok(m) if m.id == e.name && m.version == e.version && m.wit_version == e.wit_version => {
                "ok"
            }
            _ => "bad_metadata",
        },
    };
    VerifyResult {
        name: e.name.clone(),
        version: e.version.clone(),
        location,
        locked_sha256: e.sha256.clone(),
        actual_sha256: actual,
        status,
    }
}

fn unlocked(file: &str, location: String) -> VerifyResult {
    VerifyResult {
        name: file.trim_end_matches(".wasm").into(),
        version: String::new(),
        location,
        locked_sha256: String::new(),
        actual_sha256: None,
        status: "unlocked",
    }
}
