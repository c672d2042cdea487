//! What an observer sees of a network's layers on a probe batch: the seam through which
//! `plastic-observe` records the observables of Nayebi, Srivastava et al. (2020) without
//! knowing any model (or the optimiser).
//!
//! A model lists its observed layers in forward order — a CNN's feedback layers, a ConvRNN's
//! nodes and readout — each with its forward kernel W, its output on the probe batch, and its
//! *activity change*: the input–output Jacobian summed over the layer's output units,
//!
//!   g_b = (1/N_out) Σ_j Σ_i ∂y_bj / ∂x_bi,
//!
//! computed through the layer's own backward, so through B for the rules that send the error
//! through B (feedback alignment and kin, the first layer included) and through W for backprop
//! and direct feedback alignment, whose local Jacobian is the forward one. The model returns
//! the per-input-unit sums J_bi = Σ_j m_j ∂y_bj/∂x_bi for the output masks m the observer asks
//! for (unit subsampling), and the observer applies noise, input subsampling and the sums.

use burn::tensor::{Tensor, TensorData};

use crate::tap::TapRequest;
use crate::{FeedbackLayer, FeedbackNetwork};

/// One observed layer on the probe batch; every tensor is on the host, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerObservation {
    pub name: String,
    /// The forward kernel W, flattened (no bias, no B).
    pub weight: Vec<f32>,
    /// The layer's output, `[batch × units]`.
    pub activation: Vec<f32>,
    pub batch: usize,
    /// Output units per example (`N_out`).
    pub units: usize,
    /// Input units per example (`N_in`).
    pub inputs: usize,
    /// One `[batch × inputs]` matrix J per requested output mask m (in the order asked):
    /// J_bi = Σ_j m_j ∂y_bj/∂x_bi through the rule's backward.
    pub jacobians: Vec<Vec<f32>>,
    /// Further kernels of the same layer, weights only (a ConvRNN node's cell kernels, its
    /// feedback map and residual projection): `(name, W flattened)`.
    pub extra_weights: Vec<(String, Vec<f32>)>,
}

/// An output mask the observer asks for: every unit (`None`), or a 0/1 weight per output unit.
pub type OutputMask = Option<Vec<f32>>;

/// A network whose layers an observer can read. `self` is the training model (on an
/// autodiff device); the probe forward runs in evaluation mode on its inner device (no
/// normalisation statistics updated, no dropout) and only the per-layer Jacobians use
/// autodiff, on one layer at a time, so nothing of training state changes.
pub trait ObservedNetwork {
    /// The observed layers' names in forward order (without running anything).
    fn observed_layers(&self) -> Vec<String>;

    /// Observes every layer on `images` (`[batch, c, h, w]`, normalised, on any device of the
    /// model's backend). `time_step`: the unroll step whose outputs are observed (recurrent
    /// models; `None` = the last). `masks(layer, units)` returns the output masks wanted for
    /// that layer's `units` outputs.
    fn observe(&self, images: Tensor<4>, time_step: Option<usize>, masks: &mut dyn FnMut(&str, usize) -> Vec<OutputMask>) -> Vec<LayerObservation>;
}

/// Host values of a tensor, as f32.
pub fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap_or_default()
}

/// The Jacobian sums J_m of `f` at `input` for each mask: `input` is a tensor of the model's
/// inner (non-autodiff) device, `f` maps an autodiff leaf of the same shape to the layer's
/// output flattened to `[batch, units]`. One backward per distinct mask; identical masks are
/// computed once. Without autodiff on `f`'s parameters the result is NaN (nothing to
/// differentiate through).
pub fn jacobian_sums<const D: usize>(input: &Tensor<D>, masks: &[OutputMask], f: &dyn Fn(Tensor<D>) -> Tensor<2>) -> Vec<Vec<f32>> {
    let mut leaf = |input: &Tensor<D>| {
        let x = tracked(input);
        (x.clone(), f(x))
    };
    jacobian_sums_of(input, masks, &mut leaf, &|y| y)
}

/// `input` (inner device) as an autodiff leaf whose gradient is asked for.
fn tracked<const D: usize>(input: &Tensor<D>) -> Tensor<D> {
    Tensor::<D>::from_inner(input.clone()).require_grad()
}

/// [`jacobian_sums`] of `observed ∘ op`, which also gives `op`'s value at `input` (on the
/// inner device): the forward that builds the first mask's graph is the layer's output, so an
/// observer need not run the layer a second time for the network's next stage. `op` is the
/// layer (its output kept), `observed` an elementwise map of it flattened to `[batch, units]`;
/// `masks` is asked for the masks once the output's units (its non-batch elements) are known.
pub fn output_and_jacobian_sums<const D: usize, const E: usize>(input: &Tensor<D>, masks: &mut dyn FnMut(usize) -> Vec<OutputMask>, op: &dyn Fn(Tensor<D>) -> Tensor<E>, observed: &dyn Fn(Tensor<E>) -> Tensor<2>) -> (Tensor<E>, Vec<Vec<f32>>) {
    let x = tracked(input);
    let z = op(x.clone());
    let output = z.clone().inner();
    let masks = masks(z.dims()[1..].iter().product());
    let mut first = Some((x, z));
    let jacobians = jacobian_sums_of(input, &masks, &mut |input| {
        first.take().unwrap_or_else(|| {
            let x = tracked(input);
            (x.clone(), op(x))
        })
    }, observed);
    (output, jacobians)
}

/// The sums of [`jacobian_sums`], with `leaf` giving the tracked input and the layer's output
/// on it for each distinct mask.
fn jacobian_sums_of<const D: usize, const E: usize>(input: &Tensor<D>, masks: &[OutputMask], leaf: &mut dyn FnMut(&Tensor<D>) -> (Tensor<D>, Tensor<E>), observed: &dyn Fn(Tensor<E>) -> Tensor<2>) -> Vec<Vec<f32>> {
    let dims = input.dims();
    let inputs: usize = dims.iter().product();
    let mut out: Vec<Vec<f32>> = Vec::with_capacity(masks.len());
    for (k, mask) in masks.iter().enumerate() {
        if let Some(j) = masks[..k].iter().position(|m| m == mask) {
            out.push(out[j].clone());
            continue;
        }
        let (x, z) = leaf(input);
        let y = observed(z);
        let [batch, units] = y.dims();
        let weighted = match mask {
            None => y.sum(),
            Some(m) => {
                assert_eq!(m.len(), units, "an output mask has one weight per output unit");
                let m = Tensor::<2>::from_data(TensorData::new(m.clone(), [1, units]), &y.device());
                (y * m.expand([batch, units])).sum()
            }
        };
        if !weighted.is_tracked() {
            out.push(vec![f32::NAN; inputs]);
            continue;
        }
        let grads = weighted.backward();
        let j = x.grad(&grads).map(|g| host(g.flatten::<1>(0, D - 1))).unwrap_or_else(|| vec![0.0; inputs]);
        out.push(j);
    }
    out
}

/// Runs `body` with every feedback layer's tap asked for nothing (no angle, no capture, the
/// rule's own backward), then restores the requests: the Jacobians an observer computes must
/// leave no measurement behind. `step` is what per-step draws (brSF magnitudes) see.
pub fn with_quiet_taps<T>(network: &dyn FeedbackNetwork, step: u64, body: impl FnOnce() -> T) -> T {
    let layers = network.feedback_layers();
    let saved: Vec<(TapRequest, u64)> = layers.iter().map(|(_, l)| (l.tap().request(), l.tap().step())).collect();
    for (_, l) in &layers {
        l.tap().set_request(TapRequest::default());
        l.tap().set_step(step);
    }
    let out = body();
    for ((_, l), (request, s)) in layers.iter().zip(saved) {
        l.tap().set_request(request);
        l.tap().set_step(s);
    }
    out
}

/// W of a feedback layer, on the host.
pub fn weight_host(layer: &dyn FeedbackLayer) -> Vec<f32> {
    host(layer.weight_flat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FeedbackLinearConfig, LayerPosition, RuleConfig, RuleKind};
    use burn::tensor::{Device, TensorData};

    fn rows(v: &[f32], cols: usize) -> Vec<Vec<f64>> {
        v.chunks(cols).map(|r| r.iter().map(|&x| x as f64).collect()).collect()
    }

    /// A linear layer y = φ(xW + b): J_bi = Σ_j m_j φ'(z_bj) W_ij. With backprop W is the
    /// forward kernel; under feedback alignment the input gradient goes through B instead.
    #[test]
    fn the_jacobian_sum_of_a_linear_layer_is_its_closed_form_through_w_or_b() {
        let device = Device::flex().autodiff();
        let inner = device.clone().without_autodiff();
        for kind in [RuleKind::Backprop, RuleKind::FeedbackAlignment] {
            let rules = RuleConfig { kind, ..Default::default() };
            let rule = rules.layer_rule("fc", LayerPosition { index: 1, count: 2 });
            let layer = FeedbackLinearConfig::new(5, 3).with_rule(rule).with_seed(3).with_feedback_seed(9).init(&device);
            // A seeded input: an unseeded draw left row 0 with no active unit now and then, and
            // then FA's sum and backprop's are both 0 and the last assertion cannot tell them apart.
            let x = Tensor::<2>::from_data(TensorData::new(crate::init::normal_stream(20, 11, 0), [4, 5]), &inner);
            let mask = vec![1.0, 0.0, 1.0];
            let js = jacobian_sums(&x, &[None, Some(mask.clone())], &|x| crate::Activation::Relu.apply(layer.forward(x)));
            let w = rows(&host(layer.weight.val().inner().flatten(0, 1)), 3);
            let b = match kind {
                RuleKind::Backprop => w.clone(),
                _ => rows(&host(layer.feedback.as_ref().unwrap().val().inner().flatten(0, 1)), 3),
            };
            let z = rows(&host(layer.forward(Tensor::from_inner(x.clone())).inner().flatten(0, 1)), 3);
            for (m, j) in [(vec![1.0; 3], &js[0]), (mask.clone(), &js[1])] {
                let j = rows(j, 5);
                for bi in 0..4 {
                    for i in 0..5 {
                        let want: f64 = (0..3).map(|o| m[o] as f64 * if z[bi][o] > 0.0 { b[i][o] } else { 0.0 }).sum();
                        assert!((j[bi][i] - want).abs() < 1e-5, "{kind:?} b={bi} i={i}: {} vs {want}", j[bi][i]);
                    }
                }
            }
            // Under FA the sums differ from backprop's (B is not W).
            if kind == RuleKind::FeedbackAlignment {
                let through_w: f64 = (0..3).map(|o| if z[0][o] > 0.0 { w[0][o] } else { 0.0 }).sum();
                assert!((js[0][0] as f64 - through_w).abs() > 1e-4);
            }
        }
    }
}
