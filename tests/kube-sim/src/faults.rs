//! Injectable faults: latency, hangs, error responses, "fail the Nth request", cut log streams.
//!
//! A fault matches requests by method and path glob (`*` = any characters within one path
//! segment, `**` = any number of segments). It can be limited to the Nth matching request
//! and/or to a number of firings. Several faults may match one request: delays add up, the
//! first hang or status wins, and the smallest log cut applies.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// HTTP method to match (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path glob; `**` (the default) matches every request.
    #[serde(default = "any_path")]
    pub path: String,
    /// Fire only on the Nth matching request (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<u64>,
    /// Fire at most this many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    pub action: FaultAction,
}

fn any_path() -> String {
    "**".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum FaultAction {
    /// Answer normally after a delay.
    Delay { ms: u64 },
    /// Do the request, then answer after a delay (the write is already stored: a reply slow
    /// on its way back).
    DelayAfter { ms: u64 },
    /// Never answer (the client times out).
    Hang,
    /// Answer with this status code and an apiserver-style Status body.
    #[serde(rename_all = "camelCase")]
    Status {
        code: u16,
        #[serde(default = "default_fault_message")]
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_seconds: Option<u32>,
    },
    /// For log requests: end the stream abruptly after this many lines.
    #[serde(rename_all = "camelCase")]
    DropLogStream { after_lines: u64 },
}

fn default_fault_message() -> String {
    "injected fault".into()
}

impl Fault {
    pub fn new(path: impl Into<String>, action: FaultAction) -> Self {
        Fault {
            method: None,
            path: path.into(),
            nth: None,
            times: None,
            action,
        }
    }

    /// Error responses with `code` (500 gives an `InternalError` Status).
    pub fn status(path: impl Into<String>, code: u16) -> Self {
        Self::new(
            path,
            FaultAction::Status {
                code,
                message: default_fault_message(),
                retry_after_seconds: None,
            },
        )
    }

    pub fn delay(path: impl Into<String>, delay: Duration) -> Self {
        Self::new(
            path,
            FaultAction::Delay {
                ms: delay.as_millis() as u64,
            },
        )
    }

    pub fn delay_after(path: impl Into<String>, delay: Duration) -> Self {
        Self::new(
            path,
            FaultAction::DelayAfter {
                ms: delay.as_millis() as u64,
            },
        )
    }

    pub fn hang(path: impl Into<String>) -> Self {
        Self::new(path, FaultAction::Hang)
    }

    pub fn drop_log_stream(path: impl Into<String>, after_lines: u64) -> Self {
        Self::new(path, FaultAction::DropLogStream { after_lines })
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    pub fn nth(mut self, n: u64) -> Self {
        self.nth = Some(n);
        self
    }

    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    pub fn message(mut self, text: &str) -> Self {
        if let FaultAction::Status { message, .. } = &mut self.action {
            *message = text.to_string();
        }
        self
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && glob_match(&self.path, path)
    }
}

/// Identifies an injected fault so it can be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(pub u64);

#[derive(Debug)]
struct ActiveFault {
    id: FaultId,
    fault: Fault,
    matched: u64,
    fired: u64,
}

/// What the faults decided for one request.
#[derive(Debug, Default)]
pub struct FaultPlan {
    pub delay: Duration,
    pub delay_after: Duration,
    pub hang: bool,
    pub error: Option<ApiError>,
    pub drop_log_after: Option<u64>,
}

#[derive(Debug, Default)]
pub struct FaultSet {
    next: u64,
    active: Vec<ActiveFault>,
}

impl FaultSet {
    pub fn add(&mut self, fault: Fault) -> FaultId {
        self.next += 1;
        let id = FaultId(self.next);
        self.active.push(ActiveFault {
            id,
            fault,
            matched: 0,
            fired: 0,
        });
        id
    }

    pub fn remove(&mut self, id: FaultId) -> bool {
        let before = self.active.len();
        self.active.retain(|f| f.id != id);
        before != self.active.len()
    }

    pub fn clear(&mut self) {
        self.active.clear();
    }

    /// How many times a fault has fired so far.
    pub fn fired(&self, id: FaultId) -> Option<u64> {
        self.active.iter().find(|f| f.id == id).map(|f| f.fired)
    }

    pub fn plan(&mut self, method: &str, path: &str) -> FaultPlan {
        let mut plan = FaultPlan::default();
        let is_log = path.ends_with("/log");
        for f in self.active.iter_mut() {
            if !f.fault.matches(method, path) {
                continue;
            }
            if matches!(f.fault.action, FaultAction::DropLogStream { .. }) && !is_log {
                continue;
            }
            f.matched += 1;
            if f.fault.nth.is_some_and(|n| n != f.matched) {
                continue;
            }
            if f.fault.times.is_some_and(|t| f.fired >= t) {
                continue;
            }
            let terminal_taken = plan.hang || plan.error.is_some();
            match &f.fault.action {
                FaultAction::Delay { ms } => plan.delay += Duration::from_millis(*ms),
                FaultAction::DelayAfter { ms } => plan.delay_after += Duration::from_millis(*ms),
                FaultAction::Hang if !terminal_taken => plan.hang = true,
                FaultAction::Status {
                    code,
                    message,
                    retry_after_seconds,
                } if !terminal_taken => {
                    plan.error = Some(
                        ApiError::for_code(*code, message).with_retry_after(*retry_after_seconds),
                    )
                }
                FaultAction::DropLogStream { after_lines } => {
                    plan.drop_log_after = Some(
                        plan.drop_log_after
                            .map_or(*after_lines, |n| n.min(*after_lines)),
                    )
                }
                _ => continue,
            }
            f.fired += 1;
        }
        plan
    }
}

/// `*` matches within one segment, `**` matches any number of whole segments.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|skip| match_segments(rest, &segs[skip..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, srest)) => {
                segment_match(p.as_bytes(), s.as_bytes()) && match_segments(rest, srest)
            }
            None => false,
        },
    }
}

fn segment_match(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| segment_match(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && segment_match(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("**", "/apis/apps/v1"));
        assert!(glob_match(
            "/apis/apps/v1/namespaces/*/deployments/*",
            "/apis/apps/v1/namespaces/ml/deployments/trainer"
        ));
        assert!(!glob_match(
            "/apis/apps/v1/namespaces/*/deployments/*",
            "/apis/apps/v1/namespaces/ml/deployments"
        ));
        assert!(glob_match(
            "/api/v1/**/log",
            "/api/v1/namespaces/ml/pods/p/log"
        ));
        assert!(glob_match(
            "/api/v1/namespaces/ml/pods/trainer-*/log",
            "/api/v1/namespaces/ml/pods/trainer-abc/log"
        ));
        assert!(!glob_match("/api", "/apis"));
    }

    #[test]
    fn nth_and_times() {
        let mut set = FaultSet::default();
        let id = set.add(Fault::status("/x/*", 500).method("patch").nth(2));
        assert!(set.plan("PATCH", "/x/a").error.is_none());
        assert!(set.plan("GET", "/x/a").error.is_none());
        assert_eq!(set.plan("PATCH", "/x/b").error.unwrap().code, 500);
        assert!(set.plan("PATCH", "/x/c").error.is_none());
        assert_eq!(set.fired(id), Some(1));

        let mut set = FaultSet::default();
        set.add(Fault::status("**", 503).times(1));
        set.add(Fault::delay("**", Duration::from_millis(5)));
        let first = set.plan("GET", "/api");
        assert_eq!(first.error.unwrap().code, 503);
        assert_eq!(first.delay, Duration::from_millis(5));
        assert!(set.plan("GET", "/api").error.is_none());
    }

    #[test]
    fn log_cut_only_for_log_requests() {
        let mut set = FaultSet::default();
        set.add(Fault::drop_log_stream("**", 3));
        assert_eq!(
            set.plan("GET", "/api/v1/namespaces/ml/pods").drop_log_after,
            None
        );
        assert_eq!(
            set.plan("GET", "/api/v1/namespaces/ml/pods/p/log")
                .drop_log_after,
            Some(3)
        );
    }

    #[test]
    fn seed_format() {
        let f: Fault = serde_json::from_str(
            r#"{"method":"PATCH","path":"/apis/**","nth":3,"action":{"type":"status","code":500,"message":"boom"}}"#,
        )
        .unwrap();
        assert_eq!(f.nth, Some(3));
        assert_eq!(
            f.action,
            FaultAction::Status {
                code: 500,
                message: "boom".into(),
                retry_after_seconds: None
            }
        );
        let d: Fault =
            serde_json::from_str(r#"{"action":{"type":"dropLogStream","afterLines":2}}"#).unwrap();
        assert_eq!(d.path, "**");
    }
}
