//! `--source prometheus --prom-url URL`: telemetry from Prometheus range queries.
//!
//! Every configured PromQL query ([`PromQueries`]) is evaluated with `/api/v1/query_range` on one
//! time grid: the multiples of the resolution `step` since the epoch. Each (grid timestamp, series of
//! the step-time query) becomes one JSON telemetry line (the record of docs/telemetry.md); the other
//! queries fill in the record's other fields from the series that match it (see [`PromConfig`]).
//!
//! Long ranges are read in pages of at most [`PromConfig::page_steps`] grid points (Prometheus refuses
//! more than 11,000 points per series), one page in memory at a time. Without an end time the source
//! then follows the present: a grid point is queried once it is [`PromConfig::lag`] old, so every
//! scrape up to it has landed. The [`cursor`](LiveSource::cursor) is the last grid timestamp whose
//! lines were all handed out; a source opened with it continues at the next grid point. A dropped
//! connection, a timeout or a 5xx answer is retried with backoff (the page being read is read again
//! whole, so nothing is lost or repeated) and reported as `disconnected` / `reconnected` events.

use std::collections::{HashMap, VecDeque};
use std::io::BufReader;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{LiveSource, Poll, SourceEvent};
use crate::telemetry::parse_timestamp_ms;

/// Prometheus refuses a range query that would return more points than this per series.
pub const PROM_MAX_POINTS: u64 = 11_000;
/// Grid points per `query_range` request unless configured otherwise.
pub const DEFAULT_PAGE_STEPS: u64 = 10_000;
/// Lines handed out by one poll, at most (rounded up to a whole timestamp).
const LINES_PER_POLL: usize = 4096;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Largest response body accepted (one page of one query). A default page (10,000 points) of one
/// series is about 300 KB of JSON, so this holds a page of some 400 series; a larger answer is an
/// error that says to lower `page_steps`, never a reason to hold a gigabyte.
const MAX_BODY: u64 = 128 << 20;
/// A config file larger than this is not one.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Prometheus warnings are recorded in `explain.jsonl`: distinct ones at most this many per source,
/// each cut to this many bytes.
const MAX_WARNINGS: usize = 32;
const MAX_WARNING_BYTES: usize = 512;

/// The PromQL queries behind the record's fields. `None` (`null` in the config file) leaves the
/// field out; `step_time_ms` is required (a record without it is `missing_step_time`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromQueries {
    pub step_time_ms: String,
    /// The trainer's step counter. `None`: the step is derived from the timestamp, `ts / step`
    /// (the grid point's index since the epoch), so records still order and dedupe correctly.
    pub step: Option<String>,
    pub loss: Option<String>,
    pub data_wait_ms: Option<String>,
    pub gpu_util_pct: Option<String>,
    pub gpu_mem_util_pct: Option<String>,
    pub comm_ms: Option<String>,
}

impl Default for PromQueries {
    fn default() -> Self {
        PromQueries {
            step_time_ms: "modekeeper_step_time_ms".into(),
            step: Some("modekeeper_step".into()),
            loss: Some("modekeeper_loss".into()),
            data_wait_ms: Some("modekeeper_data_wait_ms".into()),
            gpu_util_pct: Some("DCGM_FI_DEV_GPU_UTIL".into()),
            gpu_mem_util_pct: Some(
                "100 * DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)".into(),
            ),
            comm_ms: Some("modekeeper_comm_ms".into()),
        }
    }
}

impl PromQueries {
    /// (field, query) for every configured query, the step-time query first. Owned: the callers
    /// query while holding them.
    fn list(&self) -> Vec<(Field, String)> {
        let mut v = vec![(Field::StepTime, self.step_time_ms.clone())];
        for (f, q) in [
            (Field::Step, &self.step),
            (Field::Loss, &self.loss),
            (Field::DataWait, &self.data_wait_ms),
            (Field::GpuUtil, &self.gpu_util_pct),
            (Field::GpuMem, &self.gpu_mem_util_pct),
            (Field::Comm, &self.comm_ms),
        ] {
            if let Some(q) = q.as_deref().filter(|q| !q.trim().is_empty()) {
                v.push((f, q.to_string()));
            }
        }
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    StepTime,
    Step,
    Loss,
    DataWait,
    GpuUtil,
    GpuMem,
    Comm,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::StepTime => "step_time_ms",
            Field::Step => "step",
            Field::Loss => "loss",
            Field::DataWait => "data_wait_ms",
            Field::GpuUtil => "gpu_util_pct",
            Field::GpuMem => "gpu_mem_util_pct",
            Field::Comm => "comm_ms",
        }
    }
}

/// Where and what to read. Series are tied to records by identity labels: a series' node is the
/// value of the first of [`node_labels`](Self::node_labels) it carries, its rank the value of
/// [`rank_label`](Self::rank_label). Every series of the step-time query makes one record per grid
/// point; another query's series fills a field of that record when each identity label the series
/// carries equals the record's (a DCGM series with only `Hostname` applies to every rank on that
/// node). The most specific matches win (node+rank, then node, then rank, then none) and several
/// equally specific ones are averaged (the GPUs of a node).
#[derive(Debug, Clone, PartialEq)]
pub struct PromConfig {
    /// Base URL of the Prometheus HTTP API, `http://host:9090` (a path prefix is kept).
    pub url: String,
    /// First grid point to read: `start_ms` rounded up to a multiple of `step`.
    pub start_ms: i64,
    /// Last timestamp to read; `None` follows the present forever.
    pub end_ms: Option<i64>,
    /// Query resolution (the `step` of `query_range`) and the live poll interval.
    pub step: Duration,
    /// Live mode queries a grid point only once it is this old (late scrapes land first).
    pub lag: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Grid points per request, 1..=11000.
    pub page_steps: u64,
    pub node_labels: Vec<String>,
    pub rank_label: String,
    pub queries: PromQueries,
}

/// The config file (`--prom-config FILE`, JSON); every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    url: Option<String>,
    start: Option<Value>,
    end: Option<Value>,
    step: Option<Value>,
    lag: Option<Value>,
    timeout: Option<Value>,
    page_steps: Option<u64>,
    node_labels: Option<Vec<String>>,
    rank_label: Option<String>,
    queries: Option<PromQueries>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PromConfig {
    /// The defaults: resolution 10 s, lag 15 s, timeout 60 s, pages of 10,000 points, node from
    /// `Hostname` or else `instance`, rank from `rank`, the default queries, no end.
    pub fn new(url: &str, start_ms: i64) -> PromConfig {
        PromConfig {
            url: url.to_string(),
            start_ms,
            end_ms: None,
            step: Duration::from_secs(10),
            lag: Duration::from_secs(15),
            timeout: Duration::from_secs(60),
            page_steps: DEFAULT_PAGE_STEPS,
            node_labels: vec!["Hostname".into(), "instance".into()],
            rank_label: "rank".into(),
            queries: PromQueries::default(),
        }
    }

    /// Reads a JSON config file over the defaults. `url` may be left out (the caller sets it from
    /// `--prom-url`); `start` defaults to now.
    pub fn load(path: &Path) -> anyhow::Result<PromConfig> {
        let text = crate::fsio::read_capped_text(path, MAX_CONFIG_BYTES)
            .with_context(|| format!("cannot read prometheus config {}", path.display()))?;
        PromConfig::parse(&text, now_ms())
            .with_context(|| format!("prometheus config {}", path.display()))
    }

    /// [`load`](Self::load) from text; relative times (`now-1h`) are taken from `now_ms`.
    pub fn parse(text: &str, now_ms: i64) -> anyhow::Result<PromConfig> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let f: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                anyhow::anyhow!("{inner}")
            } else {
                anyhow::anyhow!("{path}: {inner}")
            }
        })?;
        let mut c = PromConfig::new(f.url.as_deref().unwrap_or(""), now_ms);
        if let Some(v) = &f.start {
            c.start_ms = time_value(v, now_ms).context("start")?;
        }
        if let Some(v) = &f.end {
            c.end_ms = Some(time_value(v, now_ms).context("end")?);
        }
        if let Some(v) = &f.step {
            c.step = duration_value(v).context("step")?;
        }
        if let Some(v) = &f.lag {
            c.lag = duration_value(v).context("lag")?;
        }
        if let Some(v) = &f.timeout {
            c.timeout = duration_value(v).context("timeout")?;
        }
        if let Some(n) = f.page_steps {
            c.page_steps = n;
        }
        if let Some(l) = f.node_labels {
            c.node_labels = l;
        }
        if let Some(l) = f.rank_label {
            c.rank_label = l;
        }
        if let Some(q) = f.queries {
            c.queries = q;
        }
        c.check_values()?;
        Ok(c)
    }

    /// Everything but the URL.
    fn check_values(&self) -> anyhow::Result<()> {
        if self.step < Duration::from_millis(1) {
            bail!("step must be at least 1ms");
        }
        if self.page_steps == 0 || self.page_steps > PROM_MAX_POINTS {
            bail!(
                "page_steps must be 1..={PROM_MAX_POINTS}, not {}",
                self.page_steps
            );
        }
        if self.queries.step_time_ms.trim().is_empty() {
            bail!("queries.step_time_ms is required (records need a step time)");
        }
        if let Some(end) = self.end_ms
            && end < self.start_ms
        {
            bail!("end is before start");
        }
        if self.timeout.is_zero() {
            bail!("timeout must be positive");
        }
        Ok(())
    }

    fn step_ms(&self) -> i64 {
        (self.step.as_millis() as i64).max(1)
    }
}

fn time_value(v: &Value, now_ms: i64) -> anyhow::Result<i64> {
    match v {
        Value::String(s) => parse_prom_time(s, now_ms),
        Value::Number(n) => n
            .as_f64()
            .and_then(|f| parse_timestamp_ms(&f.to_string()))
            .context("not a timestamp"),
        _ => bail!("expected a time (RFC 3339, epoch seconds, `now`, `now-1h`)"),
    }
}

fn duration_value(v: &Value) -> anyhow::Result<Duration> {
    match v {
        Value::String(s) => parse_prom_duration(s),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Duration::from_secs_f64)
            .context("not a duration"),
        _ => bail!("expected a duration (`10s`, `500ms`, `1m`, or seconds)"),
    }
}

/// A time for `start`/`end`: `now`, `now-1h` / `now+5m`, RFC 3339, or epoch seconds (numbers above
/// 1e11 are milliseconds). Returns epoch milliseconds.
pub fn parse_prom_time(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("now") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(now_ms);
        }
        let (sign, d) = if let Some(d) = rest.strip_prefix('-') {
            (-1, d)
        } else if let Some(d) = rest.strip_prefix('+') {
            (1, d)
        } else {
            bail!("`{t}` is not a time (try `now-1h`)");
        };
        let d = parse_prom_duration(d)?;
        return Ok(now_ms + sign * d.as_millis() as i64);
    }
    parse_timestamp_ms(t)
        .with_context(|| format!("`{t}` is not a time (RFC 3339, epoch seconds, `now-1h`)"))
}

/// A duration: a number with a unit, `ms`, `s`, `m`, `h` or `d` (`10s`, `1.5m`), or plain seconds.
pub fn parse_prom_duration(s: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .with_context(|| format!("`{t}` is not a duration (`10s`, `500ms`, `1m`)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => bail!("`{t}`: unknown duration unit `{u}` (ms, s, m, h, d)"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Where a Prometheus source has read to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromCursor {
    /// The last grid timestamp (epoch ms) whose lines were all handed out; `None` before any.
    pub last_ts_ms: Option<i64>,
}

/// A failure talking to Prometheus: worth retrying, or not.
enum Failure {
    Transient(String),
    Fatal(anyhow::Error),
}

/// One series of one page, with its values on the page's grid.
struct Series {
    node: Option<String>,
    rank: Option<String>,
    values: Vec<Option<f64>>,
}

/// The `/api/v1/query_range` answer.
#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<RangeData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct RangeData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<RangeSeries>,
}

#[derive(Deserialize)]
struct RangeSeries {
    #[serde(default)]
    metric: HashMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// One telemetry line, fields in the documented order.
#[derive(Serialize)]
struct Line<'a> {
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<u64>,
    step_time_ms: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_wait_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_util_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_mem_util_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rank: Option<u32>,
}

/// Retry state while Prometheus is unreachable.
struct Outage {
    since: Instant,
    attempts: u32,
    first_error: String,
    last_error: String,
}

pub struct PrometheusSource {
    cfg: PromConfig,
    /// [`MAX_BODY`] (lower in tests).
    body_limit: u64,
    base: String,
    agent: ureq::Agent,
    step_ms: i64,
    /// The next grid timestamp to query.
    next_ts: i64,
    /// Last timestamp of the range `end_ms` allows (a grid point), if any.
    last_allowed: Option<i64>,
    /// Lines of the page read last, grouped by timestamp, not handed out yet.
    queue: VecDeque<(i64, Vec<Vec<u8>>)>,
    /// Every timestamp up to this one has been handed out whole.
    done_through: Option<i64>,
    /// The last grid timestamp of the page in `queue`.
    page_end: Option<i64>,
    next_attempt: Instant,
    outage: Option<Outage>,
    backoff: Duration,
    events: Vec<SourceEvent>,
    warned: Vec<String>,
    ended: bool,
    /// Pages read by this process, and how many of them had a step-time series: a range read
    /// without one is a query that matches nothing (DCGM metrics alone), not a quiet job.
    pages_read: u64,
    pages_with_step_time: u64,
    /// A `no_step_time_series` event was recorded and no series has appeared since.
    no_series_reported: bool,
}

fn align_up(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step + if t.rem_euclid(step) == 0 { 0 } else { step }
}

fn align_down(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

/// Epoch ms as Prometheus' float seconds.
fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `s` cut to at most `max` bytes (on a character boundary), marked with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Reads at most `left` bytes, then fails and remembers that it did (a `Take` would end the JSON
/// early and look like a cut connection, which is retried).
struct CappedReader<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: std::io::Read> std::io::Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // Only a body that goes on past the cap is too large.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded = true;
            return Err(std::io::Error::other("response body too large"));
        }
        let n = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

/// The URL without credentials, for messages and reports.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(i), Some(at)) if at > i && !url[i + 3..at].contains('/') => {
            format!("{}{}", &url[..i + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl PrometheusSource {
    /// Checks the config, makes one request per query (so an unreachable server or a PromQL error
    /// fails here, in one line), and positions the source after `cursor` when given, else at
    /// `cfg.start_ms`.
    pub fn open(cfg: PromConfig, cursor: Option<&Value>) -> anyhow::Result<PrometheusSource> {
        Self::open_with_limit(cfg, cursor, MAX_BODY)
    }

    /// [`open`](Self::open) with another cap on one answer's body: the controller reads many
    /// workloads' series in one process and caps each far lower.
    pub fn open_with_limit(
        cfg: PromConfig,
        cursor: Option<&Value>,
        body_limit: u64,
    ) -> anyhow::Result<PrometheusSource> {
        cfg.check_values()
            .context("invalid prometheus source settings")?;
        let base = cfg.url.trim().trim_end_matches('/').to_string();
        if base.is_empty() {
            bail!("no Prometheus URL (--prom-url http://HOST:9090)");
        }
        let uri: ureq::http::Uri = base
            .parse()
            .map_err(|e| anyhow::anyhow!("bad Prometheus URL `{}`: {e}", redact(&base)))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => bail!(
                "bad Prometheus URL `{}`: expected http:// or https://",
                redact(&base)
            ),
        }
        if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
            bail!(
                "bad Prometheus URL `{}`: expected http(s)://HOST[:PORT][/PREFIX]",
                redact(&base)
            );
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout))
            .timeout_connect(Some(cfg.timeout.min(Duration::from_secs(10))))
            .user_agent(concat!("modekeeper/", env!("CARGO_PKG_VERSION")))
            // A redirect could lead to another host (with the URL's credentials); say so instead.
            .max_redirects(0)
            .build()
            .into();
        let step_ms = cfg.step_ms();
        let mut next_ts = align_up(cfg.start_ms, step_ms);
        let mut done_through = None;
        if let Some(c) = cursor {
            let c: PromCursor = serde_json::from_value(c.clone())
                .context("the saved prometheus cursor is not valid")?;
            if let Some(last) = c.last_ts_ms {
                next_ts = align_down(last, step_ms) + step_ms;
                done_through = Some(last);
            }
        }
        let last_allowed = cfg.end_ms.map(|e| align_down(e, step_ms));
        let mut src = PrometheusSource {
            base,
            agent,
            step_ms,
            next_ts,
            last_allowed,
            queue: VecDeque::new(),
            done_through,
            page_end: None,
            next_attempt: Instant::now(),
            outage: None,
            backoff: BACKOFF_FIRST,
            events: Vec::new(),
            warned: Vec::new(),
            ended: false,
            pages_read: 0,
            pages_with_step_time: 0,
            no_series_reported: false,
            cfg,
            body_limit,
        };
        // One single-point request per query: reachability and PromQL syntax, before watch starts.
        let probe = align_down(src.next_ts.min(now_ms()), step_ms);
        let queries = src.cfg.queries.list();
        for (field, q) in &queries {
            match src.query_range(*field, q, probe, probe) {
                Ok(_) => {}
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(e)) => {
                    bail!("cannot reach Prometheus at {}: {e}", redact(&src.base))
                }
            }
        }
        Ok(src)
    }

    fn event(&mut self, kind: &str, detail: Value) {
        self.events.push(SourceEvent {
            kind: kind.into(),
            detail,
        });
    }

    /// One `query_range` request, its series laid out on the grid `start..=end`.
    fn query_range(
        &mut self,
        field: Field,
        query: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<Series>, Failure> {
        let url = format!("{}/api/v1/query_range", self.base);
        let what = || format!("{} query `{}`", field.name(), one_line(query));
        let resp = self
            .agent
            .get(&url)
            .query("query", query)
            .query("start", secs(start))
            .query("end", secs(end))
            .query("step", secs(self.step_ms))
            .header("Accept", "application/json")
            .call();
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => return Err(classify(e)),
        };
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            let to = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            return Err(Failure::Fatal(anyhow::anyhow!(
                "{} answered HTTP {status}, a redirect to `{}`; redirects are not followed: set --prom-url to the server's own address",
                redact(&url),
                cut(&redact(&one_line(to)), 256)
            )));
        }
        let mut body = CappedReader {
            inner: resp.body_mut().with_config().reader(),
            left: self.body_limit,
            exceeded: false,
        };
        let parsed: Result<ApiResponse, serde_json::Error> =
            serde_json::from_reader(BufReader::with_capacity(64 * 1024, &mut body));
        if body.exceeded {
            return Err(Failure::Fatal(anyhow::anyhow!(
                "the answer to the {} is larger than {}; lower page_steps (--prom-config, or the controller's prometheus-config) or select fewer series",
                what(),
                crate::fsio::shown_bytes(self.body_limit)
            )));
        }
        let api = match parsed {
            Ok(a) => a,
            // A cut connection shows up as an I/O error or an early end of the JSON.
            Err(e) if e.is_io() || e.is_eof() => {
                return Err(Failure::Transient(one_line(&format!(
                    "reading the answer to the {}: {e}",
                    what()
                ))));
            }
            Err(e) => {
                return Err(match status {
                    500..=599 | 429 => Failure::Transient(format!("HTTP {status}")),
                    401 | 403 => Failure::Fatal(anyhow::anyhow!(
                        "Prometheus at {} refused the request (HTTP {status}): authentication required",
                        redact(&self.base)
                    )),
                    404 => Failure::Fatal(anyhow::anyhow!(
                        "{url} is not a Prometheus API (HTTP 404); check --prom-url",
                        url = redact(&url)
                    )),
                    _ => Failure::Fatal(anyhow::anyhow!(
                        "{} did not answer like Prometheus (HTTP {status}): {}",
                        redact(&url),
                        one_line(&e.to_string())
                    )),
                });
            }
        };
        if api.status != "success" {
            let kind = api.error_type.as_deref().unwrap_or("error");
            let msg = one_line(api.error.as_deref().unwrap_or("no message"));
            // "unavailable" (503) and "internal" (500) can pass; bad_data/execution/timeout won't.
            if matches!(status, 500..=599 | 429) && matches!(kind, "unavailable" | "internal") {
                return Err(Failure::Transient(format!("HTTP {status} {kind}: {msg}")));
            }
            return Err(Failure::Fatal(anyhow::anyhow!(
                "Prometheus rejected the {}: {kind}: {msg}",
                what()
            )));
        }
        for w in api.warnings {
            if self.warned.len() >= MAX_WARNINGS {
                break;
            }
            let w = cut(&one_line(&w), MAX_WARNING_BYTES);
            if !self.warned.contains(&w) {
                self.warned.push(w.clone());
                self.event(
                    "prometheus_warning",
                    json!({"field": field.name(), "warning": w}),
                );
            }
        }
        let Some(data) = api.data else {
            return Err(Failure::Fatal(anyhow::anyhow!(
                "Prometheus answered the {} without data",
                what()
            )));
        };
        if data.result_type != "matrix" {
            return Err(Failure::Fatal(anyhow::anyhow!(
                "the {} gave a {} result, not a range of series",
                what(),
                data.result_type
            )));
        }
        let len = ((end - start) / self.step_ms + 1) as usize;
        let mut out = Vec::with_capacity(data.result.len());
        for s in data.result {
            let node = self
                .cfg
                .node_labels
                .iter()
                .find_map(|l| s.metric.get(l))
                .cloned();
            let rank = s.metric.get(&self.cfg.rank_label).cloned();
            let mut values = vec![None; len];
            for (t, v) in s.values {
                let ms = (t * 1000.0).round() as i64;
                if ms < start || ms > end || (ms - start) % self.step_ms != 0 {
                    continue;
                }
                let v = match v.as_str() {
                    "NaN" => f64::NAN,
                    "+Inf" | "Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    s => match s.parse::<f64>() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                };
                values[((ms - start) / self.step_ms) as usize] = Some(v);
            }
            out.push(Series { node, rank, values });
        }
        Ok(out)
    }

    /// Reads grid points `start..=end` of every query and queues their lines.
    fn read_page(&mut self, start: i64, end: i64) -> Result<(), Failure> {
        let queries = self.cfg.queries.list();
        let mut results: Vec<(Field, Vec<Series>)> = Vec::with_capacity(queries.len());
        for (field, q) in &queries {
            results.push((*field, self.query_range(*field, q, start, end)?));
        }
        let (_, mut records) = results.remove(0);
        self.pages_read += 1;
        if records.is_empty() {
            if !self.no_series_reported {
                self.no_series_reported = true;
                let others: Vec<&str> = results
                    .iter()
                    .filter(|(_, s)| !s.is_empty())
                    .map(|(f, _)| f.name())
                    .collect();
                let message = self.no_series_message(start, end);
                self.event(
                    "no_step_time_series",
                    json!({"query": self.cfg.queries.step_time_ms, "start_ms": start, "end_ms": end,
                           "queries_with_series": others, "message": message}),
                );
            }
        } else {
            self.pages_with_step_time += 1;
            self.no_series_reported = false;
        }
        // Stable output order: by node, then rank (numerically when it is a number).
        records.sort_by(|a, b| {
            let key = |s: &Series| {
                (
                    s.node.clone(),
                    s.rank.as_deref().and_then(|r| r.parse::<u64>().ok()),
                    s.rank.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        // Per other query: identity -> its series.
        type Index<'a> = HashMap<(Option<&'a str>, Option<&'a str>), Vec<&'a Series>>;
        let indexes: Vec<(Field, Index)> = results
            .iter()
            .map(|(f, series)| {
                let mut m: Index = HashMap::new();
                for s in series {
                    m.entry((s.node.as_deref(), s.rank.as_deref()))
                        .or_default()
                        .push(s);
                }
                (*f, m)
            })
            .collect();
        let len = ((end - start) / self.step_ms + 1) as usize;
        for i in 0..len {
            let ts = start + i as i64 * self.step_ms;
            let mut lines = Vec::new();
            for r in &records {
                let Some(step_time) = r.values[i] else {
                    continue;
                };
                let (node, rank) = (r.node.as_deref(), r.rank.as_deref());
                let mut line = Line {
                    ts,
                    step: None,
                    step_time_ms: if step_time.is_finite() {
                        json!(step_time)
                    } else {
                        // Counted as non_finite by the ingest, like the same value in a file.
                        json!(step_time.to_string())
                    },
                    loss: None,
                    data_wait_ms: None,
                    gpu_util_pct: None,
                    gpu_mem_util_pct: None,
                    comm_ms: None,
                    node,
                    rank: rank.and_then(|r| r.parse().ok()),
                };
                let mut step_from_query = false;
                for (field, index) in &indexes {
                    let v = matching_value(index, node, rank, i);
                    let v = v.filter(|v| v.is_finite());
                    match field {
                        Field::Step => {
                            step_from_query = true;
                            line.step = v.filter(|v| *v >= 0.0).map(|v| v.round() as u64);
                        }
                        Field::Loss => line.loss = v,
                        Field::DataWait => line.data_wait_ms = v,
                        Field::GpuUtil => line.gpu_util_pct = v,
                        Field::GpuMem => line.gpu_mem_util_pct = v,
                        Field::Comm => line.comm_ms = v,
                        Field::StepTime => {}
                    }
                }
                if !step_from_query {
                    line.step = Some((ts / self.step_ms) as u64);
                }
                lines.push(serde_json::to_vec(&line).expect("a telemetry line serialises"));
            }
            if !lines.is_empty() {
                self.queue.push_back((ts, lines));
            }
        }
        self.page_end = Some(end);
        Ok(())
    }

    fn no_series_message(&self, start: i64, end: i64) -> String {
        format!(
            "the step-time query `{}` returned no series for {}–{}: without step times there is nothing to judge (GPU metrics alone are not enough; docs/telemetry.md shows recording rules that publish modekeeper_step_time_ms)",
            cut(&one_line(&self.cfg.queries.step_time_ms), 200),
            rfc3339_ms(start),
            rfc3339_ms(end)
        )
    }

    /// The range ended: an error when every page this process read lacked a step-time series.
    fn end(&mut self) -> anyhow::Result<Poll> {
        self.ended = true;
        if self.pages_read > 0 && self.pages_with_step_time == 0 {
            let (start, end) = (
                align_up(self.cfg.start_ms, self.step_ms),
                self.last_allowed.unwrap_or(self.next_ts),
            );
            return Err(crate::error::input_error(
                "no_step_time_series",
                format!("Prometheus: {}", self.no_series_message(start, end)),
            ));
        }
        Ok(Poll::Ended)
    }

    /// The next page to read, if its first point is due.
    fn due_range(&self, now: i64) -> Option<(i64, i64)> {
        let lag = self.cfg.lag.as_millis() as i64;
        let mut upper = align_down(now - lag, self.step_ms);
        if let Some(last) = self.last_allowed {
            upper = upper.min(last);
        }
        if self.next_ts > upper {
            return None;
        }
        let end = (self.next_ts + (self.cfg.page_steps as i64 - 1) * self.step_ms).min(upper);
        Some((self.next_ts, end))
    }

    /// Hands out whole timestamps from the queue, at least one, stopping after [`LINES_PER_POLL`].
    fn hand_out(&mut self, out: &mut Vec<Vec<u8>>) -> bool {
        let mut n = 0;
        let mut any = false;
        while n < LINES_PER_POLL {
            let Some((ts, lines)) = self.queue.pop_front() else {
                break;
            };
            n += lines.len();
            out.extend(lines);
            self.done_through = Some(ts);
            any = true;
        }
        if self.queue.is_empty()
            && let Some(end) = self.page_end.take()
        {
            self.done_through = Some(end);
        }
        any
    }

    fn fail(&mut self, error: String) {
        match &mut self.outage {
            Some(o) => {
                o.attempts += 1;
                o.last_error = error;
            }
            None => {
                self.event(
                    "disconnected",
                    json!({"url": redact(&self.base), "error": error}),
                );
                self.outage = Some(Outage {
                    since: Instant::now(),
                    attempts: 1,
                    first_error: error.clone(),
                    last_error: error,
                });
            }
        }
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn recovered(&mut self) {
        self.backoff = BACKOFF_FIRST;
        if let Some(o) = self.outage.take() {
            self.event(
                "reconnected",
                json!({
                    "url": redact(&self.base),
                    "attempts": o.attempts,
                    "down_ms": o.since.elapsed().as_millis() as u64,
                    "error": o.first_error,
                    "last_error": o.last_error,
                }),
            );
        }
    }
}

/// The value of field series matching a record's identity at grid index `i`: the most specific
/// identity that has values wins, equally specific series are averaged.
fn matching_value(
    index: &HashMap<(Option<&str>, Option<&str>), Vec<&Series>>,
    node: Option<&str>,
    rank: Option<&str>,
    i: usize,
) -> Option<f64> {
    let levels = [(node, rank), (node, None), (None, rank), (None, None)];
    for (k, key) in levels.iter().enumerate() {
        if levels[..k].contains(key) {
            continue;
        }
        let Some(series) = index.get(key) else {
            continue;
        };
        let (mut sum, mut n) = (0.0, 0u32);
        for s in series {
            if let Some(v) = s.values[i] {
                sum += v;
                n += 1;
            }
        }
        if n > 0 {
            return Some(if n == 1 { sum } else { sum / f64::from(n) });
        }
    }
    None
}

fn classify(e: ureq::Error) -> Failure {
    use ureq::Error as E;
    match e {
        E::BadUri(m) => Failure::Fatal(anyhow::anyhow!("bad Prometheus URL: {}", one_line(&m))),
        E::BodyExceedsLimit(n) => Failure::Fatal(anyhow::anyhow!(
            "a Prometheus answer exceeded {n} bytes; lower page_steps"
        )),
        E::Tls(m) => Failure::Fatal(anyhow::anyhow!("TLS error talking to Prometheus: {m}")),
        other => Failure::Transient(one_line(&other.to_string())),
    }
}

impl PrometheusSource {
    /// How long a [`poll`](LiveSource::poll) would find nothing to do: zero while lines wait to be
    /// handed out, else the time until the next grid point is due (or the next retry). A caller
    /// polling with no wait sleeps this long itself (the controller, on its async runtime).
    pub fn idle_for(&self) -> Duration {
        if !self.queue.is_empty() || self.ended {
            return Duration::ZERO;
        }
        self.next_attempt.saturating_duration_since(Instant::now())
    }
}

impl LiveSource for PrometheusSource {
    fn poll(&mut self, out: &mut Vec<Vec<u8>>, wait: Duration) -> anyhow::Result<Poll> {
        let deadline = Instant::now() + wait;
        loop {
            if self.hand_out(out) {
                return Ok(Poll::Open);
            }
            if self.ended {
                return Ok(Poll::Ended);
            }
            let now = Instant::now();
            if now >= self.next_attempt {
                let wall = now_ms();
                match self.due_range(wall) {
                    Some((start, end)) => match self.read_page(start, end) {
                        Ok(()) => {
                            self.recovered();
                            self.next_ts = end + self.step_ms;
                            continue;
                        }
                        Err(Failure::Fatal(e)) => return Err(e),
                        Err(Failure::Transient(e)) => {
                            self.queue.clear();
                            self.page_end = None;
                            self.fail(e);
                        }
                    },
                    None => {
                        if self.last_allowed.is_some_and(|last| self.next_ts > last) {
                            return self.end();
                        }
                        // Caught up: the next grid point is due once it is `lag` old.
                        let due = self.next_ts + self.cfg.lag.as_millis() as i64;
                        let ms = (due - wall).clamp(1, 3_600_000) as u64;
                        self.next_attempt = now + Duration::from_millis(ms);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Poll::Open);
            }
            std::thread::sleep(
                self.next_attempt
                    .min(deadline)
                    .saturating_duration_since(now),
            );
        }
    }

    fn cursor(&self) -> Value {
        json!(PromCursor {
            last_ts_ms: self.done_through,
        })
    }

    fn drain_events(&mut self) -> Vec<SourceEvent> {
        std::mem::take(&mut self.events)
    }

    fn describe(&self) -> Value {
        json!({
            "kind": "prometheus",
            "url": redact(&self.base),
            "step_ms": self.step_ms,
            "start_ms": self.cfg.start_ms,
            "end_ms": self.cfg.end_ms,
            "page_steps": self.cfg.page_steps,
            "node_labels": self.cfg.node_labels,
            "rank_label": self.cfg.rank_label,
            "queries": self.cfg.queries,
        })
    }
}

/// A one-trick HTTP server on loopback for tests: every request gets `answer` (headers and body),
/// then the connection is closed. Returns its URL.
#[cfg(test)]
pub(crate) fn serve_loopback(answer: impl Fn(&mut std::net::TcpStream) + Send + 'static) -> String {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            answer(&mut c);
        }
    });
    url
}

#[cfg(test)]
mod tests {
    use super::serve_loopback as serve;
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_prom_time("now", 5_000).unwrap(), 5_000);
        assert_eq!(parse_prom_time("now-2s", 5_000).unwrap(), 3_000);
        assert_eq!(
            parse_prom_time("2026-01-01T00:00:00Z", 0).unwrap(),
            1_767_225_600_000
        );
        assert_eq!(parse_prom_time("1767225600", 0).unwrap(), 1_767_225_600_000);
        assert!(parse_prom_time("yesterday", 0).is_err());
        assert_eq!(
            parse_prom_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_prom_duration("1.5m").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(parse_prom_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_prom_duration("10 parsecs").is_err());
    }

    #[test]
    fn config_file_over_defaults() {
        let c = PromConfig::parse(
            r#"{"url": "http://p:9090", "start": "now-1h", "step": "5s",
                "queries": {"loss": null, "gpu_util_pct": "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)"}}"#,
            10_000_000,
        )
        .unwrap();
        assert_eq!(c.start_ms, 10_000_000 - 3_600_000);
        assert_eq!(c.step, Duration::from_secs(5));
        assert_eq!(c.queries.loss, None);
        assert_eq!(c.queries.step_time_ms, "modekeeper_step_time_ms");
        let e = PromConfig::parse(r#"{"queries": {"los": "x"}}"#, 0).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.starts_with("queries.los: unknown field `los`"), "{msg}");
        assert!(!msg.contains('\n'));
        let e = PromConfig::parse(r#"{"page_steps": 20000}"#, 0).unwrap_err();
        assert!(format!("{e:#}").contains("page_steps"));
    }

    #[test]
    fn bad_urls_fail_in_one_line() {
        for (url, want) in [
            ("", "no Prometheus URL"),
            ("ftp://x", "expected http"),
            ("http://", "bad Prometheus URL"),
            ("http://127.0.0.1:1", "cannot reach Prometheus"),
        ] {
            let e = PrometheusSource::open(PromConfig::new(url, 0), None)
                .err()
                .unwrap_or_else(|| panic!("{url} opened"));
            let msg = format!("{e:#}");
            assert!(msg.contains(want), "{url}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn the_most_specific_series_wins_equal_ones_average() {
        let s = |node: Option<&str>, rank: Option<&str>, v: Option<f64>| Series {
            node: node.map(String::from),
            rank: rank.map(String::from),
            values: vec![v],
        };
        let all = [
            s(Some("a"), None, Some(10.0)),
            s(Some("a"), None, Some(20.0)),
            s(Some("a"), Some("1"), Some(99.0)),
            s(Some("a"), Some("2"), None),
            s(None, None, Some(7.0)),
        ];
        let mut index: HashMap<(Option<&str>, Option<&str>), Vec<&Series>> = HashMap::new();
        for x in &all {
            index
                .entry((x.node.as_deref(), x.rank.as_deref()))
                .or_default()
                .push(x);
        }
        let at = |n, r| matching_value(&index, n, r, 0);
        assert_eq!(at(Some("a"), Some("1")), Some(99.0));
        // Rank 2's own series has no value here: the node's GPUs, averaged.
        assert_eq!(at(Some("a"), Some("2")), Some(15.0));
        assert_eq!(at(Some("a"), None), Some(15.0));
        assert_eq!(at(Some("b"), Some("1")), Some(7.0));
    }

    fn one_query(url: &str) -> PromConfig {
        let mut c = PromConfig::new(url, 0);
        c.end_ms = Some(10_000);
        c.timeout = Duration::from_secs(20);
        c.queries = PromQueries {
            step_time_ms: "x".into(),
            step: None,
            loss: None,
            data_wait_ms: None,
            gpu_util_pct: None,
            gpu_mem_util_pct: None,
            comm_ms: None,
        };
        c
    }

    /// Only GPU metrics, no step-time series: one event while reading, and at the end of a finite
    /// range an input error (exit 2), never a silent `source_ended` with no window.
    #[test]
    fn a_step_time_query_without_series_fails_loudly() {
        use std::io::Write;
        let url = serve(|c| {
            let body = json!({"status": "success", "data": {"resultType": "matrix", "result": []}})
                .to_string();
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        let mut cfg = one_query(&url);
        cfg.page_steps = 2;
        let mut src = PrometheusSource::open(cfg, None).unwrap();
        let mut out = Vec::new();
        let mut events = Vec::new();
        let err = loop {
            match src.poll(&mut out, Duration::from_secs(5)) {
                Ok(Poll::Open) => {}
                Ok(Poll::Ended) => panic!("ended without an error"),
                Err(e) => break e,
            }
            events.extend(src.drain_events());
        };
        events.extend(src.drain_events());
        assert!(out.is_empty());
        assert_eq!(crate::error::exit_code(&err), 2);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("the step-time query `x` returned no series for 1970-01-01T00:00:00Z–1970-01-01T00:00:10Z"),
            "{msg}"
        );
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["no_step_time_series"],
            "reported once, not per page"
        );
        assert_eq!(events[0].detail["query"], "x");
        assert!(
            events[0].detail["message"]
                .as_str()
                .unwrap()
                .contains("no series")
        );
    }

    #[test]
    fn a_redirect_is_not_followed() {
        use std::io::Write;
        let url = serve(|c| {
            let _ = c.write_all(b"HTTP/1.1 302 Found\r\nLocation: http://u:secret@other.invalid:9090/api/v1/query_range\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        });
        let e = PrometheusSource::open(one_query(&url), None)
            .err()
            .expect("a redirect must not open");
        let msg = format!("{e:#}");
        assert!(msg.contains("HTTP 302, a redirect to `http://other.invalid:9090/api/v1/query_range`; redirects are not followed"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn warnings_are_cut_and_counted() {
        use std::io::Write;
        let url = serve(|c| {
            let warnings: Vec<String> = (0..100)
                .map(|i| format!("{i} {}", "w".repeat(100_000)))
                .collect();
            let body = json!({"status": "success", "warnings": warnings,
                "data": {"resultType": "matrix", "result": []}})
            .to_string();
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        let mut src = PrometheusSource::open(one_query(&url), None).unwrap();
        let events = src.drain_events();
        assert_eq!(events.len(), MAX_WARNINGS);
        for e in &events {
            let w = e.detail["warning"].as_str().unwrap();
            assert!(w.len() <= MAX_WARNING_BYTES + '…'.len_utf8(), "{}", w.len());
            assert!(w.ends_with('…'));
        }
    }

    #[test]
    fn an_answer_over_the_body_limit_is_an_error_not_a_retry() {
        use std::io::Write;
        let url = serve(|c| {
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            );
            // JSON whitespace, forever (until the client hangs up).
            let chunk = vec![b' '; 1 << 20];
            while c.write_all(&chunk).is_ok() {}
        });
        // The real limit is 128 MiB; reading that much JSON whitespace in a debug build is slow.
        assert_eq!(MAX_BODY, 128 << 20);
        let e = PrometheusSource::open_with_limit(one_query(&url), None, 1 << 20)
            .err()
            .expect("an endless answer must not open");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("is larger than 1 MiB; lower page_steps"),
            "{msg}"
        );
    }

    #[test]
    fn grid() {
        assert_eq!(align_up(10_001, 5_000), 15_000);
        assert_eq!(align_up(10_000, 5_000), 10_000);
        assert_eq!(align_down(14_999, 5_000), 10_000);
        assert_eq!(secs(1_500), "1.500");
        assert_eq!(redact("http://u:p@h:9090/x"), "http://h:9090/x");
    }
}
