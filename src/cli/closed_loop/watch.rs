//! `closed-loop watch`: the loop of `closed-loop run`, live. Reads a source that keeps producing
//! (a followed file, pod logs, Prometheus), evaluates each window as it completes, and keeps its
//! whole state in `--out` (see `watch_state`), so a restarted watch continues after the last line it
//! read with the same cooldowns, policy states and applied values — no line lost, no proposal
//! repeated. `--apply` goes through the gates of `k8s apply` (src/apply) once per decision.
//! Explain events: `watch_start`, `watch_resume`, `watch_source_event`, `watch_decision`,
//! `watch_apply`, `watch_report`, `watch_stop` (or `watch_error` then `watch_stop`); with `--apply`
//! also `watch_k8s_event` / `watch_event_failed` per Kubernetes Event and `watch_events` (counts).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::WatchArgs;
use super::inputs::{self, Inputs};
use super::run::{load_policies, stamp, with_explain};
use super::watch_events::WatchEvents;
use super::watch_report::{final_plan, next_change_allowed_ms, stamp_ms, write_latest};
use super::watch_source::{open_live, source_identity};
use super::watch_state::{
    ApplyMark, Pipeline, STATE_FILE, STATE_SCHEMA, WatchState, WatchTotals, decode_lines,
    encode_lines,
};
use crate::apply::{ApplyResult, OneShotOptions, closed_loop_apply};
use crate::artifacts::{ExplainLog, OutDir, write_atomic};
use crate::cli::{GlobalArgs, OutputFormat};
use crate::closed_loop::{ClosedLoop, TRACE_FILE, TraceEvent, knobs_text};
use crate::envelope::Accepted;
use crate::error::input_error;
use crate::plan::{PlanPassport, build_passport_plan, canonical_json, sha256_prefixed};
use crate::policy::PolicySet;
use crate::signals::{FeatureExtractor, WindowStats, Windower};
use crate::telemetry::live::{LiveSource, Poll};
use crate::telemetry::{Ingest, IngestOptions, MAX_LINE_BYTES};

/// Longest a poll waits before the loop looks at its stop conditions again.
const POLL_WAIT: Duration = Duration::from_millis(250);
/// Checkpoints and `watch_latest.json` are rewritten at most this often while windows stream in
/// (a catch-up over a day of backlog evaluates thousands of windows a second); always at the end and
/// before every apply.
const REWRITE_EVERY: Duration = Duration::from_secs(1);

pub fn run(global: &GlobalArgs, args: &WatchArgs) -> anyhow::Result<()> {
    let started = Utc::now();
    with_explain(&args.out, "watch", |explain| {
        execute(global, args, started, explain)
    })
}

/// The evaluated side of the pipeline: the loop, the policies, the decision trace on disk.
pub(super) struct Decider<'a> {
    pub(super) lp: ClosedLoop,
    pub(super) set: &'a mut PolicySet,
    pub(super) trace: BufWriter<File>,
    pub(super) trace_bytes: u64,
    pub(super) trace_lines: u64,
    /// Window index of the latest accepted change.
    pub(super) latest_decision: Option<u64>,
    pub(super) last_event: Option<TraceEvent>,
    pub(super) last_index: u64,
    pub(super) iterations: u64,
    pub(super) last_chord: Option<String>,
}

impl Decider<'_> {
    fn evaluate(
        &mut self,
        extractor: &mut FeatureExtractor,
        w: &WindowStats,
        explain: &mut ExplainLog,
        lines: &mut dyn FnMut(&TraceEvent, u64, bool),
    ) -> anyhow::Result<()> {
        let f = extractor.next(w);
        let alerts_before = self.lp.alerts().len();
        let ev = self.lp.evaluate(&f, self.set);
        // What no knob fixes is said at once, on stderr, whatever the output mode.
        for a in &self.lp.alerts()[alerts_before..] {
            eprintln!("ALERT {}", a.line());
            explain.event("watch_alert", json!(a))?;
        }
        let line = ev.to_line();
        self.trace
            .write_all(line.as_bytes())
            .context("cannot write the decision trace")?;
        self.trace_bytes += line.len() as u64;
        self.trace_lines += 1;
        self.iterations += 1;
        let chord_changed = self.last_chord.as_deref() != Some(ev.chord.as_str());
        if !ev.proposals.is_empty() {
            self.latest_decision = Some(w.index);
        }
        if !ev.proposals.is_empty() || !ev.blocked.is_empty() {
            explain.event(
                "watch_decision",
                json!({"window": ev.window, "chord": ev.chord, "active_chords": ev.active_chords,
                       "proposals": ev.proposals, "blocked": ev.blocked}),
            )?;
        }
        lines(&ev, w.index, chord_changed);
        self.last_index = w.index;
        self.last_chord = Some(ev.chord.clone());
        self.last_event = Some(ev);
        Ok(())
    }
}

/// Feeds one line; evaluates the windows it completes.
fn feed(p: &mut Pipeline, line: &[u8], done: &mut Vec<WindowStats>) {
    let windower = &mut p.windower;
    if line.len() > MAX_LINE_BYTES {
        p.ingest.push_too_long(line.len() as u64);
        return;
    }
    p.ingest.push_line(line, &mut |s| {
        if let Some(w) = windower.push(s) {
            done.push(w);
        }
    });
}

struct StopWhen {
    flag: Arc<AtomicBool>,
    deadline: Option<Instant>,
    max_iterations: Option<u64>,
}

impl StopWhen {
    fn reason(&self, iterations: u64) -> Option<&'static str> {
        if self.flag.load(Ordering::Relaxed) {
            return Some("signal");
        }
        if self.max_iterations.is_some_and(|m| iterations >= m) {
            return Some("max_iterations");
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some("duration");
        }
        None
    }
}

fn execute(
    global: &GlobalArgs,
    args: &WatchArgs,
    started: DateTime<Utc>,
    explain: &mut ExplainLog,
) -> anyhow::Result<()> {
    // First, so that a SIGTERM during start-up (policy compilation, connecting) also ends cleanly.
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("cannot install signal handlers")?;
    }
    let inp = inputs::resolve(global, &args.as_run_args())?;
    let (_host, mut set, _catalog) = load_policies(&args.dirs, &inp.base_policy, &inp.advanced)?;
    let mut warnings = inp.warnings.clone();
    warnings.extend(inputs::check_policies(&inp.passport, &set)?);
    let opts = IngestOptions {
        release_lag_steps: Some(args.release_lag_steps),
        ..inp.opts.clone()
    };
    let (source_id, format) = source_identity(args, global, &inp)?;
    let passport_sha = inp.passport.digest();
    let policy_digests: Vec<String> = set
        .policies()
        .map(|p| p.reference().digest.clone())
        .collect();
    let config = json!({
        "source": source_id, "format": format,
        "window_steps": inp.cfg.window_steps, "warmup_steps": inp.cfg.warmup_steps,
        "reorder_window": opts.reorder_window, "clock_skew_tolerance_ms": opts.skew_tolerance_ms,
        "release_lag_steps": opts.release_lag_steps,
        "passport": {"name": inp.passport.name, "version": inp.passport.version, "sha256": passport_sha},
        "policies": policy_digests,
        "target": {"namespace": inp.target.namespace(), "name": inp.target.name(), "kind": inp.target.kind().as_str()},
    });
    let fingerprint = sha256_prefixed(canonical_json(&config).as_bytes());
    let saved = if args.fresh {
        None
    } else {
        WatchState::load(&args.out)?
    };
    if let Some(s) = &saved
        && s.fingerprint != fingerprint
    {
        let differs: Vec<String> = config
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| s.config.get(k.as_str()) != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        return Err(input_error(
            "state_mismatch",
            format!(
                "{} was written by a watch with a different {}; use --fresh to start over or another --out",
                args.out.join(STATE_FILE).display(),
                differs.join(", ")
            ),
        ));
    }
    if let Some(s) = &saved {
        s.check_against(&inp.passport, &args.out.join(STATE_FILE))?;
    }
    explain.event(
        "watch_start",
        json!({"source": source_id, "format": format, "out": args.out,
               "passport": {"name": inp.passport.name, "version": inp.passport.version, "source": inp.passport_source},
               "policies": policy_digests, "knobs": knobs_text(&inp.knobs), "knobs_source": inp.knob_origin,
               "apply": args.apply, "max_iterations": args.max_iterations, "duration_ms": args.duration,
               "resume": saved.is_some(), "fresh": args.fresh}),
    )?;

    // Restore or start.
    let mut totals = WatchTotals::default();
    let (pipe, lp, carry, last_applied, mut last_apply, ended, cursor, trace_len) = match saved {
        Some(s) => {
            let pipe = Pipeline::decode(&s.pipeline, format, &opts).map_err(|e| {
                input_error(
                    "bad_state",
                    format!("{}: {e:#}; use --fresh to start over", STATE_FILE),
                )
            })?;
            set.set_states(s.policy_states.clone());
            totals = s.totals.clone();
            totals.restarts = totals.restarts.saturating_add(1);
            explain.event(
                "watch_resume",
                json!({"windows": s.loop_state.windows, "trace_lines": s.trace_lines,
                           "cursor": s.source_cursor, "carry_lines": s.carry_lines.len(),
                           "last_apply": s.last_apply, "restarts": totals.restarts}),
            )?;
            (
                pipe,
                ClosedLoop::resume(inp.passport.clone(), s.loop_state),
                VecDeque::from(decode_lines(&s.carry_lines)?),
                s.last_applied,
                s.last_apply,
                s.ended,
                Some(s.source_cursor),
                Some((s.trace_bytes, s.trace_lines)),
            )
        }
        None => (
            Pipeline {
                ingest: Ingest::new(format, &opts),
                windower: Windower::new(inp.cfg.window_steps),
                extractor: FeatureExtractor::new(inp.cfg),
            },
            ClosedLoop::new(inp.passport.clone(), inp.knobs.clone()),
            VecDeque::new(),
            None,
            None,
            false,
            None,
            None,
        ),
    };
    let resumed = trace_len.is_some();
    let mut source = open_live(args, global, &inp, cursor.as_ref())?;
    let source_describe = source.describe();

    // From here on artifacts are written.
    let out = OutDir::create(&args.out, started)?.keep(global.keep);
    let trace_path = out.path(TRACE_FILE);
    let trace_file =
        crate::fsio::no_follow(OpenOptions::new().create(true).write(true).truncate(false))
            .open(&trace_path)
            .with_context(|| format!("cannot open {}", trace_path.display()))?;
    let (trace_bytes, trace_lines) = trace_len.unwrap_or((0, 0));
    // Lines written after the last checkpoint are decided again (identically) below.
    trace_file.set_len(trace_bytes)?;
    let mut trace_file = trace_file;
    std::io::Seek::seek(&mut trace_file, std::io::SeekFrom::End(0))?;
    let mut dec = Decider {
        lp,
        set: &mut set,
        trace: BufWriter::with_capacity(256 * 1024, trace_file),
        trace_bytes,
        trace_lines,
        latest_decision: None,
        last_event: None,
        last_index: 0,
        iterations: 0,
        last_chord: None,
    };
    if resumed {
        dec.latest_decision = last_apply.as_ref().map(|a| a.decision_window);
        if let Some(a) = &mut last_apply
            && a.outcome == "pending"
        {
            // Killed between the checkpoint and the apply's result: the cluster may or may not
            // have taken it. Never applied twice: the next decision carries the knobs again.
            a.outcome = "unknown (the watch stopped during the apply)".into();
        }
    }

    let stop = StopWhen {
        flag,
        deadline: args
            .duration
            .map(|ms| Instant::now() + Duration::from_millis(ms)),
        max_iterations: args.max_iterations,
    };
    let terminal = std::io::stderr().is_terminal() && global.output == OutputFormat::Text;
    let plain_lines = !terminal && global.output == OutputFormat::Text;
    let connect = crate::k8s::ConnectOptions::from_flags(
        global.kubeconfig.as_deref(),
        global.context.as_deref(),
        global.namespace.as_deref(),
        global.request_timeout,
    );
    // Kubernetes Events on the target: only when the watch acts on the cluster.
    let mut k8s_events = args.apply.then(|| WatchEvents::new(&connect, &inp.target));
    let mut verdicts = Vec::new();
    let mut decision_is_rollback = false;

    let mut ctx = Ctx {
        args,
        inp: &inp,
        out: &out,
        config: &config,
        fingerprint: &fingerprint,
        started,
        source_describe: &source_describe,
        warnings: &warnings,
        resumed,
    };
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut done: Vec<WindowStats> = Vec::new();
    let mut last_rewrite = Instant::now();
    let mut pr = Progress {
        pipe,
        carry,
        totals,
        last_applied,
        last_apply,
        ended,
        source_events: 0,
    };
    let mut stop_reason = "source_ended";
    let mut source_done = false;
    loop {
        if let Some(r) = stop.reason(dec.iterations) {
            stop_reason = r;
            break;
        }
        if pr.carry.is_empty() {
            if pr.ended {
                break;
            }
            if source_done {
                // Everything read and fed: close the reorder buffer and the last window.
                let windower = &mut pr.pipe.windower;
                pr.pipe.ingest.finish(&mut |s| {
                    if let Some(w) = windower.push(s) {
                        done.push(w);
                    }
                });
                done.extend(pr.pipe.windower.finish());
                pr.ended = true;
            } else {
                batch.clear();
                let poll = source.poll(&mut batch, POLL_WAIT);
                // The events first: a source that fails says why it stopped in them too.
                for ev in source.drain_events() {
                    pr.source_events += 1;
                    explain.event("watch_source_event", serde_json::to_value(&ev)?)?;
                    if plain_lines {
                        println!("source_event={} detail={}", ev.kind, ev.detail);
                    }
                    if terminal {
                        // Above the status line, which the next round redraws.
                        eprintln!("\r\x1b[2Ksource: {}", source_event_text(&ev));
                    }
                }
                let poll = poll?;
                pr.carry.extend(batch.drain(..));
                source_done = poll == Poll::Ended;
            }
        }
        let mut stopped = None;
        loop {
            for w in done.drain(..) {
                dec.evaluate(
                    &mut pr.pipe.extractor,
                    &w,
                    explain,
                    &mut |ev, index, changed| {
                        verdicts.extend(ev.effects.iter().cloned());
                        if !ev.proposals.is_empty() {
                            decision_is_rollback = ev
                                .proposals
                                .iter()
                                .any(|p| p.reason.starts_with("rollback: "));
                        }
                        if plain_lines
                            && (changed || !ev.proposals.is_empty() || !ev.blocked.is_empty())
                        {
                            println!("{}", window_line(ev, index));
                        }
                    },
                )?;
            }
            if let Some(r) = stop.reason(dec.iterations) {
                stopped = Some(r);
                break;
            }
            let Some(line) = pr.carry.pop_front() else {
                break;
            };
            feed(&mut pr.pipe, &line, &mut done);
        }
        if let Some(k) = &mut k8s_events {
            k.effects(&verdicts, explain)?;
        }
        verdicts.clear();
        if args.apply {
            apply_if_decided(
                &mut ctx,
                &mut dec,
                &mut pr,
                source.as_ref(),
                &connect,
                explain,
                plain_lines,
                k8s_events.as_mut().map(|k| (k, decision_is_rollback)),
            )?;
        }
        if terminal {
            status_line(&dec, &inp);
        }
        if last_rewrite.elapsed() >= REWRITE_EVERY {
            checkpoint(&ctx, &mut dec, &pr, source.as_ref())?;
            write_latest(&ctx, &dec, &pr, source.as_ref(), None)?;
            last_rewrite = Instant::now();
        }
        if let Some(r) = stopped {
            stop_reason = r;
            break;
        }
    }
    if terminal {
        eprint!("\r\x1b[2K");
    }
    checkpoint(&ctx, &mut dec, &pr, source.as_ref())?;
    let (report, latest) = write_latest(&ctx, &dec, &pr, source.as_ref(), Some(stop_reason))?;
    let outcome_plan = final_plan(&mut ctx, &dec)?;
    if let Some(k) = &k8s_events {
        let (posted, failed) = k.counts();
        explain.event("watch_events", json!({"posted": posted, "failed": failed}))?;
    }
    explain.event(
        "watch_report",
        json!({"latest": latest, "stop_reason": stop_reason, "iterations": dec.iterations,
               "windows_total": dec.lp.windows(), "plan": outcome_plan}),
    )?;
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::cli::output::print_structured(
                &mut std::io::stdout().lock(),
                global.output,
                &report,
            )?;
        }
        OutputFormat::Text => {
            println!(
                "watch stopped ({stop_reason}): {} windows this run, {} in all; regime {}; {} proposed, {} applied; report {}",
                dec.iterations,
                dec.lp.windows(),
                dec.last_chord.as_deref().unwrap_or("n/a"),
                report["proposed_total"],
                pr.totals.applied_total,
                latest.display()
            );
        }
    }
    // Like `closed-loop run --apply`: a watch whose latest apply the gates refused ends with exit 2
    // (after writing everything), so a supervisor notices.
    if let Some(a) = &pr.last_apply
        && let Some(reason) = a.outcome.strip_prefix("blocked:")
    {
        return Err(input_error(
            "apply_blocked",
            format!(
                "the apply of the decision at window {} was blocked: {reason} (see {})",
                a.decision_window,
                latest.display()
            ),
        ));
    }
    Ok(())
}

/// What the watch has read, applied and counted: everything besides the loop that a checkpoint
/// saves and the reports show.
pub(super) struct Progress {
    pub(super) pipe: Pipeline,
    /// Lines polled but not fed yet.
    pub(super) carry: VecDeque<Vec<u8>>,
    pub(super) totals: WatchTotals,
    pub(super) last_applied: Option<BTreeMap<String, f64>>,
    pub(super) last_apply: Option<ApplyMark>,
    /// The source ended and the last window was evaluated.
    pub(super) ended: bool,
    pub(super) source_events: u64,
}

/// What every artifact writer needs to know about the run.
pub(super) struct Ctx<'a> {
    pub(super) args: &'a WatchArgs,
    pub(super) inp: &'a Inputs,
    pub(super) out: &'a OutDir,
    pub(super) config: &'a Value,
    pub(super) fingerprint: &'a str,
    pub(super) started: DateTime<Utc>,
    pub(super) source_describe: &'a Value,
    pub(super) warnings: &'a [String],
    pub(super) resumed: bool,
}

fn checkpoint(
    ctx: &Ctx<'_>,
    dec: &mut Decider<'_>,
    pr: &Progress,
    source: &dyn LiveSource,
) -> anyhow::Result<()> {
    // The trace must be on disk before the state claims its length.
    dec.trace
        .flush()
        .context("cannot write the decision trace")?;
    dec.trace.get_ref().sync_data().ok();
    let mut totals = pr.totals.clone();
    totals.iterations_done = totals.iterations_done.saturating_add(dec.iterations);
    let state = WatchState {
        schema_version: STATE_SCHEMA.into(),
        fingerprint: ctx.fingerprint.to_string(),
        config: ctx.config.clone(),
        updated_at: stamp(Utc::now()),
        source_cursor: source.cursor(),
        carry_lines: encode_lines(pr.carry.iter()),
        trace_bytes: dec.trace_bytes,
        trace_lines: dec.trace_lines,
        totals,
        loop_state: dec.lp.save(),
        policy_states: dec.set.states(),
        last_applied: pr.last_applied.clone(),
        last_apply: pr.last_apply.clone(),
        ended: pr.ended,
        pipeline: pr.pipe.encode(),
    };
    let bytes = serde_json::to_vec(&state)?;
    write_atomic(&ctx.out.path(STATE_FILE), |w| w.write_all(&bytes))
}

/// `--apply`: one gated apply per new decision, of the knobs that differ from what the cluster was
/// last given. The state is checkpointed first with the apply marked pending, so a watch killed
/// mid-apply never repeats it. `k8s_events`: where to post the result's Event, and whether the
/// decision is the loop's rollback of a change that hurt.
#[allow(clippy::too_many_arguments)]
fn apply_if_decided(
    ctx: &mut Ctx<'_>,
    dec: &mut Decider<'_>,
    pr: &mut Progress,
    source: &dyn LiveSource,
    connect: &crate::k8s::ConnectOptions,
    explain: &mut ExplainLog,
    plain_lines: bool,
    k8s_events: Option<(&mut WatchEvents, bool)>,
) -> anyhow::Result<()> {
    let Some(decision) = dec.latest_decision else {
        return Ok(());
    };
    if pr
        .last_apply
        .as_ref()
        .is_some_and(|a| a.decision_window >= decision)
    {
        return Ok(());
    }
    let base = pr
        .last_applied
        .clone()
        .unwrap_or_else(|| dec.lp.save().knobs_before);
    let chord = dec
        .last_event
        .as_ref()
        .map(|e| e.chord.clone())
        .unwrap_or_default();
    let changes: Vec<Accepted> = dec
        .lp
        .knobs()
        .iter()
        .filter_map(|(k, to)| {
            let from = *base.get(k)?;
            (from != *to).then(|| Accepted {
                knob: k.clone(),
                from,
                to: *to,
                reason: format!("watch decision at window {decision}"),
                chord: chord.clone(),
                limited_by: None,
                requested: None,
            })
        })
        .collect();
    let knobs = dec.lp.knobs().clone();
    pr.last_apply = Some(ApplyMark {
        decision_window: decision,
        knobs: knobs.clone(),
        outcome: "pending".into(),
    });
    checkpoint(ctx, dec, pr, source)?;
    let plan = build_passport_plan(
        &ctx.inp.target,
        &changes,
        &ctx.inp.passport,
        ctx.inp.knobs_configmap.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("cannot build the plan: {e}"))?
    .with_passport(PlanPassport::of(&ctx.inp.passport));
    let plan_path = ctx
        .out
        .write_text(&format!("k8s_plan_w{decision}.json"), &plan.to_document())?;
    let proposed: Vec<&str> = changes.iter().map(|c| c.knob.as_str()).collect();
    let opts = OneShotOptions {
        connect: connect.clone(),
        license: ctx.args.license.license.clone(),
        keyring: ctx.args.license.keyring.clone(),
        advanced_chords: !ctx.inp.advanced.is_empty(),
        passport: ctx.inp.passport.clone(),
        passport_source: ctx.inp.passport_source.clone(),
    };
    let one = closed_loop_apply(&plan, &plan_path, &proposed, &opts, ctx.out, explain)?;
    let outcome = match &one.result {
        None => "no_changes".to_string(),
        Some(ApplyResult::Applied) => {
            pr.totals.applied_total = pr.totals.applied_total.saturating_add(changes.len() as u64);
            pr.last_applied = Some(knobs.clone());
            "applied".to_string()
        }
        Some(ApplyResult::Blocked(b)) => {
            pr.totals.apply_blocked_total = pr.totals.apply_blocked_total.saturating_add(1);
            format!("blocked:{}", b.reason)
        }
        Some(ApplyResult::Failed(m)) => {
            pr.totals.apply_failed_total = pr.totals.apply_failed_total.saturating_add(1);
            format!("failed: {m}")
        }
    };
    if one.fields.apply_attempted {
        pr.totals.apply_attempted_total = pr.totals.apply_attempted_total.saturating_add(1);
        if one.fields.apply_ok == Some(true) {
            pr.totals.apply_ok_total = pr.totals.apply_ok_total.saturating_add(1);
        }
    }
    if one.fields.verify_ok == Some(false) {
        pr.totals.verify_failed_total = pr.totals.verify_failed_total.saturating_add(1);
    }
    if let Some(a) = &mut pr.last_apply {
        a.outcome = outcome.clone();
    }
    explain.event(
        "watch_apply",
        json!({"decision_window": decision, "plan": plan_path, "outcome": outcome,
               "fields": one.fields}),
    )?;
    if let Some((k, rollback)) = k8s_events {
        let moves: Vec<(String, f64, f64)> = changes
            .iter()
            .map(|c| (c.knob.clone(), c.from, c.to))
            .collect();
        k.apply(decision, &moves, one.result.as_ref(), rollback, explain)?;
    }
    if plain_lines {
        println!(
            "iter={} verify_ok={} apply_attempted={} apply_ok={} blocked={} out={}",
            pr.totals.iterations_done.saturating_add(dec.iterations),
            one.fields.verify_ok.map_or("n/a".into(), |b| b.to_string()),
            one.fields.apply_attempted,
            one.fields.apply_ok.map_or("n/a".into(), |b| b.to_string()),
            one.fields.apply_blocked_reason.as_deref().unwrap_or("null"),
            ctx.out.dir().display()
        );
    }
    checkpoint(ctx, dec, pr, source)
}

/// One plain line per notable window (piped output).
fn window_line(ev: &TraceEvent, index: u64) -> String {
    let props: Vec<String> = ev
        .proposals
        .iter()
        .map(|p| format!("{}:{}->{}", p.knob, p.from, p.to))
        .collect();
    let blocked: Vec<String> = ev
        .blocked
        .iter()
        .map(|b| format!("{}:{}", b.knob, b.reason))
        .collect();
    format!(
        "window={} steps={}-{} chord={} proposals={} blocked={}",
        index,
        ev.window.first_step,
        ev.window.last_step,
        ev.chord,
        if props.is_empty() {
            "-".into()
        } else {
            props.join(",")
        },
        if blocked.is_empty() {
            "-".into()
        } else {
            blocked.join(",")
        },
    )
}

/// A source event as one line for a terminal: its message when it has one.
fn source_event_text(ev: &crate::telemetry::live::SourceEvent) -> String {
    match ev.detail.get("message").and_then(serde_json::Value::as_str) {
        Some(m) => format!("{}: {m}", ev.kind),
        None => format!("{} {}", ev.kind, ev.detail),
    }
}

fn status_line(dec: &Decider<'_>, inp: &Inputs) {
    let Some(ev) = &dec.last_event else {
        eprint!(
            "\r\x1b[2Kwaiting for the first window ({} steps)…",
            inp.cfg.window_steps
        );
        return;
    };
    let last = dec
        .lp
        .save()
        .proposed
        .last()
        .map(|p| format!("{} {}→{} (window {})", p.knob, p.from, p.to, p.window.index))
        .unwrap_or_else(|| "none".into());
    let next = match next_change_allowed_ms(dec) {
        Some(t) if ev.window.end_ms.is_some_and(|e| e < t) => stamp_ms(t),
        Some(_) => "now".into(),
        None => "now".into(),
    };
    eprint!(
        "\r\x1b[2K{} · window {} (steps {}–{}) · last change: {last} · next change allowed: {next}",
        ev.chord, dec.last_index, ev.window.first_step, ev.window.last_step
    );
}
