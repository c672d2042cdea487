//! `plastic identify`: load a data set, build the outer splits, run every classifier on every
//! feature set (and its shuffled-label control), optionally on every realism view, and write
//! the results.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::conv1d::{Conv1dMethod, Conv1dParams, DEFAULT_EPOCHS};
use crate::cv::{CvOptions, Method, Pools, Split, SplitOutcome, mean_sd, nested_cv, outer_splits};
use crate::dataset::{Dataset, load};
use crate::features::{FeatureSet, Features, LabelKind, non_finite_statistics, select_points};
use crate::forest::{Forest, ForestParams};
use crate::report::{ClassifierResult, HoldOutReport, IdentifyReport, NoiseRow, NoiseSweep, SplitsFile, write_confusion, write_json, write_noise_sweep};
use crate::svm::{Svm, SvmParams};
use crate::{IdentifyError, Result};

/// A classifier family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClassifierKind {
    Forest,
    Svm,
    Conv1d,
}

impl ClassifierKind {
    pub const ALL: [ClassifierKind; 3] = [ClassifierKind::Forest, ClassifierKind::Svm, ClassifierKind::Conv1d];

    pub fn name(self) -> &'static str {
        match self {
            ClassifierKind::Forest => "forest",
            ClassifierKind::Svm => "svm",
            ClassifierKind::Conv1d => "conv1d",
        }
    }

    pub fn parse(s: &str) -> Result<ClassifierKind> {
        match s {
            "forest" | "random_forest" | "randomforest" => Ok(ClassifierKind::Forest),
            "svm" | "linear_svm" => Ok(ClassifierKind::Svm),
            "conv1d" | "conv" => Ok(ClassifierKind::Conv1d),
            other => Err(IdentifyError::Input(format!("classifier {other:?}: expected forest, svm or conv1d"))),
        }
    }
}

/// Train on the samples without a setting, test on the samples with it.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldOut {
    /// A `meta.csv` column (`architecture`, `dataset`, `batch_size`, …).
    pub key: String,
    /// The values held out (any of them).
    pub values: Vec<String>,
}

impl HoldOut {
    /// `KEY=VALUE[,VALUE…]`; `arch` stands for `architecture` and `batch` for `batch_size`.
    pub fn parse(s: &str) -> Result<HoldOut> {
        let Some((key, values)) = s.split_once('=') else {
            return Err(IdentifyError::Input(format!("--hold-out {s:?}: expected KEY=VALUE, e.g. arch=resnet18")));
        };
        let key = match key.trim() {
            "arch" => "architecture",
            "batch" => "batch_size",
            k => k,
        };
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
        if key.is_empty() || values.is_empty() {
            return Err(IdentifyError::Input(format!("--hold-out {s:?}: expected KEY=VALUE, e.g. arch=resnet18")));
        }
        Ok(HoldOut { key: key.to_string(), values })
    }
}

/// Everything `plastic identify` can be asked.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentifyOptions {
    /// The folder with `dataset.npz` and `meta.csv`.
    pub dataset: PathBuf,
    /// Where the results go (default: the data set's folder).
    pub out: Option<PathBuf>,
    pub label: LabelKind,
    pub hold_out: Option<HoldOut>,
    /// Use only the samples of runs whose test accuracy (`meta.csv`'s `test_accuracy`) reaches
    /// this: a run that never learned its task is told apart by that alone, which says nothing
    /// about its rule.
    pub min_test_accuracy: Option<f64>,
    pub classifiers: Vec<ClassifierKind>,
    pub feature_sets: Vec<FeatureSet>,
    /// Outer splits.
    pub splits: usize,
    /// Inner folds of the grid search.
    pub inner_folds: usize,
    /// Share of each class tested in an outer split (without a hold-out).
    pub test_fraction: f64,
    pub seed: u64,
    /// Keep this many recording points, evenly spread, both ends included.
    pub points: Option<usize>,
    /// Keep every n-th recording point (before `points`).
    pub every: Option<usize>,
    /// Z-score the trajectories with each training set's statistics.
    pub zscore: bool,
    /// The original's grids instead of the default small ones.
    pub full_grid: bool,
    /// Training epochs of the conv net.
    pub epochs: usize,
    /// Also evaluate `sweep_classifier` on every realism view of the data set.
    pub sweep_noise: bool,
    pub sweep_classifier: ClassifierKind,
    /// Outer splits run at once (0: one per core).
    pub threads: usize,
}

impl Default for IdentifyOptions {
    fn default() -> Self {
        IdentifyOptions {
            dataset: PathBuf::new(),
            out: None,
            label: LabelKind::Rule,
            hold_out: None,
            min_test_accuracy: None,
            classifiers: ClassifierKind::ALL.to_vec(),
            feature_sets: FeatureSet::ALL.to_vec(),
            splits: 10,
            inner_folds: 5,
            test_fraction: 0.25,
            seed: 0,
            points: None,
            every: None,
            zscore: false,
            full_grid: false,
            epochs: DEFAULT_EPOCHS,
            sweep_noise: false,
            sweep_classifier: ClassifierKind::Forest,
            threads: 0,
        }
    }
}

/// Runs identification as `options` say and writes its files; see [`identify_with`].
pub fn identify(options: &IdentifyOptions) -> Result<IdentifyReport> {
    identify_with(options, &mut |_| {})
}

/// Runs identification, telling `progress` a line as each classifier and feature set finishes.
///
/// Writes into the output folder: `identify.json`, `splits.json`,
/// `confusion_<classifier>_<feature set>.{csv,png}`, and with `sweep_noise`,
/// `noise_sweep.{csv,png}`.
pub fn identify_with(o: &IdentifyOptions, progress: &mut dyn FnMut(&str)) -> Result<IdentifyReport> {
    check_options(o)?;
    let d = load(&o.dataset)?;
    let out = o.out.clone().unwrap_or_else(|| o.dataset.clone());
    let (classes, y) = o.label.labels(&d);
    if classes.len() < 2 {
        return Err(IdentifyError::Input(format!("{}: every sample has {} {:?}; nothing to tell apart", o.dataset.display(), o.label.name(), classes.first().map_or("", String::as_str))));
    }
    let points = select_points(d.p, o.points, o.every)?;
    let (eligible, excluded_runs) = eligible(&d, o)?;
    let (pools, hold_out) = pools(&d, o, eligible)?;
    let splits = outer_splits(&y, classes.len(), &pools, o.splits, o.inner_folds, o.seed, &classes)?;
    let tested: std::collections::BTreeSet<usize> = splits[0].test.iter().map(|&i| y[i]).collect();
    let chance = 1.0 / tested.len() as f64;

    let all: Vec<usize> = (0..d.s).collect();
    let dropped = non_finite_statistics(&d, 0, &all, &points);
    let mut statistics = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    let mut sets: Vec<(FeatureSet, Vec<usize>)> = Vec::new();
    for &set in &o.feature_sets {
        let cols: Vec<usize> = set.columns(&d.obs_keys).into_iter().filter(|c| !dropped.contains(c)).collect();
        if cols.is_empty() {
            skipped.insert(set.name().to_string(), "no finite statistic of this kind in the data set".to_string());
        } else {
            statistics.insert(set.name().to_string(), cols.iter().map(|&c| d.obs_keys[c].clone()).collect::<Vec<_>>());
            sets.push((set, cols));
        }
    }
    if sets.is_empty() {
        return Err(IdentifyError::Input(format!("{}: none of the feature sets asked for has a finite statistic (statistics: {})", o.dataset.display(), d.obs_keys.join(", "))));
    }
    let cv = CvOptions { inner_folds: o.inner_folds, zscore: o.zscore, threads: threads(o.threads), seed: o.seed };
    let grids = Grids::new(o.full_grid, points.len(), o.epochs);

    let mut classifiers: BTreeMap<String, BTreeMap<String, ClassifierResult>> = BTreeMap::new();
    let mut chosen: BTreeMap<String, BTreeMap<String, Vec<serde_json::Value>>> = BTreeMap::new();
    let mut test_accuracy: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for &kind in &o.classifiers {
        for (set, cols) in &sets {
            let x = Features::build(&d, 0, cols, &points);
            let result = grids.evaluate(kind, &x, &y, classes.len(), &splits, &cv, true)?;
            progress(&format!(
                "{} · {}: test {:.1} % ± {:.1}, shuffled labels {:.1} % (chance {:.1} %)",
                kind.name(),
                set.name(),
                100.0 * result.test_accuracy_mean,
                100.0 * result.test_accuracy_sd,
                100.0 * result.shuffled_accuracy_mean,
                100.0 * chance
            ));
            write_confusion(&out, kind.name(), set.name(), &classes, &result, chance)?;
            chosen.entry(kind.name().into()).or_default().insert(set.name().into(), result.best_params.clone());
            test_accuracy.entry(kind.name().into()).or_default().insert(set.name().into(), result.test_accuracy_by_split.clone());
            classifiers.entry(kind.name().into()).or_default().insert(set.name().into(), result);
        }
    }

    let noise_sweep = if o.sweep_noise {
        let mut rows = Vec::new();
        for (v, &(unit_fraction, noise_std)) in d.views.iter().enumerate() {
            let dropped_v = non_finite_statistics(&d, v, &all, &points);
            for (set, cols) in &sets {
                let cols: Vec<usize> = cols.iter().copied().filter(|c| !dropped_v.contains(c)).collect();
                let (accuracy_mean, accuracy_sd) = if cols.is_empty() {
                    (f64::NAN, f64::NAN)
                } else {
                    let x = Features::build(&d, v, &cols, &points);
                    let r = grids.evaluate(o.sweep_classifier, &x, &y, classes.len(), &splits, &cv, false)?;
                    (r.test_accuracy_mean, r.test_accuracy_sd)
                };
                progress(&format!("{} · view {v} ({:.0} % of units, noise σ = {noise_std}) · {}: {:.1} %", o.sweep_classifier.name(), 100.0 * unit_fraction, set.name(), 100.0 * accuracy_mean));
                rows.push(NoiseRow { view: v, unit_fraction, noise_std, feature_set: set.name().into(), accuracy_mean, accuracy_sd });
            }
        }
        let sweep = NoiseSweep { classifier: o.sweep_classifier.name().into(), rows };
        write_noise_sweep(&out, &sweep, chance)?;
        Some(sweep)
    } else {
        None
    };

    let report = IdentifyReport {
        chance,
        samples: d.n,
        classes: classes.clone(),
        label: o.label.name().into(),
        hold_out,
        min_test_accuracy: o.min_test_accuracy,
        excluded_runs,
        splits: splits.len(),
        inner_folds: o.inner_folds,
        train_per_split: splits[0].train.len(),
        test_per_split: splits[0].test.len(),
        seed: o.seed,
        points: points.clone(),
        zscore: o.zscore,
        grid: if o.full_grid { "full" } else { "default" }.into(),
        epochs: o.epochs,
        statistics,
        dropped_statistics: dropped.iter().map(|&c| d.obs_keys[c].clone()).collect(),
        skipped_feature_sets: skipped,
        classifiers,
        noise_sweep,
    };
    let splits_file = SplitsFile {
        dataset: std::fs::canonicalize(&o.dataset).unwrap_or_else(|_| o.dataset.clone()).display().to_string(),
        label: o.label.name().into(),
        classes,
        y,
        points,
        zscore: o.zscore,
        inner_folds: o.inner_folds,
        seed: o.seed,
        feature_sets: sets.iter().map(|(s, c)| (s.name().to_string(), c.clone())).collect(),
        splits,
        grids: o.classifiers.iter().map(|&k| (k.name().to_string(), grids.json(k))).collect(),
        chosen,
        test_accuracy,
    };
    write_json(&out.join("splits.json"), &splits_file)?;
    write_json(&out.join("identify.json"), &report)?;
    Ok(report)
}

fn check_options(o: &IdentifyOptions) -> Result<()> {
    let bad = |m: String| Err(IdentifyError::Input(m));
    if o.splits == 0 {
        return bad("--splits 0: expected at least one outer split".into());
    }
    if o.inner_folds < 2 {
        return bad(format!("--inner-folds {}: expected at least 2", o.inner_folds));
    }
    if !(o.test_fraction > 0.0 && o.test_fraction < 1.0) {
        return bad(format!("test fraction {}: expected a value between 0 and 1", o.test_fraction));
    }
    if o.classifiers.is_empty() || o.feature_sets.is_empty() {
        return bad("no classifier or no feature set to evaluate".into());
    }
    if o.epochs == 0 {
        return bad("--epochs 0: expected at least one".into());
    }
    if let Some(m) = o.min_test_accuracy.filter(|m| !(0.0..=1.0).contains(m)) {
        return bad(format!("--min-test-accuracy {m}: expected a fraction between 0 and 1"));
    }
    Ok(())
}

fn threads(asked: usize) -> usize {
    if asked > 0 { asked } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

/// The samples the splits may draw from — with `min_test_accuracy`, those of the runs whose
/// test accuracy reaches it (a run without one is left out) — and the runs left out.
fn eligible(d: &Dataset, o: &IdentifyOptions) -> Result<(Vec<usize>, Vec<String>)> {
    let Some(min) = o.min_test_accuracy else { return Ok(((0..d.n).collect(), Vec::new())) };
    let Some(col) = d.meta_column("test_accuracy") else {
        return Err(IdentifyError::Input(format!(
            "--min-test-accuracy: {}/meta.csv has no test_accuracy column (plastic sweep writes it; `plastic sweep --resume` gathers the data set again)",
            o.dataset.display()
        )));
    };
    let run = d.meta_column("run");
    let mut excluded = std::collections::BTreeSet::new();
    let kept: Vec<usize> = (0..d.n)
        .filter(|&i| {
            let ok = d.meta[i][col].parse::<f64>().is_ok_and(|a| a >= min);
            if !ok {
                excluded.insert(run.map_or_else(|| format!("sample {i}"), |r| d.meta[i][r].clone()));
            }
            ok
        })
        .collect();
    if kept.is_empty() {
        return Err(IdentifyError::Input(format!("--min-test-accuracy {min}: no run of the data set reaches it")));
    }
    Ok((kept, excluded.into_iter().collect()))
}

/// The outer splits' pools over the `eligible` samples, and the hold-out's description.
fn pools(d: &Dataset, o: &IdentifyOptions, eligible: Vec<usize>) -> Result<(Pools, Option<HoldOutReport>)> {
    let Some(h) = &o.hold_out else { return Ok((Pools::Shared { samples: eligible, test_fraction: o.test_fraction }, None)) };
    let columns: Vec<&str> = d.meta_columns.iter().map(String::as_str).filter(|&c| c != "sample").collect();
    let Some(col) = d.meta_column(&h.key).filter(|_| h.key != "sample") else {
        return Err(IdentifyError::Input(format!("--hold-out {}: no such column in meta.csv (columns: {})", h.key, columns.join(", "))));
    };
    let mut available: Vec<&str> = d.meta.iter().map(|r| r[col].as_str()).collect();
    available.sort_unstable();
    available.dedup();
    if let Some(v) = h.values.iter().find(|v| !available.contains(&v.as_str())) {
        return Err(IdentifyError::Input(format!("--hold-out {}={v}: no sample has it (values of {}: {})", h.key, h.key, available.join(", "))));
    }
    let (held, kept): (Vec<usize>, Vec<usize>) = eligible.into_iter().partition(|&i| h.values.contains(&d.meta[i][col]));
    if kept.is_empty() {
        return Err(IdentifyError::Input(format!("--hold-out {}={}: every sample has it; nothing is left to train on", h.key, h.values.join(","))));
    }
    let report = HoldOutReport { key: h.key.clone(), values: h.values.clone(), kept_samples: kept.len(), held_samples: held.len() };
    Ok((Pools::HeldOut { kept, held, test_fraction: o.test_fraction }, Some(report)))
}

/// The grids of the three classifiers.
struct Grids {
    forest: Vec<ForestParams>,
    svm: Vec<SvmParams>,
    conv1d: Vec<Conv1dParams>,
    epochs: usize,
}

impl Grids {
    fn new(full: bool, points: usize, epochs: usize) -> Grids {
        if full {
            Grids { forest: ForestParams::full_grid(), svm: SvmParams::full_grid(), conv1d: Conv1dParams::full_grid(points), epochs }
        } else {
            Grids { forest: ForestParams::default_grid(), svm: SvmParams::default_grid(), conv1d: Conv1dParams::default_grid(points), epochs }
        }
    }

    fn json(&self, kind: ClassifierKind) -> Vec<serde_json::Value> {
        fn values<T: Serialize>(v: &[T]) -> Vec<serde_json::Value> {
            v.iter().map(|s| serde_json::to_value(s).expect("plain data")).collect()
        }
        match kind {
            ClassifierKind::Forest => values(&self.forest),
            ClassifierKind::Svm => values(&self.svm),
            ClassifierKind::Conv1d => values(&self.conv1d),
        }
    }

    /// The nested cross-validation of `kind` on `x`, with the shuffled-label control when
    /// `control`.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(&self, kind: ClassifierKind, x: &Features, y: &[usize], classes: usize, splits: &[Split], cv: &CvOptions, control: bool) -> Result<ClassifierResult> {
        match kind {
            ClassifierKind::Forest => evaluate(&Forest, &self.forest, x, y, classes, splits, cv, control),
            ClassifierKind::Svm => evaluate(&Svm, &self.svm, x, y, classes, splits, cv, control),
            ClassifierKind::Conv1d => evaluate(&Conv1dMethod { epochs: self.epochs }, &self.conv1d, x, y, classes, splits, cv, control),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn evaluate<M: Method>(method: &M, grid: &[M::Setting], x: &Features, y: &[usize], classes: usize, splits: &[Split], cv: &CvOptions, control: bool) -> Result<ClassifierResult>
where
    M::Setting: Serialize,
{
    let real = nested_cv(method, grid, x, y, classes, splits, false, cv)?;
    let shuffled: Vec<SplitOutcome> = if control { nested_cv(method, grid, x, y, classes, splits, true, cv)? } else { Vec::new() };
    let test: Vec<f64> = real.iter().map(|r| r.test_accuracy).collect();
    let shuffled_acc: Vec<f64> = shuffled.iter().map(|r| r.test_accuracy).collect();
    let (test_accuracy_mean, test_accuracy_sd) = mean_sd(&test);
    let (shuffled_accuracy_mean, shuffled_accuracy_sd) = mean_sd(&shuffled_acc);
    let mut confusion = vec![vec![0u64; classes]; classes];
    for (r, s) in real.iter().zip(splits) {
        for (&i, &p) in s.test.iter().zip(&r.test_predictions) {
            confusion[y[i]][p] += 1;
        }
    }
    Ok(ClassifierResult {
        test_accuracy_mean,
        test_accuracy_sd,
        shuffled_accuracy_mean,
        shuffled_accuracy_sd,
        train_accuracy_mean: mean_sd(&real.iter().map(|r| r.train_accuracy).collect::<Vec<_>>()).0,
        test_accuracy_by_split: test,
        shuffled_accuracy_by_split: shuffled_acc,
        best_params: real.iter().map(|r| serde_json::to_value(&grid[r.best]).expect("plain data")).collect(),
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_out_parses_with_aliases() {
        assert_eq!(HoldOut::parse("arch=resnet18").unwrap(), HoldOut { key: "architecture".into(), values: vec!["resnet18".into()] });
        assert_eq!(HoldOut::parse("batch_size=32,64").unwrap().values, ["32", "64"]);
        assert!(HoldOut::parse("resnet18").unwrap_err().to_string().contains("KEY=VALUE"));
        assert!(HoldOut::parse("arch=").is_err());
    }
}
