//! Deterministic builder for chord policy components.
//!
//! `cargo run -p xtask -- build [--check]` (via scripts/build-policies.sh):
//! 1. builds each policy crate for `wasm32-unknown-unknown` (release, `panic=abort`, paths remapped,
//!    no debug info, no timestamps anywhere),
//! 2. turns each core module into a component with `wit-component` (it then has zero imports),
//! 3. appends the `modekeeper-policy` custom section (JSON metadata from the crate's policy.json,
//!    its Cargo version and the WIT version) at the component's top level,
//! 4. writes `dist/<id>.wasm` and `dist/policies.lock` (name, version, WIT version, sha256), and the
//!    hostile test policies to `../tests/data/policies/`.
//!
//! `--check` builds into a temporary directory and fails if any byte differs from what is committed.
//!
//! `cargo run -p xtask -- component DIR [--out FILE]` builds one policy crate anywhere on disk (it
//! needs a `policy.json` beside its Cargo.toml) the same way, for policy authors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The toolchain the committed bytes were built with; another rustc may emit other bytes.
const PINNED_RUSTC: &str = "rustc 1.95.0 ";
const WIT_VERSION: &str = "1.0.0";
const SECTION: &str = "modekeeper-policy";
const TARGET: &str = "wasm32-unknown-unknown";

/// Policy crates shipped in dist/ (embedded in the binary), then hostile ones for tests.
const SHIPPED: &[&str] = &["safe-chords", "timeout-guard", "comm-congestion"];
const HOSTILE: &[&str] = &[
    "hostile/spin",
    "hostile/panic",
    "hostile/alloc",
    "hostile/garbage",
    "hostile/overreach",
    "hostile/remember",
];

#[derive(Debug, Deserialize)]
struct PolicyJson {
    id: String,
    chords: Vec<String>,
    knobs: Vec<String>,
    /// Which knobs each chord proposes (lets the host attribute each proposal to its chord).
    #[serde(default)]
    chord_knobs: BTreeMap<String, Vec<String>>,
    signals: Vec<String>,
    advanced: bool,
    description: String,
}

/// The custom section's content (host: src/policy/metadata.rs). Field order is the JSON order.
#[derive(Debug, Serialize)]
struct Metadata<'a> {
    schema: &'a str,
    id: &'a str,
    version: &'a str,
    wit_version: &'a str,
    world: &'a str,
    chords: &'a [String],
    knobs: &'a [String],
    chord_knobs: &'a BTreeMap<String, Vec<String>>,
    signals: &'a [String],
    advanced: bool,
    description: &'a str,
}

#[derive(Debug, Serialize)]
struct LockEntry {
    name: String,
    version: String,
    wit_version: String,
    file: String,
    sha256: String,
    advanced: bool,
}

#[derive(Debug, Serialize)]
struct Lock {
    schema: &'static str,
    policies: Vec<LockEntry>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build") => build(args.iter().any(|a| a == "--check")),
        Some("component") => {
            let dir = args
                .get(1)
                .map(PathBuf::from)
                .context("usage: xtask component DIR [--out FILE]")?;
            let out = args
                .iter()
                .position(|a| a == "--out")
                .and_then(|i| args.get(i + 1))
                .map(PathBuf::from);
            component(&dir, out)
        }
        _ => bail!("usage: xtask build [--check] | xtask component DIR [--out FILE]"),
    }
}

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in policies/")
        .to_path_buf()
}

fn build(check: bool) -> Result<()> {
    let root = policies_dir();
    let rustc = String::from_utf8(Command::new("rustc").arg("--version").output()?.stdout)?;
    ensure!(
        rustc.starts_with(PINNED_RUSTC),
        "policies are pinned to {PINNED_RUSTC}; found {rustc}"
    );
    compile_wasm(&root)?;

    let tmp = root.join("target").join("xtask-out");
    let (dist, hostile_dir) = if check {
        (tmp.join("dist"), tmp.join("hostile"))
    } else {
        (root.join("dist"), root.join("../tests/data/policies"))
    };
    std::fs::create_dir_all(&dist)?;
    std::fs::create_dir_all(&hostile_dir)?;

    let mut lock = Lock {
        schema: "modekeeper.policy-lock.v1",
        policies: Vec::new(),
    };
    for krate in SHIPPED {
        let (id, version, advanced, bytes) = componentize(&root, krate)?;
        let file = format!("{id}.wasm");
        std::fs::write(dist.join(&file), &bytes)?;
        lock.policies.push(LockEntry {
            name: id,
            version,
            wit_version: WIT_VERSION.into(),
            file,
            sha256: hex(&Sha256::digest(&bytes)),
            advanced,
        });
    }
    let lock_text = serde_json::to_string_pretty(&lock)? + "\n";
    std::fs::write(dist.join("policies.lock"), &lock_text)?;
    for krate in HOSTILE {
        let (id, _, _, bytes) = componentize(&root, krate)?;
        std::fs::write(hostile_dir.join(format!("{id}.wasm")), &bytes)?;
    }

    if check {
        let mut bad = Vec::new();
        let mut pairs: Vec<(PathBuf, PathBuf)> =
            vec![(dist.join("policies.lock"), root.join("dist/policies.lock"))];
        for e in &lock.policies {
            pairs.push((dist.join(&e.file), root.join("dist").join(&e.file)));
        }
        for krate in HOSTILE {
            let id = format!("hostile-{}", krate.trim_start_matches("hostile/"));
            pairs.push((
                hostile_dir.join(format!("{id}.wasm")),
                root.join("../tests/data/policies")
                    .join(format!("{id}.wasm")),
            ));
        }
        for (fresh, committed) in pairs {
            let a = std::fs::read(&fresh)?;
            let b = std::fs::read(&committed).unwrap_or_default();
            if a != b {
                bad.push(committed.display().to_string());
            }
        }
        ensure!(
            bad.is_empty(),
            "committed policy bytes differ from a fresh build: {}",
            bad.join(", ")
        );
        println!(
            "policies: {} shipped + {} hostile components match a fresh build byte for byte",
            SHIPPED.len(),
            HOSTILE.len()
        );
    } else {
        for e in &lock.policies {
            println!(
                "{:<16} {:<7} wit {}  sha256:{}",
                e.name, e.version, e.wit_version, e.sha256
            );
        }
    }
    Ok(())
}

/// Builds one policy crate (anywhere on disk) into a component.
fn component(dir: &Path, out: Option<PathBuf>) -> Result<()> {
    let root = policies_dir();
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    ensure!(
        dir.join("policy.json").is_file(),
        "{} has no policy.json (see docs/policy-authoring.md)",
        dir.display()
    );
    let mut cmd = cargo_wasm(&root, &[&dir]);
    cmd.arg("--manifest-path").arg(dir.join("Cargo.toml"));
    ensure!(
        cmd.status().context("running cargo")?.success(),
        "cargo build of {} failed",
        dir.display()
    );
    let (id, version, _, bytes) = componentize_dir(&root, &dir)?;
    let out = out.unwrap_or_else(|| dir.join(format!("{id}.wasm")));
    std::fs::write(&out, &bytes)?;
    println!(
        "{id} {version} (WIT {WIT_VERSION}) -> {}\nsha256:{}",
        out.display(),
        hex(&Sha256::digest(&bytes))
    );
    Ok(())
}

/// `cargo build --release --target wasm32-unknown-unknown` with a fixed, path-independent set of
/// flags (no debug info, symbols stripped, source paths remapped); `extra_roots` are remapped too.
fn cargo_wasm(root: &Path, extra_roots: &[&Path]) -> Command {
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let mut flags = vec![
        format!("--remap-path-prefix={}=/policies", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
        "-Cdebuginfo=0".into(),
        "-Cstrip=symbols".into(),
    ];
    for r in extra_roots {
        flags.push(format!("--remap-path-prefix={}=/policy", r.display()));
    }
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["build", "--release", "--target", TARGET])
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env("SOURCE_DATE_EPOCH", "0");
    cmd
}

/// `cargo build` of every policy crate of this workspace for wasm32.
fn compile_wasm(root: &Path) -> Result<()> {
    let mut cmd = cargo_wasm(root, &[]);
    cmd.arg("--locked");
    for krate in SHIPPED.iter().chain(HOSTILE) {
        cmd.args(["-p", &package_name(root, krate)?]);
    }
    let status = cmd.status().context("running cargo")?;
    ensure!(status.success(), "cargo build of the policy crates failed");
    Ok(())
}

fn package_name(root: &Path, krate: &str) -> Result<String> {
    field(
        &std::fs::read_to_string(root.join(krate).join("Cargo.toml"))?,
        "name",
    )
}

/// A `key = "value"` line of a Cargo.toml's [package] table.
fn field(toml: &str, key: &str) -> Result<String> {
    toml.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("no {key} in Cargo.toml"))
}

/// Core module → component + metadata section. Returns (id, version, advanced, bytes).
fn componentize(root: &Path, krate: &str) -> Result<(String, String, bool, Vec<u8>)> {
    componentize_dir(root, &root.join(krate))
}

fn componentize_dir(root: &Path, dir: &Path) -> Result<(String, String, bool, Vec<u8>)> {
    let krate = dir.display().to_string();
    let cargo_toml = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    let version = field(&cargo_toml, "version")?;
    let package = field(&cargo_toml, "name")?;
    let meta: PolicyJson = serde_json::from_slice(&std::fs::read(dir.join("policy.json"))?)
        .with_context(|| format!("{krate}/policy.json"))?;
    let core_path = root
        .join("target")
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    let core =
        std::fs::read(&core_path).with_context(|| format!("reading {}", core_path.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&core)
        .with_context(|| format!("{krate}: not a wit-bindgen module"))?
        .validate(true)
        .encode()
        .with_context(|| format!("{krate}: component encoding"))?;

    let md = Metadata {
        schema: "modekeeper.policy-metadata.v1",
        id: &meta.id,
        version: &version,
        wit_version: WIT_VERSION,
        world: "modekeeper:policy/chord-policy@1.0.0",
        chords: &meta.chords,
        knobs: &meta.knobs,
        chord_knobs: &meta.chord_knobs,
        signals: &meta.signals,
        advanced: meta.advanced,
        description: &meta.description,
    };
    let mut bytes = component;
    append_custom_section(&mut bytes, SECTION, &serde_json::to_vec(&md)?);
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&bytes)?;
    check_no_imports(&bytes, &krate)?;
    Ok((meta.id, version, meta.advanced, bytes))
}

fn check_no_imports(bytes: &[u8], krate: &str) -> Result<()> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let wasmparser::Payload::ComponentImportSection(s) = payload? {
            // World-level record types appear as type imports (an equality on a type, no capability);
            // anything else (a function, an instance, a resource) is a capability and is refused.
            for import in s {
                let import = import?;
                ensure!(
                    matches!(
                        import.ty,
                        wasmparser::ComponentTypeRef::Type(wasmparser::TypeBounds::Eq(_))
                    ),
                    "{krate}: the component imports {} ({:?}); policies may import nothing but type equalities",
                    import.name.name,
                    import.ty
                );
            }
        }
    }
    Ok(())
}

/// A custom section (id 0: LEB128 size, LEB128 name length, name, data) at the top level.
fn append_custom_section(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut body = leb128(name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    out.push(0);
    out.extend(leb128(body.len()));
    out.extend(body);
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            v.push(byte);
            return v;
        }
        v.push(byte | 0x80);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
