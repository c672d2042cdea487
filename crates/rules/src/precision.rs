//! Mixed precision: the arithmetic dtype of a forward and backward pass, apart from the f32
//! parameters.
//!
//! The rule is autocast's (Micikevicius et al. 2018; PyTorch's `torch.autocast`): parameters,
//! optimiser state and the loss stay f32 ("master weights"); a network whose input arrives in
//! bf16 or f16 runs its convolutions, products and pointwise ops in that dtype. Every layer
//! follows its input: [`crate::FeedbackConv2d`] and [`crate::FeedbackLinear`] cast W, B and the
//! bias to the input's dtype ([`follow`]), and the cast is an autodiff node, so the gradients
//! reach the f32 parameters as f32. Normalisations, whose sums and variances lose too much in
//! 8 mantissa bits, run in f32 ([`in_f32`]). f16's narrow exponent needs loss scaling (the
//! trainer's dynamic loss scale); bf16 has f32's range and needs none.

use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// The arithmetic dtype of a training step (`train.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bfloat16 activations and products (8 exponent bits: f32's range), f32 parameters.
    Bf16,
    /// IEEE half activations and products (5 exponent bits), f32 parameters, dynamic loss scale.
    F16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// Whether the loss needs scaling for small gradients to survive (f16 only).
    pub fn needs_loss_scale(self) -> bool {
        self == Precision::F16
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" => Ok(Precision::F16),
            other => Err(format!("unknown precision \"{other}\" (expected f32, bf16 or f16)")),
        }
    }
}

/// `t` in the dtype of `like` (a parameter meeting its layer's input). A no-op — the same
/// tensor, no graph node — when the dtypes already agree, so f32 runs pay nothing.
pub fn follow<const D: usize, const E: usize>(t: Tensor<D>, like: &Tensor<E>) -> Tensor<D> {
    t.cast(like.dtype())
}

/// Runs `f` on `x` in f32 and returns its result in `x`'s dtype: autocast's rule for
/// normalisations (BatchNorm, GroupNorm, LRN), whose means and variances need f32's mantissa.
pub fn in_f32<const D: usize>(x: Tensor<D>, f: impl FnOnce(Tensor<D>) -> Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return f(x);
    }
    f(x.cast(DType::F32)).cast(dtype)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{DType, Device, Tensor, TensorData};

    use super::*;

    /// The cast is differentiable: a bf16 product's gradient reaches the f32 parameter as f32,
    /// equal to the f32 product's gradient to bf16's precision.
    #[test]
    fn gradients_reach_f32_parameters_through_the_cast() {
        let device = Device::flex().autodiff();
        let w = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, -1.25, 2.0, 0.75], [2, 2]), &device).require_grad();
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, -3.0, 0.5], [2, 2]), &device);
        let half = x.clone().cast(DType::BF16);
        let y = half.clone().matmul(follow(w.clone(), &half));
        assert_eq!(y.dtype(), DType::BF16);
        let g = w.grad(&y.cast(DType::F32).sum().backward()).unwrap();
        assert_eq!(g.dtype(), DType::F32);
        let want = w.grad(&x.matmul(w.clone()).sum().backward()).unwrap();
        g.into_data().assert_approx_eq::<f32>(&want.into_data(), Default::default());
    }

    #[test]
    fn in_f32_returns_to_the_input_dtype_and_is_a_no_op_for_f32() {
        let x = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 3.0], [2]), &Device::flex());
        let seen = std::cell::Cell::new(None);
        let y = in_f32(x.clone().cast(DType::F16), |t| {
            seen.set(Some(t.dtype()));
            t * 2.0
        });
        assert_eq!((seen.get(), y.dtype()), (Some(DType::F32), DType::F16));
        assert_eq!(y.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap(), vec![2.0, 6.0]);
        assert_eq!(in_f32(x, |t| t).dtype(), DType::F32);
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("fp8".parse::<Precision>().is_err());
    }
}
