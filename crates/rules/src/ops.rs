//! The feedback op: a Conv2d or Linear whose backward pass sends the error down through a
//! feedback tensor B instead of the forward weights W, and registers B's own gradient in
//! closed form.
//!
//! It is a backend extension (`#[backend_extension]`) with a hand-written autodiff `Backward`,
//! so it is a real node of burn's graph: one `backward()` gives the gradients of x, W, the bias
//! and B. On a device without autodiff it is an ordinary conv / matmul.
//!
//! For a layer y = f(x; W) (+ bias), given δy:
//! - δx = Bᵀδy (a transposed convolution with B; Wᵀδy when the tap asks for backprop),
//! - δW = δy xᵀ and δbias = Σ δy, exactly as backprop,
//! - δB = what [`FeedbackGrad`] says: nothing, δW (Kolen–Pollack), or the gradient of a local
//!   alignment loss R(B) built from the primitives of Kunin et al. (see [`LocalLoss`]).

use std::fmt::Debug;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, ExtensionType, Flex, TensorMetadata, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Shape, Slice, Tensor};

use crate::cpu_conv;
use crate::tap::LayerTap;

/// Coefficients of the local loss whose gradient trains B (all terms stop-gradient on x and W;
/// for a convolution, "Bx" / "Bᵀy" are the convolution with B and its transpose):
///
/// R = decay·(‖W‖² + ‖B‖²) − self_align·⟨B, W⟩ − amp·E[ŷ·(Bx̂)] + null·E‖Bᵀŷ‖²
///     + sparse·(E‖ŷ‖² + E‖Bx̂‖²)
///
/// ∂R/∂B = 2·decay·B − self_align·W − amp·E[ŷ x̂ᵀ] + 2·null·E[ŷ (Bᵀŷ)ᵀ] + 2·sparse·E[(Bx̂) x̂ᵀ]
///
/// The data terms read the layer's input centred per channel and scaled to unit RMS,
/// x̂ = (x − E[x]) / rms(x − E[x]) (batch statistics, as the optional centring and
/// normalisation of Kunin et al.'s code), and ŷ = W x̂; E is the mean over the batch and, for a
/// convolution, over output positions. Without this the data terms scale with the spatial size
/// and with E[x²] — for a ReLU layer's uncentred input, E[xxᵀ] is dominated by the mean, so
/// weight mirror's fixed point B ∝ W·E[xxᵀ] is a rank-one matrix many times W's size — and the
/// rules only trained with Adam. With it, the fixed points are scale-free: B = (β/2α)·W·Cov(x̂)
/// for weight mirror, B = W for symmetric and activation alignment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LocalLoss {
    pub decay: f32,
    pub self_align: f32,
    pub amp: f32,
    pub null: f32,
    pub sparse: f32,
}

impl LocalLoss {
    /// Whether the backward reads ŷ from the layer's kept output. The sparse term's gradient
    /// takes the amp term with it into one convolution of x̂ (see [`weight_and_local_grads`]),
    /// so activation alignment does not keep y.
    fn needs_output(&self) -> bool {
        self.null != 0.0 || (self.amp != 0.0 && self.sparse == 0.0)
    }
}

/// Which gradient the op registers for B.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum FeedbackGrad {
    /// B is fixed or derived from W (feedback alignment, sign symmetry).
    #[default]
    None,
    /// B receives W's gradient δW (Kolen–Pollack).
    WeightGrad,
    /// B descends a local alignment loss (weight mirror, information / symmetric / activation
    /// alignment).
    Local(LocalLoss),
}

/// Everything the backward needs to know besides the tensors.
#[derive(Debug, Clone, Default)]
pub struct BackwardSpec {
    pub feedback_grad: FeedbackGrad,
    pub tap: Option<LayerTap>,
}

/// A bias that may be absent. (The extension macro routes `Option<FloatTensor>` arguments
/// but does not unwrap them in 0.22.1; an `ExtensionType` enum goes through.)
#[derive(ExtensionType)]
pub enum MaybeBias<B: Backend> {
    Present(FloatTensor<B>),
    Absent,
}

impl<B: Backend> MaybeBias<B> {
    fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            MaybeBias::Present(b) => Some(b),
            MaybeBias::Absent => None,
        }
    }
}

#[backend_extension(Autodiff, Cube, Flex, NdArray: cfg(feature = "ndarray"))]
pub trait FeedbackBackend: Backend {
    /// `conv2d(x, weight, bias)`; B and the spec only matter to the backward.
    fn feedback_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: MaybeBias<Self>,
        feedback: FloatTensor<Self>,
        options: ConvOptions<2>,
        spec: BackwardSpec,
    ) -> FloatTensor<Self> {
        let _ = (feedback, spec);
        ConvKind(options).forward::<Self>(x, weight, bias.into_option())
    }

    /// `conv2d(x, weight, bias)` with backprop's gradients: on flex, [`crate::cpu_conv`]'s
    /// products forward and backward (this op's node, B = W); elsewhere the backend's own
    /// convolution and its autodiff.
    fn plain_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, #[extension_type] bias: MaybeBias<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        ConvKind(options).forward::<Self>(x, weight, bias.into_option())
    }

    /// `x · weight + bias` with backprop's gradients: on flex, [`crate::cpu_conv`]'s products
    /// forward and backward, reading the transposes in place (this op's node, B = W); elsewhere
    /// the backend's own matmul and its autodiff.
    fn plain_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, #[extension_type] bias: MaybeBias<Self>) -> FloatTensor<Self> {
        DenseKind.forward::<Self>(x, weight, bias.into_option())
    }

    /// `x · weight + bias` with `x: [n, d_in]`, `weight: [d_in, d_out]`.
    fn feedback_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: MaybeBias<Self>,
        feedback: FloatTensor<Self>,
        spec: BackwardSpec,
    ) -> FloatTensor<Self> {
        let _ = (feedback, spec);
        DenseKind.forward::<Self>(x, weight, bias.into_option())
    }
}

impl FeedbackBackend for Cube {}
impl FeedbackBackend for Flex {}
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
impl FeedbackBackend for burn::backend::NdArray {}

/// The four linear maps of a layer kind, on backend primitives. Conv2d and Linear differ only
/// here; the backward logic is written once over this trait.
trait LayerKind: Debug + Clone + Send + Sync + 'static {
    /// y = K x (no bias).
    fn apply<B: Backend>(&self, x: FloatTensor<B>, kernel: FloatTensor<B>) -> FloatTensor<B>;
    /// Kᵀ g, shaped like x.
    fn apply_transpose<B: Backend>(&self, x: &FloatTensor<B>, kernel: FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B>;
    /// Σ_batch g xᵀ in the kernel's layout (the weight gradient when g = δy).
    fn correlate<B: Backend>(&self, x: FloatTensor<B>, kernel: &FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B>;
    /// `(correlate(x, g_a), correlate(x, g_b))` for two gradients of the same shape. Kinds
    /// that can stack them on the output-channel axis do it in one call, sharing the work on x
    /// (im2col for a convolution).
    fn correlate_pair<B: Backend>(&self, x: FloatTensor<B>, kernel: &FloatTensor<B>, g_a: FloatTensor<B>, g_b: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
        (self.correlate::<B>(x.clone(), kernel, g_a), self.correlate::<B>(x, kernel, g_b))
    }
    /// Σ of g over everything but the output channel.
    fn bias_grad<B: Backend>(&self, x: &FloatTensor<B>, bias: &FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B>;
    /// The bias reshaped to broadcast over an output.
    fn bias_shape(&self, channels: usize) -> Shape;
    /// The mean of x over everything but its channel axis, shaped to broadcast over x.
    fn channel_mean<B: Backend>(&self, x: &FloatTensor<B>) -> FloatTensor<B>;
    /// A one-example input holding `mean` everywhere (to correct a linear map for centring).
    fn constant_input<B: Backend>(&self, x: &FloatTensor<B>, mean: FloatTensor<B>) -> FloatTensor<B>;
    /// Output positions per example and channel (1 for a dense layer).
    fn positions(&self, output_shape: &Shape) -> usize;
    /// The shape of a scalar broadcast over an input or output.
    fn scalar_shape(&self) -> Shape;

    fn forward<B: Backend>(&self, x: FloatTensor<B>, kernel: FloatTensor<B>, bias: Option<FloatTensor<B>>) -> FloatTensor<B> {
        let y = self.apply::<B>(x, kernel);
        match bias {
            Some(b) => {
                let c = b.shape().num_elements();
                B::float_add(y, B::float_reshape(b, self.bias_shape(c)))
            }
            None => y,
        }
    }
}

#[derive(Debug, Clone)]
struct ConvKind(ConvOptions<2>);

/// On flex, the three convolutions run as [`crate::cpu_conv`]'s matrix products; elsewhere
/// (and for dtypes other than f32) as the backend's own.
impl LayerKind for ConvKind {
    fn apply<B: Backend>(&self, x: FloatTensor<B>, kernel: FloatTensor<B>) -> FloatTensor<B> {
        cpu_conv::try_forward::<B>(&x, &kernel, None, &self.0).unwrap_or_else(|| B::conv2d(x, kernel, None, self.0.clone()))
    }
    fn apply_transpose<B: Backend>(&self, x: &FloatTensor<B>, kernel: FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
        cpu_conv::try_input_grad::<B>(x, &kernel, &g, &self.0).unwrap_or_else(|| B::conv2d_x_backward(x.clone(), kernel, g, self.0.clone()))
    }
    fn correlate<B: Backend>(&self, x: FloatTensor<B>, kernel: &FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
        cpu_conv::try_weight_grad::<B>(&x, kernel, &g, &self.0).unwrap_or_else(|| B::conv2d_weight_backward(x, kernel.clone(), g, self.0.clone()))
    }
    fn forward<B: Backend>(&self, x: FloatTensor<B>, kernel: FloatTensor<B>, bias: Option<FloatTensor<B>>) -> FloatTensor<B> {
        // The bias is the product's starting value on flex, not a second pass.
        cpu_conv::try_forward::<B>(&x, &kernel, bias.as_ref(), &self.0).unwrap_or_else(|| B::conv2d(x, kernel, bias, self.0.clone()))
    }
    fn correlate_pair<B: Backend>(&self, x: FloatTensor<B>, kernel: &FloatTensor<B>, g_a: FloatTensor<B>, g_b: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
        if self.0.groups != 1 || cpu_conv::is_flex::<B>(&x) {
            // Stacking would mix the groups' channels; on flex the patches are rebuilt per
            // example anyway, and two products skip the concatenations.
            return (self.correlate::<B>(x.clone(), kernel, g_a), self.correlate::<B>(x, kernel, g_b));
        }
        let c = kernel.shape()[0];
        let stacked_kernel = B::float_cat(vec![kernel.clone(), kernel.clone()], 0);
        let both = B::conv2d_weight_backward(x, stacked_kernel, B::float_cat(vec![g_a, g_b], 1), self.0.clone());
        (B::float_slice(both.clone(), &[Slice::new(0, Some(c as isize), 1)]), B::float_slice(both, &[Slice::new(c as isize, Some(2 * c as isize), 1)]))
    }
    fn bias_grad<B: Backend>(&self, x: &FloatTensor<B>, bias: &FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
        cpu_conv::try_bias_grad::<B>(&g).unwrap_or_else(|| B::conv2d_bias_backward(x.clone(), bias.clone(), g))
    }
    fn bias_shape(&self, channels: usize) -> Shape {
        Shape::new([1, channels, 1, 1])
    }
    fn channel_mean<B: Backend>(&self, x: &FloatTensor<B>) -> FloatTensor<B> {
        B::float_mean_dim(B::float_mean_dim(B::float_mean_dim(x.clone(), 0), 2), 3)
    }
    fn constant_input<B: Backend>(&self, x: &FloatTensor<B>, mean: FloatTensor<B>) -> FloatTensor<B> {
        let s = x.shape();
        B::float_expand(mean, Shape::new([1, s[1], s[2], s[3]]))
    }
    fn positions(&self, output_shape: &Shape) -> usize {
        output_shape[2] * output_shape[3]
    }
    fn scalar_shape(&self) -> Shape {
        Shape::new([1, 1, 1, 1])
    }
}

#[derive(Debug, Clone)]
struct DenseKind;

impl LayerKind for DenseKind {
    fn apply<B: Backend>(&self, x: FloatTensor<B>, kernel: FloatTensor<B>) -> FloatTensor<B> {
        cpu_conv::try_dense_product::<B>(&x, false, &kernel, false).unwrap_or_else(|| B::float_matmul(x, kernel))
    }
    fn apply_transpose<B: Backend>(&self, _x: &FloatTensor<B>, kernel: FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
        cpu_conv::try_dense_product::<B>(&g, false, &kernel, true).unwrap_or_else(|| B::float_matmul(g, B::float_transpose(kernel)))
    }
    fn correlate<B: Backend>(&self, x: FloatTensor<B>, _kernel: &FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
        cpu_conv::try_dense_product::<B>(&x, true, &g, false).unwrap_or_else(|| B::float_matmul(B::float_transpose(x), g))
    }
    fn correlate_pair<B: Backend>(&self, x: FloatTensor<B>, kernel: &FloatTensor<B>, g_a: FloatTensor<B>, g_b: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
        if cpu_conv::is_flex::<B>(&x) {
            // Two products reading xᵀ in place beat a concatenation and a copied transpose.
            return (self.correlate::<B>(x.clone(), kernel, g_a), self.correlate::<B>(x, kernel, g_b));
        }
        let d = g_a.shape()[1] as isize;
        let both = B::float_matmul(B::float_transpose(x), B::float_cat(vec![g_a, g_b], 1));
        let all = Slice::new(0, None, 1);
        (B::float_slice(both.clone(), &[all, Slice::new(0, Some(d), 1)]), B::float_slice(both, &[all, Slice::new(d, Some(2 * d), 1)]))
    }
    fn bias_grad<B: Backend>(&self, _x: &FloatTensor<B>, _bias: &FloatTensor<B>, g: FloatTensor<B>) -> FloatTensor<B> {
        let d = g.shape()[1];
        B::float_reshape(B::float_sum_dim(g, 0), Shape::new([d]))
    }
    fn bias_shape(&self, channels: usize) -> Shape {
        Shape::new([1, channels])
    }
    fn channel_mean<B: Backend>(&self, x: &FloatTensor<B>) -> FloatTensor<B> {
        B::float_mean_dim(x.clone(), 0)
    }
    fn constant_input<B: Backend>(&self, _x: &FloatTensor<B>, mean: FloatTensor<B>) -> FloatTensor<B> {
        mean
    }
    fn positions(&self, _output_shape: &Shape) -> usize {
        1
    }
    fn scalar_shape(&self) -> Shape {
        Shape::new([1, 1])
    }
}

/// What the backward keeps from the forward. Primitives are reference-counted handles, so
/// keeping W and B costs nothing; the output is kept only when the local loss needs y.
#[derive(Debug, Clone)]
struct FeedbackState<B: Backend, K: LayerKind> {
    kind: K,
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    feedback: FloatTensor<B>,
    output: Option<FloatTensor<B>>,
    spec: BackwardSpec,
}

#[derive(Debug)]
struct FeedbackBackward<K>(std::marker::PhantomData<K>);

/// Parents are `[x, weight, feedback]` or `[x, weight, bias, feedback]`.
impl<B: Backend, K: LayerKind, const N: usize> Backward<B, N> for FeedbackBackward<K> {
    type State = FeedbackState<B, K>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let parents = ops.parents;
        let (node_x, node_w, node_fb) = (&parents[0], &parents[1], &parents[N - 1]);
        let node_bias = if N == 4 { &parents[2] } else { &None };
        let st = ops.state;
        let request = st.spec.tap.as_ref().map(LayerTap::request).unwrap_or_default();
        let kind = &st.kind;

        if let Some(node) = node_x {
            let kernel = if request.backprop { st.weight.clone() } else { st.feedback.clone() };
            let gx = kind.apply_transpose::<B>(&st.x, kernel, grad.clone());
            if let Some(tap) = &st.spec.tap {
                if request.grad_angle && !request.backprop {
                    let gx_w = kind.apply_transpose::<B>(&st.x, st.weight.clone(), grad.clone());
                    tap.record_grad_sums(angle_sums::<B>(&gx, &gx_w));
                }
                if request.compare_input_grad
                    && let Some(earlier) = tap.take_input_grad().and_then(|b| b.downcast::<FloatTensor<B>>().ok())
                {
                    tap.record_true_grad_sums(angle_sums::<B>(&earlier, &gx));
                }
                if request.capture_input_grad {
                    tap.store_input_grad(Box::new(gx.clone()));
                }
            }
            grads.register::<B>(node.id, gx);
        }

        let train_feedback = node_fb.is_some() && !request.backprop;
        let local = match st.spec.feedback_grad {
            FeedbackGrad::Local(loss) if train_feedback => Some(loss),
            _ => None,
        };
        let needs_weight_grad = node_w.is_some() || (train_feedback && st.spec.feedback_grad == FeedbackGrad::WeightGrad);
        let (gw, g_local) = weight_and_local_grads::<B, K>(&st, grad.clone(), needs_weight_grad, local);

        if let (Some(node), Some(bias)) = (node_bias, &st.bias) {
            grads.register::<B>(node.id, kind.bias_grad::<B>(&st.x, bias, grad));
        }
        if let Some(node) = node_fb
            && train_feedback
        {
            match (st.spec.feedback_grad, g_local) {
                (FeedbackGrad::WeightGrad, _) => grads.register::<B>(node.id, gw.clone().expect("computed above")),
                (FeedbackGrad::Local(_), Some(g)) => grads.register::<B>(node.id, g),
                _ => {}
            }
        }
        if let (Some(node), Some(gw)) = (node_w, gw) {
            grads.register::<B>(node.id, gw);
        }
    }
}

/// δW (when `need_weight_grad`) and ∂R/∂B of [`LocalLoss`] (when `local`), sharing work:
///
/// ∂R/∂B = 2·decay·B − self·W + (1/(N·P))·[corr(x̂, 2·sparse·Bx̂ − amp·ŷ) + corr(2·null·Bᵀŷ, ŷ)]
///
/// where `corr(a, g)` is the weight-gradient correlation (Σ g aᵀ), N the batch and P the
/// output positions. Both data terms are linear in each argument, so when the null term is
/// present the amp term moves into it (`corr(x̂, −amp·ŷ) + corr(z, 2·null·ŷ) =
/// corr(2·null·z − amp·x̂, ŷ)`). With the sparse term, the x̂ side is one convolution of x̂
/// with 2·sparse·B − amp·W. Without it (weight mirror), −amp·ŷ comes from the kept output,
/// ŷ = (y − b − W μ) / rms, and its correlation is computed from x in the same call as δW:
/// corr(x̂, g) = (corr(x, g) − corr(μ, Σ_batch g)) / rms, with μ the one-example input holding
/// the channel means.
fn weight_and_local_grads<B: Backend, K: LayerKind>(
    st: &FeedbackState<B, K>,
    grad: FloatTensor<B>,
    need_weight_grad: bool,
    local: Option<LocalLoss>,
) -> (Option<FloatTensor<B>>, Option<FloatTensor<B>>) {
    let kind = &st.kind;
    let Some(loss) = local else {
        return (need_weight_grad.then(|| kind.correlate::<B>(st.x.clone(), &st.weight, grad)), None);
    };
    let has_data = loss.amp != 0.0 || loss.null != 0.0 || loss.sparse != 0.0;
    // ∂R/∂B's terms, summed in one pass at the end ([`shifted_sum`]): the parameter terms, then
    // the data terms' correlations scaled by 1/(N·P) (and 1/rms where they read x̂).
    let mut terms = vec![Shifted::new(st.feedback.clone(), 2.0 * loss.decay)];
    if loss.self_align != 0.0 {
        terms.push(Shifted::new(st.weight.clone(), -loss.self_align));
    }
    let mut gw: Option<FloatTensor<B>> = None;
    let mut inv_rms = None;
    if has_data {
        // Batch statistics of the input: channel means μ (as a one-example input) and the
        // centred input's RMS. x̂ = (x − μ)/rms is written out only for the sparse term; the
        // others read it as an affine map of x or y in the one pass that needs it
        // ([`shifted_sum`]).
        let (mean_input, inverse) = input_statistics::<B, K>(kind, &st.x);
        let inv = Some(&inverse);
        // ŷ = W x̂ = (y − (b + W μ)) / rms, y the kept output.
        let y_shift = || {
            let w_mean = kind.apply::<B>(mean_input.clone(), st.weight.clone());
            match &st.bias {
                Some(b) => B::float_add(w_mean, B::float_reshape(b.clone(), kind.bias_shape(b.shape().num_elements()))),
                None => w_mean,
            }
        };
        let out = || st.output.clone().expect("the forward keeps its output when the local loss needs y");
        let null = loss.null != 0.0;
        let per_position = 1.0 / (st.x.shape()[0] * kind.positions(&grad.shape())) as f32;
        if loss.sparse != 0.0 {
            // The terms paired with x̂, 2·sparse·Bx̂ − amp·ŷ (amp unless the null term takes
            // it), are one convolution of x̂, with K = 2·sparse·B − amp·W (ŷ = W x̂): the
            // correlation corr(x̂, K x̂) then reads neither y nor Bx. For activation alignment
            // this replaced the convolution Bx, a pass over y and Bx, a batch sum and a
            // correction, and spared the forward keeping y (convnet step 33.6 → 26.6 ms).
            let amp = if null { 0.0 } else { loss.amp };
            let x_hat = shifted_sum::<B>(vec![Shifted { values: st.x.clone(), shift: Some(mean_input.clone()), scale: 1.0, by_inverse_rms: true }], inv);
            let kernel = shifted_sum::<B>(vec![Shifted::new(st.feedback.clone(), 2.0 * loss.sparse), Shifted::new(st.weight.clone(), -amp)], None);
            let g = kind.apply::<B>(x_hat.clone(), kernel);
            terms.push(Shifted::new(kind.correlate::<B>(x_hat, &st.feedback, g), per_position));
        } else if loss.amp != 0.0 && !null {
            // −amp·ŷ from the kept output, and corr(x̂, g) = (corr(x, g) − corr(μ, Σ_batch g))/rms,
            // whose corr(x, g) shares the call with δW.
            let g_x = shifted_sum::<B>(vec![Shifted { values: out(), shift: Some(y_shift()), scale: -loss.amp, by_inverse_rms: true }], inv);
            let summed = batch_sum::<B>(g_x.clone());
            let raw = if need_weight_grad {
                let (w, b) = kind.correlate_pair::<B>(st.x.clone(), &st.weight, grad.clone(), g_x);
                gw = Some(w);
                b
            } else {
                kind.correlate::<B>(st.x.clone(), &st.feedback, g_x)
            };
            let correction = kind.correlate::<B>(mean_input.clone(), &st.feedback, summed);
            terms.push(Shifted { values: raw, shift: None, scale: per_position, by_inverse_rms: true });
            terms.push(Shifted { values: correction, shift: None, scale: -per_position, by_inverse_rms: true });
        }
        // The input paired with ŷ, a = 2·null·Bᵀŷ − amp·x̂, and corr(a, ŷ). ŷ is written out.
        // Reading y − s inside Bᵀ and the correlation instead (Bᵀy − Bᵀs, corr(a, y) −
        // corr(Σa, s)) saved a pass, but where a layer's input is constant (a ConvRNN layer
        // before its input arrives) y = s, and a batch's Bᵀy and one example's Bᵀs, computed by
        // different paths (a convolution of δy, col2im), rounded apart by noise that 1/rms
        // (10¹² there) blew up: information alignment stopped aligning B in the ConvRNN.
        if null {
            let y = shifted_sum::<B>(vec![Shifted { values: out(), shift: Some(y_shift()), scale: 1.0, by_inverse_rms: true }], inv);
            let mut a_terms = vec![Shifted::new(kind.apply_transpose::<B>(&st.x, st.feedback.clone(), y.clone()), 2.0 * loss.null)];
            if loss.amp != 0.0 {
                a_terms.push(Shifted { values: st.x.clone(), shift: Some(mean_input.clone()), scale: -loss.amp, by_inverse_rms: true });
            }
            terms.push(Shifted::new(kind.correlate::<B>(shifted_sum::<B>(a_terms, inv), &st.feedback, y), per_position));
        }
        inv_rms = Some(inverse);
    }
    if need_weight_grad && gw.is_none() {
        gw = Some(kind.correlate::<B>(st.x.clone(), &st.weight, grad));
    }
    (gw, Some(shifted_sum::<B>(terms, inv_rms.as_ref())))
}

/// One term of [`shifted_sum`]: `scale · (values − shift)`, times 1/rms where asked. `values`
/// is `[N, …]`; `shift`, one example's worth (`[1, …]`), is subtracted from every example.
struct Shifted<B: Backend> {
    values: FloatTensor<B>,
    shift: Option<FloatTensor<B>>,
    scale: f32,
    by_inverse_rms: bool,
}

impl<B: Backend> Shifted<B> {
    /// `scale · values`.
    fn new(values: FloatTensor<B>, scale: f32) -> Self {
        Shifted { values, shift: None, scale, by_inverse_rms: false }
    }
}

/// Σ of `terms` (all of one shape), leaving out terms scaled by 0 unless all are. On flex f32
/// one parallel pass that writes the result and reads each term once; the local losses' ŷ,
/// −amp·ŷ + 2·sparse·Bx̂ and 2·null·Bᵀŷ − amp·x̂ were a chain of five to eight whole-activation
/// passes each through burn's generic ops, and ∂R/∂B's sum of five kernel-sized terms
/// another six (symmetric alignment's 2·decay·B − self·W alone cost 1 ms of the convnet's
/// 17.5 ms step). Composed ops elsewhere. `inverse_rms` holds one value; it must be given
/// where a term asks for it.
fn shifted_sum<B: Backend>(mut terms: Vec<Shifted<B>>, inverse_rms: Option<&FloatTensor<B>>) -> FloatTensor<B> {
    if terms.iter().any(|t| t.scale != 0.0) {
        terms.retain(|t| t.scale != 0.0);
    } else {
        terms.truncate(1);
    }
    if let Some(sum) = flex_shifted_sum::<B>(&terms, inverse_rms) {
        return sum;
    }
    terms
        .into_iter()
        .map(|t| {
            let centred = match t.shift {
                Some(c) => B::float_sub(t.values, c),
                None => t.values,
            };
            let scaled = B::float_mul_scalar(centred, t.scale.into());
            if t.by_inverse_rms { B::float_mul(scaled, inverse_rms.expect("a term reads 1/rms").clone()) } else { scaled }
        })
        .reduce(B::float_add)
        .expect("at least one term")
}

fn flex_shifted_sum<B: Backend>(terms: &[Shifted<B>], inverse_rms: Option<&FloatTensor<B>>) -> Option<FloatTensor<B>> {
    /// Elements per task where no term is shifted (kernel-sized sums).
    const BLOCK: usize = 1 << 14;
    let shape = terms.first()?.values.shape();
    let inv = match inverse_rms {
        Some(t) => cpu_conv::values(cpu_conv::as_flex::<B>(t)?)[0],
        None => 1.0,
    };
    let mut inputs = Vec::with_capacity(terms.len());
    for t in terms {
        let values = cpu_conv::values(cpu_conv::as_flex::<B>(&t.values)?);
        let shift = match &t.shift {
            Some(c) => Some(cpu_conv::values(cpu_conv::as_flex::<B>(c)?)),
            None => None,
        };
        if t.by_inverse_rms && inverse_rms.is_none() {
            return None;
        }
        inputs.push((values, shift, if t.by_inverse_rms { t.scale * inv } else { t.scale }));
    }
    let len = shape.num_elements();
    let example = len / shape[0].max(1);
    if inputs.iter().any(|(v, c, _)| v.len() != len || c.as_ref().is_some_and(|c| c.len() != example)) {
        return None;
    }
    // A shift repeats every example, so shifted sums split by examples.
    let chunk = if inputs.iter().any(|(_, c, _)| c.is_some()) { example } else { BLOCK };
    let out = cpu_conv::filled_by_chunks(
        len,
        chunk.max(1),
        || (),
        |_, i, row| {
            for (values, shift, scale) in &inputs {
                let v = &values[i * chunk..][..row.len()];
                match shift {
                    Some(c) => row.iter_mut().zip(v).zip(c.iter()).for_each(|((o, &v), &c)| *o += scale * (v - c)),
                    None => row.iter_mut().zip(v).for_each(|(o, &v)| *o += scale * v),
                }
            }
        },
    );
    Some(cpu_conv::to_primitive::<B>(out, shape))
}

/// Σ over the batch (axis 0), keeping the axis: on flex f32 split over blocks of one example's
/// elements, each summing the batch in order; burn's generic `sum_dim` ran on one thread (1 ms
/// of a convnet step, when activation alignment's closed form still summed its batch).
fn batch_sum<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    const BLOCK: usize = 1 << 12;
    let flex = || {
        let shape = t.shape();
        let values = cpu_conv::values(cpu_conv::as_flex::<B>(&t)?);
        let example = shape.num_elements() / shape[0].max(1);
        let sum = cpu_conv::filled_by_chunks(example, BLOCK, || (), |_, i, block| {
            for row in values.chunks_exact(example.max(1)) {
                block.iter_mut().zip(&row[i * BLOCK..]).for_each(|(s, &v)| *s += v);
            }
        });
        let mut one = shape.as_slice().to_vec();
        one[0] = 1;
        Some(cpu_conv::to_primitive::<B>(sum, one))
    };
    flex().unwrap_or_else(|| B::float_sum_dim(t, 0))
}

/// The input's channel means μ, as a one-example input, and 1/(RMS of x − μ + 10⁻¹²) over all
/// of x, shaped to broadcast. On flex f32 the batch norm's statistics
/// ([`crate::norm::batch_statistics`], summing in f64): the centred RMS is the root of the
/// channels' mean variance. Composed ops elsewhere.
fn input_statistics<B: Backend, K: LayerKind>(kind: &K, x: &FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    if let Some(xf) = cpu_conv::as_flex::<B>(x)
        && shape.num_dims() >= 2
    {
        let (batch, channels) = (shape[0], shape[1]);
        let dims = (batch, channels, shape.num_elements() / (batch * channels).max(1));
        let values = cpu_conv::values(xf);
        let (mean, variance) = crate::norm::batch_statistics(&values, dims);
        let rms = (variance.iter().map(|&v| v as f64).sum::<f64>() / channels.max(1) as f64).sqrt() as f32 + 1e-12;
        let mut mean_shape = vec![1; shape.num_dims()];
        mean_shape[1] = channels;
        let mean_input = kind.constant_input::<B>(x, cpu_conv::to_primitive::<B>(mean, mean_shape));
        return (mean_input, B::float_reshape(cpu_conv::to_primitive::<B>(vec![1.0 / rms], [1]), kind.scalar_shape()));
    }
    let mean_input = kind.constant_input::<B>(x, kind.channel_mean::<B>(x));
    let centred = B::float_sub(x.clone(), mean_input.clone());
    let inverse = B::float_recip(B::float_add_scalar(B::float_sqrt(B::float_mean(B::float_mul(centred.clone(), centred))), 1e-12f32.into()));
    (mean_input, B::float_reshape(inverse, kind.scalar_shape()))
}

/// `[⟨a, b⟩, ‖a‖², ‖b‖²]` of two tensors of the same shape, read back to the host in one go.
/// Summed in f32 whatever the step's precision: a half-precision sum of squares loses the
/// angle (bf16) or overflows (f16 under a loss scale).
fn angle_sums<B: Backend>(a: &FloatTensor<B>, b: &FloatTensor<B>) -> [f64; 3] {
    let f32 = |t: &FloatTensor<B>| if t.dtype() == burn::tensor::DType::F32 { t.clone() } else { B::float_cast(t.clone(), burn::tensor::FloatDType::F32) };
    let (a, b) = (&f32(a), &f32(b));
    let sum = |t: FloatTensor<B>| B::float_reshape(B::float_sum(t), Shape::new([1]));
    let stats = B::float_cat(
        vec![
            sum(B::float_mul(a.clone(), b.clone())),
            sum(B::float_mul(a.clone(), a.clone())),
            sum(B::float_mul(b.clone(), b.clone())),
        ],
        0,
    );
    let values: Vec<f64> = burn::tensor::read_sync(B::float_into_data(stats)).ok().and_then(|d| d.try_into_vec_as::<f64>().ok()).unwrap_or_default();
    match values.as_slice() {
        [dot, na, nb] => [*dot, *na, *nb],
        _ => [f64::NAN; 3],
    }
}

impl<B: FeedbackBackend, C: CheckpointStrategy> FeedbackBackend for Autodiff<B, C> {
    fn feedback_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: MaybeBias<Self>,
        feedback: FloatTensor<Self>,
        options: ConvOptions<2>,
        spec: BackwardSpec,
    ) -> FloatTensor<Self> {
        record::<B, C, ConvKind>(ConvKind(options), x, weight, bias.into_option(), feedback, spec)
    }

    fn plain_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: MaybeBias<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        if !cpu_conv::is_flex::<B>(&x.clone().into_primitive()) {
            return <Self as burn::backend::ops::ModuleOps<Self>>::conv2d(x, weight, bias.into_option(), options);
        }
        // W is its own feedback: δx = Wᵀδy, and no gradient for "B" (FeedbackGrad::None).
        record::<B, C, ConvKind>(ConvKind(options), x, weight.clone(), bias.into_option(), weight, BackwardSpec::default())
    }

    fn plain_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: MaybeBias<Self>) -> FloatTensor<Self> {
        if !cpu_conv::is_flex::<B>(&x.clone().into_primitive()) {
            return DenseKind.forward::<Self>(x, weight, bias.into_option());
        }
        // As plain_conv2d: W is its own feedback, and no gradient for "B".
        record::<B, C, DenseKind>(DenseKind, x, weight.clone(), bias.into_option(), weight, BackwardSpec::default())
    }

    fn feedback_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: MaybeBias<Self>,
        feedback: FloatTensor<Self>,
        spec: BackwardSpec,
    ) -> FloatTensor<Self> {
        record::<B, C, DenseKind>(DenseKind, x, weight, bias.into_option(), feedback, spec)
    }
}

/// Runs the forward on the inner backend and, when anything is tracked, records the node.
fn record<B: Backend, C: CheckpointStrategy, K: LayerKind>(
    kind: K,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    feedback: FloatTensor<Autodiff<B, C>>,
    spec: BackwardSpec,
) -> FloatTensor<Autodiff<B, C>> {
    let keep_output = matches!(spec.feedback_grad, FeedbackGrad::Local(l) if l.needs_output());
    macro_rules! finish {
        ($nodes:expr) => {
            match FeedbackBackward::<K>(std::marker::PhantomData).prepare::<C>($nodes).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let (x, weight, feedback) = (x.into_primitive(), weight.into_primitive(), feedback.into_primitive());
                    let bias = bias.map(|b| b.into_primitive());
                    let out = kind.forward::<B>(x.clone(), weight.clone(), bias.clone());
                    let output = keep_output.then(|| out.clone());
                    prep.finish(FeedbackState { kind, x, weight, bias, feedback, output, spec }, out)
                }
                OpsKind::UnTracked(prep) => {
                    let bias = bias.map(|b| b.into_primitive());
                    prep.finish(kind.forward::<B>(x.into_primitive(), weight.into_primitive(), bias))
                }
            }
        };
    }
    match &bias {
        Some(b) => {
            let nodes = [x.node(), weight.node(), b.node(), feedback.node()];
            finish!(nodes)
        }
        None => {
            let nodes = [x.node(), weight.node(), feedback.node()];
            finish!(nodes)
        }
    }
}

/// `conv2d(x, weight, bias)` whose backward uses `feedback` for the input gradient.
pub fn feedback_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    feedback: Tensor<4>,
    options: ConvOptions<2>,
    spec: BackwardSpec,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FeedbackBackend>::feedback_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        dispatch_bias(bias),
        feedback.into_dispatch(),
        options,
        spec,
    ))
}

/// `conv2d(x, weight, bias)` with backprop's gradients, on flex through [`crate::cpu_conv`].
pub fn plain_conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, options: ConvOptions<2>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FeedbackBackend>::plain_conv2d(x.into_dispatch(), weight.into_dispatch(), dispatch_bias(bias), options))
}

/// `x · weight + bias` (`weight: [d_in, d_out]`) with backprop's gradients, on flex through
/// [`crate::cpu_conv`].
pub fn plain_linear(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FeedbackBackend>::plain_linear(x.into_dispatch(), weight.into_dispatch(), dispatch_bias(bias)))
}

/// `x · weight + bias` (`weight: [d_in, d_out]`) whose backward uses `feedback` for the input
/// gradient.
pub fn feedback_linear(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>, feedback: Tensor<2>, spec: BackwardSpec) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FeedbackBackend>::feedback_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        dispatch_bias(bias),
        feedback.into_dispatch(),
        spec,
    ))
}

fn dispatch_bias(bias: Option<Tensor<1>>) -> MaybeBias<Dispatch> {
    match bias {
        Some(b) => MaybeBias::Present(b.into_dispatch()),
        None => MaybeBias::Absent,
    }
}
