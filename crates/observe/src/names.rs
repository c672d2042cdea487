//! The names of the observables, spelled as the original's `observable_names.py` spells them:
//! `{measure}{transform}_{statistic}` (`weightabs_median`, `actraw_norm`) and
//! `gradavg{transform}_id` for the layer-wise activity change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ObserveError;

/// What is measured in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// The forward kernel W (no bias, no feedback kernel B), all of its values at once.
    Weight,
    /// The layer's output on the probe batch, summarised per example and then averaged.
    Act,
    /// The layer-wise activity change g_b = (1/N_out) Σ_j Σ_i ∂y_bj/∂x_bi, one value per
    /// example (the original's `compute_act_gradient`, hence "gradavg").
    Gradavg,
}

impl Measure {
    /// The three measures, in the order of the original's name list.
    pub const ALL: [Measure; 3] = [Measure::Weight, Measure::Act, Measure::Gradavg];

    /// `weight`, `act` or `gradavg`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Measure::Weight => "weight",
            Measure::Act => "act",
            Measure::Gradavg => "gradavg",
        }
    }
}

/// The elementwise transform applied before a statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transform {
    /// v = x.
    Raw,
    /// v = x².
    Sq,
    /// v = |x|.
    Abs,
}

impl Transform {
    /// The three transforms, alphabetically (the order of [`StatisticSet::All`]).
    pub const ALL: [Transform; 3] = [Transform::Abs, Transform::Raw, Transform::Sq];

    /// `raw`, `sq` or `abs`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transform::Raw => "raw",
            Transform::Sq => "sq",
            Transform::Abs => "abs",
        }
    }

    /// The transform of one value.
    #[inline]
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Transform::Raw => x,
            Transform::Sq => x * x,
            Transform::Abs => x.abs(),
        }
    }

    /// A small index (raw 0, sq 1, abs 2) for per-transform tables.
    pub(crate) const fn index(self) -> usize {
        match self {
            Transform::Raw => 0,
            Transform::Sq => 1,
            Transform::Abs => 2,
        }
    }
}

/// A summary statistic of a transformed vector v with n values (see [`crate::stats`] for the
/// exact definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Statistic {
    /// μ = (1/n) Σ v.
    Mean,
    /// TF 1.x `percentile(v, 50, interpolation='nearest')`.
    Median,
    /// ‖v‖₂.
    Norm,
    /// TF 1.x `percentile(v, 75, interpolation='nearest')`.
    ThirdQuartile,
    /// Population variance σ² = (1/n) Σ (v − μ)².
    Var,
    /// Pearson's second skewness coefficient 3(μ − median)/σ.
    Skew,
    /// Non-excess kurtosis E[(v − μ)⁴]/σ⁴.
    Kurtosis,
}

impl Statistic {
    /// The seven statistics, alphabetically (the order of [`StatisticSet::All`]).
    pub const ALL: [Statistic; 7] =
        [Statistic::Kurtosis, Statistic::Mean, Statistic::Median, Statistic::Norm, Statistic::Skew, Statistic::ThirdQuartile, Statistic::Var];

    /// `mean`, `median`, `norm`, `thirdquartile`, `var`, `skew` or `kurtosis`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Statistic::Mean => "mean",
            Statistic::Median => "median",
            Statistic::Norm => "norm",
            Statistic::ThirdQuartile => "thirdquartile",
            Statistic::Var => "var",
            Statistic::Skew => "skew",
            Statistic::Kurtosis => "kurtosis",
        }
    }
}

/// One observable of a layer. Only valid combinations exist: weights and activations take a
/// transform and a statistic, the activity change only a transform (its statistic is the
/// identity, written `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObservableName {
    /// `weight{transform}_{statistic}`.
    Weight(Transform, Statistic),
    /// `act{transform}_{statistic}`: the statistic per example, averaged over the probe batch.
    Act(Transform, Statistic),
    /// `gradavg{transform}_id`: the mean over the probe batch of the transformed g_b.
    Gradavg(Transform),
}

impl ObservableName {
    /// What is measured.
    pub const fn measure(self) -> Measure {
        match self {
            ObservableName::Weight(..) => Measure::Weight,
            ObservableName::Act(..) => Measure::Act,
            ObservableName::Gradavg(_) => Measure::Gradavg,
        }
    }

    /// The elementwise transform.
    pub const fn transform(self) -> Transform {
        match self {
            ObservableName::Weight(t, _) | ObservableName::Act(t, _) | ObservableName::Gradavg(t) => t,
        }
    }

    /// The statistic; `None` for the activity change (whose statistic is `id`).
    pub const fn statistic(self) -> Option<Statistic> {
        match self {
            ObservableName::Weight(_, s) | ObservableName::Act(_, s) => Some(s),
            ObservableName::Gradavg(_) => None,
        }
    }

    /// The statistic as written in names and in `observables.csv`: `id` for the activity
    /// change.
    pub const fn statistic_str(self) -> &'static str {
        match self.statistic() {
            Some(s) => s.as_str(),
            None => "id",
        }
    }
}

impl fmt::Display for ObservableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}_{}", self.measure().as_str(), self.transform().as_str(), self.statistic_str())
    }
}

impl FromStr for ObservableName {
    type Err = ObserveError;

    /// Parses `weightabs_median`, `actraw_norm`, `gradavgsq_id`…
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || ObserveError::UnknownObservable(s.to_string());
        let (head, statistic) = s.split_once('_').ok_or_else(unknown)?;
        let measure = Measure::ALL.into_iter().find(|m| head.starts_with(m.as_str())).ok_or_else(unknown)?;
        let transform = &head[measure.as_str().len()..];
        let transform = Transform::ALL.into_iter().find(|t| t.as_str() == transform).ok_or_else(unknown)?;
        match measure {
            Measure::Gradavg if statistic == "id" => Ok(ObservableName::Gradavg(transform)),
            Measure::Gradavg => Err(unknown()),
            _ => {
                let statistic = Statistic::ALL.into_iter().find(|x| x.as_str() == statistic).ok_or_else(unknown)?;
                Ok(if measure == Measure::Weight { ObservableName::Weight(transform, statistic) } else { ObservableName::Act(transform, statistic) })
            }
        }
    }
}

impl Serialize for ObservableName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObservableName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The original's `ADMISSIBLE_OBS['all']` ("finite across all models and tasks tested so far"),
/// in its order: 13 weight, 8 activation, 3 activity-change statistics. Every skew and
/// kurtosis, `weightsq_norm`, `weightsq_var`, all `actsq_*`, `actraw_var` and `actabs_var` are
/// left out.
pub const ADMISSIBLE: [ObservableName; 24] = {
    use ObservableName::{Act, Gradavg, Weight};
    use Statistic::{Mean, Median, Norm, ThirdQuartile, Var};
    use Transform::{Abs, Raw, Sq};
    [
        Weight(Abs, Mean),
        Weight(Abs, Median),
        Weight(Abs, Norm),
        Weight(Abs, ThirdQuartile),
        Weight(Abs, Var),
        Weight(Raw, Mean),
        Weight(Raw, Median),
        Weight(Raw, Norm),
        Weight(Raw, ThirdQuartile),
        Weight(Raw, Var),
        Weight(Sq, Mean),
        Weight(Sq, Median),
        Weight(Sq, ThirdQuartile),
        Act(Abs, Mean),
        Act(Abs, Median),
        Act(Abs, Norm),
        Act(Abs, ThirdQuartile),
        Act(Raw, Mean),
        Act(Raw, Median),
        Act(Raw, Norm),
        Act(Raw, ThirdQuartile),
        Gradavg(Abs),
        Gradavg(Raw),
        Gradavg(Sq),
    ]
};

/// Which statistics a run records (`[observe] statistics` in a run config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatisticSet {
    /// The original's 24 admissible statistics ([`ADMISSIBLE`]), in its order.
    #[default]
    Admissible,
    /// All 45: for weight then act, for each transform (abs, raw, sq), each statistic
    /// alphabetically (kurtosis, mean, median, norm, skew, thirdquartile, var); then
    /// `gradavg{abs,raw,sq}_id`. The admissible set is an order-preserving subset of it.
    All,
}

impl StatisticSet {
    /// The names, in column order.
    pub fn names(self) -> Vec<ObservableName> {
        match self {
            StatisticSet::Admissible => ADMISSIBLE.to_vec(),
            StatisticSet::All => {
                let mut names = Vec::with_capacity(45);
                for measure in [ObservableName::Weight as fn(Transform, Statistic) -> ObservableName, ObservableName::Act] {
                    for t in Transform::ALL {
                        names.extend(Statistic::ALL.into_iter().map(|s| measure(t, s)));
                    }
                }
                names.extend(Transform::ALL.into_iter().map(ObservableName::Gradavg));
                names
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMISSIBLE_LITERAL: [&str; 24] = [
        "weightabs_mean",
        "weightabs_median",
        "weightabs_norm",
        "weightabs_thirdquartile",
        "weightabs_var",
        "weightraw_mean",
        "weightraw_median",
        "weightraw_norm",
        "weightraw_thirdquartile",
        "weightraw_var",
        "weightsq_mean",
        "weightsq_median",
        "weightsq_thirdquartile",
        "actabs_mean",
        "actabs_median",
        "actabs_norm",
        "actabs_thirdquartile",
        "actraw_mean",
        "actraw_median",
        "actraw_norm",
        "actraw_thirdquartile",
        "gradavgabs_id",
        "gradavgraw_id",
        "gradavgsq_id",
    ];

    fn strings(set: StatisticSet) -> Vec<String> {
        set.names().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn admissible_is_the_original_list_in_its_order() {
        assert_eq!(strings(StatisticSet::Admissible), ADMISSIBLE_LITERAL);
    }

    #[test]
    fn all_has_45_names_in_the_documented_order() {
        let all = strings(StatisticSet::All);
        assert_eq!(all.len(), 45);
        assert_eq!(&all[..8], ["weightabs_kurtosis", "weightabs_mean", "weightabs_median", "weightabs_norm", "weightabs_skew", "weightabs_thirdquartile", "weightabs_var", "weightraw_kurtosis"]);
        assert_eq!(all[21], "actabs_kurtosis");
        assert_eq!(all[41], "actsq_var");
        assert_eq!(&all[42..], ["gradavgabs_id", "gradavgraw_id", "gradavgsq_id"]);
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 45);
    }

    #[test]
    fn admissible_is_an_order_preserving_subset_of_all() {
        let all = StatisticSet::All.names();
        let positions: Vec<usize> = ADMISSIBLE.iter().map(|a| all.iter().position(|x| x == a).expect("admissible name missing from all")).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions {positions:?}");
    }

    #[test]
    fn names_parse_back_and_bad_names_are_refused() {
        for name in StatisticSet::All.names() {
            assert_eq!(name.to_string().parse::<ObservableName>().unwrap(), name);
        }
        for bad in ["weightabs", "weightabs_id", "gradavgraw_mean", "actcube_mean", "weight_mean", "weightabs_mode", "gradavgraw_id_"] {
            assert!(bad.parse::<ObservableName>().is_err(), "{bad} parsed");
        }
        assert_eq!(ObservableName::Gradavg(Transform::Sq).statistic_str(), "id");
    }

    #[test]
    fn statistic_set_reads_snake_case_and_defaults_to_admissible() {
        #[derive(Deserialize)]
        struct Section {
            #[serde(default)]
            statistics: StatisticSet,
        }
        let all: Section = serde_json::from_str(r#"{"statistics": "all"}"#).unwrap();
        assert_eq!(all.statistics, StatisticSet::All);
        let missing: Section = serde_json::from_str("{}").unwrap();
        assert_eq!(missing.statistics, StatisticSet::Admissible);
        assert!(serde_json::from_str::<Section>(r#"{"statistics": "All"}"#).is_err());
        let name: ObservableName = serde_json::from_str(r#""actraw_norm""#).unwrap();
        assert_eq!(name, ObservableName::Act(Transform::Raw, Statistic::Norm));
    }
}
