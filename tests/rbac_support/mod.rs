//! The controller's permissions as `kubectl modekeeper install` prints them, turned into kube-sim
//! token rules the way the API server's RBAC authorizer reads the objects: a ClusterRole bound by a
//! ClusterRoleBinding grants everywhere, a Role (or ClusterRole) bound by a RoleBinding only in
//! the binding's namespace. Only bindings whose subjects name the controller's ServiceAccount (or
//! a group it is in) count. The objects are read through the k8s-openapi types, so a field the
//! API does not know fails here rather than being silently ignored by the conversion.

#![allow(dead_code)]

use std::process::Command;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube_sim::Rule;
use serde_json::Value;

/// The name the API server gives a ServiceAccount's token.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// `kubectl-modekeeper install -o json ARGS`: the objects of its List.
pub fn install_objects(args: &[&str]) -> Vec<Value> {
    let o = Command::new(env!("CARGO_BIN_EXE_kubectl-modekeeper"))
        .args(["install", "-o", "json"])
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "install {args:?}: {err}");
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    list["items"].as_array().unwrap().clone()
}

/// Whether `s` names the ServiceAccount `sa_ns/sa` (as itself, its user name or one of its groups).
fn names_service_account(s: &Subject, sa_ns: &str, sa: &str) -> bool {
    match s.kind.as_str() {
        "ServiceAccount" => s.name == sa && s.namespace.as_deref() == Some(sa_ns),
        "User" => s.name == service_account_user(sa_ns, sa),
        "Group" => {
            matches!(
                s.name.as_str(),
                "system:serviceaccounts" | "system:authenticated"
            ) || s.name == format!("system:serviceaccounts:{sa_ns}")
        }
        other => panic!("unknown subject kind {other}"),
    }
}

fn to_rule(r: &PolicyRule) -> Rule {
    Rule {
        verbs: r.verbs.clone(),
        api_groups: r.api_groups.clone().unwrap_or_default(),
        resources: r.resources.clone().unwrap_or_default(),
        resource_names: r.resource_names.clone().unwrap_or_default(),
        namespaces: vec![],
        non_resource_urls: r.non_resource_urls.clone().unwrap_or_default(),
    }
}

fn read<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{} does not read: {e}", v["kind"]))
}

/// The rules `objects` grant the ServiceAccount `sa_ns/sa`. A binding that refers to a role not
/// among `objects` is a broken manifest (the API server would grant nothing): it panics.
pub fn rules_for(objects: &[Value], sa_ns: &str, sa: &str) -> Vec<Rule> {
    let of_kind = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
    let cluster_roles: Vec<ClusterRole> = of_kind("ClusterRole").map(read).collect();
    let roles: Vec<Role> = of_kind("Role").map(read).collect();
    let cluster_role = |r: &RoleRef| -> Vec<Rule> {
        let role = cluster_roles
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(r.name.as_str()))
            .unwrap_or_else(|| panic!("no ClusterRole {}", r.name));
        assert!(
            role.aggregation_rule.is_none(),
            "aggregated ClusterRole {}",
            r.name
        );
        role.rules.iter().flatten().map(to_rule).collect()
    };
    let mut out = vec![];
    for b in of_kind("ClusterRoleBinding").map(read::<ClusterRoleBinding>) {
        if !b
            .subjects
            .iter()
            .flatten()
            .any(|s| names_service_account(s, sa_ns, sa))
        {
            continue;
        }
        assert_eq!(b.role_ref.kind, "ClusterRole", "{:?}", b.metadata.name);
        out.extend(cluster_role(&b.role_ref));
    }
    for b in of_kind("RoleBinding").map(read::<RoleBinding>) {
        if !b
            .subjects
            .iter()
            .flatten()
            .any(|s| names_service_account(s, sa_ns, sa))
        {
            continue;
        }
        let ns = b
            .metadata
            .namespace
            .clone()
            .expect("a RoleBinding's namespace");
        let granted = match b.role_ref.kind.as_str() {
            "ClusterRole" => cluster_role(&b.role_ref),
            "Role" => {
                let role = roles
                    .iter()
                    .find(|r| {
                        r.metadata.name.as_deref() == Some(b.role_ref.name.as_str())
                            && r.metadata.namespace.as_deref() == Some(ns.as_str())
                    })
                    .unwrap_or_else(|| panic!("no Role {ns}/{}", b.role_ref.name));
                role.rules.iter().flatten().map(to_rule).collect()
            }
            other => panic!("roleRef kind {other}"),
        };
        // A RoleBinding never grants non-resource URLs (they are cluster-scoped).
        out.extend(
            granted
                .into_iter()
                .filter(|r| r.non_resource_urls.is_empty())
                .map(|r| r.in_namespace(&ns)),
        );
    }
    out
}
