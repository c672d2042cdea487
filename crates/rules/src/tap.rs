//! A handle through which the trainer and observers talk to one layer's backward pass.
//!
//! The custom backward of a feedback layer runs inside burn's autodiff engine, where nothing
//! can be returned to the caller but gradients. A [`LayerTap`] is a small shared cell the
//! layer hands to its op: the trainer sets requests on it before a step (measure the gradient
//! angle, send the error through W instead of B, keep the input gradient), and the backward
//! writes its measurements back.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// What the next backward pass of the layer should do besides its normal work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapRequest {
    /// Compute `grad_angle`: the angle between Bᵀδy and Wᵀδy for this step's δy.
    pub grad_angle: bool,
    /// Send the error down through W (full backprop) instead of B, and register no gradient
    /// for B. Used by the second backward that measures `true_grad_angle`.
    pub backprop: bool,
    /// Keep this backward's input gradient δx, to compare with a later backward.
    pub capture_input_grad: bool,
    /// Compare this backward's δx with the one kept earlier and record `true_grad_angle`.
    pub compare_input_grad: bool,
}

/// Running sums ⟨a, b⟩, ‖a‖², ‖b‖² over every call of the layer in one backward (a ConvRNN
/// applies a layer once per time step), so an angle covers the whole unroll.
#[derive(Debug, Clone, Copy, Default)]
struct AngleSums {
    dot: f64,
    norm_a: f64,
    norm_b: f64,
    calls: usize,
}

impl AngleSums {
    fn add(&mut self, [dot, a, b]: [f64; 3]) {
        self.dot += dot;
        self.norm_a += a;
        self.norm_b += b;
        self.calls += 1;
    }

    fn take(&mut self) -> Option<f64> {
        let s = std::mem::take(self);
        (s.calls > 0).then(|| angle_degrees(s.dot, s.norm_a, s.norm_b))
    }
}

#[derive(Default)]
struct TapState {
    request: TapRequest,
    step: u64,
    grad_angle: AngleSums,
    true_grad_angle: AngleSums,
    /// δx of each call in the capturing backward, as the backend's own primitive (type-erased
    /// because the tap does not know the backend; the comparing backward runs on the same one
    /// and meets the calls in the same order).
    captured: VecDeque<Box<dyn Any + Send>>,
}

/// Shared, cloneable handle; clones see the same state.
#[derive(Clone, Default)]
pub struct LayerTap(Arc<Mutex<TapState>>);

impl std::fmt::Debug for LayerTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("LayerTap").field("request", &s.request).field("step", &s.step).finish()
    }
}

impl LayerTap {
    fn lock(&self) -> MutexGuard<'_, TapState> {
        // A panic inside a backward must not make every later step panic on a poisoned lock.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_request(&self, request: TapRequest) {
        self.lock().request = request;
    }

    pub fn request(&self) -> TapRequest {
        self.lock().request
    }

    /// The training step the next forward belongs to; seeds per-step draws (brSF magnitudes).
    pub fn set_step(&self, step: u64) {
        self.lock().step = step;
    }

    pub fn step(&self) -> u64 {
        self.lock().step
    }

    /// Adds `[⟨Bᵀδy, Wᵀδy⟩, ‖Bᵀδy‖², ‖Wᵀδy‖²]` of one call.
    pub(crate) fn record_grad_sums(&self, sums: [f64; 3]) {
        self.lock().grad_angle.add(sums);
    }

    /// Adds `[⟨δx_rule, δx_backprop⟩, ‖δx_rule‖², ‖δx_backprop‖²]` of one call.
    pub fn record_true_grad_sums(&self, sums: [f64; 3]) {
        self.lock().true_grad_angle.add(sums);
    }

    pub(crate) fn store_input_grad(&self, grad: Box<dyn Any + Send>) {
        self.lock().captured.push_back(grad);
    }

    pub(crate) fn take_input_grad(&self) -> Option<Box<dyn Any + Send>> {
        self.lock().captured.pop_front()
    }

    /// `grad_angle` in degrees over the calls since the last take; `None` if none measured.
    pub fn take_grad_angle(&self) -> Option<f64> {
        self.lock().grad_angle.take()
    }

    /// `true_grad_angle` in degrees over the calls since the last take.
    pub fn take_true_grad_angle(&self) -> Option<f64> {
        self.lock().true_grad_angle.take()
    }

    /// Drops any captured gradient and pending measurement, and clears the request.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.request = TapRequest::default();
        s.captured.clear();
        s.grad_angle = AngleSums::default();
        s.true_grad_angle = AngleSums::default();
    }
}

/// Angle in degrees from a dot product and two squared norms; 90° when either vector is zero
/// (no direction to agree with).
pub fn angle_degrees(dot: f64, norm_sq_a: f64, norm_sq_b: f64) -> f64 {
    let denom = (norm_sq_a * norm_sq_b).sqrt();
    if denom <= f64::MIN_POSITIVE || !denom.is_finite() {
        return 90.0;
    }
    (dot / denom).clamp(-1.0, 1.0).acos().to_degrees()
}
