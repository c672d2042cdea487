use std::path::PathBuf;

/// Everything that can go wrong comparing a model with neural data; each renders as one line
/// that names the file or option at fault, so the CLI prints it and exits with 2.
#[derive(Debug, thiserror::Error)]
pub enum NeuralError {
    #[error(transparent)]
    Train(#[from] plastic_train::TrainError),
    #[error(transparent)]
    Data(#[from] plastic_data::DataError),
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A responses, labels or reference file that is not what the format requires.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// An option or combination of inputs that cannot work.
    #[error("{0}")]
    Invalid(String),
    #[error("plot: {0}")]
    Plot(#[from] plastic_plot::PlotError),
}

impl NeuralError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format { path: path.into(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, NeuralError>;
