//! Hostile policies (real components built from policies/hostile/ by scripts/build-policies.sh):
//! each ends as a recorded failure or a blocked proposal, and the host goes on evaluating.

mod policy_support;

use std::time::{Duration, Instant};

use modekeeper::policy::{
    FailureKind, Knobs, Limits, Policy, PolicyHost, PolicyState, SandboxLimits, read_metadata,
};
use modekeeper::signals::WindowFeatures;
use policy_support::{data, host, windows};

fn load(host: &PolicyHost, name: &str) -> Policy {
    let bytes = std::fs::read(data(&format!("policies/{name}.wasm"))).unwrap();
    host.load(&bytes).unwrap()
}

fn some_windows() -> Vec<WindowFeatures> {
    windows("burst").into_iter().skip(10).take(8).collect()
}

fn eval(p: &Policy, f: &WindowFeatures) -> modekeeper::policy::Evaluation {
    let limits = Limits::reference();
    p.evaluate(
        f,
        &Knobs::baseline(&limits),
        &limits,
        &PolicyState(vec![1, 2, 3]),
    )
}

/// After a hostile evaluation, safe-chords on the same host still works.
fn host_still_works(host: &PolicyHost) {
    let src = modekeeper::policy::PolicyCatalog::embedded()
        .find("safe-chords")
        .unwrap();
    let p = host.load(&src.bytes).unwrap();
    let e = eval(&p, &some_windows()[0]);
    assert!(e.decision.failure.is_none(), "{:?}", e.decision.failure);
}

fn assert_failed(e: &modekeeper::policy::Evaluation, kind: FailureKind) {
    let f = e
        .decision
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected a {kind:?} failure, got {:?}", e.decision));
    assert_eq!(f.kind, kind, "{}", f.message);
    assert!(e.decision.proposals.is_empty());
    assert_eq!(e.decision.chord, "NORMAL-HOLD");
    assert_eq!(
        e.next_state,
        PolicyState(vec![1, 2, 3]),
        "a failed window keeps the previous state"
    );
    assert!(e.decision.notes[0].starts_with("policy failed"));
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let host = host();
    let p = load(&host, "hostile-spin");
    let started = Instant::now();
    let e = eval(&p, &some_windows()[0]);
    assert_failed(&e, FailureKind::OutOfFuel);
    assert!(started.elapsed() < Duration::from_secs(5));
    host_still_works(&host);
}

#[test]
fn infinite_loop_hits_the_wall_clock_deadline_when_fuel_is_plenty() {
    let limits = SandboxLimits {
        fuel: u64::MAX / 2,
        deadline: Duration::from_millis(50),
        ..SandboxLimits::default()
    };
    let host = PolicyHost::new(limits, None).unwrap();
    let p = load(&host, "hostile-spin");
    let started = Instant::now();
    let e = eval(&p, &some_windows()[0]);
    assert_failed(&e, FailureKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    host_still_works(&host);
}

#[test]
fn panic_is_a_trap() {
    let host = host();
    let p = load(&host, "hostile-panic");
    for f in some_windows().iter().take(3) {
        assert_failed(&eval(&p, f), FailureKind::Trap);
    }
    host_still_works(&host);
}

#[test]
fn one_gib_allocation_hits_the_memory_cap() {
    let host = host();
    let p = load(&host, "hostile-alloc");
    assert_failed(&eval(&p, &some_windows()[0]), FailureKind::OutOfMemory);
    host_still_works(&host);
}

#[test]
fn garbage_results_are_malformed_decisions() {
    let host = host();
    let p = load(&host, "hostile-garbage");
    let ws = windows("burst");
    let by_mode = |m: u64| ws.iter().find(|f| f.window.index % 4 == m).unwrap();
    for (mode, needle) in [
        (0, "utf"),
        (1, "DELETE-EVERYTHING"),
        (2, "confidence"),
        (3, "state of"),
    ] {
        let e = eval(&p, by_mode(mode));
        assert_failed(&e, FailureKind::Malformed);
        let msg = &e.decision.failure.as_ref().unwrap().message;
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "mode {mode}: {msg}"
        );
    }
    host_still_works(&host);
}

#[test]
fn out_of_limits_proposal_is_blocked_and_undeclared_knob_fails() {
    let host = host();
    let p = load(&host, "hostile-overreach");
    let ws = windows("burst");
    let even = ws.iter().find(|f| f.window.index % 2 == 0).unwrap();
    let e = eval(&p, even);
    assert!(e.decision.failure.is_none());
    assert!(e.decision.proposals.is_empty());
    assert_eq!(e.decision.blocked.len(), 1);
    assert!(
        e.decision.blocked[0]
            .reason
            .contains("outside the passport range"),
        "{:?}",
        e.decision.blocked
    );

    let odd = ws.iter().find(|f| f.window.index % 2 == 1).unwrap();
    let e = eval(&p, odd);
    assert_failed(&e, FailureKind::Malformed);
    assert!(
        e.decision
            .failure
            .as_ref()
            .unwrap()
            .message
            .contains("timeout_ms")
    );
    host_still_works(&host);
}

/// Memory slots are recycled between evaluations (pages the guest dirtied are reset, the rest given
/// back): whatever one evaluation leaves in its static data, heap or stack, the next must not see.
#[test]
fn no_evaluation_sees_what_an_earlier_one_left_in_memory() {
    let host = host();
    let p = load(&host, "hostile-remember");
    let windows = windows("burst");
    assert!(windows.len() > 40);
    for f in windows.iter().chain(&windows) {
        let e = eval(&p, f);
        assert!(e.decision.failure.is_none(), "{:?}", e.decision.failure);
        assert_eq!(
            e.decision.notes,
            vec!["calls-before=0 heap-leftovers=0 stack-leftovers=0".to_string()],
            "window {}",
            f.window.index
        );
    }
    host_still_works(&host);
}

#[test]
fn hostile_components_declare_metadata_and_import_nothing() {
    for name in [
        "hostile-spin",
        "hostile-panic",
        "hostile-alloc",
        "hostile-garbage",
        "hostile-overreach",
        "hostile-remember",
    ] {
        let bytes = std::fs::read(data(&format!("policies/{name}.wasm"))).unwrap();
        assert_eq!(read_metadata(&bytes).unwrap().id, name);
        let (imports, exports) = modekeeper::policy::component_surface(&bytes).unwrap();
        assert!(imports.is_empty(), "{name} imports {imports:?}");
        assert_eq!(exports, vec!["evaluate".to_string()]);
    }
}

#[test]
fn not_a_policy_is_refused_before_compiling() {
    let host = host();
    let core_module = b"\0asm\x01\0\0\0";
    assert!(
        host.load(core_module)
            .unwrap_err()
            .to_string()
            .contains("core module")
    );
    assert!(host.load(b"garbage").is_err());
    // A component without the metadata section: the builder appends it last, so cut it off.
    let src = modekeeper::policy::PolicyCatalog::embedded()
        .find("safe-chords")
        .unwrap();
    let bytes = src.bytes.to_vec();
    let name = modekeeper::policy::METADATA_SECTION.as_bytes();
    let pos = bytes.windows(name.len()).rposition(|w| w == name).unwrap();
    let start = (pos.saturating_sub(8)..pos)
        .find(|s| {
            let (mut size, mut shift, mut i) = (0usize, 0, s + 1);
            while i < pos && bytes[i] & 0x80 != 0 {
                size |= ((bytes[i] & 0x7f) as usize) << shift;
                shift += 7;
                i += 1;
            }
            bytes[*s] == 0
                && i < pos
                && i + 1 + (size | ((bytes[i] as usize) << shift)) == bytes.len()
        })
        .expect("the metadata section ends the component");
    let cut = &bytes[..start];
    let err = host.load(cut).unwrap_err().to_string();
    assert!(
        err.contains("metadata") || err.contains("not a policy component"),
        "{err}"
    );
}
