//! Errors loading policies (evaluation failures are not errors: they become failed decisions).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("not a policy component: {0}")]
    NotAComponent(String),
    #[error("invalid policy metadata: {0}")]
    Metadata(String),
    #[error("the component does not fit the modekeeper:policy world: {0}")]
    World(String),
    #[error("cannot compile the policy: {0}")]
    Compile(String),
    #[error("policy cache: {0}")]
    Cache(String),
    #[error("unknown policy {0:?} (see `policy list`)")]
    UnknownPolicy(String),
    #[error("{0}")]
    Advanced(String),
    #[error("policy lock: {0}")]
    Lock(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
