//! The human summary of a run: what was read, which chords held which step ranges, what the envelope
//! accepted and refused, and where the plan is. Text from policies (reasons) is never printed raw:
//! control characters are replaced, so a policy cannot write escape sequences to the terminal.

use std::path::Path;

use crate::closed_loop::{ClosedLoopReport, LoopOutcome};
use crate::human::{duration_ms, offset_ms, thousands};
use crate::passport::format_knob_value;
use crate::plan::Plan;

/// Chord segments and accepted changes printed before "… N more".
const SHOWN: usize = 12;

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn steps(a: u64, b: u64) -> String {
    if a == b {
        format!("step {}", thousands(a))
    } else {
        format!("steps {}–{}", thousands(a), thousands(b))
    }
}

pub fn terminal_summary(
    r: &ClosedLoopReport,
    o: &LoopOutcome,
    plan: &Plan,
    latest: &Path,
) -> String {
    let mut s = format!(
        "closed-loop run on {}\n",
        clean(&r.source.path.display().to_string())
    );
    let i = &r.ingest;
    let mut input = vec![format!("{} records", thousands(i.records_emitted))];
    if i.skipped_total() > 0 {
        input.push(format!(
            "{} bad lines skipped",
            thousands(i.skipped_total())
        ));
    }
    if i.log_lines > 0 {
        input.push(format!("{} log lines ignored", thousands(i.log_lines)));
    }
    let span = match (r.run.start_ms, r.run.end_ms) {
        (Some(a), Some(b)) => format!(" over {}", duration_ms(b - a)),
        _ => String::new(),
    };
    s += &format!(
        "  input     {} · {} windows of {} steps{span}\n",
        input.join(" · "),
        thousands(r.run.windows),
        r.config.window_steps
    );
    let pols: Vec<String> = r
        .policies
        .iter()
        .map(|p| {
            format!(
                "{} {} ({}…)",
                p.id,
                p.version,
                &p.digest[..p.digest.len().min(15)]
            )
        })
        .collect();
    s += &format!(
        "  passport  {} {} · policies {}\n",
        r.passport.name,
        r.passport.version,
        pols.join(", ")
    );
    for w in &r.warnings {
        s += &format!("  warning   {}\n", clean(w));
    }
    for a in &o.alerts {
        s += &format!(
            "  ALERT     {} ({})\n",
            clean(&a.line()),
            steps(a.first_step, a.last_step)
        );
    }

    s += "  chords\n";
    let segs = &r.chords.segments;
    for g in segs.iter().take(SHOWN) {
        let when = match (r.run.start_ms, g.start_ms, g.end_ms) {
            (Some(s0), Some(a), Some(b)) => {
                format!("  ({} → {})", offset_ms(a - s0), offset_ms(b - s0))
            }
            _ => String::new(),
        };
        s += &format!(
            "    {:<22} {:<16} {} window{}{when}\n",
            steps(g.first_step, g.last_step),
            clean(&g.chord),
            g.windows,
            if g.windows == 1 { "" } else { "s" }
        );
    }
    let more = segs.len().saturating_sub(SHOWN) as u64 + r.chords.segments_truncated;
    if more > 0 {
        s += &format!("    … {more} more segments (see the report)\n");
    }

    if o.proposed_total == 0 {
        s += "  proposed  nothing passed the envelope\n";
    } else {
        s += &format!(
            "  proposed  {} accepted change{}\n",
            o.proposed_total,
            if o.proposed_total == 1 { "" } else { "s" }
        );
        for p in o.proposed.iter().take(SHOWN) {
            let limited = match (p.limited_by, p.requested) {
                (Some(_), Some(q)) => format!(
                    " (asked {}, shortened by the passport)",
                    format_knob_value(q)
                ),
                _ => String::new(),
            };
            s += &format!(
                "    {:<22} {} {} → {}{limited}  {}\n",
                steps(p.window.first_step, p.window.last_step),
                p.knob,
                format_knob_value(p.from),
                format_knob_value(p.to),
                clean(&p.chord)
            );
        }
        if o.proposed_total > SHOWN as u64 {
            s += &format!(
                "    … {} more (see the decision trace)\n",
                o.proposed_total - SHOWN as u64
            );
        }
    }
    if o.blocked_total > 0 {
        let by: Vec<String> = o
            .blocked_by_reason
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        s += &format!("  blocked   {} ({})\n", o.blocked_total, by.join(", "));
    }
    if o.policy_failures_total > 0 {
        s += &format!(
            "  failures  {} window evaluation{} failed and proposed nothing (see the report)\n",
            o.policy_failures_total,
            if o.policy_failures_total == 1 {
                ""
            } else {
                "s"
            }
        );
    }

    let t = &r.target;
    let target = format!(
        "{}/{} -n {}{}",
        t.kind.to_lowercase(),
        t.name,
        t.namespace,
        if t.defaulted {
            " (default target; set --deployment/--statefulset and -n)"
        } else {
            ""
        }
    );
    if o.changes.is_empty() {
        s +=
            &format!("  plan      empty: the run ends with the knobs it started with · {target}\n");
    } else {
        let ch: Vec<String> = o
            .changes
            .iter()
            .map(|c| {
                format!(
                    "{} {} → {}",
                    c.knob,
                    format_knob_value(c.from),
                    format_knob_value(c.to)
                )
            })
            .collect();
        s += &format!("  end state {}\n", ch.join(", "));
        s += &format!(
            "  plan      {} item for {target} ({}…)\n",
            plan.items().len(),
            &r.plan_digest[..r.plan_digest.len().min(19)]
        );
    }
    s += &format!("            {}\n", r.plan_path.display());
    s += &format!(
        "  script    {} (review it; ModeKeeper never runs it)\n",
        r.kubectl_script_path.display()
    );
    s += &format!(
        "  trace     {} ({} lines)\n",
        r.decision_trace.path.display(),
        r.decision_trace.lines
    );
    if r.apply.get("apply_requested") == Some(&serde_json::Value::Bool(true)) {
        let text = |k: &str| r.apply.get(k).and_then(|v| v.as_str()).map(clean);
        s += &format!(
            "  apply     {}\n",
            text("apply_decision_summary").unwrap_or_default()
        );
        for (label, key) in [
            ("verify", "k8s_verify_report_path"),
            ("audit", "k8s_apply_report_path"),
            ("rollback", "rollback_plan_path"),
        ] {
            if let Some(p) = text(key) {
                s += &format!("            {label} {p}\n");
            }
        }
    }
    if let Some(rp) = &r.replay {
        s += &format!(
            "  replay    {}: decision trace {}, plan {}\n",
            rp.from.display(),
            if rp.decision_trace.identical {
                "identical"
            } else {
                "DIFFERENT"
            },
            if rp.plan.identical {
                "identical"
            } else {
                "DIFFERENT"
            }
        );
    }
    s += &format!("  report    {}\n", latest.display());
    s
}
