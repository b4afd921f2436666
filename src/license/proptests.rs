//! Properties of license parsing, canonicalisation and verification over generated inputs: nothing
//! panics on any bytes, canonicalisation is idempotent and formatting-blind, and changing any single
//! byte of a license breaks it.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::canonical::{Document, Field, MAX_SAFE_INTEGER, Scalar, canonicalize};
use super::document::{LicenseClaims, mint, parse_license};
use super::keyring::Keyring;
use super::verify::{ClusterIdentity, VerifyContext, verify_license};

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).prop_map(Scalar::Int),
        any::<String>().prop_map(Scalar::Str),
        any::<bool>().prop_map(Scalar::Bool),
    ]
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        scalar().prop_map(Field::Scalar),
        prop::collection::vec(scalar(), 0..5).prop_map(Field::List),
        prop::collection::btree_map(any::<String>(), scalar(), 0..5).prop_map(Field::Map),
    ]
}

fn document() -> impl Strategy<Value = Document> {
    prop::collection::btree_map(any::<String>(), field(), 0..8)
        .prop_map(|fields| Document { fields })
}

fn claims() -> impl Strategy<Value = LicenseClaims> {
    let ent = prop::sample::subsequence(vec!["apply", "chords.advanced", "x.y_2"], 0..=3);
    (
        "[A-Za-z0-9._-]{1,40}",
        "[^\\p{Cc}]{0,30}[a-zA-Z][^\\p{Cc}]{0,30}",
        0i64..2_000_000_000,
        1i64..1_000_000_000,
        ent,
        prop::option::of("https://[a-z0-9.]{1,20}:[0-9]{2,5}"),
    )
        .prop_map(|(id, subject, start, len, ent, server)| LicenseClaims {
            license_id: id,
            subject,
            issued_at: start,
            not_before: start,
            expires_at: start + len,
            entitlements: ent.into_iter().map(String::from).collect::<BTreeSet<_>>(),
            bindings: server
                .map(|s| BTreeMap::from([("cluster_server".to_string(), s)]))
                .unwrap_or_default(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nothing_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = canonicalize(&bytes);
        let _ = parse_license(&bytes);
        let _ = Keyring::parse(&bytes);
        let ring = Keyring::from_keys([SigningKey::from_bytes(&[1; 32]).verifying_key()]);
        let ctx = VerifyContext { keyring: &ring, now: 0, cluster: Some(&ClusterIdentity::default()), required: &["apply"] };
        let v = verify_license(&bytes, &ctx);
        prop_assert!(!v.ok);
    }

    #[test]
    fn nothing_panics_on_json_shaped_text(text in r#"[\{\}\[\]":,0-9a-z\-\.eE \\u]{0,200}"#) {
        let _ = canonicalize(text.as_bytes());
        let _ = parse_license(text.as_bytes());
    }

    #[test]
    fn canonicalisation_is_idempotent_and_formatting_blind(doc in document()) {
        let canon = doc.canonical();
        prop_assert_eq!(canonicalize(canon.as_bytes()).unwrap(), canon.clone());
        let pretty = serde_json::to_string_pretty(&doc.to_value()).unwrap();
        prop_assert_eq!(canonicalize(pretty.as_bytes()).unwrap(), canon.clone());
        prop_assert_eq!(Document::parse(canon.as_bytes()).unwrap(), doc);
    }

    #[test]
    fn canonicalise_any_accepted_text_is_a_fixed_point(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(c) = canonicalize(&bytes) {
            prop_assert_eq!(canonicalize(c.as_bytes()).unwrap(), c);
        }
    }

    #[test]
    fn any_single_byte_tamper_fails_verification(
        c in claims(),
        with_kid in any::<bool>(),
        pos in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let ring = Keyring::from_keys([key.verifying_key()]);
        let text = mint(&key, &c, with_kid).unwrap();
        let ctx = VerifyContext { keyring: &ring, now: c.not_before, cluster: None, required: &[] };
        prop_assert!(verify_license(text.as_bytes(), &ctx).ok);
        // The final newline is formatting, not content: every other byte is covered.
        let body = text.trim_end_matches('\n').as_bytes();
        let i = pos.index(body.len());
        prop_assume!(body[i] != replacement);
        let mut tampered = body.to_vec();
        tampered[i] = replacement;
        let v = verify_license(&tampered, &ctx);
        prop_assert!(!v.ok, "byte {} {:?} -> {:?} still verifies", i, body[i] as char, replacement as char);
    }
}
