//! What `closed-loop run` and `closed-loop watch` share on the CLI side: the explain log's
//! start/stop bracket, loading the policies, timestamps.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use super::inputs;
use crate::artifacts::ExplainLog;
use crate::cli::policy::{PolicyDirs, user_error as policy_error};
use crate::error::InputError;
use crate::policy::{self, PolicyCatalog, PolicyHost, PolicySet, SandboxLimits};

/// Runs `f` with the explain log of `out`, ending it with `<prefix>_stop` (and, on failure, a
/// `<prefix>_error` with the error's kind first).
pub(super) fn with_explain(
    out: &Path,
    prefix: &str,
    f: impl FnOnce(&mut ExplainLog) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut explain = ExplainLog::open(out)?;
    let result = f(&mut explain);
    match &result {
        Ok(()) => explain.event(&format!("{prefix}_stop"), json!({"rc": 0}))?,
        Err(e) => {
            let kind = e
                .chain()
                .find_map(|c| c.downcast_ref::<InputError>())
                .map_or("internal", |i| i.kind);
            explain.event(
                &format!("{prefix}_error"),
                json!({"kind": kind, "error": format!("{e:#}")}),
            )?;
            explain.event(
                &format!("{prefix}_stop"),
                json!({"rc": crate::error::exit_code(e)}),
            )?;
        }
    }
    result
}

pub(super) fn load_policies(
    dirs: &PolicyDirs,
    base: &str,
    advanced: &[String],
) -> anyhow::Result<(PolicyHost, PolicySet, PolicyCatalog)> {
    let dir = dirs.policy_dir.clone().or_else(policy::default_policy_dir);
    let catalog = PolicyCatalog::load(dir.as_deref()).map_err(policy_error)?;
    let advanced = inputs::advanced_policy_ids(&catalog, advanced)?;
    let cache = if dirs.no_cache {
        None
    } else {
        dirs.cache_dir.clone().or_else(policy::default_cache_dir)
    };
    let host = PolicyHost::new(SandboxLimits::default(), cache.as_deref())?;
    let set = PolicySet::load(&host, &catalog, base, &advanced).map_err(policy_error)?;
    for w in host.cache_warnings() {
        eprintln!("warning: {w}");
    }
    Ok((host, set, catalog))
}

pub(super) fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
