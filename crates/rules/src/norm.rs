//! Batch normalisation with batch statistics, in a few passes on flex.
//!
//! burn-flex 0.22.1 has no batch norm of its own, so training ran burn's generic one: the
//! statistics through swapped-axes copies (`float_swap_dims` then `float_reshape`, i.e. a
//! transposing copy of the whole activation, twice in the forward and twice in the backward)
//! and the normalisation and its gradient as a dozen broadcast tensor ops, each a full pass
//! over memory. That was most of ResNet-18's time outside its convolutions. Here the forward
//! reads each channel for its mean and variance (two passes over data the size of one channel
//! of the batch, which stays in cache) and writes y = x·scale + shift in one more pass; the
//! backward is one read of x and δy for Σδy and Σδy·x̂ per channel and one pass for δx. Sums
//! are accumulated in f32 lanes over blocks and in f64 across blocks.
//!
//! The values are burn's (biased variance, as burn's running statistics expect); on every
//! other backend and dtype the op is burn's own `batch_norm_train` and its autodiff.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::BatchNorm;
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::cpu_conv::{as_flex, filled_by_chunks, to_primitive, values};

/// Elements summed in f32 lanes before the block's sum joins the f64 total.
const BLOCK: usize = 1024;

/// Σ f(v) over `values`, in f32 lanes within blocks of [`BLOCK`] and f64 across them.
#[inline(always)]
pub(crate) fn sum_by(values: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f64 {
    values
        .chunks(BLOCK)
        .map(|block| {
            let mut lanes = [0.0f32; 16];
            let mut chunks = block.chunks_exact(16);
            for chunk in &mut chunks {
                for (l, &v) in lanes.iter_mut().zip(chunk) {
                    *l += f(v);
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64
        })
        .sum()
}

/// Σ f(a, b) over two equal-length slices, as [`sum_by`].
#[inline(always)]
fn sum_pairs_by(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Copy) -> f64 {
    a.chunks(BLOCK)
        .zip(b.chunks(BLOCK))
        .map(|(a, b)| {
            let mut lanes = [0.0f32; 16];
            let (mut ca, mut cb) = (a.chunks_exact(16), b.chunks_exact(16));
            for (x, y) in (&mut ca).zip(&mut cb) {
                for ((l, &u), &v) in lanes.iter_mut().zip(x).zip(y) {
                    *l += f(u, v);
                }
            }
            let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&u, &v)| f(u, v)).sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64
        })
        .sum()
}

/// The shape of a batch norm's input as (batch, channels, elements per channel and example).
fn layout(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

/// The planes of channel `c`: for each example, its `s` contiguous values.
fn planes(x: &[f32], (n, c_all, s): (usize, usize, usize), c: usize) -> impl Iterator<Item = &[f32]> {
    (0..n).map(move |i| &x[(i * c_all + c) * s..][..s])
}

/// Σ x over the batch and positions of channel `c`, in f64, in a fixed order.
fn channel_sum(x: &[f32], dims: (usize, usize, usize), c: usize) -> f64 {
    planes(x, dims, c).map(|p| sum_by(p, |v| v)).sum()
}

/// Per channel: Σ x over the batch and positions of `x` ([N, C, …] as (N, C, S)), one channel
/// per task (a fixed order: the same bits whatever the thread count). Also the convolution's
/// bias gradient on flex (`cpu_conv::try_bias_grad`).
pub(crate) fn channel_sums(x: &[f32], dims: (usize, usize, usize)) -> Vec<f32> {
    (0..dims.1).into_par_iter().map(|c| channel_sum(x, dims, c) as f32).collect()
}

/// Per channel: the mean and the biased variance of `x` ([N, C, …] as (N, C, S)). A dense
/// layer's [N, C] (S = 1) is read row by row ([`column_statistics`], the same bits).
pub fn batch_statistics(x: &[f32], dims: (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    if dims.2 == 1 {
        return column_statistics(x, dims.1);
    }
    channel_statistics(x, dims)
}

/// [`batch_statistics`] one channel per task.
fn channel_statistics(x: &[f32], dims: (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    let (n, c_all, s) = dims;
    let count = (n * s).max(1) as f64;
    (0..c_all)
        .into_par_iter()
        .map(|c| {
            let mean = channel_sum(x, dims, c) / count;
            let m = mean as f32;
            let variance = planes(x, dims, c).map(|p| sum_by(p, |v| (v - m) * (v - m))).sum::<f64>() / count;
            (mean as f32, variance as f32)
        })
        .unzip()
}

/// The mean and biased variance of each column of a row-major `[rows, columns]` matrix (a
/// dense layer's input), summed in f64 row by row, in the order and roundings of
/// [`channel_statistics`] with one-value planes: one channel per task read one value per row
/// 16 KiB apart there (the local losses' fc1 input on the convnet: 4,096 columns).
fn column_statistics(x: &[f32], columns: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / columns.max(1);
    let count = rows.max(1) as f64;
    let mut sums = vec![0.0f64; columns];
    for row in x.chunks_exact(columns.max(1)) {
        sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
    }
    let mean: Vec<f32> = sums.iter().map(|s| (s / count) as f32).collect();
    sums.iter_mut().for_each(|s| *s = 0.0);
    for row in x.chunks_exact(columns.max(1)) {
        sums.iter_mut().zip(row).zip(&mean).for_each(|((s, &v), &m)| *s += ((v - m) * (v - m)) as f64);
    }
    (mean, sums.iter().map(|s| (s / count) as f32).collect())
}

/// y = (x − mean)/√(var + ε)·γ + β with the batch's statistics: (y, mean, variance).
pub fn batch_norm_forward(x: &[f32], shape: &[usize], gamma: &[f32], beta: &[f32], epsilon: f64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dims = layout(shape);
    let (_, c_all, s) = dims;
    let (mean, variance) = batch_statistics(x, dims);
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..c_all)
        .map(|c| {
            let scale = gamma[c] as f64 / (variance[c] as f64 + epsilon).sqrt();
            (scale as f32, (beta[c] as f64 - mean[c] as f64 * scale) as f32)
        })
        .unzip();
    let y = filled_by_chunks(x.len(), s, || (), |_, plane, y| {
        let (a, b) = (scale[plane % c_all], shift[plane % c_all]);
        y.iter_mut().zip(&x[plane * s..]).for_each(|(y, &x)| *y = x * a + b);
    });
    (y, mean, variance)
}

/// (δx, δγ, δβ) of [`batch_norm_forward`] for δy, with x̂ = (x − mean)·r, r = 1/√(var + ε):
/// δβ = Σδy, δγ = Σδy·x̂, δx = γ·r·(δy − δβ/M − x̂·δγ/M) over the M values of a channel.
pub fn batch_norm_backward(x: &[f32], shape: &[usize], gamma: &[f32], mean: &[f32], variance: &[f32], epsilon: f64, dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dims = layout(shape);
    let (n, c_all, s) = dims;
    let count = (n * s).max(1) as f32;
    let inv_std: Vec<f32> = variance.iter().map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32).collect();
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (0..c_all)
        .into_par_iter()
        .map(|c| {
            let (m, r) = (mean[c], inv_std[c]);
            let (mut dgamma, mut dbeta) = (0.0f64, 0.0f64);
            for (xp, dp) in planes(x, dims, c).zip(planes(dy, dims, c)) {
                dbeta += sum_by(dp, |d| d);
                dgamma += sum_pairs_by(xp, dp, |x, d| d * (x - m));
            }
            ((dgamma * r as f64) as f32, dbeta as f32)
        })
        .unzip();
    let dx = filled_by_chunks(x.len(), s, || (), |_, plane, dx| {
        let c = plane % c_all;
        let (m, r) = (mean[c], inv_std[c]);
        let (a, mean_dy, xhat_scale) = (gamma[c] * r, dbeta[c] / count, dgamma[c] / count * r);
        for ((dx, &x), &d) in dx.iter_mut().zip(&x[plane * s..]).zip(&dy[plane * s..]) {
            *dx = a * (d - mean_dy - (x - m) * xhat_scale);
        }
    });
    (dx, dgamma, dbeta)
}

#[backend_extension(Autodiff, Cube, Flex, NdArray: cfg(feature = "ndarray"))]
pub trait NormBackend: Backend {
    /// Batch norm with the batch's statistics: (output, mean, biased variance), as burn's
    /// `batch_norm_train`.
    fn batch_norm_batch_statistics(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burns_batch_norm::<Self>(x, gamma, beta, epsilon)
    }

    /// (δx, δγ, δβ) of [`NormBackend::batch_norm_batch_statistics`] from its input, γ, the
    /// statistics it returned and δy.
    fn batch_norm_batch_statistics_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burns_batch_norm_backward::<Self>(x, gamma, mean, variance, epsilon, grad)
    }
}

/// The backend's own `batch_norm_train`, as a tuple.
fn burns_batch_norm<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>, beta: FloatTensor<B>, epsilon: f64) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let r = B::batch_norm_train(x, gamma, beta, epsilon);
    (r.output, r.mean, r.variance)
}

/// The backend's own `batch_norm_train_backward`, as a tuple.
fn burns_batch_norm_backward<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>, mean: FloatTensor<B>, variance: FloatTensor<B>, epsilon: f64, grad: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let r = B::batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad);
    (r.x_grad, r.gamma_grad, r.beta_grad)
}

impl NormBackend for Cube {}
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
impl NormBackend for burn::backend::NdArray {}

/// f32 through this module's passes; other dtypes through burn's generic batch norm.
impl NormBackend for Flex {
    fn batch_norm_batch_statistics(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match (as_flex::<Self>(&x), as_flex::<Self>(&gamma), as_flex::<Self>(&beta)) {
            (Some(xf), Some(gf), Some(bf)) if x.shape().num_dims() >= 2 => {
                let shape = x.shape();
                let (y, mean, variance) = batch_norm_forward(&values(xf), &shape, &values(gf), &values(bf), epsilon);
                let c = shape[1];
                (to_primitive::<Self>(y, shape), to_primitive::<Self>(mean, [c]), to_primitive::<Self>(variance, [c]))
            }
            _ => burns_batch_norm::<Self>(x, gamma, beta, epsilon),
        }
    }

    fn batch_norm_batch_statistics_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let all = [&x, &gamma, &mean, &variance, &grad].map(|t| as_flex::<Self>(t));
        match all {
            [Some(xf), Some(gf), Some(mf), Some(vf), Some(df)] => {
                let shape = x.shape();
                let (dx, dgamma, dbeta) = batch_norm_backward(&values(xf), &shape, &values(gf), &values(mf), &values(vf), epsilon, &values(df));
                let c = shape[1];
                (to_primitive::<Self>(dx, shape), to_primitive::<Self>(dgamma, [c]), to_primitive::<Self>(dbeta, [c]))
            }
            _ => burns_batch_norm_backward::<Self>(x, gamma, mean, variance, epsilon, grad),
        }
    }
}

impl<B: NormBackend, C: CheckpointStrategy> NormBackend for Autodiff<B, C> {
    fn batch_norm_batch_statistics(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if as_flex::<B>(&x.clone().into_primitive()).is_none() {
            return burns_batch_norm::<Self>(x, gamma, beta, epsilon);
        }
        let prepared = BatchNormBackward(epsilon).prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful();
        let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        let (y, mean, variance) = B::batch_norm_batch_statistics(x.clone(), gamma.clone(), beta, epsilon);
        let y = match prepared {
            OpsKind::Tracked(prep) => prep.finish((x, gamma, mean.clone(), variance.clone()), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, Self::from_inner(mean), Self::from_inner(variance))
    }
}

/// Keeps the input, γ and the batch statistics; ε is the op's.
#[derive(Debug)]
struct BatchNormBackward(f64);

impl<B: NormBackend> Backward<B, 3> for BatchNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, mean, variance) = ops.state;
        let (dx, dgamma, dbeta) = B::batch_norm_batch_statistics_backward(x, gamma, mean, variance, self.0, grad);
        let [node_x, node_gamma, node_beta] = ops.parents;
        for (node, g) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// `norm.forward(x)`, with the training path (an autodiff device and a layer in training)
/// through [`NormBackend`]: the batch's statistics normalise and update the running ones
/// exactly as burn's `BatchNorm` does. Elsewhere `norm.forward` itself.
pub fn batch_norm<const D: usize>(norm: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !(device.is_autodiff() && norm.training.is_enabled()) {
        return norm.forward(x);
    }
    let [channels] = norm.gamma.shape().dims();
    assert_eq!(x.dims()[1], channels, "batch norm of {channels} channels applied to {:?}", x.dims());
    let (y, mean, variance) = <Dispatch as NormBackend>::batch_norm_batch_statistics(x.into_dispatch(), norm.gamma.val().into_dispatch(), norm.beta.val().into_dispatch(), norm.epsilon);
    let (mean, variance) = (Tensor::<1>::from_dispatch(mean), Tensor::<1>::from_dispatch(variance));
    let running = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
        let updated = state.value_sync().to_device(&device).mul_scalar(1.0 - norm.momentum).add(batch.detach().mul_scalar(norm.momentum));
        state.update(updated.detach());
    };
    running(&norm.running_mean, mean);
    running(&norm.running_var, variance);
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests {
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Device, Distribution, Tensor, TensorData, Tolerance};

    use super::*;

    /// Output, δx, δγ, δβ and the running statistics after one step, of `forward`.
    fn run(forward: impl Fn(&BatchNorm, Tensor<4>) -> Tensor<4>, x: Tensor<4>, dy: Tensor<4>) -> [TensorData; 6] {
        let device = x.device();
        let mut norm = BatchNormConfig::new(x.dims()[1]).init(&device);
        // γ and β away from 1 and 0, so that a mix-up between them shows.
        norm.gamma = norm.gamma.map(|g| g.mul_scalar(1.5).add_scalar(0.25).detach().require_grad());
        norm.beta = norm.beta.map(|b| b.add_scalar(-0.5).detach().require_grad());
        let x = x.require_grad();
        let y = forward(&norm, x.clone());
        let grads = (y.clone() * dy).sum().backward();
        [
            y.into_data(),
            x.grad(&grads).unwrap().into_data(),
            norm.gamma.grad(&grads).unwrap().into_data(),
            norm.beta.grad(&grads).unwrap().into_data(),
            norm.running_mean.value().into_data(),
            norm.running_var.value().into_data(),
        ]
    }

    #[test]
    fn batch_norm_matches_burns_in_value_gradients_and_running_statistics() {
        let device = Device::flex().autodiff();
        // Planes shorter and longer than a block and than the 16 lanes, and one of a single value.
        for shape in [[4, 3, 5, 7], [3, 2, 40, 37], [6, 5, 1, 1], [2, 8, 4, 4]] {
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.7, 2.0), &device);
            let dy = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let want = run(|n, x| n.forward(x), x.clone(), dy.clone());
            let got = run(|n, x| batch_norm(n, x), x, dy);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.shape(), w.shape(), "{shape:?}: output {i}");
                g.assert_approx_eq::<f32>(w, Tolerance::absolute(2e-5).set_relative(1e-4));
            }
        }
    }

    /// Without autodiff, or with the layer frozen, the running statistics normalise, as in
    /// burn's `BatchNorm::forward`, and stay as they were.
    #[test]
    fn batch_norm_uses_the_running_statistics_at_inference_and_when_frozen() {
        for (device, frozen) in [(Device::flex(), false), (Device::flex().autodiff(), true)] {
            let mut norm = BatchNormConfig::new(4).init(&device);
            norm.running_mean = burn::module::RunningState::new(Tensor::<1>::from_floats([0.5, -1.0, 2.0, 0.0], &device));
            if frozen {
                norm.training = burn::module::Param::from_bool(false);
            }
            let x = Tensor::<4>::random([3, 4, 5, 5], Distribution::Normal(2.0, 1.0), &device);
            batch_norm(&norm, x.clone()).into_data().assert_eq(&norm.forward(x).into_data(), true);
            norm.running_mean.value().into_data().assert_eq(&TensorData::from([0.5f32, -1.0, 2.0, 0.0]), true);
        }
    }

    /// A dense input's statistics read row by row give the per-channel path's bits.
    #[test]
    fn column_statistics_are_the_channel_statistics_bit_for_bit() {
        let (rows, columns) = (37, 301);
        let x: Vec<f32> = (0..rows * columns).map(|i| ((i * 7919 % 1013) as f32 / 101.0 - 4.0) * if i % 3 == 0 { 2.0 } else { 1.0 }).collect();
        assert_eq!(column_statistics(&x, columns), channel_statistics(&x, (rows, columns, 1)));
    }

    /// The channel sums against the definition summed in f64, on planes with and without a
    /// 16-value tail, and empty ones.
    #[test]
    fn channel_sums_sum_each_channel_over_batch_and_positions() {
        for (batch, channels, plane) in [(3, 5, 63), (2, 4, 16), (1, 1, 1), (4, 3, 17), (2, 2, 0), (2, 3, 2500)] {
            let x: Vec<f32> = (0..batch * channels * plane).map(|i| ((i * 7919) % 101) as f32 / 17.0 - 3.0).collect();
            let got = channel_sums(&x, (batch, channels, plane));
            assert_eq!(got.len(), channels);
            for (c, g) in got.iter().enumerate() {
                let want: f64 = (0..batch).flat_map(|n| x[(n * channels + c) * plane..][..plane].iter()).map(|&v| v as f64).sum();
                assert!((*g as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()), "{batch}×{channels}×{plane} channel {c}: {g} vs {want}");
            }
        }
    }

    /// The sums keep f32's precision over large planes: a channel of a large constant plus
    /// small noise has the noise's variance.
    #[test]
    fn batch_statistics_hold_their_precision_over_large_planes() {
        let (n, c, s) = (4, 2, 50_000);
        let x: Vec<f32> = (0..n * c * s).map(|i| 1000.0 + if i % 2 == 0 { 0.5 } else { -0.5 }).collect();
        let (mean, variance) = batch_statistics(&x, (n, c, s));
        for (m, v) in mean.iter().zip(&variance) {
            assert!((m - 1000.0).abs() < 1e-3 && (v - 0.25).abs() < 1e-4, "mean {m}, variance {v}");
        }
    }
}
