//! What a trained network expects of an image: its size, channels, normalisation and class
//! names. Every run directory keeps one (`preprocessing.json`), so showing a run new images
//! (features, solution times, neural fits, the PyTorch bridge) never needs its training data.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::transform::Normalization;
use crate::{DataKind, Splits};

/// The file's name in a run directory.
pub const PREPROCESSING_FILE: &str = "preprocessing.json";

/// How raw images become network input, as the run was trained.
///
/// An image is decoded, its shorter side resized to `height` (bilinear / triangle filter) and
/// centre-cropped to `height × width`, converted to `channels` (luma for 1, RGB for 3), scaled
/// to `[0, 1]` and normalised per channel: `(x/255 − mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Class names, indexed by the readout's output.
    pub class_names: Vec<String>,
    /// The training data's kind (`digits`, `cifar10`, …), for the record.
    pub source: String,
}

impl Preprocessing {
    /// The preprocessing of a run trained on `splits` from a `kind` source.
    pub fn of(splits: &Splits, kind: DataKind) -> Self {
        let [channels, height, width] = splits.shape();
        let source = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        Self {
            channels,
            height,
            width,
            mean: splits.normalization.mean.clone(),
            std: splits.normalization.std.clone(),
            class_names: splits.train.class_names.clone(),
            source,
        }
    }

    /// `[channels, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn normalization(&self) -> Normalization {
        Normalization { mean: self.mean.clone(), std: self.std.clone() }
    }

    /// Reads `preprocessing.json` from `run_dir`.
    pub fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(PREPROCESSING_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
        let p: Self = serde_json::from_str(&text).map_err(|e| DataError::format(&path, e.to_string()))?;
        p.check().map_err(|m| DataError::format(&path, m))?;
        Ok(p)
    }

    /// Consistency: one mean and one positive std per channel, at least one class.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.channels == 0 {
            return Err(format!("channels = {}", self.channels));
        }
        if self.height == 0 || self.width == 0 {
            return Err(format!("image size {}×{}", self.height, self.width));
        }
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return Err(format!("{} channels but {} means and {} stds", self.channels, self.mean.len(), self.std.len()));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err("mean and std must be finite, std positive".into());
        }
        if self.class_names.is_empty() {
            return Err("no class names".into());
        }
        Ok(())
    }

    /// The JSON text written to `preprocessing.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataConfig, open};

    #[test]
    fn a_run_s_preprocessing_round_trips_and_matches_its_splits() {
        let splits = open(&DataConfig::default()).unwrap();
        let p = Preprocessing::of(&splits, DataKind::Digits);
        assert_eq!(p.shape(), [1, 8, 8]);
        assert_eq!(p.normalization(), splits.normalization);
        assert_eq!(p.class_names.len(), 10);
        assert_eq!(p.source, "digits");
        let dir = std::env::temp_dir().join(format!("plastic-prep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(PREPROCESSING_FILE), p.to_json()).unwrap();
        assert_eq!(Preprocessing::read(&dir).unwrap(), p);
        // A std of zero is refused with the file's name.
        let mut bad = p.clone();
        bad.std[0] = 0.0;
        std::fs::write(dir.join(PREPROCESSING_FILE), bad.to_json()).unwrap();
        let e = Preprocessing::read(&dir).unwrap_err().to_string();
        assert!(e.contains("preprocessing.json") && e.contains("std"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
