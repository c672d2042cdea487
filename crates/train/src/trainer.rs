//! The training loop.
//!
//! It owns the step: fixed-order batches from the loader, per-step seeds, forward, one
//! `backward()` (which trains W and, for rules with a learned B, B as well), an optimiser step,
//! weight-mirror steps, logging, validation and checkpoints. What is measured is reported to a
//! [`TrainObserver`]; the loop knows nothing of progress bars.

use std::path::PathBuf;
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use plastic_data::Splits;
use plastic_rules::{FeedbackNetwork, LayerRule, MirrorSettings, RuleKind, TapRequest, weight_alignment};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::checkpoint::{self, CheckpointMeta};
use crate::config::{RunConfig, TrainConfig};
use crate::device::SelectedDevice;
use crate::error::{Result, TrainError};
use crate::eval::{EvalResult, batch_tensors, evaluate};
use crate::metrics::{MetricsLog, number};
use crate::network::{Network, parameter_counts};
use crate::optim::{GroupSettings, Optimizer};
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

/// What `summary.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
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
    /// Final per-layer alignment (layers whose B is used; the first layer's B never is).
    pub alignment: Map<String, Value>,
}

/// What the loop tells its observer.
pub trait TrainObserver {
    fn started(&mut self, _info: &RunInfo) {}
    fn logged(&mut self, _record: &Map<String, Value>) {}
    fn finished(&mut self, _summary: &Summary) {}
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

/// The run seed and the step give every per-step draw (dropout) its seed.
fn step_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
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

/// The optimiser of a run: the weights' settings, and B's group derived from `[rule]`.
/// Kolen–Pollack gives B exactly W's optimiser and a decoupled decay equal to W's, so that
/// W − B shrinks by (1 − lr·λ) every step.
pub fn build_optimizer(config: &RunConfig) -> Optimizer {
    let mut weights = group_settings(&config.train);
    let mut feedback = weights;
    if config.rule.kind == RuleKind::KolenPollack {
        weights.decoupled = true;
        feedback = weights;
    } else {
        match config.rule.b_optimizer {
            plastic_rules::FeedbackOptimizer::Same => {}
            plastic_rules::FeedbackOptimizer::Sgd => feedback.kind = crate::config::OptimizerKind::Sgd,
            plastic_rules::FeedbackOptimizer::Adam => feedback.kind = crate::config::OptimizerKind::Adam,
        }
        feedback.weight_decay = config.rule.b_weight_decay.unwrap_or(0.0);
        feedback.decoupled = true;
    }
    if let Some(lr) = config.rule.b_lr {
        feedback.lr = lr;
    }
    Optimizer::new(weights, feedback, config.train.grad_clip)
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

/// Trains `config` on `splits` and writes the run directory.
pub fn train(config: &RunConfig, splits: &Splits, options: &TrainOptions, observer: &mut dyn TrainObserver) -> Result<Summary> {
    let (dir, checkpoint) = prepare_dir(config, options)?;
    let device = options.device.device.clone().autodiff();
    let inner = device.clone().without_autodiff();
    let mut model = Network::build(config, splits.shape(), splits.num_classes(), &device)?;
    let mut optimizer = build_optimizer(config);
    let loader = splits.train_loader(config.train.batch_size, config.seed);
    let total = total_steps(&config.train, loader.steps_per_epoch());
    let (mut step, mut wall_before) = (0usize, 0.0f64);
    if let Some((_, path)) = &checkpoint {
        let (loaded, meta) = checkpoint::load(path, model, &mut optimizer, &device)?;
        model = loaded;
        step = meta.step;
        wall_before = meta.wall_seconds;
    }
    let mut log = MetricsLog::open(&dir.metrics(), Some(step))?;
    let (params, feedback_params) = parameter_counts(&model);
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
    let mut window = Window::new();
    let mut last_train = (f64::NAN, f64::NAN);
    let mut last_validation: Option<EvalResult> = None;
    // The alignment keys of the latest log line (the taps hand each measurement out once).
    let mut last_alignment = Map::new();
    let mut stream = loader.stream(step);
    let batch_size = loader.batch_size();
    while step < total {
        let batch = stream.next().ok_or_else(|| TrainError::Run("the batch loader stopped".into()))?;
        let is_log = (step + 1) % config.train.log_every == 0 || step + 1 == total;
        let is_true_grad = any_feedback && config.train.true_grad_every > 0 && (step + 1) % config.train.true_grad_every == 0;
        let (images, targets) = batch_tensors(&batch, &inner);
        let (images, targets) = (Tensor::from_inner(images), Tensor::from_inner(targets));
        let request = TapRequest { grad_angle: is_log, capture_input_grad: is_true_grad, ..Default::default() };
        for (_, layer) in model.feedback_layers() {
            layer.tap().reset();
            layer.tap().set_step(step as u64);
            layer.tap().set_request(request);
        }
        device.seed(step_seed(config.seed, step));
        let output = model.forward(images.clone());
        let loss = Network::loss(&output, targets.clone());
        // Read back only where something is written (a log line or a checkpoint), so a GPU is not
        // synchronised every step; a diverged run never reaches a checkpoint.
        let is_checkpoint = step + 1 == total || (config.train.checkpoint_every > 0 && (step + 1) % config.train.checkpoint_every == 0);
        if is_log || is_checkpoint {
            let value = loss.clone().inner().into_scalar::<f64>();
            if !value.is_finite() {
                return Err(TrainError::Run(format!("the loss became {value} at step {step}; lower train.lr or set train.grad_clip")));
            }
        }
        let correct = output.logits.clone().inner().argmax(1).squeeze_dim::<1>(1).equal(targets.clone().inner()).int().sum();
        window.add(loss.clone().inner(), correct, batch_size);
        let grads = loss.backward();
        if is_true_grad {
            measure_true_grad(&model, images, targets, &device, step_seed(config.seed, step));
        }
        let grads = GradientsParams::from_grads(grads, &model);
        let multiplier = lr_multiplier(&config.train, step, total);
        let (updated, _) = optimizer.step(model, grads, multiplier);
        model = updated;
        step += 1;
        if let Some(settings) = &mirror
            && step % config.rule.mirror_every == 0
        {
            for (_, layer) in model.feedback_layers_mut() {
                layer.mirror_step(settings, step as u64);
            }
        }

        let is_eval = config.train.eval_every > 0 && step % config.train.eval_every == 0 && !splits.validation.is_empty();
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
                record.insert("images_per_second".into(), number(ips));
                if any_feedback {
                    alignment_record(&model, &mut record);
                    for (k, v) in record.iter().filter(|(k, _)| k.starts_with("alignment.")) {
                        last_alignment.insert(k.clone(), v.clone());
                    }
                }
            }
            if is_eval {
                let v = evaluate(&model, &splits.validation, &splits.normalization, config.train.eval_batch_size, &device);
                record.insert("val_loss".into(), number(v.loss));
                record.insert("val_accuracy".into(), number(v.accuracy));
                record.insert("val_top5".into(), number(v.top5));
                last_validation = Some(v);
            }
            log.write(&record)?;
            observer.logged(&record);
        }
        if is_checkpoint {
            let meta = CheckpointMeta {
                format: 1,
                step,
                wall_seconds: wall_before + started.elapsed().as_secs_f64(),
                optimizer_steps: Default::default(),
                rule: config.rule.kind.name().into(),
            };
            checkpoint::save(&dir.checkpoint(step), &model, &optimizer, &meta)?;
            for (s, path) in dir.list_checkpoints().iter().rev().skip(config.train.keep_checkpoints) {
                if *s != total {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
    drop(stream);
    let wall_seconds = wall_before + started.elapsed().as_secs_f64();
    let validation = match last_validation {
        Some(v) => Some(v),
        None if !splits.validation.is_empty() => Some(evaluate(&model, &splits.validation, &splits.normalization, config.train.eval_batch_size, &device)),
        None => None,
    };
    let test = evaluate(&model, &splits.test, &splits.normalization, config.train.eval_batch_size, &device);
    let mut alignment = last_alignment;
    // The first layer's B never carries an error; it stays out of summaries.
    if let Some((first, _)) = model.feedback_layers().first() {
        alignment.retain(|k, _| !k.starts_with(&format!("alignment.{first}.")));
    }
    let summary = Summary {
        name: config.name.clone(),
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
        validation_accuracy: validation.map(|v| v.accuracy),
        test_loss: test.loss,
        test_accuracy: test.accuracy,
        test_top5: test.top5,
        wall_seconds,
        images_per_second: (step * batch_size) as f64 / wall_seconds.max(1e-9),
        alignment,
    };
    write_atomic(&dir.summary(), serde_json::to_string_pretty(&summary).expect("plain data").as_bytes())?;
    observer.finished(&summary);
    Ok(summary)
}

/// Adds `alignment.<layer>.*` keys: weight angle and norm ratio for every layer whose B is
/// not W, and the gradient angles the last backward measured.
fn alignment_record(model: &Network, record: &mut Map<String, Value>) {
    for (name, layer) in model.feedback_layers() {
        if layer.rule() == LayerRule::Backprop {
            continue;
        }
        let a = weight_alignment(layer);
        record.insert(format!("alignment.{name}.weight_angle"), number(a.weight_angle));
        record.insert(format!("alignment.{name}.norm_ratio"), number(a.norm_ratio));
        if let Some(g) = layer.tap().take_grad_angle() {
            record.insert(format!("alignment.{name}.grad_angle"), number(g));
        }
        if let Some(g) = layer.tap().take_true_grad_angle() {
            record.insert(format!("alignment.{name}.true_grad_angle"), number(g));
        }
    }
}

/// A second forward and backward on the same batch with every layer sending its error through
/// W (full backprop); each layer compares that δx with the one its rule produced. BatchNorm
/// running statistics are restored afterwards, so the measurement leaves no trace.
fn measure_true_grad(model: &Network, images: Tensor<4>, targets: Tensor<1, burn::tensor::Int>, device: &Device, seed: u64) {
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
    let output = model.forward(images);
    let _ = Network::loss(&output, targets).backward();
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
