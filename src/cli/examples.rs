//! Example traces embedded in the binary (`--example NAME`), so a krew user can try the plugin without
//! a checkout. They are traces from tests/data/traces, gzipped.
//! The reader takes a path, so an example is written once to the cache directory and read from there;
//! the report then names a file the user can open again.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Example {
    /// Real H100 trainer stdout: an induced input straggler, then a noisy neighbour
    Combo,
    /// A data-loader straggler (JSONL): the loop proposes more loader workers
    Straggler,
    /// Compute bursts (JSONL)
    Burst,
}

impl Example {
    /// The file name: its extension lets `--format auto` recognise the content.
    pub fn file_name(self) -> &'static str {
        match self {
            Example::Combo => "combo.stdout.log.gz",
            Example::Straggler => "straggler.jsonl.gz",
            Example::Burst => "burst.jsonl.gz",
        }
    }

    pub fn bytes(self) -> &'static [u8] {
        match self {
            Example::Combo => include_bytes!("../../tests/data/traces/combo.stdout.log.gz"),
            Example::Straggler => include_bytes!("../../tests/data/traces/straggler.jsonl.gz"),
            Example::Burst => include_bytes!("../../tests/data/traces/burst.jsonl.gz"),
        }
    }

    /// The example as a file: `<cache>/examples/<file>` (rewritten when its content differs), or a
    /// fresh file in the temporary directory when there is no cache directory.
    pub fn materialize(self) -> anyhow::Result<PathBuf> {
        let dir = match crate::policy::default_cache_dir() {
            Some(d) => d.join("examples"),
            None => std::env::temp_dir(),
        };
        let path = dir.join(self.file_name());
        let want = self.bytes();
        if crate::fsio::read_capped(&path, want.len() as u64 + 1).is_ok_and(|have| have == want) {
            return Ok(path);
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("--example: cannot create {}", dir.display()))?;
        // Written beside and renamed into place: a concurrent reader never sees half a file.
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .with_context(|| format!("--example: cannot write in {}", dir.display()))?;
        tmp.write_all(want)?;
        tmp.persist(&path)
            .with_context(|| format!("--example: cannot write {}", path.display()))?;
        Ok(path)
    }
}
