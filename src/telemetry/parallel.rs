//! Parallel parsing for large inputs: the calling thread reads chunks of whole lines and keeps the
//! order; worker threads parse chunks into [`LineOutcome`]s. Results are applied strictly in input
//! order, so the outcome (records, counters, windows) is identical to the sequential path. Memory is
//! bounded: at most `MAX_IN_FLIGHT` chunks are read ahead.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::MAX_LINE_BYTES;
use super::ingest::{Ingest, LineOutcome, LineParser};
use super::record::Sample;
use super::source::Format;
use super::stats::IngestStats;

/// A chunk is cut at the last newline once this much has been read.
const CHUNK_BYTES: usize = 1 << 20;
/// Room for one more read past `CHUNK_BYTES`, so a line of exactly `MAX_LINE_BYTES` still fits.
const BUF_BYTES: usize = CHUNK_BYTES + (64 << 10);
const MAX_IN_FLIGHT: usize = 8;
const _: () = assert!(MAX_LINE_BYTES <= CHUNK_BYTES);

enum Piece {
    /// `len` bytes of whole lines at the start of the buffer, each ending in `\n` except perhaps the
    /// last one of the input.
    Lines(Vec<u8>, usize),
    /// A line longer than the limit, discarded while reading; its length.
    TooLong(u64),
}

type Parsed = Vec<(usize, LineOutcome)>;

/// A chunk to parse: its number, the buffer and its length, and an empty vector for the outcomes.
type Job = (u64, Vec<u8>, usize, Parsed);

/// Reads everything through `ingest`, parsing on `threads` worker threads when that can help.
///
/// Chunk buffers and outcome vectors travel in a circle (reader → worker → applier → reader), so after
/// the first few chunks nothing is allocated per chunk and no fresh page is faulted in.
pub fn read_all_parallel(
    ingest: &mut Ingest,
    reader: &mut dyn BufRead,
    threads: usize,
    tick: &mut dyn FnMut(&IngestStats),
    out: &mut dyn FnMut(&Sample),
) -> io::Result<()> {
    // CSV depends on its header line; it stays sequential (it is also the rare format).
    if threads < 2 || ingest.format() == Format::Csv {
        return ingest.read_all(reader, tick, out);
    }
    let format = ingest.format();
    std::thread::scope(|scope| -> io::Result<()> {
        // Created inside the scope so that returning (normally or early) closes the job channel
        // before the scope joins the workers.
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (res_tx, res_rx) = mpsc::channel::<(u64, Parsed, Vec<u8>)>();
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            scope.spawn(move || {
                let mut parser = LineParser::new(format);
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((id, chunk, len, mut parsed))) = job else {
                        break;
                    };
                    parse_lines(&mut parser, &chunk[..len], &mut parsed);
                    if res_tx.send((id, parsed, chunk)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);

        let mut chunker = Chunker::default();
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        let mut outcome_vecs: Vec<Parsed> = Vec::new();
        let mut next_id = 0u64; // next piece to read
        let mut next_apply = 0u64; // next piece to apply
        let mut ready: BTreeMap<u64, Parsed> = BTreeMap::new();
        let mut inline: BTreeMap<u64, u64> = BTreeMap::new(); // TooLong pieces, applied in order
        let mut eof = false;
        let mut last_tick = 0u64;
        let result = loop {
            // Read ahead while there is room.
            while !eof && next_id - next_apply < MAX_IN_FLIGHT as u64 {
                let buf = buffers.pop().unwrap_or_else(|| vec![0; BUF_BYTES]);
                match chunker.next(reader, buf) {
                    Err(e) => return Err(e),
                    Ok((None, _)) => eof = true,
                    Ok((Some(Piece::Lines(buf, len)), _)) => {
                        let parsed = outcome_vecs.pop().unwrap_or_default();
                        job_tx.send((next_id, buf, len, parsed)).ok();
                        next_id += 1;
                    }
                    Ok((Some(Piece::TooLong(n)), buf)) => {
                        buffers.extend(buf);
                        inline.insert(next_id, n);
                        next_id += 1;
                    }
                }
            }
            // Apply what is ready, in order.
            loop {
                if let Some(n) = inline.remove(&next_apply) {
                    ingest.push_too_long(n);
                } else if let Some(mut parsed) = ready.remove(&next_apply) {
                    for (len, outcome) in parsed.drain(..) {
                        ingest.apply(len, outcome, out);
                    }
                    outcome_vecs.push(parsed);
                } else {
                    break;
                }
                next_apply += 1;
            }
            if ingest.stats().lines_read >= last_tick + 65_536 {
                last_tick = ingest.stats().lines_read;
                tick(ingest.stats());
            }
            if eof && next_apply == next_id {
                break Ok(());
            }
            match res_rx.recv() {
                Ok((id, parsed, buf)) => {
                    ready.insert(id, parsed);
                    buffers.push(buf);
                }
                Err(_) => break Err(io::Error::other("telemetry parser thread stopped")),
            }
        };
        drop(job_tx);
        result
    })
}

/// Parses the lines of one chunk into `parsed` (empty, reused).
fn parse_lines(parser: &mut LineParser, chunk: &[u8], parsed: &mut Parsed) {
    let mut one = |line: &[u8]| {
        // Same limit as the sequential reader: newline included.
        let outcome = if line.len() > MAX_LINE_BYTES {
            LineOutcome::Skip(super::stats::SkipReason::LineTooLong)
        } else {
            parser.parse(line)
        };
        parsed.push((line.len(), outcome));
    };
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', chunk) {
        one(&chunk[start..=end]);
        start = end + 1;
    }
    if start < chunk.len() {
        one(&chunk[start..]);
    }
}

/// Cuts a byte stream into chunks of whole lines, never holding a line over the limit. Reads straight
/// into the chunk's buffer (a `BufReader` hands reads this large through without copying).
#[derive(Default)]
struct Chunker {
    /// The start of a line that did not fit the previous chunk.
    carry: Vec<u8>,
    /// Bytes of an over-long line being discarded.
    discarding: Option<u64>,
    done: bool,
}

impl Chunker {
    /// The next piece, and the buffer back when the piece did not take it. `buf` is `BUF_BYTES` long;
    /// its contents do not matter.
    fn next(
        &mut self,
        r: &mut dyn Read,
        mut buf: Vec<u8>,
    ) -> io::Result<(Option<Piece>, Option<Vec<u8>>)> {
        if self.done {
            return Ok((None, Some(buf)));
        }
        let mut filled = self.carry.len();
        buf[..filled].copy_from_slice(&self.carry);
        self.carry.clear();
        loop {
            let n = match r.read(&mut buf[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.done = true;
                if let Some(total) = self.discarding.take() {
                    return Ok((Some(Piece::TooLong(total)), Some(buf)));
                }
                if filled == 0 {
                    return Ok((None, Some(buf)));
                }
                return Ok((Some(Piece::Lines(buf, filled)), None));
            }
            if let Some(total) = self.discarding.as_mut() {
                match memchr::memchr(b'\n', &buf[..n]) {
                    Some(i) => {
                        *total += (i + 1) as u64;
                        // What follows the end of the long line starts the next piece.
                        self.carry.extend_from_slice(&buf[i + 1..n]);
                        let total = self.discarding.take().unwrap_or(0);
                        return Ok((Some(Piece::TooLong(total)), Some(buf)));
                    }
                    None => {
                        *total += n as u64;
                        continue;
                    }
                }
            }
            filled += n;
            if filled < CHUNK_BYTES {
                continue;
            }
            match memchr::memrchr(b'\n', &buf[..filled]) {
                Some(i) => {
                    let tail = &buf[i + 1..filled];
                    if tail.len() > MAX_LINE_BYTES {
                        self.discarding = Some(tail.len() as u64);
                    } else {
                        self.carry.extend_from_slice(tail);
                    }
                    return Ok((Some(Piece::Lines(buf, i + 1)), None));
                }
                None if filled > MAX_LINE_BYTES => {
                    self.discarding = Some(filled as u64);
                    filled = 0;
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::IngestOptions;

    fn run(text: &[u8], threads: usize) -> (Vec<(Option<u64>, f64)>, IngestStats) {
        let mut ing = Ingest::new(Format::Jsonl, &IngestOptions::default());
        let mut got = vec![];
        let mut r = io::BufReader::with_capacity(64 * 1024, text);
        read_all_parallel(&mut ing, &mut r, threads, &mut |_| {}, &mut |s| {
            got.push((s.step, s.step_time_ms))
        })
        .unwrap();
        let st = ing.finish(&mut |s| got.push((s.step, s.step_time_ms)));
        (got, st)
    }

    #[test]
    fn parallel_equals_sequential() {
        let mut text = Vec::new();
        for i in 0..60_000u64 {
            // Some disorder, duplicates, junk and a few over-long lines.
            let step = if i % 97 == 0 { i.saturating_sub(3) } else { i };
            text.extend_from_slice(
                format!(
                    "{{\"step\":{step},\"step_time_ms\":{}.5,\"node\":\"n{}\"}}\n",
                    i % 50,
                    i % 3
                )
                .as_bytes(),
            );
            if i % 1000 == 0 {
                text.extend_from_slice(b"not json\n");
            }
            if i % 20_000 == 1 {
                text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 5));
                text.push(b'\n');
            }
        }
        let (seq, seq_stats) = run(&text, 1);
        let (par, par_stats) = run(&text, 2);
        assert_eq!(seq.len(), par.len());
        assert_eq!(seq, par);
        assert_eq!(seq_stats, par_stats);
        assert_eq!(
            par_stats.skipped(crate::telemetry::SkipReason::LineTooLong),
            3
        );
    }

    /// Long lines at every awkward place: exactly at the limit, one over, across chunk boundaries,
    /// several in a row, and last in the input without a newline.
    #[test]
    fn long_lines_at_chunk_boundaries_agree_with_the_sequential_reader() {
        let record = |i: u64| format!("{{\"step\":{i},\"step_time_ms\":{}.25}}\n", 10 + i % 7);
        let filler = |n: usize| {
            let mut l = vec![b'x'; n - 1];
            l.push(b'\n');
            l
        };
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for long in [MAX_LINE_BYTES, MAX_LINE_BYTES + 1, 3 * MAX_LINE_BYTES + 17] {
            for before in [0usize, 1, 5_000, 40_000] {
                let mut text = Vec::new();
                for i in 0..before as u64 {
                    text.extend_from_slice(record(i).as_bytes());
                }
                text.extend(filler(long));
                text.extend(filler(long));
                for i in 0..3_000 {
                    text.extend_from_slice(record(before as u64 + i).as_bytes());
                }
                cases.push(text.clone());
                // The same long line last, without its newline.
                text.extend(std::iter::repeat_n(b'y', long));
                cases.push(text);
            }
        }
        for text in cases {
            let (seq, seq_stats) = run(&text, 1);
            let (par, par_stats) = run(&text, 2);
            assert_eq!(seq, par);
            assert_eq!(seq_stats, par_stats);
            assert!(par_stats.records_parsed >= 3_000);
        }
    }
}
