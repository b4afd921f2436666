//! `install` through the built binary: the manifests read back into the k8s-openapi types with
//! nothing lost (no unknown or misspelt field), the default output as a snapshot, docs/rbac.yaml
//! kept equal to the permission table, the Dockerfile's inputs, bad flags, and `--apply` (and the
//! real kubectl's server-side apply) against kube-sim.

mod k8s_common;
mod rbac_support;
mod yaml_support;

use std::process::Command;

use std::collections::BTreeSet;

use k8s_common::{Case, KNOB, kubectl, kubectl_or_skip, standard};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube_sim::{KubeSim, ResourceKind, Rule, WorkloadSeed};
use modekeeper::cli::output::to_yaml;
use modekeeper::install::{self, InstallOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use yaml_rust2::YamlLoader;
use yaml_support::yaml_to_json;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-modekeeper");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

fn items(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["install", "-o", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List");
    list["items"].as_array().unwrap().clone()
}

/// Reads `v` as `T` and writes it back: equal JSON means every field is one the type knows, spelt
/// as the API spells it (k8s-openapi skips unknown fields when reading).
fn round_trip<T: DeserializeOwned + Serialize>(v: &Value) {
    let typed: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{} does not read: {e}", v["kind"]));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, v, "{} changed in a round trip", v["kind"]);
}

fn check_types(objects: &[Value]) {
    for v in objects {
        match v["kind"].as_str().unwrap() {
            "Namespace" => round_trip::<Namespace>(v),
            "ServiceAccount" => round_trip::<ServiceAccount>(v),
            "ClusterRole" => round_trip::<ClusterRole>(v),
            "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(v),
            "Role" => round_trip::<Role>(v),
            "RoleBinding" => round_trip::<RoleBinding>(v),
            "ConfigMap" => round_trip::<ConfigMap>(v),
            "Deployment" => round_trip::<Deployment>(v),
            "Service" => round_trip::<Service>(v),
            other => panic!("unexpected kind {other}"),
        }
    }
}

#[test]
fn manifests_read_back_into_the_api_types_unchanged() {
    let default = items(&[]);
    assert_eq!(default.len(), 9);
    check_types(&default);
    let scoped = items(&[
        "-n",
        "ops",
        "--watch-namespace",
        "ml-a,ml-b",
        "--replicas",
        "3",
        "--shards",
        "4",
        "--image",
        "registry.example/mk:dev",
    ]);
    check_types(&scoped);
    let dep = scoped.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(dep["metadata"]["namespace"], "ops");
    assert_eq!(dep["spec"]["replicas"], 3);
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example/mk:dev");
    assert!(c["args"].as_array().unwrap().contains(&"--shards=4".into()));
    // The typed Deployment has what the briefing asks of the pod.
    let typed: Deployment = serde_json::from_value(dep.clone()).unwrap();
    let pod = typed.spec.unwrap().template.spec.unwrap();
    let sc = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let c = &pod.containers[0];
    let live = c.liveness_probe.clone().unwrap().http_get.unwrap();
    let ready = c.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(
        (live.path.as_deref(), ready.path.as_deref()),
        (Some("/healthz"), Some("/readyz"))
    );
    // Roles in the watched namespaces only, bound to the controller's ServiceAccount in `ops`.
    let roles: Vec<String> = scoped
        .iter()
        .filter(|o| o["kind"] == "Role")
        .map(|o| o["metadata"]["namespace"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roles, ["ml-a", "ml-b", "ops"]);
}

#[test]
fn default_output_snapshot() {
    let (code, out, err) = run(&["install"]);
    assert_eq!(code, 0, "{err}");
    // The YAML stream and the JSON List carry the same objects.
    let docs = YamlLoader::load_from_str(&out).unwrap();
    let from_yaml: Vec<Value> = docs.iter().map(yaml_to_json).collect();
    assert_eq!(from_yaml, items(&[]));
    // `-o yaml` is the same stream as the default.
    assert_eq!(run(&["install", "-o", "yaml"]).1, out);
    let version = env!("CARGO_PKG_VERSION");
    insta::assert_snapshot!("install_default", out.replace(version, "<version>"));
}

/// The documents of docs/rbac.yaml.
fn rbac_docs() -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{ROOT}/docs/rbac.yaml")).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap()
        .iter()
        .map(yaml_to_json)
        .collect()
}

#[test]
fn docs_rbac_yaml_is_what_the_table_grants() {
    let docs = rbac_docs();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in docs/rbac.yaml"))
    };
    // The plugin's Role: the same rules (and reasons) as the table's plugin rows.
    let want = install::plugin_role();
    assert!(
        find("Role") == &want,
        "the plugin's Role in docs/rbac.yaml differs from the table; it should read:\n{}",
        to_yaml(&want)
    );
    // The controller's ClusterRole and binding: exactly what `install` prints (labels aside: they
    // carry the version).
    let printed = install::manifests(&InstallOptions::default()).unwrap();
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        let mut want = printed.iter().find(|o| o["kind"] == kind).unwrap().clone();
        let mut have = find(kind).clone();
        want["metadata"].as_object_mut().unwrap().remove("labels");
        have["metadata"].as_object_mut().unwrap().remove("labels");
        assert!(
            have == want,
            "{kind} in docs/rbac.yaml differs from what install prints; it should read:\n{}",
            to_yaml(&want)
        );
    }
    let own = printed
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == install::SELF_ROLE_NAME)
        .unwrap();
    let doc_own = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == install::SELF_ROLE_NAME)
        .expect("the controller's own-namespace Role in docs/rbac.yaml");
    assert!(
        doc_own["rules"] == own["rules"],
        "the own-namespace Role in docs/rbac.yaml should read:\n{}",
        to_yaml(own)
    );
}

#[test]
fn docs_describe_every_setting_and_annotation() {
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/controller.md")).unwrap();
    for s in install::SETTINGS {
        assert!(
            doc.contains(&format!("| `{}` | `{}` |", s.key, s.default)),
            "docs/controller.md does not document setting {} (default {:?})",
            s.key,
            s.default
        );
    }
    for a in [
        "modekeeper.io/enabled",
        "modekeeper.io/passport",
        "modekeeper.io/policies",
        "modekeeper.io/source",
    ] {
        assert!(doc.contains(a), "docs/controller.md does not mention {a}");
    }
}

#[test]
fn the_dockerfiles_inputs_exist() {
    let text = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    // Every path COPY'd from the build context exists in the checkout.
    for line in text.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        if rest.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = rest
            .split_whitespace()
            .filter(|p| !p.starts_with("--"))
            .collect();
        for src in &parts[..parts.len() - 1] {
            assert!(
                std::path::Path::new(ROOT).join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
        }
    }
    assert!(text.contains("FROM scratch"));
    assert!(text.contains("x86_64-unknown-linux-musl"));
    let user = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER line");
    assert_eq!(user.trim(), format!("{0}:{0}", install::RUN_AS_USER));
    assert!(
        std::path::Path::new(ROOT)
            .join("scripts/build-image.sh")
            .exists()
    );
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    for args in [
        &["install", "-n", "Bad_NS"][..],
        &["install", "--watch-namespace", "ml,"],
        &["install", "--replicas", "0"],
        &["install", "--shards", "0"],
        &["install", "--image", "a b"],
        &["install", "--dry-run"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert!(!err.trim().is_empty(), "{args:?}");
    }
    let (_, _, err) = run(&["install", "--replicas", "0"]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

fn install_on(case: &Case, args: &[&str]) -> (i32, String, String) {
    let o = case
        .command()
        .arg("install")
        .arg("--kubeconfig")
        .arg(&case.kubeconfig)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

/// Every object `install` prints, as kube-sim stores it (None when absent).
fn stored(sim: &kube_sim::KubeSim, objects: &[Value]) -> Vec<Option<Value>> {
    objects
        .iter()
        .map(|o| {
            let kind = ResourceKind::parse(o["kind"].as_str().unwrap()).unwrap();
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
            let name = o["metadata"]["name"].as_str().unwrap();
            sim.get(kind, ns, name)
        })
        .collect()
}

#[test]
fn apply_creates_every_object_and_is_idempotent() {
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    let objects = items(&["-n", "mk"]);

    // A server dry run stores nothing; objects in the namespace it would create cannot be
    // checked yet (the server would answer 404), and say so.
    let (code, out, err) = install_on(&case, &["-n", "mk", "--apply", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), objects.len(), "{out}");
    for (line, o) in lines.iter().zip(&objects) {
        let want = if o["metadata"]["namespace"].is_string() {
            "not checked (server dry run: namespace mk does not exist yet)"
        } else {
            "applied (server dry run)"
        };
        assert!(line.ends_with(want), "{line}");
    }
    assert!(stored(&sim, &objects).iter().all(Option::is_none));

    let (code, out, err) = install_on(&case, &["-n", "mk", "--apply"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().next(),
        Some("Namespace mk applied"),
        "objects go in apply order: {out}"
    );
    for (want, have) in objects.iter().zip(stored(&sim, &objects)) {
        let have = have.unwrap_or_else(|| panic!("{} not stored", want["kind"]));
        // What the server keeps is what was sent, plus its own metadata.
        for key in ["rules", "roleRef", "subjects", "data", "spec"] {
            if !want[key].is_null() {
                assert_eq!(have[key]["replicas"], want[key]["replicas"]);
                if key != "spec" {
                    assert_eq!(have[key], want[key], "{} {key}", want["kind"]);
                }
            }
        }
        assert_eq!(have["metadata"]["labels"], want["metadata"]["labels"]);
    }
    let rv = sim.resource_version();
    // Applying the same manifests again changes nothing; `-o json` prints what the server holds.
    let (code, out, err) = install_on(&case, &["-n", "mk", "--apply", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let held = list["items"].as_array().unwrap();
    assert_eq!(held.len(), objects.len());
    assert!(
        held.iter().all(|o| o["metadata"]["uid"].is_string()),
        "{out}"
    );
    assert_eq!(sim.resource_version(), rv);
    // Now every object is checked by the dry run.
    let (code, out, err) = install_on(&case, &["-n", "mk", "--apply", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().all(|l| l.ends_with("applied (server dry run)")),
        "{out}"
    );
    assert_eq!(sim.resource_version(), rv);
    // The field manager is install's own.
    let role = sim
        .get(ResourceKind::ClusterRole, "", install::CONTROLLER_NAME)
        .unwrap();
    assert!(
        role["metadata"]["managedFields"]
            .to_string()
            .contains("modekeeper-install"),
        "{role}"
    );
}

#[test]
fn apply_stops_at_the_first_refused_object() {
    let sim = standard().start_blocking().unwrap();
    // bob may only read in `ml`: the very first object is refused, nothing else is sent.
    let case = Case::new(&sim, "ro");
    let (code, out, err) = install_on(&case, &["--apply"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("Namespace modekeeper-system"), "{err}");
    assert!(!sim.namespace_exists(install::DEFAULT_NAMESPACE));
}

#[test]
fn kubectl_applies_the_printed_manifests_server_side() {
    let Some(kc) = kubectl_or_skip("kubectl_applies_the_printed_manifests_server_side") else {
        return;
    };
    let sim = standard().start_blocking().unwrap();
    let case = Case::new(&sim, "t0");
    for args in [&[][..], &["--watch-namespace", "ml"][..]] {
        let mut all = vec!["install"];
        all.extend_from_slice(args);
        let (code, yaml, err) = run(&all);
        assert_eq!(code, 0, "{err}");
        let file = case.path().join("install.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let file = file.to_str().unwrap();
        // A server dry run needs the namespace to exist already (as on a real cluster), so
        // apply first, then dry-run the same file.
        for dry in [&[][..], &["--dry-run=server"][..]] {
            let mut cmd = vec!["apply", "--server-side", "-f", file];
            cmd.extend_from_slice(dry);
            let (code, out, err) = kubectl(&kc, &case, &cmd);
            assert_eq!(code, 0, "kubectl refused {args:?} {dry:?}: {err}\n{out}");
            assert_eq!(
                out.lines().count(),
                YamlLoader::load_from_str(&yaml).unwrap().len(),
                "{out}"
            );
        }
    }
    assert!(
        sim.get(ResourceKind::Role, "ml", install::CONTROLLER_NAME)
            .is_some()
    );
    let (code, out, err) = kubectl(
        &kc,
        &case,
        &[
            "-n",
            "modekeeper-system",
            "get",
            "deployment,service,sa",
            "-o",
            "name",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "deployment.apps/modekeeper-controller",
            "service/modekeeper-metrics",
            "serviceaccount/modekeeper-controller"
        ]
    );
}

/// The plugin's Role (docs/rbac.yaml) as kube-sim rules bound in `ns`.
fn plugin_rules(ns: &str) -> Vec<Rule> {
    let role = install::plugin_role();
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let strs = |k: &str| -> Vec<String> {
                r[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            assert!(r.get("resourceNames").is_none());
            Rule::allow(strs("verbs"), &strs("apiGroups")[0], strs("resources")).in_namespace(ns)
        })
        .collect()
}

/// `(group, resource[/subresource], verb)` of every rule of the plugin's Role.
fn granted() -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in install::plugin_role()["rules"].as_array().unwrap() {
        for v in r["verbs"].as_array().unwrap() {
            out.insert((
                r["apiGroups"][0].as_str().unwrap().to_string(),
                r["resources"][0].as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn the_plugin_role_is_exactly_what_verify_and_watch_use() {
    let records: Vec<String> = (1..=120)
        .map(|i| json!({"step": i, "step_time_ms": 100.0, "loss": 2.0}).to_string())
        .collect();
    let mut trainer = WorkloadSeed::deployment("ml", "trainer")
        .replicas(1)
        .template_annotation(KNOB, "4");
    for line in &records {
        trainer = trainer.log("trainer", line.clone());
    }
    let sim = KubeSim::builder()
        .namespace("ml")
        .workload(trainer)
        .object(
            ResourceKind::ConfigMap,
            json!({"metadata": {"name": "trainer-modekeeper-knobs", "namespace": "ml"},
                   "data": {"concurrency": "8"}}),
        )
        .token("mk", "mk-user", plugin_rules("ml"))
        .start_blocking()
        .unwrap();
    let case = Case::new(&sim, "mk");

    // verify: a workload item and a knobs ConfigMap item.
    let plan = json!({"schema_version": "k8s_plan.v2", "items": [
        {"namespace": "ml", "name": "trainer", "kind": "Deployment", "takes_effect": "rollout",
         "patch": {"spec": {"template": {"metadata": {"annotations": {KNOB: "8"}}}}}},
        {"namespace": "ml", "name": "trainer-modekeeper-knobs", "kind": "ConfigMap",
         "patch": {"data": {"concurrency": "6"}}, "takes_effect": "live", "restart_required": false}]});
    let run = case.verify(&plan, &[]);
    assert_eq!(run.report()["ok"], true, "{:#}", run.report());
    // watch: telemetry from the pod logs, current knobs from the workload and its ConfigMap.
    let out = case
        .command()
        .args([
            "closed-loop",
            "watch",
            "--source",
            "k8s",
            "--deployment",
            "trainer",
        ])
        .args([
            "-n",
            "ml",
            "--duration",
            "3s",
            "--knobs-from-cluster",
            "--kubeconfig",
        ])
        .arg(&case.kubeconfig)
        .arg("--out")
        .arg(case.path().join("watch"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut used = BTreeSet::new();
    for r in sim.requests() {
        assert_ne!(
            r.status, 403,
            "the plugin's Role refused {} {}",
            r.method, r.path
        );
        let info = kube_sim::request_info::request_info(&r.method, &r.path, &r.query);
        // Self-reviews need no rule.
        if !info.is_resource_request || info.api_group == "authorization.k8s.io" {
            continue;
        }
        let resource = if info.subresource.is_empty() {
            info.resource
        } else {
            format!("{}/{}", info.resource, info.subresource)
        };
        used.insert((info.api_group, resource, info.verb));
    }
    let granted = granted();
    let beyond: Vec<_> = used.difference(&granted).collect();
    assert!(beyond.is_empty(), "used but not granted: {beyond:?}");
    // Of the resources these runs touch, every granted verb is used: the Role grants nothing
    // they do not need. (The other workload kinds' rules come from the same kinds table.)
    let touched: BTreeSet<&String> = used.iter().map(|(_, r, _)| r).collect();
    let unused: Vec<_> = granted
        .iter()
        .filter(|(_, r, _)| touched.contains(r))
        .filter(|g| !used.contains(*g))
        .collect();
    assert!(
        unused.is_empty(),
        "granted but never used: {unused:?} (used: {used:?})"
    );
    for r in [
        "deployments",
        "configmaps",
        "pods",
        "pods/log",
        "namespaces",
    ] {
        assert!(
            touched.contains(&r.to_string()),
            "{r} not exercised: {used:?}"
        );
    }
}

#[path = "fleet_cli/mod.rs"]
mod fleet;

/// One access question: `verb` on `resource[.group][/subresource]` (named `name`, or any) in
/// `namespace` (`""`: cluster-wide, or a cluster-scoped resource).
#[derive(Debug, Clone, Copy)]
struct Ask {
    verb: &'static str,
    resource: &'static str,
    namespace: &'static str,
    name: &'static str,
}

const fn ask(verb: &'static str, resource: &'static str, namespace: &'static str) -> Ask {
    Ask {
        verb,
        resource,
        namespace,
        name: "",
    }
}

const fn ask_named(
    verb: &'static str,
    resource: &'static str,
    namespace: &'static str,
    name: &'static str,
) -> Ask {
    Ask {
        verb,
        resource,
        namespace,
        name,
    }
}

impl Ask {
    /// (group, resource, subresource).
    fn parts(&self) -> (&str, &str, &str) {
        let (rg, sub) = self.resource.split_once('/').unwrap_or((self.resource, ""));
        let (resource, group) = rg.split_once('.').unwrap_or((rg, ""));
        (group, resource, sub)
    }

    /// What the API server answers a SelfSubjectAccessReview asking this with `token`.
    fn review(&self, sim: &KubeSim, token: &str) -> bool {
        let (group, resource, sub) = self.parts();
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {
                "verb": self.verb, "group": group, "resource": resource,
                "subresource": sub, "namespace": self.namespace, "name": self.name}},
        });
        let url = format!(
            "{}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            sim.url()
        );
        let mut r = ureq::post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        let review: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        review["status"]["allowed"].as_bool().unwrap()
    }

    /// `kubectl auth can-i` with these attributes, as `as_user`.
    fn can_i(&self, kc: &std::path::Path, case: &Case, as_user: &str) -> bool {
        let (_, _, sub) = self.parts();
        let (rg, _) = self.resource.split_once('/').unwrap_or((self.resource, ""));
        let target = if self.name.is_empty() {
            rg.to_string()
        } else {
            format!("{rg}/{}", self.name)
        };
        let mut args = vec!["auth", "can-i", self.verb, &target];
        let as_arg = format!("--as={as_user}");
        args.push(&as_arg);
        let sub_arg = format!("--subresource={sub}");
        if !sub.is_empty() {
            args.push(&sub_arg);
        }
        if self.namespace.is_empty() {
            args.push("--all-namespaces");
        } else {
            args.extend(["-n", self.namespace]);
        }
        let (code, out, err) = kubectl(kc, case, &args);
        match (code, out.trim()) {
            (0, "yes") => true,
            (1, "no") => false,
            _ => panic!("kubectl {args:?}: {code} {out} {err}"),
        }
    }
}

/// The controller's namespace in these tests.
const OWN: &str = "modekeeper-system";

/// Allowed to the controller `install` sets up, whatever its scope: what its code paths send
/// (tests/controller_e2e.rs runs them under these rules), in namespace `ml`, which it watches.
const ALLOWED: &[Ask] = &[
    ask("patch", "deployments.apps", "ml"),
    ask("list", "deployments.apps", "ml"),
    ask("watch", "statefulsets.apps", "ml"),
    ask("list", "pods", "ml"),
    ask_named("get", "pods/log", "ml", "trainer-0"),
    ask("create", "events.events.k8s.io", "ml"),
    ask("patch", "events.events.k8s.io", "ml"),
    ask_named("get", "namespaces", "ml", "ml"),
    // The knobs ConfigMap <workload>-modekeeper-knobs (its name is the workload's, so RBAC cannot
    // name it): patched by apply in every watched namespace.
    ask_named("patch", "configmaps", "ml", "trainer-modekeeper-knobs"),
    ask_named("get", "secrets", OWN, "modekeeper-license"),
    ask_named("get", "configmaps", OWN, "modekeeper-settings"),
    ask("create", "configmaps", OWN),
    ask_named(
        "update",
        "configmaps",
        OWN,
        "modekeeper-state-0123456789abcdef",
    ),
    ask("create", "leases.coordination.k8s.io", OWN),
    ask_named(
        "get",
        "leases.coordination.k8s.io",
        OWN,
        "modekeeper-controller-shard-0",
    ),
    ask_named(
        "update",
        "leases.coordination.k8s.io",
        OWN,
        "modekeeper-controller-shard-0",
    ),
    // Self-reviews need no rule.
    ask(
        "create",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "",
    ),
    ask("create", "selfsubjectrulesreviews.authorization.k8s.io", ""),
    ask("list", "jobs.batch", "ml"),
];

/// Never allowed to the controller, whatever its scope: what would let a compromised controller
/// read credentials, run code, grant itself more, or change what it does not own.
const DENIED: &[Ask] = &[
    // Secrets: only modekeeper-license, only by name, only in its own namespace.
    ask("list", "secrets", ""),
    ask("watch", "secrets", ""),
    ask("list", "secrets", OWN),
    ask("watch", "secrets", OWN),
    ask("list", "secrets", "ml"),
    ask_named("get", "secrets", "ml", "modekeeper-license"),
    ask_named("get", "secrets", "kube-system", "modekeeper-license"),
    ask_named("get", "secrets", OWN, "modekeeper-controller-token"),
    ask("create", "secrets", OWN),
    ask_named("update", "secrets", OWN, "modekeeper-license"),
    ask_named("patch", "secrets", OWN, "modekeeper-license"),
    ask_named("delete", "secrets", OWN, "modekeeper-license"),
    // Pods: read, never create, change, delete or enter.
    ask("create", "pods", "ml"),
    ask_named("delete", "pods", "ml", "trainer-0"),
    ask("deletecollection", "pods", "ml"),
    ask_named("patch", "pods", "ml", "trainer-0"),
    ask_named("create", "pods/exec", "ml", "trainer-0"),
    ask_named("get", "pods/exec", "ml", "trainer-0"),
    ask_named("create", "pods/attach", "ml", "trainer-0"),
    ask_named("create", "pods/portforward", "ml", "trainer-0"),
    ask_named("create", "pods/eviction", "ml", "trainer-0"),
    // RBAC: no verb at all.
    ask("get", "roles.rbac.authorization.k8s.io", OWN),
    ask("list", "roles.rbac.authorization.k8s.io", "ml"),
    ask("create", "roles.rbac.authorization.k8s.io", OWN),
    ask_named(
        "patch",
        "roles.rbac.authorization.k8s.io",
        OWN,
        "modekeeper-controller-self",
    ),
    ask("create", "rolebindings.rbac.authorization.k8s.io", "ml"),
    ask("update", "rolebindings.rbac.authorization.k8s.io", OWN),
    ask("delete", "rolebindings.rbac.authorization.k8s.io", OWN),
    ask("create", "clusterroles.rbac.authorization.k8s.io", ""),
    ask_named(
        "patch",
        "clusterroles.rbac.authorization.k8s.io",
        "",
        "modekeeper-controller",
    ),
    ask("escalate", "clusterroles.rbac.authorization.k8s.io", ""),
    ask("bind", "clusterroles.rbac.authorization.k8s.io", ""),
    ask(
        "create",
        "clusterrolebindings.rbac.authorization.k8s.io",
        "",
    ),
    // ConfigMaps outside its namespace: the knobs ConfigMap is patched, nothing is created,
    // replaced or deleted; in its own namespace nothing is deleted.
    ask("create", "configmaps", "ml"),
    ask_named("update", "configmaps", "ml", "trainer-modekeeper-knobs"),
    ask_named("delete", "configmaps", "ml", "trainer-modekeeper-knobs"),
    ask("deletecollection", "configmaps", "ml"),
    ask("create", "configmaps", "kube-system"),
    ask_named("delete", "configmaps", OWN, "modekeeper-settings"),
    // Wildcards.
    ask("*", "*.*", "ml"),
    ask("*", "configmaps", OWN),
    ask("get", "*.*", "ml"),
    ask("*", "deployments.apps", "ml"),
    // Workloads: a knob annotation patch, never a create, replace or delete.
    ask("create", "deployments.apps", "ml"),
    ask_named("update", "deployments.apps", "ml", "trainer"),
    ask_named("delete", "deployments.apps", "ml", "trainer"),
    ask_named("patch", "deployments.apps/scale", "ml", "trainer"),
    ask_named("patch", "jobs.batch", "ml", "train"),
    ask_named("patch", "jobsets.jobset.x-k8s.io", "ml", "js"),
    // Leases elsewhere: the kube-controller-manager's.
    ask_named(
        "update",
        "leases.coordination.k8s.io",
        "kube-system",
        "kube-controller-manager",
    ),
    ask("create", "leases.coordination.k8s.io", "kube-system"),
    ask_named(
        "delete",
        "leases.coordination.k8s.io",
        OWN,
        "modekeeper-controller-shard-0",
    ),
    // Identities: no impersonation, no tokens.
    ask("impersonate", "users", ""),
    ask("impersonate", "serviceaccounts", OWN),
    ask_named(
        "create",
        "serviceaccounts/token",
        OWN,
        "modekeeper-controller",
    ),
    // Cluster objects.
    ask_named("patch", "namespaces", "", "ml"),
    ask("list", "namespaces", ""),
    ask("get", "nodes", ""),
    ask_named("get", "nodes/proxy", "", "node-a"),
    ask(
        "create",
        "customresourcedefinitions.apiextensions.k8s.io",
        "",
    ),
];

/// Denied only to the controller scoped with `--watch-namespace ml`: everything outside `ml`
/// and its own namespace. The ClusterRole allows them all, kube-system's `aws-auth` patch included
/// (RBAC cannot name the knobs ConfigMaps): docs/controller.md says so, and this keeps it true.
const DENIED_OUTSIDE_ML: &[Ask] = &[
    ask("list", "deployments.apps", ""),
    ask("watch", "deployments.apps", ""),
    ask("list", "deployments.apps", "prod"),
    ask_named("patch", "deployments.apps", "prod", "trainer"),
    ask_named("get", "pods/log", "prod", "trainer-0"),
    ask_named("patch", "configmaps", "prod", "trainer-modekeeper-knobs"),
    ask_named("patch", "configmaps", "kube-system", "aws-auth"),
    ask("create", "events.events.k8s.io", "prod"),
    ask_named("get", "namespaces", "prod", "prod"),
];

/// Least privilege, checked: the rules `install` grants its ServiceAccount (with a ClusterRole,
/// and with `--watch-namespace`) allow what the controller does and nothing of the deny tables,
/// asked through kube-sim's SelfSubjectAccessReview with the ServiceAccount's token, and
/// cross-checked with the real `kubectl auth can-i --as system:serviceaccount:...` (an admin
/// impersonating it) where kubectl is installed.
#[test]
fn install_s_rules_deny_what_the_controller_must_not_have() {
    let sa = format!("system:serviceaccount:{OWN}:{}", install::CONTROLLER_NAME);
    let kc =
        kubectl_or_skip("install_s_rules_deny_what_the_controller_must_not_have (kubectl part)");
    for scope in [&[][..], &["--watch-namespace", "ml"][..]] {
        let mut args = vec!["-n", OWN];
        args.extend_from_slice(scope);
        let objects = rbac_support::install_objects(&args);
        let rules = rbac_support::rules_for(&objects, OWN, install::CONTROLLER_NAME);
        assert!(!rules.is_empty());
        let sim = KubeSim::builder()
            .namespace("ml")
            .namespace(OWN)
            .token("admin", "admin", [Rule::admin()])
            .token("sa", &sa, rules)
            .start_blocking()
            .unwrap();
        let case = Case::new(&sim, "admin");
        let mut table: Vec<(Ask, bool)> = ALLOWED.iter().map(|a| (*a, true)).collect();
        table.extend(DENIED.iter().map(|a| (*a, false)));
        let outside = DENIED_OUTSIDE_ML.iter().map(|a| (*a, scope.is_empty()));
        table.extend(outside);
        let mut wrong = vec![];
        for (a, want) in &table {
            let got = a.review(&sim, "sa");
            if got != *want {
                wrong.push(format!("review: {a:?} allowed={got}"));
            }
            if let Some(kc) = &kc {
                let got = a.can_i(kc, &case, &sa);
                if got != *want {
                    wrong.push(format!("kubectl auth can-i: {a:?} allowed={got}"));
                }
            }
        }
        assert!(wrong.is_empty(), "install {args:?}:\n{}", wrong.join("\n"));
    }
}

/// The conversion the RBAC tests rely on reads bindings as the API server does: a ClusterRole
/// through a ClusterRoleBinding everywhere, through a RoleBinding only in its namespace; a Role
/// only where it is; a binding to someone else grants nothing.
#[test]
fn bindings_become_rules_as_the_api_server_reads_them() {
    let meta = |name: &str, ns: Option<&str>| match ns {
        Some(ns) => json!({"name": name, "namespace": ns}),
        None => json!({"name": name}),
    };
    let rule = |verb: &str, resource: &str| json!({"apiGroups": [""], "resources": [resource], "verbs": [verb]});
    let sa = json!({"kind": "ServiceAccount", "name": "ctl", "namespace": "ops"});
    let other = json!({"kind": "ServiceAccount", "name": "ctl", "namespace": "elsewhere"});
    let binding = |kind: &str, name: &str, ns: Option<&str>, role_kind: &str, subject: &Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta(name, ns),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
               "subjects": [subject]})
    };
    let objects = vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": meta("everywhere", None), "rules": [rule("list", "pods")]}),
        binding("ClusterRoleBinding", "everywhere", None, "ClusterRole", &sa),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": meta("in-ml", None), "rules": [rule("patch", "configmaps")]}),
        binding("RoleBinding", "in-ml", Some("ml"), "ClusterRole", &sa),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": meta("own", Some("ops")), "rules": [rule("get", "secrets")]}),
        binding("RoleBinding", "own", Some("ops"), "Role", &sa),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": meta("not-mine", None), "rules": [rule("delete", "pods")]}),
        binding(
            "ClusterRoleBinding",
            "not-mine",
            None,
            "ClusterRole",
            &other,
        ),
    ];
    let rules = rbac_support::rules_for(&objects, "ops", "ctl");
    assert_eq!(
        rules,
        [
            Rule::allow(["list"], "", ["pods"]),
            Rule::allow(["patch"], "", ["configmaps"]).in_namespace("ml"),
            Rule::allow(["get"], "", ["secrets"]).in_namespace("ops"),
        ]
    );
}
