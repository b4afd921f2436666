//! On-disk cache of compiled policies, keyed by the engine's compatibility hash and the component's
//! sha256.
//!
//! Compiled code is native code: deserializing it runs whatever it says. So the cache vouches for an
//! entry only through something a planted file cannot carry. The cache directory (and every level
//! of it this module creates) must be owned by the current user and writable by nobody else; a
//! directory that is not is never read from or written to (the host compiles, with a warning). Each
//! entry `<sha>.cwasm` has a `<sha>.cwasm.mac` beside it: HMAC-SHA256, under a random 256-bit key kept
//! in `cache.key` (0600) in that private directory, of the engine's full compatibility hash, the
//! component's sha256 and the compiled bytes' sha256. Copying another policy's compiled code (and
//! its MAC) under this component's name, or code compiled for other engine settings, fails the MAC:
//! making a MAC that passes needs the key, that is read access to a directory only the user can read.
//! Everything that does not check out is compiled again, never loaded.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::hmac;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::PolicyError;
use crate::private_file::{
    NOT_SHARED_WRITE, PrivateError, SECRET, check_private_dir, decode_hex, hex,
    read_or_create_secret, read_private,
};

/// Where compiled policies go: `$MODEKEEPER_CACHE_DIR`, else `$XDG_CACHE_HOME/modekeeper`, else
/// `~/.cache/modekeeper`; `None` when none of these is known (then nothing is cached).
pub fn default_cache_dir() -> Option<PathBuf> {
    crate::fsio::env_path("MODEKEEPER_CACHE_DIR")
        .or_else(|| crate::fsio::xdg_base("XDG_CACHE_HOME", ".cache").map(|d| d.join("modekeeper")))
}

/// Feeds a `Hash` into sha256, so the engine's compatibility hash becomes stable bytes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 of everything that makes compiled code compatible with this engine.
fn engine_hash(engine: &Engine) -> [u8; 32] {
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.finalize().into()
}

/// A short, stable key of everything that makes compiled code compatible with this engine.
pub fn engine_key(engine: &Engine) -> String {
    hex(&engine_hash(engine)[..12])
}

/// What every MAC covers before the engine hash, so a MAC made for anything else never matches.
const MAC_DOMAIN: &[u8] = b"modekeeper-policy-cache-v1\0";
const KEY_FILE: &str = "cache.key";

#[derive(Debug)]
pub struct CompiledCache {
    root: PathBuf,
    dir: PathBuf,
    engine_hash: [u8; 32],
    /// Why the cache was not used, for the caller to show (each reason once).
    warnings: Mutex<Vec<String>>,
}

/// Where a component came from on this load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    /// Compiled now (and written to the cache when one is configured).
    Compiled,
}

impl CompiledCache {
    pub fn new(root: &Path, engine: &Engine) -> CompiledCache {
        CompiledCache {
            root: root.to_path_buf(),
            dir: root
                .join("compiled")
                .join(format!("wasmtime-48.0.8-{}", engine_key(engine))),
            engine_hash: engine_hash(engine),
            warnings: Mutex::new(Vec::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The reasons the cache was bypassed since the last call (each reason once per cache).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn warn(&self, w: String) {
        let mut ws = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if !ws.contains(&w) {
            ws.push(w);
        }
    }

    /// The value, or `None` with the error kept as a warning.
    fn noted<T>(&self, r: Result<Option<T>, String>) -> Option<T> {
        r.unwrap_or_else(|w| {
            self.warn(w);
            None
        })
    }

    fn paths(&self, sha: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{sha}.cwasm")),
            self.dir.join(format!("{sha}.cwasm.mac")),
        )
    }

    /// The levels of the cache path this module owns: the root, `compiled/`, the engine's directory.
    fn levels(&self) -> [PathBuf; 3] {
        [
            self.root.clone(),
            self.root.join("compiled"),
            self.dir.clone(),
        ]
    }

    /// What an entry's MAC covers: this engine's settings, the component's digest, the code.
    fn mac_message(&self, sha: &str, compiled: &[u8]) -> Vec<u8> {
        let mut m = MAC_DOMAIN.to_vec();
        m.extend_from_slice(&self.engine_hash);
        m.extend_from_slice(sha.as_bytes());
        m.push(0);
        m.extend_from_slice(&Sha256::digest(compiled));
        m
    }

    /// The cached compilation of the component with digest `sha`, if a valid one exists in a
    /// private cache directory. A cache that is not private is reported and skipped.
    pub fn load(&self, engine: &Engine, sha: &str) -> Option<Component> {
        if let Err(w) = self
            .levels()
            .iter()
            .try_for_each(|d| check_private_dir(d, false).map_err(|e| refused(d, e)))
        {
            self.warn(w);
            return None;
        }
        let (code, mac_path) = self.paths(sha);
        let bytes = self.noted(read_entry(&code, MAX_COMPILED_BYTES))?;
        let mac = self.noted(read_entry(&mac_path, 64))?;
        let key = self.noted(self.key(false))?;
        let tag = decode_hex(&mac)?;
        // Compared in constant time.
        if hmac::verify(&key, &self.mac_message(sha, &bytes), &tag).is_err() {
            return None;
        }
        // SAFETY: `Component::deserialize` trusts its input to be wasmtime-compiled code. These bytes
        // were read from a directory only this user can write, and their MAC (under a key only this
        // user can read) binds them to this component's digest and this engine's settings: they are
        // what `store` wrote for exactly this component. wasmtime also refuses code built by an
        // incompatible engine.
        unsafe { Component::deserialize(engine, &bytes) }.ok()
    }

    /// Writes compiled code atomically (temp file + rename), then its MAC. Failures are returned,
    /// not fatal: the caller goes on with the compiled component.
    pub fn store(&self, sha: &str, compiled: &[u8]) -> Result<(), PolicyError> {
        let warned = |w: String| {
            self.warn(w.clone());
            PolicyError::Cache(w)
        };
        for d in self.levels() {
            check_private_dir(&d, true).map_err(|e| warned(refused(&d, e)))?;
        }
        let key = self
            .key(true)
            .map_err(warned)?
            .ok_or_else(|| PolicyError::Cache("no cache key".into()))?;
        let (code, mac_path) = self.paths(sha);
        let io = |e: std::io::Error| PolicyError::Cache(format!("{}: {e}", self.dir.display()));
        write_atomic(&self.dir, &code, compiled).map_err(io)?;
        let tag = hmac::sign(&key, &self.mac_message(sha, compiled));
        write_atomic(&self.dir, &mac_path, hex(tag.as_ref()).as_bytes()).map_err(io)?;
        Ok(())
    }

    /// The MAC key in the cache root: read, or (with `create`) made from OS randomness. `Ok(None)`:
    /// there is none yet.
    fn key(&self, create: bool) -> Result<Option<hmac::Key>, String> {
        let path = self.root.join(KEY_FILE);
        // The key must not be readable by others either: with it, anyone could vouch for code.
        let bytes = if create {
            read_or_create_secret(&path, 32, |s| s.to_vec()).map(Some)
        } else {
            read_private(&path, 32, SECRET)
        };
        let not_a_key = || {
            format!(
                "{}: not a cache key; remove it to start a new cache",
                path.display()
            )
        };
        match bytes {
            Ok(Some(b)) if b.len() == 32 => Ok(Some(hmac::Key::new(hmac::HMAC_SHA256, &b))),
            Ok(Some(_)) | Err(PrivateError::TooLarge { .. }) => Err(not_a_key()),
            Ok(None) => Ok(None),
            Err(e) => Err(refused(&path, e)),
        }
    }
}

/// Compiled policies are a few MiB; a larger file in the cache is not one of ours.
const MAX_COMPILED_BYTES: u64 = 256 * 1024 * 1024;

/// The warning to show for a cache path that was refused.
fn refused(p: &Path, e: PrivateError) -> String {
    match e {
        PrivateError::Io(e) => format!("{}: {e}", p.display()),
        why => format!(
            "policy cache not used: {} is {why}; compiling instead (use a directory only you can write, or --no-cache)",
            p.display()
        ),
    }
}

/// A cache entry's bytes: `Ok(None)` when it is missing or too large to be one of ours.
fn read_entry(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    match read_private(path, limit, NOT_SHARED_WRITE) {
        Err(PrivateError::TooLarge { .. }) => Ok(None),
        r => r.map_err(|e| refused(path, e)),
    }
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // NamedTempFile creates the file 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
