//! Where a layer's feedback randomness comes from: B's fixed or per-step magnitudes (sign
//! symmetry) and the mirror noise, all drawn from the layer's feedback seed and stream.

use burn::tensor::{Tensor, TensorData};

use crate::init::{WeightInit, normal_noise};
use crate::rule::{LayerRule, SignVariant};
use crate::seeder::{SeedPurpose, derive_seed};

/// Per-layer feedback draws. Everything is a pure function of `(seed, stream, step)`, so a
/// resumed run redraws exactly what an uninterrupted one drew. `seed` is the layer's feedback
/// seed (B's own draw uses it directly); magnitudes and mirror noise use seeds derived from it
/// per purpose, so none of them reuses B's or another purpose's streams.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackSource {
    pub rule: LayerRule,
    pub init: WeightInit,
    pub fan_in: usize,
    pub fan_out: usize,
    pub seed: u64,
    pub stream: u64,
}

/// The stream of a per-step draw: the step above the layer's stream (layers < 2²⁰).
fn step_stream(step: u64, stream: u64) -> u64 {
    (step << 20) + stream
}

impl FeedbackSource {
    /// frSF's fixed magnitudes |M|, drawn like W; `None` for every other rule.
    pub fn fixed_magnitude(&self, len: usize) -> Option<Vec<f32>> {
        (self.rule == LayerRule::SignSymmetry(SignVariant::Frsf)).then(|| self.magnitudes(len, 0))
    }

    fn magnitudes(&self, len: usize, step: u64) -> Vec<f32> {
        self.init
            .sample(len, self.fan_in, self.fan_out, derive_seed(self.seed, SeedPurpose::Magnitudes), step_stream(step, self.stream))
            .into_iter()
            .map(f32::abs)
            .collect()
    }

    /// Sign symmetry's B from W: s·sign(W) (uSF), |M|⊙sign(W) with the fixed `magnitude`
    /// (frSF), or with magnitudes redrawn for `step` (brSF). Computed without autodiff and
    /// returned as a constant, so no gradient flows from B into W.
    pub fn sign_feedback<const D: usize>(&self, weight: &Tensor<D>, magnitude: Option<Tensor<D>>, step: u64) -> Tensor<D> {
        let w = weight.clone().inner();
        if self.rule == LayerRule::SignSymmetry(SignVariant::Usf) {
            let b = crate::pointwise::scaled_sign(w, self.init.std(self.fan_in, self.fan_out));
            return if weight.is_autodiff() { Tensor::from_inner(b) } else { b };
        }
        let sign = w.clone().sign();
        let b = match self.rule {
            LayerRule::SignSymmetry(SignVariant::Frsf) => sign * magnitude.expect("frSF stores its magnitudes").inner(),
            LayerRule::SignSymmetry(SignVariant::Brsf) => {
                let dims = w.dims();
                let m = self.magnitudes(dims.iter().product(), step + 1);
                sign * Tensor::<D>::from_data(TensorData::new(m, dims), &w.device())
            }
            other => panic!("sign_feedback called for {other:?}"),
        };
        if weight.is_autodiff() { Tensor::from_inner(b) } else { b }
    }

    /// White noise of standard deviation `std` for the mirror step of `step`.
    pub fn mirror_noise(&self, len: usize, std: f32, step: u64) -> Vec<f32> {
        normal_noise(len, derive_seed(self.seed, SeedPurpose::MirrorNoise), step_stream(step, self.stream)).into_iter().map(|v| v * std).collect()
    }
}
