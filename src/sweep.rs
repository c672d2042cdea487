//! `plastic sweep`: glue between the sweep machinery of `plastic-search` (which knows nothing of
//! training), `plastic-train` (each run's config: its check, its settings) and
//! `plastic-identify` (the data set gathered from the runs' observables).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use plastic_identify::dataset::{SweepRun, gather};
use plastic_search::sweep::driver::{self, RunRecord, SweepObserver, SweepOptions, run_dir};
use plastic_search::sweep::{Run, value_text};
use plastic_search::{SearchError, Sweep, TrialStatus};
use plastic_train::RunConfig;

use crate::search::{ExecutorArgs, build_executor, validate_run_config};

/// `plastic sweep` arguments.
pub struct SweepArgs {
    pub config: PathBuf,
    pub set: Vec<String>,
    pub executor: ExecutorArgs,
    pub out: PathBuf,
    pub resume: bool,
    pub force: bool,
}

struct Printer {
    started: Instant,
    header: String,
}

impl SweepObserver for Printer {
    fn ready(&mut self, total: usize, to_run: usize) {
        eprintln!("{}", self.header);
        if to_run < total {
            eprintln!("{} of {total} runs have ended already; {to_run} to run", total - to_run);
        }
    }
    fn message(&mut self, line: &str) {
        eprintln!("{line}");
    }
    fn started(&mut self, r: &RunRecord) {
        eprintln!("run {} started", r.name);
    }
    fn finished(&mut self, r: &RunRecord, done: usize, total: usize) {
        let res = r.result.as_ref().expect("finished");
        let what = match (res.status, res.validation_accuracy) {
            (TrialStatus::Ok, Some(a)) => format!("validation {:.2} %", a * 100.0),
            (TrialStatus::Ok, None) => "ok".into(),
            _ => format!("{}: {}", res.status.as_str(), res.error.as_deref().unwrap_or("")),
        };
        eprintln!("run {} {what} ({done}/{total} done, {:.0} s)", r.name, self.started.elapsed().as_secs_f64());
    }
}

/// The data set's columns that are read off each run's config, with the key each comes from.
const META_KEYS: [(&str, &str); 6] = [("rule", "rule.kind"), ("optimizer", "train.optimizer"), ("architecture", "model.kind"), ("dataset", "data.kind"), ("batch_size", "train.batch_size"), ("seed", "seed")];

/// A config enum's name as written in configs (`adam`, `convrnn`, `image_folder`), from its
/// serialised form.
fn config_name(v: serde_json::Result<serde_json::Value>) -> String {
    match v {
        Ok(serde_json::Value::String(s)) => s,
        other => other.map(|v| v.to_string()).unwrap_or_default(),
    }
}

/// A run's settings for the data set: rule, optimiser, architecture, data set, batch size and
/// seed from its config, and every other axis by its name. An axis named like one of those
/// columns gives it its value (the `architecture` axis' variant names, rather than `model.kind`,
/// which two CNNs share); an axis over one of their keys adds nothing new.
pub fn run_meta(sweep: &Sweep, run: &Run, config: &RunConfig) -> BTreeMap<String, String> {
    let mut meta: BTreeMap<String, String> = [
        ("rule", config.rule.kind.name().to_string()),
        ("optimizer", config_name(serde_json::to_value(config.train.optimizer))),
        ("architecture", config_name(serde_json::to_value(config.model.kind))),
        ("dataset", config_name(serde_json::to_value(config.data.kind))),
        ("batch_size", config.train.batch_size.to_string()),
        ("seed", config.seed.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (axis, value) in sweep.axes.iter().zip(&run.values) {
        let standard_key = axis.key.as_deref().is_some_and(|k| META_KEYS.iter().any(|(_, key)| *key == k));
        if META_KEYS.iter().any(|(column, _)| *column == axis.name) || !standard_key {
            meta.insert(axis.name.clone(), value_text(value));
        }
    }
    meta
}

/// Checks the sweep file and every run's config, runs nothing. Returns each run's name with the
/// axes' values, one line per run.
pub fn check_sweep(config: &std::path::Path, set: &[String]) -> Result<Vec<String>, SearchError> {
    let sweep = Sweep::load(config, set)?;
    let mut lines = Vec::new();
    let mut invalid = Vec::new();
    for run in &sweep.runs {
        if let Err(e) = validate_run_config(&run.config_text(&sweep.file.name)) {
            invalid.push(format!("{}: {e}", run.name));
        }
        let values: Vec<String> = sweep.values_of(run).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.push(format!("{} {}", run.name, values.join(" ")));
    }
    if let Some(first) = invalid.first() {
        return Err(SearchError::Invalid(format!("{} of {} runs have an invalid config, e.g. {first}", invalid.len(), sweep.runs.len())));
    }
    Ok(lines)
}

/// Runs the sweep's missing runs, then gathers the data set. Returns the `dataset.npz` written.
pub fn run_sweep(args: SweepArgs) -> Result<PathBuf, SearchError> {
    plastic_search::control::install_interrupt_handler();
    let sweep = Sweep::load(&args.config, &args.set)?;
    let dir = args.out.join(&sweep.file.name);
    let (mut executor, poll) = build_executor(&args.executor, sweep.file.run_timeout_s, &sweep.file.slurm, &dir)?;
    let dir = std::path::absolute(&dir).map_err(|e| SearchError::io(&dir, e))?;
    let options = SweepOptions { dir: dir.clone(), resume: args.resume, force: args.force, poll };
    let grid: Vec<String> = sweep.axes.iter().map(|a| format!("{} {}", a.levels.len(), a.name)).collect();
    let header = format!("sweep {:?}: {} runs ({}), {} executor ({} at a time) → {}", sweep.file.name, sweep.runs.len(), grid.join(" × "), executor.name(), executor.capacity(), dir.display());
    let records = driver::run(&sweep, executor.as_mut(), &options, &validate_run_config, &mut Printer { started: Instant::now(), header })?;
    let counts: Vec<String> = driver::status_counts(&records).into_iter().map(|(s, n)| format!("{n} {s}")).collect();
    eprintln!("{} runs: {}; results in {}", records.len(), counts.join(", "), dir.join("results.csv").display());

    // The data set: every run that ended ok; the others are left out and listed.
    let mut runs = Vec::new();
    let mut left_out = Vec::new();
    for rec in &records {
        let run = &sweep.runs[rec.index];
        if !rec.ok() {
            let r = rec.result.as_ref();
            left_out.push((rec.name.clone(), format!("{}{}", rec.status(), r.and_then(|r| r.error.as_deref()).map(|e| format!(": {e}")).unwrap_or_default())));
            continue;
        }
        let trial = run_dir(&dir, &run.name);
        let config = RunConfig::load(&trial.join("config.toml"), &[]).map_err(|e| SearchError::Invalid(e.to_string()))?;
        let mut meta = run_meta(&sweep, run, &config);
        // How well the run learned, so that `identify --min-test-accuracy` can leave out runs
        // that never did.
        meta.insert("test_accuracy".into(), rec.result.as_ref().and_then(|r| r.test_accuracy).map_or_else(String::new, |a| a.to_string()));
        runs.push(SweepRun { name: run.name.clone(), run_dir: trial.join("run"), meta });
    }
    if runs.is_empty() {
        return Err(SearchError::Invalid(format!("no run of the sweep ended ok, so there is no data set (see {})", dir.join("results.csv").display())));
    }
    let summary = gather(&runs, &dir).map_err(|e| SearchError::Invalid(format!("gathering the data set in {}: {e}", dir.display())))?;
    left_out.extend(summary.runs_skipped.iter().cloned());
    for (name, why) in &left_out {
        eprintln!("left out {name}: {why}");
    }
    eprintln!("wrote {} ({} samples from {} runs; {} runs left out)", summary.path.display(), summary.samples, summary.runs_used, left_out.len());
    Ok(summary.path)
}
