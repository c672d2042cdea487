//! What one trial reports: `trials/NNNN/result.json`, written by `plastic trial` (or, for a trial
//! that died without writing one, by its executor). The result file is the truth: a trial is
//! finished exactly when its result file exists.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Trained to its last step and was evaluated.
    Ok,
    /// Training diverged (a NaN or exploding loss); counted as the worst objective.
    Diverged,
    /// Exceeded its time limit (local: killed by the driver; Slurm: the job's time limit).
    Timeout,
    /// Anything else: a bad config, an error, a crash, running out of memory.
    Failed,
}

impl TrialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Diverged => "diverged",
            Self::Timeout => "timeout",
            Self::Failed => "failed",
        }
    }
}

/// `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub trial: usize,
    pub status: TrialStatus,
    pub validation_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub params: Option<usize>,
    pub units: Option<usize>,
    /// Wall time of the trial process in seconds.
    pub wall_s: Option<f64>,
    /// One line saying why a trial that is not `ok` stopped.
    pub error: Option<String>,
}

impl TrialResult {
    /// A result for a trial that stopped without reporting (killed, crashed, timed out).
    pub fn stopped(trial: usize, status: TrialStatus, error: impl Into<String>, wall_s: Option<f64>) -> Self {
        Self { trial, status, validation_accuracy: None, test_accuracy: None, params: None, units: None, wall_s, error: Some(error.into()) }
    }

    /// Reads a result file; `None` when it does not exist yet.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| SearchError::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SearchError::io(path, e)),
        }
    }

    /// Writes it atomically (temporary file, then rename), so a reader never sees half a file.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, serde_json::to_string_pretty(self).expect("plain data").as_bytes())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| SearchError::io(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SearchError::io(path, e)
    })
}
