//! `closed-loop watch`'s state file decoders (src/cli/closed_loop/watch_state.rs). Input: a control
//! byte, then
//! - (ctl % 3 == 0) a pipeline blob (postcard: ingest snapshot, windower, feature extractor) as the
//!   state file carries it (base64 of these bytes): decoding must refuse or yield a pipeline that
//!   then runs on more telemetry without panicking and within the memory cap;
//! - (ctl % 3 == 1) telemetry text: a watch checkpointed after any line and resumed from its
//!   encoded state yields the same windows and features as one that never stopped (the state
//!   file's documented promise);
//! - (ctl % 3 == 2) `watch_state.json` text: what parses re-serialises to a fixed point.
//!
//! With MODEKEEPER_FUZZ_DUMP=<dir>, mode 1 writes its encoded pipelines there as mode-0 inputs
//! (how the seed corpus was made; see fuzz/README.md).

#![no_main]

mod common;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use modekeeper::cli::closed_loop::{Pipeline, WatchState};
use modekeeper::pipeline::AdaptiveWindower;
use modekeeper::signals::{FeatureConfig, FeatureExtractor, WindowStats};
use modekeeper::telemetry::{Format, Ingest, IngestOptions};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

/// The watch's pipeline is bounded like the ingest: docs/telemetry.md's 64 MiB.
const CAP: usize = 64 << 20;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    common::bounded(CAP, "watch state", || match ctl % 3 {
        0 => decode_and_run(rest),
        1 => resume_equals_uninterrupted(rest),
        _ => state_json(rest),
    })
});

fn opts() -> IngestOptions {
    IngestOptions {
        reorder_window: 8,
        ..IngestOptions::default()
    }
}

/// More telemetry for a decoded pipeline: steps around where any state could be.
fn more_lines() -> impl Iterator<Item = String> {
    (1..=40u64)
        .chain([1 << 20, u64::MAX / 2, u64::MAX - 1])
        .map(|step| {
            format!(
                "{{\"ts\":{},\"step\":{step},\"step_time_ms\":{},\"loss\":{},\"data_wait_ms\":1.5,\"worker_latencies_ms\":[10,12,30],\"rank\":{},\"node\":\"n{}\",\"gpu_util_pct\":80,\"comm_ms\":3}}\n",
                1_767_225_600_000 + step % 1_000_000 * 100,
                20 + step % 7,
                2.0 / (1 + step % 100) as f64,
                step % 3,
                step % 2,
            )
        })
}

/// Feeds lines, returns every window's features as text (Debug: exact floats, NaN visible).
fn run(p: &mut Pipeline, lines: impl Iterator<Item = Vec<u8>>, finish: bool) -> Vec<String> {
    let mut windows = vec![];
    let mut samples = vec![];
    for l in lines {
        p.ingest.push_line(&l, &mut |s| samples.push(s.clone()));
    }
    if finish {
        p.ingest.finish(&mut |s| samples.push(s.clone()));
    }
    // As the live session does: the extractor is made once the windower has chosen its lengths.
    let Pipeline {
        windower,
        extractor,
        ..
    } = p;
    let mut out = |cfg: &FeatureConfig, stats: WindowStats| {
        let x = extractor.get_or_insert_with(|| FeatureExtractor::new(*cfg));
        windows.push(format!("{:?}", x.next(&stats)));
    };
    for s in &samples {
        windower.push(s, &mut out);
    }
    if finish {
        windower.finish(&mut out);
    }
    windows
}

fn decode_and_run(blob: &[u8]) {
    let Ok(mut p) = Pipeline::decode(&B64.encode(blob), Format::Jsonl, &opts()) else {
        return;
    };
    // What decodes encodes again to something that decodes to the same encoding.
    let again = p.encode();
    let q = Pipeline::decode(&again, Format::Jsonl, &opts()).expect("a re-encoded state decodes");
    assert_eq!(
        q.encode(),
        again,
        "encode(decode(encode(x))) is a fixed point"
    );
    run(&mut p, more_lines().map(String::into_bytes), true);
}

fn fresh() -> Pipeline {
    let cfg = FeatureConfig {
        window_steps: 4,
        warmup_steps: 8,
    };
    Pipeline {
        ingest: Ingest::new(Format::Log, &opts()),
        windower: AdaptiveWindower::new(cfg),
        extractor: None,
    }
}

fn resume_equals_uninterrupted(text: &[u8]) {
    let lines: Vec<Vec<u8>> = text
        .split_inclusive(|c| *c == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let whole = run(&mut fresh(), lines.iter().cloned(), true);
    let k = text.len() % (lines.len() + 1);
    let mut p = fresh();
    let mut got = run(&mut p, lines[..k].iter().cloned(), false);
    let state = p.encode();
    if let Some(dir) = std::env::var_os("MODEKEEPER_FUZZ_DUMP") {
        let mut seed = vec![0u8];
        seed.extend(B64.decode(&state).unwrap());
        let name = format!("pipeline-{:016x}", fnv(&seed));
        std::fs::write(std::path::Path::new(&dir).join(name), seed).unwrap();
    }
    let mut p = Pipeline::decode(&state, Format::Log, &opts()).expect("an encoded state decodes");
    got.extend(run(&mut p, lines[k..].iter().cloned(), true));
    assert_eq!(whole, got, "resumed after line {k} != uninterrupted");
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, c| {
        (h ^ u64::from(*c)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn state_json(text: &[u8]) {
    let Ok(s) = serde_json::from_slice::<WatchState>(text) else {
        return;
    };
    let once = serde_json::to_string(&s).expect("a state serialises");
    let back: WatchState = serde_json::from_str(&once).expect("a serialised state parses");
    assert_eq!(serde_json::to_string(&back).unwrap(), once);
}
