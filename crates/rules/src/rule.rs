//! The `[rule]` section of a run config and the rule each layer ends up with.

use serde::{Deserialize, Serialize};

use crate::ops::{FeedbackGrad, LocalLoss};

/// The learning rules (names as in DESIGN.md and the papers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// δx = Wᵀδy.
    #[default]
    Backprop,
    /// Lillicrap et al. 2016: B fixed and random.
    FeedbackAlignment,
    /// Liao et al. 2016, Xiao et al. 2018: B = magnitude ⊙ sign(W), see [`SignVariant`].
    SignSymmetry,
    /// Akrout et al. 2019: B gets δW; W and B share a decoupled weight decay.
    KolenPollack,
    /// Akrout et al. 2019 / Kunin et al. 2020: B ∝ E[y xᵀ] (Hebbian on the layer's own input or on noise).
    WeightMirror,
    /// Kunin et al. 2020: α·amp + β·null + γ·decay.
    InformationAlignment,
    /// Kunin et al. 2020: α·decay + β·self, fixed point B = W.
    SymmetricAlignment,
    /// Kunin et al. 2020: α·sparse + β·amp (+ γ·decay), B aligned to W.
    ActivationAlignment,
    /// Nøkland 2016: every hidden layer's input receives the output error e through its own
    /// fixed random matrix B_l [layer inputs × classes] (held by the model, not the layer).
    DirectFeedbackAlignment,
}

impl RuleKind {
    pub const ALL: [RuleKind; 9] = [
        RuleKind::Backprop,
        RuleKind::FeedbackAlignment,
        RuleKind::SignSymmetry,
        RuleKind::KolenPollack,
        RuleKind::WeightMirror,
        RuleKind::InformationAlignment,
        RuleKind::SymmetricAlignment,
        RuleKind::ActivationAlignment,
        RuleKind::DirectFeedbackAlignment,
    ];

    /// The snake_case name used in configs and file names.
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Backprop => "backprop",
            RuleKind::FeedbackAlignment => "feedback_alignment",
            RuleKind::SignSymmetry => "sign_symmetry",
            RuleKind::KolenPollack => "kolen_pollack",
            RuleKind::WeightMirror => "weight_mirror",
            RuleKind::InformationAlignment => "information_alignment",
            RuleKind::SymmetricAlignment => "symmetric_alignment",
            RuleKind::ActivationAlignment => "activation_alignment",
            RuleKind::DirectFeedbackAlignment => "direct_feedback_alignment",
        }
    }
}

/// Sign-symmetry variants (biotorch's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SignVariant {
    /// Uniform sign-concordant: B = s·sign(W), s = the standard deviation of W's init.
    #[default]
    Usf,
    /// Fixed random magnitude: B = |M| ⊙ sign(W), M drawn once like W's init.
    Frsf,
    /// Batchwise random magnitude: as frSF but M is redrawn every step.
    Brsf,
}

/// Where weight mirror gets its presynaptic activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MirrorSource {
    /// The layer's actual input, in the same backward pass (Kunin's local loss α·decay + β·amp).
    /// Its fixed point B = (β/2α)·W·Cov(x̂) follows W only as far as the layer's inputs are
    /// white, which ReLU features are not: an option, not the default.
    Data,
    /// Akrout's mirror mode (the default): white noise x̃ every `mirror_every` steps, y = W x̃,
    /// B ← B + mirror_lr·(E[y x̃ᵀ]/σ² − mirror_decay·B), whose fixed point is B = W/mirror_decay
    /// whatever the data.
    #[default]
    Noise,
}

/// Which coefficient defaults apply when α, β, γ are not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CoefficientScale {
    /// Tuned here for digits / CIFAR-scale runs of a few thousand steps (see `default_coefficients`).
    #[default]
    Digits,
    /// The values in Kunin et al.'s code (`params.py`), tuned for ImageNet.
    Kunin2020,
}

/// Optimiser of the B parameter group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackOptimizer {
    /// The same optimiser kind and settings as the weights (used by Kolen–Pollack regardless).
    #[default]
    Same,
    Sgd,
    Adam,
}

/// One per-layer override: layers named in `layers` use `kind` instead of the run's rule.
/// Names are matched exactly, with a `*` wildcard, or `first` / `last` (the model's first and
/// last feedback layers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    pub layers: Vec<String>,
    pub kind: RuleKind,
}

/// The `[rule]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    pub kind: RuleKind,
    /// Replaces the feedback seed (B's initial draw, frSF / brSF magnitudes, DFA's B_l).
    /// Default: hashed from the run seed for that purpose alone, so W and B, and runs with
    /// neighbouring seeds, share no stream.
    pub seed: Option<u64>,
    /// Sign-symmetry variant.
    pub variant: SignVariant,
    /// Weight-mirror source.
    pub source: MirrorSource,
    /// Coefficients of the local loss (meaning per rule in DESIGN.md); `None` takes the default
    /// of `coefficients`.
    pub alpha: Option<f32>,
    pub beta: Option<f32>,
    pub gamma: Option<f32>,
    pub coefficients: CoefficientScale,
    /// Weight mirror with `source = "noise"`.
    pub noise_std: f32,
    pub mirror_lr: f32,
    pub mirror_decay: f32,
    pub mirror_every: usize,
    pub mirror_batch: usize,
    /// B's parameter group: learning rate (default: the weights' learning rate), decoupled weight
    /// decay (default: none; Kolen–Pollack always uses the weights' decay) and optimiser.
    pub b_lr: Option<f64>,
    pub b_weight_decay: Option<f64>,
    pub b_optimizer: FeedbackOptimizer,
    /// Kolen–Pollack's weight decay on W and B alike (default: the larger of the run's
    /// `train.weight_decay` and the decay that shrinks B − W tenfold by mid-run).
    pub kp_decay: Option<f64>,
    /// Clip the task gradients' norm to this value when `train.grad_clip` is 0 and any layer
    /// follows a rule other than backprop (default 1; 0 turns it off). See
    /// [`RuleConfig::effective_grad_clip`].
    pub grad_clip: Option<f64>,
    /// Per-layer exceptions, e.g. `[{ layers = ["last"], kind = "backprop" }]`.
    pub overrides: Vec<RuleOverride>,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            kind: RuleKind::Backprop,
            seed: None,
            variant: SignVariant::Usf,
            source: MirrorSource::Noise,
            alpha: None,
            beta: None,
            gamma: None,
            coefficients: CoefficientScale::Digits,
            noise_std: 1.0,
            mirror_lr: 0.05,
            mirror_decay: 1.0,
            mirror_every: 1,
            mirror_batch: 32,
            b_lr: None,
            b_weight_decay: None,
            b_optimizer: FeedbackOptimizer::Same,
            kp_decay: None,
            grad_clip: None,
            overrides: Vec::new(),
        }
    }
}

/// `(α, β, γ)` defaults per rule and scale.
///
/// | rule | Kunin 2020 (ImageNet) | digits scale | fixed point |
/// |---|---|---|---|
/// | weight_mirror α·decay + β·amp | 1e-3, 1e-3 | 0.5, 0.5 | B = (β/2α) W E[xxᵀ] (∝ W for white inputs) |
/// | information_alignment α·amp + β·null + γ·decay | 2e-3, 1e-3, 1e-3 | 1.0, 0.5, 0.1 | B = (α/2)(γ + β·W Cov Wᵀ)⁻¹ W Cov |
/// | symmetric_alignment α·decay + β·self | 1e-3, 2e-3 | 0.5, 1.0 | B = (β/2α) W = W |
/// | activation_alignment α·sparse + β·amp + γ·decay | 1e-3, 2e-3, 0 | 0.5, 1.0, 0 | B = (β/2α) W = W where the inputs span |
///
/// The digits values keep Kunin's ratios (so the fixed points are the same) and scale them so
/// that, with B's own learning rate, B aligns within a few hundred steps instead of the
/// hundreds of thousands of an ImageNet run. Information alignment's decay is the exception:
/// γ = β/5 instead of Kunin's γ = β. Its decay shrinks B towards zero against the null term,
/// and on normalised inputs a small B sends too little error down a deep or recurrent stack:
/// the ConvRNN quickstart reached 93.0 % with γ = 0.5, 90.5 % with γ = 2 and 95.3 % with
/// γ = 0.1 (the quickstart CNN 97.8 % → 98.1 %). Activation alignment's B is held near zero
/// outside its inputs' span by a decoupled decay of B's group instead (the trainer's
/// `activation_alignment_decay`): under Adam a γ·decay term in the loss drove the loss up.
pub fn default_coefficients(kind: RuleKind, scale: CoefficientScale) -> (f32, f32, f32) {
    use CoefficientScale::*;
    use RuleKind::*;
    match (kind, scale) {
        (WeightMirror, Kunin2020) => (1e-3, 1e-3, 0.0),
        (WeightMirror, Digits) => (0.5, 0.5, 0.0),
        (InformationAlignment, Kunin2020) => (2e-3, 1e-3, 1e-3),
        (InformationAlignment, Digits) => (1.0, 0.5, 0.1),
        (SymmetricAlignment | ActivationAlignment, Kunin2020) => (1e-3, 2e-3, 0.0),
        (SymmetricAlignment | ActivationAlignment, Digits) => (0.5, 1.0, 0.0),
        _ => (0.0, 0.0, 0.0),
    }
}

/// A layer's resolved rule, carried by the layer itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum LayerRule {
    #[default]
    Backprop,
    FeedbackAlignment,
    SignSymmetry(SignVariant),
    KolenPollack,
    WeightMirror { alpha: f32, beta: f32, source: MirrorSource },
    InformationAlignment { alpha: f32, beta: f32, gamma: f32 },
    SymmetricAlignment { alpha: f32, beta: f32 },
    ActivationAlignment { alpha: f32, beta: f32, gamma: f32 },
    /// The layer itself runs as backprop; the model projects the output error onto its input.
    DirectFeedbackAlignment,
}

impl LayerRule {
    pub fn kind(&self) -> RuleKind {
        match self {
            LayerRule::Backprop => RuleKind::Backprop,
            LayerRule::FeedbackAlignment => RuleKind::FeedbackAlignment,
            LayerRule::SignSymmetry(_) => RuleKind::SignSymmetry,
            LayerRule::KolenPollack => RuleKind::KolenPollack,
            LayerRule::WeightMirror { .. } => RuleKind::WeightMirror,
            LayerRule::InformationAlignment { .. } => RuleKind::InformationAlignment,
            LayerRule::SymmetricAlignment { .. } => RuleKind::SymmetricAlignment,
            LayerRule::ActivationAlignment { .. } => RuleKind::ActivationAlignment,
            LayerRule::DirectFeedbackAlignment => RuleKind::DirectFeedbackAlignment,
        }
    }

    /// The gradient the op registers for B.
    pub fn feedback_grad(&self) -> FeedbackGrad {
        let local = |l: LocalLoss| FeedbackGrad::Local(l);
        match *self {
            LayerRule::Backprop | LayerRule::FeedbackAlignment | LayerRule::SignSymmetry(_) | LayerRule::DirectFeedbackAlignment => FeedbackGrad::None,
            LayerRule::WeightMirror { source: MirrorSource::Noise, .. } => FeedbackGrad::None,
            LayerRule::KolenPollack => FeedbackGrad::WeightGrad,
            LayerRule::WeightMirror { alpha, beta, source: MirrorSource::Data } => local(LocalLoss { decay: alpha, amp: beta, ..Default::default() }),
            LayerRule::InformationAlignment { alpha, beta, gamma } => local(LocalLoss { amp: alpha, null: beta, decay: gamma, ..Default::default() }),
            LayerRule::SymmetricAlignment { alpha, beta } => local(LocalLoss { decay: alpha, self_align: beta, ..Default::default() }),
            LayerRule::ActivationAlignment { alpha, beta, gamma } => local(LocalLoss { sparse: alpha, amp: beta, decay: gamma, ..Default::default() }),
        }
    }

    /// Whether the layer stores B as a parameter of its own (drawn at init, saved in checkpoints).
    pub fn stores_feedback(&self) -> bool {
        !matches!(self, LayerRule::Backprop | LayerRule::SignSymmetry(_) | LayerRule::DirectFeedbackAlignment)
    }

    /// Whether the layer's own op is a plain convolution / product whose input gradient goes
    /// through W: backprop, and direct feedback alignment (whose error reaches each layer's
    /// input from the readout, through the model's B_l, not through the layer above).
    pub fn is_plain(&self) -> bool {
        matches!(self, LayerRule::Backprop | LayerRule::DirectFeedbackAlignment)
    }

    /// Whether B learns from Akrout's mirror step on noise (outside the optimiser).
    pub fn mirrors_noise(&self) -> bool {
        matches!(self, LayerRule::WeightMirror { source: MirrorSource::Noise, .. })
    }

    /// Whether B receives a gradient through the optimiser.
    pub fn trains_feedback(&self) -> bool {
        self.feedback_grad() != FeedbackGrad::None
    }
}

/// Where a layer sits, for resolving `first` / `last` overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerPosition {
    pub index: usize,
    pub count: usize,
}

impl RuleConfig {
    /// The rule of the layer called `name` at `position`.
    pub fn layer_rule(&self, name: &str, position: LayerPosition) -> LayerRule {
        let kind = self
            .overrides
            .iter()
            .rev()
            .find(|o| o.layers.iter().any(|pattern| layer_matches(pattern, name, position)))
            .map_or(self.kind, |o| o.kind);
        self.rule_of_kind(kind)
    }

    /// The run's coefficients applied to `kind`.
    pub fn rule_of_kind(&self, kind: RuleKind) -> LayerRule {
        let (a, b, g) = default_coefficients(kind, self.coefficients);
        let (alpha, beta, gamma) = (self.alpha.unwrap_or(a), self.beta.unwrap_or(b), self.gamma.unwrap_or(g));
        match kind {
            RuleKind::Backprop => LayerRule::Backprop,
            RuleKind::FeedbackAlignment => LayerRule::FeedbackAlignment,
            RuleKind::SignSymmetry => LayerRule::SignSymmetry(self.variant),
            RuleKind::KolenPollack => LayerRule::KolenPollack,
            RuleKind::WeightMirror => LayerRule::WeightMirror { alpha, beta, source: self.source },
            RuleKind::InformationAlignment => LayerRule::InformationAlignment { alpha, beta, gamma },
            RuleKind::SymmetricAlignment => LayerRule::SymmetricAlignment { alpha, beta },
            RuleKind::ActivationAlignment => LayerRule::ActivationAlignment { alpha, beta, gamma },
            RuleKind::DirectFeedbackAlignment => LayerRule::DirectFeedbackAlignment,
        }
    }

    /// The task-gradient clip of a run whose own `train.grad_clip` is `train_clip`, when its
    /// layers follow `rules`.
    ///
    /// Why a rule-level default: in every rule but backprop the hidden layers' updates are not
    /// the gradient of the loss (FA, sign symmetry, DFA throughout; KP, WM, IA, SA, AA until B
    /// has aligned). Backprop's steps are held back by the loss's own curvature; these are not.
    /// On a network without normalisation (the quickstart CNN, SGD lr 0.05, momentum 0.9) the
    /// hidden activations h then grow along the feedback directions within the first 20–40
    /// steps, the readout's step — whose curvature grows with ‖h‖² — becomes unstable, the
    /// logits reach the thousands and the error saturates, which keeps the hidden pushes at full
    /// size: the readout's weights grew 30× in 40 steps under FA. Bounding the task step's norm
    /// (1, as is usual for recurrent nets) lets B or W align before anything grows.
    pub fn effective_grad_clip(&self, train_clip: f64, rules: impl IntoIterator<Item = LayerRule>) -> f64 {
        if train_clip > 0.0 {
            return train_clip;
        }
        let any_other = rules.into_iter().any(|r| r != LayerRule::Backprop);
        if any_other { self.grad_clip.unwrap_or(1.0) } else { 0.0 }
    }

    /// A rule kind from its config name (`feedback_alignment`, …).
    pub fn parse_kind(name: &str) -> Result<RuleKind, String> {
        RuleKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("unknown rule {name:?} (expected one of {})", RuleKind::ALL.map(|k| k.name()).join(", ")))
    }

    /// Range checks; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [("alpha", self.alpha), ("beta", self.beta), ("gamma", self.gamma)] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("rule.{key} = {v} must be a finite number ≥ 0"));
            }
        }
        if !(self.noise_std > 0.0 && self.noise_std.is_finite()) {
            return Err(format!("rule.noise_std = {} must be > 0", self.noise_std));
        }
        if !(self.mirror_lr >= 0.0 && self.mirror_lr.is_finite()) || !(self.mirror_decay >= 0.0 && self.mirror_decay.is_finite()) {
            return Err("rule.mirror_lr and rule.mirror_decay must be finite and ≥ 0".into());
        }
        if self.mirror_every == 0 || self.mirror_batch == 0 {
            return Err("rule.mirror_every and rule.mirror_batch must be ≥ 1".into());
        }
        for (key, value) in [("b_lr", self.b_lr), ("b_weight_decay", self.b_weight_decay), ("grad_clip", self.grad_clip), ("kp_decay", self.kp_decay)] {
            if let Some(v) = value
                && !(v >= 0.0 && v.is_finite())
            {
                return Err(format!("rule.{key} = {v} must be ≥ 0"));
            }
        }
        for (i, o) in self.overrides.iter().enumerate() {
            if o.layers.is_empty() {
                return Err(format!("rule.overrides[{i}].layers is empty"));
            }
        }
        Ok(())
    }
}

fn layer_matches(pattern: &str, name: &str, position: LayerPosition) -> bool {
    match pattern {
        "first" => position.index == 0,
        "last" => position.index + 1 == position.count,
        _ => match pattern.split_once('*') {
            Some((prefix, suffix)) => name.len() >= prefix.len() + suffix.len() && name.starts_with(prefix) && name.ends_with(suffix),
            None => pattern == name,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_match_names_wildcards_and_positions() {
        let cfg = RuleConfig {
            kind: RuleKind::FeedbackAlignment,
            overrides: vec![
                RuleOverride { layers: vec!["last".into()], kind: RuleKind::Backprop },
                RuleOverride { layers: vec!["block*.conv2".into()], kind: RuleKind::KolenPollack },
            ],
            ..Default::default()
        };
        let at = |index| LayerPosition { index, count: 4 };
        assert_eq!(cfg.layer_rule("conv1", at(0)), LayerRule::FeedbackAlignment);
        assert_eq!(cfg.layer_rule("block3.conv2", at(1)), LayerRule::KolenPollack);
        assert_eq!(cfg.layer_rule("block3.conv1", at(2)), LayerRule::FeedbackAlignment);
        assert_eq!(cfg.layer_rule("fc", at(3)), LayerRule::Backprop);
    }

    #[test]
    fn coefficients_map_to_the_published_loss_terms() {
        let cfg = RuleConfig { kind: RuleKind::InformationAlignment, alpha: Some(2.0), coefficients: CoefficientScale::Kunin2020, ..Default::default() };
        match cfg.rule_of_kind(RuleKind::InformationAlignment).feedback_grad() {
            FeedbackGrad::Local(l) => assert_eq!((l.amp, l.null, l.decay), (2.0, 1e-3, 1e-3)),
            other => panic!("{other:?}"),
        }
        assert_eq!(LayerRule::KolenPollack.feedback_grad(), FeedbackGrad::WeightGrad);
        assert!(!LayerRule::FeedbackAlignment.trains_feedback() && LayerRule::FeedbackAlignment.stores_feedback());
        assert!(!LayerRule::SignSymmetry(SignVariant::Usf).stores_feedback());
    }

    #[test]
    fn digits_defaults_keep_kunins_fixed_points() {
        for kind in [RuleKind::WeightMirror, RuleKind::SymmetricAlignment, RuleKind::ActivationAlignment] {
            let (k_a, k_b, _) = default_coefficients(kind, CoefficientScale::Kunin2020);
            let (d_a, d_b, _) = default_coefficients(kind, CoefficientScale::Digits);
            assert!((k_b / (2.0 * k_a) - d_b / (2.0 * d_a)).abs() < 1e-6, "{kind:?}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<RuleConfig>("kind = \"feedback_alignment\"\nalpah = 1.0").unwrap_err().to_string();
        assert!(err.contains("alpah"), "{err}");
    }
}
