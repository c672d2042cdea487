//! The model of a run: a zoo CNN or a ConvRNN, behind one interface for the loop.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor};
use plastic_cnn::{Cnn, DirectInput, DirectMode, LayerSummary};
use plastic_convrnn::ConvRnn;
use plastic_rules::{FeedbackLayer, FeedbackNetwork, ObservedNetwork, SeedPurpose, derive_seed};

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
    /// Direct feedback alignment: the inputs of the stages that receive the output error.
    pub direct: Vec<DirectInput>,
}

impl Network {
    /// Builds the model of `config` for inputs `[c, h, w]` and `classes` outputs. W is drawn
    /// from the run seed's weight seed, B from the feedback seed of `rule.seed` (default: the
    /// run seed); see [`model_seeds`].
    pub fn build(config: &RunConfig, input: [usize; 3], classes: usize, device: &Device) -> Result<Self> {
        let seeds = model_seeds(config);
        let model = match (config.model.cnn(), &config.model.convrnn) {
            (Some(cnn), _) => cnn.init(input, classes, &config.rule, seeds, device).map(Network::Cnn),
            (None, Some(rnn)) => rnn.init(input, classes, &config.rule, seeds, device).map(Network::ConvRnn),
            (None, None) => Err("model.kind = \"convrnn\" needs a [model.convrnn] table".into()),
        }
        .map_err(TrainError::Model)?;
        if let Network::ConvRnn(m) = &model
            && let Some((name, _)) = m.feedback_layers().into_iter().find(|(_, l)| l.rule() == plastic_rules::LayerRule::DirectFeedbackAlignment)
        {
            return Err(TrainError::Config(format!(
                "rule: direct_feedback_alignment is not available for ConvRNNs (layer {name}): it has no per-step error path through time; use it with a CNN, or pick another rule"
            )));
        }
        Ok(model)
    }

    /// The forward pass of evaluation and of rules without direct feedback.
    pub fn forward(&self, images: Tensor<4>) -> NetworkOutput {
        self.forward_direct(images, None)
    }

    /// The training forward pass: direct-feedback stages' inputs are detached and handed out
    /// (`DirectMode::Train`) or probed (`DirectMode::Probe`, for `true_grad_angle`).
    pub fn forward_direct(&self, images: Tensor<4>, mode: Option<DirectMode>) -> NetworkOutput {
        match self {
            Network::Cnn(m) => {
                let (logits, direct) = m.forward_direct(images, mode.filter(|_| m.has_direct_feedback()));
                NetworkOutput { loss_logits: vec![logits.clone()], logits, direct }
            }
            Network::ConvRnn(m) => {
                let unrolled = m.forward(images, false);
                NetworkOutput { loss_logits: m.loss_logits(&unrolled), logits: m.readout_logits(&unrolled), direct: Vec::new() }
            }
        }
    }

    /// The layers whose outputs [`Network::step_outputs`] returns, in forward order: a
    /// ConvRNN's nodes, a CNN's stages ([`Cnn::stage_outputs`]).
    pub fn feature_layers(&self) -> Vec<String> {
        match self {
            Network::Cnn(m) => m.feature_layers(),
            Network::ConvRnn(m) => m.layers.iter().map(|l| l.wiring.name.clone()).collect(),
        }
    }

    /// Time steps of a forward pass: a ConvRNN's T, 1 for a CNN.
    pub fn times(&self) -> usize {
        match self {
            Network::Cnn(_) => 1,
            Network::ConvRnn(m) => m.plan.times,
        }
    }

    /// A ConvRNN unrolled for `times` steps with the image shown for the first `image_off`
    /// (each `None` keeps the run's); a CNN is returned as it is.
    pub fn with_timing(mut self, times: Option<usize>, image_off: Option<usize>) -> Result<Self> {
        if let Network::ConvRnn(m) = &mut self {
            if let Some(t) = times {
                if t == 0 {
                    return Err(TrainError::Config("the number of time steps must be at least 1".into()));
                }
                // A run that showed the image throughout keeps doing so over a longer unroll.
                if m.plan.image_off >= m.plan.times && image_off.is_none() {
                    m.plan.image_off = t;
                }
                m.plan.times = t;
                m.plan.loss_start = m.plan.loss_start.min(t - 1);
            }
            if let Some(off) = image_off {
                m.plan.image_off = off;
            }
            m.plan.image_off = m.plan.image_off.min(m.plan.times);
        }
        Ok(self)
    }

    /// Every feature layer's output at every time step (`[step][layer]`, `[batch, c, h, w]`;
    /// one step for a CNN) and the readout's logits read from the last layer at each step.
    /// Call it on an evaluation-mode model ([`Module::valid`]) with images on its device.
    pub fn step_outputs(&self, images: Tensor<4>) -> (Vec<Vec<Tensor<4>>>, Vec<Tensor<2>>) {
        match self {
            Network::Cnn(m) => {
                let outputs: Vec<Tensor<4>> = m.stage_outputs(images).into_iter().map(|(_, t)| t).collect();
                let last = outputs.last().expect("a network has stages").clone();
                let [b, u, ..] = last.dims();
                (vec![outputs], vec![last.reshape([b, u])])
            }
            Network::ConvRnn(m) => {
                let unrolled = m.forward(images, true);
                let steps = unrolled.layer_outputs.expect("recorded");
                let logits = steps.iter().map(|layers| m.read_out(layers.last().expect("at least one layer").clone())).collect();
                (steps, logits)
            }
        }
    }

    /// Direct feedback alignment's error projections for a forward pass: the output error
    /// e = ∂L/∂logits = (softmax(z) − onehot(t)) / batch (mean cross-entropy), in closed form
    /// without a graph, and for each direct-feedback stage c = e·Bᵀ, shaped like its input.
    pub fn direct_errors(output: &NetworkOutput, targets: &Tensor<1, Int>) -> Vec<Tensor<2>> {
        if output.direct.is_empty() {
            return Vec::new();
        }
        let logits = output.logits.clone().inner();
        let [n, classes] = logits.dims();
        let onehot = targets.clone().inner().one_hot::<2>(classes).float();
        let e = (burn::tensor::activation::softmax(logits, 1) - onehot) / n as f64;
        output.direct.iter().map(|d| e.clone().matmul(d.feedback.clone().transpose())).collect()
    }

    /// The term whose gradient sends each error projection c into its stage's input:
    /// Σ ⟨input, c⟩ (c constant). Added to the loss before `backward()`; its value is not a
    /// loss and is never logged.
    pub fn direct_feedback_term(output: &NetworkOutput, errors: &[Tensor<2>]) -> Option<Tensor<1>> {
        output.direct.iter().zip(errors).map(|(d, c)| (d.input.clone() * Tensor::from_inner(c.clone()).cast(d.input.dtype())).sum().cast(burn::tensor::DType::F32)).reduce(|a, b| a + b)
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

impl ObservedNetwork for Network {
    fn observed_layers(&self) -> Vec<String> {
        match self {
            Network::Cnn(m) => m.observed_layers(),
            Network::ConvRnn(m) => m.observed_layers(),
        }
    }

    fn observe(&self, images: Tensor<4>, time_step: Option<usize>, masks: &mut dyn FnMut(&str, usize) -> Vec<plastic_rules::OutputMask>) -> Vec<plastic_rules::LayerObservation> {
        match self {
            Network::Cnn(m) => m.observe(images, time_step, masks),
            Network::ConvRnn(m) => m.observe(images, time_step, masks),
        }
    }
}

/// `(weight seed, feedback seed)` of a run's model, hashed per purpose from the run seed
/// ([`SeedPurpose`]); `rule.seed`, when given, replaces the run seed for the feedback pathway
/// (B, sign-symmetry magnitudes, mirror noise) only.
pub fn model_seeds(config: &RunConfig) -> (u64, u64) {
    (derive_seed(config.seed, SeedPurpose::Weights), derive_seed(config.rule.seed.unwrap_or(config.seed), SeedPurpose::Feedback))
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

    /// Direct feedback alignment by hand on an MLP 16 → 6 → 5 → 10: the readout learns by
    /// backprop (δW₃ = h₂ᵀe), and each hidden layer's error is its own projection of the output
    /// error, δh_k = e·B_kᵀ, masked by its ReLU; nothing of backprop's path reaches it.
    #[test]
    fn direct_feedback_sends_the_projected_output_error_into_each_hidden_layer() {
        use burn::tensor::{Distribution, TensorData};
        use plastic_cnn::{CnnConfig, CnnKind, Stage};
        use plastic_rules::{RuleConfig, RuleKind};
        let device = Device::flex().autodiff();
        let rules = RuleConfig { kind: RuleKind::DirectFeedbackAlignment, ..Default::default() };
        let cnn = CnnConfig { kind: CnnKind::Mlp, hidden: vec![6, 5], ..Default::default() }.init([1, 4, 4], 10, &rules, (3, 4), &device).unwrap();
        let net = Network::Cnn(cnn);
        let images = Tensor::<4>::random([7, 1, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let labels = [0i64, 3, 9, 3, 1, 5, 7];
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [7]), &device);
        let out = net.forward_direct(images, Some(DirectMode::Train));
        assert_eq!(out.direct.iter().map(|d| d.feedback.dims()).collect::<Vec<_>>(), [[6, 10], [5, 10]]);
        let errors = Network::direct_errors(&out, &targets);
        let loss = Network::loss(&out, targets);
        let grads = (loss + Network::direct_feedback_term(&out, &errors).unwrap()).backward();

        let rows = |t: Tensor<2>| -> Vec<Vec<f64>> {
            let [_, cols] = t.dims();
            t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap().chunks(cols).map(<[f64]>::to_vec).collect()
        };
        // e = (softmax(z) − onehot(t)) / batch, by hand.
        let e: Vec<Vec<f64>> = rows(out.logits.clone())
            .iter()
            .zip(labels)
            .map(|(z, t)| {
                let max = z.iter().cloned().fold(f64::MIN, f64::max);
                let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
                z.iter().enumerate().map(|(k, v)| ((v - max).exp() / sum - if k as i64 == t { 1.0 } else { 0.0 }) / 7.0).collect()
            })
            .collect();
        let Network::Cnn(cnn) = &net else { unreachable!() };
        let dense: Vec<_> = cnn.stages.iter().map(|s| if let Stage::Dense(d) = s { d } else { panic!("an MLP is dense") }).collect();
        let close = |what: &str, got: Vec<f64>, want: Vec<f64>| {
            let scale = want.iter().map(|v| v.abs()).fold(1e-12, f64::max);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-4 * scale, "{what}: got {got:?}, want {want:?}");
            }
        };
        // Hidden layer k−1's bias gradient: Σ_batch (e·B_kᵀ) ⊙ [h_{k−1} > 0], h_{k−1} = stage k's input.
        for (k, direct) in out.direct.iter().enumerate() {
            let (h, b) = (rows(direct.input.clone()), rows(direct.feedback.clone()));
            let mut want = vec![0.0; b.len()];
            for (n, row) in e.iter().enumerate() {
                for (j, w) in want.iter_mut().enumerate() {
                    let c: f64 = row.iter().zip(&b[j]).map(|(e, b)| e * b).sum();
                    *w += if h[n][j] > 0.0 { c } else { 0.0 };
                }
            }
            let got = dense[k].linear.bias.as_ref().unwrap().grad(&grads).unwrap().into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
            close(&format!("fc{} bias", k + 1), got, want);
        }
        // The readout learns by backprop: δW₃ = h₂ᵀ e.
        let h2 = rows(out.direct[1].input.clone());
        let want: Vec<f64> = (0..5).flat_map(|i| (0..10).map(move |j| (i, j))).map(|(i, j)| (0..7).map(|n| h2[n][i] * e[n][j]).sum()).collect();
        let got = dense[2].linear.weight.grad(&grads).unwrap().into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
        close("fc3 weight", got, want);
    }

    /// Every config in `configs/` parses; every model builds and maps a batch to class logits
    /// (ConvRNNs at 1/16 width and 64 px, every step).
    #[test]
    fn every_preset_builds_and_has_the_right_shapes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // Search files live in configs/searches/ (tested in crates/search and tests/search.rs).
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
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

    /// The f32 gradients of one training step's objective (the loss, plus direct feedback's
    /// term) for `config`'s model, its inputs in `precision`'s dtype: the loss and every
    /// gradient, concatenated in parameter order. Every gradient must arrive in f32.
    fn step_gradients(config: &RunConfig, input: [usize; 3], precision: plastic_rules::Precision) -> (f64, Vec<f32>) {
        use burn::module::{ModuleVisitor, Param};
        use burn::optim::GradientsParams;
        use burn::tensor::{DType, TensorData};
        struct Collect<'a>(&'a GradientsParams, f32, Vec<f32>);
        impl ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(g) = self.0.get::<D>(param.id) {
                    assert_eq!(g.dtype(), DType::F32, "a parameter's gradient arrives in f32");
                    self.2.extend(g.into_data().try_to_vec::<f32>().unwrap().into_iter().map(|v| v / self.1));
                }
            }
        }
        let device = Device::flex().autodiff();
        let model = Network::build(config, input, 4, &device).unwrap();
        let n = 4 * input.iter().product::<usize>();
        let images = Tensor::<4>::from_data(TensorData::new(plastic_rules::init::normal_stream(n, 11, 0), [4, input[0], input[1], input[2]]), &device);
        let images = images.cast(precision.dtype());
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &device);
        let out = model.forward_direct(images, Some(DirectMode::Train));
        assert!(out.loss_logits.iter().all(|l| l.dtype() == DType::F32), "the loss is computed in f32");
        let errors = Network::direct_errors(&out, &targets);
        let loss = Network::loss(&out, targets);
        let value = loss.clone().into_scalar::<f64>();
        let objective = match Network::direct_feedback_term(&out, &errors) {
            Some(term) => loss + term,
            None => loss,
        };
        // f16 under a loss scale, as the trainer steps it.
        let scale = if precision.needs_loss_scale() { 1024.0 } else { 1.0 };
        let grads = GradientsParams::from_grads((objective * scale as f64).backward(), &model);
        let mut c = Collect(&grads, scale, Vec::new());
        model.visit(&mut c);
        (value, c.2)
    }

    /// Mixed precision through every kind of stage, cell and edge: BatchNorm, LRN, pooling,
    /// residual blocks, dropout-free dense layers, DFA's handed-out inputs, sign symmetry's
    /// derived B, Kolen–Pollack's learned B, time decay, RGC with GroupNorm, LSTM, GRU, a skip
    /// and a feedback edge that are resized. The bf16 and f16 (loss-scaled) steps give f32's loss
    /// and f32's gradients to within half precision's rounding, and no gradient goes missing.
    /// A dtype mixed up anywhere (burn-flex reads both operands as the first one's) would not.
    #[test]
    fn half_precision_steps_give_f32_losses_and_gradients() {
        use plastic_rules::Precision;
        let convrnn = r#"
            [model]
            kind = "convrnn"
            [model.convrnn]
            times = 5
            init = "torch_default"
            [[model.convrnn.layers]]
            name = "a"
            channels = 8
            kernel = 3
            cell = { kind = "time_decay" }
            [[model.convrnn.layers]]
            name = "b"
            channels = 8
            kernel = 3
            pool = 2
            cell = { kind = "rgc", norm = true }
            [[model.convrnn.layers]]
            name = "c"
            channels = 8
            kernel = 3
            cell = { kind = "lstm" }
            [[model.convrnn.layers]]
            name = "d"
            channels = 8
            kernel = 3
            cell = { kind = "gru" }
            [[model.convrnn.edges]]
            from = "a"
            to = "c"
            [[model.convrnn.edges]]
            from = "d"
            to = "b"
        "#;
        let cases: [(&str, &str, [usize; 3]); 6] = [
            ("", "model.kind=mlp model.hidden=[16] rule.kind=sign_symmetry rule.variant=frsf", [1, 8, 8]),
            ("", "model.kind=convnet model.batch_norm=true model.channels=[4,8] model.hidden=[16] rule.kind=direct_feedback_alignment", [1, 8, 8]),
            ("", "model.kind=knet4 model.lrn=true model.width=0.25 rule.kind=feedback_alignment", [3, 32, 32]),
            ("", "model.kind=resnet18 model.width=0.125 rule.kind=kolen_pollack", [3, 32, 32]),
            ("", "model.kind=alexnet model.lrn=true model.width=0.0625 model.dropout=0.0", [3, 32, 32]),
            (convrnn, "rule.kind=feedback_alignment", [3, 16, 16]),
        ];
        for (text, sets, input) in cases {
            let sets: Vec<String> = sets.split(' ').map(String::from).collect();
            let config = RunConfig::parse(text, &sets).unwrap();
            let (loss, want) = step_gradients(&config, input, Precision::F32);
            assert!(want.iter().any(|g| *g != 0.0));
            // (loss, gradient cosine, gradient norm) tolerances. bf16 keeps 8 mantissa bits, f16
            // 11. Measured at this batch of 4: cosines ≥ 0.9997 (bf16) and ≥ 0.99995 (f16) but for
            // ResNet-18 (0.942 and 0.988: BatchNorm over 4 × 4² positions subtracts means of
            // half-precision δ's) and the ConvRNN (bf16 0.9976; its largest gradients are bias sums
            // of δ's that nearly cancel: norm −4.6 %). A dtype mix-up reads bytes as another
            // type and gives no resemblance at all.
            for (precision, tolerance) in [(Precision::Bf16, (0.01, 0.9, 0.1)), (Precision::F16, (0.005, 0.98, 0.03))] {
                let (half_loss, got) = step_gradients(&config, input, precision);
                let what = format!("{sets:?} in {}", precision.name());
                assert_eq!(got.len(), want.len(), "{what}: every parameter gets a gradient");
                assert!((half_loss - loss).abs() <= tolerance.0 * loss.abs(), "{what}: loss {half_loss} against f32's {loss}");
                let dot: f64 = got.iter().zip(&want).map(|(a, b)| *a as f64 * *b as f64).sum();
                let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
                let cosine = dot / (norm(&got) * norm(&want));
                assert!(cosine > tolerance.1, "{what}: gradient cosine {cosine} with f32's");
                assert!((norm(&got) / norm(&want) - 1.0).abs() < tolerance.2, "{what}: gradient norm {} against f32's {}", norm(&got), norm(&want));
            }
        }
    }
}
