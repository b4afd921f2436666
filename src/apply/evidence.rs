//! The verify report as evidence for apply's gate: the few fields of a `k8s_verify.v1` report that
//! tie a verification to a plan, a cluster, a time and the object versions it saw. Read leniently
//! (other fields are ignored) but every field used here must be present and well-typed. Pure.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Schema of the report apply accepts.
pub const VERIFY_SCHEMA: &str = "k8s_verify.v1";
/// The report `k8s verify --out D` leaves in D, and where apply looks by default.
pub const VERIFY_LATEST: &str = "k8s_verify_latest.json";
/// Verify reports larger than this are refused before parsing (the cap on every report).
pub const MAX_VERIFY_REPORT_BYTES: u64 = crate::fsio::MAX_REPORT_BYTES;

/// What apply takes from a verify report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyEvidence {
    pub path: PathBuf,
    pub plan_digest: String,
    pub context: Option<String>,
    pub server: String,
    pub finished_at: DateTime<Utc>,
    pub ok: bool,
    /// `verify_blocker.kind` and its detail, when not ok.
    pub blocker: Option<(String, String)>,
    pub items: Vec<EvidenceItem>,
    /// The whole report, for the seal check ([`super::seal::check_seal`]).
    pub document: serde_json::Value,
}

/// One checked item: which object, at which version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EvidenceItem {
    pub index: usize,
    pub namespace: String,
    pub name: String,
    pub kind: String,
    /// Null when verify could not read the object.
    pub resource_version: Option<String>,
}

#[derive(Deserialize)]
struct RawCluster {
    context: Option<String>,
    server: String,
}

#[derive(Deserialize)]
struct RawBlocker {
    kind: String,
    #[serde(default)]
    detail: String,
}

#[derive(Deserialize)]
struct RawChecks {
    items: Vec<EvidenceItem>,
}

#[derive(Deserialize)]
struct RawReport {
    schema_version: String,
    plan_digest: String,
    finished_at: String,
    cluster: RawCluster,
    ok: bool,
    verify_blocker: Option<RawBlocker>,
    checks: RawChecks,
}

/// Why no evidence could be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvidenceProblem {
    /// No report at the path (`verify_missing`).
    Missing(PathBuf),
    /// A file that is not a usable `k8s_verify.v1` report (`verify_report_invalid`).
    Invalid(PathBuf, String),
}

/// Parses report bytes.
pub fn parse_verify_report(path: &Path, bytes: &[u8]) -> Result<VerifyEvidence, String> {
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a verify report: {e}"))?;
    let raw: RawReport = serde_json::from_value(document.clone())
        .map_err(|e| format!("not a verify report: {e}"))?;
    if raw.schema_version != VERIFY_SCHEMA {
        return Err(format!(
            "schema_version {:?} is not {VERIFY_SCHEMA}",
            raw.schema_version
        ));
    }
    let finished_at = DateTime::parse_from_rfc3339(&raw.finished_at)
        .map_err(|e| format!("finished_at {:?}: {e}", raw.finished_at))?
        .with_timezone(&Utc);
    Ok(VerifyEvidence {
        path: path.to_path_buf(),
        plan_digest: raw.plan_digest,
        context: raw.cluster.context,
        server: raw.cluster.server,
        finished_at,
        ok: raw.ok,
        blocker: raw.verify_blocker.map(|b| (b.kind, b.detail)),
        items: raw.checks.items,
        document,
    })
}

/// Reads the report at `path` through [`crate::fsio::read_capped`]: a FIFO or a device there is
/// refused (`verify_report_invalid`) before a byte is read, and a file over the cap is not read.
pub fn read_verify_report(path: &Path) -> Result<VerifyEvidence, EvidenceProblem> {
    let bytes = crate::fsio::read_capped(path, MAX_VERIFY_REPORT_BYTES).map_err(|e| {
        if e.is_not_found() {
            EvidenceProblem::Missing(path.into())
        } else {
            EvidenceProblem::Invalid(path.into(), format!("cannot read it: {e}"))
        }
    })?;
    parse_verify_report(path, &bytes).map_err(|e| EvidenceProblem::Invalid(path.into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn report() -> serde_json::Value {
        json!({
            "schema_version": "k8s_verify.v1", "plan_digest": "sha256:ab", "finished_at": "2026-01-01T00:00:00.000Z",
            "cluster": {"context": "kube-sim", "cluster": "c", "server": "https://127.0.0.1:1", "user": "u",
                        "namespace": "default", "source": {"type": "in_cluster"}},
            "ok": false, "verify_blocker": {"kind": "rbac_denied", "index": 0, "detail": "dry run: forbidden"},
            "checks": {"server": {"ok": true}, "items": [
                {"index": 0, "namespace": "ml", "name": "trainer", "kind": "Deployment", "resource_version": "7", "ok": false}]},
            "extra": 1
        })
    }

    #[test]
    fn reads_the_fields_apply_needs() {
        let e = parse_verify_report(Path::new("r.json"), report().to_string().as_bytes()).unwrap();
        assert_eq!(e.plan_digest, "sha256:ab");
        assert_eq!(e.context.as_deref(), Some("kube-sim"));
        assert_eq!(e.finished_at.timestamp(), 1_767_225_600);
        assert_eq!(
            e.blocker,
            Some(("rbac_denied".into(), "dry run: forbidden".into()))
        );
        assert_eq!(e.items[0].resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn refuses_what_is_not_a_verify_report() {
        let mut r = report();
        r["schema_version"] = json!("k8s_verify.v0");
        let e = parse_verify_report(Path::new("r"), r.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("is not k8s_verify.v1"), "{e}");
        let mut r = report();
        r["finished_at"] = json!("yesterday");
        assert!(parse_verify_report(Path::new("r"), r.to_string().as_bytes()).is_err());
        let mut r = report();
        r.as_object_mut().unwrap().remove("plan_digest");
        assert!(parse_verify_report(Path::new("r"), r.to_string().as_bytes()).is_err());
        assert_eq!(
            read_verify_report(Path::new("/nonexistent/k8s_verify_latest.json")),
            Err(EvidenceProblem::Missing(
                "/nonexistent/k8s_verify_latest.json".into()
            ))
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_device_is_refused_at_once() {
        let e = read_verify_report(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            e,
            EvidenceProblem::Invalid(
                "/dev/zero".into(),
                "cannot read it: not a regular file (a character device)".into()
            )
        );
        let (_dir, fifo) = crate::fsio::tests::fifo();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read_verify_report(&fifo).map(|_| ())));
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a FIFO must not block the read");
        assert!(
            matches!(&r, Err(EvidenceProblem::Invalid(_, m)) if m.ends_with("(a FIFO)")),
            "{r:?}"
        );
    }
}
