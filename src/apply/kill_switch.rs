//! The kill switch: `MODEKEEPER_KILL_SWITCH`, checked first by every command that could change a
//! cluster, and absolute (no license, flag or other variable overrides it).
//!
//! The only values that leave it **off** are: unset, `0`, `off`, `false` (case-insensitive,
//! surrounding whitespace ignored). `1`, `on`, `true` turn it on. Anything else, including an empty
//! value and a value that is not UTF-8, also turns it on: a switch someone set to something we do
//! not understand is treated as pulled (fail closed).

use std::ffi::OsStr;

use serde::Serialize;

/// The variable.
pub const KILL_SWITCH_ENV: &str = "MODEKEEPER_KILL_SWITCH";

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
    /// Interprets the variable's value (`None` = unset).
    pub fn from_value(value: Option<&OsStr>) -> KillSwitch {
        let Some(raw) = value else {
            return KillSwitch {
                active: false,
                signal: None,
                detail: None,
            };
        };
        let Some(text) = raw.to_str() else {
            return KillSwitch {
                active: true,
                signal: Some(format!("env:{KILL_SWITCH_ENV}=<not UTF-8>")),
                detail: Some("the value is not UTF-8; an unrecognised value counts as on".into()),
            };
        };
        let shown: String = text
            .chars()
            .take(32)
            .collect::<String>()
            .escape_debug()
            .to_string();
        let signal = Some(format!("env:{KILL_SWITCH_ENV}={shown}"));
        match text.trim().to_ascii_lowercase().as_str() {
            "0" | "off" | "false" => KillSwitch {
                active: false,
                signal,
                detail: None,
            },
            "1" | "on" | "true" => KillSwitch {
                active: true,
                signal,
                detail: None,
            },
            _ => KillSwitch {
                active: true,
                signal,
                detail: Some(
                    "unrecognised value counts as on (off values: unset, 0, off, false)".into(),
                ),
            },
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> KillSwitch {
        KillSwitch::from_value(std::env::var_os(KILL_SWITCH_ENV).as_deref())
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

    #[cfg(unix)]
    #[test]
    fn non_utf8_is_on() {
        use std::os::unix::ffi::OsStrExt;
        assert!(KillSwitch::from_value(Some(OsStr::from_bytes(&[0xff, 0x30]))).active);
    }
}
