//! PNG figures for plastic, from plain data: a run's training curves read back from its
//! `metrics.jsonl` ([`plot_run`]), the accuracy-vs-size scatter of a search with its Pareto
//! front marked ([`pareto_scatter`], [`pareto_front`]), a labelled heat map such as a confusion
//! matrix ([`heat_map`], [`HeatMap::confusion`]) and a generic multi-series line chart
//! ([`line_chart`]).
//!
//! No burn and no other plastic crate: anything that has numbers can draw them, and building
//! this crate takes seconds. Every PNG is written to a temporary file and renamed into place, so
//! a reader never sees half an image.
//!
//! ```no_run
//! use plastic_plot::{ScatterFigure, ScatterPoint, pareto_front, pareto_scatter};
//!
//! // (parameters, accuracy) of four trials.
//! let trials = [(1.2e4, 0.91), (8.0e4, 0.95), (3.0e5, 0.94), (9.0e5, 0.97)];
//! let front = pareto_front(&trials);
//! let figure = ScatterFigure {
//!     title: "Accuracy against size".into(),
//!     x_label: "parameters".into(),
//!     y_label: "validation accuracy".into(),
//!     log_x: true,
//!     points: trials.iter().zip(front).map(|(&(x, y), on_front)| ScatterPoint { x, y, on_front, label: None }).collect(),
//! };
//! pareto_scatter("search/pareto.png".as_ref(), &figure).unwrap();
//!
//! for png in plastic_plot::plot_run("runs/quickstart".as_ref()).unwrap() {
//!     println!("{}", png.display());
//! }
//! ```

mod bars;
mod draw;
mod heatmap;
mod line;
mod run;
mod scatter;

pub use bars::{BarChart, bar_chart};
pub use heatmap::{HeatMap, heat_map};
pub use line::{LineChart, NamedSeries, line_chart, line_chart_with_ticks};
pub use run::plot_run;
pub use scatter::{ScatterFigure, ScatterPoint, pareto_front, pareto_scatter};

/// Why a figure was not drawn. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Reading the input or writing the PNG failed.
    #[error("{path}: {message}")]
    Io { path: std::path::PathBuf, message: String },
    /// Nothing to draw (no records, no points), or values the figure cannot show.
    #[error("{0}")]
    Data(String),
    /// The bundled font did not load.
    #[error("{0}")]
    Font(String),
}

impl PlotError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, e: impl std::fmt::Display) -> Self {
        PlotError::Io { path: path.into(), message: e.to_string() }
    }
}
