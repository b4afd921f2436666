//! Verifying a license against a keyring, a clock, a cluster identity and the entitlements an
//! operation needs. The first failing check decides the reason; nothing is retried with a looser
//! rule. Pure: the caller reads the files and the clock.

use serde::Serialize;

use super::document::{
    BINDING_CLUSTER_SERVER, BINDING_CLUSTER_UID, KNOWN_ENTITLEMENTS, License, LicenseClaims,
    parse_license,
};
use super::keyring::{Keyring, KeyringError};

/// A license is accepted this many seconds before `not_before` and after `expires_at`, so that a
/// machine whose clock is a few minutes off does not flap between blocked and allowed.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Why a license check ended as it did. The `as_str` codes are the stable vocabulary of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseReason {
    Ok,
    /// No license file was given or found, or it could not be read.
    LicenseMissing,
    /// Not a license.v1 document (JSON, schema, types, base64, sizes).
    LicenseMalformed,
    /// The license names a known key, and the signature does not verify with it (tampered or forged).
    LicenseSignatureInvalid,
    LicenseExpired,
    LicenseNotYetValid,
    /// The license names a key the keyring does not trust.
    LicenseUnknownKid,
    /// The license names no key, and no trusted key verifies its signature.
    LicenseWrongKey,
    /// The license is bound to another cluster (or to one whose identity could not be read).
    LicenseBindingMismatch,
    /// Valid, but without an entitlement the operation needs.
    EntitlementMissing,
    /// The keyring (built-in or override) could not be used.
    KeyringMalformed,
    /// No keyring was named and this build embeds none (a build from source).
    KeyringMissing,
}

impl LicenseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseReason::Ok => "ok",
            LicenseReason::LicenseMissing => "license_missing",
            LicenseReason::LicenseMalformed => "license_malformed",
            LicenseReason::LicenseSignatureInvalid => "license_signature_invalid",
            LicenseReason::LicenseExpired => "license_expired",
            LicenseReason::LicenseNotYetValid => "license_not_yet_valid",
            LicenseReason::LicenseUnknownKid => "license_unknown_kid",
            LicenseReason::LicenseWrongKey => "license_wrong_key",
            LicenseReason::LicenseBindingMismatch => "license_binding_mismatch",
            LicenseReason::EntitlementMissing => "entitlement_missing",
            LicenseReason::KeyringMalformed => "keyring_malformed",
            LicenseReason::KeyringMissing => "keyring_missing",
        }
    }
}

/// What is known about the cluster an operation targets, for license bindings. `None` = unknown:
/// a license bound to that attribute then does not match (fail closed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterIdentity {
    pub server: Option<String>,
    pub uid: Option<String>,
}

/// How bindings were treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingCheck {
    /// The license has no bindings.
    Unbound,
    /// Every binding matched the cluster identity.
    Matched,
    /// Not checked: no cluster was named (`license verify` without `--cluster-*`).
    NotChecked,
    Mismatch,
}

/// The license fields a report shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LicenseSummary {
    #[serde(flatten)]
    pub claims: LicenseClaims,
    pub kid: Option<String>,
    /// Entitlements this build does not know (they grant nothing).
    pub unknown_entitlements: Vec<String>,
}

/// The outcome of a license check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LicenseVerdict {
    pub ok: bool,
    pub reason: &'static str,
    /// One line for humans; null when ok.
    pub detail: Option<String>,
    /// What the license says, when it could be parsed (even if it then failed).
    pub license: Option<LicenseSummary>,
    /// The trusted key that verified the signature.
    pub verified_with_kid: Option<String>,
    pub required_entitlements: Vec<String>,
    pub binding_check: Option<BindingCheck>,
    /// The clock used, epoch seconds.
    pub now: i64,
    pub clock_skew_allowance_s: i64,
}

/// Everything a check needs besides the license bytes.
#[derive(Debug, Clone)]
pub struct VerifyContext<'a> {
    pub keyring: &'a Keyring,
    /// Epoch seconds.
    pub now: i64,
    /// The cluster to check bindings against; `None` skips binding checks (`license verify`
    /// without a cluster). Gates always pass `Some`.
    pub cluster: Option<&'a ClusterIdentity>,
    pub required: &'a [&'a str],
}

impl LicenseVerdict {
    /// A verdict for a failure before any license was read (missing file, bad keyring).
    pub fn early(reason: LicenseReason, detail: String, now: i64, required: &[&str]) -> Self {
        LicenseVerdict {
            ok: false,
            reason: reason.as_str(),
            detail: Some(detail),
            license: None,
            verified_with_kid: None,
            required_entitlements: required.iter().map(|s| s.to_string()).collect(),
            binding_check: None,
            now,
            clock_skew_allowance_s: CLOCK_SKEW_SECS,
        }
    }

    /// Whether the verified license grants `entitlement`.
    pub fn grants(&self, entitlement: &str) -> bool {
        self.ok
            && KNOWN_ENTITLEMENTS.contains(&entitlement)
            && self
                .license
                .as_ref()
                .is_some_and(|l| l.claims.entitlements.contains(entitlement))
    }
}

/// `scheme://host[:port]` lowercased, path kept, trailing slashes dropped.
pub fn normalize_server(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            format!(
                "{}://{}{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase(),
                path
            )
        }
        None => url.to_ascii_lowercase(),
    }
}

fn check_bindings(
    lic: &License,
    cluster: Option<&ClusterIdentity>,
) -> Result<BindingCheck, String> {
    let b = &lic.claims.bindings;
    if b.is_empty() {
        return Ok(BindingCheck::Unbound);
    }
    let Some(cluster) = cluster else {
        return Ok(BindingCheck::NotChecked);
    };
    if let Some(want) = b.get(BINDING_CLUSTER_SERVER) {
        match &cluster.server {
            Some(have) if normalize_server(have) == normalize_server(want) => {}
            Some(have) => {
                return Err(format!(
                    "the license is bound to cluster server {want}, this cluster is {have}"
                ));
            }
            None => {
                return Err(format!(
                    "the license is bound to cluster server {want}, and the cluster's server is unknown"
                ));
            }
        }
    }
    if let Some(want) = b.get(BINDING_CLUSTER_UID) {
        match &cluster.uid {
            Some(have) if have == want => {}
            Some(have) => {
                return Err(format!(
                    "the license is bound to cluster uid {want}, this cluster's kube-system uid is {have}"
                ));
            }
            None => {
                return Err(format!(
                    "the license is bound to cluster uid {want}, and this cluster's uid could not be read"
                ));
            }
        }
    }
    Ok(BindingCheck::Matched)
}

/// Checks license bytes. Order: form → key → signature → time window → bindings → entitlements.
pub fn verify_license(bytes: &[u8], ctx: &VerifyContext<'_>) -> LicenseVerdict {
    let mut verdict =
        LicenseVerdict::early(LicenseReason::Ok, String::new(), ctx.now, ctx.required);
    let fail = |mut v: LicenseVerdict, reason: LicenseReason, detail: String| {
        v.ok = false;
        v.reason = reason.as_str();
        v.detail = Some(detail);
        v
    };
    let lic = match parse_license(bytes) {
        Ok(l) => l,
        Err(e) => return fail(verdict, LicenseReason::LicenseMalformed, e),
    };
    verdict.license = Some(LicenseSummary {
        claims: lic.claims.clone(),
        kid: lic.kid.clone(),
        unknown_entitlements: lic
            .claims
            .entitlements
            .iter()
            .filter(|e| !KNOWN_ENTITLEMENTS.contains(&e.as_str()))
            .cloned()
            .collect(),
    });

    // Key selection: a named key is the only one tried; an unnamed license may match any trusted key.
    let verified_with = match &lic.kid {
        Some(kid) => {
            let Some(key) = ctx.keyring.get(kid) else {
                return fail(
                    verdict,
                    LicenseReason::LicenseUnknownKid,
                    format!("key {kid} is not in the keyring"),
                );
            };
            if key
                .verify_strict(&lic.signed_message, &lic.signature)
                .is_err()
            {
                return fail(
                    verdict,
                    LicenseReason::LicenseSignatureInvalid,
                    format!(
                        "the signature does not verify with key {kid} (the license was altered or not signed by it)"
                    ),
                );
            }
            kid.clone()
        }
        None => match ctx
            .keyring
            .keys()
            .find(|(_, k)| k.verify_strict(&lic.signed_message, &lic.signature).is_ok())
        {
            Some((kid, _)) => kid.to_string(),
            None => {
                return fail(
                    verdict,
                    LicenseReason::LicenseWrongKey,
                    format!(
                        "the license names no key and none of the {} trusted key(s) verifies it",
                        ctx.keyring.kids().len()
                    ),
                );
            }
        },
    };
    verdict.verified_with_kid = Some(verified_with);

    let c = &lic.claims;
    if ctx.now < c.not_before - CLOCK_SKEW_SECS {
        return fail(
            verdict,
            LicenseReason::LicenseNotYetValid,
            format!("valid from {} (epoch s), now is {}", c.not_before, ctx.now),
        );
    }
    if ctx.now >= c.expires_at + CLOCK_SKEW_SECS {
        return fail(
            verdict,
            LicenseReason::LicenseExpired,
            format!("expired at {} (epoch s), now is {}", c.expires_at, ctx.now),
        );
    }
    match check_bindings(&lic, ctx.cluster) {
        Ok(b) => verdict.binding_check = Some(b),
        Err(e) => {
            verdict.binding_check = Some(BindingCheck::Mismatch);
            return fail(verdict, LicenseReason::LicenseBindingMismatch, e);
        }
    }
    let missing: Vec<&str> = ctx
        .required
        .iter()
        .copied()
        .filter(|e| !KNOWN_ENTITLEMENTS.contains(e) || !c.entitlements.contains(*e))
        .collect();
    if !missing.is_empty() {
        return fail(
            verdict,
            LicenseReason::EntitlementMissing,
            format!("the license does not grant {}", missing.join(", ")),
        );
    }
    verdict.ok = true;
    verdict.detail = None;
    verdict
}

/// The license check a gate runs: keyring problems, a missing file and everything
/// [`verify_license`] checks, as one verdict.
pub fn check_license_file(
    license: Option<&std::path::Path>,
    keyring: &Result<Keyring, KeyringError>,
    ctx_now: i64,
    cluster: Option<&ClusterIdentity>,
    required: &[&str],
) -> LicenseVerdict {
    let keyring = match keyring {
        Ok(k) => k,
        Err(e) => {
            let reason = match e {
                KeyringError::Missing(_) => LicenseReason::KeyringMissing,
                KeyringError::Malformed(_) => LicenseReason::KeyringMalformed,
            };
            return LicenseVerdict::early(reason, e.to_string(), ctx_now, required);
        }
    };
    let Some(path) = license else {
        return LicenseVerdict::early(
            LicenseReason::LicenseMissing,
            format!(
                "no license: pass --license, set MODEKEEPER_LICENSE_PATH, or install one at ~/.config/modekeeper/license.json; {LICENSING_DOC}"
            ),
            ctx_now,
            required,
        );
    };
    let bytes = match read_license_bytes(path) {
        Ok(b) => b,
        Err((reason, e)) => return LicenseVerdict::early(reason, e, ctx_now, required),
    };
    verify_license(
        &bytes,
        &VerifyContext {
            keyring,
            now: ctx_now,
            cluster,
            required,
        },
    )
}

/// Every `license_missing` detail ends with where to get a license.
pub const LICENSING_DOC: &str = "what a license is and how to get one: https://github.com/modekeeper/modekeeper/blob/main/docs/licensing.md";

fn read_license_bytes(path: &std::path::Path) -> Result<Vec<u8>, (LicenseReason, String)> {
    // One byte over the cap is still read as "too large" by the parser: license_malformed.
    let limit = super::canonical::MAX_DOCUMENT_BYTES as u64;
    match crate::fsio::read_capped(path, limit) {
        Ok(b) => Ok(b),
        Err(crate::fsio::ReadError::TooLarge { .. }) => Err((
            LicenseReason::LicenseMalformed,
            format!(
                "{}: larger than {}; not a license",
                path.display(),
                crate::fsio::shown_bytes(limit)
            ),
        )),
        Err(e) => Err((
            LicenseReason::LicenseMissing,
            format!(
                "{}: cannot read the license: {e}; {LICENSING_DOC}",
                path.display()
            ),
        )),
    }
}

/// Where the license comes from: `--license`, else `MODEKEEPER_LICENSE_PATH`, else
/// `$XDG_CONFIG_HOME/modekeeper/license.json` (`~/.config/...`) when that file exists. The same
/// order for `license verify` and every gate. Returns the path and which of the three it was.
pub fn resolve_license_path(
    flag: Option<&std::path::Path>,
    env: Option<std::ffi::OsString>,
    config_home: Option<std::path::PathBuf>,
) -> Option<(std::path::PathBuf, &'static str)> {
    if let Some(p) = flag {
        return Some((p.to_path_buf(), "flag"));
    }
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        return Some((v.into(), "env"));
    }
    let p = config_home?.join("modekeeper").join("license.json");
    p.is_file().then_some((p, "config"))
}

/// `$XDG_CONFIG_HOME`, else `$HOME/.config`.
pub fn config_home() -> Option<std::path::PathBuf> {
    crate::fsio::xdg_base("XDG_CONFIG_HOME", ".config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::document::{LicenseClaims, mint};
    use ed25519_dalek::SigningKey;
    use std::collections::{BTreeMap, BTreeSet};

    const NOW: i64 = 1_800_000_000;

    fn claims() -> LicenseClaims {
        LicenseClaims {
            license_id: "lic-1".into(),
            subject: "Acme".into(),
            issued_at: NOW - 1000,
            not_before: NOW - 1000,
            expires_at: NOW + 1000,
            entitlements: BTreeSet::from(["apply".to_string()]),
            bindings: BTreeMap::new(),
        }
    }

    fn check(
        text: &str,
        ring: &Keyring,
        now: i64,
        cluster: Option<&ClusterIdentity>,
    ) -> LicenseVerdict {
        verify_license(
            text.as_bytes(),
            &VerifyContext {
                keyring: ring,
                now,
                cluster,
                required: &["apply"],
            },
        )
    }

    #[test]
    fn reasons_in_order() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let b = SigningKey::from_bytes(&[2; 32]);
        let ring = Keyring::from_keys([a.verifying_key()]);
        let good = mint(&a, &claims(), true).unwrap();
        let v = check(&good, &ring, NOW, None);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.reason, "ok");
        assert!(v.grants("apply") && !v.grants("chords.advanced"));

        let reason = |text: &str, now: i64| check(text, &ring, now, None).reason;
        assert_eq!(reason("{", NOW), "license_malformed");
        assert_eq!(
            reason(&mint(&b, &claims(), true).unwrap(), NOW),
            "license_unknown_kid"
        );
        assert_eq!(
            reason(&mint(&b, &claims(), false).unwrap(), NOW),
            "license_wrong_key"
        );
        assert_eq!(reason(&mint(&a, &claims(), false).unwrap(), NOW), "ok");
        let tampered = good.replace("Acme", "Acmf");
        assert_eq!(reason(&tampered, NOW), "license_signature_invalid");
        // The skew allowance, both ends.
        assert_eq!(reason(&good, NOW - 1000 - CLOCK_SKEW_SECS), "ok");
        assert_eq!(
            reason(&good, NOW - 1001 - CLOCK_SKEW_SECS),
            "license_not_yet_valid"
        );
        assert_eq!(reason(&good, NOW + 999 + CLOCK_SKEW_SECS), "ok");
        assert_eq!(
            reason(&good, NOW + 1000 + CLOCK_SKEW_SECS),
            "license_expired"
        );

        let mut c = claims();
        c.entitlements = BTreeSet::from(["chords.advanced".to_string()]);
        assert_eq!(
            reason(&mint(&a, &c, true).unwrap(), NOW),
            "entitlement_missing"
        );
    }

    #[test]
    fn a_signature_binds_every_field_and_the_domain() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let ring = Keyring::from_keys([a.verifying_key()]);
        let lic =
            crate::license::document::parse_license(mint(&a, &claims(), true).unwrap().as_bytes())
                .unwrap();
        // The same canonical bytes signed without the domain prefix do not verify.
        use ed25519_dalek::Signer;
        let bare = &lic.signed_message[crate::license::SIGNING_DOMAIN.len()..];
        let sig = a.sign(bare);
        let mut v: serde_json::Value = serde_json::from_slice(bare).unwrap();
        v["signature"] =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sig.to_bytes())
                .into();
        assert_eq!(
            check(&v.to_string(), &ring, NOW, None).reason,
            "license_signature_invalid"
        );
    }

    #[test]
    fn bindings_fail_closed() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let ring = Keyring::from_keys([a.verifying_key()]);
        let mut c = claims();
        c.bindings
            .insert("cluster_server".into(), "https://K8S.example:6443/".into());
        c.bindings.insert("cluster_uid".into(), "uid-1".into());
        let text = mint(&a, &c, true).unwrap();
        let id = |server: Option<&str>, uid: Option<&str>| ClusterIdentity {
            server: server.map(Into::into),
            uid: uid.map(Into::into),
        };
        let v = check(&text, &ring, NOW, None);
        assert_eq!(
            (v.reason, v.binding_check),
            ("ok", Some(BindingCheck::NotChecked))
        );
        let v = check(
            &text,
            &ring,
            NOW,
            Some(&id(Some("https://k8s.example:6443"), Some("uid-1"))),
        );
        assert_eq!(
            (v.reason, v.binding_check),
            ("ok", Some(BindingCheck::Matched))
        );
        for other in [
            id(Some("https://other:6443"), Some("uid-1")),
            id(None, Some("uid-1")),
            id(Some("https://k8s.example:6443"), None),
            id(Some("https://k8s.example:6443"), Some("uid-2")),
        ] {
            let v = check(&text, &ring, NOW, Some(&other));
            assert_eq!(v.reason, "license_binding_mismatch", "{other:?}");
            assert_eq!(v.binding_check, Some(BindingCheck::Mismatch));
        }
    }

    #[test]
    fn file_level_reasons() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let ring: Result<Keyring, KeyringError> = Ok(Keyring::from_keys([a.verifying_key()]));
        let v = check_license_file(None, &ring, NOW, None, &["apply"]);
        assert_eq!(v.reason, "license_missing");
        let detail = v.detail.unwrap_or_default();
        assert!(detail.ends_with("docs/licensing.md"), "{detail}");
        let v = check_license_file(
            Some(std::path::Path::new("/nonexistent/l.json")),
            &ring,
            NOW,
            None,
            &["apply"],
        );
        assert_eq!(v.reason, "license_missing");
        assert!(v.detail.unwrap_or_default().ends_with("docs/licensing.md"));
        let bad = Err(KeyringError::Malformed("bad".into()));
        let v = check_license_file(None, &bad, NOW, None, &["apply"]);
        assert_eq!(v.reason, "keyring_malformed");
        let none = Err(KeyringError::Missing("none".into()));
        let v = check_license_file(None, &none, NOW, None, &["apply"]);
        assert_eq!(v.reason, "keyring_missing");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        std::fs::write(&p, vec![b' '; 70 * 1024]).unwrap();
        let v = check_license_file(Some(&p), &ring, NOW, None, &["apply"]);
        assert_eq!(v.reason, "license_malformed");
    }

    #[test]
    fn license_path_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("flag.json");
        assert_eq!(
            resolve_license_path(Some(&flag), Some("e".into()), None),
            Some((flag.clone(), "flag"))
        );
        assert_eq!(
            resolve_license_path(None, Some("e.json".into()), None),
            Some(("e.json".into(), "env"))
        );
        assert_eq!(
            resolve_license_path(None, None, Some(dir.path().into())),
            None
        );
        std::fs::create_dir_all(dir.path().join("modekeeper")).unwrap();
        std::fs::write(dir.path().join("modekeeper/license.json"), "{}").unwrap();
        assert_eq!(
            resolve_license_path(None, Some("".into()), Some(dir.path().into())).map(|p| p.1),
            Some("config")
        );
    }

    #[test]
    fn server_normalization() {
        assert_eq!(
            normalize_server("HTTPS://K8s.Example:6443/"),
            "https://k8s.example:6443"
        );
        assert_eq!(normalize_server("https://h/Path/"), "https://h/Path");
    }
}
