//! A generic line chart: named series of y values over shared x values (an observable's
//! trajectory per layer over training steps, an accuracy per feature set over noise levels).

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

use crate::PlotError;
use crate::draw::{Corner, FAMILY, SIZE, TickedAxis, bounds, color, draw_side_legend, freest_corner, linear_ticks, polyline_samples, register_font, side_legend_width, tick_label, write_atomic};

/// Charts with more series than this get their legend in a panel beside the plot.
const INSIDE_LEGEND_MAX: usize = 4;

/// Series with at most this many points also mark each point.
const MARK_POINTS_MAX: usize = 60;

/// One line of a [`LineChart`]: a y value for each of the chart's x values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedSeries {
    /// Its legend entry.
    pub name: String,
    /// One value per x of the chart; a non-finite value is a missing point (the line joins
    /// the points either side of it).
    pub y: Vec<f64>,
}

/// Lines over shared x values; drawn by [`line_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// The x values, shared by every series (need not be sorted: each line is drawn in x order).
    pub x: Vec<f64>,
    pub series: Vec<NamedSeries>,
    /// A fixed y range (0 to 100 for accuracies in percent); `None`: the data's, with a margin.
    pub y_range: Option<(f64, f64)>,
}

/// Draws `chart` as a PNG at `path` (its folder is created if missing), written atomically.
///
/// Up to four series get a legend box in the corner the lines leave freest, more a legend
/// beside the plot. No series, a series whose length differs from the x values', or no finite
/// point at all is an error, and nothing is written.
pub fn line_chart(path: &Path, chart: &LineChart) -> Result<(), PlotError> {
    line_chart_with_ticks(path, chart, &[])
}

/// [`line_chart`] with the x axis's ticks given as (x, label) pairs: for categories along x
/// (realism views, layer names), or round values of one's own. No ticks: plotters' round
/// values, as [`line_chart`].
pub fn line_chart_with_ticks(path: &Path, chart: &LineChart, ticks: &[(f64, String)]) -> Result<(), PlotError> {
    let bad = |why: String| Err(PlotError::Data(format!("{}: {why}", path.display())));
    if chart.series.is_empty() {
        return bad("no series to plot".into());
    }
    if let Some(s) = chart.series.iter().find(|s| s.y.len() != chart.x.len()) {
        return bad(format!("series {:?} has {} values for {} x values", s.name, s.y.len(), chart.x.len()));
    }
    let lines: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|s| {
            let mut points: Vec<(f64, f64)> = chart.x.iter().zip(&s.y).map(|(&x, &y)| (x, y)).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points
        })
        .collect();
    if lines.iter().all(Vec::is_empty) {
        return bad("no finite points to plot".into());
    }
    register_font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| PlotError::io(dir, e))?;
    }
    write_atomic(path, |tmp| draw(tmp, chart, &lines, ticks))
}

/// A range around (lo, hi) with `share` of the span added each side (or ±1 / ±10 % when the
/// values are all equal), so the outermost points' markers are not cut by the frame.
fn padded((lo, hi): (f64, f64), share: f64) -> (f64, f64) {
    let span = hi - lo;
    let pad = if span > 0.0 {
        share * span
    } else if lo != 0.0 {
        0.1 * lo.abs()
    } else {
        1.0
    };
    (lo - pad, hi + pad)
}

fn draw(path: &Path, chart: &LineChart, lines: &[Vec<(f64, f64)>], ticks: &[(f64, String)]) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let side_legend = chart.series.len() > INSIDE_LEGEND_MAX;
    let plot_area = if side_legend {
        let labels: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
        let (plot, legend) = root.split_horizontally(SIZE.0.saturating_sub(side_legend_width(&labels)));
        draw_side_legend(&legend, &labels)?;
        plot
    } else {
        root.clone()
    };
    // Named ticks are centred on their x: leave room for half a label at either end.
    let (x0, x1) = padded(bounds(lines.iter().flatten().map(|p| p.0)), if ticks.is_empty() { 0.02 } else { 0.12 });
    let (y0, y1) = chart.y_range.filter(|(a, b)| a.is_finite() && b.is_finite() && b > a).unwrap_or_else(|| padded(bounds(lines.iter().flatten().map(|p| p.1)), 0.05));
    let x_ticks: Vec<f64> = if ticks.is_empty() { linear_ticks(x0, x1) } else { ticks.iter().map(|t| t.0).collect() };
    let x_tick_label = |v: &f64| match ticks.iter().find(|t| t.0 == *v) {
        Some((_, label)) => label.clone(),
        None => tick_label(*v),
    };
    let mut cc = ChartBuilder::on(&plot_area)
        .caption(&chart.title, (FAMILY, 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(TickedAxis { linear: (x0..x1).into(), ticks: x_ticks }, y0..y1)?;
    cc.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .x_label_formatter(&x_tick_label)
        .y_label_formatter(&|v| tick_label(*v))
        .light_line_style(WHITE)
        .draw()?;
    for (i, (s, points)) in chart.series.iter().zip(lines).enumerate() {
        let style = color(i).stroke_width(2);
        let line = LineSeries::new(points.iter().copied(), style);
        let line = if points.len() <= MARK_POINTS_MAX { line.point_size(3) } else { line };
        let drawn = cc.draw_series(line)?;
        if !side_legend {
            drawn.label(s.name.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }
    if !side_legend {
        let samples = lines.iter().flat_map(|l| polyline_samples(l));
        cc.configure_series_labels()
            .position(freest_corner(Corner::UpperRight, chart.series.len(), samples, (x0, x1), (y0, y1)).position())
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .label_font((FAMILY, 15))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("plastic-plot-line-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Decodes the PNG, checks its size, and counts the pixels of each series' colour.
    fn colour_counts(path: &Path, series: usize) -> Vec<usize> {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), SIZE);
        (0..series)
            .map(|i| {
                let RGBColor(r, g, b) = color(i);
                image.pixels().filter(|p| p.0 == [r, g, b]).count()
            })
            .collect()
    }

    fn chart(series: usize, points: usize) -> LineChart {
        let x: Vec<f64> = (0..points).map(|i| i as f64 * 50.0).collect();
        LineChart {
            title: "weightabs_mean over training".into(),
            x_label: "step".into(),
            y_label: "value".into(),
            series: (0..series).map(|s| NamedSeries { name: format!("layer {s}"), y: x.iter().map(|&t| (s as f64 + 1.0) * (1.0 - (-t / 300.0).exp())).collect() }).collect(),
            x,
            y_range: None,
        }
    }

    #[test]
    fn every_series_is_drawn_in_its_colour() {
        let dir = temp_dir("few");
        let path = dir.join("nested").join("lines.png");
        line_chart(&path, &chart(3, 21)).unwrap();
        for (i, n) in colour_counts(&path, 3).into_iter().enumerate() {
            assert!(n > 300, "series {i}: {n} px");
        }
        // Many series: a side legend, still every line drawn.
        let path = dir.join("many.png");
        line_chart(&path, &chart(9, 200)).unwrap();
        for (i, n) in colour_counts(&path, 9).into_iter().enumerate() {
            assert!(n > 200, "series {i}: {n} px");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gaps_fixed_ranges_and_single_points() {
        let dir = temp_dir("edge");
        let mut c = chart(2, 5);
        c.series[0].y[2] = f64::NAN;
        c.series[1].y = vec![f64::NAN, f64::NAN, 40.0, f64::NAN, f64::NAN];
        c.y_range = Some((0.0, 100.0));
        let path = dir.join("gaps.png");
        line_chart(&path, &c).unwrap();
        let counts = colour_counts(&path, 2);
        assert!(counts[0] > 100 && counts[1] > 10, "{counts:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn categories_along_x_get_their_labels() {
        let dir = temp_dir("ticks");
        let path = dir.join("views.png");
        let mut c = chart(2, 3);
        c.x = vec![0.0, 1.0, 2.0];
        let ticks: Vec<(f64, String)> = ["all units", "25 % of units", "25 %, noise 0.5"].iter().enumerate().map(|(i, l)| (i as f64, l.to_string())).collect();
        line_chart_with_ticks(&path, &c, &ticks).unwrap();
        let counts = colour_counts(&path, 2);
        assert!(counts.iter().all(|&n| n > 200), "{counts:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_charts_are_refused() {
        let dir = temp_dir("errors");
        let path = dir.join("bad.png");
        let mut c = chart(2, 5);
        c.series[1].y.pop();
        let e = line_chart(&path, &c).unwrap_err().to_string();
        assert!(e.contains("\"layer 1\" has 4 values for 5 x values"), "{e}");
        assert!(line_chart(&path, &LineChart { series: vec![], ..chart(1, 3) }).unwrap_err().to_string().contains("no series"));
        let mut nan = chart(1, 3);
        nan.series[0].y = vec![f64::NAN; 3];
        assert!(line_chart(&path, &nan).unwrap_err().to_string().contains("no finite points"));
        assert!(!dir.exists());
    }

    #[test]
    fn padding_keeps_ranges_non_empty() {
        assert_eq!(padded((0.0, 10.0), 0.05), (-0.5, 10.5));
        assert_eq!(padded((2.0, 2.0), 0.05), (1.8, 2.2));
        assert_eq!(padded((0.0, 0.0), 0.05), (-1.0, 1.0));
    }
}
