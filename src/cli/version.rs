//! `version`: the plugin's version, the embedded policies' versions and the WIT versions this build
//! hosts (`-o json|yaml` for scripts and bug reports).

use std::io::Write;

use serde_json::json;

use super::GlobalArgs;
use super::output::{print_structured, structured};
use crate::policy::PolicyCatalog;

/// The WIT worlds this build can host, newest last (a new version folder in wit/ adds one).
pub const HOSTED_WIT_VERSIONS: &[&str] = &["1.0.0"];

pub fn run(global: &GlobalArgs) -> anyhow::Result<()> {
    // Embedded policies only: the policy directory is user state, `policy list` shows it.
    let cat = PolicyCatalog::embedded();
    let policies: Vec<serde_json::Value> = cat
        .sources
        .iter()
        .map(|s| json!({"id": s.meta.id, "version": s.meta.version, "wit_version": s.meta.wit_version, "sha256": s.sha256}))
        .collect();
    let value = json!({
        "schema_version": "version.v1",
        "plugin": {"name": "kubectl-modekeeper", "version": env!("CARGO_PKG_VERSION")},
        "wit": {"hosted": HOSTED_WIT_VERSIONS},
        "policies": policies,
    });
    let mut out = std::io::stdout().lock();
    if structured(global.output) {
        return print_structured(&mut out, global.output, &value);
    }
    writeln!(out, "kubectl-modekeeper {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "  WIT       {}", HOSTED_WIT_VERSIONS.join(", "))?;
    for s in &cat.sources {
        writeln!(
            out,
            "  policy    {} {} (WIT {})",
            s.meta.id, s.meta.version, s.meta.wit_version
        )?;
    }
    Ok(())
}
