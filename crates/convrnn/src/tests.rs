//! Tests of the ConvRNN against hand computations and independent checks.

use burn::tensor::{Device, Tensor, TensorData};
use plastic_rules::init::normal_stream;
use plastic_rules::{FeedbackConv2d, FeedbackNetwork, RuleConfig, RuleKind, replace_value};

use crate::cells::{Cell, CellState, GateConv};
use crate::*;

fn random(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(normal_stream(shape.iter().product(), seed, 0), shape), device)
}

fn config(text: &str) -> ConvRnnConfig {
    toml::from_str(text).unwrap()
}

fn build(c: &ConvRnnConfig, input: [usize; 3], device: &Device) -> ConvRnn {
    c.init(input, 5, &RuleConfig::default(), (0, 1), device).unwrap()
}

fn max_abs(t: Tensor<4>) -> f64 {
    t.abs().max().into_scalar::<f64>()
}

#[test]
fn rgc_with_zero_state_passes_its_input_through_scaled() {
    let device = Device::flex();
    for (gates, factor) in [("", 0.5), (r#", gate_nonlinearity = "tanh", gate_offset = 0.7, gate_multiplier = -0.7"#, 0.7)] {
        let c = config(&format!("times = 2\n[[layers]]\nname = \"a\"\nchannels = 6\ncell = {{ kind = \"rgc\"{gates} }}"));
        let model = build(&c, [3, 5, 5], &device);
        let x = random([2, 3, 5, 5], 1, &device);
        let out = model.forward(x.clone(), true).layer_outputs.unwrap();
        // Step 0: zero state, so h = elu(g(0) · b) with b = x̃ = elu(conv(x)).
        let drive = Activation::Elu.apply(model.layers[0].conv.forward(x));
        let expected = Activation::Elu.apply(drive * factor);
        assert!(max_abs(out[0][0].clone() - expected) < 1e-6, "gates {gates:?}");
    }
}

#[test]
fn a_layer_sees_the_image_only_once_the_signal_can_reach_it() {
    let device = Device::flex();
    let c = config(
        r#"
        times = 6
        [[layers]]
        name = "l0"
        channels = 4
        cell = { kind = "gru" }
        [[layers]]
        name = "l1"
        channels = 4
        cell = { kind = "rgc" }
        [[layers]]
        name = "l2"
        channels = 4
        pool = 2
        cell = { kind = "lstm" }
        "#,
    );
    let model = build(&c, [1, 6, 6], &device);
    let a = model.forward(random([1, 1, 6, 6], 1, &device), true);
    let b = model.forward(random([1, 1, 6, 6], 2, &device), true);
    let (la, lb) = (a.layer_outputs.unwrap(), b.layer_outputs.unwrap());
    for k in 0..3 {
        for t in 0..6 {
            let differs = max_abs(la[t][k].clone() - lb[t][k].clone()) > 1e-7;
            assert_eq!(differs, t >= k, "layer {k} at step {t}");
        }
    }
    // The readout reads the last layer one step later: first image-dependent at step 3.
    for t in 0..6 {
        let d = (a.logits[t].clone() - b.logits[t].clone()).abs().max().into_scalar::<f64>();
        assert_eq!(d > 1e-7, t >= 3, "readout at step {t}");
    }
}

#[test]
fn a_feedback_edge_delivers_one_step_later() {
    let device = Device::flex();
    let layers = "times = 4\nimage_off = 1\n[[layers]]\nname = \"l0\"\nchannels = 3\n[[layers]]\nname = \"l1\"\nchannels = 3\n";
    // Image only at step 0; feed-forward cells. l0 sees it at 0; l1 at 1; l1's step-1 output
    // returns to l0 at step 2.
    for (edges, dependent) in [("", [true, false, false, false]), ("[[edges]]\nfrom = \"l1\"\nto = \"l0\"\n", [true, false, true, false])] {
        let model = build(&config(&format!("{layers}{edges}")), [1, 4, 4], &device);
        let a = model.forward(random([1, 1, 4, 4], 1, &device), true).layer_outputs.unwrap();
        let b = model.forward(random([1, 1, 4, 4], 2, &device), true).layer_outputs.unwrap();
        let got: Vec<bool> = (0..4).map(|t| max_abs(a[t][0].clone() - b[t][0].clone()) > 1e-7).collect();
        assert_eq!(got, dependent, "edges {edges:?}");
    }
}

/// Two layers, an RGC in the second, and a feedback edge from it to the first.
fn rgc_with_feedback_edge() -> ConvRnnConfig {
    config(
        r#"
        times = 5
        [[layers]]
        name = "l0"
        channels = 4
        [[layers]]
        name = "l1"
        channels = 4
        pool = 2
        cell = { kind = "rgc" }
        [[edges]]
        from = "l1"
        to = "l0"
        "#,
    )
}

#[test]
fn gradients_reach_the_weights_of_feedback_edges() {
    let device = Device::flex().autodiff();
    let c = rgc_with_feedback_edge();
    for kind in [RuleKind::Backprop, RuleKind::FeedbackAlignment] {
        let rules = RuleConfig { kind, ..Default::default() };
        let model = c.init([1, 6, 6], 5, &rules, (0, 1), &device).unwrap();
        let out = model.forward(Tensor::from_inner(random([2, 1, 6, 6], 3, &device.clone().without_autodiff())), false);
        let loss = model.loss_logits(&out).into_iter().map(|l| l.sum()).reduce(|a, b| a + b).unwrap();
        let grads = loss.backward();
        let fb = model.layers[0].feedback.as_ref().expect("l0 receives feedback");
        let g = fb.weight.grad(&grads).expect("the feedback map's weights get a gradient");
        assert!(g.abs().max().into_scalar::<f64>() > 0.0, "{kind:?}");
    }
}

fn set(conv: &mut FeedbackConv2d, w: &[f32], b: &[f32]) {
    let dims = conv.weight.dims();
    let device = conv.weight.device();
    conv.weight = replace_value(conv.weight.clone(), Tensor::from_data(TensorData::new(w.to_vec(), dims), &device), false);
    let bias = conv.bias.take().unwrap();
    conv.bias = Some(replace_value(bias, Tensor::from_data(TensorData::new(b.to_vec(), [b.len()]), &device), false));
}

fn scalar(v: f32, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(vec![v], [1, 1, 1, 1]), device)
}

fn value(t: &Tensor<4>) -> f32 {
    t.clone().into_scalar::<f32>()
}

fn sig(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

fn elu(v: f32) -> f32 {
    if v > 0.0 { v } else { v.exp() - 1.0 }
}

/// One channel, 1×1 kernels, a 1×1 map: every convolution is `w·inputs + b`, so each cell's
/// step can be written out by hand.
fn one_channel_cell(kind: &str) -> ConvRnn {
    let k = r#"kernel = 1, gate_kernel = 1, tau_kernel = 1, input_kernel = 1"#;
    build(&config(&format!("times = 2\n[[layers]]\nname = \"a\"\nchannels = 1\nkernel = 1\ncell = {{ kind = \"{kind}\", {k} }}")), [1, 1, 1], &Device::flex())
}

#[test]
fn each_cell_matches_a_hand_computed_step() {
    let device = Device::flex();
    let (x, h, c) = (0.7f32, 0.3f32, -0.2f32);
    let state = |with_c: bool| CellState { h: scalar(h, &device), c: with_c.then(|| scalar(c, &device)) };

    // time_decay: h' = τ h + x.
    let mut m = one_channel_cell("time_decay");
    if let Cell::TimeDecay(td) = &mut m.layers[0].cell {
        td.tau = replace_value(td.tau.clone(), Tensor::from_data(TensorData::new(vec![0.4f32], [1]), &device), false);
    }
    let (out, _) = m.layers[0].cell.step(scalar(x, &device), &state(false), None, None);
    assert!((value(&out) - (0.4 * h + x)).abs() < 1e-6);

    // simple_rnn: h' = elu(w0 x + w1 h + b).
    let mut m = one_channel_cell("simple_rnn");
    if let Cell::Gated(g) = &mut m.layers[0].cell {
        set(&mut g.gates, &[0.5, -1.5], &[0.1]);
    }
    let (out, _) = m.layers[0].cell.step(scalar(x, &device), &state(false), None, None);
    assert!((value(&out) - elu(0.5 * x - 1.5 * h + 0.1)).abs() < 1e-6);

    // gru: r = σ(r̂ + 1), u = σ(û), h' = u h + (1 − u) tanh(wc0 x + wc1 r h + bc).
    let mut m = one_channel_cell("gru");
    if let Cell::Gated(g) = &mut m.layers[0].cell {
        set(&mut g.gates, &[0.2, 0.3, -0.4, 0.6], &[0.05, -0.1]);
        set(g.candidate.as_mut().unwrap(), &[0.9, -0.8], &[0.2]);
    }
    let (out, _) = m.layers[0].cell.step(scalar(x, &device), &state(false), None, None);
    let r = sig(0.2 * x + 0.3 * h + 0.05 + 1.0);
    let u = sig(-0.4 * x + 0.6 * h - 0.1);
    let expected = u * h + (1.0 - u) * (0.9 * x - 0.8 * r * h + 0.2).tanh();
    assert!((value(&out) - expected).abs() < 1e-6, "gru {} vs {expected}", value(&out));

    // lstm: [i, j, f, o]; c' = c σ(f + 1) + σ(i) tanh(j); h' = tanh(c') σ(o).
    let mut m = one_channel_cell("lstm");
    let w = [0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8];
    let b = [0.01, 0.02, 0.03, 0.04];
    if let Cell::Gated(g) = &mut m.layers[0].cell {
        set(&mut g.gates, &w, &b);
    }
    let (out, new) = m.layers[0].cell.step(scalar(x, &device), &state(true), None, None);
    let pre = |k: usize| w[2 * k] * x + w[2 * k + 1] * h + b[k];
    let c_new = c * sig(pre(2) + 1.0) + sig(pre(0)) * pre(1).tanh();
    assert!((value(new.c.as_ref().unwrap()) - c_new).abs() < 1e-6);
    assert!((value(&out) - c_new.tanh() * sig(pre(3))).abs() < 1e-6);

    // ugrnn: g = σ(ĝ + 1); h' = g h + (1 − g) tanh(ĉ).
    let mut m = one_channel_cell("ugrnn");
    if let Cell::Gated(g) = &mut m.layers[0].cell {
        set(&mut g.gates, &[0.3, -0.2, 0.8, 0.5], &[0.0, 0.1]);
    }
    let (out, _) = m.layers[0].cell.step(scalar(x, &device), &state(false), None, None);
    let gate = sig(0.3 * x - 0.2 * h + 1.0);
    assert!((value(&out) - (gate * h + (1.0 - gate) * (0.8 * x + 0.5 * h + 0.1).tanh())).abs() < 1e-6);

    // intersection_rnn: output gy x + (1 − gy) relu(ŷ); state gh h + (1 − gh) tanh(ĥ).
    let mut m = one_channel_cell("intersection_rnn");
    let w = [0.2, 0.1, 0.4, -0.3, -0.5, 0.6, 0.9, 0.2];
    if let Cell::Gated(g) = &mut m.layers[0].cell {
        set(&mut g.gates, &w, &[0.0; 4]);
    }
    let (out, new) = m.layers[0].cell.step(scalar(x, &device), &state(false), None, None);
    let pre = |k: usize| w[2 * k] * x + w[2 * k + 1] * h;
    let (gh, gy) = (sig(pre(0) + 1.0), sig(pre(2) + 1.0));
    assert!((value(&new.h) - (gh * h + (1.0 - gh) * pre(1).tanh())).abs() < 1e-6);
    assert!((value(&out) - (gy * x + (1.0 - gy) * pre(3).max(0.0))).abs() < 1e-6);

    // rgc (sigmoid gates, offset 1, multiplier −1, elu):
    // c' = elu((1 − σ(w_cc c + b)) c + (1 − σ(w_hc h + b)) (w_xc x + b))
    // h' = elu((1 − σ(w_hh h + b)) h + (1 − σ(w_ch c + b)) x)
    let mut m = one_channel_cell("rgc");
    if let Cell::Rgc(r) = &mut m.layers[0].cell {
        set(&mut r.input_cell, &[0.8], &[0.1]);
        let plain = |g: &mut GateConv| match g {
            GateConv::Plain(c) => c as *mut FeedbackConv2d,
            GateConv::Separable(_) => unreachable!(),
        };
        unsafe {
            set(&mut *plain(&mut r.cell_tau), &[0.5], &[-0.2]);
            set(&mut *plain(&mut r.hidden_cell), &[-0.7], &[0.3]);
            set(&mut *plain(&mut r.hidden_tau), &[0.6], &[0.0]);
            set(&mut *plain(&mut r.cell_hidden), &[1.2], &[-0.1]);
        }
    }
    let (out, new) = m.layers[0].cell.step(scalar(x, &device), &state(true), None, None);
    let c_new = elu((1.0 - sig(0.5 * c - 0.2)) * c + (1.0 - sig(-0.7 * h + 0.3)) * (0.8 * x + 0.1));
    let h_new = elu((1.0 - sig(0.6 * h)) * h + (1.0 - sig(1.2 * c - 0.1)) * x);
    assert!((value(new.c.as_ref().unwrap()) - c_new).abs() < 1e-6);
    assert!((value(&out) - h_new).abs() < 1e-6);
}

/// The released shallow ConvRNNs feed their non-RGC cells a linear pre-memory conv; the RGC
/// and cell-less layers get an elu'd drive. A 1×1 conv of weight −1 on a one makes the drive
/// −1: through a time-decay cell (τ = 0, so the output is the drive) it stays −1, not elu(−1).
#[test]
fn non_rgc_cells_get_a_linear_drive_unless_activation_says_otherwise() {
    let device = Device::flex();
    let one = Tensor::<4>::ones([1, 1, 1, 1], &device);
    for (layer, expected) in [
        ("cell = { kind = \"time_decay\" }", -1.0),
        ("cell = { kind = \"time_decay\" }\nactivation = \"elu\"", elu(-1.0)),
        ("", elu(-1.0)),
    ] {
        let mut m = build(&config(&format!("times = 2\n[[layers]]\nname = \"a\"\nchannels = 1\nkernel = 1\n{layer}")), [1, 1, 1], &device);
        set(&mut m.layers[0].conv, &[-1.0], &[0.0]);
        let out = m.forward(one.clone(), true).layer_outputs.unwrap();
        assert!((value(&out[0][0]) - expected).abs() < 1e-6, "{layer:?}: {} vs {expected}", value(&out[0][0]));
    }
    let drive = |kind: &str| config(&format!("times = 2\n[[layers]]\nname = \"a\"\ncell = {{ kind = \"{kind}\" }}")).layers[0].drive_activation();
    for kind in ["time_decay", "simple_rnn", "gru", "lstm", "ugrnn", "intersection_rnn"] {
        assert_eq!(drive(kind), Activation::Identity, "{kind}");
    }
    assert_eq!(drive("rgc"), Activation::Elu);
    assert_eq!(drive("none"), Activation::Elu);
}

#[test]
fn readouts_pick_the_documented_steps() {
    let device = Device::flex();
    let mut model = build(&config("times = 5\n[[layers]]\nname = \"a\"\nchannels = 2"), [1, 3, 3], &device);
    model.plan.loss_start = 1;
    // Two examples, two classes; logits per step (step 0 is before the loss range).
    let step = |a: [f32; 2], b: [f32; 2]| Tensor::<2>::from_data(TensorData::new(vec![a[0], a[1], b[0], b[1]], [2, 2]), &device);
    let logits = vec![
        step([9.0, 0.0], [9.0, 0.0]),
        step([0.0, 1.0], [0.0, 0.1]),  // conf ≈ .73 / .52
        step([3.0, 0.0], [0.0, 0.3]),  // ≈ .95 / .57
        step([0.0, 4.0], [0.5, 0.0]),  // ≈ .98 / .62
        step([0.0, 0.5], [0.0, 0.2]),  // last
    ];
    let u = Unrolled { logits, layer_outputs: None };
    let pick = |model: &ConvRnn| model.readout_logits(&u).into_data().try_into_vec_as::<f32>().unwrap();
    model.plan.readout = Readout::Last;
    assert_eq!(pick(&model), vec![0.0, 0.5, 0.0, 0.2]);
    model.plan.readout = Readout::Mean;
    let mean = pick(&model);
    assert!((mean[0] - 0.75).abs() < 1e-6 && (mean[1] - 1.375).abs() < 1e-6);
    model.plan.readout = Readout::MaxConfidence;
    assert_eq!(pick(&model), vec![0.0, 4.0, 0.5, 0.0]);
    // Threshold 0.9: example 0 first reaches it at step 2; example 1 never does → most confident.
    model.plan.readout = Readout::Threshold;
    model.plan.threshold = 0.9;
    assert_eq!(pick(&model), vec![3.0, 0.0, 0.5, 0.0]);
}

#[test]
fn truncated_backprop_cuts_the_gradient_path_through_time() {
    let device = Device::flex().autodiff();
    let text = "times = 6\n[[layers]]\nname = \"a\"\nchannels = 3\ncell = { kind = \"simple_rnn\" }\n[[layers]]\nname = \"b\"\nchannels = 3\ncell = { kind = \"simple_rnn\" }";
    let grad = |truncate: usize| {
        let mut c = config(text);
        c.truncate_every = truncate;
        let model = build(&c, [1, 4, 4], &device);
        let out = model.forward(Tensor::from_inner(random([2, 1, 4, 4], 5, &device.clone().without_autodiff())), false);
        let loss = out.logits.last().unwrap().clone().sum();
        model.layers[0].conv.weight.grad(&loss.backward())
    };
    // Detaching after steps 2 and 5 keeps the window 3..5 that the last loss reaches back into.
    let (full, cut) = (grad(0).unwrap(), grad(3).unwrap());
    let diff = (full.clone() - cut.clone()).abs().max().into_scalar::<f64>();
    assert!(diff > 1e-6, "truncation changed nothing");
    assert!(cut.abs().max().into_scalar::<f64>().is_finite());
    // Cutting every step leaves the last step's loss no path back to the first layer's weights
    // (the first layer reaches the readout only across a step boundary).
    assert!(grad(1).is_none());
}

#[test]
fn feedback_layer_names_cover_every_convolution() {
    let c = config(
        "times = 4\n[[layers]]\nname = \"a\"\nchannels = 4\ncell = { kind = \"rgc\", depth_separable = true, input_to_out = true, residual = true }\n[[layers]]\nname = \"b\"\nchannels = 4\n[[edges]]\nfrom = \"b\"\nto = \"a\"",
    );
    let model = build(&c, [2, 4, 4], &Device::flex());
    let names: Vec<String> = model.feedback_layers().into_iter().map(|(n, _)| n).collect();
    for expected in ["a.conv", "a.feedback", "a.residual", "a.cell.cell_tau.depthwise", "a.cell.cell_hidden.pointwise", "a.cell.input_out", "b.conv", "readout"] {
        assert!(names.contains(&expected.to_string()), "{expected} missing from {names:?}");
    }
}

#[test]
fn config_errors_name_the_offending_key() {
    let bad_edge = config("times = 4\n[[layers]]\nname = \"a\"\n[[edges]]\nfrom = \"a\"\nto = \"zz\"");
    assert!(bad_edge.validate().unwrap_err().contains("edges[0]"));
    let short = config("times = 2\n[[layers]]\nname = \"a\"\n[[layers]]\nname = \"b\"");
    assert!(short.validate().unwrap_err().contains("times"));
    let even = config("times = 4\n[[layers]]\nname = \"a\"\ncell = { kind = \"rgc\", gate_kernel = 2 }");
    assert!(even.validate().unwrap_err().contains("gate_kernel"));
}


#[test]
fn wgpu_resize_forward_and_backward_agree_with_flex() {
    let Some(gpu) = plastic_rules::testing::wgpu_test_device() else { return };
    let run = |device: &Device| {
        let ad = device.clone().autodiff();
        let x = Tensor::from_inner(random([2, 3, 4, 5], 7, device)).require_grad();
        let r = Tensor::from_inner(random([2, 3, 7, 6], 8, device));
        let mut outs = Vec::new();
        for mode in [ResizeMode::Bilinear, ResizeMode::Nearest] {
            let y = resize(x.clone(), [7, 6], mode);
            let g = x.grad(&(y.clone() * r.clone()).sum().backward()).unwrap();
            outs.push((y.inner().into_data().try_into_vec_as::<f32>().unwrap(), g.into_data().try_into_vec_as::<f32>().unwrap()));
        }
        let _ = ad;
        outs
    };
    for ((y_cpu, g_cpu), (y_gpu, g_gpu)) in run(&Device::flex()).into_iter().zip(run(&gpu)) {
        assert!(y_cpu.iter().zip(&y_gpu).all(|(a, b)| (a - b).abs() < 1e-5));
        assert!(g_cpu.iter().zip(&g_gpu).all(|(a, b)| (a - b).abs() < 1e-5));
    }
}

/// With every B set to its W, a ConvRNN trained by feedback alignment has exactly backprop's
/// gradients: the model-level version of the op's B = W test, through the whole unroll.
#[test]
fn with_b_equal_to_w_feedback_alignment_equals_backprop_through_the_unroll() {
    let device = Device::flex().autodiff();
    let c = rgc_with_feedback_edge();
    let bp = c.init([1, 6, 6], 5, &RuleConfig::default(), (0, 1), &device).unwrap();
    let mut fa = c.init([1, 6, 6], 5, &RuleConfig { kind: RuleKind::FeedbackAlignment, ..Default::default() }, (0, 1), &device).unwrap();
    for (_, layer) in fa.feedback_layers_mut() {
        layer.set_feedback_to_weight();
    }
    let x = Tensor::from_inner(random([2, 1, 6, 6], 3, &device.clone().without_autodiff()));
    let grads = |m: &ConvRnn| {
        let out = m.forward(x.clone(), false);
        let loss = m.loss_logits(&out).into_iter().map(|l| (l.clone() * l).sum()).reduce(|a, b| a + b).unwrap();
        let g = loss.backward();
        m.feedback_layers().into_iter().map(|(n, l)| (n, l.weight_grad(&g))).collect::<Vec<_>>()
    };
    for ((name, a), (_, b)) in grads(&bp).into_iter().zip(grads(&fa)) {
        let (a, b) = (a.expect("BP weight grad"), b.expect("FA weight grad"));
        let d = (a.clone() - b).abs().max().into_scalar::<f64>();
        assert!(d <= 1e-5 * a.abs().max().into_scalar::<f64>().max(1e-6), "{name}: {d}");
    }
}

/// Feedback into an RGC's cell state is mapped to the cell depth, not the layer's width (a
/// narrower cell once made the addition fail), and reaches the output one step later.
#[test]
fn rgc_feedback_into_a_narrower_cell_state_is_mapped_to_its_depth() {
    let device = Device::flex();
    let c = config(
        "times = 5\n[[layers]]\nname = \"a\"\nchannels = 6\ncell = { kind = \"rgc\", cell_depth = 3, feedback_entry = \"cell\" }\n\
         [[layers]]\nname = \"b\"\nchannels = 4\n[[edges]]\nfrom = \"b\"\nto = \"a\"",
    );
    let model = build(&c, [2, 5, 5], &device);
    assert_eq!(model.layers[0].feedback.as_ref().unwrap().weight.dims(), [3, 4, 1, 1]);
    let out = model.forward(random([2, 2, 5, 5], 3, &device), true).layer_outputs.unwrap();
    assert!(out.iter().flatten().all(|t| t.clone().into_data().try_into_vec_as::<f32>().unwrap().iter().all(|v| v.is_finite())));
}
