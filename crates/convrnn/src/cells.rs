//! Local recurrent cells. `x` is the layer's conv drive (after its nonlinearity), `h` the
//! output state, `c` the cell state; every convolution is a feedback layer of `plastic-rules`,
//! so every learning rule trains the cells too. Equations (reference/convrnn.md, from the
//! tnn / convrnns code):
//!
//! - `time_decay`: h ← τ·h + x (τ a learned scalar)
//! - `simple_rnn`: h ← elu(N(W ⊛ [x, h]))
//! - `gru`: [r̂, û] = W_g ⊛ [x, h]; r = σ(r̂ + forget_bias), u = σ(û);
//!   h ← u∘h + (1 − u)∘tanh(W_c ⊛ [x, r∘h])
//! - `lstm`: [i, j, f, o] = W ⊛ [x, h]; c ← c∘σ(f + forget_bias) + σ(i)∘tanh(j); h ← tanh(c)∘σ(o)
//! - `ugrnn`: [ĝ, ĉ] = W ⊛ [x, h]; g = σ(ĝ + 1); h ← g∘h + (1 − g)∘tanh(ĉ)
//! - `intersection_rnn`: [ĝh, ĥ, ĝy, ŷ] = W ⊛ [x, h]; gh = σ(ĝh + 1), gy = σ(ĝy + 1);
//!   h ← gh∘h + (1 − gh)∘tanh(ĥ); output gy∘x + (1 − gy)∘relu(ŷ)
//! - `rgc` (Reciprocal Gated Cell), gates g(z) = offset + multiplier·σ(z):
//!   c ← φ(N(g_τ(W_cc⊛c)∘c + g_g(W_hc⊛h)∘(W_xc⊛x)))
//!   h ← φ(N(g_τ(W_hh⊛h)∘h + g_g(W_ch⊛c)∘b)),  b = x (or W_xh⊛x) [+ residual] [+ feedback]
//!   With zero state the output is φ(g_g(0)·b): the input passes straight through, scaled.

use burn::module::{Module, Param};
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::{DType, Device, Tensor};
use plastic_rules::pointwise::{self, GateNonlinearity, sigmoid, tanh};
use plastic_rules::precision::{follow, in_f32};
use plastic_rules::{Activation, FeedbackConv2d, FeedbackLayer};
use serde::{Deserialize, Serialize};

use crate::LayerFactory;

/// Which cell a layer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CellKind {
    /// No recurrence: the layer is feed-forward (its output still takes one step per layer).
    #[default]
    None,
    TimeDecay,
    SimpleRnn,
    Gru,
    Lstm,
    Ugrnn,
    IntersectionRnn,
    Rgc,
}

/// Where long-range feedback enters an RGC (other cells add it to their input drive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackEntry {
    /// Added to the conv drive x before the cell.
    Input,
    /// Added to the cell-state drive W_xc⊛x.
    Cell,
    /// Added to the output drive b (the released rgc_intermediate).
    #[default]
    Out,
}

/// A cell's settings (`cell = { kind = "rgc", … }` in a layer table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CellConfig {
    pub kind: CellKind,
    /// Kernel of the recurrent convolutions (simple_rnn, gru, lstm, ugrnn, intersection_rnn).
    pub kernel: usize,
    /// GroupNorm(1, C) on the pre-activations (simple_rnn and rgc).
    pub norm: bool,
    /// Added to the forget (lstm) or reset (gru, as in the tnn code) pre-activation.
    pub forget_bias: f32,
    /// Initial τ of time_decay.
    pub tau_init: f32,
    /// RGC: width of the cell state c (default: the layer's channels).
    pub cell_depth: Option<usize>,
    pub gate_offset: f32,
    pub gate_multiplier: f32,
    pub tau_offset: f32,
    pub tau_multiplier: f32,
    pub gate_nonlinearity: GateNonlinearity,
    pub tau_nonlinearity: GateNonlinearity,
    /// Kernel of the gate convolutions W_hc, W_ch and of the τ convolutions W_cc, W_hh.
    pub gate_kernel: usize,
    pub tau_kernel: usize,
    /// Gate and τ convolutions as depthwise k×k then pointwise 1×1 (as the searched cell).
    pub depth_separable: bool,
    /// Kernel of W_xc (input to cell).
    pub input_kernel: usize,
    /// b = W_xh⊛x instead of x.
    pub input_to_out: bool,
    pub in_out_kernel: usize,
    /// Add a 1×1 projection of the layer's raw input to b.
    pub residual: bool,
    pub feedback_entry: FeedbackEntry,
    /// φ of the RGC.
    pub activation: Activation,
}

impl Default for CellConfig {
    fn default() -> Self {
        Self {
            kind: CellKind::None,
            kernel: 3,
            norm: false,
            forget_bias: 1.0,
            tau_init: 0.0,
            cell_depth: None,
            gate_offset: 1.0,
            gate_multiplier: -1.0,
            tau_offset: 1.0,
            tau_multiplier: -1.0,
            gate_nonlinearity: GateNonlinearity::Sigmoid,
            tau_nonlinearity: GateNonlinearity::Sigmoid,
            gate_kernel: 3,
            tau_kernel: 3,
            depth_separable: false,
            input_kernel: 3,
            input_to_out: false,
            in_out_kernel: 3,
            residual: false,
            feedback_entry: FeedbackEntry::Out,
            activation: Activation::Elu,
        }
    }
}

impl CellConfig {
    pub fn validate(&self, layer: &str) -> Result<(), String> {
        for (key, k) in [("kernel", self.kernel), ("gate_kernel", self.gate_kernel), ("tau_kernel", self.tau_kernel), ("input_kernel", self.input_kernel), ("in_out_kernel", self.in_out_kernel)] {
            if k == 0 || k % 2 == 0 {
                return Err(format!("layer {layer}: cell.{key} = {k} must be odd (\"same\" padding)"));
            }
        }
        if self.norm && !matches!(self.kind, CellKind::SimpleRnn | CellKind::Rgc) {
            return Err(format!("layer {layer}: cell.norm is available for simple_rnn and rgc"));
        }
        if self.cell_depth == Some(0) {
            return Err(format!("layer {layer}: cell.cell_depth must be ≥ 1"));
        }
        Ok(())
    }
}

/// The recurrent state of a layer (zeros before the first step).
#[derive(Debug, Clone)]
pub struct CellState {
    pub h: Tensor<4>,
    pub c: Option<Tensor<4>>,
}

impl CellState {
    pub fn detach(self) -> Self {
        Self { h: self.h.detach(), c: self.c.map(Tensor::detach) }
    }
}

/// A gate or τ convolution, plain or depthwise-separable.
#[derive(Module, Debug)]
pub enum GateConv {
    Plain(FeedbackConv2d),
    Separable(SeparableConv),
}

#[derive(Module, Debug)]
pub struct SeparableConv {
    pub depthwise: FeedbackConv2d,
    pub pointwise: FeedbackConv2d,
}

impl GateConv {
    fn new(f: &mut LayerFactory, name: &str, c_in: usize, c_out: usize, kernel: usize, separable: bool) -> Self {
        if separable {
            GateConv::Separable(SeparableConv {
                depthwise: f.conv(&format!("{name}.depthwise"), c_in, c_in, kernel, 1, c_in),
                pointwise: f.conv(&format!("{name}.pointwise"), c_in, c_out, 1, 1, 1),
            })
        } else {
            GateConv::Plain(f.conv(name, c_in, c_out, kernel, 1, 1))
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            GateConv::Plain(c) => c.forward(x),
            GateConv::Separable(s) => s.pointwise.forward(s.depthwise.forward(x)),
        }
    }

    fn layers<'a>(&'a self, name: &str, out: &mut Vec<(String, &'a dyn FeedbackLayer)>) {
        match self {
            GateConv::Plain(c) => out.push((name.into(), c)),
            GateConv::Separable(s) => {
                out.push((format!("{name}.depthwise"), &s.depthwise));
                out.push((format!("{name}.pointwise"), &s.pointwise));
            }
        }
    }

    fn layers_mut<'a>(&'a mut self, name: &str, out: &mut Vec<(String, &'a mut dyn FeedbackLayer)>) {
        match self {
            GateConv::Plain(c) => out.push((name.into(), c)),
            GateConv::Separable(s) => {
                out.push((format!("{name}.depthwise"), &mut s.depthwise));
                out.push((format!("{name}.pointwise"), &mut s.pointwise));
            }
        }
    }
}

/// The Reciprocal Gated Cell.
#[derive(Module, Debug)]
pub struct ReciprocalGatedCell {
    /// W_xc: x → cell drive.
    pub input_cell: FeedbackConv2d,
    /// W_cc: c → c's τ gate.
    pub cell_tau: GateConv,
    /// W_hc: h → c's input gate.
    pub hidden_cell: GateConv,
    /// W_hh: h → h's τ gate.
    pub hidden_tau: GateConv,
    /// W_ch: c → h's input gate.
    pub cell_hidden: GateConv,
    /// W_xh: x → output drive (with `input_to_out`).
    pub input_out: Option<FeedbackConv2d>,
    pub cell_norm: Option<GroupNorm>,
    pub out_norm: Option<GroupNorm>,
    #[module(skip)]
    pub config: CellConfig,
}

/// Time-decay memory: the learned scalar τ.
#[derive(Module, Debug)]
pub struct TimeDecayCell {
    /// `[1]`.
    pub tau: Param<Tensor<1>>,
}

/// The cells with one convolution over [x, h] producing `gates × C` channels (simple_rnn,
/// lstm, ugrnn, intersection_rnn), and the GRU's second convolution.
#[derive(Module, Debug)]
pub struct GatedCell {
    pub gates: FeedbackConv2d,
    /// GRU only: W_c over [x, r∘h].
    pub candidate: Option<FeedbackConv2d>,
    pub norm: Option<GroupNorm>,
    #[module(skip)]
    pub kind: CellKind,
    #[module(skip)]
    pub forget_bias: f32,
}

/// A layer's cell.
#[derive(Module, Debug)]
pub enum Cell {
    None(NoCell),
    TimeDecay(TimeDecayCell),
    Gated(GatedCell),
    Rgc(ReciprocalGatedCell),
}

/// The absence of a cell.
#[derive(Module, Debug)]
pub struct NoCell {
    pub marker: bool,
}

fn group_norm(channels: usize, device: &Device) -> GroupNorm {
    GroupNormConfig::new(1, channels).init(device)
}

impl Cell {
    /// Builds the cell of a layer of `channels` channels.
    pub fn new(config: &CellConfig, channels: usize, f: &mut LayerFactory, layer: &str) -> Self {
        let name = |part: &str| format!("{layer}.cell.{part}");
        let device = f.device.clone();
        match config.kind {
            CellKind::None => Cell::None(NoCell { marker: true }),
            CellKind::TimeDecay => Cell::TimeDecay(TimeDecayCell { tau: Param::from_tensor(Tensor::full([1], config.tau_init, &device)) }),
            CellKind::SimpleRnn | CellKind::Lstm | CellKind::Ugrnn | CellKind::IntersectionRnn | CellKind::Gru => {
                let gates = match config.kind {
                    CellKind::SimpleRnn => 1,
                    CellKind::Gru | CellKind::Ugrnn => 2,
                    _ => 4,
                };
                Cell::Gated(GatedCell {
                    gates: f.conv(&name("gates"), 2 * channels, gates * channels, config.kernel, 1, 1),
                    candidate: (config.kind == CellKind::Gru).then(|| f.conv(&name("candidate"), 2 * channels, channels, config.kernel, 1, 1)),
                    norm: config.norm.then(|| group_norm(channels, &device)),
                    kind: config.kind,
                    forget_bias: config.forget_bias,
                })
            }
            CellKind::Rgc => {
                let depth = config.cell_depth.unwrap_or(channels);
                let ds = config.depth_separable;
                Cell::Rgc(ReciprocalGatedCell {
                    input_cell: f.conv(&name("input_cell"), channels, depth, config.input_kernel, 1, 1),
                    cell_tau: GateConv::new(f, &name("cell_tau"), depth, depth, config.tau_kernel, ds),
                    hidden_cell: GateConv::new(f, &name("hidden_cell"), channels, depth, config.gate_kernel, ds),
                    hidden_tau: GateConv::new(f, &name("hidden_tau"), channels, channels, config.tau_kernel, ds),
                    cell_hidden: GateConv::new(f, &name("cell_hidden"), depth, channels, config.gate_kernel, ds),
                    input_out: config.input_to_out.then(|| f.conv(&name("input_out"), channels, channels, config.in_out_kernel, 1, 1)),
                    cell_norm: config.norm.then(|| group_norm(depth, &device)),
                    out_norm: config.norm.then(|| group_norm(channels, &device)),
                    config: config.clone(),
                })
            }
        }
    }

    /// The zero state for a batch of `n` at `[h, w]`, in the activations' `dtype`.
    pub fn zero_state(&self, n: usize, channels: usize, size: [usize; 2], device: &Device, dtype: DType) -> CellState {
        let c = match self {
            Cell::Gated(g) if g.kind == CellKind::Lstm => Some(Tensor::zeros([n, channels, size[0], size[1]], (device, dtype))),
            Cell::Rgc(r) => Some(Tensor::zeros([n, r.config.cell_depth.unwrap_or(channels), size[0], size[1]], (device, dtype))),
            _ => None,
        };
        CellState { h: Tensor::zeros([n, channels, size[0], size[1]], (device, dtype)), c }
    }

    /// One time step. `x` is the drive, `feedback` the mapped long-range feedback (already
    /// added to `x` for every cell but the RGC, which places it at its `feedback_entry`),
    /// `residual` the projected raw layer input (RGC with `residual`). Returns the layer's
    /// pre-pooling output and the new state.
    pub fn step(&self, x: Tensor<4>, state: &CellState, feedback: Option<Tensor<4>>, residual: Option<Tensor<4>>) -> (Tensor<4>, CellState) {
        let add_feedback = |x: Tensor<4>| match &feedback {
            Some(f) => x + f.clone(),
            None => x,
        };
        match self {
            Cell::None(_) => {
                let y = add_feedback(x);
                (y.clone(), CellState { h: y, c: None })
            }
            Cell::TimeDecay(td) => {
                let h = state.h.clone() * follow(td.tau.val(), &x).reshape([1, 1, 1, 1]) + add_feedback(x);
                (h.clone(), CellState { h, c: None })
            }
            Cell::Gated(g) => {
                let x = add_feedback(x);
                let z = g.gates.forward(Tensor::cat(vec![x.clone(), state.h.clone()], 1));
                let chunks = |t: Tensor<4>, n: usize| t.chunk(n, 1);
                match g.kind {
                    CellKind::SimpleRnn => {
                        let z = match &g.norm {
                            Some(n) => in_f32(z, |z| n.forward(z)),
                            None => z,
                        };
                        let h = Activation::Elu.apply(z);
                        (h.clone(), CellState { h, c: None })
                    }
                    CellKind::Gru => {
                        let [r, u]: [Tensor<4>; 2] = chunks(z, 2).try_into().expect("two gates");
                        let r = sigmoid(r + g.forget_bias as f64);
                        let u = sigmoid(u);
                        let cand = g.candidate.as_ref().expect("the GRU's candidate conv").forward(Tensor::cat(vec![x, r * state.h.clone()], 1));
                        let cand = tanh(cand);
                        let h = u.clone() * state.h.clone() + (u.neg() + 1.0) * cand;
                        (h.clone(), CellState { h, c: None })
                    }
                    CellKind::Lstm => {
                        let [i, j, f, o]: [Tensor<4>; 4] = chunks(z, 4).try_into().expect("four gates");
                        let c_prev = state.c.clone().expect("the LSTM keeps a cell state");
                        let c = c_prev * sigmoid(f + g.forget_bias as f64) + sigmoid(i) * tanh(j);
                        let h = tanh(c.clone()) * sigmoid(o);
                        (h.clone(), CellState { h, c: Some(c) })
                    }
                    CellKind::Ugrnn => {
                        let [gate, cand]: [Tensor<4>; 2] = chunks(z, 2).try_into().expect("two gates");
                        let gate = sigmoid(gate + 1.0);
                        let h = gate.clone() * state.h.clone() + (gate.neg() + 1.0) * tanh(cand);
                        (h.clone(), CellState { h, c: None })
                    }
                    CellKind::IntersectionRnn => {
                        let [gh, hh, gy, yy]: [Tensor<4>; 4] = chunks(z, 4).try_into().expect("four gates");
                        let (gh, gy) = (sigmoid(gh + 1.0), sigmoid(gy + 1.0));
                        let h = gh.clone() * state.h.clone() + (gh.neg() + 1.0) * tanh(hh);
                        let y = gy.clone() * x + (gy.neg() + 1.0) * relu(yy);
                        (y, CellState { h, c: None })
                    }
                    CellKind::None | CellKind::TimeDecay | CellKind::Rgc => unreachable!("not a gated cell"),
                }
            }
            Cell::Rgc(r) => r.step(x, state, feedback, residual),
        }
    }

    /// The feedback layers of the cell, by name.
    pub fn layers<'a>(&'a self, layer: &str, out: &mut Vec<(String, &'a dyn FeedbackLayer)>) {
        let name = |part: &str| format!("{layer}.cell.{part}");
        match self {
            Cell::None(_) | Cell::TimeDecay(_) => {}
            Cell::Gated(g) => {
                out.push((name("gates"), &g.gates));
                if let Some(c) = &g.candidate {
                    out.push((name("candidate"), c));
                }
            }
            Cell::Rgc(r) => {
                out.push((name("input_cell"), &r.input_cell));
                r.cell_tau.layers(&name("cell_tau"), out);
                r.hidden_cell.layers(&name("hidden_cell"), out);
                r.hidden_tau.layers(&name("hidden_tau"), out);
                r.cell_hidden.layers(&name("cell_hidden"), out);
                if let Some(c) = &r.input_out {
                    out.push((name("input_out"), c));
                }
            }
        }
    }

    pub fn layers_mut<'a>(&'a mut self, layer: &str, out: &mut Vec<(String, &'a mut dyn FeedbackLayer)>) {
        let name = |part: &str| format!("{layer}.cell.{part}");
        match self {
            Cell::None(_) | Cell::TimeDecay(_) => {}
            Cell::Gated(g) => {
                out.push((name("gates"), &mut g.gates));
                if let Some(c) = &mut g.candidate {
                    out.push((name("candidate"), c));
                }
            }
            Cell::Rgc(r) => {
                out.push((name("input_cell"), &mut r.input_cell));
                r.cell_tau.layers_mut(&name("cell_tau"), out);
                r.hidden_cell.layers_mut(&name("hidden_cell"), out);
                r.hidden_tau.layers_mut(&name("hidden_tau"), out);
                r.cell_hidden.layers_mut(&name("cell_hidden"), out);
                if let Some(c) = &mut r.input_out {
                    out.push((name("input_out"), c));
                }
            }
        }
    }
}

impl ReciprocalGatedCell {
    fn step(&self, x: Tensor<4>, state: &CellState, feedback: Option<Tensor<4>>, residual: Option<Tensor<4>>) -> (Tensor<4>, CellState) {
        let cfg = &self.config;
        let entry = |e: FeedbackEntry, t: Tensor<4>| match (&feedback, cfg.feedback_entry == e) {
            (Some(f), true) => t + f.clone(),
            _ => t,
        };
        let x = entry(FeedbackEntry::Input, x);
        let (h, c) = (state.h.clone(), state.c.clone().expect("the RGC keeps a cell state"));
        // `offset + multiplier · f(z)`, each one fused op.
        let tau = |z| pointwise::gate(z, cfg.tau_nonlinearity, cfg.tau_offset, cfg.tau_multiplier);
        let gate = |z| pointwise::gate(z, cfg.gate_nonlinearity, cfg.gate_offset, cfg.gate_multiplier);
        let norm = |n: &Option<GroupNorm>, t: Tensor<4>| match n {
            Some(n) => in_f32(t, |t| n.forward(t)),
            None => t,
        };
        // Cell: gated by the previous output (reciprocal), leaky through its own τ gate.
        let a = entry(FeedbackEntry::Cell, self.input_cell.forward(x.clone()));
        let c_new = tau(self.cell_tau.forward(c.clone())) * c.clone() + gate(self.hidden_cell.forward(h.clone())) * a;
        let c_new = cfg.activation.apply(norm(&self.cell_norm, c_new));
        // Output: gated by the previous cell state; b passes through when the state is zero.
        let mut b = match &self.input_out {
            Some(w) => w.forward(x),
            None => x,
        };
        if let Some(r) = residual {
            b = b + r;
        }
        let b = entry(FeedbackEntry::Out, b);
        let h_new = tau(self.hidden_tau.forward(h.clone())) * h + gate(self.cell_hidden.forward(c)) * b;
        let h_new = cfg.activation.apply(norm(&self.out_norm, h_new));
        (h_new.clone(), CellState { h: h_new, c: Some(c_new) })
    }
}
