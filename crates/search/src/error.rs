use std::path::Path;

/// Everything a search or a sweep can fail with; each message is one line for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The search file or a sampled trial config is wrong.
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// An executor could not start or watch trials (sbatch missing, squeue failing, ...).
    #[error("{0}")]
    Executor(String),
    /// The driver was interrupted (Ctrl-C / SIGTERM); its state is saved and it can resume.
    #[error("interrupted; the driver's state is saved: rerun the same command with --resume to continue")]
    Interrupted,
}

impl SearchError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, SearchError>;

/// A message on one line: its lines trimmed, the empty ones dropped, joined by spaces (what a
/// result file's `error` and the CLI's `error:` line hold).
pub fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}
