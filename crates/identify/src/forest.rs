//! A random forest with scikit-learn's `RandomForestClassifier` rules (defaults: gini,
//! unlimited depth, `min_samples_split = 2`, `min_samples_leaf = 1`, bootstrap of N draws):
//!
//! - each tree is grown on a bootstrap sample, the draw counts acting as sample weights;
//! - at **every split** the candidate features are drawn anew, without replacement, until
//!   `max_features` have been looked at, going on past that while every one looked at was
//!   constant in the node (scikit-learn's "until at least one valid partition is found");
//! - thresholds lie midway between neighbouring distinct values; values are compared as f32,
//!   with scikit-learn's `FEATURE_THRESHOLD` of 1e-7 for "distinct", as its trees store X as
//!   float32;
//! - the split maximises the weighted gini decrease; a node is a leaf when pure, when it holds
//!   one distinct sample, or when every feature is constant in it;
//! - a leaf stores its class frequencies (weighted), and the forest predicts the class of
//!   highest **mean probability** over the trees (the first such class on a tie): a soft vote.
//!
//! Why this is ours and not a library's: see the crate documentation.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cv::Method;
use crate::features::Features;
use crate::{Matrix, Result, mix_seed};

/// scikit-learn's `FEATURE_THRESHOLD` (`sklearn/tree/_splitter.pyx`): values closer than
/// this count as equal.
const FEATURE_THRESHOLD: f32 = 1e-7;

/// How many features a split considers, of `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaxFeatures {
    /// `max(1, ⌊√d⌋)`.
    Sqrt,
    /// `max(1, ⌊log₂ d⌋)`.
    Log2,
    /// All `d` (scikit-learn's `None`): bagged trees.
    All,
}

impl MaxFeatures {
    pub fn count(self, d: usize) -> usize {
        match self {
            MaxFeatures::Sqrt => ((d as f64).sqrt() as usize).max(1),
            MaxFeatures::Log2 => ((d as f64).log2() as usize).max(1),
            MaxFeatures::All => d,
        }
        .min(d.max(1))
    }
}

/// One setting of the forest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForestParams {
    pub n_estimators: usize,
    pub max_features: MaxFeatures,
}

impl ForestParams {
    /// The default grid (6 settings): `max_features` ∈ {sqrt, log2, all} × `n_estimators` ∈
    /// {100, 300}. Fits share their trees (a forest of 100 is the first 100 trees of the one of
    /// 300), so the grid costs three forests of 300 per fold.
    pub fn default_grid() -> Vec<ForestParams> {
        Self::grid(&[100, 300])
    }

    /// The original's grid (15 settings): {sqrt, log2, all} × {20, 50, 100, 500, 1000}.
    pub fn full_grid() -> Vec<ForestParams> {
        Self::grid(&[20, 50, 100, 500, 1000])
    }

    fn grid(trees: &[usize]) -> Vec<ForestParams> {
        [MaxFeatures::Sqrt, MaxFeatures::Log2, MaxFeatures::All].iter().flat_map(|&max_features| trees.iter().map(move |&n_estimators| ForestParams { n_estimators, max_features })).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Split { feature: usize, threshold: f64, left: usize, right: usize },
    Leaf { proba: Vec<f64> },
}

/// One fitted tree: node 0 is the root.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// The class probabilities of the leaf `row` falls into.
    pub fn predict_proba(&self, row: &[f64]) -> &[f64] {
        let mut i = 0;
        loop {
            match &self.nodes[i] {
                Node::Leaf { proba } => return proba,
                Node::Split { feature, threshold, left, right } => i = if (row[*feature] as f32) as f64 <= *threshold { *left } else { *right },
            }
        }
    }

    pub fn num_leaves(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n, Node::Leaf { .. })).count()
    }

    /// Grows a tree on the samples with non-zero `weights` (bootstrap counts). `columns` is the
    /// training matrix feature-major, as f32.
    fn fit(columns: &[Vec<f32>], y: &[usize], weights: &[u32], classes: usize, max_features: usize, rng: &mut ChaCha8Rng) -> Tree {
        let d = columns.len();
        let mut samples: Vec<usize> = (0..y.len()).filter(|&i| weights[i] > 0).collect();
        let mut features: Vec<usize> = (0..d).collect();
        let mut nodes: Vec<Node> = Vec::new();
        let mut buffer: Vec<(f32, usize)> = Vec::with_capacity(samples.len());
        // (start, end, node index to fill)
        nodes.push(Node::Leaf { proba: Vec::new() });
        let mut stack = vec![(0, samples.len(), 0)];
        while let Some((start, end, at)) = stack.pop() {
            let node = &samples[start..end];
            let mut counts = vec![0.0; classes];
            for &i in node {
                counts[y[i]] += weights[i] as f64;
            }
            let total: f64 = counts.iter().sum();
            let gini = 1.0 - counts.iter().map(|c| (c / total) * (c / total)).sum::<f64>();
            let split = if node.len() < 2 || gini <= f64::EPSILON { None } else { best_split(columns, y, weights, node, &counts, &mut features, max_features, &mut buffer, rng) };
            match split {
                None => nodes[at] = Node::Leaf { proba: counts.iter().map(|c| c / total).collect() },
                Some((feature, threshold)) => {
                    // Partition: the samples going left first.
                    let column = &columns[feature];
                    let part = &mut samples[start..end];
                    let mut mid = 0;
                    for k in 0..part.len() {
                        if column[part[k]] as f64 <= threshold {
                            part.swap(k, mid);
                            mid += 1;
                        }
                    }
                    let (left, right) = (nodes.len(), nodes.len() + 1);
                    nodes.push(Node::Leaf { proba: Vec::new() });
                    nodes.push(Node::Leaf { proba: Vec::new() });
                    nodes[at] = Node::Split { feature, threshold, left, right };
                    stack.push((start + mid, end, right));
                    stack.push((start, start + mid, left));
                }
            }
        }
        Tree { nodes }
    }
}

/// The best (feature, threshold) of a node, or `None` when every feature is constant in it.
#[allow(clippy::too_many_arguments)]
fn best_split(columns: &[Vec<f32>], y: &[usize], weights: &[u32], node: &[usize], counts: &[f64], features: &mut [usize], max_features: usize, buffer: &mut Vec<(f32, usize)>, rng: &mut ChaCha8Rng) -> Option<(usize, f64)> {
    let d = features.len();
    let total: f64 = counts.iter().sum();
    let mut best: Option<(f64, usize, f64)> = None; // (proxy, feature, threshold)
    let (mut visited, mut constant) = (0, 0);
    let mut left = vec![0.0; counts.len()];
    let mut drawn = 0;
    while drawn < d && (visited < max_features || visited <= constant) {
        let j = rng.random_range(drawn..d);
        features.swap(drawn, j);
        let f = features[drawn];
        drawn += 1;
        visited += 1;
        let column = &columns[f];
        buffer.clear();
        buffer.extend(node.iter().map(|&i| (column[i], i)));
        buffer.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        if buffer[buffer.len() - 1].0 <= buffer[0].0 + FEATURE_THRESHOLD {
            constant += 1;
            continue;
        }
        left.iter_mut().for_each(|c| *c = 0.0);
        let mut w_left = 0.0;
        for p in 1..buffer.len() {
            let (_, i) = buffer[p - 1];
            left[y[i]] += weights[i] as f64;
            w_left += weights[i] as f64;
            if buffer[p].0 <= buffer[p - 1].0 + FEATURE_THRESHOLD {
                continue;
            }
            let w_right = total - w_left;
            // scikit-learn's proxy for the gini decrease: Σ left² / w_left + Σ right² / w_right.
            let sq_left: f64 = left.iter().map(|c| c * c).sum();
            let sq_right: f64 = left.iter().zip(counts).map(|(l, c)| (c - l) * (c - l)).sum();
            let proxy = sq_left / w_left + sq_right / w_right;
            if best.is_none_or(|(b, _, _)| proxy > b) {
                let (a, b) = (buffer[p - 1].0 as f64, buffer[p].0 as f64);
                let mut threshold = a / 2.0 + b / 2.0;
                if threshold == b || !threshold.is_finite() {
                    threshold = a;
                }
                best = Some((proxy, f, threshold));
            }
        }
    }
    best.map(|(_, f, t)| (f, t))
}

/// A fitted forest.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomForest {
    pub trees: Vec<Tree>,
    pub classes: usize,
}

impl RandomForest {
    /// Fits `params.n_estimators` trees on the rows of `x` with labels `y` (classes
    /// `0..classes`). Tree `t` draws from its own seeded stream, so the first k trees of a
    /// forest are the forest of k trees with the same seed.
    pub fn fit(x: &Matrix, y: &[usize], classes: usize, params: &ForestParams, seed: u64) -> RandomForest {
        let columns: Vec<Vec<f32>> = (0..x.cols).map(|c| (0..x.rows).map(|r| x.row(r)[c] as f32).collect()).collect();
        let max_features = params.max_features.count(x.cols);
        let trees = (0..params.n_estimators)
            .map(|t| {
                let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, &[t as u64]));
                let mut weights = vec![0u32; x.rows];
                for _ in 0..x.rows {
                    weights[rng.random_range(0..x.rows)] += 1;
                }
                Tree::fit(&columns, y, &weights, classes, max_features, &mut rng)
            })
            .collect();
        RandomForest { trees, classes }
    }

    /// Mean class probabilities of the first `trees` trees for each row of `x`.
    pub fn predict_proba_first(&self, x: &Matrix, trees: usize) -> Vec<Vec<f64>> {
        let trees = &self.trees[..trees.min(self.trees.len())];
        (0..x.rows)
            .map(|r| {
                let mut p = vec![0.0; self.classes];
                for t in trees {
                    p.iter_mut().zip(t.predict_proba(x.row(r))).for_each(|(a, b)| *a += b);
                }
                p.iter_mut().for_each(|a| *a /= trees.len().max(1) as f64);
                p
            })
            .collect()
    }

    /// The class of highest mean probability over the first `trees` trees.
    pub fn predict_first(&self, x: &Matrix, trees: usize) -> Vec<usize> {
        self.predict_proba_first(x, trees).iter().map(|p| argmax(p)).collect()
    }

    pub fn predict(&self, x: &Matrix) -> Vec<usize> {
        self.predict_first(x, self.trees.len())
    }
}

/// The index of the first maximum.
pub(crate) fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// The forest as a [`Method`] on `[position | trajectories]`.
pub struct Forest;

impl Method for Forest {
    type Setting = ForestParams;

    fn fit_predict(&self, settings: &[ForestParams], x: &Features, train: &[usize], y_train: &[usize], classes: usize, evals: &[&[usize]], seed: u64) -> Result<Vec<Vec<Vec<usize>>>> {
        let xtrain = x.flat(train);
        let xevals: Vec<Matrix> = evals.iter().map(|e| x.flat(e)).collect();
        let mut out = vec![Vec::new(); settings.len()];
        // One forest per max_features, as large as the largest setting asks; smaller settings
        // use its first trees.
        for mf in [MaxFeatures::Sqrt, MaxFeatures::Log2, MaxFeatures::All] {
            let group: Vec<usize> = (0..settings.len()).filter(|&i| settings[i].max_features == mf).collect();
            let Some(most) = group.iter().map(|&i| settings[i].n_estimators).max() else { continue };
            let forest = RandomForest::fit(&xtrain, y_train, classes, &ForestParams { n_estimators: most, max_features: mf }, mix_seed(seed, &[mf as u64]));
            for &i in &group {
                out[i] = xevals.iter().map(|e| forest.predict_first(e, settings[i].n_estimators)).collect();
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_features_counts_as_scikit_learn() {
        assert_eq!(MaxFeatures::Sqrt.count(507), 22);
        assert_eq!(MaxFeatures::Log2.count(507), 8);
        assert_eq!(MaxFeatures::All.count(507), 507);
        assert_eq!(MaxFeatures::Log2.count(1), 1);
        assert_eq!(ForestParams::default_grid().len(), 6);
        assert_eq!(ForestParams::full_grid().len(), 15);
    }

    /// A single tree with every feature on a hand-checkable problem: x₀ separates the classes
    /// at 2.5 and x₁ is noise; the root must split x₀ midway between 2 and 3.
    #[test]
    fn a_tree_splits_midway_on_the_separating_feature() {
        let x = Matrix::new(6, 2, vec![1.0, 5.0, 2.0, 1.0, 0.0, 3.0, 3.0, 2.0, 4.0, 4.0, 5.0, 0.0]);
        let y = [0, 0, 0, 1, 1, 1];
        let columns: Vec<Vec<f32>> = (0..2).map(|c| (0..6).map(|r| x.row(r)[c] as f32).collect()).collect();
        let tree = Tree::fit(&columns, &y, &[1; 6], 2, 2, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(tree.nodes[0], Node::Split { feature: 0, threshold: 2.5, left: 1, right: 2 });
        assert_eq!(tree.num_leaves(), 2);
        assert_eq!(tree.predict_proba(&[2.4, 9.0]), [1.0, 0.0]);
        assert_eq!(tree.predict_proba(&[2.6, 9.0]), [0.0, 1.0]);
    }

    /// Identical inputs with different labels cannot be split: the leaf holds the weighted
    /// class frequencies (weights 3 and 1 → 0.75 / 0.25), which is what the soft vote averages.
    #[test]
    fn leaves_hold_weighted_class_frequencies() {
        let x = Matrix::new(3, 1, vec![1.0, 1.0, 7.0]);
        let columns = vec![vec![1.0f32, 1.0, 7.0]];
        let tree = Tree::fit(&columns, &[0, 1, 1], &[3, 1, 2], 2, 1, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(tree.predict_proba(x.row(0)), [0.75, 0.25]);
        assert_eq!(tree.predict_proba(x.row(2)), [0.0, 1.0]);
        // A forest averages probabilities: trees saying (0.75, 0.25) and (0.4, 0.6) vote 0.
        let forest = RandomForest { trees: vec![tree, Tree { nodes: vec![Node::Leaf { proba: vec![0.4, 0.6] }] }], classes: 2 };
        let p = &forest.predict_proba_first(&x, 2)[0];
        assert!((p[0] - 0.575).abs() < 1e-12 && (p[1] - 0.425).abs() < 1e-12, "{p:?}");
        assert_eq!(forest.predict(&x)[0], 0);
    }

    /// Constant features do not count: with max_features = 1 and one informative feature among
    /// nine constant ones, every tree still finds the split.
    #[test]
    fn the_search_goes_past_constant_features() {
        let n = 40;
        let mut data = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = i % 2;
            let mut row = vec![3.0; 10];
            row[7] = c as f64 * 10.0 + (i as f64) * 0.01;
            data.extend(row);
            y.push(c);
        }
        let x = Matrix::new(n, 10, data);
        let forest = RandomForest::fit(&x, &y, 2, &ForestParams { n_estimators: 20, max_features: MaxFeatures::Log2 }, 3);
        assert!(forest.trees.iter().all(|t| matches!(t.nodes[0], Node::Split { feature: 7, .. })));
        assert_eq!(forest.predict(&x), y);
    }

    #[test]
    fn the_first_trees_are_the_smaller_forest() {
        let x = Matrix::new(8, 2, (0..16).map(|v| ((v * 7) % 11) as f64).collect());
        let y = [0, 1, 0, 1, 1, 0, 1, 0];
        let big = RandomForest::fit(&x, &y, 2, &ForestParams { n_estimators: 10, max_features: MaxFeatures::Sqrt }, 5);
        let small = RandomForest::fit(&x, &y, 2, &ForestParams { n_estimators: 4, max_features: MaxFeatures::Sqrt }, 5);
        assert_eq!(big.trees[..4], small.trees[..]);
    }
}
