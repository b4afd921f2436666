//! The one table of the API permissions ModeKeeper needs, each with the code path that needs it.
//! The controller's ClusterRole/Roles that `install` prints and the plugin's Role in docs/rbac.yaml
//! are both derived from it, so a permission is granted in exactly one place and nothing is granted
//! that no row explains. Workload rows come from [`crate::k8s::kinds::KINDS`]: a kind added there is
//! readable (and patchable, if its templates are) without touching this file. Pure data.

use crate::k8s::kinds::KINDS;
use crate::plan::WorkloadKind;

/// Where a permission applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// The namespaces whose workloads are watched (all of them, or `--watch-namespace`).
    Watched,
    /// The controller's own namespace only (its Leases, state, settings and Secret).
    Own,
    /// A cluster-scoped resource (namespaces).
    Cluster,
}

/// Who uses a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// The `kubectl-modekeeper` plugin run by a person (docs/rbac.yaml) and the controller alike.
    Both,
    /// Only the in-cluster controller.
    Controller,
}

/// One row: `verbs` on `group`/`resource`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource plural, with its subresource if any (`pods/log`).
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    pub user: User,
    /// Only these objects (a `resourceNames` restriction); empty means any.
    pub names: &'static [&'static str],
    /// The code path that sends these requests.
    pub why: &'static str,
}

/// The Secret holding the license and keyring (`license.json`, `keyring.json`), read by the
/// controller before every apply.
pub const LICENSE_SECRET: &str = "modekeeper-license";

/// The API group of the Events the controller records (kube-runtime's event recorder writes
/// events.k8s.io/v1 Events).
pub const EVENTS_GROUP: &str = "events.k8s.io";

/// The order verbs are written in a rule (the order `kubectl create role` uses).
const VERB_ORDER: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// Every permission, in the order the rules are printed.
pub fn permissions() -> Vec<Permission> {
    let mut rows = vec![];
    for spec in KINDS.iter().filter(|s| s.kind != WorkloadKind::ConfigMap) {
        rows.push(Permission {
            group: spec.group,
            resource: spec.plural,
            verbs: &["get", "list"],
            scope: Scope::Watched,
            user: User::Both,
            names: &[],
            why: "k8s verify reads each planned object (one LIST per namespace and kind, else a GET); closed-loop reads the current knobs",
        });
        rows.push(Permission {
            group: spec.group,
            resource: spec.plural,
            verbs: &["watch"],
            scope: Scope::Watched,
            user: User::Controller,
            names: &[],
            why: "controller: kube-runtime watcher of the workloads labelled modekeeper.io/enabled=true",
        });
        if spec.template_patchable() {
            rows.push(Permission {
                group: spec.group,
                resource: spec.plural,
                verbs: &["patch"],
                scope: Scope::Watched,
                user: User::Both,
                names: &[],
                why: "k8s apply: JSON merge patch of modekeeper/knob.* pod-template annotations; k8s verify: the same patch as a server-side dry run",
            });
        }
    }
    rows.extend([
        Permission {
            group: "",
            resource: "configmaps",
            verbs: &["get", "list", "patch"],
            scope: Scope::Watched,
            user: User::Both,
            names: &[],
            why: "the knobs ConfigMap <workload>-modekeeper-knobs: read by verify and closed-loop, patched by apply (hot knobs; cold knobs of Jobs and running JobSets)",
        },
        Permission {
            group: "",
            resource: "pods",
            verbs: &["get", "list"],
            scope: Scope::Watched,
            user: User::Both,
            names: &[],
            why: "telemetry from pod logs (src/k8s/logs.rs): finds the workload's pods and follows restarts",
        },
        Permission {
            group: "",
            resource: "pods/log",
            verbs: &["get"],
            scope: Scope::Watched,
            user: User::Both,
            names: &[],
            why: "telemetry from pod logs (src/k8s/logs.rs): streams each pod's trainer container",
        },
        Permission {
            group: EVENTS_GROUP,
            resource: "events",
            verbs: &["create", "patch"],
            scope: Scope::Watched,
            user: User::Both,
            names: &[],
            why: "closed-loop watch --apply and the controller: a Kubernetes Event on the workload for every verdict, apply, block and rollback (patch: a repeated Event's series count)",
        },
        Permission {
            group: "",
            resource: "namespaces",
            verbs: &["get"],
            scope: Scope::Cluster,
            user: User::Both,
            names: &[],
            why: "k8s verify tells a missing namespace from a missing workload",
        },
        Permission {
            group: "coordination.k8s.io",
            resource: "leases",
            verbs: &["get", "create", "update"],
            scope: Scope::Own,
            user: User::Controller,
            names: &[],
            why: "controller: leader election and shard ownership (one Lease per shard)",
        },
        Permission {
            group: "",
            resource: "configmaps",
            verbs: &["get", "create", "update"],
            scope: Scope::Own,
            user: User::Controller,
            names: &[],
            why: "controller: reads its settings ConfigMap; keeps each session's state in a ConfigMap so a restarted controller resumes",
        },
        Permission {
            group: "",
            resource: "secrets",
            verbs: &["get"],
            scope: Scope::Own,
            user: User::Controller,
            names: &[LICENSE_SECRET],
            why: "controller: the license and keyring, read before every apply (the license gate)",
        },
    ]);
    rows
}

/// One RBAC PolicyRule, with the reasons of the rows merged into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: Vec<&'static str>,
    pub names: Vec<&'static str>,
    /// `<verbs>: <why>` per merged row.
    pub why: Vec<String>,
}

/// The rules for `scope`, for the controller (every row) or the plugin only (`plugin_only`):
/// rows on the same resource and names merge into one rule, verbs in the usual order.
pub fn rules(scope: Scope, plugin_only: bool) -> Vec<Rule> {
    let mut out: Vec<Rule> = vec![];
    for p in permissions() {
        if p.scope != scope || (plugin_only && p.user != User::Both) {
            continue;
        }
        let why = format!("{}: {}", p.verbs.join(","), p.why);
        match out
            .iter_mut()
            .find(|r| r.group == p.group && r.resource == p.resource && r.names == p.names)
        {
            Some(r) => {
                r.verbs.extend(p.verbs.iter().copied());
                r.why.push(why);
            }
            None => out.push(Rule {
                group: p.group,
                resource: p.resource,
                verbs: p.verbs.to_vec(),
                names: p.names.to_vec(),
                why: vec![why],
            }),
        }
    }
    for r in &mut out {
        r.verbs
            .sort_by_key(|v| VERB_ORDER.iter().position(|o| o == v).unwrap_or(usize::MAX));
        r.verbs.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::kinds;

    #[test]
    fn every_workload_kind_is_read_and_watched_and_patched_only_where_templates_are_mutable() {
        let rules = rules(Scope::Watched, false);
        for spec in KINDS.iter().filter(|s| s.kind != WorkloadKind::ConfigMap) {
            let r = rules
                .iter()
                .find(|r| r.group == spec.group && r.resource == spec.plural)
                .unwrap_or_else(|| panic!("no rule for {}", spec.plural));
            let want: &[&str] = if spec.template_patchable() {
                &["get", "list", "watch", "patch"]
            } else {
                &["get", "list", "watch"]
            };
            assert_eq!(r.verbs, want, "{}", spec.plural);
        }
        // Job and JobSet templates are never patched: their knobs travel in the ConfigMap.
        let job = kinds::spec(WorkloadKind::Job);
        assert!(
            !rules
                .iter()
                .any(|r| r.resource == job.plural && r.verbs.contains(&"patch"))
        );
    }

    #[test]
    fn the_plugin_gets_no_controller_only_verb() {
        let plugin = rules(Scope::Watched, true);
        for r in &plugin {
            assert!(!r.verbs.contains(&"watch"), "{r:?}");
        }
        // `closed-loop watch --apply` posts Events on its workload, like the controller.
        let events = plugin.iter().find(|r| r.resource == "events").unwrap();
        assert_eq!(events.verbs, ["create", "patch"]);
        assert!(rules(Scope::Own, true).is_empty());
        // The secret rule names its one object: the controller reads no other Secret.
        let own = rules(Scope::Own, false);
        let secret = own.iter().find(|r| r.resource == "secrets").unwrap();
        assert_eq!(secret.names, [LICENSE_SECRET]);
        assert_eq!(secret.verbs, ["get"]);
    }

    #[test]
    fn no_rule_grants_delete_or_wildcards() {
        for scope in [Scope::Watched, Scope::Own, Scope::Cluster] {
            for r in rules(scope, false) {
                assert!(
                    r.verbs
                        .iter()
                        .all(|v| !matches!(*v, "delete" | "deletecollection" | "*")),
                    "{r:?}"
                );
                assert!(r.resource != "*" && r.group != "*", "{r:?}");
                assert_eq!(r.why.len(), r.why.iter().filter(|w| !w.is_empty()).count());
            }
        }
    }
}
