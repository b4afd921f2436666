//! Parallel parsing for large inputs: the calling thread reads chunks of whole lines and keeps the
//! order; worker threads parse chunks. Results are applied strictly in input order, so the outcome
//! (records, counters, windows) is identical to the sequential path.
//!
//! The protocol cannot deadlock: every chunk sent to the workers gets its own reply channel, queued in
//! input order, and the reading thread only ever waits on the reply at the head of that queue — a
//! chunk it has sent. (A shared result channel with a reorder map hung when every piece in flight had
//! been applied before the input was finished.) A worker that dies drops its reply sender, which the
//! reader sees as an error, never as a wait.
//!
//! Memory is bounded whatever the input: at most [`Tuning::in_flight`] chunks are read ahead, each of
//! at most [`Tuning::chunk_bytes`] and at most [`Tuning::max_lines`] non-blank lines, and a chunk's
//! result is stored compactly — its records, and the line accounting as runs (a chunk of blank or log
//! lines is one run, not one entry per line). A record costs ~270 bytes of results, so the line cap is
//! what bounds the worst case (short records between blank lines: before the cap, ~15 bytes of results
//! per input byte, 45–60 MiB of read-ahead); with it, results stay within ~12 MiB.
//!
//! No crate replaces this part: rayon's `par_bridge` does not keep order and its ordered iterators need
//! the input in memory; a FIFO of reply channels over std's channels is all the ordering needed.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::formats::TrainerLine;
use super::ingest::{Ingest, LineClass, LineOutcome, LineParser, newline_run};
use super::record::Sample;
use super::stats::{IngestStats, SkipReason};

/// How the parallel reader cuts and schedules its work. Production uses [`Tuning::default`]; tests
/// shrink everything and add scheduling jitter to shake out ordering bugs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// A chunk is cut at the last newline once this much has been read.
    pub chunk_bytes: usize,
    /// A chunk is also cut after this many non-blank lines: results grow with lines, not bytes.
    pub max_lines: usize,
    /// Chunks read ahead of the one being applied.
    pub in_flight: usize,
    /// Seed of a random sleep (0–200 µs) before parsing, replying and waiting; `None` in production.
    pub jitter: Option<u64>,
}

impl Default for Tuning {
    fn default() -> Self {
        // 256 KiB × 8: read-ahead that absorbs the applying thread's pauses (4 chunks ahead cost
        // ~12 % wall time on 2 cores). 4096 lines: typical records (100–250 bytes) fill 256 KiB
        // first, so only dense short lines are cut by count.
        Tuning {
            chunk_bytes: 256 << 10,
            max_lines: 4096,
            in_flight: 8,
            jitter: None,
        }
    }
}

/// The smallest read after a chunk was cut by lines.
const MIN_READ: usize = 4 << 10;

/// Room for one more read past `chunk_bytes`.
const READ_SLACK: usize = 64 << 10;

enum Piece {
    /// `len` bytes of whole lines at the start of the buffer, each ending in `\n` except perhaps the
    /// last one of the input.
    Lines(Vec<u8>, usize),
    /// A line longer than the limit, discarded while reading; its length.
    TooLong(u64),
}

/// One chunk's lines, parsed: the records in order, and every line accounted for in runs of one class.
#[derive(Default)]
struct Parsed {
    records: Vec<Sample>,
    /// Trainer text lines and their lengths, finished in order by the ingest.
    trainer: Vec<(TrainerLine, u32)>,
    runs: Vec<Run>,
    /// Records with a unit-less `step_time`, and the small ones among them.
    bare: (u64, u64),
}

/// `lines` consecutive lines of one class, `bytes` in all (a chunk is far below 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    class: LineClass,
    lines: u32,
    bytes: u32,
}

impl Parsed {
    fn clear(&mut self) {
        self.records.clear();
        self.trainer.clear();
        self.runs.clear();
        self.bare = (0, 0);
    }

    fn add(&mut self, class: LineClass, lines: usize, bytes: usize) {
        if let Some(last) = self.runs.last_mut()
            && last.class == class
        {
            last.lines += lines as u32;
            last.bytes += bytes as u32;
            return;
        }
        self.runs.push(Run {
            class,
            lines: lines as u32,
            bytes: bytes as u32,
        });
    }

    fn push(&mut self, len: usize, outcome: LineOutcome) {
        let class = match outcome {
            LineOutcome::Record(s) => {
                self.records.push(s);
                LineClass::Record
            }
            LineOutcome::Trainer(t) => {
                self.trainer.push((t, len as u32));
                LineClass::Trainer
            }
            LineOutcome::Blank => LineClass::Blank,
            LineOutcome::Log => LineClass::Log,
            LineOutcome::Skip(r) => LineClass::Skip(r),
        };
        self.add(class, 1, len);
    }
}

/// A chunk to parse: the buffer and its length, an empty result to fill, and where to reply.
struct Job {
    chunk: Vec<u8>,
    len: usize,
    parsed: Parsed,
    reply: mpsc::SyncSender<(Parsed, Vec<u8>)>,
}

/// A piece of input in the order it was read.
enum Slot {
    /// Being parsed; its reply arrives here.
    Parsing(mpsc::Receiver<(Parsed, Vec<u8>)>),
    /// An over-long line, counted by the reader itself.
    TooLong(u64),
}

/// Reads everything through `ingest`, parsing on `threads` worker threads when that can help.
///
/// Chunk buffers and result vectors travel in a circle (reader → worker → reader), so after the first
/// few chunks nothing is allocated per chunk and no fresh page is faulted in.
pub fn read_all_parallel(
    ingest: &mut Ingest,
    reader: &mut dyn BufRead,
    threads: usize,
    tick: &mut dyn FnMut(&IngestStats),
    out: &mut dyn FnMut(&Sample),
) -> io::Result<()> {
    read_all_parallel_tuned(ingest, reader, threads, Tuning::default(), tick, out)
}

pub(crate) fn read_all_parallel_tuned(
    ingest: &mut Ingest,
    reader: &mut dyn BufRead,
    threads: usize,
    tuning: Tuning,
    tick: &mut dyn FnMut(&IngestStats),
    out: &mut dyn FnMut(&Sample),
) -> io::Result<()> {
    // CSV depends on its header line; it stays sequential (it is also the rare format).
    if threads < 2 || !ingest.format().parallel() {
        return ingest.read_all(reader, tick, out);
    }
    let format = ingest.format();
    let unit = ingest.options().step_time_unit;
    let max_line = ingest.max_line();
    let in_flight = tuning.in_flight.max(1);
    let stopped = || io::Error::other("telemetry parser thread stopped");
    std::thread::scope(|scope| -> io::Result<()> {
        // Created inside the scope so that returning (normally or early) closes the job channel
        // before the scope joins the workers.
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for w in 0..threads {
            let job_rx = job_rx.clone();
            scope.spawn(move || {
                let mut parser = LineParser::with_unit(format, unit);
                let mut jitter = Jitter::new(tuning.jitter, w as u64 + 1);
                loop {
                    // The guard is a temporary: the lock is released before parsing.
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(Job {
                        chunk,
                        len,
                        mut parsed,
                        reply,
                    })) = job
                    else {
                        break;
                    };
                    jitter.pause();
                    let parsed_ok = catch_unwind(AssertUnwindSafe(|| {
                        parse_lines(&mut parser, &chunk[..len], max_line, &mut parsed)
                    }));
                    if parsed_ok.is_err() {
                        // Dropping `reply` tells the reader; this worker's parser state is suspect.
                        break;
                    }
                    jitter.pause();
                    // The reader may have given up (an error); that is not this worker's concern.
                    reply.send((parsed, chunk)).ok();
                }
            });
        }

        let mut chunker = Chunker::new(tuning.chunk_bytes, tuning.max_lines, max_line);
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        let mut results: Vec<Parsed> = Vec::new();
        let mut queue: VecDeque<Slot> = VecDeque::with_capacity(in_flight);
        let mut jitter = Jitter::new(tuning.jitter, 0);
        let mut eof = false;
        let mut next_tick = ingest.stats().lines_read.saturating_add(65_536);
        loop {
            while !eof && queue.len() < in_flight {
                let buf = buffers.pop().unwrap_or_default();
                match chunker.next(reader, buf)? {
                    (None, buf) => {
                        eof = true;
                        buffers.extend(buf);
                    }
                    (Some(Piece::Lines(chunk, len)), _) => {
                        let (reply, rx) = mpsc::sync_channel(1);
                        let parsed = results.pop().unwrap_or_default();
                        job_tx
                            .send(Job {
                                chunk,
                                len,
                                parsed,
                                reply,
                            })
                            .map_err(|_| stopped())?;
                        queue.push_back(Slot::Parsing(rx));
                    }
                    (Some(Piece::TooLong(n)), buf) => {
                        buffers.extend(buf);
                        queue.push_back(Slot::TooLong(n));
                    }
                }
            }
            // The queue only runs dry at the end of the input: the loop above refills it otherwise.
            let Some(slot) = queue.pop_front() else {
                break;
            };
            jitter.pause();
            match slot {
                Slot::TooLong(n) => ingest.push_too_long(n),
                Slot::Parsing(rx) => {
                    let (mut parsed, chunk) = rx.recv().map_err(|_| stopped())?;
                    apply(ingest, &mut parsed, out);
                    results.push(parsed);
                    // A buffer grown for a long line is not worth keeping.
                    if chunk.len() <= tuning.chunk_bytes + READ_SLACK {
                        buffers.push(chunk);
                    }
                }
            }
            if ingest.stats().lines_read >= next_tick {
                next_tick = ingest.stats().lines_read.saturating_add(65_536);
                tick(ingest.stats());
            }
        }
        drop(job_tx);
        Ok(())
    })
}

/// Applies one chunk's results in order and leaves `parsed` empty for reuse.
fn apply(ingest: &mut Ingest, parsed: &mut Parsed, out: &mut dyn FnMut(&Sample)) {
    let mut records = parsed.records.drain(..);
    let mut trainer = parsed.trainer.drain(..);
    for run in &parsed.runs {
        ingest.count(run.class, u64::from(run.lines), u64::from(run.bytes));
        match run.class {
            LineClass::Record => {
                for s in records.by_ref().take(run.lines as usize) {
                    ingest.push_record(s, out);
                }
            }
            LineClass::Trainer => {
                for (t, len) in trainer.by_ref().take(run.lines as usize) {
                    ingest.push_trainer(t, u64::from(len), out);
                }
            }
            _ => {}
        }
    }
    drop(records);
    drop(trainer);
    ingest.note_bare(parsed.bare);
    parsed.clear();
}

/// Parses the lines of one chunk into `parsed` (empty, reused).
fn parse_lines(parser: &mut LineParser, chunk: &[u8], max_line: usize, parsed: &mut Parsed) {
    let mut start = 0;
    while start < chunk.len() {
        if chunk[start] == b'\n' {
            let n = newline_run(&chunk[start..]);
            parsed.add(LineClass::Blank, n, n);
            start += n;
            continue;
        }
        let end = memchr::memchr(b'\n', &chunk[start..]).map_or(chunk.len(), |i| start + i + 1);
        let line = &chunk[start..end];
        // Same limit as the sequential reader: newline included.
        if line.len() > max_line {
            parsed.add(LineClass::Skip(SkipReason::LineTooLong), 1, line.len());
        } else {
            parsed.push(line.len(), parser.parse(line));
        }
        start = end;
    }
    parsed.bare = parser.take_bare();
}

/// A random pause for the stress tests (xorshift, no shared state); does nothing without a seed.
struct Jitter(Option<u64>);

impl Jitter {
    fn new(seed: Option<u64>, salt: u64) -> Self {
        Jitter(seed.map(|s| (s ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1))
    }

    fn pause(&mut self) {
        let Some(x) = self.0.as_mut() else { return };
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        match *x % 4 {
            0 => {}
            1 => std::thread::yield_now(),
            _ => std::thread::sleep(std::time::Duration::from_micros(*x % 200)),
        }
    }
}

/// Cuts a byte stream into chunks of whole lines, never holding a line over the limit. Reads straight
/// into the chunk's buffer (a `BufReader` hands reads this large through without copying).
struct Chunker {
    chunk_bytes: usize,
    max_lines: usize,
    max_line: usize,
    /// How much one read asks for: the rest of the buffer, or after a chunk was cut by lines about
    /// what held that many lines, so that what is carried to the next chunk stays small (copying a
    /// whole chunk's rest for every cut tripled the CPU time of dense log lines).
    read_step: usize,
    /// The start of a line that did not fit the previous chunk.
    carry: Vec<u8>,
    /// Bytes of an over-long line being discarded.
    discarding: Option<u64>,
    done: bool,
}

impl Chunker {
    fn new(chunk_bytes: usize, max_lines: usize, max_line: usize) -> Self {
        Chunker {
            chunk_bytes: chunk_bytes.max(1),
            max_lines: max_lines.max(1),
            max_line,
            read_step: usize::MAX,
            carry: Vec::new(),
            discarding: None,
            done: false,
        }
    }

    /// The next piece, and the buffer back when the piece did not take it. `buf`'s contents do not
    /// matter; it is resized as needed (a line longer than a chunk grows it, up to the line limit).
    fn next(
        &mut self,
        r: &mut dyn Read,
        mut buf: Vec<u8>,
    ) -> io::Result<(Option<Piece>, Option<Vec<u8>>)> {
        if self.done {
            return Ok((None, Some(buf)));
        }
        let want = self.chunk_bytes.max(self.carry.len()) + READ_SLACK;
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut filled = self.carry.len();
        buf[..filled].copy_from_slice(&self.carry);
        self.carry.clear();
        let mut lines = LineCount::default();
        loop {
            if self.discarding.is_none() {
                if let Some(cut) = lines.cut_after(&buf[..filled], self.max_lines) {
                    // The rest, whole lines and perhaps the start of one, opens the next chunk.
                    self.carry.extend_from_slice(&buf[cut..filled]);
                    self.read_step = cut.max(MIN_READ);
                    return Ok((Some(Piece::Lines(buf, cut)), None));
                }
                if filled >= self.chunk_bytes {
                    match memchr::memrchr(b'\n', &buf[..filled]) {
                        Some(i) => {
                            self.read_step = usize::MAX;
                            let tail = &buf[i + 1..filled];
                            if tail.len() > self.max_line {
                                self.discarding = Some(tail.len() as u64);
                            } else {
                                self.carry.extend_from_slice(tail);
                            }
                            return Ok((Some(Piece::Lines(buf, i + 1)), None));
                        }
                        None if filled > self.max_line => {
                            self.discarding = Some(filled as u64);
                            filled = 0;
                            lines = LineCount::default();
                            continue;
                        }
                        None => {}
                    }
                }
            }
            if filled == buf.len() {
                // Only a line longer than a chunk, and still within the limit, gets here.
                buf.resize(buf.len() * 2, 0);
            }
            let end = filled.saturating_add(self.read_step).min(buf.len());
            let n = match r.read(&mut buf[filled..end]) {
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
        }
    }
}

/// Non-blank lines counted so far in the bytes of a chunk being filled.
#[derive(Default)]
struct LineCount {
    /// Bytes scanned.
    at: usize,
    /// Where the line being scanned starts.
    line_start: usize,
    lines: usize,
}

impl LineCount {
    /// Scans what was added to `buf` since the last call; the end of the `max`-th non-blank line, if
    /// `buf` holds that many.
    fn cut_after(&mut self, buf: &[u8], max: usize) -> Option<usize> {
        for i in memchr::memchr_iter(b'\n', &buf[self.at..]) {
            let end = self.at + i;
            if end > self.line_start {
                self.lines += 1;
                if self.lines >= max {
                    return Some(end + 1);
                }
            }
            self.line_start = end + 1;
        }
        self.at = buf.len();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Format, IngestOptions, MAX_LINE_BYTES, xorshift};

    type Got = Vec<(Option<u64>, Option<u64>)>;

    fn run_with(
        text: &[u8],
        threads: usize,
        tuning: Tuning,
        max_line: usize,
        read_size: usize,
    ) -> (Got, IngestStats) {
        let mut ing = Ingest::new(Format::Log, &IngestOptions::default());
        ing.set_max_line(max_line);
        let mut got = vec![];
        let mut r = io::BufReader::with_capacity(read_size, text);
        read_all_parallel_tuned(&mut ing, &mut r, threads, tuning, &mut |_| {}, &mut |s| {
            got.push((s.step, s.step_time_ms.map(f64::to_bits)))
        })
        .unwrap();
        let st = ing.finish(&mut |s| got.push((s.step, s.step_time_ms.map(f64::to_bits))));
        (got, st)
    }

    fn run(text: &[u8], threads: usize) -> (Got, IngestStats) {
        run_with(text, threads, Tuning::default(), MAX_LINE_BYTES, 64 * 1024)
    }

    /// Runs `f` on another thread and fails the test if it does not finish in `secs` (a hang must be a
    /// failure, not a CI run that never ends).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()).ok());
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .expect("the parallel reader hung")
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
                text.extend_from_slice(b"not json\n\n\n");
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

    /// The hang reported in issue 11: one record, seven over-long lines (each counted by the reader
    /// itself), then records. With every piece in flight applied and the input not finished, the old
    /// reader waited for a result nothing would send.
    #[test]
    fn over_long_lines_filling_the_read_ahead_do_not_hang() {
        let mut text = b"{\"step\":0,\"step_time_ms\":10}\n".to_vec();
        for _ in 0..7 {
            text.extend(std::iter::repeat_n(b'x', 2 << 20));
            text.push(b'\n');
        }
        for i in 1..1000 {
            text.extend_from_slice(format!("{{\"step\":{i},\"step_time_ms\":10}}\n").as_bytes());
        }
        let text = Arc::new(text);
        for in_flight in [1, 2, 6, 8] {
            let t = text.clone();
            let (par, stats) = within(60, move || {
                let tuning = Tuning {
                    in_flight,
                    ..Tuning::default()
                };
                run_with(&t, 2, tuning, MAX_LINE_BYTES, 64 * 1024)
            });
            assert_eq!(par.len(), 1000, "in_flight={in_flight}");
            assert_eq!(stats.skipped(SkipReason::LineTooLong), 7);
            assert_eq!(stats.lines_read, 1007);
        }
    }

    /// Many rounds of tiny chunks and a tiny line limit, over-long lines and blank runs at every
    /// position, random read sizes, 1–4 workers and random pauses in every thread: each round must
    /// finish and agree with the sequential reader, record for record and counter for counter.
    #[test]
    fn stress_tiny_chunks_long_lines_and_jitter_agree_with_the_sequential_reader() {
        let rounds: u64 = std::env::var("MODEKEEPER_STRESS_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        within(600, move || {
            let mut rnd = xorshift(0x5EED_0F11);
            for round in 0..rounds {
                let max_line = 16 + (rnd() % 48) as usize;
                let mut text = Vec::new();
                let lines = 20 + rnd() % 200;
                for i in 0..lines {
                    match rnd() % 9 {
                        0 => {
                            text.extend(std::iter::repeat_n(b'x', max_line + (rnd() % 40) as usize))
                        }
                        1 => text.extend(std::iter::repeat_n(b'\n', (rnd() % 30) as usize)),
                        2 => text.extend_from_slice(b"log line"),
                        3 => text.extend_from_slice(b"{\"step\":1.5,\"step_time_ms\":1}"),
                        4 => text.extend(std::iter::repeat_n(b'y', max_line)),
                        _ => text.extend_from_slice(
                            format!("{{\"step\":{i},\"step_time_ms\":{}}}", rnd() % 9).as_bytes(),
                        ),
                    }
                    // Sometimes the last line has no newline.
                    if i + 1 < lines || rnd().is_multiple_of(2) {
                        text.push(b'\n');
                    }
                }
                let read_size = 1 + (rnd() % 97) as usize;
                let (seq, seq_stats) = run_with(&text, 1, Tuning::default(), max_line, read_size);
                let tuning = Tuning {
                    chunk_bytes: 1 + (rnd() % 120) as usize,
                    max_lines: 1 + (rnd() % 12) as usize,
                    in_flight: 1 + (rnd() % 5) as usize,
                    jitter: Some(rnd()),
                };
                let threads = 2 + (rnd() % 3) as usize;
                let (par, par_stats) = run_with(&text, threads, tuning, max_line, read_size);
                assert_eq!(seq, par, "round {round}: {tuning:?}");
                assert_eq!(seq_stats, par_stats, "round {round}: {tuning:?}");
                assert_eq!(par_stats.bytes_read, text.len() as u64, "round {round}");
            }
        });
    }

    /// Short records between blank lines, the worst case for results per input byte: every chunk
    /// holds at most `max_lines` non-blank lines (and blank runs do not count), and the chunks put
    /// back together are the input, byte for byte, whatever the read sizes.
    #[test]
    fn chunks_are_cut_by_lines_as_well_as_bytes() {
        let text = b"{\"step_time_ms\":1}\n\n".repeat(50_000);
        for (max_lines, read_size) in [(4096, 64 << 10), (7, 13), (1, 1000)] {
            let mut chunker = Chunker::new(256 << 10, max_lines, MAX_LINE_BYTES);
            let mut r = io::BufReader::with_capacity(read_size, &text[..]);
            let mut joined = Vec::new();
            let mut buf = Vec::new();
            loop {
                match chunker.next(&mut r, std::mem::take(&mut buf)).unwrap() {
                    (None, _) => break,
                    (Some(Piece::Lines(chunk, len)), _) => {
                        let lines = chunk[..len]
                            .split(|b| *b == b'\n')
                            .filter(|l| !l.is_empty())
                            .count();
                        assert!(lines <= max_lines, "{lines} lines in a chunk");
                        joined.extend_from_slice(&chunk[..len]);
                        buf = chunk;
                    }
                    (Some(Piece::TooLong(_)), _) => panic!("no line is too long"),
                }
            }
            assert_eq!(joined, text, "max_lines={max_lines}");
        }
    }

    /// A chunk of blank lines is one run, not one entry per line: results are bounded by bytes.
    #[test]
    fn a_chunk_of_blank_or_log_lines_is_one_run() {
        let mut parser = LineParser::new(Format::Log);
        let mut parsed = Parsed::default();
        let mut chunk = vec![b'\n'; 100_000];
        chunk.extend(b"x\n".repeat(50_000));
        chunk.extend(b" \r\n".repeat(10));
        parse_lines(&mut parser, &chunk, MAX_LINE_BYTES, &mut parsed);
        assert_eq!(
            parsed.runs,
            vec![
                Run {
                    class: LineClass::Blank,
                    lines: 100_000,
                    bytes: 100_000
                },
                Run {
                    class: LineClass::Log,
                    lines: 50_000,
                    bytes: 100_000
                },
                Run {
                    class: LineClass::Blank,
                    lines: 10,
                    bytes: 30
                },
            ]
        );
        assert!(parsed.records.is_empty());
    }

    #[test]
    fn newline_runs_are_counted_exactly() {
        for n in 0..40 {
            for tail in [&b""[..], b"x", b"\r\n", b" "] {
                let mut b = vec![b'\n'; n];
                b.extend_from_slice(tail);
                assert_eq!(newline_run(&b), n, "{n} {tail:?}");
            }
        }
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
