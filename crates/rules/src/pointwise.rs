//! Fused pointwise ops with their own backward: one pass forward and one backward where burn's
//! composition takes several, each allocating a tensor and, under autodiff, recording a node.
//!
//! A ConvRNN runs these on every layer at every time step: an RGC layer's update is two gates
//! and an elu per state. Composed from burn's ops, the accurate elu (see [`elu`]) is nine
//! elementwise passes forward and as many backward, and a gate `offset + multiplier·σ(z)` three;
//! here each is one pass each way. On flex f32 the passes are this module's loops, compiled
//! for AVX2 / AVX-512 and chosen at run time, in parallel blocks (burn-flex's `unary_op` /
//! `binary_op` closures, compiled for baseline x86-64, took a fifth longer over the ConvRNN
//! quickstart's whole step); f64 and half precision go through burn-flex's loops; elsewhere
//! (wgpu) the same formulas run as burn's ops, and the autodiff node is this module's in all
//! cases.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cpu_conv::{as_flex, to_primitive, values};

/// The squashing function of a gate `offset + multiplier · f(z)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GateNonlinearity {
    #[default]
    Sigmoid,
    Tanh,
}

#[backend_extension(Autodiff, Cube, Flex, NdArray: cfg(feature = "ndarray"))]
pub trait PointwiseBackend: Backend {
    /// elu(x): x where x > 0, e^x − 1 elsewhere.
    fn elu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // e^m − 1 = 2t / (1 − t), t = tanh(m / 2), m = min(x, 0): accurate near 0 (as expm1,
        // which burn lacks; exp(m) − 1 loses all but a few bits there) and never exponentiates
        // a large x (whose inf would make the gradient 0·inf = NaN).
        let t = Self::float_tanh(Self::float_mul_scalar(Self::float_clamp_max(x.clone(), 0.0f32.into()), 0.5f32.into()));
        let ratio = Self::float_div(Self::float_mul_scalar(t.clone(), 2.0f32.into()), Self::float_add_scalar(Self::float_neg(t), 1.0f32.into()));
        Self::float_add(Self::float_clamp_min(x, 0.0f32.into()), ratio)
    }

    /// δx of elu from its output y: δy where y > 0, δy·(y + 1) = δy·e^x elsewhere, written
    /// δy·(min(y, 0) + 1).
    fn elu_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_mul(grad, Self::float_add_scalar(Self::float_clamp_max(output, 0.0f32.into()), 1.0f32.into()))
    }

    /// relu(x): x where x > 0 (NaN stays NaN), 0 elsewhere.
    fn fused_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as burn::backend::ops::ActivationOps<Self>>::relu(x)
    }

    /// δx of relu from its output y: δy where y > 0 (or NaN), 0 elsewhere.
    fn fused_relu_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as burn::backend::ops::ActivationOps<Self>>::relu_backward(output, grad)
    }

    /// `offset + multiplier · f(z)`.
    fn gate(z: FloatTensor<Self>, nonlinearity: GateNonlinearity, offset: f32, multiplier: f32) -> FloatTensor<Self> {
        let f = match nonlinearity {
            GateNonlinearity::Sigmoid => Self::sigmoid(z),
            GateNonlinearity::Tanh => Self::float_tanh(z),
        };
        Self::float_add_scalar(Self::float_mul_scalar(f, multiplier.into()), offset.into())
    }

    /// `scale · sign(x)` (0 at 0, NaN at NaN): sign symmetry's B, never differentiated.
    fn scaled_sign(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        Self::float_mul_scalar(Self::float_sign(x), scale.into())
    }

    /// δz of [`PointwiseBackend::gate`] from its input z: δg · multiplier · f'(z).
    fn gate_backward(z: FloatTensor<Self>, grad: FloatTensor<Self>, nonlinearity: GateNonlinearity, multiplier: f32) -> FloatTensor<Self> {
        let derivative = match nonlinearity {
            GateNonlinearity::Sigmoid => {
                let s = Self::sigmoid(z);
                Self::float_mul(s.clone(), Self::float_add_scalar(Self::float_neg(s), 1.0f32.into()))
            }
            GateNonlinearity::Tanh => {
                let t = Self::float_tanh(z);
                Self::float_add_scalar(Self::float_neg(Self::float_mul(t.clone(), t)), 1.0f32.into())
            }
        };
        Self::float_mul(grad, Self::float_mul_scalar(derivative, multiplier.into()))
    }
}

impl PointwiseBackend for Cube {}
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
impl PointwiseBackend for burn::backend::NdArray {}

/// One pass each: f32 through this module's loops ([`on_flex_f32`]), f64 (and f16 and bf16
/// through f32) through burn-flex's `unary_op` / `binary_op`.
impl PointwiseBackend for Flex {
    fn fused_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = match in_place_f32(InPlaceOp::Relu, x, None) {
            Ok(y) => return y,
            Err(x) => x,
        };
        on_flex_f32(F32Op::Relu, &x, None).unwrap_or_else(|| <Self as burn::backend::ops::ActivationOps<Self>>::relu(x))
    }

    fn fused_relu_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // Written into δy's buffer where nothing else holds it (the usual case: autodiff hands
        // each gradient over once).
        let grad = match in_place_f32(InPlaceOp::ReluBackward, grad, Some(&output)) {
            Ok(d) => return d,
            Err(grad) => grad,
        };
        on_flex_f32(F32Op::ReluBackward, &output, Some(&grad)).unwrap_or_else(|| <Self as burn::backend::ops::ActivationOps<Self>>::relu_backward(output, grad))
    }

    fn elu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if let Some(y) = on_flex_f32(F32Op::Elu, &x, None) {
            return y;
        }
        burn_flex::ops::unary::unary_op(x, elu32, |v: f64| if v > 0.0 { v } else { v.exp_m1() })
    }

    fn elu_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if let Some(d) = on_flex_f32(F32Op::EluBackward, &output, Some(&grad)) {
            return d;
        }
        burn_flex::ops::binary::binary_op(output, grad, elu_backward32, |y: f64, g| if y > 0.0 { g } else { g * (y + 1.0) }, None)
    }

    fn gate(z: FloatTensor<Self>, nonlinearity: GateNonlinearity, offset: f32, multiplier: f32) -> FloatTensor<Self> {
        if let Some(g) = on_flex_f32(F32Op::Gate(nonlinearity, offset, multiplier), &z, None) {
            return g;
        }
        let (o, m) = (offset as f64, multiplier as f64);
        let f32_gate = move |v: f32| gate32(v, nonlinearity, offset, multiplier);
        match nonlinearity {
            GateNonlinearity::Sigmoid => burn_flex::ops::unary::unary_op(z, f32_gate, move |v: f64| o + m * sigmoid64(v)),
            GateNonlinearity::Tanh => burn_flex::ops::unary::unary_op(z, f32_gate, move |v: f64| o + m * v.tanh()),
        }
    }

    fn scaled_sign(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        if let Some(b) = on_flex_f32(F32Op::ScaledSign(scale), &x, None) {
            return b;
        }
        Self::float_mul_scalar(Self::float_sign(x), scale.into())
    }

    fn gate_backward(z: FloatTensor<Self>, grad: FloatTensor<Self>, nonlinearity: GateNonlinearity, multiplier: f32) -> FloatTensor<Self> {
        if let Some(d) = on_flex_f32(F32Op::GateBackward(nonlinearity, multiplier), &z, Some(&grad)) {
            return d;
        }
        let m = multiplier as f64;
        let f32_grad = move |v: f32, g| gate_backward32(v, g, nonlinearity, multiplier);
        match nonlinearity {
            GateNonlinearity::Sigmoid => burn_flex::ops::binary::binary_op(
                z,
                grad,
                f32_grad,
                move |v: f64, g| {
                    let s = sigmoid64(v);
                    g * m * s * (1.0 - s)
                },
                None,
            ),
            GateNonlinearity::Tanh => burn_flex::ops::binary::binary_op(
                z,
                grad,
                f32_grad,
                move |v: f64, g| {
                    let t = v.tanh();
                    g * m * (1.0 - t * t)
                },
                None,
            ),
        }
    }
}

/// relu(v), as burn's: NaN propagates, and −0 and every v ≤ 0 give +0.
#[inline(always)]
fn relu32(v: f32) -> f32 {
    if v.is_nan() || v > 0.0 { v } else { 0.0 }
}

/// δx of relu from its output y and δy, as burn's: δy where y > 0 or y is NaN.
#[inline(always)]
fn relu_backward32(y: f32, g: f32) -> f32 {
    if y.is_nan() || y > 0.0 { g } else { 0.0 }
}

/// elu(v), accurate near 0 (as expm1) and vectorisable; NaN propagates.
#[inline(always)]
fn elu32(v: f32) -> f32 {
    if v > 0.0 { v } else { expm1_nonpositive32(v) }
}

/// δx of elu from its output y and δy.
#[inline(always)]
fn elu_backward32(y: f32, g: f32) -> f32 {
    if y > 0.0 { g } else { g * (y + 1.0) }
}

/// `offset + multiplier · f(v)`.
#[inline(always)]
fn gate32(v: f32, nonlinearity: GateNonlinearity, offset: f32, multiplier: f32) -> f32 {
    match nonlinearity {
        GateNonlinearity::Sigmoid => offset + multiplier * sigmoid32(v),
        GateNonlinearity::Tanh => offset + multiplier * tanh32(v),
    }
}

/// δz of the gate from its input v and δg.
#[inline(always)]
fn gate_backward32(v: f32, g: f32, nonlinearity: GateNonlinearity, multiplier: f32) -> f32 {
    match nonlinearity {
        GateNonlinearity::Sigmoid => {
            let s = sigmoid32(v);
            g * multiplier * s * (1.0 - s)
        }
        GateNonlinearity::Tanh => {
            let t = tanh32(v);
            g * multiplier * (1.0 - t * t)
        }
    }
}

/// This module's ops on f32 values (the formulas above; burn-flex's loops use them too).
#[derive(Debug, Clone, Copy)]
enum F32Op {
    Relu,
    /// From relu's output and δy.
    ReluBackward,
    Elu,
    /// From elu's output and δy.
    EluBackward,
    /// Nonlinearity, offset, multiplier.
    Gate(GateNonlinearity, f32, f32),
    /// From the gate's input z and δg: nonlinearity, multiplier.
    GateBackward(GateNonlinearity, f32),
    /// `scale · sign(x)`.
    ScaledSign(f32),
}

/// `op` over `a` (and `b` for a backward), into `out`.
#[inline(always)]
fn apply(op: F32Op, a: &[f32], b: &[f32], out: &mut [f32]) {
    use GateNonlinearity::{Sigmoid, Tanh};
    // One loop per op (and nonlinearity), so that each is a plain loop the compiler vectorises.
    match op {
        F32Op::Relu => out.iter_mut().zip(a).for_each(|(o, &v)| *o = relu32(v)),
        F32Op::ReluBackward => out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&y, &g))| *o = relu_backward32(y, g)),
        F32Op::Elu => out.iter_mut().zip(a).for_each(|(o, &v)| *o = elu32(v)),
        F32Op::EluBackward => out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&y, &g))| *o = elu_backward32(y, g)),
        F32Op::Gate(Sigmoid, offset, multiplier) => out.iter_mut().zip(a).for_each(|(o, &v)| *o = gate32(v, Sigmoid, offset, multiplier)),
        F32Op::Gate(Tanh, offset, multiplier) => out.iter_mut().zip(a).for_each(|(o, &v)| *o = gate32(v, Tanh, offset, multiplier)),
        F32Op::GateBackward(Sigmoid, multiplier) => out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&v, &g))| *o = gate_backward32(v, g, Sigmoid, multiplier)),
        F32Op::GateBackward(Tanh, multiplier) => out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&v, &g))| *o = gate_backward32(v, g, Tanh, multiplier)),
        // sign(0) = 0 and sign(NaN) = NaN as burn's, times the scale: v · 0 keeps both.
        F32Op::ScaledSign(scale) => out.iter_mut().zip(a).for_each(|(o, &v)| *o = if v > 0.0 { scale } else if v < 0.0 { -scale } else { v * 0.0 * scale }),
    }
}

/// [`apply`] compiled for the widest vector unit this CPU has (AVX-512: 16 lanes of the
/// polynomial exp; burn-flex's closures are compiled for baseline x86-64's 4).
fn apply_dispatch(op: F32Op, a: &[f32], b: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(op: F32Op, a: &[f32], b: &[f32], out: &mut [f32]) {
            apply(op, a, b, out)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(op: F32Op, a: &[f32], b: &[f32], out: &mut [f32]) {
            apply(op, a, b, out)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(op, a, b, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { avx2(op, a, b, out) };
        }
    }
    apply(op, a, b, out)
}

/// `op` on f32 flex tensors (`b`, for a backward, of `a`'s shape), in parallel blocks; `None`
/// for other dtypes or shapes (burn-flex's loops take those).
fn on_flex_f32(op: F32Op, a: &FloatTensor<Flex>, b: Option<&FloatTensor<Flex>>) -> Option<FloatTensor<Flex>> {
    const BLOCK: usize = 1 << 14;
    let af = as_flex::<Flex>(a)?;
    let bf = match b {
        Some(b) => Some(as_flex::<Flex>(b).filter(|bf| bf.shape() == af.shape())?),
        None => None,
    };
    let (av, bv) = (values(af), bf.map(values));
    let out = crate::cpu_conv::filled_by_chunks(av.len(), BLOCK, || (), |_, i, o| {
        let b = bv.as_ref().map_or(&[][..], |b| &b[i * BLOCK..][..o.len()]);
        apply_dispatch(op, &av[i * BLOCK..][..o.len()], b, o);
    });
    Some(to_primitive::<Flex>(out, af.shape()))
}

/// `op` written over `a`'s own buffer, in parallel blocks, where `a` is an f32 flex tensor that
/// nothing else holds, contiguous from its start (and `b`, if any, f32 of its shape); `a` back
/// otherwise. Saves a tensor's allocation and a pass of fresh memory: relu's input (a
/// convolution's output) and δy are each used once.
fn in_place_f32(op: InPlaceOp, a: FloatTensor<Flex>, b: Option<&FloatTensor<Flex>>) -> Result<FloatTensor<Flex>, FloatTensor<Flex>> {
    const BLOCK: usize = 1 << 14;
    let bf = match b {
        Some(b) => match as_flex::<Flex>(b).filter(|bf| bf.shape() == a.shape() && bf.dtype() == burn::tensor::DType::F32) {
            Some(bf) => Some(bf),
            None => return Err(a),
        },
        None => None,
    };
    let layout = a.layout();
    if a.dtype() != burn::tensor::DType::F32 || !a.is_unique() || !layout.is_contiguous() || layout.start_offset() != 0 {
        return Err(a);
    }
    let bv = bf.map(values);
    let mut a = a;
    let n = a.layout().num_elements();
    let inout = &mut a.storage_mut::<f32>()[..n];
    inout.par_chunks_mut(BLOCK).enumerate().for_each(|(i, chunk)| {
        let b = bv.as_ref().map_or(&[][..], |b| &b[i * BLOCK..][..chunk.len()]);
        apply_in_place_dispatch(op, chunk, b);
    });
    Ok(a)
}

/// The ops [`in_place_f32`] writes over an operand's own buffer.
#[derive(Debug, Clone, Copy)]
enum InPlaceOp {
    /// Over x.
    Relu,
    /// Over δy, `b` being relu's output.
    ReluBackward,
}

/// `op` over `inout` (and `b`), written back into `inout`.
#[inline(always)]
fn apply_in_place(op: InPlaceOp, inout: &mut [f32], b: &[f32]) {
    match op {
        InPlaceOp::Relu => inout.iter_mut().for_each(|v| *v = relu32(*v)),
        InPlaceOp::ReluBackward => inout.iter_mut().zip(b).for_each(|(g, &y)| *g = relu_backward32(y, *g)),
    }
}

/// [`apply_in_place`] compiled for the widest vector unit this CPU has, as [`apply_dispatch`].
fn apply_in_place_dispatch(op: InPlaceOp, inout: &mut [f32], b: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(op: InPlaceOp, inout: &mut [f32], b: &[f32]) {
            apply_in_place(op, inout, b)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(op: InPlaceOp, inout: &mut [f32], b: &[f32]) {
            apply_in_place(op, inout, b)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(op, inout, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { avx2(op, inout, b) };
        }
    }
    apply_in_place(op, inout, b)
}

/// e^v in f32 within 2 ulp (Cephes' expf: v = n·ln 2 + r, |r| ≤ ln 2 / 2, a degree-6 polynomial
/// in r, scaled by 2ⁿ through the exponent bits), written without branches so the loops that
/// call it vectorise — libm's `expf` is a scalar call per element. v is clamped to [−87, 88]
/// (e^88 = 1.7e38 is still finite; below e^−87 the gates and elu read 0 either way); NaN stays
/// NaN.
#[inline(always)]
pub fn exp32(v: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2⁹.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer with plain arithmetic.
    const ROUND: f32 = 12_582_912.0;
    let v = v.clamp(-87.0, 88.0);
    let n = (v * LOG2E + ROUND) - ROUND;
    let r = v - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// e^v − 1 for v ≤ 0 within 3 ulp: near 0 (|v| < 0.35) the Taylor series to v⁹ (no
/// cancellation; the first omitted term is below 2⁻³⁰ of the result), elsewhere
/// [`exp32`]`(v) − 1` (where e^v ≤ 0.71, so the subtraction loses at most 2 bits). Branch-free.
#[inline(always)]
pub fn expm1_nonpositive32(v: f32) -> f32 {
    let mut p = 1.0 / 362_880.0f32;
    for c in [1.0 / 40_320.0, 1.0 / 5_040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0] {
        p = p * v + c;
    }
    let series = p * v;
    if v > -0.35 { series } else { exp32(v) - 1.0 }
}

/// σ(v) = 1 / (1 + e^−v) with [`exp32`], without overflow for either sign and without
/// cancellation for very negative v (e^v / (1 + e^v) there).
#[inline(always)]
pub fn sigmoid32(v: f32) -> f32 {
    let e = exp32(-v.abs());
    (if v >= 0.0 { 1.0 } else { e }) / (1.0 + e)
}

/// tanh(v) with [`expm1_nonpositive32`]: tanh|v| = −m / (2 + m), m = e^−2|v| − 1, accurate near 0
/// (no 1 − 2/(e^2v + 1) cancellation) and branch-free.
#[inline(always)]
pub fn tanh32(v: f32) -> f32 {
    let m = expm1_nonpositive32(-2.0 * v.abs());
    (-m / (2.0 + m)).copysign(v)
}

fn sigmoid64(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

impl<B: PointwiseBackend, C: CheckpointStrategy> PointwiseBackend for Autodiff<B, C> {
    fn fused_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        FromOutput::Relu.record::<B, C>(x)
    }

    fn elu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        FromOutput::Elu.record::<B, C>(x)
    }

    fn gate(z: FloatTensor<Self>, nonlinearity: GateNonlinearity, offset: f32, multiplier: f32) -> FloatTensor<Self> {
        match (GateBackward { nonlinearity, multiplier }).prepare::<C>([z.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let z = z.into_primitive();
                prep.finish(z.clone(), B::gate(z, nonlinearity, offset, multiplier))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gate(z.into_primitive(), nonlinearity, offset, multiplier)),
        }
    }
}

/// The node of an op whose derivative is a function of its output, which it keeps: relu (δy
/// passes where the output is positive) and elu (δy·(min(y, 0) + 1)).
#[derive(Debug, Clone, Copy)]
enum FromOutput {
    Relu,
    Elu,
}

impl FromOutput {
    fn forward<B: PointwiseBackend>(self, x: FloatTensor<B>) -> FloatTensor<B> {
        match self {
            FromOutput::Relu => B::fused_relu(x),
            FromOutput::Elu => B::elu(x),
        }
    }

    /// The op on x under autodiff, keeping its output for the backward where x is tracked.
    fn record<B: PointwiseBackend, C: CheckpointStrategy>(self, x: FloatTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
        match self.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = self.forward::<B>(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(self.forward::<B>(x.into_primitive())),
        }
    }
}

impl<B: PointwiseBackend> Backward<B, 1> for FromOutput {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = &ops.parents[0] {
            let dx = match self {
                FromOutput::Relu => B::fused_relu_backward(ops.state, grad),
                FromOutput::Elu => B::elu_backward(ops.state, grad),
            };
            grads.register::<B>(node.id, dx);
        }
    }
}

/// Keeps the gate's input z (the derivative is recomputed from it, exactly).
#[derive(Debug)]
struct GateBackward {
    nonlinearity: GateNonlinearity,
    multiplier: f32,
}

impl<B: PointwiseBackend> Backward<B, 1> for GateBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = &ops.parents[0] {
            grads.register::<B>(node.id, B::gate_backward(ops.state, grad, self.nonlinearity, self.multiplier));
        }
    }
}

/// relu(x) as one op with its own backward, on flex in parallel blocks and in place where x is
/// not held elsewhere (burn-flex's is one thread, in baseline x86-64's 4-lane vectors).
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as PointwiseBackend>::fused_relu(x.into_dispatch()))
}

/// elu(x) = x for x > 0, e^x − 1 otherwise, as one op with its own backward.
pub fn elu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as PointwiseBackend>::elu(x.into_dispatch()))
}

/// `scale · sign(x)` in one pass (sign symmetry's B; a constant, never differentiated).
pub fn scaled_sign<const D: usize>(x: Tensor<D>, scale: f32) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as PointwiseBackend>::scaled_sign(x.into_dispatch(), scale))
}

/// σ(x), as the gate with offset 0 and multiplier 1.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    gate(x, GateNonlinearity::Sigmoid, 0.0, 1.0)
}

/// tanh(x), as the gate with offset 0 and multiplier 1.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    gate(x, GateNonlinearity::Tanh, 0.0, 1.0)
}

/// A gate `offset + multiplier · f(z)` (f = σ or tanh), as one op with its own backward.
pub fn gate<const D: usize>(z: Tensor<D>, nonlinearity: GateNonlinearity, offset: f32, multiplier: f32) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as PointwiseBackend>::gate(z.into_dispatch(), nonlinearity, offset, multiplier))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    /// The fused ops and their gradients against burn's composition of the same formula (the
    /// backend's default methods, which wgpu runs), on flex; and the gradients against central
    /// differences of the forward.
    #[test]
    fn fused_ops_match_their_composition_and_finite_differences() {
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (0..41).map(|i| (i as f32 - 20.0) * 0.37).chain([0.0, -1e-5, 3e-4, 60.0, -60.0]).collect();
        let n = xs.len();
        let x = || Tensor::<1>::from_data(TensorData::new(xs.clone(), [n]), &device).require_grad();
        let weights: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
        let w = Tensor::<1>::from_data(TensorData::new(weights.clone(), [n]), &device);
        type Composed = fn(Tensor<1>) -> Tensor<1>;
        let cases: Vec<(&str, Box<dyn Fn(Tensor<1>) -> Tensor<1>>, Composed, Box<dyn Fn(f64) -> f64>)> = vec![
            ("relu", Box::new(relu), burn::tensor::activation::relu, Box::new(|v: f64| v.max(0.0))),
            (
                "elu",
                Box::new(elu),
                |x| {
                    let t = (x.clone().clamp_max(0.0) * 0.5).tanh();
                    burn::tensor::activation::relu(x) + t.clone() * 2.0 / (t.neg() + 1.0)
                },
                Box::new(|v: f64| if v > 0.0 { v } else { v.exp_m1() }),
            ),
            (
                "sigmoid gate",
                Box::new(|x| gate(x, GateNonlinearity::Sigmoid, 1.0, -1.0)),
                |x| burn::tensor::activation::sigmoid(x) * -1.0 + 1.0,
                Box::new(|v: f64| 1.0 - 1.0 / (1.0 + (-v).exp())),
            ),
            (
                "tanh gate",
                Box::new(|x| gate(x, GateNonlinearity::Tanh, 0.5, 2.0)),
                |x| x.tanh() * 2.0 + 0.5,
                Box::new(|v: f64| 0.5 + 2.0 * v.tanh()),
            ),
        ];
        for (name, fused, composed, exact) in cases {
            let (xf, xc) = (x(), x());
            let (yf, yc) = (fused(xf.clone()), composed(xc.clone()));
            let gf = values(xf.grad(&(yf.clone() * w.clone()).sum().backward()).unwrap());
            let gc = values(xc.grad(&(yc.clone() * w.clone()).sum().backward()).unwrap());
            let (yf, yc) = (values(yf), values(yc));
            for i in 0..n {
                let v = xs[i] as f64;
                assert!((yf[i] as f64 - exact(v)).abs() <= 1e-6 * exact(v).abs().max(1.0), "{name}({v}) = {} vs {}", yf[i], exact(v));
                assert!((yf[i] - yc[i]).abs() <= 1e-6 * yc[i].abs().max(1.0), "{name}({v}): fused {} vs composed {}", yf[i], yc[i]);
                assert!((gf[i] - gc[i]).abs() <= 1e-5 * gc[i].abs().max(1.0), "{name}'({v}): fused {} vs composed {}", gf[i], gc[i]);
                let h = 1e-4 * v.abs().max(1.0);
                let numeric = weights[i] as f64 * (exact(v + h) - exact(v - h)) / (2.0 * h);
                if v.abs() > 1e-3 {
                    assert!((gf[i] as f64 - numeric).abs() <= 1e-4 * numeric.abs().max(1.0), "{name}'({v}) = {} vs finite difference {numeric}", gf[i]);
                }
            }
        }
    }

    /// On wgpu the ops run the trait's composed formulas (not flex's loops) under the same
    /// autodiff node: same values and gradients.
    #[test]
    fn wgpu_fused_ops_agree_with_flex() {
        let Some(gpu) = crate::testing::wgpu_test_device() else { return };
        let xs: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) * 0.41).collect();
        let run = |device: &Device| {
            let device = device.clone().autodiff();
            let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [4, 6]), &device).require_grad();
            let y = elu(x.clone()) + gate(x.clone(), GateNonlinearity::Sigmoid, 1.0, -1.0) * 3.0 + gate(x.clone(), GateNonlinearity::Tanh, 0.0, 0.5) * 5.0 + relu(x.clone() * 2.0) * 7.0;
            let g = values(x.grad(&(y.clone() * y.clone()).sum().backward()).unwrap());
            (values(y), g)
        };
        let (cpu, wgpu) = (run(&Device::flex()), run(&gpu));
        for (a, b) in cpu.0.iter().chain(&cpu.1).zip(wgpu.0.iter().chain(&wgpu.1)) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "flex {a} vs wgpu {b}");
        }
    }

    /// The vectorisable exp, expm1 and σ against f64 over their whole range.
    #[test]
    fn fast_exp_expm1_and_sigmoid_are_accurate() {
        let (mut worst_exp, mut worst_expm1, mut worst_sigmoid, mut worst_tanh) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let relative = |got: f32, want: f64| if want == 0.0 { got.abs() as f64 } else { ((got as f64 - want) / want).abs() };
        for i in 0..=400_000 {
            let v = -87.0 + 175.0 * i as f32 / 400_000.0;
            worst_exp = worst_exp.max(relative(exp32(v), (v as f64).exp()));
            worst_sigmoid = worst_sigmoid.max(relative(sigmoid32(v), sigmoid64(v as f64)));
            let w = v / 8.0;
            worst_tanh = worst_tanh.max(relative(tanh32(w), (w as f64).tanh()));
            let u = -(i as f32 / 400_000.0).powi(3) * 90.0;
            worst_expm1 = worst_expm1.max(relative(expm1_nonpositive32(u), (u as f64).exp_m1()));
        }
        for v in [-1e-30f32, -1e-7, -3e-4, -0.349, -0.351] {
            worst_expm1 = worst_expm1.max(relative(expm1_nonpositive32(v), (v as f64).exp_m1()));
            worst_tanh = worst_tanh.max(relative(tanh32(v), (v as f64).tanh()).max(relative(tanh32(-v), (-v as f64).tanh())));
        }
        // f32's ulp is 6e-8 relative at worst.
        assert!(worst_exp < 2.5e-7 && worst_expm1 < 3e-7 && worst_sigmoid < 3e-7 && worst_tanh < 4e-7, "exp {worst_exp:e}, expm1 {worst_expm1:e}, σ {worst_sigmoid:e}, tanh {worst_tanh:e}");
        assert!(tanh32(f32::NAN).is_nan() && tanh32(50.0) == 1.0 && tanh32(-50.0) == -1.0);
        assert!(exp32(f32::NAN).is_nan() && expm1_nonpositive32(f32::NAN).is_nan() && exp32(200.0).is_finite() && expm1_nonpositive32(-1e4) == -1.0);
    }

    /// Without autodiff the ops run the inner backend's pass directly; nothing is recorded.
    #[test]
    fn fused_ops_run_on_a_plain_device() {
        let x = Tensor::<2>::from_data(TensorData::new(vec![-1.0f32, 0.0, 2.0, -30.0], [2, 2]), &Device::flex());
        let y = values(elu(x.clone()));
        assert_eq!(y[1..3], [0.0, 2.0]);
        assert!((y[0] as f64 - (-1.0f64).exp_m1()).abs() < 1e-7 && (y[3] + 1.0).abs() < 1e-7);
        let g = values(gate(x.clone(), GateNonlinearity::Sigmoid, 0.0, 1.0));
        assert!((g[1] - 0.5).abs() < 1e-7 && g[3] > 0.0 && g[3] < 1e-12);
        assert_eq!(values(scaled_sign(x.clone(), 0.25)), [-0.25, 0.0, 0.25, -0.25]);
        let nan = Tensor::<1>::from_data(TensorData::new(vec![f32::NAN], [1]), &Device::flex());
        assert!(values(scaled_sign(nan, 0.25))[0].is_nan());
        // relu on a tensor held elsewhere (a new one) and on one that is not (in place), as
        // burn's: NaN stays NaN, −0 becomes +0.
        let signed = vec![-1.0f32, -0.0, 2.0, f32::NAN, f32::NEG_INFINITY, 1e-30];
        let shared = Tensor::<1>::from_data(TensorData::new(signed.clone(), [6]), &Device::flex());
        let want = values(burn::tensor::activation::relu(shared.clone()));
        let got = [values(relu(shared.clone())), values(relu(Tensor::<1>::from_data(TensorData::new(signed, [6]), &Device::flex())))];
        for got in got {
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{got:?} vs {want:?}");
        }
        assert_eq!(values(shared)[0], -1.0, "the shared input is left alone");
    }

    /// relu's backward in place over δy and into a new tensor (δy held elsewhere) equals burn's
    /// on a tensor of several blocks, NaN and zero outputs included.
    #[test]
    fn relu_backward_in_place_and_not_equals_burns() {
        let device = Device::flex();
        let n = 3 * (1 << 14) + 77;
        let out: Vec<f32> = (0..n).map(|i| if i % 97 == 0 { f32::NAN } else { (((i * 7919) % 201) as f32 - 100.0).max(0.0) }).collect();
        let grad: Vec<f32> = (0..n).map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0).collect();
        let t = |v: &Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [n]), &device).into_dispatch();
        let want = values(Tensor::<1>::from_dispatch(<Dispatch as burn::backend::ops::ActivationOps<Dispatch>>::relu_backward(t(&out), t(&grad))));
        let in_place = values(Tensor::<1>::from_dispatch(<Dispatch as PointwiseBackend>::fused_relu_backward(t(&out), t(&grad))));
        let held = t(&grad);
        let fresh = values(Tensor::<1>::from_dispatch(<Dispatch as PointwiseBackend>::fused_relu_backward(t(&out), held.clone())));
        for (i, ((a, b), c)) in want.iter().zip(&in_place).zip(&fresh).enumerate() {
            assert!(a.to_bits() == b.to_bits() && a.to_bits() == c.to_bits(), "element {i}: burn {a}, in place {b}, new {c}");
        }
        assert_eq!(values(Tensor::<1>::from_dispatch(held)), grad, "δy held elsewhere is left alone");
    }

    /// A tensor of several parallel blocks and a part block, and a strided (transposed) one:
    /// f32 through this module's loops equals f64 through burn-flex's, element for element.
    #[test]
    fn f32_loops_cover_every_block_and_layout() {
        let device = Device::flex();
        let xs: Vec<f32> = (0..211 * 190).map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0).collect();
        let x = Tensor::<2>::from_data(TensorData::new(xs, [211, 190]), &device);
        for x in [x.clone(), x.transpose()] {
            let x64 = x.clone().cast(burn::tensor::DType::F64);
            let (y, y64) = (values(elu(x.clone())), elu(x64.clone()).cast(burn::tensor::DType::F32).into_data().try_to_vec::<f32>().unwrap());
            let (g, g64) = (values(gate(x.clone(), GateNonlinearity::Tanh, 0.5, 2.0)), gate(x64, GateNonlinearity::Tanh, 0.5, 2.0).cast(burn::tensor::DType::F32).into_data().try_to_vec::<f32>().unwrap());
            for i in 0..y.len() {
                assert!((y[i] - y64[i]).abs() <= 1e-6 * y64[i].abs().max(1.0), "elu at {i}: {} vs {}", y[i], y64[i]);
                assert!((g[i] - g64[i]).abs() <= 1e-6 * g64[i].abs().max(1.0), "gate at {i}: {} vs {}", g[i], g64[i]);
            }
        }
    }
}
