//! Parallel parsing for large inputs: the calling thread reads chunks of whole lines and keeps the
//! order; worker threads parse chunks into [`LineOutcome`]s. Results are applied strictly in input
//! order, so the outcome (records, counters, windows) is identical to the sequential path. Memory is
//! bounded: at most `MAX_IN_FLIGHT` chunks are read ahead.

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::MAX_LINE_BYTES;
use super::ingest::{Ingest, LineOutcome, LineParser};
use super::record::Sample;
use super::source::Format;
use super::stats::IngestStats;

const CHUNK_BYTES: usize = 1 << 20;
const MAX_IN_FLIGHT: usize = 8;

enum Piece {
    /// Whole lines, each ending in `\n` except perhaps the last one of the input.
    Lines(Vec<u8>),
    /// A line longer than the limit, discarded while reading; its length.
    TooLong(u64),
}

type Parsed = Vec<(usize, LineOutcome)>;

/// Reads everything through `ingest`, parsing on `threads` worker threads when that can help.
pub fn read_all_parallel(
    ingest: &mut Ingest,
    reader: &mut dyn BufRead,
    threads: usize,
    tick: &mut dyn FnMut(&IngestStats),
    out: &mut dyn FnMut(Sample),
) -> io::Result<()> {
    // CSV depends on its header line; it stays sequential (it is also the rare format).
    if threads < 2 || ingest.format() == Format::Csv {
        return ingest.read_all(reader, tick, out);
    }
    let format = ingest.format();
    std::thread::scope(|scope| -> io::Result<()> {
        // Created inside the scope so that returning (normally or early) closes the job channel
        // before the scope joins the workers.
        let (job_tx, job_rx) = mpsc::channel::<(u64, Vec<u8>)>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (res_tx, res_rx) = mpsc::channel::<(u64, Parsed)>();
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            scope.spawn(move || {
                let mut parser = LineParser::new(format);
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((id, chunk))) = job else { break };
                    // Sized up front: growing a ~1 MB vector by doubling copies it several times.
                    let mut parsed: Parsed =
                        Vec::with_capacity(memchr::memchr_iter(b'\n', &chunk).count() + 1);
                    parsed.extend(chunk.split_inclusive(|c| *c == b'\n').map(|line| {
                        // Same limit as the sequential reader: newline included.
                        let outcome = if line.len() > MAX_LINE_BYTES {
                            LineOutcome::Skip(super::stats::SkipReason::LineTooLong)
                        } else {
                            parser.parse(line)
                        };
                        (line.len(), outcome)
                    }));
                    if res_tx.send((id, parsed)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);

        let mut chunker = Chunker::default();
        let mut next_id = 0u64; // next piece to read
        let mut next_apply = 0u64; // next piece to apply
        let mut ready: BTreeMap<u64, Parsed> = BTreeMap::new();
        let mut inline: BTreeMap<u64, u64> = BTreeMap::new(); // TooLong pieces, applied in order
        let mut eof = false;
        let mut last_tick = 0u64;
        let result = loop {
            // Read ahead while there is room.
            while !eof && next_id - next_apply < MAX_IN_FLIGHT as u64 {
                match chunker.next(reader) {
                    Err(e) => return Err(e),
                    Ok(None) => eof = true,
                    Ok(Some(Piece::Lines(buf))) => {
                        job_tx.send((next_id, buf)).ok();
                        next_id += 1;
                    }
                    Ok(Some(Piece::TooLong(n))) => {
                        inline.insert(next_id, n);
                        next_id += 1;
                    }
                }
            }
            // Apply what is ready, in order.
            loop {
                if let Some(n) = inline.remove(&next_apply) {
                    ingest.push_too_long(n);
                } else if let Some(parsed) = ready.remove(&next_apply) {
                    for (len, outcome) in parsed {
                        ingest.apply(len, outcome, out);
                    }
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
                Ok((id, parsed)) => {
                    ready.insert(id, parsed);
                }
                Err(_) => break Err(io::Error::other("telemetry parser thread stopped")),
            }
        };
        drop(job_tx);
        result
    })
}

/// Cuts a byte stream into chunks of whole lines, never holding a line over the limit.
#[derive(Default)]
struct Chunker {
    carry: Vec<u8>,
    /// Bytes of an over-long line being discarded.
    discarding: Option<u64>,
    done: bool,
}

impl Chunker {
    fn next(&mut self, r: &mut dyn BufRead) -> io::Result<Option<Piece>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 64 * 1024);
        buf.append(&mut self.carry);
        loop {
            let avail = match r.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                self.done = true;
                if let Some(n) = self.discarding.take() {
                    return Ok(Some(Piece::TooLong(n)));
                }
                return Ok((!buf.is_empty()).then_some(Piece::Lines(buf)));
            }
            if let Some(n) = self.discarding.as_mut() {
                match memchr::memchr(b'\n', avail) {
                    Some(i) => {
                        *n += (i + 1) as u64;
                        r.consume(i + 1);
                        let total = self.discarding.take().unwrap_or(0);
                        return Ok(Some(Piece::TooLong(total)));
                    }
                    None => {
                        *n += avail.len() as u64;
                        let len = avail.len();
                        r.consume(len);
                        continue;
                    }
                }
            }
            let len = avail.len();
            buf.extend_from_slice(avail);
            r.consume(len);
            if buf.len() >= CHUNK_BYTES {
                match memchr::memrchr(b'\n', &buf) {
                    Some(i) => {
                        self.carry = buf.split_off(i + 1);
                        if self.carry.len() > MAX_LINE_BYTES {
                            self.discarding = Some(self.carry.len() as u64);
                            self.carry.clear();
                        }
                        return Ok(Some(Piece::Lines(buf)));
                    }
                    None if buf.len() > MAX_LINE_BYTES => {
                        self.discarding = Some(buf.len() as u64);
                        buf.clear();
                    }
                    None => {}
                }
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
}
