//! Training-step benchmarks: images/s and peak memory of a model under each rule, on one
//! device, in one process. Rules are timed in interleaved rounds (BP, FA, …, BP, FA, …) and
//! each rule's median step time is compared with backprop's, so slow drifts of the machine
//! affect every rule alike.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use plastic_data::Splits;
use plastic_rules::init::normal_stream;
use plastic_rules::{FeedbackNetwork, MirrorSettings, RuleKind};
use serde::Serialize;

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::network::{Network, parameter_counts};
use crate::trainer::build_optimizer;

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// The config's `name` (a ConvRNN preset's name, e.g. `rgc_intermediate`; `run` for a
    /// model given by `--model`).
    pub name: String,
    pub model: String,
    pub rule: String,
    pub device: String,
    /// `train.precision`: f32, or mixed bf16 / f16.
    pub precision: String,
    /// Where the batches came from: `memory` (one fixed batch) or `loader` (the config's data
    /// through the training loader: decoding, augmentation and normalisation on its worker
    /// threads, overlapped with the steps as in training).
    pub batches: String,
    pub batch: usize,
    pub input: [usize; 3],
    /// ConvRNNs: time steps of the unroll.
    pub times: Option<usize>,
    pub params: usize,
    /// Median training-step time (forward, backward, optimiser step), milliseconds.
    pub step_ms: f64,
    pub images_per_second: f64,
    /// Median step time divided by backprop's on the same model, device and process.
    pub ratio_to_backprop: Option<f64>,
    /// Peak memory of the step, MiB: on the CPU the growth of the process's peak resident set
    /// while the case warms up over its resident set before (every case's model is alive
    /// already; `scripts/bench_pytorch.py` measures PyTorch the same way); on a GPU the device pool's bytes
    /// in use after the forward pass, when activations peak.
    pub peak_memory_mib: Option<f64>,
}

/// A model set up to be stepped repeatedly on a fixed random batch.
struct Case {
    model: Option<Network>,
    optimizer: crate::optim::Optimizer,
    images: Tensor<4>,
    targets: Tensor<1, Int>,
    mirror: Option<(MirrorSettings, usize)>,
    loss_scale: Option<f64>,
    /// With `--data`: the training loader's stream, a fresh batch every step.
    stream: Option<plastic_data::BatchStream>,
    step: usize,
}

impl Case {
    fn new(config: &RunConfig, input: [usize; 3], classes: usize, batch: usize, splits: Option<&Splits>, device: &Device) -> Result<Self> {
        let model = Network::build(config, input, classes, device)?;
        let inner = device.clone().without_autodiff();
        let n = batch * input.iter().product::<usize>();
        // In the run's precision, as the trainer feeds them (the network follows its input).
        let images = Tensor::<4>::from_data(TensorData::new(normal_stream(n, 1, 0), [batch, input[0], input[1], input[2]]), &inner);
        let images = Tensor::from_inner(images.cast(config.train.precision.dtype()));
        let labels: Vec<i64> = (0..batch as i64).map(|i| i % classes as i64).collect();
        let targets = Tensor::from_inner(Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &inner));
        let mirror = (config.rule.kind == RuleKind::WeightMirror && config.rule.source == plastic_rules::MirrorSource::Noise).then(|| {
            (MirrorSettings { noise_std: config.rule.noise_std, lr: config.rule.mirror_lr, decay: config.rule.mirror_decay, batch: config.rule.mirror_batch }, config.rule.mirror_every)
        });
        let optimizer = build_optimizer(config, &model, crate::trainer::total_steps(&config.train, 100));
        // f16 steps as the trainer's do: a scaled loss, gradients checked and unscaled.
        let loss_scale = config.train.precision.needs_loss_scale().then_some(config.train.loss_scale);
        let stream = splits.map(|s| s.train_loader(batch, crate::trainer::loader_seeds(config.seed)).stream(0));
        Ok(Self { model: Some(model), optimizer, images, targets, mirror, loss_scale, stream, step: 0 })
    }

    /// One training step; returns the device memory in use after the forward pass, if known.
    fn step(&mut self, device: &Device) -> Option<u64> {
        let model = self.model.take().expect("a model between steps");
        let (images, targets) = match self.stream.as_mut().and_then(Iterator::next) {
            Some(batch) => {
                let (images, targets) = crate::eval::batch_tensors(&batch, &device.clone().without_autodiff());
                (Tensor::from_inner(images.cast(self.images.dtype())), Tensor::from_inner(targets))
            }
            None => (self.images.clone(), self.targets.clone()),
        };
        let output = model.forward(images);
        let memory = device.memory_pool_usage().map(|u| u.bytes_in_use);
        let loss = Network::loss(&output, targets);
        let grads = match self.loss_scale {
            Some(scale) => (loss * scale).backward(),
            None => loss.backward(),
        };
        let grads = GradientsParams::from_grads(grads, &model);
        let (mut model, _) = self.optimizer.step_scaled(model, grads, 1.0, self.loss_scale);
        self.step += 1;
        if let Some((settings, every)) = &self.mirror
            && self.step % every == 0
        {
            for (_, layer) in model.feedback_layers_mut() {
                layer.mirror_step(settings, self.step as u64);
            }
        }
        self.model = Some(model);
        memory
    }
}

/// A `/proc/self/status` size of this process (`VmHWM`: peak resident set, `VmRSS`: resident
/// set), MiB, on Linux.
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak resident set, so the next reading covers what follows only.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Settings of a benchmark.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub batch: usize,
    pub input: [usize; 3],
    pub classes: usize,
    /// Untimed steps per rule before timing (kernel compilation, autotune, allocator warm-up).
    pub warmup: usize,
    /// Timed steps per rule and round.
    pub steps: usize,
    pub rounds: usize,
}

/// Benchmarks `config`'s model under each of `rules` (backprop is always measured first, as
/// the reference), calling `report` with each result as soon as it is known.
/// With `splits`, every step takes its batch from their training loader (`plan.input` and
/// `plan.classes` must be theirs) instead of reusing one batch held in memory.
pub fn bench_rules(
    config: &RunConfig,
    rules: &[RuleKind],
    plan: &BenchPlan,
    splits: Option<&Splits>,
    device: &Device,
    device_name: &str,
    report: &mut dyn FnMut(&BenchResult),
) -> Result<Vec<BenchResult>> {
    crate::device::check_precision(config.train.precision, device, device_name)?;
    for (value, what) in [(plan.batch, "--batch"), (plan.steps, "--steps"), (plan.rounds, "--rounds"), (plan.classes, "--classes")] {
        if value == 0 {
            return Err(TrainError::Config(format!("bench {what} 0: a benchmark needs at least 1")));
        }
    }
    let device = device.clone().autodiff();
    let mut kinds = vec![RuleKind::Backprop];
    // Direct feedback alignment has no ConvRNN form (`Network::build` refuses it there).
    let convrnn = config.model.kind == crate::config::ModelKind::Convrnn;
    kinds.extend(rules.iter().copied().filter(|k| *k != RuleKind::Backprop && !(convrnn && *k == RuleKind::DirectFeedbackAlignment)));
    let mut cases = Vec::new();
    for kind in &kinds {
        let mut c = config.clone();
        c.rule.kind = *kind;
        cases.push(Case::new(&c, plan.input, plan.classes, plan.batch, splits, &device)?);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let mut memory: Vec<Option<f64>> = vec![None; kinds.len()];
    for (i, case) in cases.iter_mut().enumerate() {
        // Blocks the allocator kept from earlier cases would count as resident before the
        // step and hide its growth.
        crate::memory::release_freed_memory();
        let before = status_mib("VmRSS");
        reset_peak_rss();
        let mut in_use = 0u64;
        for _ in 0..plan.warmup.max(1) {
            in_use = in_use.max(case.step(&device).unwrap_or(0));
        }
        let _ = device.sync();
        memory[i] = if in_use > 0 { Some(in_use as f64 / (1024.0 * 1024.0)) } else { status_mib("VmHWM").zip(before).map(|(peak, before)| (peak - before).max(0.0)) };
    }
    for _ in 0..plan.rounds.max(1) {
        for (i, case) in cases.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..plan.steps.max(1) {
                case.step(&device);
            }
            let _ = device.sync();
            times[i].push(t.elapsed().as_secs_f64() / plan.steps.max(1) as f64);
        }
    }
    let reference = median(times[0].clone());
    let params = parameter_counts(cases[0].model.as_ref().unwrap()).0;
    let mut results = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let t = median(times[i].clone());
        let r = BenchResult {
            name: config.name.clone(),
            model: format!("{:?}", config.model.kind).to_lowercase(),
            rule: kind.name().into(),
            device: device_name.into(),
            precision: config.train.precision.name().into(),
            batches: if splits.is_some() { "loader" } else { "memory" }.into(),
            batch: plan.batch,
            input: plan.input,
            times: config.model.convrnn.as_ref().map(|c| c.times),
            params,
            step_ms: 1e3 * t,
            images_per_second: plan.batch as f64 / t,
            ratio_to_backprop: (i > 0).then_some(t / reference),
            peak_memory_mib: memory[i],
        };
        report(&r);
        results.push(r);
    }
    Ok(results)
}
