//! A run is described by one TOML file: `[model]`, `[data]`, `[train]`, `[rule]`. Every key
//! has a documented default; unknown keys and out-of-range values are errors that name the
//! key's path.

use std::path::Path;

use plastic_cnn::CnnConfig;
use plastic_convrnn::ConvRnnConfig;
use plastic_data::DataConfig;
use plastic_observe::ObserveConfig;
use plastic_rules::ops::FeedbackGrad;
use plastic_rules::{FeedbackOptimizer, Precision, RuleConfig, RuleKind};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Name of the run directory under `--out` (default `runs/`).
    pub name: String,
    /// Seed of the weights, the batch order and every per-step draw.
    pub seed: u64,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    pub rule: RuleConfig,
    /// What is recorded for learning-rule identification (`observables.*`).
    pub observe: ObserveConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "run".into(),
            seed: 0,
            model: ModelConfig::default(),
            data: DataConfig::default(),
            train: TrainConfig::default(),
            rule: RuleConfig::default(),
            observe: ObserveConfig::default(),
        }
    }
}

/// The `[model]` section: a zoo CNN (the keys of [`CnnConfig`]) or, with `kind = "convrnn"`,
/// a ConvRNN described in `[model.convrnn]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub kind: ModelKind,
    pub width: f64,
    pub channels: Vec<usize>,
    pub hidden: Vec<usize>,
    pub batch_norm: bool,
    pub lrn: bool,
    pub dropout: Option<f64>,
    pub stem: plastic_cnn::Stem,
    pub init: plastic_rules::WeightInit,
    /// The ConvRNN graph, with `kind = "convrnn"`.
    pub convrnn: Option<ConvRnnConfig>,
}

/// Zoo CNNs and the ConvRNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Mlp,
    #[default]
    Convnet,
    Knet4,
    Knet5,
    Alexnet,
    Resnet18,
    Resnet34,
    Resnet18v2,
    Resnet34v2,
    Shallownet,
    /// A ConvRNN described by `[model.convrnn]`.
    Convrnn,
}

impl Default for ModelConfig {
    fn default() -> Self {
        let c = CnnConfig::default();
        Self {
            kind: ModelKind::Convnet,
            width: c.width,
            channels: c.channels,
            hidden: c.hidden,
            batch_norm: c.batch_norm,
            lrn: c.lrn,
            dropout: c.dropout,
            stem: c.stem,
            init: c.init,
            convrnn: None,
        }
    }
}

impl ModelConfig {
    /// The CNN configuration, or `None` for a ConvRNN.
    pub fn cnn(&self) -> Option<CnnConfig> {
        use plastic_cnn::CnnKind as K;
        let kind = match self.kind {
            ModelKind::Mlp => K::Mlp,
            ModelKind::Convnet => K::Convnet,
            ModelKind::Knet4 => K::Knet4,
            ModelKind::Knet5 => K::Knet5,
            ModelKind::Alexnet => K::Alexnet,
            ModelKind::Resnet18 => K::Resnet18,
            ModelKind::Resnet34 => K::Resnet34,
            ModelKind::Resnet18v2 => K::Resnet18v2,
            ModelKind::Resnet34v2 => K::Resnet34v2,
            ModelKind::Shallownet => K::Shallownet,
            ModelKind::Convrnn => return None,
        };
        Some(CnnConfig {
            kind,
            width: self.width,
            channels: self.channels.clone(),
            hidden: self.hidden.clone(),
            batch_norm: self.batch_norm,
            lrn: self.lrn,
            dropout: self.dropout,
            stem: self.stem,
            init: self.init,
        })
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        match (self.kind, &self.convrnn) {
            (ModelKind::Convrnn, None) => Err("model.kind = \"convrnn\" needs a [model.convrnn] table".into()),
            (ModelKind::Convrnn, Some(c)) => c.validate(),
            (_, Some(_)) => Err("[model.convrnn] is only read when model.kind = \"convrnn\"".into()),
            (_, None) => self.cnn().expect("a CNN kind").validate(),
        }
    }
}

/// Optimisers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// SGD with (optionally Nesterov) momentum, PyTorch's update (no dampening).
    #[default]
    Sgd,
    /// Adam (Kingma & Ba); with `decoupled_weight_decay` it is AdamW.
    Adam,
}

/// Learning-rate schedules (after the linear warm-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    #[default]
    Constant,
    /// Multiply by `gamma` every `decay_every` steps.
    Step,
    /// Cosine from `lr` to `min_lr` over the run.
    Cosine,
}

/// The `[train]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser steps (batches). When 0, `epochs` decides.
    pub steps: usize,
    /// Passes over the training split, used when `steps` is 0.
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// L2 penalty on the weights (not on B, biases or norms).
    pub weight_decay: f64,
    /// Apply `weight_decay` as `w ← w − lr·λ·w` (AdamW style) instead of adding λw to the gradient.
    pub decoupled_weight_decay: bool,
    pub schedule: ScheduleKind,
    pub warmup_steps: usize,
    pub decay_every: usize,
    pub gamma: f64,
    pub min_lr: f64,
    /// Clip the global gradient norm to this value; 0 turns clipping off.
    pub grad_clip: f64,
    /// Write a `metrics.jsonl` line (and alignment angles) every this many steps.
    pub log_every: usize,
    /// Evaluate on the validation split every this many steps (0: at the end only).
    pub eval_every: usize,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Keep this many step checkpoints (the final one is always kept).
    pub keep_checkpoints: usize,
    /// Measure `true_grad_angle` (a second, backprop backward) every this many steps (0: never).
    pub true_grad_every: usize,
    pub eval_batch_size: usize,
    /// CPU threads for the flex backend (0: all cores).
    pub threads: usize,
    /// Arithmetic of the forward and backward passes: "f32", or mixed precision "bf16" /
    /// "f16" (activations and products in half precision, parameters, optimiser and loss in
    /// f32; f16 with a dynamic loss scale). See `plastic_rules::precision`.
    pub precision: Precision,
    /// f16: the dynamic loss scale's starting value (a power of two, 1 to 2²⁴).
    pub loss_scale: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 0,
            epochs: 10,
            batch_size: 64,
            optimizer: OptimizerKind::Sgd,
            lr: 0.05,
            momentum: 0.9,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            schedule: ScheduleKind::Constant,
            warmup_steps: 0,
            decay_every: 1000,
            gamma: 0.1,
            min_lr: 0.0,
            grad_clip: 0.0,
            log_every: 20,
            eval_every: 0,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            true_grad_every: 100,
            eval_batch_size: 256,
            threads: 0,
            precision: Precision::F32,
            loss_scale: 65536.0,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = |key: &str, v: f64| if v > 0.0 && v.is_finite() { Ok(()) } else { Err(format!("train.{key} = {v} must be > 0")) };
        let non_negative = |key: &str, v: f64| if v >= 0.0 && v.is_finite() { Ok(()) } else { Err(format!("train.{key} = {v} must be ≥ 0")) };
        if self.steps == 0 && self.epochs == 0 {
            return Err("train.steps and train.epochs are both 0: nothing to train".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err("train.batch_size and train.eval_batch_size must be ≥ 1".into());
        }
        positive("lr", self.lr)?;
        non_negative("weight_decay", self.weight_decay)?;
        non_negative("min_lr", self.min_lr)?;
        non_negative("grad_clip", self.grad_clip)?;
        if !(1.0..=16_777_216.0).contains(&self.loss_scale) || self.loss_scale.log2().fract() != 0.0 {
            return Err(format!("train.loss_scale = {} must be a power of two from 1 to 16777216 (2^24)", self.loss_scale));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("train.momentum = {} must be in [0, 1)", self.momentum));
        }
        for (key, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("train.{key} = {v} must be in [0, 1)"));
            }
        }
        positive("epsilon", self.epsilon)?;
        positive("gamma", self.gamma)?;
        if self.schedule == ScheduleKind::Step && self.decay_every == 0 {
            return Err("train.decay_every must be ≥ 1 with schedule = \"step\"".into());
        }
        if self.log_every == 0 {
            return Err("train.log_every must be ≥ 1".into());
        }
        if self.keep_checkpoints == 0 {
            return Err("train.keep_checkpoints must be ≥ 1".into());
        }
        Ok(())
    }
}

impl RunConfig {
    /// Reads `path`, applies `overrides` (`section.key=value`, the value in TOML syntax or a
    /// bare string), and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, overrides).map_err(|e| match e {
            TrainError::Config(m) => TrainError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses TOML text (see [`RunConfig::load`]).
    pub fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| TrainError::Config(one_line(&e.to_string())))?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let de = toml::Value::Table(value);
        let config: RunConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            TrainError::Config(format!("{}: {}", if path == "." { "config".into() } else { path }, one_line(&e.inner().to_string())))
        })?;
        config.validate().map_err(TrainError::Config)?;
        Ok(config)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name == "." || self.name == ".." {
            return Err(format!("name = {:?} must be a plain directory name", self.name));
        }
        self.model.validate()?;
        self.data.validate()?;
        self.train.validate()?;
        self.rule.validate()?;
        self.observe.validate()?;
        check_unread_keys(self)
    }

    /// The resolved config as TOML (what is saved as `config.toml` in the run directory).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RunConfig always serialises")
    }
}

/// Rejects keys that parse but would change nothing (or not what they say) in this run. A key
/// counts as set when it differs from its default (or, for an `Option`, when it is given): a
/// key written with its default value is accepted, since the run is then exactly as written.
fn check_unread_keys(config: &RunConfig) -> std::result::Result<(), String> {
    if config.model.kind == ModelKind::Convrnn {
        let (m, d) = (&config.model, ModelConfig::default());
        let set: Vec<&str> = [
            ("model.width", m.width != d.width),
            ("model.channels", m.channels != d.channels),
            ("model.hidden", m.hidden != d.hidden),
            ("model.batch_norm", m.batch_norm != d.batch_norm),
            ("model.lrn", m.lrn != d.lrn),
            ("model.dropout", m.dropout != d.dropout),
            ("model.stem", m.stem != d.stem),
            ("model.init", m.init != d.init),
        ]
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect();
        if !set.is_empty() {
            return Err(format!(
                "{} {}, not read with model.kind = \"convrnn\": the ConvRNN is described by [model.convrnn] alone (model.convrnn.width, model.convrnn.init, its layers and cells)",
                set.join(", "),
                if set.len() == 1 { "is a zoo-CNN key" } else { "are zoo-CNN keys" }
            ));
        }
    }
    let rule = &config.rule;
    // B's own group (`b_*`) steps only B that the optimiser trains outside Kolen–Pollack: a
    // Kolen–Pollack run reads it only through overrides to such rules.
    let other_trained_b = rule.overrides.iter().any(|o| o.kind != RuleKind::KolenPollack && rule.rule_of_kind(o.kind).trains_feedback());
    if rule.kind == RuleKind::KolenPollack && !other_trained_b {
        let set: Vec<&str> = [("rule.b_lr", rule.b_lr.is_some()), ("rule.b_weight_decay", rule.b_weight_decay.is_some()), ("rule.b_optimizer", rule.b_optimizer != FeedbackOptimizer::Same)]
            .into_iter()
            .filter_map(|(key, given)| given.then_some(key))
            .collect();
        if !set.is_empty() {
            return Err(format!(
                "{} cannot be set with rule.kind = \"kolen_pollack\": its B steps exactly like W (the weights' optimiser and learning rate, and rule.kp_decay on both), and no rule.overrides entry has a B of its own to train",
                set.join(", ")
            ));
        }
    }
    check_coefficient_meanings(rule)
}

/// The local-loss term (`decay`, `self`, `amp`, `null`, `sparse`) that each of α, β, γ weighs
/// under `kind`, or `None` where `kind` does not read the letter. Read off the rules crate's own
/// mapping by resolving `kind` with three distinct probe values, so it cannot drift from it.
fn coefficient_terms(rule: &RuleConfig, kind: RuleKind) -> [Option<&'static str>; 3] {
    const PROBE: [f32; 3] = [1.0, 2.0, 4.0];
    let probe = RuleConfig { alpha: Some(PROBE[0]), beta: Some(PROBE[1]), gamma: Some(PROBE[2]), ..rule.clone() };
    let FeedbackGrad::Local(l) = probe.rule_of_kind(kind).feedback_grad() else { return [None; 3] };
    let terms = [("decay", l.decay), ("self", l.self_align), ("amp", l.amp), ("null", l.null), ("sparse", l.sparse)];
    PROBE.map(|p| terms.iter().find(|(_, v)| *v == p).map(|(name, _)| *name))
}

/// Run-level α, β, γ apply to every layer, those of `rule.overrides` included; a letter given
/// by the user must weigh the same term under every rule of the run that reads it.
fn check_coefficient_meanings(rule: &RuleConfig) -> std::result::Result<(), String> {
    let kinds: Vec<(String, RuleKind)> =
        std::iter::once(("rule.kind".to_string(), rule.kind)).chain(rule.overrides.iter().enumerate().map(|(i, o)| (format!("rule.overrides[{i}].kind"), o.kind))).collect();
    for (letter, (key, value)) in [("alpha", rule.alpha), ("beta", rule.beta), ("gamma", rule.gamma)].into_iter().enumerate() {
        let Some(value) = value else { continue };
        let readers: Vec<(&str, RuleKind, &str)> = kinds.iter().filter_map(|(at, kind)| coefficient_terms(rule, *kind)[letter].map(|term| (at.as_str(), *kind, term))).collect();
        if readers.is_empty() {
            let names: Vec<&str> = kinds.iter().map(|(_, k)| k.name()).collect();
            return Err(format!("rule.{key} = {value} is not read by {}: none of its local losses has a term for it", names.join(" or ")));
        }
        if let (Some(first), Some(other)) = (readers.first(), readers.iter().find(|r| r.2 != readers[0].2)) {
            return Err(format!(
                "rule.{key} = {value} weighs {} under {} ({}) but {} under {} ({}): the run-level coefficients apply to every layer, so give rule.{key} only where the rules agree on its meaning (or leave each rule its default)",
                first.2,
                first.1.name(),
                first.0,
                other.2,
                other.1.name(),
                other.0
            ));
        }
    }
    Ok(())
}

/// Sets `a.b.c = value` in a TOML table.
fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| TrainError::Config(format!("--set {spec:?}: expected section.key=value")))?;
    let key = key.trim();
    let value = parse_value(raw.trim());
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TrainError::Config(format!("--set {spec:?}: empty key")));
    }
    let mut t = table;
    for p in &parts[..parts.len() - 1] {
        let entry = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| TrainError::Config(format!("--set {key}: {p} is not a table")))?;
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// A TOML value, or the raw text as a string (so `--set data.kind=cifar10` needs no quotes).
fn parse_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    toml::from_str::<toml::Table>(&wrapped).ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_documented_default() {
        assert_eq!(RunConfig::parse("", &[]).unwrap(), RunConfig::default());
    }

    #[test]
    fn saved_config_reads_back_identically() {
        let c = RunConfig::parse("[rule]\nkind = \"weight_mirror\"\n[train]\nsteps = 3", &[]).unwrap();
        assert_eq!(RunConfig::parse(&c.to_toml(), &[]).unwrap(), c);
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let err = RunConfig::parse("[train]\nlearning_rate = 0.1", &[]).unwrap_err().to_string();
        assert!(err.contains("train") && err.contains("learning_rate"), "{err}");
        let err = RunConfig::parse("[train]\nlr = \"fast\"", &[]).unwrap_err().to_string();
        assert!(err.contains("train.lr"), "{err}");
        let err = RunConfig::parse("[model]\nkind = \"vgg\"", &[]).unwrap_err().to_string();
        assert!(err.contains("model.kind") && err.contains("vgg"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let err = RunConfig::parse("[train]\nlr = -1.0", &[]).unwrap_err().to_string();
        assert!(err.contains("train.lr"), "{err}");
        let err = RunConfig::parse("[rule]\nkind = \"kolen_pollack\"\nkp_decay = -1.0", &[]).unwrap_err().to_string();
        assert!(err.contains("rule.kp_decay"), "{err}");
        // Kolen–Pollack carries its own decay: no train.weight_decay needed.
        assert!(RunConfig::parse("[rule]\nkind = \"kolen_pollack\"", &[]).is_ok());
    }

    /// Keys that would be parsed and then ignored are rejected with their path; written with
    /// their default value they are accepted.
    #[test]
    fn keys_the_run_would_not_read_are_rejected_by_path() {
        let convrnn = "[model]\nkind = \"convrnn\"\n[model.convrnn]\ntimes = 3\n[[model.convrnn.layers]]\nname = \"a\"\n";
        assert!(RunConfig::parse(convrnn, &[]).is_ok());
        for (key, value) in [("width", "0.5"), ("init", "xavier_uniform"), ("batch_norm", "true"), ("dropout", "0.3"), ("channels", "[8]"), ("hidden", "[8]"), ("lrn", "true"), ("stem", "cifar")] {
            let err = RunConfig::parse(convrnn, &[format!("model.{key}={value}")]).unwrap_err().to_string();
            assert!(err.contains(&format!("model.{key}")) && err.contains("model.convrnn"), "{key}: {err}");
        }
        let err = RunConfig::parse(convrnn, &["model.width=2.0".into(), "model.dropout=0.1".into()]).unwrap_err().to_string();
        assert!(err.contains("model.width, model.dropout"), "{err}");
        let d = ModelConfig::default();
        assert!(RunConfig::parse(convrnn, &[format!("model.width={:?}", d.width), format!("model.batch_norm={}", d.batch_norm)]).is_ok());
        // The same keys are read by a CNN.
        assert!(RunConfig::parse("[model]\nwidth = 0.5\ndropout = 0.3", &[]).is_ok());

        let kp = ["rule.kind=kolen_pollack".to_string(), "train.weight_decay=1e-4".into()];
        assert!(RunConfig::parse("", &kp).is_ok());
        for (key, value) in [("b_weight_decay", "0.01"), ("b_optimizer", "adam"), ("b_lr", "0.1")] {
            let err = RunConfig::parse("", &[kp[0].clone(), kp[1].clone(), format!("rule.{key}={value}")]).unwrap_err().to_string();
            assert!(err.contains(&format!("rule.{key}")) && err.contains("kolen_pollack"), "{key}: {err}");
        }
        assert!(RunConfig::parse("", &[kp[0].clone(), kp[1].clone(), "rule.b_optimizer=same".into()]).is_ok());
        assert!(RunConfig::parse("", &["rule.kind=feedback_alignment".into(), "rule.b_lr=0.1".into(), "rule.b_optimizer=adam".into()]).is_ok());
        // An override whose B the optimiser trains reads B's group.
        let mixed = "[rule]\nkind = \"kolen_pollack\"\nb_lr = 0.1\noverrides = [{ layers = [\"last\"], kind = \"symmetric_alignment\" }]\n[train]\nweight_decay = 1e-4\n";
        assert!(RunConfig::parse(mixed, &[]).is_ok());
        assert!(RunConfig::parse(&mixed.replace("symmetric_alignment", "backprop"), &[]).unwrap_err().to_string().contains("rule.b_lr"));
    }

    /// α of weight mirror weighs decay, α of information alignment weighs amp: one run-level α
    /// cannot mean both. γ is a decay wherever it is read, so it may be given.
    #[test]
    fn run_level_coefficients_must_mean_the_same_for_every_override() {
        let mixed = "[rule]\nkind = \"weight_mirror\"\nsource = \"data\"\noverrides = [{ layers = [\"last\"], kind = \"information_alignment\" }]\n";
        assert!(RunConfig::parse(mixed, &[]).is_ok());
        let err = RunConfig::parse(mixed, &["rule.alpha=0.2".into()]).unwrap_err().to_string();
        assert!(err.contains("rule.alpha") && err.contains("decay") && err.contains("amp") && err.contains("rule.overrides[0].kind"), "{err}");
        let err = RunConfig::parse(mixed, &["rule.beta=0.2".into()]).unwrap_err().to_string();
        assert!(err.contains("rule.beta"), "{err}");
        assert!(RunConfig::parse(mixed, &["rule.gamma=0.2".into()]).is_ok());
        // Symmetric alignment's α is a decay too: the same meaning as weight mirror's α.
        let agree = "[rule]\nkind = \"weight_mirror\"\nsource = \"data\"\nalpha = 0.2\noverrides = [{ layers = [\"last\"], kind = \"symmetric_alignment\" }]\n";
        assert!(RunConfig::parse(agree, &[]).is_ok());
        assert!(RunConfig::parse(agree, &["rule.beta=0.3".into()]).unwrap_err().to_string().contains("self"));
        // Rules without a local loss read no letter.
        let fa = "[rule]\nkind = \"feedback_alignment\"\nalpha = 0.2\noverrides = [{ layers = [\"last\"], kind = \"activation_alignment\" }]\n";
        assert!(RunConfig::parse(fa, &[]).is_ok());
        // Weight mirror on noise learns B outside the local loss: it reads no letter either.
        assert!(RunConfig::parse(&mixed.replace("\"data\"", "\"noise\""), &["rule.alpha=0.2".into()]).is_ok());
        assert_eq!(coefficient_terms(&RuleConfig::default(), RuleKind::InformationAlignment), [Some("amp"), Some("null"), Some("decay")]);
        assert_eq!(coefficient_terms(&RuleConfig::default(), RuleKind::ActivationAlignment), [Some("sparse"), Some("amp"), Some("decay")]);
        // A letter no rule of the run reads is refused, not ignored.
        let err = RunConfig::parse("", &["rule.kind=symmetric_alignment".into(), "rule.gamma=0.1".into()]).unwrap_err().to_string();
        assert!(err.contains("rule.gamma = 0.1 is not read by symmetric_alignment"), "{err}");
        assert!(RunConfig::parse("", &["rule.kind=feedback_alignment".into(), "rule.alpha=0.1".into()]).unwrap_err().to_string().contains("rule.alpha"));
        assert!(RunConfig::parse("", &["rule.kind=activation_alignment".into(), "rule.gamma=0.1".into()]).is_ok());
    }

    #[test]
    fn set_overrides_nested_keys_with_typed_or_bare_values() {
        let c = RunConfig::parse("", &["train.lr=0.2".into(), "data.kind=synthetic".into(), "rule.kind=feedback_alignment".into(), "model.hidden=[5, 6]".into()]).unwrap();
        assert_eq!(c.train.lr, 0.2);
        assert_eq!(c.data.kind, plastic_data::DataKind::Synthetic);
        assert_eq!(c.rule.kind, RuleKind::FeedbackAlignment);
        assert_eq!(c.model.hidden, vec![5, 6]);
        assert!(RunConfig::parse("", &["train.lr".into()]).is_err());
    }
}
