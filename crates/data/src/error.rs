use std::path::PathBuf;

/// Everything that can go wrong while opening or reading a data set.
///
/// Each variant renders as one line that names the file at fault, so the CLI can print it
/// as-is and exit with code 2.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its contents are not what the format requires.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// The data configuration is inconsistent (for example a kind that needs a path got none).
    #[error("data config: {0}")]
    Config(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format { path: path.into(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, DataError>;
