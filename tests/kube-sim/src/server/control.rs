//! The emulator's own control API under `/kube-sim/v1/`, for scripts that run the binary and
//! cannot call the Rust handle: the request log, faults, container logs, restarts and rules.
//! Control requests skip authentication, faults and the request log. No real apiserver serves
//! these paths, so clients never reach them by accident.

use axum::body::Body;
use axum::http::{Response, StatusCode};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::json_response;
use crate::auth::Rule;
use crate::faults::{Fault, FaultId};
use crate::logs::LogLine;
use crate::resource::ResourceKind;
use crate::state::{Shared, lock};
use crate::status::ApiError;

pub(crate) const PREFIX: &str = "/kube-sim/v1/";

/// Which containers a log or restart request is about: one pod, or every pod of a workload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Target {
    namespace: String,
    #[serde(default)]
    pod: Option<String>,
    #[serde(default)]
    workload: Option<String>,
    #[serde(default)]
    kind: Option<ResourceKind>,
    #[serde(default = "default_container")]
    container: String,
    #[serde(default)]
    lines: Vec<String>,
}

fn default_container() -> String {
    "trainer".into()
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("kube-sim control: {e}")))
}

fn pods(shared: &Shared, t: &Target) -> Result<Vec<String>, ApiError> {
    let store = lock(&shared.store);
    match (&t.pod, &t.workload) {
        (Some(pod), None) => match store.get(ResourceKind::Pod, &t.namespace, pod) {
            Some(_) => Ok(vec![pod.clone()]),
            None => Err(ApiError::not_found(ResourceKind::Pod, pod)),
        },
        (None, Some(w)) => {
            let kind = t.kind.unwrap_or(ResourceKind::Deployment);
            if store.get(kind, &t.namespace, w).is_none() {
                return Err(ApiError::not_found(kind, w));
            }
            Ok(store.workload_pods(kind, &t.namespace, w))
        }
        _ => Err(ApiError::bad_request(
            "kube-sim control: give exactly one of \"pod\" and \"workload\"",
        )),
    }
}

fn ok(v: Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, &v))
}

pub(crate) fn handle(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Response<Body> {
    match route(shared, method, path.trim_start_matches(PREFIX), body) {
        Ok(r) => r,
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

fn route(
    shared: &Shared,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    match (method, path.trim_end_matches('/')) {
        ("GET", "requests") => {
            ok(serde_json::to_value(&*lock(&shared.requests)).unwrap_or_default())
        }
        ("DELETE", "requests") => {
            lock(&shared.requests).clear();
            ok(json!({}))
        }
        ("POST", "faults") => {
            let fault: Fault = parse(body)?;
            let id = lock(&shared.faults).add(fault);
            ok(json!({"id": id.0}))
        }
        ("DELETE", "faults") => {
            lock(&shared.faults).clear();
            ok(json!({}))
        }
        ("GET", p) if p.starts_with("faults/") => {
            let id = fault_id(p)?;
            match lock(&shared.faults).fired(id) {
                Some(n) => ok(json!({"id": id.0, "fired": n})),
                None => Err(ApiError::path_not_found()),
            }
        }
        ("DELETE", p) if p.starts_with("faults/") => {
            let id = fault_id(p)?;
            if lock(&shared.faults).remove(id) {
                ok(json!({}))
            } else {
                Err(ApiError::path_not_found())
            }
        }
        ("POST", "logs") => {
            let t: Target = parse(body)?;
            let pods = pods(shared, &t)?;
            let mut store = lock(&shared.store);
            for pod in &pods {
                let log = store.logs.entry(&t.namespace, pod, &t.container);
                for line in &t.lines {
                    log.append(LogLine {
                        ts: Utc::now(),
                        text: line.clone(),
                    });
                }
            }
            ok(json!({"pods": pods}))
        }
        ("POST", "logs/close") => {
            let t: Target = parse(body)?;
            let pods = pods(shared, &t)?;
            let mut store = lock(&shared.store);
            for pod in &pods {
                store.logs.entry(&t.namespace, pod, &t.container).close();
            }
            ok(json!({"pods": pods}))
        }
        ("POST", "restart") => {
            let t: Target = parse(body)?;
            let pods = pods(shared, &t)?;
            let mut store = lock(&shared.store);
            let counts: Vec<Value> = pods
                .iter()
                .map(|p| json!({"pod": p, "restartCount": store.restart_container(&t.namespace, p, &t.container)}))
                .collect();
            ok(json!({"restarts": counts}))
        }
        ("PUT", p) if p.starts_with("tokens/") && p.ends_with("/rules") => {
            let token = &p["tokens/".len()..p.len() - "/rules".len()];
            let rules: Vec<Rule> = parse(body)?;
            let mut auth = shared.auth.write().unwrap_or_else(|e| e.into_inner());
            match auth.token_mut(token) {
                Some(t) => {
                    t.rules = rules;
                    ok(json!({}))
                }
                None => Err(ApiError::path_not_found()),
            }
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn fault_id(path: &str) -> Result<FaultId, ApiError> {
    path["faults/".len()..]
        .parse::<u64>()
        .map(FaultId)
        .map_err(|_| ApiError::bad_request("kube-sim control: fault ids are numbers"))
}
