//! A fully connected layer trained by a learning rule: [`FeedbackLinear`].

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::conv2d::replace_value;
use crate::init::WeightInit;
use crate::layer::{FeedbackLayer, MirrorSettings};
use crate::ops::{BackwardSpec, FeedbackGrad, LocalLoss, feedback_linear, plain_linear};
use crate::precision::follow;
use crate::rule::LayerRule;
use crate::source::FeedbackSource;
use crate::tap::LayerTap;

/// Configuration of a [`FeedbackLinear`].
#[derive(Config, Debug)]
pub struct FeedbackLinearConfig {
    pub d_input: usize,
    pub d_output: usize,
    #[config(default = true)]
    pub bias: bool,
    #[config(default = "WeightInit::KaimingUniform")]
    pub init: WeightInit,
    #[config(default = "LayerRule::Backprop")]
    pub rule: LayerRule,
    #[config(default = 0)]
    pub seed: u64,
    #[config(default = 1)]
    pub feedback_seed: u64,
    #[config(default = 0)]
    pub stream: u64,
}

/// `y = x W + b` (burn's layout: W is `[d_input, d_output]`; PyTorch's is its transpose) whose
/// backward sends the error through B.
#[derive(Module, Debug)]
pub struct FeedbackLinear {
    /// `[d_input, d_output]`.
    pub weight: Param<Tensor<2>>,
    /// `[d_output]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// B, `[d_input, d_output]`.
    pub feedback: Option<Param<Tensor<2>>>,
    /// frSF's fixed magnitudes, `[d_input, d_output]`.
    pub magnitude: Option<Param<Tensor<2>>>,
    #[module(skip)]
    pub rule: LayerRule,
    #[module(skip)]
    pub source: FeedbackSource,
    #[module(skip)]
    pub tap: LayerTap,
}

impl FeedbackLinearConfig {
    pub fn init(&self, device: &Device) -> FeedbackLinear {
        let shape = [self.d_input, self.d_output];
        let len = self.d_input * self.d_output;
        let draw = |seed: u64| Tensor::<2>::from_data(TensorData::new(self.init.sample(len, self.d_input, self.d_output, seed, self.stream), shape), device);
        let source = FeedbackSource { rule: self.rule, init: self.init, fan_in: self.d_input, fan_out: self.d_output, seed: self.feedback_seed, stream: self.stream };
        FeedbackLinear {
            weight: Param::from_tensor(draw(self.seed)),
            bias: self.bias.then(|| Param::from_tensor(Tensor::zeros([self.d_output], device))),
            feedback: self.rule.stores_feedback().then(|| Param::from_tensor(draw(self.feedback_seed)).set_require_grad(self.rule.trains_feedback())),
            magnitude: source
                .fixed_magnitude(len)
                .map(|m| Param::from_tensor(Tensor::from_data(TensorData::new(m, shape), device)).set_require_grad(false)),
            rule: self.rule,
            source,
            tap: LayerTap::default(),
        }
    }
}

impl FeedbackLinear {
    /// `[batch, d_input] → [batch, d_output]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        // Mixed precision: W, B and the bias meet the input in its dtype (f32 stays f32).
        let weight = follow(self.weight.val(), &x);
        let bias = self.bias.as_ref().map(|b| follow(b.val(), &x));
        // As in `FeedbackConv2d::forward`: a plain product without autodiff, with backprop, or
        // on an input that carries no gradient when B does not learn.
        if self.rule.is_plain() || !weight.is_autodiff() || (!x.is_tracked() && !self.rule.trains_feedback()) {
            return plain_linear(x, weight, bias);
        }
        let feedback = follow(self.feedback_tensor(&self.weight.val()), &x);
        let spec = BackwardSpec { feedback_grad: self.rule.feedback_grad(), tap: Some(self.tap.clone()) };
        feedback_linear(x, weight, bias, feedback, spec)
    }

    fn feedback_tensor(&self, weight: &Tensor<2>) -> Tensor<2> {
        match &self.feedback {
            Some(b) => b.val(),
            None => self.source.sign_feedback(weight, self.magnitude.as_ref().map(|m| m.val()), self.tap.step()),
        }
    }
}

impl FeedbackLayer for FeedbackLinear {
    fn rule(&self) -> LayerRule {
        self.rule
    }

    fn tap(&self) -> &LayerTap {
        &self.tap
    }

    fn weight_id(&self) -> burn::module::ParamId {
        self.weight.id
    }

    fn weight_flat(&self) -> Tensor<1> {
        self.weight.val().inner().flatten(0, 1)
    }

    fn feedback_flat(&self) -> Tensor<1> {
        let w = self.weight.val().inner();
        if self.rule.is_plain() {
            return w.flatten(0, 1);
        }
        self.feedback_tensor(&w).inner().flatten(0, 1)
    }

    fn set_feedback_to_weight(&mut self) {
        if let Some(b) = self.feedback.take() {
            self.feedback = Some(replace_value(b, self.weight.val().inner(), self.weight.val().is_autodiff()));
        }
    }

    fn weight_grad(&self, grads: &burn::tensor::Gradients) -> Option<Tensor<1>> {
        self.weight.grad(grads).map(|g| g.flatten(0, 1))
    }

    fn mirror_step(&mut self, settings: &MirrorSettings, step: u64) {
        if !self.rule.mirrors_noise() {
            return;
        }
        let Some(feedback) = self.feedback.take() else { return };
        let w = self.weight.val().inner();
        let [d_in, _] = w.dims();
        let noise = self.source.mirror_noise(settings.batch * d_in, settings.noise_std, step);
        let x = Tensor::<2>::from_data(TensorData::new(noise, [settings.batch, d_in]), &w.device());
        let b = feedback.val().inner();
        // −E[ŷ x̂ᵀ] on normalised noise estimates −W (see `ops::LocalLoss`).
        let estimate = -local_linear_grad_on(x, w, b.clone(), LocalLoss { amp: 1.0, ..Default::default() });
        let updated = b.clone() + (estimate - b * settings.decay) * settings.lr;
        self.feedback = Some(replace_value(feedback, updated, self.weight.val().is_autodiff()));
    }
}

/// Linear counterpart of `conv2d::local_grad_on`.
pub(crate) fn local_linear_grad_on(x: Tensor<2>, w: Tensor<2>, b: Tensor<2>, loss: LocalLoss) -> Tensor<2> {
    let b = Tensor::from_inner(b).require_grad();
    let y = feedback_linear(
        Tensor::from_inner(x),
        Tensor::from_inner(w),
        None,
        b.clone(),
        BackwardSpec { feedback_grad: FeedbackGrad::Local(loss), tap: None },
    );
    b.grad(&y.sum().backward()).expect("B is tracked")
}
