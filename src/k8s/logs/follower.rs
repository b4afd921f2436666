//! One pod container's follower task: reads its log stream from where the lines handed out end,
//! across reconnects, container restarts and rotations, and sends complete lines to the
//! consumer ([`PodLogStream`](super::PodLogStream) / [`PodLogSource`](super::PodLogSource)) under
//! a shared byte budget.

use super::*;

/// The last line handed out: its timestamp and how many lines carried it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    pub(super) t: DateTime<FixedOffset>,
    pub(super) n: u64,
}

/// Where a container instance's lines have been sent to, and which lines of a response are new.
#[derive(Debug, Clone, Default)]
pub(super) struct Position {
    pub(super) mark: Option<Mark>,
    /// Before the first line: start here (`since_seconds` at open).
    pub(super) start_at: Option<DateTime<Utc>>,
}

impl Position {
    /// The `sinceTime` to ask for: the API takes whole seconds (and kube-rs would round to the
    /// nearest), so round down; [`admit`](Position::admit) skips the lines in between.
    fn since(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        let s = self
            .mark
            .map(|m| m.t.timestamp())
            .or(self.start_at.map(|t| t.timestamp()))?;
        k8s_openapi::jiff::Timestamp::from_second(s).ok()
    }

    /// Whether a line at `t` is new. `seen` counts this response's lines at the mark's timestamp.
    fn admit(&mut self, t: Option<DateTime<FixedOffset>>, seen: &mut u64) -> bool {
        let Some(t) = t else {
            // No timestamp (not the kubelet's format): nothing to dedupe by.
            return true;
        };
        match &mut self.mark {
            Some(m) if t < m.t => false,
            Some(m) if t == m.t => {
                *seen += 1;
                if *seen <= m.n {
                    false
                } else {
                    m.n += 1;
                    true
                }
            }
            _ => {
                if self.mark.is_none() && self.start_at.is_some_and(|s| t < s) {
                    return false;
                }
                self.mark = Some(Mark { t, n: 1 });
                *seen = 1;
                true
            }
        }
    }
}

pub(super) struct Follower {
    pub(super) api: Api<Pod>,
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) budget: Arc<Semaphore>,
    pub(super) ns: String,
    pub(super) pod: Arc<str>,
    pub(super) container: String,
    /// The container instance being read.
    pub(super) inst: Instance,
    pub(super) pos: Position,
    pub(super) timeout: Option<Duration>,
    /// A failure was reported (`retrying`) and no stream opened since.
    pub(super) failing: bool,
}

/// Why the last stream of the current instance stopped.
pub(super) enum Stop {
    /// Not stopped: no stream opened yet for this instance.
    None,
    /// The server ended the response (the container exited, or a proxy closed it).
    Ended,
    /// Cut or refused (transient): reconnect.
    Failed(String),
}

pub(super) fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(BACKOFF_MAX)
}

/// Reads one line with its newline into `line` (cleared first) without holding more than
/// [`MAX_LINE_BYTES`]: a longer line keeps only its start (the timestamp) and reports `true`. `None`
/// at the end of the body; a last line without a newline is returned as it is.
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let used = chunk.len();
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE_BYTES {
                too_long = true;
                let keep = 64usize.saturating_sub(line.len()).min(chunk.len());
                line.extend_from_slice(&chunk[..keep]);
            } else {
                line.extend_from_slice(chunk);
            }
        }
        r.consume_unpin(used);
        if done {
            return Ok(Some(too_long));
        }
    }
}

/// What a line longer than [`MAX_LINE_BYTES`] becomes: `MAX_LINE_BYTES + 1` bytes (the caller counts
/// it as too long), its timestamp (so the cursor counts it) and blanks.
pub(super) fn too_long_marker(start: &[u8]) -> Vec<u8> {
    let mut m = match line_ts(start) {
        Some((_, raw)) => format!("{raw} ").into_bytes(),
        None => vec![],
    };
    m.resize(MAX_LINE_BYTES + 1, b' ');
    m
}

impl Follower {
    pub(super) async fn run(mut self) {
        if let Err(m) = self.follow().await {
            let _ = self.tx.send(Msg::Fatal(m)).await;
        }
    }

    async fn send(&self, m: Msg) {
        // The receiver lives as long as the source, which aborts this task when it goes.
        let _ = self.tx.send(m).await;
    }

    fn what(&self) -> String {
        format!("pod {}/{}", self.ns, self.pod)
    }

    /// The pod now (`None`: it no longer exists), retrying transient failures.
    async fn get_pod(&mut self, backoff: &mut Duration) -> Result<Option<Pod>, String> {
        loop {
            let what = || format!("GET pods {}/{}", self.ns, self.pod);
            match bounded(self.timeout, what, self.api.get_opt(&self.pod)).await {
                Ok(p) => return Ok(p),
                Err(e) if is_fatal(&e) => {
                    return Err(refused(
                        &format!("cannot read {}", self.what()),
                        "get on pods",
                        &e,
                    ));
                }
                Err(e) => {
                    self.failing(&e.to_string()).await;
                    tokio::time::sleep(*backoff).await;
                    *backoff = next_backoff(*backoff);
                }
            }
        }
    }

    /// The first failure of a streak is reported (`retrying`), so a cluster that stops answering
    /// is visible while it lasts; the streak ends when a log stream opens.
    async fn failing(&mut self, error: &str) {
        if !self.failing {
            self.failing = true;
            self.send(Msg::Event(event(
                "retrying",
                json!({"pod": &*self.pod, "container": self.container, "error": error}),
            )))
            .await;
        }
    }

    async fn follow(&mut self) -> Result<(), String> {
        let mut backoff = BACKOFF_MIN;
        let mut stop = Stop::None;
        let mut attempt = 0u32;
        loop {
            let Some(pod) = self.get_pod(&mut backoff).await? else {
                self.send(Msg::Gone {
                    pod: self.pod.clone(),
                })
                .await;
                return Ok(());
            };
            let now = instance_of(&pod, &self.container);
            if now.uid != self.inst.uid || now.restart_count > self.inst.restart_count {
                self.switch_instance(now).await;
                stop = Stop::None;
                attempt = 0;
                backoff = BACKOFF_MIN;
            }
            match (run_state(&pod, &self.container), &stop) {
                (RunState::Waiting, _) => {
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                    continue;
                }
                (RunState::Terminated, Stop::Ended) => {
                    if is_terminal(&pod) {
                        self.send(Msg::Ended {
                            pod: self.pod.clone(),
                        })
                        .await;
                        return Ok(());
                    }
                    // Exited; the kubelet will restart it (restartCount rises).
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                    continue;
                }
                (RunState::Running, Stop::Ended) => {
                    stop =
                        Stop::Failed("the server ended the stream while the container runs".into());
                }
                _ => {}
            }
            if matches!(stop, Stop::Failed(_)) {
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff);
                attempt += 1;
            }
            let lp = self.params(false);
            let since = lp.since_time.map(|t| t.to_string());
            let opened = match self.timeout {
                Some(l) => tokio::time::timeout(l, self.api.log_stream(&self.pod, &lp))
                    .await
                    .map_err(|_| format!("no answer within {}", super::super::human_duration(l))),
                None => Ok(self.api.log_stream(&self.pod, &lp).await),
            };
            let reader = match opened {
                Err(m) => {
                    self.failing(&m).await;
                    stop = Stop::Failed(m);
                    continue;
                }
                Ok(Err(e)) => {
                    let e = ClusterError::from_kube(&format!("GET log of {}", self.what()), &e);
                    if is_fatal(&e) {
                        return Err(refused(
                            &format!("cannot read logs of {}", self.what()),
                            &format!("get on pods/log in namespace {}", self.ns),
                            &e,
                        ));
                    }
                    // 404: the next GET says the pod is gone; 400: not started yet.
                    self.failing(&e.to_string()).await;
                    stop = Stop::Failed(e.to_string());
                    continue;
                }
                Ok(Ok(r)) => r,
            };
            self.failing = false;
            if let Stop::Failed(why) = &stop {
                self.send(Msg::Event(event(
                    "reconnected",
                    json!({"pod": &*self.pod, "container": self.container, "after": why,
                           "attempt": attempt, "since_time": since}),
                )))
                .await;
            }
            let (sent, result) = self.pump(reader).await;
            if sent > 0 {
                backoff = BACKOFF_MIN;
                attempt = 0;
            }
            stop = match result {
                Ok(()) => Stop::Ended,
                Err(e) => Stop::Failed(format!("the log stream broke: {e}")),
            };
        }
    }

    fn params(&self, previous: bool) -> LogParams {
        LogParams {
            container: Some(self.container.clone()),
            follow: !previous,
            previous,
            timestamps: true,
            since_time: self.pos.since(),
            ..LogParams::default()
        }
    }

    /// The pod was restarted or replaced: finish the old instance from `previous` when it is the
    /// one just before, then start the new one from its beginning.
    async fn switch_instance(&mut self, now: Instance) {
        let mut recovered = 0;
        let reason = if now.uid == self.inst.uid {
            if now.restart_count == self.inst.restart_count + 1 {
                let lp = self.params(true);
                if let Ok(Ok(r)) = tokio::time::timeout(
                    self.timeout.unwrap_or(BACKOFF_MAX * 2),
                    self.api.log_stream(&self.pod, &lp),
                )
                .await
                {
                    recovered = self.pump(r).await.0;
                }
            }
            "restart_count"
        } else {
            "new_uid"
        };
        self.send(Msg::Event(event(
            "pod_restarted",
            json!({"pod": &*self.pod, "container": self.container, "reason": reason,
                   "uid": now.uid, "restart_count": now.restart_count,
                   "previous_uid": self.inst.uid, "previous_restart_count": self.inst.restart_count,
                   "previous_lines_recovered": recovered}),
        )))
        .await;
        self.send(Msg::Instance {
            pod: self.pod.clone(),
            uid: now.uid.clone(),
            restart_count: now.restart_count,
        })
        .await;
        self.inst = now;
        self.pos = Position::default();
    }

    /// Sends the new lines of one response; how many, and how it ended.
    async fn pump(&mut self, reader: impl AsyncBufRead) -> (u64, std::io::Result<()>) {
        let mut reader = pin!(reader);
        let mut line = Vec::new();
        let mut seen = 0;
        let mut sent = 0;
        loop {
            match read_line(&mut reader, &mut line).await {
                Ok(None) => return (sent, Ok(())),
                Err(e) => return (sent, Err(e)),
                Ok(Some(too_long)) => {
                    if !self.pos.admit(line_ts(&line).map(|(t, _)| t), &mut seen) {
                        continue;
                    }
                    let bytes = if too_long {
                        too_long_marker(&line)
                    } else {
                        std::mem::take(&mut line)
                    };
                    let charge = bytes.len().clamp(1, STREAM_BUFFER_BYTES) as u32;
                    // Never closed: the stream lives as long as this task.
                    if let Ok(p) = self.budget.acquire_many(charge).await {
                        p.forget();
                    }
                    self.send(Msg::Line {
                        pod: self.pod.clone(),
                        line: bytes,
                        charge,
                    })
                    .await;
                    sent += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<DateTime<FixedOffset>> {
        Some(DateTime::parse_from_rfc3339(s).unwrap())
    }

    #[test]
    fn line_reader_bounds_memory() {
        let mut body = b"a\n".to_vec();
        body.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        body.extend_from_slice(b"\nlast");
        let mut r = futures_util::io::Cursor::new(body);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut line = vec![];
        rt.block_on(async {
            assert_eq!(read_line(&mut r, &mut line).await.unwrap(), Some(false));
            assert_eq!(line, b"a\n");
            assert_eq!(read_line(&mut r, &mut line).await.unwrap(), Some(true));
            assert_eq!(line.len(), 64);
            assert_eq!(read_line(&mut r, &mut line).await.unwrap(), Some(false));
            assert_eq!(line, b"last");
            assert_eq!(read_line(&mut r, &mut line).await.unwrap(), None);
        });
    }

    #[test]
    fn resume_skips_exactly_the_lines_handed_out() {
        let mut p = Position {
            mark: Some(Mark {
                t: ts("2026-01-01T00:00:01.5Z").unwrap(),
                n: 2,
            }),
            start_at: None,
        };
        assert_eq!(p.since().unwrap().as_second(), 1_767_225_601);
        let mut seen = 0;
        // A replay from the whole second: older lines and the first two at the mark are skipped.
        assert!(!p.admit(ts("2026-01-01T00:00:01.1Z"), &mut seen));
        assert!(!p.admit(ts("2026-01-01T00:00:01.5Z"), &mut seen));
        assert!(!p.admit(ts("2026-01-01T00:00:01.5Z"), &mut seen));
        assert!(p.admit(ts("2026-01-01T00:00:01.5Z"), &mut seen));
        assert_eq!(p.mark.unwrap().n, 3);
        assert!(p.admit(ts("2026-01-01T00:00:02Z"), &mut seen));
        assert!(p.admit(ts("2026-01-01T00:00:02Z"), &mut seen));
        assert_eq!(p.mark.unwrap().n, 2);
        assert_eq!(p.since().unwrap().as_second(), 1_767_225_602);
        assert!(p.admit(None, &mut seen));
    }

    #[test]
    fn a_start_time_skips_older_lines() {
        let mut p = Position {
            mark: None,
            start_at: Some("2026-01-01T00:00:01.5Z".parse().unwrap()),
        };
        let mut seen = 0;
        assert!(!p.admit(ts("2026-01-01T00:00:01.2Z"), &mut seen));
        assert!(p.admit(ts("2026-01-01T00:00:01.5Z"), &mut seen));
        assert!(p.admit(ts("2026-01-01T00:00:01.7Z"), &mut seen));
    }
}
