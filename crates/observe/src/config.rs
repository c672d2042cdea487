//! The `[observe]` section of a run config.

use serde::{Deserialize, Serialize};

use crate::names::StatisticSet;
use crate::realism::RealismView;

/// Which unroll step of a recurrent model is observed: `"last"` or a step index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeStep {
    /// The last step of the unroll.
    #[default]
    Last,
    /// A step index (clamped to the unroll).
    Index(usize),
}

impl Serialize for TimeStep {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TimeStep::Last => s.serialize_str("last"),
            TimeStep::Index(i) => s.serialize_u64(*i as u64),
        }
    }
}

impl<'de> Deserialize<'de> for TimeStep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Index(u64),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Index(i) => Ok(TimeStep::Index(i as usize)),
            Raw::Name(s) if s == "last" => Ok(TimeStep::Last),
            Raw::Name(s) => Err(serde::de::Error::custom(format!("expected \"last\" or a step index, found {s:?}"))),
        }
    }
}

impl TimeStep {
    /// The step index, or `None` for the last.
    pub fn index(self) -> Option<usize> {
        match self {
            TimeStep::Last => None,
            TimeStep::Index(i) => Some(i),
        }
    }
}

/// What is recorded during training, and when.
///
/// Defaults follow Nayebi, Srivastava et al. (2020): 21 points over training, the 24
/// "admissible" statistics, no realism manipulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveConfig {
    /// Record observables at all (`observables.csv` / `observables.npz` in the run directory).
    pub enabled: bool,
    /// Recording points, spread evenly over training, step 0 and the last step included.
    pub points: usize,
    /// Examples in the fixed probe batch, drawn once (seeded) from the validation split. The
    /// default, 32, is a training batch's size: a point then costs about two training steps,
    /// so 21 points stay within 3 % of even the 3-second quickstart.
    pub probe_batch: usize,
    /// `admissible` (the 24 finite across the original's models) or `all` (45).
    pub statistics: StatisticSet,
    /// Recurrent models: the unroll step whose outputs are observed (`"last"` or an index).
    pub time_step: TimeStep,
    /// Realism views (unit subsampling and measurement noise), each recorded separately;
    /// view 0 is the one identification uses by default.
    pub views: Vec<RealismView>,
    /// Seed of the probe batch draw and of the realism manipulations (default: the run seed).
    pub seed: Option<u64>,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self { enabled: true, points: 21, probe_batch: 32, statistics: StatisticSet::Admissible, time_step: TimeStep::Last, views: vec![RealismView::default()], seed: None }
    }
}

impl ObserveConfig {
    /// Range checks; messages name the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.points < 2 {
            return Err(format!("observe.points = {} must be at least 2 (step 0 and the last step)", self.points));
        }
        if self.probe_batch == 0 {
            return Err("observe.probe_batch must be at least 1".into());
        }
        if self.views.is_empty() {
            return Err("observe.views must list at least one view (e.g. [{ unit_fraction = 1.0, noise_std = 0.0 }])".into());
        }
        for (i, v) in self.views.iter().enumerate() {
            v.validate(i)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_step_reads_last_or_an_index() {
        #[derive(Deserialize)]
        struct T {
            t: TimeStep,
        }
        assert_eq!(toml::from_str::<T>("t = \"last\"").unwrap().t, TimeStep::Last);
        assert_eq!(toml::from_str::<T>("t = 3").unwrap().t, TimeStep::Index(3));
        assert!(toml::from_str::<T>("t = \"first\"").is_err());
        let c: ObserveConfig = toml::from_str("points = 11\nviews = [{ unit_fraction = 0.5, noise_std = 0.1 }]").unwrap();
        assert_eq!(c.points, 11);
        assert_eq!(c.views[0], RealismView { unit_fraction: 0.5, noise_std: 0.1 });
        assert!(c.validate().is_ok());
        assert!(ObserveConfig { points: 1, ..Default::default() }.validate().unwrap_err().contains("observe.points"));
    }
}
