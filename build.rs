//! The production keyring is not in the source tree: a release build is given it with
//! `MODEKEEPER_PRODUCTION_KEYRING=<path to a keyring JSON file>` (scripts/release.sh), and every other
//! build embeds none, so it trusts no production key and `--keyring`/`MODEKEEPER_KEYRING` is needed to
//! verify any license. The file is copied into OUT_DIR and validated by the binary's own parser when
//! first used (a release runs `license keyring` to check it; see scripts/release.sh).

use std::path::PathBuf;

const VAR: &str = "MODEKEEPER_PRODUCTION_KEYRING";

fn main() {
    println!("cargo::rerun-if-env-changed={VAR}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let text = match std::env::var_os(VAR).filter(|v| !v.is_empty()) {
        None => String::new(),
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo::rerun-if-changed={}", path.display());
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{VAR}={}: cannot read the keyring: {e}", path.display())
            });
            if text.trim().is_empty() {
                panic!("{VAR}={}: the keyring is empty", path.display());
            }
            text
        }
    };
    std::fs::write(out.join("production_keyring.json"), text).expect("OUT_DIR is writable");
}
