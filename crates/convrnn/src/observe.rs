//! A ConvRNN as an observer sees it ([`ObservedNetwork`]): one observed layer per node of the
//! graph, plus the readout.
//!
//! At the observed step t (default the last), a node's *weights* are its feed-forward
//! convolution's kernel (its cell kernels, feedback map and residual projection come along as
//! extra, weights-only entries), its *output* is what it hands on at t (after the cell and any
//! pooling), and its *activity change* is the Jacobian of that output with respect to its
//! feed-forward input at t (the lower layer's output, with skips), the cell state and the
//! long-range feedback it read at t held fixed: the node's own instantaneous input–output map,
//! through every convolution's rule (B for feedback-alignment-like rules). The readout reads
//! the last node's pooled output of step t.

use burn::module::Module;
use burn::tensor::Tensor;
use plastic_rules::probe::{LayerObservation, ObservedNetwork, OutputMask, host, jacobian_sums, weight_host};
use plastic_rules::FeedbackLayer;

use crate::{CellState, ConvRnn, ConvRnnLayer};

impl ConvRnnLayer {
    /// Every feedback layer of the node but its feed-forward convolution, by name.
    fn extra_layers(&self) -> Vec<(String, &dyn FeedbackLayer)> {
        let name = &self.wiring.name;
        let mut out: Vec<(String, &dyn FeedbackLayer)> = Vec::new();
        if let Some(f) = &self.feedback {
            out.push((format!("{name}.feedback"), f));
        }
        if let Some(r) = &self.residual {
            out.push((format!("{name}.residual"), r));
        }
        self.cell.layers(name, &mut out);
        out
    }
}

impl ObservedNetwork for ConvRnn {
    fn observed_layers(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.wiring.name.clone()).chain(std::iter::once("readout".to_string())).collect()
    }

    /// `images` are on the model's inner (non-autodiff) device.
    fn observe(&self, images: Tensor<4>, time_step: Option<usize>, masks: &mut dyn FnMut(&str, usize) -> Vec<OutputMask>) -> Vec<LayerObservation> {
        let inner = self.valid();
        let t = time_step.unwrap_or(self.plan.times - 1).min(self.plan.times - 1);
        let mut captures = Vec::with_capacity(self.layers.len());
        inner.unroll(images, false, Some((t, &mut captures)));
        let lift = |x: &Tensor<4>| Tensor::<4>::from_inner(x.clone());
        let mut out = Vec::with_capacity(self.layers.len() + 1);
        let mut last_output = None;
        for (layer, capture) in self.layers.iter().zip(captures) {
            let name = layer.wiring.name.clone();
            let [batch, c, h, w] = capture.output.dims();
            let units = c * h * w;
            let wanted = masks(&name, units);
            let state = CellState { h: lift(&capture.state.h), c: capture.state.c.as_ref().map(lift) };
            let feedback: Vec<Tensor<4>> = capture.feedback.iter().map(lift).collect();
            // Parameters held fixed: the backward computes the input gradient only.
            let frozen = layer.clone().no_grad();
            let jacobians = jacobian_sums(&capture.x_in, &wanted, &|x| frozen.step(x, &state, feedback.clone(), self.plan.resize).0.flatten(1, 3));
            let [_, ci, hi, wi] = capture.x_in.dims();
            out.push(LayerObservation {
                name,
                weight: weight_host(&layer.conv),
                activation: host(capture.output.clone().flatten(0, 3)),
                batch,
                units,
                inputs: ci * hi * wi,
                jacobians,
                extra_weights: layer.extra_layers().into_iter().map(|(n, l)| (n, weight_host(l))).collect(),
            });
            last_output = Some(capture.output);
        }
        let x = last_output.expect("at least one layer").mean_dim(3).mean_dim(2).flatten::<2>(1, 3);
        let logits = inner.readout.forward(x.clone());
        let [batch, units] = logits.dims();
        let wanted = masks("readout", units);
        let readout = self.readout.clone().no_grad();
        let jacobians = jacobian_sums(&x, &wanted, &|x| readout.forward(x));
        out.push(LayerObservation {
            name: "readout".into(),
            weight: weight_host(&self.readout),
            activation: host(logits.flatten(0, 1)),
            batch,
            units,
            inputs: x.dims()[1],
            jacobians,
            extra_weights: Vec::new(),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};
    use plastic_rules::init::normal_stream;
    use plastic_rules::probe::ObservedNetwork;
    use plastic_rules::RuleConfig;

    use crate::ConvRnnConfig;

    /// A node's activity change is the derivative of the sum of its outputs at the observed
    /// step with respect to its feed-forward input there, state and feedback held fixed:
    /// checked against central finite differences of the node's own step (backprop: the
    /// backward is the true Jacobian).
    #[test]
    fn a_node_s_activity_change_matches_finite_differences_of_its_step() {
        let device = Device::flex().autodiff();
        let inner = device.clone().without_autodiff();
        let config: ConvRnnConfig = toml::from_str(
            "times = 5\n[[layers]]\nname = \"a\"\nchannels = 3\n[[layers]]\nname = \"b\"\nchannels = 4\npool = 2\ncell = { kind = \"rgc\" }\n[[edges]]\nfrom = \"b\"\nto = \"a\"",
        )
        .unwrap();
        let model = config.init([2, 6, 6], 3, &RuleConfig::default(), (3, 4), &device).unwrap();
        assert_eq!(model.observed_layers(), ["a", "b", "readout"]);
        let images = Tensor::<4>::from_data(TensorData::new(normal_stream(2 * 2 * 36, 5, 0), [2, 2, 6, 6]), &inner);
        let observed = model.observe(images.clone(), Some(3), &mut |_, _| vec![None]);
        let eval = burn::module::Module::valid(&model);
        let mut captures = Vec::new();
        eval.unroll(images, false, Some((3, &mut captures)));
        for (i, (o, c)) in observed.iter().zip(&captures).enumerate() {
            let layer = &eval.layers[i];
            let total = |x: Tensor<4>| layer.step(x, &c.state, c.feedback.clone(), eval.plan.resize).0.sum().into_scalar::<f64>();
            let [n, ch, h, w] = c.x_in.dims();
            assert_eq!(o.jacobians[0].len(), n * ch * h * w);
            let flat: Vec<f32> = c.x_in.clone().into_data().try_into_vec_as::<f32>().unwrap();
            for k in [0, 7, flat.len() / 2, flat.len() - 1] {
                let eps = 1e-2f32;
                let shifted = |d: f32| {
                    let mut v = flat.clone();
                    v[k] += d;
                    Tensor::<4>::from_data(TensorData::new(v, [n, ch, h, w]), &inner)
                };
                let fd = (total(shifted(eps)) - total(shifted(-eps))) / (2.0 * eps as f64);
                let got = o.jacobians[0][k] as f64;
                assert!((got - fd).abs() <= 2e-2 * fd.abs().max(1.0), "node {} input {k}: {got} vs finite difference {fd}", o.name);
            }
            assert_eq!(o.weight.len(), layer.conv.weight.dims().iter().product::<usize>());
        }
        // Node b has its cell kernels and feedback map as extra, weights-only entries.
        assert!(observed[1].extra_weights.iter().any(|(n, _)| n.starts_with("b.cell.")));
        assert!(observed[0].extra_weights.iter().any(|(n, _)| n == "a.feedback"));
    }
}
