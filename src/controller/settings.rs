//! What the controller decides a workload under: the settings ConfigMap's defaults
//! (`modekeeper-settings`, keys in [`crate::install::SETTINGS`]) and the workload's own
//! annotations. Pure: maps in, settings or one-line errors out.
//!
//! Both maps are written by people other than the controller's operator (a workload's annotations
//! by whoever may edit the workload), so every value is checked and a bad one is an error the
//! controller tells on the workload, never a guess. The one exception fails safe: any kill-switch
//! value but off/0/false counts as on.

use std::collections::BTreeMap;

use super::prom_scope::{Matcher, PromSettings, SELECTOR_ANNOTATION, parse_matchers};
use crate::apply::KillSwitch;
use crate::install::SETTINGS;
use crate::passport::TEMPLATE_NAMES;

/// The label a workload opts in with.
pub const ENABLED_LABEL: &str = "modekeeper.io/enabled";
/// The label selector of the opted-in workloads.
pub const ENABLED_SELECTOR: &str = "modekeeper.io/enabled=true";
pub const PASSPORT_ANNOTATION: &str = "modekeeper.io/passport";
pub const POLICIES_ANNOTATION: &str = "modekeeper.io/policies";
pub const SOURCE_ANNOTATION: &str = "modekeeper.io/source";
/// The ConfigMap (in the controller's namespace) holding the operator's own passports, one key
/// `<name>.json` each (the built-in templates allow no apply: `gates.apply` is false in all).
pub const PASSPORTS_CONFIGMAP: &str = "modekeeper-passports";
/// The pod annotation or flag naming the telemetry container is the watch's
/// (`modekeeper/telemetry`); this one lets a workload name it on the workload itself.
pub const CONTAINER_ANNOTATION: &str = "modekeeper.io/container";

/// Steps per window: below a few steps the features mean nothing, above this a window of a slow
/// trainer would take hours.
const WINDOW_STEPS_RANGE: std::ops::RangeInclusive<u64> = 4..=10_000;
/// A replica never runs more sessions than this, whatever the ConfigMap says.
pub const MAX_SESSIONS_LIMIT: usize = 100_000;
/// Longest policy list a workload may ask for.
const MAX_POLICIES: usize = 16;

/// Where a workload's telemetry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Its pods' logs, through the API.
    PodLogs,
    Prometheus,
}

impl SourceKind {
    fn parse(what: &str, value: &str) -> Result<SourceKind, String> {
        match value.trim() {
            "k8s" => Ok(SourceKind::PodLogs),
            "prometheus" => Ok(SourceKind::Prometheus),
            other => Err(format!(
                "{what}: unknown source {other:?} (k8s or prometheus)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::PodLogs => "k8s",
            SourceKind::Prometheus => "prometheus",
        }
    }
}

/// The settings ConfigMap, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerSettings {
    /// The controller may apply (still through every gate); otherwise it only proposes.
    pub apply: bool,
    /// The cluster-wide kill switch.
    pub kill_switch: KillSwitch,
    pub source: SourceKind,
    pub prometheus: PromSettings,
    pub passport: String,
    pub policies: Vec<String>,
    pub window_steps: u64,
    pub max_sessions: usize,
}

fn default_of(key: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .map(|s| s.default)
        .expect("every key read here is in SETTINGS")
}

fn parse_bool(what: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Ok(true),
        "false" | "0" | "off" | "no" | "" => Ok(false),
        other => Err(format!("{what}: {other:?} is not true or false")),
    }
}

fn parse_count<T>(what: &str, value: &str, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let n: T = value
        .trim()
        .parse()
        .map_err(|_| format!("{what}: {value:?} is not a whole number"))?;
    if !range.contains(&n) {
        return Err(format!(
            "{what}: {n} is outside {}..={}",
            range.start(),
            range.end()
        ));
    }
    Ok(n)
}

/// A comma-separated list of policy or chord ids: the first is the base policy, the rest advanced
/// policies (or the chords that name them), resolved against the catalog when loaded.
pub fn parse_policies(what: &str, value: &str) -> Result<Vec<String>, String> {
    let ids: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Err(format!("{what}: no policy named"));
    }
    if ids.len() > MAX_POLICIES {
        return Err(format!("{what}: more than {MAX_POLICIES} policies"));
    }
    for id in &ids {
        let ok = id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(format!("{what}: {id:?} is not a policy or chord id"));
        }
    }
    Ok(ids)
}

/// A passport by name: a built-in template, or a key `<name>.json` of the passports ConfigMap
/// ([`PASSPORTS_CONFIGMAP`]) the operator keeps in the controller's namespace. A workload's
/// annotation picks one of those by name; it can never name a file or bring its own limits.
fn parse_passport(what: &str, value: &str) -> Result<String, String> {
    let name = value.trim();
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{what}: {name:?} is not a passport name (a built-in one: {}, or a key <name>.json of the ConfigMap {PASSPORTS_CONFIGMAP})",
            TEMPLATE_NAMES.join(", ")
        ))
    }
}

impl ControllerSettings {
    /// The settings of `data` (a missing key takes its default). Unknown keys and bad values are
    /// errors, one line each: a typo in `apply` must not silently leave the controller applying.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<ControllerSettings, Vec<String>> {
        let mut errors = Vec::new();
        for key in data.keys() {
            if !SETTINGS.iter().any(|s| s.key == key) {
                errors.push(format!(
                    "unknown setting {key:?} (known: {})",
                    SETTINGS
                        .iter()
                        .map(|s| s.key)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let get = |key: &str| data.get(key).map_or(default_of(key), String::as_str);
        fn check<T>(errors: &mut Vec<String>, r: Result<T, String>) -> Option<T> {
            r.map_err(|e| errors.push(e)).ok()
        }
        let apply = check(&mut errors, parse_bool("apply", get("apply")));
        let source = check(&mut errors, SourceKind::parse("source", get("source")));
        let passport = check(&mut errors, parse_passport("passport", get("passport")));
        let policies = check(&mut errors, parse_policies("policies", get("policies")));
        let window_steps = check(
            &mut errors,
            parse_count("window-steps", get("window-steps"), WINDOW_STEPS_RANGE),
        );
        let max_sessions = check(
            &mut errors,
            parse_count("max-sessions", get("max-sessions"), 1..=MAX_SESSIONS_LIMIT),
        );
        let prometheus = PromSettings::parse(
            get("prometheus-url"),
            get("prometheus-selector"),
            get("prometheus-lookback"),
            get("prometheus-config"),
        )
        .map_err(|e| errors.extend(e))
        .ok();
        let kill_switch = KillSwitch::from_value(Some(std::ffi::OsStr::new(get("kill-switch"))));
        match (
            apply,
            source,
            passport,
            policies,
            window_steps,
            max_sessions,
            prometheus,
        ) {
            (
                Some(apply),
                Some(source),
                Some(passport),
                Some(policies),
                Some(ws),
                Some(ms),
                Some(prometheus),
            ) if errors.is_empty() => Ok(ControllerSettings {
                apply,
                kill_switch,
                source,
                prometheus,
                passport,
                policies,
                window_steps: ws,
                max_sessions: ms,
            }),
            _ => Err(errors),
        }
    }

    /// The defaults, as `install` writes them.
    pub fn defaults() -> ControllerSettings {
        ControllerSettings::from_data(&BTreeMap::new()).expect("the defaults are valid")
    }

    /// Only the kill switch of `data`, fail-safe: what is read before every apply, where a
    /// settings map with an unrelated typo must still stop applies when the switch is on.
    pub fn kill_switch_of(data: &BTreeMap<String, String>) -> KillSwitch {
        let value = data
            .get("kill-switch")
            .map_or(default_of("kill-switch"), String::as_str);
        let mut k = KillSwitch::from_value(Some(std::ffi::OsStr::new(value)));
        if k.active {
            k.signal = Some(format!("cluster:settings:kill-switch={}", value.trim()));
        }
        k
    }
}

/// What one workload runs under: its annotations over the controller's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSettings {
    pub passport: String,
    /// Base policy first, then advanced ones.
    pub policies: Vec<String>,
    pub source: SourceKind,
    pub window_steps: u64,
    /// The container whose log carries the telemetry (else the pod annotation, else the only one).
    pub container: Option<String>,
    /// Matchers the workload adds to the operator's Prometheus selector.
    pub prometheus_selector: Vec<Matcher>,
}

impl WorkloadSettings {
    /// `annotations` are the workload object's own.
    pub fn resolve(
        settings: &ControllerSettings,
        annotations: &BTreeMap<String, String>,
    ) -> Result<WorkloadSettings, String> {
        let passport = match annotations.get(PASSPORT_ANNOTATION) {
            Some(v) => parse_passport(PASSPORT_ANNOTATION, v)?,
            None => settings.passport.clone(),
        };
        let policies = match annotations.get(POLICIES_ANNOTATION) {
            Some(v) => parse_policies(POLICIES_ANNOTATION, v)?,
            None => settings.policies.clone(),
        };
        let source = match annotations.get(SOURCE_ANNOTATION) {
            Some(v) => SourceKind::parse(SOURCE_ANNOTATION, v)?,
            None => settings.source,
        };
        let container = match annotations.get(CONTAINER_ANNOTATION) {
            Some(v) => {
                let v = v.trim();
                let ok = !v.is_empty()
                    && v.len() <= 63
                    && v.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !ok {
                    return Err(format!(
                        "{CONTAINER_ANNOTATION}: {v:?} is not a container name"
                    ));
                }
                Some(v.to_string())
            }
            None => None,
        };
        let prometheus_selector = match annotations.get(SELECTOR_ANNOTATION) {
            Some(v) => parse_matchers(v).map_err(|e| format!("{SELECTOR_ANNOTATION}: {e}"))?,
            None => Vec::new(),
        };
        Ok(WorkloadSettings {
            passport,
            policies,
            source,
            window_steps: settings.window_steps,
            container,
            prometheus_selector,
        })
    }

    /// The policies key: sessions with equal keys can share loaded policy sets.
    pub fn policies_key(&self) -> String {
        self.policies.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_defaults_are_what_install_writes_and_propose_only() {
        let s = ControllerSettings::defaults();
        assert!(!s.apply);
        assert!(!s.kill_switch.active);
        assert_eq!(s.source, SourceKind::PodLogs);
        assert_eq!(s.passport, "safe");
        assert_eq!(s.policies, vec!["safe-chords"]);
        assert_eq!(s.window_steps, 50);
        assert_eq!(s.max_sessions, 1000);
        let written: BTreeMap<String, String> = SETTINGS
            .iter()
            .map(|s| (s.key.to_string(), s.default.to_string()))
            .collect();
        assert_eq!(ControllerSettings::from_data(&written).unwrap(), s);
    }

    #[test]
    fn a_typo_or_a_bad_value_is_an_error_not_a_guess() {
        let e = ControllerSettings::from_data(&map(&[("aply", "true")])).unwrap_err();
        assert!(e[0].contains("unknown setting \"aply\""), "{e:?}");
        let e = ControllerSettings::from_data(&map(&[("apply", "yes please")])).unwrap_err();
        assert!(e[0].contains("apply"), "{e:?}");
        let e = ControllerSettings::from_data(&map(&[("window-steps", "2")])).unwrap_err();
        assert!(e[0].contains("outside"), "{e:?}");
        let e = ControllerSettings::from_data(&map(&[("passport", "/etc/passwd")])).unwrap_err();
        assert!(e[0].contains("not a passport name"), "{e:?}");
        let e = ControllerSettings::from_data(&map(&[("policies", "a;rm -rf")])).unwrap_err();
        assert!(e[0].contains("not a policy or chord id"), "{e:?}");
        // Every error is told, not only the first.
        let e = ControllerSettings::from_data(&map(&[("apply", "x"), ("max-sessions", "0")]))
            .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn prometheus_settings_are_checked_with_the_rest() {
        let s = ControllerSettings::from_data(&map(&[
            ("prometheus-url", "http://prometheus.monitoring:9090"),
            (
                "prometheus-selector",
                r#"kubernetes_namespace="$namespace""#,
            ),
            ("prometheus-lookback", "30m"),
        ]))
        .unwrap();
        assert_eq!(s.prometheus.lookback, std::time::Duration::from_secs(1800));
        let e = ControllerSettings::from_data(&map(&[
            ("prometheus-selector", "namespace=$namespace"),
            ("prometheus-config", r#"{"queries": {"loss": "up"}}"#),
        ]))
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("prometheus-selector: "), "{e:?}");
        assert!(e[1].starts_with("prometheus-config: "), "{e:?}");
    }

    #[test]
    fn the_kill_switch_fails_safe_even_in_a_broken_map() {
        for on in ["on", "1", "true", "maybe", "ON "] {
            let data = map(&[("kill-switch", on), ("typo", "x")]);
            assert!(ControllerSettings::kill_switch_of(&data).active, "{on}");
        }
        for off in ["off", "0", "false", " Off"] {
            let data = map(&[("kill-switch", off)]);
            assert!(!ControllerSettings::kill_switch_of(&data).active, "{off}");
        }
        assert!(!ControllerSettings::kill_switch_of(&BTreeMap::new()).active);
        let k = ControllerSettings::kill_switch_of(&map(&[("kill-switch", "on")]));
        assert_eq!(k.signal.as_deref(), Some("cluster:settings:kill-switch=on"));
    }

    #[test]
    fn annotations_override_the_defaults_and_are_checked() {
        let s = ControllerSettings::defaults();
        let w = WorkloadSettings::resolve(
            &s,
            &map(&[
                (PASSPORT_ANNOTATION, "perf"),
                (POLICIES_ANNOTATION, "safe-chords, TIMEOUT-GUARD"),
                (CONTAINER_ANNOTATION, "trainer"),
            ]),
        )
        .unwrap();
        assert_eq!(w.passport, "perf");
        assert_eq!(w.policies, vec!["safe-chords", "TIMEOUT-GUARD"]);
        assert_eq!(w.container.as_deref(), Some("trainer"));
        assert_eq!(w.policies_key(), "safe-chords,TIMEOUT-GUARD");
        let p = WorkloadSettings::resolve(
            &s,
            &map(&[
                (SOURCE_ANNOTATION, "prometheus"),
                (SELECTOR_ANNOTATION, r#"job_name="llama""#),
            ]),
        )
        .unwrap();
        assert_eq!(p.source, SourceKind::Prometheus);
        assert_eq!(p.prometheus_selector[0].value, "llama");
        let plain = WorkloadSettings::resolve(&s, &BTreeMap::new()).unwrap();
        assert_eq!(plain.passport, "safe");
        for (k, v) in [
            (PASSPORT_ANNOTATION, "../../passport.json"),
            (POLICIES_ANNOTATION, ""),
            (SOURCE_ANNOTATION, "file"),
            (CONTAINER_ANNOTATION, "Bad Name"),
            (SELECTOR_ANNOTATION, r#"a="x"} or up{b="y""#),
        ] {
            let e = WorkloadSettings::resolve(&s, &map(&[(k, v)])).unwrap_err();
            assert!(e.starts_with(k), "{e}");
        }
    }
}
