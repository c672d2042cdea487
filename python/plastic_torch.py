"""plastic models in PyTorch.

`plastic export --run RUN --format pytorch --output DIR` writes a folder with the run's weights
(`model.safetensors`, PyTorch names and layouts), its resolved graph (`model.json`), its config
(`config.toml`), what an image must go through to be shown to it (`preprocessing.json`), this
module (`plastic_torch.py`) and a probe batch with plastic's own outputs (`probe.safetensors`).
This module rebuilds any of plastic's zoo CNNs and any config-built ConvRNN from that folder
with standard `torch.nn` layers (`Conv2d`, `BatchNorm2d`, `GroupNorm`, `Linear`), so hooks,
Brain-Score's PyTorch wrappers and your own analysis code see ordinary modules:

    import plastic_torch
    model = plastic_torch.load("DIR")             # eval mode, CPU, float32
    logits = model(x)                             # x: [n, c, h, w], normalised (see below)
    out = model.run(x)                            # every layer at every time step
    out.layers[t]["conv2"], out.readout[t]        # step t's output of conv2, and the readout there
    model.train(); out = model.run(x)             # plastic's loss (backprop; a DFA run adds its own term):
    loss = sum(F.cross_entropy(z, y) for z in out.loss_logits) / len(out.loss_logits)
    x = model.normalize(images_in_0_1)            # (x − mean) / std per channel, as in training

A ConvRNN is unrolled as plastic unrolls it: at step t every layer reads its inputs' outputs
of step t − 1 (zeros before the first step), the image is shown for `image_off` steps and then
a blank, skips and feedback are resized with plastic's (align-corners) interpolation matrices,
and `model(x)` is the readout plastic predicts with (`last`, `mean`, `max_confidence` or
`threshold` over the loss steps). `out.readout[t]` is the readout of the last layer's output
after step t. For a CNN, `run` gives one step whose layers are the stages plastic names in
`plastic features` (`conv1`, `group2.block0`, `conv5.pool`, …).

`python plastic_torch.py check DIR [DIR …]` runs each exported model on its probe batch and
compares every output with plastic's (max |Δ| ≤ 1e-4 · max |y| for each output at each step);
it exits 1 on any difference larger than that.

Only PyTorch is needed (no numpy, no safetensors package): the safetensors reader is the few
lines below. A learning rule's extra tensors — its feedback weights B (`….feedback`, and
direct feedback alignment's `direct_feedback.N.feedback`) and sign symmetry's fixed magnitudes
(`….magnitude`) — are not part of the forward pass; they are kept, on the CPU, in
`model.feedback_weights`. What is checked is the
forward pass in evaluation mode. Training the rebuilt model in PyTorch is ordinary backprop
with PyTorch's own BatchNorm statistics updates; plastic's learning rules and truncated
backprop through time (`truncate_every`) are not reproduced here.
"""

import json
import math
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT = "plastic-pytorch/1"
TOLERANCE = 1e-4

_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}


def read_safetensors(path):
    """The tensors of a safetensors file, by name, and its metadata."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    metadata = header.pop("__metadata__", {}) or {}
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        if end == start:
            tensors[name] = torch.empty(info["shape"], dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(bytearray(data[base + start : base + end]), dtype=dtype).reshape(info["shape"])
    return tensors, metadata


def _variant(value):
    """A serde enum value as (variant, payload): `"relu"` or `{"Max": {...}}`."""
    if isinstance(value, str):
        return value, None
    ((name, payload),) = value.items()
    return name, payload


def activation(name, x):
    if name == "relu":
        return F.relu(x)
    if name == "elu":
        return F.elu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "identity":
        return x
    raise ValueError(f"unknown activation {name!r}")


def pool(x, op):
    """plastic's PoolOp: max (padding with −inf) and average (padding not counted) windows,
    global and adaptive average pooling."""
    name, p = _variant(op)
    if name == "Max":
        return F.max_pool2d(x, p["kernel"], p["stride"], p["padding"])
    if name == "Avg":
        return F.avg_pool2d(x, p["kernel"], p["stride"], p["padding"], count_include_pad=False)
    if name == "GlobalAvg":
        return F.adaptive_avg_pool2d(x, 1)
    if name == "Adaptive":
        return F.adaptive_avg_pool2d(x, p)
    raise ValueError(f"unknown pooling {op!r}")


def _conv(weights, prefix, stride=1, padding=None):
    """A Conv2d shaped after `prefix.weight` (`[out, in / groups, kh, kw]`); depthwise kernels
    (`….depthwise`) have one group per channel."""
    w = weights[f"{prefix}.weight"]
    out, in_per_group, kh, kw = w.shape
    groups = out if prefix.endswith("depthwise") else 1
    if padding is None:
        padding = kh // 2
    return nn.Conv2d(in_per_group * groups, out, (kh, kw), stride=stride, padding=padding, groups=groups, bias=f"{prefix}.bias" in weights)


def _linear(weights, prefix):
    out, d_in = weights[f"{prefix}.weight"].shape
    return nn.Linear(d_in, out, bias=f"{prefix}.bias" in weights)


def _batch_norm(weights, prefix):
    return nn.BatchNorm2d(weights[f"{prefix}.running_mean"].shape[0], eps=1e-5, momentum=0.1)


# ---------------------------------------------------------------------------------------------
# Zoo CNNs


class ConvUnit(nn.Module):
    """A convolution and its post-processing steps (BatchNorm, activation, LRN, pooling) in
    plastic's order."""

    def __init__(self, spec, weights, prefix):
        super().__init__()
        self.conv = _conv(weights, f"{prefix}.conv", spec["stride"], spec["padding"])
        self.post = spec["post"]
        if any(_variant(p)[0] == "BatchNorm" for p in self.post):
            self.norm = _batch_norm(weights, f"{prefix}.norm")

    def forward(self, x):
        x = self.conv(x)
        for op in self.post:
            name, p = _variant(op)
            if name == "BatchNorm":
                x = self.norm(x)
            elif name == "Activation":
                x = activation(p, x)
            elif name == "Lrn":
                x = F.local_response_norm(x, p["size"], alpha=p["alpha"], beta=p["beta"], k=p["k"])
            elif name == "Pool":
                x = pool(x, p)
            else:
                raise ValueError(f"unknown post-op {op!r}")
        return x


class ResidualBlock(nn.Module):
    """He et al.'s basic block, v1 (conv → BN → ReLU) or v2 (BN → ReLU → conv)."""

    def __init__(self, spec, weights, prefix):
        super().__init__()
        self.preactivation = spec["preactivation"]
        self.conv1 = _conv(weights, f"{prefix}.conv1", spec["stride"], 1)
        self.norm1 = _batch_norm(weights, f"{prefix}.norm1")
        self.conv2 = _conv(weights, f"{prefix}.conv2", 1, 1)
        self.norm2 = _batch_norm(weights, f"{prefix}.norm2")
        self.shortcut = _conv(weights, f"{prefix}.shortcut", spec["stride"], 0) if f"{prefix}.shortcut.weight" in weights else None
        self.shortcut_norm = _batch_norm(weights, f"{prefix}.shortcut_norm") if f"{prefix}.shortcut_norm.running_mean" in weights else None

    def forward(self, x):
        if self.preactivation:
            pre = F.relu(self.norm1(x))
            skip = self.shortcut(pre) if self.shortcut is not None else x
            h = self.conv2(F.relu(self.norm2(self.conv1(pre))))
            return h + skip
        skip = self.shortcut_norm(self.shortcut(x)) if self.shortcut is not None else x
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + skip)


class PoolStage(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return pool(x, self.op)


class NormAct(nn.Module):
    def __init__(self, act, weights, prefix):
        super().__init__()
        self.norm = _batch_norm(weights, f"{prefix}.norm")
        self.act = act

    def forward(self, x):
        return activation(self.act, self.norm(x))


class DenseUnit(nn.Module):
    """A linear layer (the map is flattened on entering the first one), its activation and
    dropout."""

    def __init__(self, spec, weights, prefix):
        super().__init__()
        self.linear = _linear(weights, f"{prefix}.linear")
        self.act = spec["activation"]
        self.dropout = nn.Dropout(spec["dropout"]) if spec["dropout"] > 0 else None

    def forward(self, x):
        if x.dim() > 2:
            x = x.flatten(1)
        x = activation(self.act, self.linear(x))
        return self.dropout(x) if self.dropout is not None else x


class _Plastic(nn.Module):
    """What both kinds of model share: the export's description and the input normalisation."""

    def __init__(self, arch):
        super().__init__()
        self.arch = arch
        self.preprocessing = arch["preprocessing"]
        self.class_names = arch["preprocessing"]["class_names"]
        self.feature_layers = arch["feature_layers"]

    def normalize(self, x):
        """Images scaled to [0, 1], `[n, c, h, w]`, normalised per channel as in training:
        (x − mean) / std."""
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.preprocessing["mean"], dtype=x.dtype, device=x.device).reshape(shape)
        std = torch.tensor(self.preprocessing["std"], dtype=x.dtype, device=x.device).reshape(shape)
        return (x - mean) / std


class PlasticCnn(_Plastic):
    """A zoo CNN: `stages` in plastic's order, with plastic's parameter names."""

    def __init__(self, arch, weights):
        super().__init__(arch)
        stages = []
        for i, spec in enumerate(arch["model"]["stages"]):
            kind, p = _variant(spec)
            prefix = f"stages.{i}"
            if kind == "Conv":
                stages.append(ConvUnit(p, weights, prefix))
            elif kind == "Residual":
                stages.append(ResidualBlock(p, weights, prefix))
            elif kind == "Pool":
                stages.append(PoolStage(p))
            elif kind == "NormAct":
                stages.append(NormAct(p, weights, prefix))
            elif kind == "Dense":
                stages.append(DenseUnit(p, weights, prefix))
            else:
                raise ValueError(f"unknown stage {spec!r}")
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        return x

    def run(self, x, times=None, image_off=None):
        """Every stage's output (one step; a dense stage's as `[n, units]`, where `plastic
        features` stores `[n, units, 1, 1]`), the readout and the logits. `times` and
        `image_off` are accepted for a ConvRNN's sake and ignored, as plastic ignores them."""
        layers = {}
        for name, stage in zip(self.feature_layers, self.stages):
            x = stage(x)
            layers[name] = x
        return SimpleNamespace(layers=[layers], readout=[x], logits=x, loss_logits=[x])


# ---------------------------------------------------------------------------------------------
# ConvRNNs


def interpolation_matrix(n_in, n_out, mode):
    """plastic's `[out, in]` resize matrix: bilinear with aligned corners, or the nearest
    source pixel (halves rounded away from zero)."""
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        pos = 0.0 if n_out == 1 else o * (n_in - 1) / (n_out - 1)
        if mode == "bilinear":
            lo = math.floor(pos)
            hi = min(lo + 1, n_in - 1)
            t = pos - lo
            a[o, lo] += 1.0 - t
            a[o, hi] += t
        elif mode == "nearest":
            a[o, min(math.floor(pos + 0.5), n_in - 1)] = 1.0
        else:
            raise ValueError(f"unknown resize mode {mode!r}")
    return a.to(torch.float32)


_MATRICES = {}


def _matrix(n_in, n_out, mode, like):
    """`interpolation_matrix` on `like`'s device and dtype, built once per size and mode."""
    key = (n_in, n_out, mode, like.device, like.dtype)
    if key not in _MATRICES:
        _MATRICES[key] = interpolation_matrix(n_in, n_out, mode).to(like)
    return _MATRICES[key]


def resize(x, size, mode):
    """`[n, c, h, w]` to `[n, c, size[0], size[1]]` as `A_h · X · A_wᵀ`."""
    h, w = x.shape[-2:]
    if [h, w] == list(size):
        return x
    return _matrix(h, size[0], mode, x) @ x @ _matrix(w, size[1], mode, x).transpose(0, 1)


class SeparableConv(nn.Module):
    """A depthwise k×k convolution, then a pointwise 1×1 one (the searched RGC's gates)."""

    def __init__(self, weights, prefix):
        super().__init__()
        self.depthwise = _conv(weights, f"{prefix}.depthwise")
        self.pointwise = _conv(weights, f"{prefix}.pointwise")

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def _gate_conv(weights, prefix):
    """An RGC gate or τ convolution: plain, or depthwise-separable."""
    if f"{prefix}.weight" in weights:
        return _conv(weights, prefix)
    return SeparableConv(weights, prefix)


def _gate(nonlinearity, offset, multiplier, z):
    s = torch.sigmoid(z) if nonlinearity == "sigmoid" else torch.tanh(z)
    return s * multiplier + offset


class Cell(nn.Module):
    """A layer's local recurrent cell (none, time_decay, simple_rnn, gru, lstm, ugrnn,
    intersection_rnn, rgc), stepping as plastic's `Cell::step`."""

    def __init__(self, config, channels, weights, prefix):
        super().__init__()
        self.config = config
        self.kind = config["kind"]
        self.channels = channels
        self.depth = config["cell_depth"] or channels
        if self.kind == "time_decay":
            self.tau = nn.Parameter(torch.zeros(1))
        elif self.kind in ("simple_rnn", "gru", "lstm", "ugrnn", "intersection_rnn"):
            self.gates = _conv(weights, f"{prefix}.gates")
            self.candidate = _conv(weights, f"{prefix}.candidate") if self.kind == "gru" else None
            self.norm = nn.GroupNorm(1, channels, eps=1e-5) if config["norm"] else None
        elif self.kind == "rgc":
            self.input_cell = _conv(weights, f"{prefix}.input_cell")
            self.cell_tau = _gate_conv(weights, f"{prefix}.cell_tau")
            self.hidden_cell = _gate_conv(weights, f"{prefix}.hidden_cell")
            self.hidden_tau = _gate_conv(weights, f"{prefix}.hidden_tau")
            self.cell_hidden = _gate_conv(weights, f"{prefix}.cell_hidden")
            self.input_out = _conv(weights, f"{prefix}.input_out") if config["input_to_out"] else None
            self.cell_norm = nn.GroupNorm(1, self.depth, eps=1e-5) if config["norm"] else None
            self.out_norm = nn.GroupNorm(1, channels, eps=1e-5) if config["norm"] else None
        elif self.kind != "none":
            raise ValueError(f"unknown cell {self.kind!r}")

    def zero_state(self, n, size, like):
        h = like.new_zeros(n, self.channels, *size)
        c = None
        if self.kind == "lstm":
            c = like.new_zeros(n, self.channels, *size)
        elif self.kind == "rgc":
            c = like.new_zeros(n, self.depth, *size)
        return h, c

    def forward(self, x, state, feedback=None, residual=None):
        """One step: `x` the drive, `feedback` the mapped long-range feedback, `residual` the
        projected raw input (RGC). Returns the output and the new `(h, c)`."""
        h, c = state
        if self.kind == "rgc":
            return self._rgc(x, h, c, feedback, residual)
        if feedback is not None:
            x = x + feedback
        if self.kind == "none":
            return x, (x, None)
        if self.kind == "time_decay":
            h = h * self.tau.reshape(1, 1, 1, 1) + x
            return h, (h, None)
        z = self.gates(torch.cat([x, h], 1))
        forget_bias = self.config["forget_bias"]
        if self.kind == "simple_rnn":
            h = F.elu(self.norm(z) if self.norm is not None else z)
            return h, (h, None)
        if self.kind == "gru":
            r, u = z.chunk(2, 1)
            r, u = torch.sigmoid(r + forget_bias), torch.sigmoid(u)
            cand = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
            h = u * h + (1 - u) * cand
            return h, (h, None)
        if self.kind == "lstm":
            i, j, f, o = z.chunk(4, 1)
            c = c * torch.sigmoid(f + forget_bias) + torch.sigmoid(i) * torch.tanh(j)
            h = torch.tanh(c) * torch.sigmoid(o)
            return h, (h, c)
        if self.kind == "ugrnn":
            g, cand = z.chunk(2, 1)
            g = torch.sigmoid(g + 1.0)
            h = g * h + (1 - g) * torch.tanh(cand)
            return h, (h, None)
        if self.kind == "intersection_rnn":
            gh, hh, gy, yy = z.chunk(4, 1)
            gh, gy = torch.sigmoid(gh + 1.0), torch.sigmoid(gy + 1.0)
            h = gh * h + (1 - gh) * torch.tanh(hh)
            y = gy * x + (1 - gy) * F.relu(yy)
            return y, (h, None)
        raise ValueError(self.kind)

    def _rgc(self, x, h, c, feedback, residual):
        cfg = self.config

        def entry(where, t):
            return t + feedback if feedback is not None and cfg["feedback_entry"] == where else t

        def tau(z):
            return _gate(cfg["tau_nonlinearity"], cfg["tau_offset"], cfg["tau_multiplier"], z)

        def gate(z):
            return _gate(cfg["gate_nonlinearity"], cfg["gate_offset"], cfg["gate_multiplier"], z)

        def norm(n, t):
            return n(t) if n is not None else t

        x = entry("input", x)
        a = entry("cell", self.input_cell(x))
        c_new = tau(self.cell_tau(c)) * c + gate(self.hidden_cell(h)) * a
        c_new = activation(cfg["activation"], norm(self.cell_norm, c_new))
        b = self.input_out(x) if self.input_out is not None else x
        if residual is not None:
            b = b + residual
        b = entry("out", b)
        h_new = tau(self.hidden_tau(h)) * h + gate(self.cell_hidden(c)) * b
        h_new = activation(cfg["activation"], norm(self.out_norm, h_new))
        return h_new, (h_new, c_new)


class ConvRnnLayer(nn.Module):
    """One node: its convolution (with skips concatenated to its input), the 1×1 map of its
    resized long-range feedback, the RGC's residual projection, its cell and max-pooling."""

    def __init__(self, wiring, weights, prefix, resize_mode):
        super().__init__()
        self.wiring = wiring
        self.resize_mode = resize_mode
        self.conv = _conv(weights, f"{prefix}.conv", wiring["stride"])
        self.feedback = _conv(weights, f"{prefix}.feedback") if f"{prefix}.feedback.weight" in weights else None
        self.residual = _conv(weights, f"{prefix}.residual", wiring["stride"], 0) if f"{prefix}.residual.weight" in weights else None
        self.cell = Cell(wiring["cell"], wiring["channels"], weights, f"{prefix}.cell")

    def forward(self, x_in, state, feedback_inputs):
        w = self.wiring
        drive = activation(w["activation"], self.conv(x_in))
        feedback = None
        if self.feedback is not None:
            feedback = self.feedback(torch.cat([resize(t, w["cell_size"], self.resize_mode) for t in feedback_inputs], 1))
        residual = self.residual(x_in) if self.residual is not None else None
        h, state = self.cell(drive, state, feedback, residual)
        if w["pool"] > 1:
            h = F.max_pool2d(h, w["pool"])
        return h, state


class PlasticConvRnn(_Plastic):
    """A ConvRNN: `layers` and a `readout` (spatial mean, then linear), unrolled over
    `plan["times"]` steps."""

    def __init__(self, arch, weights):
        super().__init__(arch)
        self.plan = dict(arch["model"]["plan"])
        wiring = arch["model"]["layers"]
        self.layers = nn.ModuleList(ConvRnnLayer(w, weights, f"layers.{i}", self.plan["resize"]) for i, w in enumerate(wiring))
        self.readout = _linear(weights, "readout")

    def read_out(self, last):
        return self.readout(last.mean(dim=(2, 3)))

    def run(self, images, times=None, image_off=None):
        """The unroll: `layers[t][name]` every layer's output after step t, `readout[t]` the
        readout of the last layer there, `logits` the prediction, `loss_logits` the logits
        plastic's training loss averages its cross-entropy over. `times` / `image_off`
        override the run's (as `plastic features --unroll / --image-off`)."""
        plan = dict(self.plan)
        if times is not None and times < 1:
            raise ValueError(f"times = {times}: the number of time steps must be at least 1")
        if times is not None:
            if plan["image_off"] >= plan["times"]:
                plan["image_off"] = times
            plan["times"] = times
            plan["loss_start"] = min(plan["loss_start"], times - 1)
        if image_off is not None:
            plan["image_off"] = image_off
        plan["image_off"] = min(plan["image_off"], plan["times"])
        n = images.shape[0]
        outputs = [images.new_zeros(n, l.wiring["channels"], *l.wiring["output_size"]) for l in self.layers]
        states = [l.cell.zero_state(n, l.wiring["cell_size"], images) for l in self.layers]
        blank = torch.full_like(images, plan["blank"])
        # What the loss (and the prediction) reads at step t: the last layer after step t − 1.
        loss_logits = [self.read_out(outputs[-1])]
        steps, readouts = [], []
        for t in range(plan["times"]):
            frame = images if t < plan["image_off"] else blank
            nxt = []
            for i, layer in enumerate(self.layers):
                w = layer.wiring
                inputs = [frame if i == 0 else outputs[i - 1]]
                inputs += [resize(outputs[s], w["input_size"], plan["resize"]) for s in w["skips"]]
                x_in = inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1)
                out, states[i] = layer(x_in, states[i], [outputs[s] for s in w["feedback"]])
                nxt.append(out)
            readout = self.read_out(nxt[-1])
            if t + 1 < plan["times"]:
                loss_logits.append(readout)
            outputs = nxt
            steps.append(dict(zip(self.feature_layers, outputs)))
            readouts.append(readout)
        loss_logits = loss_logits[plan["loss_start"] :]
        return SimpleNamespace(layers=steps, readout=readouts, logits=self._predict(loss_logits, plan), loss_logits=loss_logits)

    def _predict(self, steps, plan):
        mode = plan["readout"]
        if mode == "last":
            return steps[-1]
        stacked = torch.stack(steps, 0)  # [steps, n, classes]
        if mode == "mean":
            return stacked.mean(0)
        confidence = stacked.softmax(2).max(2).values  # [steps, n]
        if mode == "max_confidence":
            pick = _first_argmax(confidence)
        elif mode == "threshold":
            reached = confidence >= plan["threshold"]
            first = reached.to(torch.int64).argmax(0)  # the first step that reaches it
            pick = torch.where(reached.any(0), first, _first_argmax(confidence))
        else:
            raise ValueError(f"unknown readout {mode!r}")
        return stacked[pick, torch.arange(stacked.shape[1])]

    def forward(self, images):
        return self.run(images).logits


def _first_argmax(x):
    """Index of the largest value along dim 0, the first one on ties."""
    best = x.max(0, keepdim=True).values
    return (x == best).to(torch.int64).argmax(0)


# ---------------------------------------------------------------------------------------------
# Loading and checking


def load(directory, device="cpu"):
    """The model exported to `directory`, in evaluation mode."""
    directory = Path(directory)
    arch = json.loads((directory / "model.json").read_text())
    if arch.get("format") != FORMAT:
        raise ValueError(f"{directory}: model.json is {arch.get('format')!r}, this module reads {FORMAT!r}")
    weights, _ = read_safetensors(directory / "model.safetensors")
    feedback = {k: v for k, v in weights.items() if k.rsplit(".", 1)[-1] in ("feedback", "magnitude") or k.startswith("direct_feedback.")}
    weights = {k: v for k, v in weights.items() if k not in feedback}
    kind = arch["model"]["kind"]
    model = PlasticCnn(arch, weights) if kind == "cnn" else PlasticConvRnn(arch, weights)
    missing, unexpected = model.load_state_dict(dict(weights), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not match the graph (missing {missing}, unexpected {unexpected})")
    # Not module state: B and magnitudes stay on the CPU whatever `device` is.
    model.feedback_weights = feedback
    return model.to(device).eval()


def check(directory):
    """Compares the model's outputs on the probe batch with plastic's. Returns (worst relative
    difference, its output name, outputs compared)."""
    model = load(directory)
    probe, _ = read_safetensors(Path(directory) / "probe.safetensors")
    with torch.no_grad():
        out = model.run(probe["input"])
    ours = {"logits": out.logits}
    for t, (layers, readout) in enumerate(zip(out.layers, out.readout)):
        ours[f"step{t}/readout"] = readout
        for name, y in layers.items():
            ours[f"step{t}/{name}"] = y
    expected = {k: v for k, v in probe.items() if k != "input"}
    if set(ours) != set(expected):
        raise ValueError(f"{directory}: outputs differ in names: only plastic {sorted(set(expected) - set(ours))[:5]}, only here {sorted(set(ours) - set(expected))[:5]}")
    worst, worst_name = 0.0, None
    for name, y in expected.items():
        mine = ours[name]
        if mine.shape != y.shape and not (mine.dim() == 2 and list(y.shape) == [*mine.shape, 1, 1]):
            raise ValueError(f"{directory}: {name} has shape {list(mine.shape)} here, {list(y.shape)} in plastic")
        mine = mine.reshape(y.shape)
        # Outputs that are zero up to rounding (a layer the image has not reached) are compared
        # against 1e-6, not against their own rounding noise.
        scale = max(y.abs().max().item(), 1e-6)
        diff = (mine - y).abs().max().item()
        rel = diff / scale
        if not math.isfinite(rel) or rel > worst or worst_name is None:
            worst, worst_name = (math.inf if not math.isfinite(rel) else rel), name
    return worst, worst_name, len(expected)


def _main(argv):
    if len(argv) < 2 or argv[0] != "check":
        print("usage: python plastic_torch.py check DIR [DIR ...]", file=sys.stderr)
        return 2
    failed = 0
    for directory in argv[1:]:
        try:
            worst, name, count = check(directory)
        except Exception as e:  # one unreadable folder must not stop the others
            print(f"FAIL {directory}: {type(e).__name__}: {e}")
            failed += 1
            continue
        ok = worst <= TOLERANCE
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {directory}: {count} outputs, worst max|Δ|/max|y| = {worst:.2e} ({name})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
