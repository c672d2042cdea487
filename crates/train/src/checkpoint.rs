//! Checkpoints: one safetensors file holding the model (W, B, norms and their running
//! statistics), the optimiser state, and JSON metadata (step, elapsed time, optimiser step
//! counts). The loader position is the step itself: batches are a function of it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::{LossScale, Optimizer, ParamState};
use crate::store::{HostTensor, from_safetensors, load_module_tensors, module_tensors, to_safetensors, write_atomic};

const MODEL: &str = "model.";
const OPTIM: &str = "optim.";

/// What a checkpoint records besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    /// Completed optimiser steps.
    pub step: usize,
    /// Training seconds spent up to `step` (across resumes).
    pub wall_seconds: f64,
    /// Per-parameter optimiser step counts.
    pub optimizer_steps: BTreeMap<String, u64>,
    /// The rule, for readers that only look at metadata.
    pub rule: String,
    /// The loop's running values (absent in checkpoints of format 1).
    #[serde(default)]
    pub state: LoopState,
}

/// What the training loop carries from step to step besides model and optimiser: saved in
/// every checkpoint, so that a resumed run writes the `metrics.jsonl` lines, reaches the
/// divergence verdicts and the summary an uninterrupted run does, whatever the intervals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoopState {
    /// The open logging window (steps since the last log line): the device's running sum of
    /// the loss, the top-1 hits, examples and steps.
    pub window_loss: ExactF64,
    pub window_hits: i64,
    pub window_examples: usize,
    pub window_steps: usize,
    /// The latest `true_grad_angle` of each layer not yet written to a log line.
    pub true_grad_angle: BTreeMap<String, ExactF64>,
    /// (loss, accuracy) of the latest log line.
    pub last_train: Option<(ExactF64, ExactF64)>,
    /// The latest value of every alignment key logged so far (`None`: logged as null).
    pub last_alignment: BTreeMap<String, Option<ExactF64>>,
    /// The first logged training loss of the run, and how many log lines in a row have been
    /// above 10× it (the divergence watch).
    pub first_loss: Option<ExactF64>,
    pub lines_above: usize,
    /// f16 runs: the dynamic loss scale and its count of clean steps.
    pub loss_scale: Option<LossScale>,
}

/// An `f64` stored as its bits: JSON parsing may round a printed float's last digit, and a
/// resumed run must continue from exactly the value it saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExactF64(u64);

impl ExactF64 {
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl From<f64> for ExactF64 {
    fn from(v: f64) -> Self {
        Self(v.to_bits())
    }
}

/// Writes a checkpoint atomically.
pub fn save<M: Module>(path: &Path, model: &M, optimizer: &Optimizer, meta: &CheckpointMeta) -> Result<()> {
    let mut tensors: BTreeMap<String, HostTensor> = module_tensors(model).into_iter().map(|(k, v)| (format!("{MODEL}{k}"), v)).collect();
    for (path, state) in &optimizer.state {
        for (i, slot) in state.slots.iter().enumerate() {
            tensors.insert(format!("{OPTIM}{path}.{i}"), HostTensor::from_tensor(slot.clone()));
        }
    }
    let meta = CheckpointMeta { optimizer_steps: optimizer.state.iter().map(|(k, s)| (k.clone(), s.steps)).collect(), ..meta.clone() };
    let metadata = HashMap::from([("plastic".to_string(), serde_json::to_string(&meta).expect("plain data"))]);
    write_atomic(path, &to_safetensors(&tensors, metadata))
}

/// Reads a checkpoint into `model` and `optimizer` (whose settings are kept; only state is
/// replaced). Optimiser slots are put on `device`.
pub fn load<M: Module>(path: &Path, model: M, optimizer: &mut Optimizer, device: &Device) -> Result<(M, CheckpointMeta)> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let (tensors, metadata) = from_safetensors(&bytes, path)?;
    let meta: CheckpointMeta = metadata
        .get("plastic")
        .and_then(|m| serde_json::from_str(m).ok())
        .ok_or_else(|| TrainError::Checkpoint { path: path.into(), message: "no plastic metadata (not a plastic checkpoint?)".into() })?;
    let (mut model_tensors, mut optim_tensors) = (BTreeMap::new(), BTreeMap::new());
    for (k, v) in tensors {
        if let Some(rest) = k.strip_prefix(MODEL) {
            model_tensors.insert(rest.to_string(), v);
        } else if let Some(rest) = k.strip_prefix(OPTIM) {
            optim_tensors.insert(rest.to_string(), v);
        }
    }
    let model = load_module_tensors(model, &model_tensors, path)?;
    let inner = device.clone().without_autodiff();
    optimizer.state.clear();
    for (param, &steps) in &meta.optimizer_steps {
        let slots = (0..)
            .map_while(|i| optim_tensors.get(&format!("{param}.{i}")))
            .map(|t| t.to_tensor::<1>(&inner))
            .collect();
        optimizer.state.insert(param.clone(), ParamState { steps, slots });
    }
    Ok((model, meta))
}

/// Reads only the metadata of a checkpoint.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let (_, metadata) = from_safetensors(&bytes, path)?;
    metadata
        .get("plastic")
        .and_then(|m| serde_json::from_str(m).ok())
        .ok_or_else(|| TrainError::Checkpoint { path: path.into(), message: "no plastic metadata".into() })
}

/// A trained run loaded back: its config, data splits and the model at a checkpoint.
pub struct LoadedRun {
    pub config: crate::config::RunConfig,
    pub splits: plastic_data::Splits,
    pub model: crate::network::Network,
    pub step: usize,
    pub checkpoint: std::path::PathBuf,
}

/// Loads `dir`'s config, data and model at `checkpoint` (default: the latest) on `device`.
pub fn load_run(dir: &crate::run_dir::RunDir, checkpoint: Option<&Path>, device: &Device) -> Result<LoadedRun> {
    if !dir.config().exists() {
        return Err(TrainError::Run(format!("{} is not a run directory (no config.toml)", dir.root.display())));
    }
    let config = crate::config::RunConfig::load(&dir.config(), &[])?;
    let path = match checkpoint {
        Some(p) => p.to_path_buf(),
        None => dir.latest_checkpoint().map(|(_, p)| p).ok_or_else(|| TrainError::Run(format!("{} has no checkpoint yet", dir.root.display())))?,
    };
    let splits = plastic_data::open(&config.data)?;
    let model = crate::network::Network::build(&config, splits.shape(), splits.num_classes(), device)?;
    let steps_per_epoch = crate::trainer::train_loader(&config, &splits).steps_per_epoch();
    let total = crate::trainer::total_steps(&config.train, steps_per_epoch);
    let mut optimizer = crate::trainer::build_optimizer(&config, &model, total);
    let (model, meta) = load(&path, model, &mut optimizer, device)?;
    Ok(LoadedRun { config, splits, model, step: meta.step, checkpoint: path })
}

/// A trained model loaded back without its training data: for showing it new images.
pub struct LoadedModel {
    pub config: crate::config::RunConfig,
    pub preprocessing: plastic_data::Preprocessing,
    pub model: crate::network::Network,
    pub step: usize,
    pub checkpoint: std::path::PathBuf,
}

/// Loads `dir`'s config, preprocessing and model at `checkpoint` (default: the latest) on
/// `device`, reading the training data only for a run written before runs kept their
/// `preprocessing.json` (its preprocessing is then recomputed from the data, not saved).
pub fn load_model(dir: &crate::run_dir::RunDir, checkpoint: Option<&Path>, device: &Device) -> Result<LoadedModel> {
    if !dir.config().exists() {
        return Err(TrainError::Run(format!("{} is not a run directory (no config.toml)", dir.root.display())));
    }
    if !dir.preprocessing().exists() {
        let run = load_run(dir, checkpoint, device)?;
        let preprocessing = plastic_data::Preprocessing::of(&run.splits, run.config.data.kind);
        return Ok(LoadedModel { config: run.config, preprocessing, model: run.model, step: run.step, checkpoint: run.checkpoint });
    }
    let config = crate::config::RunConfig::load(&dir.config(), &[])?;
    let preprocessing = plastic_data::Preprocessing::read(&dir.root)?;
    let path = match checkpoint {
        Some(p) => p.to_path_buf(),
        None => dir.latest_checkpoint().map(|(_, p)| p).ok_or_else(|| TrainError::Run(format!("{} has no checkpoint yet", dir.root.display())))?,
    };
    let model = crate::network::Network::build(&config, preprocessing.shape(), preprocessing.num_classes(), device)?;
    // The optimiser's state is read and dropped: a model-only load of a training checkpoint.
    let mut optimizer = crate::trainer::build_optimizer(&config, &model, 1);
    let (model, meta) = load(&path, model, &mut optimizer, device)?;
    Ok(LoadedModel { config, preprocessing, model, step: meta.step, checkpoint: path })
}
