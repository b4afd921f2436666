//! State shared by the server tasks and the test handle.

use std::sync::{Mutex, MutexGuard, RwLock};

use serde::Serialize;

use crate::auth::AuthConfig;
use crate::faults::FaultSet;
use crate::store::Store;

/// One request as the server saw it, for tests that count or inspect requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// Arrival order, unique for the server's lifetime (not reset by clearing the log).
    pub id: u64,
    pub method: String,
    pub path: String,
    /// Raw query string (percent-encoded, without `?`).
    pub query: String,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    /// Authenticated user name, if authentication succeeded.
    pub user: Option<String>,
    /// Response status; 0 while the request is still being answered (or hangs).
    pub status: u16,
    /// Request body (PATCH/POST/PUT), lossily decoded as UTF-8.
    pub body: String,
}

impl RequestRecord {
    /// The decoded value of a query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

#[derive(Debug)]
pub struct Shared {
    pub store: Mutex<Store>,
    pub auth: RwLock<AuthConfig>,
    pub faults: Mutex<FaultSet>,
    pub requests: Mutex<Vec<RequestRecord>>,
    pub next_request_id: std::sync::atomic::AtomicU64,
    pub server_version: String,
    pub server_address: String,
    /// The PyTorchJob and JobSet CRDs are not installed.
    pub crds_absent: bool,
    /// Interval between BOOKMARK events of watches that allow them.
    pub bookmark_interval: std::time::Duration,
}

impl Shared {
    /// Updates a logged request (if it is still in the log).
    pub fn update_request(&self, id: u64, f: impl FnOnce(&mut RequestRecord)) {
        if let Some(r) = lock(&self.requests).iter_mut().rev().find(|r| r.id == id) {
            f(r);
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not wedge the server).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
