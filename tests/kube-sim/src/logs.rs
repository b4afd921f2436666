//! Container log buffers and the kubelet's log options (`follow`, `timestamps`, `sinceSeconds`,
//! `sinceTime`, `tailLines`, `limitBytes`, `previous`).
//!
//! Each container keeps its current and previous (before the last restart) lines. Appends bump
//! a `watch` counter so followers wake up; `closed` ends follow streams (container exited).

use std::collections::HashMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use tokio::sync::watch;

use crate::status::{ApiError, FieldError};

#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub ts: DateTime<Utc>,
    pub text: String,
}

impl LogLine {
    /// One line of the response body, with kubectl's `--timestamps` prefix if asked for.
    pub fn render(&self, timestamps: bool) -> String {
        if timestamps {
            format!("{} {}\n", format_timestamp(&self.ts), self.text)
        } else {
            format!("{}\n", self.text)
        }
    }
}

/// The kubelet's `2006-01-02T15:04:05.000000000Z07:00` format.
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[derive(Debug)]
pub struct ContainerLog {
    pub lines: Vec<LogLine>,
    pub previous: Vec<LogLine>,
    pub closed: bool,
    /// Bumped on every restart: follow streams end with their container instance.
    pub instance: u64,
    pub tx: watch::Sender<u64>,
}

impl Default for ContainerLog {
    fn default() -> Self {
        ContainerLog {
            lines: vec![],
            previous: vec![],
            closed: false,
            instance: 0,
            tx: watch::channel(0).0,
        }
    }
}

impl ContainerLog {
    fn notify(&self) {
        self.tx.send_modify(|v| *v += 1);
    }

    pub fn append(&mut self, line: LogLine) {
        self.lines.push(line);
        self.notify();
    }

    /// A restart: current lines become the previous instance's, the new instance starts empty.
    pub fn restart(&mut self) {
        self.previous = std::mem::take(&mut self.lines);
        self.closed = false;
        self.instance += 1;
        self.notify();
    }

    pub fn close(&mut self) {
        self.closed = true;
        self.notify();
    }
}

/// Key: (namespace, pod, container).
pub type LogKey = (String, String, String);

#[derive(Debug, Default)]
pub struct LogStore {
    pub containers: HashMap<LogKey, ContainerLog>,
}

impl LogStore {
    pub fn entry(&mut self, ns: &str, pod: &str, container: &str) -> &mut ContainerLog {
        self.containers
            .entry((ns.to_string(), pod.to_string(), container.to_string()))
            .or_default()
    }

    pub fn get(&self, ns: &str, pod: &str, container: &str) -> Option<&ContainerLog> {
        self.containers
            .get(&(ns.to_string(), pod.to_string(), container.to_string()))
    }

    pub fn remove_pod(&mut self, ns: &str, pod: &str) {
        self.containers.retain(|(n, p, _), log| {
            let keep = !(n == ns && p == pod);
            if !keep {
                log.close();
            }
            keep
        });
    }
}

/// Parsed `PodLogOptions` query parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub timestamps: bool,
    pub previous: bool,
    pub since_seconds: Option<i64>,
    pub since_time: Option<DateTime<Utc>>,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
}

fn flag(v: &str) -> bool {
    v == "1" || v.eq_ignore_ascii_case("true")
}

impl LogOptions {
    pub fn parse(pairs: &[(String, String)], pod: &str) -> Result<Self, ApiError> {
        let mut o = LogOptions::default();
        let int = |k: &str, v: &str| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for {k}")))
        };
        for (k, v) in pairs {
            match k.as_str() {
                "container" if !v.is_empty() => o.container = Some(v.clone()),
                "follow" => o.follow = flag(v),
                "timestamps" => o.timestamps = flag(v),
                "previous" => o.previous = flag(v),
                "sinceSeconds" => o.since_seconds = Some(int(k, v)?),
                "tailLines" => o.tail_lines = Some(int(k, v)?),
                "limitBytes" => o.limit_bytes = Some(int(k, v)?),
                "sinceTime" => {
                    o.since_time = Some(
                        DateTime::parse_from_rfc3339(v)
                            .map_err(|e| {
                                ApiError::bad_request(format!("invalid sinceTime {v:?}: {e}"))
                            })?
                            .with_timezone(&Utc),
                    )
                }
                _ => {}
            }
        }
        let mut errs = vec![];
        if o.since_seconds.is_some() && o.since_time.is_some() {
            errs.push(FieldError::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        if let Some(s) = o.since_seconds.filter(|s| *s < 1) {
            errs.push(FieldError::invalid(
                "sinceSeconds",
                &s.into(),
                "must be greater than 0",
            ));
        }
        if let Some(t) = o.tail_lines.filter(|t| *t < 0) {
            errs.push(FieldError::invalid(
                "tailLines",
                &t.into(),
                "must be greater than or equal to 0",
            ));
        }
        if let Some(b) = o.limit_bytes.filter(|b| *b < 1) {
            errs.push(FieldError::invalid(
                "limitBytes",
                &b.into(),
                "must be greater than 0",
            ));
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid("", "PodLogOptions", pod, &errs));
        }
        Ok(o)
    }

    /// The lines (of `lines`) this request starts with.
    pub fn select<'a>(&self, lines: &'a [LogLine], now: DateTime<Utc>) -> &'a [LogLine] {
        let since = self
            .since_time
            .or_else(|| self.since_seconds.map(|s| now - Duration::seconds(s)));
        let start = match since {
            Some(t) => lines.iter().position(|l| l.ts >= t).unwrap_or(lines.len()),
            None => 0,
        };
        let selected = &lines[start..];
        match self.tail_lines {
            Some(n) => {
                let n = usize::try_from(n).unwrap_or(0).min(selected.len());
                &selected[selected.len() - n..]
            }
            None => selected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn lines(now: DateTime<Utc>) -> Vec<LogLine> {
        (0..10)
            .map(|i| LogLine {
                ts: now - Duration::seconds(100 - i * 10),
                text: format!("line {i}"),
            })
            .collect()
    }

    #[test]
    fn since_and_tail() {
        let now = Utc::now();
        let all = lines(now);
        let o = LogOptions::parse(&pairs(&[("sinceSeconds", "35")]), "p").unwrap();
        let got: Vec<_> = o
            .select(&all, now)
            .iter()
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(got, ["line 7", "line 8", "line 9"]);
        let o = LogOptions::parse(&pairs(&[("tailLines", "2")]), "p").unwrap();
        assert_eq!(o.select(&all, now).len(), 2);
        assert_eq!(o.select(&all, now)[0].text, "line 8");
        let o = LogOptions::parse(&pairs(&[("tailLines", "0")]), "p").unwrap();
        assert!(o.select(&all, now).is_empty());
        let o = LogOptions::parse(&pairs(&[("sinceTime", &format_timestamp(&all[5].ts))]), "p")
            .unwrap();
        assert_eq!(o.select(&all, now).len(), 5);
    }

    #[test]
    fn invalid_options() {
        let e = LogOptions::parse(&pairs(&[("sinceSeconds", "0")]), "p").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"p\" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0"
        );
        assert_eq!(
            LogOptions::parse(&pairs(&[("tailLines", "x")]), "p")
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn timestamp_format_has_nine_digits() {
        let ts = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_timestamp(&ts), "2024-05-01T10:00:00.500000000Z");
        let l = LogLine {
            ts,
            text: "hi".into(),
        };
        assert_eq!(l.render(true), "2024-05-01T10:00:00.500000000Z hi\n");
        assert_eq!(l.render(false), "hi\n");
    }

    #[test]
    fn restart_moves_lines_to_previous() {
        let mut c = ContainerLog::default();
        let rx = c.tx.subscribe();
        c.append(LogLine {
            ts: Utc::now(),
            text: "a".into(),
        });
        c.restart();
        assert_eq!(c.previous.len(), 1);
        assert!(c.lines.is_empty());
        assert_eq!(*rx.borrow(), 2);
    }
}
