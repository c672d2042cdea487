//! A procedural data set for tests and demos: oriented bars or simple shapes on a noisy
//! background, generated from a seed (no file needed, any size).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::set::ImageSet;

/// What the synthetic images show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// A bar through a jittered centre; the class is its orientation (`classes` angles in [0, π)).
    Bars,
    /// One of four outlines: square, disc, cross, triangle (`classes` is 4).
    Shapes,
}

/// Settings of the synthetic set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    pub pattern: Pattern,
    /// Images in the whole set (before the train/validation/test split).
    pub samples: usize,
    /// Classes (orientations for bars; shapes use 4).
    pub classes: usize,
    /// Side of the square images, in pixels.
    pub size: usize,
    /// Standard deviation of the additive Gaussian noise, in units of the full pixel range.
    pub noise: f32,
    /// Colour channels (1 or 3; colour images repeat the pattern with a random tint).
    pub channels: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { pattern: Pattern::Bars, samples: 2000, classes: 4, size: 16, noise: 0.1, channels: 1 }
    }
}

impl SyntheticConfig {
    /// Classes of the generated set (bars: `classes`, at least 2; shapes: 4).
    pub fn num_classes(&self) -> usize {
        match self.pattern {
            Pattern::Bars => self.classes.max(2),
            Pattern::Shapes => 4,
        }
    }

    /// `[channels, size, size]` of the generated images.
    pub fn shape(&self) -> [usize; 3] {
        let s = self.size.max(4);
        [self.channels.clamp(1, 3), s, s]
    }
}

/// Generates the set. Identical for identical `(config, seed)` on every machine.
pub fn generate(config: &SyntheticConfig, seed: u64) -> ImageSet {
    let classes = config.num_classes();
    let [c, s, _] = config.shape();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(config.samples * c * s * s);
    let mut labels = Vec::with_capacity(config.samples);
    for i in 0..config.samples {
        let label = (i % classes) as u32;
        let mut plane = vec![0f32; s * s];
        let half = s as f32 / 2.0;
        let (cx, cy) = (half + rng.random_range(-0.15..0.15) * s as f32, half + rng.random_range(-0.15..0.15) * s as f32);
        match config.pattern {
            Pattern::Bars => {
                let angle = std::f32::consts::PI * label as f32 / classes as f32 + rng.random_range(-0.08..0.08);
                let (dx, dy) = (angle.cos(), angle.sin());
                let width = rng.random_range(0.6..1.2) * s as f32 / 16.0;
                let length = rng.random_range(0.55..0.8) * s as f32;
                for y in 0..s {
                    for x in 0..s {
                        let (px, py) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                        let along = px * dx + py * dy;
                        let across = -px * dy + py * dx;
                        if along.abs() <= length / 2.0 && across.abs() <= width {
                            plane[y * s + x] = 1.0;
                        }
                    }
                }
            }
            Pattern::Shapes => {
                let r = rng.random_range(0.22..0.34) * s as f32;
                for y in 0..s {
                    for x in 0..s {
                        let (px, py) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                        let on = match label {
                            0 => (px.abs().max(py.abs()) - r).abs() < 0.8,
                            1 => ((px * px + py * py).sqrt() - r).abs() < 0.8,
                            2 => (px.abs() < 0.8 || py.abs() < 0.8) && px.abs().max(py.abs()) < r,
                            _ => {
                                let inside = py < r * 0.6 && py > -r + 2.0 * px.abs() * 0.9;
                                let shrunk = py < r * 0.6 - 1.4 && py > -r + 1.6 + 2.0 * px.abs() * 0.9;
                                inside && !shrunk
                            }
                        };
                        if on {
                            plane[y * s + x] = 1.0;
                        }
                    }
                }
            }
        }
        let tint: Vec<f32> = (0..c).map(|_| if c == 1 { 1.0 } else { rng.random_range(0.5..1.0) }).collect();
        for t in tint {
            for &v in &plane {
                let noise = gaussian(&mut rng) * config.noise;
                pixels.push(((0.15 + 0.7 * v * t + noise).clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        labels.push(label);
    }
    let names = match config.pattern {
        Pattern::Bars => (0..classes).map(|k| format!("bar_{}deg", 180 * k / classes)).collect(),
        Pattern::Shapes => ["square", "disc", "cross", "triangle"].map(String::from).to_vec(),
    };
    ImageSet { pixels, labels, shape: [c, s, s], class_names: names }
}

/// A standard normal draw (Box–Muller), so the set needs no distribution crate.
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_images_other_seed_other_images() {
        let cfg = SyntheticConfig { samples: 20, ..Default::default() };
        assert_eq!(generate(&cfg, 3), generate(&cfg, 3));
        assert_ne!(generate(&cfg, 3).pixels, generate(&cfg, 4).pixels);
    }

    #[test]
    fn bars_of_different_classes_differ_on_average() {
        // Horizontal vs vertical bars: mean row profile differs from mean column profile.
        let cfg = SyntheticConfig { samples: 200, classes: 2, noise: 0.0, ..Default::default() };
        let set = generate(&cfg, 0);
        let s = cfg.size;
        let mut horizontal_spread = [0f64; 2];
        for i in 0..set.len() {
            let img = set.image(i);
            let on: Vec<(usize, usize)> = (0..s * s).filter(|&p| img[p] > 128).map(|p| (p / s, p % s)).collect();
            let rows = on.iter().map(|p| p.0).max().unwrap() - on.iter().map(|p| p.0).min().unwrap();
            let cols = on.iter().map(|p| p.1).max().unwrap() - on.iter().map(|p| p.1).min().unwrap();
            horizontal_spread[set.labels[i] as usize] += cols as f64 - rows as f64;
        }
        assert!(horizontal_spread[0] > 0.0 && horizontal_spread[1] < 0.0, "{horizontal_spread:?}");
    }
}
