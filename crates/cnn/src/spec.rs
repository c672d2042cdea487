//! Architectures as data: the zoo describes each network as a list of [`StageSpec`]s, from
//! which layer names, shapes and unit counts follow before any tensor is allocated.

use plastic_rules::Activation;
use serde::{Deserialize, Serialize};

/// A pooling step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolOp {
    Max { kernel: usize, stride: usize, padding: usize },
    Avg { kernel: usize, stride: usize, padding: usize },
    /// Average over the whole map (→ 1×1).
    GlobalAvg,
    /// Adaptive average pooling to `size × size`.
    Adaptive(usize),
}

impl PoolOp {
    /// Output side for an input side `n`, or `None` if the window does not fit.
    pub fn output(&self, n: usize) -> Option<usize> {
        match *self {
            PoolOp::Max { kernel, stride, padding } | PoolOp::Avg { kernel, stride, padding } => {
                (n + 2 * padding >= kernel).then(|| (n + 2 * padding - kernel) / stride + 1)
            }
            PoolOp::GlobalAvg => Some(1),
            PoolOp::Adaptive(size) => Some(size),
        }
    }
}

/// One post-convolution step of a [`StageSpec::Conv`], applied in the listed order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PostOp {
    /// BatchNorm over the channels.
    BatchNorm,
    Activation(Activation),
    /// Local response normalisation across `size` channels (Krizhevsky et al. 2012).
    Lrn { size: usize, alpha: f32, beta: f32, k: f32 },
    Pool(PoolOp),
}

/// One stage of a feed-forward network. Serialised (externally tagged, as serde does by
/// default) into a PyTorch export's `model.json`, which `python/plastic_torch.py` rebuilds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum StageSpec {
    /// A feedback convolution followed by `post` steps.
    Conv { name: String, channels: usize, kernel: usize, stride: usize, padding: usize, bias: bool, post: Vec<PostOp> },
    /// A basic residual block (two 3×3 convolutions, and a 1×1 projection on the shortcut when
    /// `projection`); `preactivation` selects He et al.'s v2.
    Residual { name: String, channels: usize, stride: usize, preactivation: bool, projection: bool },
    /// Pooling between stages.
    Pool(PoolOp),
    /// BatchNorm then a nonlinearity (the tail of a pre-activation ResNet).
    NormAct(Activation),
    /// A feedback linear layer (the map is flattened before the first one), then `activation`
    /// and dropout with probability `dropout`.
    Dense { name: String, features: usize, activation: Activation, dropout: f64 },
}

impl StageSpec {
    /// Names of the feedback layers this stage creates, in forward order.
    pub fn layer_names(&self) -> Vec<String> {
        match self {
            StageSpec::Conv { name, .. } | StageSpec::Dense { name, .. } => vec![name.clone()],
            StageSpec::Residual { name, projection, .. } => {
                let mut v = vec![format!("{name}.conv1"), format!("{name}.conv2")];
                if *projection {
                    v.push(format!("{name}.shortcut"));
                }
                v
            }
            StageSpec::Pool(_) | StageSpec::NormAct(_) => Vec::new(),
        }
    }
}

/// Output size of a convolution, or `None` if the kernel does not fit.
pub fn conv_output(n: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    (n + 2 * padding >= kernel).then(|| (n + 2 * padding - kernel) / stride + 1)
}
