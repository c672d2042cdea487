//! Where trials run. A [`TrialExecutor`] starts `plastic trial --dir DIR …` processes — as local
//! child processes ([`crate::local::LocalExecutor`]) or as Slurm job-array tasks
//! ([`crate::slurm::SlurmExecutor`]) — and reports each trial once it has left the executor. The
//! result file a trial writes is the truth; a trial that leaves without one is recorded as
//! failed (or timed out) by its executor. `plastic sweep` uses the same executors.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::result::TrialResult;

/// One trial to run: its number and its directory, which holds its `config.toml` (a search's
/// `trials/NNNN`, a sweep's `runs/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialJob {
    pub trial: usize,
    pub dir: PathBuf,
}

impl TrialJob {
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn result(&self) -> PathBuf {
        self.dir.join("result.json")
    }
    /// The trial process's stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join("trial.log")
    }
    /// The trial's result file, reported under this job's number: `plastic trial` reads the
    /// number off a search's `trials/NNNN` directory, but a sweep's run directories are named,
    /// not numbered.
    pub fn read_result(&self) -> Result<Option<TrialResult>> {
        Ok(TrialResult::read(&self.result())?.map(|r| TrialResult { trial: self.trial, ..r }))
    }
}

/// The `plastic` binary that runs one trial: `PROGRAM trial --dir DIR --device D --threads N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialProgram {
    pub program: PathBuf,
}

impl TrialProgram {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self { program: program.into() }
    }

    /// The arguments after the program for one trial.
    pub fn args(dir: &Path, device: &str, threads: usize) -> Vec<String> {
        vec!["trial".into(), "--dir".into(), dir.display().to_string(), "--device".into(), device.into(), "--threads".into(), threads.to_string()]
    }
}

/// Starts trials and reports them when they are done.
pub trait TrialExecutor {
    /// `local` or `slurm`.
    fn name(&self) -> &'static str;
    /// How many trials may run at once; the driver proposes no more than this ahead of results.
    fn capacity(&self) -> usize;
    /// Starts these trials (their directories and configs exist). Slurm submits them as one array.
    fn launch(&mut self, jobs: &[TrialJob]) -> Result<()>;
    /// The trials that finished since the last call, each with its result (read from its result
    /// file, or made up by the executor for a trial that left without one).
    fn poll(&mut self) -> Result<Vec<TrialResult>>;
    /// Trials started and not yet reported.
    fn running(&self) -> Vec<usize>;
    /// Stops every running trial (local: kills the processes; Slurm: `scancel`s the jobs).
    fn cancel_all(&mut self);
    /// What the executor must remember across a driver restart (Slurm: job ids per trial).
    fn save(&self) -> serde_json::Value;
    /// After a driver restart: takes back the trials that were running, with what [`save`]
    /// returned. Returns the trials it cannot follow any more and that must be launched again
    /// (local trials die with their driver; Slurm jobs keep running and are watched again).
    ///
    /// [`save`]: TrialExecutor::save
    fn restore(&mut self, saved: &serde_json::Value, running: &[TrialJob]) -> Result<Vec<TrialJob>>;
}
