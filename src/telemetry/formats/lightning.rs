//! PyTorch Lightning `CSVLogger` `metrics.csv`: one header naming every metric ever logged, rows that
//! fill only the columns logged at that moment (sparse). A row with a per-step training loss
//! (`train_loss_step`, else `train_loss`/`loss`) is a record; a row with only validation columns
//! (`val_…`) marks the next record as the step after an evaluation; epoch summaries are not records.

use super::super::csv_rows::CsvRows;
use super::super::field::parse_number_text;
use super::super::stats::SkipReason;
use super::{Role, TextReader, TrainerLine};

#[derive(Debug, Default, Clone)]
struct Columns {
    step: Option<usize>,
    loss: Option<usize>,
    val: Vec<usize>,
    n: usize,
}

/// What one line of `metrics.csv` is.
#[derive(Debug, PartialEq)]
pub enum Row {
    Header,
    /// An epoch summary or a row of metrics we do not use.
    Other,
    Line(TrainerLine),
}

pub struct LightningRows {
    csv: CsvRows,
    cols: Option<Columns>,
}

/// Is this CSV header a Lightning one (a `step` column and a `_step`/`_epoch` metric)?
pub fn sniff(header: &str) -> bool {
    let names: Vec<&str> = header
        .split(',')
        .map(|h| h.trim().trim_matches('"'))
        .collect();
    names.contains(&"step")
        && names
            .iter()
            .any(|n| n.ends_with("_step") || n.ends_with("_epoch"))
}

impl LightningRows {
    pub fn new() -> Self {
        LightningRows {
            csv: CsvRows::new(),
            cols: None,
        }
    }

    pub fn header_line(&self) -> Option<&[u8]> {
        self.csv.header_line()
    }

    /// One non-blank line.
    pub fn row(&mut self, line: &[u8]) -> Result<Row, SkipReason> {
        let cells = self.csv.cells(line).ok_or(SkipReason::LineTooLong)?;
        let Some(cols) = &self.cols else {
            let names: Vec<String> = cells
                .iter()
                .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
                .collect();
            let find = |want: &[&str]| want.iter().find_map(|w| names.iter().position(|n| n == w));
            let cols = Columns {
                step: find(&["step"]),
                loss: find(&["train_loss_step", "train_loss", "loss"]),
                val: names
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.starts_with("val_") || n.starts_with("val/"))
                    .map(|(i, _)| i)
                    .collect(),
                n: names.len(),
            };
            self.cols = Some(cols);
            self.csv.set_header_line(line);
            return Ok(Row::Header);
        };
        if cells.len() != cols.n {
            return Err(SkipReason::CsvRowShape);
        }
        let text = |i: Option<usize>| -> Option<&str> {
            let c = cells.get(i?)?;
            let s = std::str::from_utf8(c).ok()?.trim();
            (!s.is_empty()).then_some(s)
        };
        let num = |i| -> Result<Option<f64>, SkipReason> {
            match text(i) {
                None => Ok(None),
                Some(s) => match parse_number_text(s) {
                    Ok(n) => Ok(Some(n.value)),
                    Err(super::super::field::ValueError::NonFinite) => Ok(Some(f64::NAN)),
                    Err(e) => Err(e.into()),
                },
            }
        };
        let step = num(cols.step)?;
        if let Some(loss) = num(cols.loss)? {
            let mut t = TrainerLine {
                reader: TextReader::Lightning,
                role: Role::Iteration,
                loss: Some(loss),
                ..Default::default()
            };
            t.step = step.and_then(super::text::as_step);
            return Ok(Row::Line(t));
        }
        if cols.val.iter().any(|i| text(Some(*i)).is_some()) {
            return Ok(Row::Line(TrainerLine {
                reader: TextReader::Lightning,
                role: Role::Eval,
                event: Some(super::TrainerEvent::Evaluation),
                step: step.and_then(super::text::as_step),
                ..Default::default()
            }));
        }
        Ok(Row::Other)
    }
}
