//! The regressions from a layer's features to neural responses, on a training fold's principal
//! component scores ([`crate::linalg::Components`]).
//!
//! - **Ridge**, with its penalty chosen per neuroid by efficient leave-one-out cross-validation
//!   on the training stimuli: scikit-learn's `RidgeCV(alphas, alpha_per_target=True)` with an
//!   intercept (its "svd" generalised cross-validation), solved in closed form from the scores'
//!   singular values, so the whole penalty grid costs a few matrix products.
//! - **PLS** with 25 components and no scaling, the Brain-Score convention
//!   (`PLSRegression(n_components=25, scale=False)`), through `linfa-pls`'s NIPALS.

use faer::Mat;
use linfa::prelude::{Fit, Predict};
use linfa::DatasetBase;
use ndarray::Array2;

use crate::linalg::Components;

/// The ridge penalty grid for a fold whose centred training features have total variance
/// `trace` (Σλ): 15 values, `trace · 10^(k/2)` for k = −12 … 2, from a fit that is almost
/// ordinary least squares to one shrunk nearly to the mean.
pub fn ridge_alphas(trace: f64) -> Vec<f64> {
    (-12..=2).map(|k| trace * 10f64.powf(k as f64 / 2.0)).collect()
}

/// Ridge predictions on the held-out stimuli, `[test × targets]`, and each target's chosen
/// penalty. `y` is `[train × targets]`.
pub fn ridge(c: &Components, y: &Mat<f64>, alphas: &[f64]) -> (Mat<f64>, Vec<f64>) {
    let (n, q, k) = (y.nrows(), y.ncols(), c.values.len());
    let means: Vec<f64> = (0..q).map(|t| (0..n).map(|i| y[(i, t)]).sum::<f64>() / n as f64).collect();
    let yc = Mat::<f64>::from_fn(n, q, |i, t| y[(i, t)] - means[t]);
    let uty = c.u.transpose() * &yc; // [k × q]
    let mut best = vec![(f64::INFINITY, 0usize); q];
    for (a, &alpha) in alphas.iter().enumerate() {
        let w: Vec<f64> = c.values.iter().map(|&l| 1.0 / (l + alpha) - 1.0 / alpha).collect();
        let scaled = Mat::<f64>::from_fn(k, q, |j, t| w[j] * uty[(j, t)]);
        let dual = &c.u * &scaled; // + yc / α below
        // diag(G⁻¹) = Σ_j w_j U_ij² − 1/(α n) (the unpenalised intercept) + 1/α.
        let diag: Vec<f64> = (0..n).map(|i| (0..k).map(|j| w[j] * c.u[(i, j)] * c.u[(i, j)]).sum::<f64>() - 1.0 / (alpha * n as f64) + 1.0 / alpha).collect();
        for (t, slot) in best.iter_mut().enumerate() {
            let error = (0..n).map(|i| ((dual[(i, t)] + yc[(i, t)] / alpha) / diag[i]).powi(2)).sum::<f64>() / n as f64;
            // Strictly better replaces: among equal errors the first penalty of the grid wins.
            if error < slot.0 {
                *slot = (error, a);
            }
        }
    }
    let chosen: Vec<f64> = best.iter().map(|&(_, a)| alphas[a]).collect();
    // Coefficients on the scores: b_jt = √λ_j / (λ_j + α_t) · (Uᵀ y_c)_jt.
    let b = Mat::<f64>::from_fn(k, q, |j, t| c.values[j].sqrt() / (c.values[j] + chosen[t]) * uty[(j, t)]);
    let mut pred = &c.test * &b;
    for t in 0..q {
        for e in 0..pred.nrows() {
            pred[(e, t)] += means[t];
        }
    }
    (pred, chosen)
}

/// PLS predictions on the held-out stimuli with at most `components` components (fewer when
/// the scores have fewer columns). `Err` carries linfa's message.
pub fn pls(c: &Components, y: &Mat<f64>, components: usize) -> Result<Mat<f64>, String> {
    let k = c.train.ncols();
    let x = Array2::from_shape_fn((c.train.nrows(), k), |(i, j)| c.train[(i, j)]);
    let t = Array2::from_shape_fn((y.nrows(), y.ncols()), |(i, j)| y[(i, j)]);
    // Each component's weights are the leading singular pair of the deflated XᵀY, taken by an
    // SVD: the pair scikit-learn's NIPALS iterates towards, without its power method, which
    // can run out of iterations (it did, on a trained ConvRNN's conv3, after 500).
    let model = linfa_pls::PlsRegression::<f64>::params(components.min(k).max(1))
        .scale(false)
        .algorithm(linfa_pls::Algorithm::Svd)
        .fit(&DatasetBase::new(x, t))
        .map_err(|e| e.to_string())?;
    let test = Array2::from_shape_fn((c.test.nrows(), k), |(i, j)| c.test[(i, j)]);
    let pred: Array2<f64> = model.predict(&test);
    Ok(Mat::<f64>::from_fn(pred.nrows(), pred.ncols(), |i, j| pred[(i, j)]))
}

/// Pearson's r between columns `t` of `a` and `b` (NaN when either is constant).
pub fn pearson_columns(a: &Mat<f64>, b: &Mat<f64>) -> Vec<f64> {
    (0..a.ncols())
        .map(|t| pearson((0..a.nrows()).map(|i| a[(i, t)]), (0..b.nrows()).map(|i| b[(i, t)])))
        .collect()
}

/// Pearson's r of two equally long sequences (NaN when either is constant).
pub fn pearson(a: impl Iterator<Item = f64> + Clone, b: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = a.clone().count() as f64;
    let (ma, mb) = (a.clone().sum::<f64>() / n, b.clone().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa <= 0.0 || sbb <= 0.0 { f64::NAN } else { sab / (saa * sbb).sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::{centred_blocks, components, gram};

    fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
        rand::SeedableRng::seed_from_u64(seed)
    }

    /// Ridge's leave-one-out error at a penalty equals refitting without each training
    /// stimulus in turn (the closed form is exact), and its predictions equal the normal
    /// equations' solution (Xᵀ X + α I)⁻¹ Xᵀ y on centred data.
    #[test]
    fn ridge_is_the_normal_equations_and_its_loo_is_exact() {
        use rand::Rng;
        let (n, p, q) = (14, 4, 2);
        let mut r = rng(3);
        let x: Vec<f32> = (0..(n + 3) * p).map(|_| r.random_range(-1.0f32..1.0)).collect();
        let y = Mat::<f64>::from_fn(n, q, |i, t| x[i * p] as f64 * (t as f64 + 1.0) - x[i * p + 2] as f64 + 0.3 * r.random_range(-1.0..1.0));
        let g = gram(&x, n + 3, p);
        let train: Vec<usize> = (0..n).collect();
        let test: Vec<usize> = (n..n + 3).collect();
        let (k_tr, k_te) = centred_blocks(&g, &train, &test);
        let c = components(&k_tr, &k_te, 100, 0.0);
        let alpha = 0.7;
        let (pred, chosen) = ridge(&c, &y, &[alpha]);
        assert_eq!(chosen, [alpha; 2]);
        // Normal equations on features centred by the training mean.
        let mean: Vec<f64> = (0..p).map(|k| (0..n).map(|i| x[i * p + k] as f64).sum::<f64>() / n as f64).collect();
        let xc = Mat::<f64>::from_fn(n, p, |i, k| x[i * p + k] as f64 - mean[k]);
        let mut a = xc.transpose() * &xc;
        for k in 0..p {
            a[(k, k)] += alpha;
        }
        let ym: Vec<f64> = (0..q).map(|t| (0..n).map(|i| y[(i, t)]).sum::<f64>() / n as f64).collect();
        let yc = Mat::<f64>::from_fn(n, q, |i, t| y[(i, t)] - ym[t]);
        let coef = faer::linalg::solvers::Solve::solve(&a.partial_piv_lu(), xc.transpose() * &yc);
        for (row, &e) in test.iter().enumerate() {
            for t in 0..q {
                let want = ym[t] + (0..p).map(|k| (x[e * p + k] as f64 - mean[k]) * coef[(k, t)]).sum::<f64>();
                assert!((pred[(row, t)] - want).abs() < 1e-8, "prediction {row},{t}: {} vs {want}", pred[(row, t)]);
            }
        }
        // The grid picks the penalty whose leave-one-out error is smallest: a tiny and a huge
        // penalty against the right scale; with signal in y the moderate one must win.
        let (_, chosen) = ridge(&c, &y, &[1e6, alpha, 1e-9]);
        assert!(chosen.iter().all(|&a| a < 1e6), "{chosen:?}");
    }

    #[test]
    fn pls_recovers_a_linear_map() {
        use rand::Rng;
        let (n, p) = (40, 6);
        let mut r = rng(4);
        let x: Vec<f32> = (0..(n + 10) * p).map(|_| r.random_range(-1.0f32..1.0)).collect();
        let truth = |i: usize| 2.0 * x[i * p + 1] as f64 - x[i * p + 4] as f64;
        let y = Mat::<f64>::from_fn(n, 1, |i, _| truth(i));
        let g = gram(&x, n + 10, p);
        let (train, test): (Vec<usize>, Vec<usize>) = ((0..n).collect(), (n..n + 10).collect());
        let (k_tr, k_te) = centred_blocks(&g, &train, &test);
        let c = components(&k_tr, &k_te, 100, 0.0);
        let pred = pls(&c, &y, 25).unwrap();
        for (row, &e) in test.iter().enumerate() {
            assert!((pred[(row, 0)] - truth(e)).abs() < 1e-6, "{} vs {}", pred[(row, 0)], truth(e));
        }
    }

    #[test]
    fn pearson_of_hand_made_sequences() {
        let r = pearson([1.0, 2.0, 3.0].into_iter(), [2.0, 4.0, 7.0].into_iter());
        assert!((r - 0.9933992677987828).abs() < 1e-12, "{r}");
        assert!(pearson([1.0, 1.0].into_iter(), [1.0, 2.0].into_iter()).is_nan());
    }
}
