//! The identification data set: every layer of every run of a sweep as one sample, its
//! observables' trajectories, its labels and its run's settings.
//!
//! [`gather`] reads each run's `observables.npz` and writes `dataset.npz` and `meta.csv`;
//! [`load`] reads them back. `dataset.npz` (numpy can open it directly):
//! - `X` `[N, P, S]` float64: view 0 (the full, noise-free measurement);
//! - `X_views` `[V, N, P, S]` float64: every realism view; `views` `[V, 2]` their
//!   (unit_fraction, noise_std);
//! - `X_cat` `[N, 3]` float64: the layer's position, one-hot (early, middle, deep);
//! - `obs_keys` `[S]` unicode: the statistics' names, in column order;
//! - `rule`, `optimizer` `[N]` unicode: the labels;
//! - `point_fraction` `[P]` float64: each recording point's step over the last step (first run).
//!
//! `meta.csv`: `sample,run,layer,position,rule,optimizer,architecture,dataset,batch_size,seed`
//! and then the runs' other settings by name (sorted), one row per sample in `X`'s order.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;
use npyz::npz::{NpzArchive, NpzWriter};

use crate::{IdentifyError, Result, write_atomic, write_atomic_with};

/// One run of a sweep: its name, its directory (with `observables.npz`) and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRun {
    pub name: String,
    pub run_dir: PathBuf,
    /// At least `rule`, `optimizer`, `architecture`, `dataset`, `batch_size`, `seed`, and any
    /// other axis of the sweep's grid by its name.
    pub meta: BTreeMap<String, String>,
}

/// What [`gather`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct GatherSummary {
    /// Samples written (layers of the runs used).
    pub samples: usize,
    pub runs_used: usize,
    /// (run name, why) of each run left out: no `observables.npz`, or one that does not read.
    pub runs_skipped: Vec<(String, String)>,
    /// The `dataset.npz` written.
    pub path: PathBuf,
}

/// The columns of `meta.csv` that every data set has, in order; the runs' other settings follow.
pub const META_COLUMNS: [&str; 10] = ["sample", "run", "layer", "position", "rule", "optimizer", "architecture", "dataset", "batch_size", "seed"];

/// The layer positions, in `X_cat`'s column order.
pub const POSITIONS: [&str; 3] = ["early", "middle", "deep"];

/// A data set in memory (see the module doc for the file layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Samples N, recording points P, statistics S.
    pub n: usize,
    pub p: usize,
    pub s: usize,
    /// `[V, N, P, S]` row-major: every view; view 0 is `X`.
    pub x_views: Vec<f64>,
    /// (unit_fraction, noise_std) of each view.
    pub views: Vec<(f64, f64)>,
    /// `[N, 3]` one-hot layer position.
    pub x_cat: Vec<[f64; 3]>,
    pub obs_keys: Vec<String>,
    pub rule: Vec<String>,
    pub optimizer: Vec<String>,
    pub point_fraction: Vec<f64>,
    /// The columns of `meta.csv`, [`META_COLUMNS`] first.
    pub meta_columns: Vec<String>,
    /// `[N][columns]`: each sample's row of `meta.csv`.
    pub meta: Vec<Vec<String>>,
}

impl Dataset {
    /// Number of views V.
    pub fn num_views(&self) -> usize {
        self.views.len()
    }

    /// `[N, P, S]` of view `v`.
    pub fn view(&self, v: usize) -> &[f64] {
        let len = self.n * self.p * self.s;
        &self.x_views[v * len..(v + 1) * len]
    }

    /// The value of statistic `stat` at point `point` of sample `sample` in view `v`.
    pub fn value(&self, v: usize, sample: usize, point: usize, stat: usize) -> f64 {
        self.view(v)[(sample * self.p + point) * self.s + stat]
    }

    /// The index of a `meta.csv` column.
    pub fn meta_column(&self, name: &str) -> Option<usize> {
        self.meta_columns.iter().position(|c| c == name)
    }

    /// Writes `dir/dataset.npz` and `dir/meta.csv` (each atomically); returns the npz's path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        self.check()?;
        let npz = dir.join("dataset.npz");
        write_atomic_with(&npz, |tmp| write_npz(tmp, self).map_err(|e| IdentifyError::io(&npz, e)))?;
        let mut csv = csv::Writer::from_writer(Vec::new());
        let io = |e: csv::Error| IdentifyError::io(dir.join("meta.csv"), e);
        csv.write_record(&self.meta_columns).map_err(io)?;
        for row in &self.meta {
            csv.write_record(row).map_err(io)?;
        }
        let bytes = csv.into_inner().map_err(|e| IdentifyError::io(dir.join("meta.csv"), e))?;
        write_atomic(&dir.join("meta.csv"), &bytes)?;
        Ok(npz)
    }

    /// Every array has the length its shape says.
    fn check(&self) -> Result<()> {
        let len = self.n * self.p * self.s;
        let bad = |what: &str| Err(IdentifyError::Input(format!("data set: {what} does not match N = {}, P = {}, S = {}, V = {}", self.n, self.p, self.s, self.views.len())));
        if self.views.is_empty() || self.x_views.len() != self.views.len() * len {
            return bad("X_views");
        }
        if self.x_cat.len() != self.n || self.rule.len() != self.n || self.optimizer.len() != self.n || self.meta.len() != self.n {
            return bad("a per-sample array");
        }
        if self.obs_keys.len() != self.s || self.point_fraction.len() != self.p {
            return bad("obs_keys or point_fraction");
        }
        if self.meta.iter().any(|r| r.len() != self.meta_columns.len()) {
            return bad("a meta row");
        }
        Ok(())
    }
}

/// Gathers the runs' observables into `out_dir/dataset.npz` and `out_dir/meta.csv`.
///
/// Each layer of each run is one sample, in run order then layer order. Runs without
/// `observables.npz`, or whose file does not read, are skipped and reported. Every run used
/// must have the same statistics, recording points and views as the first (else an error naming
/// the run), and `rule` and `optimizer` in its settings. No usable run at all is an error.
pub fn gather(runs: &[SweepRun], out_dir: &Path) -> Result<GatherSummary> {
    let mut skipped = Vec::new();
    let mut used: Vec<(&SweepRun, plastic_observe::files::RunObservables)> = Vec::new();
    for run in runs {
        if !run.run_dir.join("observables.npz").is_file() {
            skipped.push((run.name.clone(), format!("no observables.npz in {}", run.run_dir.display())));
            continue;
        }
        match plastic_observe::files::RunObservables::read(&run.run_dir) {
            Ok(obs) => used.push((run, obs)),
            Err(e) => skipped.push((run.name.clone(), e.to_string())),
        }
    }
    let Some((first_run, first)) = used.first() else {
        let why = skipped.first().map(|(n, w)| format!(" (first: {n}: {w})")).unwrap_or_default();
        return Err(IdentifyError::Input(format!("no run to gather: {} runs given, none with readable observables{why}", runs.len())));
    };
    let (p, s, v) = (first.points.len(), first.obs_keys.len(), first.views.len());
    if p == 0 || s == 0 || v == 0 {
        return Err(IdentifyError::Input(format!("run {}: its observables have {p} points, {s} statistics and {v} views", first_run.name)));
    }
    for (run, obs) in &used {
        let mismatch = |what: String| Err(IdentifyError::Input(format!("run {}: {what}, but run {} has {}; every run of a data set needs the same", run.name, first_run.name, describe(first))));
        if obs.obs_keys != first.obs_keys {
            return mismatch(format!("statistics {:?}", obs.obs_keys));
        }
        if obs.points.len() != p || obs.views.len() != v || obs.views.iter().zip(&first.views).any(|(a, b)| a.unit_fraction != b.unit_fraction || a.noise_std != b.noise_std) {
            return mismatch(describe(obs));
        }
        for key in ["rule", "optimizer"] {
            if run.meta.get(key).is_none_or(|v| v.is_empty()) {
                return Err(IdentifyError::Input(format!("run {}: no {key:?} in its settings (a sweep run needs rule and optimizer)", run.name)));
            }
        }
    }

    let extra: BTreeSet<&String> = used.iter().flat_map(|(r, _)| r.meta.keys()).filter(|k| !META_COLUMNS.contains(&k.as_str())).collect();
    let meta_columns: Vec<String> = META_COLUMNS.iter().map(|c| c.to_string()).chain(extra.iter().map(|k| k.to_string())).collect();
    let n: usize = used.iter().map(|(_, o)| o.layers.len()).sum();
    let len = n * p * s;
    let mut x_views = vec![0.0; v * len];
    let (mut x_cat, mut rule, mut optimizer, mut meta) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut sample = 0;
    for (run, obs) in &used {
        for (l, layer) in obs.layers.iter().enumerate() {
            for (pi, point) in obs.points.iter().enumerate() {
                for view in 0..v {
                    let from = &point.values[(l * v + view) * s..(l * v + view + 1) * s];
                    let to = view * len + (sample * p + pi) * s;
                    x_views[to..to + s].copy_from_slice(from);
                }
            }
            let position = obs.positions.get(l).map(|p| p.as_str()).unwrap_or("deep");
            let mut cat = [0.0; 3];
            cat[POSITIONS.iter().position(|&q| q == position).unwrap_or(2)] = 1.0;
            x_cat.push(cat);
            rule.push(run.meta["rule"].clone());
            optimizer.push(run.meta["optimizer"].clone());
            meta.push(
                meta_columns
                    .iter()
                    .map(|c| match c.as_str() {
                        "sample" => sample.to_string(),
                        "run" => run.name.clone(),
                        "layer" => layer.clone(),
                        "position" => position.to_string(),
                        other => run.meta.get(other).cloned().unwrap_or_default(),
                    })
                    .collect(),
            );
            sample += 1;
        }
    }
    let last = first.points.last().map_or(0, |pt| pt.step) as f64;
    let dataset = Dataset {
        n,
        p,
        s,
        x_views,
        views: first.views.iter().map(|v| (v.unit_fraction, v.noise_std)).collect(),
        x_cat,
        obs_keys: first.obs_keys.clone(),
        rule,
        optimizer,
        point_fraction: first.points.iter().map(|pt| if last > 0.0 { pt.step as f64 / last } else { 0.0 }).collect(),
        meta_columns,
        meta,
    };
    let path = dataset.write(out_dir)?;
    Ok(GatherSummary { samples: n, runs_used: used.len(), runs_skipped: skipped, path })
}

fn describe(obs: &plastic_observe::files::RunObservables) -> String {
    format!("{} points, {} statistics and {} views", obs.points.len(), obs.obs_keys.len(), obs.views.len())
}

/// Reads `dir/dataset.npz` and `dir/meta.csv` (as [`gather`] writes them). A data set without
/// `X_views` (one written by other tools) has `X` as its only view; without `meta.csv`, the
/// meta columns are the sample index and the labels.
pub fn load(dir: &Path) -> Result<Dataset> {
    let path = dir.join("dataset.npz");
    if !path.is_file() {
        let hint = if dir.is_dir() { "no dataset.npz in it (`plastic sweep` gathers one)" } else { "no such directory" };
        return Err(IdentifyError::Input(format!("{}: {hint}", dir.display())));
    }
    let mut npz = NpzArchive::open(&path).map_err(|e| IdentifyError::io(&path, e))?;
    let io = |e: std::io::Error| IdentifyError::io(&path, e);
    let bad = |what: String| IdentifyError::Input(format!("{}: {what}", path.display()));

    let (x_shape, x_views) = match read_f64(&mut npz, "X_views").map_err(io)? {
        Some((shape, data)) if shape.len() == 4 => (shape, data),
        Some((shape, _)) => return Err(bad(format!("X_views has shape {shape:?}, expected [V, N, P, S]"))),
        None => match read_f64(&mut npz, "X").map_err(io)? {
            Some((shape, data)) if shape.len() == 3 => ([&[1], &shape[..]].concat(), data),
            Some((shape, _)) => return Err(bad(format!("X has shape {shape:?}, expected [N, P, S]"))),
            None => return Err(bad("no array X".into())),
        },
    };
    let (v, n, p, s) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let views = match read_f64(&mut npz, "views").map_err(io)? {
        Some((shape, data)) if shape == [v, 2] => data.chunks(2).map(|c| (c[0], c[1])).collect(),
        Some((shape, _)) => return Err(bad(format!("views has shape {shape:?}, expected [{v}, 2]"))),
        None if v == 1 => vec![(1.0, 0.0)],
        None => return Err(bad("X_views without views".into())),
    };
    let x_cat = match read_f64(&mut npz, "X_cat").map_err(io)? {
        Some((shape, data)) if shape == [n, 3] => data.chunks(3).map(|c| [c[0], c[1], c[2]]).collect(),
        Some((shape, _)) => return Err(bad(format!("X_cat has shape {shape:?}, expected [{n}, 3]"))),
        None => return Err(bad("no array X_cat".into())),
    };
    let strings = |npz: &mut NpzArchive<_>, name: &str, len: usize| -> Result<Vec<String>> {
        match read_strings(npz, name).map_err(io)? {
            Some(v) if v.len() == len => Ok(v),
            Some(v) => Err(bad(format!("{name} has {} entries, expected {len}", v.len()))),
            None => Err(bad(format!("no array {name}"))),
        }
    };
    let obs_keys = strings(&mut npz, "obs_keys", s)?;
    let rule = strings(&mut npz, "rule", n)?;
    let optimizer = strings(&mut npz, "optimizer", n)?;
    let point_fraction = match read_f64(&mut npz, "point_fraction").map_err(io)? {
        Some((shape, data)) if shape == [p] => data,
        Some((shape, _)) => return Err(bad(format!("point_fraction has shape {shape:?}, expected [{p}]"))),
        None => (0..p).map(|i| if p > 1 { i as f64 / (p - 1) as f64 } else { 0.0 }).collect(),
    };

    let meta_path = dir.join("meta.csv");
    let (meta_columns, meta) = if meta_path.is_file() {
        let mut reader = csv::Reader::from_path(&meta_path).map_err(|e| IdentifyError::io(&meta_path, e))?;
        let columns: Vec<String> = reader.headers().map_err(|e| IdentifyError::io(&meta_path, e))?.iter().map(String::from).collect();
        let rows = reader.records().map(|r| r.map(|r| r.iter().map(String::from).collect::<Vec<_>>())).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| IdentifyError::io(&meta_path, e))?;
        if rows.len() != n {
            return Err(IdentifyError::Input(format!("{}: {} rows for {n} samples in dataset.npz", meta_path.display(), rows.len())));
        }
        (columns, rows)
    } else {
        let columns = ["sample", "rule", "optimizer"].map(String::from).to_vec();
        (columns, (0..n).map(|i| vec![i.to_string(), rule[i].clone(), optimizer[i].clone()]).collect())
    };
    let dataset = Dataset { n, p, s, x_views, views, x_cat, obs_keys, rule, optimizer, point_fraction, meta_columns, meta };
    dataset.check()?;
    Ok(dataset)
}

fn read_f64<R: std::io::Read + std::io::Seek>(npz: &mut NpzArchive<R>, name: &str) -> std::io::Result<Option<(Vec<usize>, Vec<f64>)>> {
    let Some(file) = npz.by_name(name)? else { return Ok(None) };
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    if file.order() == npyz::Order::Fortran && shape.len() > 1 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{name} is stored in Fortran order; save it C-contiguous")));
    }
    Ok(Some((shape, file.into_vec::<f64>()?)))
}

fn read_strings<R: std::io::Read + std::io::Seek>(npz: &mut NpzArchive<R>, name: &str) -> std::io::Result<Option<Vec<String>>> {
    let Some(file) = npz.by_name(name)? else { return Ok(None) };
    Ok(Some(file.into_vec::<String>()?))
}

fn write_npz(path: &Path, d: &Dataset) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut npz = NpzWriter::new(BufWriter::new(file));
    let len = d.n * d.p * d.s;
    let shape = |dims: &[usize]| dims.iter().map(|&x| x as u64).collect::<Vec<u64>>();
    write_f64(&mut npz, "X", &shape(&[d.n, d.p, d.s]), &d.x_views[..len])?;
    write_f64(&mut npz, "X_views", &shape(&[d.views.len(), d.n, d.p, d.s]), &d.x_views)?;
    write_f64(&mut npz, "views", &shape(&[d.views.len(), 2]), &d.views.iter().flat_map(|&(a, b)| [a, b]).collect::<Vec<_>>())?;
    write_f64(&mut npz, "X_cat", &shape(&[d.n, 3]), &d.x_cat.iter().flatten().copied().collect::<Vec<_>>())?;
    plastic_data::npz_write_strings(&mut npz, "obs_keys", &d.obs_keys, Default::default())?;
    plastic_data::npz_write_strings(&mut npz, "rule", &d.rule, Default::default())?;
    plastic_data::npz_write_strings(&mut npz, "optimizer", &d.optimizer, Default::default())?;
    write_f64(&mut npz, "point_fraction", &shape(&[d.p]), &d.point_fraction)?;
    let mut inner = npz.zip_writer().finish().map_err(std::io::Error::other)?;
    inner.flush()?;
    inner.get_ref().sync_all()
}

fn write_f64<W: std::io::Write + std::io::Seek>(npz: &mut NpzWriter<W>, name: &str, shape: &[u64], data: &[f64]) -> std::io::Result<()> {
    let mut w = npz.array::<f64>(name, Default::default())?.default_dtype().shape(shape).begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("plastic-identify-dataset-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A small data set with distinct values everywhere: value = v·1000 + sample·100 + point·10 + stat.
    pub(crate) fn small() -> Dataset {
        let (n, p, s, v) = (4, 3, 2, 2);
        let x_views = (0..v * n * p * s)
            .map(|i| {
                let (view, rest) = (i / (n * p * s), i % (n * p * s));
                (view * 1000 + (rest / (p * s)) * 100 + (rest / s % p) * 10 + rest % s) as f64
            })
            .collect();
        let meta_columns: Vec<String> = META_COLUMNS.iter().map(|c| c.to_string()).chain(["lr".to_string()]).collect();
        let meta = (0..n)
            .map(|i| meta_columns.iter().map(|c| if c == "sample" { i.to_string() } else { format!("{c}-{i}") }).collect())
            .collect();
        Dataset {
            n,
            p,
            s,
            x_views,
            views: vec![(1.0, 0.0), (0.5, 0.1)],
            x_cat: vec![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],
            obs_keys: vec!["weightabs_mean".into(), "actraw_norm".into()],
            rule: vec!["backprop".into(), "feedback_alignment".into(), "backprop".into(), "feedback_alignment".into()],
            optimizer: vec!["sgdm".into(), "adam".into(), "adam".into(), "sgdm".into()],
            point_fraction: vec![0.0, 0.5, 1.0],
            meta_columns,
            meta,
        }
    }

    #[test]
    fn write_then_load_gives_the_same_data_set() {
        let dir = temp_dir("roundtrip");
        let d = small();
        let path = d.write(&dir).unwrap();
        assert_eq!(path, dir.join("dataset.npz"));
        let back = load(&dir).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.value(1, 2, 1, 1), 1211.0);
        assert_eq!(back.view(0)[..3], [0.0, 1.0, 10.0]);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
        assert!(leftovers.is_empty());
        let csv = std::fs::read_to_string(dir.join("meta.csv")).unwrap();
        assert!(csv.starts_with("sample,run,layer,position,rule,optimizer,architecture,dataset,batch_size,seed,lr\n0,run-0,"), "{csv}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn load_reports_a_missing_data_set_in_one_line() {
        let dir = temp_dir("missing");
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("no dataset.npz") && !e.contains('\n'), "{e}");
        let e = load(&dir.join("nowhere")).unwrap_err().to_string();
        assert!(e.contains("no such directory"), "{e}");
        std::fs::write(dir.join("dataset.npz"), b"not a zip").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("dataset.npz"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gather_writes_every_layer_of_every_run_and_skips_runs_without_observables() {
        use plastic_observe::{PointRecord, RealismView, RunObservables, layer_positions};
        let dir = temp_dir("gather");
        let keys: Vec<String> = ["weightabs_mean", "actraw_norm", "gradavgraw_id"].iter().map(|s| s.to_string()).collect();
        let views = vec![RealismView { unit_fraction: 1.0, noise_std: 0.0 }, RealismView { unit_fraction: 0.25, noise_std: 0.5 }];
        let (l, v, s) = (3, views.len(), keys.len());
        let write_run = |name: &str, offset: f64| {
            let obs = RunObservables {
                run: name.into(),
                obs_keys: keys.clone(),
                layers: vec!["conv1".into(), "conv2".into(), "fc".into()],
                positions: layer_positions(l),
                views: views.clone(),
                extras: Vec::new(),
                points: [0u64, 50, 100]
                    .iter()
                    .enumerate()
                    .map(|(pi, &step)| PointRecord { step, values: (0..l * v * s).map(|i| offset + (pi * 1000 + i) as f64).collect(), extra: Vec::new() })
                    .collect(),
            };
            let run_dir = dir.join("runs").join(name);
            std::fs::create_dir_all(&run_dir).unwrap();
            obs.write(&run_dir).unwrap();
            run_dir
        };
        let meta = |rule: &str, opt: &str, extra: Option<(&str, &str)>| {
            let mut m: BTreeMap<String, String> = [("rule", rule), ("optimizer", opt), ("architecture", "knet"), ("dataset", "digits"), ("batch_size", "32"), ("seed", "0")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            if let Some((k, v)) = extra {
                m.insert(k.into(), v.into());
            }
            m
        };
        let runs = vec![
            SweepRun { name: "a".into(), run_dir: write_run("a", 0.0), meta: meta("backprop", "sgdm", Some(("lr", "0.1"))) },
            SweepRun { name: "missing".into(), run_dir: dir.join("runs").join("missing"), meta: meta("backprop", "adam", None) },
            SweepRun { name: "b".into(), run_dir: write_run("b", 0.5), meta: meta("feedback_alignment", "adam", None) },
        ];
        let out = dir.join("identify");
        let summary = gather(&runs, &out).unwrap();
        assert_eq!((summary.samples, summary.runs_used), (6, 2));
        assert_eq!(summary.runs_skipped.len(), 1);
        assert!(summary.runs_skipped[0].0 == "missing" && summary.runs_skipped[0].1.contains("no observables.npz"));

        let d = load(&out).unwrap();
        assert_eq!((d.n, d.p, d.s, d.num_views()), (6, 3, 3, 2));
        assert_eq!(d.obs_keys, keys);
        assert_eq!(d.views, vec![(1.0, 0.0), (0.25, 0.5)]);
        assert_eq!(d.rule, ["backprop", "backprop", "backprop", "feedback_alignment", "feedback_alignment", "feedback_alignment"]);
        assert_eq!(d.optimizer[3], "adam");
        assert_eq!(d.point_fraction, [0.0, 0.5, 1.0]);
        assert_eq!(d.x_cat, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        // Sample 4 = run b, layer 1; view 1, point 2, statistic 2: values[(l·V + v)·S + s] at point 2.
        assert_eq!(d.value(1, 4, 2, 2), 0.5 + (2 * 1000 + (1 * v + 1) * s + 2) as f64);
        assert_eq!(d.value(0, 0, 1, 0), 1000.0);
        assert_eq!(d.meta_columns.last().unwrap(), "lr");
        let col = |name: &str| d.meta_column(name).unwrap();
        assert_eq!((d.meta[4][col("run")].as_str(), d.meta[4][col("layer")].as_str(), d.meta[4][col("position")].as_str()), ("b", "conv2", "middle"));
        assert_eq!((d.meta[0][col("lr")].as_str(), d.meta[3][col("lr")].as_str()), ("0.1", ""));

        // A run with other statistics is refused by name.
        let mut other = RunObservables::read(&runs[2].run_dir).unwrap();
        other.obs_keys[0] = "weightabs_median".into();
        other.write(&runs[2].run_dir).unwrap();
        let e = gather(&runs, &out).unwrap_err().to_string();
        assert!(e.starts_with("run b: statistics") && !e.contains('\n'), "{e}");
        let e = gather(&runs[1..2], &out).unwrap_err().to_string();
        assert!(e.contains("no run to gather"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
