//! A labelled heat map: a matrix of coloured cells with a text in each, names along both axes
//! and a colour bar. A confusion matrix is one ([`HeatMap::confusion`]): rows are the true
//! classes, columns the predicted ones, each cell its count and its share of the row.

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontTransform;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::PlotError;
use crate::draw::{FAMILY, register_font, tick_label, write_atomic};

/// A matrix to draw as coloured cells; drawn by [`heat_map`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    pub title: String,
    /// Written under the column names ("predicted").
    pub x_label: String,
    /// Written beside the row names ("true").
    pub y_label: String,
    /// One name per row, top to bottom.
    pub row_names: Vec<String>,
    /// One name per column, left to right.
    pub col_names: Vec<String>,
    /// `[rows][cols]`; the colour of each cell. A non-finite value is drawn grey.
    pub values: Vec<Vec<f64>>,
    /// `[rows][cols]` texts written in the cells (lines split at `\n`); `None` writes each
    /// value with up to four decimals.
    pub cell_text: Option<Vec<Vec<String>>>,
    /// The values mapped to the lightest and the darkest colour; `None`: the finite values'
    /// minimum and maximum.
    pub range: Option<(f64, f64)>,
}

impl HeatMap {
    /// A confusion matrix: `counts[true][predicted]` over `classes`, each cell coloured by its
    /// share of its row (so classes with fewer samples read the same) and labelled with the
    /// count and that share in percent.
    pub fn confusion(title: impl Into<String>, classes: &[String], counts: &[Vec<u64>]) -> HeatMap {
        let shares: Vec<Vec<f64>> = counts
            .iter()
            .map(|row| {
                let total: u64 = row.iter().sum();
                row.iter().map(|&c| if total == 0 { 0.0 } else { c as f64 / total as f64 }).collect()
            })
            .collect();
        let text = counts.iter().zip(&shares).map(|(row, share)| row.iter().zip(share).map(|(c, s)| format!("{c}\n{:.0}%", 100.0 * s)).collect()).collect();
        HeatMap {
            title: title.into(),
            x_label: "predicted class".into(),
            y_label: "true class".into(),
            row_names: classes.to_vec(),
            col_names: classes.to_vec(),
            values: shares,
            cell_text: Some(text),
            range: Some((0.0, 1.0)),
        }
    }
}

/// Size of a heat map image: about square, so square matrices get square cells.
pub(crate) const HEAT_SIZE: (u32, u32) = (900, 760);

/// Draws `map` as a PNG at `path` (its folder is created if missing), written atomically.
///
/// An empty matrix, rows of different lengths, or names that do not match the matrix's shape
/// are an error, and nothing is written.
pub fn heat_map(path: &Path, map: &HeatMap) -> Result<(), PlotError> {
    let rows = map.values.len();
    let cols = map.values.first().map_or(0, Vec::len);
    let bad = |why: String| Err(PlotError::Data(format!("{}: {why}", path.display())));
    if rows == 0 || cols == 0 {
        return bad("an empty matrix".into());
    }
    if let Some(r) = map.values.iter().position(|r| r.len() != cols) {
        return bad(format!("row {r} has {} values, row 0 has {cols}", map.values[r].len()));
    }
    if map.row_names.len() != rows || map.col_names.len() != cols {
        return bad(format!("{} row and {} column names for a {rows} × {cols} matrix", map.row_names.len(), map.col_names.len()));
    }
    if let Some(text) = &map.cell_text
        && (text.len() != rows || text.iter().any(|r| r.len() != cols))
    {
        return bad(format!("the cell texts are not {rows} × {cols}"));
    }
    register_font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| PlotError::io(dir, e))?;
    }
    write_atomic(path, |tmp| draw(tmp, map))
}

/// The colour of `t` in 0..1 on a white → blue scale (matplotlib's "Blues" end points and middle).
pub(crate) fn blues(t: f64) -> RGBColor {
    if !t.is_finite() {
        return RGBColor(220, 220, 220);
    }
    const STOPS: [(f64, (f64, f64, f64)); 3] = [(0.0, (247.0, 251.0, 255.0)), (0.5, (107.0, 174.0, 214.0)), (1.0, (8.0, 48.0, 107.0))];
    let t = t.clamp(0.0, 1.0);
    let (lo, hi) = if t <= 0.5 { (STOPS[0], STOPS[1]) } else { (STOPS[1], STOPS[2]) };
    let f = (t - lo.0) / (hi.0 - lo.0);
    let mix = |a: f64, b: f64| (a + f * (b - a)).round() as u8;
    RGBColor(mix(lo.1.0, hi.1.0), mix(lo.1.1, hi.1.1), mix(lo.1.2, hi.1.2))
}

/// Whether text on `c` should be white (the cell is dark) rather than black.
fn dark(c: RGBColor) -> bool {
    0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64 <= 140.0
}

fn draw(path: &Path, map: &HeatMap) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, HEAT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (w, h) = (HEAT_SIZE.0 as i32, HEAT_SIZE.1 as i32);
    let rows = map.values.len();
    let cols = map.values[0].len();
    let (v0, v1) = map.range.unwrap_or_else(|| crate::draw::bounds(map.values.iter().flatten().copied()));
    let scale = |v: f64| if v1 > v0 { (v - v0) / (v1 - v0) } else { 0.5 };

    // Title, then the axes' names, then the class names: measure before placing the matrix.
    let title = TextStyle::from((FAMILY, 24).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(map.title.as_str(), (w / 2, 12), title))?;
    let name_font = 15;
    let name_style = TextStyle::from((FAMILY, name_font).into_font());
    let widest = |names: &[String]| names.iter().map(|n| root.estimate_text_size(n, &name_style).map(|s| s.0 as i32).unwrap_or(0)).max().unwrap_or(0);
    let row_names_w = widest(&map.row_names).min(w / 4);
    let col_names_w = widest(&map.col_names);
    let (top, axis_desc, bar) = (50, 30, 80);
    let left = axis_desc + row_names_w + 12;
    let right = w - bar;
    // Column names lie flat if they fit a column, else they stand upright.
    let flat = col_names_w + 6 <= (right - left) / cols as i32;
    let col_names_h = if flat { name_font + 8 } else { col_names_w.min(h / 4) + 10 };
    let bottom = h - axis_desc - col_names_h - 6;
    let cell = ((right - left) / cols as i32).min((bottom - top) / rows as i32).max(4);
    let (mx, my) = (left + (right - left - cell * cols as i32) / 2, top + (bottom - top - cell * rows as i32) / 2);

    for (r, row) in map.values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let (x, y) = (mx + c as i32 * cell, my + r as i32 * cell);
            let color = blues(scale(v));
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], color.filled()))?;
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], WHITE.stroke_width(1)))?;
            let text = match &map.cell_text {
                Some(t) => t[r][c].clone(),
                None => tick_label(v),
            };
            cell_label(&root, &text, (x + cell / 2, y + cell / 2), cell, if dark(color) { WHITE } else { BLACK })?;
        }
    }

    let row_style = name_style.clone().pos(Pos::new(HPos::Right, VPos::Center));
    for (r, name) in map.row_names.iter().enumerate() {
        root.draw(&Text::new(name.as_str(), (mx - 8, my + r as i32 * cell + cell / 2), row_style.clone()))?;
    }
    let col_style = if flat { name_style.clone().pos(Pos::new(HPos::Center, VPos::Top)) } else { name_style.clone().transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center)) };
    let names_top = my + rows as i32 * cell + 6;
    for (c, name) in map.col_names.iter().enumerate() {
        root.draw(&Text::new(name.as_str(), (mx + c as i32 * cell + cell / 2, names_top), col_style.clone()))?;
    }
    let desc = TextStyle::from((FAMILY, 16).into_font());
    let grid_w = cell * cols as i32;
    let grid_h = cell * rows as i32;
    root.draw(&Text::new(map.x_label.as_str(), (mx + grid_w / 2, names_top + col_names_h + 4), desc.clone().pos(Pos::new(HPos::Center, VPos::Top))))?;
    root.draw(&Text::new(map.y_label.as_str(), (8, my + grid_h / 2), desc.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Center, VPos::Top))))?;

    colour_bar(&root, (mx + grid_w + 24, my), grid_h, (v0, v1))?;
    root.present()?;
    Ok(())
}

/// The text of one cell, its lines centred on `centre`, in a font that fits the cell.
fn cell_label<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str, centre: (i32, i32), cell: i32, color: RGBColor) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return Ok(());
    }
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(1).max(1) as i32;
    // About 0.6 em a character; lines 1.2 em apart.
    let size = (cell * 10 / (6 * longest + 4)).min(cell * 10 / (12 * lines.len() as i32 + 4)).min(20);
    if size < 7 {
        return Ok(());
    }
    let style = TextStyle::from((FAMILY, size).into_font()).color(&color).pos(Pos::new(HPos::Center, VPos::Center));
    let step = size * 6 / 5;
    let first = centre.1 - step * (lines.len() as i32 - 1) / 2;
    for (i, line) in lines.iter().enumerate() {
        area.draw(&Text::new(*line, (centre.0, first + i as i32 * step), style.clone()))?;
    }
    Ok(())
}

/// A vertical bar from `v0` (bottom) to `v1` (top) with three labelled ticks.
fn colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, (x, y): (i32, i32), height: i32, (v0, v1): (f64, f64)) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let width = 16;
    let height = height.max(20);
    for i in 0..height {
        let t = 1.0 - i as f64 / (height - 1) as f64;
        area.draw(&PathElement::new(vec![(x, y + i), (x + width, y + i)], blues(t)))?;
    }
    area.draw(&Rectangle::new([(x, y), (x + width, y + height)], RGBColor(120, 120, 120)))?;
    let style = TextStyle::from((FAMILY, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (t, v) in [(0.0, v0), (0.5, 0.5 * (v0 + v1)), (1.0, v1)] {
        let ty = y + ((1.0 - t) * (height - 1) as f64).round() as i32;
        area.draw(&PathElement::new(vec![(x + width, ty), (x + width + 4, ty)], BLACK))?;
        area.draw(&Text::new(tick_label(v), (x + width + 7, ty), style.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("plastic-plot-heat-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn decode(path: &Path) -> image::RgbImage {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), HEAT_SIZE);
        image
    }

    fn count(image: &image::RgbImage, c: RGBColor) -> usize {
        image.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count()
    }

    #[test]
    fn confusion_cells_are_row_shares_with_counts_and_percent() {
        let classes: Vec<String> = ["backprop", "feedback_alignment", "kolen_pollack"].iter().map(|s| s.to_string()).collect();
        let map = HeatMap::confusion("Forest, all statistics", &classes, &[vec![8, 2, 0], vec![1, 9, 0], vec![0, 0, 0]]);
        assert_eq!(map.values[0], [0.8, 0.2, 0.0]);
        assert_eq!(map.values[2], [0.0, 0.0, 0.0], "an empty row is all zero, not NaN");
        assert_eq!(map.cell_text.as_ref().unwrap()[1][1], "9\n90%");
        assert_eq!(map.range, Some((0.0, 1.0)));
    }

    #[test]
    fn heat_map_draws_each_cell_in_its_colour() {
        let dir = temp_dir("draw");
        let path = dir.join("nested").join("confusion.png");
        let classes: Vec<String> = ["adam", "sgd", "a class with a long name"].iter().map(|s| s.to_string()).collect();
        // Diagonal 100 %: the darkest blue; off-diagonal 0 %: the lightest.
        let map = HeatMap::confusion("Confusion", &classes, &[vec![5, 0, 0], vec![0, 5, 0], vec![0, 0, 5]]);
        heat_map(&path, &map).unwrap();
        let image = decode(&path);
        let (darkest, lightest) = (count(&image, blues(1.0)), count(&image, blues(0.0)));
        assert!(darkest > 3 * 1000, "three dark cells expected, {darkest} px");
        assert!(lightest > 6 * 1000, "six light cells expected, {lightest} px");
        // White text on the dark cells, black names and labels elsewhere.
        assert!(count(&image, RGBColor(0, 0, 0)) > 100);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
        assert!(leftovers.is_empty());

        // A plain matrix of values with its own range, many columns (upright names).
        let many = HeatMap {
            title: "Values".into(),
            x_label: "column".into(),
            y_label: "row".into(),
            row_names: vec!["a".into(), "b".into()],
            col_names: (0..12).map(|i| format!("column number {i}")).collect(),
            values: vec![(0..12).map(f64::from).collect(), vec![f64::NAN; 12]],
            cell_text: None,
            range: None,
        };
        let path = dir.join("values.png");
        heat_map(&path, &many).unwrap();
        let image = decode(&path);
        assert!(count(&image, blues(f64::NAN)) > 12 * 100, "NaN cells are grey");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn heat_map_refuses_bad_shapes() {
        let dir = temp_dir("errors");
        let path = dir.join("bad.png");
        let mut map = HeatMap::confusion("x", &["a".to_string(), "b".to_string()], &[vec![1, 0], vec![0, 1]]);
        map.row_names.pop();
        let e = heat_map(&path, &map).unwrap_err().to_string();
        assert!(e.contains("1 row and 2 column names"), "{e}");
        map.values = vec![];
        assert!(heat_map(&path, &map).unwrap_err().to_string().contains("empty"));
        let ragged = HeatMap { values: vec![vec![1.0, 2.0], vec![1.0]], row_names: vec!["a".into(), "b".into()], ..map };
        assert!(heat_map(&path, &ragged).unwrap_err().to_string().contains("row 1 has 1 values"));
        assert!(!dir.exists(), "nothing is written on an error");
    }

    #[test]
    fn the_colour_scale_runs_light_to_dark() {
        assert_eq!(blues(0.0), RGBColor(247, 251, 255));
        assert_eq!(blues(1.0), RGBColor(8, 48, 107));
        assert_eq!(blues(2.0), blues(1.0));
        assert!(!dark(blues(0.0)) && dark(blues(1.0)));
    }
}
