//! One numbering of layers for every model builder: each layer's rule (with `first` / `last`
//! overrides resolved), its W and B seeds and its random stream.

use crate::{FeedbackConv2dConfig, FeedbackLinearConfig, LayerPosition, RuleConfig, WeightInit};

/// Hands out configs to the feedback layers of a model in construction order. Layer `k` (from
/// 1) draws W and B from stream `k` of the run's two seeds, so a model's initial weights depend
/// only on its architecture and seeds.
pub struct LayerSeeder<'a> {
    rules: &'a RuleConfig,
    init: WeightInit,
    seeds: (u64, u64),
    stream: u64,
    /// Every feedback layer's name in construction order, for `first` / `last`; a name not
    /// given up front is appended when its layer is built (a dry build collects them).
    names: Vec<String>,
}

impl<'a> LayerSeeder<'a> {
    /// `seeds = (weight seed, feedback seed)`; `names` as far as known before building.
    pub fn new(rules: &'a RuleConfig, init: WeightInit, seeds: (u64, u64), names: Vec<String>) -> Self {
        Self { rules, init, seeds, stream: 0, names }
    }

    /// The names seen so far, in construction order.
    pub fn into_names(self) -> Vec<String> {
        self.names
    }

    /// A convolution's config with its init, rule, seeds and the next stream set.
    pub fn conv(&mut self, name: &str, channels: [usize; 2], kernel: usize) -> FeedbackConv2dConfig {
        let (rule, stream) = self.next(name);
        FeedbackConv2dConfig::new(channels, [kernel, kernel])
            .with_init(self.init)
            .with_rule(rule)
            .with_seed(self.seeds.0)
            .with_feedback_seed(self.seeds.1)
            .with_stream(stream)
    }

    /// A dense layer's config with its init, rule, seeds and the next stream set.
    pub fn linear(&mut self, name: &str, d_in: usize, d_out: usize) -> FeedbackLinearConfig {
        let (rule, stream) = self.next(name);
        FeedbackLinearConfig::new(d_in, d_out)
            .with_init(self.init)
            .with_rule(rule)
            .with_seed(self.seeds.0)
            .with_feedback_seed(self.seeds.1)
            .with_stream(stream)
    }

    fn next(&mut self, name: &str) -> (crate::LayerRule, u64) {
        self.stream += 1;
        if !self.names.iter().any(|n| n == name) {
            self.names.push(name.to_string());
        }
        let index = self.names.iter().position(|n| n == name).expect("pushed above");
        (self.rules.layer_rule(name, LayerPosition { index, count: self.names.len() }), self.stream)
    }
}
