//! On-disk cache of compiled policies, keyed by the engine's compatibility hash and the component's
//! sha256. Only files this module wrote into its own directory are ever deserialized, and each is
//! checked against the digest recorded next to it first (a truncated or corrupted file is
//! recompiled, never loaded).

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::PolicyError;

/// Where compiled policies go: `$MODEKEEPER_CACHE_DIR`, else `$XDG_CACHE_HOME/modekeeper`, else
/// `~/.cache/modekeeper`; `None` when none of these is known (then nothing is cached).
pub fn default_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("MODEKEEPER_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("modekeeper")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("modekeeper")))
}

/// Feeds a `Hash` into sha256, so the engine's compatibility hash becomes a stable file name.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A short, stable key of everything that makes compiled code compatible with this engine.
pub fn engine_key(engine: &Engine) -> String {
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    hex(&h.0.finalize()[..12])
}

#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
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
            dir: root
                .join("compiled")
                .join(format!("wasmtime-48.0.8-{}", engine_key(engine))),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, sha: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{sha}.cwasm")),
            self.dir.join(format!("{sha}.cwasm.sha256")),
        )
    }

    /// The cached compilation of the component with digest `sha`, if a valid one exists.
    pub fn load(&self, engine: &Engine, sha: &str) -> Option<Component> {
        let (code, digest) = self.paths(sha);
        let bytes = std::fs::read(&code).ok()?;
        let want = std::fs::read_to_string(&digest).ok()?;
        if sha256_hex(&bytes) != want.trim() {
            return None;
        }
        // SAFETY: `Component::deserialize` trusts its input to be wasmtime-compiled code. These bytes
        // were written by `store` below into our own cache directory (created 0700, files 0600), and
        // their sha256 matches the digest recorded alongside; wasmtime additionally refuses code
        // built by an incompatible engine.
        unsafe { Component::deserialize(engine, &bytes) }.ok()
    }

    /// Writes compiled code atomically (temp file + rename). Failures are returned, not fatal: the
    /// caller goes on with the compiled component.
    pub fn store(&self, sha: &str, compiled: &[u8]) -> Result<(), PolicyError> {
        let err = |e: std::io::Error| PolicyError::Cache(format!("{}: {e}", self.dir.display()));
        create_private_dir(&self.dir).map_err(err)?;
        let (code, digest) = self.paths(sha);
        write_atomic(&self.dir, &code, compiled).map_err(err)?;
        write_atomic(&self.dir, &digest, sha256_hex(compiled).as_bytes()).map_err(err)?;
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
