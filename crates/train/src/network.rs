//! The model of a run: a zoo CNN or a ConvRNN, behind one interface for the loop.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor};
use plastic_cnn::{Cnn, LayerSummary};
use plastic_convrnn::ConvRnn;
use plastic_rules::{FeedbackLayer, FeedbackNetwork};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};

/// A network of any kind the config can describe.
#[derive(Module, Debug)]
pub enum Network {
    Cnn(Cnn),
    ConvRnn(ConvRnn),
}

/// What a forward pass gives the loop.
#[derive(Debug, Clone)]
pub struct NetworkOutput {
    /// Logits entering the loss (one tensor for a CNN; one per loss step for a ConvRNN).
    pub loss_logits: Vec<Tensor<2>>,
    /// The readout's logits, `[batch, classes]`.
    pub logits: Tensor<2>,
}

impl Network {
    /// Builds the model of `config` for inputs `[c, h, w]` and `classes` outputs. W is drawn
    /// from the run seed, B from the rule seed (default: run seed + 1).
    pub fn build(config: &RunConfig, input: [usize; 3], classes: usize, device: &Device) -> Result<Self> {
        let seeds = (config.seed, config.rule.seed.unwrap_or(config.seed.wrapping_add(1)));
        match (config.model.cnn(), &config.model.convrnn) {
            (Some(cnn), _) => cnn.init(input, classes, &config.rule, seeds, device).map(Network::Cnn),
            (None, Some(rnn)) => rnn.init(input, classes, &config.rule, seeds, device).map(Network::ConvRnn),
            (None, None) => Err("model.kind = \"convrnn\" needs a [model.convrnn] table".into()),
        }
        .map_err(TrainError::Model)
    }

    pub fn forward(&self, images: Tensor<4>) -> NetworkOutput {
        match self {
            Network::Cnn(m) => {
                let logits = m.forward(images);
                NetworkOutput { loss_logits: vec![logits.clone()], logits }
            }
            Network::ConvRnn(m) => {
                let unrolled = m.forward(images, false);
                NetworkOutput { loss_logits: m.loss_logits(&unrolled), logits: m.readout_logits(&unrolled) }
            }
        }
    }

    /// Mean cross-entropy over the loss logits.
    pub fn loss(output: &NetworkOutput, targets: Tensor<1, Int>) -> Tensor<1> {
        let ce = CrossEntropyLossConfig::new().init(&targets.device());
        let n = output.loss_logits.len() as f64;
        let mut total: Option<Tensor<1>> = None;
        for l in &output.loss_logits {
            let loss = ce.forward(l.clone(), targets.clone());
            total = Some(match total {
                Some(t) => t + loss,
                None => loss,
            });
        }
        total.expect("at least one loss step") / n
    }

    /// Feedback layers with output shapes and parameter counts.
    pub fn summary(&self) -> Vec<LayerSummary> {
        match self {
            Network::Cnn(m) => m.summary.clone(),
            Network::ConvRnn(m) => m.summary(),
        }
    }

    /// Output units of all feedback layers.
    pub fn units(&self) -> usize {
        match self {
            Network::Cnn(m) => m.units(),
            Network::ConvRnn(m) => m.units(),
        }
    }
}

impl FeedbackNetwork for Network {
    fn feedback_layers(&self) -> Vec<(String, &dyn FeedbackLayer)> {
        match self {
            Network::Cnn(m) => m.feedback_layers(),
            Network::ConvRnn(m) => m.feedback_layers(),
        }
    }

    fn feedback_layers_mut(&mut self) -> Vec<(String, &mut dyn FeedbackLayer)> {
        match self {
            Network::Cnn(m) => m.feedback_layers_mut(),
            Network::ConvRnn(m) => m.feedback_layers_mut(),
        }
    }
}

/// Parameter counts of a model: `(forward, feedback)`. Forward parameters are what a
/// PyTorch user would count (W, biases, norm scales and shifts); feedback parameters are the
/// stored B and sign-symmetry magnitudes. BatchNorm running statistics are in neither.
pub fn parameter_counts<M: Module>(model: &M) -> (usize, usize) {
    use burn::module::{ModuleVisitor, Param};
    struct Count {
        path: Vec<String>,
        forward: usize,
        feedback: usize,
    }
    impl ModuleVisitor for Count {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.shape().num_elements();
            match self.path.last().map(String::as_str) {
                Some("feedback" | "magnitude") => self.feedback += n,
                Some("running_mean" | "running_var") => {}
                _ => self.forward += n,
            }
        }
    }
    let mut c = Count { path: Vec::new(), forward: 0, feedback: 0 };
    model.visit(&mut c);
    (c.forward, c.feedback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelKind, RunConfig};

    /// Every config in `configs/` parses; every model builds and maps a batch to class logits
    /// (ConvRNNs at 1/16 width and 64 px, every step).
    #[test]
    fn every_preset_builds_and_has_the_right_shapes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let config = RunConfig::load(&path, &["model.convrnn.width=0.0625".into()]).or_else(|_| RunConfig::load(&path, &[]));
            let config = config.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let device = Device::flex();
            let input = match (config.model.kind, config.data.kind) {
                (ModelKind::Convrnn, plastic_data::DataKind::ImageFolder) => [3, 64, 64],
                _ => plastic_data::open(&config.data).unwrap().shape(),
            };
            let model = Network::build(&config, input, 7, &device).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let out = model.forward(Tensor::zeros([2, input[0], input[1], input[2]], &device));
            assert_eq!(out.logits.dims(), [2, 7], "{}", path.display());
            if let (Network::ConvRnn(m), Some(c)) = (&model, &config.model.convrnn) {
                assert_eq!(out.loss_logits.len(), c.times - c.layers.len(), "{}", path.display());
                assert_eq!(m.forward(Tensor::zeros([1, input[0], input[1], input[2]], &device), false).logits.len(), c.times);
            }
            seen += 1;
        }
        assert!(seen >= 17, "only {seen} configs");
    }
}
