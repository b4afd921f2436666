//! CSV with a header row, one record per line, via `csv-core` (quoting rules done right, no
//! allocation per row). A quoted cell spanning several lines is not supported: telemetry rows are
//! single-line, and the line-length bound must hold.

use super::field::Field;
use super::record::RecordBuilder;
use super::stats::SkipReason;

pub struct CsvRows {
    header: Option<Vec<Option<Field>>>,
    /// The header as it was read (a checkpoint restores the parser by feeding it again).
    header_line: Option<Vec<u8>>,
    cells: Vec<u8>,
    ends: Vec<usize>,
}

impl CsvRows {
    pub fn new() -> Self {
        CsvRows {
            header: None,
            header_line: None,
            cells: vec![0; 4096],
            ends: vec![0; 64],
        }
    }

    /// Splits one line into cells; `None` when the line cannot be split within the buffers' bounds.
    fn split(&mut self, line: &[u8]) -> Option<usize> {
        let mut rdr = csv_core::Reader::new();
        let (mut inp, mut out_pos, mut ends_pos) = (line, 0, 0);
        loop {
            let (res, nin, nout, nend) =
                rdr.read_record(inp, &mut self.cells[out_pos..], &mut self.ends[ends_pos..]);
            inp = &inp[nin..];
            out_pos += nout;
            ends_pos += nend;
            match res {
                csv_core::ReadRecordResult::InputEmpty => {
                    if inp.is_empty() {
                        // Signal end of input so the last field is terminated.
                        let (res, _, _, nend) = rdr.read_record(
                            &[],
                            &mut self.cells[out_pos..],
                            &mut self.ends[ends_pos..],
                        );
                        ends_pos += nend;
                        if matches!(res, csv_core::ReadRecordResult::Record) {
                            return Some(ends_pos);
                        }
                        return (ends_pos > 0).then_some(ends_pos);
                    }
                }
                csv_core::ReadRecordResult::OutputFull => {
                    if self.cells.len() >= super::MAX_LINE_BYTES {
                        return None;
                    }
                    let n = self.cells.len() * 2;
                    self.cells.resize(n, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= 4096 {
                        return None;
                    }
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => {
                    return Some(ends_pos);
                }
            }
        }
    }

    pub fn header_line(&self) -> Option<&[u8]> {
        self.header_line.as_deref()
    }

    /// Remembers `line` as the header, for a reader that maps the names itself.
    pub fn set_header_line(&mut self, line: &[u8]) {
        self.header_line = Some(line.to_vec());
    }

    /// The cells of one line, for readers with their own column rules (Lightning's `metrics.csv`).
    pub fn cells(&mut self, line: &[u8]) -> Option<Vec<&[u8]>> {
        let n = self.split(line)?;
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        for end in &self.ends[..n] {
            out.push(&self.cells[start..*end]);
            start = *end;
        }
        Some(out)
    }

    /// Feeds one non-blank line. The first one is the header (returns `Ok(None)`).
    pub fn row<'a>(&'a mut self, line: &[u8]) -> Result<Option<RecordBuilder<'a>>, SkipReason> {
        let n = self.split(line).ok_or(SkipReason::LineTooLong)?;
        let cell = |cells: &'a [u8], ends: &[usize], i: usize| -> &'a [u8] {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &cells[start..ends[i]]
        };
        let Some(header) = &self.header else {
            let names = (0..n)
                .map(|i| {
                    std::str::from_utf8(cell(&self.cells, &self.ends, i))
                        .ok()
                        .and_then(|h| Field::from_name(h.trim().to_ascii_lowercase().as_str()))
                })
                .collect();
            self.header = Some(names);
            self.header_line = Some(line.to_vec());
            return Ok(None);
        };
        if n != header.len() {
            return Err(SkipReason::CsvRowShape);
        }
        let mut b = RecordBuilder::default();
        for (i, f) in header.iter().enumerate() {
            let Some(f) = f else { continue };
            let text = std::str::from_utf8(cell(&self.cells, &self.ends, i))
                .map_err(|_| SkipReason::WrongType)?;
            b.put_text(*f, text);
        }
        Ok(Some(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn header_then_rows() {
        let mut c = CsvRows::new();
        assert!(
            c.row(b"ts,step,step_time_ms,worker_latencies_ms,node")
                .unwrap()
                .is_none()
        );
        let s = c
            .row(b"1767225600,3,28.5,\"[1, 2]\",gpu-0")
            .unwrap()
            .unwrap()
            .finish(&mut |n| Arc::from(n))
            .unwrap();
        assert_eq!(s.step, Some(3));
        assert_eq!(s.worker_latencies_ms.as_slice(), [1.0, 2.0]);
        assert_eq!(s.node.as_deref(), Some("gpu-0"));
        assert_eq!(c.row(b"1,2").unwrap_err(), SkipReason::CsvRowShape);
        let e = c
            .row(b"1,2,abc,,")
            .unwrap()
            .unwrap()
            .finish(&mut |n| Arc::from(n))
            .unwrap_err();
        assert_eq!(e, SkipReason::WrongType);
        let e = c
            .row(b"1,2,,,")
            .unwrap()
            .unwrap()
            .finish(&mut |n| Arc::from(n))
            .unwrap_err();
        assert_eq!(e, SkipReason::MissingStepTime);
    }
}
