//! Files only this user may read or write: secret keys (the evidence key, the policy-cache MAC key)
//! and the entries of a private cache. One place decides what "private" means, so the evidence seal
//! and the policy cache cannot drift apart: a private file is a regular file (never followed through
//! a symlink), owned by the effective user, with none of the caller's forbidden mode bits; a new one
//! is created `0600` (never overwritten) in a directory created `0700`.

use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// Group and other may neither read nor write (secret keys).
pub const SECRET: u32 = 0o077;
/// Group and other may not write (private directories, cache entries).
pub const NOT_SHARED_WRITE: u32 = 0o022;

/// Why a private file or directory was refused. Displayed without the path: callers say which.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    #[error("{0}")]
    Io(#[source] io::Error),
    #[error("not readable as a plain file ({0})")]
    NotPlain(#[source] io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("not a directory")]
    NotDir,
    #[error("owned by uid {owner}, not {me}")]
    Owner { owner: u32, me: u32 },
    #[error("{what} by others (mode {mode:o})")]
    Mode { what: &'static str, mode: u32 },
    #[error("larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// Owned by this user, and none of the `forbidden` mode bits set.
#[cfg(unix)]
pub fn check_owner_and_bits(meta: &Metadata, forbidden: u32) -> Result<(), PrivateError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(PrivateError::Owner {
            owner: meta.uid(),
            me,
        });
    }
    let bad = meta.mode() & forbidden;
    if bad != 0 {
        let what = if bad & 0o022 != 0 {
            "writable"
        } else {
            "readable"
        };
        return Err(PrivateError::Mode {
            what,
            mode: meta.mode() & 0o777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn check_owner_and_bits(_: &Metadata, _: u32) -> Result<(), PrivateError> {
    Ok(())
}

/// Whether `dir` is a directory of this user's that others cannot write; with `create`, a missing
/// one (and its missing parents) is created `0700`. A missing directory without `create` is fine:
/// there is nothing in it to trust.
pub fn check_private_dir(dir: &Path, create: bool) -> Result<(), PrivateError> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            create_dir_0700(dir)?;
            std::fs::metadata(dir).map_err(PrivateError::Io)?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PrivateError::Io(e)),
    };
    if !meta.is_dir() {
        return Err(PrivateError::NotDir);
    }
    check_owner_and_bits(&meta, NOT_SHARED_WRITE)
}

fn create_dir_0700(dir: &Path) -> Result<(), PrivateError> {
    let mut b = DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    match b.create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(PrivateError::Io(e)),
    }
}

/// The bytes of the private file at `path` (at most `limit`), `Ok(None)` when it does not exist.
/// A symlink, a special file (opened without blocking), a file another user owns or one with any of
/// the `forbidden` mode bits is refused before a byte is read.
pub fn read_private(
    path: &Path,
    limit: u64,
    forbidden: u32,
) -> Result<Option<Vec<u8>>, PrivateError> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    let f: File = match crate::fsio::no_follow(&mut opts).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PrivateError::NotPlain(e)),
    };
    let meta = f.metadata().map_err(PrivateError::Io)?;
    if !meta.is_file() {
        return Err(PrivateError::NotRegular);
    }
    check_owner_and_bits(&meta, forbidden)?;
    if meta.len() > limit {
        return Err(PrivateError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(PrivateError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(PrivateError::TooLarge { limit });
    }
    Ok(Some(bytes))
}

/// The secret key file at `path` (read with [`SECRET`] checks, at most `limit` bytes); when there
/// is none, 32 bytes of OS randomness are made, `encode`d and written to a new `0600` file (the
/// parent directory is created `0700` if missing). A file another process created first is read
/// instead, never overwritten. Returns the file's bytes.
pub fn read_or_create_secret(
    path: &Path,
    limit: u64,
    encode: impl FnOnce(&[u8; 32]) -> Vec<u8>,
) -> Result<Vec<u8>, PrivateError> {
    if let Some(bytes) = read_private(path, limit, SECRET)? {
        return Ok(bytes);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir_0700(dir)?;
    }
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret)
        .map_err(|e| PrivateError::Io(io::Error::other(format!("no randomness: {e}"))))?;
    let contents = encode(&secret);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match crate::fsio::no_follow(&mut opts).open(path) {
        Ok(mut f) => {
            f.write_all(&contents)
                .and_then(|()| f.sync_all())
                .map_err(PrivateError::Io)?;
            Ok(contents)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_private(path, limit, SECRET)?
            .ok_or(PrivateError::Io(io::ErrorKind::NotFound.into())),
        Err(e) => Err(PrivateError::Io(e)),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes a hex string (surrounding white space ignored) stands for; `None` if it is not hex.
pub fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    let s = s.trim_ascii();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_secret_is_created_private_once_and_refused_once_others_can_read_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state").join("k");
        let a = read_or_create_secret(&p, 64, |s| hex(s).into_bytes()).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        // Never overwritten.
        let b = read_or_create_secret(&p, 64, |_| b"other".to_vec()).unwrap();
        assert_eq!(a, b);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_or_create_secret(&p, 64, |_| Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "readable by others (mode 640)");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = read_private(&p, 64, SECRET).unwrap_err();
        assert_eq!(e.to_string(), "writable by others (mode 620)");
        // Others may read a cache entry, not write it.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_private(&p, 64, NOT_SHARED_WRITE).unwrap().is_some());
        assert!(matches!(
            read_private(&p, 63, NOT_SHARED_WRITE),
            Err(PrivateError::TooLarge { limit: 63 })
        ));
    }

    #[test]
    fn symlinks_devices_and_shared_directories_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            read_private(&link, 8, SECRET),
            Err(PrivateError::NotPlain(_))
        ));
        assert!(matches!(
            read_private(Path::new("/dev/zero"), 8, 0),
            Err(PrivateError::NotRegular | PrivateError::Owner { .. })
        ));
        assert!(
            read_private(&d.path().join("none"), 8, SECRET)
                .unwrap()
                .is_none()
        );
        let shared = d.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            check_private_dir(&shared, false).unwrap_err().to_string(),
            "writable by others (mode 777)"
        );
        assert!(matches!(
            check_private_dir(&target, true),
            Err(PrivateError::NotDir)
        ));
        let fresh = d.path().join("a").join("b");
        check_private_dir(&fresh, true).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(decode_hex(b" 00ab10\n").unwrap(), vec![0, 0xab, 0x10]);
        assert!(decode_hex(b"abc").is_none());
        assert!(decode_hex(b"zz").is_none());
    }
}
