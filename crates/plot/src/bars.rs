//! A bar chart over named categories: a histogram of object solution times (one bar per time
//! step, and one for the images never solved), counts per class.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

use crate::PlotError;
use crate::draw::{FAMILY, SIZE, TickedAxis, color, register_font, tick_label, write_atomic};

/// One bar per category, drawn by [`bar_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// The categories along x, in order.
    pub categories: Vec<String>,
    /// One non-negative, finite value per category.
    pub values: Vec<f64>,
}

/// Draws `chart` as a PNG at `path` (its folder created if missing), written atomically. No
/// category, a length mismatch or a negative or non-finite value is an error, and nothing is
/// written.
pub fn bar_chart(path: &Path, chart: &BarChart) -> Result<(), PlotError> {
    let bad = |why: String| Err(PlotError::Data(format!("{}: {why}", path.display())));
    if chart.categories.is_empty() {
        return bad("no categories to plot".into());
    }
    if chart.values.len() != chart.categories.len() {
        return bad(format!("{} values for {} categories", chart.values.len(), chart.categories.len()));
    }
    if let Some(v) = chart.values.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return bad(format!("bar value {v}: bars need finite, non-negative values"));
    }
    register_font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| PlotError::io(dir, e))?;
    }
    write_atomic(path, |tmp| draw(tmp, chart))
}

fn draw(path: &Path, chart: &BarChart) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let n = chart.categories.len();
    let top = chart.values.iter().cloned().fold(0.0, f64::max).max(1e-12) * 1.08;
    // Label every category while they fit, else about 20 of them.
    let every = n.div_ceil(20).max(1);
    let ticks: Vec<f64> = (0..n).step_by(every).map(|i| i as f64).collect();
    let label = |v: &f64| chart.categories.get(v.round() as usize).cloned().unwrap_or_default();
    let mut cc = ChartBuilder::on(&root)
        .caption(&chart.title, (FAMILY, 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(TickedAxis { linear: (-0.6..n as f64 - 0.4).into(), ticks }, 0.0..top)?;
    cc.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .x_label_formatter(&label)
        .y_label_formatter(&|v| tick_label(*v))
        .light_line_style(WHITE)
        .disable_x_mesh()
        .draw()?;
    cc.draw_series(chart.values.iter().enumerate().map(|(i, &v)| Rectangle::new([(i as f64 - 0.4, 0.0), (i as f64 + 0.4, v)], color(0).filled())))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_drawn_in_proportion_and_bad_values_refused() {
        let dir = std::env::temp_dir().join(format!("plastic-plot-bars-{}", std::process::id()));
        let path = dir.join("bars.png");
        let chart = BarChart { title: "t".into(), x_label: "step".into(), y_label: "images".into(), categories: vec!["0".into(), "1".into(), "never".into()], values: vec![2.0, 0.0, 6.0] };
        bar_chart(&path, &chart).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        let RGBColor(r, g, b) = color(0);
        // Bar pixels per column band: the third bar is three times the first's height.
        let filled = |x0: u32, x1: u32| (x0..x1).map(|x| (0..image.height()).filter(|&y| image.get_pixel(x, y).0 == [r, g, b]).count()).max().unwrap();
        let w = image.width();
        let (first, last) = (filled(0, w / 3), filled(2 * w / 3, w));
        assert!(first > 0 && (last as f64 / first as f64 - 3.0).abs() < 0.1, "{first} vs {last}");
        let e = bar_chart(&dir.join("bad.png"), &BarChart { values: vec![1.0, f64::NAN, 0.0], ..chart }).unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
        assert!(!dir.join("bad.png").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
