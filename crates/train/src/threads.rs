//! The CPU backend's threads: rayon's global pool, which burn-flex and plastic's own CPU ops
//! share, and how a training run sits on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::Device;

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
/// returns its result. On the CPU backend the pool's other workers stay awake meanwhile.
///
/// A parallel op called from outside the pool is injected into it and waited on: the caller
/// sleeps on a futex and a worker is woken, for every op. A training step of a small ConvRNN
/// runs thousands of such ops, and the waking and sleeping cost more than some of the ops.
/// From a worker, an op's tasks go to that worker's own queue, it works on them itself, and
/// the other workers steal what they can.
///
/// Stealing alone is not enough: between two ops an idle rayon worker spins for a few
/// microseconds, then sleeps, and the next op has to wake it (a futex wake, tens of
/// microseconds on a virtual machine). The worker that runs `work` meanwhile finishes its own
/// half and waits for the late one. So on `device`'s CPU backend each other worker runs a
/// loop that takes work as soon as it is queued (see [`keep_awake`]), as OpenMP's threads
/// spin under PyTorch; the loops end when `work` returns or unwinds. On a GPU the CPU threads
/// mostly wait on the device, and spinning would only take cores from the data loader.
pub fn on_cpu_pool<R: Send>(device: &Device, work: impl FnOnce() -> R + Send) -> R {
    let spin = crate::device::backend_name(device) == "cpu" && rayon::current_num_threads() > 1;
    rayon::scope(|_| {
        let _awake = spin.then(|| AwakeWorkers::start(rayon::current_thread_index()));
        work()
    })
}

/// The pool's other workers held in [`keep_awake`] until this is dropped.
struct AwakeWorkers(Arc<AtomicBool>);

impl AwakeWorkers {
    fn start(trainer: Option<usize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        rayon::spawn_broadcast(move |worker| {
            // The trainer's own copy returns at once: looping there would stall the work
            // beneath it on that thread's stack, and the loop would never see its stop.
            if Some(worker.index()) != trainer {
                keep_awake(&flag);
            }
        });
        AwakeWorkers(stop)
    }
}

impl Drop for AwakeWorkers {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Takes queued rayon work on this worker until `stop`. Idle, it spins with a pause for up to
/// 1 ms (an op's tasks are queued microseconds apart), then yields the core to other threads
/// each turn, and after 20 ms of nothing (an evaluation's file writes, a slow data loader) it
/// sleeps 100 µs a turn: no worse a delay than rayon's own sleep, and almost no CPU.
fn keep_awake(stop: &AtomicBool) {
    AWAKE.fetch_add(1, Ordering::Relaxed);
    let mut idle_since: Option<Instant> = None;
    let mut idle = Duration::ZERO;
    let mut turns = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = None;
            idle = Duration::ZERO;
            continue;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        // Reading the clock costs more than a pause: look at it every 64 idle turns.
        turns = turns.wrapping_add(1);
        if turns % 64 == 0 {
            idle = since.elapsed();
        }
        if idle > Duration::from_millis(20) {
            std::thread::sleep(Duration::from_micros(100));
        } else if idle > Duration::from_millis(1) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    AWAKE.fetch_sub(1, Ordering::Relaxed);
}

/// How many workers are in [`keep_awake`] now (for the tests).
static AWAKE: AtomicUsize = AtomicUsize::new(0);

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
    use super::*;

    /// The work runs on a worker of the global pool and its result comes back; meanwhile, on
    /// the CPU backend, every other worker is held awake, and when the work returns all of
    /// them are let go.
    #[test]
    fn work_on_the_cpu_pool_runs_on_a_worker_with_the_others_awake() {
        assert_eq!(rayon::current_thread_index(), None, "the test thread is not a worker");
        let others = rayon::current_num_threads() - 1;
        let (index, sum, awake) = on_cpu_pool(&Device::flex(), || {
            let until = Instant::now() + Duration::from_secs(10);
            while AWAKE.load(Ordering::Relaxed) < others && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            // The awake workers still take work: a join's second half runs on one of them.
            let (_, stolen) = rayon::join(|| std::thread::sleep(Duration::from_millis(50)), rayon::current_thread_index);
            (rayon::current_thread_index(), (1..=4).sum::<i32>(), (AWAKE.load(Ordering::Relaxed), stolen))
        });
        assert!(index.is_some());
        assert_eq!(sum, 10);
        assert_eq!(awake.0, others, "workers held awake");
        if others > 0 {
            assert_ne!(awake.1, index, "the join's second half was taken by an awake worker");
        }
        let until = Instant::now() + Duration::from_secs(10);
        while AWAKE.load(Ordering::Relaxed) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(AWAKE.load(Ordering::Relaxed), 0, "every worker let go");
    }
}
