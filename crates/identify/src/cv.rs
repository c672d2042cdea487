//! Nested cross-validation, as the original's `get_splits` and `run_cv`: outer train/test
//! splits balanced per class (each class contributes the same number of samples, so chance is
//! one over the number of classes), and inside each outer training set a stratified k-fold
//! grid search; the best setting is refit on the whole outer training set and scored on its
//! test set.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::features::Features;
use crate::{IdentifyError, Result, mix_seed};

/// One outer split: sample indices, class by class (in class order), in random order within
/// a class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Where the outer splits draw their samples from.
#[derive(Debug, Clone, PartialEq)]
pub enum Pools {
    /// Train and test from the same `samples`, disjoint in each split: per class,
    /// `round(test_fraction · m)` test and the rest of `m` for training, `m` being the smallest
    /// class's size among them.
    Shared { samples: Vec<usize>, test_fraction: f64 },
    /// Train only from `kept`, test only from `held` (a held-out architecture, data set, …):
    /// per class `round((1 − test_fraction) · m_kept)` for training and `m_held` for testing,
    /// with `m` the smallest class in each pool (classes absent from the held-out samples are
    /// not tested).
    HeldOut { kept: Vec<usize>, held: Vec<usize>, test_fraction: f64 },
}

/// `count` outer splits of the samples with labels `y` (classes `0..classes`), seeded.
///
/// Errors (one line each): a class with too few samples for a train and a test sample, or a
/// training share per class smaller than `min_train` (the inner folds need one sample of each
/// class per fold).
pub fn outer_splits(y: &[usize], classes: usize, pools: &Pools, count: usize, min_train: usize, seed: u64, class_names: &[String]) -> Result<Vec<Split>> {
    let by_class = |pool: &[usize]| -> Vec<Vec<usize>> {
        let mut v = vec![Vec::new(); classes];
        for &i in pool {
            v[y[i]].push(i);
        }
        v
    };
    let counts = |v: &[Vec<usize>]| v.iter().zip(class_names).map(|(c, n)| format!("{n} {}", c.len())).collect::<Vec<_>>().join(", ");
    let (train_pool, test_pool, n_train, n_test, shared) = match pools {
        Pools::Shared { samples, test_fraction } => {
            let pool = by_class(samples);
            let m = pool.iter().map(Vec::len).min().unwrap_or(0);
            if m < 2 {
                return Err(IdentifyError::Input(format!("a class has {m} samples; balanced splits need at least 2 per class (samples per class: {})", counts(&pool))));
            }
            let n_test = ((test_fraction * m as f64).round() as usize).clamp(1, m - 1);
            (pool.clone(), pool, m - n_test, n_test, true)
        }
        Pools::HeldOut { kept, held, test_fraction } => {
            let (kept, held) = (by_class(kept), by_class(held));
            let m_kept = kept.iter().map(Vec::len).min().unwrap_or(0);
            if m_kept == 0 {
                return Err(IdentifyError::Input(format!("the samples kept for training lack a class (kept samples per class: {})", counts(&kept))));
            }
            let m_held = held.iter().map(Vec::len).filter(|&c| c > 0).min().unwrap_or(0);
            if m_held == 0 {
                return Err(IdentifyError::Input("no held-out samples to test on".into()));
            }
            let n_train = (((1.0 - test_fraction) * m_kept as f64).round() as usize).clamp(1, m_kept);
            (kept, held, n_train, m_held, false)
        }
    };
    if n_train < min_train {
        return Err(IdentifyError::Input(format!(
            "{n_train} training samples per class in each split, fewer than the {min_train} inner folds (samples per class: {}); lower --inner-folds or gather more runs",
            counts(&train_pool)
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, &[0x5917]));
    let splits = (0..count)
        .map(|_| {
            let mut test = Vec::new();
            let mut taken = vec![false; y.len()];
            for pool in &test_pool {
                if pool.is_empty() {
                    continue;
                }
                let mut p = pool.clone();
                p.shuffle(&mut rng);
                for &i in &p[..n_test] {
                    taken[i] = true;
                    test.push(i);
                }
            }
            let mut train = Vec::new();
            for pool in &train_pool {
                let mut p: Vec<usize> = pool.iter().copied().filter(|&i| !(shared && taken[i])).collect();
                p.shuffle(&mut rng);
                train.extend_from_slice(&p[..n_train]);
            }
            Split { train, test }
        })
        .collect();
    Ok(splits)
}

/// scikit-learn's `StratifiedKFold(n_splits = k, shuffle = False)`: the test fold of each
/// position of `y`. Classes are taken in order of first appearance; the fold sizes per class
/// come from dealing the sorted labels round-robin over the folds, and each class fills its
/// folds in order (the first samples of a class go to fold 0).
pub fn stratified_kfold(y: &[usize], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = Vec::new();
    for &c in y {
        if !order.contains(&c) {
            order.push(c);
        }
    }
    let encoded: Vec<usize> = y.iter().map(|c| order.iter().position(|o| o == c).unwrap()).collect();
    let mut sorted = encoded.clone();
    sorted.sort_unstable();
    let n_classes = order.len();
    let mut allocation = vec![vec![0usize; n_classes]; k];
    for (i, &c) in sorted.iter().enumerate() {
        allocation[i % k][c] += 1;
    }
    let mut folds = vec![0; y.len()];
    for c in 0..n_classes {
        let folds_for_class: Vec<usize> = (0..k).flat_map(|f| std::iter::repeat_n(f, allocation[f][c])).collect();
        for (pos, f) in encoded.iter().enumerate().filter(|(_, e)| **e == c).map(|(p, _)| p).zip(folds_for_class) {
            folds[pos] = f;
        }
    }
    folds
}

/// A classifier family: fits a list of settings at once (so a family can share work between
/// settings, such as the forest's trees or the PCA's decomposition) and predicts.
pub trait Method: Sync {
    type Setting: Clone + Send + Sync + std::fmt::Debug;

    /// Fits each of `settings` on the rows `train` of `x` with labels `y_train` (classes
    /// `0..classes`) and predicts the rows of each of `evals`: `[setting][eval][row]`.
    #[allow(clippy::too_many_arguments)]
    fn fit_predict(&self, settings: &[Self::Setting], x: &Features, train: &[usize], y_train: &[usize], classes: usize, evals: &[&[usize]], seed: u64) -> Result<Vec<Vec<Vec<usize>>>>;

    /// Whether `setting` can be fit on `n_train` samples of `x` (PCA needs as many samples as
    /// components). Settings that cannot are left out of the search, as scikit-learn's grid
    /// search scores their failure as NaN and never picks them.
    fn admissible(&self, _setting: &Self::Setting, _n_train: usize, _x: &Features) -> bool {
        true
    }
}

/// How the nested cross-validation runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CvOptions {
    pub inner_folds: usize,
    /// Z-score the trajectories with each outer training set's statistics (before the inner
    /// search).
    pub zscore: bool,
    /// Outer splits evaluated at once.
    pub threads: usize,
    pub seed: u64,
}

/// What one outer split gave.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitOutcome {
    /// Index of the chosen setting.
    pub best: usize,
    /// Mean validation accuracy of each setting over the inner folds (NaN: not admissible).
    pub inner_scores: Vec<f64>,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    /// Predicted class of each test sample, in `Split::test` order.
    pub test_predictions: Vec<usize>,
}

/// Runs the nested cross-validation of `method` over `settings` on each split; with
/// `shuffle_labels`, each outer training set's labels are permuted first (the control: the
/// test labels stay true, so accuracy should fall to chance).
#[allow(clippy::too_many_arguments)]
pub fn nested_cv<M: Method>(method: &M, settings: &[M::Setting], x: &Features, y: &[usize], classes: usize, splits: &[Split], shuffle_labels: bool, options: &CvOptions) -> Result<Vec<SplitOutcome>> {
    if settings.is_empty() {
        return Err(IdentifyError::Input("an empty grid of settings".into()));
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<SplitOutcome>>>> = Mutex::new((0..splits.len()).map(|_| None).collect());
    let threads = options.threads.clamp(1, splits.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let s = next.fetch_add(1, Ordering::Relaxed);
                    if s >= splits.len() {
                        break;
                    }
                    let outcome = one_split(method, settings, x, y, classes, &splits[s], s, shuffle_labels, options);
                    let failed = outcome.is_err();
                    results.lock().expect("no panics while holding the lock")[s] = Some(outcome);
                    if failed {
                        next.store(splits.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let results = results.into_inner().expect("no panics while holding the lock");
    // The first error in split order, else every outcome (all present when none failed).
    let mut out = Vec::with_capacity(splits.len());
    for r in results {
        match r {
            Some(Ok(o)) => out.push(o),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    if out.len() != splits.len() {
        return Err(IdentifyError::Classifier("a split was not evaluated".into()));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn one_split<M: Method>(method: &M, settings: &[M::Setting], x: &Features, y: &[usize], classes: usize, split: &Split, index: usize, shuffle_labels: bool, options: &CvOptions) -> Result<SplitOutcome> {
    let scaled;
    let x = if options.zscore {
        scaled = x.zscored(&split.train);
        &scaled
    } else {
        x
    };
    let mut y_train: Vec<usize> = split.train.iter().map(|&i| y[i]).collect();
    if shuffle_labels {
        y_train.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(options.seed, &[0x5AF1E, index as u64])));
    }
    let seed = |fold: u64| mix_seed(options.seed, &[index as u64, fold, shuffle_labels as u64]);

    // The inner search: every admissible setting on every fold, fit at once per fold.
    let folds = stratified_kfold(&y_train, options.inner_folds);
    let smallest_fold_train = (0..options.inner_folds).map(|f| folds.iter().filter(|&&g| g != f).count()).min().unwrap_or(0);
    let admissible: Vec<usize> = (0..settings.len()).filter(|&i| method.admissible(&settings[i], smallest_fold_train, x)).collect();
    if admissible.is_empty() {
        return Err(IdentifyError::Input(format!("no setting of the grid can be fit on {smallest_fold_train} samples")));
    }
    let candidates: Vec<M::Setting> = admissible.iter().map(|&i| settings[i].clone()).collect();
    let mut inner_scores = vec![f64::NAN; settings.len()];
    let mut sums = vec![0.0; candidates.len()];
    for f in 0..options.inner_folds {
        let (mut tr, mut va, mut ytr, mut yva) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (pos, &fold) in folds.iter().enumerate() {
            if fold == f {
                va.push(split.train[pos]);
                yva.push(y_train[pos]);
            } else {
                tr.push(split.train[pos]);
                ytr.push(y_train[pos]);
            }
        }
        let predictions = method.fit_predict(&candidates, x, &tr, &ytr, classes, &[&va], seed(f as u64 + 1))?;
        for (sum, p) in sums.iter_mut().zip(&predictions) {
            *sum += accuracy(&p[0], &yva);
        }
    }
    for (&i, sum) in admissible.iter().zip(&sums) {
        inner_scores[i] = sum / options.inner_folds as f64;
    }
    // The first of the best, as scikit-learn's `best_index_`.
    let best_candidate = (0..candidates.len()).fold(0, |b, i| if sums[i] > sums[b] { i } else { b });
    let best = admissible[best_candidate];

    let predictions = method.fit_predict(std::slice::from_ref(&settings[best]), x, &split.train, &y_train, classes, &[&split.train, &split.test], seed(0))?;
    let y_test: Vec<usize> = split.test.iter().map(|&i| y[i]).collect();
    Ok(SplitOutcome {
        best,
        inner_scores,
        train_accuracy: accuracy(&predictions[0][0], &y_train),
        test_accuracy: accuracy(&predictions[0][1], &y_test),
        test_predictions: predictions[0][1].clone(),
    })
}

/// The share of `predicted` equal to `truth` (0 for no samples).
pub fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

/// Mean and standard deviation (population, as numpy's default) of `values`.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|c| format!("class{c}")).collect()
    }

    #[test]
    fn outer_splits_are_balanced_disjoint_and_seeded() {
        // Classes of 12, 9 and 10 samples: 9 per class, round(0.25·9) = 2 test, 7 train.
        let y: Vec<usize> = [vec![0; 12], vec![1; 9], vec![2; 10]].concat();
        let splits = outer_splits(&y, 3, &Pools::Shared { samples: (0..y.len()).collect(), test_fraction: 0.25 }, 10, 5, 7, &names(3)).unwrap();
        assert_eq!(splits.len(), 10);
        for s in &splits {
            assert_eq!(s.train.len(), 21);
            assert_eq!(s.test.len(), 6);
            for c in 0..3 {
                assert_eq!(s.train.iter().filter(|&&i| y[i] == c).count(), 7);
                assert_eq!(s.test.iter().filter(|&&i| y[i] == c).count(), 2);
            }
            assert!(s.train.iter().all(|i| !s.test.contains(i)), "train and test overlap");
            let mut t = s.train.clone();
            t.sort_unstable();
            t.dedup();
            assert_eq!(t.len(), s.train.len(), "a sample twice in train");
        }
        assert_ne!(splits[0], splits[1], "splits differ");
        assert_eq!(splits, outer_splits(&y, 3, &Pools::Shared { samples: (0..y.len()).collect(), test_fraction: 0.25 }, 10, 5, 7, &names(3)).unwrap());
        assert_ne!(splits, outer_splits(&y, 3, &Pools::Shared { samples: (0..y.len()).collect(), test_fraction: 0.25 }, 10, 5, 8, &names(3)).unwrap());
    }

    #[test]
    fn held_out_samples_are_exactly_the_test_samples() {
        let y: Vec<usize> = (0..40).map(|i| i % 2).collect();
        // Samples 30..40 are the held-out architecture.
        let held: Vec<usize> = (30..40).collect();
        let kept: Vec<usize> = (0..30).collect();
        let pools = Pools::HeldOut { kept: kept.clone(), held: held.clone(), test_fraction: 0.25 };
        let splits = outer_splits(&y, 2, &pools, 5, 5, 0, &names(2)).unwrap();
        for s in &splits {
            assert!(s.test.iter().all(|i| held.contains(i)));
            assert!(s.train.iter().all(|i| kept.contains(i)));
            let mut t = s.test.clone();
            t.sort_unstable();
            assert_eq!(t, held, "every held-out sample is tested (5 per class)");
            assert_eq!(s.train.len(), 2 * 11, "round(0.75 · 15) per class");
        }
        // A held-out set with only one of the classes tests that class only.
        let pools = Pools::HeldOut { kept, held: vec![30, 32, 34], test_fraction: 0.25 };
        let s = &outer_splits(&y, 2, &pools, 1, 5, 0, &names(2)).unwrap()[0];
        assert_eq!(s.test.len(), 3);
    }

    #[test]
    fn too_small_classes_are_one_line_errors() {
        let y = [0, 0, 0, 1];
        let e = outer_splits(&y, 2, &Pools::Shared { samples: (0..y.len()).collect(), test_fraction: 0.25 }, 10, 5, 0, &names(2)).unwrap_err().to_string();
        assert!(e.contains("a class has 1 samples") && e.contains("class0 3, class1 1"), "{e}");
        let y: Vec<usize> = (0..16).map(|i| i % 2).collect();
        let e = outer_splits(&y, 2, &Pools::Shared { samples: (0..y.len()).collect(), test_fraction: 0.25 }, 10, 8, 0, &names(2)).unwrap_err().to_string();
        assert!(e.contains("6 training samples per class") && e.contains("--inner-folds") && !e.contains('\n'), "{e}");
    }

    /// By hand from scikit-learn 1.x's `StratifiedKFold._make_test_folds`.
    #[test]
    fn stratified_folds_match_scikit_learn() {
        // np.array([1,1,1,0,0,0,0,1,0,1]), n_splits = 3 → test folds [0,0,1,0,0,1,2,1,2,2]:
        // classes by first appearance: 1 → 0, 0 → 1; sorted encoded y [0×5, 1×5] dealt over 3
        // folds: allocation [[2,2],[2,1],[1,2]] (fold 0 gets positions 0,3,6,9 = 0,0,1,1).
        let y = [1, 1, 1, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(stratified_kfold(&y, 3), [0, 0, 1, 0, 0, 1, 2, 1, 2, 2]);
        let y = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1];
        assert_eq!(stratified_kfold(&y, 5), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn mean_and_sd_are_population_statistics() {
        assert_eq!(mean_sd(&[0.5, 1.0]), (0.75, 0.25));
        assert_eq!(accuracy(&[0, 1, 1], &[0, 1, 0]), 2.0 / 3.0);
    }
}
