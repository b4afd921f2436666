//! The one place that reads the license environment: `--license` / `MODEKEEPER_LICENSE_PATH` /
//! `~/.config/modekeeper/license.json`, and `--keyring` / `MODEKEEPER_KEYRING`. Used by
//! `license verify` and by every gate, so they always agree on which license and keyring count.

use std::path::{Path, PathBuf};

use super::keyring::{KEYRING_ENV, KeyringInfo, resolve_keyring};
use super::verify::{
    ClusterIdentity, LicenseVerdict, check_license_file, config_home, resolve_license_path,
};

/// The environment variable naming a license file (after `--license`).
pub const LICENSE_PATH_ENV: &str = "MODEKEEPER_LICENSE_PATH";

/// Which license and keyring were used, and the verdict.
#[derive(Debug, Clone)]
pub struct LicenseCheck {
    pub keyring: KeyringInfo,
    pub license_path: Option<PathBuf>,
    /// `flag`, `env` or `config`; None when no license was found.
    pub license_source: Option<&'static str>,
    pub verdict: LicenseVerdict,
}

/// Resolves the keyring and the license from flags and the environment, and checks the license at
/// `now` (epoch seconds) for `required` entitlements; bindings against `cluster` when given.
pub fn check_license_env(
    license_flag: Option<&Path>,
    keyring_flag: Option<&Path>,
    now: i64,
    cluster: Option<&ClusterIdentity>,
    required: &[&str],
) -> LicenseCheck {
    let (keyring, ring) = resolve_keyring(keyring_flag, std::env::var_os(KEYRING_ENV));
    let resolved = resolve_license_path(
        license_flag,
        std::env::var_os(LICENSE_PATH_ENV),
        config_home(),
    );
    let verdict = check_license_file(
        resolved.as_ref().map(|(p, _)| p.as_path()),
        &ring,
        now,
        cluster,
        required,
    );
    LicenseCheck {
        keyring,
        license_path: resolved.as_ref().map(|(p, _)| p.clone()),
        license_source: resolved.map(|(_, s)| s),
        verdict,
    }
}
