//! `--source file --follow`: tails a growing file the way `tail -F` does. Survives truncation (the
//! writer started over: read from the top again) and rotation (the path now names a new file: finish
//! the old one, then read the new one from its start). Polls with a short sleep: no inotify, so it
//! works the same on every filesystem, network mounts included.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{LiveSource, Poll, SourceEvent};
use crate::telemetry::MAX_LINE_BYTES;

/// How often an idle followed file is looked at again.
const IDLE_POLL: Duration = Duration::from_millis(50);
const READ_CHUNK: usize = 256 * 1024;

/// Where a followed file has been read to: the file's identity and the end of the last complete
/// line handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCursor {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    /// Lines handed out from this file (for the report; not needed to resume).
    pub lines: u64,
}

pub struct FollowFile {
    path: PathBuf,
    follow: bool,
    file: File,
    id: (u64, u64),
    /// End of the last complete line handed out.
    offset: u64,
    lines: u64,
    /// Bytes read past `offset` (the unfinished line), and the part of them kept.
    pending: u64,
    partial: Vec<u8>,
    /// The partial line grew beyond [`MAX_LINE_BYTES`]: drop bytes until the next newline.
    discarding: bool,
    events: Vec<SourceEvent>,
    buf: Vec<u8>,
}

#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

impl FollowFile {
    /// Opens `path`, continuing after `cursor` when it names the same file and the file still
    /// reaches that far; otherwise from the start (and says why in an event).
    pub fn open(path: &Path, follow: bool, cursor: Option<&Value>) -> anyhow::Result<FollowFile> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.is_dir() {
            anyhow::bail!("{} is a directory", path.display());
        }
        let mut f = FollowFile {
            path: path.to_path_buf(),
            follow,
            id: identity(&meta),
            file,
            offset: 0,
            lines: 0,
            pending: 0,
            partial: Vec::new(),
            discarding: false,
            events: Vec::new(),
            buf: vec![0; READ_CHUNK],
        };
        if let Some(c) = cursor {
            let c: FileCursor =
                serde_json::from_value(c.clone()).context("the saved file cursor is not valid")?;
            if (c.dev, c.ino) != f.id {
                f.event(
                    "rotated_while_stopped",
                    json!({"saved_ino": c.ino, "ino": f.id.1}),
                );
            } else if meta.len() < c.offset {
                f.event(
                    "truncated_while_stopped",
                    json!({"saved_offset": c.offset, "len": meta.len()}),
                );
            } else {
                f.offset = c.offset;
                f.lines = c.lines;
                f.file.seek(SeekFrom::Start(c.offset))?;
            }
        }
        Ok(f)
    }

    fn event(&mut self, kind: &str, detail: Value) {
        self.events.push(SourceEvent {
            kind: kind.into(),
            detail,
        });
    }

    /// Reads what is there now; splits complete lines into `out`. Returns the bytes read.
    fn read_available(&mut self, out: &mut Vec<Vec<u8>>) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let n = self
                .file
                .read(&mut self.buf)
                .with_context(|| format!("cannot read {}", self.path.display()))?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
            let mut rest = &self.buf[..n];
            while let Some(i) = memchr::memchr(b'\n', rest) {
                if self.discarding {
                    // The end of an oversized line: a marker the caller counts as line_too_long.
                    self.discarding = false;
                    out.push(vec![b' '; MAX_LINE_BYTES + 1]);
                } else {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&rest[..=i]);
                    out.push(line);
                }
                self.offset += self.pending + i as u64 + 1;
                self.pending = 0;
                self.lines += 1;
                rest = &rest[i + 1..];
            }
            self.pending += rest.len() as u64;
            if !self.discarding {
                self.partial.extend_from_slice(rest);
                if self.partial.len() > MAX_LINE_BYTES {
                    self.discarding = true;
                    self.partial = Vec::new();
                }
            }
            if out.len() >= 4096 {
                return Ok(total);
            }
        }
    }

    /// At the end of the data: has the path been truncated or pointed at a new file?
    fn check_replaced(&mut self) -> anyhow::Result<bool> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // Between a rotation's rename and the new file's creation: look again later.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot stat {}", self.path.display()));
            }
        };
        let id = identity(&meta);
        if id != self.id {
            let file = match File::open(&self.path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot open {}", self.path.display()));
                }
            };
            self.event(
                "rotated",
                json!({"lines_before": self.lines, "offset_before": self.offset + self.pending}),
            );
            self.reset(file, id);
            return Ok(true);
        }
        if meta.len() < self.offset + self.pending {
            self.event(
                "truncated",
                json!({"len": meta.len(), "offset_before": self.offset + self.pending}),
            );
            self.file.seek(SeekFrom::Start(0))?;
            let file = self.file.try_clone()?;
            self.reset(file, id);
            return Ok(true);
        }
        Ok(false)
    }

    /// Starts over at the beginning of `file`; an unfinished line of the old one is dropped (its
    /// writer never finished it).
    fn reset(&mut self, file: File, id: (u64, u64)) {
        self.file = file;
        self.id = id;
        self.offset = 0;
        self.lines = 0;
        self.pending = 0;
        self.partial.clear();
        self.discarding = false;
    }
}

impl LiveSource for FollowFile {
    fn poll(&mut self, out: &mut Vec<Vec<u8>>, wait: Duration) -> anyhow::Result<Poll> {
        let deadline = Instant::now() + wait;
        let before = out.len();
        loop {
            self.read_available(out)?;
            if out.len() > before {
                return Ok(Poll::Open);
            }
            if !self.follow {
                if !self.partial.is_empty() {
                    // The last line of a finished file needs no newline.
                    out.push(std::mem::take(&mut self.partial));
                    self.offset += self.pending;
                    self.pending = 0;
                    self.lines += 1;
                }
                return Ok(Poll::Ended);
            }
            if self.check_replaced()? {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Poll::Open);
            }
            std::thread::sleep(IDLE_POLL.min(deadline - now));
        }
    }

    fn cursor(&self) -> Value {
        json!(FileCursor {
            dev: self.id.0,
            ino: self.id.1,
            offset: self.offset,
            lines: self.lines,
        })
    }

    fn drain_events(&mut self) -> Vec<SourceEvent> {
        std::mem::take(&mut self.events)
    }

    fn describe(&self) -> Value {
        json!({"kind": "file", "path": self.path, "follow": self.follow})
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn poll_all(f: &mut FollowFile) -> Vec<String> {
        let mut out = Vec::new();
        f.poll(&mut out, Duration::from_millis(120)).unwrap();
        out.into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    fn append(p: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn a_line_is_handed_out_once_it_is_complete() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.log");
        append(&p, "a\nb");
        let mut f = FollowFile::open(&p, true, None).unwrap();
        assert_eq!(poll_all(&mut f), vec!["a\n"]);
        append(&p, "c\n");
        assert_eq!(poll_all(&mut f), vec!["bc\n"]);
        assert_eq!(f.cursor()["offset"], 5);
    }

    #[test]
    fn rotation_and_truncation_are_followed_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.log");
        append(&p, "1\n2\n");
        let mut f = FollowFile::open(&p, true, None).unwrap();
        assert_eq!(poll_all(&mut f), vec!["1\n", "2\n"]);
        // logrotate: the old file is renamed (and finished), a new one appears under the name.
        append(&p, "3\n");
        std::fs::rename(&p, d.path().join("t.log.1")).unwrap();
        append(&p, "4\n");
        let mut got = poll_all(&mut f);
        got.extend(poll_all(&mut f));
        assert_eq!(got, vec!["3\n", "4\n"]);
        assert_eq!(f.drain_events()[0].kind, "rotated");
        // copytruncate: the same file starts over.
        std::fs::write(&p, "").unwrap();
        assert!(poll_all(&mut f).is_empty());
        append(&p, "5\n");
        assert_eq!(poll_all(&mut f), vec!["5\n"]);
        assert_eq!(f.drain_events()[0].kind, "truncated");
    }

    #[test]
    fn a_cursor_resumes_after_the_last_line_or_starts_over_on_another_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.log");
        append(&p, "1\n2\n");
        let mut f = FollowFile::open(&p, false, None).unwrap();
        assert_eq!(poll_all(&mut f), vec!["1\n", "2\n"]);
        let c = f.cursor();
        append(&p, "3\n");
        let mut g = FollowFile::open(&p, false, Some(&c)).unwrap();
        assert_eq!(poll_all(&mut g), vec!["3\n"]);
        std::fs::remove_file(&p).unwrap();
        append(&p, "x\n");
        let mut h = FollowFile::open(&p, false, Some(&c)).unwrap();
        assert_eq!(poll_all(&mut h), vec!["x\n"]);
        assert_eq!(h.drain_events()[0].kind, "rotated_while_stopped");
    }

    #[test]
    fn an_endless_line_is_dropped_as_too_long_without_buffering_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.log");
        append(&p, &"x".repeat(MAX_LINE_BYTES + 10));
        append(&p, "\nok\n");
        let mut f = FollowFile::open(&p, false, None).unwrap();
        let mut out = Vec::new();
        f.poll(&mut out, Duration::ZERO).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out[0].len() > MAX_LINE_BYTES);
        assert_eq!(out[1], b"ok\n");
    }
}
