//! Pointwise nonlinearities shared by the model crates.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    Elu,
    Tanh,
    Sigmoid,
    Identity,
}

impl Activation {
    pub fn apply<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            // One parallel pass each way on flex, in place where it can ([`crate::pointwise::relu`]).
            Activation::Relu => crate::pointwise::relu(x),
            // One fused op ([`crate::pointwise::elu`]): accurate near 0 (as expm1), finite
            // gradients for large x, one pass each way.
            Activation::Elu => crate::pointwise::elu(x),
            Activation::Tanh => crate::pointwise::tanh(x),
            Activation::Sigmoid => crate::pointwise::sigmoid(x),
            Activation::Identity => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn elu_matches_its_definition_and_has_finite_gradients_for_large_inputs() {
        let device = Device::flex().autodiff();
        let x = Tensor::<1>::from_data(TensorData::new(vec![-3.0f32, -0.5, 0.0, 2.0, 200.0], [5]), &device).require_grad();
        let y = Activation::Elu.apply(x.clone());
        let values = y.clone().into_data().try_into_vec_as::<f32>().unwrap();
        let expected = [(-3.0f32).exp() - 1.0, (-0.5f32).exp() - 1.0, 0.0, 2.0, 200.0];
        assert!(values.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{values:?}");
        let g = x.grad(&y.sum().backward()).unwrap().into_data().try_into_vec_as::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert!((g[0] - (-3.0f32).exp()).abs() < 1e-6 && g[3] == 1.0 && g[4] == 1.0, "{g:?}");
    }

    /// Near 0, elu(x) = e^x − 1 keeps f32's relative precision (an `exp(x) − 1` would be off by
    /// up to 1e-4 relative at |x| = 3e-4, enough to fail the PyTorch bridge's comparison).
    #[test]
    fn elu_is_accurate_near_zero() {
        let xs = [-3e-4f32, -1e-6, -1e-3, -0.1, -20.0];
        let y = Activation::Elu.apply(Tensor::<1>::from_data(TensorData::new(xs.to_vec(), [xs.len()]), &Device::flex()));
        for (x, y) in xs.iter().zip(y.into_data().try_into_vec_as::<f32>().unwrap()) {
            let exact = (*x as f64).exp_m1();
            assert!(((y as f64 - exact) / exact).abs() < 1e-6, "elu({x}) = {y}, expm1 = {exact}");
        }
    }
}
