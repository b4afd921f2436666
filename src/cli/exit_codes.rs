//! The exit codes of every command, in one table: docs/cli-reference.md renders it (tests/report_docs.rs),
//! so the reference and this list cannot drift apart. The rule behind it: 0 the command did what it
//! was asked and any check passed; 2 the input was wrong or a check or gate said no (one line on
//! stderr); 1 the machine or the cluster failed (I/O, an unreachable or refusing server).

/// `(commands, 0, 2, 1)`: commands separated by `, `, a group's verbs by `/`.
pub const EXIT_CODES: &[(&str, &str, &str, &str)] = &[
    (
        "observe",
        "report written (any verdict, also too short to judge)",
        "bad flags, unreadable or missing input, no usable telemetry record",
        "artifacts cannot be written",
    ),
    (
        "plan, closed-loop run",
        "decision trace and plan written (also when nothing changes)",
        "bad flags, input, passport or policy; with --apply: a gate blocked the apply",
        "I/O; --knobs-from-cluster or --apply: cluster failure; --replay: the run diverged",
    ),
    (
        "closed-loop watch",
        "stopped as asked (--duration, --max-iterations, a signal, the source ended)",
        "bad flags or input, a state file from another setup; with --apply: the latest apply was blocked",
        "I/O or cluster failure",
    ),
    (
        "render, k8s render",
        "script and report written",
        "invalid plan; -n names another namespace than the plan",
        "artifacts cannot be written",
    ),
    (
        "verify, k8s verify",
        "verify ok (report written)",
        "a blocker was found (report written); invalid plan, -n for another namespace, unusable kubeconfig",
        "the report cannot be written",
    ),
    (
        "apply, k8s apply",
        "every item patched",
        "a gate blocked (kill switch, license, verify, passport, changed object); invalid input",
        "cluster or I/O failure during the apply",
    ),
    (
        "policy list/inspect/add/lock/test",
        "done",
        "unknown policy, invalid component, trace or labels",
        "I/O",
    ),
    (
        "policy verify",
        "every component matches its lock",
        "a component changed, is missing or is not in the lock",
        "I/O",
    ),
    (
        "passport templates/show/validate",
        "printed; the file is valid",
        "unknown template, invalid passport",
        "I/O",
    ),
    (
        "license keygen/mint",
        "key or license written",
        "bad flags or input",
        "I/O",
    ),
    (
        "license verify",
        "the license is valid (for --require)",
        "invalid, expired, untrusted or not granting --require",
        "I/O",
    ),
    (
        "report",
        "HTML written",
        "no artifacts in --in, bad flags",
        "I/O",
    ),
    (
        "doctor",
        "every check passed (warnings allowed)",
        "a check failed (the table says which and how to fix it); bad flags",
        "the table cannot be printed",
    ),
    (
        "support-bundle",
        "archive written",
        "--in is not a directory of artifacts; bad flags",
        "I/O",
    ),
    (
        "roi",
        "printed",
        "no closed-loop report in --in, a report without effects, bad flags",
        "I/O",
    ),
    (
        "install",
        "manifests printed; with --apply: every object applied",
        "bad flags (namespace, image, replicas, shards), unusable kubeconfig",
        "cluster failure during --apply (the first failing object is named; later ones are not sent)",
    ),
    (
        "controller",
        "stopped by SIGTERM/SIGINT after checkpointing every session",
        "bad flags (lease timings that could make two leaders), unusable kubeconfig",
        "cannot connect, listen or load its policies",
    ),
    (
        "fleet",
        "listed (also when a kind or the state could not be read: one warning line each)",
        "bad flags, unusable kubeconfig",
        "cluster failure (unreachable, timeout, server error)",
    ),
    ("version, completion", "printed", "bad flags", "I/O"),
];

/// The table as Markdown.
pub fn markdown() -> String {
    let mut s = String::from("| command | 0 | 2 | 1 |\n| --- | --- | --- | --- |\n");
    for (cmds, ok, two, one) in EXIT_CODES {
        let cmds: Vec<String> = cmds.split(", ").map(|c| format!("`{c}`")).collect();
        s += &format!("| {} | {ok} | {two} | {one} |\n", cmds.join(", "));
    }
    s
}
