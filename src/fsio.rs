//! Opening the files a user names. Every input file read whole (keyring, license, passport, plan,
//! policy component, kubeconfig, configs, reports) goes through [`read_capped`]: opened non-blocking
//! (a FIFO cannot hang `open()`), accepted only as a regular file (`/dev/zero` and FIFOs are refused
//! before a byte is read) and read through a size cap (a file that grows while it is read stops at
//! the cap). Artifacts appended in place are opened with [`no_follow`], so a symlink planted in an
//! output directory cannot redirect a write. Streamed inputs (telemetry traces) are not capped here:
//! the ingest bounds them line by line.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The cap on a JSON report or state file this tool wrote and reads back (verify reports, the
/// watch state, a replayed run): they are summaries, so a larger one is not ours.
pub const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;

/// Why an input file was not read. Displayed without the path: callers say which file it was.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// `open()` failed (missing, permission, …).
    #[error("{0}")]
    Open(#[source] io::Error),
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("larger than {}", shown_bytes(*limit))]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Read(#[source] io::Error),
    #[error("not UTF-8 text")]
    NotUtf8,
}

impl ReadError {
    /// The file does not exist (some inputs are optional).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Open(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// `64 KiB`, `16 MiB`: how a cap is named in messages.
pub fn shown_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n.is_multiple_of(1 << 20) => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n.is_multiple_of(1 << 10) => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Opens `path` for reading without blocking on a FIFO and without making a terminal the
/// controlling one, and checks that what was opened is a regular file.
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK | libc::O_NOCTTY);
    let f = opts.open(path).map_err(ReadError::Open)?;
    let meta = f.metadata().map_err(ReadError::Open)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind_of(&meta.file_type())));
    }
    Ok(f)
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// The whole of a regular file of at most `limit` bytes.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_open_capped(open_regular(path)?, limit)
}

/// The rest of a file [`open_regular`] opened (after the caller checked its metadata), capped.
pub fn read_open_capped(f: File, limit: u64) -> Result<Vec<u8>, ReadError> {
    let len = f.metadata().map_err(ReadError::Read)?.len();
    if len > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // The file may grow after the check: read one byte past the cap to notice.
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// [`read_capped`], as UTF-8 text.
pub fn read_capped_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_capped(path, limit)?).map_err(|_| ReadError::NotUtf8)
}

/// Adds `O_NOFOLLOW | O_NONBLOCK` to `opts` (for artifacts written in place): opening fails when
/// the last path component is a symlink, and a FIFO without a reader fails instead of blocking.
pub fn no_follow(opts: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(opts, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    opts
}

/// A non-empty environment variable, as a path (an empty value counts as unset).
pub fn env_path(var: &str) -> Option<PathBuf> {
    env_path_in(&|k| std::env::var_os(k), var)
}

/// An XDG base directory: `$<var>`, else `$HOME/<home_default>` (`.config`, `.cache`,
/// `.local/state`, `.local/share`); `None` when neither is set.
pub fn xdg_base(var: &str, home_default: &str) -> Option<PathBuf> {
    xdg_base_in(&|k| std::env::var_os(k), var, home_default)
}

fn env_path_in(get: &dyn Fn(&str) -> Option<OsString>, var: &str) -> Option<PathBuf> {
    get(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn xdg_base_in(
    get: &dyn Fn(&str) -> Option<OsString>,
    var: &str,
    home_default: &str,
) -> Option<PathBuf> {
    env_path_in(get, var).or_else(|| {
        let home = env_path_in(get, "HOME")?;
        Some(home_default.split('/').fold(home, |p, c| p.join(c)))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A FIFO nobody writes to, in a fresh temporary directory (keep the directory alive).
    #[cfg(unix)]
    pub(crate) fn fifo() -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        (d, fifo)
    }

    #[test]
    fn reads_regular_files_up_to_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_capped(&p, 5).unwrap(), b"12345");
        let e = read_capped(&p, 4).unwrap_err();
        assert_eq!(e.to_string(), "larger than 4 bytes");
        assert!(
            read_capped(&d.path().join("missing"), 5)
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(
            read_capped(d.path(), 5).unwrap_err().to_string(),
            "not a regular file (a directory)"
        );
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_capped_text(&p, 5), Err(ReadError::NotUtf8)));
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_without_blocking_or_reading() {
        let e = read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a character device)");

        // A FIFO nobody writes to: a blocking open() would never return.
        let (_d, fifo) = fifo();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read_capped(&fifo, 10).map(|_| ())));
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a FIFO must not block");
        assert_eq!(r.unwrap_err().to_string(), "not a regular file (a FIFO)");
    }

    #[cfg(unix)]
    #[test]
    fn no_follow_refuses_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut o = OpenOptions::new();
        o.append(true).create(true);
        assert!(no_follow(&mut o).open(&link).is_err());
        assert!(no_follow(&mut o).open(&target).is_ok());
    }

    #[test]
    fn caps_are_named_in_binary_units() {
        assert_eq!(shown_bytes(64 << 10), "64 KiB");
        assert_eq!(shown_bytes(16 << 20), "16 MiB");
        assert_eq!(shown_bytes(1000), "1000 bytes");
    }

    #[test]
    fn xdg_bases_fall_back_to_home_and_ignore_empty_values() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let get = env(&[("HOME", "/h"), ("XDG_STATE_HOME", "")]);
        assert_eq!(
            xdg_base_in(&get, "XDG_STATE_HOME", ".local/state"),
            Some(PathBuf::from("/h/.local/state"))
        );
        let get = env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/c")]);
        assert_eq!(
            xdg_base_in(&get, "XDG_CACHE_HOME", ".cache"),
            Some(PathBuf::from("/c"))
        );
        let get = env(&[("HOME", "")]);
        assert_eq!(xdg_base_in(&get, "XDG_CACHE_HOME", ".cache"), None);
        assert_eq!(env_path_in(&get, "HOME"), None);
    }
}
