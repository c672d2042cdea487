//! The search loop: propose trials while workers are free, hand them to the executor, record
//! what comes back, and keep `state.json`, `results.csv` and the figures current after every
//! event, so a driver killed at any moment (even by SIGKILL) resumes where it was.
//!
//! A search directory holds
//! - `search.json` — the resolved search (base, space, strategy): a different search is refused;
//! - `state.json` — every proposed trial with its assignment and whether it finished;
//! - `trials/NNNN/` — `config.toml`, `result.json` (the truth), `trial.log`, `run/`;
//! - `results.csv`, `accuracy_vs_params.png`, `accuracy_vs_units.png`.
//!
//! A lock (`.lock`, `flock`) keeps two drivers out of one directory; the kernel drops it when
//! its driver dies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::control;
use crate::error::{Result, SearchError};
use crate::executor::{TrialExecutor, TrialJob};
use crate::file::Search;
use crate::report;
use crate::result::{TrialResult, TrialStatus, write_atomic};
use crate::space::Assignment;
use crate::strategy::Observation;

pub use crate::control::install_interrupt_handler;

/// One trial in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub trial: usize,
    pub assignment: Assignment,
    /// `None` while it runs (or was running when the driver stopped).
    pub result: Option<TrialResult>,
}

impl TrialRecord {
    /// The objective the strategies maximise: validation accuracy; failures are the worst.
    pub fn objective(&self) -> Option<f64> {
        self.result.as_ref().map(|r| match (r.status, r.validation_accuracy) {
            (TrialStatus::Ok, Some(a)) => a,
            _ => f64::NEG_INFINITY,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    trials: Vec<TrialRecord>,
    executor: String,
    executor_state: serde_json::Value,
}

/// What the driver tells its user as it goes.
pub trait SearchObserver {
    /// The search file, the space and the directory passed their checks; trials start next.
    fn ready(&mut self) {}
    fn message(&mut self, _line: &str) {}
    fn started(&mut self, _record: &TrialRecord) {}
    fn finished(&mut self, _record: &TrialRecord, _done: usize, _total: usize) {}
}

/// Where and how a search runs.
pub struct DriverOptions {
    /// The search directory (`--out/NAME`).
    pub dir: PathBuf,
    /// Continue the search in `dir` (its search must be the same).
    pub resume: bool,
    /// How long to sleep between polls of the executor.
    pub poll: Duration,
}

/// `trials/NNNN` of a search directory.
pub fn trial_dir(dir: &Path, trial: usize) -> PathBuf {
    dir.join("trials").join(format!("{trial:04}"))
}

/// Checks before any trial runs that the space yields valid run configs: `samples` random
/// trials are built and each is handed to `validate` (the run config's own checks).
pub fn check_space(search: &Search, samples: usize, validate: &dyn Fn(&str) -> std::result::Result<(), String>) -> Result<()> {
    for i in 0..samples {
        let (assignment, table) = crate::strategy::Strategy::Random.propose(&search.space, &search.base, search.file.seed ^ 0x5EED, i, &[]).map_err(SearchError::Invalid)?;
        let text = trial_config_text(&table, &search.file.name, i);
        validate(&text).map_err(|e| SearchError::Invalid(format!("the search space yields an invalid run config ({e}), e.g. with {}", describe(&assignment))))?;
    }
    Ok(())
}

fn describe(a: &Assignment) -> String {
    a.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}

fn trial_config_text(table: &toml::Table, search: &str, trial: usize) -> String {
    let mut t = table.clone();
    t.insert("name".into(), toml::Value::String(format!("{search}-{trial:04}")));
    format!("# trial {trial} of search {search:?}, written by `plastic search`\n{}", toml::to_string(&t).expect("a TOML table serialises"))
}

/// Runs (or resumes) a search to its trial budget. Returns every trial.
pub fn run(search: &Search, executor: &mut dyn TrialExecutor, options: &DriverOptions, validate: &dyn Fn(&str) -> std::result::Result<(), String>, observer: &mut dyn SearchObserver) -> Result<Vec<TrialRecord>> {
    let dir = &options.dir;
    let state_path = dir.join("state.json");
    let search_path = dir.join("search.json");
    let exists = state_path.exists();
    if exists && !options.resume {
        return Err(SearchError::Invalid(format!("{} already holds a search: pass --resume to continue it, or choose another --out", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| SearchError::io(dir, e))?;
    let _lock = control::lock_dir(dir, "search")?;
    let fingerprint = search.fingerprint();
    let mut state = if exists {
        let saved = std::fs::read_to_string(&search_path).map_err(|e| SearchError::io(&search_path, e))?;
        if saved.trim() != fingerprint {
            return Err(SearchError::Invalid(format!(
                "{} holds a different search (its base, space, strategy or seed differ from this search file's): choose another --out",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&state_path).map_err(|e| SearchError::io(&state_path, e))?;
        serde_json::from_str::<State>(&text).map_err(|e| SearchError::Invalid(format!("{}: {e}", state_path.display())))?
    } else {
        check_space(search, 32, validate)?;
        write_atomic(&search_path, fingerprint.as_bytes())?;
        State::default()
    };
    if exists && !state.executor.is_empty() && state.executor != executor.name() && state.trials.iter().any(|t| t.result.is_none()) {
        return Err(SearchError::Invalid(format!("{}: this search was running trials with --executor {}; resume it with the same executor", dir.display(), state.executor)));
    }
    state.executor = executor.name().to_string();
    observer.ready();

    // After a restart: results written while the driver was down are read from their files;
    // the trials still without one go back to the executor.
    let mut unfinished = Vec::new();
    for rec in state.trials.iter_mut().filter(|t| t.result.is_none()) {
        let job = TrialJob { trial: rec.trial, dir: trial_dir(dir, rec.trial) };
        match TrialResult::read(&job.result())? {
            Some(r) => rec.result = Some(r),
            None => unfinished.push(job),
        }
    }
    let relaunch = if unfinished.is_empty() { Vec::new() } else { executor.restore(&state.executor_state, &unfinished)? };
    if !unfinished.is_empty() {
        observer.message(&format!("resuming: {} trial(s) were running; {} start again, {} are still running under {}", unfinished.len(), relaunch.len(), unfinished.len() - relaunch.len(), executor.name()));
    }
    if !relaunch.is_empty() {
        executor.launch(&relaunch)?;
    }
    save(&state_path, &state, executor)?;
    report::write(dir, search, &state.trials)?;

    let total = search.file.trials.max(state.trials.len());
    let mut last_report = Instant::now();
    loop {
        if control::interrupted() {
            observer.message("interrupted: stopping the running trials");
            executor.cancel_all();
            state.executor_state = serde_json::Value::Null;
            save(&state_path, &state, executor)?;
            return Err(SearchError::Interrupted);
        }
        // Propose while there is room.
        let mut batch = Vec::new();
        while state.trials.len() < total && executor.running().len() + batch.len() < executor.capacity() {
            let trial = state.trials.len();
            let history: Vec<Observation> = state.trials.iter().map(|t| Observation { trial: t.trial, assignment: &t.assignment, objective: t.objective() }).collect();
            let (assignment, table) = search.strategy.propose(&search.space, &search.base, search.file.seed, trial, &history).map_err(SearchError::Invalid)?;
            let job = TrialJob { trial, dir: trial_dir(dir, trial) };
            // A directory left by an earlier, unrecorded proposal of this trial is stale.
            if job.dir.exists() {
                std::fs::remove_dir_all(&job.dir).map_err(|e| SearchError::io(&job.dir, e))?;
            }
            let text = trial_config_text(&table, &search.file.name, trial);
            write_atomic(&job.config(), text.as_bytes())?;
            let mut rec = TrialRecord { trial, assignment, result: None };
            if let Err(e) = validate(&text) {
                // Validated like any other run config before it starts; a bad one never runs.
                let r = TrialResult::stopped(trial, TrialStatus::Failed, format!("invalid config: {e}"), None);
                r.write(&job.result())?;
                rec.result = Some(r);
                state.trials.push(rec.clone());
                observer.finished(&rec, done_count(&state), total);
                continue;
            }
            observer.started(&rec);
            state.trials.push(rec);
            batch.push(job);
        }
        if !batch.is_empty() {
            // Recorded before launch: a driver killed in between relaunches them on resume.
            save(&state_path, &state, executor)?;
            if let Err(e) = executor.launch(&batch) {
                for job in &batch {
                    let r = TrialResult::stopped(job.trial, TrialStatus::Failed, format!("could not start: {e}"), None);
                    r.write(&job.result())?;
                    state.trials[job.trial].result = Some(r);
                }
                save(&state_path, &state, executor)?;
                return Err(e);
            }
            save(&state_path, &state, executor)?;
        }
        let finished = executor.poll()?;
        if !finished.is_empty() {
            for r in finished {
                let Some(rec) = state.trials.get_mut(r.trial) else { continue };
                rec.result = Some(r);
                let rec = rec.clone();
                observer.finished(&rec, done_count(&state), total);
            }
            save(&state_path, &state, executor)?;
            report::write(dir, search, &state.trials)?;
            last_report = Instant::now();
        }
        if done_count(&state) >= total && executor.running().is_empty() {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(60) {
            save(&state_path, &state, executor)?;
            last_report = Instant::now();
        }
        std::thread::sleep(options.poll);
    }
    save(&state_path, &state, executor)?;
    report::write(dir, search, &state.trials)?;
    Ok(state.trials)
}

fn done_count(state: &State) -> usize {
    state.trials.iter().filter(|t| t.result.is_some()).count()
}

fn save(path: &Path, state: &State, executor: &dyn TrialExecutor) -> Result<()> {
    let mut s = state.clone();
    s.executor_state = executor.save();
    write_atomic(path, serde_json::to_string_pretty(&s).expect("plain data").as_bytes())
}

/// Parameter columns of the results, in the space's order.
pub fn param_columns(search: &Search) -> Vec<String> {
    search.space.params.iter().map(|p| p.name.clone()).collect()
}

/// Trials by their recorded status counts, for a closing line.
pub fn status_counts(trials: &[TrialRecord]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for t in trials {
        *m.entry(t.result.as_ref().map_or("running", |r| r.status.as_str())).or_insert(0) += 1;
    }
    m
}
