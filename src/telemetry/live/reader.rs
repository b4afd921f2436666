//! A finished stream as a live source: stdin or a compressed file, read once to the end (what
//! `closed-loop watch --source file` does without `--follow`, when the file cannot be seeked in
//! plain bytes). The cursor counts lines, so a restart skips the lines already handed out.

use std::io::BufRead;
use std::time::Duration;

use serde_json::{Value, json};

use super::{LiveSource, Poll, SourceEvent};
use crate::telemetry::MAX_LINE_BYTES;

/// Lines handed out per poll, at most (the caller's batch stays small).
const MAX_BATCH: usize = 4096;

pub struct ReaderSource {
    reader: Box<dyn BufRead + Send>,
    label: Value,
    lines: u64,
    ended: bool,
}

impl ReaderSource {
    /// Reads `reader`, skipping the lines a saved cursor says were already handed out.
    pub fn open(
        reader: Box<dyn BufRead + Send>,
        label: Value,
        cursor: Option<&Value>,
    ) -> anyhow::Result<ReaderSource> {
        let mut r = ReaderSource {
            reader,
            label,
            lines: 0,
            ended: false,
        };
        let skip = match cursor {
            Some(c) => c
                .get("lines")
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow::anyhow!("the saved stream cursor is not valid"))?,
            None => 0,
        };
        let mut sink = Vec::new();
        while r.lines < skip {
            if !r.next_line(&mut sink)? {
                anyhow::bail!(
                    "the input has {} lines, fewer than the {skip} an earlier watch read: it is not the same input",
                    r.lines
                );
            }
        }
        Ok(r)
    }

    /// One line into `buf` (an over-long line becomes a marker the caller counts as too long).
    fn next_line(&mut self, buf: &mut Vec<u8>) -> anyhow::Result<bool> {
        buf.clear();
        let mut too_long = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                if buf.is_empty() && !too_long {
                    return Ok(false);
                }
                break;
            }
            match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    if !too_long {
                        buf.extend_from_slice(&chunk[..=i]);
                    }
                    self.reader.consume(i + 1);
                    break;
                }
                None => {
                    let n = chunk.len();
                    if !too_long {
                        buf.extend_from_slice(chunk);
                    }
                    self.reader.consume(n);
                }
            }
            if buf.len() > MAX_LINE_BYTES {
                too_long = true;
                buf.clear();
            }
        }
        if too_long {
            buf.resize(MAX_LINE_BYTES + 1, b' ');
        }
        self.lines += 1;
        Ok(true)
    }
}

impl LiveSource for ReaderSource {
    fn poll(&mut self, out: &mut Vec<Vec<u8>>, _wait: Duration) -> anyhow::Result<Poll> {
        if self.ended {
            return Ok(Poll::Ended);
        }
        for _ in 0..MAX_BATCH {
            let mut line = Vec::new();
            if !self.next_line(&mut line)? {
                self.ended = true;
                return Ok(Poll::Ended);
            }
            out.push(line);
        }
        Ok(Poll::Open)
    }

    fn cursor(&self) -> Value {
        json!({"lines": self.lines})
    }

    fn drain_events(&mut self) -> Vec<SourceEvent> {
        Vec::new()
    }

    fn describe(&self) -> Value {
        self.label.clone()
    }
}
