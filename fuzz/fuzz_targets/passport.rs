//! Passports, v1 and the legacy v0 (translated on load). What loads must re-load from the v1 text
//! this tool writes (`passport show`, `passport init`) to the same passport.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use modekeeper::passport::parse_passport;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

const CAP: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    common::bounded(CAP, "passport", || {
        let Ok(loaded) = parse_passport("fuzz", text) else {
            return;
        };
        let v1 = loaded.passport.to_json_pretty();
        let again = parse_passport("fuzz:v1", &v1)
            .unwrap_or_else(|e| panic!("a written passport does not load: {e}\n{v1}"));
        assert_eq!(again.from_schema, "passport.v1");
        // `==` (not the bits): -0.0 is written as 0, the same value.
        assert_eq!(
            again.passport, loaded.passport,
            "passport changed through its own v1 text"
        );
    })
});
