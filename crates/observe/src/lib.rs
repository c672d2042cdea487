//! Observables of learning (Nayebi, Srivastava et al. 2020, "Identifying Learning Rules From
//! Neural Network Observables"): statistics of each layer's weights, activations and
//! layer-wise activity changes, recorded at points spread over training, and the per-run files
//! (`observables.npz`, `observables.csv`) that `plastic identify` learns the rule from.
//!
//! The host side lives here and knows nothing of tensors: the names of the 45 statistics and
//! the original's 24 "admissible" ones ([`names`]), their exact definitions ([`stats`]: TF 1.x's
//! "nearest" percentiles, population variance, Pearson's second skewness, non-excess
//! kurtosis), the experimental-realism views (noise, then a random subset of units:
//! [`realism`]), the recording schedule ([`schedule`]) and the files ([`files`]).
//!
//! ```
//! use plastic_observe::{RealismView, RunObservables, StatisticSet, UnitSubset, recording_steps};
//! use plastic_observe::stats::{activation_statistics, activity_change_statistics, weight_statistics};
//!
//! let names = StatisticSet::Admissible.names();
//! let steps = recording_steps(3, 100); // [0, 50, 100]
//!
//! // One layer seen through a view that keeps half its units and adds noise (σ = 0.1).
//! let view = RealismView { unit_fraction: 0.5, noise_std: 0.1 };
//! let (batch, units) = (2, 4);
//! let activations = [0.5f32, -1.0, 2.0, 0.0, 1.5, 0.25, -0.5, 3.0]; // [batch, units]
//! let subset = UnitSubset::new(units, view.unit_fraction, 7);
//! let seen = view.apply(&activations, batch, &subset, 7, 0);
//!
//! let mut row = weight_statistics(&[0.1, -0.2, 0.3], &names); // 13 weight statistics
//! row.extend(activation_statistics(&seen, batch, &names)); // 8 activation statistics
//! row.extend(activity_change_statistics(&[0.9, 1.1], &names)); // 3 activity changes
//! assert_eq!(row.len(), names.len()); // the admissible names come grouped by measure
//!
//! let mut observables = RunObservables::new("demo", &names, vec!["fc".into()], vec![view]);
//! observables.push_point(steps[0], row).unwrap();
//! # let dir = std::env::temp_dir().join(format!("plastic-observe-doc-{}", std::process::id()));
//! observables.write(&dir).unwrap(); // observables.npz + observables.csv
//! assert_eq!(RunObservables::read(&dir).unwrap().points, observables.points);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

pub mod config;
mod error;
pub mod files;
pub mod names;
pub mod plot;
pub mod realism;
pub mod recorder;
pub mod schedule;
pub mod stats;

pub use config::{ObserveConfig, TimeStep};
pub use error::{ObserveError, Result};
pub use recorder::ObservableRecorder;
pub use files::{ExtraKernel, PointRecord, Position, RunObservables, layer_positions};
pub use names::{ADMISSIBLE, Measure, ObservableName, Statistic, StatisticSet, Transform};
pub use realism::{RealismView, UnitSubset, add_noise};
pub use schedule::recording_steps;
pub use stats::{activation_statistics, activity_change_statistics, observable_row, weight_statistics};
