//! `plastic identify`: the command line of `plastic-identify`.

use std::path::PathBuf;

use plastic_identify::{ClassifierKind, FeatureSet, HoldOut, IdentifyOptions, LabelKind, identify_with};
use plastic_train::TrainError;

/// Identify the learning rule (or optimiser) that trained each layer from its observables.
#[derive(clap::Args)]
pub struct IdentifyArgs {
    /// Folder with dataset.npz and meta.csv (a sweep's folder, sweeps/<name>).
    #[arg(long)]
    dataset: PathBuf,
    /// What a class is: rule, optimizer, or both (the pair).
    #[arg(long, default_value = "rule")]
    label: String,
    /// Train on the samples without KEY=VALUE and test on those with it, e.g. arch=resnet18
    /// (KEY: a meta.csv column; arch = architecture, batch = batch_size; VALUE may list several
    /// values separated by commas).
    #[arg(long, value_name = "KEY=VALUE")]
    hold_out: Option<String>,
    /// Classifiers, comma-separated: forest, svm, conv1d.
    #[arg(long, default_value = "forest,svm,conv1d", value_delimiter = ',')]
    classifiers: Vec<String>,
    /// Feature sets, comma-separated: weights, activations, activity_changes, all.
    #[arg(long, default_value = "weights,activations,activity_changes,all", value_delimiter = ',')]
    features: Vec<String>,
    /// Outer train/test splits (balanced per class).
    #[arg(long, default_value_t = 10)]
    splits: usize,
    /// Folds of the inner grid search (stratified).
    #[arg(long, default_value_t = 5)]
    inner_folds: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep K recording points, evenly spread, first and last included.
    #[arg(long, value_name = "K")]
    points: Option<usize>,
    /// Keep every N-th recording point (applied before --points).
    #[arg(long, value_name = "N")]
    every: Option<usize>,
    /// Use only the runs whose test accuracy (meta.csv's test_accuracy) reaches this fraction,
    /// e.g. 0.5: a run that never learned is told apart by that alone.
    #[arg(long, value_name = "F")]
    min_test_accuracy: Option<f64>,
    /// Z-score each trajectory feature with the training split's mean and deviation.
    #[arg(long)]
    zscore: bool,
    /// The original's full grids (forest 15, SVM 84, conv1d 720 settings) instead of the
    /// default small ones.
    #[arg(long)]
    full_grid: bool,
    /// Training epochs of the conv net.
    #[arg(long, default_value_t = plastic_identify::conv1d::DEFAULT_EPOCHS)]
    epochs: usize,
    /// Also evaluate the sweep classifier on every realism view (unit fraction, noise) of the
    /// data set: noise_sweep.csv and noise_sweep.png.
    #[arg(long)]
    sweep_noise: bool,
    /// The classifier of --sweep-noise.
    #[arg(long, default_value = "forest")]
    sweep_classifier: String,
    /// Outer splits evaluated at once (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where the results go (default: the data set's folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `plastic identify`: progress lines on stderr, the files written on stdout.
pub fn run(args: IdentifyArgs) -> Result<(), TrainError> {
    let input = |e: plastic_identify::IdentifyError| TrainError::Config(e.to_string());
    let options = IdentifyOptions {
        label: LabelKind::parse(&args.label).map_err(input)?,
        hold_out: args.hold_out.as_deref().map(HoldOut::parse).transpose().map_err(input)?,
        classifiers: args.classifiers.iter().map(|c| ClassifierKind::parse(c.trim())).collect::<Result<_, _>>().map_err(input)?,
        feature_sets: args.features.iter().map(|f| FeatureSet::parse(f.trim())).collect::<Result<_, _>>().map_err(input)?,
        min_test_accuracy: args.min_test_accuracy,
        splits: args.splits,
        inner_folds: args.inner_folds,
        seed: args.seed,
        points: args.points,
        every: args.every,
        zscore: args.zscore,
        full_grid: args.full_grid,
        epochs: args.epochs,
        sweep_noise: args.sweep_noise,
        sweep_classifier: ClassifierKind::parse(&args.sweep_classifier).map_err(input)?,
        threads: args.threads,
        out: args.out.clone(),
        dataset: args.dataset.clone(),
        ..Default::default()
    };
    let report = identify_with(&options, &mut |line| eprintln!("{line}")).map_err(input)?;
    let out = args.out.unwrap_or(args.dataset);
    if !report.excluded_runs.is_empty() {
        // A sweep can leave out dozens: name a few, the full list is in identify.json.
        const SHOWN: usize = 3;
        let runs = &report.excluded_runs;
        let more = if runs.len() > SHOWN { format!(", … ({} more)", runs.len() - SHOWN) } else { String::new() };
        eprintln!(
            "left out {} runs below the test accuracy {} (all in identify.json's excluded_runs): {}{more}",
            runs.len(),
            args.min_test_accuracy.unwrap_or_default(),
            runs[..runs.len().min(SHOWN)].join(", ")
        );
    }
    eprintln!("{} samples, {} classes, chance {:.1} %", report.samples, report.classes.len(), 100.0 * report.chance);
    println!("{}", out.join("identify.json").display());
    Ok(())
}
