//! PNG plots of a run, drawn from its `metrics.jsonl` into `runs/<name>/plots/`: training and
//! validation loss and accuracy, and for runs whose feedback weights B are not the forward
//! weights W, the per-layer alignment measurements (angles and norm ratio).
//!
//! Everything is read back from the metrics file rather than kept in memory during training,
//! so a finished, interrupted or resumed run can be plotted at any time, by any process.

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::{Map, Value};

use crate::PlotError;
use crate::draw::{Corner, FAMILY, SIZE, bounds, color, draw_side_legend, freest_corner, polyline_samples, register_font, side_legend_width, tick_label, write_atomic};

/// Charts with more series than this get their legend in a panel beside the plot: a box of a
/// dozen layer names over the lines would hide the lines.
const INSIDE_LEGEND_MAX: usize = 4;

/// Series with at most this many points also mark each point, so sparse ones (validation
/// every few thousand steps, a run of a single logged step) stay visible.
const MARK_POINTS_MAX: usize = 60;

/// The alignment metrics with a file each, their chart title and y-axis label.
const ALIGNMENT: [(&str, &str, &str, YAxis); 4] = [
    ("weight_angle", "Angle between feedback B and forward W", "angle (degrees)", YAxis::Degrees),
    ("grad_angle", "Angle between the error sent down through B and through W", "angle (degrees)", YAxis::Degrees),
    ("true_grad_angle", "Angle between the rule's \u{3b4}x and backprop's \u{3b4}x", "angle (degrees)", YAxis::Degrees),
    ("norm_ratio", "Norm ratio \u{2016}B\u{2016} / \u{2016}W\u{2016}", "\u{2016}B\u{2016} / \u{2016}W\u{2016}", YAxis::FromZero),
];

/// How a chart's y range is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
enum YAxis {
    /// From 0 (or the minimum, if negative) to a little above the maximum.
    FromZero,
    /// 0 to 100, so accuracy curves of different runs compare at a glance.
    Percent,
    /// 0 to 90 (the angle of unrelated vectors), or further when an angle exceeds it.
    Degrees,
}

/// One line of a chart: (step, value) points in step order.
#[derive(Debug, Clone)]
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// One PNG to draw.
#[derive(Debug, Clone)]
struct Chart {
    /// File name without `.png`.
    name: &'static str,
    title: String,
    y_label: &'static str,
    y_axis: YAxis,
    /// The steps shown: the whole run's for every chart, so that charts of one run line up.
    x_range: (f64, f64),
    /// The legend's corner when the curves leave several free: where they usually are not
    /// (loss falls, accuracy rises).
    legend: Corner,
    series: Vec<Series>,
}

/// Draws the plots of the run in `run_dir` from its `metrics.jsonl` into `<run_dir>/plots/`;
/// returns the files written.
///
/// `loss.png` and `accuracy.png` always (when the metrics have those values), and one file per
/// alignment metric that some line of the metrics has. A missing or empty metrics file is an
/// error: there is nothing to draw, and an empty plots folder would look like success.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let metrics = run_dir.join("metrics.jsonl");
    let records = read_metrics(&metrics)?;
    if records.is_empty() {
        return Err(PlotError::Data(format!("{}: no metric records to plot", metrics.display())));
    }
    let charts = charts(&records);
    if charts.is_empty() {
        return Err(PlotError::Data(format!("{}: no loss, accuracy or alignment values to plot", metrics.display())));
    }
    register_font()?;
    let plots = run_dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| PlotError::io(&plots, e))?;
    charts
        .iter()
        .map(|chart| {
            let path = plots.join(format!("{}.png", chart.name));
            write_atomic(&path, |tmp| draw(tmp, chart)).map(|()| path)
        })
        .collect()
}

/// All records of a `metrics.jsonl`: one JSON object a line, as `plastic-train`'s `MetricsLog`
/// writes them. Lines that do not parse (a line cut short by a crash) are skipped.
fn read_metrics(path: &Path) -> Result<Vec<Map<String, Value>>, PlotError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlotError::io(path, e))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter_map(|v| v.as_object().cloned()).collect())
}

/// The charts the records have data for, each with only its non-empty series.
fn charts(records: &[Map<String, Value>]) -> Vec<Chart> {
    let x_range = x_range(records.iter().filter_map(|r| r.get("step")?.as_f64()));
    let loss = Chart {
        name: "loss",
        title: "Loss".into(),
        y_label: "cross-entropy loss",
        y_axis: YAxis::FromZero,
        x_range,
        legend: Corner::UpperRight,
        series: vec![series("train", records, "loss", 1.0), series("validation", records, "val_loss", 1.0)],
    };
    let accuracy = Chart {
        name: "accuracy",
        title: "Accuracy".into(),
        y_label: "accuracy (%)",
        y_axis: YAxis::Percent,
        x_range,
        legend: Corner::LowerRight,
        series: vec![series("train", records, "accuracy", 100.0), series("validation", records, "val_accuracy", 100.0)],
    };
    let alignment = ALIGNMENT.iter().map(|&(name, title, y_label, y_axis)| Chart {
        name,
        title: title.into(),
        y_label,
        y_axis,
        x_range,
        legend: Corner::UpperRight,
        series: alignment_layers(records, name).into_iter().map(|layer| series(&layer, records, &alignment_key(&layer, name), 1.0)).collect(),
    });
    [loss, accuracy]
        .into_iter()
        .chain(alignment)
        .map(|mut chart| {
            chart.series.retain(|s| !s.points.is_empty());
            chart
        })
        .filter(|chart| !chart.series.is_empty())
        .collect()
}

/// The finite values of `key` (times `scale`) against `step`, in step order. Null (NaN) values
/// and records without the key are left out rather than drawn as gaps: the lines join the
/// measured points.
fn series(label: &str, records: &[Map<String, Value>], key: &str, scale: f64) -> Series {
    let mut points: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()? * scale)))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Series { label: label.into(), points }
}

/// The key of one layer's alignment metric, the inverse of [`split_alignment_key`].
fn alignment_key(layer: &str, metric: &str) -> String {
    format!("alignment.{layer}.{metric}")
}

/// `alignment.<layer>.<metric>` → (layer, metric). Layer names have dots of their own
/// (`group1.block0.conv1`), metric names none, so the metric is the last segment.
fn split_alignment_key(key: &str) -> Option<(&str, &str)> {
    let (layer, metric) = key.strip_prefix("alignment.")?.rsplit_once('.')?;
    (!layer.is_empty() && !metric.is_empty()).then_some((layer, metric))
}

/// The layers that have `metric` in some record, in order of first appearance (so the legend
/// order is stable from one plot of a run to the next).
fn alignment_layers(records: &[Map<String, Value>], metric: &str) -> Vec<String> {
    let mut layers: Vec<String> = Vec::new();
    for key in records.iter().flat_map(|r| r.keys()) {
        if let Some((layer, m)) = split_alignment_key(key)
            && m == metric
            && !layers.iter().any(|l| l == layer)
        {
            layers.push(layer.to_string());
        }
    }
    layers
}

/// Renders `chart` as a PNG at `path`.
fn draw(path: &Path, chart: &Chart) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let side_legend = chart.series.len() > INSIDE_LEGEND_MAX;
    let plot_area = if side_legend {
        let labels: Vec<&str> = chart.series.iter().map(|s| s.label.as_str()).collect();
        let (plot, legend) = root.split_horizontally(SIZE.0.saturating_sub(side_legend_width(&labels)));
        draw_side_legend(&legend, &labels)?;
        plot
    } else {
        root.clone()
    };
    let (x0, x1) = chart.x_range;
    let (y0, y1) = y_range(chart.y_axis, &chart.series);
    let mut cc = ChartBuilder::on(&plot_area)
        .caption(&chart.title, (FAMILY, 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    cc.configure_mesh()
        .x_desc("step")
        .y_desc(chart.y_label)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .light_line_style(WHITE)
        .draw()?;
    for (i, s) in chart.series.iter().enumerate() {
        let style = color(i).stroke_width(2);
        let line = LineSeries::new(s.points.iter().copied(), style);
        let line = if s.points.len() <= MARK_POINTS_MAX { line.point_size(3) } else { line };
        let drawn = cc.draw_series(line)?;
        if !side_legend {
            drawn.label(s.label.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }
    if !side_legend {
        cc.configure_series_labels()
            .position(legend_corner(chart.legend, &chart.series, (x0, x1), (y0, y1)).position())
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .label_font((FAMILY, 15))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The corner whose legend box would hide the least of the curves; `preferred` on a tie. Points
/// along each segment are sampled too, so a sparse series crossing a corner counts.
fn legend_corner(preferred: Corner, series: &[Series], x_range: (f64, f64), y_range: (f64, f64)) -> Corner {
    freest_corner(preferred, series.len(), series.iter().flat_map(|s| polyline_samples(&s.points)), x_range, y_range)
}

/// Steps from 0 (training starts there) to a little past the last one logged, so the last
/// point's marker is not cut in half by the frame.
fn x_range(steps: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = bounds(steps);
    let lo = lo.min(0.0);
    if hi > lo { (lo, hi + 0.02 * (hi - lo)) } else { (lo, lo + 1.0) }
}

/// The y range for `axis`, always non-empty.
fn y_range(axis: YAxis, series: &[Series]) -> (f64, f64) {
    let (lo, hi) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    match axis {
        YAxis::Percent => (lo.min(0.0), hi.max(100.0)),
        YAxis::Degrees => (lo.min(0.0), if hi > 90.0 { (hi / 5.0).ceil() * 5.0 } else { 90.0 }),
        YAxis::FromZero => {
            let lo = lo.min(0.0);
            let span = hi - lo;
            if span > 0.0 { (lo, hi + 0.05 * span) } else { (lo, lo + 1.0) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh run directory under the system temp folder, unique to this process and test.
    fn temp_run(tag: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("plastic-plot-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    fn write_metrics(dir: &Path, lines: &[String]) {
        std::fs::write(dir.join("metrics.jsonl"), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    /// Train lines every 10 steps, a validation value every 50; alignment keys when `layers`.
    fn synthetic(layers: &[&str]) -> Vec<String> {
        (1..=20)
            .map(|i| {
                let step = i * 10;
                let mut r = Map::new();
                r.insert("step".into(), step.into());
                r.insert("epoch".into(), (step as f64 / 100.0).into());
                r.insert("loss".into(), (2.3 / (1.0 + i as f64 * 0.2)).into());
                r.insert("accuracy".into(), (0.1 + 0.04 * i as f64).into());
                r.insert("lr".into(), 0.1.into());
                r.insert("images_per_second".into(), 1000.0.into());
                if step % 50 == 0 {
                    r.insert("val_loss".into(), (2.4 / (1.0 + i as f64 * 0.2)).into());
                    r.insert("val_accuracy".into(), (0.1 + 0.035 * i as f64).into());
                    r.insert("val_top5".into(), 0.9.into());
                }
                for (j, layer) in layers.iter().enumerate() {
                    let angle = 92.0 - 3.0 * i as f64 - j as f64;
                    r.insert(alignment_key(layer, "weight_angle"), if i == 3 { Value::Null } else { angle.into() });
                    r.insert(alignment_key(layer, "norm_ratio"), (1.0 + 0.01 * i as f64).into());
                    if j > 0 {
                        r.insert(alignment_key(layer, "grad_angle"), (angle - 5.0).into());
                    }
                }
                Value::Object(r).to_string()
            })
            .collect()
    }

    fn assert_png(path: &Path) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
        assert!(bytes.len() > 4096, "{} is only {} bytes", path.display(), bytes.len());
    }

    #[test]
    fn plot_run_draws_loss_and_accuracy_only_without_alignment() {
        let dir = temp_run("plain");
        write_metrics(&dir, &synthetic(&[]));
        let written = plot_run(&dir).unwrap();
        assert_eq!(written, vec![dir.join("plots").join("loss.png"), dir.join("plots").join("accuracy.png")]);
        for path in &written {
            assert_png(path);
        }
        assert!(!dir.join("plots").join("weight_angle.png").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("plots")).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
        assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plot_run_draws_one_file_per_alignment_metric_present() {
        let dir = temp_run("alignment");
        let layers = ["stem.conv", "group1.block0.conv1", "group1.block0.conv2", "group2.block0.conv1", "group2.block0.shortcut", "fc"];
        write_metrics(&dir, &synthetic(&layers));
        let written = plot_run(&dir).unwrap();
        let names: Vec<_> = written.iter().filter_map(|p| p.file_name()?.to_str()).collect();
        assert_eq!(names, ["loss.png", "accuracy.png", "weight_angle.png", "grad_angle.png", "norm_ratio.png"]);
        for path in &written {
            assert_png(path);
        }
        assert!(!dir.join("plots").join("true_grad_angle.png").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plot_run_fails_on_missing_or_empty_metrics() {
        let dir = temp_run("empty");
        let missing = plot_run(&dir).unwrap_err().to_string();
        assert!(missing.contains("metrics.jsonl") && !missing.contains('\n'), "{missing}");
        std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
        let empty = plot_run(&dir).unwrap_err().to_string();
        assert!(empty.contains("no metric records") && !empty.contains('\n'), "{empty}");
        write_metrics(&dir, &[r#"{"step": 1, "lr": 0.1}"#.into()]);
        let nothing = plot_run(&dir).unwrap_err().to_string();
        assert!(nothing.contains("no loss"), "{nothing}");
        assert!(!dir.join("plots").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn alignment_keys_split_at_the_last_dot() {
        assert_eq!(split_alignment_key("alignment.group1.block0.conv1.weight_angle"), Some(("group1.block0.conv1", "weight_angle")));
        assert_eq!(split_alignment_key("alignment.fc3.norm_ratio"), Some(("fc3", "norm_ratio")));
        assert_eq!(split_alignment_key("alignment.weight_angle"), None);
        assert_eq!(split_alignment_key("val_loss"), None);
    }

    #[test]
    fn legend_goes_to_the_freest_corner() {
        let falling = [Series { label: "a".into(), points: vec![(0.0, 10.0), (10.0, 1.0)] }];
        assert_eq!(legend_corner(Corner::UpperRight, &falling, (0.0, 10.0), (0.0, 10.0)), Corner::UpperRight);
        let flat_top = [Series { label: "a".into(), points: vec![(0.0, 9.5), (10.0, 9.5)] }];
        assert_eq!(legend_corner(Corner::UpperRight, &flat_top, (0.0, 10.0), (0.0, 10.0)), Corner::LowerRight);
    }

    #[test]
    fn null_values_are_skipped_and_ranges_stay_non_empty() {
        let records: Vec<Map<String, Value>> = [r#"{"step": 5, "loss": null}"#, r#"{"step": 6, "loss": 0.5}"#, r#"{"loss": 0.1}"#]
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok()?.as_object().cloned())
            .collect();
        let s = series("train", &records, "loss", 1.0);
        assert_eq!(s.points, vec![(6.0, 0.5)]);
        let one = [s];
        let (x0, x1) = x_range(one[0].points.iter().map(|p| p.0));
        assert!(x0 == 0.0 && (x1 - 6.12).abs() < 1e-9, "{x0}..{x1}");
        let (lo, hi) = y_range(YAxis::FromZero, &one);
        assert!(lo == 0.0 && hi > 0.5);
        assert_eq!(y_range(YAxis::Degrees, &[Series { label: "a".into(), points: vec![(1.0, 93.0)] }]), (0.0, 95.0));
        assert_eq!(y_range(YAxis::FromZero, &[]), (0.0, 1.0));
    }
}
