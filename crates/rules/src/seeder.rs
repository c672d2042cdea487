//! One numbering of layers for every model builder: each layer's rule (with `first` / `last`
//! overrides resolved), its W and B seeds and its random stream.

use crate::{FeedbackConv2dConfig, FeedbackLinearConfig, LayerPosition, RuleConfig, WeightInit};

/// Hands out configs to the feedback layers of a model in construction order. Layer `k` (from
/// 1) draws W and B from stream `k` of the run's two seeds (the [`SeedPurpose::Weights`] and
/// [`SeedPurpose::Feedback`] seeds of [`derive_seed`]), so a model's initial weights depend
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

/// What a random draw of a run is for. Each purpose gets its own seed, hashed from the run
/// seed by [`derive_seed`], so no two purposes (nor the same purpose of runs with seeds s and
/// s + 1) ever read the same `(seed, stream)` of ChaCha.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeedPurpose {
    /// Initial W of every layer (stream = layer index).
    Weights,
    /// Initial B of every layer (stream = layer index); also the root of the draws below that
    /// belong to the feedback pathway ([`SeedPurpose::Magnitudes`], [`SeedPurpose::MirrorNoise`]).
    Feedback,
    /// The shuffle of each epoch (stream = epoch).
    BatchOrder,
    /// Crops and flips (one seed per step, stream = image in the batch).
    Augmentation,
    /// The device RNG, reseeded at every step (dropout).
    Dropout,
    /// Sign symmetry's random magnitudes (frSF once, brSF per step).
    Magnitudes,
    /// Weight mirror's white noise (per mirror step).
    MirrorNoise,
    /// The observables' fixed probe batch (which validation images).
    ProbeBatch,
    /// The observables' realism manipulations: measurement noise and unit subsets.
    Observation,
}

impl SeedPurpose {
    /// A fixed tag per purpose (its name's bytes), mixed into the seed.
    const fn tag(self) -> u64 {
        let name: &[u8; 8] = match self {
            SeedPurpose::Weights => b"weights\0",
            SeedPurpose::Feedback => b"feedback",
            SeedPurpose::BatchOrder => b"order\0\0\0",
            SeedPurpose::Augmentation => b"augment\0",
            SeedPurpose::Dropout => b"dropout\0",
            SeedPurpose::Magnitudes => b"magnitud",
            SeedPurpose::MirrorNoise => b"mirror\0\0",
            SeedPurpose::ProbeBatch => b"probe\0\0\0",
            SeedPurpose::Observation => b"observe\0",
        };
        splitmix64(u64::from_le_bytes(*name))
    }
}

/// SplitMix64's finaliser (Steele et al. 2014): a bijection of u64 whose outputs for nearby
/// inputs look independent.
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of `purpose` in a run (or layer) seeded with `seed`. Two different `(seed,
/// purpose)` pairs collide only by a 2⁻⁶⁴ accident.
pub const fn derive_seed(seed: u64, purpose: SeedPurpose) -> u64 {
    splitmix64(splitmix64(seed) ^ purpose.tag())
}

/// The seed of draw `index` (a step) within a purpose's seed: distinct for distinct indices.
pub const fn indexed_seed(seed: u64, index: u64) -> u64 {
    splitmix64(seed ^ splitmix64(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SeedPurpose; 9] = [
        SeedPurpose::Weights,
        SeedPurpose::Feedback,
        SeedPurpose::BatchOrder,
        SeedPurpose::Augmentation,
        SeedPurpose::Dropout,
        SeedPurpose::Magnitudes,
        SeedPurpose::MirrorNoise,
        SeedPurpose::ProbeBatch,
        SeedPurpose::Observation,
    ];

    #[test]
    fn purposes_of_neighbouring_run_seeds_never_share_a_seed() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..200u64 {
            for p in ALL {
                assert!(seen.insert(derive_seed(seed, p)), "seed {seed} {p:?} repeats an earlier derived seed");
            }
        }
        assert_eq!(seen.len(), 200 * ALL.len());
    }

    #[test]
    fn splitmix64_matches_the_reference_values() {
        // The first outputs of Vigna's splitmix64.c seeded with 0 (state advanced by the
        // golden gamma before each output).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }
}
