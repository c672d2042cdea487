//! Gradient tests of the feedback op against independent computations.
//!
//! flex runs the full matrix of shapes (stride, padding, dilation, groups) and rules; wgpu runs
//! one small Linear and one small Conv2d case per rule family on whatever adapter it finds
//! (Mesa's software Vulkan in CI). Without any wgpu adapter the wgpu tests say they were
//! skipped, unless `PLASTIC_REQUIRE_WGPU=1`, which makes them fail instead.

use burn::tensor::module::{conv_transpose2d, conv2d, linear};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{DType, Device, Tensor, TensorData};
use plastic_rules::init::normal_stream;
use plastic_rules::ops::{BackwardSpec, FeedbackGrad, LocalLoss, feedback_conv2d, feedback_linear, plain_conv2d, plain_linear};
use plastic_rules::{LayerRule, MirrorSource, SignVariant};

/// A conv geometry: (c_in, c_out, kernel, stride, padding, dilation, groups, h, w).
type Geometry = (usize, usize, usize, usize, usize, usize, usize, usize, usize);

const GEOMETRIES: [Geometry; 6] = [
    (3, 4, 3, 1, 1, 1, 1, 6, 6),
    (2, 3, 3, 2, 0, 1, 1, 7, 7),
    (2, 4, 3, 2, 1, 1, 1, 8, 6),
    (2, 2, 3, 1, 2, 2, 1, 6, 7),
    (4, 6, 3, 1, 1, 1, 2, 5, 5),
    (4, 4, 1, 2, 0, 1, 4, 6, 6),
];

fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(normal_stream(n, seed, 0), shape), device)
}

fn random_f64<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    let v: Vec<f64> = normal_stream(n, seed, 0).into_iter().map(f64::from).collect();
    Tensor::from_data(TensorData::new(v, shape), (device, DType::F64))
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f64 {
    (a.inner() - b.inner()).abs().max().into_scalar::<f64>()
}

fn scale<const D: usize>(t: &Tensor<D>) -> f64 {
    t.clone().inner().abs().max().into_scalar::<f64>().max(1e-6)
}

fn assert_close<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>, rel: f64) {
    let s = scale(&want);
    let d = max_abs_diff(got, want);
    assert!(d <= rel * s, "{what}: max |diff| {d:e} vs scale {s:e}");
}

/// The rules whose backward uses B, with their B-gradient spec.
fn rules() -> Vec<LayerRule> {
    vec![
        LayerRule::FeedbackAlignment,
        LayerRule::SignSymmetry(SignVariant::Usf),
        LayerRule::KolenPollack,
        LayerRule::WeightMirror { alpha: 0.5, beta: 1.0, source: MirrorSource::Data },
        LayerRule::InformationAlignment { alpha: 1.0, beta: 0.5, gamma: 0.5 },
        LayerRule::SymmetricAlignment { alpha: 0.5, beta: 1.0 },
        LayerRule::ActivationAlignment { alpha: 0.5, beta: 1.0, gamma: 0.0 },
    ]
}

fn options(g: Geometry) -> ConvOptions<2> {
    let (_, _, _, s, p, d, groups, _, _) = g;
    ConvOptions::new([s, s], [p, p], [d, d], groups)
}

/// With B = W, every rule's x, W and bias gradients equal backprop's (conv2d).
fn conv_rules_equal_backprop_when_b_is_w(device: &Device, geometries: &[Geometry], rules: &[LayerRule]) {
    let ad = device.clone().autodiff();
    for &g in geometries {
        let (ci, co, k, _, _, _, groups, h, w) = g;
        for rule in rules {
            let x = random([2, ci, h, w], 1, &ad).require_grad();
            let wt = random([co, ci / groups, k, k], 2, &ad).require_grad();
            let bias = random([co], 3, &ad).require_grad();
            // B = W as a separate tensor (uSF's B is s·sign(W): make W = ±1 so that s·sign(W) = W).
            let (wt, b) = match rule {
                LayerRule::SignSymmetry(_) => {
                    let w1 = Tensor::from_inner(wt.clone().inner().sign()).require_grad();
                    (w1.clone(), Tensor::from_inner(w1.clone().inner().sign()))
                }
                _ => (wt.clone(), Tensor::from_inner(wt.clone().inner()).require_grad()),
            };
            let y_ref = conv2d(x.clone(), wt.clone(), Some(bias.clone()), options(g));
            let r = random(y_ref.dims(), 4, &ad.clone().without_autodiff());
            let r = Tensor::from_inner(r);
            let grads_ref = (y_ref.clone() * r.clone()).sum().backward();
            let spec = BackwardSpec { feedback_grad: rule.feedback_grad(), tap: None };
            let y = feedback_conv2d(x.clone(), wt.clone(), Some(bias.clone()), b.clone(), options(g), spec);
            assert_close(&format!("{rule:?} {g:?} output"), y.clone(), y_ref, 1e-6);
            let grads = (y * r).sum().backward();
            assert_close(&format!("{rule:?} {g:?} δx"), x.grad(&grads).unwrap(), x.grad(&grads_ref).unwrap(), 1e-5);
            assert_close(&format!("{rule:?} {g:?} δW"), wt.grad(&grads).unwrap(), wt.grad(&grads_ref).unwrap(), 1e-5);
            assert_close(&format!("{rule:?} {g:?} δbias"), bias.grad(&grads).unwrap(), bias.grad(&grads_ref).unwrap(), 1e-5);
        }
    }
}

fn linear_rules_equal_backprop_when_b_is_w(device: &Device, rules: &[LayerRule]) {
    let ad = device.clone().autodiff();
    for rule in rules {
        let x = random([5, 7], 1, &ad).require_grad();
        let w0 = random([7, 4], 2, &ad);
        let (wt, b) = match rule {
            LayerRule::SignSymmetry(_) => {
                let w1 = Tensor::from_inner(w0.inner().sign()).require_grad();
                (w1.clone(), Tensor::from_inner(w1.inner()))
            }
            _ => (w0.clone().require_grad(), Tensor::from_inner(w0.inner()).require_grad()),
        };
        let bias = random([4], 3, &ad).require_grad();
        let r = Tensor::from_inner(random([5, 4], 4, &ad.clone().without_autodiff()));
        let grads_ref = (linear(x.clone(), wt.clone(), Some(bias.clone())) * r.clone()).sum().backward();
        let spec = BackwardSpec { feedback_grad: rule.feedback_grad(), tap: None };
        let grads = (feedback_linear(x.clone(), wt.clone(), Some(bias.clone()), b, spec) * r).sum().backward();
        assert_close(&format!("{rule:?} linear δx"), x.grad(&grads).unwrap(), x.grad(&grads_ref).unwrap(), 1e-5);
        assert_close(&format!("{rule:?} linear δW"), wt.grad(&grads).unwrap(), wt.grad(&grads_ref).unwrap(), 1e-5);
        assert_close(&format!("{rule:?} linear δbias"), bias.grad(&grads).unwrap(), bias.grad(&grads_ref).unwrap(), 1e-5);
    }
}

/// Backprop's own ops (a plain conv or dense layer: on flex plastic's products forward and
/// backward) against burn's conv2d and linear and their autodiff.
fn plain_ops_equal_burns_ops(device: &Device, geometries: &[Geometry]) {
    let ad = device.clone().autodiff();
    for &g in geometries {
        let (ci, co, k, _, _, _, groups, h, w) = g;
        let x = random([2, ci, h, w], 1, &ad).require_grad();
        let wt = random([co, ci / groups, k, k], 2, &ad).require_grad();
        let bias = random([co], 3, &ad).require_grad();
        let y_ref = conv2d(x.clone(), wt.clone(), Some(bias.clone()), options(g));
        let r = Tensor::from_inner(random(y_ref.dims(), 4, &ad.clone().without_autodiff()));
        let grads_ref = (y_ref.clone() * r.clone()).sum().backward();
        let y = plain_conv2d(x.clone(), wt.clone(), Some(bias.clone()), options(g));
        assert_close(&format!("plain conv {g:?} output"), y.clone(), y_ref, 1e-6);
        let grads = (y * r).sum().backward();
        assert_close(&format!("plain conv {g:?} δx"), x.grad(&grads).unwrap(), x.grad(&grads_ref).unwrap(), 1e-5);
        assert_close(&format!("plain conv {g:?} δW"), wt.grad(&grads).unwrap(), wt.grad(&grads_ref).unwrap(), 1e-5);
        assert_close(&format!("plain conv {g:?} δbias"), bias.grad(&grads).unwrap(), bias.grad(&grads_ref).unwrap(), 1e-5);
    }
    // Shapes where the products' strides differ from their sizes (k > n, a one-row batch).
    for (n, d_in, d_out) in [(5, 7, 4), (1, 9, 3), (6, 2, 11)] {
        let x = random([n, d_in], 1, &ad).require_grad();
        let wt = random([d_in, d_out], 2, &ad).require_grad();
        let bias = random([d_out], 3, &ad).require_grad();
        let r = Tensor::from_inner(random([n, d_out], 4, &ad.clone().without_autodiff()));
        let y_ref = linear(x.clone(), wt.clone(), Some(bias.clone()));
        let grads_ref = (y_ref.clone() * r.clone()).sum().backward();
        let y = plain_linear(x.clone(), wt.clone(), Some(bias.clone()));
        assert_close(&format!("plain linear {n}×{d_in}→{d_out} output"), y.clone(), y_ref, 1e-6);
        let grads = (y * r).sum().backward();
        assert_close(&format!("plain linear {n}×{d_in}→{d_out} δx"), x.grad(&grads).unwrap(), x.grad(&grads_ref).unwrap(), 1e-5);
        assert_close(&format!("plain linear {n}×{d_in}→{d_out} δW"), wt.grad(&grads).unwrap(), wt.grad(&grads_ref).unwrap(), 1e-5);
        assert_close(&format!("plain linear {n}×{d_in}→{d_out} δbias"), bias.grad(&grads).unwrap(), bias.grad(&grads_ref).unwrap(), 1e-5);
    }
}

#[test]
fn flex_plain_ops_equal_burns_ops() {
    plain_ops_equal_burns_ops(&Device::flex(), &GEOMETRIES);
}

#[test]
fn flex_every_rule_equals_backprop_when_b_is_w() {
    conv_rules_equal_backprop_when_b_is_w(&Device::flex(), &GEOMETRIES, &rules());
    linear_rules_equal_backprop_when_b_is_w(&Device::flex(), &rules());
}

/// Weight and bias gradients against central finite differences, in f64.
#[test]
fn flex_weight_gradients_match_finite_differences() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    for &g in &GEOMETRIES {
        let (ci, co, k, _, _, _, groups, h, w) = g;
        let x = random_f64([2, ci, h, w], 1, &device);
        let w0 = random_f64([co, ci / groups, k, k], 2, &device);
        let b0 = random_f64([co], 3, &device);
        let fb = random_f64([co, ci / groups, k, k], 5, &device);
        let out_dims = conv2d(x.clone(), w0.clone(), None, options(g)).dims();
        let r = random_f64(out_dims, 4, &device);
        let loss = |w: Tensor<4>, b: Tensor<1>| (conv2d(x.clone(), w, Some(b), options(g)) * r.clone()).sum().into_scalar::<f64>();
        // Analytic: the feedback op with a random B (FA); its weight gradient is backprop's.
        let wt = Tensor::from_inner(w0.clone()).require_grad();
        let bt = Tensor::from_inner(b0.clone()).require_grad();
        let spec = BackwardSpec { feedback_grad: FeedbackGrad::None, tap: None };
        let y = feedback_conv2d(Tensor::from_inner(x.clone()), wt.clone(), Some(bt.clone()), Tensor::from_inner(fb), options(g), spec);
        let grads = (y * Tensor::from_inner(r.clone())).sum().backward();
        let gw: Vec<f64> = wt.grad(&grads).unwrap().into_data().try_into_vec_as().unwrap();
        let gb: Vec<f64> = bt.grad(&grads).unwrap().into_data().try_into_vec_as().unwrap();
        let eps = 1e-6;
        let wv: Vec<f64> = w0.clone().into_data().try_into_vec_as().unwrap();
        for i in (0..wv.len()).step_by(wv.len().div_ceil(12)) {
            let bump = |d: f64| {
                let mut v = wv.clone();
                v[i] += d;
                Tensor::<4>::from_data(TensorData::new(v, w0.dims()), (&device, DType::F64))
            };
            let fd = (loss(bump(eps), b0.clone()) - loss(bump(-eps), b0.clone())) / (2.0 * eps);
            assert!((fd - gw[i]).abs() <= 1e-6 * (1.0 + fd.abs()), "{g:?} W[{i}]: fd {fd} analytic {}", gw[i]);
        }
        let bv: Vec<f64> = b0.clone().into_data().try_into_vec_as().unwrap();
        for i in 0..bv.len() {
            let mut v = bv.clone();
            v[i] += eps;
            let up = loss(w0.clone(), Tensor::from_data(TensorData::new(v.clone(), [co]), (&device, DType::F64)));
            v[i] -= 2.0 * eps;
            let down = loss(w0.clone(), Tensor::from_data(TensorData::new(v, [co]), (&device, DType::F64)));
            let fd = (up - down) / (2.0 * eps);
            assert!((fd - gb[i]).abs() <= 1e-6 * (1.0 + fd.abs()), "{g:?} bias[{i}]: fd {fd} analytic {}", gb[i]);
        }
    }
    // Linear, every weight entry.
    let x = random_f64([4, 5], 1, &device);
    let w0 = random_f64([5, 3], 2, &device);
    let r = random_f64([4, 3], 4, &device);
    let wt = Tensor::from_inner(w0.clone()).require_grad();
    let spec = BackwardSpec { feedback_grad: FeedbackGrad::None, tap: None };
    let y = feedback_linear(Tensor::from_inner(x.clone()), wt.clone(), None, Tensor::from_inner(random_f64([5, 3], 9, &device)), spec);
    let gw: Vec<f64> = wt.grad(&(y * Tensor::from_inner(r.clone())).sum().backward()).unwrap().into_data().try_into_vec_as().unwrap();
    let wv: Vec<f64> = w0.into_data().try_into_vec_as().unwrap();
    for i in 0..wv.len() {
        let at = |d: f64| {
            let mut v = wv.clone();
            v[i] += d;
            let w = Tensor::<2>::from_data(TensorData::new(v, [5, 3]), (&device, DType::F64));
            (linear(x.clone(), w, None) * r.clone()).sum().into_scalar::<f64>()
        };
        let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
        assert!((fd - gw[i]).abs() <= 1e-6 * (1.0 + fd.abs()), "linear W[{i}]: fd {fd} analytic {}", gw[i]);
    }
    let _ = ad;
}

/// Output padding that makes a transposed convolution return exactly the input's size.
fn output_padding(n: usize, k: usize, s: usize, p: usize, d: usize) -> usize {
    (n + 2 * p - d * (k - 1) - 1) % s
}

/// Feedback alignment's δx is the transposed convolution of δy with B, computed here with
/// burn's conv_transpose2d.
fn fa_input_grad_is_transposed_conv_with_b(device: &Device, geometries: &[Geometry]) {
    let ad = device.clone().autodiff();
    for &g in geometries {
        let (ci, co, k, s, p, d, groups, h, w) = g;
        let x = random([2, ci, h, w], 1, &ad).require_grad();
        let wt = random([co, ci / groups, k, k], 2, &ad).require_grad();
        let fb = random([co, ci / groups, k, k], 7, device);
        let spec = BackwardSpec { feedback_grad: FeedbackGrad::None, tap: None };
        let y = feedback_conv2d(x.clone(), wt, None, Tensor::from_inner(fb.clone()), options(g), spec);
        let dy = random(y.dims(), 4, device);
        let grads = (y * Tensor::from_inner(dy.clone())).sum().backward();
        let opts = ConvTransposeOptions::new([s, s], [p, p], [output_padding(h, k, s, p, d), output_padding(w, k, s, p, d)], [d, d], groups);
        // conv_transpose2d's weight is [c_in_of_transpose, c_out / groups, k, k] = W's [c_out, c_in / groups, k, k].
        let expected = conv_transpose2d(dy, fb, None, opts);
        assert_close(&format!("{g:?} FA δx"), x.grad(&grads).unwrap(), expected, 1e-5);
    }
}

#[test]
fn flex_fa_input_grad_is_transposed_conv_with_b() {
    fa_input_grad_is_transposed_conv_with_b(&Device::flex(), &GEOMETRIES);
}

/// x̂ = (x − channel mean) / rms(x − channel mean), computed independently of the op: batch
/// statistics over every axis but the channel axis (1).
fn normalise<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let mean = (0..D).filter(|&axis| axis != 1).fold(x.clone(), |m, axis| m.mean_dim(axis));
    let centred = x - mean;
    let rms = (centred.clone() * centred.clone()).mean().sqrt();
    centred / rms.reshape([1; D])
}

/// R(B) written with ordinary differentiable ops (the oracle): conv stop-gradient on x and W,
/// on the normalised input x̂ and ŷ = W x̂, expectations over the batch and output positions.
fn local_loss_autodiff_conv(x: Tensor<4>, w: Tensor<4>, b: Tensor<4>, l: LocalLoss, opts: ConvOptions<2>, tr: ConvTransposeOptions<2>) -> Tensor<1> {
    let x = normalise(x).detach();
    let y = conv2d(x.clone(), w.clone(), None, opts.clone()).detach();
    let [batch, _, h_out, w_out] = y.dims();
    let n = (batch * h_out * w_out) as f64;
    let bx = conv2d(x, b.clone(), None, opts);
    let bty = conv_transpose2d(y.clone(), b.clone(), None, tr);
    let decay = (w.clone() * w.clone()).sum().detach() + (b.clone() * b.clone()).sum();
    let self_align = -(b * w).sum();
    let amp = -(y.clone() * bx.clone()).sum() / n;
    let null = (bty.clone() * bty).sum() / n;
    let sparse = ((y.clone() * y).sum() + (bx.clone() * bx).sum()) / n;
    decay * l.decay as f64 + self_align * l.self_align as f64 + amp * l.amp as f64 + null * l.null as f64 + sparse * l.sparse as f64
}

fn local_losses() -> Vec<LocalLoss> {
    vec![
        LocalLoss { decay: 0.5, amp: 1.0, ..Default::default() },
        LocalLoss { amp: 1.0, null: 0.5, decay: 0.5, ..Default::default() },
        LocalLoss { decay: 0.5, self_align: 1.0, ..Default::default() },
        LocalLoss { sparse: 0.5, amp: 1.0, ..Default::default() },
        LocalLoss { null: 0.7, ..Default::default() },
        LocalLoss { decay: 0.3, self_align: 0.2, amp: 0.9, null: 0.4, sparse: 0.6 },
    ]
}

fn closed_form_b_grads_match_autodiff(device: &Device, geometries: &[Geometry], losses: &[LocalLoss]) {
    closed_form_b_grads_match_autodiff_at(device, geometries, losses, 0.0, 1e-4);
}

/// The closed form against autodiff of the loss, on inputs with mean `offset` (a ReLU layer's
/// inputs are far from centred: the closed form centres by subtracting corrections computed
/// apart, where the oracle centres x first).
fn closed_form_b_grads_match_autodiff_at(device: &Device, geometries: &[Geometry], losses: &[LocalLoss], offset: f32, tolerance: f64) {
    let ad = device.clone().autodiff();
    for &g in geometries {
        let (ci, co, k, s, p, d, groups, h, w) = g;
        for (&l, w_tracked) in losses.iter().flat_map(|l| [(l, false), (l, true)]) {
            let x = random([3, ci, h, w], 1, device) + offset;
            let wt = random([co, ci / groups, k, k], 2, device);
            let b0 = random([co, ci / groups, k, k], 5, device);
            // The op's closed form (its gradient ignores δy). With W tracked too, the x-side
            // term is computed in the same call as δW.
            let b = Tensor::from_inner(b0.clone()).require_grad();
            let w_in = if w_tracked { Tensor::from_inner(wt.clone()).require_grad() } else { Tensor::from_inner(wt.clone()) };
            let spec = BackwardSpec { feedback_grad: FeedbackGrad::Local(l), tap: None };
            let y = feedback_conv2d(Tensor::from_inner(x.clone()), w_in, Some(Tensor::from_inner(random([co], 3, device))), b.clone(), options(g), spec);
            let got = b.grad(&y.sum().backward()).unwrap();
            let bo = Tensor::from_inner(b0).require_grad();
            let tr = ConvTransposeOptions::new([s, s], [p, p], [output_padding(h, k, s, p, d), output_padding(w, k, s, p, d)], [d, d], groups);
            let oracle = local_loss_autodiff_conv(Tensor::from_inner(x), Tensor::from_inner(wt), bo.clone(), l, options(g), tr);
            let want = bo.grad(&oracle.backward()).unwrap();
            assert_close(&format!("{g:?} {l:?} offset {offset} W tracked {w_tracked} ∂R/∂B"), got, want, tolerance);
        }
    }
    // Linear: y = xW, Bx ≡ xB, Bᵀy ≡ yBᵀ (burn's [in, out] layout).
    for (&l, w_tracked) in losses.iter().flat_map(|l| [(l, false), (l, true)]) {
        let x = random([6, 5], 1, device);
        let wt = random([5, 4], 2, device);
        let b0 = random([5, 4], 5, device);
        let b = Tensor::from_inner(b0.clone()).require_grad();
        let w_in = if w_tracked { Tensor::from_inner(wt.clone()).require_grad() } else { Tensor::from_inner(wt.clone()) };
        let spec = BackwardSpec { feedback_grad: FeedbackGrad::Local(l), tap: None };
        let got = b.grad(&feedback_linear(Tensor::from_inner(x.clone()), w_in, None, b.clone(), spec).sum().backward()).unwrap();
        let (x, wt) = (normalise(Tensor::from_inner(x)).detach(), Tensor::from_inner(wt));
        let bo = Tensor::from_inner(b0).require_grad();
        let y = x.clone().matmul(wt.clone()).detach();
        let bx = x.matmul(bo.clone());
        let bty = y.clone().matmul(bo.clone().transpose());
        let r = (wt.clone() * wt.clone()).sum().detach() * l.decay as f64 + (bo.clone() * bo.clone()).sum() * l.decay as f64
            - (bo.clone() * wt).sum() * l.self_align as f64
            - (y.clone() * bx.clone()).sum() / 6.0 * l.amp as f64
            + (bty.clone() * bty).sum() / 6.0 * l.null as f64
            + ((y.clone() * y).sum() + (bx.clone() * bx).sum()) / 6.0 * l.sparse as f64;
        let want = bo.grad(&r.backward()).unwrap();
        assert_close(&format!("linear {l:?} W tracked {w_tracked} ∂R/∂B"), got, want, 1e-4);
    }
    let _ = ad;
}

#[test]
fn flex_closed_form_feedback_grads_match_autodiff_of_the_local_loss() {
    closed_form_b_grads_match_autodiff(&Device::flex(), &GEOMETRIES, &local_losses());
}

#[test]
fn flex_closed_form_feedback_grads_hold_for_uncentred_inputs() {
    closed_form_b_grads_match_autodiff_at(&Device::flex(), &GEOMETRIES[..2], &local_losses(), 3.0, 1e-4);
}

/// A layer whose input is the same everywhere (a ConvRNN layer before its input arrives, a
/// state still at zero) has x̂ = 0, so the data terms vanish and ∂R/∂B is the parameter terms
/// alone, although 1/rms is 10¹² there: the closed form must form y − s before anything
/// scales it (a version that subtracted one example's Bᵀs from the batch's Bᵀy gave 5·10¹²
/// here, and information alignment stopped aligning B in the ConvRNN quickstart).
#[test]
fn flex_closed_form_feedback_grads_of_a_constant_input_are_the_parameter_terms() {
    let device = Device::flex();
    // The ConvRNN quickstart's batch 32 and its 4×4 layer: there a batch's input gradient and
    // one example's take different paths (a convolution of δy against col2im, where C_out
    // outnumbers one example's positions), so the two sides round apart.
    for (constant, (ci, co, k, s, p, d, groups, h, w)) in [(0.0, GEOMETRIES[0]), (2.5, GEOMETRIES[1]), (0.0, (32, 32, 3, 1, 1, 1, 1, 4, 4)), (0.7, (16, 32, 3, 1, 1, 1, 1, 8, 8))] {
        for l in local_losses() {
            let x = Tensor::<4>::zeros([32, ci, h, w], &device) + constant;
            let wt = random([co, ci / groups, k, k], 2, &device);
            let b0 = random([co, ci / groups, k, k], 5, &device);
            let b = Tensor::from_inner(b0.clone()).require_grad();
            let spec = BackwardSpec { feedback_grad: FeedbackGrad::Local(l), tap: None };
            let options = ConvOptions::new([s, s], [p, p], [d, d], groups);
            let y = feedback_conv2d(Tensor::from_inner(x), Tensor::from_inner(wt.clone()), Some(Tensor::from_inner(random([co], 3, &device))), b.clone(), options, spec);
            let got = b.grad(&y.sum().backward()).unwrap();
            let want = b0 * (2.0 * l.decay) - wt * l.self_align;
            assert_close(&format!("constant {constant} {l:?}"), got, want, 1e-5);
        }
    }
}

#[test]
fn flex_kolen_pollack_b_gets_exactly_the_weight_gradient() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let g = GEOMETRIES[2];
    let (ci, co, k, _, _, _, groups, h, w) = g;
    let x = random([2, ci, h, w], 1, &ad);
    let wt = random([co, ci / groups, k, k], 2, &ad).require_grad();
    let b = random([co, ci / groups, k, k], 5, &ad).require_grad();
    let spec = BackwardSpec { feedback_grad: FeedbackGrad::WeightGrad, tap: None };
    let y = feedback_conv2d(x, wt.clone(), None, b.clone(), options(g), spec);
    let r = Tensor::from_inner(random(y.dims(), 4, &device));
    let grads = (y * r).sum().backward();
    assert_eq!(wt.grad(&grads).unwrap().into_data(), b.grad(&grads).unwrap().into_data());
}

/// SGD on B alone (W fixed), the layer driven by white noise, B's gradient from the op.
fn drive_b(rule: LayerRule, steps: usize, lr: f64) -> (Tensor<2>, Tensor<2>, Vec<f64>) {
    let device = Device::flex();
    let w = random([16, 8], 2, &device);
    let mut b = random([16, 8], 5, &device) * 0.3;
    let FeedbackGrad::Local(l) = rule.feedback_grad() else { panic!("{rule:?} has no local loss") };
    let mut losses = Vec::new();
    let n = 256;
    for step in 0..steps {
        let x = Tensor::<2>::from_data(TensorData::new(normal_stream(n * 16, 11, step as u64), [n, 16]), &device);
        let bt = Tensor::from_inner(b.clone()).require_grad();
        let spec = BackwardSpec { feedback_grad: FeedbackGrad::Local(l), tap: None };
        let y = feedback_linear(Tensor::from_inner(x.clone()), Tensor::from_inner(w.clone()), None, bt.clone(), spec);
        let g = bt.grad(&y.sum().backward()).unwrap();
        // The local loss itself, for the record (IA must lower it).
        let yv = x.clone().matmul(w.clone());
        let bx = x.matmul(b.clone());
        let bty = yv.clone().matmul(b.clone().transpose());
        let r = ((w.clone() * w.clone()).sum() + (b.clone() * b.clone()).sum()) * l.decay as f64 - (b.clone() * w.clone()).sum() * l.self_align as f64
            - (yv.clone() * bx.clone()).sum() / n as f64 * l.amp as f64
            + (bty.clone() * bty).sum() / n as f64 * l.null as f64
            + ((yv.clone() * yv).sum() + (bx.clone() * bx).sum()) / n as f64 * l.sparse as f64;
        losses.push(r.into_scalar::<f64>());
        b = b - g * lr;
    }
    (w, b, losses)
}

fn angle(a: Tensor<2>, b: Tensor<2>) -> f64 {
    let dot = (a.clone() * b.clone()).sum().into_scalar::<f64>();
    let na = (a.clone() * a).sum().into_scalar::<f64>();
    let nb = (b.clone() * b).sum().into_scalar::<f64>();
    plastic_rules::tap::angle_degrees(dot, na, nb)
}

#[test]
fn dynamics_weight_mirror_aligns_b_with_w_on_white_noise() {
    let (w, b, _) = drive_b(LayerRule::WeightMirror { alpha: 0.5, beta: 0.5, source: MirrorSource::Data }, 400, 0.05);
    let a = angle(w, b);
    assert!(a < 5.0, "weight mirror left B at {a:.2}° from W");
}

#[test]
fn dynamics_symmetric_alignment_reaches_b_equals_w() {
    let (w, b, _) = drive_b(LayerRule::SymmetricAlignment { alpha: 0.5, beta: 1.0 }, 300, 0.05);
    let rel = ((b.clone() - w.clone()).abs().max().into_scalar::<f64>()) / w.abs().max().into_scalar::<f64>();
    assert!(rel < 1e-3, "‖B − W‖∞ / ‖W‖∞ = {rel:e}");
}

#[test]
fn dynamics_activation_alignment_aligns_b_with_w() {
    let (w, b, _) = drive_b(LayerRule::ActivationAlignment { alpha: 0.5, beta: 1.0, gamma: 0.0 }, 300, 0.02);
    let a = angle(w, b);
    assert!(a < 5.0, "activation alignment left B at {a:.2}° from W");
}

#[test]
fn dynamics_information_alignment_lowers_its_local_loss() {
    let (_, _, losses) = drive_b(LayerRule::InformationAlignment { alpha: 1.0, beta: 0.5, gamma: 0.5 }, 200, 0.005);
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < first - 0.1 * first.abs(), "IA local loss {first} → {last}");
}

#[test]
fn dynamics_kolen_pollack_brings_b_to_w() {
    // W and B both take the op's gradients (δW for both) on a noisy regression task, with the
    // same decoupled weight decay, so W − B shrinks by exactly (1 − lr·λ) per step.
    let device = Device::flex();
    let target = random([8, 4], 21, &device);
    let mut w = random([8, 4], 2, &device);
    let mut b = random([8, 4], 5, &device);
    let gap0 = w.clone() - b.clone();
    let (lr, decay, steps): (f64, f64, u64) = (0.05, 0.5, 400);
    for step in 0..steps {
        let x = Tensor::<2>::from_data(TensorData::new(normal_stream(32 * 8, 13, step), [32, 8]), &device);
        let wt = Tensor::from_inner(w.clone()).require_grad();
        let bt = Tensor::from_inner(b.clone()).require_grad();
        let spec = BackwardSpec { feedback_grad: FeedbackGrad::WeightGrad, tap: None };
        let y = feedback_linear(Tensor::from_inner(x.clone()), wt.clone(), None, bt.clone(), spec);
        let err = y - Tensor::from_inner(x.matmul(target.clone()));
        let grads = (err.clone() * err).sum().backward();
        w = w.clone() * (1.0 - lr * decay) - wt.grad(&grads).unwrap() * (lr / 32.0);
        b = b.clone() * (1.0 - lr * decay) - bt.grad(&grads).unwrap() * (lr / 32.0);
    }
    // f32 rounding of W and B themselves (|W| ~ 1) bounds how exactly the small gap can follow the law.
    let expected = gap0.clone() * (1.0 - lr * decay).powi(steps as i32);
    let off = max_abs_diff(w.clone() - b.clone(), expected);
    assert!(off < 1e-5 * scale(&w), "W − B departs from (1 − lr·λ)ⁿ (W₀ − B₀) by {off:e}");
    let gap = (w - b).abs().max().into_scalar::<f64>();
    assert!(gap < 1e-3 * gap0.abs().max().into_scalar::<f64>(), "‖W − B‖∞ = {gap}");
}


/// One small Linear and one small Conv2d case per rule family, on wgpu.
#[test]
fn wgpu_small_cases_per_rule_family() {
    let Some(device) = plastic_rules::testing::wgpu_test_device() else { return };
    let families = [LayerRule::FeedbackAlignment, LayerRule::KolenPollack, LayerRule::InformationAlignment { alpha: 1.0, beta: 0.5, gamma: 0.5 }];
    let small: Geometry = (2, 3, 3, 2, 1, 1, 1, 5, 5);
    conv_rules_equal_backprop_when_b_is_w(&device, &[small], &families);
    linear_rules_equal_backprop_when_b_is_w(&device, &families);
    plain_ops_equal_burns_ops(&device, &[small]);
    fa_input_grad_is_transposed_conv_with_b(&device, &[small]);
    closed_form_b_grads_match_autodiff(&device, &[small], &[LocalLoss { decay: 0.3, self_align: 0.2, amp: 0.9, null: 0.4, sparse: 0.6 }]);
}

/// A layer on the data (an input that carries no gradient): W's gradient is backprop's under
/// every rule; a B that learns (local losses, KP) still gets its rule's update there, as in
/// Akrout's and Kunin's code, equal to the one it gets on a tracked input; a fixed B (FA) gets
/// none.
#[test]
fn flex_first_layer_b_learns_on_untracked_input() {
    use plastic_rules::{FeedbackConv2dConfig, FeedbackLinearConfig};
    let ad = Device::flex().autodiff();
    let wm = LayerRule::WeightMirror { alpha: 0.5, beta: 0.5, source: MirrorSource::Data };
    let conv = FeedbackConv2dConfig::new([2, 3], [3, 3]).with_padding([1, 1]).with_rule(wm).init(&ad);
    let bp = FeedbackConv2dConfig::new([2, 3], [3, 3]).with_padding([1, 1]).init(&ad);
    let x = random([2, 2, 5, 5], 1, &ad);
    let bp = plastic_rules::FeedbackConv2d { weight: plastic_rules::replace_value(bp.weight, conv.weight.val(), true), ..bp };
    let (g_rule, g_bp) = (conv.forward(x.clone()).sum().backward(), bp.forward(x.clone()).sum().backward());
    assert_close("W grad on the data", conv.weight.grad(&g_rule).unwrap(), bp.weight.grad(&g_bp).unwrap(), 1e-6);
    let on_data = conv.feedback.as_ref().unwrap().grad(&g_rule).expect("B of the layer on the data learns");
    let tracked = conv.forward(x.clone().require_grad()).sum().backward();
    assert_close("B grad on the data vs on a tracked input", on_data, conv.feedback.as_ref().unwrap().grad(&tracked).unwrap(), 1e-6);
    let kp = FeedbackConv2dConfig::new([2, 3], [3, 3]).with_padding([1, 1]).with_rule(LayerRule::KolenPollack).init(&ad);
    let g = kp.forward(x.clone()).sum().backward();
    assert_close("KP's B on the data gets δW", kp.feedback.as_ref().unwrap().grad(&g).unwrap(), kp.weight.grad(&g).unwrap(), 0.0);
    let fa = FeedbackConv2dConfig::new([2, 3], [3, 3]).with_padding([1, 1]).with_rule(LayerRule::FeedbackAlignment).init(&ad);
    assert!(fa.feedback.as_ref().unwrap().grad(&fa.forward(x).sum().backward()).is_none(), "FA's fixed B got a gradient");

    let linear = FeedbackLinearConfig::new(4, 3).with_rule(wm).init(&ad);
    let x = random([5, 4], 2, &ad);
    assert!(linear.feedback.as_ref().unwrap().grad(&linear.forward(x.clone()).sum().backward()).is_some());
    assert!(linear.feedback.as_ref().unwrap().grad(&linear.forward(x.require_grad()).sum().backward()).is_some());
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

/// Sign symmetry's B against hand computations: uSF is sign(W) at W's init scale √(2/fan-in);
/// frSF's magnitudes are drawn once (from the feedback seed's magnitude stream) and kept;
/// brSF's are redrawn for every step, from the stream of that step; the backward uses that B.
#[test]
fn sign_symmetry_feedback_matches_hand_computations() {
    use plastic_rules::init::WeightInit;
    use plastic_rules::{FeedbackLayer, FeedbackLinearConfig, SeedPurpose, derive_seed};
    let ad = Device::flex().autodiff();
    let (d_in, d_out, seed, stream) = (6usize, 4usize, 9u64, 3u64);
    let layer = |variant| FeedbackLinearConfig::new(d_in, d_out).with_rule(LayerRule::SignSymmetry(variant)).with_feedback_seed(seed).with_stream(stream).init(&ad);
    let sign = |w: &[f64]| w.iter().map(|v| v.signum()).collect::<Vec<_>>();
    let magnitudes = |draw_stream: u64| -> Vec<f64> {
        WeightInit::KaimingUniform.sample(d_in * d_out, d_in, d_out, derive_seed(seed, SeedPurpose::Magnitudes), draw_stream).iter().map(|v| v.abs() as f64).collect()
    };
    let close = |what: &str, got: &[f64], want: &[f64]| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{what}: got {got:?}, want {want:?}");
        }
    };

    let usf = layer(SignVariant::Usf);
    assert!(usf.feedback.is_none() && usf.magnitude.is_none(), "uSF stores nothing");
    let w = values(usf.weight.val());
    let scale = (2.0 / d_in as f64).sqrt();
    close("uSF", &values(usf.feedback_flat()), &sign(&w).iter().map(|s| s * scale).collect::<Vec<_>>());

    let frsf = layer(SignVariant::Frsf);
    let m = magnitudes(stream);
    let want: Vec<f64> = sign(&values(frsf.weight.val())).iter().zip(&m).map(|(s, m)| s * m).collect();
    close("frSF magnitudes", &values(frsf.magnitude.as_ref().unwrap().val()), &m);
    assert!(!frsf.magnitude.as_ref().unwrap().is_require_grad(), "frSF's magnitudes are fixed");
    for step in [0, 7] {
        frsf.tap().set_step(step);
        close(&format!("frSF at step {step}"), &values(frsf.feedback_flat()), &want);
    }

    let brsf = layer(SignVariant::Brsf);
    let s = sign(&values(brsf.weight.val()));
    let mut seen = Vec::new();
    for step in [3u64, 4, 3] {
        brsf.tap().set_step(step);
        let want: Vec<f64> = s.iter().zip(magnitudes(((step + 1) << 20) + stream)).map(|(s, m)| s * m).collect();
        let got = values(brsf.feedback_flat());
        close(&format!("brSF at step {step}"), &got, &want);
        // The backward sends the error through this step's B: δx = 1·Bᵀ.
        let x = Tensor::<2>::ones([2, d_in], &ad).require_grad();
        let gx = values(x.grad(&brsf.forward(x.clone()).sum().backward()).unwrap());
        let row_sums: Vec<f64> = want.chunks(d_out).map(|r| r.iter().sum()).collect();
        close(&format!("brSF δx at step {step}"), &gx[..d_in], &row_sums);
        seen.push(got);
    }
    assert_ne!(seen[0], seen[1], "brSF must redraw its magnitudes each step");
    assert_eq!(seen[0], seen[2], "brSF's draw for a step is reproducible");
}

/// Akrout's mirror step against a hand computation: white noise x of the configured spread
/// (from the feedback seed's mirror-noise stream of that step), normalised as the data terms
/// are (x̂ = centred, unit RMS), ŷ = x̂W, and B ← B + lr·(E[x̂ ŷᵀ] − decay·B). On enough noise the
/// estimate is W itself (Cov(x̂) ≈ I), which is why one step with lr = decay = 1 lands near W.
#[test]
fn noise_mirror_step_matches_a_hand_computation() {
    use plastic_rules::{FeedbackLayer, FeedbackLinearConfig, MirrorSettings, SeedPurpose, derive_seed};
    let (d_in, d_out, seed, stream) = (5usize, 3usize, 17u64, 2u64);
    let wm = LayerRule::WeightMirror { alpha: 0.5, beta: 0.5, source: MirrorSource::Noise };
    let mut layer = FeedbackLinearConfig::new(d_in, d_out).with_rule(wm).with_feedback_seed(seed).with_stream(stream).init(&Device::flex());
    let (w, b) = (values(layer.weight.val()), values(layer.feedback.as_ref().unwrap().val()));
    let settings = MirrorSettings { noise_std: 0.7, lr: 0.1, decay: 0.2, batch: 9 };
    layer.mirror_step(&settings, 5);

    let noise: Vec<f64> = plastic_rules::init::normal_noise(9 * d_in, derive_seed(seed, SeedPurpose::MirrorNoise), (5 << 20) + stream).iter().map(|v| *v as f64 * 0.7).collect();
    let x: Vec<&[f64]> = noise.chunks(d_in).collect();
    let mean: Vec<f64> = (0..d_in).map(|i| x.iter().map(|r| r[i]).sum::<f64>() / 9.0).collect();
    let rms = (x.iter().flat_map(|r| r.iter().zip(&mean).map(|(v, m)| (v - m) * (v - m))).sum::<f64>() / (9 * d_in) as f64).sqrt();
    let x_hat: Vec<Vec<f64>> = x.iter().map(|r| r.iter().zip(&mean).map(|(v, m)| (v - m) / rms).collect()).collect();
    let y_hat: Vec<Vec<f64>> = x_hat.iter().map(|r| (0..d_out).map(|o| (0..d_in).map(|i| r[i] * w[i * d_out + o]).sum()).collect()).collect();
    let want: Vec<f64> = (0..d_in * d_out)
        .map(|k| {
            let (i, o) = (k / d_out, k % d_out);
            let estimate = (0..9).map(|n| x_hat[n][i] * y_hat[n][o]).sum::<f64>() / 9.0;
            b[k] + 0.1 * (estimate - 0.2 * b[k])
        })
        .collect();
    let got = values(layer.feedback.as_ref().unwrap().val());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "mirror step: got {got:?}, want {want:?}");
    }

    let mut big = FeedbackLinearConfig::new(16, 8).with_rule(wm).init(&Device::flex());
    big.mirror_step(&MirrorSettings { noise_std: 3.0, lr: 1.0, decay: 1.0, batch: 8192 }, 0);
    let a = angle(big.weight.val(), big.feedback.as_ref().unwrap().val());
    assert!(a < 3.0, "one full mirror step on 8192 noise samples left B {a:.2}° from W");
}

/// `grad_angle` (Bᵀδy against Wᵀδy) and `true_grad_angle` (this δx against backprop's δx)
/// are 0° when B = W, and clearly not for a random B.
#[test]
fn gradient_angles_are_zero_when_b_is_w() {
    use plastic_rules::{FeedbackConv2dConfig, FeedbackLayer, FeedbackLinearConfig, TapRequest};
    let ad = Device::flex().autodiff();
    let measure = |layer: &dyn FeedbackLayer, backward: &dyn Fn()| -> (f64, f64) {
        let tap = layer.tap();
        tap.set_request(TapRequest { grad_angle: true, capture_input_grad: true, ..Default::default() });
        backward();
        tap.set_request(TapRequest { backprop: true, compare_input_grad: true, ..Default::default() });
        backward();
        tap.set_request(TapRequest::default());
        (tap.take_grad_angle().unwrap(), tap.take_true_grad_angle().unwrap())
    };
    for set_b_to_w in [true, false] {
        let mut linear = FeedbackLinearConfig::new(6, 4).with_rule(LayerRule::FeedbackAlignment).init(&ad);
        let mut conv = FeedbackConv2dConfig::new([2, 3], [3, 3]).with_stride([2, 2]).with_rule(LayerRule::FeedbackAlignment).init(&ad);
        if set_b_to_w {
            linear.set_feedback_to_weight();
            conv.set_feedback_to_weight();
        }
        let (xl, xc) = (random([5, 6], 1, &ad).require_grad(), random([2, 2, 7, 7], 2, &ad).require_grad());
        let (rl, rc) = (random([5, 4], 3, &ad), random([2, 3, 3, 3], 4, &ad));
        let angles = [
            measure(&linear, &|| drop((linear.forward(xl.clone()) * rl.clone()).sum().backward())),
            measure(&conv, &|| drop((conv.forward(xc.clone()) * rc.clone()).sum().backward())),
        ];
        for (layer, (grad, true_grad)) in ["linear", "conv"].iter().zip(angles) {
            if set_b_to_w {
                assert!(grad < 0.05 && true_grad < 0.05, "{layer} with B = W: grad_angle {grad}°, true_grad_angle {true_grad}°");
            } else {
                assert!(grad > 10.0 && true_grad > 10.0, "{layer} with a random B: grad_angle {grad}°, true_grad_angle {true_grad}°");
            }
        }
    }
}
