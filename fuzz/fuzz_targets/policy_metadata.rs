//! A policy component's metadata (src/policy/metadata.rs), read with wasmparser from the
//! `modekeeper-policy` custom section before anything is compiled. Input: a control byte, then
//! - (even) a whole binary: `read_metadata` and `component_surface` refuse or answer, never panic;
//! - (odd) the section's JSON, wrapped in a minimal component: validated metadata survives a round
//!   trip through its JSON and the same wrapping, and what validation promises holds.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use modekeeper::policy::{METADATA_SECTION, component_surface, read_metadata};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

const CAP: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    common::bounded(CAP, "policy metadata", || {
        if ctl % 2 == 0 {
            let _ = read_metadata(rest);
            let _ = component_surface(rest);
        } else {
            section(rest);
        }
    })
});

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if n == 0 { b } else { b | 0x80 });
        if n == 0 {
            break;
        }
    }
}

/// A component holding only the custom section.
fn component(json: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    leb(METADATA_SECTION.len(), &mut body);
    body.extend_from_slice(METADATA_SECTION.as_bytes());
    body.extend_from_slice(json);
    let mut c = b"\0asm\x0d\x00\x01\x00".to_vec();
    c.push(0);
    leb(body.len(), &mut c);
    c.extend(body);
    c
}

fn section(json: &[u8]) {
    let Ok(md) = read_metadata(&component(json)) else {
        return;
    };
    let again = read_metadata(&component(&serde_json::to_vec(&md).unwrap()))
        .expect("validated metadata re-reads");
    assert_eq!(again, md);
    assert!(md.chords.iter().any(|c| c == "NORMAL-HOLD"));
    assert!(!md.id.is_empty() && md.id.len() <= 64);
    for (chord, knobs) in &md.chord_knobs {
        assert!(md.chords.contains(chord));
        assert!(knobs.iter().all(|k| md.knobs.contains(k)));
    }
    // Every knob a chord declares is attributed to that chord.
    for (chord, knobs) in &md.chord_knobs {
        for k in knobs {
            let primary = "NORMAL-HOLD";
            let got = md.chord_for_knob(primary, std::slice::from_ref(chord), k);
            assert_eq!(got, chord.as_str());
        }
    }
    let _ = component_surface(&component(json));
}
