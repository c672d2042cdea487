//! The zoo's layers as an observer sees them ([`ObservedNetwork`]).
//!
//! Every feedback layer is observed. Its *output* is the layer's own op (plus bias) followed by
//! the nonlinearity only where that comes right after it, as in the original TF layers whose
//! `activation` argument was part of the layer: a convnet's or AlexNet's ReLU(conv + b), a
//! dense layer's φ(xW + b) (before dropout), the readout's logits; a ResNet convolution, whose
//! BatchNorm comes first, is observed raw (pre-BN, pre-ReLU), as lr-identify's ResNets were.

use burn::module::Module;
use burn::tensor::Tensor;
use plastic_rules::probe::{LayerObservation, ObservedNetwork, OutputMask, host, output_and_jacobian_sums, weight_host};
use plastic_rules::{Activation, FeedbackConv2d, FeedbackLinear, FeedbackNetwork};

use crate::spec::PostOp;
use crate::units::pool;
use crate::{Cnn, Stage};

/// One convolution on `x`: its output z (before `activation`, for the network's next stage)
/// and what is observed of it. z comes from the forward that the Jacobian differentiates, run
/// on the layer's training copy with its parameters held fixed (the backward computes the input
/// gradient only): the evaluation copy's op and weights, so the network is not run twice.
fn observe_conv(name: String, layer: &FeedbackConv2d, x: Tensor<4>, activation: Activation, masks: &mut dyn FnMut(&str, usize) -> Vec<OutputMask>) -> (Tensor<4>, LayerObservation) {
    let [batch, ci, hi, wi] = x.dims();
    let layer = layer.clone().no_grad();
    let (z, jacobians) = output_and_jacobian_sums(&x, &mut |units| masks(&name, units), &|x| layer.forward(x), &|z| activation.apply(z).flatten(1, 3));
    let y = activation.apply(z.clone());
    let [_, c, h, w] = y.dims();
    (z, LayerObservation { name, weight: weight_host(&layer), activation: host(y.flatten(0, 3)), batch, units: c * h * w, inputs: ci * hi * wi, jacobians, extra_weights: Vec::new() })
}

/// One dense layer on `x`, as [`observe_conv`].
fn observe_linear(name: String, layer: &FeedbackLinear, x: Tensor<2>, activation: Activation, masks: &mut dyn FnMut(&str, usize) -> Vec<OutputMask>) -> (Tensor<2>, LayerObservation) {
    let [batch, inputs] = x.dims();
    let layer = layer.clone().no_grad();
    let (z, jacobians) = output_and_jacobian_sums(&x, &mut |units| masks(&name, units), &|x| layer.forward(x), &|z| activation.apply(z));
    let y = activation.apply(z.clone());
    let units = y.dims()[1];
    (z, LayerObservation { name, weight: weight_host(&layer), activation: host(y.flatten(0, 1)), batch, units, inputs, jacobians, extra_weights: Vec::new() })
}

impl ObservedNetwork for Cnn {
    fn observed_layers(&self) -> Vec<String> {
        self.feedback_layers().into_iter().map(|(n, _)| n).collect()
    }

    /// `images` are on the model's inner (non-autodiff) device. Each feedback layer runs once,
    /// through [`observe_conv`] / [`observe_linear`]; everything else (norms, pools, the
    /// residual additions) through the evaluation copy.
    fn observe(&self, images: Tensor<4>, _time_step: Option<usize>, masks: &mut dyn FnMut(&str, usize) -> Vec<OutputMask>) -> Vec<LayerObservation> {
        let inner = self.valid();
        let mut out = Vec::new();
        let mut map = Some(images);
        let mut flat: Option<Tensor<2>> = None;
        // A layer's observation goes to `out`, its output on through the network.
        fn kept<T>(out: &mut Vec<LayerObservation>, (z, observation): (T, LayerObservation)) -> T {
            out.push(observation);
            z
        }
        for (stage, eval) in self.stages.iter().zip(&inner.stages) {
            match (stage, eval) {
                (Stage::Conv(c), Stage::Conv(e)) => {
                    let x = map.take().expect("a map before the convolutions");
                    // The nonlinearity right after the op belongs to the observed output.
                    let activation = match c.post.first() {
                        Some(PostOp::Activation(a)) => *a,
                        _ => Activation::Identity,
                    };
                    let z = kept(&mut out, observe_conv(c.name.clone(), &c.conv, x, activation, masks));
                    map = Some(e.forward_post(z));
                }
                (Stage::Residual(r), Stage::Residual(e)) => {
                    let x = map.take().expect("a map before a residual block");
                    let relu = |t| Activation::Relu.apply(t);
                    let identity = Activation::Identity;
                    // The block's forward (evaluation mode), each convolution observed on its input.
                    let y = if e.preactivation {
                        let pre = relu(e.norm1.forward(x.clone()));
                        let skip = match &r.shortcut {
                            Some(proj) => kept(&mut out, observe_conv(format!("{}.shortcut", r.name), proj, pre.clone(), identity, masks)),
                            None => x.clone(),
                        };
                        let z1 = kept(&mut out, observe_conv(format!("{}.conv1", r.name), &r.conv1, pre, identity, masks));
                        let h = relu(e.norm2.forward(z1));
                        kept(&mut out, observe_conv(format!("{}.conv2", r.name), &r.conv2, h, identity, masks)) + skip
                    } else {
                        let z1 = kept(&mut out, observe_conv(format!("{}.conv1", r.name), &r.conv1, x.clone(), identity, masks));
                        let h = relu(e.norm1.forward(z1));
                        let h = e.norm2.forward(kept(&mut out, observe_conv(format!("{}.conv2", r.name), &r.conv2, h, identity, masks)));
                        let skip = match (&r.shortcut, &e.shortcut_norm) {
                            (Some(proj), Some(norm)) => norm.forward(kept(&mut out, observe_conv(format!("{}.shortcut", r.name), proj, x, identity, masks))),
                            _ => x,
                        };
                        relu(h + skip)
                    };
                    map = Some(y);
                }
                (Stage::Dense(d), Stage::Dense(_)) => {
                    let x = flat.take().unwrap_or_else(|| map.take().expect("a map before the first dense layer").flatten(1, 3));
                    let z = kept(&mut out, observe_linear(d.name.clone(), &d.linear, x, d.activation, masks));
                    // Dropout is off in evaluation: the next stage reads φ(z).
                    flat = Some(d.activation.apply(z));
                }
                (Stage::Pool(p), _) => map = map.map(|x| pool(x, p.op)),
                (Stage::NormAct(_), Stage::NormAct(e)) => map = map.map(|x| e.activation.apply(e.norm.forward(x))),
                _ => unreachable!("a module and its evaluation copy have the same stages"),
            }
        }
        // The residual blocks' convolutions were observed in the order their forward reaches
        // them (v2: shortcut first); report layers in the order `feedback_layers` lists them.
        let order = self.observed_layers();
        out.sort_by_key(|o| order.iter().position(|n| *n == o.name).unwrap_or(usize::MAX));
        out
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::conv_transpose2d;
    use burn::tensor::ops::ConvTransposeOptions;
    use burn::tensor::{Device, Distribution, Tensor};
    use plastic_rules::{FeedbackNetwork, RuleConfig, RuleKind};

    use super::*;
    use crate::{CnnConfig, CnnKind};

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * scale, "{what}[{i}]: {g} vs {w}");
        }
    }

    /// A convnet with BatchNorm observes its convolutions raw (BN comes first) and its dense
    /// layers after their nonlinearity. With an identity output the Jacobian sum of a
    /// convolution is the transposed convolution of ones with the kernel its backward uses:
    /// W under backprop, B under feedback alignment (the first layer included).
    #[test]
    fn a_convolution_s_activity_change_is_the_transposed_convolution_of_ones_through_its_feedback() {
        let device = Device::flex().autodiff();
        let inner = device.clone().without_autodiff();
        for kind in [RuleKind::Backprop, RuleKind::FeedbackAlignment] {
            let rules = RuleConfig { kind, ..Default::default() };
            let config = CnnConfig { kind: CnnKind::Convnet, channels: vec![3, 4], hidden: vec![6], batch_norm: true, ..Default::default() };
            let model = config.init([2, 8, 8], 5, &rules, (1, 2), &device).unwrap();
            let images = Tensor::<4>::random([3, 2, 8, 8], Distribution::Normal(0.0, 1.0), &inner);
            let observed = model.observe(images.clone(), None, &mut |_, _| vec![None]);
            let names: Vec<String> = observed.iter().map(|o| o.name.clone()).collect();
            assert_eq!(names, model.feedback_layers().into_iter().map(|(n, _)| n).collect::<Vec<_>>());
            let Stage::Conv(unit) = &model.stages[0] else { panic!("a convnet starts with a convolution") };
            let o = &observed[0];
            assert_eq!((o.batch, o.units, o.inputs), (3, 3 * 8 * 8, 2 * 8 * 8));
            // The output is the raw convolution of the images (evaluation mode).
            let eval = unit.conv.valid();
            close(&o.activation, &host(eval.forward(images.clone()).flatten(0, 3)), "conv1 output");
            // J = conv_transpose(ones, K) with K the kernel of the backward.
            let kernel = match kind {
                RuleKind::Backprop => unit.conv.weight.val().inner(),
                _ => unit.conv.feedback.as_ref().unwrap().val().inner(),
            };
            let ones = Tensor::<4>::ones([3, 3, 8, 8], &inner);
            let want = conv_transpose2d(ones, kernel, None, ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1));
            close(&o.jacobians[0], &host(want.flatten(0, 3)), &format!("{kind:?} conv1 J"));
            assert_eq!(o.weight.len(), 3 * 2 * 9);
            // The readout's output is its logits.
            let logits = host(model.valid().forward(images.clone()).flatten(0, 1));
            close(&observed.last().unwrap().activation, &logits, "readout logits");
        }
    }

    #[test]
    fn every_resnet_convolution_is_observed_in_layer_order() {
        let device = Device::flex().autodiff();
        let inner = device.clone().without_autodiff();
        for kind in [CnnKind::Resnet18, CnnKind::Resnet18v2] {
            let config = CnnConfig { kind, width: 0.125, ..Default::default() };
            let model = config.init([3, 16, 16], 4, &RuleConfig { kind: RuleKind::KolenPollack, ..Default::default() }, (1, 2), &device).unwrap();
            let observed = model.observe(Tensor::ones([2, 3, 16, 16], &inner), None, &mut |_, _| vec![None]);
            assert_eq!(observed.iter().map(|o| o.name.clone()).collect::<Vec<_>>(), model.observed_layers(), "{kind:?}");
            assert!(observed.iter().all(|o| o.jacobians[0].iter().all(|v| v.is_finite()) && o.activation.len() == o.batch * o.units), "{kind:?}");
        }
    }
}
