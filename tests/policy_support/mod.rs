//! Shared helpers for the policy integration tests: run a trace from tests/data/traces through the
//! real pipeline and a policy set, and score it against its labels.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use modekeeper::pipeline::run_pass_with_records;
use modekeeper::policy::{
    Knobs, Labels, Limits, Policy, PolicyCatalog, PolicyHost, PolicySet, SandboxLimits, Scorer,
    TestReport, WindowDecision,
};
use modekeeper::signals::{FeatureConfig, WindowFeatures};
use modekeeper::telemetry::{Format, IngestOptions, SourceSpec, open_source};

pub const TRACES: [&str; 7] = [
    "stable",
    "burst",
    "combo",
    "drift",
    "loss_drift",
    "near_hang",
    "straggler",
];

pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

pub fn trace_path(name: &str) -> PathBuf {
    data(&format!("traces/{name}.jsonl.gz"))
}

pub fn labels(name: &str) -> Labels {
    Labels::parse(&std::fs::read_to_string(data(&format!("traces/{name}.labels.json"))).unwrap())
        .unwrap()
}

/// A trace as the scorer sees it: every window's features, and each record's step and timestamp.
type Parsed = (Vec<WindowFeatures>, Vec<(u64, Option<i64>)>);

/// A trace with the default window and warm-up (parsed once).
fn parsed(name: &str) -> Parsed {
    static CACHE: OnceLock<Mutex<HashMap<String, Parsed>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(w) = cache.lock().unwrap().get(name) {
        return w.clone();
    }
    let w = parse_trace(name);
    cache.lock().unwrap().insert(name.to_string(), w.clone());
    w
}

/// Every window's features of a trace, with the default window and warm-up (parsed once).
pub fn windows(name: &str) -> Vec<WindowFeatures> {
    parsed(name).0
}

fn parse_trace(name: &str) -> Parsed {
    let cfg = FeatureConfig {
        window_steps: modekeeper::signals::DEFAULT_WINDOW_STEPS,
        warmup_steps: modekeeper::signals::DEFAULT_WARMUP_STEPS,
    };
    let src = open_source(&SourceSpec {
        path: trace_path(name),
        format: Format::Auto,
        record_raw: None,
    })
    .unwrap();
    let (mut windows, mut records) = (Vec::new(), Vec::new());
    run_pass_with_records(
        src,
        &IngestOptions::default(),
        cfg,
        false,
        &mut |f| {
            windows.push(f.clone());
            Ok(())
        },
        &mut |s| records.push((s.step.unwrap_or(0), s.ts_ms)),
    )
    .unwrap();
    (windows, records)
}

/// A host without a disk cache (tests must not depend on one).
pub fn host() -> PolicyHost {
    PolicyHost::new(SandboxLimits::default(), None).unwrap()
}

/// The embedded policies, compiled once per test binary (compiling is slow in debug builds).
pub fn embedded() -> &'static [Policy] {
    static LOADED: OnceLock<(PolicyHost, Vec<Policy>)> = OnceLock::new();
    &LOADED
        .get_or_init(|| {
            let host = host();
            let policies = PolicyCatalog::embedded()
                .sources
                .iter()
                .map(|s| host.load(&s.bytes).unwrap())
                .collect();
            (host, policies)
        })
        .1
}

pub fn policy(id: &str) -> Policy {
    embedded()
        .iter()
        .find(|p| p.metadata().id == id)
        .unwrap()
        .clone()
}

/// safe-chords with the named advanced policies in front (the order `PolicySet::load` uses).
pub fn set(advanced: &[&str]) -> PolicySet {
    let mut v: Vec<Policy> = advanced.iter().map(|id| policy(id)).collect();
    v.push(policy("safe-chords"));
    PolicySet::new(v)
}

/// Runs `name` through `set` with the reference knobs at their baseline; returns the decisions and
/// the scored report.
pub fn score(
    name: &str,
    set: &mut PolicySet,
) -> (Vec<(WindowFeatures, WindowDecision)>, TestReport) {
    let limits = Limits::reference();
    let knobs = Knobs::baseline(&limits);
    let available: Vec<String> = set
        .policies()
        .flat_map(|p| p.metadata().chords.clone())
        .collect();
    let mut scorer = Scorer::new(labels(name), available);
    let (windows, records) = parsed(name);
    for (step, ts) in records {
        scorer.note_record(step, ts);
    }
    let mut out = Vec::new();
    for f in windows {
        let d = set.evaluate(&f, &knobs, &limits);
        scorer.push(&f, &d);
        out.push((f, d));
    }
    (out, scorer.finish())
}
