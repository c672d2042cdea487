//! The optimiser's last write, `w − α·d`, in place on flex.
//!
//! Composed from burn's ops the update is two passes and a temporary the size of the
//! parameter: `α·d` cannot be written over d when d is also kept as the momentum buffer. For
//! AlexNet's 4096 × 4096 fc7 that temporary was 64 MiB on top of the gradient and the momentum
//! at the step's peak, and PyTorch's in-place SGD has none. Here, when w is an f32 flex tensor
//! that nothing else holds, w[i] − (α·d[i]) is written over w in one pass, rounded as the
//! composed ops round it (no fused multiply-add), so a run's numbers do not depend on which
//! path took the update. Elsewhere (shared w, other dtypes, wgpu) it is burn's two ops.

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
}

impl UpdateBackend for Cube {}
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
impl UpdateBackend for burn::backend::NdArray {}

/// The optimiser works on the parameters' inner tensors; under autodiff this is burn's ops.
impl<B: UpdateBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> UpdateBackend for Autodiff<B, C> {}

impl UpdateBackend for Flex {
    fn sub_scaled(mut w: FloatTensor<Self>, d: FloatTensor<Self>, alpha: f32) -> FloatTensor<Self> {
        const BLOCK: usize = 1 << 16;
        let in_place = as_flex::<Self>(&w).is_some() && w.is_unique() && w.layout().contiguous_offsets() == Some((0, w.shape().num_elements())) && w.shape() == d.shape();
        let Some(df) = as_flex::<Self>(&d).filter(|_| in_place) else {
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
}

/// `w − alpha·d` (same shapes), in place where w's buffer is its own (see the module doc).
pub fn sub_scaled<const D: usize>(w: Tensor<D>, d: Tensor<D>, alpha: f32) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as UpdateBackend>::sub_scaled(w.into_dispatch(), d.into_dispatch(), alpha))
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
}
