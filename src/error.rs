//! The two kinds of failure the CLI distinguishes: invalid input (exit 2) and everything else (exit 1).
//! Commands return `anyhow::Result`; `main` looks for an [`InputError`] in the chain to pick the code.

use std::fmt;

/// Invalid input or a blocked operation: the user must change something. Exit code 2.
#[derive(Debug)]
pub struct InputError {
    /// A stable machine-readable kind (`not_found`, `unknown_format`, `no_records`, …) for explain events.
    pub kind: &'static str,
    pub message: String,
}

impl InputError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        InputError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

/// Shorthand for returning an [`InputError`] from an `anyhow` function.
pub fn input_error(kind: &'static str, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError::new(kind, message))
}

/// Exit code for an error chain: 2 when the user's input is at fault, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<InputError>()) {
        2
    } else {
        1
    }
}
