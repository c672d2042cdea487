//! Batches in a fixed order, prepared ahead by background threads.
//!
//! Training batch `g` (the global step) is a pure function of `(seeds, g)`: the epoch
//! `g / steps_per_epoch` fixes a permutation of the training set (stream `epoch` of the order
//! seed), the position inside the epoch picks a slice of it, and the augmentation of each image
//! is drawn from a seed keyed by `g` (stream `g` of the augmentation seed). So a run resumed at step `g` sees exactly the batches an uninterrupted run
//! would, however many threads prepare them. (burn's multi-threaded loader yields batches in
//! completion order, which is why we have our own.)

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::set::ImageSet;
use crate::transform::{Augmentation, Batch, Normalization, make_batch};

/// The two seeds of a training loader. A run derives them from its seed, each for its own
/// purpose, so that neither shares a ChaCha stream with the weights' draws (layer k's W is
/// stream k of the weight seed, epoch k's shuffle stream k of the order seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderSeeds {
    /// The shuffle of every epoch.
    pub order: u64,
    /// Crops and flips.
    pub augmentation: u64,
}

/// How training batches are drawn.
#[derive(Debug, Clone)]
pub struct TrainLoader {
    set: Arc<ImageSet>,
    batch_size: usize,
    seeds: LoaderSeeds,
    normalization: Normalization,
    augmentation: Augmentation,
    workers: usize,
}

impl TrainLoader {
    /// `batch_size` is clamped to the set's size; an incomplete last batch of an epoch is
    /// dropped so every step sees the same shape.
    pub fn new(set: Arc<ImageSet>, batch_size: usize, seeds: LoaderSeeds, normalization: Normalization, augmentation: Augmentation, workers: usize) -> Self {
        let batch_size = batch_size.clamp(1, set.len().max(1));
        Self { set, batch_size, seeds, normalization, augmentation, workers: workers.max(1) }
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn steps_per_epoch(&self) -> usize {
        (self.set.len() / self.batch_size).max(1)
    }

    /// The example indices of batch `step`.
    pub fn indices(&self, step: usize) -> Vec<usize> {
        let epoch = step / self.steps_per_epoch();
        let within = step % self.steps_per_epoch();
        let perm = self.permutation(epoch);
        perm[within * self.batch_size..(within + 1) * self.batch_size].to_vec()
    }

    /// The shuffle of `epoch`: stream `epoch` of the order seed.
    pub fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seeds.order);
        rng.set_stream(epoch as u64);
        let mut perm: Vec<usize> = (0..self.set.len()).collect();
        perm.shuffle(&mut rng);
        perm
    }

    /// Batch `step`, built on the calling thread.
    pub fn batch(&self, step: usize) -> Batch {
        self.batch_from(&self.indices(step), step)
    }

    fn batch_from(&self, indices: &[usize], step: usize) -> Batch {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seeds.augmentation);
        rng.set_stream(step as u64);
        let aug_seed = rng.next_u64();
        make_batch(&self.set, indices, &self.normalization, Some((self.augmentation, aug_seed)))
    }

    /// An endless stream of batches `start, start + 1, …`, prepared by `workers` threads that
    /// each keep up to two batches ready.
    pub fn stream(&self, start: usize) -> BatchStream {
        let mut receivers = Vec::with_capacity(self.workers);
        let mut handles = Vec::with_capacity(self.workers);
        for w in 0..self.workers {
            let (tx, rx): (SyncSender<Batch>, Receiver<Batch>) = sync_channel(2);
            receivers.push(rx);
            let loader = self.clone();
            let stride = self.workers;
            handles.push(std::thread::spawn(move || {
                // Caching the permutation per epoch keeps each batch O(batch) instead of O(n).
                let mut cached: Option<(usize, Vec<usize>)> = None;
                let spe = loader.steps_per_epoch();
                let mut step = start + w;
                loop {
                    let epoch = step / spe;
                    if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
                        cached = Some((epoch, loader.permutation(epoch)));
                    }
                    let perm = &cached.as_ref().unwrap().1;
                    let within = step % spe;
                    let batch = loader.batch_from(&perm[within * loader.batch_size..(within + 1) * loader.batch_size], step);
                    if tx.send(batch).is_err() {
                        return; // the stream was dropped
                    }
                    step += stride;
                }
            }));
        }
        BatchStream { receivers, handles, start, next: start }
    }
}

/// Batches in step order; dropping it stops the threads.
pub struct BatchStream {
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<JoinHandle<()>>,
    start: usize,
    next: usize,
}

impl BatchStream {
    /// The step of the batch the next call to `next` returns.
    pub fn position(&self) -> usize {
        self.next
    }
}

impl Iterator for BatchStream {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        // Worker w produces start + w, start + w + W, …
        let worker = (self.next - self.start) % self.receivers.len();
        let batch = self.receivers[worker].recv().ok()?;
        self.next += 1;
        Some(batch)
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        self.receivers.clear(); // senders see a closed channel and return
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Batches over a whole set in order, without augmentation (validation, test, probes).
pub fn eval_batches<'a>(set: &'a ImageSet, batch_size: usize, norm: &'a Normalization) -> impl Iterator<Item = Batch> + 'a {
    let batch_size = batch_size.max(1);
    (0..set.len().div_ceil(batch_size)).map(move |b| {
        let indices: Vec<usize> = (b * batch_size..((b + 1) * batch_size).min(set.len())).collect();
        make_batch(set, &indices, norm, None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> Arc<ImageSet> {
        let pixels = (0..n * 4).map(|v| (v % 251) as u8).collect();
        Arc::new(ImageSet::new(pixels, (0..n as u32).map(|i| i % 3).collect(), [1, 2, 2], vec!["a".into(), "b".into(), "c".into()]).unwrap())
    }

    fn loader(workers: usize) -> TrainLoader {
        TrainLoader::new(set(50), 8, LoaderSeeds { order: 7, augmentation: 8 }, Normalization::identity(1), Augmentation { crop_padding: 1, flip: true }, workers)
    }

    #[test]
    fn an_epoch_visits_each_example_at_most_once() {
        let l = loader(1);
        let mut seen: Vec<usize> = (0..l.steps_per_epoch()).flat_map(|s| l.indices(s)).collect();
        assert_eq!(seen.len(), 48);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 48);
        assert_ne!(l.indices(0), l.indices(l.steps_per_epoch()), "each epoch reshuffles");
    }

    #[test]
    fn stream_order_does_not_depend_on_workers_or_start() {
        let one: Vec<Batch> = loader(1).stream(0).take(15).collect();
        let three: Vec<Batch> = loader(3).stream(0).take(15).collect();
        assert_eq!(one, three);
        let resumed: Vec<Batch> = loader(2).stream(9).take(6).collect();
        assert_eq!(&one[9..15], &resumed[..]);
        assert_eq!(one[4], loader(1).batch(4));
    }

    #[test]
    fn eval_batches_cover_the_set_once_in_order() {
        let s = set(10);
        let norm = Normalization::identity(1);
        let labels: Vec<u32> = eval_batches(&s, 4, &norm).flat_map(|b| b.labels).collect();
        assert_eq!(labels, s.labels);
    }
}
