//! What `plastic identify` writes: `identify.json` (the summary), `splits.json` (the outer
//! splits and the chosen settings, for `scripts/identify_sklearn.py`), the confusion matrices
//! (CSV and PNG) and the realism sweep (`noise_sweep.csv`, `noise_sweep.png`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plastic_plot::{HeatMap, LineChart, NamedSeries, heat_map, line_chart_with_ticks};
use serde::{Deserialize, Serialize};

use crate::cv::Split;
use crate::{IdentifyError, Result, write_atomic};

/// One classifier on one feature set, over the outer splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierResult {
    pub test_accuracy_mean: f64,
    /// Population standard deviation over the splits.
    pub test_accuracy_sd: f64,
    /// The same pipeline with each training set's labels permuted: near chance when the
    /// classifier learns from the observables and not from an artefact of the splits.
    pub shuffled_accuracy_mean: f64,
    pub shuffled_accuracy_sd: f64,
    /// Accuracy on the outer training sets after the refit.
    pub train_accuracy_mean: f64,
    pub test_accuracy_by_split: Vec<f64>,
    pub shuffled_accuracy_by_split: Vec<f64>,
    /// The setting chosen by the inner search, per split.
    pub best_params: Vec<serde_json::Value>,
    /// `[true][predicted]` test counts summed over the splits.
    pub confusion: Vec<Vec<u64>>,
}

/// The held-out samples of a generalisation test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldOutReport {
    /// The `meta.csv` column.
    pub key: String,
    pub values: Vec<String>,
    /// Samples kept for training and held out for testing.
    pub kept_samples: usize,
    pub held_samples: usize,
}

/// Accuracy of the sweep classifier on one realism view and feature set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseRow {
    pub view: usize,
    pub unit_fraction: f64,
    pub noise_std: f64,
    pub feature_set: String,
    pub accuracy_mean: f64,
    pub accuracy_sd: f64,
}

/// `identify.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentifyReport {
    /// One over the number of classes tested (the splits are balanced).
    pub chance: f64,
    pub samples: usize,
    pub classes: Vec<String>,
    /// rule, optimizer or both.
    pub label: String,
    pub hold_out: Option<HoldOutReport>,
    /// `--min-test-accuracy`: only runs whose test accuracy reached it were used …
    #[serde(default)]
    pub min_test_accuracy: Option<f64>,
    /// … and these runs were left out.
    #[serde(default)]
    pub excluded_runs: Vec<String>,
    pub splits: usize,
    pub inner_folds: usize,
    pub train_per_split: usize,
    pub test_per_split: usize,
    pub seed: u64,
    /// The recording points used (indices into the data set's P).
    pub points: Vec<usize>,
    pub zscore: bool,
    /// "default" or "full".
    pub grid: String,
    /// Training epochs of the conv net.
    pub epochs: usize,
    /// The statistics of each feature set evaluated.
    pub statistics: BTreeMap<String, Vec<String>>,
    /// Statistics left out for non-finite values.
    pub dropped_statistics: Vec<String>,
    /// Feature sets asked for but not evaluated, and why.
    pub skipped_feature_sets: BTreeMap<String, String>,
    /// classifier → feature set → result.
    pub classifiers: BTreeMap<String, BTreeMap<String, ClassifierResult>>,
    /// With `--sweep-noise`: the sweep classifier's accuracy per view and feature set.
    pub noise_sweep: Option<NoiseSweep>,
}

/// The realism sweep's rows and the classifier that made them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseSweep {
    pub classifier: String,
    pub rows: Vec<NoiseRow>,
}

/// `splits.json`: enough to refit other classifiers on exactly the same data and splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitsFile {
    pub dataset: String,
    pub label: String,
    pub classes: Vec<String>,
    /// Class index of every sample.
    pub y: Vec<usize>,
    pub points: Vec<usize>,
    pub zscore: bool,
    pub inner_folds: usize,
    pub seed: u64,
    /// feature set → indices into `obs_keys` (in column order).
    pub feature_sets: BTreeMap<String, Vec<usize>>,
    pub splits: Vec<Split>,
    /// classifier → the grid searched.
    pub grids: BTreeMap<String, Vec<serde_json::Value>>,
    /// classifier → feature set → chosen setting per split.
    pub chosen: BTreeMap<String, BTreeMap<String, Vec<serde_json::Value>>>,
    /// classifier → feature set → test accuracy per split.
    pub test_accuracy: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| IdentifyError::io(path, e))?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

/// `confusion_<classifier>_<set>.csv` and `.png` in `dir`; returns both paths.
pub(crate) fn write_confusion(dir: &Path, classifier: &str, set: &str, classes: &[String], result: &ClassifierResult, chance: f64) -> Result<Vec<PathBuf>> {
    let stem = format!("confusion_{classifier}_{set}");
    let mut csv = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| IdentifyError::io(dir.join(format!("{stem}.csv")), e);
    csv.write_record(std::iter::once("true \\ predicted".to_string()).chain(classes.iter().cloned())).map_err(io)?;
    for (name, row) in classes.iter().zip(&result.confusion) {
        csv.write_record(std::iter::once(name.clone()).chain(row.iter().map(u64::to_string))).map_err(io)?;
    }
    let bytes = csv.into_inner().map_err(|e| IdentifyError::io(dir.join(format!("{stem}.csv")), e))?;
    let csv_path = dir.join(format!("{stem}.csv"));
    write_atomic(&csv_path, &bytes)?;
    let title = format!("{classifier}, {set}: {:.1} % ± {:.1} (chance {:.1} %)", 100.0 * result.test_accuracy_mean, 100.0 * result.test_accuracy_sd, 100.0 * chance);
    let png = dir.join(format!("{stem}.png"));
    heat_map(&png, &HeatMap::confusion(title, classes, &result.confusion))?;
    Ok(vec![csv_path, png])
}

/// `noise_sweep.csv` and `noise_sweep.png` in `dir`.
pub(crate) fn write_noise_sweep(dir: &Path, sweep: &NoiseSweep, chance: f64) -> Result<Vec<PathBuf>> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    let path = dir.join("noise_sweep.csv");
    let io = |e: csv::Error| IdentifyError::io(dir.join("noise_sweep.csv"), e);
    csv.write_record(["view", "unit_fraction", "noise_std", "feature_set", "accuracy_mean", "accuracy_sd"]).map_err(io)?;
    for r in &sweep.rows {
        csv.write_record([r.view.to_string(), r.unit_fraction.to_string(), r.noise_std.to_string(), r.feature_set.clone(), r.accuracy_mean.to_string(), r.accuracy_sd.to_string()]).map_err(io)?;
    }
    let bytes = csv.into_inner().map_err(|e| IdentifyError::io(&path, e))?;
    write_atomic(&path, &bytes)?;
    let png = dir.join("noise_sweep.png");
    let (chart, ticks) = noise_chart(sweep, chance);
    line_chart_with_ticks(&png, &chart, &ticks)?;
    Ok(vec![path, png])
}

/// The sweep as lines, one per feature set: along the unit fraction when only it varies,
/// along the noise when only it varies; when both vary over a full grid, along the one with
/// more values (a line per feature set and value of the other); otherwise along the views
/// themselves, each tick naming its view. The last series is chance.
pub(crate) fn noise_chart(sweep: &NoiseSweep, chance: f64) -> (LineChart, Vec<(f64, String)>) {
    let distinct = |f: &dyn Fn(&NoiseRow) -> f64| {
        let mut v: Vec<f64> = sweep.rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let fractions = distinct(&|r| r.unit_fraction);
    let noises = distinct(&|r| r.noise_std);
    let mut sets: Vec<String> = Vec::new();
    for r in &sweep.rows {
        if !sets.contains(&r.feature_set) {
            sets.push(r.feature_set.clone());
        }
    }
    let mut views: Vec<(usize, f64, f64)> = sweep.rows.iter().map(|r| (r.view, r.unit_fraction, r.noise_std)).collect();
    views.sort_by_key(|v| v.0);
    views.dedup_by_key(|v| v.0);
    let grid = fractions.iter().all(|&f| noises.iter().all(|&n| views.iter().any(|v| v.1 == f && v.2 == n)));
    let accuracy = |set: &str, pick: &dyn Fn(&NoiseRow) -> bool| sweep.rows.iter().find(|r| r.feature_set == set && pick(r)).map_or(f64::NAN, |r| 100.0 * r.accuracy_mean);
    let mut series = Vec::new();
    let mut ticks = Vec::new();
    let (x, x_label): (Vec<f64>, String) = if noises.len() == 1 || fractions.len() == 1 || grid {
        let along_fraction = noises.len() == 1 || (fractions.len() > 1 && fractions.len() >= noises.len());
        let (x, other) = if along_fraction { (fractions.clone(), noises.clone()) } else { (noises.clone(), fractions.clone()) };
        for set in &sets {
            for &o in &other {
                let name = match (other.len() > 1, along_fraction) {
                    (false, _) => set.clone(),
                    (true, true) => format!("{set}, noise σ = {o}"),
                    (true, false) => format!("{set}, {} % of units", 100.0 * o),
                };
                let y = x.iter().map(|&xv| accuracy(set, &|r| if along_fraction { r.unit_fraction == xv && r.noise_std == o } else { r.noise_std == xv && r.unit_fraction == o })).collect();
                series.push(NamedSeries { name, y });
            }
        }
        (x, if along_fraction { "fraction of units observed".into() } else { "measurement noise σ".into() })
    } else {
        for set in &sets {
            series.push(NamedSeries { name: set.clone(), y: views.iter().map(|v| accuracy(set, &|r| r.view == v.0)).collect() });
        }
        ticks = views.iter().map(|v| (v.0 as f64, format!("{} %, σ {}", 100.0 * v.1, v.2))).collect();
        (views.iter().map(|v| v.0 as f64).collect(), "realism view (units observed, noise σ)".into())
    };
    series.push(NamedSeries { name: "chance".into(), y: vec![100.0 * chance; x.len()] });
    let chart = LineChart { title: format!("{}: accuracy per realism view", sweep.classifier), x_label, y_label: "test accuracy (%)".into(), x, series, y_range: Some((0.0, 100.0)) };
    (chart, ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(view: usize, f: f64, s: f64, set: &str, acc: f64) -> NoiseRow {
        NoiseRow { view, unit_fraction: f, noise_std: s, feature_set: set.into(), accuracy_mean: acc, accuracy_sd: 0.0 }
    }

    #[test]
    fn the_noise_chart_runs_along_the_axis_that_varies() {
        // Only the fraction varies: along it, a line per feature set.
        let sweep = NoiseSweep { classifier: "forest".into(), rows: vec![row(0, 1.0, 0.0, "weights", 0.9), row(1, 0.5, 0.0, "weights", 0.7), row(2, 0.1, 0.0, "weights", 0.5), row(0, 1.0, 0.0, "activations", 0.8)] };
        let (c, ticks) = noise_chart(&sweep, 0.25);
        assert!(ticks.is_empty());
        assert_eq!(c.x, [0.1, 0.5, 1.0]);
        assert_eq!(c.series[0].name, "weights");
        assert_eq!(c.series[0].y, [50.0, 70.0, 90.0]);
        assert!(c.series[1].y[0].is_nan() && c.series[1].y[2] == 80.0);
        assert_eq!(c.series.last().unwrap().y, [25.0; 3]);

        // A full 2 × 2 grid: along the noise (as many values as fractions: the fraction wins
        // ties, so here along the fraction), a line per feature set and noise.
        let rows = vec![row(0, 1.0, 0.0, "all", 0.9), row(1, 1.0, 0.5, "all", 0.8), row(2, 0.5, 0.0, "all", 0.7), row(3, 0.5, 0.5, "all", 0.6)];
        let (c, _) = noise_chart(&NoiseSweep { classifier: "forest".into(), rows }, 0.5);
        assert_eq!(c.x, [0.5, 1.0]);
        assert_eq!(c.series[1].name, "all, noise σ = 0.5");
        assert_eq!(c.series[1].y, [60.0, 80.0]);

        // Views that vary together: along the views, each tick naming its view.
        let rows = vec![row(0, 1.0, 0.0, "all", 0.9), row(1, 0.25, 0.5, "all", 0.7), row(2, 0.1, 1.0, "all", 0.4)];
        let (c, ticks) = noise_chart(&NoiseSweep { classifier: "forest".into(), rows }, 0.5);
        assert_eq!(c.x, [0.0, 1.0, 2.0]);
        assert_eq!(c.series[0].y, [90.0, 70.0, 40.0]);
        assert_eq!(ticks[1], (1.0, "25 %, σ 0.5".to_string()));
    }
}
