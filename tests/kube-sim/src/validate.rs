//! Validation of patched workloads, with the apiserver's field error texts where it has them.
//!
//! Checks: annotation keys are qualified names, annotation values are strings (configurable; the
//! real apiserver fails those at decoding, the emulator reports them as 422 so tests can
//! exercise the Invalid path), annotations stay under 256 KiB, label values are valid,
//! `spec.replicas` is a non-negative integer, the selector is immutable and matches the
//! template labels, and a test hook that rejects patches of chosen objects.

use serde_json::Value;

use crate::resource::ResourceKind;
use crate::seed::ValidationConfig;
use crate::status::{ApiError, FieldError};

const NAME_RE: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const DNS1123_SUBDOMAIN_RE: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const LABEL_VALUE_RE: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// `validation.IsQualifiedName`: the problems with `key`, empty if valid.
pub fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errs = vec![];
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".into());
        } else if !is_dns1123_subdomain(p) {
            errs.push(format!(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_SUBDOMAIN_RE}')"
            ));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    if !name.is_empty() && !is_name_part(name) {
        errs.push(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{NAME_RE}')"
        ));
    }
    errs
}

fn check_annotations(
    field: &str,
    annotations: &Value,
    cfg: &ValidationConfig,
    errs: &mut Vec<FieldError>,
) {
    let Some(map) = annotations.as_object() else {
        if !annotations.is_null() {
            errs.push(FieldError::invalid(
                field,
                annotations,
                "must be a map of string keys to string values",
            ));
        }
        return;
    };
    let mut total = 0;
    for (key, value) in map {
        for e in qualified_name_errors(&key.to_ascii_lowercase()) {
            errs.push(FieldError::invalid(field, &Value::String(key.clone()), &e));
        }
        match value {
            Value::String(s) => total += key.len() + s.len(),
            other if cfg.annotation_values_must_be_strings => errs.push(FieldError::invalid(
                format!("{field}[{key}]"),
                other,
                "annotation values must be strings",
            )),
            other => total += key.len() + other.to_string().len(),
        }
    }
    if total > MAX_ANNOTATIONS_BYTES {
        errs.push(FieldError::too_long(field, MAX_ANNOTATIONS_BYTES));
    }
}

fn check_labels(field: &str, labels: &Value, errs: &mut Vec<FieldError>) {
    let Some(map) = labels.as_object() else {
        if !labels.is_null() {
            errs.push(FieldError::invalid(
                field,
                labels,
                "must be a map of string keys to string values",
            ));
        }
        return;
    };
    for (key, value) in map {
        for e in qualified_name_errors(key) {
            errs.push(FieldError::invalid(field, &Value::String(key.clone()), &e));
        }
        let ok = value
            .as_str()
            .is_some_and(|s| s.is_empty() || (s.len() <= 63 && is_name_part(s)));
        if !ok {
            errs.push(FieldError::invalid(
                field,
                value,
                &format!("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '{LABEL_VALUE_RE}')"),
            ));
        }
    }
}

/// Validates `new` (the result of a patch of `old`, if it existed); `Err` is the 422 Status.
/// The pod templates of a Job, PyTorchJob or JobSet, with their field paths.
pub fn pod_templates(kind: ResourceKind, obj: &Value) -> Vec<(String, &Value)> {
    match kind {
        ResourceKind::Job => vec![("spec.template".into(), &obj["spec"]["template"])],
        ResourceKind::PyTorchJob => obj["spec"]["pytorchReplicaSpecs"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(role, r)| {
                        (
                            format!("spec.pytorchReplicaSpecs[{role}].template"),
                            &r["template"],
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ResourceKind::JobSet => obj["spec"]["replicatedJobs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, r)| {
                        (
                            format!("spec.replicatedJobs[{i}].template.spec.template"),
                            &r["template"]["spec"]["template"],
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![],
    }
}

/// The most data a ConfigMap or Secret holds (1 MiB, the apiserver's `MaxSecretSize`).
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

/// ConfigMaps and Secrets (string data, base64 for Secrets, 1 MiB in all, `immutable`), Jobs (`spec.template` immutable, as the apiserver's
/// `ValidateJobUpdate` says), JobSets (replicated job templates change only while suspended, as
/// the JobSet webhook says) and PyTorchJobs (templates mutable).
fn check_plain_object(
    kind: ResourceKind,
    old: Option<&Value>,
    new: &Value,
    cfg: &ValidationConfig,
    errs: &mut Vec<FieldError>,
) {
    if matches!(kind, ResourceKind::ConfigMap | ResourceKind::Secret) {
        let mut total = 0usize;
        if let Some(m) = new["data"].as_object() {
            for (k, v) in m {
                // A Secret's values travel base64-encoded; what counts (and is limited) is the
                // decoded size, as the apiserver decodes them into bytes.
                let size = match (kind, v.as_str()) {
                    (ResourceKind::Secret, Some(text)) => {
                        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
                            .map(|b| b.len())
                            .unwrap_or_else(|_| {
                                errs.push(FieldError::invalid(
                                    format!("data[{k}]"),
                                    v,
                                    "illegal base64 data",
                                ));
                                0
                            })
                    }
                    (_, Some(text)) => text.len(),
                    _ => 0,
                };
                total += k.len() + size;
                if !v.is_string() {
                    errs.push(FieldError::invalid(
                        format!("data[{k}]"),
                        v,
                        "must be a string",
                    ));
                }
            }
        } else if !new["data"].is_null() {
            errs.push(FieldError::invalid(
                "data",
                &new["data"],
                "must be a map of string keys to string values",
            ));
        }
        total += new["binaryData"].as_object().map_or(0, |m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        });
        // core/validation's MaxSecretSize, which bounds ConfigMaps too.
        if total > MAX_DATA_SIZE {
            errs.push(FieldError::too_long("", MAX_DATA_SIZE));
        }
        if let Some(old) = old
            && old["immutable"] == true
            && old["data"] != new["data"]
        {
            errs.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        return;
    }
    for (path, tpl) in pod_templates(kind, new) {
        check_annotations(
            &format!("{path}.metadata.annotations"),
            &tpl["metadata"]["annotations"],
            cfg,
            errs,
        );
    }
    let Some(old) = old else { return };
    match kind {
        ResourceKind::Job if old["spec"]["template"] != new["spec"]["template"] => {
            errs.push(FieldError::invalid(
                "spec.template",
                &new["spec"]["template"],
                "field is immutable",
            ));
        }
        ResourceKind::JobSet if new["spec"]["suspend"] != true => {
            let before = pod_templates(kind, old);
            for (path, tpl) in pod_templates(kind, new) {
                let was = before.iter().find(|(p, _)| *p == path).map(|(_, t)| *t);
                if was != Some(tpl) {
                    errs.push(FieldError::invalid(
                        path,
                        tpl,
                        "field is immutable while the JobSet is not suspended",
                    ));
                }
            }
        }
        _ => {}
    }
}

pub fn validate_workload(
    kind: ResourceKind,
    namespace: &str,
    name: &str,
    old: Option<&Value>,
    new: &Value,
    cfg: &ValidationConfig,
) -> Result<(), ApiError> {
    let mut errs = vec![];
    for r in &cfg.reject {
        if r.kind == kind && r.namespace == namespace && r.name == name {
            errs.push(FieldError::invalid(
                r.field.clone(),
                &new["metadata"]["annotations"],
                &r.message,
            ));
        }
    }
    check_annotations(
        "metadata.annotations",
        &new["metadata"]["annotations"],
        cfg,
        &mut errs,
    );
    check_labels("metadata.labels", &new["metadata"]["labels"], &mut errs);
    // A namespace has no template: metadata is all there is to check.
    if kind.is_plain_object() || kind.is_client_record() || kind == ResourceKind::Namespace {
        check_plain_object(kind, old, new, cfg, &mut errs);
        return ApiError::check(kind.group(), kind.kind(), name, &errs);
    }
    let tpl = &new["spec"]["template"];
    check_annotations(
        "spec.template.metadata.annotations",
        &tpl["metadata"]["annotations"],
        cfg,
        &mut errs,
    );
    check_labels(
        "spec.template.metadata.labels",
        &tpl["metadata"]["labels"],
        &mut errs,
    );

    match &new["spec"]["replicas"] {
        Value::Null => {}
        Value::Number(n) if n.as_i64().is_some_and(|v| v >= 0) => {}
        Value::Number(n) if n.as_i64().is_some() => errs.push(FieldError::invalid(
            "spec.replicas",
            &new["spec"]["replicas"],
            "must be greater than or equal to 0",
        )),
        other => errs.push(FieldError::invalid(
            "spec.replicas",
            other,
            "must be an integer",
        )),
    }
    if let Some(old) = old
        && old["spec"]["selector"] != new["spec"]["selector"]
    {
        errs.push(FieldError::invalid(
            "spec.selector",
            &new["spec"]["selector"],
            "field is immutable",
        ));
    }
    if let Some(want) = new["spec"]["selector"]["matchLabels"].as_object() {
        let have = &tpl["metadata"]["labels"];
        if want.iter().any(|(k, v)| have.get(k) != Some(v)) {
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                have,
                "`selector` does not match template `labels`",
            ));
        }
    }
    match tpl["spec"]["containers"].as_array() {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                if c["name"].as_str().is_none_or(str::is_empty) {
                    errs.push(FieldError::required(
                        format!("spec.template.spec.containers[{i}].name"),
                        "",
                    ));
                }
                if c["image"].as_str().is_none_or(str::is_empty) {
                    errs.push(FieldError::required(
                        format!("spec.template.spec.containers[{i}].image"),
                        "",
                    ));
                }
            }
        }
        _ => errs.push(FieldError::required("spec.template.spec.containers", "")),
    }
    ApiError::check(kind.group(), kind.kind(), name, &errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::workload;
    use crate::seed::{Rejection, WorkloadSeed};
    use serde_json::json;

    fn dep() -> Value {
        workload(
            &WorkloadSeed::deployment("ml", "trainer")
                .template_annotation("modekeeper/knob.a", "1"),
        )
    }

    fn check(new: &Value) -> Result<(), ApiError> {
        validate_workload(
            ResourceKind::Deployment,
            "ml",
            "trainer",
            Some(&dep()),
            new,
            &ValidationConfig::default(),
        )
    }

    #[test]
    fn valid_object_passes() {
        check(&dep()).unwrap();
    }

    #[test]
    fn non_string_annotation_value_is_invalid() {
        let mut d = dep();
        d["spec"]["template"]["metadata"]["annotations"]["modekeeper/knob.a"] = json!(4);
        let e = check(&d).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Deployment.apps \"trainer\" is invalid: spec.template.metadata.annotations[modekeeper/knob.a]: Invalid value: 4: annotation values must be strings"
        );
        let lax = ValidationConfig {
            annotation_values_must_be_strings: false,
            reject: vec![],
        };
        validate_workload(ResourceKind::Deployment, "ml", "trainer", None, &d, &lax).unwrap();
    }

    #[test]
    fn bad_annotation_key_uses_apiserver_text() {
        let mut d = dep();
        d["metadata"]["annotations"]["bad key!"] = json!("v");
        let e = check(&d).unwrap_err();
        assert!(e.message.starts_with(
            "Deployment.apps \"trainer\" is invalid: metadata.annotations: Invalid value: \"bad key!\": name part must consist of alphanumeric characters"
        ), "{}", e.message);
    }

    #[test]
    fn replicas_selector_and_containers() {
        let mut d = dep();
        d["spec"]["replicas"] = json!(-1);
        assert!(
            check(&d)
                .unwrap_err()
                .message
                .contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0")
        );
        let mut d = dep();
        d["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
        let msg = check(&d).unwrap_err().message;
        assert!(
            msg.contains("spec.selector: Invalid value") && msg.contains("field is immutable"),
            "{msg}"
        );
        assert!(
            msg.contains("`selector` does not match template `labels`"),
            "{msg}"
        );
        let mut d = dep();
        d["spec"]["template"]["spec"]["containers"] = json!([]);
        assert!(
            check(&d)
                .unwrap_err()
                .message
                .ends_with("spec.template.spec.containers: Required value")
        );
    }

    #[test]
    fn rejection_hook() {
        let cfg = ValidationConfig {
            annotation_values_must_be_strings: true,
            reject: vec![Rejection::new(ResourceKind::Deployment, "ml", "trainer")],
        };
        let e = validate_workload(
            ResourceKind::Deployment,
            "ml",
            "trainer",
            None,
            &dep(),
            &cfg,
        )
        .unwrap_err();
        assert!(
            e.message.contains("metadata.annotations: Invalid value")
                && e.message.ends_with("rejected by kube-sim test hook"),
            "{}",
            e.message
        );
        validate_workload(ResourceKind::Deployment, "ml", "other", None, &dep(), &cfg).unwrap();
    }

    #[test]
    fn qualified_names() {
        assert!(qualified_name_errors("modekeeper/knob.grad_accum_steps").is_empty());
        assert!(qualified_name_errors("simple").is_empty());
        assert_eq!(
            qualified_name_errors("/x"),
            ["prefix part must be non-empty"]
        );
        assert!(!qualified_name_errors("Bad_Prefix/x").is_empty());
        assert_eq!(
            qualified_name_errors(&"a".repeat(64)),
            ["name part must be no more than 63 characters"]
        );
    }
}
