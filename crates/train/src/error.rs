/// Errors of a training run. Each renders as one line; the CLI prints it and exits with 2
/// (bad input), or with 3 for [`TrainError::Diverged`] (the input was fine, training blew up),
/// so a hyperparameter search can tell the two apart.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] plastic_data::DataError),
    #[error("{0}")]
    Model(String),
    #[error("{path}: {message}")]
    Io { path: std::path::PathBuf, message: String },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: std::path::PathBuf, message: String },
    #[error("{0}")]
    Run(String),
    /// The training loss became non-finite or stayed far above its first logged value;
    /// `summary.json` says `"status": "diverged"` with the same step and message.
    #[error("{message}")]
    Diverged { step: usize, message: String },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, e: impl std::fmt::Display) -> Self {
        TrainError::Io { path: path.into(), message: e.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
