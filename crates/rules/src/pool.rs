//! Max pooling with its own loops on flex.
//!
//! burn-flex 0.22.1 scans each window with scalar code (a compare, a NaN test and an index per
//! element) and writes an i64 index per output for the backward: some 10 cycles per window
//! element, 21 % of knet4's training step and 30 % of the convnet's (2 threads). Scalar rewrites
//! of the same scan were no faster, so here the work is laid out for the vector units: the pool
//! is separable, a maximum over the window's columns in each input row, then over the window's
//! rows; each input row is first split by stride phase (for stride 2: its even and odd
//! columns), so that the column pass reads, for a fixed window offset, consecutive elements for
//! consecutive outputs, and the row pass is elementwise over output rows. Both inner loops are
//! contiguous compare-and-select loops that the compiler vectorises, and are compiled for AVX2
//! and AVX-512 besides baseline x86-64, chosen at run time.
//!
//! The outputs and the routing of gradients are burn's: the first maximum of a window in
//! row-major order wins ties (the column pass keeps a row's first, the row pass the first row),
//! a NaN wins over numbers (the last NaN, as PyTorch), padding never wins. The backward runs
//! the same passes with the winners' positions and adds δy there; nothing is stored between
//! forward and backward but the input.
//!
//! On other backends and dtypes the op is burn's own `max_pool2d` and its autodiff.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{IntDType, Tensor};
use rayon::prelude::*;

use crate::cpu_conv::{as_flex, to_primitive, values};

/// A square max-pooling window: `kernel × kernel`, moved by `stride`, over an input padded by
/// `padding` on each side (floor mode, no dilation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolWindow {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl PoolWindow {
    /// Output length along an axis of length `input`.
    pub fn output_len(&self, input: usize) -> usize {
        (input + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// The input positions of output position `o` along an axis of length `input` (padding
    /// left out).
    fn span(&self, o: usize, input: usize) -> std::ops::Range<usize> {
        let start = (o * self.stride) as isize - self.padding as isize;
        let end = (start + self.kernel as isize).min(input as isize);
        start.max(0) as usize..end.max(0) as usize
    }

    /// The outputs along an axis of length `input` whose windows lie wholly inside it.
    fn interior(&self, input: usize, outputs: usize) -> std::ops::Range<usize> {
        let lo = self.padding.div_ceil(self.stride);
        let hi = if input + self.padding >= self.kernel { ((input + self.padding - self.kernel) / self.stride + 1).min(outputs) } else { 0 };
        lo.min(hi)..hi
    }
}

/// Whether `v` replaces `best` as a window's maximum when it comes later in row-major order:
/// larger, or a NaN (so the first of equal maxima stays, and the last NaN wins).
#[inline(always)]
fn takes(v: f32, best: f32) -> bool {
    v > best || v.is_nan()
}

/// Scratch of one plane's passes: the row's stride phases, and per input row and output
/// column the column maximum and its column.
struct Scratch {
    phases: Vec<f32>,
    values: Vec<f32>,
    columns: Vec<u32>,
}

impl Scratch {
    fn new(w: usize, h: usize, ow: usize, window: PoolWindow) -> Self {
        Scratch { phases: vec![0.0; w.div_ceil(window.stride) * window.stride], values: vec![0.0; h * ow], columns: vec![0; h * ow] }
    }
}

/// The column pass over one input row: for each output column j, the maximum of the row over
/// the window's columns in `values[j]`, and with `INDEX` its column in `columns[j]`.
#[inline(always)]
fn column_pass<const INDEX: bool>(row: &[f32], window: PoolWindow, buffer: &mut [f32], values: &mut [f32], columns: &mut [u32]) {
    let (w, ow, s) = (row.len(), values.len(), window.stride);
    // phases[q·len + m] = row[m·s + q] (the row itself at stride 1).
    let len = w.div_ceil(s);
    let phases: &[f32] = if s == 1 {
        row
    } else {
        for q in 0..s {
            for (dst, &v) in buffer[q * len..(q + 1) * len].iter_mut().zip(row[q..].iter().step_by(s)) {
                *dst = v;
            }
        }
        buffer
    };
    let inner = window.interior(w, ow);
    // Interior outputs: every window column exists; column j·s + t (t = kc − padding) is
    // phase t mod s at j + t div s, consecutive in j.
    for kc in (0..window.kernel).filter(|_| !inner.is_empty()) {
        let t = kc as isize - window.padding as isize;
        let (q, shift) = (t.rem_euclid(s as isize) as usize, t.div_euclid(s as isize));
        let start = (inner.start as isize + shift) as usize;
        let source = &phases[q * len + start..q * len + start + inner.len()];
        let (vals, cols) = (&mut values[inner.clone()], &mut columns[inner.clone()]);
        if kc == 0 {
            vals.copy_from_slice(source);
            if INDEX {
                for (c, j) in cols.iter_mut().zip(inner.clone()) {
                    *c = (j * s - window.padding) as u32;
                }
            }
            continue;
        }
        if INDEX {
            for ((b, c), (&v, j)) in vals.iter_mut().zip(cols.iter_mut()).zip(source.iter().zip(inner.clone())) {
                let take = takes(v, *b);
                *b = if take { v } else { *b };
                *c = if take { (j * s + kc - window.padding) as u32 } else { *c };
            }
        } else {
            for (b, &v) in vals.iter_mut().zip(source) {
                *b = if takes(v, *b) { v } else { *b };
            }
        }
    }
    // Edge outputs, whose windows reach into the padding: one at a time.
    for j in (0..inner.start).chain(inner.end.max(inner.start)..ow) {
        let cols = window.span(j, w);
        let (mut best, mut at) = (row[cols.start], cols.start);
        for c in cols.start + 1..cols.end {
            if takes(row[c], best) {
                (best, at) = (row[c], c);
            }
        }
        values[j] = best;
        if INDEX {
            columns[j] = at as u32;
        }
    }
}

/// The row pass for output row i: the maximum of the column maxima over the window's rows,
/// into `out` (values) and with `INDEX` `at` (positions in the plane).
#[inline(always)]
fn row_pass<const INDEX: bool>(scratch: &Scratch, window: PoolWindow, [h, w]: [usize; 2], i: usize, out: &mut [f32], at: &mut [u32]) {
    let ow = out.len();
    let rows = window.span(i, h);
    out.copy_from_slice(&scratch.values[rows.start * ow..(rows.start + 1) * ow]);
    if INDEX {
        for (a, &c) in at.iter_mut().zip(&scratch.columns[rows.start * ow..(rows.start + 1) * ow]) {
            *a = (rows.start * w) as u32 + c;
        }
    }
    for r in rows.start + 1..rows.end {
        let (vals, cols) = (&scratch.values[r * ow..(r + 1) * ow], &scratch.columns[r * ow..(r + 1) * ow]);
        if INDEX {
            for ((b, a), (&v, &c)) in out.iter_mut().zip(at.iter_mut()).zip(vals.iter().zip(cols)) {
                let take = takes(v, *b);
                *b = if take { v } else { *b };
                *a = if take { (r * w) as u32 + c } else { *a };
            }
        } else {
            for (b, &v) in out.iter_mut().zip(vals) {
                *b = if takes(v, *b) { v } else { *b };
            }
        }
    }
}

/// Pools a run of planes (`x`: whole planes of `h × w`): with `INDEX`, δy (`grad`) is added to
/// `dx` at each window's maximum; without, the maxima are written to `out`.
#[inline(always)]
fn pool_planes<const INDEX: bool>(x: &[f32], [h, w]: [usize; 2], window: PoolWindow, out: &mut [f32], grad: &[f32], dx: &mut [f32]) {
    let (oh, ow) = (window.output_len(h), window.output_len(w));
    let mut scratch = Scratch::new(w, h, ow, window);
    let (mut best, mut at) = (vec![0.0f32; ow], vec![0u32; ow]);
    for (p, plane) in x.chunks(h * w).enumerate() {
        for (r, row) in plane.chunks(w).enumerate() {
            let (values, columns) = (&mut scratch.values[r * ow..(r + 1) * ow], &mut scratch.columns[r * ow..(r + 1) * ow]);
            column_pass::<INDEX>(row, window, &mut scratch.phases, values, columns);
        }
        for i in 0..oh {
            if INDEX {
                row_pass::<true>(&scratch, window, [h, w], i, &mut best, &mut at);
                let (g, d) = (&grad[(p * oh + i) * ow..][..ow], &mut dx[p * h * w..(p + 1) * h * w]);
                for (&a, &g) in at.iter().zip(g) {
                    d[a as usize] += g;
                }
            } else {
                row_pass::<false>(&scratch, window, [h, w], i, &mut out[(p * oh + i) * ow..][..ow], &mut []);
            }
        }
    }
}

/// [`pool_planes`] compiled for the widest vector unit this CPU has.
fn pool_planes_dispatch<const INDEX: bool>(x: &[f32], hw: [usize; 2], window: PoolWindow, out: &mut [f32], grad: &[f32], dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<const INDEX: bool>(x: &[f32], hw: [usize; 2], window: PoolWindow, out: &mut [f32], grad: &[f32], dx: &mut [f32]) {
            pool_planes::<INDEX>(x, hw, window, out, grad, dx)
        }
        #[target_feature(enable = "avx2")]
        fn avx2<const INDEX: bool>(x: &[f32], hw: [usize; 2], window: PoolWindow, out: &mut [f32], grad: &[f32], dx: &mut [f32]) {
            pool_planes::<INDEX>(x, hw, window, out, grad, dx)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::<INDEX>(x, hw, window, out, grad, dx) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2::<INDEX>(x, hw, window, out, grad, dx) };
        }
    }
    pool_planes::<INDEX>(x, hw, window, out, grad, dx)
}

/// Planes handed to one rayon task: enough work to amortise the task and its scratch.
fn planes_per_task(plane_len: usize) -> usize {
    (16384 / plane_len.max(1)).max(1)
}

/// The max pool of `x` (`[n, c, h, w]`, contiguous f32) with `window`; shape `[n, c, oh, ow]`.
pub fn max_pool_forward(x: &[f32], shape: [usize; 4], window: PoolWindow) -> Vec<f32> {
    let [_, _, h, w] = shape;
    let (oh, ow) = (window.output_len(h), window.output_len(w));
    let mut out = vec![0.0f32; x.len() / (h * w) * oh * ow];
    let per_task = planes_per_task(h * w);
    out.par_chunks_mut(oh * ow * per_task).zip(x.par_chunks(h * w * per_task)).for_each(|(out, x)| {
        pool_planes_dispatch::<false>(x, [h, w], window, out, &[], &mut []);
    });
    out
}

/// δx of [`max_pool_forward`]: each output's δy added at its window's maximum.
pub fn max_pool_backward(x: &[f32], grad: &[f32], shape: [usize; 4], window: PoolWindow) -> Vec<f32> {
    let [_, _, h, w] = shape;
    let (oh, ow) = (window.output_len(h), window.output_len(w));
    let mut dx = vec![0.0f32; x.len()];
    let per_task = planes_per_task(h * w);
    dx.par_chunks_mut(h * w * per_task).zip(x.par_chunks(h * w * per_task)).zip(grad.par_chunks(oh * ow * per_task)).for_each(|((dx, x), grad)| {
        pool_planes_dispatch::<true>(x, [h, w], window, &mut [], grad, dx);
    });
    dx
}

#[backend_extension(Autodiff, Cube, Flex, NdArray: cfg(feature = "ndarray"))]
pub trait PoolBackend: Backend {
    /// Square max pooling (floor mode, no dilation).
    fn max_pool(x: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        Self::max_pool2d(x, [kernel; 2], [stride; 2], [padding; 2], [1, 1], false)
    }

    /// δx of [`PoolBackend::max_pool`] from its input and δy.
    fn max_pool_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        backend_max_pool_backward::<Self>(x, grad, PoolWindow { kernel, stride, padding })
    }
}

/// The backend's own max-pool backward (its forward run again for the indices).
fn backend_max_pool_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>, w: PoolWindow) -> FloatTensor<B> {
    let (k, s, p) = ([w.kernel; 2], [w.stride; 2], [w.padding; 2]);
    let indices = B::max_pool2d_with_indices(x.clone(), k, s, p, [1, 1], false, IntDType::I64).indices;
    B::max_pool2d_with_indices_backward(x, k, s, p, [1, 1], false, grad, indices).x_grad
}

impl PoolBackend for Cube {}
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
impl PoolBackend for burn::backend::NdArray {}

/// f32 through this module's loops; other dtypes through burn-flex's.
impl PoolBackend for Flex {
    fn max_pool(x: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        let window = PoolWindow { kernel, stride, padding };
        match as_flex::<Self>(&x) {
            Some(xf) => {
                let shape = dims::<Self>(&x);
                let y = max_pool_forward(&values(xf), shape, window);
                to_primitive::<Self>(y, [shape[0], shape[1], window.output_len(shape[2]), window.output_len(shape[3])])
            }
            None => Self::max_pool2d(x, [kernel; 2], [stride; 2], [padding; 2], [1, 1], false),
        }
    }

    fn max_pool_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        let window = PoolWindow { kernel, stride, padding };
        match (as_flex::<Self>(&x), as_flex::<Self>(&grad)) {
            (Some(xf), Some(gf)) => {
                let shape = dims::<Self>(&x);
                to_primitive::<Self>(max_pool_backward(&values(xf), &values(gf), shape, window), shape)
            }
            _ => backend_max_pool_backward::<Self>(x, grad, window),
        }
    }
}

fn dims<B: Backend>(x: &FloatTensor<B>) -> [usize; 4] {
    let s = x.shape();
    [s[0], s[1], s[2], s[3]]
}

impl<B: PoolBackend, C: CheckpointStrategy> PoolBackend for Autodiff<B, C> {
    fn max_pool(x: FloatTensor<Self>, kernel: usize, stride: usize, padding: usize) -> FloatTensor<Self> {
        if as_flex::<B>(&x.clone().into_primitive()).is_none() {
            return <Self as ModuleOps<Self>>::max_pool2d(x, [kernel; 2], [stride; 2], [padding; 2], [1, 1], false);
        }
        let window = PoolWindow { kernel, stride, padding };
        match MaxPoolBackward(window).prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                prep.finish(x.clone(), B::max_pool(x, kernel, stride, padding))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::max_pool(x.into_primitive(), kernel, stride, padding)),
        }
    }
}

/// Keeps the pool's input (the maxima are found again from it).
#[derive(Debug)]
struct MaxPoolBackward(PoolWindow);

impl<B: PoolBackend> Backward<B, 1> for MaxPoolBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = &ops.parents[0] {
            let PoolWindow { kernel, stride, padding } = self.0;
            grads.register::<B>(node.id, B::max_pool_backward(ops.state, grad, kernel, stride, padding));
        }
    }
}

/// Square max pooling of `x` (`[n, c, h, w]`; floor mode, no dilation), as burn's `max_pool2d`.
pub fn max_pool2d(x: Tensor<4>, kernel: usize, stride: usize, padding: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as PoolBackend>::max_pool(x.into_dispatch(), kernel, stride, padding))
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::max_pool2d as burn_max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    use burn::tensor::{Device, Distribution, Tensor, TensorData, Tolerance};

    use super::*;

    /// burn's max pool and its gradient, as the reference.
    fn reference(x: Tensor<4>, w: PoolWindow, g: Tensor<4>) -> (TensorData, TensorData) {
        let x = x.require_grad();
        let y = burn_max_pool2d(x.clone(), MaxPoolOptions::new([w.kernel; 2]).with_stride([w.stride; 2]).with_padding([w.padding; 2]));
        let grads = (y.clone() * g).sum().backward();
        (y.into_data(), x.grad(&grads).unwrap().into_data())
    }

    fn ours(x: Tensor<4>, w: PoolWindow, g: Tensor<4>) -> (TensorData, TensorData) {
        let x = x.require_grad();
        let y = max_pool2d(x.clone(), w.kernel, w.stride, w.padding);
        let grads = (y.clone() * g).sum().backward();
        (y.into_data(), x.grad(&grads).unwrap().into_data())
    }

    #[test]
    fn max_pool_matches_burn_in_value_and_gradient_with_ties_and_nan() {
        let device = Device::flex().autodiff();
        // Windows of the models (2×2/2, 3×3/2 with and without padding, 3×3/1) and a 5×5/3 on odd and even
        // sizes; values rounded to a few levels so that windows hold ties.
        for (w, h, wd) in [(PoolWindow { kernel: 2, stride: 2, padding: 0 }, 8, 8), (PoolWindow { kernel: 3, stride: 2, padding: 1 }, 9, 8), (PoolWindow { kernel: 3, stride: 2, padding: 0 }, 11, 7), (PoolWindow { kernel: 3, stride: 1, padding: 1 }, 5, 6), (PoolWindow { kernel: 5, stride: 3, padding: 2 }, 10, 13)] {
            let x = Tensor::<4>::random([3, 5, h, wd], Distribution::Uniform(-2.0, 2.0), &device).mul_scalar(2.0).round();
            let g = Tensor::<4>::random([3, 5, w.output_len(h), w.output_len(wd)], Distribution::Normal(0.0, 1.0), &device);
            let (y_ref, dx_ref) = reference(x.clone(), w, g.clone());
            let (y, dx) = ours(x, w, g);
            assert_eq!(y.shape(), y_ref.shape(), "{w:?}");
            y.assert_eq(&y_ref, true);
            // Overlapping windows add δy's in another order than burn's.
            dx.assert_approx_eq::<f32>(&dx_ref, Tolerance::absolute(1e-6));
        }
        // A NaN wins its window in the value; padding never wins, even over −∞.
        let mut values = vec![-f32::INFINITY; 16];
        values[5] = f32::NAN;
        let x = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 4, 4]), &device);
        let y: Vec<f32> = max_pool2d(x, 3, 2, 1).into_data().try_to_vec::<f32>().unwrap();
        assert!(y[0].is_nan() && y[1].is_nan() && y[2].is_nan() && y[3].is_nan(), "{y:?}");
        let x = Tensor::<4>::full([1, 1, 3, 3], -f32::INFINITY, &device);
        let y: Vec<f32> = max_pool2d(x, 3, 2, 1).into_data().try_to_vec::<f32>().unwrap();
        assert!(y.iter().all(|v| *v == -f32::INFINITY), "{y:?}");
    }

    #[test]
    fn max_pool_is_burns_own_on_half_precision() {
        let device = Device::flex().autodiff();
        let w = PoolWindow { kernel: 3, stride: 2, padding: 1 };
        let x = Tensor::<4>::random([2, 3, 6, 6], Distribution::Normal(0.0, 1.0), &device).cast(burn::tensor::DType::BF16);
        let g = Tensor::<4>::random([2, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device).cast(burn::tensor::DType::BF16);
        let (y_ref, dx_ref) = reference(x.clone(), w, g.clone());
        let (y, dx) = ours(x, w, g);
        y.assert_eq(&y_ref, true);
        dx.assert_eq(&dx_ref, true);
    }
}
