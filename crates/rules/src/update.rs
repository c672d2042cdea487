//! The optimiser's writes in place on flex: `w − α·d`, and SGD with momentum's whole step.
//!
//! Composed from burn's ops the update is two passes and a temporary the size of the
//! parameter: `α·d` cannot be written over d when d is also kept as the momentum buffer. For
//! AlexNet's 4096 × 4096 fc7 that temporary was 64 MiB on top of the gradient and the momentum
//! at the step's peak, and PyTorch's in-place SGD has none. Here, when w is an f32 flex tensor
//! that nothing else holds, w[i] − (α·d[i]) is written over w in one pass, rounded as the
//! composed ops round it (no fused multiply-add), so a run's numbers do not depend on which
//! path took the update. Elsewhere (shared w, other dtypes, wgpu) it is burn's two ops.
//!
//! SGD with momentum ([`sgd_momentum_step`]) is, composed, up to eight passes over the
//! parameter (gradient scale, coupled decay, μv, + g, Nesterov's look-ahead, decoupled shrink,
//! α·d, w −), each a temporary. A rule that trains B (Kolen–Pollack: B and W step alike, both
//! decayed) doubles them: on the CPU convnet they were most of Kolen–Pollack's extra time over
//! backprop. On flex with w and v unique it is one pass writing both, each value rounded in
//! the composed ops' order, so the two paths give the same bits.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::Tensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::cpu_conv::as_flex;

#[backend_extension(Autodiff, Cube, Flex, NdArray: cfg(feature = "ndarray"))]
pub trait UpdateBackend: Backend {
    /// `w − alpha·d` for tensors of one shape.
    fn sub_scaled(w: FloatTensor<Self>, d: FloatTensor<Self>, alpha: f32) -> FloatTensor<Self> {
        Self::float_sub(w, Self::float_mul_scalar(d, alpha.into()))
    }

    /// One SGD step with momentum μ on w, its gradient g and momentum buffer v (one shape):
    /// `g ← scale·g + λ·w`, `v ← μv + g`, `d = v` (Nesterov: `g + μv`), `w ← shrink·w − α·d`;
    /// returns (w, v). `scale = 1`, `λ = 0` and `shrink = 1` leave out their pass.
    #[allow(clippy::too_many_arguments)]
    fn sgd_momentum_step(w: FloatTensor<Self>, g: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32, decay: f32, momentum: f32, nesterov: bool, shrink: f32, alpha: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_sgd_momentum_step::<Self>(w, g, v, scale, decay, momentum, nesterov, shrink, alpha)
    }

    /// Σ x², as a one-element tensor.
    fn sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_sum_of_squares::<Self>(x)
    }
}

/// [`UpdateBackend::sum_of_squares`] from burn's ops, reduced row by row first: burn-flex's
/// one-shot sum over more than 4 Mi elements is split across threads in a scheduling-dependent
/// order, which would break bitwise-reproducible resumes.
fn composed_sum_of_squares<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let shape = x.shape();
    let n = shape.num_elements();
    let rows = if shape.num_dims() > 1 { shape[0] } else { n.div_ceil(1 << 16).max(1) };
    let x = B::float_reshape(x, if rows > 0 && n % rows == 0 { burn::tensor::Shape::new([rows, n / rows]) } else { burn::tensor::Shape::new([1, n]) });
    B::float_reshape(B::float_sum(B::float_sum_dim(B::float_mul(x.clone(), x), 1)), burn::tensor::Shape::new([1]))
}

/// [`UpdateBackend::sgd_momentum_step`] from burn's ops (and [`UpdateBackend::sub_scaled`]).
#[allow(clippy::too_many_arguments)]
fn composed_sgd_momentum_step<B: UpdateBackend>(w: FloatTensor<B>, g: FloatTensor<B>, v: FloatTensor<B>, scale: f32, decay: f32, momentum: f32, nesterov: bool, shrink: f32, alpha: f32) -> (FloatTensor<B>, FloatTensor<B>) {
    let mut g = g;
    if scale != 1.0 {
        g = B::float_mul_scalar(g, scale.into());
    }
    if decay != 0.0 {
        g = B::float_add(g, B::float_mul_scalar(w.clone(), decay.into()));
    }
    let v = B::float_add(B::float_mul_scalar(v, momentum.into()), g.clone());
    let d = if nesterov { B::float_add(g, B::float_mul_scalar(v.clone(), momentum.into())) } else { v.clone() };
    let w = if shrink != 1.0 { B::float_mul_scalar(w, shrink.into()) } else { w };
    (B::sub_scaled(w, d, alpha), v)
}

impl UpdateBackend for Cube {}
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
impl UpdateBackend for burn::backend::NdArray {}

/// The optimiser works on the parameters' inner tensors; under autodiff this is burn's ops.
impl<B: UpdateBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> UpdateBackend for Autodiff<B, C> {}

/// Whether `t` is an f32 flex tensor of `shape` whose whole buffer is its own, in order: one
/// that can be written over in place.
fn writable(t: &FloatTensor<Flex>, shape: &burn::tensor::Shape) -> bool {
    as_flex::<Flex>(t).is_some() && t.is_unique() && t.layout().contiguous_offsets() == Some((0, shape.num_elements())) && t.shape() == *shape
}

impl UpdateBackend for Flex {
    fn sub_scaled(mut w: FloatTensor<Self>, d: FloatTensor<Self>, alpha: f32) -> FloatTensor<Self> {
        const BLOCK: usize = 1 << 16;
        let Some(df) = as_flex::<Self>(&d).filter(|d| writable(&w, &d.shape())) else {
            return Self::float_sub(w, Self::float_mul_scalar(d, alpha.into()));
        };
        let dv = crate::cpu_conv::values(df);
        let ws = FlexTensor::try_storage_mut::<f32>(&mut w).expect("checked unique and f32");
        ws.par_chunks_mut(BLOCK).zip(dv.par_chunks(BLOCK)).for_each(|(w, d)| {
            for (w, &d) in w.iter_mut().zip(d) {
                *w -= alpha * d;
            }
        });
        w
    }

    #[allow(clippy::too_many_arguments)]
    fn sgd_momentum_step(mut w: FloatTensor<Self>, g: FloatTensor<Self>, mut v: FloatTensor<Self>, scale: f32, decay: f32, momentum: f32, nesterov: bool, shrink: f32, alpha: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        const BLOCK: usize = 1 << 14;
        let Some(gf) = as_flex::<Self>(&g).filter(|g| writable(&w, &g.shape()) && writable(&v, &g.shape())) else {
            return composed_sgd_momentum_step::<Self>(w, g, v, scale, decay, momentum, nesterov, shrink, alpha);
        };
        let gv = crate::cpu_conv::values(gf);
        let vs = FlexTensor::try_storage_mut::<f32>(&mut v).expect("checked unique and f32");
        let ws = FlexTensor::try_storage_mut::<f32>(&mut w).expect("checked unique and f32");
        ws.par_chunks_mut(BLOCK).zip(vs.par_chunks_mut(BLOCK)).zip(gv.par_chunks(BLOCK)).for_each(|((w, v), g)| {
            for ((w, v), &g) in w.iter_mut().zip(v.iter_mut()).zip(g) {
                // The composed ops' roundings, in their order (no fused multiply-add).
                let mut g = if scale != 1.0 { g * scale } else { g };
                if decay != 0.0 {
                    g += *w * decay;
                }
                *v = *v * momentum + g;
                let d = if nesterov { g + *v * momentum } else { *v };
                let shrunk = if shrink != 1.0 { *w * shrink } else { *w };
                *w = shrunk - alpha * d;
            }
        });
        (w, v)
    }

    /// One pass in fixed blocks of 64 Ki elements, each summed on whichever thread as the batch
    /// norm sums (`norm::sum_by`: f32 lanes over 1 Ki elements, f64 across), the blocks' sums
    /// added in order: the same bits at every thread count. burn's ops made the square, a row
    /// sum and a total, three passes and two temporaries for each parameter; under gradient
    /// clipping (every rule but backprop, by default) that ran over every gradient each step,
    /// 1.3 ms of information alignment's convnet step (W's and B's gradients), now 0.3 ms.
    fn sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        const BLOCK: usize = 1 << 16;
        let Some(xf) = as_flex::<Self>(&x) else {
            return composed_sum_of_squares::<Self>(x);
        };
        let values = crate::cpu_conv::values(xf);
        let blocks: Vec<f64> = values.par_chunks(BLOCK).map(|b| crate::norm::sum_by(b, |v| v * v)).collect();
        crate::cpu_conv::to_primitive::<Self>(vec![blocks.iter().sum::<f64>() as f32], [1])
    }
}

/// `w − alpha·d` (same shapes), in place where w's buffer is its own (see the module doc).
pub fn sub_scaled<const D: usize>(w: Tensor<D>, d: Tensor<D>, alpha: f32) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as UpdateBackend>::sub_scaled(w.into_dispatch(), d.into_dispatch(), alpha))
}

/// Σ x² over all of `t`, read back: on flex one deterministic pass (see [`UpdateBackend`]'s
/// flex implementation), burn's ops elsewhere.
pub fn sum_of_squares<const D: usize>(t: Tensor<D>) -> f64 {
    Tensor::<1>::from_dispatch(<Dispatch as UpdateBackend>::sum_of_squares(t.into_dispatch())).into_scalar::<f64>()
}

/// The scalars of one SGD-with-momentum step ([`sgd_momentum_step`]), as f32 (burn's ops
/// convert their scalars to the tensor's dtype the same way).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// Multiplies the gradient first (loss scale and clipping; 1 for none).
    pub grad_scale: f32,
    /// Coupled weight decay λ: `g + λw` (0 for none).
    pub decay: f32,
    /// μ, > 0.
    pub momentum: f32,
    pub nesterov: bool,
    /// Decoupled weight decay's `1 − lr·λ` on w before the step (1 for none).
    pub shrink: f32,
    /// The learning rate.
    pub lr: f32,
}

/// One SGD step with momentum: `g ← scale·g + λw`, `v ← μv + g`, `d = v` (Nesterov:
/// `g + μv`), `w ← shrink·w − lr·d`; returns the new (w, v). In one pass, in place, where w
/// and v are unique f32 flex tensors (see the module doc); burn's ops elsewhere.
pub fn sgd_momentum_step<const D: usize>(w: Tensor<D>, g: Tensor<D>, v: Tensor<D>, step: SgdStep) -> (Tensor<D>, Tensor<D>) {
    let SgdStep { grad_scale, decay, momentum, nesterov, shrink, lr } = step;
    let (w, v) = <Dispatch as UpdateBackend>::sgd_momentum_step(w.into_dispatch(), g.into_dispatch(), v.into_dispatch(), grad_scale, decay, momentum, nesterov, shrink, lr);
    (Tensor::from_dispatch(w), Tensor::from_dispatch(v))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    /// In place or not, the same bits as burn's `w − d·α`; a shared w is left as it was.
    #[test]
    fn matches_burns_ops_bit_for_bit_and_leaves_a_shared_tensor_alone() {
        let device = Device::flex();
        let w = Tensor::<2>::random([300, 301], Distribution::Normal(0.0, 1.0), &device);
        let d = Tensor::<2>::random([300, 301], Distribution::Normal(0.0, 1.0), &device);
        let expected = (w.clone() - d.clone() * 0.037).into_data();
        let kept = w.clone();
        // Shared (kept holds it): burn's ops, kept unchanged.
        sub_scaled(w.clone(), d.clone(), 0.037).into_data().assert_eq(&expected, true);
        let before = kept.clone().into_data();
        // Unique: in place.
        let unique = Tensor::<2>::from_data(before.clone(), &device);
        sub_scaled(unique, d.clone(), 0.037).into_data().assert_eq(&expected, true);
        kept.into_data().assert_eq(&before, true);
        // A transposed (non-contiguous) w takes burn's ops.
        let wt = Tensor::<2>::from_data(before, &device).transpose();
        sub_scaled(wt, d.clone().transpose(), 0.037).into_data().assert_eq(&(w.transpose() - d.transpose() * 0.037).into_data(), true);
    }

    /// Σ x² on flex: the f64 sum of the squares (to f32 rounding), the same bits on one thread
    /// and on four, and the composed ops' value (the non-flex path) to f32 accuracy.
    #[test]
    fn sum_of_squares_is_the_exact_sum_at_every_thread_count() {
        let device = Device::flex();
        let x = Tensor::<2>::random([300, 1001], Distribution::Normal(0.0, 1.0), &device);
        let exact: f64 = x.clone().into_data().try_to_vec::<f32>().unwrap().iter().map(|&v| (v as f64) * (v as f64)).sum();
        let on = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| sum_of_squares(x.clone()));
        let (one, four) = (on(1), on(4));
        assert_eq!(one.to_bits(), four.to_bits());
        assert!((one - exact).abs() <= exact * 1e-6, "{one} against {exact}");
        let composed = Tensor::<1>::from_dispatch(composed_sum_of_squares::<Dispatch>(x.into_dispatch())).into_scalar::<f64>();
        assert!((composed - exact).abs() <= exact * 1e-4, "{composed} against {exact}");
    }

    /// The fused SGD step gives the composed ops' bits for w and v, with every optional pass
    /// on and off, and leaves shared tensors alone (they take the composed path).
    #[test]
    fn sgd_momentum_step_matches_the_composed_ops_bit_for_bit() {
        let device = Device::flex();
        let random = || Tensor::<1>::random([70_001], Distribution::Normal(0.0, 1.0), &device).into_data();
        let (w0, g0, v0) = (random(), random(), random());
        let fresh = |d: &burn::tensor::TensorData| Tensor::<1>::from_data(d.clone(), &device);
        for (grad_scale, decay, nesterov, shrink) in [(1.0, 0.0, false, 1.0), (0.37, 5e-4, false, 1.0), (1.0, 0.0, true, 0.999), (2.5, 1e-3, true, 0.98)] {
            let step = SgdStep { grad_scale, decay, momentum: 0.9, nesterov, shrink, lr: 0.05 };
            // The composed ops, as the optimiser wrote them before (f64 scalars, burn's casts).
            let mut g = fresh(&g0);
            if grad_scale != 1.0 {
                g = g * grad_scale;
            }
            if decay != 0.0 {
                g = g + fresh(&w0) * decay;
            }
            let v = fresh(&v0) * 0.9f64 + g.clone();
            let d = if nesterov { g + v.clone() * 0.9f64 } else { v.clone() };
            let w = if shrink != 1.0 { fresh(&w0) * shrink } else { fresh(&w0) };
            let (want_w, want_v) = ((w - d * 0.05f32).into_data(), v.into_data());
            // Unique: the fused pass.
            let (w, v) = sgd_momentum_step(fresh(&w0), fresh(&g0), fresh(&v0), step);
            w.into_data().assert_eq(&want_w, true);
            v.into_data().assert_eq(&want_v, true);
            // Shared: the composed path, the originals untouched.
            let (w_kept, v_kept) = (fresh(&w0), fresh(&v0));
            let (w, v) = sgd_momentum_step(w_kept.clone(), fresh(&g0), v_kept.clone(), step);
            w.into_data().assert_eq(&want_w, true);
            v.into_data().assert_eq(&want_v, true);
            w_kept.into_data().assert_eq(&w0, true);
            v_kept.into_data().assert_eq(&v0, true);
        }
    }
}
