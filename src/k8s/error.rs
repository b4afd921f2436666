//! What can go wrong talking to an API server, in the classes the product acts on. Every call through
//! [`ClusterApi`](super::ClusterApi) fails with a [`ClusterError`]; kube-rs errors are classified here
//! and nowhere else, so "the cluster cannot be reached" is never mistaken for "the namespace is missing".

use std::fmt;

use serde::{Deserialize, Serialize};

use super::rbac::RbacDenial;

/// The class of a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterErrorKind {
    /// No answer at the transport level: connection refused, DNS, TLS handshake, proxy.
    Unreachable,
    /// No complete answer within the request timeout.
    Timeout,
    /// 401, or credentials that could not be obtained (exec plugin, token file).
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 409: the object changed since it was read (resourceVersion precondition) or a field-manager conflict.
    Conflict,
    /// 400 or 422: the server rejected the request body.
    Invalid,
    /// 5xx.
    ServerError,
    /// Anything else: 429 after retries, an unparsable answer, an unexpected status.
    Other,
}

impl ClusterErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterErrorKind::Unreachable => "unreachable",
            ClusterErrorKind::Timeout => "timeout",
            ClusterErrorKind::Unauthorized => "unauthorized",
            ClusterErrorKind::Forbidden => "forbidden",
            ClusterErrorKind::NotFound => "not_found",
            ClusterErrorKind::Conflict => "conflict",
            ClusterErrorKind::Invalid => "invalid",
            ClusterErrorKind::ServerError => "server_error",
            ClusterErrorKind::Other => "other",
        }
    }

    /// Errors that say nothing about the object, only about the way to the server: when one of them
    /// answers, the facts the call was meant to establish are unknown.
    pub fn is_transport(self) -> bool {
        matches!(
            self,
            ClusterErrorKind::Unreachable
                | ClusterErrorKind::Timeout
                | ClusterErrorKind::Unauthorized
        )
    }

    /// Class of an HTTP status code that is not a success.
    pub fn from_status(code: u16) -> ClusterErrorKind {
        match code {
            401 => ClusterErrorKind::Unauthorized,
            403 => ClusterErrorKind::Forbidden,
            404 => ClusterErrorKind::NotFound,
            408 | 504 => ClusterErrorKind::Timeout,
            409 => ClusterErrorKind::Conflict,
            400 | 422 => ClusterErrorKind::Invalid,
            500..=599 => ClusterErrorKind::ServerError,
            _ => ClusterErrorKind::Other,
        }
    }
}

impl fmt::Display for ClusterErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call: its class, the HTTP status when the server answered, one line of text (what was
/// asked and what came back) and, for a 403 whose message names the missing permission, that permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterError {
    pub kind: ClusterErrorKind,
    pub status: Option<u16>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<Box<RbacDenial>>,
}

impl ClusterError {
    pub fn new(kind: ClusterErrorKind, message: impl Into<String>) -> Self {
        ClusterError {
            kind,
            status: None,
            message: one_line(&message.into()),
            rbac: None,
        }
    }

    /// An error the server answered with `code` and a Status `message`.
    pub fn from_status(code: u16, message: &str) -> Self {
        let kind = ClusterErrorKind::from_status(code);
        ClusterError {
            kind,
            status: Some(code),
            message: one_line(message),
            rbac: (kind == ClusterErrorKind::Forbidden)
                .then(|| RbacDenial::parse(message).map(Box::new))
                .flatten(),
        }
    }

    /// Classifies a kube-rs error. `what` names the request (`GET deployments.apps ml/trainer`) and
    /// prefixes transport errors, which do not say what they interrupted.
    pub fn from_kube(what: &str, e: &kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => {
                let message = if status.message.is_empty() {
                    format!("{what}: HTTP {}", status.code)
                } else {
                    status.message.clone()
                };
                ClusterError::from_status(status.code, &message)
            }
            kube::Error::Auth(a) => ClusterError::new(
                ClusterErrorKind::Unauthorized,
                format!("{what}: cannot obtain credentials: {a}"),
            ),
            kube::Error::SerdeError(s) => ClusterError::new(
                ClusterErrorKind::Other,
                format!("{what}: unexpected answer: {s}"),
            ),
            other => {
                let chain = error_chain(other);
                ClusterError::new(transport_kind(other, &chain), format!("{what}: {chain}"))
            }
        }
    }

    /// The call did not finish within `limit`.
    pub fn timeout(what: &str, limit: std::time::Duration) -> Self {
        ClusterError::new(
            ClusterErrorKind::Timeout,
            format!("{what}: no answer within {}", human_duration(limit)),
        )
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(code) => write!(f, "{} (HTTP {code}): {}", self.kind, self.message),
            None => write!(f, "{}: {}", self.kind, self.message),
        }
    }
}

impl std::error::Error for ClusterError {}

/// `500ms`, `2s`, `1.5s`.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The error and its sources, `: `-joined, with repeats (wrappers that print their source) dropped.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![];
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// A transport failure's class, from the io errors in its source chain and, where hyper only says it
/// in words, from the text.
fn transport_kind(e: &(dyn std::error::Error + 'static), chain: &str) -> ClusterErrorKind {
    use std::io::ErrorKind as Io;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                Io::TimedOut => return ClusterErrorKind::Timeout,
                Io::ConnectionRefused
                | Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::NotConnected
                | Io::AddrNotAvailable
                | Io::HostUnreachable
                | Io::NetworkUnreachable
                | Io::NetworkDown => return ClusterErrorKind::Unreachable,
                _ => {}
            }
        }
        cur = err.source();
    }
    let lower = chain.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("deadline has elapsed") {
        ClusterErrorKind::Timeout
    } else if [
        "client error (connect)",
        "dns error",
        "failed to lookup address",
        "certificate",
        "tls",
        "handshake",
        "connection closed before message completed",
    ]
    .iter()
    .any(|m| lower.contains(m))
    {
        ClusterErrorKind::Unreachable
    } else {
        ClusterErrorKind::Other
    }
}

/// Control characters (a hostile server's message) become spaces; long text is cut.
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(600) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let cases = [
            (401, ClusterErrorKind::Unauthorized),
            (403, ClusterErrorKind::Forbidden),
            (404, ClusterErrorKind::NotFound),
            (409, ClusterErrorKind::Conflict),
            (422, ClusterErrorKind::Invalid),
            (400, ClusterErrorKind::Invalid),
            (500, ClusterErrorKind::ServerError),
            (503, ClusterErrorKind::ServerError),
            (504, ClusterErrorKind::Timeout),
            (429, ClusterErrorKind::Other),
        ];
        for (code, kind) in cases {
            assert_eq!(ClusterErrorKind::from_status(code), kind, "{code}");
        }
    }

    #[test]
    fn forbidden_carries_the_parsed_permission() {
        let e = ClusterError::from_status(
            403,
            "deployments.apps \"trainer\" is forbidden: User \"bob\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"ml\"",
        );
        let r = e.rbac.expect("parsed");
        assert_eq!((r.user.as_str(), r.verb.as_str()), ("bob", "patch"));
        assert!(ClusterError::from_status(404, "x").rbac.is_none());
    }

    #[test]
    fn refused_connection_is_unreachable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            transport_kind(&io, &io.to_string()),
            ClusterErrorKind::Unreachable
        );
        let t = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(transport_kind(&t, "slow"), ClusterErrorKind::Timeout);
        let other = std::io::Error::other("client error (Connect): dns error: no such host");
        assert_eq!(
            transport_kind(&other, &other.to_string()),
            ClusterErrorKind::Unreachable
        );
    }

    #[test]
    fn messages_are_one_line() {
        let e = ClusterError::new(ClusterErrorKind::Other, "a\nb\u{1b}[31m");
        assert_eq!(e.message, "a b [31m");
        assert_eq!(
            human_duration(std::time::Duration::from_millis(300)),
            "300ms"
        );
        assert_eq!(human_duration(std::time::Duration::from_secs(10)), "10s");
        assert_eq!(
            human_duration(std::time::Duration::from_millis(1500)),
            "1.5s"
        );
    }
}
