//! Learning-rule identification (Nayebi, Srivastava et al. 2020): classifiers that tell which
//! learning rule (or optimiser, or both) trained a network from the trajectories of its layers'
//! observables over training.
//!
//! One sample is one layer of one trained run; its features are the trajectories of the
//! observable statistics (a sweep's runs gathered into `dataset.npz` by [`dataset::gather`])
//! and the layer's position (early / middle / deep). Three classifiers, evaluated by nested
//! cross-validation ([`cv`]): a random forest ([`forest`]), a linear SVM with optional PCA
//! ([`svm`]) and a small 1-D convolutional net over time built with burn ([`conv1d`]).
//! [`identify`] runs them all on a data set and writes `identify.json`, `splits.json`
//! (so `scripts/identify_sklearn.py` can refit scikit-learn's models on the same splits) and the
//! figures.
//!
//! ```no_run
//! use plastic_identify::{IdentifyOptions, identify};
//!
//! let options = IdentifyOptions { dataset: "sweeps/demo".into(), ..Default::default() };
//! let report = identify(&options).unwrap();
//! for (classifier, sets) in &report.classifiers {
//!     for (set, r) in sets {
//!         println!("{classifier} {set}: {:.1} % (chance {:.1} %)", 100.0 * r.test_accuracy_mean, 100.0 * report.chance);
//!     }
//! }
//! ```
//!
//! What comes from libraries and what is ours (chosen by reading linfa 0.8.1, smartcore 0.7.0
//! and the `liblinear` 1.0 crate):
//! - **Linear SVM**: scikit-learn's `LinearSVC` problem (squared hinge, L2, one-vs-rest, a
//!   penalised intercept), solved to convergence by a finite Newton method written here on
//!   smartcore's Cholesky ([`svm`]). LIBLINEAR (the `liblinear` crate compiles its 2.30 sources
//!   offline) solves the same problem but its primal solver stops early on raw-observable
//!   scales at large C, as scikit-learn's does (a gradient test relative to w = 0): measured on
//!   a 276-feature set at C = 5000, objective 266 (LIBLINEAR 2.30) and 9.9 (scikit-learn) against
//!   an optimum of 1.44. LIBLINEAR stays as a test dependency: where it converges, the weights
//!   agree to 1e-5. linfa-svm (SMO on a kernel matrix, hinge loss, binary) and smartcore's SVC
//!   solve other problems.
//! - **PCA**: an exact PCA on smartcore's symmetric eigensolver (Householder + QL, pure Rust,
//!   eigenvalues sorted descending), of the Gram matrix when there are fewer samples than
//!   features (the usual case: ~100 layers × 504 features), else of the covariance
//!   ([`svm::Pca`]). smartcore's own `PCA` decomposes the n × n covariance whenever samples ≤
//!   features (504 × 504 at every inner fold, where the Gram matrix is ~100 × 100);
//!   linfa-reduction's PCA is a truncated LOBPCG SVD, which needs few components relative to
//!   the data's size.
//! - **Random forest**: ours ([`forest`]). scikit-learn samples `max_features` candidates at
//!   every split and averages the trees' class probabilities. smartcore samples per split, but
//!   only inside its forest (`fit_weak_learner` is crate-private), which votes hard and draws a
//!   per-class bootstrap; linfa-ensemble draws one feature subset per tree and votes hard, and
//!   linfa-trees has no per-split sampling. A library tree cannot give a random forest, so the
//!   CART trees, their bootstrap and the probability vote are written here, to scikit-learn's
//!   rules.
//! - **1-D conv net**: burn ([`conv1d`]).

pub mod conv1d;
pub mod cv;
pub mod dataset;
pub mod features;
pub mod forest;
mod matrix;
mod report;
mod run;
pub mod svm;

pub use dataset::{Dataset, GatherSummary, SweepRun, gather, load};
pub use features::{FeatureSet, LabelKind};
pub use matrix::Matrix;
pub use report::{ClassifierResult, IdentifyReport, NoiseRow};
pub use run::{ClassifierKind, HoldOut, IdentifyOptions, identify, identify_with};

/// Why identification failed. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyError {
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io { path: std::path::PathBuf, message: String },
    /// The data set or the options do not allow the analysis asked for (a missing file, an
    /// unknown hold-out key, a class with too few samples for the splits).
    #[error("{0}")]
    Input(String),
    /// A classifier failed on data that passed the checks.
    #[error("{0}")]
    Classifier(String),
    /// A figure could not be drawn.
    #[error(transparent)]
    Plot(#[from] plastic_plot::PlotError),
}

impl IdentifyError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, e: impl std::fmt::Display) -> Self {
        IdentifyError::Io { path: path.into(), message: e.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, IdentifyError>;

/// Writes `bytes` to `path` through a temporary file beside it and a rename, so a reader never
/// sees half a file.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| IdentifyError::io(path, e)))
}

/// Like [`write_atomic`], with the temporary file written by `write`.
pub(crate) fn write_atomic_with(path: &std::path::Path, write: impl FnOnce(&std::path::Path) -> Result<()>) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| IdentifyError::io(dir, e))?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| IdentifyError::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A seed for one purpose, mixed from a base seed and indices (SplitMix64 steps), so each
/// split, fold and tree gets its own stream whatever order threads run them in.
pub(crate) fn mix_seed(base: u64, parts: &[u64]) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    parts.iter().fold(splitmix(base), |acc, &p| splitmix(acc ^ splitmix(p)))
}
