//! What can go wrong while observing or reading observables back.

use std::path::PathBuf;

/// Why observables were not computed, written or read. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A string that is not an observable's name.
    #[error("unknown observable `{0}` (expected `{{weight,act}}{{raw,sq,abs}}_{{mean,median,norm,thirdquartile,var,skew,kurtosis}}` or `gradavg{{raw,sq,abs}}_id`)")]
    UnknownObservable(String),
    /// A run's observables whose parts do not fit together (lengths of layers, positions,
    /// values).
    #[error("{0}")]
    Shape(String),
    /// The file does not exist (the run recorded no observables).
    #[error("{}: not found (was the run trained with [observe] enabled?)", path.display())]
    Missing { path: PathBuf },
    /// Reading or writing a file failed.
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// The file exists but is not what this crate writes (an array missing, of the wrong type
    /// or shape).
    #[error("{}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
}

impl ObserveError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        ObserveError::Io { path: path.into(), message: e.to_string() }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ObserveError::Malformed { path: path.into(), message: message.into() }
    }
}

/// This crate's results.
pub type Result<T, E = ObserveError> = std::result::Result<T, E>;
