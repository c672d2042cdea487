//! Optimisers with two parameter groups: the weights (W, biases, norms) and the feedback
//! tensors B. State is keyed by parameter path (`stages.0.conv.weight`), not by burn's random
//! `ParamId`, so a checkpoint restores it into a freshly built model.
//!
//! Updates follow PyTorch exactly: SGD `v ← μv + g` (no dampening; `v = g` on the first step),
//! Nesterov `d = g + μv`; Adam with bias correction; weight decay either coupled (`g += λw`) or
//! decoupled (`w ← w − lr·λ·w`, AdamW). Weight decay only touches parameters named `weight`
//! (conv and linear kernels) in the weight group, and every B in the feedback group.
//!
//! Kolen–Pollack layers are a third group: their W and their B step with the same settings
//! (W's optimiser and learning rate, KP's decay on both), and B's gradient is W's, so the two
//! increments are identical and B − W only decays. Gradient clipping scales the task gradients
//! (weights, and KP's B, which is a task gradient) by one norm, and every other B by its own.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use plastic_rules::update;
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
    /// Settings of the Kolen–Pollack layers' W and B (see the module docs).
    pub kolen_pollack: GroupSettings,
    /// Parameter-path prefixes of the Kolen–Pollack layers (`stages.0.conv`).
    pub kolen_pollack_layers: BTreeSet<String>,
    /// Clip the task gradients' norm, and each other B group's, to this value (0 = off).
    pub grad_clip: f64,
    pub state: BTreeMap<String, ParamState>,
}

/// Which settings a parameter steps with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Weights,
    Feedback,
    KolenPollackWeight,
    KolenPollackFeedback,
}

impl Role {
    /// Task gradients share one clipping norm; learned B's have their own.
    fn is_task(self) -> bool {
        self != Role::Feedback
    }
}

impl Optimizer {
    pub fn new(weights: GroupSettings, feedback: GroupSettings, grad_clip: f64) -> Self {
        Self { weights, feedback, kolen_pollack: weights, kolen_pollack_layers: BTreeSet::new(), grad_clip, state: BTreeMap::new() }
    }

    /// Marks the layers at `prefixes` as Kolen–Pollack layers stepping with `settings`.
    pub fn with_kolen_pollack(mut self, settings: GroupSettings, prefixes: impl IntoIterator<Item = String>) -> Self {
        self.kolen_pollack = settings;
        self.kolen_pollack_layers = prefixes.into_iter().collect();
        self
    }

    fn role(&self, path: &str) -> Role {
        let prefix = path.rsplit_once('.').map_or("", |(p, _)| p);
        let kp = self.kolen_pollack_layers.contains(prefix);
        match (group_of(path), kp) {
            (Group::Feedback, true) => Role::KolenPollackFeedback,
            (Group::Feedback, false) => Role::Feedback,
            (Group::Weights, true) if path.ends_with(".weight") => Role::KolenPollackWeight,
            (Group::Weights, _) => Role::Weights,
        }
    }

    fn settings(&self, role: Role) -> GroupSettings {
        match role {
            Role::Weights => self.weights,
            Role::Feedback => self.feedback,
            Role::KolenPollackWeight | Role::KolenPollackFeedback => self.kolen_pollack,
        }
    }

    /// One update of every parameter that has a gradient; `multiplier` scales every group's
    /// learning rate (the schedule). Returns the model and the task gradients' norm before
    /// clipping (computed only when clipping is on; NaN otherwise).
    pub fn step<M: Module>(&mut self, model: M, grads: GradientsParams, multiplier: f64) -> (M, f64) {
        let (model, report) = self.step_scaled(model, grads, multiplier, None);
        (model, report.norm)
    }

    /// [`Optimizer::step`] for gradients of a loss multiplied by `loss_scale` (f16's dynamic
    /// loss scale; `None` for an unscaled loss): they are divided back before clipping and the
    /// update. A scaled step's gradients are checked first — at every scale, 1 included — and
    /// if any is infinite or NaN nothing is updated (`applied: false`, the optimiser's state
    /// untouched).
    pub fn step_scaled<M: Module>(&mut self, model: M, mut grads: GradientsParams, multiplier: f64, loss_scale: Option<f64>) -> (M, StepReport) {
        let check = loss_scale.is_some();
        let squares = (self.grad_clip > 0.0 || check).then(|| {
            let mut v = NormVisitor { opt: self, grads: &grads, path: Vec::new(), task: 0.0, feedback: 0.0 };
            model.visit(&mut v);
            (v.task, v.feedback)
        });
        if check && squares.is_some_and(|(task, feedback)| !(task + feedback).is_finite()) {
            return (model, StepReport { applied: false, norm: f64::NAN });
        }
        let unscale = 1.0 / loss_scale.unwrap_or(1.0);
        let (scales, norm) = match squares.filter(|_| self.grad_clip > 0.0) {
            Some((task, feedback)) => {
                let (task, feedback) = (task.sqrt() * unscale, feedback.sqrt() * unscale);
                let clip = |norm: f64| if norm > self.grad_clip { self.grad_clip / norm } else { 1.0 };
                (((clip(task) * unscale) as f32, (clip(feedback) * unscale) as f32), task)
            }
            None => ((unscale as f32, unscale as f32), f64::NAN),
        };
        let mut mapper = StepMapper { opt: self, grads: &mut grads, path: Vec::new(), multiplier, scales };
        (model.map(&mut mapper), StepReport { applied: true, norm })
    }
}

/// What [`Optimizer::step_scaled`] did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// False when the step was skipped for non-finite (overflowed) gradients.
    pub applied: bool,
    /// The task gradients' norm before clipping (NaN when clipping is off).
    pub norm: f64,
}

/// Dynamic loss scaling for f16 training (Micikevicius et al. 2018; PyTorch's `GradScaler`
/// with its defaults): the loss is multiplied by `scale` before the backward pass so that
/// gradients too small for f16 (below 6·10⁻⁸) are not flushed to zero, and the optimiser
/// divides them back. A step whose gradients overflow is skipped and the scale halved; after
/// [`LossScale::GROWTH_INTERVAL`] clean steps in a row it doubles. The scale is always a power
/// of two, so scaling and unscaling are exact.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Clean steps since the last change of the scale.
    pub clean_steps: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        Self::starting_at(65536.0)
    }
}

impl LossScale {
    pub const GROWTH_INTERVAL: usize = 2000;

    /// A scale starting at `scale` (`train.loss_scale`, a power of two).
    pub fn starting_at(scale: f64) -> Self {
        Self { scale, clean_steps: 0 }
    }

    /// After a step: `applied` false when its gradients overflowed.
    pub fn update(&mut self, applied: bool) {
        if !applied {
            self.scale = (self.scale * 0.5).max(1.0);
            self.clean_steps = 0;
        } else {
            self.clean_steps += 1;
            if self.clean_steps == Self::GROWTH_INTERVAL {
                self.scale = (self.scale * 2.0).min(2f64.powi(24));
                self.clean_steps = 0;
            }
        }
    }
}

/// Squared gradient norms of the task gradients and of the learned B's.
struct NormVisitor<'a> {
    opt: &'a Optimizer,
    grads: &'a GradientsParams,
    path: Vec<String>,
    task: f64,
    feedback: f64,
}

impl ModuleVisitor for NormVisitor<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let role = self.opt.role(&self.path.join("."));
            // KP's B gradient is W's own: counting it would count δW twice.
            match role {
                Role::KolenPollackFeedback => {}
                Role::Feedback => self.feedback += update::sum_of_squares(g),
                _ => self.task += update::sum_of_squares(g),
            }
        }
    }
}

struct StepMapper<'a> {
    opt: &'a mut Optimizer,
    grads: &'a mut GradientsParams,
    path: Vec<String>,
    multiplier: f64,
    /// Clipping factors of the task gradients and of the learned B's.
    scales: (f32, f32),
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
        let role = self.opt.role(&path);
        let settings = self.opt.settings(role);
        let scale = if role.is_task() { self.scales.0 } else { self.scales.1 };
        let decays = group_of(&path) == Group::Feedback || path.ends_with("weight");
        let weight_decay = if decays { settings.weight_decay } else { 0.0 };
        let lr = settings.lr * self.multiplier;
        let (autodiff, require_grad) = (param.val().is_autodiff(), param.is_require_grad());
        // The value taken out of the parameter, so that nothing else holds it and the update
        // can be written over it (plastic_rules::update).
        let (id, value, mapper) = param.consume();
        let w = value.inner();
        let dims = w.dims();
        // The updated value back into the parameter, in W's shape and autodiff state.
        let finish = |updated: Tensor<1>| {
            let updated = updated.reshape(dims);
            let value = if autodiff { Tensor::from_inner(updated).set_require_grad(require_grad) } else { updated };
            Param::from_mapped_value(id, value, mapper)
        };
        let n = w.shape().num_elements();
        let mut g = grad.inner().reshape([n]);
        let mut wf = w.reshape([n]);
        let state = self.opt.state.entry(path).or_insert_with(|| ParamState { steps: 0, slots: Vec::new() });
        state.steps += 1;
        // SGD with momentum after its first step, the usual case: one fused pass
        // (plastic_rules::update), the same arithmetic as the composed ops below. (A resumed
        // run keeps its optimiser, so a buffer is there on every step but the first.)
        if matches!(settings.kind, OptimizerKind::Sgd) && settings.momentum > 0.0 && state.slots.len() == 1 {
            let v = state.slots.pop().expect("one momentum buffer");
            let coupled = weight_decay > 0.0 && !settings.decoupled;
            let decoupled = weight_decay > 0.0 && settings.decoupled;
            let step = update::SgdStep {
                grad_scale: scale,
                decay: if coupled { weight_decay as f32 } else { 0.0 },
                momentum: settings.momentum as f32,
                nesterov: settings.nesterov,
                shrink: if decoupled { (1.0 - lr * weight_decay) as f32 } else { 1.0 },
                lr: lr as f32,
            };
            let (updated, v) = update::sgd_momentum_step(wf, g, v, step);
            state.slots = vec![v];
            return finish(updated);
        }
        if scale != 1.0 {
            g = g * scale;
        }
        if weight_decay > 0.0 && !settings.decoupled {
            g = g + wf.clone() * weight_decay;
        }
        let direction = match settings.kind {
            OptimizerKind::Sgd => {
                if settings.momentum > 0.0 {
                    // The first step: the buffer starts as g.
                    state.slots = vec![g.clone()];
                    if settings.nesterov { g.clone() + g * settings.momentum } else { g }
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
        finish(update::sub_scaled(wf, direction, lr as f32))
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

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
    use plastic_rules::FeedbackNetwork;

    use crate::config::RunConfig;
    use crate::network::Network;
    use crate::trainer::build_optimizer;

    fn flat(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// A layer made Kolen–Pollack by an override steps exactly like its W — whatever
    /// `rule.b_lr` says for the run's other B's, and with a clip that scales only the task
    /// gradients — so B − W only shrinks by (1 − lr·λ) (SGD, coupled L2, no momentum).
    #[test]
    fn kolen_pollack_b_steps_exactly_like_its_w_even_under_an_override() {
        let text = "[model]\nkind = \"mlp\"\nhidden = [16]\n[train]\noptimizer = \"sgd\"\nmomentum = 0.0\nlr = 0.1\ngrad_clip = 0.05\n[rule]\nkind = \"information_alignment\"\nb_lr = 0.5\nkp_decay = 0.2\noverrides = [{ layers = [\"last\"], kind = \"kolen_pollack\" }]";
        let config = RunConfig::parse(text, &[]).unwrap();
        let device = Device::flex().autodiff();
        let model = Network::build(&config, [1, 4, 4], 3, &device).unwrap();
        let mut optimizer = build_optimizer(&config, &model, 10);
        let layers = model.feedback_layers();
        let (_, last) = layers.last().unwrap();
        assert_eq!(last.rule(), plastic_rules::LayerRule::KolenPollack);
        let before: Vec<f32> = flat(last.weight_flat()).iter().zip(flat(last.feedback_flat())).map(|(w, b)| w - b).collect();
        drop(layers);
        let x = Tensor::<4>::random([5, 1, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 0, 1], [5]), &device);
        let loss = Network::loss(&model.forward(x), t);
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
        let (model, norm) = optimizer.step(model, grads, 1.0);
        assert!(norm > 0.05, "the clip must bind for the test to mean anything: {norm}");
        let layers = model.feedback_layers();
        let (_, last) = layers.last().unwrap();
        let after: Vec<f32> = flat(last.weight_flat()).iter().zip(flat(last.feedback_flat())).map(|(w, b)| w - b).collect();
        for (a, b) in after.iter().zip(&before) {
            assert!((a - b * (1.0 - 0.1 * 0.2)).abs() < 1e-6, "B − W: {a} vs {}", b * 0.98);
        }
    }

    /// f16's loss scale: a step on the gradients of 2¹⁶·L is bit for bit the step on L's (the
    /// scale is a power of two; clipping sees the unscaled norm), and a step whose gradients
    /// overflowed changes neither the model nor the optimiser's state.
    #[test]
    fn a_loss_scaled_step_is_the_unscaled_step_and_an_overflowed_one_is_skipped() {
        use super::LossScale;
        let text = "[model]\nkind = \"mlp\"\nhidden = [16]\n[train]\noptimizer = \"adam\"\nlr = 0.01\ngrad_clip = 0.05";
        let config = RunConfig::parse(text, &[]).unwrap();
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::from_data(TensorData::new(plastic_rules::init::normal_stream(80, 5, 0), [5, 1, 4, 4]), &device);
        let t = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 0, 1], [5]), &device);
        let weights = |model: &Network| -> Vec<f32> {
            let layers = model.feedback_layers();
            layers.iter().flat_map(|(_, l)| flat(l.weight_flat())).collect()
        };
        let mut results = Vec::new();
        // Unscaled, scaled by 2¹⁶, and scaled by 1 (where the dynamic scale bottoms out).
        for scale in [None, Some(65536.0), Some(1.0)] {
            let model = Network::build(&config, [1, 4, 4], 3, &device).unwrap();
            let mut optimizer = build_optimizer(&config, &model, 10);
            let loss = Network::loss(&model.forward(x.clone()), t.clone());
            let grads = burn::optim::GradientsParams::from_grads((loss * scale.unwrap_or(1.0)).backward(), &model);
            let (model, report) = optimizer.step_scaled(model, grads, 1.0, scale);
            assert!(report.applied && report.norm > 0.05, "the clip binds: {}", report.norm);
            results.push((weights(&model), report.norm));

            // Overflowed gradients: nothing moves, no optimiser state is created.
            let before = weights(&model);
            let state = optimizer.state.clone();
            let loss = Network::loss(&model.forward(x.clone()), t.clone());
            let grads = burn::optim::GradientsParams::from_grads((loss * f64::INFINITY).backward(), &model);
            if scale.is_some() {
                let (model, report) = optimizer.step_scaled(model, grads, 1.0, scale);
                assert!(!report.applied);
                assert_eq!(weights(&model), before);
                assert_eq!(optimizer.state.keys().collect::<Vec<_>>(), state.keys().collect::<Vec<_>>());
                assert!(optimizer.state.values().zip(state.values()).all(|(a, b)| a.steps == b.steps));
            }
        }
        for r in &results[1..] {
            assert_eq!(results[0].0, r.0, "the scaled step is the unscaled one");
            assert_eq!(results[0].1.to_bits(), r.1.to_bits());
        }

        let mut s = LossScale::default();
        s.update(false);
        assert_eq!((s.scale, s.clean_steps), (32768.0, 0));
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!(s.scale, 32768.0);
        s.update(true);
        assert_eq!((s.scale, s.clean_steps), (65536.0, 0));
    }
}
