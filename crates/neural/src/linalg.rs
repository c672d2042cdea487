//! The linear algebra under PCA and ridge regression, on `faer`: Gram matrices of wide feature
//! arrays (built in column blocks so a 2,000 × 65,536 layer never becomes one f64 matrix),
//! kernel centring, and the leading eigenpairs of a symmetric matrix.
//!
//! A training fold's principal components come from whichever of two symmetric matrices is
//! smaller ([`Basis`]): for an array wider than it has stimuli, the N × N Gram matrix
//! G = X Xᵀ — the components are the eigenvectors of the fold's centred Gram block and the
//! held-out scores come from the cross-Gram block, without ever forming the p × p covariance;
//! for a narrower one, the p × p covariance of the fold (the scatter XᵀX of all stimuli less the
//! held-out ones'), p³ instead of N³. Both give the same scores up to each component's sign,
//! which no regression here depends on.

use faer::{Mat, Side};

/// Columns per block when accumulating a Gram matrix.
const BLOCK: usize = 2048;

/// G = X Xᵀ (f64) of `x`, row-major `[rows × cols]` f32.
pub fn gram(x: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    assert_eq!(x.len(), rows * cols);
    let mut g = Mat::<f64>::zeros(rows, rows);
    let mut start = 0;
    while start < cols {
        let width = BLOCK.min(cols - start);
        let block = Mat::<f64>::from_fn(rows, width, |i, j| x[i * cols + start + j] as f64);
        faer::linalg::matmul::matmul(g.as_mut(), faer::Accum::Add, block.as_ref(), block.transpose(), 1.0, faer::get_global_parallelism());
        start += width;
    }
    g
}

/// The centred kernel blocks of a split: for training rows `train` and other rows `test` of a
/// Gram matrix `g`, K_tr = H G_tt H and K_te = (G_et − 1 aᵀ)H-style centring with the
/// training mean, i.e. the Gram matrices of features centred by the training rows' mean.
pub fn centred_blocks(g: &Mat<f64>, train: &[usize], test: &[usize]) -> (Mat<f64>, Mat<f64>) {
    let n = train.len() as f64;
    // a_i = mean_j G[train_i, train_j]; c = mean of a; b_e = mean_j G[test_e, train_j].
    let a: Vec<f64> = train.iter().map(|&i| train.iter().map(|&j| g[(i, j)]).sum::<f64>() / n).collect();
    let c = a.iter().sum::<f64>() / n;
    let b: Vec<f64> = test.iter().map(|&e| train.iter().map(|&j| g[(e, j)]).sum::<f64>() / n).collect();
    let k_tr = Mat::<f64>::from_fn(train.len(), train.len(), |i, j| g[(train[i], train[j])] - a[i] - a[j] + c);
    let k_te = Mat::<f64>::from_fn(test.len(), train.len(), |e, j| g[(test[e], train[j])] - b[e] - a[j] + c);
    (k_tr, k_te)
}

/// The leading eigenpairs of symmetric `k`: at most `max` of them, in decreasing order, keeping
/// only eigenvalues above `1e-10 ·` the largest and above `floor` (the rest are rounding noise:
/// of a rank-deficient kernel, or of features that are constant up to rounding, whose centred
/// kernel is all noise however its eigenvalues compare among themselves). Each eigenvector's
/// sign is fixed so that its largest-magnitude entry is positive, so the result does not depend
/// on the eigensolver's choice.
pub fn leading_eigen(k: &Mat<f64>, max: usize, floor: f64) -> (Vec<f64>, Mat<f64>) {
    let n = k.nrows();
    if n == 0 {
        return (Vec::new(), Mat::zeros(0, 0));
    }
    let evd = k.self_adjoint_eigen(Side::Lower).expect("the eigensolver converges on a finite symmetric matrix");
    let (s, u) = (evd.S().column_vector(), evd.U());
    let top = s[n - 1].max(0.0);
    let keep: Vec<usize> = (0..n).rev().take_while(|&j| s[j] > 1e-10 * top && s[j] > floor && s[j] > 0.0).take(max).collect();
    let values = keep.iter().map(|&j| s[j]).collect();
    let vectors = Mat::<f64>::from_fn(n, keep.len(), |i, c| {
        let j = keep[c];
        let col = u.col(j);
        let pivot = (0..n).max_by(|&a, &b| col[a].abs().total_cmp(&col[b].abs())).unwrap_or(0);
        if col[pivot] < 0.0 { -u[(i, j)] } else { u[(i, j)] }
    });
    (values, vectors)
}

/// Principal-component scores of a split from its centred kernel blocks: the training rows'
/// scores Z_tr = U √λ and the held-out rows' Z_te = K_te U / √λ, for at most `max` components.
/// Z_tr's columns are orthogonal with squared norms λ (its singular values are √λ, its left
/// singular vectors U), which ridge regression uses directly.
pub struct Components {
    pub values: Vec<f64>,
    /// `[train × k]` eigenvectors of K_tr.
    pub u: Mat<f64>,
    /// `[train × k]`.
    pub train: Mat<f64>,
    /// `[test × k]`.
    pub test: Mat<f64>,
}

/// `energy` is the training rows' uncentred sum of squares (the trace of their Gram block):
/// components whose variance is below `1e-10 · energy` are dropped as rounding noise.
pub fn components(k_tr: &Mat<f64>, k_te: &Mat<f64>, max: usize, energy: f64) -> Components {
    let (values, u) = leading_eigen(k_tr, max, 1e-10 * energy);
    let root: Vec<f64> = values.iter().map(|v| v.sqrt()).collect();
    let train = Mat::<f64>::from_fn(u.nrows(), u.ncols(), |i, j| u[(i, j)] * root[j]);
    let mut test = k_te * &u;
    for j in 0..test.ncols() {
        for i in 0..test.nrows() {
            test[(i, j)] /= root[j];
        }
    }
    Components { values, u, train, test }
}

/// What an array's per-fold components are computed from.
pub enum Basis {
    /// The N × N Gram matrix of the rows (arrays at least as wide as they are tall).
    Gram(Mat<f64>),
    /// The rows `[N × p]` and their scatter XᵀX `[p × p]` (narrower arrays).
    Scatter { x: Mat<f64>, scatter: Mat<f64> },
}

impl Basis {
    /// The basis of `x`, row-major `[rows × cols]` f32.
    pub fn new(x: &[f32], rows: usize, cols: usize) -> Self {
        if cols < rows {
            Self::of_rows(Mat::<f64>::from_fn(rows, cols, |i, j| x[i * cols + j] as f64))
        } else {
            Basis::Gram(gram(x, rows, cols))
        }
    }

    /// The basis of rows already in f64 (e.g. principal-component scores).
    pub fn of_rows(x: Mat<f64>) -> Self {
        if x.ncols() < x.nrows() {
            let scatter = x.transpose() * &x;
            Basis::Scatter { x, scatter }
        } else {
            Basis::Gram(&x * x.transpose())
        }
    }

    /// The principal components of the rows `train` (centred by their mean) with the scores of
    /// the rows `test`: at most `max` components, none below `1e-10 ·` the training rows'
    /// uncentred sum of squares (rounding noise, as of features constant over the stimuli).
    pub fn components(&self, train: &[usize], test: &[usize], max: usize) -> Components {
        match self {
            Basis::Gram(g) => {
                let (k_tr, k_te) = centred_blocks(g, train, test);
                let energy: f64 = train.iter().map(|&i| g[(i, i)]).sum();
                components(&k_tr, &k_te, max, energy)
            }
            Basis::Scatter { x, scatter } => {
                let p = x.ncols();
                let n = train.len() as f64;
                let mean: Vec<f64> = (0..p).map(|j| train.iter().map(|&i| x[(i, j)]).sum::<f64>() / n).collect();
                // The fold's scatter: all rows' less the other rows' (cheaper than summing the
                // training rows when they are most of them).
                let others: Vec<usize> = {
                    let mut in_train = vec![false; x.nrows()];
                    train.iter().for_each(|&i| in_train[i] = true);
                    (0..x.nrows()).filter(|&i| !in_train[i]).collect()
                };
                let rest = Mat::<f64>::from_fn(others.len(), p, |r, j| x[(others[r], j)]);
                let mut cov = scatter - rest.transpose() * &rest;
                let energy: f64 = (0..p).map(|j| cov[(j, j)]).sum();
                for a in 0..p {
                    for b in 0..p {
                        cov[(a, b)] -= n * mean[a] * mean[b];
                    }
                }
                let (values, v) = leading_eigen(&cov, max, 1e-10 * energy);
                let centred = |rows: &[usize]| Mat::<f64>::from_fn(rows.len(), p, |r, j| x[(rows[r], j)] - mean[j]);
                let train_scores = centred(train) * &v;
                let test_scores = centred(test) * &v;
                let u = Mat::<f64>::from_fn(train_scores.nrows(), values.len(), |i, j| train_scores[(i, j)] / values[j].sqrt());
                Components { values, u, train: train_scores, test: test_scores }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The covariance path and the Gram path give the same components (eigenvalues, and
    /// training and held-out scores up to each component's sign).
    #[test]
    fn scatter_and_gram_bases_agree() {
        let (rows, cols) = (20, 6);
        let x = data(rows, cols, 4);
        let scatter = Basis::new(&x, rows, cols);
        assert!(matches!(scatter, Basis::Scatter { .. }));
        let gram = Basis::Gram(gram(&x, rows, cols));
        let train: Vec<usize> = (0..rows).filter(|i| i % 4 != 1).collect();
        let test: Vec<usize> = (0..rows).filter(|i| i % 4 == 1).collect();
        let (a, b) = (scatter.components(&train, &test, 4), gram.components(&train, &test, 4));
        assert_eq!(a.values.len(), 4);
        for j in 0..4 {
            assert!((a.values[j] - b.values[j]).abs() < 1e-9 * b.values[0], "eigenvalue {j}");
            let sign = if a.train[(0, j)] * b.train[(0, j)] < 0.0 { -1.0 } else { 1.0 };
            for (za, zb) in [(&a.train, &b.train), (&a.test, &b.test), (&a.u, &b.u)] {
                for i in 0..za.nrows() {
                    assert!((za[(i, j)] - sign * zb[(i, j)]).abs() < 1e-9 * b.values[0].sqrt(), "component {j} row {i}");
                }
            }
        }
    }

    fn data(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..rows * cols).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Features constant over the stimuli (a layer the input has not reached yet) give no
    /// component, though rounding leaves their centred kernel a little non-zero.
    #[test]
    fn constant_features_have_no_components() {
        let (rows, cols) = (30, 50);
        let x: Vec<f32> = (0..rows * cols).map(|k| 0.1 + 0.37 * (k % cols) as f32).collect();
        let g = gram(&x, rows, cols);
        let train: Vec<usize> = (0..25).collect();
        let (k_tr, k_te) = centred_blocks(&g, &train, &[25, 26]);
        let energy: f64 = train.iter().map(|&i| g[(i, i)]).sum();
        assert!(components(&k_tr, &k_te, 100, energy).values.is_empty());
    }

    #[test]
    fn the_gram_matrix_matches_a_direct_sum_across_blocks() {
        let (rows, cols) = (5, 2 * BLOCK + 7);
        let x = data(rows, cols, 1);
        let g = gram(&x, rows, cols);
        for i in 0..rows {
            for j in 0..rows {
                let direct: f64 = (0..cols).map(|k| x[i * cols + k] as f64 * x[j * cols + k] as f64).sum();
                assert!((g[(i, j)] - direct).abs() < 1e-9 * direct.abs().max(1.0));
            }
        }
    }

    /// Kernel PCA scores equal the projections of explicitly centred features on the
    /// covariance's eigenvectors (up to sign, fixed the same way on both sides here by
    /// comparing absolute values of inner products).
    #[test]
    fn kernel_scores_are_the_projections_of_centred_features() {
        let (rows, cols) = (12, 5);
        let x = data(rows, cols, 2);
        let g = gram(&x, rows, cols);
        let train: Vec<usize> = (0..9).collect();
        let test: Vec<usize> = (9..12).collect();
        let (k_tr, k_te) = centred_blocks(&g, &train, &test);
        let c = components(&k_tr, &k_te, 10, 0.0);
        assert_eq!(c.values.len(), 5, "rank = feature count");
        // Explicit: centre by the training mean, covariance eigenvectors V, scores X_c V.
        let mean: Vec<f64> = (0..cols).map(|k| train.iter().map(|&i| x[i * cols + k] as f64).sum::<f64>() / 9.0).collect();
        let xc = |i: usize| Mat::<f64>::from_fn(1, cols, |_, k| x[i * cols + k] as f64 - mean[k]);
        let xt = Mat::<f64>::from_fn(9, cols, |r, k| x[train[r] * cols + k] as f64 - mean[k]);
        let cov = xt.transpose() * &xt;
        let (vals, v) = leading_eigen(&cov, 10, 0.0);
        for (a, b) in vals.iter().zip(&c.values) {
            assert!((a - b).abs() < 1e-9 * a.abs().max(1.0), "eigenvalues {a} vs {b}");
        }
        for (row, &i) in test.iter().enumerate() {
            let explicit = xc(i) * &v;
            for j in 0..5 {
                assert!((explicit[(0, j)].abs() - c.test[(row, j)].abs()).abs() < 1e-8, "test score {row},{j}");
            }
        }
        // Training scores: orthogonal columns with squared norms λ.
        let ztz = c.train.transpose() * &c.train;
        for a in 0..5 {
            for b in 0..5 {
                let want = if a == b { c.values[a] } else { 0.0 };
                assert!((ztz[(a, b)] - want).abs() < 1e-8 * c.values[0]);
            }
        }
    }
}
