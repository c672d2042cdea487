//! The glue of `plastic features`, `plastic neural-fit` and `plastic ost`: arguments in,
//! `plastic-neural` called, a one-line summary out.

use std::path::PathBuf;

use plastic_neural::run::{Decoder, Subject, features, neural_fit, ost};
use plastic_neural::{Criterion, FeatureOptions, FitOptions, Method, NeuralError, Pool};
use plastic_train::device::{DeviceChoice, select};

/// What every command that shows a run new stimuli takes.
#[derive(clap::Args)]
pub struct SubjectArgs {
    /// The run directory (runs/<name>).
    #[arg(long)]
    run: PathBuf,
    /// A checkpoint file (default: the run's latest).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The stimuli: a folder of images (class sub-folders give labels) or an .npz with `images`.
    #[arg(long)]
    stimuli: PathBuf,
    /// ConvRNNs: unroll this many steps (default: the run's T).
    #[arg(long)]
    unroll: Option<usize>,
    /// ConvRNNs: replace the image by the blank from this step (default: the run's image_off).
    #[arg(long)]
    image_off: Option<usize>,
    /// Stimuli per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

#[derive(clap::Args)]
pub struct FeaturesArgs {
    #[command(flatten)]
    subject: SubjectArgs,
    /// Layers to keep, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<String>,
    /// Time steps: `all`, a range `0..16` (end exclusive) or a list `3,7,15`.
    #[arg(long, default_value = "all")]
    times: String,
    /// none (every unit), avg (spatial mean per channel) or pca:K (K principal components).
    #[arg(long, default_value = "none")]
    pool: String,
    /// Output file (default: runs/<name>/features.npz).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct NeuralFitArgs {
    #[command(flatten)]
    subject: SubjectArgs,
    /// Responses: an .npz with `responses` ([stimuli × neuroids], [repetitions × stimuli ×
    /// neuroids] or [bins × repetitions × stimuli × neuroids]), `stimulus_id`, optional `region`
    /// and `time_bins`.
    #[arg(long)]
    responses: PathBuf,
    /// ridge (penalty per neuroid by leave-one-out) or pls (25 components).
    #[arg(long, default_value = "ridge")]
    method: String,
    /// Cross-validation folds over stimuli.
    #[arg(long, default_value_t = 10)]
    folds: usize,
    /// Principal components kept per training fold.
    #[arg(long, default_value_t = 1000)]
    pca: usize,
    /// Fit the PCA on these stimuli (an image folder or NPZ) instead of on each training fold.
    #[arg(long)]
    pca_stimuli: Option<PathBuf>,
    /// Layers to fit, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<String>,
    /// Time steps: `all`, a range `0..16` or a list.
    #[arg(long, default_value = "all")]
    times: String,
    /// Seed of the folds and of the split-half draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (default: runs/<name>/neural_fit).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct OstArgs {
    #[command(flatten)]
    subject: SubjectArgs,
    /// Labels as CSV `stimulus_id,label` (class name or index); default: the stimulus folder's
    /// class sub-folders.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// When an image counts as solved at a step: p>=P (the readout's probability of the true
    /// label) or correct (the true label is the most probable).
    #[arg(long, default_value = "p>=0.5")]
    criterion: String,
    /// readout (the network's own, at every step) or logistic (per-step decoders of --layer's
    /// channel means, cross-validated over images).
    #[arg(long, default_value = "readout")]
    decoder: String,
    /// The layer the logistic decoders read.
    #[arg(long)]
    layer: Option<String>,
    /// Cross-validation folds of the logistic decoders.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// The logistic decoders' L2 penalty.
    #[arg(long, default_value_t = 1.0)]
    alpha: f64,
    /// A per-image reference as CSV `stimulus_id,time` to correlate the solution times with.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Output folder (default: the run directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `all`, `a..b` or `a,b,c`.
fn parse_times(s: &str) -> Result<Option<Vec<usize>>, NeuralError> {
    let bad = || NeuralError::Invalid(format!("--times {s:?}: expected all, a range such as 0..16, or a list such as 3,7,15"));
    if s == "all" {
        return Ok(None);
    }
    if let Some((a, b)) = s.split_once("..") {
        let (a, b) = (a.trim().parse::<usize>().map_err(|_| bad())?, b.trim().parse::<usize>().map_err(|_| bad())?);
        return if a < b { Ok(Some((a..b).collect())) } else { Err(bad()) };
    }
    s.split(',').map(|t| t.trim().parse::<usize>().map_err(|_| bad())).collect::<Result<Vec<_>, _>>().map(Some)
}

/// The run to show stimuli to, and the feature options it was opened with.
fn subject(args: &SubjectArgs, layers: &[String], times: &str, pool: Pool) -> Result<(Subject, FeatureOptions), crate::Failure> {
    plastic_train::set_threads(0);
    let device = select(args.device)?;
    let options = FeatureOptions {
        layers: (!layers.is_empty()).then(|| layers.to_vec()),
        times: parse_times(times)?,
        pool,
        batch_size: args.batch,
        unroll: args.unroll,
        image_off: args.image_off,
    };
    let subject = Subject::open(&args.run, args.checkpoint.as_deref(), &device.device, &options)?;
    Ok((subject, options))
}

/// A progress counter on stderr, where stderr is a terminal (logs get the summary line only).
fn show_progress(label: &str, done: usize, total: usize) {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r{label}: {done}/{total}{}", if done == total { "\n" } else { "" });
    }
}

pub fn run_features(args: FeaturesArgs) -> Result<(), crate::Failure> {
    let pool: Pool = args.pool.parse().map_err(NeuralError::Invalid)?;
    let (s, options) = subject(&args.subject, &args.layers, &args.times, pool)?;
    let out = args.out.unwrap_or_else(|| args.subject.run.join("features.npz"));
    let written = features(&s, &args.subject.stimuli, &options, &out, &mut |done, total| show_progress("stimuli", done, total))?;
    eprintln!("wrote {} ({} stimuli × {} arrays, {})", out.display(), written.stimuli, written.arrays.len(), plastic_neural::features::size_text(written.bytes));
    Ok(())
}

pub fn run_neural_fit(args: NeuralFitArgs) -> Result<(), crate::Failure> {
    let method: Method = args.method.parse().map_err(NeuralError::Invalid)?;
    let (s, _) = subject(&args.subject, &args.layers, &args.times, Pool::None)?;
    let out = args.out.unwrap_or_else(|| args.subject.run.join("neural_fit"));
    let options = FitOptions { method, folds: args.folds, seed: args.seed, pca_components: args.pca.max(1), ..FitOptions::default() };
    let written = neural_fit(&s, &args.subject.stimuli, &args.responses, args.pca_stimuli.as_deref(), &options, args.subject.batch, &out, &mut show_progress)?;
    for b in &written.report.best {
        println!("{}", serde_json::json!({ "region": b.region, "layer": b.layer, "step": b.step, "score": b.score }));
    }
    eprintln!("wrote {}", files(&written.files));
    Ok(())
}

pub fn run_ost(args: OstArgs) -> Result<(), crate::Failure> {
    let criterion: Criterion = args.criterion.parse().map_err(NeuralError::Invalid)?;
    let decoder = match (args.decoder.as_str(), args.layer) {
        ("readout", None) => Decoder::Readout,
        ("readout", Some(_)) => return Err(NeuralError::Invalid("--layer goes with --decoder logistic".into()).into()),
        ("logistic", Some(layer)) => Decoder::Logistic { layer, folds: args.folds, alpha: args.alpha, seed: 0 },
        ("logistic", None) => return Err(NeuralError::Invalid("--decoder logistic needs --layer (the layer to decode)".into()).into()),
        (other, _) => return Err(NeuralError::Invalid(format!("--decoder {other:?}: expected readout or logistic")).into()),
    };
    let (s, _) = subject(&args.subject, &[], "all", Pool::None)?;
    let out = args.out.unwrap_or_else(|| args.subject.run.clone());
    let written = ost(&s, &args.subject.stimuli, args.labels.as_deref(), args.reference.as_deref(), criterion, &decoder, args.subject.batch, &out)?;
    println!("{}", serde_json::to_string(&written).expect("plain data"));
    eprintln!("wrote {}", files(&written.files));
    Ok(())
}

fn files(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

