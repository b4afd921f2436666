//! Which Prometheus series are a workload's: the operator's selector template and queries from the
//! settings ConfigMap, narrowed by the workload's own matchers. Pure: settings text in, a
//! [`PromConfig`] for one workload out.
//!
//! Every query names `$selector` where its series' label matchers go
//! (`modekeeper_step_time_ms{$selector}`); the controller puts there the operator's template
//! (`prometheus-selector`, by default `namespace="$namespace",pod=~"$workload-.+"`) with the
//! workload's namespace and name filled in, then the matchers of the workload's
//! `modekeeper.io/prometheus-selector` annotation. Those come from whoever may edit the workload, so
//! they are parsed as label matchers (nothing else gets into the query), and they can only narrow:
//! the operator's matchers (its namespace among them) always stay.

use std::time::Duration;

use serde_json::Value;

use crate::plan::WorkloadKind;
use crate::telemetry::live::{PromConfig, PromQueries, parse_prom_duration};

/// The annotation with a workload's own extra label matchers.
pub const SELECTOR_ANNOTATION: &str = "modekeeper.io/prometheus-selector";
/// Where a query's matchers go.
const SELECTOR_PLACEHOLDER: &str = "$selector";
/// Matchers one selector may hold: more is not a selector a person wrote.
const MAX_MATCHERS: usize = 16;
const MAX_SELECTOR_BYTES: usize = 1024;
/// Grid points per query unless `prometheus-config` says otherwise.
pub const CONTROLLER_PAGE_STEPS: u64 = 1_000;
/// How far back from now a new session may start reading.
const MAX_LOOKBACK: Duration = Duration::from_secs(7 * 24 * 3600);

/// One label matcher: `label op "value"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }

    fn is_regex(self) -> bool {
        matches!(self, MatchOp::Re | MatchOp::NotRe)
    }
}

impl Matcher {
    /// PromQL text: the value double-quoted with `\` and `"` escaped.
    fn render(&self) -> String {
        let mut v = String::with_capacity(self.value.len() + 2);
        for c in self.value.chars() {
            match c {
                '\\' => v.push_str("\\\\"),
                '"' => v.push_str("\\\""),
                '\n' => v.push_str("\\n"),
                c => v.push(c),
            }
        }
        format!("{}{}\"{v}\"", self.label, self.op.as_str())
    }
}

/// Parses `label op "value", …` (PromQL label matchers without the braces; values in double
/// quotes with `\"` and `\\` escapes). Empty text is no matcher.
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, String> {
    if text.len() > MAX_SELECTOR_BYTES {
        return Err(format!("longer than {MAX_SELECTOR_BYTES} bytes"));
    }
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let label = &rest[..end];
        let valid_label = label
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !valid_label {
            return Err(format!("expected a label name at {:?}", clip(rest)));
        }
        // Every query names its metrics: a second metric name is a PromQL error at Prometheus.
        if label == "__name__" {
            return Err(
                "__name__ is each query's metric name, not a matcher of the selector".into(),
            );
        }
        rest = rest[end..].trim_start();
        let op = [
            ("=~", MatchOp::Re),
            ("!~", MatchOp::NotRe),
            ("!=", MatchOp::Ne),
            ("=", MatchOp::Eq),
        ]
        .into_iter()
        .find(|(s, _)| rest.starts_with(s));
        let Some((op_text, op)) = op else {
            return Err(format!(
                "expected =, !=, =~ or !~ after {label:?} at {:?}",
                clip(rest)
            ));
        };
        rest = rest[op_text.len()..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            return Err(format!(
                "the value of {label:?} must be in double quotes, at {:?}",
                clip(rest)
            ));
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("the value of {label:?} has no closing quote")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, c @ ('"' | '\\'))) => value.push(c),
                    Some((_, 'n')) => value.push('\n'),
                    _ => {
                        return Err(format!(
                            "the value of {label:?}: only \\\" \\\\ and \\n escapes"
                        ));
                    }
                },
                Some((_, c)) if c.is_control() => {
                    return Err(format!("the value of {label:?} holds a control character"));
                }
                Some((_, c)) => value.push(c),
            }
        };
        if op.is_regex() {
            regex_syntax::Parser::new()
                .parse(&value)
                .map_err(|e| format!("the regex of {label:?} does not parse: {}", one_line(&e)))?;
            re2_portable(&value)
                .map_err(|e| format!("the regex of {label:?}: {e} (Prometheus runs RE2)"))?;
        }
        out.push(Matcher {
            label: label.to_string(),
            op,
            value,
        });
        if out.len() > MAX_MATCHERS {
            return Err(format!("more than {MAX_MATCHERS} matchers"));
        }
        rest = body[close + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            if rest.is_empty() {
                return Err("a trailing comma".into());
            }
        } else if !rest.is_empty() {
            return Err(format!(
                "expected a comma between matchers at {:?}",
                clip(rest)
            ));
        }
    }
    Ok(out)
}

/// Go's RE2 caps a counted repetition (and nested ones, multiplied) at this.
const RE2_MAX_REPEAT: u32 = 1000;

/// Whether Prometheus (Go's regexp, RE2 syntax) takes `re` as the Rust parser read it: a regex
/// Rust accepts and Go refuses fails at Prometheus on every try of the session, and one Go reads
/// otherwise (`[a-z&&[^b]]`, `\<`) would select other series than checked. Only the common
/// subset passes.
fn re2_portable(re: &str) -> Result<(), String> {
    let ast = regex_syntax::ast::parse::Parser::new()
        .parse(re)
        .map_err(|e| format!("does not parse: {}", one_line(&e)))?;
    re2_ast(&ast, RE2_MAX_REPEAT)
}

fn re2_ast(ast: &regex_syntax::ast::Ast, budget: u32) -> Result<(), String> {
    use regex_syntax::ast::{AssertionKind as A, Ast, GroupKind, RepetitionKind, RepetitionRange};
    match ast {
        Ast::Empty(_) | Ast::Dot(_) | Ast::ClassPerl(_) => Ok(()),
        Ast::Flags(f) => re2_flags(&f.flags),
        Ast::Literal(l) => re2_literal(l),
        Ast::Assertion(a) => match a.kind {
            A::StartLine | A::EndLine | A::StartText | A::EndText => Ok(()),
            A::WordBoundary | A::NotWordBoundary => Ok(()),
            _ => Err("a word-boundary form other than \\b and \\B".into()),
        },
        Ast::ClassUnicode(c) => re2_unicode(c),
        Ast::ClassBracketed(c) => re2_class(&c.kind),
        Ast::Repetition(r) => {
            let budget = match &r.op.kind {
                RepetitionKind::Range(range) => {
                    let m = match *range {
                        RepetitionRange::Exactly(n) | RepetitionRange::AtLeast(n) => n,
                        RepetitionRange::Bounded(_, n) => n,
                    };
                    if m > budget {
                        return Err(format!(
                            "a repetition count above {RE2_MAX_REPEAT} (nested counts multiply)"
                        ));
                    }
                    budget.checked_div(m).unwrap_or(budget)
                }
                _ => budget,
            };
            re2_ast(&r.ast, budget)
        }
        Ast::Group(g) => {
            match &g.kind {
                GroupKind::CaptureIndex(_) => {}
                GroupKind::CaptureName { starts_with_p, .. } => {
                    if !starts_with_p {
                        return Err("a named group other than (?P<name>…)".into());
                    }
                }
                GroupKind::NonCapturing(f) => re2_flags(f)?,
            }
            re2_ast(&g.ast, budget)
        }
        Ast::Alternation(a) => a.asts.iter().try_for_each(|a| re2_ast(a, budget)),
        Ast::Concat(c) => c.asts.iter().try_for_each(|a| re2_ast(a, budget)),
    }
}

fn re2_flags(f: &regex_syntax::ast::Flags) -> Result<(), String> {
    use regex_syntax::ast::{Flag, FlagsItemKind};
    for item in &f.items {
        if let FlagsItemKind::Flag(flag) = &item.kind
            && !matches!(
                flag,
                Flag::CaseInsensitive | Flag::MultiLine | Flag::DotMatchesNewLine | Flag::SwapGreed
            )
        {
            return Err("a flag other than i, m, s and U".into());
        }
    }
    Ok(())
}

fn re2_literal(l: &regex_syntax::ast::Literal) -> Result<(), String> {
    use regex_syntax::ast::{HexLiteralKind, LiteralKind};
    match &l.kind {
        LiteralKind::Verbatim
        | LiteralKind::Meta
        | LiteralKind::Superfluous
        | LiteralKind::Special(_)
        | LiteralKind::HexFixed(HexLiteralKind::X)
        | LiteralKind::HexBrace(HexLiteralKind::X) => Ok(()),
        _ => Err("an escape other than \\xHH, \\x{…} and \\a \\f \\t \\n \\r \\v".into()),
    }
}

/// Go knows the general categories by their short names (and `Any`, and scripts by their exact
/// names); Rust also takes long and loosely spelled names. Only the short ones pass.
fn re2_unicode(c: &regex_syntax::ast::ClassUnicode) -> Result<(), String> {
    use regex_syntax::ast::ClassUnicodeKind;
    const CATEGORIES: &[&str] = &[
        "Any", "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me",
        "Mn", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc",
        "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
    ];
    match &c.kind {
        ClassUnicodeKind::OneLetter(_) => Ok(()),
        ClassUnicodeKind::Named(n) if CATEGORIES.contains(&n.as_str()) => Ok(()),
        _ => Err("a Unicode class other than a general category (\\pL, \\p{Lu})".into()),
    }
}

fn re2_class(set: &regex_syntax::ast::ClassSet) -> Result<(), String> {
    use regex_syntax::ast::{ClassSet, ClassSetItem};
    let item = match set {
        ClassSet::BinaryOp(_) => return Err("a class operation (&&, --, ~~)".into()),
        ClassSet::Item(i) => i,
    };
    let items = match item {
        ClassSetItem::Union(u) => u.items.iter().collect::<Vec<_>>(),
        i => vec![i],
    };
    for i in items {
        match i {
            ClassSetItem::Empty(_) | ClassSetItem::Ascii(_) | ClassSetItem::Perl(_) => {}
            ClassSetItem::Literal(l) => re2_literal(l)?,
            ClassSetItem::Range(r) => {
                re2_literal(&r.start)?;
                re2_literal(&r.end)?;
            }
            ClassSetItem::Unicode(u) => re2_unicode(u)?,
            ClassSetItem::Bracketed(_) | ClassSetItem::Union(_) => {
                return Err("a class nested in a class".into());
            }
        }
    }
    Ok(())
}

fn clip(s: &str) -> String {
    s.chars().take(24).collect()
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Prometheus settings of the settings ConfigMap, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSettings {
    /// Empty: not configured (a session asking for Prometheus is an error that says so).
    pub url: String,
    /// The operator's matchers; values may hold `$namespace` and `$workload`.
    pub selector: Vec<Matcher>,
    /// How far back a new session starts reading (never before the workload was created).
    pub lookback: Duration,
    /// Resolution, lag, timeout, paging, identity labels and queries (`start`, `end` and `url`
    /// are the controller's).
    pub base: PromConfig,
}

impl PromSettings {
    /// From the settings keys `prometheus-url`, `prometheus-selector`, `prometheus-lookback` and
    /// `prometheus-config` (a JSON object of the `--prom-config` file's keys but `url`, `start` and
    /// `end`; every query must contain `$selector`).
    pub fn parse(
        url: &str,
        selector: &str,
        lookback: &str,
        config: &str,
    ) -> Result<PromSettings, Vec<String>> {
        let mut errors = Vec::new();
        let url = url.trim().to_string();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            errors.push(format!(
                "prometheus-url: {url:?} is not an http:// or https:// URL"
            ));
        }
        let selector = parse_matchers(selector)
            .and_then(|ms| {
                match ms
                    .iter()
                    .find(|m| m.value.contains("$pods") && !m.op.is_regex())
                {
                    Some(m) => Err(format!(
                        "$pods is a regex of pod names: match it with =~ or !~, not {}",
                        m.op.as_str()
                    )),
                    None => Ok(ms),
                }
            })
            .map_err(|e| errors.push(format!("prometheus-selector: {e}")))
            .unwrap_or_default();
        let lookback = match parse_prom_duration(lookback.trim()) {
            Ok(d) if d <= MAX_LOOKBACK => d,
            Ok(_) => {
                errors.push("prometheus-lookback: more than 7d".into());
                Duration::ZERO
            }
            Err(e) => {
                errors.push(format!("prometheus-lookback: {}", one_line(&e)));
                Duration::ZERO
            }
        };
        let base = match base_config(config) {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("prometheus-config: {e}"));
                PromConfig::new("", 0)
            }
        };
        if errors.is_empty() {
            Ok(PromSettings {
                url,
                selector,
                lookback,
                base,
            })
        } else {
            Err(errors)
        }
    }

    /// The source configuration of one workload: its series only, read from `start_ms`.
    /// `pods` is [`pod_name_pattern`]'s regex of the workload's pod names (for `$pods`).
    pub fn config_for(
        &self,
        namespace: &str,
        workload: &str,
        pods: &str,
        extra: &[Matcher],
        start_ms: i64,
    ) -> PromConfig {
        let mut matchers: Vec<String> = self
            .selector
            .iter()
            .map(|m| {
                let mut m = m.clone();
                // Names are DNS labels/subdomains, but a `.` in a regex must still mean a dot.
                let (ns, name) = if m.op.is_regex() {
                    (
                        regex_syntax::escape(namespace),
                        regex_syntax::escape(workload),
                    )
                } else {
                    (namespace.to_string(), workload.to_string())
                };
                m.value = m
                    .value
                    .replace("$namespace", &ns)
                    .replace("$workload", &name)
                    .replace("$pods", pods);
                m.render()
            })
            .collect();
        matchers.extend(extra.iter().map(Matcher::render));
        let selector = matchers.join(",");
        let mut c = self.base.clone();
        c.url = self.url.clone();
        c.start_ms = start_ms;
        c.end_ms = None;
        let q = &mut c.queries;
        let fill = |s: &str| s.replace(SELECTOR_PLACEHOLDER, &selector);
        q.step_time_ms = fill(&q.step_time_ms);
        for s in [
            &mut q.step,
            &mut q.loss,
            &mut q.data_wait_ms,
            &mut q.gpu_util_pct,
            &mut q.gpu_mem_util_pct,
            &mut q.comm_ms,
        ]
        .into_iter()
        .flatten()
        {
            *s = fill(s);
        }
        c
    }
}

/// A regex of exactly the names the workload's controller gives its pods (escaped name, then the
/// kind's suffix), so `train` never reads the pods of `train-big` or `train-v2`: a Deployment's
/// `<name>-<template hash>-<5>`, a StatefulSet's `<name>-<ordinal>`, a Job's `<name>-[<index>-]<5>`,
/// a PyTorchJob's `<name>-<role>-<index>`, a JobSet's `<name>-<replicated job>-<job>-<pod>-<5>`.
/// `roles` are a PyTorchJob's replica roles or a JobSet's replicated jobs.
pub fn pod_name_pattern(kind: WorkloadKind, name: &str, roles: &[String]) -> String {
    let name = regex_syntax::escape(name);
    let alternatives = || {
        let mut r: Vec<String> = roles
            .iter()
            .map(|r| regex_syntax::escape(&r.to_ascii_lowercase()))
            .collect();
        r.sort();
        r.dedup();
        if r.is_empty() {
            "[a-z0-9-]+".to_string()
        } else {
            format!("(?:{})", r.join("|"))
        }
    };
    // Kubernetes' random suffixes and template hashes use this alphabet (no vowels), which
    // also keeps a word like `eval` in a sibling's name from passing for one.
    const SAFE: &str = "[bcdfghjklmnpqrstvwxz2456789]";
    match kind {
        WorkloadKind::StatefulSet => format!("{name}-[0-9]+"),
        WorkloadKind::Job => format!("{name}-(?:[0-9]+-)?{SAFE}{{5}}"),
        WorkloadKind::PyTorchJob => format!("{name}-{}-[0-9]+", alternatives()),
        WorkloadKind::JobSet => format!("{name}-{}-[0-9]+-[0-9]+-{SAFE}{{5}}", alternatives()),
        _ => format!("{name}-{SAFE}{{1,10}}-{SAFE}{{5}}"),
    }
}

/// The default queries, each scoped by `$selector`.
pub fn default_queries() -> PromQueries {
    let s = SELECTOR_PLACEHOLDER;
    PromQueries {
        step_time_ms: format!("modekeeper_step_time_ms{{{s}}}"),
        step: Some(format!("modekeeper_step{{{s}}}")),
        loss: Some(format!("modekeeper_loss{{{s}}}")),
        data_wait_ms: Some(format!("modekeeper_data_wait_ms{{{s}}}")),
        gpu_util_pct: Some(format!("DCGM_FI_DEV_GPU_UTIL{{{s}}}")),
        gpu_mem_util_pct: Some(format!(
            "100 * DCGM_FI_DEV_FB_USED{{{s}}} / (DCGM_FI_DEV_FB_USED{{{s}}} + DCGM_FI_DEV_FB_FREE{{{s}}})"
        )),
        comm_ms: Some(format!("modekeeper_comm_ms{{{s}}}")),
    }
}

/// `prometheus-config` over the defaults (with the scoped default queries).
fn base_config(text: &str) -> Result<PromConfig, String> {
    let text = text.trim();
    let mut value: Value = if text.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(text).map_err(|e| one_line(&e))?
    };
    let Some(obj) = value.as_object_mut() else {
        return Err("expected a JSON object".into());
    };
    for key in ["url", "start", "end"] {
        if obj.contains_key(key) {
            return Err(format!(
                "{key:?} is set by the controller (the URL is prometheus-url; a session reads from the workload's creation, at most prometheus-lookback back, and never ends)"
            ));
        }
    }
    // Pages of a tenth of `watch`'s: an answer must fit the controller's body cap
    // (controller::telemetry::BODY_CAP) with a few hundred series.
    if !obj.contains_key("page_steps") {
        obj.insert("page_steps".into(), CONTROLLER_PAGE_STEPS.into());
    }
    // Queries left out keep the scoped defaults, not the unscoped ones of `--prom-config`.
    let mut queries = serde_json::to_value(default_queries()).expect("queries serialize");
    if let Some(Value::Object(given)) = obj.remove("queries") {
        for (k, v) in given {
            queries[k] = v;
        }
    } else if obj.contains_key("queries") {
        return Err("queries: expected an object".into());
    }
    obj.insert("queries".into(), queries);
    let c = PromConfig::parse(&value.to_string(), 0).map_err(|e| one_line(&format!("{e:#}")))?;
    for (field, query) in [
        ("step_time_ms", Some(&c.queries.step_time_ms)),
        ("step", c.queries.step.as_ref()),
        ("loss", c.queries.loss.as_ref()),
        ("data_wait_ms", c.queries.data_wait_ms.as_ref()),
        ("gpu_util_pct", c.queries.gpu_util_pct.as_ref()),
        ("gpu_mem_util_pct", c.queries.gpu_mem_util_pct.as_ref()),
        ("comm_ms", c.queries.comm_ms.as_ref()),
    ] {
        if let Some(q) = query
            && !q.contains(SELECTOR_PLACEHOLDER)
        {
            return Err(format!(
                "queries.{field}: {q:?} has no {SELECTOR_PLACEHOLDER}: it would read every job's series"
            ));
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(selector: &str, config: &str) -> PromSettings {
        PromSettings::parse("http://prom:9090", selector, "1h", config).unwrap()
    }

    #[test]
    fn matchers_parse_and_render_back() {
        let m = parse_matchers(r#" job_name = "llama \"70b\"" , rank!~"[13]",team=~'x' "#);
        assert_eq!(
            m.unwrap_err(),
            "the value of \"team\" must be in double quotes, at \"'x'\""
        );
        let m = parse_matchers(r#"job_name="llama \"70b\"", rank!~"[13]""#).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].value, "llama \"70b\"");
        assert_eq!(m[0].render(), r#"job_name="llama \"70b\"""#);
        assert_eq!(m[1].render(), r#"rank!~"[13]""#);
        assert!(parse_matchers("").unwrap().is_empty());
    }

    #[test]
    fn nothing_but_matchers_gets_into_a_query() {
        for bad in [
            r#"a="x"} or vector(1) or up{b="y""#,
            r#"a="x" or b="y""#,
            r#"a="x","#,
            r#"a="x"#,
            r#"1a="x""#,
            r#"a=~"(""#,
            r#"a="\x41""#,
            "a=\"line\nbreak\"",
            r#"a>"x""#,
            r#"__name__=~"up|modekeeper_.+""#,
        ] {
            assert!(parse_matchers(bad).is_err(), "{bad:?} parsed");
        }
        let many = vec![r#"a="x""#; MAX_MATCHERS + 1].join(",");
        assert!(parse_matchers(&many).is_err());
    }

    /// What Rust's parser takes but Prometheus (Go 1.19's RE2, checked against Prometheus 2.42)
    /// refuses with bad_data, or reads otherwise; and what both read alike.
    #[test]
    fn only_regexes_prometheus_reads_alike_pass() {
        for re in [
            "(?x)a b",
            r"\p{Letter}",
            r"\p{greek}",
            "a{1001}",
            "a{2,1001}",
            "(a{100}){11}",
            r"\u0041",
            r"\u{41}",
            "(?<n>a)",
            "(?R)a",
            "(?u)a",
            "[a--b]",
            "[a-z&&[^b]]",
            "[a[b]]",
            r"\b{start}a",
            r"\<a",
        ] {
            let e = parse_matchers(&format!("pod=~{:?}", re));
            assert!(e.is_err(), "{re} passed");
            assert!(e.unwrap_err().ends_with("(Prometheus runs RE2)"), "{re}");
        }
        for re in [
            "(?P<n>a)",
            "(?i)train-.+",
            "(?s:.)",
            "(?-i:a)",
            r"\pN\p{Lu}\PL",
            r"[[:alpha:]\d_-]+",
            r"\x{41}\x41\t",
            r"^\Atr\.ain\b\B\z$",
            "(a{10}){100}",
            "a{1000}",
            "[]a]|[^-z]",
            r"a\-b\#c\&d\~e",
        ] {
            assert!(
                parse_matchers(&format!("pod=~{:?}", re)).is_ok(),
                "{re} refused"
            );
        }
    }

    #[test]
    fn a_workload_s_queries_carry_the_operator_s_matchers_then_its_own() {
        let s = settings(r#"namespace="$namespace",pod=~"$workload-.+""#, "");
        let extra = parse_matchers(r#"rank="0""#).unwrap();
        let c = s.config_for("ml", "gpt.v2", "gpt\\.v2-[0-9]+", &extra, 1_000);
        assert_eq!(
            c.queries.step_time_ms,
            r#"modekeeper_step_time_ms{namespace="ml",pod=~"gpt\\.v2-.+",rank="0"}"#
        );
        assert_eq!(
            c.queries.gpu_mem_util_pct.as_deref(),
            Some(
                r#"100 * DCGM_FI_DEV_FB_USED{namespace="ml",pod=~"gpt\\.v2-.+",rank="0"} / (DCGM_FI_DEV_FB_USED{namespace="ml",pod=~"gpt\\.v2-.+",rank="0"} + DCGM_FI_DEV_FB_FREE{namespace="ml",pod=~"gpt\\.v2-.+",rank="0"})"#
            )
        );
        assert_eq!(
            (c.url.as_str(), c.start_ms, c.end_ms),
            ("http://prom:9090", 1_000, None)
        );
        // A workload naming another namespace gets both matchers: the intersection is empty.
        let other = parse_matchers(r#"namespace="other""#).unwrap();
        let c = s.config_for("ml", "gpt", "gpt-[0-9]+", &other, 0);
        assert!(
            c.queries
                .step_time_ms
                .starts_with(r#"modekeeper_step_time_ms{namespace="ml","#)
        );
    }

    #[test]
    fn the_operator_s_config_keeps_queries_scoped() {
        let s = settings(
            r#"namespace="$namespace""#,
            r#"{"step": "2s", "queries": {"loss": null, "step_time_ms": "1000 * trainer_step_seconds{$selector}"}}"#,
        );
        assert_eq!(s.base.step, Duration::from_secs(2));
        assert_eq!(s.base.page_steps, CONTROLLER_PAGE_STEPS);
        assert_eq!(s.base.queries.loss, None);
        assert_eq!(
            s.base.queries.data_wait_ms.as_deref(),
            Some("modekeeper_data_wait_ms{$selector}")
        );
        let c = s.config_for("ml", "j", "j-[0-9]+", &[], 0);
        assert_eq!(
            c.queries.step_time_ms,
            r#"1000 * trainer_step_seconds{namespace="ml"}"#
        );
        for (config, want) in [
            (
                r#"{"queries": {"loss": "trainer_loss"}}"#,
                "queries.loss: \"trainer_loss\" has no $selector",
            ),
            (r#"{"url": "http://x"}"#, "\"url\" is set by the controller"),
            (
                r#"{"start": "now-1h"}"#,
                "\"start\" is set by the controller",
            ),
            (r#"{"stepp": "1s"}"#, "unknown field `stepp`"),
            ("[1]", "expected a JSON object"),
            ("{", "EOF"),
        ] {
            let e = PromSettings::parse("", "", "1h", config).unwrap_err();
            assert!(
                e.iter()
                    .any(|l| l.starts_with("prometheus-config: ") && l.contains(want)),
                "{config}: {e:?}"
            );
        }
    }

    /// The pod matcher of `workload`'s step-time query under the default settings, as the
    /// anchored regex Prometheus runs.
    fn default_pod_regex(kind: WorkloadKind, workload: &str, roles: &[&str]) -> regex::Regex {
        let default = crate::install::SETTINGS
            .iter()
            .find(|s| s.key == "prometheus-selector")
            .unwrap()
            .default;
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let pods = pod_name_pattern(kind, workload, &roles);
        let q = settings(default, "")
            .config_for("ml", workload, &pods, &[], 0)
            .queries
            .step_time_ms;
        let inner = q.split_once('{').unwrap().1.strip_suffix('}').unwrap();
        let pod = parse_matchers(inner)
            .unwrap()
            .into_iter()
            .find(|m| m.label == "pod")
            .unwrap();
        regex::Regex::new(&format!("^(?:{})$", pod.value)).unwrap()
    }

    /// Two jobs of one namespace, `train` and `train-big` (or `bert` and `bert-large`): a prefix
    /// match (`pod=~"$workload-.+"`, the first default) gave `train` the series of `train-big`'s
    /// pods too, so its windows mixed two trainers and its decisions (applied to `train`) followed
    /// the other job. `$pods` is the kind's exact pod-name shape.
    #[test]
    fn the_default_selector_reads_no_sibling_workload_s_pods() {
        let siblings = [
            "train-big-7d9f8c6b5-x2kqz",
            "train-v2-0",
            "train-eval-x2kqz",
            "train-big-master-0",
            "train-big-worker-0-0-x2kqz",
            "train-7d9f8c6b5-x2kqz-extra",
        ];
        for (kind, roles, own) in [
            (
                WorkloadKind::Deployment,
                &[][..],
                &["train-7d9f8c6b5-x2kqz", "train-5b8f7-bcdfg"][..],
            ),
            (WorkloadKind::StatefulSet, &[], &["train-0", "train-12"]),
            (WorkloadKind::Job, &[], &["train-x2kqz", "train-3-x2kqz"]),
            (
                WorkloadKind::PyTorchJob,
                &["Master", "Worker"],
                &["train-master-0", "train-worker-7"],
            ),
            (
                WorkloadKind::JobSet,
                &["workers"],
                &["train-workers-0-3-x2kqz"],
            ),
        ] {
            let re = default_pod_regex(kind, "train", roles);
            for pod in own {
                assert!(re.is_match(pod), "{kind:?} {pod}: {re}");
            }
            for pod in siblings {
                assert!(
                    !re.is_match(pod),
                    "{kind:?}: {pod} is not train's pod: {re}"
                );
            }
        }
        // A dot in a name is a dot.
        let re = default_pod_regex(WorkloadKind::StatefulSet, "gpt.v2", &[]);
        assert!(re.is_match("gpt.v2-0") && !re.is_match("gptxv2-0"), "{re}");
        let e = PromSettings::parse("", r#"pod="$pods""#, "1h", "").unwrap_err();
        assert!(e[0].contains("match it with =~"), "{e:?}");
    }

    #[test]
    fn bad_settings_are_each_told() {
        let e = PromSettings::parse("ftp://x", "a=", "9d", "").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("prometheus-url: "));
        assert!(e[1].starts_with("prometheus-selector: "));
        assert_eq!(e[2], "prometheus-lookback: more than 7d");
    }
}
