//! The linear SVM of the original: scikit-learn's `LinearSVC` problem (squared hinge loss, L2
//! penalty, one-vs-rest, an intercept as a constant feature of 1 that is penalised like the
//! weights), optionally after a PCA of the trajectories, solved to convergence over the whole C
//! grid (1 … 5·10⁶).
//!
//! Why the solver is ours: LIBLINEAR's primal trust-region Newton solver (the `liblinear` crate
//! ships LIBLINEAR 2.30; scikit-learn bundles an older TRON) stops on a gradient norm relative to
//! the gradient at w = 0. On trajectories of raw observables (features from 1e-3 to 1e2, fewer
//! samples than features, so the classes are separable and large C is the hard-margin SVM) that
//! initial gradient is huge, and both stop far from the optimum. Measured on 120 training
//! samples × 276 features of a synthetic set at raw-observable scales, at C = 5000:
//! scikit-learn's `LinearSVC(dual=False, tol=1e-4)` ends at an objective of 9.9 and LIBLINEAR
//! 2.30 at 266, where the optimum is 1.44 (scikit-learn reaches 1.47 at tol = 1e-12 after 10⁵
//! iterations). Which model comes out then depends on where each solver gave up. The problem is
//! strictly convex, so a solver that converges defines the model; this one is the modified
//! finite Newton method of Keerthi & DeCoste (2005, "A modified finite Newton method for fast
//! solution of large scale linear SVMs", JMLR 6): exact Newton steps on the current set of
//! margin violators — through the m × m Gram matrix (Woodbury) when there are fewer violators
//! than features, solved with smartcore's Cholesky — and an exact line search on the
//! piecewise-quadratic objective. It stops when the gradient is 1e-10 of its norm at w = 0
//! (tens of steps; each C starts from the solution of the next smaller one). The tests check it
//! against LIBLINEAR where LIBLINEAR converges (well-scaled data), and check optimality (a zero
//! gradient) where it does not. The PCA is smartcore's eigensolver (see [`Pca`]); the position
//! columns go in front of the components, not reduced.

use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linalg::traits::cholesky::CholeskyDecomposable;
use smartcore::linalg::traits::evd::EVDDecomposable;

use crate::cv::Method;
use crate::features::Features;
use crate::{IdentifyError, Matrix, Result};

/// One setting of the SVM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SvmParams {
    /// The cost of a margin violation (scikit-learn's `C`).
    #[serde(rename = "C")]
    pub c: f64,
    /// Components kept by a PCA of the trajectories first; `None`: no PCA.
    pub pca: Option<usize>,
}

/// The original's C values.
pub const C_GRID: [f64; 7] = [1.0, 5e1, 5e2, 5e3, 5e4, 5e5, 5e6];

impl SvmParams {
    /// The default grid (11 settings): every C of [`C_GRID`] without PCA, and PCA to 10 or 30
    /// components with C ∈ {1, 5000}.
    pub fn default_grid() -> Vec<SvmParams> {
        let plain = C_GRID.iter().map(|&c| SvmParams { c, pca: None });
        let pca = [10, 30].into_iter().flat_map(|k| [1.0, 5e3].into_iter().map(move |c| SvmParams { c, pca: Some(k) }));
        plain.chain(pca).collect()
    }

    /// The original's grid (84 settings): [`C_GRID`] without PCA, and with PCA to
    /// {10, 20, 30, 40, 50, 100, 200, …, 600} components.
    pub fn full_grid() -> Vec<SvmParams> {
        let plain = C_GRID.iter().map(|&c| SvmParams { c, pca: None });
        let ks = [10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 600];
        let pca = ks.into_iter().flat_map(|k| C_GRID.iter().map(move |&c| SvmParams { c, pca: Some(k) }));
        plain.chain(pca).collect()
    }
}

/// A fitted one-vs-rest linear SVM: decision value of class `labels[j]` = coef[j]·x + intercept[j].
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSvm {
    pub labels: Vec<usize>,
    pub coef: Vec<Vec<f64>>,
    pub intercept: Vec<f64>,
    /// Newton steps taken, summed over the one-vs-rest problems.
    pub iterations: usize,
    /// Whether every one-vs-rest problem met the stopping rule.
    pub converged: bool,
}

/// The gradient norm, relative to the gradient at w = 0, at which a fit stops.
const TOLERANCE: f64 = 1e-10;
/// Newton steps at most per binary problem.
const MAX_STEPS: usize = 1000;

/// The training rows with a trailing 1 (the intercept's feature), and their Gram matrix.
struct Problem {
    rows: Vec<Vec<f64>>,
    gram: Vec<f64>,
}

impl Problem {
    fn new(x: &Matrix) -> Problem {
        let rows: Vec<Vec<f64>> = (0..x.rows).map(|r| x.row(r).iter().copied().chain([1.0]).collect()).collect();
        let m = rows.len();
        let mut gram = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..=i {
                let v = dot(&rows[i], &rows[j]);
                gram[i * m + j] = v;
                gram[j * m + i] = v;
            }
        }
        Problem { rows, gram }
    }

    fn dim(&self) -> usize {
        self.rows.first().map_or(1, Vec::len)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| p * q).sum()
}

/// Solves min ½‖w‖² + C Σᵢ max(0, 1 − yᵢ w·xᵢ)² (yᵢ = ±1) from `w`; returns the steps taken and
/// whether the stopping rule was met.
fn solve_binary(p: &Problem, y: &[f64], c: f64, w: &mut [f64]) -> Result<(usize, bool)> {
    let (m, d) = (p.rows.len(), p.dim());
    // The reference gradient is the one at w = 0 (every sample a violator): −2C Σ yᵢxᵢ,
    // whatever the warm start.
    let mut g_zero = vec![0.0; d];
    for (x, yi) in p.rows.iter().zip(y) {
        g_zero.iter_mut().zip(x).for_each(|(g, xj)| *g -= 2.0 * c * yi * xj);
    }
    let g0 = dot(&g_zero, &g_zero).sqrt();
    for step in 0..MAX_STEPS {
        let o: Vec<f64> = (0..m).map(|i| y[i] * dot(&p.rows[i], w)).collect();
        let active: Vec<usize> = (0..m).filter(|&i| o[i] < 1.0).collect();
        // g = w + 2C Σ_active (oᵢ − 1) yᵢ xᵢ
        let mut g = w.to_vec();
        for &i in &active {
            let f = 2.0 * c * (o[i] - 1.0) * y[i];
            g.iter_mut().zip(&p.rows[i]).for_each(|(gj, xj)| *gj += f * xj);
        }
        let gnorm = dot(&g, &g).sqrt();
        if gnorm <= TOLERANCE * g0 || gnorm == 0.0 {
            return Ok((step, true));
        }
        // The Newton step on the active set: (I + 2C AᵀA) s = −g, A = rows of `active`.
        let k = active.len();
        let s: Vec<f64> = if k == 0 {
            g.iter().map(|v| -v).collect()
        } else if k <= d {
            // Woodbury: s = −g + 2C Aᵀ (I + 2C AAᵀ)⁻¹ A g.
            let mut mat = vec![0.0; k * k];
            for (a, &i) in active.iter().enumerate() {
                for (b, &j) in active.iter().enumerate() {
                    mat[a * k + b] = 2.0 * c * p.gram[i * m + j] + if a == b { 1.0 } else { 0.0 };
                }
            }
            let ag: Vec<f64> = active.iter().map(|&i| dot(&p.rows[i], &g)).collect();
            let u = cholesky_solve(mat, k, ag)?;
            let mut s: Vec<f64> = g.iter().map(|v| -v).collect();
            for (a, &i) in active.iter().enumerate() {
                let f = 2.0 * c * u[a];
                s.iter_mut().zip(&p.rows[i]).for_each(|(sj, xj)| *sj += f * xj);
            }
            s
        } else {
            let mut mat = vec![0.0; d * d];
            for &i in &active {
                let x = &p.rows[i];
                for a in 0..d {
                    let f = 2.0 * c * x[a];
                    mat[a * d..(a + 1) * d].iter_mut().zip(x).for_each(|(h, xb)| *h += f * xb);
                }
            }
            (0..d).for_each(|a| mat[a * d + a] += 1.0);
            cholesky_solve(mat, d, g.iter().map(|v| -v).collect())?
        };
        let t = line_search(p, y, c, w, &o, &s);
        let moved = t * dot(&s, &s).sqrt();
        w.iter_mut().zip(&s).for_each(|(wj, sj)| *wj += t * sj);
        if moved <= 1e-15 * dot(w, w).sqrt().max(1e-300) {
            // No representable progress: as converged as doubles allow.
            return Ok((step + 1, gnorm <= 1e-6 * g0));
        }
    }
    Ok((MAX_STEPS, false))
}

/// The exact minimiser t > 0 of φ(t) = f(w + t·s): φ′ is piecewise linear and increasing, so
/// Newton's method on φ′ inside a shrinking bracket finds its root in a few steps.
fn line_search(p: &Problem, y: &[f64], c: f64, w: &[f64], o: &[f64], s: &[f64]) -> f64 {
    let ys: Vec<f64> = p.rows.iter().zip(y).map(|(x, yi)| yi * dot(x, s)).collect();
    let (ws, ss) = (dot(w, s), dot(s, s));
    let slope = |t: f64| -> (f64, f64) {
        let (mut d1, mut d2) = (ws + t * ss, ss);
        for (oi, ysi) in o.iter().zip(&ys) {
            let margin = oi + t * ysi;
            if margin < 1.0 {
                d1 += 2.0 * c * (margin - 1.0) * ysi;
                d2 += 2.0 * c * ysi * ysi;
            }
        }
        (d1, d2)
    };
    let d0 = slope(0.0).0;
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut t = 1.0;
    for _ in 0..100 {
        let (d1, d2) = slope(t);
        if d1.abs() <= 1e-13 * d0.abs() {
            break;
        }
        if d1 > 0.0 {
            hi = t;
        } else {
            lo = t;
        }
        let mut next = t - d1 / d2;
        if !(next > lo && next < hi) {
            next = if hi.is_finite() { 0.5 * (lo + hi) } else { 2.0 * t };
        }
        if next == t || (hi - lo) <= 1e-16 * hi {
            break;
        }
        t = next;
    }
    t
}

/// Solves `mat · x = b` for a symmetric positive definite `mat` (n × n, row-major) with
/// smartcore's Cholesky.
fn cholesky_solve(mat: Vec<f64>, n: usize, b: Vec<f64>) -> Result<Vec<f64>> {
    let err = |e: smartcore::error::Failed| IdentifyError::Classifier(format!("linear SVM: {e}"));
    let a = DenseMatrix::new(n, n, mat, false).map_err(err)?;
    let rhs = DenseMatrix::new(n, 1, b, true).map_err(err)?;
    let x = a.cholesky_solve_mut(rhs).map_err(err)?;
    Ok((0..n).map(|i| *x.get((i, 0))).collect())
}

impl LinearSvm {
    /// Fits `LinearSVC(C = c)` (solved to convergence) to the rows of `x` with labels `y`.
    pub fn fit(x: &Matrix, y: &[usize], c: f64) -> Result<LinearSvm> {
        Ok(Self::fit_path(x, y, &[c])?.remove(0))
    }

    /// One fit per C of `cs`, each started from the solution of the next smaller C (the
    /// optimum does not depend on the start; the warm start only saves steps).
    pub fn fit_path(x: &Matrix, y: &[usize], cs: &[f64]) -> Result<Vec<LinearSvm>> {
        let mut labels: Vec<usize> = y.to_vec();
        labels.sort_unstable();
        labels.dedup();
        if labels.len() < 2 {
            // One class: nothing to separate; every prediction is that class.
            let one = LinearSvm { labels, coef: vec![vec![0.0; x.cols]], intercept: vec![0.0], iterations: 0, converged: true };
            return Ok(vec![one; cs.len()]);
        }
        let problem = Problem::new(x);
        // Two classes: one problem (class 1 positive); the first class's values are its negatives.
        let positives: Vec<usize> = if labels.len() == 2 { vec![labels[1]] } else { labels.clone() };
        let targets: Vec<Vec<f64>> = positives.iter().map(|&l| y.iter().map(|&v| if v == l { 1.0 } else { -1.0 }).collect()).collect();
        let mut order: Vec<usize> = (0..cs.len()).collect();
        order.sort_by(|&a, &b| cs[a].total_cmp(&cs[b]));
        let mut w: Vec<Vec<f64>> = vec![vec![0.0; problem.dim()]; positives.len()];
        let mut out: Vec<Option<LinearSvm>> = vec![None; cs.len()];
        for &ci in &order {
            let (mut iterations, mut converged) = (0, true);
            for (wk, yk) in w.iter_mut().zip(&targets) {
                let (steps, ok) = solve_binary(&problem, yk, cs[ci], wk)?;
                iterations += steps;
                converged &= ok;
            }
            let split = |v: &Vec<f64>| (v[..x.cols].to_vec(), v[x.cols]);
            let (coef, intercept): (Vec<Vec<f64>>, Vec<f64>) = if labels.len() == 2 {
                let (c1, b1) = split(&w[0]);
                (vec![c1.iter().map(|v| -v).collect(), c1], vec![-b1, b1])
            } else {
                w.iter().map(split).unzip()
            };
            out[ci] = Some(LinearSvm { labels: labels.clone(), coef, intercept, iterations, converged });
        }
        Ok(out.into_iter().map(|m| m.expect("every C fitted")).collect())
    }

    /// Decision values, one per class of `labels`.
    pub fn decision(&self, row: &[f64]) -> Vec<f64> {
        self.coef.iter().zip(&self.intercept).map(|(w, b)| dot(w, row) + b).collect()
    }

    /// The class of the largest decision value (the first on a tie).
    pub fn predict_row(&self, row: &[f64]) -> usize {
        self.labels[crate::forest::argmax(&self.decision(row))]
    }

    pub fn predict(&self, x: &Matrix) -> Vec<usize> {
        (0..x.rows).map(|r| self.predict_row(x.row(r))).collect()
    }

    /// ½‖(w, b)‖² + C Σ max(0, 1 − yᵢ(w·xᵢ + b))² summed over the one-vs-rest problems (one
    /// problem for two classes): what the fit minimises.
    pub fn objective(&self, x: &Matrix, y: &[usize], c: f64) -> f64 {
        let problems: Vec<usize> = if self.labels.len() == 2 { vec![1] } else { (0..self.labels.len()).collect() };
        problems
            .iter()
            .map(|&j| {
                let (w, b) = (&self.coef[j], self.intercept[j]);
                let loss: f64 = (0..x.rows)
                    .map(|r| {
                        let yi = if y[r] == self.labels[j] { 1.0 } else { -1.0 };
                        (1.0 - yi * (dot(w, x.row(r)) + b)).max(0.0).powi(2)
                    })
                    .sum();
                0.5 * (dot(w, w) + b * b) + c * loss
            })
            .sum()
    }
}

/// A PCA (no whitening, as scikit-learn's default): the training rows' mean and the leading
/// principal axes. With fewer rows than columns (the usual case here, e.g. 100 layers × 504
/// features) the axes come from the eigendecomposition of the m × m Gram matrix of the centred
/// rows (vᵢ = Xᵀuᵢ / ‖Xᵀuᵢ‖), else from the n × n covariance; both through smartcore's
/// symmetric eigensolver (Householder tridiagonalisation + QL, eigenvalues sorted descending).
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    pub mean: Vec<f64>,
    /// `[components][features]`, orthonormal rows.
    pub components: Vec<Vec<f64>>,
    /// Variance along each component (population).
    pub variance: Vec<f64>,
}

impl Pca {
    /// The first `k` principal axes of the rows of `x`; `k ≤ min(rows, cols)`.
    pub fn fit(x: &Matrix, k: usize) -> Result<Pca> {
        let (m, n) = (x.rows, x.cols);
        if k == 0 || k > m.min(n) {
            return Err(IdentifyError::Input(format!("PCA to {k} components of {m} samples × {n} features (at most {})", m.min(n))));
        }
        let mut mean = vec![0.0; n];
        for r in 0..m {
            mean.iter_mut().zip(x.row(r)).for_each(|(a, v)| *a += v / m as f64);
        }
        let centred: Vec<Vec<f64>> = (0..m).map(|r| x.row(r).iter().zip(&mean).map(|(v, mu)| v - mu).collect()).collect();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
        let gram = m <= n;
        let size = if gram { m } else { n };
        let mut s = vec![0.0; size * size];
        for i in 0..size {
            for j in 0..=i {
                let v = if gram { dot(&centred[i], &centred[j]) } else { (0..m).map(|r| centred[r][i] * centred[r][j]).sum() };
                s[i * size + j] = v;
                s[j * size + i] = v;
            }
        }
        let matrix = DenseMatrix::new(size, size, s, false).map_err(|e| IdentifyError::Classifier(format!("PCA: {e}")))?;
        let evd = matrix.evd(true).map_err(|e| IdentifyError::Classifier(format!("PCA: {e}")))?;
        let mut components = Vec::with_capacity(k);
        let mut variance = Vec::with_capacity(k);
        for c in 0..k {
            let u: Vec<f64> = (0..size).map(|i| *evd.V.get((i, c))).collect();
            let axis: Vec<f64> = if gram { (0..n).map(|j| (0..m).map(|r| centred[r][j] * u[r]).sum()).collect() } else { u };
            let norm = dot(&axis, &axis).sqrt();
            // A direction of zero variance (rank below k) has no defined axis: leave it zero.
            components.push(if norm > 1e-12 { axis.iter().map(|a| a / norm).collect() } else { vec![0.0; n] });
            variance.push(evd.d[c].max(0.0) / m as f64);
        }
        Ok(Pca { mean, components, variance })
    }

    /// The rows of `x` in the component coordinates: `[rows, k]`.
    pub fn transform(&self, x: &Matrix) -> Matrix {
        let k = self.components.len();
        let mut out = Matrix::zeros(x.rows, k);
        for r in 0..x.rows {
            let row = x.row(r);
            for (c, axis) in self.components.iter().enumerate() {
                out.row_mut(r)[c] = axis.iter().zip(row).zip(&self.mean).map(|((a, v), mu)| a * (v - mu)).sum();
            }
        }
        out
    }
}

/// The SVM as a [`Method`]: `[position | trajectories]`, or `[position | PCA(trajectories)]`.
pub struct Svm;

impl Method for Svm {
    type Setting = SvmParams;

    fn fit_predict(&self, settings: &[SvmParams], x: &Features, train: &[usize], y_train: &[usize], _classes: usize, evals: &[&[usize]], _seed: u64) -> Result<Vec<Vec<Vec<usize>>>> {
        let mut out = vec![Vec::new(); settings.len()];
        // One PCA for every PCA setting (the first k axes of the largest are the smaller ones).
        let pca = match settings.iter().filter_map(|s| s.pca).max() {
            Some(k) => Some(Pca::fit(&x.traj.select_rows(train), k)?),
            None => None,
        };
        let inputs = |idx: &[usize], k: Option<usize>| -> Matrix {
            let cat = x.cat.select_rows(idx);
            match (k, &pca) {
                (Some(k), Some(p)) => cat.hstack(&p.transform(&x.traj.select_rows(idx)).first_cols(k)),
                _ => cat.hstack(&x.traj.select_rows(idx)),
            }
        };
        // The settings of each input (no PCA, or k components) fit along their C path.
        let mut ks: Vec<Option<usize>> = settings.iter().map(|s| s.pca).collect();
        ks.sort_unstable();
        ks.dedup();
        for k in ks {
            let group: Vec<usize> = (0..settings.len()).filter(|&i| settings[i].pca == k).collect();
            let cs: Vec<f64> = group.iter().map(|&i| settings[i].c).collect();
            let models = LinearSvm::fit_path(&inputs(train, k), y_train, &cs)?;
            let evals_x: Vec<Matrix> = evals.iter().map(|e| inputs(e, k)).collect();
            for (&i, model) in group.iter().zip(&models) {
                out[i] = evals_x.iter().map(|e| model.predict(e)).collect();
            }
        }
        Ok(out)
    }

    fn admissible(&self, setting: &SvmParams, n_train: usize, x: &Features) -> bool {
        setting.pca.is_none_or(|k| k <= n_train.min(x.traj.cols))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_have_the_documented_sizes() {
        assert_eq!(SvmParams::default_grid().len(), 11);
        assert_eq!(SvmParams::full_grid().len(), 84);
        assert_eq!(serde_json::to_string(&SvmParams { c: 50.0, pca: Some(10) }).unwrap(), r#"{"C":50.0,"pca":10}"#);
    }

    /// Two separable classes along x₀ − x₁: the SVM separates them at every C of the grid;
    /// with two classes there is one hyperplane and the first class's values are the negatives.
    #[test]
    fn a_linear_svm_separates_separable_classes() {
        let pts = [(0.0, 1.0), (1.0, 2.0), (2.0, 3.5), (-1.0, 0.5), (1.0, 0.0), (2.0, 1.0), (3.5, 2.0), (0.5, -1.0)];
        let x = Matrix::new(8, 2, pts.iter().flat_map(|&(a, b)| [a, b]).collect());
        let y = [0, 0, 0, 0, 1, 1, 1, 1];
        for svm in LinearSvm::fit_path(&x, &y, &C_GRID).unwrap() {
            assert!(svm.converged, "{} steps", svm.iterations);
            assert_eq!(svm.predict(&x), y);
            assert_eq!(svm.labels, [0, 1]);
            let d = svm.decision(&[5.0, 0.0]);
            assert!((d[0] + d[1]).abs() < 1e-9 && d[1] > 0.0, "{d:?}");
        }
    }

    /// Three classes in three corners: one-vs-rest puts each corner in its class.
    #[test]
    fn one_vs_rest_for_three_classes() {
        let centres = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        let mut data = Vec::new();
        let mut y = Vec::new();
        for (c, &(a, b)) in centres.iter().enumerate() {
            for k in 0..5 {
                let t = k as f64 * 0.3;
                data.extend([a + t, b - t]);
                y.push(c);
            }
        }
        let x = Matrix::new(15, 2, data);
        let svm = LinearSvm::fit(&x, &y, 50.0).unwrap();
        assert_eq!(svm.coef.len(), 3);
        assert_eq!(svm.predict(&x), y);
    }

    /// Deterministic pseudo-random values in −1..1 (no RNG crate needed for a fixed set).
    fn noise(i: usize) -> f64 {
        ((i as f64 * 12.9898).sin() * 43758.5453).fract()
    }

    /// `m` samples of `d` features in `classes` classes, each feature scaled by `scale(j)`.
    fn blobs(m: usize, d: usize, classes: usize, scale: impl Fn(usize) -> f64) -> (Matrix, Vec<usize>) {
        let y: Vec<usize> = (0..m).map(|i| i % classes).collect();
        let scale = &scale;
        let data = (0..m).flat_map(|i| (0..d).map(move |j| (noise(i * d + j) + if j % classes == i % classes { 0.8 } else { 0.0 }) * scale(j))).collect::<Vec<_>>();
        (Matrix::new(m, d, data), y)
    }

    /// LIBLINEAR's L2R_L2LOSS_SVC on the same problem (bias 1, one-vs-rest), with a tight
    /// tolerance: `[class][feature + bias]` in the order of `labels`.
    fn liblinear_weights(x: &Matrix, y: &[usize], c: f64, eps: f64, labels: &[usize]) -> Vec<Vec<f64>> {
        use liblinear::util::TrainingInput;
        use liblinear::{Builder, LibLinearModel, SolverType};
        liblinear::toggle_liblinear_stdout_output(false);
        let rows: Vec<Vec<(u32, f64)>> = (0..x.rows).map(|r| x.row(r).iter().enumerate().map(|(j, &v)| (j as u32 + 1, v)).collect()).collect();
        let mut b = Builder::new();
        b.problem().input_data(TrainingInput::from_sparse_features(y.iter().map(|&v| v as f64).collect(), rows).unwrap()).bias(1.0);
        b.parameters().solver_type(SolverType::L2R_L2LOSS_SVC).stopping_criterion(eps).constraints_violation_cost(c);
        let model = b.build_model().unwrap();
        let order: Vec<usize> = model.labels().iter().map(|&l| l as usize).collect();
        labels
            .iter()
            .map(|l| {
                let j = order.iter().position(|o| o == l).unwrap() as i32;
                (1..=x.cols as i32).map(|f| model.feature_coefficient(f, j)).chain([model.label_bias(j)]).collect()
            })
            .collect()
    }

    /// Where LIBLINEAR converges (well-scaled features, moderate C), both solve the same
    /// problem to the same weights.
    #[test]
    fn the_solution_is_liblinears_where_liblinear_converges() {
        let (x, y) = blobs(60, 8, 3, |_| 1.0);
        for c in [0.1, 1.0, 10.0] {
            let ours = LinearSvm::fit(&x, &y, c).unwrap();
            assert!(ours.converged);
            let theirs = liblinear_weights(&x, &y, c, 1e-10, &ours.labels);
            for (k, t) in theirs.iter().enumerate() {
                let mine: Vec<f64> = ours.coef[k].iter().copied().chain([ours.intercept[k]]).collect();
                let diff = mine.iter().zip(t).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                let size = t.iter().map(|v| v.abs()).fold(0.0, f64::max);
                assert!(diff <= 1e-5 * size, "C = {c}, class {k}: {mine:?} vs {t:?}");
            }
        }
    }

    /// Raw-observable scales (1e-3 … 1e2), fewer samples than features, C up to 5·10⁶: the
    /// gradient of the objective, computed here from its definition, vanishes at the fit; the
    /// objective is no larger than LIBLINEAR's (which stops early) nor than at nearby points.
    #[test]
    fn it_converges_on_ill_scaled_separable_data_over_the_whole_grid() {
        let (x, y) = blobs(40, 60, 4, |j| 10f64.powf(-3.0 + 5.0 * (j % 7) as f64 / 6.0));
        for svm in LinearSvm::fit_path(&x, &y, &C_GRID).unwrap().iter().zip(C_GRID) {
            let (svm, c) = svm;
            assert!(svm.converged, "C = {c}: {} steps", svm.iterations);
            for (k, &label) in svm.labels.iter().enumerate().skip(if svm.labels.len() == 2 { 1 } else { 0 }) {
                let (w, b) = (&svm.coef[k], svm.intercept[k]);
                let mut g: Vec<f64> = w.iter().copied().chain([b]).collect();
                for r in 0..x.rows {
                    let yi = if y[r] == label { 1.0 } else { -1.0 };
                    let margin = yi * (dot(w, x.row(r)) + b);
                    if margin < 1.0 {
                        let f = 2.0 * c * (margin - 1.0) * yi;
                        g.iter_mut().zip(x.row(r).iter().chain([&1.0])).for_each(|(gj, xj)| *gj += f * xj);
                    }
                }
                let (gn, wn) = (dot(&g, &g).sqrt(), dot(w, w).sqrt());
                assert!(gn <= 1e-6 * (1.0 + 2.0 * c * wn), "C = {c}, class {label}: |gradient| {gn}, |w| {wn}");
            }
            let best = svm.objective(&x, &y, c);
            let theirs = liblinear_weights(&x, &y, c, 1e-4, &svm.labels);
            let lib = LinearSvm { coef: theirs.iter().map(|t| t[..x.cols].to_vec()).collect(), intercept: theirs.iter().map(|t| t[x.cols]).collect(), ..svm.clone() };
            assert!(best <= lib.objective(&x, &y, c) * (1.0 + 1e-9), "C = {c}: {best} vs LIBLINEAR {}", lib.objective(&x, &y, c));
            for k in 0..3 {
                let mut nudged = svm.clone();
                nudged.coef.iter_mut().flatten().enumerate().for_each(|(i, v)| *v += 1e-4 * noise(7 * i + k) * v.abs().max(1e-6));
                assert!(best <= nudged.objective(&x, &y, c), "C = {c}: a nearby point is better");
            }
        }
    }

    /// Points along the line (t, 2t) plus a small wiggle along (2, −1), uncorrelated with t
    /// (Σw = Σtw = 0): the first axis is
    /// (1, 2)/√5 (up to sign), with the variance of t·√5; through the Gram path (2 rows < 3
    /// columns) and the covariance path alike.
    #[test]
    fn pca_finds_the_principal_axis() {
        let ts = [-2.0, -1.0, 0.0, 1.0, 2.0];
        let wiggle = [0.1, -0.2, 0.2, -0.2, 0.1];
        let x = Matrix::new(5, 2, ts.iter().zip(wiggle).flat_map(|(&t, w)| [t + 2.0 * w, 2.0 * t - w]).collect());
        let p = Pca::fit(&x, 2).unwrap();
        let axis = &p.components[0];
        let cos = (axis[0] + 2.0 * axis[1]).abs() / 5f64.sqrt();
        assert!(cos > 1.0 - 1e-12, "{axis:?}");
        let var_t = ts.iter().map(|t| t * t).sum::<f64>() / 5.0 * 5.0;
        assert!((p.variance[0] - var_t).abs() < 1e-9, "{} vs {var_t}", p.variance[0]);
        assert!(p.variance[1] < p.variance[0]);
        let z = p.transform(&x);
        assert!((z.row(4)[0].abs() - 2.0 * 5f64.sqrt()).abs() < 1e-9);

        // Gram path: two rows in three dimensions; one axis, along their difference.
        let x = Matrix::new(2, 3, vec![1.0, 2.0, 3.0, 3.0, 2.0, 1.0]);
        let p = Pca::fit(&x, 1).unwrap();
        let a = &p.components[0];
        let d = [2.0 / 8f64.sqrt(), 0.0, -2.0 / 8f64.sqrt()];
        assert!((a[0] * d[0] + a[2] * d[2]).abs() > 0.9999, "{a:?}");
        assert!((p.variance[0] - 2.0).abs() < 1e-9, "{:?}", p.variance);
        assert!(Pca::fit(&x, 3).unwrap_err().to_string().contains("at most 2"));
    }
}
