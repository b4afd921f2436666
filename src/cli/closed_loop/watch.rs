//! `closed-loop watch`: the loop of `closed-loop run`, live. Reads a source that keeps producing
//! (a followed file, pod logs, Prometheus) and drives a [`Session`] (`crate::closed_loop::live`):
//! the session evaluates each window as it completes and keeps the exactly-once machinery; this
//! command keeps the flags, signals, polling, printing and files. The whole state lives in `--out`
//! (`watch_state.json`), so a restarted watch continues after the last line it read with the same
//! cooldowns, policy states and applied values — no line lost, no proposal repeated. `--apply` goes
//! through the gates of `k8s apply` (src/apply) once per decision.
//! Explain events: `watch_start`, `watch_resume`, `watch_source_event`, `watch_decision`,
//! `watch_apply`, `watch_report`, `watch_stop` (or `watch_error` then `watch_stop`); with `--apply`
//! also `watch_k8s_event` / `watch_event_failed` per Kubernetes Event and `watch_events` (counts).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::WatchArgs;
use super::common::{load_policies, stamp, with_explain};
use super::inputs::{self, Inputs};
use super::watch_events::WatchEvents;
use super::watch_report::{final_plan, stamp_ms, write_latest};
use super::watch_source::{open_live, source_identity};
use super::watch_state::{check_against, load};
use crate::apply::{OneShotOptions, closed_loop_apply};
use crate::artifacts::{ExplainLog, OutDir, write_atomic};
use crate::cli::{GlobalArgs, OutputFormat};
use crate::closed_loop::live::{
    ApplyHost, ApplyOutcome, ApplyRecord, ApplyRequest, STATE_FILE, Session, SessionError,
    SessionEvent, SessionSetup, SilenceEvent, SilenceMonitor, write_plan,
};
use crate::closed_loop::{TRACE_FILE, TraceEvent, knobs_text};
use crate::error::input_error;
use crate::policy::PolicySet;
use crate::telemetry::IngestOptions;
use crate::telemetry::live::{LiveSource, Poll};

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
    let (setup, session, cursor) = open_session(global, args, &inp, &mut set, explain)?;
    let mut session = session;
    // With --apply a change is judged only once the cluster took it (a blocked or failed apply
    // gets no verdict); a watch that only plans judges its changes as if applied.
    session.set_applies(args.apply);
    let mut source = open_live(args, global, &inp, cursor.as_ref())?;
    let source_describe = source.describe();

    // From here on artifacts are written.
    let out = OutDir::create(&args.out, started)?.keep(global.keep);
    let trace_path = out.path(TRACE_FILE);
    let mut trace_file =
        crate::fsio::no_follow(OpenOptions::new().create(true).write(true).truncate(false))
            .open(&trace_path)
            .with_context(|| format!("cannot open {}", trace_path.display()))?;
    // Lines written after the last checkpoint are decided again (identically) below.
    trace_file.set_len(session.trace_len().0)?;
    std::io::Seek::seek(&mut trace_file, std::io::SeekFrom::End(0))?;
    let mut trace = BufWriter::with_capacity(256 * 1024, trace_file);

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

    let ctx = Ctx {
        args,
        inp: &inp,
        out: &out,
        config: &setup.config,
        started,
        source_describe: &source_describe,
        warnings: &warnings,
    };
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut last_rewrite = Instant::now();
    let mut source_events = 0u64;
    let mut stop_reason = "source_ended";
    let mut source_done = false;
    // A trainer silent for longer than a stall while its source stays open: told while it lasts.
    // A Prometheus grid hands out each grid point's records at once: its step is no silence.
    let grid_step = (source_describe["kind"] == "prometheus")
        .then(|| source_describe["step_ms"].as_u64())
        .flatten()
        .map_or(Duration::ZERO, Duration::from_millis);
    let mut silence = SilenceMonitor::with_min_gap(grid_step);
    let clock = Instant::now();
    loop {
        if let Some(r) = stop.reason(session.iterations()) {
            stop_reason = r;
            break;
        }
        if session.pending_lines() == 0 {
            if session.ended() {
                break;
            }
            if source_done {
                // Everything read and fed: close the reorder buffer and the last window.
                session.finish_source();
            } else {
                batch.clear();
                let poll = source.poll(&mut batch, POLL_WAIT);
                // The events first: a source that fails says why it stopped in them too.
                for ev in source.drain_events() {
                    source_events += 1;
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
                session.push_lines(batch.drain(..));
                source_done = poll == Poll::Ended;
            }
        }
        let mut stopped = None;
        session.advance(
            &mut set,
            &mut |n| {
                stopped = stop.reason(n);
                stopped.is_some()
            },
            &mut |ev| on_event(ev, &mut trace, explain, plain_lines, k8s_events.as_mut()),
        )?;
        if args.apply {
            let mut host = WatchApply {
                ctx: &ctx,
                trace: &mut trace,
                set: &set,
                source: source.as_ref(),
                connect: &connect,
                explain,
                plain_lines,
                events: k8s_events.as_mut(),
            };
            session.apply_decided(&mut host)?;
        }
        if !source_done
            && let Some(ev) = silence.observe(
                clock.elapsed(),
                session.ingest_stats().records_parsed,
                session.last_step_seen(),
                session.last_event(),
            )
        {
            on_silence(&ev, explain, plain_lines, terminal, k8s_events.as_mut())?;
        }
        if terminal {
            status_line(&session, &inp);
        }
        if last_rewrite.elapsed() >= REWRITE_EVERY {
            checkpoint(&mut trace, &out, &session, &set, source.as_ref())?;
            write_latest(&ctx, &session, source.as_ref(), source_events, None)?;
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
    checkpoint(&mut trace, &out, &session, &set, source.as_ref())?;
    if let Some(k) = &k8s_events {
        let (posted, failed) = k.counts();
        explain.event("watch_events", json!({"posted": posted, "failed": failed}))?;
    }
    conclude(
        global,
        &ctx,
        &session,
        source.as_ref(),
        source_events,
        stop_reason,
        explain,
    )
}

/// The session this watch continues (from the state in `--out`, unless it was written under
/// another configuration) or starts, with the source cursor to continue from.
fn open_session(
    global: &GlobalArgs,
    args: &WatchArgs,
    inp: &Inputs,
    set: &mut PolicySet,
    explain: &mut ExplainLog,
) -> anyhow::Result<(SessionSetup, Session, Option<Value>)> {
    let opts = IngestOptions {
        release_lag_steps: Some(args.release_lag_steps),
        ..inp.opts.clone()
    };
    let (source_id, format) = source_identity(args, global, inp)?;
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
    let setup = SessionSetup {
        passport: inp.passport.clone(),
        knobs: inp.knobs.clone(),
        features: inp.cfg,
        format,
        ingest: opts,
        config,
    };
    let saved = if args.fresh { None } else { load(&args.out)? };
    if let Some(differs) = saved.as_ref().and_then(|s| setup.differs_from(s)) {
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
        check_against(s, &inp.passport, &args.out.join(STATE_FILE))?;
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
    let cursor = saved.as_ref().map(|s| s.source_cursor.clone());
    let session = match saved {
        Some(s) => {
            let resume_event = json!({"windows": s.loop_state.windows, "trace_lines": s.trace_lines,
                       "cursor": s.source_cursor, "carry_lines": s.carry_lines.len(),
                       "last_apply": s.last_apply, "restarts": s.totals.restarts.saturating_add(1)});
            // Every refusal is of the file's content (a carried line that does not decode too).
            let session = Session::resume(&setup, s, set).map_err(|e: SessionError| {
                input_error(
                    "bad_state",
                    format!("{STATE_FILE}: {e}; use --fresh to start over"),
                )
            })?;
            check_trace_len(&args.out, &session)?;
            explain.event("watch_resume", resume_event)?;
            session
        }
        None => Session::new(&setup),
    };
    Ok((setup, session, cursor))
}
/// The decision trace a resumed state continues must be on disk at least as long as the state
/// says: the trace is cut back to that length, and a longer claim (a truncated trace, an edited
/// state) would pad it with NUL bytes, or grow a sparse file of any size.
fn check_trace_len(out: &std::path::Path, session: &Session) -> anyhow::Result<()> {
    let path = out.join(TRACE_FILE);
    let on_disk = match std::fs::symlink_metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    };
    let claimed = session.trace_len().0;
    if claimed > on_disk {
        return Err(input_error(
            "bad_state",
            format!(
                "{STATE_FILE} says {} holds {claimed} bytes, it holds {on_disk}; use --fresh to start over",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The end of a watch: the final report and plan, the last line, and exit 2 when the latest apply
/// was blocked.
fn conclude(
    global: &GlobalArgs,
    ctx: &Ctx<'_>,
    session: &Session,
    source: &dyn LiveSource,
    source_events: u64,
    stop_reason: &str,
    explain: &mut ExplainLog,
) -> anyhow::Result<()> {
    let (report, latest) = write_latest(ctx, session, source, source_events, Some(stop_reason))?;
    let outcome_plan = final_plan(ctx, session)?;
    explain.event(
        "watch_report",
        json!({"latest": latest, "stop_reason": stop_reason, "iterations": session.iterations(),
               "windows_total": session.closed_loop().windows(), "plan": outcome_plan}),
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
                session.iterations(),
                session.closed_loop().windows(),
                session.last_chord().unwrap_or("n/a"),
                report["proposed_total"],
                session.saved_totals().applied_total,
                latest.display()
            );
        }
    }
    // Like `closed-loop run --apply`: a watch whose latest apply the gates refused ends with exit 2
    // (after writing everything), so a supervisor notices.
    if let Some(a) = session.last_apply()
        && let Some(reason) = a.outcome.blocked_reason()
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

/// What the session said, as this command says it: the decision trace, explain events, lines, and
/// (with `--apply`) a Kubernetes Event per verdict.
fn on_event(
    ev: SessionEvent<'_>,
    trace: &mut BufWriter<File>,
    explain: &mut ExplainLog,
    plain_lines: bool,
    k8s_events: Option<&mut WatchEvents>,
) -> anyhow::Result<()> {
    let decision = ev.is_decision();
    match ev {
        SessionEvent::Alert(a) => {
            // What no knob fixes is said at once, on stderr, whatever the output mode.
            eprintln!("ALERT {}", a.line());
            explain.event("watch_alert", json!(a))?;
        }
        // Judged in the report and the decision trace; on the cluster, an Event on the workload.
        SessionEvent::Verdict(e) => {
            if let Some(k) = k8s_events {
                k.effects(std::slice::from_ref(e), explain)?;
            }
        }
        SessionEvent::Window {
            index,
            event,
            line,
            chord_changed,
        } => {
            trace
                .write_all(line.as_bytes())
                .context("cannot write the decision trace")?;
            if decision {
                explain.event(
                    "watch_decision",
                    json!({"window": event.window, "chord": event.chord, "active_chords": event.active_chords,
                           "proposals": event.proposals, "blocked": event.blocked}),
                )?;
            }
            if plain_lines && (chord_changed || decision) {
                println!("{}", window_line(event, index));
            }
        }
    }
    Ok(())
}

/// A possible hang, said where the user looks: stderr at once (whatever the output mode), a plain
/// line when piped, explain.jsonl, and with `--apply` an Event on the workload.
fn on_silence(
    ev: &SilenceEvent,
    explain: &mut ExplainLog,
    plain_lines: bool,
    terminal: bool,
    k8s_events: Option<&mut WatchEvents>,
) -> anyhow::Result<()> {
    let clear = if terminal { "\r\x1b[2K" } else { "" };
    match ev {
        SilenceEvent::Started(s) => {
            eprintln!("{clear}ALERT {}", s.line());
            explain.event("watch_silence", json!(s))?;
            if plain_lines {
                println!(
                    "silence=started after_step={} silent_s={:.1} threshold_s={:.1}",
                    s.after_step,
                    s.silent_ms as f64 / 1000.0,
                    s.threshold_ms as f64 / 1000.0
                );
            }
        }
        SilenceEvent::Ended {
            silent_ms,
            after_step,
        } => {
            eprintln!(
                "{clear}steps reported again after {:.0} s of silence (after step {after_step})",
                *silent_ms as f64 / 1000.0
            );
            explain.event(
                "watch_silence_end",
                json!({"after_step": after_step, "silent_ms": silent_ms}),
            )?;
            if plain_lines {
                println!(
                    "silence=ended after_step={after_step} silent_s={:.1}",
                    *silent_ms as f64 / 1000.0
                );
            }
        }
    }
    if let Some(k) = k8s_events {
        k.silence(ev, explain)?;
    }
    Ok(())
}

/// What every artifact writer needs to know about the run.
pub(super) struct Ctx<'a> {
    pub(super) args: &'a WatchArgs,
    pub(super) inp: &'a Inputs,
    pub(super) out: &'a OutDir,
    pub(super) config: &'a Value,
    pub(super) started: DateTime<Utc>,
    pub(super) source_describe: &'a Value,
    pub(super) warnings: &'a [String],
}

/// Saves the session to `--out`; the decision trace reaches the disk before the state claims its
/// length.
fn checkpoint(
    trace: &mut BufWriter<File>,
    out: &OutDir,
    session: &Session,
    set: &PolicySet,
    source: &dyn LiveSource,
) -> anyhow::Result<()> {
    trace.flush().context("cannot write the decision trace")?;
    trace.get_ref().sync_data().ok();
    let state = session.checkpoint(source.cursor(), set.states(), stamp(Utc::now()));
    let bytes = serde_json::to_vec(&state)?;
    write_atomic(&out.path(STATE_FILE), |w| w.write_all(&bytes))
}

/// `--apply`: the session's apply protocol with the files of `--out` and the gates of `k8s apply`.
struct WatchApply<'a> {
    ctx: &'a Ctx<'a>,
    trace: &'a mut BufWriter<File>,
    set: &'a PolicySet,
    source: &'a dyn LiveSource,
    connect: &'a crate::k8s::ConnectOptions,
    explain: &'a mut ExplainLog,
    plain_lines: bool,
    events: Option<&'a mut WatchEvents>,
}

impl ApplyHost for WatchApply<'_> {
    type Error = anyhow::Error;

    fn checkpoint(&mut self, session: &Session) -> anyhow::Result<()> {
        checkpoint(self.trace, self.ctx.out, session, self.set, self.source)
    }

    /// One gated apply of the knobs that differ from what the cluster was last given.
    fn apply(&mut self, session: &Session, req: &ApplyRequest) -> anyhow::Result<ApplyRecord> {
        let ctx = self.ctx;
        let decision = req.decision_window;
        let written = write_plan(
            ctx.out,
            ctx.inp.plan_spec(),
            &req.changes,
            &format!("k8s_plan_w{decision}.json"),
            false,
        )?;
        let proposed: Vec<&str> = req.changes.iter().map(|c| c.knob.as_str()).collect();
        let opts = OneShotOptions {
            connect: self.connect.clone(),
            license: ctx.args.license.license.clone(),
            keyring: ctx.args.license.keyring.clone(),
            advanced_chords: !ctx.inp.advanced.is_empty(),
            passport: ctx.inp.passport.clone(),
            passport_source: ctx.inp.passport_source.clone(),
        };
        let one = closed_loop_apply(
            &written.plan,
            &written.path,
            &proposed,
            &opts,
            ctx.out,
            self.explain,
        )?;
        let outcome = ApplyOutcome::of_result(one.result.as_ref());
        self.explain.event(
            "watch_apply",
            json!({"decision_window": decision, "plan": written.path, "outcome": outcome,
                   "fields": one.fields}),
        )?;
        if let Some(k) = self.events.as_deref_mut() {
            let moves: Vec<(String, f64, f64)> = req
                .changes
                .iter()
                .map(|c| (c.knob.clone(), c.from, c.to))
                .collect();
            k.apply(
                decision,
                req.rollback,
                &moves,
                one.result.as_ref(),
                self.explain,
            )?;
        }
        if self.plain_lines {
            println!(
                "iter={} verify_ok={} apply_attempted={} apply_ok={} blocked={} out={}",
                session.totals().iterations_done,
                one.fields.verify_ok.map_or("n/a".into(), |b| b.to_string()),
                one.fields.apply_attempted,
                one.fields.apply_ok.map_or("n/a".into(), |b| b.to_string()),
                one.fields.apply_blocked_reason.as_deref().unwrap_or("null"),
                ctx.out.dir().display()
            );
        }
        Ok(ApplyRecord {
            outcome,
            attempted: one.fields.apply_attempted,
            apply_ok: one.fields.apply_ok,
            verify_ok: one.fields.verify_ok,
        })
    }
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

fn status_line(session: &Session, inp: &Inputs) {
    let Some(ev) = session.last_event() else {
        eprint!(
            "\r\x1b[2Kwaiting for the first window ({} steps)…",
            inp.cfg.window_steps
        );
        return;
    };
    let last = session
        .closed_loop()
        .state()
        .proposed
        .last()
        .map(|p| format!("{} {}→{} (window {})", p.knob, p.from, p.to, p.window.index))
        .unwrap_or_else(|| "none".into());
    let next = match session.next_change_allowed_ms() {
        Some(t) if ev.window.end_ms.is_some_and(|e| e < t) => stamp_ms(t),
        Some(_) => "now".into(),
        None => "now".into(),
    };
    eprint!(
        "\r\x1b[2K{} · window {} (steps {}–{}) · last change: {last} · next change allowed: {next}",
        ev.chord,
        session.last_index(),
        ev.window.first_step,
        ev.window.last_step
    );
}
