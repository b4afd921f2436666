//! `support-bundle`: one `.tar.gz` of a run's artifacts for a bug report, with secrets redacted
//! (src/artifacts/redact.rs), key files left out, symlinks never followed and the size capped. A
//! `manifest.json` (`support_bundle.v1`) in the archive lists what went in, what was redacted and
//! what was left out and why.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::{GlobalArgs, OutputFormat};
use crate::artifacts::redact::redact;
use crate::artifacts::tarball::TarWriter;
use crate::artifacts::write_atomic;
use crate::error::input_error;

pub const BUNDLE_SCHEMA: &str = "support_bundle.v1";
/// The directory every entry of the archive sits in.
const ROOT: &str = "modekeeper-support";
/// Directory levels below `--in` that are read.
const MAX_DEPTH: usize = 4;
/// Files read at most (a directory of millions of files is not a run's artifacts).
const MAX_FILES: usize = 10_000;

#[derive(Debug, Clone, Args)]
pub struct SupportBundleArgs {
    /// The run's artifact directory (the --out of observe, closed-loop, k8s verify/apply)
    #[arg(long = "in", value_name = "DIR", default_value = "report")]
    pub input: PathBuf,
    /// The archive to write (default: modekeeper-support-<UTC timestamp>.tar.gz)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// At most this many bytes of file content in the archive; larger files and those past the cap
    /// are left out (and listed)
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Included {
    path: String,
    bytes: u64,
    sha256: String,
    redactions: usize,
}

#[derive(Debug, Serialize)]
struct Skipped {
    path: String,
    reason: &'static str,
}

#[derive(Debug, Serialize)]
struct Manifest {
    schema_version: &'static str,
    tool: serde_json::Value,
    created_at: String,
    source_dir: PathBuf,
    max_bytes: u64,
    files: Vec<Included>,
    skipped: Vec<Skipped>,
    redactions_total: usize,
}

/// Why a file is not included whatever its content says: keys.
fn secret_file(name: &str) -> bool {
    name.ends_with(".key")
        || name.ends_with(".pem")
        || name == "kubeconfig"
        || name.starts_with(".modekeeper-")
}

/// A file found under `--in`, relative path and what to do with it.
enum Found {
    File(PathBuf, String, u64),
    Skip(String, &'static str),
}

fn walk(base: &Path, rel: &str, depth: usize, out: &mut Vec<Found>) -> anyhow::Result<()> {
    let dir = if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= MAX_FILES {
            out.push(Found::Skip(format!("{rel}…"), "too_many_files"));
            return Ok(());
        }
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            out.push(Found::Skip(
                e.file_name().to_string_lossy().into_owned(),
                "name_not_utf8",
            ));
            continue;
        };
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        // Does not follow a symlink.
        let t = e.file_type()?;
        if t.is_symlink() {
            out.push(Found::Skip(path, "symlink"));
        } else if t.is_dir() {
            if depth >= MAX_DEPTH {
                out.push(Found::Skip(path, "too_deep"));
            } else {
                walk(base, &path, depth + 1, out)?;
            }
        } else if !t.is_file() {
            out.push(Found::Skip(path, "not_a_regular_file"));
        } else if secret_file(&name) {
            out.push(Found::Skip(path, "secret_file"));
        } else {
            let len = e.metadata()?.len();
            out.push(Found::File(e.path(), path, len));
        }
    }
    Ok(())
}

/// Opens without following a symlink swapped in since the walk, reads at most `limit` bytes.
fn read_no_follow(path: &Path, limit: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    crate::fsio::no_follow(&mut opts);
    let f = match opts.open(path) {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    if !f.metadata()?.is_file() {
        return Ok(None);
    }
    match crate::fsio::read_open_capped(f, limit) {
        Ok(b) => Ok(Some(b)),
        Err(crate::fsio::ReadError::TooLarge { .. }) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(b))
}

pub fn run(global: &GlobalArgs, args: &SupportBundleArgs) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(&args.input);
    if !meta.as_ref().is_ok_and(|m| m.is_dir()) {
        return Err(input_error(
            "not_found",
            format!(
                "--in {}: not a directory (give the --out directory of the run to bundle)",
                args.input.display()
            ),
        ));
    }
    let now = Utc::now();
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "modekeeper-support-{}.tar.gz",
            now.format("%Y%m%dT%H%M%SZ")
        ))
    });
    // The archive must not bundle itself.
    let out_abs = std::path::absolute(&out).ok();

    let mut found = Vec::new();
    walk(&args.input, "", 0, &mut found)?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut contents: Vec<(String, Vec<u8>)> = Vec::new();
    let mut used = 0u64;
    for f in found {
        let (abs, rel, len) = match f {
            Found::Skip(p, why) => {
                skipped.push(Skipped {
                    path: p,
                    reason: why,
                });
                continue;
            }
            Found::File(abs, rel, len) => (abs, rel, len),
        };
        if out_abs.is_some() && std::path::absolute(&abs).ok() == out_abs {
            continue;
        }
        let left = args.max_bytes.saturating_sub(used);
        if len > left {
            skipped.push(Skipped {
                path: rel,
                reason: "size_cap",
            });
            continue;
        }
        let Some(bytes) = read_no_follow(&abs, left)? else {
            skipped.push(Skipped {
                path: rel,
                reason: "changed_while_reading",
            });
            continue;
        };
        // Only text can be redacted: anything else (compressed traces, binaries) stays out.
        let Ok(text) = String::from_utf8(bytes) else {
            skipped.push(Skipped {
                path: rel,
                reason: "not_text",
            });
            continue;
        };
        if text.contains("\"license_signing_key.v1\"") {
            skipped.push(Skipped {
                path: rel,
                reason: "secret_file",
            });
            continue;
        }
        let (clean, n) = redact(&text);
        used += clean.len() as u64;
        files.push(Included {
            path: rel.clone(),
            bytes: clean.len() as u64,
            sha256: sha256_hex(clean.as_bytes()),
            redactions: n,
        });
        contents.push((rel, clean.into_bytes()));
    }
    let manifest = Manifest {
        schema_version: BUNDLE_SCHEMA,
        tool: json!({"name": "kubectl-modekeeper", "version": env!("CARGO_PKG_VERSION")}),
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        source_dir: args.input.clone(),
        max_bytes: args.max_bytes,
        redactions_total: files.iter().map(|f| f.redactions).sum(),
        files,
        skipped,
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    manifest_bytes.push(b'\n');
    let mtime = now.timestamp().max(0) as u64;
    write_atomic(&out, |w| {
        let gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
        let mut tar = TarWriter::new(gz);
        tar.append(&format!("{ROOT}/manifest.json"), &manifest_bytes, mtime)?;
        for (rel, data) in &contents {
            tar.append(&format!("{ROOT}/{rel}"), data, mtime)?;
        }
        tar.finish()?.finish()?;
        Ok(())
    })?;

    let mut stdout = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            let mut v = serde_json::to_value(&manifest)?;
            v["archive"] = json!(out);
            crate::cli::output::print_structured(&mut stdout, global.output, &v)?;
        }
        OutputFormat::Text => {
            writeln!(stdout, "wrote {}", out.display())?;
            writeln!(
                stdout,
                "  {} files ({} bytes), {} secrets redacted",
                manifest.files.len(),
                manifest.files.iter().map(|f| f.bytes).sum::<u64>(),
                manifest.redactions_total
            )?;
            for s in &manifest.skipped {
                writeln!(stdout, "  left out {} ({})", s.path, s.reason)?;
            }
            writeln!(
                stdout,
                "  review it before sharing: tar -xzf {} && less {ROOT}/manifest.json",
                out.display()
            )?;
        }
    }
    Ok(())
}
