//! Convolutional recurrent networks (Nayebi et al. 2018, 2022) for `plastic`.
//!
//! A network is a chain of layers (nodes) plus extra edges: an edge to a later layer is a
//! skip, an edge to an earlier (or the same position) layer is long-range feedback. It is
//! unrolled over `times` steps of about 10 ms: at step t every layer reads its inputs' outputs
//! from step t − 1 (zeros at t = 0), so the signal advances one layer per step, as in tnn's
//! "biological" unrolling. The image is shown for the first `image_off` steps, then a blank of
//! value `blank`. A readout (global average pool + linear) reads the last layer; the loss is
//! the cross-entropy of its logits averaged over `loss_start..times` (default: from the step
//! the signal first reaches the readout). Every convolution — in the layers, the cells, the
//! feedback maps and the readout — is a learning-rule layer, so every rule trains ConvRNNs.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use plastic_convrnn::ConvRnnConfig;
//! use plastic_rules::RuleConfig;
//!
//! let config: ConvRnnConfig = toml::from_str(r#"
//!     times = 5
//!     [[layers]]
//!     name = "conv1"
//!     channels = 4
//!     [[layers]]
//!     name = "conv2"
//!     channels = 8
//!     pool = 2
//!     cell = { kind = "rgc" }
//!     [[edges]]
//!     from = "conv2"
//!     to = "conv1"
//! "#).unwrap();
//! let device = Device::flex();
//! let model = config.init([1, 8, 8], 10, &RuleConfig::default(), (0, 1), &device).unwrap();
//! let out = model.forward(Tensor::zeros([2, 1, 8, 8], &device), false);
//! assert_eq!(out.logits.len(), 5);
//! assert_eq!(out.logits[4].dims(), [2, 10]);
//! ```

pub mod cells;
pub mod observe;
pub mod resize;

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor};
use plastic_rules::pool::max_pool2d;
use plastic_rules::{Activation, FeedbackConv2d, FeedbackLayer, FeedbackLinear, FeedbackNetwork, LayerSeeder, LayerSummary, RuleConfig, WeightInit};
use serde::{Deserialize, Serialize};

pub use cells::{Cell, CellConfig, CellKind, CellState, FeedbackEntry};
/// The RGC's gate squashing function (its fused op lives with the other pointwise ops).
pub use plastic_rules::pointwise::GateNonlinearity;
pub use resize::{ResizeMode, resize};

/// How per-step logits become one prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Readout {
    /// The last step's logits.
    #[default]
    Last,
    /// The mean of the logits over the loss steps.
    Mean,
    /// Per example, the loss step whose largest softmax probability is highest.
    MaxConfidence,
    /// Per example, the first loss step whose largest probability reaches `threshold`
    /// (else the most confident one).
    Threshold,
}

/// One layer (node) of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LayerConfig {
    pub name: String,
    /// Output channels of the layer's convolution (and cell).
    pub channels: usize,
    /// Odd kernel of the layer's convolution ("same" padding).
    pub kernel: usize,
    pub stride: usize,
    /// Max-pool size and stride after the cell; 0 or 1 = no pooling.
    pub pool: usize,
    /// Nonlinearity of the conv drive (the cell's input); default [`LayerConfig::drive_activation`].
    pub activation: Option<Activation>,
    pub cell: CellConfig,
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self { name: String::new(), channels: 16, kernel: 3, stride: 1, pool: 0, activation: None, cell: CellConfig::default() }
    }
}

impl LayerConfig {
    /// The drive's nonlinearity: `activation` if given, else as in the released ConvRNNs
    /// (neuroailab/convrnns `*_shallow.json`): a linear pre-memory convolution before a
    /// `time_decay`, `simple_rnn`, `gru`, `lstm`, `ugrnn` or `intersection_rnn` cell, whose
    /// own gates and squashing follow; `elu` in a layer without a cell and before an `rgc`
    /// (whose input activation is elu there). The released intermediate nets elu the drive
    /// of every cell (their cells sit in residual blocks); their presets say so explicitly.
    pub fn drive_activation(&self) -> Activation {
        self.activation.unwrap_or(match self.cell.kind {
            CellKind::None | CellKind::Rgc => Activation::Elu,
            CellKind::TimeDecay | CellKind::SimpleRnn | CellKind::Gru | CellKind::Lstm | CellKind::Ugrnn | CellKind::IntersectionRnn => Activation::Identity,
        })
    }
}

/// An extra edge between layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    pub from: String,
    pub to: String,
}

/// The `[model.convrnn]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConvRnnConfig {
    /// Time steps T.
    pub times: usize,
    /// The image is shown at steps `0..image_off`, then the blank.
    pub image_off: Option<usize>,
    /// Value of the blank frame (in normalised units; the original used 0.5).
    pub blank: f32,
    /// First step of the loss average (default: the readout's first arrival, the number of layers).
    pub loss_start: Option<usize>,
    pub readout: Readout,
    pub threshold: f32,
    pub resize: ResizeMode,
    /// Truncated backprop through time: detach states every this many steps (0 = never).
    pub truncate_every: usize,
    /// Multiplies every layer's channels (and cell depths).
    pub width: f64,
    /// Initial distribution of every kernel (and B).
    pub init: WeightInit,
    pub layers: Vec<LayerConfig>,
    pub edges: Vec<EdgeConfig>,
}

impl Default for ConvRnnConfig {
    fn default() -> Self {
        Self {
            times: 8,
            image_off: None,
            blank: 0.5,
            loss_start: None,
            readout: Readout::Last,
            threshold: 0.9,
            resize: ResizeMode::Bilinear,
            truncate_every: 0,
            width: 1.0,
            init: WeightInit::KaimingUniform,
            layers: Vec::new(),
            edges: Vec::new(),
        }
    }
}

/// What an unroll needs besides the modules: resolved sizes, edges and timing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnrollPlan {
    pub times: usize,
    pub image_off: usize,
    pub blank: f32,
    pub loss_start: usize,
    pub readout: Readout,
    pub threshold: f32,
    pub resize: ResizeMode,
    pub truncate_every: usize,
}

/// Resolved wiring of one layer: with the [`UnrollPlan`], everything a re-implementation needs
/// besides the weights (a PyTorch export writes it to `model.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerWiring {
    pub name: String,
    /// The layer convolution's kernel and stride ("same" padding, `kernel / 2`).
    pub kernel: usize,
    pub stride: usize,
    /// The cell, with its depth resolved against the network's width.
    pub cell: CellConfig,
    /// Layers whose outputs are concatenated with the feed-forward input (skips).
    pub skips: Vec<usize>,
    /// Layers whose outputs come back as long-range feedback.
    pub feedback: Vec<usize>,
    /// `[h, w]` of the layer's input, of its cell, and of its (pooled) output.
    pub input_size: [usize; 2],
    pub cell_size: [usize; 2],
    pub output_size: [usize; 2],
    pub channels: usize,
    pub activation: Activation,
    pub pool: usize,
}

/// One layer of a built ConvRNN.
#[derive(Module, Debug)]
pub struct ConvRnnLayer {
    pub conv: FeedbackConv2d,
    /// 1×1 map of the concatenated, resized feedback to the layer's width.
    pub feedback: Option<FeedbackConv2d>,
    /// RGC `residual`: 1×1 projection of the layer's raw input.
    pub residual: Option<FeedbackConv2d>,
    pub cell: Cell,
    #[module(skip)]
    pub wiring: LayerWiring,
}

/// A built ConvRNN.
#[derive(Module, Debug)]
pub struct ConvRnn {
    pub layers: Vec<ConvRnnLayer>,
    pub readout: FeedbackLinear,
    #[module(skip)]
    pub plan: UnrollPlan,
}

/// The result of an unroll.
#[derive(Debug, Clone)]
pub struct Unrolled {
    /// The readout's logits at every step, `[batch, classes]` each.
    pub logits: Vec<Tensor<2>>,
    /// With `record_layers`: every layer's output at every step (`[step][layer]`).
    pub layer_outputs: Option<Vec<Vec<Tensor<4>>>>,
}

/// One layer at one step of an unroll: what it read and what it gave (observables).
#[derive(Debug, Clone)]
pub(crate) struct NodeCapture {
    /// The feed-forward input (with skips concatenated).
    pub x_in: Tensor<4>,
    /// The cell state it started the step from.
    pub state: CellState,
    /// The long-range feedback inputs, before resizing.
    pub feedback: Vec<Tensor<4>>,
    /// Its (pooled) output.
    pub output: Tensor<4>,
}

/// Hands out names, rules, seeds and streams to the convolutions of a ConvRNN.
pub struct LayerFactory<'a> {
    layers: LayerSeeder<'a>,
    pub(crate) device: Device,
}

impl LayerFactory<'_> {
    /// A `k × k` feedback convolution with "same" padding.
    pub fn conv(&mut self, name: &str, c_in: usize, c_out: usize, kernel: usize, stride: usize, groups: usize) -> FeedbackConv2d {
        self.layers.conv(name, [c_in, c_out], kernel).with_stride([stride, stride]).with_padding([kernel / 2, kernel / 2]).with_groups(groups).init(&self.device)
    }
}

impl ConvRnnConfig {
    /// Checks names, edges, kernels and timing; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.layers.is_empty() {
            return Err("model.convrnn.layers is empty".into());
        }
        if !(self.width > 0.0 && self.width <= 64.0) {
            return Err(format!("model.convrnn.width = {} must be in (0, 64]", self.width));
        }
        self.init.validate("model.convrnn.init")?;
        for (i, l) in self.layers.iter().enumerate() {
            if l.name.is_empty() {
                return Err(format!("model.convrnn.layers[{i}].name is missing"));
            }
            if self.layers[..i].iter().any(|o| o.name == l.name) {
                return Err(format!("model.convrnn.layers: duplicate name {:?}", l.name));
            }
            if l.channels == 0 || l.stride == 0 || l.kernel % 2 == 0 {
                return Err(format!("model.convrnn.layers[{i}] ({}): channels and stride must be ≥ 1 and kernel odd", l.name));
            }
            l.cell.validate(&l.name)?;
        }
        let index = |n: &str| self.layers.iter().position(|l| l.name == n);
        for (i, e) in self.edges.iter().enumerate() {
            let (Some(from), Some(to)) = (index(&e.from), index(&e.to)) else {
                return Err(format!("model.convrnn.edges[{i}]: unknown layer in {} → {}", e.from, e.to));
            };
            if from + 1 == to {
                return Err(format!("model.convrnn.edges[{i}]: {} → {} is already the feed-forward edge", e.from, e.to));
            }
            if self.edges[..i].contains(e) {
                return Err(format!("model.convrnn.edges[{i}]: duplicate edge {} → {}", e.from, e.to));
            }
        }
        if self.times <= self.layers.len() {
            return Err(format!(
                "model.convrnn.times = {} must exceed the number of layers ({}): the readout first sees the image at step {}",
                self.times,
                self.layers.len(),
                self.layers.len()
            ));
        }
        if let Some(s) = self.loss_start
            && s >= self.times
        {
            return Err(format!("model.convrnn.loss_start = {s} must be below times = {}", self.times));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!("model.convrnn.threshold = {} must be in [0, 1]", self.threshold));
        }
        Ok(())
    }

    fn width(&self, c: usize) -> usize {
        ((c as f64 * self.width).round() as usize).max(1)
    }

    /// Resolves sizes and edges for an input `[c, h, w]`.
    pub fn wiring(&self, input: [usize; 3]) -> Result<Vec<LayerWiring>, String> {
        self.validate()?;
        let index = |n: &str| self.layers.iter().position(|l| l.name == n).expect("validated");
        let mut wiring = Vec::with_capacity(self.layers.len());
        let mut size = [input[1], input[2]];
        for (i, l) in self.layers.iter().enumerate() {
            let cell_size = size.map(|s| s.div_ceil(l.stride));
            let output_size = if l.pool > 1 { cell_size.map(|s| s / l.pool) } else { cell_size };
            if output_size.contains(&0) {
                return Err(format!("model.convrnn.layers[{i}] ({}): the input is too small ({}×{} before pooling by {})", l.name, cell_size[0], cell_size[1], l.pool));
            }
            let mut skips: Vec<usize> = self.edges.iter().filter(|e| index(&e.to) == i && index(&e.from) < i).map(|e| index(&e.from)).collect();
            let mut feedback: Vec<usize> = self.edges.iter().filter(|e| index(&e.to) == i && index(&e.from) >= i).map(|e| index(&e.from)).collect();
            // tnn orders extra inputs by name; any fixed order will do as long as it is stable.
            skips.sort_by(|a, b| self.layers[*a].name.cmp(&self.layers[*b].name));
            feedback.sort_by(|a, b| self.layers[*a].name.cmp(&self.layers[*b].name));
            let mut cell = l.cell.clone();
            cell.cell_depth = l.cell.cell_depth.map(|d| self.width(d));
            wiring.push(LayerWiring {
                name: l.name.clone(),
                kernel: l.kernel,
                stride: l.stride,
                cell,
                skips,
                feedback,
                input_size: size,
                cell_size,
                output_size,
                channels: self.width(l.channels),
                activation: l.drive_activation(),
                pool: l.pool,
            });
            size = output_size;
        }
        Ok(wiring)
    }

    /// The plan of the unroll.
    pub fn plan(&self) -> UnrollPlan {
        UnrollPlan {
            times: self.times,
            image_off: self.image_off.unwrap_or(self.times).min(self.times),
            blank: self.blank,
            loss_start: self.loss_start.unwrap_or(self.layers.len()),
            readout: self.readout,
            threshold: self.threshold,
            resize: self.resize,
            truncate_every: self.truncate_every,
        }
    }

    /// Builds the network for inputs `[c, h, w]` and `classes` outputs. `seeds` are
    /// `(weight seed, feedback seed)`.
    pub fn init(&self, input: [usize; 3], classes: usize, rules: &RuleConfig, seeds: (u64, u64), device: &Device) -> Result<ConvRnn, String> {
        let wiring = self.wiring(input)?;
        // A dry build names every convolution, so `first` / `last` rule overrides resolve.
        let names = {
            let mut f = LayerFactory { layers: LayerSeeder::new(rules, self.init, seeds, Vec::new()), device: Device::flex() };
            let _ = self.build(&wiring, input, classes, &mut f, true);
            f.layers.into_names()
        };
        let mut f = LayerFactory { layers: LayerSeeder::new(rules, self.init, seeds, names), device: device.clone() };
        let (layers, readout) = self.build(&wiring, input, classes, &mut f, false);
        Ok(ConvRnn { layers, readout, plan: self.plan() })
    }

    fn build(&self, wiring: &[LayerWiring], input: [usize; 3], classes: usize, f: &mut LayerFactory, names_only: bool) -> (Vec<ConvRnnLayer>, FeedbackLinear) {
        let mut layers = Vec::with_capacity(wiring.len());
        for (i, (l, w)) in self.layers.iter().zip(wiring).enumerate() {
            let ff_channels = if i == 0 { input[0] } else { wiring[i - 1].channels };
            let c_in = ff_channels + w.skips.iter().map(|&s| wiring[s].channels).sum::<usize>();
            // A names-only pass keeps tensors tiny: only the names matter.
            let c = if names_only { 1 } else { w.channels };
            let c_in = if names_only { 1 } else { c_in };
            let conv = f.conv(&format!("{}.conv", l.name), c_in, c, l.kernel, l.stride, 1);
            let fb_in: usize = if names_only { 1 } else { w.feedback.iter().map(|&s| wiring[s].channels).sum() };
            // Feedback meets the drive at the layer's width, except in an RGC that takes it into
            // its cell state, whose width is the cell depth.
            let fb_out = match (&w.cell, names_only) {
                (cell, false) if cell.kind == CellKind::Rgc && cell.feedback_entry == FeedbackEntry::Cell => cell.cell_depth.unwrap_or(c),
                _ => c,
            };
            let feedback = (!w.feedback.is_empty()).then(|| f.conv(&format!("{}.feedback", l.name), fb_in, fb_out, 1, 1, 1));
            let residual = (l.cell.kind == CellKind::Rgc && l.cell.residual).then(|| f.conv(&format!("{}.residual", l.name), c_in, c, 1, l.stride, 1));
            let mut cell_config = w.cell.clone();
            if names_only {
                cell_config.cell_depth = cell_config.cell_depth.map(|_| 1);
            }
            let cell = Cell::new(&cell_config, c, f, &l.name);
            layers.push(ConvRnnLayer { conv, feedback, residual, cell, wiring: w.clone() });
        }
        let last = wiring.last().expect("validated: at least one layer").channels;
        let readout = f.layers.linear("readout", if names_only { 1 } else { last }, if names_only { 1 } else { classes }).init(&f.device);
        (layers, readout)
    }
}

impl ConvRnnLayer {
    fn step(&self, x_in: Tensor<4>, state: &CellState, feedback_inputs: Vec<Tensor<4>>, mode: ResizeMode) -> (Tensor<4>, CellState) {
        let drive = self.wiring.activation.apply(self.conv.forward(x_in.clone()));
        let feedback = self.feedback.as_ref().map(|map| {
            let resized: Vec<Tensor<4>> = feedback_inputs.into_iter().map(|t| resize(t, self.wiring.cell_size, mode)).collect();
            map.forward(Tensor::cat(resized, 1))
        });
        let residual = self.residual.as_ref().map(|r| r.forward(x_in));
        let (h, state) = self.cell.step(drive, state, feedback, residual);
        let out = if self.wiring.pool > 1 { max_pool2d(h, self.wiring.pool, self.wiring.pool, 0) } else { h };
        (out, state)
    }
}

impl ConvRnn {
    /// Unrolls over `plan.times` steps. With `record_layers`, keeps every layer's output at
    /// every step (for timing tests, observables and per-step analyses).
    pub fn forward(&self, images: Tensor<4>, record_layers: bool) -> Unrolled {
        self.unroll(images, record_layers, None)
    }

    /// The unroll; with `capture = Some((t, out))` every layer's input, state and feedback
    /// inputs at step `t` (and its output) are pushed to `out` (observables).
    pub(crate) fn unroll(&self, images: Tensor<4>, record_layers: bool, mut capture: Option<(usize, &mut Vec<NodeCapture>)>) -> Unrolled {
        let [n, ..] = images.dims();
        let device = images.device();
        // The activations' dtype is the images' (mixed precision: bf16 or f16 images).
        let dtype = images.dtype();
        let zeros = |c: usize, s: [usize; 2]| {
            let t = Tensor::<4>::zeros([n, c, s[0], s[1]], (&device.clone().without_autodiff(), dtype));
            if device.is_autodiff() { Tensor::from_inner(t) } else { t }
        };
        let mut outputs: Vec<Tensor<4>> = self.layers.iter().map(|l| zeros(l.wiring.channels, l.wiring.output_size)).collect();
        let mut states: Vec<CellState> = self.layers.iter().map(|l| l.cell.zero_state(n, l.wiring.channels, l.wiring.cell_size, &device, dtype)).collect();
        let blank = images.clone().ones_like() * self.plan.blank as f64;
        let readout = |outputs: &[Tensor<4>]| self.read_out(outputs.last().expect("at least one layer").clone());
        // The readout reads the last layer's output of the previous step.
        let mut logits = Vec::with_capacity(self.plan.times);
        logits.push(readout(&outputs));
        let mut recorded = record_layers.then(Vec::new);
        for t in 0..self.plan.times {
            let frame = if t < self.plan.image_off { images.clone() } else { blank.clone() };
            let mut next = Vec::with_capacity(self.layers.len());
            for (i, layer) in self.layers.iter().enumerate() {
                let w = &layer.wiring;
                let ff = if i == 0 { frame.clone() } else { outputs[i - 1].clone() };
                let mut inputs = vec![ff];
                inputs.extend(w.skips.iter().map(|&s| resize(outputs[s].clone(), w.input_size, self.plan.resize)));
                let x_in = if inputs.len() == 1 { inputs.pop().unwrap() } else { Tensor::cat(inputs, 1) };
                let feedback: Vec<Tensor<4>> = w.feedback.iter().map(|&s| outputs[s].clone()).collect();
                let captured = match &capture {
                    Some((step, _)) if *step == t => Some((x_in.clone(), states[i].clone(), feedback.clone())),
                    _ => None,
                };
                let (out, state) = layer.step(x_in, &states[i], feedback, self.plan.resize);
                if let (Some((x_in, state, feedback)), Some((_, sink))) = (captured, capture.as_mut()) {
                    sink.push(NodeCapture { x_in, state, feedback, output: out.clone() });
                }
                states[i] = state;
                next.push(out);
            }
            if t + 1 < self.plan.times {
                // Before any truncation: the loss at t + 1 reaches back through step t.
                logits.push(readout(&next));
            }
            outputs = next;
            if let Some(r) = &mut recorded {
                r.push(outputs.clone());
            }
            if self.plan.truncate_every > 0 && (t + 1) % self.plan.truncate_every == 0 {
                // Truncated backprop through time: what crosses into the next step no longer
                // carries a gradient path to the steps before.
                outputs = outputs.into_iter().map(Tensor::detach).collect();
                states = states.into_iter().map(CellState::detach).collect();
            }
        }
        Unrolled { logits, layer_outputs: recorded }
    }

    /// The readout of the last layer's output `last` (`[batch, c, h, w]`): its spatial mean
    /// through the readout layer, `[batch, classes]`, in f32 whatever the activations'
    /// precision (the loss and the readout's step comparisons are f32's).
    pub fn read_out(&self, last: Tensor<4>) -> Tensor<2> {
        self.readout.forward(last.mean_dim(3).mean_dim(2).flatten(1, 3)).cast(burn::tensor::DType::F32)
    }

    /// The logits of the loss steps.
    pub fn loss_logits(&self, unrolled: &Unrolled) -> Vec<Tensor<2>> {
        unrolled.logits[self.plan.loss_start..].to_vec()
    }

    /// The readout's prediction logits, `[batch, classes]`.
    pub fn readout_logits(&self, unrolled: &Unrolled) -> Tensor<2> {
        let steps = &unrolled.logits[self.plan.loss_start..];
        match self.plan.readout {
            Readout::Last => steps.last().expect("loss_start < times").clone(),
            Readout::Mean => Tensor::stack::<3>(steps.to_vec(), 0).mean_dim(0).squeeze_dim::<2>(0),
            Readout::MaxConfidence | Readout::Threshold => {
                let stacked = Tensor::stack::<3>(steps.to_vec(), 0); // [steps, n, classes]
                let [s, n, k] = stacked.dims();
                let confidence = softmax(stacked.clone(), 2).max_dim(2); // [steps, n, 1]
                let pick: Tensor<3, Int> = if self.plan.readout == Readout::MaxConfidence {
                    confidence.argmax(0)
                } else {
                    // First step over the threshold: score earlier steps higher; fall back to
                    // the most confident step where no step reaches it.
                    let order = Tensor::<1, Int>::arange(0..s as i64, &stacked.device()).float().reshape([s, 1, 1]);
                    let reached = confidence.clone().greater_equal_elem(self.plan.threshold as f64);
                    let score = (order.neg() + s as f64).mask_fill(reached.clone().bool_not(), 0.0);
                    let first = score.argmax(0);
                    let any = reached.int().sum_dim(0).greater_elem(0);
                    first.mask_where(any.bool_not(), confidence.argmax(0))
                };
                stacked.gather(0, pick.repeat_dim(2, k)).reshape([n, k])
            }
        }
    }

    /// Every feedback layer with its output shape and kernel size (W's entries; the readout also
    /// counts its bias).
    pub fn summary(&self) -> Vec<LayerSummary> {
        let mut out = Vec::new();
        for l in &self.layers {
            let w = &l.wiring;
            let mut named: Vec<(String, &dyn FeedbackLayer)> = Vec::new();
            named.push((format!("{}.conv", w.name), &l.conv));
            if let Some(f) = &l.feedback {
                named.push((format!("{}.feedback", w.name), f));
            }
            if let Some(r) = &l.residual {
                named.push((format!("{}.residual", w.name), r));
            }
            l.cell.layers(&w.name, &mut named);
            for (name, layer) in named {
                let params = layer.weight_flat().dims()[0];
                out.push(LayerSummary { name, kind: "conv".into(), output: vec![w.channels, w.cell_size[0], w.cell_size[1]], params });
            }
        }
        let [d_in, classes] = self.readout.weight.dims();
        out.push(LayerSummary { name: "readout".into(), kind: "linear".into(), output: vec![classes], params: d_in * classes + classes });
        out
    }

    /// Output units of every layer and the readout.
    pub fn units(&self) -> usize {
        self.layers.iter().map(|l| l.wiring.channels * l.wiring.output_size[0] * l.wiring.output_size[1]).sum::<usize>() + self.readout.weight.dims()[1]
    }
}

impl FeedbackNetwork for ConvRnn {
    fn feedback_layers(&self) -> Vec<(String, &dyn FeedbackLayer)> {
        let mut out: Vec<(String, &dyn FeedbackLayer)> = Vec::new();
        for l in &self.layers {
            let name = &l.wiring.name;
            out.push((format!("{name}.conv"), &l.conv));
            if let Some(f) = &l.feedback {
                out.push((format!("{name}.feedback"), f));
            }
            if let Some(r) = &l.residual {
                out.push((format!("{name}.residual"), r));
            }
            l.cell.layers(name, &mut out);
        }
        out.push(("readout".into(), &self.readout));
        out
    }

    fn feedback_layers_mut(&mut self) -> Vec<(String, &mut dyn FeedbackLayer)> {
        let mut out: Vec<(String, &mut dyn FeedbackLayer)> = Vec::new();
        for l in &mut self.layers {
            let name = l.wiring.name.clone();
            out.push((format!("{name}.conv"), &mut l.conv));
            if let Some(f) = &mut l.feedback {
                out.push((format!("{name}.feedback"), f));
            }
            if let Some(r) = &mut l.residual {
                out.push((format!("{name}.residual"), r));
            }
            l.cell.layers_mut(&name, &mut out);
        }
        out.push(("readout".into(), &mut self.readout));
        out
    }
}

#[cfg(test)]
mod tests;
