//! The sweep loop: keep the executor full with the runs that have no result yet, record what
//! comes back, and rewrite `results.csv` after every event. A run's result file is the truth, so
//! a driver killed at any moment (even by SIGKILL) and restarted with `--resume` runs nothing
//! that finished, and a run that was half-way continues from its last checkpoint (`plastic trial`
//! resumes a run directory that holds one).
//!
//! A sweep directory holds
//! - `sweep.json` — the resolved sweep ([`Sweep::fingerprint`]): a different sweep is refused
//!   unless forced;
//! - `state.json` — the executor, what it must remember across a restart (Slurm's job ids) and
//!   the runs it was given;
//! - `runs/NAME/` — a trial directory: `config.toml`, `result.json` (the truth), `trial.log`,
//!   `run/` (the run directory, with its checkpoints and observables);
//! - `results.csv` — every run with its axes' values and how it ended;
//! - `dataset.npz`, `meta.csv` — written by the CLI once every run ended.
//!
//! A lock (`.lock`, [`crate::control::lock_dir`]) keeps two drivers out of one directory.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::control;
use crate::error::{Result, SearchError};
use crate::executor::{TrialExecutor, TrialJob};
use crate::result::{TrialResult, TrialStatus, write_atomic};
use crate::sweep::{Run, Sweep, value_text};

/// One run of the sweep as the driver knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub index: usize,
    pub name: String,
    /// Each axis' value, in axis order.
    pub values: Vec<Value>,
    /// `None` until it ends.
    pub result: Option<TrialResult>,
    /// Handed to the executor and not reported yet.
    pub running: bool,
}

impl RunRecord {
    fn new(run: &Run) -> Self {
        Self { index: run.index, name: run.name.clone(), values: run.values.clone(), result: None, running: false }
    }

    /// `pending`, `running`, or how it ended (`ok`, `diverged`, `timeout`, `failed`).
    pub fn status(&self) -> &'static str {
        match (&self.result, self.running) {
            (Some(r), _) => r.status.as_str(),
            (None, true) => "running",
            (None, false) => "pending",
        }
    }

    pub fn ok(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.status == TrialStatus::Ok)
    }
}

/// `state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    executor: String,
    executor_state: serde_json::Value,
    /// The runs handed to the executor and not reported when this was written, by name.
    running: Vec<String>,
}

/// What the driver tells its user as it goes.
pub trait SweepObserver {
    /// The sweep file and the directory passed their checks; `to_run` of the runs start next.
    fn ready(&mut self, _total: usize, _to_run: usize) {}
    fn message(&mut self, _line: &str) {}
    fn started(&mut self, _record: &RunRecord) {}
    fn finished(&mut self, _record: &RunRecord, _done: usize, _total: usize) {}
}

/// Where and how a sweep runs.
pub struct SweepOptions {
    /// The sweep directory (`--out/NAME`).
    pub dir: PathBuf,
    /// Continue the sweep in `dir` (its sweep must be the same).
    pub resume: bool,
    /// Run this sweep in `dir` even where it holds a different one: runs whose config is
    /// unchanged keep their results, the others run again.
    pub force: bool,
    /// How long to sleep between polls of the executor.
    pub poll: Duration,
}

/// `runs/NAME` of a sweep directory.
pub fn run_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("runs").join(name)
}

/// Runs (or resumes) a sweep until every run has ended. Returns every run, in grid order.
/// `validate` is the run config's own check; a run it refuses is recorded `failed` and never
/// starts (a sweep where it refuses every run is refused as a whole).
pub fn run(sweep: &Sweep, executor: &mut dyn TrialExecutor, options: &SweepOptions, validate: &dyn Fn(&str) -> std::result::Result<(), String>, observer: &mut dyn SweepObserver) -> Result<Vec<RunRecord>> {
    let dir = &options.dir;
    let sweep_path = dir.join("sweep.json");
    let state_path = dir.join("state.json");
    let exists = sweep_path.exists();
    if exists && !options.resume && !options.force {
        return Err(SearchError::Invalid(format!("{} already holds a sweep: pass --resume to continue it (finished runs are kept), or choose another --out", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| SearchError::io(dir, e))?;
    let _lock = control::lock_dir(dir, "sweep")?;
    let fingerprint = sweep.fingerprint();
    let mut state = State::default();
    if exists {
        let saved = std::fs::read_to_string(&sweep_path).map_err(|e| SearchError::io(&sweep_path, e))?;
        if saved.trim() != fingerprint.trim() && !options.force {
            return Err(SearchError::Invalid(format!(
                "{} holds a different sweep (its base, [set] or axes differ from this sweep file's): pass --force to run this one there (runs whose config is unchanged keep their results), or choose another --out",
                dir.display()
            )));
        }
        if state_path.exists() {
            let text = std::fs::read_to_string(&state_path).map_err(|e| SearchError::io(&state_path, e))?;
            state = serde_json::from_str(&text).map_err(|e| SearchError::Invalid(format!("{}: {e}", state_path.display())))?;
        }
    }

    // What is on disk: a run directory whose config is this run's keeps its result; any other
    // (a run changed under --force, a directory left before its config was written) is stale.
    let mut records: Vec<RunRecord> = sweep.runs.iter().map(RunRecord::new).collect();
    let jobs: Vec<TrialJob> = sweep.runs.iter().map(|r| TrialJob { trial: r.index, dir: run_dir(dir, &r.name) }).collect();
    let mut stale = Vec::new();
    for (run, job) in sweep.runs.iter().zip(&jobs) {
        if !job.dir.exists() {
            continue;
        }
        match same_config(&job.config(), &run.config) {
            true => records[run.index].result = job.read_result()?,
            false => stale.push(job.dir.clone()),
        }
    }
    // The runs the executor had and that have not ended. Where it may still be running them
    // (Slurm keeps its jobs), only the same executor may take them back, and they must not change.
    let in_flight: Vec<&String> = state.running.iter().filter(|name| sweep.run(name).is_none_or(|r| records[r.index].result.is_none())).collect();
    let changed = in_flight.iter().any(|name| sweep.run(name).is_none_or(|r| stale.contains(&jobs[r.index].dir)));
    if !state.executor_state.is_null() && !in_flight.is_empty() && (state.executor != executor.name() || changed) {
        return Err(SearchError::Invalid(format!(
            "{}: runs of this sweep are still with the {} executor ({}); resume it with the same sweep file and --executor {} until they end, or cancel them first",
            dir.display(),
            state.executor,
            in_flight.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            state.executor
        )));
    }
    let unfinished: Vec<TrialJob> = in_flight.iter().filter_map(|name| sweep.run(name)).filter(|r| !stale.contains(&jobs[r.index].dir)).map(|r| jobs[r.index].clone()).collect();

    // Every run still to do is checked before any starts.
    let mut invalid = Vec::new();
    for run in &sweep.runs {
        if records[run.index].result.is_none()
            && let Err(e) = validate(&run.config_text(&sweep.file.name))
        {
            invalid.push((run.index, e));
        }
    }
    if !invalid.is_empty() && invalid.len() == sweep.runs.len() {
        let (i, e) = &invalid[0];
        return Err(SearchError::Invalid(format!("the sweep yields no valid run config: {e} (run {})", sweep.runs[*i].name)));
    }
    for d in &stale {
        std::fs::remove_dir_all(d).map_err(|e| SearchError::io(d, e))?;
    }
    write_atomic(&sweep_path, fingerprint.as_bytes())?;
    state.executor = executor.name().to_string();
    let total = sweep.runs.len();
    let to_run = records.iter().filter(|r| r.result.is_none()).count() - invalid.len();
    observer.ready(total, to_run);
    for (i, e) in invalid {
        let r = TrialResult::stopped(i, TrialStatus::Failed, format!("invalid config: {e}"), None);
        write_atomic(&jobs[i].config(), sweep.runs[i].config_text(&sweep.file.name).as_bytes())?;
        r.write(&jobs[i].result())?;
        records[i].result = Some(r);
        observer.finished(&records[i], done_count(&records), total);
    }

    // After a restart: the runs the executor still follows (Slurm) stay with it; the others
    // start again, first, from their checkpoints.
    let lost = if unfinished.is_empty() { Vec::new() } else { executor.restore(&state.executor_state, &unfinished)? };
    if !unfinished.is_empty() {
        observer.message(&format!("resuming: {} run(s) were running; {} start again, {} are still running under {}", unfinished.len(), lost.len(), unfinished.len() - lost.len(), executor.name()));
    }
    for job in &unfinished {
        records[job.trial].running = !lost.contains(job);
    }
    let mut pending: VecDeque<usize> = lost.iter().map(|j| j.trial).collect();
    pending.extend(records.iter().filter(|r| r.result.is_none() && !r.running && !lost.iter().any(|j| j.trial == r.index)).map(|r| r.index));
    save(&state_path, &mut state, &records, executor)?;
    write_results(dir, sweep, &records)?;

    loop {
        if control::interrupted() {
            observer.message("interrupted: stopping the running runs");
            executor.cancel_all();
            records.iter_mut().for_each(|r| r.running = false);
            save(&state_path, &mut state, &records, executor)?;
            write_results(dir, sweep, &records)?;
            return Err(SearchError::Interrupted);
        }
        let mut batch = Vec::new();
        while executor.running().len() + batch.len() < executor.capacity() {
            let Some(i) = pending.pop_front() else { break };
            let job = jobs[i].clone();
            if !job.config().exists() {
                write_atomic(&job.config(), sweep.runs[i].config_text(&sweep.file.name).as_bytes())?;
            }
            records[i].running = true;
            observer.started(&records[i]);
            batch.push(job);
        }
        if !batch.is_empty() {
            // Recorded before launch: a driver killed in between hands them back on resume.
            save(&state_path, &mut state, &records, executor)?;
            if let Err(e) = executor.launch(&batch) {
                for job in &batch {
                    let r = TrialResult::stopped(job.trial, TrialStatus::Failed, format!("could not start: {e}"), None);
                    r.write(&job.result())?;
                    records[job.trial].result = Some(r);
                    records[job.trial].running = false;
                }
                save(&state_path, &mut state, &records, executor)?;
                write_results(dir, sweep, &records)?;
                return Err(e);
            }
            save(&state_path, &mut state, &records, executor)?;
            write_results(dir, sweep, &records)?;
        }
        let finished = executor.poll()?;
        if !finished.is_empty() {
            for r in finished {
                let Some(rec) = records.get_mut(r.trial) else { continue };
                rec.result = Some(r);
                rec.running = false;
                let rec = rec.clone();
                observer.finished(&rec, done_count(&records), total);
            }
            save(&state_path, &mut state, &records, executor)?;
            write_results(dir, sweep, &records)?;
        }
        if pending.is_empty() && executor.running().is_empty() {
            break;
        }
        std::thread::sleep(options.poll);
    }
    save(&state_path, &mut state, &records, executor)?;
    write_results(dir, sweep, &records)?;
    Ok(records)
}

/// Whether the run directory's `config.toml` is `config` (compared as tables: comments and
/// formatting do not count).
fn same_config(path: &Path, config: &Table) -> bool {
    std::fs::read_to_string(path).ok().and_then(|t| t.parse::<Table>().ok()).is_some_and(|t| &t == config)
}

fn done_count(records: &[RunRecord]) -> usize {
    records.iter().filter(|r| r.result.is_some()).count()
}

fn save(path: &Path, state: &mut State, records: &[RunRecord], executor: &dyn TrialExecutor) -> Result<()> {
    state.running = records.iter().filter(|r| r.running).map(|r| r.name.clone()).collect();
    state.executor_state = executor.save();
    write_atomic(path, serde_json::to_string_pretty(state).expect("plain data").as_bytes())
}

/// `results.csv`: one row per run in grid order — its name, each axis' value, how it ended.
pub fn write_results(dir: &Path, sweep: &Sweep, records: &[RunRecord]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["run".to_string()];
    header.extend(sweep.axes.iter().map(|a| a.name.clone()));
    header.extend(["status", "validation_accuracy", "test_accuracy", "params", "units", "wall_s", "error"].map(String::from));
    w.write_record(&header).expect("in memory");
    let opt = |v: Option<String>| v.unwrap_or_default();
    for rec in records {
        let r = rec.result.as_ref();
        let mut row = vec![rec.name.clone()];
        row.extend(rec.values.iter().map(value_text));
        row.extend([
            rec.status().to_string(),
            opt(r.and_then(|r| r.validation_accuracy).map(|v| format!("{v:.6}"))),
            opt(r.and_then(|r| r.test_accuracy).map(|v| format!("{v:.6}"))),
            opt(r.and_then(|r| r.params).map(|v| v.to_string())),
            opt(r.and_then(|r| r.units).map(|v| v.to_string())),
            opt(r.and_then(|r| r.wall_s).map(|v| format!("{v:.1}"))),
            opt(r.and_then(|r| r.error.clone())),
        ]);
        w.write_record(&row).expect("in memory");
    }
    write_atomic(&dir.join("results.csv"), &w.into_inner().expect("in memory"))
}

/// Runs by their status, for a closing line.
pub fn status_counts(records: &[RunRecord]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r.status()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::TrialProgram;
    use crate::local::{LocalExecutor, Slot};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("plastic-sweep-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A fake `plastic`: reads the run's `train.lr` from its config; `lr = 9` fails, `lr = 5`
    /// sleeps, anything else succeeds with that accuracy. Every start appends to `starts`.
    fn fake_program(dir: &Path) -> TrialProgram {
        let p = dir.join("fake-plastic");
        std::fs::write(
            &p,
            r#"#!/bin/sh
# args: trial --dir DIR --device D --threads N
dir="$3"
echo "$dir" >> "$(dirname "$0")/starts"
lr=$(sed -n 's/^lr = //p' "$dir/config.toml")
case "$lr" in
  9) echo "error: boom" >&2; exit 2 ;;
  5) sleep 30 ;;
esac
printf '{"trial":0,"status":"ok","validation_accuracy":0.%s,"test_accuracy":0.5,"params":10,"units":3,"wall_s":0.1,"error":null}' "$(echo $lr | tr -d .)" > "$dir/result.json"
"#,
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        TrialProgram::new(p)
    }

    const FILE: &str = r#"
        name = "s"
        [base]
        train = { lr = 1 }
        [[axis]]
        key = "seed"
        values = [0, 1]
        [[axis]]
        name = "opt"
        [axis.variants.a]
        "train.lr" = 2
        [axis.variants.b]
        "train.lr" = 3
    "#;

    #[derive(Default)]
    struct Log(Vec<String>);
    impl SweepObserver for Log {
        fn started(&mut self, r: &RunRecord) {
            self.0.push(format!("started {}", r.name));
        }
        fn finished(&mut self, r: &RunRecord, _: usize, _: usize) {
            self.0.push(format!("{} {}", r.status(), r.name));
        }
    }

    fn options(dir: &Path, resume: bool, force: bool) -> SweepOptions {
        SweepOptions { dir: dir.to_path_buf(), resume, force, poll: Duration::from_millis(20) }
    }

    fn sweep(text: &str) -> Sweep {
        Sweep::parse(text, Path::new("."), &[]).unwrap()
    }

    fn ok(_: &str) -> std::result::Result<(), String> {
        Ok(())
    }

    fn starts(tmp: &Path) -> Vec<String> {
        std::fs::read_to_string(tmp.join("starts")).unwrap_or_default().lines().map(|l| l.rsplit('/').next().unwrap().to_string()).collect()
    }

    #[test]
    fn runs_every_run_once_and_a_second_driver_reruns_nothing() {
        let tmp = temp_dir("once");
        let dir = tmp.join("s");
        let s = sweep(FILE);
        let mut ex = LocalExecutor::new(fake_program(&tmp), Slot::plan(2, &[], 2).unwrap(), None);
        let mut log = Log::default();
        let records = run(&s, &mut ex, &options(&dir, false, false), &ok, &mut log).unwrap();
        assert_eq!(records.iter().map(|r| (r.name.as_str(), r.status())).collect::<Vec<_>>(), [("seed0-a", "ok"), ("seed0-b", "ok"), ("seed1-a", "ok"), ("seed1-b", "ok")]);
        // Each result is reported under its run's number, whatever the trial wrote.
        assert!(records.iter().all(|r| r.result.as_ref().unwrap().trial == r.index));
        assert_eq!(records[1].result.as_ref().unwrap().validation_accuracy, Some(0.3));
        let mut started = starts(&tmp);
        started.sort();
        assert_eq!(started, ["seed0-a", "seed0-b", "seed1-a", "seed1-b"]);
        let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
        assert!(csv.starts_with("run,seed,opt,status,validation_accuracy,"), "{csv}");
        assert!(csv.contains("\nseed1-b,1,b,ok,0.300000,0.500000,10,3,0.1,\n"), "{csv}");
        assert_eq!(std::fs::read_to_string(dir.join("runs/seed0-a/config.toml")).unwrap().parse::<Table>().unwrap(), s.runs[0].config);

        // The same sweep again: refused without --resume, nothing to do with it.
        let e = run(&s, &mut ex, &options(&dir, false, false), &ok, &mut Log::default()).unwrap_err().to_string();
        assert!(e.contains("--resume"), "{e}");
        run(&s, &mut ex, &options(&dir, true, false), &ok, &mut Log::default()).unwrap();
        assert_eq!(starts(&tmp).len(), 4);

        // A changed sweep: refused without --force; with it, only the changed and new runs run.
        let grown = sweep(&FILE.replace("values = [0, 1]", "values = [0, 1, 2]").replace("\"train.lr\" = 3", "\"train.lr\" = 4"));
        let e = run(&grown, &mut ex, &options(&dir, true, false), &ok, &mut Log::default()).unwrap_err().to_string();
        assert!(e.contains("different sweep") && e.contains("--force"), "{e}");
        let records = run(&grown, &mut ex, &options(&dir, true, true), &ok, &mut Log::default()).unwrap();
        assert_eq!(records.len(), 6);
        let mut again = starts(&tmp)[4..].to_vec();
        again.sort();
        assert_eq!(again, ["seed0-b", "seed1-b", "seed2-a", "seed2-b"]);
        assert_eq!(records[1].result.as_ref().unwrap().validation_accuracy, Some(0.4));
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn failing_and_invalid_runs_are_recorded_and_the_sweep_goes_on() {
        let tmp = temp_dir("fail");
        let dir = tmp.join("s");
        let s = sweep(&FILE.replace("\"train.lr\" = 3", "\"train.lr\" = 9"));
        let mut ex = LocalExecutor::new(fake_program(&tmp), Slot::plan(2, &[], 2).unwrap(), None);
        // seed 1 is refused by the run configs' own check: recorded, never started.
        let validate = |text: &str| if text.contains("seed = 1") { Err("seed 1 is bad".to_string()) } else { Ok(()) };
        let records = run(&s, &mut ex, &options(&dir, false, false), &validate, &mut Log::default()).unwrap();
        assert_eq!(records.iter().map(|r| r.status()).collect::<Vec<_>>(), ["ok", "failed", "failed", "failed"]);
        assert!(records[1].result.as_ref().unwrap().error.as_deref().unwrap().contains("error: boom"), "{records:?}");
        assert_eq!(records[2].result.as_ref().unwrap().error.as_deref(), Some("invalid config: seed 1 is bad"));
        let mut started = starts(&tmp);
        started.sort();
        assert_eq!(started, ["seed0-a", "seed0-b"]);
        let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
        assert!(csv.contains("seed1-a,1,a,failed,,,,,,invalid config: seed 1 is bad"), "{csv}");
        // A sweep whose every run is invalid is bad input, refused before anything is written.
        let e = run(&s, &mut ex, &options(&tmp.join("none"), false, false), &|_: &str| Err("no".to_string()), &mut Log::default()).unwrap_err().to_string();
        assert!(e.contains("the sweep yields no valid run config: no (run seed0-a)"), "{e}");
        assert!(!tmp.join("none/sweep.json").exists() && !tmp.join("none/runs").exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn a_driver_restarted_after_a_kill_starts_the_unfinished_runs_again_first() {
        let tmp = temp_dir("restart");
        let dir = tmp.join("s");
        // The `b` runs sleep: the first driver stops (as if killed) when seed0-a finishes, with
        // seed0-b still running.
        let s = sweep(&FILE.replace("\"train.lr\" = 3", "\"train.lr\" = 5"));
        struct Killed;
        impl SweepObserver for Killed {
            fn finished(&mut self, _: &RunRecord, _: usize, _: usize) {
                // Leave the driver mid-loop, as a SIGKILL would, with only its files behind.
                std::panic::resume_unwind(Box::new("killed"));
            }
        }
        let mut ex = LocalExecutor::new(fake_program(&tmp), Slot::plan(2, &[], 2).unwrap(), None);
        let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&s, &mut ex, &options(&dir, false, false), &ok, &mut Killed)));
        assert!(killed.is_err());
        ex.cancel_all(); // what PR_SET_PDEATHSIG does to a killed driver's children
        assert!(dir.join("runs/seed0-a/result.json").exists() && !dir.join("runs/seed0-b/result.json").exists());
        let state: State = serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
        assert_eq!((state.executor.as_str(), state.running.as_slice()), ("local", ["seed0-a".to_string(), "seed0-b".to_string()].as_slice()));
        // The first driver's seed0-b may be killed before its program got to note its start (a
        // loaded machine), so only seed0-a's start is certain.
        let before = starts(&tmp);
        assert!(before.contains(&"seed0-a".to_string()) && before.iter().all(|n| n == "seed0-a" || n == "seed0-b"), "{before:?}");
        // The restarted driver: seed0-a is not run again, seed0-b starts again before the rest.
        // (The time limit cuts the sleeping `b` runs; it leaves a loaded machine time for `a`.)
        let mut ex = LocalExecutor::new(fake_program(&tmp), Slot::plan(1, &[], 1).unwrap(), Some(Duration::from_millis(1500)));
        let records = run(&s, &mut ex, &options(&dir, true, false), &ok, &mut Log::default()).unwrap();
        assert_eq!(records.iter().map(|r| r.status()).collect::<Vec<_>>(), ["ok", "timeout", "ok", "timeout"]);
        assert_eq!(starts(&tmp)[before.len()..], ["seed0-b", "seed1-a", "seed1-b"]);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
