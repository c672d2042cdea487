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
pub mod memory;
pub mod export;
pub mod metrics;
pub mod network;
pub mod optim;
pub mod progress;
pub mod run_dir;
pub mod schedule;
pub mod store;
mod threads;
pub mod trainer;

pub use config::RunConfig;
pub use error::{Result, TrainError};
pub use network::Network;
pub use run_dir::RunDir;
pub use threads::{flush_subnormals, on_cpu_pool, set_threads};
pub use trainer::{RunStatus, Summary, TrainObserver, TrainOptions, train};
