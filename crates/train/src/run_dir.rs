//! The layout of `runs/<name>/`.

use std::path::{Path, PathBuf};

/// Paths of one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The resolved config the run was started with.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// What an image must go through to be shown to the run's network
    /// ([`plastic_data::Preprocessing`]).
    pub fn preprocessing(&self) -> PathBuf {
        self.root.join(plastic_data::PREPROCESSING_FILE)
    }

    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    pub fn checkpoint(&self, step: usize) -> PathBuf {
        self.checkpoints().join(format!("step-{step:08}.safetensors"))
    }

    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }

    /// Step checkpoints present, oldest first.
    pub fn list_checkpoints(&self) -> Vec<(usize, PathBuf)> {
        let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(self.checkpoints())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| step_of(&p).map(|s| (s, p)))
            .collect();
        v.sort();
        v
    }

    pub fn latest_checkpoint(&self) -> Option<(usize, PathBuf)> {
        self.list_checkpoints().pop()
    }
}

fn step_of(path: &Path) -> Option<usize> {
    path.file_name()?.to_str()?.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok()
}
