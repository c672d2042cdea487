//! Object solution times (Kar et al. 2019; Nayebi et al. 2022): per image, the first time step
//! from which the network's answer meets a criterion and keeps meeting it to the last step.
//! Images that never meet it are reported as unsolved, never dropped.

use std::path::Path;

use burn::tensor::activation::softmax;
use plastic_data::Stimuli;
use serde::Serialize;

use crate::error::{NeuralError, Result};
use crate::features::{Viewer, host};
use crate::regress::pearson;

/// When an image counts as solved at a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// The readout's softmax probability of the true label is at least this.
    Probability(f64),
    /// The readout's most probable class is the true label.
    Correct,
}

impl std::str::FromStr for Criterion {
    type Err = String;

    /// `p>=0.5` (or a bare probability `0.5`), or `correct`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "correct" {
            return Ok(Criterion::Correct);
        }
        let v = s.strip_prefix("p>=").unwrap_or(s);
        match v.parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 1.0 => Ok(Criterion::Probability(p)),
            _ => Err(format!("--criterion {s:?}: expected p>=P with 0 < P ≤ 1 (e.g. p>=0.5), or correct")),
        }
    }
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Criterion::Probability(p) => write!(f, "p>={p}"),
            Criterion::Correct => write!(f, "correct"),
        }
    }
}

/// The first step from which `holds` is true through the end (`None`: never; a sequence
/// that holds only at some middle steps is not solved until it holds for good).
pub fn first_stable(holds: &[bool]) -> Option<usize> {
    let tail = holds.iter().rev().take_while(|&&h| h).count();
    (tail > 0).then(|| holds.len() - tail)
}

/// One image's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Solution {
    pub stimulus_id: String,
    pub label: String,
    /// The solution time step, `None` when never solved.
    pub ost: Option<usize>,
    /// p(true label) at each step.
    pub p_label: Vec<f64>,
    /// The most probable class at the last step.
    pub prediction: String,
}

/// Solution times from per-step class probabilities `probs[step][image][class]`.
pub fn solutions(probs: &[Vec<Vec<f64>>], labels: &[usize], ids: &[String], classes: &[String], criterion: Criterion) -> Vec<Solution> {
    (0..labels.len())
        .map(|i| {
            let label = labels[i];
            let holds: Vec<bool> = probs
                .iter()
                .map(|step| {
                    let row = &step[i];
                    match criterion {
                        Criterion::Probability(p) => row[label] >= p,
                        Criterion::Correct => row.iter().enumerate().all(|(k, &v)| k == label || v < row[label]),
                    }
                })
                .collect();
            let last = &probs.last().expect("at least one step")[i];
            let prediction = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap_or(0);
            Solution {
                stimulus_id: ids[i].clone(),
                label: classes[label].clone(),
                ost: first_stable(&holds),
                p_label: probs.iter().map(|s| s[i][label]).collect(),
                prediction: classes[prediction].clone(),
            }
        })
        .collect()
}

/// The readout's class probabilities at every step for every stimulus, `[step][image][class]`.
pub fn readout_probabilities(viewer: &Viewer, stimuli: &Stimuli, batch_size: usize) -> Vec<Vec<Vec<f64>>> {
    let mut out: Vec<Vec<Vec<f64>>> = Vec::new();
    let mut start = 0;
    while start < stimuli.len() {
        let end = (start + batch_size.max(1)).min(stimuli.len());
        let (_, logits) = viewer.forward(stimuli, start..end);
        if out.is_empty() {
            out = vec![Vec::with_capacity(stimuli.len()); logits.len()];
        }
        for (t, l) in logits.into_iter().enumerate() {
            let [_, k] = l.dims();
            let p = host(softmax(l, 1));
            out[t].extend(p.chunks_exact(k).map(|r| r.iter().map(|&v| v as f64).collect::<Vec<f64>>()));
        }
        start = end;
    }
    out
}

/// Per-step class probabilities from logistic-regression decoders of a layer (Kar et al. 2019
/// style), `[step][image][class]`: at each step, the layer's channel means (spatial average)
/// over the images, decoded by a multinomial logistic regression (L2 penalty `alpha`, features
/// standardised on the training images) under `folds`-fold cross-validation over images, each
/// image's probabilities coming from the decoder that did not see it. A class absent from a
/// training fold gets probability 0 for that fold's images.
pub fn decoder_probabilities(viewer: &Viewer, stimuli: &Stimuli, layer: &str, labels: &[usize], folds: usize, alpha: f64, seed: u64, batch_size: usize) -> Result<Vec<Vec<Vec<f64>>>> {
    use smartcore::linalg::basic::arrays::Array;
    use smartcore::linalg::basic::matrix::DenseMatrix;
    use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

    let all = viewer.model.feature_layers();
    let index = all.iter().position(|l| l == layer).ok_or_else(|| NeuralError::Invalid(format!("--layer: the network has no layer {layer:?}; its layers are {}", all.join(", "))))?;
    let n = stimuli.len();
    if folds < 2 || n / folds.max(1) < 1 {
        return Err(NeuralError::Invalid(format!("--folds {folds}: needs 2 ≤ folds ≤ the {n} images")));
    }
    let classes = viewer.preprocessing.num_classes();
    // features[step] = [n × channels]
    let mut features: Vec<Vec<f64>> = Vec::new();
    let mut channels = 0;
    let mut start = 0;
    while start < n {
        let end = (start + batch_size.max(1)).min(n);
        let (steps, _) = viewer.forward(stimuli, start..end);
        if features.is_empty() {
            features = vec![Vec::with_capacity(n * steps[0][index].dims()[1]); steps.len()];
        }
        for (t, outputs) in steps.into_iter().enumerate() {
            channels = outputs[index].dims()[1];
            features[t].extend(host(outputs[index].clone().mean_dim(3).mean_dim(2)).into_iter().map(f64::from));
        }
        start = end;
    }
    let held_out = crate::fit::kfold(n, folds, seed);
    let mut probs = vec![vec![vec![0.0; classes]; n]; features.len()];
    for (t, x) in features.iter().enumerate() {
        for held in &held_out {
            let train: Vec<usize> = (0..n).filter(|i| held.binary_search(i).is_err()).collect();
            let mean: Vec<f64> = (0..channels).map(|c| train.iter().map(|&i| x[i * channels + c]).sum::<f64>() / train.len() as f64).collect();
            let sd: Vec<f64> = (0..channels)
                .map(|c| {
                    let v = train.iter().map(|&i| (x[i * channels + c] - mean[c]).powi(2)).sum::<f64>() / train.len() as f64;
                    if v > 1e-12 { v.sqrt() } else { 1.0 }
                })
                .collect();
            let rows = |set: &[usize]| -> Vec<Vec<f64>> { set.iter().map(|&i| (0..channels).map(|c| (x[i * channels + c] - mean[c]) / sd[c]).collect()).collect() };
            let (x_train, x_held) = (rows(&train), rows(held));
            let y: Vec<i32> = train.iter().map(|&i| labels[i] as i32).collect();
            let mut present: Vec<i32> = y.clone();
            present.sort_unstable();
            present.dedup();
            let decoded: Vec<Vec<f64>> = if present.len() < 2 {
                // One class in the training fold: it is the only answer the decoder knows.
                held.iter().map(|_| (0..classes).map(|k| if present.first() == Some(&(k as i32)) { 1.0 } else { 0.0 }).collect()).collect()
            } else {
                let matrix = DenseMatrix::from_2d_vec(&x_train).map_err(|e| NeuralError::Invalid(format!("decoder at step {t}: {e}")))?;
                let model = LogisticRegression::fit(&matrix, &y, LogisticRegressionParameters::default().with_alpha(alpha)).map_err(|e| NeuralError::Invalid(format!("decoder at step {t}: {e}")))?;
                let (coef, intercept, fitted) = (model.coefficients(), model.intercept(), model.classes());
                x_held
                    .iter()
                    .map(|row| {
                        let score = |r: usize| *intercept.get((r, 0)) + (0..channels).map(|c| coef.get((r, c)) * row[c]).sum::<f64>();
                        let mut p = vec![0.0; classes];
                        if fitted.len() == 2 {
                            let p1 = 1.0 / (1.0 + (-score(0)).exp());
                            p[fitted[1] as usize] = p1;
                            p[fitted[0] as usize] = 1.0 - p1;
                        } else {
                            let s: Vec<f64> = (0..fitted.len()).map(score).collect();
                            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let z: f64 = s.iter().map(|v| (v - max).exp()).sum();
                            for (r, &k) in fitted.iter().enumerate() {
                                p[k as usize] = (s[r] - max).exp() / z;
                            }
                        }
                        p
                    })
                    .collect()
            };
            for (&i, p) in held.iter().zip(decoded) {
                probs[t][i] = p;
            }
        }
    }
    Ok(probs)
}

/// Reads `stimulus_id,label` rows (a header line first; the label a class name or index).
pub fn read_labels(path: &Path, classes: &[String]) -> Result<Vec<(String, usize)>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| NeuralError::format(path, e.to_string()))?;
    let mut out = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| NeuralError::format(path, e.to_string()))?;
        let (Some(id), Some(label)) = (record.get(0), record.get(1)) else {
            return Err(NeuralError::format(path, format!("row {}: expected stimulus_id,label", line + 2)));
        };
        let index = classes.iter().position(|c| c == label).or_else(|| label.parse::<usize>().ok().filter(|&k| k < classes.len())).ok_or_else(|| {
            NeuralError::format(path, format!("row {}: label {label:?} is neither a class name of the run ({}) nor an index below {}", line + 2, classes.join(", "), classes.len()))
        })?;
        out.push((id.to_string(), index));
    }
    Ok(out)
}

/// Reads `stimulus_id,time` rows of a reference (e.g. primates' solution times).
pub fn read_reference(path: &Path) -> Result<Vec<(String, f64)>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| NeuralError::format(path, e.to_string()))?;
    let mut out = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| NeuralError::format(path, e.to_string()))?;
        let parsed = record.get(1).and_then(|t| t.trim().parse::<f64>().ok());
        match (record.get(0), parsed) {
            (Some(id), Some(t)) => out.push((id.to_string(), t)),
            _ => return Err(NeuralError::format(path, format!("row {}: expected stimulus_id,time with a number for time", line + 2))),
        }
    }
    Ok(out)
}

/// How the solution times relate to a reference, over the images solved by the network that
/// the reference gives a finite time for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceCorrelation {
    pub images: usize,
    pub pearson: f64,
    pub spearman: f64,
}

/// Ranks with ties averaged (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[order[k]] = mean;
        }
        i = j + 1;
    }
    r
}

pub fn correlate(solutions: &[Solution], reference: &[(String, f64)]) -> ReferenceCorrelation {
    let index: std::collections::HashMap<&str, f64> = reference.iter().map(|(id, t)| (id.as_str(), *t)).collect();
    let pairs: Vec<(f64, f64)> = solutions
        .iter()
        .filter_map(|s| Some((s.ost? as f64, *index.get(s.stimulus_id.as_str())?)))
        .filter(|(_, r)| r.is_finite())
        .collect();
    let (a, b): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
    let (ra, rb) = (ranks(&a), ranks(&b));
    ReferenceCorrelation {
        images: pairs.len(),
        pearson: pearson(a.iter().copied(), b.iter().copied()),
        spearman: pearson(ra.iter().copied(), rb.iter().copied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_solution_time_is_where_the_criterion_starts_to_hold_for_good() {
        assert_eq!(first_stable(&[false, true, true]), Some(1));
        assert_eq!(first_stable(&[true, false, true, true]), Some(2), "a lapse resets it");
        assert_eq!(first_stable(&[true, true, false]), None, "lost at the end: unsolved");
        assert_eq!(first_stable(&[true]), Some(0));
        assert_eq!(first_stable(&[]), None);
    }

    /// Hand-made per-step logits for three images over four steps.
    #[test]
    fn solution_times_of_hand_made_logits() {
        let classes: Vec<String> = ["cat", "dog"].map(String::from).to_vec();
        let soft = |a: f64, b: f64| {
            let (ea, eb) = (a.exp(), b.exp());
            vec![ea / (ea + eb), eb / (ea + eb)]
        };
        // logits per step: image 0 (cat) at exactly 0.5 at step 1, above from step 2; image 1
        // (dog) solved from step 0; image 2 (cat) right at step 1 only, then wrong: unsolved.
        let logits = [[(0.0, 1.0), (0.0, 2.0), (0.0, 1.0)], [(0.0, 0.0), (0.0, 2.0), (1.0, 0.0)], [(1.0, 0.0), (0.0, 2.0), (0.0, 1.0)], [(2.0, 0.0), (0.0, 2.0), (0.0, 3.0)]];
        let probs: Vec<Vec<Vec<f64>>> = logits.iter().map(|step| step.iter().map(|&(a, b)| soft(a, b)).collect()).collect();
        let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let s = solutions(&probs, &[0, 1, 0], &ids, &classes, Criterion::Probability(0.5));
        assert_eq!(s.iter().map(|s| s.ost).collect::<Vec<_>>(), [Some(1), Some(0), None]);
        assert_eq!(s[2].prediction, "dog");
        // A stricter criterion: p ≥ 0.8 (logit gap ≥ ln 4 ≈ 1.39): image 0 only at step 3.
        let s = solutions(&probs, &[0, 1, 0], &ids, &classes, Criterion::Probability(0.8));
        assert_eq!(s.iter().map(|s| s.ost).collect::<Vec<_>>(), [Some(3), Some(0), None]);
        // Image 0 at step 1 is a tie: `correct` (a strict argmax) does not count it.
        let s = solutions(&probs, &[0, 1, 0], &ids, &classes, Criterion::Correct);
        assert_eq!(s[0].ost, Some(2));
        let c = correlate(&s, &[("a".into(), 120.0), ("b".into(), 80.0), ("c".into(), 200.0)]);
        assert_eq!(c.images, 2, "the unsolved image is left out");
        assert!((c.spearman - 1.0).abs() < 1e-12 && (c.pearson - 1.0).abs() < 1e-12);
    }

    #[test]
    fn criteria_parse() {
        assert_eq!("p>=0.5".parse::<Criterion>(), Ok(Criterion::Probability(0.5)));
        assert_eq!("0.7".parse::<Criterion>(), Ok(Criterion::Probability(0.7)));
        assert_eq!("correct".parse::<Criterion>(), Ok(Criterion::Correct));
        assert!("p>=2".parse::<Criterion>().is_err());
    }
}
