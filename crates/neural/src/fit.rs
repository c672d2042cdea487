//! Neural predictivity: how well each layer × time step of a model predicts recorded responses.
//!
//! For each feature array (a layer at a step) and each time bin of the responses: K-fold
//! cross-validation over stimuli; on each training fold, PCA of the layer (at most 1,000
//! components, Brain-Score's reduction, fitted on the training stimuli only) and a regression
//! to every neuroid (ridge, penalty by leave-one-out per neuroid, or PLS with 25 components);
//! Pearson r per neuroid on the held-out stimuli; r averaged over folds; the median over a
//! region's neuroids is the raw score, divided by the median split-half reliability of the
//! region's neuroids (Spearman–Brown corrected) for the ceiled score. One array is in memory
//! at a time, with its N × N Gram matrix.

use faer::Mat;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{NeuralError, Result};
use crate::features::{ArrayInfo, FeatureStore};
use crate::linalg::Basis;
use crate::regress::{pearson_columns, pls, ridge, ridge_alphas};
use crate::responses::Responses;

/// Features a fit reads, one array at a time.
pub trait FeatureSource {
    fn arrays(&self) -> &[ArrayInfo];
    /// Rows (stimuli) of every array.
    fn rows(&self) -> usize;
    /// Array `k`, `[rows × columns]` row-major.
    fn read(&self, k: usize) -> Result<Vec<f32>>;
}

impl FeatureSource for FeatureStore {
    fn arrays(&self) -> &[ArrayInfo] {
        &self.arrays
    }

    fn rows(&self) -> usize {
        self.stimuli
    }

    fn read(&self, k: usize) -> Result<Vec<f32>> {
        FeatureStore::read(self, k)
    }
}

/// The regression from features to responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Ridge,
    Pls,
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ridge" => Ok(Method::Ridge),
            "pls" => Ok(Method::Pls),
            other => Err(format!("--method {other:?}: expected ridge or pls")),
        }
    }
}

/// Settings of a fit.
#[derive(Debug, Clone, Serialize)]
pub struct FitOptions {
    pub method: Method,
    pub folds: usize,
    /// Seed of the fold assignment and of the split-half draws.
    pub seed: u64,
    /// Principal components kept per training fold (Brain-Score: 1,000).
    pub pca_components: usize,
    /// PLS components (Brain-Score: 25).
    pub pls_components: usize,
    /// Random split-halves averaged for the reliability.
    pub ceiling_splits: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self { method: Method::Ridge, folds: 10, seed: 0, pca_components: 1000, pls_components: 25, ceiling_splits: 10 }
    }
}

/// One score: a layer at a step against a region's neuroids in a time bin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub region: String,
    pub bin: usize,
    pub layer: String,
    pub step: usize,
    /// The ceiled score (raw / ceiling); the raw score where no ceiling exists.
    pub score: f64,
    /// Median over the region's neuroids of their fold-averaged held-out Pearson r.
    pub raw: f64,
    /// Median split-half reliability (Spearman–Brown) of the region's neuroids in the bin.
    pub ceiling: Option<f64>,
    /// Standard deviation over folds of the per-fold median r.
    pub fold_std: f64,
    /// Quartiles over neuroids of the fold-averaged r.
    pub neuroid_q25: f64,
    pub neuroid_q75: f64,
    pub neuroids: usize,
}

/// The best layer and step for a region: the region-to-layer commitment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Commitment {
    pub region: String,
    pub layer: String,
    pub step: usize,
    /// The score averaged over time bins.
    pub score: f64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub options: FitOptions,
    pub stimuli: usize,
    pub neuroids: usize,
    pub repetitions: usize,
    pub regions: Vec<String>,
    pub time_bins: Option<Vec<(f64, f64)>>,
    /// `ceilings[region][bin]`.
    pub ceilings: Vec<Vec<Option<f64>>>,
    pub scores: Vec<Score>,
    pub best: Vec<Commitment>,
    /// Held-out stimuli (indices into the responses' stimuli) of each fold.
    pub folds: Vec<Vec<usize>>,
}

/// Median of the finite values (NaN when none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    quantile(values, 0.5)
}

/// Linearly interpolated quantile of the finite values (numpy's default), NaN when none.
pub fn quantile(values: impl IntoIterator<Item = f64>, q: f64) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Shuffled K-fold split of `n` items: the held-out indices of each fold, sorted.
pub fn kfold(n: usize, folds: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    (0..folds)
        .map(|f| {
            let (start, end) = (f * n / folds, (f + 1) * n / folds);
            let mut held: Vec<usize> = order[start..end].to_vec();
            held.sort_unstable();
            held
        })
        .collect()
}

/// Fits every array of `features` to `responses`. `rows[i]` is the feature row of the
/// responses' stimulus i. With `pca_set` (the same arrays on other stimuli, `--pca-stimuli`)
/// the principal components are fitted there once per array instead of on each training fold,
/// and each fold's regression works on the scores. `progress(done, total)` after each array.
pub fn fit(features: &dyn FeatureSource, rows: &[usize], responses: &Responses, options: &FitOptions, pca_set: Option<&dyn FeatureSource>, progress: &mut dyn FnMut(usize, usize)) -> Result<FitReport> {
    let n = responses.stimuli();
    assert_eq!(rows.len(), n);
    if options.folds < 2 || options.folds > n {
        return Err(NeuralError::Invalid(format!("--folds {}: needs 2 ≤ folds ≤ the {n} stimuli with responses", options.folds)));
    }
    if n / options.folds < 2 {
        return Err(NeuralError::Invalid(format!("{n} stimuli in {} folds leave fewer than 2 held-out stimuli per fold; use fewer --folds", options.folds)));
    }
    let (bins, neuroids) = (responses.bins, responses.neuroids());
    let regions = responses.region_names();
    let members: Vec<Vec<usize>> = regions.iter().map(|r| (0..neuroids).filter(|&j| &responses.regions[j] == r).collect()).collect();
    // Targets: every bin's repetition-mean responses side by side, [stimuli × (bins · neuroids)].
    let means: Vec<Vec<f64>> = (0..bins).map(|b| responses.mean(b)).collect();
    let q = bins * neuroids;
    let y = Mat::<f64>::from_fn(n, q, |i, t| means[t / neuroids][i * neuroids + t % neuroids]);
    let reliability: Vec<Option<Vec<f64>>> = (0..bins).map(|b| responses.split_half(b, options.ceiling_splits, options.seed)).collect();
    let ceilings: Vec<Vec<Option<f64>>> = members
        .iter()
        .map(|m| (0..bins).map(|b| reliability[b].as_ref().map(|rel| median(m.iter().map(|&j| rel[j])))).collect())
        .collect();
    let folds = kfold(n, options.folds, options.seed);
    // What depends on the fold only, not on the layer: training rows and both targets.
    let splits: Vec<(Vec<usize>, Mat<f64>, Mat<f64>)> = folds
        .iter()
        .map(|held| {
            let train: Vec<usize> = (0..n).filter(|i| held.binary_search(i).is_err()).collect();
            let y_tr = Mat::<f64>::from_fn(train.len(), q, |i, t| y[(train[i], t)]);
            let y_te = Mat::<f64>::from_fn(held.len(), q, |i, t| y[(held[i], t)]);
            (train, y_tr, y_te)
        })
        .collect();
    let mut scores = Vec::new();
    let total = features.arrays().len();
    for (k, array) in features.arrays().iter().enumerate() {
        let x = features.read(k)?;
        let cols = array.columns;
        // The responses' stimuli's rows only (no copy when they are all the rows, in order).
        let identity = rows.len() == features.rows() && rows.iter().enumerate().all(|(i, &r)| i == r);
        let picked: Vec<f32> = if identity { x } else { rows.iter().flat_map(|&r| x[r * cols..(r + 1) * cols].iter().copied()).collect() };
        let basis = match pca_set {
            None => Basis::new(&picked, n, cols),
            Some(set) => {
                // PCA on the other stimuli, the responses' stimuli as its held-out rows.
                let m = set.rows();
                let mut stacked = set.read(k)?;
                stacked.extend_from_slice(&picked);
                let train: Vec<usize> = (0..m).collect();
                let test: Vec<usize> = (m..m + n).collect();
                Basis::of_rows(Basis::new(&stacked, m + n, cols).components(&train, &test, options.pca_components).test)
            }
        };
        drop(picked);
        // r[fold][target]
        let mut r_folds: Vec<Vec<f64>> = Vec::with_capacity(folds.len());
        for (held, (train, y_tr, y_te)) in folds.iter().zip(&splits) {
            let c = basis.components(train, held, options.pca_components);
            if c.values.is_empty() {
                // A constant layer (e.g. before any input arrives): nothing predicts.
                r_folds.push(vec![f64::NAN; q]);
                continue;
            }
            let pred = match options.method {
                Method::Ridge => ridge(&c, y_tr, &ridge_alphas(c.values.iter().sum())).0,
                Method::Pls => pls(&c, y_tr, options.pls_components).map_err(|e| NeuralError::Invalid(format!("PLS on {}: {e}", array.key())))?,
            };
            r_folds.push(pearson_columns(&pred, y_te));
        }
        for (ri, region) in regions.iter().enumerate() {
            for b in 0..bins {
                let targets: Vec<usize> = members[ri].iter().map(|&j| b * neuroids + j).collect();
                let per_neuroid: Vec<f64> = targets
                    .iter()
                    .map(|&t| {
                        let v: Vec<f64> = r_folds.iter().map(|f| f[t]).filter(|x| x.is_finite()).collect();
                        if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
                    })
                    .collect();
                let raw = median(per_neuroid.iter().copied());
                let per_fold: Vec<f64> = r_folds.iter().map(|f| median(targets.iter().map(|&t| f[t]))).filter(|x| x.is_finite()).collect();
                let mean = per_fold.iter().sum::<f64>() / per_fold.len().max(1) as f64;
                let fold_std = (per_fold.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / per_fold.len().max(1) as f64).sqrt();
                let ceiling = ceilings[ri][b];
                let score = match ceiling {
                    Some(c) if c.is_finite() && c > 0.0 => raw / c,
                    _ => raw,
                };
                scores.push(Score {
                    region: region.clone(),
                    bin: b,
                    layer: array.layer.clone(),
                    step: array.step,
                    score,
                    raw,
                    ceiling,
                    fold_std,
                    neuroid_q25: quantile(per_neuroid.iter().copied(), 0.25),
                    neuroid_q75: quantile(per_neuroid.iter().copied(), 0.75),
                    neuroids: targets.len(),
                });
            }
        }
        progress(k + 1, total);
    }
    let best = regions
        .iter()
        .filter_map(|region| {
            let mut best: Option<Commitment> = None;
            for a in features.arrays() {
                let s: Vec<f64> = scores.iter().filter(|s| &s.region == region && s.layer == a.layer && s.step == a.step).map(|s| s.score).collect();
                let mean = s.iter().sum::<f64>() / s.len() as f64;
                if mean.is_finite() && best.as_ref().is_none_or(|b| mean > b.score) {
                    best = Some(Commitment { region: region.clone(), layer: a.layer.clone(), step: a.step, score: mean });
                }
            }
            best
        })
        .collect();
    Ok(FitReport {
        options: options.clone(),
        stimuli: n,
        neuroids,
        repetitions: responses.repetitions,
        regions,
        time_bins: responses.time_bins.clone(),
        ceilings,
        scores,
        best,
        folds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Feature arrays held in memory.
    struct Memory {
        arrays: Vec<ArrayInfo>,
        values: Vec<Vec<f32>>,
        rows: usize,
    }

    impl FeatureSource for Memory {
        fn arrays(&self) -> &[ArrayInfo] {
            &self.arrays
        }
        fn rows(&self) -> usize {
            self.rows
        }
        fn read(&self, k: usize) -> Result<Vec<f32>> {
            Ok(self.values[k].clone())
        }
    }

    fn normal(rng: &mut ChaCha8Rng) -> f64 {
        // Box–Muller.
        let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// A "model" of 3 layers × 2 steps whose arrays are independent random features, except
    /// that layer b at step 1 drives the responses: y = that array · M + noise, with
    /// repetition noise of a known variance. The fit must name (b, 1), score it close to 1
    /// after the ceiling, score the others far lower, and estimate the reliability that the
    /// noise implies.
    fn synthetic(method: Method) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (n, p, neuroids, reps) = (240, 30, 24, 6);
        let mut arrays = Vec::new();
        let mut values = Vec::new();
        for step in 0..2 {
            for layer in ["a", "b", "c"] {
                arrays.push(ArrayInfo { layer: layer.into(), step, shape: [p, 1, 1], columns: p });
                values.push((0..n * p).map(|_| normal(&mut rng) as f32).collect::<Vec<f32>>());
            }
        }
        let source = 4; // b at step 1
        let m: Vec<f64> = (0..p * neuroids).map(|_| normal(&mut rng) / (p as f64).sqrt()).collect();
        // Signal variance per neuroid ≈ 1; repetition noise σ² = 1.5.
        let sigma2: f64 = 1.5;
        let signal: Vec<f64> = (0..n * neuroids).map(|k| (0..p).map(|c| values[source][(k / neuroids) * p + c] as f64 * m[c * neuroids + k % neuroids]).sum()).collect();
        let mut resp = Vec::with_capacity(reps * n * neuroids);
        for _ in 0..reps {
            for s in &signal {
                resp.push(s + sigma2.sqrt() * normal(&mut rng));
            }
        }
        let regions: Vec<String> = (0..neuroids).map(|j| if j < neuroids / 2 { "V4".into() } else { "IT".into() }).collect();
        let responses = Responses {
            values: resp,
            bins: 1,
            repetitions: reps,
            stimulus_ids: (0..n).map(|i| format!("s{i}")).collect(),
            regions,
            time_bins: None,
            path: "synthetic.npz".into(),
        };
        let features = Memory { arrays, values, rows: n };
        let rows: Vec<usize> = (0..n).collect();
        let options = FitOptions { method, folds: 5, ..FitOptions::default() };
        let report = fit(&features, &rows, &responses, &options, None, &mut |_, _| {}).unwrap();
        // PCA fitted on other stimuli instead: with every component kept it is a rotation, under
        // which the regressions' predictions (and so every score) do not change.
        let other = Memory { arrays: features.arrays.clone(), values: (0..6).map(|_| (0..150 * p).map(|_| normal(&mut rng) as f32).collect()).collect(), rows: 150 };
        let rotated = fit(&features, &rows, &responses, &options, Some(&other), &mut |_, _| {}).unwrap();
        for (a, b) in report.scores.iter().zip(&rotated.scores) {
            assert!((a.raw - b.raw).abs() < 1e-6, "{method:?} {} t{} {}: {} vs {} with --pca-stimuli", a.layer, a.step, a.region, a.raw, b.raw);
        }
        // With fewer components than features, the PCA set's components are another basis.
        let few = FitOptions { pca_components: 10, ..options.clone() };
        let per_fold = fit(&features, &rows, &responses, &few, None, &mut |_, _| {}).unwrap();
        let from_other = fit(&features, &rows, &responses, &few, Some(&other), &mut |_, _| {}).unwrap();
        assert!(per_fold.scores.iter().zip(&from_other.scores).any(|(a, b)| (a.raw - b.raw).abs() > 1e-3), "{method:?}: 10 components from other stimuli changed nothing");
        // Reliability of the mean of 6 repetitions: var(signal) / (var(signal) + σ²/6).
        let var: f64 = {
            let mean = signal.iter().sum::<f64>() / signal.len() as f64;
            signal.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / signal.len() as f64
        };
        let expected = var / (var + sigma2 / reps as f64);
        for (ri, region) in report.regions.iter().enumerate() {
            let c = report.ceilings[ri][0].unwrap();
            assert!((c - expected).abs() < 0.05, "{region}: ceiling {c:.3}, expected {expected:.3}");
            let best = report.best.iter().find(|b| &b.region == region).unwrap();
            assert_eq!((best.layer.as_str(), best.step), ("b", 1), "{method:?} {region}: best {best:?}");
            // A perfect model's held-out r against the repetition mean is √reliability, so its
            // ceiled score (r / reliability, Brain-Score's convention) is 1/√reliability.
            assert!(best.score > 0.9 && best.score < 1.0 / c.sqrt() + 0.02, "{method:?} {region}: ceiled score {:.3} (ceiling {c:.3})", best.score);
            assert!((best.score * c.sqrt() - 1.0).abs() < 0.05, "{method:?} {region}: r / √ceiling = {:.3}", best.score * c.sqrt());
            for s in report.scores.iter().filter(|s| &s.region == region && !(s.layer == "b" && s.step == 1)) {
                assert!(s.score < 0.3, "{method:?} {region}: {} t{} scores {:.3}", s.layer, s.step, s.score);
            }
        }
    }

    #[test]
    fn ridge_names_the_source_layer_and_step() {
        synthetic(Method::Ridge);
    }

    #[test]
    fn pls_names_the_source_layer_and_step() {
        synthetic(Method::Pls);
    }

    #[test]
    fn folds_partition_the_stimuli() {
        let folds = kfold(23, 5, 1);
        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert!(folds.iter().all(|f| f.len() == 4 || f.len() == 5));
        assert_eq!(kfold(23, 5, 1), folds, "seeded");
    }

    #[test]
    fn quantiles_as_numpy() {
        assert_eq!(median([3.0, 1.0, 2.0, f64::NAN]), 2.0);
        assert_eq!(quantile([1.0, 2.0, 3.0, 4.0], 0.25), 1.75);
        assert!(median([f64::NAN]).is_nan());
    }
}
