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
