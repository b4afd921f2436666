use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Writes `path` atomically: the bytes go to a temporary file in the same directory, which is synced
/// and renamed over the target.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> anyhow::Result<()> {
    write_atomic_with(path, true, write)
}

/// [`write_atomic`]; `durable = false` skips the fsync before the rename: readers still see the old
/// file or the whole new one, but a power loss right after may lose the new one.
pub fn write_atomic_with(
    path: &Path,
    durable: bool,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".modekeeper-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        write(&mut w).with_context(|| format!("cannot write {}", path.display()))?;
        w.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if durable {
        // A durable write that did not reach the disk must fail: apply relies on it (the rollback
        // plan before the first PATCH).
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("cannot sync {}", path.display()))?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The output directory of one command run.
#[derive(Debug, Clone)]
pub struct OutDir {
    dir: PathBuf,
    stamp: String,
    durable: bool,
}

impl OutDir {
    /// Creates the directory. `now` fixes the run's timestamp used in file names.
    pub fn create(dir: &Path, now: DateTime<Utc>) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        // Millisecond resolution: two runs in the same second must not overwrite each other.
        let stamp = now
            .format("%Y%m%dT%H%M%S%.3fZ")
            .to_string()
            .replace('.', "_");
        Ok(OutDir {
            dir: dir.to_path_buf(),
            stamp,
            durable: true,
        })
    }

    /// Artifacts that can be derived again from their inputs (a plan-only run is replayable byte
    /// for byte) are written without an fsync each: still atomic for readers, and a run stays fast
    /// on disks where every fsync costs milliseconds. Apply paths and state files keep the default.
    pub fn without_fsync(mut self) -> Self {
        self.durable = false;
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `<name>_<stamp>.json` and `<name>_latest.json`; returns both paths.
    pub fn write_report<T: Serialize>(
        &self,
        name: &str,
        report: &T,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let mut bytes = serde_json::to_vec_pretty(report)?;
        bytes.push(b'\n');
        let stamped = self.path(&format!("{name}_{}.json", self.stamp));
        let latest = self.path(&format!("{name}_latest.json"));
        write_atomic_with(&stamped, self.durable, |w| w.write_all(&bytes))?;
        write_atomic_with(&latest, self.durable, |w| w.write_all(&bytes))?;
        Ok((stamped, latest))
    }

    /// Writes a JSON document without a timestamped twin.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> anyhow::Result<PathBuf> {
        let mut bytes = serde_json::to_vec_pretty(value)?;
        bytes.push(b'\n');
        let p = self.path(name);
        write_atomic_with(&p, self.durable, |w| w.write_all(&bytes))?;
        Ok(p)
    }

    /// Writes a text file atomically.
    pub fn write_text(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let p = self.path(name);
        write_atomic_with(&p, self.durable, |w| w.write_all(text.as_bytes()))?;
        Ok(p)
    }

    /// Opens a temporary file for a streamed artifact (one line per window); [`StreamedFile::commit`]
    /// renames it into place, dropping it without commit leaves nothing behind.
    pub fn stream(&self, name: &str) -> anyhow::Result<StreamedFile> {
        let tmp = tempfile::Builder::new()
            .prefix(".modekeeper-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot create a temporary file in {}", self.dir.display()))?;
        let file = tmp.reopen()?;
        Ok(StreamedFile {
            tmp,
            w: BufWriter::with_capacity(256 * 1024, file),
            target: self.path(name),
        })
    }
}

/// A file written incrementally and published atomically at the end.
pub struct StreamedFile {
    tmp: tempfile::NamedTempFile,
    w: BufWriter<File>,
    target: PathBuf,
}

impl StreamedFile {
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        &mut self.w
    }

    pub fn commit(mut self) -> anyhow::Result<PathBuf> {
        self.w
            .flush()
            .with_context(|| format!("cannot write {}", self.target.display()))?;
        self.tmp
            .persist(&self.target)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", self.target.display()))?;
        Ok(self.target)
    }
}
