//! The [`ObservableRecorder`]: at each point of the schedule, reads every layer of a network
//! through [`ObservedNetwork`] on a fixed probe batch and turns what it sees into one row of
//! statistics per layer and realism view.
//!
//! It knows the network only through the `rules` layer trait and nothing of the optimiser;
//! the training loop calls [`ObservableRecorder::record_due`] at the top of every step (the
//! model after `step` updates) and once more after the last step.
//!
//! Seeds: every layer has its own seed, hashed from the recorder's seed and the layer's index.
//! As in the original, the activations' units, the weights' synapses and the activity
//! change's input units are drawn from that seed, the activity change's output units from
//! seed + 1 (the hash makes a neighbouring layer's seed unrelated to it); measurement noise
//! is drawn per (layer, step, measure), so it is fresh at every point and the same after a
//! resume.

use std::collections::HashMap;
use std::path::Path;
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
    /// Seconds spent observing (for the cost check).
    pub seconds: f64,
}

impl ObservableRecorder {
    /// A recorder for a run of `total_steps` steps whose observed layers are `layers` (in
    /// forward order). `probe` is the fixed probe batch on the model's inner device; `seed` the
    /// root of the realism draws.
    pub fn new(config: &ObserveConfig, run: &str, layers: Vec<String>, total_steps: u64, seed: u64, probe: Tensor<4>) -> Self {
        let names = config.statistics.names();
        let data = RunObservables::new(run, &names, layers, config.views.clone());
        Self { config: config.clone(), names, schedule: recording_steps(config.points, total_steps), probe, seed, data, subsets: HashMap::new(), seconds: 0.0 }
    }

    /// The steps at which points are recorded (a step may repeat in a very short run).
    pub fn schedule(&self) -> &[u64] {
        &self.schedule
    }

    /// What has been recorded so far.
    pub fn observables(&self) -> &RunObservables {
        &self.data
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

    /// Records every point scheduled at `step` (none, one, or a repeat in a short run).
    /// Returns whether anything was recorded. Nothing is written: call [`Self::checkpoint`]
    /// with every checkpoint (so a resumed run finds the points before it) and
    /// [`Self::write`] at the end.
    pub fn record_due(&mut self, model: &dyn ObservedNetwork, step: u64) -> Result<bool> {
        let due = self.schedule.iter().filter(|&&s| s == step).count();
        let have = self.data.points.iter().filter(|p| p.step == step).count();
        if due <= have {
            return Ok(false);
        }
        let started = Instant::now();
        let (values, extra) = self.observe(model, step);
        for _ in have..due {
            self.data.push_point_with_extras(step, values.clone(), extra.clone())?;
        }
        self.seconds += started.elapsed().as_secs_f64();
        Ok(true)
    }

    /// Writes `observables.npz` and `observables.csv` into `run_dir` (atomically).
    pub fn write(&mut self, run_dir: &Path) -> Result<()> {
        let started = Instant::now();
        self.data.write(run_dir)?;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Writes `observables.npz` only, beside a checkpoint: all a resumed run needs.
    pub fn checkpoint(&mut self, run_dir: &Path) -> Result<()> {
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
    /// the extra kernels (weights only).
    pub fn observe(&mut self, model: &dyn ObservedNetwork, step: u64) -> (Vec<f64>, Vec<f64>) {
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
        if self.data.points.is_empty() && self.data.extras.is_empty() {
            self.data.extras = observed.iter().enumerate().flat_map(|(l, o)| o.extra_weights.iter().map(move |(name, _)| ExtraKernel { name: name.clone(), layer: l })).collect();
        }
        let mut values = Vec::with_capacity(layers.len() * views.len() * self.names.len());
        let mut extra = Vec::new();
        let weight_names: Vec<ObservableName> = self.names.iter().filter(|n| n.measure() == Measure::Weight).copied().collect();
        // The unit subsets are drawn once and kept, so they are looked up first; the rows, which
        // are independent, are then computed in parallel (half the recorder's time on the
        // quickstart), and come back in order.
        let rows: Vec<RowInputs> = observed.iter().enumerate().flat_map(|(l, o)| (0..views.len()).map(move |v| (l, v, o))).map(|(l, v, o)| self.row_inputs(l, v, o, step)).collect();
        let names = &self.names;
        let computed: Vec<Vec<f64>> = rows.par_iter().map(|r| r.row(names, &views[r.view], &observed[r.layer])).collect();
        values.extend(computed.into_iter().flatten());
        for (l, o) in observed.iter().enumerate() {
            let noise_seed = indexed_seed(self.layer_seed(l), step);
            for (k, (_, w)) in o.extra_weights.iter().enumerate() {
                for (v, view) in views.iter().enumerate() {
                    let subset = self.subset(l, v, Units::Extra(k), w.len()).clone();
                    extra.extend(weight_statistics(&view.apply(w, 1, &subset, noise_seed, 3 + k as u64), &weight_names));
                }
            }
        }
        (values, extra)
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
