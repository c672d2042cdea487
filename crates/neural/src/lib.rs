//! Comparing plastic models with brains (Nayebi et al. 2018/2022; Brain-Score's conventions).
//!
//! - [`features`]: every layer's output at every time step for a stimulus set, streamed to disk
//!   (`plastic features`).
//! - [`fit`]: neural predictivity — cross-validated ridge or PLS from each layer × step to each
//!   neuroid, Pearson r on held-out stimuli, the median over a region's neuroids, divided by
//!   the responses' split-half reliability; the best layer and step per region is the
//!   region-to-layer commitment (`plastic neural-fit`).
//! - [`ost`]: object solution times, the first step from which an image is solved for good
//!   (`plastic ost`).
//!
//! A run is loaded with its `preprocessing.json` ([`plastic_data::Preprocessing`]), never its
//! training data; stimuli are read by [`plastic_data::Stimuli`].

mod error;
pub mod features;
pub mod fit;
pub mod linalg;
pub mod ost;
pub mod regress;
pub mod responses;
pub mod run;

pub use error::{NeuralError, Result};
pub use features::{FeatureOptions, Pool};
pub use fit::{FitOptions, FitReport, Method};
pub use ost::Criterion;
pub use responses::Responses;
pub use run::Subject;
