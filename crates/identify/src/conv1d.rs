//! The original's `Conv1DClassifier` in burn: one 1-D convolution over the recording points
//! (valid padding, ReLU, bias), optional max or average pooling over time (else the feature
//! map is flattened), and one linear layer to the classes; softmax cross-entropy plus an L2
//! penalty (weight_decay · Σθ²/2, TF's `l2_loss`) on every kernel and bias; Adam with TF's
//! defaults (β = 0.9, 0.999, ε = 1e-8); shuffled minibatches that drop the remainder; a fixed
//! number of epochs. Weights start Glorot-uniform (TF's default) and biases at zero, drawn
//! from the fit's own seed, so a fit does not depend on other threads.
//!
//! Input: one sample is `[points, 3 + statistics]` (channels last: the layer position repeated
//! at every point, then the statistics), as the original's `[N, T, 3 + S]`; burn's `Conv1d`
//! takes it channels first.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cv::Method;
use crate::features::Features;
use crate::{IdentifyError, mix_seed};

/// What follows the convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Flatten `[filters, positions]` into the readout's input.
    None,
    /// The maximum over positions, per filter.
    Max,
    /// The mean over positions, per filter.
    Avg,
}

/// The net's shape. Built by [`TrajectoryConvConfig::init`].
#[derive(Config, Debug)]
pub struct TrajectoryConvConfig {
    /// Input channels: 3 position columns + the statistics.
    pub channels: usize,
    /// Recording points (the input's length).
    pub points: usize,
    /// Output channels of the convolution.
    pub filters: usize,
    /// Kernel size, in recording points; at most `points`.
    pub kernel_size: usize,
    /// Stride of the convolution.
    #[config(default = 1)]
    pub stride: usize,
    /// Pooling over time after the ReLU.
    #[config(default = "Pool::Max")]
    pub pool: Pool,
    pub classes: usize,
    /// Seed of the Glorot-uniform initial weights.
    #[config(default = 0)]
    pub seed: u64,
}

/// One convolution over time and a linear readout.
#[derive(Module, Debug)]
pub struct TrajectoryConv {
    /// Weight `[filters, channels, kernel_size]`, bias `[filters]`.
    pub conv: Conv1d,
    /// Weight `[filters · positions or filters, classes]`, bias `[classes]`.
    pub readout: Linear,
    #[module(skip)]
    pub pool: Pool,
}

impl TrajectoryConvConfig {
    /// Positions left after the valid convolution.
    pub fn positions(&self) -> usize {
        (self.points - self.kernel_size) / self.stride + 1
    }

    pub fn init(&self, device: &Device) -> crate::Result<TrajectoryConv> {
        if self.kernel_size == 0 || self.kernel_size > self.points || self.stride == 0 || self.filters == 0 || self.channels == 0 || self.classes == 0 {
            return Err(IdentifyError::Input(format!(
                "conv1d: kernel {} and stride {} over {} points, {} filters, {} channels, {} classes",
                self.kernel_size, self.stride, self.points, self.filters, self.channels, self.classes
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut glorot = |shape: &[usize], fan_in: usize, fan_out: usize| -> Tensor<1> {
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.random_range(-limit..limit) as f32).collect();
            Tensor::<1>::from_data(TensorData::new(values, [n]), device)
        };
        let (f, c, k) = (self.filters, self.channels, self.kernel_size);
        let mut conv = Conv1dConfig::new(c, f, k).with_stride(self.stride).init(device);
        conv.weight = Param::from_tensor(glorot(&[f, c, k], c * k, f * k).reshape([f, c, k]));
        conv.bias = Some(Param::from_tensor(Tensor::zeros([f], device)));
        let d_in = match self.pool {
            Pool::None => f * self.positions(),
            Pool::Max | Pool::Avg => f,
        };
        let mut readout = LinearConfig::new(d_in, self.classes).init(device);
        readout.weight = Param::from_tensor(glorot(&[d_in, self.classes], d_in, self.classes).reshape([d_in, self.classes]));
        readout.bias = Some(Param::from_tensor(Tensor::zeros([self.classes], device)));
        Ok(TrajectoryConv { conv, readout, pool: self.pool })
    }
}

impl TrajectoryConv {
    /// `[batch, channels, points]` → logits `[batch, classes]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let h = relu(self.conv.forward(x));
        let h: Tensor<2> = match self.pool {
            Pool::None => h.flatten(1, 2),
            Pool::Max => h.max_dim(2).squeeze_dim(2),
            Pool::Avg => h.mean_dim(2).squeeze_dim(2),
        };
        self.readout.forward(h)
    }

    /// Σθ² over every kernel and bias.
    pub fn squared_norm(&self) -> Tensor<1> {
        let mut total = self.conv.weight.val().square().sum() + self.readout.weight.val().square().sum();
        for b in [&self.conv.bias, &self.readout.bias].into_iter().flatten() {
            total = total + b.val().square().sum();
        }
        total
    }
}

/// One setting of the conv net (the original's grid axes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Conv1dParams {
    pub kernel_size: usize,
    pub stride: usize,
    pub filters: usize,
    pub pool: Pool,
    pub lr: f64,
    pub weight_decay: f64,
    /// At most this many samples a step (fewer when the training set is smaller).
    pub batch_size: usize,
}

/// Kernel sizes as the original: ⌈f·points⌉ for these fractions, deduplicated.
const KERNEL_FRACTIONS: [f64; 6] = [3e-3, 7e-3, 5e-2, 0.25, 0.5, 1.0];

fn kernel_sizes(points: usize, fractions: &[f64]) -> Vec<usize> {
    let mut ks: Vec<usize> = fractions.iter().map(|f| ((f * points as f64).ceil() as usize).clamp(1, points.max(1))).collect();
    ks.dedup();
    ks
}

impl Conv1dParams {
    /// The default grid (8 settings): kernels over a quarter and all of the trajectory
    /// (⌈0.25·P⌉, P), max pooling or flattening, lr ∈ {1e-3, 1e-2}; 20 filters, stride 1,
    /// weight decay 1e-4, batches of 32.
    pub fn default_grid(points: usize) -> Vec<Conv1dParams> {
        let mut out = Vec::new();
        for kernel_size in kernel_sizes(points, &[0.25, 1.0]) {
            for pool in [Pool::Max, Pool::None] {
                for lr in [1e-3, 1e-2] {
                    out.push(Conv1dParams { kernel_size, stride: 1, filters: 20, pool, lr, weight_decay: 1e-4, batch_size: 32 });
                }
            }
        }
        out
    }

    /// The original's grid (720 settings with 21 points): lr {1e-3, 1e-4} × kernels ⌈f·P⌉ for
    /// f ∈ {0.003, 0.007, 0.05, 0.25, 0.5, 1} × stride {1, 2, 4} × filters {20, 40} × batch
    /// {512, 1024} × pooling {none, max, avg} × weight decay {1e-4, 0}.
    pub fn full_grid(points: usize) -> Vec<Conv1dParams> {
        let mut out = Vec::new();
        for lr in [1e-3, 1e-4] {
            for kernel_size in kernel_sizes(points, &KERNEL_FRACTIONS) {
                for stride in [1, 2, 4] {
                    for filters in [20, 40] {
                        for batch_size in [512, 1024] {
                            for pool in [Pool::None, Pool::Max, Pool::Avg] {
                                for weight_decay in [1e-4, 0.0] {
                                    out.push(Conv1dParams { kernel_size, stride, filters, pool, lr, weight_decay, batch_size });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// A fitted net with the device it lives on.
pub struct FittedConv {
    model: TrajectoryConv,
    device: Device,
}

/// Epochs of the default (the original trained 400).
pub const DEFAULT_EPOCHS: usize = 60;

/// `[rows, channels, points]` of the samples `idx`, as f32, channels first.
fn input(x: &Features, idx: &[usize], device: &Device) -> Tensor<3> {
    let (p, c) = (x.points, 3 + x.stats);
    let mut values = Vec::with_capacity(idx.len() * p * c);
    for &i in idx {
        let seq = x.sequence(i);
        for ch in 0..c {
            values.extend((0..p).map(|t| seq[t * c + ch] as f32));
        }
    }
    Tensor::<3>::from_data(TensorData::new(values, [idx.len(), c, p]), device)
}

/// Trains a net of setting `params` on the rows `train` of `x` for `epochs` epochs (on burn's
/// CPU backend, flex).
pub fn fit(x: &Features, train: &[usize], y_train: &[usize], classes: usize, params: &Conv1dParams, epochs: usize, seed: u64) -> crate::Result<FittedConv> {
    let device = Device::flex().autodiff();
    let config = TrajectoryConvConfig::new(3 + x.stats, x.points, params.filters, params.kernel_size, classes).with_stride(params.stride).with_pool(params.pool).with_seed(mix_seed(seed, &[1]));
    let mut model = config.init(&device)?;
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let data = input(x, train, &device);
    let n = train.len();
    let batch = params.batch_size.clamp(1, n.max(1));
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, &[2]));
    for _ in 0..epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks_exact(batch) {
            let idx = Tensor::<1, Int>::from_data(TensorData::new(chunk.iter().map(|&i| i as i64).collect::<Vec<_>>(), [chunk.len()]), &device);
            let targets = Tensor::<1, Int>::from_data(TensorData::new(chunk.iter().map(|&i| y_train[i] as i64).collect::<Vec<_>>(), [chunk.len()]), &device);
            let logits = model.forward(data.clone().select(0, idx));
            let mut loss = loss_fn.forward(logits, targets);
            if params.weight_decay > 0.0 {
                loss = loss + model.squared_norm().mul_scalar(params.weight_decay / 2.0);
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(params.lr, model, grads);
        }
    }
    Ok(FittedConv { model, device })
}

impl FittedConv {
    /// The class of the largest logit for each of the rows `idx` of `x`.
    pub fn predict(&self, x: &Features, idx: &[usize]) -> crate::Result<Vec<usize>> {
        if idx.is_empty() {
            return Ok(Vec::new());
        }
        let logits = self.model.forward(input(x, idx, &self.device));
        let classes = logits.dims()[1];
        let values = logits.into_data().convert::<f64>().try_into_vec::<f64>().map_err(|e| IdentifyError::Classifier(format!("conv1d: {e:?}")))?;
        Ok(values.chunks(classes).map(crate::forest::argmax).collect())
    }
}

/// The conv net as a [`Method`].
pub struct Conv1dMethod {
    pub epochs: usize,
}

impl Method for Conv1dMethod {
    type Setting = Conv1dParams;

    fn fit_predict(&self, settings: &[Conv1dParams], x: &Features, train: &[usize], y_train: &[usize], classes: usize, evals: &[&[usize]], seed: u64) -> crate::Result<Vec<Vec<Vec<usize>>>> {
        let local: Vec<usize> = (0..train.len()).collect();
        // Fit on the training rows gathered in order, so `y_train` lines up with positions.
        let sub = Features { cat: x.cat.select_rows(train), traj: x.traj.select_rows(train), stats: x.stats, points: x.points };
        settings
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let fitted = fit(&sub, &local, y_train, classes, s, self.epochs, mix_seed(seed, &[i as u64]))?;
                evals.iter().map(|e| fitted.predict(x, e)).collect()
            })
            .collect()
    }

    fn admissible(&self, setting: &Conv1dParams, _n_train: usize, x: &Features) -> bool {
        setting.kernel_size <= x.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_follow_the_original() {
        assert_eq!(kernel_sizes(21, &KERNEL_FRACTIONS), [1, 2, 6, 11, 21]);
        assert_eq!(Conv1dParams::full_grid(21).len(), 720);
        assert_eq!(Conv1dParams::default_grid(21).len(), 8);
        assert!(Conv1dParams::default_grid(21).iter().all(|s| s.kernel_size == 6 || s.kernel_size == 21));
        assert_eq!(Conv1dParams::default_grid(1).len(), 4, "one point: one kernel size");
    }

    #[test]
    fn shapes_through_the_net() {
        let device = Device::flex();
        for (pool, stride) in [(Pool::None, 1), (Pool::Max, 2), (Pool::Avg, 4)] {
            let config = TrajectoryConvConfig::new(5, 21, 7, 6, 4).with_pool(pool).with_stride(stride);
            let net = config.init(&device).unwrap();
            assert_eq!(config.positions(), (21 - 6) / stride + 1);
            assert_eq!(net.conv.weight.dims(), [7, 5, 6]);
            let logits = net.forward(Tensor::zeros([3, 5, 21], &device));
            assert_eq!(logits.dims(), [3, 4]);
        }
        assert!(TrajectoryConvConfig::new(5, 4, 7, 6, 4).init(&device).unwrap_err().to_string().contains("kernel 6"));
    }

    /// With zero input the logits are the readout's bias (zero at init), and the penalty is
    /// the sum of the squared initial weights, every one within the Glorot limit.
    #[test]
    fn initial_weights_are_glorot_uniform_and_seeded() {
        let device = Device::flex();
        let config = TrajectoryConvConfig::new(4, 10, 8, 3, 2).with_seed(9);
        let a = config.init(&device).unwrap();
        let b = config.init(&device).unwrap();
        let w: Vec<f32> = a.conv.weight.val().into_data().try_into_vec().unwrap();
        assert_eq!(w, b.conv.weight.val().into_data().try_into_vec::<f32>().unwrap());
        let limit = (6.0f32 / (4.0 * 3.0 + 8.0 * 3.0)).sqrt();
        assert!(w.iter().all(|v| v.abs() <= limit) && w.iter().any(|v| v.abs() > limit / 2.0));
        let logits: Vec<f32> = a.forward(Tensor::zeros([1, 4, 10], &device)).into_data().try_into_vec().unwrap();
        assert_eq!(logits, [0.0, 0.0]);
        let by_hand: f32 = w.iter().map(|v| v * v).sum::<f32>() + a.readout.weight.val().into_data().try_into_vec::<f32>().unwrap().iter().map(|v| v * v).sum::<f32>();
        let norm: Vec<f32> = a.squared_norm().into_data().try_into_vec().unwrap();
        assert!((norm[0] - by_hand).abs() < 1e-4 * by_hand, "{} vs {by_hand}", norm[0]);
    }
}
