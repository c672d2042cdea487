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
pub mod trainer;

pub use config::RunConfig;
pub use error::{Result, TrainError};
pub use network::Network;
pub use run_dir::RunDir;
pub use trainer::{RunStatus, Summary, TrainObserver, TrainOptions, train};

/// Sets up the CPU backend's threads: rayon's global pool (used by burn-flex) with `threads`
/// workers (0: all cores), each flushing subnormal floats to zero, as is the calling thread.
/// Call once, before any tensor work.
///
/// Subnormals (|x| < 1.2e-38) appear in long recurrent unrolls with small weights and make
/// x86 CPUs several times slower; flushing them changes results only below that magnitude and
/// keeps runs deterministic.
pub fn set_threads(threads: usize) {
    flush_subnormals();
    // The main thread's 8 MiB of stack rather than rayon's 2 MiB default: training runs on a
    // worker ([`on_cpu_pool`]).
    let mut pool = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).start_handler(|_| flush_subnormals());
    if threads > 0 {
        pool = pool.num_threads(threads);
    }
    let _ = pool.build_global();
}

/// Runs `work` on a worker thread of rayon's global pool (set up by [`set_threads`] first) and
/// returns its result.
///
/// A parallel op called from outside the pool is injected into it and waited on: the caller
/// sleeps on a futex and a worker is woken, for every op. A training step of a small ConvRNN
/// runs thousands of such ops, and the waking and sleeping cost more than some of the ops.
/// From a worker, an op's tasks go to that worker's own queue, it works on them itself, and
/// the other workers steal what they can.
pub fn on_cpu_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

/// Sets the FTZ and DAZ bits of this thread's MXCSR (x86-64; a no-op elsewhere).
pub fn flush_subnormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads and writes this thread's MXCSR only; FTZ (bit 15) and DAZ (bit 6) exist on
    // every x86-64 CPU.
    unsafe {
        let mut csr: u32 = 0;
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
        csr |= (1 << 15) | (1 << 6);
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
    }
}

#[cfg(test)]
mod tests {
    /// The work runs on a worker of the global pool, and its result comes back.
    #[test]
    fn work_on_the_cpu_pool_runs_on_a_worker() {
        assert_eq!(rayon::current_thread_index(), None, "the test thread is not a worker");
        let (index, sum) = super::on_cpu_pool(|| (rayon::current_thread_index(), (1..=4).sum::<i32>()));
        assert!(index.is_some());
        assert_eq!(sum, 10);
    }
}
