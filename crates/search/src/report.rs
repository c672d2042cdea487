//! What a search leaves for its user: `results.csv` (one row per trial, with its parameters and
//! whether it lies on the accuracy–size Pareto fronts), a leaderboard, and the figures of
//! validation accuracy against parameter count and against unit count with the fronts marked.

use std::path::Path;

use plastic_plot::{ScatterFigure, ScatterPoint, pareto_front, pareto_scatter};

use crate::driver::TrialRecord;
use crate::error::{Result, SearchError};
use crate::file::Search;
use crate::result::{TrialStatus, write_atomic};

/// The successful trials' (size, accuracy) points and which are on the front, per trial.
fn fronts(trials: &[TrialRecord], size: impl Fn(&TrialRecord) -> Option<usize>) -> Vec<Option<bool>> {
    let ok: Vec<(usize, (f64, f64))> = trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let r = t.result.as_ref().filter(|r| r.status == TrialStatus::Ok)?;
            Some((i, (size(t)? as f64, r.validation_accuracy?)))
        })
        .collect();
    let on = pareto_front(&ok.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    let mut out = vec![None; trials.len()];
    for ((i, _), f) in ok.iter().zip(on) {
        out[*i] = Some(f);
    }
    out
}

fn params_of(t: &TrialRecord) -> Option<usize> {
    t.result.as_ref()?.params
}
fn units_of(t: &TrialRecord) -> Option<usize> {
    t.result.as_ref()?.units
}

/// `results.csv` as bytes, with each trial's place on the two fronts.
fn results_csv(search: &Search, trials: &[TrialRecord], by_params: &[Option<bool>], by_units: &[Option<bool>]) -> Vec<u8> {
    let columns: Vec<String> = search.space.params.iter().map(|p| p.name.clone()).collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = ["trial", "status", "validation_accuracy", "test_accuracy", "params", "units", "wall_s", "pareto_params", "pareto_units"].map(String::from).to_vec();
    header.extend(columns.iter().cloned());
    header.push("error".into());
    w.write_record(&header).expect("in memory");
    let opt = |v: Option<String>| v.unwrap_or_default();
    for (i, t) in trials.iter().enumerate() {
        let r = t.result.as_ref();
        let mut row = vec![
            t.trial.to_string(),
            r.map_or("running", |r| r.status.as_str()).to_string(),
            opt(r.and_then(|r| r.validation_accuracy).map(|v| format!("{v:.6}"))),
            opt(r.and_then(|r| r.test_accuracy).map(|v| format!("{v:.6}"))),
            opt(r.and_then(|r| r.params).map(|v| v.to_string())),
            opt(r.and_then(|r| r.units).map(|v| v.to_string())),
            opt(r.and_then(|r| r.wall_s).map(|v| format!("{v:.1}"))),
            opt(by_params[i].map(|b| b.to_string())),
            opt(by_units[i].map(|b| b.to_string())),
        ];
        for c in &columns {
            row.push(t.assignment.get(c).map(value_text).unwrap_or_default());
        }
        row.push(opt(r.and_then(|r| r.error.clone())));
        w.write_record(&row).expect("in memory");
    }
    w.into_inner().expect("in memory")
}

/// A parameter value as a cell: strings without their TOML quotes.
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes `results.csv` and, once two trials succeeded, the two figures.
pub fn write(dir: &Path, search: &Search, trials: &[TrialRecord]) -> Result<()> {
    let (by_params, by_units) = (fronts(trials, params_of), fronts(trials, units_of));
    write_atomic(&dir.join("results.csv"), &results_csv(search, trials, &by_params, &by_units))?;
    for (file, label, size, fronts) in [
        ("accuracy_vs_params.png", "parameters", params_of as fn(&TrialRecord) -> Option<usize>, by_params),
        ("accuracy_vs_units.png", "units", units_of as fn(&TrialRecord) -> Option<usize>, by_units),
    ] {
        let points: Vec<ScatterPoint> = trials
            .iter()
            .zip(&fronts)
            .filter_map(|(t, f)| {
                let on_front = (*f)?;
                Some(ScatterPoint { x: size(t)? as f64, y: t.result.as_ref()?.validation_accuracy? * 100.0, on_front, label: Some(t.trial.to_string()) })
            })
            .collect();
        if points.len() < 2 {
            continue;
        }
        let figure = ScatterFigure {
            title: format!("{}: validation accuracy against {label}", search.file.name),
            x_label: label.into(),
            y_label: "validation accuracy (%)".into(),
            log_x: true,
            points,
        };
        pareto_scatter(&dir.join(file), &figure).map_err(|e| SearchError::Invalid(format!("{}: {e}", dir.join(file).display())))?;
    }
    Ok(())
}

/// The best `n` trials by validation accuracy, as printed lines.
pub fn leaderboard(search: &Search, trials: &[TrialRecord], n: usize) -> Vec<String> {
    let mut ok: Vec<&TrialRecord> = trials.iter().filter(|t| t.result.as_ref().is_some_and(|r| r.status == TrialStatus::Ok && r.validation_accuracy.is_some())).collect();
    ok.sort_by(|a, b| b.objective().partial_cmp(&a.objective()).unwrap_or(std::cmp::Ordering::Equal).then(a.trial.cmp(&b.trial)));
    let by_params = fronts(trials, params_of);
    let mut lines = vec![format!("{:>4} {:>6} {:>8} {:>8} {:>10} {:>8} {:>7}  {}", "rank", "trial", "val %", "test %", "params", "units", "wall s", "parameters (* = on the accuracy-parameters Pareto front)")];
    for (rank, t) in ok.iter().take(n).enumerate() {
        let r = t.result.as_ref().expect("finished");
        let star = if by_params[t.trial] == Some(true) { "*" } else { " " };
        let params: Vec<String> = search.space.params.iter().filter_map(|p| t.assignment.get(&p.name).map(|v| format!("{}={}", short(&p.name), value_text(v)))).collect();
        lines.push(format!(
            "{:>4} {:>5}{star} {:>8.2} {:>8} {:>10} {:>8} {:>7.0}  {}",
            rank + 1,
            t.trial,
            r.validation_accuracy.unwrap_or(0.0) * 100.0,
            r.test_accuracy.map_or("-".into(), |a| format!("{:.2}", a * 100.0)),
            r.params.map_or("-".into(), |p| p.to_string()),
            r.units.map_or("-".into(), |u| u.to_string()),
            r.wall_s.unwrap_or(0.0),
            params.join(" ")
        ));
    }
    lines
}

/// A parameter's name without the common `model.convrnn.layers.` prefix, for the leaderboard.
fn short(name: &str) -> &str {
    name.strip_prefix("model.convrnn.layers.").or_else(|| name.strip_prefix("model.convrnn.")).unwrap_or(name)
}
