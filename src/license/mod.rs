//! Signed licenses (`license.v1`): what they contain, how they are canonicalised and verified, the
//! keyring of trusted public keys, and the issuing tools' key files.
//!
//! A license is a small JSON document signed with ed25519 over
//! `b"modekeeper-license-v1\0" || RFC 8785 canonical JSON of the document without its signature`.
//! Verification is offline and pure (bytes, keyring, clock and cluster identity in; a verdict with
//! one stable reason code out). The built-in keyring holds only production public keys: no build
//! trusts a development key, and nothing in the environment skips a check. A different keyring can
//! be used only when named explicitly, and that choice is recorded in every report.
//!
//! This module never talks to a cluster. The environment is read in one place only
//! ([`check_license_env`]), so `license verify` and every gate agree on which license and keyring
//! count.

mod canonical;
mod document;
mod env;
mod keyring;
mod keys;
mod verify;

#[cfg(test)]
mod proptests;

pub use canonical::{CanonError, Document, Field, MAX_DOCUMENT_BYTES, Scalar, canonicalize};
pub use document::{
    BINDING_CLUSTER_SERVER, BINDING_CLUSTER_UID, BINDING_KEYS, ENTITLEMENT_APPLY,
    ENTITLEMENT_CHORDS_ADVANCED, KNOWN_ENTITLEMENTS, LICENSE_SCHEMA, License, LicenseClaims,
    SIGNING_DOMAIN, mint, parse_license,
};
pub use env::{LICENSE_PATH_ENV, LicenseCheck, check_license_env};
pub use keyring::{
    BUILTIN_KEYRING, KEYRING_ENV, Keyring, KeyringError, KeyringInfo, KeyringSource,
    decode_public_key, is_kid, kid_of, resolve_keyring,
};
pub use keys::{
    GeneratedKey, SIGNING_KEY_SCHEMA, generate_signing_key, keygen, load_signing_key,
    parse_signing_key, signing_key_json,
};
pub use verify::{
    BindingCheck, CLOCK_SKEW_SECS, ClusterIdentity, LicenseReason, LicenseSummary, LicenseVerdict,
    VerifyContext, check_license_file, config_home, normalize_server, resolve_license_path,
    verify_license,
};
