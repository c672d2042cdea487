//! `plastic`: the command-line front end. It parses arguments, loads configs and calls the
//! library crates; all logic lives in `plastic-train` and the crates below it.

mod identify;
mod neural;
mod search;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plastic_train::device::{DeviceChoice, select};
use plastic_train::progress::ProgressReporter;
use plastic_rules::{RuleConfig, RuleKind};
use plastic_train::{RunConfig, RunDir, TrainError, TrainOptions};

#[derive(Parser)]
#[command(name = "plastic", version, about = "Train goal-driven models of the brain with backprop or biologically plausible learning rules")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `plastic export --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Safetensors,
    Pytorch,
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Run config (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.lr=0.1` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model; writes runs/<name>/.
    Train {
        #[command(flatten)]
        config: ConfigArgs,
        /// Continue this run directory from its latest checkpoint (instead of --config).
        #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
        run: Option<PathBuf>,
        /// Continue the run from its latest checkpoint.
        #[arg(long)]
        resume: bool,
        /// Replace an existing run directory of the same name.
        #[arg(long, conflicts_with = "resume")]
        force: bool,
        /// auto, cpu, wgpu, cuda (with the `cuda` feature) or ndarray (with the `ndarray` feature).
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Parent folder of run directories.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
    },
    /// Re-evaluate a run's checkpoint on a split.
    Eval {
        /// The run directory (runs/<name>).
        #[arg(long)]
        run: PathBuf,
        /// A checkpoint file (default: the run's latest).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// test, validation or train.
        #[arg(long, default_value = "test")]
        split: String,
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// ConvRNNs: write the readout's per-step outputs (CSV) for the first --examples images.
        #[arg(long)]
        per_step: bool,
        #[arg(long, default_value_t = 256)]
        examples: usize,
        /// Where --per-step writes (default: runs/<name>/per_step.csv).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Export a run for PyTorch: its weights as safetensors with PyTorch names and layouts, or
    /// (`--format pytorch`) a folder with the weights, the resolved graph, the config and the
    /// Python module that rebuilds the model in PyTorch.
    Export {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// `safetensors` (the weights only) or `pytorch` (a folder `plastic_torch.py` loads).
        #[arg(long, value_enum, default_value = "safetensors")]
        format: ExportFormat,
        /// Output file, or folder with `--format pytorch` (default: runs/<name>/model.safetensors,
        /// runs/<name>/pytorch/).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Measure training-step throughput (images/s) and peak memory; one JSON line per case.
    Bench {
        #[command(flatten)]
        config: ConfigArgs,
        /// Models to measure (zoo kinds); default: the config's model.
        #[arg(long = "model", value_delimiter = ',')]
        models: Vec<String>,
        /// Rules to measure against backprop: a comma-separated list or `all`.
        #[arg(long, default_value = "backprop")]
        rules: String,
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Input side in pixels (default: the data set's).
        #[arg(long)]
        resolution: Option<usize>,
        /// Input channels (default: the data set's).
        #[arg(long)]
        channels: Option<usize>,
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Timed steps per rule and round.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Interleaved rounds over the rules; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Feed every step a fresh batch of the config's data through the training loader
        /// (worker threads, augmentation, normalisation), as training does, instead of one
        /// random batch held in memory; the input size and classes are the data's.
        #[arg(long)]
        data: bool,
    },
    /// Draw loss, accuracy and alignment angles over training, and the observables' trajectories, as PNG files (runs/<name>/plots/).
    Plot {
        #[arg(long)]
        run: PathBuf,
    },
    /// Search architectures and hyper-parameters: trials proposed by random search, evolution or
    /// TPE, run locally or on Slurm; writes searches/<name>/results.csv and figures.
    Search {
        /// Search file (TOML), e.g. configs/searches/demo.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Override a search-file key (`trials=40`, `slurm.time=00:30:00`) or, with `base.`, a
        /// run-config key of every trial (`base.train.epochs=2`). Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        executor: search::ExecutorArgs,
        /// Parent folder of search directories.
        #[arg(long, default_value = "searches")]
        out: PathBuf,
        /// Continue the search in <out>/<name> (after an interrupt, a kill or with a larger budget).
        #[arg(long)]
        resume: bool,
    },
    /// Sweep a grid of run configs (rules × optimisers × architectures × data sets × seeds …):
    /// runs the missing runs locally or on Slurm, then gathers their observables into
    /// sweeps/<name>/dataset.npz and meta.csv for `plastic identify`; prints the data set's path.
    Sweep {
        /// Sweep file (TOML), e.g. configs/sweeps/tiny.toml.
        #[arg(long, short)]
        config: PathBuf,
        /// Override a sweep-file key (`run_timeout_s=600`, `slurm.time=00:30:00`) or, with
        /// `base.`, a run-config key of every run (`base.train.steps=100`). Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        executor: search::ExecutorArgs,
        /// Parent folder of sweep directories.
        #[arg(long, default_value = "sweeps")]
        out: PathBuf,
        /// Continue the sweep in <out>/<name>: finished runs are kept, half-finished ones
        /// continue from their checkpoints.
        #[arg(long)]
        resume: bool,
        /// Run a changed sweep file in <out>/<name>: runs whose config is unchanged keep their
        /// results, the others run again.
        #[arg(long)]
        force: bool,
        /// Check the sweep file and every run's config and list the runs; run nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Identify the learning rule (or optimiser) from the observables of a data set (a sweep's
    /// dataset.npz): random forest, linear SVM and 1-D conv net under nested cross-validation;
    /// writes identify.json, splits.json and confusion matrices into the data set's folder.
    Identify(identify::IdentifyArgs),
    /// Run one trial of a search: trains DIR/config.toml into DIR/run, writes DIR/result.json.
    Trial {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// CPU threads (0: the config's train.threads).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Every layer's output at every time step for a stimulus set, streamed into one NPZ
    /// (stimulus ids from the file names; the run's own preprocessing).
    Features(neural::FeaturesArgs),
    /// Neural predictivity: cross-validated ridge or PLS from each layer × time step to
    /// recorded responses, ceiled by their split-half reliability; names the best layer and
    /// step per region. Writes neural_fit.csv / .json, commitment.json and heat maps.
    NeuralFit(neural::NeuralFitArgs),
    /// Object solution times: per image, the first step from which the readout solves it for
    /// good. Writes ost.csv, ost.json and a histogram.
    Ost(neural::OstArgs),
    /// Print a model's layers, parameter count and unit count.
    Inspect {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

fn load_config(args: &ConfigArgs) -> Result<RunConfig, TrainError> {
    match &args.config {
        Some(path) => RunConfig::load(path, &args.set),
        None => RunConfig::parse("", &args.set),
    }
}

/// What a command can fail with; the exit code tells them apart.
enum Failure {
    Train(TrainError),
    Search(plastic_search::SearchError),
    Neural(plastic_neural::NeuralError),
}

impl From<plastic_neural::NeuralError> for Failure {
    fn from(e: plastic_neural::NeuralError) -> Self {
        Failure::Neural(e)
    }
}

impl From<TrainError> for Failure {
    fn from(e: TrainError) -> Self {
        Failure::Train(e)
    }
}

impl From<plastic_data::DataError> for Failure {
    fn from(e: plastic_data::DataError) -> Self {
        Failure::Train(e.into())
    }
}

impl From<plastic_search::SearchError> for Failure {
    fn from(e: plastic_search::SearchError) -> Self {
        Failure::Search(e)
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Train { config, run, resume, force, device, out } => {
            let (config, out, resume) = match run {
                Some(dir) => {
                    let run_dir = RunDir::new(&dir);
                    let name = dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| TrainError::Config(format!("{}: not a run directory", dir.display())))?;
                    let mut c = RunConfig::load(&run_dir.config(), &config.set)?;
                    c.name = name.to_string();
                    (c, dir.parent().map(PathBuf::from).unwrap_or_default(), true)
                }
                None => (load_config(&config)?, out, resume),
            };
            plastic_train::set_threads(config.train.threads);
            let splits = plastic_data::open(&config.data)?;
            let device = select(device)?;
            let options = TrainOptions { out, device, resume, force };
            plastic_train::on_cpu_pool(&options.device.device, || plastic_train::train(&config, &splits, &options, &mut ProgressReporter::new()))?;
            Ok(())
        }
        Command::Eval { run, checkpoint, split, device, per_step, examples, output } => {
            plastic_train::set_threads(0);
            let device = select(device)?;
            let loaded = plastic_train::checkpoint::load_run(&RunDir::new(&run), checkpoint.as_deref(), &device.device)?;
            let set = match split.as_str() {
                "test" => &loaded.splits.test,
                "validation" => &loaded.splits.validation,
                "train" => &*loaded.splits.train,
                other => return Err(TrainError::Config(format!("--split {other:?}: expected test, validation or train")).into()),
            };
            if per_step {
                let csv = plastic_train::on_cpu_pool(&device.device, || plastic_train::eval::per_step_csv(&loaded.model, set, &loaded.splits.normalization, loaded.config.train.eval_batch_size, examples, &device.device))?;
                let output = output.unwrap_or_else(|| run.join("per_step.csv"));
                plastic_train::store::write_atomic(&output, csv.as_bytes())?;
                eprintln!("wrote {}", output.display());
            }
            let r = plastic_train::on_cpu_pool(&device.device, || plastic_train::eval::evaluate(&loaded.model, set, &loaded.splits.normalization, loaded.config.train.eval_batch_size, &device.device));
            let line = serde_json::json!({
                "run": run.display().to_string(), "checkpoint": loaded.checkpoint.display().to_string(), "step": loaded.step,
                "split": split, "examples": r.examples, "loss": r.loss, "accuracy": r.accuracy, "top5": r.top5,
            });
            println!("{line}");
            Ok(())
        }
        Command::Export { run, checkpoint, format, output } => {
            plastic_train::set_threads(0);
            let dir = RunDir::new(&run);
            let loaded = plastic_train::checkpoint::load_model(&dir, checkpoint.as_deref(), &burn::tensor::Device::flex())?;
            match format {
                ExportFormat::Safetensors => {
                    let output = output.unwrap_or_else(|| dir.root.join("model.safetensors"));
                    plastic_train::export::export_safetensors(&loaded.model, Some(&loaded.preprocessing), &output)?;
                    eprintln!("wrote {} (step {})", output.display(), loaded.step);
                }
                ExportFormat::Pytorch => {
                    let output = output.unwrap_or_else(|| dir.root.join("pytorch"));
                    plastic_train::export::export_pytorch(&loaded, &output)?;
                    eprintln!("wrote {} (step {}); check it with: python {} check {}", output.display(), loaded.step, output.join("plastic_torch.py").display(), output.display());
                }
            }
            Ok(())
        }
        Command::Bench { config, models, rules, device, batch, resolution, channels, classes, steps, rounds, warmup, data } => {
            let base = load_config(&config)?;
            plastic_train::set_threads(base.train.threads);
            let rules: Vec<RuleKind> = if rules == "all" {
                RuleKind::ALL.to_vec()
            } else {
                rules
                    .split(',')
                    .map(|r| RuleConfig::parse_kind(r.trim()).map_err(TrainError::Config))
                    .collect::<Result<_, _>>()?
            };
            let device = select(device)?;
            if data && (resolution.is_some() || channels.is_some()) {
                return Err(TrainError::Config("bench --data takes the input size from the data set: set data.resolution instead of --resolution / --channels".into()).into());
            }
            let splits = if data { Some(plastic_data::open(&base.data)?) } else { None };
            let data_shape = if splits.is_some() || (resolution.is_some() && channels.is_some()) { None } else { Some(base.data.shape_and_classes()?.0) };
            let input = match &splits {
                Some(s) => s.shape(),
                None => [
                    channels.unwrap_or_else(|| data_shape.unwrap()[0]),
                    resolution.unwrap_or_else(|| data_shape.unwrap()[1]),
                    resolution.unwrap_or_else(|| data_shape.unwrap()[2]),
                ],
            };
            let classes = splits.as_ref().map_or(classes, |s| s.num_classes());
            let models = if models.is_empty() { vec![None] } else { models.into_iter().map(Some).collect() };
            for model in models {
                let mut overrides = config.set.clone();
                if let Some(m) = &model {
                    overrides.push(format!("model.kind={m}"));
                }
                let c = match &config.config {
                    Some(path) => RunConfig::load(path, &overrides)?,
                    None => RunConfig::parse("", &overrides)?,
                };
                let plan = plastic_train::bench::BenchPlan { batch, input, classes, warmup, steps, rounds };
                plastic_train::on_cpu_pool(&device.device, || plastic_train::bench::bench_rules(&c, &rules, &plan, splits.as_ref(), &device.device, &device.name, &mut |r| {
                    println!("{}", serde_json::to_string(r).expect("plain data"));
                }))?;
            }
            Ok(())
        }
        Command::Plot { run } => {
            for file in plastic_plot::plot_run(&run).map_err(|e| TrainError::Run(e.to_string()))? {
                println!("{}", file.display());
            }
            // The observables' trajectories, where the run recorded them.
            if run.join(plastic_observe::files::NPZ_FILE).exists() {
                for file in plastic_observe::plot::plot_observables(&run).map_err(|e| TrainError::Run(e.to_string()))? {
                    println!("{}", file.display());
                }
            }
            Ok(())
        }
        Command::Search { config, set, executor, out, resume } => {
            search::run_search(search::SearchArgs { config, set, executor, out, resume })?;
            Ok(())
        }
        Command::Sweep { config, set, executor, out, resume, force, dry_run } => {
            if dry_run {
                let runs = sweep::check_sweep(&config, &set)?;
                runs.iter().for_each(|r| println!("{r}"));
                eprintln!("{}: {} runs, every config valid", config.display(), runs.len());
                return Ok(());
            }
            let dataset = sweep::run_sweep(sweep::SweepArgs { config, set, executor, out, resume, force })?;
            println!("{}", dataset.display());
            Ok(())
        }
        Command::Trial { dir, device, threads } => {
            if !dir.join("config.toml").is_file() {
                return Err(TrainError::Config(format!("{}: no config.toml (a trial directory of a search)", dir.display())).into());
            }
            let r = search::run_trial(&dir, device, threads)?;
            println!("{}", serde_json::to_string(&r).expect("plain data"));
            match r.status {
                plastic_search::TrialStatus::Ok => Ok(()),
                plastic_search::TrialStatus::Diverged => Err(TrainError::Diverged { step: 0, message: r.error.unwrap_or_default() }.into()),
                _ => Err(TrainError::Run(r.error.unwrap_or_default()).into()),
            }
        }
        Command::Identify(args) => {
            identify::run(args)?;
            Ok(())
        }
        Command::Features(args) => neural::run_features(args),
        Command::NeuralFit(args) => neural::run_neural_fit(args),
        Command::Ost(args) => neural::run_ost(args),
        Command::Inspect { config } => {
            let config = load_config(&config)?;
            plastic_train::set_threads(0);
            // The model's size follows from the config; the data itself is not read.
            let (input, classes) = config.data.shape_and_classes()?;
            let device = burn::tensor::Device::flex();
            let model = plastic_train::Network::build(&config, input, classes, &device)?;
            let (params, feedback) = plastic_train::network::parameter_counts(&model);
            println!("{:<28} {:<14} {:>16} {:>12}", "layer", "kind", "output", "params");
            for l in model.summary() {
                let out = l.output.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
                println!("{:<28} {:<14} {:>16} {:>12}", l.name, l.kind, out, l.params);
            }
            println!("input {input:?}, {classes} classes");
            println!("parameters: {params}");
            if feedback > 0 {
                println!("feedback parameters (B, magnitudes): {feedback}");
            }
            println!("units: {}", model.units());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    plastic_train::memory::keep_freed_memory();
    // Mesa's software Vulkan prints "XDG_RUNTIME_DIR is invalid" on every probe when the
    // variable is unset (containers, CI); give it a directory before any thread starts.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: single-threaded at this point; nothing else reads the environment yet.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version and a bare `plastic` (the help, exit 2) print as clap prints them;
        // bad arguments get the one-line form every other error gets (clap's usage block and
        // "--help" hint dropped), exit 2.
        Err(e) if !e.use_stderr() || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("Usage:") && !l.starts_with("For more information")).collect();
            eprintln!("{}", plastic_search::one_line(&kept.join("\n")));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // 3: the input was fine but training diverged (a search can tell it from bad input);
            // 130: interrupted, as shells report Ctrl-C.
            let (message, code) = match &failure {
                Failure::Train(e) => (e.to_string(), if matches!(e, TrainError::Diverged { .. }) { 3 } else { 2 }),
                Failure::Search(e) => (e.to_string(), if matches!(e, plastic_search::SearchError::Interrupted) { 130 } else { 2 }),
                Failure::Neural(e) => (e.to_string(), 2),
            };
            // One line, whatever the underlying library put in its message.
            eprintln!("error: {}", plastic_search::one_line(&message));
            ExitCode::from(code)
        }
    }
}
