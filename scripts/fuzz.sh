#!/usr/bin/env bash
# Fuzzing ModeKeeper's parsers with cargo-fuzz (libFuzzer). See fuzz/README.md.
#
#   scripts/fuzz.sh build [TARGET]          build every target (or one)
#   scripts/fuzz.sh run TARGET SECONDS [libFuzzer flags...]
#   scripts/fuzz.sh repro TARGET FILE       run one input (a crash artifact) and show the failure
#   scripts/fuzz.sh list
#
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags (sanitizer coverage) to
# the pinned stable rustc. FUZZ_SANITIZER=address for ASan (default none: an ASan build of the whole
# tree is much slower; the targets measure their own heap, see fuzz/fuzz_targets/common/mod.rs).
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
SAN="${FUZZ_SANITIZER:-none}"
BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"

# Per target: the longest input worth trying (libFuzzer -max_len).
max_len() {
    case "$1" in
        telemetry_line) echo 4096 ;;
        telemetry_stream | watch_state) echo 16384 ;;
        license) echo 70000 ;; # MAX_DOCUMENT_BYTES (64 KiB) and a little beyond
        policy_metadata) echo 32768 ;;
        *) echo 16384 ;;
    esac
}

case "${1:-}" in
    list)
        cargo fuzz list
        ;;
    build)
        cargo fuzz build -s "$SAN" --codegen-units 16 --target-dir "$CARGO_TARGET_DIR" ${2:+"$2"}
        ;;
    run)
        t="${2:?target}"
        secs="${3:?seconds}"
        shift 3
        mkdir -p "corpus/$t" "artifacts/$t"
        # Fresh finds go to corpus/ (gitignored); the committed seeds are read, never written.
        exec "$BIN/$t" "corpus/$t" "seeds/$t" \
            -artifact_prefix="artifacts/$t/" \
            -max_total_time="$secs" \
            -max_len="$(max_len "$t")" \
            -timeout=10 \
            -rss_limit_mb=2048 \
            -print_final_stats=1 \
            "$@"
        ;;
    repro)
        t="${2:?target}"
        exec "$BIN/$t" -rss_limit_mb=2048 -timeout=10 "${3:?file}"
        ;;
    *)
        sed -n '2,12p' "$0"
        exit 2
        ;;
esac
