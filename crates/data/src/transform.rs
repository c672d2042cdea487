//! From bytes to network input: normalisation, and the training-time augmentation (random crop
//! with zero padding, horizontal flip), each draw seeded by the image's place in the schedule.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::set::ImageSet;

/// Per-channel affine map `x ↦ (x/255 − mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Scales to `[0, 1]` only.
    pub fn identity(channels: usize) -> Self {
        Self { mean: vec![0.0; channels], std: vec![1.0; channels] }
    }
}

/// Augmentation applied to training batches only.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augmentation {
    /// Pad by this many pixels (with the channel mean, i.e. 0 after normalisation) and crop a
    /// random window of the original size. 0 turns cropping off.
    pub crop_padding: usize,
    /// Flip left-right with probability ½.
    pub flip: bool,
}

/// A batch ready to upload: `images` is `[n, c, h, w]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Builds a batch from `indices` of `set`. With `augment = Some((aug, seed))`, image `k` of the
/// batch draws its crop and flip from the ChaCha stream `(seed, k)`, so a batch is a pure
/// function of its inputs: the same on resume as in an uninterrupted run.
pub fn make_batch(set: &ImageSet, indices: &[usize], norm: &Normalization, augment: Option<(Augmentation, u64)>) -> Batch {
    let [c, h, w] = set.shape;
    let plane = h * w;
    let mut images = vec![0f32; indices.len() * c * plane];
    let mut labels = Vec::with_capacity(indices.len());
    let scale: Vec<(f32, f32)> = (0..c).map(|ch| (1.0 / (255.0 * norm.std[ch]), norm.mean[ch] / norm.std[ch])).collect();
    for (k, &index) in indices.iter().enumerate() {
        labels.push(set.labels[index]);
        let src = set.image(index);
        let out = &mut images[k * c * plane..(k + 1) * c * plane];
        let (dy, dx, flip) = match augment {
            Some((aug, seed)) if aug.crop_padding > 0 || aug.flip => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(k as u64);
                let p = aug.crop_padding as i64;
                let dy = if p > 0 { rng.random_range(-p..=p) as isize } else { 0 };
                let dx = if p > 0 { rng.random_range(-p..=p) as isize } else { 0 };
                (dy, dx, aug.flip && rng.random_bool(0.5))
            }
            _ => (0, 0, false),
        };
        for ch in 0..c {
            let (a, b) = scale[ch];
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + dx;
                    out[ch * plane + y * w + x] = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        src[ch * plane + sy as usize * w + sx as usize] as f32 * a - b
                    } else {
                        0.0
                    };
                }
            }
        }
    }
    Batch { images, labels, shape: [indices.len(), c, h, w] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> ImageSet {
        ImageSet::new((0..16).map(|v| v * 10).collect(), vec![0], [1, 4, 4], vec!["a".into()]).unwrap()
    }

    #[test]
    fn normalisation_is_affine_per_channel() {
        let set = ramp();
        let norm = Normalization { mean: vec![0.5], std: vec![0.25] };
        let b = make_batch(&set, &[0], &norm, None);
        assert!((b.images[3] - ((30.0 / 255.0 - 0.5) / 0.25)).abs() < 1e-6);
    }

    #[test]
    fn flip_mirrors_rows_and_is_seeded() {
        let set = ramp();
        let norm = Normalization::identity(1);
        let aug = Augmentation { crop_padding: 0, flip: true };
        // Find seeds that flip and that do not; the flipped image is the mirror of the plain one.
        let plain = make_batch(&set, &[0], &norm, None).images;
        let batches: Vec<Vec<f32>> = (0..16).map(|s| make_batch(&set, &[0], &norm, Some((aug, s))).images).collect();
        let flipped = batches.iter().find(|b| **b != plain).expect("some seed flips");
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(flipped[y * 4 + x], plain[y * 4 + 3 - x]);
            }
        }
        assert!(batches.iter().any(|b| *b == plain), "some seed does not flip");
        assert_eq!(batches[5], make_batch(&set, &[0], &norm, Some((aug, 5))).images);
    }

    #[test]
    fn crop_shifts_content_and_pads_with_zero() {
        let set = ramp();
        let norm = Normalization::identity(1);
        let aug = Augmentation { crop_padding: 1, flip: false };
        let plain = make_batch(&set, &[0], &norm, None).images;
        let shifted: Vec<Vec<f32>> = (0..32).map(|s| make_batch(&set, &[0], &norm, Some((aug, s))).images).collect();
        // Every crop keeps 3×3 of the original pixels at least and pads the rest with zero.
        for img in &shifted {
            let kept = img.iter().filter(|v| plain.contains(v) && **v != 0.0).count();
            assert!(kept >= 8, "{img:?}");
        }
        assert!(shifted.iter().any(|b| *b != plain));
    }
}
