//! `k8s_plan.kubectl.sh`: the plan as a bash script a human reviews and may run. Every piece of plan
//! data in it is single-quoted ([`shell_quote`]), never interpolated bare or inside double quotes, so
//! no namespace, name or annotation value can run a command. This module only produces text.

use super::{Plan, canonical_json};

/// File name of the review script.
pub const KUBECTL_SCRIPT: &str = "k8s_plan.kubectl.sh";

/// Quotes a string as one bash word: `'…'`, each `'` written as `'\''`. Inside single quotes bash
/// expands nothing (`$`, backticks, `\`, `!` and newlines are literal).
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The review script for `plan`. An empty plan gives a script that runs no kubectl at all.
pub fn render_kubectl_script(plan: &Plan) -> String {
    let mut s = String::from("#!/usr/bin/env bash\n");
    s += "# ModeKeeper Kubernetes plan, rendered for review. ModeKeeper never runs this script.\n";
    s += &format!("# plan_digest: {}\n", plan.digest());
    s += "set -Eeuo pipefail\n";
    if plan.is_empty() {
        s += "# The plan is empty: nothing to patch.\n";
        s += "echo 'ModeKeeper plan: empty, nothing to patch.' >&2\n";
        return s;
    }
    let n = plan.items().len();
    s += &format!(
        "echo {} >&2\n",
        shell_quote(&format!(
            "ModeKeeper plan: {n} item(s) to patch. Review before running."
        ))
    );
    s += "echo 'Current kubectl context:' >&2\n";
    s += "kubectl config current-context >&2 || true\n";
    for (i, item) in plan.items().iter().enumerate() {
        let t = item.target();
        s += &format!("\n# item {}/{n}\n", i + 1);
        // A validated enum, not plan text: safe in a comment.
        if let Some(t) = item.takes_effect() {
            s += &format!(
                "# takes effect: {}{}\n",
                t.as_str(),
                match t {
                    super::TakesEffect::Live =>
                        " (running pods re-read the mounted ConfigMap; no restart)",
                    super::TakesEffect::NextPodStart =>
                        " (read when a pod next starts; restart required)",
                    super::TakesEffect::Rollout => " (pod-template change: the pods are replaced)",
                }
            );
        }
        s += &format!(
            "kubectl -n {} patch {} --type merge -p {}\n",
            shell_quote(t.namespace()),
            shell_quote(&format!("{}/{}", t.kind().resource(), t.name())),
            shell_quote(&canonical_json(&item.patch().to_json()))
        );
    }
    s
}
