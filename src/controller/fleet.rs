//! What `kubectl modekeeper fleet` shows: the opted-in workloads joined with the controller's
//! session summaries, one row each, as a kubectl-style table or a `modekeeper.fleet.v1` document.
//! Pure: the workloads and summaries are read by the caller; the clock is passed in.
//!
//! A workload and a summary belong together when kind, namespace, name and uid all agree (a
//! workload recreated under the same name has a new uid and no session yet). A summary whose
//! workload is gone, or no longer opted in, is an orphan: shown (as `stopped`) only when asked.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::store::{SessionStatus, WorkloadSummary};
use crate::passport::format_knob_value;
use crate::plan::WorkloadKind;

pub const FLEET_SCHEMA: &str = "modekeeper.fleet.v1";
/// The label that opts a workload in.
pub const ENABLED_LABEL: &str = "modekeeper.io/enabled";
/// What a table cell shows for nothing, as kubectl does.
const NONE: &str = "<none>";

/// An opted-in workload as listed from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetWorkload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `metadata.creationTimestamp` (RFC 3339).
    pub created_at: Option<String>,
}

/// What a row's session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// Opted in, the controller has written nothing for it yet.
    NoSessionYet,
    /// Opted in, with a session summary.
    Session,
    /// A summary whose workload is gone or no longer opted in.
    Orphaned,
    /// The controller's state could not be read (see the warnings).
    Unknown,
}

/// One row: a workload, its session summary, or both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetRow {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// Labelled `modekeeper.io/enabled=true` now.
    pub opted_in: bool,
    pub state: RowState,
    pub created_at: Option<String>,
    pub session: Option<WorkloadSummary>,
}

/// The whole `-o json|yaml` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetReport {
    pub schema_version: String,
    pub controller_namespace: String,
    /// The namespace listed; `null`: all namespaces.
    pub namespace: Option<String>,
    pub items: Vec<FleetRow>,
    /// What could not be read (a kind the user may not list, the state ConfigMaps).
    pub warnings: Vec<String>,
}

/// Joins workloads and summaries into rows sorted by namespace, kind, name. `summaries` is `None`
/// when the state could not be read. Orphans (summaries without an opted-in workload) in
/// `namespace` (`None`: all) are included when `orphans` is set, as `stopped`.
pub fn join(
    workloads: &[FleetWorkload],
    summaries: Option<&[WorkloadSummary]>,
    namespace: Option<&str>,
    orphans: bool,
) -> Vec<FleetRow> {
    let mut by_uid: BTreeMap<&str, &WorkloadSummary> = BTreeMap::new();
    for s in summaries.unwrap_or_default() {
        // Two summaries naming one uid cannot come from one store (the name is the uid's hash);
        // keep the newest so a stale copy never hides the live one.
        let slot = by_uid.entry(s.workload.uid.as_str()).or_insert(s);
        if s.updated_at > slot.updated_at {
            *slot = s;
        }
    }
    let mut rows = vec![];
    let mut matched = std::collections::BTreeSet::new();
    for w in workloads {
        let summary = by_uid.get(w.uid.as_str()).copied().filter(|s| {
            s.workload.kind == w.kind
                && s.workload.namespace == w.namespace
                && s.workload.name == w.name
        });
        if summary.is_some() {
            matched.insert(w.uid.as_str());
        }
        rows.push(FleetRow {
            namespace: w.namespace.clone(),
            kind: w.kind.as_str().into(),
            name: w.name.clone(),
            uid: w.uid.clone(),
            opted_in: true,
            state: match (summaries, summary) {
                (None, _) => RowState::Unknown,
                (Some(_), Some(_)) => RowState::Session,
                (Some(_), None) => RowState::NoSessionYet,
            },
            created_at: w.created_at.clone(),
            session: summary.cloned(),
        });
    }
    if orphans {
        for s in by_uid.values() {
            if matched.contains(s.workload.uid.as_str())
                || namespace.is_some_and(|ns| ns != s.workload.namespace)
            {
                continue;
            }
            let mut session = (*s).clone();
            session.status = SessionStatus::Stopped;
            rows.push(FleetRow {
                namespace: s.workload.namespace.clone(),
                kind: s.workload.kind.as_str().into(),
                name: s.workload.name.clone(),
                uid: s.workload.uid.clone(),
                opted_in: false,
                state: RowState::Orphaned,
                created_at: None,
                session: Some(session),
            });
        }
    }
    rows.sort_by(|a, b| {
        (&a.namespace, &a.kind, &a.name, &a.uid).cmp(&(&b.namespace, &b.kind, &b.name, &b.uid))
    });
    rows
}

/// The table's header.
pub const COLUMNS: [&str; 9] = [
    "NAMESPACE",
    "KIND",
    "NAME",
    "CHORD",
    "LAST-DECISION",
    "KNOBS",
    "APPLY",
    "LAST-EVENT",
    "AGE",
];

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// kubectl's `HumanDuration` (what `kubectl get` prints as AGE): `45s`, `2m30s`, `5m`, `3h20m`,
/// `5h`, `3d4h`, `12d`, `2y30d`, `9y`.
pub fn human_age(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        let y = d / 365;
        match d % 365 {
            0 => format!("{y}y"),
            r => format!("{y}y{r}d"),
        }
    } else {
        format!("{}y", d / 365)
    }
}

fn age(at: Option<&str>, now: DateTime<Utc>) -> Option<String> {
    let t = parse_time(at?)?;
    Some(human_age((now - t).num_seconds()))
}

/// Table cells may not break the layout: control characters (a tampered summary's newlines or
/// escape sequences) become `?`.
fn cell(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.is_empty() { NONE.into() } else { clean }
}

/// The cells of one row, in [`COLUMNS`] order.
pub fn cells(row: &FleetRow, now: DateTime<Utc>) -> [String; 9] {
    let (chord, decision, knobs, apply, event) = match (&row.session, row.state) {
        (_, RowState::Unknown) => (
            "unknown".into(),
            NONE.into(),
            NONE.into(),
            NONE.into(),
            NONE.into(),
        ),
        (None, _) => (
            "no session yet".into(),
            NONE.into(),
            NONE.into(),
            NONE.into(),
            NONE.into(),
        ),
        (Some(s), _) => {
            let chord = match (s.status, &s.active_chord, row.state) {
                (_, _, RowState::Orphaned) => "stopped (not opted in)".to_string(),
                (SessionStatus::Running, Some(c), _) => cell(c),
                (SessionStatus::Running, None, _) => NONE.to_string(),
                (status, Some(c), _) => format!("{} ({})", cell(c), status.as_str()),
                (status, None, _) => status.as_str().to_string(),
            };
            let decision = match &s.last_decision {
                None => NONE.to_string(),
                Some(d) => {
                    let mut text = match d.proposals.first() {
                        Some(p) => format!(
                            "{} {}->{}",
                            cell(&p.knob),
                            format_knob_value(p.from),
                            format_knob_value(p.to)
                        ),
                        None => cell(&d.chord),
                    };
                    if d.proposals.len() > 1 {
                        text.push_str(&format!(" +{}", d.proposals.len() - 1));
                    }
                    match age(Some(&d.at), now) {
                        Some(a) => format!("{text} ({a})"),
                        None => text,
                    }
                }
            };
            let knobs = if s.knobs.is_empty() {
                NONE.to_string()
            } else {
                s.knobs
                    .iter()
                    .map(|(k, v)| format!("{}={}", cell(k), format_knob_value(*v)))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let apply = match (&s.error, s.status) {
                (Some(e), SessionStatus::Error) => format!("error: {}", cell(e)),
                _ => cell(&s.apply_status),
            };
            let event = match &s.last_event {
                None => NONE.to_string(),
                Some(e) => match age(Some(&e.at), now) {
                    Some(a) => format!("{} ({a})", cell(&e.reason)),
                    None => cell(&e.reason),
                },
            };
            (chord, decision, knobs, apply, event)
        }
    };
    [
        row.namespace.clone(),
        row.kind.clone(),
        row.name.clone(),
        chord,
        decision,
        knobs,
        apply,
        event,
        age(row.created_at.as_deref(), now).unwrap_or_else(|| NONE.into()),
    ]
}

/// The rows as `kubectl get` prints them: columns separated by three spaces, padded to the widest
/// cell, no trailing spaces.
pub fn table(rows: &[FleetRow], now: DateTime<Utc>) -> String {
    let mut lines: Vec<[String; 9]> = vec![COLUMNS.map(str::to_string)];
    lines.extend(rows.iter().map(|r| cells(r, now)));
    let mut widths = [0usize; 9];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for l in &lines {
        let mut line = String::new();
        for (i, c) in l.iter().enumerate() {
            if i + 1 == l.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::store::{LastDecision, LastEvent, ProposalSummary, WorkloadKey};

    fn now() -> DateTime<Utc> {
        parse_time("2026-12-03T12:00:00Z").unwrap()
    }

    fn workload(ns: &str, name: &str, uid: &str) -> FleetWorkload {
        FleetWorkload {
            kind: WorkloadKind::Deployment,
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
            created_at: Some("2026-12-01T12:00:00Z".into()),
        }
    }

    fn summary(ns: &str, name: &str, uid: &str) -> WorkloadSummary {
        let key = WorkloadKey {
            kind: WorkloadKind::Deployment,
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
        };
        let mut s = WorkloadSummary::new(&key, "c-0", 0, "2026-12-03T11:59:00Z");
        s.status = SessionStatus::Running;
        s
    }

    #[test]
    fn rows_join_by_uid_and_identity() {
        let ws = [
            workload("ml", "trainer", "u1"),
            workload("ml", "new", "u2"),
            workload("b", "recreated", "u3-new"),
        ];
        let ss = [
            summary("ml", "trainer", "u1"),
            summary("b", "recreated", "u3-old"),
            summary("ml", "gone", "u4"),
            // Names another workload under u2's uid: not joined to it.
            summary("ml", "impostor", "u2"),
        ];
        let rows = join(&ws, Some(&ss), None, false);
        let got: Vec<_> = rows.iter().map(|r| (r.name.as_str(), r.state)).collect();
        assert_eq!(
            got,
            [
                ("recreated", RowState::NoSessionYet),
                ("new", RowState::NoSessionYet),
                ("trainer", RowState::Session),
            ]
        );
        let with = join(&ws, Some(&ss), None, true);
        let orphans: Vec<_> = with
            .iter()
            .filter(|r| r.state == RowState::Orphaned)
            .map(|r| (r.name.as_str(), r.session.as_ref().unwrap().status))
            .collect();
        assert_eq!(
            orphans,
            [
                ("recreated", SessionStatus::Stopped),
                ("gone", SessionStatus::Stopped),
                ("impostor", SessionStatus::Stopped),
            ]
        );
        // Orphans of other namespaces stay out of a one-namespace listing.
        let in_b = join(&ws[2..], Some(&ss), Some("b"), true);
        assert_eq!(in_b.len(), 2);
        assert!(in_b.iter().all(|r| r.namespace == "b"));
        // Unreadable state: every workload is unknown, never "no session yet".
        let unknown = join(&ws, None, None, true);
        assert!(unknown.iter().all(|r| r.state == RowState::Unknown));
    }

    #[test]
    fn cells_say_what_happened() {
        let mut s = summary("ml", "trainer", "u1");
        s.active_chord = Some("BURST-ABSORB".into());
        s.knobs = [("concurrency".to_string(), 5.0), ("lr".to_string(), 0.5)].into();
        s.last_decision = Some(LastDecision {
            window: 7,
            chord: "BURST-ABSORB".into(),
            proposals: vec![
                ProposalSummary {
                    knob: "concurrency".into(),
                    from: 4.0,
                    to: 5.0,
                },
                ProposalSummary {
                    knob: "lr".into(),
                    from: 1.0,
                    to: 0.5,
                },
            ],
            at: "2026-12-03T11:55:00Z".into(),
        });
        s.apply_status = "blocked: kill_switch_cluster".into();
        s.last_event = Some(LastEvent {
            reason: "ApplyBlocked".into(),
            note: "n".into(),
            at: "2026-12-03T11:59:30Z".into(),
        });
        let rows = join(&[workload("ml", "trainer", "u1")], Some(&[s]), None, false);
        assert_eq!(
            cells(&rows[0], now()),
            [
                "ml",
                "Deployment",
                "trainer",
                "BURST-ABSORB",
                "concurrency 4->5 +1 (5m)",
                "concurrency=5,lr=0.5",
                "blocked: kill_switch_cluster",
                "ApplyBlocked (30s)",
                "2d",
            ]
        );
        let fresh = join(&[workload("ml", "x", "u9")], Some(&[]), None, false);
        assert_eq!(cells(&fresh[0], now())[3], "no session yet");
        let mut bad = summary("ml", "x", "u9");
        bad.status = SessionStatus::Error;
        bad.error = Some("line\nbreak\x1b[31m".into());
        let rows = join(&[workload("ml", "x", "u9")], Some(&[bad]), None, false);
        let c = cells(&rows[0], now());
        assert_eq!(c[3], "error");
        assert_eq!(c[6], "error: line?break?[31m");
    }

    #[test]
    fn the_table_is_aligned_like_kubectl_get() {
        let rows = join(
            &[
                workload("ml", "trainer", "u1"),
                workload("team-b", "t", "u2"),
            ],
            Some(&[]),
            None,
            false,
        );
        let t = table(&rows, now());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("NAMESPACE   KIND         NAME      CHORD"),
            "{t}"
        );
        let col = lines[0].find("AGE").unwrap();
        assert_eq!(&lines[1][col..], "2d");
        assert!(t.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn ages_follow_kubectl() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (9 * 3600, "9h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (12 * 86_400, "12d"),
            (800 * 86_400, "2y70d"),
            (3000 * 86_400, "8y"),
            (-5, "<invalid>"),
        ] {
            assert_eq!(human_age(secs), want, "{secs}");
        }
    }
}
