//! Architecture and hyper-parameter searches over run configs (Nayebi et al. 2018 searched
//! thousands of ConvRNN trials this way to find the Reciprocal Gated Cell).
//!
//! A search file ([`file`]) names a base run config and a space ([`space`]); a strategy
//! ([`strategy`]: random, evolutionary, TPE) proposes each trial as an ordinary run config; an
//! executor ([`executor`]: [`local`] child processes or [`slurm`] job arrays) runs it as
//! `plastic trial`, which writes the trial's `result.json`; the driver ([`driver`]) keeps the
//! search's state on disk so a killed search resumes, and [`report`] writes `results.csv`, the
//! leaderboard and the accuracy-against-size figures with their Pareto fronts.
//!
//! A sweep ([`sweep`]) runs every point of a grid over run-config keys instead, through the same
//! executors, with its own loop ([`sweep::driver`]); both loops take their directory lock and
//! their interrupt flag from [`control`].
//!
//! This crate does not train anything and does not depend on burn: the CLI hands it a
//! validator for run configs and the path of the `plastic` binary.

pub mod control;
pub mod driver;
pub mod error;
pub mod executor;
pub mod file;
pub mod local;
pub mod report;
pub mod result;
pub mod slurm;
pub mod space;
pub mod strategy;
pub mod sweep;

pub use driver::{DriverOptions, SearchObserver, TrialRecord};
pub use error::{Result, SearchError, one_line};
pub use executor::{TrialExecutor, TrialJob, TrialProgram};
pub use file::Search;
pub use sweep::Sweep;
pub use result::{TrialResult, TrialStatus};
