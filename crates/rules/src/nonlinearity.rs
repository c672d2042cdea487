//! Pointwise nonlinearities shared by the model crates.

use burn::tensor::Tensor;
use burn::tensor::activation;
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
            Activation::Relu => activation::relu(x),
            // burn's `elu` takes exp of every element; above ~88 that is inf in the unused branch,
            // and its gradient 0·inf = NaN. exp(min(x, 0)) never overflows.
            Activation::Elu => activation::relu(x.clone()) + (x.clamp_max(0.0).exp() - 1.0),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => activation::sigmoid(x),
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
}
