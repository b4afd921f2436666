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

/// Timestamped reports kept per report name unless `--keep` says otherwise.
pub const DEFAULT_KEEP: usize = 20;

/// The output directory of one command run.
#[derive(Debug, Clone)]
pub struct OutDir {
    dir: PathBuf,
    stamp: String,
    durable: bool,
    /// Timestamped reports kept per name (0 keeps all).
    keep: usize,
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
            keep: DEFAULT_KEEP,
        })
    }

    /// How many `<name>_<timestamp>.json` reports [`OutDir::write_report`] leaves per name (the
    /// newest; 0 keeps all).
    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = keep;
        self
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
        if self.keep > 0 {
            prune_stamped(&self.dir, name, self.keep).with_context(|| {
                format!("cannot prune old {name} reports in {}", self.dir.display())
            })?;
        }
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

/// True for `<name>_<YYYYMMDD>T<HHMMSS>_<mmm>Z.json`, the names [`OutDir::write_report`] gives.
fn is_stamped_report(file: &str, name: &str) -> bool {
    let Some(stamp) = file
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix('_'))
        .and_then(|r| r.strip_suffix("Z.json"))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 19
        && b[8] == b'T'
        && b[15] == b'_'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 8 | 15) || c.is_ascii_digit())
}

/// Deletes all but the newest `keep` timestamped `name` reports in `dir`. Only regular files with
/// exactly our names are touched: a symlink, a directory or any other file is left alone (a link is
/// never followed), so a user's own files in `--out` are safe.
pub fn prune_stamped(dir: &Path, name: &str, keep: usize) -> io::Result<usize> {
    let mut found: Vec<String> = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Some(file) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        // DirEntry::file_type does not follow symlinks.
        if is_stamped_report(&file, name) && e.file_type()?.is_file() {
            found.push(file);
        }
    }
    // The stamp sorts chronologically.
    found.sort_unstable();
    let excess = found.len().saturating_sub(keep);
    for f in &found[..excess] {
        match fs::remove_file(dir.join(f)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(excess)
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

/// Marks a written script executable (rwxr-xr-x); nothing to do where there are no mode bits.
#[cfg(unix)]
pub fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| anyhow::anyhow!("cannot make {} executable: {e}", path.display()))
}

#[cfg(not(unix))]
pub fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_stamped_names_match() {
        assert!(is_stamped_report(
            "observe_20260101T000000_123Z.json",
            "observe"
        ));
        for other in [
            "observe_latest.json",
            "observe_windows.jsonl",
            "observe_20260101T000000_123Z.json.bak",
            "observe_2026010100000_123Z.json",
            "observe_20260101X000000_123Z.json",
            "my_observe_20260101T000000_123Z.json",
            "observe_x0260101T000000_123Z.json",
        ] {
            assert!(!is_stamped_report(other, "observe"), "{other}");
        }
        assert!(!is_stamped_report(
            "k8s_verify_20260101T000000_123Z.json",
            "k8s"
        ));
    }

    #[test]
    fn write_report_keeps_the_newest_and_leaves_everything_else() {
        let d = tempfile::tempdir().unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let other = d.path().join("observe_19990101T000000_000Z.json.keep");
        fs::write(&other, "mine").unwrap();
        // A link with our name pattern, to a file outside: neither it nor its target is touched.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious.json");
        fs::write(&target, "precious").unwrap();
        let link = d.path().join("observe_19990101T000000_001Z.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for i in 0..5 {
            let out = OutDir::create(d.path(), t0 + chrono::Duration::seconds(i))
                .unwrap()
                .keep(3);
            out.write_report("observe", &serde_json::json!({"i": i}))
                .unwrap();
            out.write_report("closed_loop", &serde_json::json!({"i": i}))
                .unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("observe_2"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "observe_20260101T000002_000Z.json",
                "observe_20260101T000003_000Z.json",
                "observe_20260101T000004_000Z.json"
            ]
        );
        let closed = fs::read_dir(d.path())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name().into_string().unwrap();
                n.starts_with("closed_loop_2")
            })
            .count();
        assert_eq!(closed, 3, "each report name is pruned on its own");
        assert!(d.path().join("observe_latest.json").exists());
        assert_eq!(fs::read_to_string(&other).unwrap(), "mine");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
        // keep 0: nothing is deleted.
        let out = OutDir::create(d.path(), t0 + chrono::Duration::seconds(9))
            .unwrap()
            .keep(0);
        out.write_report("observe", &serde_json::json!({})).unwrap();
        assert_eq!(prune_stamped(d.path(), "observe", 100).unwrap(), 0);
        assert_eq!(prune_stamped(d.path(), "observe", 1).unwrap(), 3);
    }
}
