//! The kill switches, checked by every apply (each decision of a running `closed-loop watch` reads
//! them again) and absolute (no license, flag or other variable overrides them):
//!
//! - `MODEKEEPER_KILL_SWITCH`, the process environment. The only values that leave it **off** are:
//!   unset, `0`, `off`, `false` (case-insensitive, surrounding whitespace ignored). `1`, `on`, `true`
//!   turn it on. Anything else, including an empty value and a value that is not UTF-8, also turns
//!   it on: a switch someone set to something we do not understand is treated as pulled.
//! - `MODEKEEPER_KILL_SWITCH_FILE` names a file: the switch is on while that file exists (whatever
//!   it holds), so `touch` stops a running watch's next apply. A path whose existence cannot be
//!   checked (a permission error, an empty variable) counts as on.
//! - The annotation `modekeeper.io/kill-switch` on a target workload (values as for the variable),
//!   read from the cluster before every write; a read that fails counts as on.
//!
//! All fail closed. This module decides; the file check is the one `stat` it does itself.

use std::ffi::OsStr;
use std::path::Path;

use serde::Serialize;

/// The variable.
pub const KILL_SWITCH_ENV: &str = "MODEKEEPER_KILL_SWITCH";
/// The variable naming the switch file.
pub const KILL_SWITCH_FILE_ENV: &str = "MODEKEEPER_KILL_SWITCH_FILE";
/// The workload annotation of the cluster-side switch.
pub const KILL_SWITCH_ANNOTATION: &str = "modekeeper.io/kill-switch";

/// Whether a switch value is on, and why an unusual one counted as on.
fn interpret(text: &str) -> (bool, Option<String>) {
    match text.trim().to_ascii_lowercase().as_str() {
        "0" | "off" | "false" => (false, None),
        "1" | "on" | "true" => (true, None),
        _ => (
            true,
            Some("unrecognised value counts as on (off values: unset, 0, off, false)".into()),
        ),
    }
}

fn shown(text: &str) -> String {
    text.chars()
        .take(32)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

/// What the switch says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KillSwitch {
    pub active: bool,
    /// Where the decision came from, e.g. `env:MODEKEEPER_KILL_SWITCH=1`; null when unset.
    pub signal: Option<String>,
    /// Why an unusual value counted as on.
    pub detail: Option<String>,
}

impl KillSwitch {
    /// Off, and nothing configured to say otherwise.
    pub const OFF: KillSwitch = KillSwitch {
        active: false,
        signal: None,
        detail: None,
    };

    /// Interprets the variable's value (`None` = unset).
    pub fn from_value(value: Option<&OsStr>) -> KillSwitch {
        let Some(raw) = value else {
            return KillSwitch::OFF;
        };
        let Some(text) = raw.to_str() else {
            return KillSwitch {
                active: true,
                signal: Some(format!("env:{KILL_SWITCH_ENV}=<not UTF-8>")),
                detail: Some("the value is not UTF-8; an unrecognised value counts as on".into()),
            };
        };
        let (active, detail) = interpret(text);
        KillSwitch {
            active,
            signal: Some(format!("env:{KILL_SWITCH_ENV}={}", shown(text))),
            detail,
        }
    }

    /// The file switch; `path` is `MODEKEEPER_KILL_SWITCH_FILE`'s value (`None` = unset).
    pub fn from_file(path: Option<&OsStr>) -> KillSwitch {
        let Some(path) = path else {
            return KillSwitch::OFF;
        };
        let signal = Some(format!("file:{}", Path::new(path).display()));
        if path.is_empty() {
            return KillSwitch {
                active: true,
                signal,
                detail: Some(format!(
                    "{KILL_SWITCH_FILE_ENV} is set but empty; counts as on"
                )),
            };
        }
        // symlink_metadata: a dangling symlink someone planted still counts as present.
        match std::fs::symlink_metadata(path) {
            Ok(_) => KillSwitch {
                active: true,
                signal,
                detail: Some("the switch file exists".into()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KillSwitch {
                active: false,
                signal,
                detail: None,
            },
            Err(e) => KillSwitch {
                active: true,
                signal,
                detail: Some(format!("cannot check the switch file ({e}); counts as on")),
            },
        }
    }

    /// The cluster-side switch of one workload: its `modekeeper.io/kill-switch` annotation
    /// (`Ok(None)` = absent), or the error that kept it from being read (fail closed).
    pub fn from_annotation(what: &str, value: Result<Option<&str>, String>) -> KillSwitch {
        let signal = Some(format!("cluster:{what}:{KILL_SWITCH_ANNOTATION}"));
        match value {
            Ok(None) => KillSwitch {
                active: false,
                signal,
                detail: None,
            },
            Ok(Some(text)) => {
                let (active, detail) = interpret(text);
                KillSwitch {
                    active,
                    signal: Some(format!(
                        "cluster:{what}:{KILL_SWITCH_ANNOTATION}={}",
                        shown(text)
                    )),
                    detail,
                }
            }
            Err(e) => KillSwitch {
                active: true,
                signal,
                detail: Some(format!(
                    "cannot read the cluster-side switch ({e}); counts as on"
                )),
            },
        }
    }

    /// The switch that decides between `self` and `other`: the first that is on, else `self`
    /// with `other`'s signal appended.
    pub fn or(self, other: KillSwitch) -> KillSwitch {
        if self.active {
            return self;
        }
        if other.active {
            return other;
        }
        let signal = match (self.signal, other.signal) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        KillSwitch {
            active: false,
            signal,
            detail: None,
        }
    }

    /// Reads the process environment and the switch file it names.
    pub fn from_env() -> KillSwitch {
        KillSwitch::from_value(std::env::var_os(KILL_SWITCH_ENV).as_deref()).or(
            KillSwitch::from_file(std::env::var_os(KILL_SWITCH_FILE_ENV).as_deref()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(v: Option<&str>) -> bool {
        KillSwitch::from_value(v.map(OsStr::new)).active
    }

    #[test]
    fn only_documented_values_are_off() {
        for off in [
            None,
            Some("0"),
            Some(" 0\n"),
            Some("off"),
            Some(" OFF "),
            Some("false"),
            Some("False"),
        ] {
            assert!(!active(off), "{off:?}");
        }
        for on in [
            "1", "on", "TRUE", "", " ", "yes", "2", "0x", "disabled", "nope", "00",
        ] {
            assert!(active(Some(on)), "{on:?}");
        }
        let ks = KillSwitch::from_value(Some(OsStr::new("maybe")));
        assert_eq!(
            ks.signal.as_deref(),
            Some("env:MODEKEEPER_KILL_SWITCH=maybe")
        );
        assert!(ks.detail.unwrap().contains("unrecognised"));
    }

    #[test]
    fn the_file_switch_is_on_while_the_file_exists_and_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("stop");
        assert!(!KillSwitch::from_file(None).active);
        assert!(!KillSwitch::from_file(Some(f.as_os_str())).active);
        std::fs::write(&f, "").unwrap();
        let ks = KillSwitch::from_file(Some(f.as_os_str()));
        assert!(ks.active);
        assert_eq!(ks.signal, Some(format!("file:{}", f.display())));
        assert!(KillSwitch::from_file(Some(OsStr::new(""))).active);
        // A path through a regular file cannot be checked: on.
        let through = f.join("x");
        let ks = KillSwitch::from_file(Some(through.as_os_str()));
        assert!(ks.active, "{ks:?}");
        // Either switch on wins; both off keeps both signals.
        let off = KillSwitch::from_value(Some(OsStr::new("0")));
        assert!(
            off.clone()
                .or(KillSwitch::from_file(Some(f.as_os_str())))
                .active
        );
        let both = off.or(KillSwitch::from_file(Some(
            dir.path().join("no").as_os_str(),
        )));
        assert!(!both.active);
        assert!(both.signal.unwrap().contains("; file:"));
    }

    #[test]
    fn the_cluster_switch_reads_like_the_variable_and_fails_closed() {
        assert!(!KillSwitch::from_annotation("d", Ok(None)).active);
        assert!(!KillSwitch::from_annotation("d", Ok(Some("off"))).active);
        assert!(KillSwitch::from_annotation("d", Ok(Some("on"))).active);
        assert!(KillSwitch::from_annotation("d", Ok(Some("please"))).active);
        let ks = KillSwitch::from_annotation("d", Err("forbidden".into()));
        assert!(ks.active);
        assert!(ks.detail.unwrap().contains("forbidden"));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_is_on() {
        use std::os::unix::ffi::OsStrExt;
        assert!(KillSwitch::from_value(Some(OsStr::from_bytes(&[0xff, 0x30]))).active);
    }
}
