//! `plastic trial` and `plastic search`: glue between `plastic-search` (which knows nothing of
//! training) and `plastic-train`. `plastic sweep` (`crate::sweep`) shares the executors' set-up
//! ([`build_executor`]) and the run-config check ([`validate_run_config`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plastic_search::driver::{self, DriverOptions, SearchObserver, TrialRecord};
use plastic_search::local::{LocalExecutor, Slot};
use plastic_search::slurm::{SlurmConfig, SlurmExecutor};
use plastic_search::{Search, SearchError, one_line, TrialExecutor, TrialProgram, TrialResult, TrialStatus};
use plastic_train::device::{DeviceChoice, select};
use plastic_train::{RunConfig, RunDir, TrainError, TrainOptions};

/// A run config's own checks, and that its model can be built on the data's shape.
pub fn validate_run_config(text: &str) -> Result<(), String> {
    let config = RunConfig::parse(text, &[]).map_err(|e| e.to_string())?;
    let (input, classes) = config.data.shape_and_classes().map_err(|e| e.to_string())?;
    plastic_train::Network::build(&config, input, classes, &burn::tensor::Device::flex()).map(|_| ()).map_err(|e| e.to_string())
}

/// Trains `dir/config.toml` into `dir/run` (resuming it if it has a checkpoint) and writes
/// `dir/result.json`. Every outcome, a panic included, ends in a result file.
pub fn run_trial(dir: &Path, device: DeviceChoice, threads: usize) -> Result<TrialResult, TrainError> {
    let started = Instant::now();
    let trial = dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train_trial(dir, device, threads)));
    let wall = Some(started.elapsed().as_secs_f64());
    let result = match outcome {
        Ok(Ok(s)) => TrialResult {
            trial,
            status: TrialStatus::Ok,
            validation_accuracy: s.validation_accuracy,
            test_accuracy: Some(s.test_accuracy),
            params: Some(s.params),
            units: Some(s.units),
            wall_s: wall,
            error: None,
        },
        Ok(Err(TrainError::Diverged { message, .. })) => TrialResult::stopped(trial, TrialStatus::Diverged, message, wall),
        Ok(Err(e)) => TrialResult::stopped(trial, TrialStatus::Failed, one_line(&e.to_string()), wall),
        Err(panic) => {
            let m = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "panicked".into());
            TrialResult::stopped(trial, TrialStatus::Failed, format!("panicked: {}", one_line(&m)), wall)
        }
    };
    result.write(&dir.join("result.json")).map_err(|e| TrainError::Run(e.to_string()))?;
    Ok(result)
}

fn train_trial(dir: &Path, device: DeviceChoice, threads: usize) -> Result<plastic_train::trainer::Summary, TrainError> {
    let mut config = RunConfig::load(&dir.join("config.toml"), &[])?;
    config.name = "run".into();
    if threads > 0 {
        config.train.threads = threads;
    }
    plastic_train::set_threads(config.train.threads);
    let splits = plastic_data::open(&config.data)?;
    let device = select(device)?;
    let resume = RunDir::new(dir.join("run")).latest_checkpoint().is_some();
    let options = TrainOptions { out: dir.to_path_buf(), device, resume, force: !resume };
    plastic_train::on_cpu_pool(&options.device.device, || plastic_train::train(&config, &splits, &options, &mut plastic_train::progress::ProgressReporter::new()))
}

/// `plastic search` arguments.
pub struct SearchArgs {
    pub config: PathBuf,
    pub set: Vec<String>,
    pub executor: ExecutorArgs,
    pub out: PathBuf,
    pub resume: bool,
}

/// Where the trials of `plastic search` and the runs of `plastic sweep` run.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecutorArgs {
    /// local (child processes) or slurm (job arrays through sbatch).
    #[arg(long, default_value = "local")]
    pub executor: String,
    /// Trials or runs at a time (local: default 1, the CPU's threads split among them; slurm:
    /// the array size per submission, default 16).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Local: cpu (threads split among workers), wgpu (one GPU per worker), auto, or a list such
    /// as wgpu:0,wgpu:2.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The devices a local search spreads its workers over.
fn devices(spec: &str) -> Result<Vec<String>, String> {
    match spec {
        "cpu" => Ok(vec!["cpu".into()]),
        "auto" => {
            let gpus = plastic_train::device::wgpu_gpu_devices();
            Ok(if gpus.is_empty() { vec!["cpu".into()] } else { gpus })
        }
        "wgpu" => {
            let gpus = plastic_train::device::wgpu_gpu_devices();
            if gpus.is_empty() { Err("--device wgpu: no GPU adapter found (use --device cpu, or wgpu:0 for the default adapter)".into()) } else { Ok(gpus) }
        }
        list => list
            .split(',')
            .map(|d| {
                let d = d.trim();
                match d.parse::<DeviceChoice>() {
                    Ok(DeviceChoice::WgpuIndex(_)) | Ok(DeviceChoice::Cpu) => Ok(d.to_string()),
                    Ok(_) => Err(format!("--device {d}: a search runs on cpu, wgpu, auto or a list of wgpu:N")),
                    Err(e) => Err(e),
                }
            })
            .collect(),
    }
}

struct Printer {
    started: Instant,
    header: String,
}

impl SearchObserver for Printer {
    fn ready(&mut self) {
        eprintln!("{}", self.header);
    }
    fn message(&mut self, line: &str) {
        eprintln!("{line}");
    }
    fn started(&mut self, r: &TrialRecord) {
        let params: Vec<String> = r.assignment.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("trial {:>4} started: {}", r.trial, params.join(" "));
    }
    fn finished(&mut self, r: &TrialRecord, done: usize, total: usize) {
        let res = r.result.as_ref().expect("finished");
        let what = match (res.status, res.validation_accuracy) {
            (TrialStatus::Ok, Some(a)) => format!("validation {:.2} %", a * 100.0),
            _ => format!("{}: {}", res.status.as_str(), res.error.as_deref().unwrap_or("")),
        };
        eprintln!("trial {:>4} {what} ({done}/{total} done, {:.0} s)", r.trial, self.started.elapsed().as_secs_f64());
    }
}

/// The executor of `--executor` (with `--device`, `--workers`) for the search or sweep in
/// `dir`, and how often its driver polls it. `time_limit_s` limits each local trial; Slurm
/// trials get `slurm.time`.
pub fn build_executor(args: &ExecutorArgs, time_limit_s: Option<f64>, slurm: &SlurmConfig, dir: &Path) -> Result<(Box<dyn TrialExecutor>, Duration), SearchError> {
    let (kind, device, workers) = (args.executor.as_str(), args.device.as_str(), args.workers);
    let program = TrialProgram::new(std::env::current_exe().map_err(|e| SearchError::Executor(format!("cannot find the plastic binary: {e}")))?);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match kind {
        "local" => {
            let devices = devices(device).map_err(SearchError::Invalid)?;
            let slots = Slot::plan(workers.unwrap_or(1), &devices, cores).map_err(SearchError::Invalid)?;
            Ok((Box::new(LocalExecutor::new(program, slots, time_limit_s.map(Duration::from_secs_f64))), Duration::from_millis(200)))
        }
        "slurm" => {
            if device != "cpu" && device != "auto" {
                return Err(SearchError::Invalid("--executor slurm: trials get their GPUs from Slurm (slurm.gpus_per_trial); leave --device out".into()));
            }
            let dir = std::path::absolute(dir).map_err(|e| SearchError::io(dir, e))?;
            Ok((Box::new(SlurmExecutor::new(slurm.clone(), program, dir, workers.unwrap_or(16))), Duration::from_secs_f64(slurm.poll_s)))
        }
        other => Err(SearchError::Invalid(format!("--executor {other:?}: expected local or slurm"))),
    }
}

pub fn run_search(args: SearchArgs) -> Result<(), SearchError> {
    driver::install_interrupt_handler();
    let search = Search::load(&args.config, &args.set)?;
    let dir = args.out.join(&search.file.name);
    let (mut executor, poll) = build_executor(&args.executor, search.file.trial_timeout_s, &search.file.slurm, &dir)?;
    let options = DriverOptions { dir: std::path::absolute(&dir).map_err(|e| SearchError::io(&dir, e))?, resume: args.resume, poll };
    let header = format!(
        "search {:?}: {} trials, {} strategy, {} parameters, {} executor ({} at a time) → {}",
        search.file.name,
        search.file.trials,
        search.strategy.name(),
        search.space.params.len(),
        executor.name(),
        executor.capacity(),
        dir.display()
    );
    let trials = driver::run(&search, executor.as_mut(), &options, &validate_run_config, &mut Printer { started: Instant::now(), header })?;
    for line in plastic_search::report::leaderboard(&search, &trials, 10) {
        println!("{line}");
    }
    let counts: Vec<String> = driver::status_counts(&trials).into_iter().map(|(s, n)| format!("{n} {s}")).collect();
    eprintln!("{} trials: {}; results in {}", trials.len(), counts.join(", "), dir.join("results.csv").display());
    Ok(())
}
