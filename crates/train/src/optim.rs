//! Optimisers with two parameter groups: the weights (W, biases, norms) and the feedback
//! tensors B. State is keyed by parameter path (`stages.0.conv.weight`), not by burn's random
//! `ParamId`, so a checkpoint restores it into a freshly built model.
//!
//! Updates follow PyTorch exactly: SGD `v ← μv + g` (no dampening; `v = g` on the first step),
//! Nesterov `d = g + μv`; Adam with bias correction; weight decay either coupled (`g += λw`) or
//! decoupled (`w ← w − lr·λ·w`, AdamW). Weight decay only touches parameters named `weight`
//! (conv and linear kernels) in the weight group, and every B in the feedback group.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use plastic_rules::replace_value;
use serde::{Deserialize, Serialize};

use crate::config::OptimizerKind;

/// Which group a parameter belongs to, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Weights,
    Feedback,
}

pub fn group_of(path: &str) -> Group {
    if path == "feedback" || path.ends_with(".feedback") { Group::Feedback } else { Group::Weights }
}

/// Settings of one group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupSettings {
    pub kind: OptimizerKind,
    /// Learning rate at schedule multiplier 1.
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
    pub decoupled: bool,
}

/// Per-parameter state: a step count and the moment buffers, flattened.
#[derive(Debug, Clone)]
pub struct ParamState {
    pub steps: u64,
    pub slots: Vec<Tensor<1>>,
}

/// The optimiser of a run.
#[derive(Debug, Clone)]
pub struct Optimizer {
    pub weights: GroupSettings,
    pub feedback: GroupSettings,
    /// Clip the global gradient norm to this value (0 = off).
    pub grad_clip: f64,
    pub state: BTreeMap<String, ParamState>,
}

impl Optimizer {
    pub fn new(weights: GroupSettings, feedback: GroupSettings, grad_clip: f64) -> Self {
        Self { weights, feedback, grad_clip, state: BTreeMap::new() }
    }

    /// One update of every parameter that has a gradient; `multiplier` scales both groups'
    /// learning rates (the schedule). Returns the model and the global gradient norm before
    /// clipping (computed only when clipping is on; NaN otherwise).
    pub fn step<M: Module>(&mut self, model: M, mut grads: GradientsParams, multiplier: f64) -> (M, f64) {
        let (scale, norm) = if self.grad_clip > 0.0 {
            let mut v = NormVisitor { grads: &grads, sum: 0.0 };
            model.visit(&mut v);
            let norm = v.sum.sqrt();
            (if norm > self.grad_clip { (self.grad_clip / norm) as f32 } else { 1.0 }, norm)
        } else {
            (1.0, f64::NAN)
        };
        let mut mapper = StepMapper { opt: self, grads: &mut grads, path: Vec::new(), multiplier, scale };
        (model.map(&mut mapper), norm)
    }
}

struct NormVisitor<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for NormVisitor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum += sum_of_squares(g);
        }
    }
}

/// Σ x² read back as f64. Reduced row by row first: burn-flex's one-shot sum over more than
/// 4 Mi elements is split across threads in a scheduling-dependent order, which would break
/// bitwise-reproducible resumes.
pub fn sum_of_squares<const D: usize>(t: Tensor<D>) -> f64 {
    let n = t.shape().num_elements();
    let rows = if D > 1 { t.dims()[0] } else { n.div_ceil(1 << 16).max(1) };
    let t = if n % rows == 0 { t.reshape([rows, n / rows]) } else { t.reshape([1, n]) };
    let s = (t.clone() * t).sum_dim(1).sum();
    s.into_scalar::<f64>()
}

struct StepMapper<'a> {
    opt: &'a mut Optimizer,
    grads: &'a mut GradientsParams,
    path: Vec<String>,
    multiplier: f64,
    scale: f32,
}

impl ModuleMapper for StepMapper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else { return param };
        let path = self.path.join(".");
        let group = group_of(&path);
        let settings = match group {
            Group::Weights => self.opt.weights,
            Group::Feedback => self.opt.feedback,
        };
        let decays = group == Group::Feedback || path.ends_with("weight");
        let weight_decay = if decays { settings.weight_decay } else { 0.0 };
        let lr = settings.lr * self.multiplier;
        let autodiff = param.val().is_autodiff();
        let w = param.val().inner();
        let dims = w.dims();
        let n = w.shape().num_elements();
        let mut g = grad.inner().reshape([n]);
        if self.scale != 1.0 {
            g = g * self.scale;
        }
        let mut wf = w.reshape([n]);
        if weight_decay > 0.0 && !settings.decoupled {
            g = g + wf.clone() * weight_decay;
        }
        let state = self.opt.state.entry(path).or_insert_with(|| ParamState { steps: 0, slots: Vec::new() });
        state.steps += 1;
        let direction = match settings.kind {
            OptimizerKind::Sgd => {
                if settings.momentum > 0.0 {
                    let v = match state.slots.pop() {
                        Some(v) => v * settings.momentum + g.clone(),
                        None => g.clone(),
                    };
                    state.slots = vec![v.clone()];
                    if settings.nesterov { g + v * settings.momentum } else { v }
                } else {
                    g
                }
            }
            OptimizerKind::Adam => {
                let (m, v) = match (state.slots.first(), state.slots.get(1)) {
                    (Some(m), Some(v)) => (m.clone(), v.clone()),
                    _ => (g.zeros_like(), g.zeros_like()),
                };
                let m = m * settings.beta1 + g.clone() * (1.0 - settings.beta1);
                let v = v * settings.beta2 + g.clone() * g * (1.0 - settings.beta2);
                state.slots = vec![m.clone(), v.clone()];
                let t = state.steps as i32;
                let bc1 = 1.0 - settings.beta1.powi(t);
                let bc2 = 1.0 - settings.beta2.powi(t);
                (m / bc1) / ((v / bc2).sqrt() + settings.epsilon)
            }
        };
        if weight_decay > 0.0 && settings.decoupled {
            wf = wf * (1.0 - lr * weight_decay);
        }
        let updated = (wf - direction * lr).reshape(dims);
        replace_value(param, updated, autodiff)
    }
}

/// Parameter ids by path, to look gradients up by name (tests, metrics).
pub fn param_ids<M: Module>(model: &M) -> BTreeMap<String, ParamId> {
    struct Ids {
        path: Vec<String>,
        ids: BTreeMap<String, ParamId>,
    }
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.ids.insert(self.path.join("."), param.id);
        }
    }
    let mut v = Ids { path: Vec::new(), ids: BTreeMap::new() };
    model.visit(&mut v);
    v.ids
}
