//! `license keygen|mint|verify` through the binary: a test key trusted only through an explicit
//! keyring override (flag or env, recorded in the report), and every way a license can be refused.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// The binary with an environment that cannot leak a license or keyring from the machine.
fn mk(home: &Path) -> Command {
    let mut c = Command::cargo_bin("kubectl-modekeeper").unwrap();
    c.env_remove("MODEKEEPER_KEYRING")
        .env_remove("MODEKEEPER_LICENSE_PATH")
        .env_remove("MODEKEEPER_KILL_SWITCH")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"));
    c
}

struct Keys {
    dir: tempfile::TempDir,
    kid: String,
    key: PathBuf,
    keyring: PathBuf,
}

fn keygen(sub: &str) -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let out = mk(dir.path())
        .args(["-o", "json", "license", "keygen", "--out"])
        .arg(dir.path().join(sub))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Keys {
        kid: v["kid"].as_str().unwrap().to_string(),
        key: v["private_key"].as_str().unwrap().into(),
        keyring: v["keyring"].as_str().unwrap().into(),
        dir,
    }
}

fn mint(keys: &Keys, name: &str, extra: &[&str]) -> PathBuf {
    let path = keys.dir.path().join(name);
    let mut args = vec![
        "license",
        "mint",
        "--subject",
        "Test Cluster Team",
        "--entitlements",
        "apply",
    ];
    if !extra.contains(&"--expires") {
        args.extend(["--expires", "now+30d"]);
    }
    args.extend_from_slice(extra);
    let out = mk(keys.dir.path())
        .args(&args)
        .arg("--key")
        .arg(&keys.key)
        .arg("--out")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Runs `license verify`, returns (exit code, report).
fn verify(home: &Path, args: &[&std::ffi::OsStr], env_keyring: Option<&Path>) -> (i32, Value) {
    let out_dir = tempfile::tempdir().unwrap();
    let mut c = mk(home);
    if let Some(k) = env_keyring {
        c.env("MODEKEEPER_KEYRING", k);
    }
    let out = c
        .args(["license", "verify"])
        .args(args)
        .arg("--out")
        .arg(out_dir.path())
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("license_verify_latest.json")).unwrap(),
    )
    .unwrap();
    let code = out.status.code().unwrap();
    if code != 0 {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one error line: {err}");
        assert!(err.contains(report["reason"].as_str().unwrap()), "{err}");
    }
    (code, report)
}

fn os(s: &impl AsRef<std::ffi::OsStr>) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn keygen_mint_verify_with_explicit_keyring() {
    let k = keygen("keys");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let lic = mint(&k, "lic.json", &["--license-id", "lic-e2e"]);
    let text = std::fs::read_to_string(&lic).unwrap();
    assert!(text.contains(&format!("\"kid\":\"{}\"", k.kid)), "{text}");

    let (code, r) = verify(
        k.dir.path(),
        &[
            os(&"--license"),
            os(&lic),
            os(&"--keyring"),
            os(&k.keyring),
            os(&"--require"),
            os(&"apply"),
        ],
        None,
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["schema_version"], "license_verify.v1");
    assert_eq!(r["ok"], true);
    assert_eq!(r["reason"], "ok");
    assert_eq!(r["license"]["license_id"], "lic-e2e");
    assert_eq!(r["license"]["entitlements"], serde_json::json!(["apply"]));
    assert_eq!(r["verified_with_kid"], k.kid.as_str());
    assert_eq!(r["license_source"], "flag");
    assert_eq!(r["keyring"]["source"], "flag");
    assert_eq!(r["keyring"]["override"], true);
    assert_eq!(r["keyring"]["kids"], serde_json::json!([k.kid]));
    assert_eq!(r["clock_skew_allowance_s"], 300);

    // The environment override works too, and says so.
    let (code, r) = verify(
        k.dir.path(),
        &[os(&"--license"), os(&lic)],
        Some(&k.keyring),
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["keyring"]["source"], "env");
    assert_eq!(r["keyring"]["override"], true);

    // MODEKEEPER_LICENSE_PATH names the license when --license is absent.
    let out_dir = tempfile::tempdir().unwrap();
    let out = mk(k.dir.path())
        .env("MODEKEEPER_LICENSE_PATH", &lic)
        .args(["license", "verify", "--keyring"])
        .arg(&k.keyring)
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let r: Value = serde_json::from_slice(
        &std::fs::read(out_dir.path().join("license_verify_latest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(r["license_source"], "env");
}

#[test]
fn the_builtin_keyring_does_not_trust_a_self_made_key() {
    let k = keygen("keys");
    let lic = mint(&k, "lic.json", &[]);
    let nokid = mint(&k, "nokid.json", &["--no-kid"]);
    if modekeeper::license::BUILTIN_KEYRING.is_none() {
        // A build from source trusts no production key: without --keyring nothing verifies, and
        // the error says what to name.
        for l in [&lic, &nokid] {
            let (code, r) = verify(k.dir.path(), &[os(&"--license"), os(l)], None);
            assert_eq!((code, r["reason"].as_str()), (2, Some("keyring_missing")));
            assert_eq!(r["keyring"]["source"], "builtin");
            assert_eq!(r["keyring"]["override"], false);
            assert_eq!(r["keyring"]["kids"], serde_json::json!([]));
            let detail = r["detail"].as_str().unwrap();
            assert!(
                detail.contains("--keyring") && detail.contains("MODEKEEPER_KEYRING"),
                "{detail}"
            );
        }
        // The explicit override is what makes the same license verify.
        let (code, r) = verify(
            k.dir.path(),
            &[os(&"--license"), os(&lic), os(&"--keyring"), os(&k.keyring)],
            None,
        );
        assert_eq!((code, r["keyring"]["override"].as_bool()), (0, Some(true)));
        return;
    }
    let (code, r) = verify(k.dir.path(), &[os(&"--license"), os(&lic)], None);
    assert_eq!(code, 2);
    assert_eq!(r["reason"], "license_unknown_kid");
    assert_eq!(r["keyring"]["source"], "builtin");
    assert_eq!(r["keyring"]["override"], false);
    assert!(!r["keyring"]["kids"].as_array().unwrap().is_empty());

    // Without a kid it is tried against every built-in key, and none verifies it.
    let (code, r) = verify(k.dir.path(), &[os(&"--license"), os(&nokid)], None);
    assert_eq!((code, r["reason"].as_str()), (2, Some("license_wrong_key")));
}

#[cfg(unix)]
#[test]
fn a_keyring_or_license_that_is_a_device_or_fifo_is_refused_at_once() {
    let k = keygen("keys");
    let lic = mint(&k, "lic.json", &[]);
    let fifo = k.dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // `--keyring /dev/zero` read until memory ran out; a FIFO blocked in open().
    for ring in [Path::new("/dev/zero"), fifo.as_path()] {
        let (code, r) = verify(
            k.dir.path(),
            &[os(&"--license"), os(&lic), os(&"--keyring"), os(&ring)],
            None,
        );
        assert_eq!((code, r["reason"].as_str()), (2, Some("keyring_malformed")));
        assert!(
            r["detail"].as_str().unwrap().contains("not a regular file"),
            "{r}"
        );
    }
    for l in [Path::new("/dev/zero"), fifo.as_path()] {
        let (code, r) = verify(
            k.dir.path(),
            &[os(&"--license"), os(&l), os(&"--keyring"), os(&k.keyring)],
            None,
        );
        assert_eq!((code, r["reason"].as_str()), (2, Some("license_missing")));
        assert!(
            r["detail"].as_str().unwrap().contains("not a regular file"),
            "{r}"
        );
    }
}

#[test]
fn every_bad_license_has_its_reason() {
    let k = keygen("keys");
    let other = keygen("other");
    let ring = || [os(&"--keyring"), os(&k.keyring)];
    let check = |lic: &Path, extra: &[&std::ffi::OsStr]| {
        let mut a = vec![os(&"--license"), os(&lic)];
        a.extend_from_slice(&ring());
        a.extend_from_slice(extra);
        verify(k.dir.path(), &a, None)
    };

    let good = mint(&k, "good.json", &[]);
    let tampered = k.dir.path().join("tampered.json");
    let text = std::fs::read_to_string(&good).unwrap();
    std::fs::write(&tampered, text.replace("\"apply\"", "\"chords.advanced\"")).unwrap();
    assert_eq!(
        check(&tampered, &[]).1["reason"],
        "license_signature_invalid"
    );

    let expired = mint(
        &k,
        "expired.json",
        &["--not-before", "now-30d", "--expires", "now-1d"],
    );
    let (code, r) = check(&expired, &[]);
    assert_eq!((code, r["reason"].as_str()), (2, Some("license_expired")));
    assert!(r["detail"].as_str().unwrap().contains("expired at"));

    let future = mint(
        &k,
        "future.json",
        &["--not-before", "now+1d", "--expires", "now+30d"],
    );
    assert_eq!(check(&future, &[]).1["reason"], "license_not_yet_valid");

    // Signed by another key that claims no kid: no trusted key verifies it.
    let wrong = mint(&other, "wrong.json", &["--no-kid"]);
    assert_eq!(check(&wrong, &[]).1["reason"], "license_wrong_key");
    // Signed by another key that names itself: not in the keyring.
    let unknown = mint(&other, "unknown.json", &[]);
    let (_, r) = check(&unknown, &[]);
    assert_eq!(r["reason"], "license_unknown_kid");
    assert_eq!(r["license"]["kid"], other.kid.as_str());

    let malformed = k.dir.path().join("malformed.json");
    std::fs::write(
        &malformed,
        text.replace("\"subject\"", "\"subject\":1,\"x\""),
    )
    .unwrap();
    assert_eq!(check(&malformed, &[]).1["reason"], "license_malformed");
    std::fs::write(
        &malformed,
        "{\"schema_version\": \"license.v1\", \"expires_at\": 1.5}",
    )
    .unwrap();
    assert_eq!(check(&malformed, &[]).1["reason"], "license_malformed");

    let (code, r) = check(&good, &[os(&"--require"), os(&"apply,chords.advanced")]);
    assert_eq!(
        (code, r["reason"].as_str()),
        (2, Some("entitlement_missing"))
    );
    assert!(r["detail"].as_str().unwrap().contains("chords.advanced"));

    let missing = k.dir.path().join("nope.json");
    assert_eq!(check(&missing, &[]).1["reason"], "license_missing");

    let bad_ring = k.dir.path().join("bad_ring.json");
    std::fs::write(
        &bad_ring,
        format!("{{\"0000000000000000\": \"{}\"}}", "A".repeat(43) + "="),
    )
    .unwrap();
    let (code, r) = verify(
        k.dir.path(),
        &[os(&"--license"), os(&good), os(&"--keyring"), os(&bad_ring)],
        None,
    );
    assert_eq!((code, r["reason"].as_str()), (2, Some("keyring_malformed")));
    assert_eq!(r["keyring"]["path"], bad_ring.to_str().unwrap());
    // A keyring override that does not exist is not a reason to fall back to anything.
    let (_, r) = verify(k.dir.path(), &[os(&"--license"), os(&good)], Some(&missing));
    assert_eq!(r["reason"], "keyring_malformed");
    assert_eq!(r["keyring"]["source"], "env");
}

#[test]
fn no_license_anywhere_is_license_missing() {
    let home = tempfile::tempdir().unwrap();
    let k = keygen("keys");
    let (code, r) = verify(home.path(), &[os(&"--keyring"), os(&k.keyring)], None);
    assert_eq!((code, r["reason"].as_str()), (2, Some("license_missing")));
    assert_eq!(r["license_path"], Value::Null);

    // ~/.config/modekeeper/license.json is found when nothing else names a license.
    let lic = mint(&k, "lic.json", &[]);
    let cfg = home.path().join(".config/modekeeper");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::copy(&lic, cfg.join("license.json")).unwrap();
    let (code, r) = verify(home.path(), &[os(&"--keyring"), os(&k.keyring)], None);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["license_source"], "config");
}

#[test]
fn bindings_are_checked_when_a_cluster_is_named() {
    let k = keygen("keys");
    let lic = mint(
        &k,
        "bound.json",
        &["--bind-server", "https://10.0.0.1:6443"],
    );
    let base = [os(&"--license"), os(&lic), os(&"--keyring"), os(&k.keyring)];
    let (code, r) = verify(k.dir.path(), &base, None);
    assert_eq!(code, 0);
    assert_eq!(r["binding_check"], "not_checked");
    let mut a = base.to_vec();
    a.extend([os(&"--cluster-server"), os(&"https://10.0.0.1:6443/")]);
    assert_eq!(verify(k.dir.path(), &a, None).1["binding_check"], "matched");
    let mut a = base.to_vec();
    a.extend([os(&"--cluster-server"), os(&"https://10.9.9.9:6443")]);
    let (code, r) = verify(k.dir.path(), &a, None);
    assert_eq!(
        (code, r["reason"].as_str()),
        (2, Some("license_binding_mismatch"))
    );
}

#[test]
fn mint_refuses_what_it_cannot_stand_behind() {
    let k = keygen("keys");
    for (extra, want) in [
        (vec!["--entitlements", "apply,paid"], "unknown entitlement"),
        (
            vec!["--entitlements", "apply", "--expires", "tomorrow"],
            "invalid time",
        ),
        (
            vec![
                "--entitlements",
                "apply",
                "--expires",
                "now+1d",
                "--not-before",
                "now+2d",
            ],
            "earlier than expires_at",
        ),
    ] {
        let mut args = vec!["license", "mint", "--subject", "x"];
        if !extra.contains(&"--expires") {
            args.extend(["--expires", "now+1d"]);
        }
        args.extend(extra);
        let out = mk(k.dir.path())
            .args(&args)
            .arg("--key")
            .arg(&k.key)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert!(out.stdout.is_empty());
    }
    // A signing key others can read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&k.key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let out = mk(k.dir.path())
            .args([
                "license",
                "mint",
                "--subject",
                "x",
                "--entitlements",
                "apply",
                "--expires",
                "now+1d",
                "--key",
            ])
            .arg(&k.key)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    }
}
