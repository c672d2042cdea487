//! The training loop.
//!
//! It owns the step: fixed-order batches from the loader, per-step seeds, forward, one
//! `backward()` (which trains W and, for rules with a learned B, B as well), an optimiser step,
//! weight-mirror steps, logging, validation and checkpoints. What is measured is reported to a
//! [`TrainObserver`]; the loop knows nothing of progress bars.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use plastic_data::{LoaderSeeds, Splits, TrainLoader};
use plastic_observe::recorder::ObservableRecorder;
use plastic_rules::{FeedbackNetwork, LayerRule, MirrorSettings, ObservedNetwork, SeedPurpose, TapRequest, derive_seed, indexed_seed, weight_alignment};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::checkpoint::{self, CheckpointMeta, ExactF64, LoopState};
use crate::config::{RunConfig, TrainConfig};
use crate::device::SelectedDevice;
use crate::error::{Result, TrainError};
use crate::eval::{EvalResult, batch_tensors, evaluate, top1_hits};
use crate::metrics::{MetricsLog, number};
use crate::network::{Network, parameter_counts};
use plastic_cnn::DirectMode;
use crate::optim::{GroupSettings, LossScale, Optimizer};
use crate::run_dir::RunDir;
use crate::schedule::lr_multiplier;
use crate::store::{load_module_tensors_where, module_tensors_where, write_atomic};

/// How to start a run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Parent of the run directory (`runs/` by default).
    pub out: PathBuf,
    pub device: SelectedDevice,
    /// Continue from the run directory's latest checkpoint.
    pub resume: bool,
    /// Replace an existing run directory.
    pub force: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Reached its last step.
    #[default]
    Completed,
    /// Stopped because the training loss blew up (see [`TrainError::Diverged`]).
    Diverged,
}

/// What `summary.json` holds. A diverged run's summary has `status = "diverged"`, the
/// `message` printed on stderr, `steps` = the step it stopped at, and no validation or test
/// values (null): the model was not evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    #[serde(default)]
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub model: String,
    pub rule: String,
    pub device: String,
    pub steps: usize,
    pub epochs: f64,
    pub params: usize,
    pub feedback_params: usize,
    pub units: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub validation_accuracy: Option<f64>,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub test_top5: f64,
    pub wall_seconds: f64,
    pub images_per_second: f64,
    /// Seconds this session spent recording observables (of `wall_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observe_seconds: Option<f64>,
    /// Final per-layer alignment (the first layer's only where its B learns).
    pub alignment: Map<String, Value>,
}

/// What the loop tells its observer.
pub trait TrainObserver {
    fn started(&mut self, _info: &RunInfo) {}
    fn logged(&mut self, _record: &Map<String, Value>) {}
    fn finished(&mut self, _summary: &Summary) {}
    /// The run stopped because its loss blew up; `summary` is the diverged one just written.
    fn diverged(&mut self, _summary: &Summary) {}
    /// `--resume` found the run already at its last step; `summary` is the one on disk.
    fn already_finished(&mut self, _summary: &Summary) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl TrainObserver for Silent {}

/// Facts about a run, sent once at the start.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub name: String,
    pub dir: PathBuf,
    pub device: String,
    pub start_step: usize,
    pub total_steps: usize,
    pub params: usize,
    pub units: usize,
}

/// The seed of step `step`'s device RNG (dropout): the run's dropout seed, indexed by the step.
fn step_seed(seed: u64, step: usize) -> u64 {
    indexed_seed(derive_seed(seed, SeedPurpose::Dropout), step as u64)
}

/// The training loader's seeds for run seed `seed`: batch order and augmentation, each hashed
/// for its purpose (so epoch k's shuffle is not layer k's W draw, nor anything of seed ± 1).
pub fn loader_seeds(seed: u64) -> LoaderSeeds {
    LoaderSeeds { order: derive_seed(seed, SeedPurpose::BatchOrder), augmentation: derive_seed(seed, SeedPurpose::Augmentation) }
}

/// The training loader of a run.
pub fn train_loader(config: &RunConfig, splits: &Splits) -> TrainLoader {
    splits.train_loader(config.train.batch_size, loader_seeds(config.seed))
}

fn group_settings(train: &TrainConfig) -> GroupSettings {
    GroupSettings {
        kind: train.optimizer,
        lr: train.lr,
        momentum: train.momentum,
        nesterov: train.nesterov,
        beta1: train.beta1,
        beta2: train.beta2,
        epsilon: train.epsilon,
        weight_decay: train.weight_decay,
        decoupled: train.decoupled_weight_decay,
    }
}

/// The optimiser of a run: the weights' settings, B's group derived from `[rule]`, and the
/// Kolen–Pollack layers (the run's rule or an override's) as a group of their own.
///
/// Kolen–Pollack's B steps exactly like its W: the same gradient δW, W's optimiser, learning
/// rate, schedule, clipping factor and weight decay, so their increments are identical and
/// B − W only decays. The decay is `kolen_pollack_decay`: under SGD it is the run's kind of L2
/// (coupled or decoupled) on W and B alike; under Adam it is always decoupled (AdamW), since
/// a coupled L2 would be rescaled entry by entry by Adam's second moments, which differ
/// between W and B.
pub fn build_optimizer(config: &RunConfig, model: &Network, total_steps: usize) -> Optimizer {
    let weights = group_settings(&config.train);
    let mut feedback = weights;
    match config.rule.b_optimizer {
        plastic_rules::FeedbackOptimizer::Same => {}
        plastic_rules::FeedbackOptimizer::Sgd => feedback.kind = crate::config::OptimizerKind::Sgd,
        plastic_rules::FeedbackOptimizer::Adam => feedback.kind = crate::config::OptimizerKind::Adam,
    }
    feedback.decoupled = true;
    if let Some(lr) = config.rule.b_lr {
        feedback.lr = lr;
    }
    let activation_alignment = model.feedback_layers().iter().any(|(_, l)| matches!(l.rule(), LayerRule::ActivationAlignment { .. }));
    feedback.weight_decay = config.rule.b_weight_decay.unwrap_or_else(|| if activation_alignment { activation_alignment_decay(config, total_steps) } else { 0.0 });
    let ids = crate::optim::param_ids(model);
    let kp_layers: Vec<String> = model
        .feedback_layers()
        .iter()
        .filter(|(_, l)| l.rule() == LayerRule::KolenPollack)
        .filter_map(|(_, l)| ids.iter().find(|(_, id)| **id == l.weight_id()).map(|(path, _)| path.trim_end_matches(".weight").to_string()))
        .collect();
    let mut kp = weights;
    kp.weight_decay = kolen_pollack_decay(config, total_steps);
    if kp.kind == crate::config::OptimizerKind::Adam {
        kp.decoupled = true;
    }
    let clip = config.rule.effective_grad_clip(config.train.grad_clip, model.feedback_layers().iter().map(|(_, l)| l.rule()));
    Optimizer::new(weights, feedback, clip).with_kolen_pollack(kp, kp_layers)
}

/// Kolen–Pollack's weight decay λ, on W and B alike: `rule.kp_decay` when given, else the
/// larger of the run's `train.weight_decay` and the λ that shrinks B − W tenfold by the middle
/// of the run, λ = ln 10 / Σ_{t < T/2} η_t, with η_t the step's effective learning rate
/// (lr·schedule, divided by 1 − momentum under SGD). Akrout et al. (2019) trained ResNets for
/// 90 ImageNet epochs, where the run's own 1e-4 is enough (lr·λ·steps ≈ 45); a digits run of
/// a few hundred steps at 1e-4 would leave B − W where it started.
pub fn kolen_pollack_decay(config: &RunConfig, total_steps: usize) -> f64 {
    if let Some(decay) = config.rule.kp_decay {
        return decay;
    }
    let train = &config.train;
    let momentum = if train.optimizer == crate::config::OptimizerKind::Sgd { train.momentum } else { 0.0 };
    let sum = first_half_lr_sum(train, train.lr, total_steps) / (1.0 - momentum);
    train.weight_decay.max(std::f64::consts::LN_10 / sum.max(1e-12))
}

/// The default decoupled weight decay λ of B's group when a layer follows activation alignment
/// (`rule.b_weight_decay` unset): the λ that shrinks what the local loss leaves untouched
/// tenfold by the middle of the run, λ = ln 10 / Σ_{t < T/2} η_t, with η_t B's learning rate
/// (`rule.b_lr`, else `train.lr`) times the schedule (decoupled: no momentum in between).
///
/// Why: activation alignment's gradient, (2α·B − β·W)·Cov(x̂), vanishes in the directions the
/// layer's inputs hardly span, and a ConvRNN's cell states and pooled maps leave many such
/// directions. There B keeps its random start, and under Adam, which scales every entry's
/// step to the learning rate whatever the gradient's size, it random-walks on the batches'
/// noise (with B's learning rate at 5× W's, ‖B‖ grew to 1.8‖W‖ at 76° from it). The decay
/// holds those directions near zero while the data term pulls the spanned ones to W: on the
/// ConvRNN quickstart (AdamW, 585 steps, λ ≈ 5.0) activation alignment went from 92.5 % to
/// 96.9 % (95.0 % with λ = 5 exactly: one run's spread). The same rule as Kolen–Pollack's
/// automatic decay; on an SGD run (the quickstart CNN, λ ≈ 0.1) it is a small pull against a
/// data term fifty times stronger.
pub fn activation_alignment_decay(config: &RunConfig, total_steps: usize) -> f64 {
    let lr = config.rule.b_lr.unwrap_or(config.train.lr);
    std::f64::consts::LN_10 / first_half_lr_sum(&config.train, lr, total_steps).max(1e-12)
}

/// Σ_{t < T/2} lr·schedule(t): the learning rate the first half of a `total_steps` run applies.
fn first_half_lr_sum(train: &TrainConfig, lr: f64, total_steps: usize) -> f64 {
    (0..(total_steps / 2).max(1)).map(|t| lr * lr_multiplier(train, t, total_steps)).sum()
}

/// Total optimiser steps of the run.
pub fn total_steps(train: &TrainConfig, steps_per_epoch: usize) -> usize {
    if train.steps > 0 { train.steps } else { train.epochs * steps_per_epoch }
}

/// Fields that may change between an interrupted run and its resumption (they do not change
/// the result up to the checkpoint).
fn comparable(config: &RunConfig) -> RunConfig {
    let mut c = config.clone();
    c.train.steps = 0;
    c.train.epochs = 0;
    c.train.log_every = 0;
    c.train.eval_every = 0;
    c.train.checkpoint_every = 0;
    c.train.keep_checkpoints = 0;
    c.train.threads = 0;
    c
}

/// Prepares the run directory: refuses to overwrite, and on resume checks the config.
fn prepare_dir(config: &RunConfig, options: &TrainOptions) -> Result<(RunDir, Option<(usize, PathBuf)>)> {
    let dir = RunDir::new(options.out.join(&config.name));
    let exists = dir.config().exists();
    if exists && options.force && !options.resume {
        std::fs::remove_dir_all(&dir.root).map_err(|e| TrainError::io(&dir.root, e))?;
    } else if exists && !options.resume {
        return Err(TrainError::Run(format!("{} already exists: pass --resume to continue it or --force to start it over", dir.root.display())));
    }
    let checkpoint = if options.resume && exists {
        let saved = std::fs::read_to_string(dir.config()).map_err(|e| TrainError::io(dir.config(), e))?;
        let saved = RunConfig::parse(&saved, &[]).map_err(|e| TrainError::Run(format!("{}: {e}", dir.config().display())))?;
        if comparable(&saved) != comparable(config) {
            return Err(TrainError::Run(format!(
                "the config differs from {} in more than the step budget and logging intervals; start a new run (another name) instead",
                dir.config().display()
            )));
        }
        dir.latest_checkpoint()
    } else {
        None
    };
    std::fs::create_dir_all(dir.checkpoints()).map_err(|e| TrainError::io(dir.checkpoints(), e))?;
    write_atomic(&dir.config(), config.to_toml().as_bytes())?;
    Ok((dir, checkpoint))
}

/// Running sums over the steps of one logging window.
struct Window {
    loss: Option<Tensor<1>>,
    correct: Option<Tensor<1, burn::tensor::Int>>,
    examples: usize,
    steps: usize,
    started: Instant,
}

impl Window {
    fn new() -> Self {
        Self { loss: None, correct: None, examples: 0, steps: 0, started: Instant::now() }
    }

    fn add(&mut self, loss: Tensor<1>, correct: Tensor<1, burn::tensor::Int>, examples: usize) {
        self.loss = Some(match self.loss.take() {
            Some(l) => l + loss,
            None => loss,
        });
        self.correct = Some(match self.correct.take() {
            Some(c) => c + correct,
            None => correct,
        });
        self.examples += examples;
        self.steps += 1;
    }

    /// The window as a checkpoint stores it (one read back of two numbers, none when empty).
    fn save(&self, state: &mut LoopState) {
        state.window_loss = self.loss.clone().map_or(0.0, |l| l.into_scalar::<f64>()).into();
        state.window_hits = self.correct.clone().map_or(0, |c| c.into_scalar::<i64>());
        state.window_examples = self.examples;
        state.window_steps = self.steps;
    }

    /// The window a checkpoint stored. The loss sum goes back on the device as the same f32
    /// value, so the sums continue exactly as they would have without the interruption.
    fn restore(state: &LoopState, device: &Device) -> Self {
        let mut w = Window::new();
        if state.window_steps > 0 {
            w.loss = Some(Tensor::from_data(burn::tensor::TensorData::new(vec![state.window_loss.get() as f32], [1]), device));
            w.correct = Some(Tensor::from_data(burn::tensor::TensorData::new(vec![state.window_hits], [1]), device));
            w.examples = state.window_examples;
            w.steps = state.window_steps;
        }
        w
    }

    /// (mean loss, accuracy, images per second), read back once per window.
    fn read(&mut self) -> (f64, f64, f64) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let loss = self.loss.take().map_or(f64::NAN, |l| l.into_scalar::<f64>() / self.steps.max(1) as f64);
        let correct = self.correct.take().map_or(0.0, |c| c.into_scalar::<i64>() as f64);
        let out = (loss, correct / self.examples.max(1) as f64, self.examples as f64 / seconds);
        *self = Window::new();
        out
    }
}

/// Stops a run whose loss blows up. It looks only at the logged losses (read back at log
/// steps anyway), so it costs nothing and changes nothing in training.
struct DivergenceWatch {
    /// The run's first logged loss.
    first: Option<f64>,
    /// Log lines in a row above [`DivergenceWatch::FACTOR`] × `first`.
    above: usize,
}

impl DivergenceWatch {
    const FACTOR: f64 = 10.0;
    const LINES: usize = 3;

    /// Why the run diverged, if the logged `loss` says it has.
    fn observe(&mut self, loss: f64) -> Option<String> {
        if !loss.is_finite() {
            return Some(format!("the training loss is {loss}"));
        }
        let first = *self.first.get_or_insert(loss);
        self.above = if loss > Self::FACTOR * first { self.above + 1 } else { 0 };
        (self.above >= Self::LINES)
            .then(|| format!("the training loss ({loss:.4}) stayed above {}× its first logged value ({first:.4}) for {} log lines", Self::FACTOR, Self::LINES))
    }
}

/// The one line a diverged run ends with: when, why, which layer's W grew most against its
/// initial draw (rebuilt from the seeds on the CPU), and what to try.
fn divergence_message(config: &RunConfig, splits: &Splits, model: &Network, step: usize, reason: &str) -> String {
    fn norm(l: &dyn plastic_rules::FeedbackLayer) -> f64 {
        let w = l.weight_flat();
        (w.clone() * w).sum().into_scalar::<f64>().sqrt()
    }
    let initial: Vec<f64> = match Network::build(config, splits.shape(), splits.num_classes(), &Device::flex()) {
        Ok(m) => m.feedback_layers().iter().map(|(_, l)| norm(*l)).collect(),
        Err(_) => Vec::new(),
    };
    // (name, current ‖W‖ / initial ‖W‖); a non-finite W ranks first.
    let growth = model
        .feedback_layers()
        .iter()
        .zip(&initial)
        .map(|((name, l), &w0)| (name.clone(), norm(*l) / w0))
        .max_by(|a, b| match (a.1.is_finite(), b.1.is_finite()) {
            (true, true) => a.1.total_cmp(&b.1),
            (fa, fb) => fb.cmp(&fa),
        });
    let growth = match growth {
        Some((name, f)) if !f.is_finite() => format!("; the weights of {name} are no longer finite"),
        Some((name, f)) => format!("; the weights of {name} grew most, to {} their initial norm", factor(f)),
        None => String::new(),
    };
    let clip = if config.train.grad_clip > 0.0 { format!("lower train.grad_clip (now {})", config.train.grad_clip) } else { "set train.grad_clip (e.g. 1.0)".into() };
    format!("training diverged at step {step}: {reason}{growth}; lower train.lr (now {}) or {clip}", config.train.lr)
}

/// `12.3×` or `4.5e6×`.
fn factor(f: f64) -> String {
    if f < 1e4 { format!("{f:.2}×") } else { format!("{f:.2e}×") }
}

/// Trains `config` on `splits` and writes the run directory.
pub fn train(config: &RunConfig, splits: &Splits, options: &TrainOptions, observer: &mut dyn TrainObserver) -> Result<Summary> {
    let (dir, checkpoint) = prepare_dir(config, options)?;
    // What the run needs to be shown new images without its training data (features,
    // solution times, neural fits, the PyTorch bridge); rewritten on resume, same content.
    let preprocessing = plastic_data::Preprocessing::of(splits, config.data.kind);
    write_atomic(&dir.preprocessing(), preprocessing.to_json().as_bytes())?;
    let device = options.device.device.clone().autodiff();
    let inner = device.clone().without_autodiff();
    let precision = config.train.precision;
    crate::device::check_precision(precision, &inner, &options.device.description)?;
    let mut model = Network::build(config, splits.shape(), splits.num_classes(), &device)?;
    let loader = train_loader(config, splits);
    let total = total_steps(&config.train, loader.steps_per_epoch());
    let mut optimizer = build_optimizer(config, &model, total);
    let (mut step, mut wall_before) = (0usize, 0.0f64);
    let mut state = LoopState::default();
    if let Some((_, path)) = &checkpoint {
        let (loaded, meta) = checkpoint::load(path, model, &mut optimizer, &device)?;
        model = loaded;
        step = meta.step;
        wall_before = meta.wall_seconds;
        state = meta.state;
    }
    let (params, feedback_params) = parameter_counts(&model);
    // A finished run resumed: its summary stays as it was (it is recomputed only if missing).
    if step >= total
        && let Some(summary) = read_summary(&dir).filter(|s| s.steps == step)
    {
        observer.already_finished(&summary);
        return Ok(summary);
    }
    let mut log = MetricsLog::open(&dir.metrics(), Some(step))?;
    let mut recorder = config.observe.enabled.then(|| {
        let seed = config.observe.seed.unwrap_or(config.seed);
        let probe = probe_batch(config, splits, derive_seed(seed, SeedPurpose::ProbeBatch), &inner);
        let mut r = ObservableRecorder::new(&config.observe, &config.name, model.observed_layers(), total as u64, derive_seed(seed, SeedPurpose::Observation), probe);
        if step > 0 {
            r.resume(&dir.root, step as u64);
        }
        r
    });
    observer.started(&RunInfo {
        name: config.name.clone(),
        dir: dir.root.clone(),
        device: options.device.description.clone(),
        start_step: step,
        total_steps: total,
        params,
        units: model.units(),
    });

    let rules: Vec<LayerRule> = model.feedback_layers().iter().map(|(_, l)| l.rule()).collect();
    let any_feedback = rules.iter().any(|r| *r != LayerRule::Backprop);
    let mirror = rules.iter().any(LayerRule::mirrors_noise).then_some(MirrorSettings {
        noise_std: config.rule.noise_std,
        lr: config.rule.mirror_lr,
        decay: config.rule.mirror_decay,
        batch: config.rule.mirror_batch,
    });
    let started = Instant::now();
    // What the loop carries across steps, restored from the checkpoint's state on resume.
    let mut window = Window::restore(&state, &inner);
    let mut last_train = match state.last_train {
        Some((loss, accuracy)) => (loss.get(), accuracy.get()),
        None if step > 0 => last_logged_train(&dir),
        None => (f64::NAN, f64::NAN),
    };
    let mut last_validation: Option<(usize, EvalResult)> = None;
    // Every alignment key's latest logged value (the taps hand each measurement out once).
    let mut last_alignment: Map<String, Value> = state.last_alignment.iter().map(|(k, v)| (k.clone(), v.map_or(Value::Null, |v| number(v.get())))).collect();
    // true_grad_angle measured since the last log line: the latest per layer goes in the next one.
    let mut true_grad: BTreeMap<String, f64> = state.true_grad_angle.iter().map(|(k, v)| (k.clone(), v.get())).collect();
    let mut watch = DivergenceWatch { first: state.first_loss.map(ExactF64::get), above: state.lines_above };
    let mut diverged: Option<String> = None;
    let mut stream = loader.stream(step);
    let batch_size = loader.batch_size();
    // f16's dynamic loss scale, carried across checkpoints like the rest of the loop's state.
    let mut loss_scale = precision.needs_loss_scale().then(|| state.loss_scale.unwrap_or(LossScale::starting_at(config.train.loss_scale)));
    while step < total {
        // The observables of the model after `step` updates, where the schedule has a point.
        if let Some(r) = &mut recorder {
            record_observables(r, &model, step)?;
        }
        let batch = stream.next().ok_or_else(|| TrainError::Run("the batch loader stopped".into()))?;
        let is_log = (step + 1) % config.train.log_every == 0 || step + 1 == total;
        let is_true_grad = any_feedback && config.train.true_grad_every > 0 && (step + 1) % config.train.true_grad_every == 0;
        let (images, targets) = batch_tensors(&batch, &inner);
        let (images, targets) = (Tensor::from_inner(images), Tensor::from_inner(targets));
        // Mixed precision: the network follows its input's dtype (parameters stay f32).
        let compute_images = images.clone().cast(precision.dtype());
        let request = TapRequest { grad_angle: is_log, capture_input_grad: is_true_grad, ..Default::default() };
        for (_, layer) in model.feedback_layers() {
            layer.tap().reset();
            layer.tap().set_step(step as u64);
            layer.tap().set_request(request);
        }
        device.seed(step_seed(config.seed, step));
        let output = model.forward_direct(compute_images, Some(DirectMode::Train));
        let loss = Network::loss(&output, targets.clone());
        // The loss is read back only where something is written (a log line or a checkpoint),
        // so a GPU is not synchronised every step; a diverged run never reaches a checkpoint.
        let is_checkpoint = step + 1 == total || (config.train.checkpoint_every > 0 && (step + 1) % config.train.checkpoint_every == 0);
        let correct = top1_hits(output.logits.clone().inner(), targets.clone().inner());
        window.add(loss.clone().inner(), correct, batch_size);
        // Direct feedback alignment sends e·B_lᵀ into each of its stages' inputs.
        let direct_errors = Network::direct_errors(&output, &targets);
        let objective = match Network::direct_feedback_term(&output, &direct_errors) {
            Some(term) => loss.clone() + term,
            None => loss,
        };
        let grads = match &loss_scale {
            Some(s) => (objective * s.scale).backward(),
            None => objective.backward(),
        };
        if is_true_grad {
            // Measured in f32: the angle between the rule's and backprop's δ of these weights.
            measure_true_grad(&model, images, targets, &device, step_seed(config.seed, step), &direct_errors);
        }
        let grads = GradientsParams::from_grads(grads, &model);
        let multiplier = lr_multiplier(&config.train, step, total);
        let (updated, report) = optimizer.step_scaled(model, grads, multiplier, loss_scale.map(|s| s.scale));
        if let Some(s) = &mut loss_scale {
            s.update(report.applied);
        }
        model = updated;
        step += 1;
        if let Some(settings) = &mirror
            && step % config.rule.mirror_every == 0
        {
            for (_, layer) in model.feedback_layers_mut() {
                layer.mirror_step(settings, step as u64);
            }
        }
        if is_true_grad {
            for (name, layer) in model.feedback_layers() {
                if let Some(angle) = layer.tap().take_true_grad_angle() {
                    true_grad.insert(name, angle);
                }
            }
        }

        // Periodic validation, and always at the last step (what summary.json reports).
        let is_eval = config.train.eval_every > 0 && (step % config.train.eval_every == 0 || step == total) && !splits.validation.is_empty();
        if is_log || is_eval {
            let mut record = Map::new();
            record.insert("step".into(), step.into());
            record.insert("epoch".into(), number(step as f64 / loader.steps_per_epoch() as f64));
            if is_log {
                let (loss, accuracy, ips) = window.read();
                last_train = (loss, accuracy);
                record.insert("loss".into(), number(loss));
                record.insert("accuracy".into(), number(accuracy));
                record.insert("lr".into(), number(config.train.lr * multiplier));
                if let Some(s) = &loss_scale {
                    record.insert("loss_scale".into(), number(s.scale));
                }
                record.insert("images_per_second".into(), number(ips));
                if any_feedback {
                    alignment_record(&model, &mut record, &mut true_grad);
                    for (k, v) in record.iter().filter(|(k, _)| k.starts_with("alignment.")) {
                        last_alignment.insert(k.clone(), v.clone());
                    }
                }
                diverged = watch.observe(loss);
            }
            if is_eval {
                let v = evaluate(&model, &splits.validation, &splits.normalization, config.train.eval_batch_size, &device);
                record.insert("val_loss".into(), number(v.loss));
                record.insert("val_accuracy".into(), number(v.accuracy));
                record.insert("val_top5".into(), number(v.top5));
                last_validation = Some((step, v));
            }
            log.write(&record)?;
            observer.logged(&record);
            if diverged.is_some() {
                break;
            }
        }
        if is_checkpoint {
            let mut state = LoopState {
                true_grad_angle: true_grad.iter().map(|(k, &v)| (k.clone(), v.into())).collect(),
                last_train: Some((last_train.0.into(), last_train.1.into())),
                last_alignment: last_alignment.iter().map(|(k, v)| (k.clone(), v.as_f64().map(ExactF64::from))).collect(),
                first_loss: watch.first.map(ExactF64::from),
                lines_above: watch.above,
                loss_scale,
                ..LoopState::default()
            };
            window.save(&mut state);
            // Steps since the last log line: a non-finite sum must not reach a checkpoint.
            if !state.window_loss.get().is_finite() {
                diverged = Some(format!("the training loss became {} after step {}", state.window_loss.get(), step - window.steps));
                break;
            }
            let meta = CheckpointMeta {
                format: 2,
                step,
                wall_seconds: wall_before + started.elapsed().as_secs_f64(),
                optimizer_steps: Default::default(),
                rule: config.rule.kind.name().into(),
                state,
            };
            // The points recorded so far go with the checkpoint, written before it: whatever
            // checkpoint a resumed run finds, the points before it are on disk. (The last
            // step's files are written once the last point is in, below.)
            if let Some(r) = recorder.as_mut().filter(|_| step < total) {
                r.checkpoint(&dir.root).map_err(|e| TrainError::Run(format!("writing observables: {e}")))?;
            }
            checkpoint::save(&dir.checkpoint(step), &model, &optimizer, &meta)?;
            for (s, path) in dir.list_checkpoints().iter().rev().skip(config.train.keep_checkpoints) {
                if *s != total {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
    drop(stream);
    if let Some(r) = &mut recorder {
        if diverged.is_none() {
            record_observables(r, &model, step)?;
        }
        r.write(&dir.root).map_err(|e| TrainError::Run(format!("writing observables: {e}")))?;
    }
    let wall_seconds = wall_before + started.elapsed().as_secs_f64();
    let mut alignment = last_alignment;
    // The first layer's B never carries an error. Where it learns (KP, WM, IA, SA, AA) its
    // alignment means what every other layer's does and is reported; a fixed or derived B
    // (FA, sign symmetry) stays out of the summary.
    if let Some((first, layer)) = model.feedback_layers().first()
        && !(layer.rule().trains_feedback() || layer.rule().mirrors_noise())
    {
        alignment.retain(|k, _| !k.starts_with(&format!("alignment.{first}.")));
    }
    let mut summary = Summary {
        name: config.name.clone(),
        status: RunStatus::Completed,
        message: None,
        model: format!("{:?}", config.model.kind).to_lowercase(),
        rule: config.rule.kind.name().into(),
        device: options.device.name.clone(),
        steps: step,
        epochs: step as f64 / loader.steps_per_epoch() as f64,
        params,
        feedback_params,
        units: model.units(),
        train_loss: last_train.0,
        train_accuracy: last_train.1,
        validation_accuracy: None,
        test_loss: f64::NAN,
        test_accuracy: f64::NAN,
        test_top5: f64::NAN,
        wall_seconds,
        images_per_second: (step * batch_size) as f64 / wall_seconds.max(1e-9),
        observe_seconds: recorder.as_ref().map(|r| r.seconds),
        alignment,
    };
    if let Some(reason) = diverged {
        let message = divergence_message(config, splits, &model, step, &reason);
        summary.status = RunStatus::Diverged;
        summary.message = Some(message.clone());
        write_atomic(&dir.summary(), serde_json::to_string_pretty(&summary).expect("plain data").as_bytes())?;
        observer.diverged(&summary);
        return Err(TrainError::Diverged { step, message });
    }
    // The validation of the last step: the periodic one when it ran there, else a fresh one.
    summary.validation_accuracy = match last_validation {
        Some((s, v)) if s == step => Some(v.accuracy),
        _ if !splits.validation.is_empty() => Some(evaluate(&model, &splits.validation, &splits.normalization, config.train.eval_batch_size, &device).accuracy),
        _ => None,
    };
    let test = evaluate(&model, &splits.test, &splits.normalization, config.train.eval_batch_size, &device);
    (summary.test_loss, summary.test_accuracy, summary.test_top5) = (test.loss, test.accuracy, test.top5);
    write_atomic(&dir.summary(), serde_json::to_string_pretty(&summary).expect("plain data").as_bytes())?;
    observer.finished(&summary);
    Ok(summary)
}

/// The fixed probe batch of the observables: `observe.probe_batch` images of the validation
/// split (the test split when there is none), a seeded random subset in split order,
/// normalised as in evaluation, on the inner device.
fn probe_batch(config: &RunConfig, splits: &Splits, seed: u64, device: &Device) -> Tensor<4> {
    let set = if splits.validation.is_empty() { &splits.test } else { &splits.validation };
    let set = if set.is_empty() { &*splits.train } else { set };
    // A seeded subset without an RNG: the images with the smallest hashes of their index.
    let mut order: Vec<usize> = (0..set.len()).collect();
    order.sort_by_key(|&i| indexed_seed(seed, i as u64));
    order.truncate(config.observe.probe_batch.min(set.len()));
    order.sort_unstable();
    let batch = plastic_data::make_batch(set, &order, &splits.normalization, None);
    batch_tensors(&batch, device).0
}

/// Records the observables scheduled at `step`. The observer's backward passes run with every
/// tap quiet, so they leave no measurement and nothing of the training state behind.
fn record_observables(recorder: &mut ObservableRecorder, model: &Network, step: usize) -> Result<()> {
    plastic_rules::probe::with_quiet_taps(model, step as u64, || recorder.record_due(model, step as u64))
        .map(|_| ())
        .map_err(|e| TrainError::Run(format!("recording observables at step {step}: {e}")))
}

/// The run's `summary.json`, if it exists and records a completed run.
fn read_summary(dir: &RunDir) -> Option<Summary> {
    let text = std::fs::read_to_string(dir.summary()).ok()?;
    serde_json::from_str::<Summary>(&text).ok().filter(|s| s.status == RunStatus::Completed)
}

/// (loss, accuracy) of the last log line in `metrics.jsonl`, for checkpoints written before
/// the loop state was saved with them.
fn last_logged_train(dir: &RunDir) -> (f64, f64) {
    let records = crate::metrics::read_metrics(&dir.metrics()).unwrap_or_default();
    let last = records.iter().rev().find(|r| r.get("loss").is_some_and(Value::is_number));
    let get = |k: &str| last.and_then(|r| r.get(k)).and_then(Value::as_f64).unwrap_or(f64::NAN);
    (get("loss"), get("accuracy"))
}

/// Adds `alignment.<layer>.*` keys: weight angle and norm ratio for every layer whose B is
/// not W, the gradient angle the last backward measured, and the latest `true_grad_angle`
/// measured since the previous log line (taken out of `true_grad`).
fn alignment_record(model: &Network, record: &mut Map<String, Value>, true_grad: &mut BTreeMap<String, f64>) {
    for (name, layer) in model.feedback_layers() {
        if layer.rule() == LayerRule::Backprop {
            continue;
        }
        // Direct feedback alignment's B is not in W's shape: it has no weight angle.
        if layer.rule() != LayerRule::DirectFeedbackAlignment {
            let a = weight_alignment(layer);
            record.insert(format!("alignment.{name}.weight_angle"), number(a.weight_angle));
            record.insert(format!("alignment.{name}.norm_ratio"), number(a.norm_ratio));
        }
        if let Some(g) = layer.tap().take_grad_angle() {
            record.insert(format!("alignment.{name}.grad_angle"), number(g));
        }
        if let Some(g) = true_grad.get(&name) {
            record.insert(format!("alignment.{name}.true_grad_angle"), number(*g));
        }
    }
    true_grad.clear();
}

/// A second forward and backward on the same batch with every layer sending its error through
/// W (full backprop); each layer compares that δx with the one its rule produced. BatchNorm
/// running statistics are restored afterwards, so the measurement leaves no trace.
///
/// Direct feedback alignment's stages compare the error projection e·Bᵀ they received
/// (`direct_errors`) with backprop's δ at their input, read off a zero leaf added there.
fn measure_true_grad(model: &Network, images: Tensor<4>, targets: Tensor<1, burn::tensor::Int>, device: &Device, seed: u64, direct_errors: &[Tensor<2>]) {
    let is_running = |k: &str| k.ends_with("running_mean") || k.ends_with("running_var");
    let running = module_tensors_where(model, is_running);
    for (_, layer) in model.feedback_layers() {
        let mut r = layer.tap().request();
        r.grad_angle = false;
        r.capture_input_grad = false;
        r.backprop = true;
        r.compare_input_grad = true;
        layer.tap().set_request(r);
    }
    device.seed(seed);
    let output = model.forward_direct(images, Some(DirectMode::Probe));
    let grads = Network::loss(&output, targets).backward();
    for (probe, rule_delta) in output.direct.iter().zip(direct_errors) {
        let Some(backprop_delta) = probe.input.grad(&grads) else { continue };
        let sums = Tensor::cat(
            vec![
                (rule_delta.clone() * backprop_delta.clone()).sum(),
                (rule_delta.clone() * rule_delta.clone()).sum(),
                (backprop_delta.clone() * backprop_delta).sum(),
            ],
            0,
        );
        let v: Vec<f64> = sums.into_data().try_into_vec_as::<f64>().unwrap_or_else(|_| vec![f64::NAN; 3]);
        if let Some((_, layer)) = model.feedback_layers().into_iter().find(|(n, _)| *n == probe.name) {
            layer.tap().record_true_grad_sums([v[0], v[1], v[2]]);
        }
    }
    for (_, layer) in model.feedback_layers() {
        let mut r = layer.tap().request();
        r.backprop = false;
        r.compare_input_grad = false;
        layer.tap().set_request(r);
    }
    if !running.is_empty() {
        // Running statistics are shared by clones of a module: loading into a clone restores them.
        let _ = load_module_tensors_where(model.clone(), &running, std::path::Path::new("<running statistics>"), is_running);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> RunConfig {
        let set = ["model.kind=mlp", "model.hidden=[24, 16]", "rule.kind=feedback_alignment"].map(String::from);
        let mut c = RunConfig::parse("", &set).unwrap();
        c.seed = seed;
        c
    }

    /// Activation alignment's B group decays by default (tenfold by mid-run, at B's own
    /// learning rate); `rule.b_weight_decay` wins; a run without activation alignment keeps 0.
    #[test]
    fn activation_alignment_decays_b_by_default() {
        let optimizer_of = |set: &[&str]| {
            let set: Vec<String> = ["model.kind=mlp", "model.hidden=[8]", "train.optimizer=adam", "train.lr=0.002", "train.schedule=\"cosine\"", "train.warmup_steps=50"].iter().chain(set).map(|s| s.to_string()).collect();
            let c = RunConfig::parse("", &set).unwrap();
            let model = Network::build(&c, [1, 4, 4], 3, &Device::flex()).unwrap();
            (build_optimizer(&c, &model, 585).feedback.weight_decay, activation_alignment_decay(&c, 585))
        };
        // The ConvRNN quickstart's schedule: Σ_{t<292} η_t ≈ 0.46, λ = ln 10 / that ≈ 4.99.
        let (aa, formula) = optimizer_of(&["rule.kind=activation_alignment"]);
        assert!((aa - 4.986).abs() < 0.01, "{aa}");
        assert_eq!(aa, formula);
        let (faster, _) = optimizer_of(&["rule.kind=activation_alignment", "rule.b_lr=0.004"]);
        assert!((faster - aa / 2.0).abs() < 1e-9, "{faster} vs {aa}");
        assert_eq!(optimizer_of(&["rule.kind=activation_alignment", "rule.b_weight_decay=0.5"]).0, 0.5);
        assert_eq!(optimizer_of(&["rule.kind=activation_alignment", "rule.b_weight_decay=0"]).0, 0.0);
        assert_eq!(optimizer_of(&["rule.kind=symmetric_alignment"]).0, 0.0);
        // A layer made activation alignment by an override counts too.
        assert_eq!(optimizer_of(&["rule.kind=feedback_alignment", "rule.overrides=[{ layers = [\"last\"], kind = \"activation_alignment\" }]"]).0, aa);
    }

    /// (W, B) of every layer, as host vectors.
    fn draws(seed: u64) -> Vec<(Vec<f32>, Vec<f32>)> {
        let model = Network::build(&config(seed), [1, 8, 8], 10, &Device::flex()).unwrap();
        let host = |t: Tensor<1>| t.into_data().try_into_vec_as::<f32>().unwrap();
        model.feedback_layers().iter().map(|(_, l)| (host(l.weight_flat()), host(l.feedback_flat()))).collect()
    }

    #[test]
    fn neighbouring_run_seeds_draw_nothing_in_common() {
        for seed in [0, 1, 41] {
            let (a, b) = (draws(seed), draws(seed + 1));
            // Every initial tensor of either run, with its shape: no two may be equal (FA's B
            // of seed s used to be W of seed s + 1, layer by layer).
            let all: Vec<&Vec<f32>> = a.iter().chain(&b).flat_map(|(w, fb)| [w, fb]).collect();
            for (i, x) in all.iter().enumerate() {
                for y in &all[i + 1..] {
                    assert!(x.len() != y.len() || x != y, "seed {seed}: two initial draws are equal");
                }
            }
        }
    }

    #[test]
    fn epoch_shuffles_are_not_layer_draws_and_rule_seed_moves_only_b() {
        let c = config(5);
        let splits = plastic_data::open(&c.data).unwrap();
        let loader = train_loader(&c, &splits);
        let (weights, feedback) = crate::network::model_seeds(&c);
        for epoch in 1..4 {
            // The shuffle epoch k would get from stream k of `seed` (layer k's W or B stream).
            let replay = |seed: u64| {
                let seeds = LoaderSeeds { order: seed, augmentation: 0 };
                TrainLoader::new(splits.train.clone(), 16, seeds, splits.normalization.clone(), splits.augmentation, 1).permutation(epoch)
            };
            let order = loader.permutation(epoch);
            assert_ne!(order, replay(weights), "epoch {epoch}");
            assert_ne!(order, replay(feedback), "epoch {epoch}");
            assert_ne!(order, replay(c.seed), "epoch {epoch}");
        }
        // Every purpose has its own seed, also across neighbouring run seeds.
        let seeds = |s: u64| {
            let c = config(s);
            let (w, b) = crate::network::model_seeds(&c);
            let l = loader_seeds(s);
            [w, b, l.order, l.augmentation, derive_seed(s, SeedPurpose::Dropout)]
        };
        let mut all: Vec<u64> = (0..20).flat_map(seeds).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 20 * 5);
        // rule.seed replaces the feedback seed only: same W, another B.
        let mut other = config(5);
        other.rule.seed = Some(99);
        assert_eq!(crate::network::model_seeds(&other).0, weights);
        assert_ne!(crate::network::model_seeds(&other).1, feedback);
        assert_eq!(crate::network::model_seeds(&other).1, crate::network::model_seeds(&config(99)).1);
    }

    /// The recorder's probe forwards and Jacobian backwards leave training untouched: the same
    /// run with and without recording ends with bit-identical weights, B, BatchNorm statistics
    /// and optimiser state (information alignment: its backward also trains B; a realism view
    /// with noise and subsampling on top of the exact one).
    #[test]
    fn recording_observables_leaves_training_bit_identical() {
        let out = std::env::temp_dir().join(format!("plastic-observe-identical-{}", std::process::id()));
        let set = [
            "model.kind=convnet",
            "model.channels=[4]",
            "model.hidden=[8]",
            "model.batch_norm=true",
            "rule.kind=information_alignment",
            "train.steps=12",
            "train.batch_size=16",
            "train.log_every=4",
            "train.eval_every=0",
            "observe.points=5",
            "observe.probe_batch=8",
            "observe.views=[{ unit_fraction = 1.0, noise_std = 0.0 }, { unit_fraction = 0.5, noise_std = 0.1 }]",
        ]
        .map(String::from);
        let base = RunConfig::parse("", &set).unwrap();
        let splits = plastic_data::open(&base.data).unwrap();
        let options = TrainOptions { out: out.clone(), device: crate::device::select(crate::device::DeviceChoice::Cpu).unwrap(), resume: false, force: true };
        let mut tensors = Vec::new();
        for enabled in [false, true] {
            let mut c = base.clone();
            c.name = format!("recording-{enabled}");
            c.observe.enabled = enabled;
            train(&c, &splits, &options, &mut Silent).unwrap();
            let dir = RunDir::new(out.join(&c.name));
            let bytes = std::fs::read(dir.checkpoint(12)).unwrap();
            tensors.push(crate::store::from_safetensors(&bytes, &dir.checkpoint(12)).unwrap().0);
            assert_eq!(dir.root.join("observables.npz").exists(), enabled);
        }
        assert!(!tensors[0].is_empty());
        assert!(tensors[0] == tensors[1], "recording changed the trained model or optimiser state");
        let observed = plastic_observe::RunObservables::read(&out.join("recording-true")).unwrap();
        assert_eq!(observed.points.iter().map(|p| p.step).collect::<Vec<_>>(), [0, 3, 6, 9, 12]);
        assert_eq!(observed.layers, ["conv1", "fc2", "fc3"]);
        assert!(observed.points.iter().all(|p| p.values.iter().all(|v| v.is_finite())));
        let _ = std::fs::remove_dir_all(&out);
    }

    /// A run whose pool has one thread (a sweep's worker with `train.threads = 1`) runs its
    /// training loop on that pool's only worker, so the recorder computes each point's
    /// statistics in line there instead of on its own thread (queued on that pool, behind the
    /// loop that waits for them, they would never run): the run finishes, with the points of a
    /// two-thread run, whose statistics run beside training, value for value.
    #[test]
    fn recording_in_a_one_thread_pool_finishes_with_the_observables_of_a_wider_one() {
        let out = std::env::temp_dir().join(format!("plastic-observe-one-thread-{}", std::process::id()));
        let set = ["model.kind=convnet", "model.channels=[4]", "model.hidden=[8]", "train.steps=8", "train.batch_size=16", "train.eval_every=0", "observe.points=5", "observe.probe_batch=8"].map(String::from);
        let base = RunConfig::parse("", &set).unwrap();
        let run = move |name: &str, threads: usize| {
            let (config, out) = (base.clone(), out.clone());
            let name = name.to_string();
            let (done, finished) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let splits = plastic_data::open(&config.data).unwrap();
                    let options = TrainOptions { out: out.clone(), device: crate::device::select(crate::device::DeviceChoice::Cpu).unwrap(), resume: false, force: true };
                    let c = RunConfig { name: name.clone(), ..config };
                    train(&c, &splits, &options, &mut Silent).unwrap();
                });
                let _ = done.send(plastic_observe::RunObservables::read(&out.join(&name)).unwrap());
            });
            finished.recv_timeout(std::time::Duration::from_secs(120)).unwrap_or_else(|_| panic!("the run on {threads} thread(s) did not finish in 2 minutes"))
        };
        let (one, two) = (run("one-thread", 1), run("two-threads", 2));
        assert_eq!(one.points.len(), 5);
        for (a, b) in one.points.iter().zip(&two.points) {
            assert_eq!((a.step, &a.values, &a.extra), (b.step, &b.values, &b.extra));
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("plastic-observe-one-thread-{}", std::process::id())));
    }

    #[test]
    fn the_divergence_watch_fires_on_nan_or_three_lines_above_ten_times_the_first() {
        let mut w = DivergenceWatch { first: None, above: 0 };
        assert!(w.observe(2.0).is_none());
        // Two lines above 20, one back below: the count restarts.
        for loss in [25.0, 30.0, 3.0, 21.0, 22.0] {
            assert!(w.observe(loss).is_none(), "{loss}");
        }
        assert!(w.observe(40.0).unwrap().contains("10× its first logged value (2.0000)"));
        let mut w = DivergenceWatch { first: None, above: 0 };
        assert!(w.observe(2.0).is_none());
        assert!(w.observe(f64::NAN).unwrap().contains("NaN"));
        assert!(w.observe(f64::INFINITY).is_some());
    }
}
