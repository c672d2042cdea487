//! The feed-forward model zoo of `plastic`, built from learning-rule layers.
//!
//! Every convolution and linear layer is a [`plastic_rules`] feedback layer, so any model of
//! the zoo trains with any rule; norms, pooling, residual additions and nonlinearities keep
//! ordinary backprop.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use plastic_cnn::{CnnConfig, CnnKind};
//! use plastic_rules::RuleConfig;
//!
//! let config = CnnConfig { kind: CnnKind::Knet4, ..Default::default() };
//! let model = config.init([3, 32, 32], 10, &RuleConfig::default(), (0, 1), &Device::flex()).unwrap();
//! let logits = model.forward(Tensor::zeros([2, 3, 32, 32], &Device::flex()));
//! assert_eq!(logits.dims(), [2, 10]);
//! ```

pub mod observe;
pub mod spec;
pub mod units;
pub mod zoo;

use burn::module::{Module, Param};
use burn::nn::BatchNormConfig;
use burn::tensor::{Device, Tensor, TensorData};
pub use plastic_rules::LayerSummary;
use plastic_rules::{FeedbackConv2dConfig, FeedbackLayer, FeedbackLinearConfig, FeedbackNetwork, LayerRule, LayerSeeder, RuleConfig, WeightInit};
use serde::{Deserialize, Serialize};

use spec::{PostOp, StageSpec, conv_output};
use units::{ConvUnit, DenseUnit, NormAct, PoolStage, ResidualBlock, pool};
pub use zoo::{CnnKind, Stem};

/// The `[model]` section for feed-forward models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CnnConfig {
    pub kind: CnnKind,
    /// Multiplies every layer's width (channels or units), except the class readout.
    pub width: f64,
    /// `convnet`: output channels of each 3×3 conv + 2×2 max-pool stage.
    pub channels: Vec<usize>,
    /// `mlp` and `convnet`: widths of the hidden dense layers.
    pub hidden: Vec<usize>,
    /// `convnet` and `shallownet`: BatchNorm after each convolution (ResNets always have it).
    pub batch_norm: bool,
    /// `alexnet` and `knet*`: local response normalisation.
    pub lrn: bool,
    /// Dropout probability after hidden dense layers (default 0.5 for `alexnet`, else 0).
    pub dropout: Option<f64>,
    /// ResNet stem.
    pub stem: Stem,
    /// Initial distribution of W (and B).
    pub init: WeightInit,
}

impl Default for CnnConfig {
    fn default() -> Self {
        Self {
            kind: CnnKind::Convnet,
            width: 1.0,
            channels: vec![32, 64],
            hidden: vec![128],
            batch_norm: false,
            lrn: false,
            dropout: None,
            stem: Stem::Auto,
            init: WeightInit::KaimingUniform,
        }
    }
}

/// A stage of a built network.
#[derive(Module, Debug)]
pub enum Stage {
    Conv(ConvUnit),
    Residual(ResidualBlock),
    Pool(PoolStage),
    NormAct(NormAct),
    Dense(DenseUnit),
}

/// A feed-forward network of the zoo.
#[derive(Module, Debug)]
pub struct Cnn {
    pub stages: Vec<Stage>,
    /// Direct feedback alignment's projections, one per stage whose input receives the error.
    pub direct_feedback: Vec<DirectFeedback>,
    #[module(skip)]
    pub summary: Vec<LayerSummary>,
}

/// Direct feedback alignment (Nøkland 2016) at one stage: the stage's layers follow DFA, so
/// its input receives the output error e `[batch, classes]` as e·Bᵀ instead of the error its
/// own layers would send down. B is fixed and random, drawn like the weights of a readout
/// straight from the stage's input (fan-in = the input's size), from the feedback seed.
///
/// The error enters at a stage's input, which is the previous stage's output: for a ResNet,
/// each block's output; inside a block it flows by backprop.
#[derive(Module, Debug)]
pub struct DirectFeedback {
    /// `[input size, classes]`, not trained.
    pub feedback: Param<Tensor<2>>,
    /// The stage whose input receives the error.
    pub stage: usize,
    /// The stage's first feedback layer (its metrics carry the stage's `true_grad_angle`).
    pub name: String,
}

/// How [`Cnn::forward_direct`] treats the inputs of direct-feedback stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectMode {
    /// Detach each such input (no error through the layers above) and hand it out, so the
    /// caller can send e·Bᵀ into it.
    Train,
    /// Add a zero leaf to each such input and hand the leaf out: its gradient after a backprop
    /// backward is backprop's δ there (for `true_grad_angle`).
    Probe,
}

/// One direct-feedback stage's input in a forward pass.
#[derive(Debug, Clone)]
pub struct DirectInput {
    pub name: String,
    /// The input, flattened to `[batch, size]`: tracked (`Train`) or the zero leaf (`Probe`).
    pub input: Tensor<2>,
    /// B, `[size, classes]`, without autodiff.
    pub feedback: Tensor<2>,
}

/// Stream offset of DFA's B draws within the feedback seed (layer streams are small integers).
const DIRECT_FEEDBACK_STREAM: u64 = 3 << 40;

#[derive(Debug, Clone, Copy)]
enum Shape {
    Map([usize; 3]),
    Flat(usize),
}

impl CnnConfig {
    fn dropout(&self) -> f64 {
        self.dropout.unwrap_or(if self.kind == CnnKind::Alexnet { 0.5 } else { 0.0 })
    }

    /// Range checks; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.width > 0.0 && self.width <= 64.0) {
            return Err(format!("model.width = {} must be in (0, 64]", self.width));
        }
        if let Some(p) = self.dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(format!("model.dropout = {p} must be in [0, 1)"));
        }
        if self.kind == CnnKind::Convnet && (self.channels.is_empty() || self.channels.contains(&0)) {
            return Err("model.channels must list at least one positive width".into());
        }
        if self.hidden.contains(&0) {
            return Err("model.hidden widths must be positive".into());
        }
        self.init.validate("model.init")
    }

    /// The stages for an input of shape `[c, h, w]` (square images are assumed for the zoo's
    /// resolution-dependent choices; `h` decides).
    pub fn stages(&self, input: [usize; 3], classes: usize) -> Vec<StageSpec> {
        let resolved = CnnConfig { dropout: Some(self.dropout()), ..self.clone() };
        zoo::stages(&resolved, input[1], classes)
    }

    /// Builds the network. `seeds = (weight seed, feedback seed)`. Fails with a message when
    /// the input is too small for the architecture.
    pub fn init(&self, input: [usize; 3], classes: usize, rules: &RuleConfig, seeds: (u64, u64), device: &Device) -> Result<Cnn, String> {
        self.validate()?;
        let specs = self.stages(input, classes);
        let names: Vec<String> = specs.iter().flat_map(StageSpec::layer_names).collect();
        let mut builder = Builder { layers: LayerSeeder::new(rules, self.init, seeds, names), summary: Vec::new() };
        let mut shape = Shape::Map(input);
        let mut stages = Vec::with_capacity(specs.len());
        let mut direct_feedback = Vec::new();
        let too_small = |what: &str| format!("model.kind = {:?}: input {}×{} is too small at {what}", self.kind, input[1], input[2]).to_lowercase();
        for spec in specs {
            let first_layer = spec.layer_names().into_iter().next();
            let stage_input = match shape {
                Shape::Map(s) => s.iter().product::<usize>(),
                Shape::Flat(n) => n,
            };
            match spec {
                StageSpec::Conv { name, channels, kernel, stride, padding, bias, post } => {
                    let Shape::Map([c, h, w]) = shape else { unreachable!("convolutions come before dense layers") };
                    let (mut h, mut w) = (conv_output(h, kernel, stride, padding).ok_or_else(|| too_small(&name))?, conv_output(w, kernel, stride, padding).ok_or_else(|| too_small(&name))?);
                    let conf = builder.conv(&name, [c, channels], kernel, stride, padding, bias, [channels, h, w]);
                    for op in &post {
                        if let PostOp::Pool(p) = op {
                            h = p.output(h).ok_or_else(|| too_small(&name))?;
                            w = p.output(w).ok_or_else(|| too_small(&name))?;
                        }
                    }
                    stages.push(Stage::Conv(ConvUnit::new(name, conf, post, device)));
                    shape = Shape::Map([channels, h, w]);
                }
                StageSpec::Residual { name, channels, stride, preactivation, projection } => {
                    let Shape::Map([c, h, w]) = shape else { unreachable!() };
                    let (h, w) = (conv_output(h, 3, stride, 1).ok_or_else(|| too_small(&name))?, conv_output(w, 3, stride, 1).ok_or_else(|| too_small(&name))?);
                    let out = [channels, h, w];
                    let conv1 = builder.conv(&format!("{name}.conv1"), [c, channels], 3, stride, 1, false, out).init(device);
                    let conv2 = builder.conv(&format!("{name}.conv2"), [channels, channels], 3, 1, 1, false, out).init(device);
                    let project = projection || stride != 1 || c != channels;
                    let shortcut = project.then(|| builder.conv(&format!("{name}.shortcut"), [c, channels], 1, stride, 0, false, out).init(device));
                    stages.push(Stage::Residual(ResidualBlock {
                        conv1,
                        norm1: BatchNormConfig::new(if preactivation { c } else { channels }).init(device),
                        conv2,
                        norm2: BatchNormConfig::new(channels).init(device),
                        shortcut,
                        shortcut_norm: (project && !preactivation).then(|| BatchNormConfig::new(channels).init(device)),
                        preactivation,
                        name,
                    }));
                    shape = Shape::Map(out);
                }
                StageSpec::Pool(op) => {
                    let Shape::Map([c, h, w]) = shape else { unreachable!() };
                    shape = Shape::Map([c, op.output(h).ok_or_else(|| too_small("a pooling stage"))?, op.output(w).ok_or_else(|| too_small("a pooling stage"))?]);
                    stages.push(Stage::Pool(PoolStage { op }));
                }
                StageSpec::NormAct(activation) => {
                    let Shape::Map([c, ..]) = shape else { unreachable!() };
                    stages.push(Stage::NormAct(NormAct { norm: BatchNormConfig::new(c).init(device), activation }));
                }
                StageSpec::Dense { name, features, activation, dropout } => {
                    let d_in = match shape {
                        Shape::Map(s) => s.iter().product(),
                        Shape::Flat(n) => n,
                    };
                    let conf = builder.linear(&name, d_in, features);
                    stages.push(Stage::Dense(DenseUnit::new(name, conf, activation, dropout, device)));
                    shape = Shape::Flat(features);
                }
            }
            // A stage on the image needs no projection: its input gradient goes nowhere.
            let index = stages.len() - 1;
            if let Some(name) = first_layer
                && index > 0
                && stage_rule(&stages[index]) == Some(LayerRule::DirectFeedbackAlignment)
            {
                let values = self.init.sample(stage_input * classes, stage_input, classes, seeds.1, DIRECT_FEEDBACK_STREAM + index as u64);
                let b = Tensor::<2>::from_data(TensorData::new(values, [stage_input, classes]), device);
                direct_feedback.push(DirectFeedback { feedback: Param::from_tensor(b).set_require_grad(false), stage: index, name });
            }
        }
        let model = Cnn { stages, direct_feedback, summary: builder.summary };
        Ok(model)
    }
}

/// Builds the layers in forward order, recording each one's summary.
struct Builder<'a> {
    layers: LayerSeeder<'a>,
    summary: Vec<LayerSummary>,
}

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn conv(&mut self, name: &str, channels: [usize; 2], kernel: usize, stride: usize, padding: usize, bias: bool, out: [usize; 3]) -> FeedbackConv2dConfig {
        self.summary.push(LayerSummary {
            name: name.into(),
            kind: format!("conv {kernel}×{kernel}/{stride}"),
            output: out.to_vec(),
            params: channels[0] * channels[1] * kernel * kernel + if bias { channels[1] } else { 0 },
        });
        self.layers.conv(name, channels, kernel).with_stride([stride, stride]).with_padding([padding, padding]).with_bias(bias)
    }

    fn linear(&mut self, name: &str, d_in: usize, d_out: usize) -> FeedbackLinearConfig {
        self.summary.push(LayerSummary { name: name.into(), kind: "linear".into(), output: vec![d_out], params: d_in * d_out + d_out });
        self.layers.linear(name, d_in, d_out)
    }
}

/// The rule of a stage's first feedback layer.
fn stage_rule(stage: &Stage) -> Option<LayerRule> {
    match stage {
        Stage::Conv(c) => Some(c.conv.rule()),
        Stage::Residual(r) => Some(r.conv1.rule()),
        Stage::Dense(d) => Some(d.linear.rule()),
        Stage::Pool(_) | Stage::NormAct(_) => None,
    }
}

impl Stage {
    /// Runs the stage on the network's state: a feature map, or after the first dense layer
    /// a flat vector (a map is flattened on entering a dense layer).
    fn forward(&self, map: &mut Option<Tensor<4>>, flat: &mut Option<Tensor<2>>) {
        match self {
            Stage::Dense(d) => {
                let input = flat.take().unwrap_or_else(|| map.take().expect("a map before the first dense layer").flatten(1, 3));
                *flat = Some(d.forward(input));
            }
            Stage::Conv(c) => *map = map.take().map(|x| c.forward(x)),
            Stage::Residual(r) => *map = map.take().map(|x| r.forward(x)),
            Stage::Pool(p) => *map = map.take().map(|x| pool(x, p.op)),
            Stage::NormAct(n) => *map = map.take().map(|x| n.activation.apply(units::batch_norm(&n.norm, x))),
        }
    }
}

impl Cnn {
    /// `[batch, c, h, w] → [batch, classes]` logits.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_direct(x, None).0
    }

    /// Whether any stage follows direct feedback alignment.
    pub fn has_direct_feedback(&self) -> bool {
        !self.direct_feedback.is_empty()
    }

    /// The forward pass; with a [`DirectMode`], direct-feedback stages' inputs are treated as
    /// it says and handed out in forward order.
    pub fn forward_direct(&self, x: Tensor<4>, mode: Option<DirectMode>) -> (Tensor<2>, Vec<DirectInput>) {
        let mut map = Some(x);
        let mut flat: Option<Tensor<2>> = None;
        let mut direct = Vec::new();
        let mut next = self.direct_feedback.iter().peekable();
        for (index, stage) in self.stages.iter().enumerate() {
            if let Some(mode) = mode
                && let Some(dfa) = next.next_if(|d| d.stage == index)
            {
                let feedback = dfa.feedback.val().inner();
                let handed = match (mode, map.take(), flat.take()) {
                    (DirectMode::Train, Some(m), _) => {
                        map = Some(m.clone().detach());
                        m.flatten(1, 3)
                    }
                    (DirectMode::Train, None, Some(f)) => {
                        flat = Some(f.clone().detach());
                        f
                    }
                    (DirectMode::Probe, Some(m), _) => {
                        let dims = m.dims();
                        let leaf = Tensor::<2>::zeros([dims[0], dims[1] * dims[2] * dims[3]], (&m.device(), m.dtype())).require_grad();
                        map = Some(m + leaf.clone().reshape(dims));
                        leaf
                    }
                    (DirectMode::Probe, None, Some(f)) => {
                        let leaf = f.zeros_like().detach().require_grad();
                        flat = Some(f + leaf.clone());
                        leaf
                    }
                    (_, None, None) => unreachable!("every stage has an input"),
                };
                direct.push(DirectInput { name: dfa.name.clone(), input: handed, feedback });
            }
            stage.forward(&mut map, &mut flat);
        }
        // The logits in f32 whatever the activations' precision: the loss is f32's.
        (flat.expect("the zoo ends every network with a dense readout").cast(burn::tensor::DType::F32), direct)
    }

    /// The names of [`Cnn::stage_outputs`], in forward order, without running anything.
    pub fn feature_layers(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::with_capacity(self.stages.len());
        for (index, stage) in self.stages.iter().enumerate() {
            let previous = names.last().map_or_else(|| format!("stage{index}"), |n: &String| n.split('.').next().unwrap_or(n).to_string());
            names.push(match stage {
                Stage::Conv(c) => c.name.clone(),
                Stage::Residual(r) => r.name.clone(),
                Stage::Dense(d) => d.name.clone(),
                Stage::Pool(_) => format!("{previous}.pool"),
                Stage::NormAct(_) => format!("{previous}.norm"),
            });
        }
        names
    }

    /// Every stage's output on `x`, in forward order, as `[batch, c, h, w]` (a dense layer's
    /// `[batch, units]` as `[batch, units, 1, 1]`): a convolution with its nonlinearity,
    /// normalisation and pooling, a residual block's output, a dense layer's activation. The
    /// features that neural comparisons read; run it on an evaluation-mode model.
    pub fn stage_outputs(&self, x: Tensor<4>) -> Vec<(String, Tensor<4>)> {
        let names = self.feature_layers();
        let mut out = Vec::with_capacity(self.stages.len());
        let mut map = Some(x);
        let mut flat: Option<Tensor<2>> = None;
        for (stage, name) in self.stages.iter().zip(names) {
            stage.forward(&mut map, &mut flat);
            let y = match (&map, &flat) {
                (Some(m), _) => m.clone(),
                (None, Some(f)) => {
                    let [b, u] = f.dims();
                    f.clone().reshape([b, u, 1, 1])
                }
                (None, None) => unreachable!("every stage has an output"),
            };
            out.push((name, y));
        }
        out
    }

    /// Output units of all feedback layers (the "neurons" of the network).
    pub fn units(&self) -> usize {
        self.summary.iter().map(|l| l.output.iter().product::<usize>()).sum()
    }
}

impl FeedbackNetwork for Cnn {
    fn feedback_layers(&self) -> Vec<(String, &dyn FeedbackLayer)> {
        let mut v = Vec::new();
        for stage in &self.stages {
            match stage {
                Stage::Conv(c) => v.push((c.name.clone(), &c.conv as &dyn FeedbackLayer)),
                Stage::Residual(r) => v.extend(r.layers()),
                Stage::Dense(d) => v.push((d.name.clone(), &d.linear as &dyn FeedbackLayer)),
                Stage::Pool(_) | Stage::NormAct(_) => {}
            }
        }
        v
    }

    fn feedback_layers_mut(&mut self) -> Vec<(String, &mut dyn FeedbackLayer)> {
        let mut v = Vec::new();
        for stage in &mut self.stages {
            match stage {
                Stage::Conv(c) => v.push((c.name.clone(), &mut c.conv as &mut dyn FeedbackLayer)),
                Stage::Residual(r) => v.extend(r.layers_mut()),
                Stage::Dense(d) => v.push((d.name.clone(), &mut d.linear as &mut dyn FeedbackLayer)),
                Stage::Pool(_) | Stage::NormAct(_) => {}
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(kind: CnnKind, input: [usize; 3]) -> Cnn {
        CnnConfig { kind, ..Default::default() }.init(input, 10, &RuleConfig::default(), (0, 1), &Device::flex()).unwrap()
    }

    #[test]
    fn every_zoo_model_maps_images_to_class_logits() {
        for (kind, input) in [
            (CnnKind::Mlp, [1, 8, 8]),
            (CnnKind::Convnet, [1, 8, 8]),
            (CnnKind::Knet4, [3, 32, 32]),
            (CnnKind::Knet5, [3, 32, 32]),
            (CnnKind::Alexnet, [3, 32, 32]),
            (CnnKind::Alexnet, [3, 64, 64]),
            (CnnKind::Resnet18, [3, 32, 32]),
            (CnnKind::Resnet18v2, [3, 32, 32]),
            (CnnKind::Shallownet, [3, 64, 64]),
        ] {
            let model = CnnConfig { kind, width: 0.25, ..Default::default() }.init(input, 10, &RuleConfig::default(), (0, 1), &Device::flex()).unwrap();
            let logits = model.forward(Tensor::ones([2, input[0], input[1], input[2]], &Device::flex()));
            assert_eq!(logits.dims(), [2, 10], "{kind:?}");
        }
    }

    #[test]
    fn resnet_layer_lists_name_every_feedback_layer() {
        // conv0 + 2 convs per block + a projection in the first block of groups 2–4 + dense.
        // (lr-identify's TF ResNets also project in group 1, hence its 22 and 38.)
        for (kind, n) in [(CnnKind::Resnet18, 21), (CnnKind::Resnet34, 37)] {
            let specs = CnnConfig { kind, ..Default::default() }.stages([3, 224, 224], 1000);
            assert_eq!(specs.iter().flat_map(StageSpec::layer_names).count(), n, "{kind:?}");
        }
        let model = build(CnnKind::Resnet18, [3, 32, 32]);
        let names: Vec<String> = model.feedback_layers().into_iter().map(|(n, _)| n).collect();
        let specs = CnnConfig { kind: CnnKind::Resnet18, ..Default::default() }.stages([3, 32, 32], 10);
        assert_eq!(names, specs.iter().flat_map(StageSpec::layer_names).collect::<Vec<_>>());
        assert_eq!(names.last().unwrap(), "dense");
    }

    #[test]
    fn resnet18_has_the_published_parameter_count() {
        let model = CnnConfig { kind: CnnKind::Resnet18, ..Default::default() }
            .init([3, 224, 224], 1000, &RuleConfig::default(), (0, 1), &Device::flex())
            .unwrap();
        // torchvision's resnet18: 11,689,512 parameters (BN running stats excluded there).
        let running_stats = 2 * (64 + 4 * 64 + 4 * 128 + 4 * 256 + 4 * 512 + 128 + 256 + 512);
        assert_eq!(model.num_params() - running_stats, 11_689_512);
    }

    #[test]
    fn too_small_inputs_are_reported_not_panicked() {
        let err = CnnConfig { kind: CnnKind::Alexnet, ..Default::default() }.init([3, 8, 8], 10, &RuleConfig::default(), (0, 1), &Device::flex()).unwrap_err();
        assert!(err.contains("too small"), "{err}");
    }
}
