//! The modules a [`crate::Cnn`] is made of.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, LocalResponseNorm, LocalResponseNormConfig};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use plastic_rules::pool::{avg_pool2d, max_pool2d};
use plastic_rules::precision::in_f32;
use plastic_rules::{Activation, FeedbackConv2d, FeedbackConv2dConfig, FeedbackLayer, FeedbackLinear, FeedbackLinearConfig};

use crate::spec::{PoolOp, PostOp};

/// BatchNorm in f32 whatever the activations' precision (autocast's rule): its batch
/// statistics and running averages need f32's mantissa. Training runs
/// [`plastic_rules::norm`]'s fused passes on flex.
pub fn batch_norm(norm: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    in_f32(x, |x| plastic_rules::norm::batch_norm(norm, x))
}

pub fn pool(x: Tensor<4>, op: PoolOp) -> Tensor<4> {
    match op {
        PoolOp::Max { kernel, stride, padding } => max_pool2d(x, kernel, stride, padding),
        PoolOp::Avg { kernel, stride, padding } => avg_pool2d(x, kernel, stride, padding, false),
        PoolOp::GlobalAvg => adaptive_avg_pool2d(x, [1, 1]),
        PoolOp::Adaptive(s) => adaptive_avg_pool2d(x, [s, s]),
    }
}

/// A feedback convolution and its post-processing (norm, nonlinearity, LRN, pooling) in a
/// fixed order.
#[derive(Module, Debug)]
pub struct ConvUnit {
    pub conv: FeedbackConv2d,
    pub norm: Option<BatchNorm>,
    pub lrn: Option<LocalResponseNorm>,
    #[module(skip)]
    pub post: Vec<PostOp>,
    pub name: String,
}

impl ConvUnit {
    pub fn new(name: String, conv: FeedbackConv2dConfig, post: Vec<PostOp>, device: &Device) -> Self {
        let channels = conv.channels[1];
        let norm = post.contains(&PostOp::BatchNorm).then(|| BatchNormConfig::new(channels).init(device));
        let lrn = post.iter().find_map(|p| match *p {
            PostOp::Lrn { size, alpha, beta, k } => Some(LocalResponseNormConfig::new(size).with_alpha(alpha as f64).with_beta(beta as f64).with_k(k as f64).init()),
            _ => None,
        });
        Self { conv: conv.init(device), norm, lrn, post, name }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_post(self.conv.forward(x))
    }

    /// The post-processing steps on the convolution's output `x`.
    pub fn forward_post(&self, mut x: Tensor<4>) -> Tensor<4> {
        for op in &self.post {
            x = match op {
                PostOp::BatchNorm => batch_norm(self.norm.as_ref().expect("built with the unit"), x),
                PostOp::Activation(a) => a.apply(x),
                PostOp::Lrn { .. } => in_f32(x, |x| self.lrn.as_ref().expect("built with the unit").forward(x)),
                PostOp::Pool(p) => pool(x, *p),
            };
        }
        x
    }
}

/// A basic residual block: two 3×3 feedback convolutions with BatchNorm, and a 1×1 feedback
/// projection on the shortcut when the shape changes. `preactivation` orders it as in He et
/// al.'s v2 (BN → ReLU → conv), otherwise v1 (conv → BN → ReLU). Norms and the addition keep
/// backprop; only the convolutions follow the rule.
#[derive(Module, Debug)]
pub struct ResidualBlock {
    pub conv1: FeedbackConv2d,
    pub norm1: BatchNorm,
    pub conv2: FeedbackConv2d,
    pub norm2: BatchNorm,
    pub shortcut: Option<FeedbackConv2d>,
    /// v1 only: BatchNorm after the projection.
    pub shortcut_norm: Option<BatchNorm>,
    pub preactivation: bool,
    pub name: String,
}

impl ResidualBlock {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let relu = |t| Activation::Relu.apply(t);
        if self.preactivation {
            let pre = relu(batch_norm(&self.norm1, x.clone()));
            let skip = match &self.shortcut {
                Some(proj) => proj.forward(pre.clone()),
                None => x,
            };
            let h = self.conv1.forward(pre);
            let h = self.conv2.forward(relu(batch_norm(&self.norm2, h)));
            h + skip
        } else {
            let skip = match (&self.shortcut, &self.shortcut_norm) {
                (Some(proj), Some(norm)) => batch_norm(norm, proj.forward(x.clone())),
                _ => x.clone(),
            };
            let h = relu(batch_norm(&self.norm1, self.conv1.forward(x)));
            let h = batch_norm(&self.norm2, self.conv2.forward(h));
            relu(h + skip)
        }
    }

    pub fn layers(&self) -> Vec<(String, &dyn FeedbackLayer)> {
        let mut v: Vec<(String, &dyn FeedbackLayer)> =
            vec![(format!("{}.conv1", self.name), &self.conv1 as &dyn FeedbackLayer), (format!("{}.conv2", self.name), &self.conv2)];
        if let Some(s) = &self.shortcut {
            v.push((format!("{}.shortcut", self.name), s));
        }
        v
    }

    pub fn layers_mut(&mut self) -> Vec<(String, &mut dyn FeedbackLayer)> {
        let mut v: Vec<(String, &mut dyn FeedbackLayer)> =
            vec![(format!("{}.conv1", self.name), &mut self.conv1 as &mut dyn FeedbackLayer), (format!("{}.conv2", self.name), &mut self.conv2)];
        if let Some(s) = &mut self.shortcut {
            v.push((format!("{}.shortcut", self.name), s));
        }
        v
    }
}

/// BatchNorm then a nonlinearity.
#[derive(Module, Debug)]
pub struct NormAct {
    pub norm: BatchNorm,
    #[module(skip)]
    pub activation: Activation,
}

/// A feedback linear layer, its nonlinearity and dropout.
#[derive(Module, Debug)]
pub struct DenseUnit {
    pub linear: FeedbackLinear,
    pub dropout: Option<Dropout>,
    #[module(skip)]
    pub activation: Activation,
    pub name: String,
}

impl DenseUnit {
    pub fn new(name: String, linear: FeedbackLinearConfig, activation: Activation, dropout: f64, device: &Device) -> Self {
        Self { linear: linear.init(device), dropout: (dropout > 0.0).then(|| DropoutConfig::new(dropout).init()), activation, name }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.activation.apply(self.linear.forward(x));
        match &self.dropout {
            Some(d) => d.forward(x),
            None => x,
        }
    }
}

/// A pooling stage (no parameters).
#[derive(Module, Debug)]
pub struct PoolStage {
    #[module(skip)]
    pub op: PoolOp,
}
