//! "Experimental realism" (the original's `obfuscate_tensor`): what an experimenter would see
//! of a layer, with Gaussian measurement noise added first and then only a random subset of
//! its units (or synapses) kept.
//!
//! The original draws the subset with `np.random.RandomState(seed).permutation(n)` and the
//! noise with `tf.random_normal(seed=…)`; we draw both from a seeded ChaCha8 stream, so the
//! subsets and noise have the same distribution but not the same values as the original's.

use std::borrow::Cow;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One way of observing the layers (`[observe] views` in a run config): the fraction of units
/// kept and the standard deviation of the additive noise. The default, (1, 0), is the model
/// seen whole and exactly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealismView {
    /// The fraction of units (activations) or synapses (weights) kept, in (0, 1]: the first
    /// ceil(fraction·n) entries (at least one) of a seeded random permutation.
    pub unit_fraction: f64,
    /// σ of the zero-mean Gaussian noise added to every value before subsampling, ≥ 0.
    pub noise_std: f64,
}

impl Default for RealismView {
    fn default() -> Self {
        Self { unit_fraction: 1.0, noise_std: 0.0 }
    }
}

impl RealismView {
    /// Checks view `index` of `observe.views`; the message names the key's path.
    pub fn validate(&self, index: usize) -> Result<(), String> {
        let f = self.unit_fraction;
        if !(f.is_finite() && f > 0.0 && f <= 1.0) {
            return Err(format!("observe.views[{index}].unit_fraction must be in (0, 1], got {f}"));
        }
        let s = self.noise_std;
        if !(s.is_finite() && s >= 0.0) {
            return Err(format!("observe.views[{index}].noise_std must be a finite number ≥ 0, got {s}"));
        }
        Ok(())
    }

    /// True for the exact, whole view (1, 0): nothing to draw, nothing to copy.
    pub fn is_exact(&self) -> bool {
        self.unit_fraction == 1.0 && self.noise_std == 0.0
    }

    /// What this view sees of `values` (`[batch, units]`, row-major; a weight tensor is one
    /// example of all its synapses): the noise of stream `noise_stream` of `noise_seed` added
    /// to every value, then `subset`'s units of every example. Borrows `values` for the exact
    /// view.
    ///
    /// # Panics
    /// As [`UnitSubset::select`].
    pub fn apply<'a>(&self, values: &'a [f32], batch: usize, subset: &UnitSubset, noise_seed: u64, noise_stream: u64) -> Cow<'a, [f32]> {
        match (self.noise_std > 0.0, subset.is_all()) {
            (false, true) => Cow::Borrowed(values),
            (false, false) => Cow::Owned(subset.select(values, batch)),
            (true, all) => {
                let mut noisy = values.to_vec();
                add_noise(&mut noisy, self.noise_std, noise_seed, noise_stream);
                Cow::Owned(if all { noisy } else { subset.select(&noisy, batch) })
            }
        }
    }
}

/// Adds N(0, std²) to every value, drawn in order from stream `stream` of ChaCha8 seeded with
/// `seed` (Box–Muller in f64, both outputs of each pair used). The same (seed, stream) always
/// gives the same noise; `std = 0` draws nothing.
pub fn add_noise(values: &mut [f32], std: f64, seed: u64, stream: u64) {
    if std == 0.0 || values.is_empty() {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut pairs = values.chunks_mut(2);
    for pair in &mut pairs {
        let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
        let u2: f64 = rng.random();
        let r = std * (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        pair[0] = (pair[0] as f64 + r * cos) as f32;
        if let Some(second) = pair.get_mut(1) {
            *second = (*second as f64 + r * sin) as f32;
        }
    }
}

/// How many of `n_units` a view with `fraction` keeps: ceil(fraction·n), at least 1 (when
/// n ≥ 1) and at most n. A product within 10⁻⁹ (relative) of an integer counts as that
/// integer, so 0.07·100 keeps 7 units, not the 8 that its floating-point value
/// 7.000000000000001 would give.
pub fn subset_size(n_units: usize, fraction: f64) -> usize {
    if n_units == 0 {
        return 0;
    }
    let exact = fraction * n_units as f64;
    let nearest = exact.round();
    let k = if (exact - nearest).abs() <= 1e-9 * nearest.max(1.0) { nearest } else { exact.ceil() };
    (k as usize).clamp(1, n_units)
}

/// The units a view keeps of a layer with `n_units` units: the first [`subset_size`] entries
/// of a random permutation of 0..n seeded by `seed`, kept sorted (so a gather walks memory
/// forwards). Built once per layer and view; the same units are used at every recording
/// point, as the original's fixed seed does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSubset {
    n_units: usize,
    indices: Vec<usize>,
}

impl UnitSubset {
    /// The subset of `fraction` of `n_units` for `seed`; `fraction = 1` keeps every unit in
    /// order without drawing.
    pub fn new(n_units: usize, fraction: f64, seed: u64) -> Self {
        let k = subset_size(n_units, fraction);
        if k == n_units {
            return Self::all(n_units);
        }
        // The first k steps of a Fisher–Yates shuffle: the first k entries of a uniformly
        // random permutation.
        let mut perm: Vec<usize> = (0..n_units).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for i in 0..k {
            let j = rng.random_range(i..n_units);
            perm.swap(i, j);
        }
        perm.truncate(k);
        perm.sort_unstable();
        Self { n_units, indices: perm }
    }

    /// Every unit, in order.
    pub fn all(n_units: usize) -> Self {
        Self { n_units, indices: (0..n_units).collect() }
    }

    /// The kept units, ascending.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// How many units are kept.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True when no unit is kept (only for a layer without units).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The layer's number of units.
    pub fn n_units(&self) -> usize {
        self.n_units
    }

    /// True when every unit is kept.
    pub fn is_all(&self) -> bool {
        self.indices.len() == self.n_units
    }

    /// The kept units of every example of `values` (`[batch, n_units]`, row-major), as
    /// `[batch, len()]`.
    ///
    /// # Panics
    /// If `values.len() != batch · n_units`.
    pub fn select(&self, values: &[f32], batch: usize) -> Vec<f32> {
        assert_eq!(values.len(), batch * self.n_units, "{} values are not {batch} examples of {} units", values.len(), self.n_units);
        if self.is_all() {
            return values.to_vec();
        }
        let mut out = Vec::with_capacity(batch * self.indices.len());
        for example in values.chunks_exact(self.n_units.max(1)) {
            out.extend(self.indices.iter().map(|&i| example[i]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_read_with_defaults_and_refuse_unknown_keys() {
        let v: RealismView = serde_json::from_str(r#"{"unit_fraction": 0.25}"#).unwrap();
        assert_eq!(v, RealismView { unit_fraction: 0.25, noise_std: 0.0 });
        let v: RealismView = serde_json::from_str("{}").unwrap();
        assert_eq!(v, RealismView::default());
        assert!(v.is_exact());
        assert!(serde_json::from_str::<RealismView>(r#"{"fraction": 0.5}"#).is_err());
    }

    #[test]
    fn validation_names_the_key_path() {
        let bad = RealismView { unit_fraction: 0.0, noise_std: 0.0 };
        let msg = bad.validate(2).unwrap_err();
        assert!(msg.contains("observe.views[2].unit_fraction"), "{msg}");
        for f in [1.5, -0.1, f64::NAN, f64::INFINITY] {
            assert!(RealismView { unit_fraction: f, noise_std: 0.0 }.validate(0).is_err(), "fraction {f}");
        }
        for s in [-1.0, f64::NAN, f64::INFINITY] {
            let msg = RealismView { unit_fraction: 1.0, noise_std: s }.validate(1).unwrap_err();
            assert!(msg.contains("observe.views[1].noise_std"), "{msg}");
        }
        assert!(RealismView { unit_fraction: 1e-6, noise_std: 3.0 }.validate(0).is_ok());
    }

    #[test]
    fn subsets_keep_exactly_ceil_fraction_n_units() {
        for (n, fraction, k) in [(10, 0.25, 3), (100, 0.07, 7), (10, 0.7, 7), (1000, 0.001, 1), (1000, 1e-6, 1), (7, 0.5, 4), (5, 1.0, 5), (1, 0.01, 1), (0, 0.5, 0)] {
            assert_eq!(subset_size(n, fraction), k, "n = {n}, fraction = {fraction}");
            let s = UnitSubset::new(n, fraction, 3);
            assert_eq!(s.len(), k);
            assert!(s.indices().windows(2).all(|w| w[0] < w[1]), "sorted and distinct: {:?}", s.indices());
            assert!(s.indices().iter().all(|&i| i < n));
        }
    }

    #[test]
    fn subsets_are_deterministic_per_seed_and_differ_across_seeds() {
        let a = UnitSubset::new(1000, 0.1, 7);
        assert_eq!(a, UnitSubset::new(1000, 0.1, 7));
        assert_ne!(a.indices(), UnitSubset::new(1000, 0.1, 8).indices());
        assert_eq!(UnitSubset::new(6, 1.0, 7).indices(), [0, 1, 2, 3, 4, 5]);
        assert!(UnitSubset::new(6, 1.0, 7).is_all());
    }

    #[test]
    fn every_unit_is_kept_equally_often_across_seeds() {
        // 3 of 10 units over 2000 seeds: each unit is kept ~600 times (binomial sd ≈ 20.5).
        let mut counts = [0usize; 10];
        for seed in 0..2000 {
            for &i in UnitSubset::new(10, 0.3, seed).indices() {
                counts[i] += 1;
            }
        }
        assert!(counts.iter().all(|&c| (500..=700).contains(&c)), "{counts:?}");
    }

    #[test]
    fn select_gathers_the_same_units_of_every_example() {
        let s = UnitSubset { n_units: 4, indices: vec![1, 3] };
        let values = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0];
        assert_eq!(s.select(&values, 3), [1.0, 3.0, 11.0, 13.0, 21.0, 23.0]);
        assert_eq!(UnitSubset::all(4).select(&values, 3), values);
    }

    #[test]
    fn noise_has_the_requested_std_and_is_reproducible() {
        let n = 200_001; // odd: the last value uses half a pair
        let mut x = vec![0.0f32; n];
        add_noise(&mut x, 0.5, 11, 3);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let std = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        // Standard errors: mean 0.5/√n ≈ 0.0011, std 0.5/√(2n) ≈ 0.0008.
        assert!(mean.abs() < 0.006, "mean {mean}");
        assert!((std - 0.5).abs() < 0.005, "std {std}");
        // Gaussian shape: P(|z| < 1σ) = 0.6827 (sd of the estimate ≈ 0.001).
        let within = x.iter().filter(|v| v.abs() < 0.5).count() as f64 / n as f64;
        assert!((within - 0.6827).abs() < 0.006, "within one sigma: {within}");
        assert!(x[n - 1] != 0.0);

        let mut again = vec![0.0f32; n];
        add_noise(&mut again, 0.5, 11, 3);
        assert_eq!(x, again);
        let mut other = vec![0.0f32; n];
        add_noise(&mut other, 0.5, 11, 4);
        assert_ne!(x, other);

        let mut y = vec![1.0f32, 2.0];
        add_noise(&mut y, 0.0, 11, 3);
        assert_eq!(y, [1.0, 2.0]);
    }

    #[test]
    fn a_view_adds_noise_before_it_subsamples() {
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let subset = UnitSubset { n_units: 4, indices: vec![0, 2] };
        assert!(matches!(RealismView::default().apply(&values, 2, &UnitSubset::all(4), 1, 0), Cow::Borrowed(_)));
        let exact_half = RealismView { unit_fraction: 0.5, noise_std: 0.0 }.apply(&values, 2, &subset, 1, 0);
        assert_eq!(&exact_half[..], [0.0, 2.0, 4.0, 6.0]);
        // Noise first: unit j of example b gets draw b·4 + j of the stream, kept or not.
        let mut noise = vec![0.0f32; 8];
        add_noise(&mut noise, 0.1, 1, 0);
        let got = RealismView { unit_fraction: 0.5, noise_std: 0.1 }.apply(&values, 2, &subset, 1, 0);
        let want: Vec<f32> = [0, 2, 4, 6].iter().map(|&i| values[i] + noise[i]).collect();
        assert_eq!(got.len(), 4);
        assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-6), "{got:?} vs {want:?}");
        assert!(got.iter().zip([0.0, 2.0, 4.0, 6.0]).all(|(g, v)| *g != v));
    }
}
