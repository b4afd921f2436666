//! The on-disk cache of compiled policies: keyed by engine and component digest, reused across hosts,
//! and never trusted when its bytes do not match the digest recorded beside them.

use modekeeper::policy::{PolicyCatalog, PolicyHost, SandboxLimits, sha256_hex};

#[test]
fn compiled_code_is_cached_reused_and_never_loaded_when_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let src = PolicyCatalog::embedded().find("safe-chords").unwrap();

    let first = PolicyHost::new(SandboxLimits::default(), Some(tmp.path())).unwrap();
    assert!(!first.load(&src.bytes).unwrap().from_cache());
    let dir = first.cache_dir().unwrap().to_path_buf();
    assert!(
        dir.to_string_lossy().contains("wasmtime-48.0.8-"),
        "{}",
        dir.display()
    );
    let code = dir.join(format!("{}.cwasm", sha256_hex(&src.bytes)));
    assert!(code.is_file());
    drop(first);

    let second = PolicyHost::new(SandboxLimits::default(), Some(tmp.path())).unwrap();
    assert_eq!(
        second.cache_dir().unwrap(),
        dir,
        "same engine settings, same key"
    );
    assert!(second.load(&src.bytes).unwrap().from_cache());

    // Flip one byte of the compiled code: the digest check refuses it and the host recompiles.
    let mut bytes = std::fs::read(&code).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&code, &bytes).unwrap();
    let p = second.load(&src.bytes).unwrap();
    assert!(!p.from_cache());
    assert!(
        second.load(&src.bytes).unwrap().from_cache(),
        "the recompiled code was written back"
    );

    // Another sandbox configuration is another engine: its code lives under another key.
    let other = SandboxLimits {
        memory_bytes: 32 << 20,
        ..SandboxLimits::default()
    };
    let third = PolicyHost::new(other, Some(tmp.path())).unwrap();
    assert_ne!(third.cache_dir().unwrap(), dir);
}

/// Copies every cache file of component `from` to the names of component `to` (`<sha>.*`).
fn plant(dir: &std::path::Path, from: &str, to: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(rest) = name.strip_prefix(from) {
            std::fs::copy(dir.join(&name), dir.join(format!("{to}{rest}"))).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn another_policys_compiled_code_planted_under_a_digest_is_never_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let cat = PolicyCatalog::embedded();
    let safe = cat.find("safe-chords").unwrap();
    let other = cat.find("timeout-guard").unwrap();
    // A root whose parents do not exist yet (a fresh ~/.cache) is created.
    let root = tmp.path().join("fresh").join("modekeeper");
    let host = PolicyHost::new(SandboxLimits::default(), Some(&root)).unwrap();
    host.load(&safe.bytes).unwrap();
    host.load(&other.bytes).unwrap();
    assert!(host.load(&safe.bytes).unwrap().from_cache());
    let dir = host.cache_dir().unwrap().to_path_buf();

    // The other policy's code and whatever vouches for it, under safe-chords' digest.
    let (s, o) = (sha256_hex(&safe.bytes), sha256_hex(&other.bytes));
    assert!(plant(&dir, &o, &s) >= 2);
    let p = host.load(&safe.bytes).unwrap();
    assert!(!p.from_cache(), "planted code was deserialized");
    assert_eq!(p.metadata().id, "safe-chords");
    assert!(
        host.load(&safe.bytes).unwrap().from_cache(),
        "the recompiled code was written back"
    );

    // A MAC made without the key does not pass either.
    std::fs::write(dir.join(format!("{s}.cwasm.mac")), "00".repeat(32)).unwrap();
    assert!(!host.load(&safe.bytes).unwrap().from_cache());
}

#[cfg(unix)]
#[test]
fn a_cache_others_can_write_is_not_used_and_says_so() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = PolicyCatalog::embedded().find("safe-chords").unwrap();
    let host = PolicyHost::new(SandboxLimits::default(), Some(tmp.path())).unwrap();
    host.load(&src.bytes).unwrap();
    assert!(host.load(&src.bytes).unwrap().from_cache());
    assert!(host.cache_warnings().is_empty());
    let dir = host.cache_dir().unwrap().to_path_buf();
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    // What this host created is private.
    for p in [tmp.path().join("compiled"), dir.clone()] {
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m & 0o077, 0, "{} is {m:o}", p.display());
    }

    // A group- or world-writable level of the cache (the engine's directory, then the root).
    for level in [dir.clone(), tmp.path().to_path_buf()] {
        mode(&level, 0o777);
        assert!(!host.load(&src.bytes).unwrap().from_cache());
        let w = host.cache_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("writable by others (mode 777)") && w[0].contains("compiling instead"),
            "{w:?}"
        );
        mode(&level, 0o700);
        assert!(host.load(&src.bytes).unwrap().from_cache());
    }

    // A cache file others can write.
    let code = dir.join(format!("{}.cwasm", sha256_hex(&src.bytes)));
    mode(&code, 0o666);
    assert!(!host.load(&src.bytes).unwrap().from_cache());
    assert!(host.cache_warnings()[0].contains("writable by others"));
    mode(&code, 0o600);

    // The MAC key: 0600 when made, and refused once others can read it.
    let key = tmp.path().join("cache.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    mode(&key, 0o644);
    assert!(!host.load(&src.bytes).unwrap().from_cache());
    assert!(host.cache_warnings()[0].contains("readable by others (mode 644)"));
    mode(&key, 0o600);
    assert!(host.load(&src.bytes).unwrap().from_cache());

    // A directory another user owns (only root can make one here).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&dir, Some(4242), None).unwrap();
        assert!(!host.load(&src.bytes).unwrap().from_cache());
        assert!(host.cache_warnings()[0].contains("owned by uid 4242"));
    }
}
