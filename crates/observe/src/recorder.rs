//! The [`ObservableRecorder`]: at each point of the schedule, reads every layer of a network
//! through [`ObservedNetwork`] on a fixed probe batch and turns what it sees into one row of
//! statistics per layer and realism view.
//!
//! It knows the network only through the `rules` layer trait and nothing of the optimiser;
//! the training loop calls [`ObservableRecorder::record_due`] at the top of every step (the
//! model after `step` updates) and once more after the last step.
//!
//! A point has two halves. Reading the network (the probe batch's forward and each layer's
//! Jacobian) needs the model as it is at that step, so the training loop waits for it. The
//! statistics of what was read need only those host copies: when the run has more than one
//! thread they run on a thread of the recorder's own while training goes on, and are settled,
//! in order, before anything reads or writes the points (on the quickstart they were a third of
//! the recorder's time). That thread is a one-thread rayon pool, not the run's: the training
//! loop runs on a worker of the run's pool, and a one-worker pool blocked on work queued behind
//! it would never finish. A one-thread run computes its statistics in line.
//!
//! Seeds: every layer has its own seed, hashed from the recorder's seed and the layer's index.
//! As in the original, the activations' units, the weights' synapses and the activity
//! change's input units are drawn from that seed, the activity change's output units from
//! seed + 1 (the hash makes a neighbouring layer's seed unrelated to it); measurement noise
//! is drawn per (layer, step, measure), so it is fresh at every point and the same after a
//! resume.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, channel};
use std::time::Instant;

use burn::tensor::Tensor;
use plastic_rules::{LayerObservation, ObservedNetwork, OutputMask, indexed_seed};
use rayon::prelude::*;

use crate::config::ObserveConfig;
use crate::error::Result;
use crate::files::{ExtraKernel, RunObservables};
use crate::names::{Measure, ObservableName};
use crate::realism::{RealismView, UnitSubset};
use crate::schedule::recording_steps;
use crate::stats::{observable_row, weight_statistics};

/// Which units of a layer a subset is drawn over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Units {
    Weights,
    Outputs,
    JacobianOutputs,
    JacobianInputs,
    /// The k-th extra kernel of the layer.
    Extra(usize),
}

/// Records a run's observables.
pub struct ObservableRecorder {
    config: ObserveConfig,
    names: Vec<ObservableName>,
    schedule: Vec<u64>,
    probe: Tensor<4>,
    seed: u64,
    data: RunObservables,
    subsets: HashMap<(usize, usize, Units), UnitSubset>,
    /// Points read from the network whose statistics are still being computed, oldest first.
    pending: Vec<Pending>,
    /// Where the statistics are computed beside training (none in a one-thread run).
    statistics_thread: Option<rayon::ThreadPool>,
    /// Seconds the training loop spent in the recorder (for the cost check): reading the
    /// network, writing files, and waiting for statistics not finished when they were needed.
    pub seconds: f64,
}

/// A point read from the network, its statistics computed on the recorder's thread.
struct Pending {
    step: u64,
    /// How many times the point is recorded (a step repeats in a very short run).
    copies: usize,
    statistics: Receiver<std::thread::Result<(Vec<f64>, Vec<f64>)>>,
}

impl ObservableRecorder {
    /// A recorder for a run of `total_steps` steps whose observed layers are `layers` (in
    /// forward order). `probe` is the fixed probe batch on the model's inner device; `seed` the
    /// root of the realism draws.
    pub fn new(config: &ObserveConfig, run: &str, layers: Vec<String>, total_steps: u64, seed: u64, probe: Tensor<4>) -> Self {
        let names = config.statistics.names();
        let data = RunObservables::new(run, &names, layers, config.views.clone());
        let statistics_thread = (rayon::current_num_threads() > 1).then(|| rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "observables".into()).build().ok()).flatten();
        Self { config: config.clone(), names, schedule: recording_steps(config.points, total_steps), probe, seed, data, subsets: HashMap::new(), pending: Vec::new(), statistics_thread, seconds: 0.0 }
    }

    /// The steps at which points are recorded (a step may repeat in a very short run).
    pub fn schedule(&self) -> &[u64] {
        &self.schedule
    }

    /// What has been recorded so far (waiting for statistics still being computed).
    pub fn observables(&mut self) -> Result<&RunObservables> {
        self.settle()?;
        Ok(&self.data)
    }

    /// Continues a run from its checkpoint at `step`: takes back the points recorded before
    /// `step` from `run_dir`'s `observables.npz` (a point at `step` itself is recorded again,
    /// at the top of the resumed loop). A missing or different file starts afresh.
    pub fn resume(&mut self, run_dir: &Path, step: u64) {
        if let Ok(saved) = RunObservables::read(run_dir)
            && saved.obs_keys == self.data.obs_keys
            && saved.layers == self.data.layers
            && saved.views == self.data.views
        {
            self.data.points = saved.points.into_iter().filter(|p| p.step < step).collect();
            if !self.data.points.is_empty() {
                self.data.extras = saved.extras;
            }
        }
    }

    /// Records every point scheduled at `step` (none, one, or a repeat in a short run): reads
    /// the network now and leaves the statistics to a thread of their own. Returns whether
    /// anything was recorded. Nothing is written: call [`Self::checkpoint`] with every
    /// checkpoint (so a resumed run finds the points before it) and [`Self::write`] at the end.
    pub fn record_due(&mut self, model: &dyn ObservedNetwork, step: u64) -> Result<bool> {
        self.settle()?;
        let due = self.schedule.iter().filter(|&&s| s == step).count();
        let have = self.data.points.iter().filter(|p| p.step == step).count();
        if due <= have {
            return Ok(false);
        }
        let started = Instant::now();
        let point = self.read(model, step);
        let (send, statistics) = channel();
        match &self.statistics_thread {
            Some(thread) => thread.spawn(move || {
                let _ = send.send(std::panic::catch_unwind(move || point.statistics()));
            }),
            None => send.send(Ok(point.statistics())).expect("the receiver is here"),
        }
        self.pending.push(Pending { step, copies: due - have, statistics });
        self.seconds += started.elapsed().as_secs_f64();
        if self.statistics_thread.is_none() {
            self.settle()?;
        }
        Ok(true)
    }

    /// Adds the points whose statistics were being computed, in order.
    fn settle(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        for Pending { step, copies, statistics } in std::mem::take(&mut self.pending) {
            let (values, extra) = statistics.recv().expect("the statistics thread sends every point").unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for _ in 0..copies {
                self.data.push_point_with_extras(step, values.clone(), extra.clone())?;
            }
        }
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Writes `observables.npz` and `observables.csv` into `run_dir` (atomically).
    pub fn write(&mut self, run_dir: &Path) -> Result<()> {
        self.settle()?;
        let started = Instant::now();
        self.data.write(run_dir)?;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Writes `observables.npz` only, beside a checkpoint: all a resumed run needs.
    pub fn checkpoint(&mut self, run_dir: &Path) -> Result<()> {
        self.settle()?;
        let started = Instant::now();
        self.data.write_npz_only(run_dir)?;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn layer_seed(&self, layer: usize) -> u64 {
        indexed_seed(self.seed, layer as u64)
    }

    fn subset(&mut self, layer: usize, view: usize, units: Units, n: usize) -> &UnitSubset {
        let fraction = self.config.views[view].unit_fraction;
        // The original draws the activity change's output units from seed + 1.
        let seed = match units {
            Units::JacobianOutputs => self.layer_seed(layer) + 1,
            Units::Extra(k) => indexed_seed(self.layer_seed(layer), k as u64 + 1),
            _ => self.layer_seed(layer),
        };
        self.subsets.entry((layer, view, units)).or_insert_with(|| UnitSubset::new(n, fraction, seed))
    }

    /// One point of the model as it is now: `[L][V][S]` values, and `[E][V][S_w]` values of
    /// the extra kernels (weights only). Computed on the calling thread, not recorded.
    pub fn observe(&mut self, model: &dyn ObservedNetwork, step: u64) -> (Vec<f64>, Vec<f64>) {
        self.read(model, step).statistics()
    }

    /// What one point needs from the network as it is now, with the unit subsets and noise
    /// seeds its statistics are taken through.
    fn read(&mut self, model: &dyn ObservedNetwork, step: u64) -> PointReading {
        let layers = self.data.layers.clone();
        let views = self.config.views.clone();
        let (probe, time_step) = (self.probe.clone(), self.config.time_step.index());
        // The output masks each layer's Jacobian is summed with, one per view.
        let mut masks = |name: &str, units: usize| -> Vec<OutputMask> {
            let layer = layers.iter().position(|l| l == name).expect("observed layers are listed up front");
            (0..views.len())
                .map(|v| {
                    let subset = self.subset(layer, v, Units::JacobianOutputs, units);
                    (!subset.is_all()).then(|| {
                        let mut mask = vec![0.0; units];
                        subset.indices().iter().for_each(|&i| mask[i] = 1.0);
                        mask
                    })
                })
                .collect()
        };
        let observed = model.observe(probe, time_step, &mut masks);
        assert_eq!(observed.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), layers.iter().map(String::as_str).collect::<Vec<_>>(), "the network observes the layers it listed");
        if self.data.points.is_empty() && self.pending.is_empty() && self.data.extras.is_empty() {
            self.data.extras = observed.iter().enumerate().flat_map(|(l, o)| o.extra_weights.iter().map(move |(name, _)| ExtraKernel { name: name.clone(), layer: l })).collect();
        }
        // The unit subsets are drawn once and kept, so they are looked up here.
        let rows: Vec<RowInputs> = observed.iter().enumerate().flat_map(|(l, o)| (0..views.len()).map(move |v| (l, v, o))).map(|(l, v, o)| self.row_inputs(l, v, o, step)).collect();
        let mut extras = Vec::new();
        for (l, o) in observed.iter().enumerate() {
            let noise_seed = indexed_seed(self.layer_seed(l), step);
            for (k, (_, w)) in o.extra_weights.iter().enumerate() {
                for v in 0..views.len() {
                    extras.push(ExtraInputs { layer: l, kernel: k, view: v, noise_seed, weights: self.subset(l, v, Units::Extra(k), w.len()).clone() });
                }
            }
        }
        PointReading { names: self.names.clone(), views, observed, rows, extras }
    }

    /// What one layer's row through one view needs besides the observation: its unit subsets
    /// and noise seed.
    fn row_inputs(&mut self, l: usize, v: usize, o: &LayerObservation, step: u64) -> RowInputs {
        RowInputs {
            layer: l,
            view: v,
            noise_seed: indexed_seed(self.layer_seed(l), step),
            weights: self.subset(l, v, Units::Weights, o.weight.len()).clone(),
            outputs: self.subset(l, v, Units::Outputs, o.units).clone(),
            jacobian_outputs: self.subset(l, v, Units::JacobianOutputs, o.units).len(),
            jacobian_inputs: self.subset(l, v, Units::JacobianInputs, o.inputs).clone(),
        }
    }
}

/// One point as read from the network: the layers' observations and what each row of
/// statistics is taken through. Owns all it needs, so its statistics can be computed on
/// another thread.
struct PointReading {
    names: Vec<ObservableName>,
    views: Vec<RealismView>,
    observed: Vec<LayerObservation>,
    rows: Vec<RowInputs>,
    extras: Vec<ExtraInputs>,
}

impl PointReading {
    /// `[L][V][S]` values, and `[E][V][S_w]` values of the extra kernels. The rows are
    /// independent, so they are computed in parallel and come back in order.
    fn statistics(self) -> (Vec<f64>, Vec<f64>) {
        let Self { names, views, observed, rows, extras } = self;
        let values: Vec<Vec<f64>> = rows.par_iter().map(|r| r.row(&names, &views[r.view], &observed[r.layer])).collect();
        let weight_names: Vec<ObservableName> = names.iter().filter(|n| n.measure() == Measure::Weight).copied().collect();
        let extra = extras
            .iter()
            .flat_map(|e| {
                let w = &observed[e.layer].extra_weights[e.kernel].1;
                weight_statistics(&views[e.view].apply(w, 1, &e.weights, e.noise_seed, 3 + e.kernel as u64), &weight_names)
            })
            .collect();
        (values.into_iter().flatten().collect(), extra)
    }
}

/// One extra kernel through one view: its synapse subset and noise seed.
struct ExtraInputs {
    layer: usize,
    kernel: usize,
    view: usize,
    noise_seed: u64,
    weights: UnitSubset,
}

/// One layer's row through one view: the layer and view indices, the unit subsets and the
/// noise seed ([`ObservableRecorder::row_inputs`]).
struct RowInputs {
    layer: usize,
    view: usize,
    noise_seed: u64,
    weights: UnitSubset,
    outputs: UnitSubset,
    jacobian_outputs: usize,
    jacobian_inputs: UnitSubset,
}

impl RowInputs {
    /// The layer's statistics through the view, in the names' order.
    fn row(&self, names: &[ObservableName], view: &RealismView, o: &LayerObservation) -> Vec<f64> {
        let weights = view.apply(&o.weight, 1, &self.weights, self.noise_seed, 0);
        let activations = view.apply(&o.activation, o.batch, &self.outputs, self.noise_seed, 1);
        // g_b = Σ_{i ∈ inputs} J_bi / |outputs|, with J seen through the view (noise, then units).
        let jacobian = view.apply(&o.jacobians[self.view], o.batch, &self.jacobian_inputs, self.noise_seed, 2);
        let kept = self.jacobian_inputs.len();
        let g: Vec<f32> = jacobian.chunks_exact(kept.max(1)).map(|row| (row.iter().map(|&x| x as f64).sum::<f64>() / self.jacobian_outputs as f64) as f32).collect();
        observable_row(names, &weights, &activations, o.batch, &g)
    }
}
