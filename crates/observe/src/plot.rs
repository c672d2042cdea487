//! Figures of a run's observables: one line chart per statistic, one line per layer over
//! training steps (view 0), in `<run>/plots/observables/`.

use std::path::{Path, PathBuf};

use plastic_plot::{LineChart, NamedSeries, line_chart};

use crate::error::{ObserveError, Result};
use crate::files::RunObservables;

/// Draws every statistic's trajectories of the run in `run_dir` and returns the PNG paths.
pub fn plot_observables(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let observed = RunObservables::read(run_dir)?;
    let dir = run_dir.join("plots").join("observables");
    let x: Vec<f64> = observed.points.iter().map(|p| p.step as f64).collect();
    let mut written = Vec::with_capacity(observed.obs_keys.len());
    for (s, key) in observed.obs_keys.iter().enumerate() {
        let series = (0..observed.layers.len())
            .map(|l| NamedSeries { name: observed.layers[l].clone(), y: (0..observed.points.len()).map(|p| observed.value(p, l, 0, s)).collect() })
            .collect();
        let chart = LineChart { title: format!("{key} over training ({})", observed.run), x_label: "step".into(), y_label: key.clone(), x: x.clone(), series, y_range: None };
        let path = dir.join(format!("{key}.png"));
        match line_chart(&path, &chart) {
            Ok(()) => written.push(path),
            // A statistic with no finite value (a diverged run's) has nothing to draw.
            Err(plastic_plot::PlotError::Data(_)) => {}
            Err(e) => return Err(ObserveError::Io { path, message: e.to_string() }),
        }
    }
    Ok(written)
}
