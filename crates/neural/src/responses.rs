//! Recorded neural responses (`RESP.npz`) and their reliability.
//!
//! The file holds `responses` as `[stimuli × neuroids]`, `[repetitions × stimuli × neuroids]`
//! or `[bins × repetitions × stimuli × neuroids]` (float), `stimulus_id` (strings, matched
//! against the stimulus set's ids), and optionally `region` (one string per neuroid; default
//! `all`) and `time_bins` (`[bins × 2]`, start and end in ms).

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{NeuralError, Result};
use crate::regress::pearson;

/// Responses in memory, `[bins × repetitions × stimuli × neuroids]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Responses {
    pub values: Vec<f64>,
    pub bins: usize,
    pub repetitions: usize,
    pub stimulus_ids: Vec<String>,
    pub regions: Vec<String>,
    /// `(start, end)` per bin in ms, where the file gives them.
    pub time_bins: Option<Vec<(f64, f64)>>,
    pub path: PathBuf,
}

impl Responses {
    pub fn stimuli(&self) -> usize {
        self.stimulus_ids.len()
    }

    pub fn neuroids(&self) -> usize {
        self.regions.len()
    }

    /// The regions in order of first appearance.
    pub fn region_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for r in &self.regions {
            if !names.contains(r) {
                names.push(r.clone());
            }
        }
        names
    }

    fn at(&self, bin: usize, rep: usize, stimulus: usize, neuroid: usize) -> f64 {
        let (r, s, n) = (self.repetitions, self.stimuli(), self.neuroids());
        self.values[((bin * r + rep) * s + stimulus) * n + neuroid]
    }

    /// The repetition mean of bin `bin`, `[stimuli × neuroids]` row-major.
    pub fn mean(&self, bin: usize) -> Vec<f64> {
        let (s, n) = (self.stimuli(), self.neuroids());
        let mut out = vec![0.0; s * n];
        for rep in 0..self.repetitions {
            for i in 0..s {
                for j in 0..n {
                    out[i * n + j] += self.at(bin, rep, i, j);
                }
            }
        }
        out.iter_mut().for_each(|v| *v /= self.repetitions as f64);
        out
    }

    /// Each neuroid's split-half reliability in `bin`, Spearman–Brown corrected to the full
    /// number of repetitions: repetitions are split at random into two halves, the halves'
    /// means correlated over stimuli (Pearson), r ↦ 2r / (1 + r), averaged over `splits`
    /// seeded splits. `None` with a single repetition (no reliability to estimate).
    pub fn split_half(&self, bin: usize, splits: usize, seed: u64) -> Option<Vec<f64>> {
        let r = self.repetitions;
        if r < 2 {
            return None;
        }
        let (s, n) = (self.stimuli(), self.neuroids());
        let mut sums = vec![0.0; n];
        let mut counts = vec![0usize; n];
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (bin as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for _ in 0..splits.max(1) {
            let mut order: Vec<usize> = (0..r).collect();
            order.shuffle(&mut rng);
            let (a, b) = order.split_at(r / 2);
            let half = |reps: &[usize], j: usize| -> Vec<f64> { (0..s).map(|i| reps.iter().map(|&k| self.at(bin, k, i, j)).sum::<f64>() / reps.len() as f64).collect() };
            for j in 0..n {
                let c = pearson(half(a, j).into_iter(), half(b, j).into_iter());
                if c.is_finite() {
                    sums[j] += 2.0 * c / (1.0 + c);
                    counts[j] += 1;
                }
            }
        }
        Some(sums.iter().zip(&counts).map(|(&v, &c)| if c == 0 { f64::NAN } else { v / c as f64 }).collect())
    }

    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |m: String| NeuralError::format(path, m);
        let mut npz = match npyz::npz::NpzArchive::open(path) {
            Ok(npz) => npz,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NeuralError::io(path, e)),
            Err(e) => return Err(bad(format!("not an npz archive ({e})"))),
        };
        let array = npz.by_name("responses").map_err(|e| bad(e.to_string()))?.ok_or_else(|| bad("no `responses` array".into()))?;
        let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
        if array.order() == npyz::Order::Fortran && shape.len() > 1 {
            return Err(bad("array `responses` is stored in Fortran order; save it C-contiguous".into()));
        }
        let values: Vec<f64> = match array.dtype() {
            npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => array.into_vec::<f64>().map_err(|e| bad(e.to_string()))?,
            npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4 => {
                array.into_vec::<f32>().map_err(|e| bad(e.to_string()))?.into_iter().map(f64::from).collect()
            }
            other => return Err(bad(format!("array `responses` has dtype {}; expected float32 or float64", other.descr()))),
        };
        let (bins, repetitions, stimuli, neuroids) = match shape[..] {
            [s, n] => (1, 1, s, n),
            [r, s, n] => (1, r, s, n),
            [b, r, s, n] => (b, r, s, n),
            _ => {
                return Err(bad(format!(
                    "array `responses` has shape {shape:?}; expected [stimuli, neuroids], [repetitions, stimuli, neuroids] or [bins, repetitions, stimuli, neuroids]"
                )));
            }
        };
        if values.is_empty() {
            return Err(bad("array `responses` is empty".into()));
        }
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            let (n, s, r) = (neuroids, stimuli, repetitions);
            let (bin, rep, stim, neuroid) = (k / (n * s * r), k / (n * s) % r, k / n % s, k % n);
            return Err(bad(format!(
                "array `responses` holds {} at bin {bin}, repetition {rep}, stimulus {stim}, neuroid {neuroid}; remove or impute missing responses first",
                values[k]
            )));
        }
        let stimulus_ids = plastic_data::npz_strings(&mut npz, "stimulus_id", stimuli, path)?.ok_or_else(|| bad("no `stimulus_id` array (the ids of the stimuli, in the order of `responses`)".into()))?;
        let regions = plastic_data::npz_strings(&mut npz, "region", neuroids, path)?.unwrap_or_else(|| vec!["all".to_string(); neuroids]);
        let time_bins = match npz.by_name("time_bins").map_err(|e| bad(e.to_string()))? {
            None => None,
            Some(a) => {
                let tshape = a.shape().to_vec();
                let v: Vec<f64> = match a.dtype() {
                    npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Int => a.into_vec::<i64>().map_err(|e| bad(e.to_string()))?.into_iter().map(|x| x as f64).collect(),
                    _ => a.into_vec::<f64>().map_err(|e| bad(format!("array `time_bins`: {e}")))?,
                };
                if tshape != [bins as u64, 2] {
                    return Err(bad(format!("array `time_bins` has shape {tshape:?}; expected [{bins}, 2] (start and end of each bin)")));
                }
                Some(v.chunks_exact(2).map(|c| (c[0], c[1])).collect())
            }
        };
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = stimulus_ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(bad(format!("stimulus id {dup:?} appears twice in `stimulus_id`")));
        }
        Ok(Self { values, bins, repetitions, stimulus_ids, regions, time_bins, path: path.to_path_buf() })
    }

    /// For each response stimulus, its row in a stimulus set with ids `ids`; a response
    /// stimulus missing from the set is an error naming it.
    pub fn rows_in(&self, ids: &[String], stimuli_source: &Path) -> Result<Vec<usize>> {
        let index: std::collections::HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        let missing: Vec<&String> = self.stimulus_ids.iter().filter(|id| !index.contains_key(id.as_str())).collect();
        if let Some(first) = missing.first() {
            return Err(NeuralError::Invalid(format!(
                "{}: {} of {} stimulus ids are not in {} (first: {first:?}; its ids look like {:?})",
                self.path.display(),
                missing.len(),
                self.stimuli(),
                stimuli_source.display(),
                ids.first().map(String::as_str).unwrap_or("")
            )));
        }
        Ok(self.stimulus_ids.iter().map(|id| index[id.as_str()]).collect())
    }
}
