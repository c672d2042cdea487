//! A 2-D convolution trained by a learning rule: [`FeedbackConv2d`].

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

use crate::init::WeightInit;
use crate::layer::{FeedbackLayer, MirrorSettings};
use crate::ops::{BackwardSpec, FeedbackGrad, LocalLoss, feedback_conv2d, plain_conv2d};
use crate::precision::follow;
use crate::rule::LayerRule;
use crate::source::FeedbackSource;
use crate::tap::LayerTap;

/// Configuration of a [`FeedbackConv2d`].
#[derive(Config, Debug)]
pub struct FeedbackConv2dConfig {
    /// `[channels_in, channels_out]`.
    pub channels: [usize; 2],
    /// `[k1, k2]`.
    pub kernel_size: [usize; 2],
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Zero padding on each side, `[p1, p2]`.
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    #[config(default = 1)]
    pub groups: usize,
    #[config(default = true)]
    pub bias: bool,
    /// How W (and B) are drawn.
    #[config(default = "WeightInit::KaimingUniform")]
    pub init: WeightInit,
    /// The learning rule of this layer.
    #[config(default = "LayerRule::Backprop")]
    pub rule: LayerRule,
    /// Seed of W's draw; the layer uses stream `stream` of it.
    #[config(default = 0)]
    pub seed: u64,
    /// Seed of B's draw (and of any per-step feedback randomness).
    #[config(default = 1)]
    pub feedback_seed: u64,
    /// Stream index of this layer within the two seeds.
    #[config(default = 0)]
    pub stream: u64,
}

/// A convolution `y = W ⊛ x + b` whose backward sends the error through B (see `ops`).
#[derive(Module, Debug)]
pub struct FeedbackConv2d {
    /// `[channels_out, channels_in / groups, k1, k2]`.
    pub weight: Param<Tensor<4>>,
    /// `[channels_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// B, in W's layout; present for the rules that store it (not backprop, not sign symmetry).
    pub feedback: Option<Param<Tensor<4>>>,
    /// frSF's fixed magnitudes |M|, in W's layout.
    pub magnitude: Option<Param<Tensor<4>>>,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    #[module(skip)]
    pub rule: LayerRule,
    #[module(skip)]
    pub source: FeedbackSource,
    #[module(skip)]
    pub tap: LayerTap,
}

impl FeedbackConv2dConfig {
    /// Builds the layer, drawing W, B and magnitudes on the host.
    pub fn init(&self, device: &Device) -> FeedbackConv2d {
        let [c_in, c_out] = self.channels;
        assert!(self.groups > 0 && c_in % self.groups == 0 && c_out % self.groups == 0, "channels {:?} not divisible by groups {}", self.channels, self.groups);
        let shape = [c_out, c_in / self.groups, self.kernel_size[0], self.kernel_size[1]];
        let len: usize = shape.iter().product();
        let fan_in = shape[1] * shape[2] * shape[3];
        let fan_out = c_out * shape[2] * shape[3] / self.groups;
        let draw = |seed: u64| Tensor::<4>::from_data(TensorData::new(self.init.sample(len, fan_in, fan_out, seed, self.stream), shape), device);
        let weight = Param::from_tensor(draw(self.seed));
        let bias = self.bias.then(|| Param::from_tensor(Tensor::zeros([c_out], device)));
        let feedback = self
            .rule
            .stores_feedback()
            .then(|| Param::from_tensor(draw(self.feedback_seed)).set_require_grad(self.rule.trains_feedback()));
        let source = FeedbackSource { rule: self.rule, init: self.init, fan_in, fan_out, seed: self.feedback_seed, stream: self.stream };
        let magnitude = source.fixed_magnitude(len).map(|m| Param::from_tensor(Tensor::from_data(TensorData::new(m, shape), device)).set_require_grad(false));
        FeedbackConv2d {
            weight,
            bias,
            feedback,
            magnitude,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            rule: self.rule,
            source,
            tap: LayerTap::default(),
        }
    }
}

impl FeedbackConv2d {
    pub fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.padding, self.dilation, self.groups)
    }

    /// `[batch, channels_in, h, w] → [batch, channels_out, h', w']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // Mixed precision: W, B and the bias meet the input in its dtype (f32 stays f32).
        let weight = follow(self.weight.val(), &x);
        let bias = self.bias.as_ref().map(|b| follow(b.val(), &x));
        // Without autodiff (evaluation), with backprop, or on an input that carries no gradient
        // (the image itself) when B does not learn, the op is a plain convolution (on flex still
        // our own products, `cpu_conv`): no error goes down through B there, and W's gradient
        // δy ⊛ x is the same under every rule. A layer on
        // the image whose B learns (KP, local losses) still runs the op: its input gradient is
        // never computed, but B gets its rule's update, as in Akrout's and Kunin's code, so its
        // alignment means the same as in every other layer.
        if self.rule.is_plain() || !weight.is_autodiff() || (!x.is_tracked() && !self.rule.trains_feedback()) {
            return plain_conv2d(x, weight, bias, self.options());
        }
        let feedback = follow(self.feedback_tensor(&self.weight.val()), &x);
        let spec = BackwardSpec { feedback_grad: self.rule.feedback_grad(), tap: Some(self.tap.clone()) };
        feedback_conv2d(x, weight, bias, feedback, self.options(), spec)
    }

    /// The B of this step: the stored parameter, or sign symmetry's B derived from W (as a
    /// constant: no gradient flows from B into W).
    fn feedback_tensor(&self, weight: &Tensor<4>) -> Tensor<4> {
        match &self.feedback {
            Some(b) => b.val(),
            None => self.source.sign_feedback(weight, self.magnitude.as_ref().map(|m| m.val()), self.tap.step()),
        }
    }
}

impl FeedbackLayer for FeedbackConv2d {
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
        self.weight.val().inner().flatten(0, 3)
    }

    fn feedback_flat(&self) -> Tensor<1> {
        let w = self.weight.val().inner();
        if self.rule.is_plain() {
            return w.flatten(0, 3);
        }
        self.feedback_tensor(&w).inner().flatten(0, 3)
    }

    fn set_feedback_to_weight(&mut self) {
        if let Some(b) = self.feedback.take() {
            self.feedback = Some(replace_value(b, self.weight.val().inner(), self.weight.val().is_autodiff()));
        }
    }

    fn weight_grad(&self, grads: &burn::tensor::Gradients) -> Option<Tensor<1>> {
        self.weight.grad(grads).map(|g| g.flatten(0, 3))
    }

    fn mirror_step(&mut self, settings: &MirrorSettings, step: u64) {
        if !self.rule.mirrors_noise() {
            return;
        }
        let Some(feedback) = self.feedback.take() else { return };
        let w = self.weight.val().inner();
        let [_, c_in_g, k1, k2] = w.dims();
        let device = w.device();
        // Valid padding and an input just larger than the kernel's reach: every kernel offset
        // then sees the same number of positions, so E[y x̃ᵀ] = σ² W entry by entry.
        let reach = |k: usize, d: usize, s: usize| d * (k - 1) + 1 + 3 * s;
        let (h, wd) = (reach(k1, self.dilation[0], self.stride[0]), reach(k2, self.dilation[1], self.stride[1]));
        let shape = [settings.batch, c_in_g * self.groups, h, wd];
        let noise = self.source.mirror_noise(shape.iter().product(), settings.noise_std, step);
        let x = Tensor::<4>::from_data(TensorData::new(noise, shape), &device);
        let options = ConvOptions::new(self.stride, [0, 0], self.dilation, self.groups);
        let b = feedback.val().inner();
        // The amp term's gradient is −E[ŷ x̂ᵀ] on the normalised noise (mean over the batch and
        // positions), whose expectation is −W: its negative estimates W.
        let estimate = -local_grad_on(x, w, b.clone(), options, LocalLoss { amp: 1.0, ..Default::default() });
        let updated = b.clone() + (estimate - b * settings.decay) * settings.lr;
        self.feedback = Some(replace_value(feedback, updated, self.weight.val().is_autodiff()));
    }
}

/// Gives a parameter a new value (computed without autodiff), keeping its id and its
/// require-grad flag, on the autodiff device when the model is on one.
pub fn replace_value<const D: usize>(param: Param<Tensor<D>>, value: Tensor<D>, autodiff: bool) -> Param<Tensor<D>> {
    let require_grad = param.is_require_grad();
    let (id, _, mapper) = param.consume();
    let value = if autodiff { Tensor::from_inner(value.inner()).set_require_grad(require_grad) } else { value.inner() };
    Param::from_mapped_value(id, value, mapper)
}

/// The closed-form gradient of a local loss w.r.t. B on input `x`, obtained by running the op
/// once on an autodiff device with B as the only tracked input (its gradient does not depend on
/// δy, so any upstream gradient will do).
pub(crate) fn local_grad_on(x: Tensor<4>, w: Tensor<4>, b: Tensor<4>, options: ConvOptions<2>, loss: LocalLoss) -> Tensor<4> {
    let b = Tensor::from_inner(b).require_grad();
    let y = feedback_conv2d(
        Tensor::from_inner(x),
        Tensor::from_inner(w),
        None,
        b.clone(),
        options,
        BackwardSpec { feedback_grad: FeedbackGrad::Local(loss), tap: None },
    );
    let grads = y.sum().backward();
    b.grad(&grads).expect("B is tracked")
}
