//! Kubernetes `Status` error bodies, built the way the apiserver builds them
//! (`k8s.io/apimachinery/pkg/api/errors`): same reasons, codes, messages and `details`.
//!
//! Every error the emulator returns goes through [`ApiError`]; handlers never write ad-hoc bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::resource::ResourceKind;

/// One `details.causes[]` entry of a Status.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusCause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// A field validation error, rendered like `field.Error` (`<field>: <ErrorBody>`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueTooLong`, `FieldValueForbidden`, ...
    pub cause_type: String,
    pub field: String,
    /// The error body without the field, e.g. `Invalid value: 1: must be a string`.
    pub body: String,
}

impl FieldError {
    /// `Invalid value: <value>: <detail>` (strings are quoted like Go's `%q`).
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        FieldError {
            cause_type: "FieldValueInvalid".into(),
            field: field.into(),
            body: format!("Invalid value: {shown}: {detail}"),
        }
    }

    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let body = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        FieldError {
            cause_type: "FieldValueRequired".into(),
            field: field.into(),
            body,
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError {
            cause_type: "FieldValueForbidden".into(),
            field: field.into(),
            body: format!("Forbidden: {detail}"),
        }
    }

    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            cause_type: "FieldValueTooLong".into(),
            field: field.into(),
            body: format!("Too long: must have at most {max} bytes"),
        }
    }

    fn rendered(&self) -> String {
        format!("{}: {}", self.field, self.body)
    }
}

/// An error answered as a Kubernetes `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    /// `details`; `None` leaves the key out (as for Unauthorized and BadRequest).
    pub details: Option<Box<Details>>,
    /// Sent as a `Retry-After` header and `details.retryAfterSeconds`.
    pub retry_after: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Details {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub causes: Vec<StatusCause>,
}

fn boxed(d: Details) -> Option<Box<Details>> {
    Some(Box::new(d))
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &str, message: String, details: Option<Box<Details>>) -> Self {
        ApiError {
            code,
            reason: reason.into(),
            message,
            details,
            retry_after: None,
        }
    }

    /// `deployments.apps "x" not found`.
    pub fn not_found(kind: ResourceKind, name: &str) -> Self {
        Self::not_found_resource(kind.group(), kind.plural(), name)
    }

    pub fn not_found_resource(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", qualified(group, resource)),
            boxed(Details {
                name: name.into(),
                group: group.into(),
                kind: resource.into(),
                causes: vec![],
            }),
        )
    }

    /// `namespaces "x" already exists` (409 AlreadyExists, what a create of an existing name gets).
    pub fn already_exists(kind: ResourceKind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} {name:?} already exists",
                qualified(kind.group(), kind.plural())
            ),
            boxed(Details {
                name: name.into(),
                group: kind.group().into(),
                kind: kind.plural().into(),
                causes: vec![],
            }),
        )
    }

    /// The plain 404 the apiserver gives for an unknown path.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            boxed(Details::default()),
        )
    }

    /// `NewForbidden`: `<resource>.<group> "<name>" is forbidden: <why>`.
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let message = if resource.is_empty() {
            format!("forbidden: {why}")
        } else if name.is_empty() {
            format!("{} is forbidden: {why}", qualified(group, resource))
        } else {
            format!(
                "{} {name:?} is forbidden: {why}",
                qualified(group, resource)
            )
        };
        Self::new(
            403,
            "Forbidden",
            message,
            boxed(Details {
                name: name.into(),
                group: group.into(),
                kind: resource.into(),
                causes: vec![],
            }),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into(), None)
    }

    /// The optimistic-concurrency conflict of an update with a stale resourceVersion.
    pub fn conflict(kind: ResourceKind, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                qualified(kind.group(), kind.plural())
            ),
            boxed(Details {
                name: name.into(),
                group: kind.group().into(),
                kind: kind.plural().into(),
                causes: vec![],
            }),
        )
    }

    /// `NewApplyConflict`: server-side apply field-manager conflicts.
    pub fn apply_conflict(causes: Vec<StatusCause>, message: String) -> Self {
        Self::new(
            409,
            "Conflict",
            message,
            boxed(Details {
                causes,
                ..Details::default()
            }),
        )
    }

    /// `NewInvalid`: `<Kind>.<group> "<name>" is invalid: <errors>`.
    /// `Ok` when there is nothing wrong, else the 422 of [`ApiError::invalid`].
    pub fn check(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Result<(), Self> {
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(group, kind, name, errs))
        }
    }

    pub fn invalid(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Self {
        let gk = qualified(group, kind);
        let message = match errs {
            [] => format!("{gk} {name:?} is invalid"),
            [one] => format!("{gk} {name:?} is invalid: {}", one.rendered()),
            many => format!(
                "{gk} {name:?} is invalid: [{}]",
                many.iter()
                    .map(FieldError::rendered)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let causes = errs
            .iter()
            .map(|e| StatusCause {
                reason: e.cause_type.clone(),
                message: e.body.clone(),
                field: e.field.clone(),
            })
            .collect();
        Self::new(
            422,
            "Invalid",
            message,
            boxed(Details {
                name: name.into(),
                group: group.into(),
                kind: kind.into(),
                causes,
            }),
        )
    }

    /// `NewGenericServerResponse(422, ...)`, used for JSON patches that fail to apply.
    pub fn unprocessable(server_message: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request".into(),
            boxed(Details {
                causes: vec![StatusCause {
                    reason: "UnexpectedServerResponse".into(),
                    message: server_message.into(),
                    field: String::new(),
                }],
                ..Details::default()
            }),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
            boxed(Details::default()),
        )
    }

    pub fn method_not_supported(resource: &str, action: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{action} is not supported on resources of kind {resource:?}"),
            boxed(Details {
                kind: resource.into(),
                ..Details::default()
            }),
        )
    }

    /// `NewInternalError`: `Internal error occurred: <msg>`.
    pub fn internal(msg: &str) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {msg}"),
            boxed(Details {
                causes: vec![StatusCause {
                    reason: String::new(),
                    message: msg.into(),
                    field: String::new(),
                }],
                ..Details::default()
            }),
        )
    }

    /// A Status for any code, with the reason the apiserver uses for it.
    pub fn for_code(code: u16, message: &str) -> Self {
        match code {
            401 => Self::unauthorized(),
            500 => Self::internal(message),
            _ => {
                let reason = match code {
                    400 => "BadRequest",
                    403 => "Forbidden",
                    404 => "NotFound",
                    405 => "MethodNotAllowed",
                    406 => "NotAcceptable",
                    415 => "UnsupportedMediaType",
                    409 => "Conflict",
                    410 => "Expired",
                    422 => "Invalid",
                    429 => "TooManyRequests",
                    503 => "ServiceUnavailable",
                    504 => "Timeout",
                    _ => "",
                };
                Self::new(code, reason, message.into(), boxed(Details::default()))
            }
        }
    }

    pub fn with_retry_after(mut self, seconds: Option<u32>) -> Self {
        self.retry_after = seconds;
        self
    }

    /// The Status object as JSON.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if self.reason.is_empty() {
            status.as_object_mut().unwrap().remove("reason");
        }
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if !d.name.is_empty() {
                details.insert("name".into(), json!(d.name));
            }
            if !d.group.is_empty() {
                details.insert("group".into(), json!(d.group));
            }
            if !d.kind.is_empty() {
                details.insert("kind".into(), json!(d.kind));
            }
            if !d.causes.is_empty() {
                let causes = d
                    .causes
                    .iter()
                    .map(|c| {
                        let mut m = serde_json::Map::new();
                        if !c.reason.is_empty() {
                            m.insert("reason".into(), json!(c.reason));
                        }
                        if !c.message.is_empty() {
                            m.insert("message".into(), json!(c.message));
                        }
                        if !c.field.is_empty() {
                            m.insert("field".into(), json!(c.field));
                        }
                        Value::Object(m)
                    })
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            if let Some(s) = self.retry_after {
                details.insert("retryAfterSeconds".into(), json!(s));
            }
            status["details"] = Value::Object(details);
        }
        status["code"] = json!(self.code);
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.to_status().to_string();
        let mut resp = (code, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_matches_apiserver_text() {
        let e = ApiError::forbidden(
            "apps",
            "deployments",
            "trainer",
            "User \"bob\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"ml\"",
        );
        assert_eq!(
            e.message,
            "deployments.apps \"trainer\" is forbidden: User \"bob\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"ml\""
        );
        let s = e.to_status();
        assert_eq!(
            s["details"],
            json!({"name":"trainer","group":"apps","kind":"deployments"})
        );
        assert_eq!(s["code"], 403);
        assert_eq!(s["status"], "Failure");
    }

    #[test]
    fn invalid_aggregates_like_field_error_list() {
        let one = ApiError::invalid(
            "apps",
            "Deployment",
            "t",
            &[FieldError::invalid(
                "spec.replicas",
                &json!(-1),
                "must be greater than or equal to 0",
            )],
        );
        assert_eq!(
            one.message,
            "Deployment.apps \"t\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        let two = ApiError::invalid(
            "apps",
            "Deployment",
            "t",
            &[
                FieldError::invalid("a", &json!("x"), "bad"),
                FieldError::required("b", ""),
            ],
        );
        assert_eq!(
            two.message,
            "Deployment.apps \"t\" is invalid: [a: Invalid value: \"x\": bad, b: Required value]"
        );
        assert_eq!(
            two.to_status()["details"]["causes"][1]["reason"],
            "FieldValueRequired"
        );
    }

    #[test]
    fn unauthorized_has_no_details() {
        let s = ApiError::unauthorized().to_status();
        assert!(s.get("details").is_none());
        assert_eq!(s["message"], "Unauthorized");
        assert_eq!(s["code"], 401);
    }
}
