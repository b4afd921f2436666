//! The krew manifest and the release archives: `scripts/release.sh` builds deterministic archives and
//! fills in krew/modekeeper.yaml, and the result passes the checks krew's manifest validator makes
//! (apiVersion/kind, name = file name, semver with a `v`, a short description, unique platform
//! selectors, lowercase 64-hex sha256 that matches the archive, the `bin` present after the `files`
//! operations, a license file), plus what krew-index asks of archives (a LICENSE inside).

mod report_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use report_support::repo;
use sha2::{Digest, Sha256};
use yaml_rust2::{Yaml, YamlLoader};

const EPOCH: &str = "1767225600";
const OSES: [&str; 2] = ["linux", "darwin"];
const ARCHES: [&str; 2] = ["amd64", "arm64"];

/// What the tests package: a small executable standing in for the plugin binary. The debug build of
/// the real one is hundreds of MB, and compressing it again and again would only test gzip; the
/// real binary goes through the same script in a release dry run.
fn stand_in_binary() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubectl-modekeeper-stand-in");
        let mut body = b"#!/bin/sh\necho kubectl-modekeeper stand-in\n".to_vec();
        body.extend((0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        fs::write(&p, body).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        p
    })
    .clone()
}

fn release(args: &[&str], out: &Path) -> std::process::Output {
    Command::new("bash")
        .arg(repo("scripts/release.sh"))
        .args(args)
        .arg(out)
        .env("MODEKEEPER_PREBUILT_BIN", stand_in_binary())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("MODEKEEPER_RELEASE_TAG")
        .env_remove("MODEKEEPER_RELEASE_URL")
        .output()
        .unwrap()
}

fn release_ok(args: &[&str], out: &Path) -> String {
    let o = release(args, out);
    assert!(
        o.status.success(),
        "release.sh {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A tar member as the archive stores it.
#[derive(Debug)]
struct Member {
    name: String,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
}

fn octal(field: &[u8]) -> u64 {
    let s = String::from_utf8_lossy(field);
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    u64::from_str_radix(s, 8).unwrap_or_else(|_| panic!("bad octal field {s:?}"))
}

/// Reads a .tar.gz (ustar) into its members.
fn untar(path: &Path) -> Vec<Member> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= raw.len() {
        let h = &raw[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size = octal(&h[124..136]) as usize;
        assert_eq!(&h[257..262], b"ustar", "{name}: not a ustar header");
        out.push(Member {
            name,
            mode: octal(&h[100..108]) as u32,
            uid: octal(&h[108..116]),
            gid: octal(&h[116..124]),
            mtime: octal(&h[136..148]),
            data: raw[at + 512..at + 512 + size].to_vec(),
        });
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

fn sha256_hex(path: &Path) -> String {
    let d = Sha256::digest(fs::read(path).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn s<'a>(y: &'a Yaml, key: &str) -> Option<&'a str> {
    y[key].as_str()
}

fn is_semver_with_v(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let core = rest.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
        })
}

/// krew's checks on a manifest whose archives sit in `archives` (by file name). Returns every problem.
fn validate(manifest_path: &Path, archives: &Path) -> Vec<String> {
    let mut errs = Vec::new();
    let text = fs::read_to_string(manifest_path).unwrap();
    let docs = match YamlLoader::load_from_str(&text) {
        Ok(d) => d,
        Err(e) => return vec![format!("not YAML: {e}")],
    };
    if docs.len() != 1 {
        return vec![format!("{} YAML documents, want 1", docs.len())];
    }
    let p = &docs[0];
    if s(p, "apiVersion") != Some("krew.googlecontainertools.github.com/v1alpha2") {
        errs.push(format!("apiVersion {:?}", p["apiVersion"]));
    }
    if s(p, "kind") != Some("Plugin") {
        errs.push(format!("kind {:?}", p["kind"]));
    }
    let file_stem = manifest_path
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let name = s(&p["metadata"], "name").unwrap_or("");
    let safe = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !safe {
        errs.push(format!("plugin name {name:?} is not a safe name"));
    }
    if name != file_stem {
        errs.push(format!(
            "plugin name {name:?} does not match the file name {file_stem:?}"
        ));
    }
    let spec = &p["spec"];
    match s(spec, "version") {
        Some(v) if is_semver_with_v(v) => {}
        other => errs.push(format!("spec.version {other:?} is not v<semver>")),
    }
    if s(spec, "shortDescription").is_none_or(|d| d.trim().is_empty()) {
        errs.push("spec.shortDescription is missing".into());
    }
    if s(spec, "homepage").is_none_or(|h| !h.starts_with("https://")) {
        errs.push("spec.homepage is not an https URL".into());
    }
    let Some(platforms) = spec["platforms"].as_vec() else {
        errs.push("spec.platforms is missing".into());
        return errs;
    };
    if platforms.is_empty() {
        errs.push("spec.platforms is empty".into());
    }
    let mut matched: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, pl) in platforms.iter().enumerate() {
        let labels = &pl["selector"]["matchLabels"];
        let (os, arch) = (s(labels, "os"), s(labels, "arch"));
        if labels.as_hash().is_none_or(|h| h.is_empty()) {
            errs.push(format!("platform {i}: empty selector"));
        }
        for o in OSES {
            for a in ARCHES {
                if os.is_none_or(|x| x == o)
                    && arch.is_none_or(|x| x == a)
                    && let Some(j) = matched.insert((o.into(), a.into()), i)
                {
                    errs.push(format!("platforms {j} and {i} both match {o}/{a}"));
                }
            }
        }
        let uri = s(pl, "uri").unwrap_or("");
        let sha = s(pl, "sha256").unwrap_or("");
        if !uri.starts_with("https://") {
            errs.push(format!("platform {i}: uri {uri:?} is not https"));
        }
        if sha.len() != 64
            || !sha
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            errs.push(format!(
                "platform {i}: sha256 {sha:?} is not 64 lowercase hex digits"
            ));
        }
        let bin = s(pl, "bin").unwrap_or("");
        if bin.is_empty() {
            errs.push(format!("platform {i}: bin is missing"));
        }
        let archive = archives.join(uri.rsplit('/').next().unwrap_or(""));
        if !archive.is_file() {
            errs.push(format!(
                "platform {i}: no archive {} for {uri}",
                archive.display()
            ));
            continue;
        }
        if sha256_hex(&archive) != sha {
            errs.push(format!(
                "platform {i}: sha256 does not match {}",
                archive.display()
            ));
        }
        // Apply the `files` operations (exact names; krew also allows globs, which we do not use).
        let members = untar(&archive);
        let mut installed: Vec<String> = Vec::new();
        match pl["files"].as_vec() {
            Some(files) => {
                for f in files {
                    let (from, to) = (s(f, "from").unwrap_or(""), s(f, "to").unwrap_or(""));
                    if from.is_empty() || to.is_empty() {
                        errs.push(format!("platform {i}: a files entry without from/to"));
                    }
                    if members.iter().any(|m| m.name == from) {
                        installed.push(if to == "." {
                            from.to_string()
                        } else {
                            format!("{to}/{from}")
                        });
                    } else {
                        errs.push(format!(
                            "platform {i}: files.from {from:?} is not in the archive"
                        ));
                    }
                }
            }
            None => installed = members.iter().map(|m| m.name.clone()).collect(),
        }
        if !installed.iter().any(|n| n == bin) {
            errs.push(format!(
                "platform {i}: bin {bin:?} is not installed from the archive"
            ));
        }
        if !installed
            .iter()
            .any(|n| n.to_ascii_uppercase().starts_with("LICENSE"))
        {
            errs.push(format!("platform {i}: no license file installed"));
        }
        if let Some(m) = members.iter().find(|m| m.name == bin)
            && m.mode & 0o111 == 0
        {
            errs.push(format!("platform {i}: {bin} is not executable"));
        }
    }
    errs
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn dry_run_archives_and_manifest_pass_krew_validation() {
    let out = tmp();
    let stdout = release_ok(&["--dry-run"], out.path());
    let version = env!("CARGO_PKG_VERSION");
    let archive = out
        .path()
        .join(format!("kubectl-modekeeper_v{version}_linux_amd64.tar.gz"));
    assert!(
        stdout.contains(&format!("packaged {}", archive.display())),
        "{stdout}"
    );
    let manifest = out.path().join("modekeeper.yaml");
    let errs = validate(&manifest, out.path());
    assert!(
        errs.is_empty(),
        "{errs:#?}\n{}",
        fs::read_to_string(&manifest).unwrap()
    );
    let text = fs::read_to_string(&manifest).unwrap();
    assert!(!text.contains("{{"), "placeholders left: {text}");
    assert!(
        text.contains("# Not built here, so not listed"),
        "unbuilt platforms are named: {text}"
    );
    assert!(text.contains(&format!("version: v{version}")));

    // The archive: sorted names, owner 0, fixed mtime, the binary byte for byte, the license.
    let members = untar(&archive);
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "LICENSE",
            "kubectl-modekeeper",
            "kubectl_complete-modekeeper"
        ]
    );
    for m in &members {
        assert_eq!((m.uid, m.gid), (0, 0), "{}", m.name);
        assert_eq!(m.mtime.to_string(), EPOCH, "{}", m.name);
    }
    assert_eq!(members[1].mode & 0o777, 0o755);
    assert_eq!(members[1].data, fs::read(stand_in_binary()).unwrap());
    assert_eq!(members[0].data, fs::read(repo("LICENSE")).unwrap());
    assert!(String::from_utf8_lossy(&members[0].data).contains("Apache License"));
    assert_eq!(members[2].mode & 0o777, 0o755);
    assert_eq!(
        members[2].data,
        fs::read(repo("scripts/kubectl_complete-modekeeper")).unwrap()
    );

    // Deterministic: packaging the same binary again gives the same bytes.
    let again = tmp();
    release_ok(&["--dry-run"], again.path());
    assert_eq!(
        sha256_hex(&archive),
        sha256_hex(&again.path().join(archive.file_name().unwrap()))
    );
}

#[test]
fn a_release_needs_every_platform_and_then_validates() {
    let out = tmp();
    release_ok(&["--dry-run"], out.path());
    let o = release(&["--manifest"], out.path());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("archives missing") && err.contains("darwin_arm64"),
        "{err}"
    );

    // As a pipeline would: one --package per target (here all packaging the host's binary, which is
    // enough to check the manifest; real archives come from each platform's build), then --manifest.
    for t in [
        "aarch64-unknown-linux-gnu",
        "x86_64-apple-darwin",
        "aarch64-apple-darwin",
    ] {
        let o = release(&["--package", t], out.path());
        assert!(
            o.status.success(),
            "{t}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    release_ok(&["--manifest"], out.path());
    let manifest = out.path().join("modekeeper.yaml");
    let errs = validate(&manifest, out.path());
    assert!(errs.is_empty(), "{errs:#?}");
    let text = fs::read_to_string(&manifest).unwrap();
    assert_eq!(text.matches("sha256: ").count(), 4);
    assert!(!text.contains("Not built here"));
}

#[test]
fn the_committed_template_carries_no_checksum() {
    let text = fs::read_to_string(repo("krew/modekeeper.yaml")).unwrap();
    let hex64 = text
        .split(|c: char| !c.is_ascii_hexdigit())
        .any(|w| w.len() == 64);
    assert!(
        !hex64,
        "krew/modekeeper.yaml must not carry a sha256: release.sh fills them in"
    );
    assert_eq!(text.matches("\n    {{addURIAndSha \"").count(), 4);
    for o in OSES {
        for a in ARCHES {
            assert!(
                text.contains(&format!("os: {o}\n        arch: {a}\n")),
                "{o}/{a}"
            );
        }
    }
}

#[test]
fn the_validator_catches_broken_manifests() {
    let out = tmp();
    release_ok(&["--dry-run"], out.path());
    let good = fs::read_to_string(out.path().join("modekeeper.yaml")).unwrap();
    let sha = good
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256: "))
        .unwrap()
        .to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("uppercase sha", good.replace(&sha, &sha.to_uppercase()), "lowercase hex"),
        ("wrong sha", good.replace(&sha, &"0".repeat(64)), "does not match"),
        ("version without v", good.replace("version: v", "version: "), "not v<semver>"),
        ("no short description", good.replace("shortDescription:", "longDescription:"), "shortDescription"),
        ("wrong name", good.replace("name: modekeeper", "name: mode-keeper"), "does not match the file name"),
        ("bin not in archive", good.replace("bin: kubectl-modekeeper", "bin: kubectl-other"), "is not installed"),
        (
            "duplicate selector",
            good.replace(
                "  platforms:\n",
                "  platforms:\n  - selector:\n      matchLabels:\n        os: linux\n    uri: https://example.invalid/x.tar.gz\n    sha256: 0000000000000000000000000000000000000000000000000000000000000000\n    bin: x\n",
            ),
            "both match linux/amd64",
        ),
    ];
    for (what, text, needle) in cases {
        let dir = tmp();
        for e in fs::read_dir(out.path()).unwrap() {
            let p: PathBuf = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "gz") {
                fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        let m = dir.path().join("modekeeper.yaml");
        fs::write(&m, text).unwrap();
        let errs = validate(&m, dir.path());
        assert!(errs.iter().any(|e| e.contains(needle)), "{what}: {errs:#?}");
    }
    assert!(
        is_semver_with_v("v1.2.3-rc.1+build.5")
            && !is_semver_with_v("v01.2.3")
            && !is_semver_with_v("1.2.3")
    );
}
