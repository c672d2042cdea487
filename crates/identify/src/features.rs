//! From a data set to classifier inputs: the labels, the feature sets (which statistics), the
//! recording points kept, and the layout of the original (Nayebi et al.'s `cls_dataset_transform`):
//! the trajectories flattened observable-major (feature index = statistic · P + point) with the
//! three layer-position columns in front, which are never z-scored nor reduced by PCA.

use crate::dataset::Dataset;
use crate::{IdentifyError, Matrix, Result};

/// What a class is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelKind {
    /// The learning rule (`backprop`, `feedback_alignment`, …).
    #[default]
    Rule,
    /// The optimiser (`sgdm`, `adam`, …).
    Optimizer,
    /// The pair, written `rule+optimizer`.
    Both,
}

impl LabelKind {
    pub fn parse(s: &str) -> Result<LabelKind> {
        match s {
            "rule" => Ok(LabelKind::Rule),
            "optimizer" | "optimiser" => Ok(LabelKind::Optimizer),
            "both" => Ok(LabelKind::Both),
            other => Err(IdentifyError::Input(format!("--label {other:?}: expected rule, optimizer or both"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LabelKind::Rule => "rule",
            LabelKind::Optimizer => "optimizer",
            LabelKind::Both => "both",
        }
    }

    /// The class names (sorted, as scikit-learn's `classes_`) and each sample's class index.
    pub fn labels(self, d: &Dataset) -> (Vec<String>, Vec<usize>) {
        let names: Vec<String> = (0..d.n)
            .map(|i| match self {
                LabelKind::Rule => d.rule[i].clone(),
                LabelKind::Optimizer => d.optimizer[i].clone(),
                LabelKind::Both => format!("{}+{}", d.rule[i], d.optimizer[i]),
            })
            .collect();
        let mut classes = names.clone();
        classes.sort();
        classes.dedup();
        let y = names.iter().map(|n| classes.binary_search(n).expect("a class of the list")).collect();
        (classes, y)
    }
}

/// Which statistics a classifier sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FeatureSet {
    /// Statistics of the weights (`weight…`).
    Weights,
    /// Statistics of the activations (`act…`).
    Activations,
    /// The layer-wise activity changes (`gradavg…_id`).
    ActivityChanges,
    /// Everything.
    All,
}

impl FeatureSet {
    pub const ALL: [FeatureSet; 4] = [FeatureSet::Weights, FeatureSet::Activations, FeatureSet::ActivityChanges, FeatureSet::All];

    pub fn name(self) -> &'static str {
        match self {
            FeatureSet::Weights => "weights",
            FeatureSet::Activations => "activations",
            FeatureSet::ActivityChanges => "activity_changes",
            FeatureSet::All => "all",
        }
    }

    pub fn parse(s: &str) -> Result<FeatureSet> {
        FeatureSet::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| IdentifyError::Input(format!("feature set {s:?}: expected weights, activations, activity_changes or all")))
    }

    /// Whether the statistic `key` belongs to this set.
    pub fn contains(self, key: &str) -> bool {
        match self {
            FeatureSet::Weights => key.starts_with("weight"),
            FeatureSet::Activations => key.starts_with("act"),
            FeatureSet::ActivityChanges => key.starts_with("gradavg"),
            FeatureSet::All => true,
        }
    }

    /// The indices of `keys` in this set.
    pub fn columns(self, keys: &[String]) -> Vec<usize> {
        keys.iter().enumerate().filter(|(_, k)| self.contains(k)).map(|(i, _)| i).collect()
    }
}

/// The recording points kept out of `p`: with `every = Some(n)`, points 0, n, 2n, …; then with
/// `points = Some(k)`, k of those evenly spread with both ends included.
pub fn select_points(p: usize, points: Option<usize>, every: Option<usize>) -> Result<Vec<usize>> {
    let mut kept: Vec<usize> = match every {
        Some(0) => return Err(IdentifyError::Input("--every 0: expected a stride of at least 1".into())),
        Some(n) => (0..p).step_by(n).collect(),
        None => (0..p).collect(),
    };
    if let Some(k) = points {
        let have = kept.len();
        if k == 0 || k > have {
            return Err(IdentifyError::Input(format!("--points {k}: the trajectories have {have} recording points{}", if every.is_some() { " after --every" } else { "" })));
        }
        kept = if k == 1 {
            vec![kept[have - 1]]
        } else {
            (0..k).map(|i| kept[((i * (have - 1)) as f64 / (k - 1) as f64).round() as usize]).collect()
        };
    }
    Ok(kept)
}

/// The inputs of the classifiers for one view, feature set and choice of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `[N, 3]` layer position, one-hot.
    pub cat: Matrix,
    /// `[N, stats · points]`, observable-major: column = statistic · points + point.
    pub traj: Matrix,
    pub stats: usize,
    pub points: usize,
}

impl Features {
    /// The trajectories of the statistics `stats` at the points `points` in view `view`.
    pub fn build(d: &Dataset, view: usize, stats: &[usize], points: &[usize]) -> Features {
        let (sn, pn) = (stats.len(), points.len());
        let mut traj = Matrix::zeros(d.n, sn * pn);
        for i in 0..d.n {
            let row = traj.row_mut(i);
            for (a, &s) in stats.iter().enumerate() {
                for (b, &p) in points.iter().enumerate() {
                    row[a * pn + b] = d.value(view, i, p, s);
                }
            }
        }
        let cat = Matrix::new(d.n, 3, d.x_cat.iter().flatten().copied().collect());
        Features { cat, traj, stats: sn, points: pn }
    }

    pub fn n(&self) -> usize {
        self.traj.rows
    }

    /// `[cat | traj]` of the rows `idx`: the 2-D input of the forest and the SVM.
    pub fn flat(&self, idx: &[usize]) -> Matrix {
        self.cat.select_rows(idx).hstack(&self.traj.select_rows(idx))
    }

    /// One sample as `[points][3 + stats]` (channels last, the position repeated at every
    /// point): the 1-D conv net's input, as the original's `[N, T, 3 + S]`.
    pub fn sequence(&self, i: usize) -> Vec<f64> {
        let c = 3 + self.stats;
        let mut out = vec![0.0; self.points * c];
        let (cat, traj) = (self.cat.row(i), self.traj.row(i));
        for t in 0..self.points {
            out[t * c..t * c + 3].copy_from_slice(cat);
            for s in 0..self.stats {
                out[t * c + 3 + s] = traj[s * self.points + t];
            }
        }
        out
    }

    /// The trajectories z-scored with the mean and standard deviation (population, floored at
    /// 1e-5) of the rows `train`, as the original's `featurewise_norm`; the position columns
    /// are left alone.
    pub fn zscored(&self, train: &[usize]) -> Features {
        let cols = self.traj.cols;
        let n = train.len().max(1) as f64;
        let mut mean = vec![0.0; cols];
        for &i in train {
            mean.iter_mut().zip(self.traj.row(i)).for_each(|(m, v)| *m += v / n);
        }
        let mut sd = vec![0.0; cols];
        for &i in train {
            sd.iter_mut().zip(self.traj.row(i)).zip(&mean).for_each(|((s, v), m)| *s += (v - m) * (v - m) / n);
        }
        sd.iter_mut().for_each(|s| *s = s.sqrt().max(1e-5));
        let mut traj = self.traj.clone();
        for r in 0..traj.rows {
            traj.row_mut(r).iter_mut().zip(mean.iter().zip(&sd)).for_each(|(v, (m, s))| *v = (*v - m) / s);
        }
        Features { traj, ..self.clone() }
    }
}

/// The statistics (of `stats`) that have a non-finite value at one of `points` in some sample
/// of view `view`: the classifiers cannot use them.
pub fn non_finite_statistics(d: &Dataset, view: usize, stats: &[usize], points: &[usize]) -> Vec<usize> {
    stats.iter().copied().filter(|&s| (0..d.n).any(|i| points.iter().any(|&p| !d.value(view, i, p, s).is_finite()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::tests::small;

    #[test]
    fn labels_are_sorted_class_indices() {
        let d = small();
        assert_eq!(LabelKind::Rule.labels(&d), (vec!["backprop".into(), "feedback_alignment".into()], vec![0, 1, 0, 1]));
        assert_eq!(LabelKind::Optimizer.labels(&d).1, [1, 0, 0, 1]);
        let (classes, y) = LabelKind::Both.labels(&d);
        assert_eq!(classes, ["backprop+adam", "backprop+sgdm", "feedback_alignment+adam", "feedback_alignment+sgdm"]);
        assert_eq!(y, [1, 2, 0, 3]);
        assert!(LabelKind::parse("rules").unwrap_err().to_string().contains("rule, optimizer or both"));
    }

    #[test]
    fn feature_sets_pick_statistics_by_prefix() {
        let keys: Vec<String> = ["weightabs_mean", "actraw_norm", "gradavgsq_id", "weightsq_median"].iter().map(|s| s.to_string()).collect();
        assert_eq!(FeatureSet::Weights.columns(&keys), [0, 3]);
        assert_eq!(FeatureSet::Activations.columns(&keys), [1]);
        assert_eq!(FeatureSet::ActivityChanges.columns(&keys), [2]);
        assert_eq!(FeatureSet::All.columns(&keys), [0, 1, 2, 3]);
        assert_eq!(FeatureSet::parse("activity_changes").unwrap(), FeatureSet::ActivityChanges);
    }

    #[test]
    fn points_are_subsampled_evenly_with_both_ends() {
        assert_eq!(select_points(21, None, None).unwrap().len(), 21);
        assert_eq!(select_points(21, Some(5), None).unwrap(), [0, 5, 10, 15, 20]);
        assert_eq!(select_points(21, Some(2), None).unwrap(), [0, 20]);
        assert_eq!(select_points(21, Some(1), None).unwrap(), [20]);
        assert_eq!(select_points(21, None, Some(4)).unwrap(), [0, 4, 8, 12, 16, 20]);
        // Every 4th: [0, 4, 8, 12, 16, 20]; 3 of those at positions 0, round(2.5) = 3, 5.
        assert_eq!(select_points(21, Some(3), Some(4)).unwrap(), [0, 12, 20]);
        assert!(select_points(21, Some(22), None).unwrap_err().to_string().contains("21 recording points"));
        assert!(select_points(21, None, Some(0)).is_err());
    }

    #[test]
    fn the_layout_is_observable_major_with_the_position_in_front() {
        let d = small();
        // value = view·1000 + sample·100 + point·10 + stat
        let f = Features::build(&d, 0, &[1, 0], &[0, 2]);
        assert_eq!((f.stats, f.points), (2, 2));
        assert_eq!(f.traj.row(1), [101.0, 121.0, 100.0, 120.0]);
        assert_eq!(f.flat(&[1]).row(0), [0.0, 1.0, 0.0, 101.0, 121.0, 100.0, 120.0]);
        // The sequence: [points][3 + stats].
        assert_eq!(f.sequence(1), [0.0, 1.0, 0.0, 101.0, 100.0, 0.0, 1.0, 0.0, 121.0, 120.0]);
        assert_eq!(Features::build(&d, 1, &[0], &[1]).traj.row(3), [1310.0]);
    }

    #[test]
    fn zscoring_uses_the_training_rows_only() {
        let d = small();
        let f = Features::build(&d, 0, &[0], &[0]);
        // Column values 0, 100, 200, 300; train rows 0 and 2: mean 100, sd 100.
        let z = f.zscored(&[0, 2]);
        let col: Vec<f64> = (0..4).map(|i| z.traj.row(i)[0]).collect();
        assert_eq!(col, [-1.0, 0.0, 1.0, 2.0]);
        assert_eq!(z.cat, f.cat);
    }
}
