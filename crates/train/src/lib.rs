//! The `plastic` training loop and everything around it: run configuration, device selection,
//! optimisers and schedules, metrics, checkpoints, evaluation.
//!
//! ```no_run
//! use plastic_train::{RunConfig, TrainOptions, device, train, progress::ProgressReporter};
//!
//! let config = RunConfig::load("configs/quickstart.toml".as_ref(), &[]).unwrap();
//! let splits = plastic_data::open(&config.data).unwrap();
//! let options = TrainOptions { out: "runs".into(), device: device::select(device::DeviceChoice::Auto).unwrap(), resume: false, force: false };
//! let summary = train(&config, &splits, &options, &mut ProgressReporter::new()).unwrap();
//! println!("test accuracy {:.3}", summary.test_accuracy);
//! ```

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod device;
mod error;
pub mod eval;
pub mod export;
pub mod metrics;
pub mod network;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod run_dir;
pub mod schedule;
pub mod store;
pub mod trainer;

pub use config::RunConfig;
pub use error::{Result, TrainError};
pub use network::Network;
pub use run_dir::RunDir;
pub use trainer::{Summary, TrainObserver, TrainOptions, train};

/// Sets the number of CPU threads of the flex backend (rayon's global pool). Call before any
/// tensor work; 0 keeps rayon's default (all cores).
pub fn set_threads(threads: usize) {
    if threads > 0 {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
    }
}
