//! Proposals for each chord, relative to the current knob values and inside the passport's limits.
//! Knob values are integers; every target is rounded and bounded by `[min, max]` and `max_delta`.
//! A chord whose knob was already moved away from its baseline in its own direction proposes
//! nothing: proposals never compound while an incident lasts.

use modekeeper_policy_sdk::{Input, Proposal};

pub const MICROBATCH: &str = "microbatch_size";
pub const GRAD_ACCUM: &str = "grad_accum_steps";
pub const WORKERS: &str = "dataloader_num_workers";
pub const PREFETCH: &str = "dataloader_prefetch_factor";
pub const CONCURRENCY: &str = "concurrency";

/// The proposals, or why there are none (one sentence for the notes).
pub type Outcome = Result<Vec<Proposal>, String>;

/// Moves `knob` towards `target` as far as its limits allow; `None` when that changes nothing.
fn toward(input: &Input, knob: &str, target: f64, reason: &str) -> Option<Proposal> {
    let (cur, lim) = input.tunable(knob)?;
    let to = lim.bound(cur, target).round();
    (to != cur).then(|| Proposal {
        knob: knob.into(),
        to,
        reason: reason.into(),
    })
}

/// DRIFT-RETUNE: halve `microbatch_size`, double `grad_accum_steps` (their product, hence the global
/// batch, stays the same). Both or neither.
pub fn drift_retune(input: &Input, ratio: f64) -> Outcome {
    let (Some((mb, mb_lim)), Some((ga, ga_lim))) =
        (input.tunable(MICROBATCH), input.tunable(GRAD_ACCUM))
    else {
        return Err(
            "DRIFT-RETUNE needs microbatch_size and grad_accum_steps with passport limits".into(),
        );
    };
    if mb < mb_lim.baseline || ga > ga_lim.baseline {
        return Err(format!(
            "already retuned (microbatch_size {mb}, grad_accum_steps {ga}); holding"
        ));
    }
    let (new_mb, new_ga) = (mb / 2.0, ga * 2.0);
    if mb < 2.0 || new_mb.fract() != 0.0 {
        return Err(format!(
            "microbatch_size {mb} cannot be halved exactly; global batch would change"
        ));
    }
    if new_mb < mb_lim.min || new_ga > ga_lim.max {
        return Err(format!(
            "halving microbatch_size to {new_mb} and doubling grad_accum_steps to {new_ga} leaves the passport range"
        ));
    }
    if mb - new_mb > mb_lim.max_delta || new_ga - ga > ga_lim.max_delta {
        return Err(
            "halving microbatch_size / doubling grad_accum_steps exceeds the passport's max delta"
                .into(),
        );
    }
    let reason = format!(
        "step time drifted to {ratio:.2}x its baseline: halve microbatch_size, double grad_accum_steps (global batch unchanged)"
    );
    Ok(vec![
        Proposal {
            knob: MICROBATCH.into(),
            to: new_mb,
            reason: reason.clone(),
        },
        Proposal {
            knob: GRAD_ACCUM.into(),
            to: new_ga,
            reason,
        },
    ])
}

/// BURST-ABSORB: one more batch of prefetch to ride out compute hiccups, and a quarter less
/// concurrency to contend less with the noisy neighbour.
pub fn burst_absorb(input: &Input) -> Outcome {
    let prefetch = input.tunable(PREFETCH);
    let conc = input.tunable(CONCURRENCY);
    if prefetch.is_none() && conc.is_none() {
        return Err(
            "BURST-ABSORB needs dataloader_prefetch_factor or concurrency with passport limits"
                .into(),
        );
    }
    if prefetch.is_some_and(|(v, l)| v > l.baseline) || conc.is_some_and(|(v, l)| v < l.baseline) {
        return Err("already absorbing (prefetch raised or concurrency lowered); holding".into());
    }
    let mut out = Vec::new();
    if let Some((v, _)) = prefetch {
        out.extend(toward(
            input,
            PREFETCH,
            v + 1.0,
            "burst: prefetch one more batch to absorb compute-time spikes",
        ));
    }
    if let Some((v, _)) = conc {
        let cut = (v / 4.0).round().max(1.0);
        out.extend(toward(
            input,
            CONCURRENCY,
            v - cut,
            "burst: lower concurrency to contend less with the interfering load",
        ));
    }
    if out.is_empty() {
        return Err("BURST-ABSORB knobs are at their passport limits".into());
    }
    Ok(out)
}

/// INPUT-STRAGGLER: half as many dataloader workers again, so one slow worker stalls fewer steps.
pub fn input_straggler(input: &Input, slowest: Option<u32>) -> Outcome {
    let Some((v, lim)) = input.tunable(WORKERS) else {
        return Err("INPUT-STRAGGLER needs dataloader_num_workers with passport limits".into());
    };
    if v > lim.baseline {
        return Err(format!(
            "already widened the input pipeline (dataloader_num_workers {v}); holding"
        ));
    }
    let who = slowest.map_or_else(
        || "a dataloader worker".to_string(),
        |w| format!("dataloader worker {w}"),
    );
    let reason = format!("input straggler ({who} lags its peers): add dataloader workers");
    let add = (v / 2.0).floor().max(1.0);
    toward(input, WORKERS, v + add, &reason)
        .map(|p| vec![p])
        .ok_or_else(|| "dataloader_num_workers is at its passport maximum".into())
}

/// RELOCK: every knob this policy may touch back towards its passport baseline. The microbatch /
/// grad-accum pair moves together or not at all. Returns the proposals and whether every knob is
/// already at its baseline.
pub fn relock(input: &Input, notes: &mut Vec<String>) -> (Vec<Proposal>, bool) {
    let mut out = Vec::new();
    let mut at_baseline = true;
    let off = |k: &str| input.tunable(k).is_some_and(|(v, l)| v != l.baseline);
    let pair_off = off(MICROBATCH) && off(GRAD_ACCUM);
    if pair_off {
        at_baseline = false;
        let mb = input
            .tunable(MICROBATCH)
            .map(|(v, l)| (v, l.baseline, l.max_delta));
        let ga = input
            .tunable(GRAD_ACCUM)
            .map(|(v, l)| (v, l.baseline, l.max_delta));
        if let (Some((mv, mb0, md)), Some((gv, ga0, gd))) = (mb, ga) {
            if (mv - mb0).abs() <= md && (gv - ga0).abs() <= gd {
                let reason = "relock: back to the passport baseline (global batch preserved)";
                out.push(Proposal {
                    knob: MICROBATCH.into(),
                    to: mb0,
                    reason: reason.into(),
                });
                out.push(Proposal {
                    knob: GRAD_ACCUM.into(),
                    to: ga0,
                    reason: reason.into(),
                });
            } else {
                notes.push("relock of microbatch_size/grad_accum_steps exceeds max delta; left for a human".into());
            }
        }
    }
    for lim in &input.limits {
        if pair_off && (lim.knob == MICROBATCH || lim.knob == GRAD_ACCUM) {
            continue;
        }
        let Some(cur) = input.knob(&lim.knob) else {
            continue;
        };
        if cur != lim.baseline {
            at_baseline = false;
            out.extend(toward(
                input,
                &lim.knob,
                lim.baseline,
                "relock: back to the passport baseline",
            ));
        }
    }
    (out, at_baseline)
}
