//! What every feedback layer exposes to the trainer and to observers (the layer-tap trait),
//! and the alignment metrics computed from it.

use burn::tensor::Tensor;

use crate::rule::LayerRule;
use crate::tap::{LayerTap, angle_degrees};

/// A layer whose backward may use a feedback tensor B: [`crate::FeedbackConv2d`] and
/// [`crate::FeedbackLinear`]. Models list theirs through [`FeedbackNetwork`].
pub trait FeedbackLayer {
    fn rule(&self) -> LayerRule;
    fn tap(&self) -> &LayerTap;
    /// The id of W, to find the layer among a module's parameters.
    fn weight_id(&self) -> burn::module::ParamId;
    /// W, flattened, without autodiff.
    fn weight_flat(&self) -> Tensor<1>;
    /// The B the backward uses at this step, flattened, without autodiff (W itself for backprop).
    fn feedback_flat(&self) -> Tensor<1>;
    /// One weight-mirror step on white noise (Akrout et al. 2019), for rules whose B learns
    /// from noise; a no-op for the others. `step` seeds the noise.
    fn mirror_step(&mut self, settings: &MirrorSettings, step: u64);
    /// Sets a stored B to W (tests of the "B = W equals backprop" kind); no-op without one.
    fn set_feedback_to_weight(&mut self);
    /// W's gradient in `grads`, flattened.
    fn weight_grad(&self, grads: &burn::tensor::Gradients) -> Option<Tensor<1>>;
}

/// Settings of Akrout's mirror mode (see [`crate::rule::MirrorSource::Noise`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MirrorSettings {
    pub noise_std: f32,
    pub lr: f32,
    pub decay: f32,
    pub batch: usize,
}

/// A model whose feedback layers can be listed by name, in forward order.
pub trait FeedbackNetwork {
    fn feedback_layers(&self) -> Vec<(String, &dyn FeedbackLayer)>;
    fn feedback_layers_mut(&mut self) -> Vec<(String, &mut dyn FeedbackLayer)>;
}

/// Alignment of one layer's B with its W.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightAlignment {
    /// Angle between B and W, degrees.
    pub weight_angle: f64,
    /// ‖B‖ / ‖W‖.
    pub norm_ratio: f64,
}

/// `weight_angle` and `norm_ratio` of a layer (one host read of three numbers).
pub fn weight_alignment(layer: &dyn FeedbackLayer) -> WeightAlignment {
    let w = layer.weight_flat();
    let b = layer.feedback_flat();
    let stats = Tensor::cat(vec![(w.clone() * b.clone()).sum(), (w.clone() * w).sum(), (b.clone() * b).sum()], 0);
    let v: Vec<f64> = stats.into_data().try_into_vec_as::<f64>().unwrap_or_else(|_| vec![f64::NAN; 3]);
    WeightAlignment {
        weight_angle: angle_degrees(v[0], v[1], v[2]),
        norm_ratio: if v[1] > 0.0 { (v[2] / v[1]).sqrt() } else { f64::NAN },
    }
}

/// One feedback layer of a built network, for `plastic inspect`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    pub name: String,
    /// `conv k×k/s` or `linear`.
    pub kind: String,
    /// Output shape without the batch: `[c, h, w]` or `[features]`.
    pub output: Vec<usize>,
    pub params: usize,
}
