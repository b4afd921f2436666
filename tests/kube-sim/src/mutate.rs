//! The PATCH pipeline for workloads, in the apiserver's order: options validation, patch,
//! server-owned fields restored, resourceVersion precondition, validation, no-op detection,
//! generation bump, field ownership, then store (or not, for `dryRun=All`).

use serde_json::{Value, json};

use crate::managed::ManagedFields;
use crate::patch::{self, PatchType};
use crate::resource::ResourceKind;
use crate::status::{ApiError, FieldError};
use crate::store::{self, Store};
use crate::validate;

/// One PATCH request against a workload.
#[derive(Debug, Clone)]
pub struct PatchRequest<'a> {
    pub kind: ResourceKind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub patch_type: PatchType,
    pub body: &'a [u8],
    pub dry_run: Vec<String>,
    pub field_manager: Option<String>,
    /// `Some` when the `force` query parameter was present.
    pub force: Option<bool>,
    pub user_agent: Option<&'a str>,
}

fn options_error(errs: &[FieldError]) -> ApiError {
    ApiError::invalid("meta.k8s.io", "PatchOptions", "", errs)
}

/// `prefixFromUserAgent`: the default manager of non-apply writes.
fn manager_from_user_agent(ua: Option<&str>) -> String {
    let ua = ua.unwrap_or("unknown");
    let prefix = ua.split('/').next().unwrap_or(ua);
    prefix.chars().take(128).collect()
}

fn validate_options(req: &PatchRequest) -> Result<(), ApiError> {
    let mut errs = vec![];
    if req.patch_type != PatchType::Apply {
        if req.force.is_some() {
            errs.push(FieldError::forbidden(
                "force",
                "may not be specified for non-apply patch",
            ));
        }
    } else if req.field_manager.as_deref().unwrap_or("").is_empty() {
        errs.push(FieldError::required(
            "fieldManager",
            "is required for apply patch",
        ));
    }
    if let Some(m) = &req.field_manager
        && m.len() > 128
    {
        errs.push(FieldError::too_long("fieldManager", 128));
    }
    for d in &req.dry_run {
        if d != "All" {
            errs.push(FieldError {
                cause_type: "FieldValueNotSupported".into(),
                field: "dryRun".into(),
                body: format!(
                    "Unsupported value: {:?}: supported values: \"All\"",
                    req.dry_run
                ),
            });
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(options_error(&errs))
    }
}

/// Fields the server owns: a patch can neither set nor remove them.
fn restore_server_fields(current: &Value, patched: &mut Value) {
    for k in ["apiVersion", "kind", "status"] {
        match current.get(k) {
            Some(v) => patched[k] = v.clone(),
            // Kinds without a status (ServiceAccount, RBAC) keep none.
            None => {
                if let Some(m) = patched.as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    for k in [
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
        "selfLink",
    ] {
        match current["metadata"].get(k) {
            Some(v) => patched["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = patched["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
}

fn check_identity(req: &PatchRequest, obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if name != req.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            req.name
        )));
    }
    if let Some(ns) = obj["metadata"]["namespace"].as_str()
        && ns != req.namespace
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object does not match the namespace sent on the request ({ns} != {})",
            req.namespace
        )));
    }
    Ok(())
}

fn without_managed(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

/// The answer to a PATCH.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOutcome {
    pub object: Value,
    /// A server-side apply created the object (answered with 201).
    pub created: bool,
}

/// Runs a PATCH; returns the object as the apiserver would answer it.
pub fn patch(store: &mut Store, req: &PatchRequest) -> Result<PatchOutcome, ApiError> {
    let (object, created) = patch_object(store, req)?;
    Ok(PatchOutcome { object, created })
}

fn patch_object(store: &mut Store, req: &PatchRequest) -> Result<(Value, bool), ApiError> {
    validate_options(req)?;
    let dry_run = !req.dry_run.is_empty();
    let now = store::now();
    let api_version = req.kind.api_version();
    let current = store.get(req.kind, req.namespace, req.name).cloned();

    let apply_config = match req.patch_type {
        PatchType::Apply => {
            let config = patch::parse_object(req.body)?;
            check_apply_config(req, &config)?;
            if current.is_none() {
                return Ok((create_by_apply(store, req, config, dry_run)?, true));
            }
            Some(config)
        }
        _ => None,
    };
    let Some(current) = current else {
        return Err(ApiError::not_found(req.kind, req.name));
    };
    let mut managed = current.managed.clone();
    let mut patched = match req.patch_type {
        PatchType::Merge => patch::merge_patch(&current.value, &patch::parse_object(req.body)?),
        PatchType::Strategic => {
            patch::strategic_merge(&current.value, &patch::parse_object(req.body)?)?
        }
        PatchType::Json => patch::json_patch(&current.value, req.body)?,
        PatchType::Apply => {
            let config = apply_config.as_ref().expect("parsed above");
            let mut applied = managed.apply(
                req.field_manager.as_deref().unwrap_or_default(),
                api_version,
                &now,
                &current.value,
                config,
                req.force.unwrap_or(false),
            )?;
            // An apply configuration may carry a resourceVersion precondition too.
            if let Some(rv) = config["metadata"]["resourceVersion"].as_str() {
                applied["metadata"]["resourceVersion"] = json!(rv);
            }
            applied
        }
    };
    if !patched.is_object() || !patched["metadata"].is_object() {
        return Err(ApiError::bad_request(
            "the patched object is not a valid object: missing metadata",
        ));
    }
    check_identity(req, &patched)?;
    let current_rv = current.value["metadata"]["resourceVersion"].clone();
    match &patched["metadata"]["resourceVersion"] {
        Value::String(rv) if !rv.is_empty() && Value::String(rv.clone()) != current_rv => {
            return Err(ApiError::conflict(req.kind, req.name));
        }
        Value::String(_) | Value::Null => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "metadata.resourceVersion must be a string, got {other}"
            )));
        }
    }
    restore_server_fields(&current.value, &mut patched);
    patched["metadata"]["resourceVersion"] = current_rv;
    validate::validate_workload(
        req.kind,
        req.namespace,
        req.name,
        Some(&current.value),
        &patched,
        &store.validation,
    )?;

    if req.patch_type != PatchType::Apply {
        let manager = req
            .field_manager
            .clone()
            .unwrap_or_else(|| manager_from_user_agent(req.user_agent));
        managed.record_update(&manager, api_version, &now, &current.value, &patched);
    }
    let unchanged = without_managed(&patched) == without_managed(&current.value);
    if unchanged && (dry_run || fields_equal(&managed, &current.managed)) {
        return Ok((current.value, false));
    }
    // ConfigMaps, Secrets, Events and Leases have no generation.
    let spec_changed = !matches!(req.kind, ResourceKind::ConfigMap | ResourceKind::Secret)
        && !req.kind.is_client_record()
        && patched["spec"] != current.value["spec"];
    if spec_changed {
        let generation = current.value["metadata"]["generation"]
            .as_i64()
            .unwrap_or(1);
        patched["metadata"]["generation"] = json!(generation + 1);
    }
    if req.kind.is_workload() {
        let ready = patched["status"]["readyReplicas"].as_u64().unwrap_or(0);
        crate::objects::refresh_workload_status(&mut patched, ready, &now);
    }
    if dry_run {
        if !managed.entries.is_empty() {
            patched["metadata"]["managedFields"] = managed.to_json();
        }
        return Ok((patched, false));
    }
    let template_changed = patched["spec"]["template"] != current.value["spec"]["template"];
    let stored = store.commit(req.kind, req.namespace, req.name, patched, managed);
    if req.kind.is_plain_object() || req.kind.is_client_record() {
        // No pods are run for these.
    } else if template_changed && store.rollout_on_template_change {
        store.rollout(req.kind, req.namespace, req.name);
    } else if stored["spec"]["replicas"] != current.value["spec"]["replicas"] {
        store.scale_pods(req.kind, req.namespace, req.name);
    }
    Ok((stored, false))
}

fn fields_equal(a: &ManagedFields, b: &ManagedFields) -> bool {
    a.entries.len() == b.entries.len()
        && a.entries.iter().zip(&b.entries).all(|(x, y)| {
            x.manager == y.manager && x.operation == y.operation && x.fields == y.fields
        })
}

fn check_apply_config(req: &PatchRequest, config: &Value) -> Result<(), ApiError> {
    let api_version = config["apiVersion"].as_str().unwrap_or_default();
    let kind = config["kind"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            String::from_utf8_lossy(req.body)
        )));
    }
    if api_version != req.kind.api_version() || kind != req.kind.kind() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            req.kind.api_version()
        )));
    }
    check_identity(req, config)
}

/// Server-side apply of an object that does not exist yet creates it.
fn create_by_apply(
    store: &mut Store,
    req: &PatchRequest,
    config: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let mut obj = config.clone();
    if req.kind.namespaced() {
        if !store.namespace_exists(req.namespace) {
            return Err(ApiError::not_found(ResourceKind::Namespace, req.namespace));
        }
        obj["metadata"]["namespace"] = json!(req.namespace);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            m.remove(k);
        }
    }
    if req.kind == ResourceKind::Namespace {
        obj["status"] = json!({"phase": "Active"});
    } else if !req.kind.is_install_object() || req.kind == ResourceKind::Service {
        obj["status"] = json!({});
    }
    validate::validate_workload(
        req.kind,
        req.namespace,
        req.name,
        None,
        &obj,
        &store.validation,
    )?;
    let now = store::now();
    let manager = req.field_manager.clone().unwrap_or_default();
    let mut managed = ManagedFields::default();
    let obj = managed.apply(&manager, req.kind.api_version(), &now, &obj, &config, true)?;
    if dry_run {
        let mut preview = obj;
        preview["metadata"]["generation"] = json!(1);
        preview["metadata"]["creationTimestamp"] = json!(now);
        preview["metadata"]["managedFields"] = managed.to_json();
        return Ok(preview);
    }
    let created = store.create_managed(req.kind, obj, Some(managed));
    if req.kind.is_workload() {
        store.spawn_pods(req.kind, req.namespace, req.name);
    }
    Ok(store
        .get(req.kind, req.namespace, req.name)
        .map(|s| s.value.clone())
        .unwrap_or(created))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::{Seed, WorkloadSeed};
    use chrono::Utc;

    fn store() -> Store {
        let seed = Seed {
            workloads: vec![
                WorkloadSeed::deployment("ml", "trainer")
                    .template_annotation("modekeeper/knob.grad_accum_steps", "4"),
            ],
            ..Seed::default()
        };
        Store::from_seed(&seed, Utc::now()).unwrap()
    }

    fn req<'a>(pt: PatchType, body: &'a [u8]) -> PatchRequest<'a> {
        PatchRequest {
            kind: ResourceKind::Deployment,
            namespace: "ml",
            name: "trainer",
            patch_type: pt,
            body,
            dry_run: vec![],
            field_manager: None,
            force: None,
            user_agent: Some("kubectl/v1.32.4 (linux/amd64) kubernetes/abc"),
        }
    }

    fn run(s: &mut Store, r: &PatchRequest) -> Result<Value, ApiError> {
        patch(s, r).map(|o| o.object)
    }

    fn get(s: &Store) -> Value {
        s.get(ResourceKind::Deployment, "ml", "trainer")
            .unwrap()
            .value
            .clone()
    }

    const KNOB: &[u8] = br#"{"spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.grad_accum_steps":"8"}}}}}"#;

    #[test]
    fn merge_patch_bumps_rv_and_generation() {
        let mut s = store();
        let before = get(&s);
        let out = run(&mut s, &req(PatchType::Merge, KNOB)).unwrap();
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.grad_accum_steps"],
            "8"
        );
        let rv = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert!(rv(&out) > rv(&before));
        assert_eq!(out["metadata"]["generation"], 2);
        assert_eq!(out["status"]["observedGeneration"], 2);
        assert_eq!(get(&s), out);
        assert_eq!(out["metadata"]["uid"], before["metadata"]["uid"]);
        let managers: Vec<&str> = out["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["kube-sim-seed", "kubectl"]);
    }

    #[test]
    fn metadata_only_change_keeps_generation() {
        let mut s = store();
        let out = run(
            &mut s,
            &req(
                PatchType::Strategic,
                br#"{"metadata":{"annotations":{"x":"1"}}}"#,
            ),
        )
        .unwrap();
        assert_eq!(out["metadata"]["generation"], 1);
        assert_eq!(out["metadata"]["annotations"]["x"], "1");
    }

    #[test]
    fn no_op_patch_returns_the_same_object() {
        let mut s = store();
        let before = get(&s);
        let body = br#"{"spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.grad_accum_steps":"4"}}}}}"#;
        let out = run(&mut s, &req(PatchType::Merge, body)).unwrap();
        assert_eq!(out, before);
        assert_eq!(
            s.resource_version(),
            before["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                .max(s.resource_version())
        );
        assert_eq!(get(&s), before);
    }

    #[test]
    fn dry_run_does_not_store() {
        let mut s = store();
        let before = get(&s);
        let rv = s.resource_version();
        let mut r = req(PatchType::Merge, KNOB);
        r.dry_run = vec!["All".into()];
        let out = run(&mut s, &r).unwrap();
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.grad_accum_steps"],
            "8"
        );
        assert_eq!(
            out["metadata"]["resourceVersion"],
            before["metadata"]["resourceVersion"]
        );
        assert_eq!(get(&s), before);
        assert_eq!(s.resource_version(), rv);
        r.dry_run = vec!["Some".into()];
        assert_eq!(run(&mut s, &r).unwrap_err().code, 422);
    }

    #[test]
    fn stale_resource_version_conflicts() {
        let mut s = store();
        let body = br#"{"metadata":{"resourceVersion":"1"},"spec":{"replicas":2}}"#;
        let e = run(&mut s, &req(PatchType::Merge, body)).unwrap_err();
        assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            e.message,
            "Operation cannot be fulfilled on deployments.apps \"trainer\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let rv = get(&s)["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let ok = format!(r#"{{"metadata":{{"resourceVersion":"{rv}"}},"spec":{{"replicas":2}}}}"#);
        let out = run(&mut s, &req(PatchType::Merge, ok.as_bytes())).unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(
            s.workload_pods(ResourceKind::Deployment, "ml", "trainer")
                .len(),
            2,
            "scaled up"
        );
        let down = run(
            &mut s,
            &req(PatchType::Merge, br#"{"spec":{"replicas":0}}"#),
        )
        .unwrap();
        assert_eq!(down["spec"]["replicas"], 0);
        assert!(
            s.workload_pods(ResourceKind::Deployment, "ml", "trainer")
                .is_empty(),
            "scaled down"
        );
        let d = get(&s);
        assert!(
            d["status"].get("readyReplicas").is_none(),
            "{}",
            d["status"]
        );
    }

    #[test]
    fn server_fields_cannot_be_patched() {
        let mut s = store();
        let before = get(&s);
        let out = run(
            &mut s,
            &req(
                PatchType::Merge,
                br#"{"metadata":{"uid":"x","generation":9},"status":{"replicas":7}}"#,
            ),
        )
        .unwrap();
        assert_eq!(out["metadata"]["uid"], before["metadata"]["uid"]);
        assert_eq!(out["status"], before["status"]);
        let e = run(
            &mut s,
            &req(PatchType::Merge, br#"{"metadata":{"name":"other"}}"#),
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn missing_object_is_404_and_force_needs_apply() {
        let mut s = store();
        let mut r = req(PatchType::Merge, KNOB);
        r.name = "nope";
        let e = run(&mut s, &r).unwrap_err();
        assert_eq!(e.message, "deployments.apps \"nope\" not found");
        let mut r = req(PatchType::Merge, KNOB);
        r.force = Some(false);
        let e = run(&mut s, &r).unwrap_err();
        assert_eq!(
            e.message,
            "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
        );
    }

    #[test]
    fn invalid_patch_is_422_and_not_stored() {
        let mut s = store();
        let before = get(&s);
        let e = run(&mut s, &req(PatchType::Merge, br#"{"spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.grad_accum_steps":8}}}}}"#)).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(get(&s), before);
    }

    #[test]
    fn server_side_apply_conflicts_and_force() {
        let mut s = store();
        let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"trainer"},
            "spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.grad_accum_steps":"8"}}}}}"#;
        let mut r = req(PatchType::Apply, body);
        let e = run(&mut s, &r).unwrap_err();
        assert_eq!(
            e.message,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
        );
        r.field_manager = Some("modekeeper".into());
        let e = run(&mut s, &r).unwrap_err();
        assert_eq!(e.code, 409);
        assert_eq!(
            e.message,
            "Apply failed with 1 conflict: conflict with \"kube-sim-seed\" using apps/v1: .spec.template.metadata.annotations.modekeeper/knob.grad_accum_steps"
        );
        r.force = Some(true);
        let out = run(&mut s, &r).unwrap();
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.grad_accum_steps"],
            "8"
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["name"], "trainer",
            "rest kept"
        );
        // The applier now owns it: a second apply without force with a new value succeeds.
        let body2 = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"trainer"},
            "spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.grad_accum_steps":"16"}}}}}"#;
        let mut r2 = req(PatchType::Apply, body2);
        r2.field_manager = Some("modekeeper".into());
        let out = run(&mut s, &r2).unwrap();
        assert_eq!(
            out["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.grad_accum_steps"],
            "16"
        );
        // Another applier setting the same value shares ownership; a different value conflicts.
        r2.field_manager = Some("someone-else".into());
        run(&mut s, &r2).unwrap();
        let body3 = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"trainer"},
            "spec":{"template":{"metadata":{"annotations":{"modekeeper/knob.grad_accum_steps":"32"}}}}}"#;
        let mut r3 = req(PatchType::Apply, body3);
        r3.field_manager = Some("third".into());
        let e = run(&mut s, &r3).unwrap_err();
        assert_eq!(
            e.message,
            "Apply failed with 2 conflicts: conflicts with \"modekeeper\":\n- .spec.template.metadata.annotations.modekeeper/knob.grad_accum_steps\nconflicts with \"someone-else\":\n- .spec.template.metadata.annotations.modekeeper/knob.grad_accum_steps"
        );
    }

    #[test]
    fn apply_creates_missing_objects() {
        let mut s = store();
        let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"new"},
            "spec":{"replicas":1,"selector":{"matchLabels":{"app":"new"}},"template":{"metadata":{"labels":{"app":"new"}},
            "spec":{"containers":[{"name":"c","image":"i"}]}}}}"#;
        let mut r = req(PatchType::Apply, body);
        r.name = "new";
        r.field_manager = Some("mk".into());
        let outcome = patch(&mut s, &r).unwrap();
        assert!(outcome.created);
        let out = outcome.object;
        assert_eq!(out["metadata"]["generation"], 1);
        assert_eq!(
            s.workload_pods(ResourceKind::Deployment, "ml", "new").len(),
            1
        );
        r.namespace = "ghost";
        assert_eq!(
            run(&mut s, &r).unwrap_err().message,
            "namespaces \"ghost\" not found"
        );
    }

    #[test]
    fn apply_creates_cluster_scoped_and_status_less_objects_and_reapplying_changes_nothing() {
        let mut s = store();
        let body = br#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"mk"},"rules":[{"apiGroups":[""],"resources":["pods"],"verbs":["get"]}]}"#;
        let r = PatchRequest {
            kind: ResourceKind::ClusterRole,
            namespace: "",
            name: "mk",
            field_manager: Some("mk".into()),
            ..req(PatchType::Apply, body)
        };
        let created = patch(&mut s, &r).unwrap();
        assert!(created.created);
        let obj = created.object;
        assert!(obj["metadata"].get("namespace").is_none(), "{obj}");
        assert!(obj.get("status").is_none(), "{obj}");
        let rv = s.resource_version();
        let again = patch(&mut s, &r).unwrap();
        assert!(!again.created);
        assert_eq!(
            s.resource_version(),
            rv,
            "re-applying the same object stores nothing"
        );

        // A namespace is created by apply too (no namespace needs to exist for it).
        let body = br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ops"}}"#;
        let r = PatchRequest {
            kind: ResourceKind::Namespace,
            namespace: "ops",
            name: "ops",
            field_manager: Some("mk".into()),
            ..req(PatchType::Apply, body)
        };
        let ns = run(&mut s, &r).unwrap();
        assert_eq!(ns["status"]["phase"], "Active");
        assert!(s.namespace_exists("ops"));
        assert!(s.list(ResourceKind::Pod, Some("ops")).is_empty());
    }
}
