//! The HTTP server: accept loop, per-request pipeline (request log, faults, authentication,
//! authorization) and routing to the resource handlers.

mod apps;
mod authz;
mod control;
mod core;
mod discovery;
mod list;
mod logs;
mod openapi;
mod records;
mod table;
mod watch;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::auth::{self, User};
use crate::request_info::{RequestInfo, request_info};
use crate::resource::ResourceKind;
use crate::state::{RequestRecord, Shared, lock};
use crate::status::ApiError;

const MAX_BODY: usize = 16 * 1024 * 1024;

/// Serves connections until the future is dropped; dropping it also ends every connection.
/// Each connection may speak plain HTTP or TLS (told apart by its first byte) when `tls` is set.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                conns.spawn(connection(stream, shared.clone(), tls.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let mut first = [0u8; 1];
    let is_tls =
        matches!(stream.peek(&mut first).await, Ok(1) if first[0] == crate::tls::TLS_HANDSHAKE);
    match tls {
        Some(acceptor) if is_tls => {
            if let Ok(tls_stream) = acceptor.accept(stream).await {
                let _ = builder
                    .serve_connection(TokioIo::new(tls_stream), svc)
                    .await;
            }
        }
        _ => {
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        }
    }
}

/// What a handler gets to work with.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub info: RequestInfo,
    pub user: User,
    pub rules: Vec<auth::Rule>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub drop_log_after: Option<u64>,
}

impl Ctx {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn params(&self, key: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(shared: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("reading request body: {e}")).into_response();
        }
    };
    if path.starts_with(control::PREFIX) {
        return control::handle(&shared, &method, &path, &body);
    }
    let id = shared
        .next_request_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    lock(&shared.requests).push(RequestRecord {
        id,
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        content_type: header_string(&parts.headers, header::CONTENT_TYPE),
        accept: header_string(&parts.headers, header::ACCEPT),
        user_agent: header_string(&parts.headers, header::USER_AGENT),
        user: None,
        status: 0,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let plan = lock(&shared.faults).plan(&method, &path);
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    if plan.hang {
        std::future::pending::<()>().await;
    }
    let response = match plan.error {
        Some(e) => e.into_response(),
        None => {
            let (response, user) = authenticated(
                &shared,
                &method,
                &path,
                &query,
                parts.headers,
                body,
                plan.drop_log_after,
            )
            .await;
            if let Some(user) = user {
                shared.update_request(id, |r| r.user = Some(user));
            }
            response
        }
    };
    let status = response.status().as_u16();
    shared.update_request(id, |r| r.status = status);
    if !plan.delay_after.is_zero() {
        tokio::time::sleep(plan.delay_after).await;
    }
    response
}

async fn authenticated(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    query: &str,
    headers: HeaderMap,
    body: bytes::Bytes,
    drop_log_after: Option<u64>,
) -> (Response<Body>, Option<String>) {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let authenticated = shared
        .auth
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .authenticate(authz);
    let (user, rules) = match authenticated {
        Ok(ok) => ok,
        Err(e) => return (e.into_response(), None),
    };
    let (user, rules) = match impersonated(shared, &headers, user, rules) {
        Ok(ok) => ok,
        Err((e, caller)) => return (e.into_response(), Some(caller)),
    };
    let info = request_info(method, path, query);
    if let Err(e) = auth::authorize(&user, &rules, &info) {
        return (e.into_response(), Some(user.name));
    }
    let name = user.name.clone();
    let ctx = Ctx {
        shared: shared.clone(),
        info,
        user,
        rules,
        query: form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        headers,
        body,
        drop_log_after,
    };
    let response = match route(&ctx).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    (response, Some(name))
}

/// `Impersonate-User` (and `Impersonate-Group`) headers: the request runs as that user, if the
/// caller may impersonate it; without them, as the caller.
fn impersonated(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    user: auth::User,
    rules: Vec<auth::Rule>,
) -> Result<(auth::User, Vec<auth::Rule>), (ApiError, String)> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let groups = values("impersonate-group");
    let Some(as_user) = values("impersonate-user").into_iter().next() else {
        if groups.is_empty() {
            return Ok((user, rules));
        }
        // The apiserver answers a group without a user with an internal error too.
        return Err((
            ApiError::internal("requested impersonation of groups without impersonating a user"),
            user.name,
        ));
    };
    shared
        .auth
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .impersonate(&user, &rules, &as_user, &groups)
        .map_err(|e| (e, user.name.clone()))
}

async fn route(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let info = &ctx.info;
    if !info.is_resource_request {
        return discovery::non_resource(ctx);
    }
    let known_version = matches!(
        (info.api_group.as_str(), info.api_version.as_str()),
        ("", "v1")
            | ("apps", "v1")
            | ("authorization.k8s.io", "v1")
            | ("authentication.k8s.io", "v1")
            | ("batch", "v1")
            | ("events.k8s.io", "v1")
            | ("coordination.k8s.io", "v1")
            | ("rbac.authorization.k8s.io", "v1")
    ) || (!ctx.shared.crds_absent
        && matches!(
            (info.api_group.as_str(), info.api_version.as_str()),
            ("kubeflow.org", "v1") | ("jobset.x-k8s.io", "v1alpha2")
        ));
    if !known_version {
        return Err(ApiError::path_not_found());
    }
    match (info.api_group.as_str(), info.resource.as_str()) {
        ("", "namespaces") if info.namespace == info.name || info.name.is_empty() => {
            core::namespaces(ctx)
        }
        ("", "pods") => core::pods(ctx).await,
        // ConfigMaps and Secrets are created (POST) and replaced (PUT) by clients like Leases;
        // reads and PATCH take the workloads' path.
        ("", "configmaps" | "secrets") if matches!(info.verb.as_str(), "create" | "update") => {
            let kind = ResourceKind::from_plural("", &info.resource)
                .ok_or_else(ApiError::path_not_found)?;
            records::records(ctx, kind, records::View::Stored)
        }
        ("apps", "deployments" | "statefulsets")
        | ("", "configmaps" | "secrets")
        | ("batch", "jobs")
        | ("kubeflow.org", "pytorchjobs")
        | ("jobset.x-k8s.io", "jobsets")
        | ("", "serviceaccounts" | "services")
        | (
            "rbac.authorization.k8s.io",
            "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings",
        ) => apps::workloads(ctx),
        ("", "events") => records::records(ctx, ResourceKind::Event, records::View::Stored),
        ("events.k8s.io", "events") => {
            records::records(ctx, ResourceKind::Event, records::View::EventsV1)
        }
        ("coordination.k8s.io", "leases") => {
            records::records(ctx, ResourceKind::Lease, records::View::Stored)
        }
        ("authorization.k8s.io" | "authentication.k8s.io", _) => authz::reviews(ctx),
        _ => Err(ApiError::path_not_found()),
    }
}

/// A JSON response with `application/json`.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    json_response_typed(status, value, "application/json")
}

pub(crate) fn json_response_typed(
    status: StatusCode,
    value: &Value,
    content_type: &str,
) -> Response<Body> {
    let mut resp = Response::new(Body::from(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    resp
}

/// What the client accepts: JSON (possibly as a Table) or an error for protobuf-only clients.
pub(crate) struct Accept {
    pub table: bool,
}

pub(crate) fn negotiate(ctx: &Ctx) -> Result<Accept, ApiError> {
    let accept = ctx.header(header::ACCEPT).unwrap_or("");
    if accept.is_empty() {
        return Ok(Accept { table: false });
    }
    let mut json_ok = false;
    let mut table = false;
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("");
        let params: Vec<&str> = parts.collect();
        if !(mime == "application/json" || mime == "*/*" || mime == "application/*") {
            continue;
        }
        if params.iter().any(|p| p.replace(' ', "") == "as=Table") {
            table = true;
            json_ok = true;
            break;
        }
        if params.iter().any(|p| p.starts_with("as=")) {
            continue;
        }
        json_ok = true;
        break;
    }
    if !json_ok {
        return Err(ApiError::for_code(
            406,
            "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io",
        ));
    }
    Ok(Accept { table })
}
