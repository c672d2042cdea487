//! Weight and feedback initialisation, drawn on the host from a seeded ChaCha stream.
//!
//! Drawing on the host (instead of with the backend's RNG) makes a model's initial weights
//! the same on every backend, and lets B be drawn from its own seed, independent of W.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Initial distribution of a weight tensor (and of B, which is drawn like W).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightInit {
    /// He et al. for ReLU: U(±√(6 / fan_in)).
    #[default]
    KaimingUniform,
    /// He et al. for ReLU: N(0, 2 / fan_in).
    KaimingNormal,
    /// PyTorch's default for Conv2d / Linear: U(±1 / √fan_in).
    TorchDefault,
    /// Glorot: U(±√(6 / (fan_in + fan_out))).
    XavierUniform,
    /// TensorFlow 1's `tf.variance_scaling_initializer(scale)`, the released ConvRNNs' init
    /// (tnn, neuroailab/convrnns): a normal truncated at ±2σ₀, σ₀ = √(scale / fan_in) / 0.8796…,
    /// so that the truncated draws have standard deviation √(scale / fan_in).
    /// `init = { variance_scaling = 1.0 }` in TOML.
    VarianceScaling(f32),
}

/// Standard deviation of a standard normal truncated at ±2 (TensorFlow's correction constant).
const TRUNCATED_NORMAL_STD: f32 = 0.879_625_66;

impl WeightInit {
    /// Standard deviation of the distribution (sign symmetry's uSF uses it as B's magnitude).
    pub fn std(&self, fan_in: usize, fan_out: usize) -> f32 {
        let (fi, fo) = (fan_in.max(1) as f32, fan_out.max(1) as f32);
        match self {
            WeightInit::KaimingUniform | WeightInit::KaimingNormal => (2.0 / fi).sqrt(),
            WeightInit::TorchDefault => 1.0 / (3.0 * fi).sqrt(),
            WeightInit::XavierUniform => (2.0 / (fi + fo)).sqrt(),
            WeightInit::VarianceScaling(scale) => (scale / fi).sqrt(),
        }
    }

    /// Range checks; the message names the key.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        match self {
            WeightInit::VarianceScaling(scale) if !(scale.is_finite() && *scale > 0.0) => Err(format!("{key} = {{ variance_scaling = {scale} }}: the scale must be positive")),
            _ => Ok(()),
        }
    }

    /// `len` draws from stream `stream` of `seed`.
    pub fn sample(&self, len: usize, fan_in: usize, fan_out: usize, seed: u64, stream: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let std = self.std(fan_in, fan_out);
        match self {
            WeightInit::KaimingNormal => (0..len).map(|_| std * standard_normal(&mut rng)).collect(),
            WeightInit::VarianceScaling(_) => (0..len)
                .map(|_| loop {
                    let z = standard_normal(&mut rng);
                    if z.abs() <= 2.0 {
                        break std / TRUNCATED_NORMAL_STD * z;
                    }
                })
                .collect(),
            _ => {
                let bound = std * 3f32.sqrt();
                (0..len).map(|_| rng.random_range(-bound..bound)).collect()
            }
        }
    }
}

/// Seeds for the layers of a model, handed out in construction order so every layer's W and B
/// come from distinct streams of the run seed and the rule seed.
#[derive(Debug, Clone)]
pub struct LayerSeeds {
    pub weight_seed: u64,
    pub feedback_seed: u64,
    next: u64,
}

impl LayerSeeds {
    pub fn new(weight_seed: u64, feedback_seed: u64) -> Self {
        Self { weight_seed, feedback_seed, next: 0 }
    }

    /// The stream index of the next layer.
    pub fn next_stream(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// A standard normal draw (Box–Muller).
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// `len` standard-normal draws from stream `stream` of `seed` (mirror noise, dropout…).
pub fn normal_stream(len: usize, seed: u64, stream: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    (0..len).map(|_| standard_normal(&mut rng)).collect()
}

/// Standard-normal values per rayon task of [`normal_noise`]; a multiple of 2 (one Box–Muller
/// pair per two words).
const NOISE_BLOCK: usize = 1 << 14;

/// `len` standard-normal draws from stream `stream` of `seed`, for noise drawn afresh at every
/// step (the weight mirror's). Each value takes exactly one 32-bit word of the ChaCha stream
/// (Box–Muller with both outputs of each pair of words), so block k of [`NOISE_BLOCK`] values
/// starts at word k·[`NOISE_BLOCK`] and the blocks are drawn in parallel: the values do not
/// depend on the threads. [`normal_stream`], one draw per value with a cosine each and on one
/// thread, took 21 ns a value: 2.8 ms of the 32 px convnet's weight-mirror step went to the
/// dense layer's 131,072 noise inputs.
pub fn normal_noise(len: usize, seed: u64, stream: u64) -> Vec<f32> {
    use rand::RngCore;
    use rayon::prelude::*;
    // u in (0, 1] from the top 24 bits (ln u is finite), and [0, 1) for the angle.
    const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
    let mut out = vec![0.0f32; len];
    out.par_chunks_mut(NOISE_BLOCK).enumerate().for_each(|(k, block)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        rng.set_word_pos((k * NOISE_BLOCK) as u128);
        for pair in block.chunks_mut(2) {
            let u1 = ((rng.next_u32() >> 8) + 1) as f32 * SCALE;
            let u2 = (rng.next_u32() >> 8) as f32 * SCALE;
            let r = (-2.0 * u1.ln()).sqrt();
            let (sin, cos) = (std::f32::consts::TAU * u2).sin_cos();
            pair[0] = r * cos;
            if let Some(second) = pair.get_mut(1) {
                *second = r * sin;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocks tile one stream: a draw longer than a block starts with the shorter draw, and
    /// the values are standard normal (mean, spread, tails) and differ from stream to stream.
    #[test]
    fn normal_noise_is_one_stream_drawn_in_blocks() {
        let n = 2 * NOISE_BLOCK + 1001;
        let long = normal_noise(n, 3, 7);
        assert_eq!(normal_noise(NOISE_BLOCK + 5, 3, 7)[..NOISE_BLOCK + 4], long[..NOISE_BLOCK + 4]);
        let mean = long.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = long.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let beyond_two = long.iter().filter(|v| v.abs() > 2.0).count() as f64 / n as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02 && (beyond_two - 0.0455).abs() < 0.004, "{mean} {var} {beyond_two}");
        assert!(long.iter().all(|v| v.is_finite()));
        assert_ne!(normal_noise(64, 3, 8), long[..64]);
    }

    #[test]
    fn samples_have_the_documented_spread() {
        for init in [WeightInit::KaimingUniform, WeightInit::KaimingNormal, WeightInit::TorchDefault, WeightInit::XavierUniform, WeightInit::VarianceScaling(0.64)] {
            let v = init.sample(40_000, 50, 30, 1, 2);
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
            assert!(mean.abs() < 0.01 && (std / init.std(50, 30) - 1.0).abs() < 0.02, "{init:?}: {mean} {std}");
        }
    }

    #[test]
    fn variance_scaling_is_truncated_at_two_of_its_untruncated_deviations() {
        let std = WeightInit::VarianceScaling(1.0).std(100, 1);
        let v = WeightInit::VarianceScaling(1.0).sample(20_000, 100, 1, 3, 4);
        let bound = 2.0 * std / TRUNCATED_NORMAL_STD;
        assert!(v.iter().all(|x| x.abs() <= bound * (1.0 + 1e-6)));
        assert!(v.iter().any(|x| x.abs() > 0.95 * bound), "the tails reach the truncation");
        let config: std::collections::BTreeMap<String, WeightInit> = toml::from_str("init = { variance_scaling = 0.5 }").unwrap();
        assert_eq!(config["init"], WeightInit::VarianceScaling(0.5));
        assert!(WeightInit::VarianceScaling(0.0).validate("model.init").unwrap_err().contains("positive"));
    }

    #[test]
    fn streams_are_independent_and_reproducible() {
        let a = WeightInit::KaimingUniform.sample(100, 10, 10, 5, 1);
        assert_eq!(a, WeightInit::KaimingUniform.sample(100, 10, 10, 5, 1));
        assert_ne!(a, WeightInit::KaimingUniform.sample(100, 10, 10, 5, 2));
        assert_ne!(a, WeightInit::KaimingUniform.sample(100, 10, 10, 6, 1));
    }
}
