//! Evaluation cost per window per policy, instantiation included (a plain timing binary, not run in
//! CI): `cargo bench --bench policy_eval`. Prints the median, p90 and max over every window of the
//! real traces, repeated.

use std::time::Instant;

use modekeeper::pipeline::windows_of;
use modekeeper::policy::{Knobs, Limits, PolicyCatalog, PolicyHost, PolicyState, SandboxLimits};
use modekeeper::signals::{FeatureConfig, WindowFeatures};

fn windows() -> Vec<WindowFeatures> {
    let mut out = Vec::new();
    for name in [
        "stable",
        "burst",
        "combo",
        "drift",
        "loss_drift",
        "near_hang",
        "straggler",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/data/traces/{name}.jsonl.gz"));
        let cfg = FeatureConfig {
            window_steps: 50,
            warmup_steps: 200,
        };
        out.extend(windows_of(&path, cfg).unwrap());
    }
    out
}

fn main() {
    let ws = windows();
    let host = PolicyHost::new(SandboxLimits::default(), None).unwrap();
    let limits = Limits::reference();
    let knobs = Knobs::baseline(&limits);
    println!(
        "{:<18} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "policy", "windows", "median µs", "p90 µs", "max µs", "median fuel"
    );
    for src in PolicyCatalog::embedded().sources {
        let t = Instant::now();
        let policy = host.load(&src.bytes).unwrap();
        let compile_ms = t.elapsed().as_millis();
        let (mut times, mut fuel) = (Vec::new(), Vec::new());
        for _round in 0..5 {
            let mut state = PolicyState::default();
            for f in &ws {
                let t = Instant::now();
                let e = policy.evaluate(f, &knobs, &limits, &state);
                times.push(t.elapsed().as_nanos() as f64 / 1000.0);
                fuel.push(e.cost.fuel);
                assert!(e.decision.failure.is_none());
                state = e.next_state;
            }
        }
        times.sort_by(f64::total_cmp);
        fuel.sort_unstable();
        let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
        println!(
            "{:<18} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>12}   (compile {compile_ms} ms)",
            src.meta.id,
            times.len(),
            q(0.5),
            q(0.9),
            times[times.len() - 1],
            fuel[fuel.len() / 2]
        );
    }
}
