//! `plastic`: the command-line front end. It parses arguments, loads configs and calls the
//! library crates; all logic lives in `plastic-train` and the crates below it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plastic_train::device::{DeviceChoice, select};
use plastic_train::progress::ProgressReporter;
use plastic_train::{RunConfig, RunDir, TrainError, TrainOptions};

#[derive(Parser)]
#[command(name = "plastic", version, about = "Train goal-driven models of the brain with backprop or biologically plausible learning rules")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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

fn run(cli: Cli) -> Result<(), TrainError> {
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
            plastic_train::train(&config, &splits, &options, &mut ProgressReporter::new())?;
            Ok(())
        }
        Command::Inspect { config } => {
            let config = load_config(&config)?;
            let splits = plastic_data::open(&config.data)?;
            let device = burn::tensor::Device::flex();
            let model = plastic_train::Network::build(&config, splits.shape(), splits.num_classes(), &device)?;
            let (params, feedback) = plastic_train::network::parameter_counts(&model);
            println!("{:<28} {:<14} {:>16} {:>12}", "layer", "kind", "output", "params");
            for l in model.summary() {
                let out = l.output.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
                println!("{:<28} {:<14} {:>16} {:>12}", l.name, l.kind, out, l.params);
            }
            println!("input {:?}, {} classes", splits.shape(), splits.num_classes());
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
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
