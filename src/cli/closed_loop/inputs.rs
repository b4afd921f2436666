//! Everything a run needs, resolved and validated before any artifact is written: the telemetry
//! source, the passport, the starting knobs, the target workload and the policies to load — from
//! flags, or from an earlier run's report and bundle (`--replay DIR`). Every failure here is invalid
//! input (exit 2) and leaves only explain.jsonl behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::RunArgs;
use crate::cli::GlobalArgs;
use crate::cli::observe::telemetry_inputs;
use crate::closed_loop::{
    BUNDLE_FILE, KnobOrigin, PolicyBundle, REPORT_NAME, REPORT_SCHEMA, ReplayInputs, RunConfig,
    TRACE_FILE, parse_knob_flags, starting_knobs,
};
use crate::error::input_error;
use crate::k8s::{Cluster, ClusterIdentity, ConnectError, ConnectOptions, KnobReadError};
use crate::passport::{ChordId, Passport, TEMPLATE_NAMES, parse_passport, template};
use crate::plan::{PLAN_FILE, Target, WorkloadKind};
use crate::policy::{PolicyCatalog, PolicySet};
use crate::signals::FeatureConfig;
use crate::telemetry::{Format, IngestOptions, SourceSpec};

/// The Deployment a plan targets when none is given (the namespace: see `crate::k8s::default_namespace`).
pub const DEFAULT_DEPLOYMENT: &str = "trainer";

/// A resolved run.
pub struct Inputs {
    pub spec: SourceSpec,
    pub opts: IngestOptions,
    pub cfg: FeatureConfig,
    pub passport: Passport,
    /// `template:<name>`, the passport file, or the bundle it was replayed from.
    pub passport_source: String,
    pub knobs: BTreeMap<String, f64>,
    pub knob_origin: KnobOrigin,
    pub target: Target,
    pub target_defaulted: bool,
    /// The knobs ConfigMap, when not `<workload>-modekeeper-knobs` (from the workload's
    /// annotation, or the replayed run's report).
    pub knobs_configmap: Option<String>,
    /// The base policy and the advanced ones, as `PolicySet::load` takes them.
    pub base_policy: String,
    pub advanced: Vec<String>,
    pub replay: Option<ReplayBaseline>,
    /// The cluster the starting knobs were read from (`--knobs-from-cluster`).
    pub cluster: Option<ClusterIdentity>,
    pub warnings: Vec<String>,
}

/// The earlier run's artifacts a replay is compared with, read before anything is overwritten.
pub struct ReplayBaseline {
    pub dir: PathBuf,
    /// The old decision trace: sha256 of the file and of each line (None when it is missing).
    pub trace: Option<(String, Vec<[u8; 32]>)>,
    /// The old plan document's bytes.
    pub plan: Option<Vec<u8>>,
}

impl Inputs {
    /// What the loop's plans target and are bounded by.
    pub fn plan_spec(&self) -> crate::closed_loop::live::PlanSpec<'_> {
        crate::closed_loop::live::PlanSpec {
            target: &self.target,
            passport: &self.passport,
            knobs_configmap: self.knobs_configmap.as_deref(),
        }
    }

    pub fn config(&self) -> RunConfig {
        RunConfig {
            window_steps: self.cfg.window_steps,
            warmup_steps: self.cfg.warmup_steps,
            reorder_window: self.opts.reorder_window as u64,
            clock_skew_tolerance_ms: self.opts.skew_tolerance_ms.max(0) as u64,
        }
    }
}

pub fn resolve(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<Inputs> {
    match &args.replay {
        Some(dir) => from_replay(global, dir),
        None => from_flags(global, args),
    }
}

fn from_flags(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<Inputs> {
    let (spec, opts, cfg) = telemetry_inputs(&args.telemetry)?;
    let (passport, passport_source) = load_passport(&args.decision.passport)?;
    let given = parse_knob_flags(&args.decision.knobs, &passport)
        .map_err(|e| input_error("bad_knobs", e))?;
    let (kind, name) = args.decision.workload();
    // Like kubectl: -n, else the kubeconfig context's namespace (read locally, no request). A plan
    // needs no cluster, so an unreadable kubeconfig the user did not name only costs a warning.
    let mut warnings = Vec::new();
    let namespace = match crate::k8s::default_namespace(&ConnectOptions::from_flags(
        global.kubeconfig.as_deref(),
        global.context.as_deref(),
        global.namespace.as_deref(),
        None,
    )) {
        Ok(ns) => ns,
        Err(e) if global.kubeconfig.is_none() && global.context.is_none() => {
            warnings.push(format!(
                "{}; the plan targets namespace default (-n to choose)",
                e.message
            ));
            "default".to_string()
        }
        Err(e) => return Err(input_error("kubeconfig", e.message)),
    };
    let target = Target::new(&namespace, name.unwrap_or(DEFAULT_DEPLOYMENT), kind)
        .map_err(|e| input_error("bad_flag", format!("target workload: {e}")))?;
    let (knobs, knob_origin) = starting_knobs(&passport, &given);
    let mut inputs = Inputs {
        spec,
        opts,
        cfg,
        passport,
        passport_source,
        knobs,
        knob_origin,
        target,
        target_defaulted: global.namespace.is_none() || name.is_none(),
        knobs_configmap: None,
        base_policy: args.decision.policy.clone(),
        advanced: args
            .decision
            .enable_advanced
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        replay: None,
        cluster: None,
        warnings,
    };
    if args.decision.knobs_from_cluster {
        // The same workload the plan targets: --deployment/--statefulset, default `trainer`.
        let name = name.unwrap_or(DEFAULT_DEPLOYMENT);
        knobs_from_cluster(global, &mut inputs, name, kind)?;
    }
    Ok(inputs)
}

/// Reads the workload's pod-template knob annotations (one GET; nothing is written). The target's
/// namespace becomes the connection's: `-n`, else the kubeconfig context's. Governed knobs without an
/// annotation start at their passport baseline; annotations of knobs the passport does not govern are
/// ignored. Both are reported as warnings.
fn knobs_from_cluster(
    global: &GlobalArgs,
    inputs: &mut Inputs,
    name: &str,
    kind: WorkloadKind,
) -> anyhow::Result<()> {
    let opts = ConnectOptions::from_flags(
        global.kubeconfig.as_deref(),
        global.context.as_deref(),
        global.namespace.as_deref(),
        global.request_timeout,
    );
    let cluster = match Cluster::connect(&opts) {
        Ok(c) => c,
        Err(ConnectError::Config(e)) => return Err(input_error("kubeconfig", e.message)),
        Err(e @ ConnectError::Runtime(_)) => return Err(e.into()),
    };
    let identity = cluster.identity().clone();
    let target = Target::new(&identity.namespace, name, kind)
        .map_err(|e| input_error("bad_flag", format!("target workload: {e}")))?;
    let what = format!(
        "{}/{name} in namespace {}",
        kind.resource(),
        identity.namespace
    );
    let (found, configmap) = cluster
        .read_knobs_and_configmap(&target)
        .map_err(|e| match e {
            KnobReadError::WorkloadMissing { .. } => {
                input_error("workload_missing", format!("--knobs-from-cluster: {e}"))
            }
            KnobReadError::InvalidAnnotation { .. } => input_error(
                "bad_annotation",
                format!("--knobs-from-cluster: {what}: {e}"),
            ),
            KnobReadError::Cluster(c) => {
                anyhow::anyhow!("--knobs-from-cluster: reading {what}: {c}")
            }
        })?;
    let p = &inputs.passport;
    let governed: BTreeMap<String, f64> = found
        .iter()
        .filter(|(k, _)| p.knob(k).is_some())
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let ignored: Vec<&str> = found
        .keys()
        .filter(|k| p.knob(k).is_none())
        .map(String::as_str)
        .collect();
    if !ignored.is_empty() {
        inputs.warnings.push(format!(
            "{what} carries knobs passport {} does not govern, left alone: {}",
            p.name,
            ignored.join(", ")
        ));
    }
    let missing: Vec<&str> = p
        .knobs
        .keys()
        .filter(|k| !governed.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        inputs.warnings.push(format!(
            "{what} has no annotation for {}: assumed at the passport baseline",
            missing.join(", ")
        ));
    }
    let (knobs, _) = starting_knobs(p, &governed);
    inputs.knobs = knobs;
    inputs.knob_origin = KnobOrigin::Cluster;
    inputs.knobs_configmap =
        Some(configmap).filter(|c| *c != crate::plan::default_knobs_configmap(target.name()));
    inputs.target = target;
    inputs.target_defaulted = false;
    inputs.cluster = Some(identity);
    Ok(())
}

/// A template name, else a passport file (v1, or v0 translated on load).
pub(crate) fn load_passport(what: &str) -> anyhow::Result<(Passport, String)> {
    if let Some(t) = template(what) {
        let p = t.map_err(|e| input_error("bad_passport", e.to_string()))?;
        return Ok((p, format!("template:{what}")));
    }
    let path = Path::new(what);
    if !path.is_file() {
        return Err(input_error(
            "unknown_passport",
            format!(
                "--passport {what:?} is neither a template ({}) nor a passport file",
                TEMPLATE_NAMES.join(", ")
            ),
        ));
    }
    let text =
        crate::fsio::read_capped_text(path, crate::passport::MAX_PASSPORT_BYTES).map_err(|e| {
            input_error(
                "unknown_passport",
                format!("cannot read passport {}: {e}", path.display()),
            )
        })?;
    let loaded = parse_passport(&path.display().to_string(), &text)
        .map_err(|e| input_error("bad_passport", e.to_string()))?;
    Ok((loaded.passport, path.display().to_string()))
}

/// `--enable-advanced` takes chord ids (`TIMEOUT-GUARD`) as well as policy ids.
pub fn advanced_policy_ids(
    catalog: &PolicyCatalog,
    wanted: &[String],
) -> anyhow::Result<Vec<String>> {
    catalog
        .advanced_ids(wanted)
        .map_err(|w| {
            input_error(
                "unknown_policy",
                format!("--enable-advanced {w}: no advanced policy provides this chord (see `policy list`)"),
            )
        })
}

/// Checks what the passport says about the loaded policies: a pinned digest must match the
/// component (an error); an advanced chord the passport does not permit, or a knob it does not
/// govern, is worth a warning (the envelope will block those proposals).
pub fn check_policies(passport: &Passport, set: &PolicySet) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    for p in set.policies() {
        let m = p.metadata();
        let digest = &p.reference().digest;
        if let Some(pin) = passport.pinned_digest(&m.id)
            && digest.trim_start_matches("sha256:") != pin
        {
            return Err(input_error(
                "policy_pin_mismatch",
                format!(
                    "passport {} pins policy {} to sha256:{pin}, but the component is {digest}",
                    passport.name, m.id
                ),
            ));
        }
        if !m.advanced {
            continue;
        }
        for c in m.chords.iter().filter_map(|c| ChordId::parse(c)) {
            if c != ChordId::NormalHold && !passport.chord_allowed(c) {
                warnings.push(format!(
                    "passport {} does not permit {c}: proposals of {} will be blocked (chord_not_allowed)",
                    passport.name, m.id
                ));
            }
        }
        for k in m.knobs.iter().filter(|k| passport.knob(k).is_none()) {
            warnings.push(format!(
                "passport {} does not govern {k}: {} cannot change it",
                passport.name, m.id
            ));
        }
    }
    Ok(warnings)
}

/// A replayed run's report or bundle larger than this is not one this version wrote.
const MAX_REPLAY_JSON_BYTES: u64 = crate::fsio::MAX_REPORT_BYTES;

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = crate::fsio::read_capped_text(path, MAX_REPLAY_JSON_BYTES).map_err(|e| {
        input_error(
            "replay_missing",
            format!("--replay: cannot read {}: {e}", path.display()),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        input_error(
            "replay_invalid",
            format!(
                "--replay: {} is not a run this version can replay: {e}",
                path.display()
            ),
        )
    })
}

fn from_replay(global: &GlobalArgs, dir: &Path) -> anyhow::Result<Inputs> {
    if global.namespace.is_some() {
        return Err(input_error(
            "bad_flag",
            "--replay takes the target from the replayed run; drop -n/--namespace",
        ));
    }
    let report: ReplayInputs = read_json(&dir.join(format!("{REPORT_NAME}_latest.json")))?;
    if report.schema_version != REPORT_SCHEMA {
        return Err(input_error(
            "replay_invalid",
            format!(
                "--replay: report schema {:?}, expected {REPORT_SCHEMA}",
                report.schema_version
            ),
        ));
    }
    let bundle: PolicyBundle = read_json(&dir.join(BUNDLE_FILE))?;

    let src = &report.source;
    if src.path.as_os_str() == "-" {
        return Err(input_error(
            "replay_invalid",
            "--replay: the run read stdin, which cannot be read again",
        ));
    }
    let path = src
        .absolute_path
        .clone()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| src.path.clone());
    let format = Format::from_str(&src.format, true).map_err(|_| {
        input_error(
            "replay_invalid",
            format!("--replay: unknown source format {:?}", src.format),
        )
    })?;
    let spec = SourceSpec {
        path,
        format,
        record_raw: None,
    };
    let c = report.config;
    let opts = IngestOptions {
        reorder_window: c.reorder_window as usize,
        skew_tolerance_ms: c.clock_skew_tolerance_ms as i64,
        release_lag_steps: None,
        ..IngestOptions::default()
    };
    let cfg = FeatureConfig {
        window_steps: c.window_steps,
        warmup_steps: c.warmup_steps,
    };

    let passport_text = serde_json::to_string(&bundle.passport.document)?;
    let passport = parse_passport(
        &format!("{}:passport", dir.join(BUNDLE_FILE).display()),
        &passport_text,
    )
    .map_err(|e| input_error("bad_passport", e.to_string()))?
    .passport;
    for k in report.knobs_before.keys() {
        if passport.knob(k).is_none() {
            return Err(input_error(
                "replay_invalid",
                format!("--replay: knob {k} is not governed by the bundled passport"),
            ));
        }
    }
    let (knobs, _) = starting_knobs(&passport, &report.knobs_before);
    let kind = WorkloadKind::parse(&report.target.kind).ok_or_else(|| {
        input_error(
            "replay_invalid",
            format!("--replay: unknown workload kind {:?}", report.target.kind),
        )
    })?;
    let target = Target::new(&report.target.namespace, &report.target.name, kind)
        .map_err(|e| input_error("replay_invalid", format!("--replay: target {e}")))?;

    // Policies pinned by digest, in the bundle's evaluation order: advanced first, the base last.
    let Some((base, advanced)) = bundle.policies.split_last() else {
        return Err(input_error(
            "replay_invalid",
            "--replay: the policy bundle lists no policy",
        ));
    };
    let pinned = |id: &str, digest: &str| format!("{id}@{digest}");
    Ok(Inputs {
        spec,
        opts,
        cfg,
        passport,
        passport_source: bundle.passport.source.clone(),
        knobs,
        knob_origin: KnobOrigin::Replay,
        target,
        target_defaulted: report.target.defaulted,
        knobs_configmap: report
            .target
            .knobs_configmap
            .clone()
            .filter(|c| crate::plan::is_dns1123_subdomain(c)),
        base_policy: pinned(&base.id, &base.digest),
        advanced: advanced.iter().map(|p| pinned(&p.id, &p.digest)).collect(),
        replay: Some(ReplayBaseline {
            dir: dir.to_path_buf(),
            trace: read_trace_digests(&dir.join(TRACE_FILE)),
            plan: crate::fsio::read_capped(&dir.join(PLAN_FILE), crate::plan::MAX_PLAN_BYTES).ok(),
        }),
        cluster: None,
        warnings: Vec::new(),
    })
}

/// sha256 of the whole file and of each of its lines.
fn read_trace_digests(path: &Path) -> Option<(String, Vec<[u8; 32]>)> {
    use sha2::{Digest, Sha256};
    use std::io::BufRead;
    let f = std::fs::File::open(path).ok()?;
    let mut r = std::io::BufReader::new(f);
    let mut whole = Sha256::new();
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf).ok()? == 0 {
            break;
        }
        whole.update(&buf);
        lines.push(Sha256::digest(&buf).into());
    }
    Some((format!("sha256:{}", hex(&whole.finalize())), lines))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
