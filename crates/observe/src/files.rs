//! A run's observables in memory ([`RunObservables`]) and on disk: `observables.npz` (every
//! value, for numpy and `plastic identify`) and `observables.csv` (one tidy row per value, for
//! pandas / R / a spreadsheet).
//!
//! `observables.npz` holds:
//! - `obs_keys` [S] unicode: the statistics' names in column order;
//! - `layers` [L] unicode: the layers in forward order; `positions` [L] unicode: `early`,
//!   `middle` or `deep`;
//! - `steps` [P] int64: the training step of each recording point;
//! - `views` [V, 2] float64: (unit_fraction, noise_std) of each realism view, view 0 first;
//! - `X` [L, V, P, S] float64: every value;
//! - `layer.<layer name>` [P, S] float64: view 0 of that layer;
//! - `extras` [E] unicode, `extra_layers` [E] int64 (the observed layer each belongs to),
//!   `extra_obs_keys` [S_w] unicode (the weight statistics among `obs_keys`) and `X_extra`
//!   [E, V, P, S_w] float64: further kernels of an observed layer, weights only (a ConvRNN
//!   node's cell kernels, feedback map and residual projection); E may be 0.
//!
//! `observables.csv` has the header
//! `run,layer,position,view,unit_fraction,noise_std,point,step,measure,transform,statistic,value`
//! (the activity change's statistic is `id`) and its rows in the order of `X`, then the extra
//! kernels' weight rows (`layer` = the kernel's name, `position` = its layer's). Non-finite
//! values are written `nan`, `inf`, `-inf`, never dropped; finite ones in Rust's shortest
//! round-trip form. Both files are written to a temporary file in the run directory and
//! renamed into place, so a reader never sees half a file.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use npyz::WriterBuilder;
use npyz::npz::{NpzArchive, NpzWriter};
use serde::{Deserialize, Serialize};

pub use crate::realism::RealismView;
use crate::{ObservableName, ObserveError, Result};

/// The npz file's name in a run directory.
pub const NPZ_FILE: &str = "observables.npz";
/// The CSV file's name in a run directory.
pub const CSV_FILE: &str = "observables.csv";
/// The CSV file's header.
pub const CSV_HEADER: [&str; 12] = ["run", "layer", "position", "view", "unit_fraction", "noise_std", "point", "step", "measure", "transform", "statistic", "value"];

/// Where a layer sits in its network (the original's `group_layers`), a covariate of the
/// identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Early,
    Middle,
    Deep,
}

impl Position {
    /// Early, middle, deep: the order of the one-hot columns.
    pub const ALL: [Position; 3] = [Position::Early, Position::Middle, Position::Deep];

    /// `early`, `middle` or `deep`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Position::Early => "early",
            Position::Middle => "middle",
            Position::Deep => "deep",
        }
    }

    /// 0, 1 or 2: the column of this position in a one-hot encoding.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for Position {
    type Err = ObserveError;

    fn from_str(s: &str) -> Result<Self> {
        Position::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| ObserveError::Shape(format!("unknown layer position `{s}` (expected early, middle or deep)")))
    }
}

/// The positions of `n` layers in forward order: with g = n // 3, the first g are early, the
/// next g middle and the rest deep (so fewer than three layers are all deep, and the deep group
/// takes the remainder).
pub fn layer_positions(n: usize) -> Vec<Position> {
    let g = n / 3;
    (0..n).map(|i| if i < g { Position::Early } else if i < 2 * g { Position::Middle } else { Position::Deep }).collect()
}

/// Every value recorded in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunObservables {
    /// The run's name (the CSV's `run` column). Not stored in the npz: [`RunObservables::read`]
    /// takes it from the run directory's name.
    pub run: String,
    /// The statistics' names (S), in column order; each parses as an [`ObservableName`].
    pub obs_keys: Vec<String>,
    /// The observed layers (L), in forward order; distinct.
    pub layers: Vec<String>,
    /// The position of each layer (L).
    pub positions: Vec<Position>,
    /// The realism views (V ≥ 1), view 0 first.
    pub views: Vec<RealismView>,
    /// Further kernels of the observed layers, recorded with the weight statistics only.
    pub extras: Vec<ExtraKernel>,
    /// The recording points (P), in recording order.
    pub points: Vec<PointRecord>,
}

/// A further kernel of an observed layer (a ConvRNN node's cell kernel), weights only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraKernel {
    pub name: String,
    /// Index of the observed layer it belongs to.
    pub layer: usize,
}

/// The values of one recording point.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRecord {
    /// The training step (0 = before the first update).
    pub step: u64,
    /// `[L][V][S]`, row-major: value (layer l, view v, statistic s) at (l·V + v)·S + s.
    pub values: Vec<f64>,
    /// `[E][V][S_w]`: the extra kernels' weight statistics (S_w = [`RunObservables::weight_keys`]).
    pub extra: Vec<f64>,
}

impl RunObservables {
    /// No points yet; positions by [`layer_positions`].
    pub fn new(run: impl Into<String>, names: &[ObservableName], layers: Vec<String>, views: Vec<RealismView>) -> Self {
        let positions = layer_positions(layers.len());
        Self { run: run.into(), obs_keys: names.iter().map(ToString::to_string).collect(), layers, positions, views, extras: Vec::new(), points: Vec::new() }
    }

    /// The weight statistics among `obs_keys` (the columns of the extra kernels), in order.
    pub fn weight_keys(&self) -> Vec<String> {
        self.obs_keys.iter().filter(|k| k.starts_with("weight")).cloned().collect()
    }

    /// Appends a recording point with the extra kernels' values (`[E][V][S_w]`).
    pub fn push_point_with_extras(&mut self, step: u64, values: Vec<f64>, extra: Vec<f64>) -> Result<()> {
        let want = self.extras.len() * self.views.len() * self.weight_keys().len();
        if extra.len() != want {
            return Err(ObserveError::Shape(format!("a recording point of {} extra kernels has {want} extra values, got {}", self.extras.len(), extra.len())));
        }
        self.push_point(step, values)?;
        self.points.last_mut().expect("just pushed").extra = extra;
        Ok(())
    }

    /// Appends a recording point; `values` is `[L][V][S]` row-major.
    pub fn push_point(&mut self, step: u64, values: Vec<f64>) -> Result<()> {
        let want = self.layers.len() * self.views.len() * self.obs_keys.len();
        if values.len() != want {
            return Err(ObserveError::Shape(format!(
                "a recording point of {} layers × {} views × {} statistics has {want} values, got {}",
                self.layers.len(),
                self.views.len(),
                self.obs_keys.len(),
                values.len()
            )));
        }
        self.points.push(PointRecord { step, values, extra: Vec::new() });
        Ok(())
    }

    /// The value of statistic `stat` of `layer` seen through `view` at recording point
    /// `point`.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn value(&self, point: usize, layer: usize, view: usize, stat: usize) -> f64 {
        let (v, s) = (self.views.len(), self.obs_keys.len());
        assert!(layer < self.layers.len() && view < v && stat < s, "(layer {layer}, view {view}, statistic {stat}) is out of range");
        self.points[point].values[(layer * v + view) * s + stat]
    }

    /// One layer's trajectory through one view: `[P][S]`.
    ///
    /// # Panics
    /// If `layer` or `view` is out of range.
    pub fn layer_matrix(&self, layer: usize, view: usize) -> Vec<Vec<f64>> {
        (0..self.points.len()).map(|p| (0..self.obs_keys.len()).map(|s| self.value(p, layer, view, s)).collect()).collect()
    }

    /// Checks that the parts fit together: positions per layer, distinct layers and keys,
    /// keys that are observable names, at least one view, `L·V·S` values per point, steps
    /// that fit an int64.
    pub fn check(&self) -> Result<()> {
        let shape = |m: String| Err(ObserveError::Shape(m));
        if self.positions.len() != self.layers.len() {
            return shape(format!("{} layers but {} positions", self.layers.len(), self.positions.len()));
        }
        if self.views.is_empty() {
            return shape("no realism view (view 0 is the exact one by default)".into());
        }
        if let Some(dup) = first_duplicate(&self.layers) {
            return shape(format!("layer `{dup}` appears twice"));
        }
        if let Some(dup) = first_duplicate(&self.obs_keys) {
            return shape(format!("statistic `{dup}` appears twice"));
        }
        for key in &self.obs_keys {
            key.parse::<ObservableName>()?;
        }
        let want = self.layers.len() * self.views.len() * self.obs_keys.len();
        let want_extra = self.extras.len() * self.views.len() * self.weight_keys().len();
        if let Some(e) = self.extras.iter().find(|e| e.layer >= self.layers.len()) {
            return shape(format!("extra kernel `{}` belongs to layer {} of {}", e.name, e.layer, self.layers.len()));
        }
        for (p, point) in self.points.iter().enumerate() {
            if point.values.len() != want {
                return shape(format!("recording point {p} has {} values, expected {want} (layers × views × statistics)", point.values.len()));
            }
            if point.extra.len() != want_extra {
                return shape(format!("recording point {p} has {} extra values, expected {want_extra} (extra kernels × views × weight statistics)", point.extra.len()));
            }
            if i64::try_from(point.step).is_err() {
                return shape(format!("recording point {p}: step {} does not fit an int64", point.step));
            }
        }
        Ok(())
    }

    /// Writes `observables.npz` and `observables.csv` into `run_dir` (created if missing), each
    /// through a temporary file and a rename.
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        self.write_npz_only(run_dir)?;
        write_atomic(&run_dir.join(CSV_FILE), |file| self.write_csv(file))
    }

    /// Writes `observables.npz` alone (what [`RunObservables::read`] needs, e.g. to resume).
    pub fn write_npz_only(&self, run_dir: &Path) -> Result<()> {
        self.check()?;
        std::fs::create_dir_all(run_dir).map_err(|e| ObserveError::io(run_dir, e))?;
        write_atomic(&run_dir.join(NPZ_FILE), |file| self.write_npz(file))
    }

    /// Reads `observables.npz` back from `run_dir`; the run's name is the directory's name.
    /// [`ObserveError::Missing`] when there is no such file, [`ObserveError::Malformed`] when
    /// an array is missing or has the wrong type or shape.
    pub fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(NPZ_FILE);
        let mut npz = match NpzArchive::open(&path) {
            Ok(npz) => npz,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ObserveError::Missing { path }),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(ObserveError::malformed(&path, format!("not an npz archive ({e})"))),
            Err(e) => return Err(ObserveError::io(&path, e)),
        };
        let malformed = |m: String| ObserveError::malformed(&path, m);

        let obs_keys = read_vector::<String, _>(&mut npz, "obs_keys", &path)?;
        let layers = read_vector::<String, _>(&mut npz, "layers", &path)?;
        let positions = read_vector::<String, _>(&mut npz, "positions", &path)?
            .iter()
            .map(|p| p.parse::<Position>().map_err(|e| malformed(format!("array `positions`: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        let steps = read_vector::<i64, _>(&mut npz, "steps", &path)?;
        let (views_shape, views) = read_array::<f64, _>(&mut npz, "views", &path)?;
        if views_shape.len() != 2 || views_shape[1] != 2 {
            return Err(malformed(format!("array `views` has shape {views_shape:?}, expected [V, 2]")));
        }
        let views: Vec<RealismView> = views.chunks_exact(2).map(|v| RealismView { unit_fraction: v[0], noise_std: v[1] }).collect();
        let (x_shape, x) = read_array::<f64, _>(&mut npz, "X", &path)?;
        let (l, v, p, s) = (layers.len(), views.len(), steps.len(), obs_keys.len());
        if x_shape != [l as u64, v as u64, p as u64, s as u64] {
            return Err(malformed(format!("array `X` has shape {x_shape:?}, expected [layers, views, points, statistics] = [{l}, {v}, {p}, {s}]")));
        }
        let extra_names = read_vector::<String, _>(&mut npz, "extras", &path)?;
        let extra_layers = read_vector::<i64, _>(&mut npz, "extra_layers", &path)?;
        let extra_keys = read_vector::<String, _>(&mut npz, "extra_obs_keys", &path)?;
        let (xe_shape, xe) = read_array::<f64, _>(&mut npz, "X_extra", &path)?;
        let (e, sw) = (extra_names.len(), extra_keys.len());
        if extra_layers.len() != e || xe_shape != [e as u64, v as u64, p as u64, sw as u64] {
            return Err(malformed(format!("arrays `extra_layers` / `X_extra` have shapes [{}] / {xe_shape:?}, expected [{e}] / [{e}, {v}, {p}, {sw}]", extra_layers.len())));
        }
        let extras = extra_names
            .into_iter()
            .zip(&extra_layers)
            .map(|(name, &layer)| Ok(ExtraKernel { name, layer: usize::try_from(layer).map_err(|_| malformed(format!("array `extra_layers`: {layer}")))? }))
            .collect::<Result<Vec<_>>>()?;
        let points = steps
            .iter()
            .enumerate()
            .map(|(point, &step)| {
                let step = u64::try_from(step).map_err(|_| malformed(format!("array `steps`: negative step {step}")))?;
                // X[l, v, p, s] → values[(l·V + v)·S + s].
                let values = (0..l * v).flat_map(|lv| x[(lv * p + point) * s..][..s].iter().copied()).collect();
                let extra = (0..e * v).flat_map(|ev| xe[(ev * p + point) * sw..][..sw].iter().copied()).collect();
                Ok(PointRecord { step, values, extra })
            })
            .collect::<Result<Vec<_>>>()?;
        let run = run_dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
        let out = RunObservables { run, obs_keys, layers, positions, views, extras, points };
        out.check().map_err(|e| malformed(e.to_string()))?;
        if out.weight_keys() != extra_keys {
            return Err(malformed("array `extra_obs_keys` is not the weight statistics of `obs_keys`".into()));
        }
        Ok(out)
    }

    fn write_npz(&self, file: File) -> io::Result<()> {
        let (l, v, p, s) = (self.layers.len(), self.views.len(), self.points.len(), self.obs_keys.len());
        let mut npz = NpzWriter::new(BufWriter::new(file));
        write_strings(&mut npz, "obs_keys", &self.obs_keys)?;
        write_strings(&mut npz, "layers", &self.layers)?;
        write_strings(&mut npz, "positions", &self.positions.iter().map(|p| p.as_str()).collect::<Vec<_>>())?;
        write_numbers(&mut npz, "steps", &[p as u64], self.points.iter().map(|pt| pt.step as i64))?;
        write_numbers(&mut npz, "views", &[v as u64, 2], self.views.iter().flat_map(|view| [view.unit_fraction, view.noise_std]))?;
        let x = (0..l * v).flat_map(|lv| self.points.iter().flat_map(move |pt| pt.values[lv * s..][..s].iter().copied()));
        write_numbers(&mut npz, "X", &[l as u64, v as u64, p as u64, s as u64], x)?;
        for (layer, name) in self.layers.iter().enumerate() {
            // View 0 of this layer: values[(layer·V + 0)·S ..][..S] of every point.
            let rows = self.points.iter().flat_map(|pt| pt.values[layer * v * s..][..s].iter().copied());
            write_numbers(&mut npz, &format!("layer.{name}"), &[p as u64, s as u64], rows)?;
        }
        let (e, sw) = (self.extras.len(), self.weight_keys().len());
        write_strings(&mut npz, "extras", &self.extras.iter().map(|x| x.name.as_str()).collect::<Vec<_>>())?;
        write_numbers(&mut npz, "extra_layers", &[e as u64], self.extras.iter().map(|x| x.layer as i64))?;
        write_strings(&mut npz, "extra_obs_keys", &self.weight_keys())?;
        let xe = (0..e * v).flat_map(|ev| self.points.iter().flat_map(move |pt| pt.extra[ev * sw..][..sw].iter().copied()));
        write_numbers(&mut npz, "X_extra", &[e as u64, v as u64, p as u64, sw as u64], xe)?;
        let file = npz.zip_writer().finish().map_err(io::Error::other)?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }

    fn write_csv(&self, file: File) -> io::Result<()> {
        let names: Vec<ObservableName> = self.obs_keys.iter().map(|k| k.parse().map_err(io::Error::other)).collect::<io::Result<_>>()?;
        let mut csv = csv::Writer::from_writer(BufWriter::new(file));
        csv.write_record(CSV_HEADER)?;
        let (v, s) = (self.views.len(), self.obs_keys.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let position = self.positions[l].as_str();
            for (vi, view) in self.views.iter().enumerate() {
                let (view_index, fraction, noise) = (vi.to_string(), format_value(view.unit_fraction), format_value(view.noise_std));
                for (pi, point) in self.points.iter().enumerate() {
                    let (point_index, step) = (pi.to_string(), point.step.to_string());
                    for (si, name) in names.iter().enumerate() {
                        let value = format_value(point.values[(l * v + vi) * s + si]);
                        csv.write_record([
                            self.run.as_str(),
                            layer,
                            position,
                            &view_index,
                            &fraction,
                            &noise,
                            &point_index,
                            &step,
                            name.measure().as_str(),
                            name.transform().as_str(),
                            name.statistic_str(),
                            &value,
                        ])?;
                    }
                }
            }
        }
        let weight_names: Vec<&ObservableName> = names.iter().filter(|n| n.measure() == crate::Measure::Weight).collect();
        let sw = weight_names.len();
        for (ei, extra) in self.extras.iter().enumerate() {
            let position = self.positions[extra.layer].as_str();
            for (vi, view) in self.views.iter().enumerate() {
                let (view_index, fraction, noise) = (vi.to_string(), format_value(view.unit_fraction), format_value(view.noise_std));
                for (pi, point) in self.points.iter().enumerate() {
                    let (point_index, step) = (pi.to_string(), point.step.to_string());
                    for (si, name) in weight_names.iter().enumerate() {
                        let value = format_value(point.extra[(ei * v + vi) * sw + si]);
                        let row = [extra.name.as_str(), position, &view_index, &fraction, &noise, &point_index, &step, name.measure().as_str(), name.transform().as_str(), name.statistic_str(), &value];
                        csv.write_record(std::iter::once(self.run.as_str()).chain(row))?;
                    }
                }
            }
        }
        let file = csv.into_inner().map_err(|e| io::Error::other(e.to_string()))?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }
}

/// `nan`, `inf`, `-inf`, or the shortest decimal that reads back as the same f64 (`0.1`,
/// `1e-7`, `3.0`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

fn first_duplicate(names: &[String]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    names.iter().find(|n| !seen.insert(n.as_str())).map(String::as_str)
}

/// A 1-D unicode array, with this file's zip options.
fn write_strings<W: Write + Seek>(npz: &mut NpzWriter<W>, name: &str, strings: &[impl AsRef<str>]) -> io::Result<()> {
    plastic_data::npz_write_strings(npz, name, strings, file_options())
}

/// A C-order array of f64 or i64 of `shape`.
fn write_numbers<T: npyz::AutoSerialize, W: Write + Seek>(npz: &mut NpzWriter<W>, name: &str, shape: &[u64], values: impl IntoIterator<Item = T>) -> io::Result<()> {
    let mut writer = npz.array::<T>(name, file_options())?.default_dtype().shape(shape).begin_nd()?;
    writer.extend(values)?;
    writer.finish()
}

/// Stored (as numpy's `savez`), with a fixed time stamp (1980-01-01) so the same values give
/// the same bytes. Deflating the whole file again at every checkpoint was a third of what
/// recording cost the quickstart.
fn file_options() -> npyz::zip::write::FileOptions {
    npyz::zip::write::FileOptions::default().compression_method(npyz::zip::CompressionMethod::Stored).last_modified_time(npyz::zip::DateTime::default())
}

fn read_array<T: npyz::Deserialize, R: Read + Seek>(npz: &mut NpzArchive<R>, name: &str, path: &Path) -> Result<(Vec<u64>, Vec<T>)> {
    let malformed = |m: String| ObserveError::malformed(path, format!("array `{name}`: {m}"));
    let array = npz.by_name(name).map_err(|e| malformed(e.to_string()))?.ok_or_else(|| malformed("missing".into()))?;
    if array.order() == npyz::Order::Fortran && array.shape().len() > 1 {
        return Err(malformed("stored in Fortran order; expected C order".into()));
    }
    let shape = array.shape().to_vec();
    let values = array.into_vec::<T>().map_err(|e| malformed(e.to_string()))?;
    Ok((shape, values))
}

fn read_vector<T: npyz::Deserialize, R: Read + Seek>(npz: &mut NpzArchive<R>, name: &str, path: &Path) -> Result<Vec<T>> {
    let (shape, values) = read_array(npz, name, path)?;
    if shape.len() != 1 {
        return Err(ObserveError::malformed(path, format!("array `{name}` has shape {shape:?}, expected one dimension")));
    }
    Ok(values)
}

/// Writes with `write` to a hidden temporary file beside `path` (same file system), then
/// renames it over `path`; the temporary file is removed on failure.
fn write_atomic(path: &Path, write: impl FnOnce(File) -> io::Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = File::create(&tmp).and_then(write).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| ObserveError::io(path, e));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("observables");
    path.with_file_name(format!(".{name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatisticSet;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("plastic-observe-{}-{name}", std::process::id())).join("run-a");
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// 3 layers, 2 views, 2 points, the 24 admissible statistics; value = a number that
    /// encodes its (point, layer, view, stat) so any transposition shows.
    fn sample() -> RunObservables {
        let names = StatisticSet::Admissible.names();
        let views = vec![RealismView::default(), RealismView { unit_fraction: 0.25, noise_std: 0.5 }];
        let mut obs = RunObservables::new("run-a", &names, vec!["conv1".into(), "block_group1_0/conv1".into(), "dense".into()], views);
        for (p, step) in [0u64, 400].into_iter().enumerate() {
            let values = (0..3 * 2 * 24).map(|i| (1000 * p + i) as f64 + 0.5).collect();
            obs.push_point(step, values).unwrap();
        }
        obs
    }

    /// A ConvRNN node's extra kernels (weights only) travel with the points: written to the npz
    /// as `X_extra` [E, V, P, S_w] and to the CSV as weight rows under their own names and their
    /// node's position, and read back as they were.
    #[test]
    fn extra_kernels_round_trip_and_appear_in_the_csv() {
        let dir = temp_dir("extras");
        let names = StatisticSet::Admissible.names();
        let views = vec![RealismView::default(), RealismView { unit_fraction: 0.5, noise_std: 0.0 }];
        let mut obs = RunObservables::new("rnn", &names, vec!["conv1".into(), "conv2".into(), "readout".into()], views);
        obs.extras = vec![ExtraKernel { name: "conv2.cell.input_cell".into(), layer: 1 }, ExtraKernel { name: "conv2.feedback".into(), layer: 1 }];
        let sw = obs.weight_keys().len();
        assert_eq!(sw, 13);
        for (p, step) in [0u64, 10, 20].into_iter().enumerate() {
            let values = (0..3 * 2 * 24).map(|i| (100 * p + i) as f64).collect();
            let extra: Vec<f64> = (0..2 * 2 * sw).map(|i| -((1000 * p + i) as f64)).collect();
            obs.push_point_with_extras(step, values, extra).unwrap();
        }
        assert!(obs.push_point_with_extras(30, vec![0.0; 144], vec![0.0; 3]).is_err(), "a wrong number of extra values is refused");
        obs.write(&dir).unwrap();
        let back = RunObservables::read(&dir).unwrap();
        assert_eq!(back.extras, obs.extras);
        assert_eq!(back.points, obs.points);
        // Extra kernel 1 (conv2.feedback), view 1, point 2, weight statistic 4 (weightabs_var):
        // extra[(e·V + v)·S_w + s] = −(1000·2 + (1·2 + 1)·13 + 4).
        let want = -((2000 + 3 * 13 + 4) as f64);
        assert_eq!(back.points[2].extra[3 * 13 + 4], want);
        let csv = std::fs::read_to_string(dir.join(CSV_FILE)).unwrap();
        let row = format!("rnn,conv2.feedback,middle,1,0.5,0.0,2,20,weight,abs,var,{want:?}");
        assert!(csv.lines().any(|l| l == row), "no row {row:?} in the CSV");
        assert_eq!(csv.lines().filter(|l| l.starts_with("rnn,conv2.cell.input_cell,")).count(), 2 * 3 * 13);
    }

    #[test]
    fn positions_split_layers_in_thirds_with_the_rest_deep() {
        use Position::*;
        assert_eq!(layer_positions(8), [Early, Early, Middle, Middle, Deep, Deep, Deep, Deep]);
        assert_eq!(layer_positions(6), [Early, Early, Middle, Middle, Deep, Deep]);
        assert_eq!(layer_positions(4), [Early, Middle, Deep, Deep]);
        assert_eq!(layer_positions(2), [Deep, Deep]);
        assert!(layer_positions(0).is_empty());
        let resnet18 = layer_positions(22); // 7 early, 7 middle, 8 deep
        assert_eq!(resnet18.iter().filter(|&&p| p == Early).count(), 7);
        assert_eq!(resnet18.iter().filter(|&&p| p == Deep).count(), 8);
    }

    #[test]
    fn values_are_indexed_layer_view_statistic() {
        let obs = sample();
        // Point 1, layer 2, view 1, stat 5: (2·2 + 1)·24 + 5 = 125 → 1125.5.
        assert_eq!(obs.value(1, 2, 1, 5), 1125.5);
        let m = obs.layer_matrix(1, 0);
        assert_eq!((m.len(), m[0].len()), (2, 24));
        assert_eq!(m[0][0], (2 * 24) as f64 + 0.5);
        assert_eq!(m[1][23], (1000 + 2 * 24 + 23) as f64 + 0.5);
    }

    #[test]
    fn write_then_read_gives_the_same_observables() {
        let dir = temp_dir("roundtrip");
        let mut obs = sample();
        obs.points[1].values[7] = f64::NAN;
        obs.points[0].values[3] = f64::NEG_INFINITY;
        obs.write(&dir).unwrap();
        let back = RunObservables::read(&dir).unwrap();
        assert_eq!(back.run, "run-a");
        assert_eq!((&back.obs_keys, &back.layers, &back.positions, &back.views), (&obs.obs_keys, &obs.layers, &obs.positions, &obs.views));
        assert_eq!(back.points.len(), 2);
        for (a, b) in back.points.iter().zip(&obs.points) {
            assert_eq!(a.step, b.step);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.values), bits(&b.values));
        }
        // Nothing left behind but the two files.
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(files, [CSV_FILE, NPZ_FILE]);
        // The per-layer array holds view 0: layer.dense[p, s] = X[2, 0, p, s].
        let mut npz = NpzArchive::open(dir.join(NPZ_FILE)).unwrap();
        let (shape, dense) = read_array::<f64, _>(&mut npz, "layer.dense", &dir).unwrap();
        assert_eq!(shape, [2, 24]);
        assert_eq!(dense[24 + 1], (1000 + 2 * 2 * 24 + 1) as f64 + 0.5);
        let (shape, _) = read_array::<f64, _>(&mut npz, "X", &dir).unwrap();
        assert_eq!(shape, [3, 2, 2, 24]);
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_csv_is_tidy_with_the_contract_header() {
        let dir = temp_dir("csv");
        let mut obs = sample();
        obs.points[1].values[(2 * 2 + 1) * 24 + 23] = f64::NAN; // point 1, dense, view 1, gradavgsq_id
        obs.write(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join(CSV_FILE)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "run,layer,position,view,unit_fraction,noise_std,point,step,measure,transform,statistic,value");
        assert_eq!(lines.len(), 1 + 3 * 2 * 2 * 24);
        // Row order follows X[l, v, p, s]: the first row is conv1, view 0, point 0, weightabs_mean.
        assert_eq!(lines[1], "run-a,conv1,early,0,1.0,0.0,0,0,weight,abs,mean,0.5");
        // (layer 1, view 0, point 1, stat 13 = actabs_mean) is row 1 + ((1·2 + 0)·2 + 1)·24 + 13.
        assert_eq!(lines[1 + 5 * 24 + 13], format!("run-a,block_group1_0/conv1,middle,0,1.0,0.0,1,400,act,abs,mean,{}", (1000 + 2 * 24 + 13) as f64 + 0.5));
        assert_eq!(*lines.last().unwrap(), "run-a,dense,deep,1,0.25,0.5,1,400,gradavg,sq,id,nan");
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn reading_a_missing_or_broken_file_says_so() {
        let dir = temp_dir("broken");
        std::fs::create_dir_all(&dir).unwrap();
        let err = RunObservables::read(&dir).unwrap_err();
        assert!(matches!(err, ObserveError::Missing { .. }), "{err}");
        assert!(err.to_string().contains(NPZ_FILE), "{err}");

        std::fs::write(dir.join(NPZ_FILE), b"not a zip").unwrap();
        let err = RunObservables::read(&dir).unwrap_err();
        assert!(matches!(err, ObserveError::Malformed { .. }), "{err}");

        // A valid npz without `X`.
        let mut npz = NpzWriter::new(BufWriter::new(File::create(dir.join(NPZ_FILE)).unwrap()));
        write_strings(&mut npz, "obs_keys", &["weightraw_mean"]).unwrap();
        write_strings(&mut npz, "layers", &["fc"]).unwrap();
        write_strings(&mut npz, "positions", &["deep"]).unwrap();
        write_numbers(&mut npz, "steps", &[1], [0i64]).unwrap();
        write_numbers(&mut npz, "views", &[1, 2], [1.0, 0.0]).unwrap();
        npz.zip_writer().finish().unwrap();
        drop(npz);
        let err = RunObservables::read(&dir).unwrap_err().to_string();
        assert!(err.contains("array `X`: missing"), "{err}");
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn inconsistent_observables_are_refused_before_writing() {
        let mut obs = sample();
        assert!(obs.push_point(800, vec![0.0; 5]).is_err());
        obs.points[0].values.pop();
        assert!(obs.write(&temp_dir("bad")).unwrap_err().to_string().contains("recording point 0"));
        let mut obs = sample();
        obs.obs_keys[0] = "weightcube_mean".into();
        assert!(matches!(obs.check(), Err(ObserveError::UnknownObservable(_))));
        let mut obs = sample();
        obs.layers[1] = "conv1".into();
        assert!(obs.check().unwrap_err().to_string().contains("`conv1` appears twice"));
    }

    #[test]
    fn values_format_as_numpy_and_pandas_read_them() {
        assert_eq!(format_value(f64::NAN), "nan");
        assert_eq!(format_value(f64::INFINITY), "inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(3.0), "3.0");
        assert_eq!(format_value(1e-7), "1e-7");
        assert_eq!("1e-7".parse::<f64>().unwrap(), 1e-7);
    }
}
