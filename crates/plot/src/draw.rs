//! What every figure shares: the bundled font, the image size, the colours, tick labels, the
//! choice of a legend corner and the atomic write.

use std::error::Error;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::PlotError;

/// The font of every label. plotters' ab_glyph text backend has no system font lookup (and the
/// machines runs are plotted on may have no fonts installed), so the font ships with the crate.
/// Licence: `assets/DejaVuSans-LICENSE.txt`.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The family name plotters asks for by default (`("sans-serif", size)` styles, tick labels).
pub(crate) const FAMILY: &str = "sans-serif";

/// Image size in pixels.
pub(crate) const SIZE: (u32, u32) = (900, 600);

/// Line colours: matplotlib's `tab10`, so the first series look familiar, then darker tones
/// (from `tab20b`/`tab20c`) that still stand out on white; beyond these, plotters' palette.
const COLORS: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(57, 59, 121),
    RGBColor(99, 121, 57),
    RGBColor(140, 109, 49),
    RGBColor(132, 60, 57),
    RGBColor(123, 65, 115),
    RGBColor(49, 130, 189),
    RGBColor(230, 85, 13),
    RGBColor(49, 163, 84),
    RGBColor(117, 107, 177),
    RGBColor(99, 99, 99),
];

/// The colour of the `i`-th series.
pub(crate) fn color(i: usize) -> RGBColor {
    COLORS.get(i).copied().unwrap_or_else(|| {
        let RGBAColor(r, g, b, _) = Palette99::pick(i).to_rgba();
        RGBColor(r, g, b)
    })
}

/// Registers the bundled font once per process (plotters keeps fonts in a global table).
pub(crate) fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(PlotError::Font("the bundled plot font (DejaVuSans.ttf) does not load".into()))
    }
}

/// Draws with `draw` to a temporary file beside `path`, then renames it over `path`: a reader
/// (or a crash mid-draw) never sees half a PNG.
pub(crate) fn write_atomic(path: &Path, draw: impl FnOnce(&Path) -> Result<(), Box<dyn Error>>) -> Result<(), PlotError> {
    let tmp = temp_path(path);
    let result = draw(&tmp)
        .map_err(|e| PlotError::io(path, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| PlotError::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A hidden name in the same folder (so the rename stays on one file system), unique within
/// the process, and ending in `.png` because the encoder picks the format from the extension.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plot");
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{stem}.tmp-{}-{n}.png", std::process::id()))
}

/// A corner of the plot, for the legend box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Corner {
    UpperRight,
    LowerRight,
    UpperLeft,
    LowerLeft,
}

impl Corner {
    const ALL: [Corner; 4] = [Corner::UpperRight, Corner::LowerRight, Corner::UpperLeft, Corner::LowerLeft];

    pub(crate) fn position(self) -> SeriesLabelPosition {
        match self {
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
        }
    }

    /// Whether the point (as fractions 0..1 of the plot's width and height, y up) lies in the
    /// box of `w` × `h` in this corner.
    fn covers(self, (fx, fy): (f64, f64), w: f64, h: f64) -> bool {
        let right = matches!(self, Corner::UpperRight | Corner::LowerRight);
        let upper = matches!(self, Corner::UpperRight | Corner::UpperLeft);
        (if right { fx >= 1.0 - w } else { fx <= w }) && (if upper { fy >= 1.0 - h } else { fy <= h })
    }
}

/// The corner whose legend box of `rows` entries would hide the fewest of `samples` (points in
/// data coordinates within the ranges); `preferred` on a tie.
pub(crate) fn freest_corner(preferred: Corner, rows: usize, samples: impl Iterator<Item = (f64, f64)>, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> Corner {
    // The box's share of the plot: about a third of its width, and a row of ~22 px per entry
    // of its ~480 px height.
    let w = 0.33;
    let h = ((rows as f64 * 22.0 + 20.0) / 480.0).min(1.0);
    let samples: Vec<(f64, f64)> = samples.map(|(x, y)| ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0))).collect();
    let hidden = |c: Corner| samples.iter().filter(|&&p| c.covers(p, w, h)).count();
    std::iter::once(preferred).chain(Corner::ALL).min_by_key(|&c| hidden(c)).unwrap_or(preferred)
}

/// Points along the polyline through `points`, its vertices included, so a sparse line
/// crossing a corner counts for [`freest_corner`].
pub(crate) fn polyline_samples(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    let segments = points.windows(2).flat_map(|p| (1..8).map(move |k| lerp(p[0], p[1], k as f64 / 8.0)));
    points.iter().copied().chain(segments)
}

fn lerp(a: (f64, f64), b: (f64, f64), t: f64) -> (f64, f64) {
    (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
}

/// Width of a side legend panel: room for the longest label (about 8 px a character at the
/// legend's font size), within bounds that leave the plot most of the image.
pub(crate) fn side_legend_width(labels: &[&str]) -> u32 {
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    (50 + 8 * longest).clamp(120, SIZE.0 / 3)
}

/// A legend beside the plot: one row per label in the series' colour, rows shrinking (with
/// the font) when there are more labels than fit at full size. For charts with more series
/// than a box over the lines could hold without hiding them.
pub(crate) fn draw_side_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, labels: &[&str]) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    const TOP: i32 = 60;
    let (_, height) = area.dim_in_pixel();
    let available = (height as i32 - TOP - 10).max(1);
    let row = (available / labels.len().max(1) as i32).clamp(6, 22);
    let font_size = (row - 4).clamp(6, 15);
    let style = TextStyle::from((FAMILY, font_size).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, label) in labels.iter().enumerate() {
        let y = TOP + i as i32 * row;
        area.draw(&PathElement::new(vec![(6, y), (30, y)], color(i).stroke_width(2)))?;
        area.draw(&Text::new(*label, (36, y), style.clone()))?;
    }
    Ok(())
}

/// A linear f64 axis with the ticks given (plotters' `with_key_points` loses the formatter).
pub(crate) struct TickedAxis {
    pub(crate) linear: RangedCoordf64,
    pub(crate) ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    /// The ticks as the bold points; no light (minor) lines.
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}

/// Ticks of a linear axis: plotters' own round values.
pub(crate) fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    RangedCoordf64::from(lo..hi).key_points(10usize)
}

/// A tick value without trailing zeros ("200", not "200.0"; "0.25"), at most four decimals,
/// which also hides float noise such as 0.30000000000000004.
pub(crate) fn tick_label(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// (min, max) of finite values; (0, 0) when there are none.
pub(crate) fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v)))))
        .unwrap_or((0.0, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_drop_trailing_zeros() {
        assert_eq!(tick_label(200.0), "200");
        assert_eq!(tick_label(0.1 + 0.2), "0.3");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(-0.00001), "0");
    }

    #[test]
    fn a_failed_draw_leaves_neither_the_file_nor_a_temporary() {
        let dir = std::env::temp_dir().join(format!("plastic-plot-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fig.png");
        let err = write_atomic(&path, |tmp| {
            std::fs::write(tmp, b"half a png")?;
            Err("the backend gave up".into())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("fig.png") && err.contains("the backend gave up"), "{err}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "files left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
