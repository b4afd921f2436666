//! License, keyring and signing-key files (src/license/), and the restricted canonical JSON they
//! share. Every input goes through all four parsers:
//! - `canonicalize` is idempotent (documented in canonical.rs);
//! - a license that parses, re-signed with the fuzz key, parses to the same claims and verifies;
//! - a license that *verifies* under the fuzz keyring is byte for byte (canonically) what minting
//!   its claims gives (ed25519 is deterministic): nothing outside the signature is unsigned, and no
//!   second encoding of a signed license is accepted. The seeds include licenses signed with the
//!   fuzz key, so the fuzzer mutates signed documents;
//! - a keyring or signing key that parses round-trips through the text this tool writes.

#![no_main]

mod common;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use modekeeper::license::{
    ClusterIdentity, Keyring, MAX_DOCUMENT_BYTES, VerifyContext, canonicalize, mint, parse_license,
    parse_signing_key, signing_key_json, verify_license,
};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

/// Documents are capped at 64 KiB (MAX_DOCUMENT_BYTES); parsing one needs a small multiple.
const CAP: usize = 16 << 20;

/// The fuzz key (seed 7,7,…): its licenses are in seeds/license.
fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fuzz_target!(|data: &[u8]| {
    common::bounded(CAP, "license", || {
        canonical(data);
        license(data);
        keyring(data);
        signing_key(data);
    })
});

fn canonical(data: &[u8]) {
    if let Ok(c) = canonicalize(data) {
        assert!(
            c.len() <= 2 * MAX_DOCUMENT_BYTES + 64,
            "canonical text blew up"
        );
        assert_eq!(
            canonicalize(c.as_bytes()).as_deref(),
            Ok(c.as_str()),
            "canonicalize is not idempotent"
        );
    }
}

fn license(data: &[u8]) {
    let key = key();
    let ring = Keyring::from_keys([key.verifying_key()]);
    let lic = parse_license(data);
    let cluster = |claims: &modekeeper::license::LicenseClaims| ClusterIdentity {
        server: claims.bindings.get("cluster_server").cloned(),
        uid: claims.bindings.get("cluster_uid").cloned(),
    };
    // The fuzzed bytes themselves, at a time inside their window when they have one.
    let (now, id) = match &lic {
        Ok(l) => (l.claims.not_before, cluster(&l.claims)),
        Err(_) => (1_767_225_600, ClusterIdentity::default()),
    };
    let ctx = VerifyContext {
        keyring: &ring,
        now,
        cluster: Some(&id),
        required: &["apply"],
    };
    let verdict = verify_license(data, &ctx);
    let Ok(lic) = lic else {
        assert!(!verdict.ok);
        return;
    };
    let minted = mint(&key, &lic.claims, lic.kid.is_some()).expect("parsed claims can be signed");
    if verdict.ok {
        assert_eq!(
            format!("{}\n", canonicalize(data).unwrap()),
            minted,
            "a license that verifies differs from its own claims signed"
        );
        assert!(lic.claims.entitlements.contains("apply"));
    }
    let again = parse_license(minted.as_bytes()).expect("a minted license parses");
    assert_eq!(again.claims, lic.claims);
    assert_eq!(again.kid.is_some(), lic.kid.is_some());
    let ctx = VerifyContext {
        keyring: &ring,
        now: lic.claims.not_before,
        cluster: Some(&cluster(&lic.claims)),
        required: &[],
    };
    let v = verify_license(minted.as_bytes(), &ctx);
    assert!(
        v.ok,
        "a freshly minted license does not verify: {:?}",
        v.detail
    );
}

fn keyring(data: &[u8]) {
    if let Ok(k) = Keyring::parse(data) {
        let text = k.to_json();
        assert_eq!(Keyring::parse(text.as_bytes()).as_ref(), Ok(&k));
    }
}

fn signing_key(data: &[u8]) {
    if let Ok(k) = parse_signing_key(data) {
        let text = signing_key_json(&k);
        let back = parse_signing_key(text.as_bytes()).expect("a written key file parses");
        assert_eq!(back.to_bytes(), k.to_bytes());
    }
}
