//! The accuracy-vs-size figure of a search: one point per trial, the Pareto front (the trials
//! no other trial beats on both size and accuracy) highlighted and joined by its staircase.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

use crate::PlotError;
use crate::draw::{Corner, FAMILY, SIZE, TickedAxis, bounds, color, freest_corner, linear_ticks, polyline_samples, register_font, tick_label, write_atomic};

/// One trial of a [`ScatterFigure`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterPoint {
    /// The cost, smaller is better: parameters, FLOPs, seconds.
    pub x: f64,
    /// The score, larger is better: accuracy.
    pub y: f64,
    /// Drawn in the front's colour and joined to the other front points (see [`pareto_front`]).
    pub on_front: bool,
    /// Written beside the point (a trial's name). Label a few points, the front say, or the
    /// labels cover each other.
    pub label: Option<String>,
}

/// A scatter of trials with their Pareto front; drawn by [`pareto_scatter`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterFigure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// A logarithmic x axis, for costs that span orders of magnitude (parameter counts). Every
    /// x must then be positive.
    pub log_x: bool,
    pub points: Vec<ScatterPoint>,
}

/// Which of `points` (x = cost, minimised; y = score, maximised) are on the Pareto front: a
/// point is, unless another has x ≤ its x and y ≥ its y with at least one of the two strict.
///
/// So of points with equal x only the highest is on the front, of points with equal y only the
/// leftmost, and identical points are on it together (neither beats the other). A point with a
/// non-finite coordinate (a diverged trial's NaN accuracy) is never on the front and pushes no
/// other point off it.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<bool> {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let dominates = |q: &(f64, f64), p: &(f64, f64)| q.0 <= p.0 && q.1 >= p.1 && (q.0 < p.0 || q.1 > p.1);
    points.iter().map(|p| finite(p) && !points.iter().filter(|q| finite(q)).any(|q| dominates(q, p))).collect()
}

/// Draws `figure` as a PNG at `path` (its folder is created if missing), written atomically.
///
/// Every point in one colour (legend "trials"), the front points over them in another, joined
/// in x order by the staircase of the best score reached at each cost ("Pareto front").
/// Points with a non-finite coordinate are left out. No points (or none finite), or a log x
/// axis with an x ≤ 0, is an error, and nothing is written.
pub fn pareto_scatter(path: &Path, figure: &ScatterFigure) -> Result<(), PlotError> {
    let points: Vec<&ScatterPoint> = figure.points.iter().filter(|p| p.x.is_finite() && p.y.is_finite()).collect();
    if points.is_empty() {
        let why = if figure.points.is_empty() { String::new() } else { format!(" ({} given, none with finite x and y)", figure.points.len()) };
        return Err(PlotError::Data(format!("{}: no points to plot{why}", path.display())));
    }
    if figure.log_x
        && let Some(p) = points.iter().find(|p| p.x <= 0.0)
    {
        return Err(PlotError::Data(format!("{}: a log x axis needs positive x values, but a point has x = {}", path.display(), p.x)));
    }
    register_font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| PlotError::io(dir, e))?;
    }
    write_atomic(path, |tmp| draw(tmp, figure, &points))
}

/// The trials' colour, and the front's (tab10 blue and red).
const TRIAL_COLOR: usize = 0;
const FRONT_COLOR: usize = 3;

/// Renders the (finite) `points` of `figure` at `path`.
fn draw(path: &Path, figure: &ScatterFigure, points: &[&ScatterPoint]) -> Result<(), Box<dyn Error>> {
    // Everything is drawn in axis units: log10(x) on a log axis, so the chart itself is linear
    // and its ticks are chosen here.
    let u = |x: f64| if figure.log_x { x.log10() } else { x };
    let (u0, u1) = padded(bounds(points.iter().map(|p| u(p.x))), figure.log_x);
    let (y0, y1) = padded(bounds(points.iter().map(|p| p.y)), false);
    let x_ticks = if figure.log_x { log_ticks(u0, u1) } else { linear_ticks(u0, u1) };
    let x_tick_label = |v: &f64| compact(if figure.log_x { 10f64.powf(*v) } else { *v });

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut cc = ChartBuilder::on(&root)
        .caption(&figure.title, (FAMILY, 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(TickedAxis { linear: (u0..u1).into(), ticks: x_ticks }, y0..y1)?;
    cc.configure_mesh()
        .x_desc(figure.x_label.as_str())
        .y_desc(figure.y_label.as_str())
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .x_label_formatter(&x_tick_label)
        .y_label_formatter(&|v| tick_label(*v))
        .light_line_style(WHITE)
        .draw()?;

    let trial = color(TRIAL_COLOR).mix(0.7).filled();
    cc.draw_series(points.iter().map(|p| Circle::new((u(p.x), p.y), 4, trial)))?
        .label("trials")
        .legend(move |(x, y)| Circle::new((x + 12, y), 4, trial));

    let mut front: Vec<(f64, f64)> = points.iter().filter(|p| p.on_front).map(|p| (u(p.x), p.y)).collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let stairs = staircase(&front);
    if !front.is_empty() {
        let line = color(FRONT_COLOR).stroke_width(2);
        let marker = color(FRONT_COLOR).filled();
        cc.draw_series(LineSeries::new(stairs.iter().copied(), line))?;
        cc.draw_series(front.iter().map(|&p| Circle::new(p, 5, marker)))?
            .label("Pareto front")
            .legend(move |(x, y)| EmptyElement::at((x, y)) + PathElement::new(vec![(0, 0), (24, 0)], line) + Circle::new((12, 0), 5, marker));
    }

    let text = TextStyle::from((FAMILY, 12).into_font()).color(&RGBColor(60, 60, 60));
    for p in points {
        if let Some(label) = &p.label {
            cc.draw_series(std::iter::once(EmptyElement::at((u(p.x), p.y)) + Text::new(label.clone(), (7, -15), text.clone())))?;
        }
    }

    // The front rises to the right, so above its left end (better and smaller than any trial)
    // is usually empty.
    let rows = if front.is_empty() { 1 } else { 2 };
    let samples = points.iter().map(|p| (u(p.x), p.y)).chain(polyline_samples(&stairs));
    cc.configure_series_labels()
        .position(freest_corner(Corner::UpperLeft, rows, samples, (u0, u1), (y0, y1)).position())
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FAMILY, 15))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The front's staircase through `front` (sorted by x): from each point level to the next
/// point's x, then up to it, so the line at any x is the best score reached at that cost.
fn staircase(front: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut path: Vec<(f64, f64)> = front.first().copied().into_iter().collect();
    for pair in front.windows(2) {
        path.push((pair[1].0, pair[0].1));
        path.push(pair[1]);
    }
    path
}

/// An axis range around (lo, hi) with a margin so markers at the edges are not cut: 5 % of the
/// span each side, or, when every value is equal, half a decade on a log axis and 10 % of the
/// value (1 around zero) on a linear one.
fn padded((lo, hi): (f64, f64), log: bool) -> (f64, f64) {
    let span = hi - lo;
    let pad = if span > 0.0 {
        0.05 * span
    } else if log {
        0.5
    } else if lo != 0.0 {
        0.1 * lo.abs()
    } else {
        1.0
    };
    (lo - pad, hi + pad)
}

/// Ticks of a log axis whose range is `lo..hi` in decades (log10 units): the powers of ten in
/// it, or 1-2-5 steps, or every 1…9 × 10ᵏ, whichever is the coarsest giving at least three
/// ticks (thinned to at most a dozen); within a fraction of a decade, round linear values.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    const MANTISSAS: [&[f64]; 3] = [&[1.0], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]];
    let decades = lo.floor() as i32..=hi.ceil() as i32;
    for mantissas in MANTISSAS {
        let ticks: Vec<f64> = decades.clone().flat_map(|k| mantissas.iter().map(move |m| k as f64 + m.log10())).filter(|t| (lo..=hi).contains(t)).collect();
        if ticks.len() >= 3 {
            let every = ticks.len().div_ceil(12);
            return ticks.into_iter().step_by(every).collect();
        }
    }
    linear_ticks(10f64.powf(lo), 10f64.powf(hi)).into_iter().filter(|&v| v > 0.0).map(f64::log10).collect()
}

/// A tick value in at most three significant digits with an SI suffix from a thousand on:
/// "500", "20k", "1.5M", "0.25".
fn compact(v: f64) -> String {
    let (scale, suffix) = match v.abs() {
        a if a >= 1e9 => (1e9, "G"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    format!("{}{suffix}", tick_label(significant(v / scale, 3)))
}

/// `v` rounded to `digits` significant digits (hides 199.99999 from 10^log10(200)).
fn significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let m = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * m).round() / m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("plastic-plot-scatter-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn figure(points: &[(f64, f64)], log_x: bool) -> ScatterFigure {
        let front = pareto_front(points);
        ScatterFigure {
            title: "Accuracy against size".into(),
            x_label: "parameters".into(),
            y_label: "validation accuracy".into(),
            log_x,
            points: points.iter().zip(front).enumerate().map(|(i, (&(x, y), on_front))| ScatterPoint { x, y, on_front, label: on_front.then(|| format!("trial-{i}")) }).collect(),
        }
    }

    /// Decodes the PNG at `path`, checks its size, and counts the pixels of the front's colour.
    fn decode(path: &Path) -> usize {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
        let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), SIZE);
        let RGBColor(r, g, b) = color(FRONT_COLOR);
        image.pixels().filter(|p| p.0 == [r, g, b]).count()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect()
    }

    /// Size against accuracy of a dozen made-up trials over three decades of parameters.
    const TRIALS: [(f64, f64); 12] = [
        (1.2e4, 0.81),
        (2.5e4, 0.86),
        (4.0e4, 0.84),
        (9.0e4, 0.90),
        (1.5e5, 0.89),
        (3.0e5, 0.93),
        (3.0e5, 0.91),
        (6.0e5, 0.92),
        (1.1e6, 0.95),
        (2.0e6, 0.94),
        (5.0e6, 0.955),
        (9.0e6, 0.95),
    ];

    #[test]
    fn pareto_front_by_hand() {
        // (3, 0.6) is beaten by (2, 0.7): smaller and better.
        assert_eq!(pareto_front(&[(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (0.5, 0.4)]), [true, true, false, true]);
        let front = pareto_front(&TRIALS);
        let on: Vec<(f64, f64)> = TRIALS.iter().zip(&front).filter(|(_, f)| **f).map(|(p, _)| *p).collect();
        assert_eq!(on, [(1.2e4, 0.81), (2.5e4, 0.86), (9.0e4, 0.90), (3.0e5, 0.93), (1.1e6, 0.95), (5.0e6, 0.955)]);
    }

    #[test]
    fn pareto_front_ties_duplicates_and_single_points() {
        // Equal x: only the higher y. Equal y: only the smaller x.
        assert_eq!(pareto_front(&[(1.0, 0.5), (1.0, 0.6)]), [false, true]);
        assert_eq!(pareto_front(&[(2.0, 0.6), (1.0, 0.6)]), [false, true]);
        // Identical points: neither beats the other.
        assert_eq!(pareto_front(&[(1.0, 0.6), (1.0, 0.6), (2.0, 0.5)]), [true, true, false]);
        assert_eq!(pareto_front(&[(3.0, 0.1)]), [true]);
        assert_eq!(pareto_front(&[]), Vec::<bool>::new());
        // A non-finite point is never on the front and beats nothing, not even from x = -∞.
        assert_eq!(pareto_front(&[(1.0, f64::NAN), (2.0, 0.5), (f64::NEG_INFINITY, 0.9)]), [false, true, false]);
    }

    #[test]
    fn scatter_writes_a_png_with_the_front_in_its_colour() {
        let dir = temp_dir("normal");
        let path = dir.join("nested").join("pareto.png");
        pareto_scatter(&path, &figure(&TRIALS, false)).unwrap();
        assert!(decode(&path) > 200, "no front drawn");
        assert!(leftovers(path.parent().unwrap()).is_empty());

        // The same trials with no front marked: nothing in the front's colour.
        let mut plain = figure(&TRIALS, false);
        plain.points.iter_mut().for_each(|p| p.on_front = false);
        let plain_path = dir.join("plain.png");
        pareto_scatter(&plain_path, &plain).unwrap();
        assert_eq!(decode(&plain_path), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scatter_on_a_log_axis() {
        let dir = temp_dir("log");
        let path = dir.join("pareto.png");
        pareto_scatter(&path, &figure(&TRIALS, true)).unwrap();
        assert!(decode(&path) > 200);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scatter_of_one_point_or_equal_x() {
        let dir = temp_dir("degenerate");
        for (name, points, log_x) in [
            ("one.png", &[(5.0e4, 0.9)][..], false),
            ("one-log.png", &[(5.0e4, 0.9)][..], true),
            ("equal-x.png", &[(1.0e5, 0.9), (1.0e5, 0.8), (1.0e5, 0.85)][..], true),
            ("all-equal.png", &[(0.0, 0.0), (0.0, 0.0)][..], false),
        ] {
            let path = dir.join(name);
            pareto_scatter(&path, &figure(points, log_x)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(decode(&path) > 20, "{name}: front point not drawn");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scatter_refuses_empty_sets_and_non_positive_log_x() {
        let dir = temp_dir("errors");
        let path = dir.join("pareto.png");
        let empty = pareto_scatter(&path, &figure(&[], false)).unwrap_err().to_string();
        assert!(empty.contains("no points to plot") && !empty.contains('\n'), "{empty}");
        let nan = pareto_scatter(&path, &figure(&[(1.0, f64::NAN)], false)).unwrap_err().to_string();
        assert!(nan.contains("none with finite x and y"), "{nan}");
        let zero = pareto_scatter(&path, &figure(&[(0.0, 0.5), (10.0, 0.7)], true)).unwrap_err().to_string();
        assert!(zero.contains("positive x") && zero.contains("x = 0"), "{zero}");
        assert!(!dir.exists(), "nothing is written on an error");
        // A non-finite point among finite ones is left out, not an error.
        pareto_scatter(&path, &figure(&[(1.0, f64::NAN), (2.0, 0.5)], false)).unwrap();
        assert!(decode(&path) > 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_staircase_runs_level_then_up() {
        assert_eq!(staircase(&[(1.0, 0.5), (2.0, 0.7), (4.0, 0.8)]), [(1.0, 0.5), (2.0, 0.5), (2.0, 0.7), (4.0, 0.7), (4.0, 0.8)]);
        assert_eq!(staircase(&[(1.0, 0.5)]), [(1.0, 0.5)]);
        assert!(staircase(&[]).is_empty());
    }

    #[test]
    fn log_ticks_are_round_values() {
        let labels = |lo: f64, hi: f64| log_ticks(lo.log10(), hi.log10()).into_iter().map(|t| compact(10f64.powf(t))).collect::<Vec<_>>();
        assert_eq!(labels(9e3, 1.1e6), ["10k", "100k", "1M"]);
        assert_eq!(labels(9e3, 1.1e5), ["10k", "20k", "50k", "100k"]);
        assert_eq!(labels(150.0, 450.0), ["200", "300", "400"]);
        // Within one 1…9 step: plotters' linear round values.
        assert_eq!(labels(210.0, 290.0), ["210", "220", "230", "240", "250", "260", "270", "280", "290"]);
        // Thirty decades: thinned to a dozen at most.
        assert!(log_ticks(0.0, 30.0).len() <= 12);
    }

    #[test]
    fn compact_labels() {
        assert_eq!(compact(2.0e5), "200k");
        assert_eq!(compact(1.5e6), "1.5M");
        assert_eq!(compact(10f64.powf(200f64.log10())), "200");
        assert_eq!(compact(3.0e9), "3G");
        assert_eq!(compact(0.25), "0.25");
        assert_eq!(compact(0.0), "0");
    }

    #[test]
    fn padding_keeps_ranges_non_empty() {
        assert_eq!(padded((0.0, 10.0), false), (-0.5, 10.5));
        assert_eq!(padded((5.0, 5.0), true), (4.5, 5.5));
        assert_eq!(padded((2.0, 2.0), false), (1.8, 2.2));
        assert_eq!(padded((0.0, 0.0), false), (-1.0, 1.0));
    }
}
