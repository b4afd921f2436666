//! A whole telemetry stream (JSONL, trainer log, CSV) through the ingest: the reorder buffer, the
//! duplicate filter, the counters. Input: one control byte (ingest options), then the text.
//! Differentials, for each format:
//! - `Ingest::read_all` through a tiny read buffer (lines split across reads) against feeding the
//!   same lines one by one, and against the parallel reader (`read_all_parallel`, two threads);
//! - a run checkpointed after any line (`snapshot`, postcard round trip, `restore`, as
//!   `closed-loop watch` does across restarts) against the uninterrupted run;
//! and the accounting invariant: every line read is in exactly one bucket.

#![no_main]

mod common;

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use modekeeper::telemetry::{
    Format, Ingest, IngestOptions, IngestSnapshot, IngestStats, Sample, read_all_parallel,
};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

/// docs/telemetry.md: under 64 MiB for any input.
const CAP: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, text)) = data.split_first() else {
        return;
    };
    let opts = IngestOptions {
        reorder_window: 1 + usize::from(ctl & 7),
        skew_tolerance_ms: if ctl & 0x40 != 0 { 0 } else { 5_000 },
        release_lag_steps: (ctl & 8 != 0).then_some(u64::from(ctl >> 4 & 3)),
        ..IngestOptions::default()
    };
    // Auto: every trainer text reader and the assembler stage (held-back records across a checkpoint).
    for format in [
        Format::Jsonl,
        Format::Log,
        Format::Csv,
        Format::Auto,
        Format::LightningCsv,
    ] {
        common::bounded(CAP, "telemetry stream", || check(format, &opts, text));
    }
});

type Run = (Vec<Sample>, IngestStats);

fn same_run(a: &Run, b: &Run) -> bool {
    a.1 == b.1
        && a.0.len() == b.0.len()
        && a.0.iter().zip(&b.0).all(|(x, y)| common::same_sample(x, y))
}

/// Physical lines, each with its newline.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split_inclusive(|c| *c == b'\n')
}

fn by_reader(format: Format, opts: &IngestOptions, text: &[u8], cap: usize) -> Run {
    let mut ing = Ingest::new(format, opts);
    let mut got = vec![];
    let mut r = BufReader::with_capacity(cap, text);
    ing.read_all(&mut r, &mut |_| {}, &mut |s| got.push(s.clone()))
        .unwrap();
    let st = ing.finish(&mut |s| got.push(s.clone()));
    (got, st)
}

fn check(format: Format, opts: &IngestOptions, text: &[u8]) {
    let whole = by_reader(format, opts, text, 1 << 16);
    let (samples, st) = &whole;

    let split = by_reader(format, opts, text, 3);
    assert!(
        same_run(&whole, &split),
        "{format:?}: a 3-byte read buffer changed the result"
    );

    let mut ing = Ingest::new(format, opts);
    let mut got = vec![];
    for l in lines(text) {
        ing.push_line(l, &mut |s| got.push(s.clone()));
    }
    let st1 = ing.finish(&mut |s| got.push(s.clone()));
    let fed = (got, st1);
    assert!(
        same_run(&whole, &fed),
        "{format:?}: read_all != push_line per line"
    );

    // The parallel reader starts two threads per call: on a loaded 2-core machine that cost most
    // of a run's time (3 inputs/s), so it checks one input in eight.
    if text.len() % 8 == 0 {
        parallel(format, opts, text, &whole);
    }

    // Every line lands in exactly one bucket; a CSV header (at most one line) in none of them.
    let buckets = st.blank_lines + st.log_lines + st.records_parsed + st.skipped_total();
    let header = st.lines_read.checked_sub(buckets);
    assert!(
        header == Some(0)
            || (header == Some(1) && matches!(format, Format::Csv | Format::LightningCsv)),
        "{format:?}: {st:?}"
    );
    assert_eq!(st.lines_read, lines(text).count() as u64);
    assert_eq!(st.bytes_read, text.len() as u64);
    assert_eq!(st.records_emitted, samples.len() as u64);
    assert_eq!(
        st.records_parsed,
        st.records_emitted + st.duplicates + st.late_dropped,
        "{format:?}: {st:?}"
    );
    // Emitted in step order.
    assert!(
        samples.windows(2).all(|w| w[0].step <= w[1].step),
        "{format:?}: out of order"
    );

    // A checkpoint after line `k` (k from the text's length) resumes to the same result.
    let n = lines(text).count();
    if n > 0 {
        let k = text.len() % (n + 1);
        let mut ing = Ingest::new(format, opts);
        let mut got = vec![];
        for l in lines(text).take(k) {
            ing.push_line(l, &mut |s| got.push(s.clone()));
        }
        let snap = postcard::to_allocvec(&ing.snapshot()).unwrap();
        let snap: IngestSnapshot = postcard::from_bytes(&snap).unwrap();
        let mut ing = Ingest::restore(format, opts, &snap).unwrap();
        for l in lines(text).skip(k) {
            ing.push_line(l, &mut |s| got.push(s.clone()));
        }
        let st3 = ing.finish(&mut |s| got.push(s.clone()));
        assert!(
            same_run(&whole, &(got, st3)),
            "{format:?}: resumed after line {k} != uninterrupted"
        );
    }
}

fn parallel(format: Format, opts: &IngestOptions, text: &[u8], whole: &Run) {
    let mut ing = Ingest::new(format, opts);
    let mut got = vec![];
    read_all_parallel(
        &mut ing,
        &mut BufReader::new(text),
        2,
        &mut |_| {},
        &mut |s| got.push(s.clone()),
    )
    .unwrap();
    let st2 = ing.finish(&mut |s| got.push(s.clone()));
    assert!(
        same_run(whole, &(got, st2)),
        "{format:?}: parallel != sequential"
    );
}
