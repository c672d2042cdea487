//! Features: every chosen layer's output at every chosen time step for a stimulus set, computed
//! in evaluation mode in batches and streamed to disk, so memory stays bounded by one batch
//! whatever the number of stimuli, layers and steps.
//!
//! Extraction writes one raw f32 file per (layer, step) into a scratch folder (a
//! [`FeatureStore`]); `plastic features` then packs them into one NPZ, array by array, and
//! `neural-fit` reads them back one array at a time.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use plastic_data::{Preprocessing, Stimuli};
use plastic_train::Network;

use crate::error::{NeuralError, Result};
use crate::linalg::{centred_blocks, gram, leading_eigen};

/// What each layer's output is reduced to before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Every unit, `c·h·w` columns in PyTorch's flatten order (channel, row, column).
    None,
    /// The spatial mean per channel, `c` columns.
    Avg,
    /// The leading `k` principal components of the layer's units over the stimuli (scores,
    /// computed from the stimuli's Gram matrix), `min(k, rank)` columns.
    Pca(usize),
}

impl FromStr for Pool {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Pool::None),
            "avg" => Ok(Pool::Avg),
            _ => match s.strip_prefix("pca:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Pool::Pca(k)),
                _ => Err(format!("--pool {s:?}: expected none, avg or pca:K with K ≥ 1")),
            },
        }
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pool::None => write!(f, "none"),
            Pool::Avg => write!(f, "avg"),
            Pool::Pca(k) => write!(f, "pca:{k}"),
        }
    }
}

/// Which outputs to extract and how.
#[derive(Debug, Clone)]
pub struct FeatureOptions {
    /// Layers by name (default: every feature layer of the network).
    pub layers: Option<Vec<String>>,
    /// Time steps (default: every step; a CNN has step 0 only).
    pub times: Option<Vec<usize>>,
    pub pool: Pool,
    /// Stimuli per forward pass.
    pub batch_size: usize,
    /// A ConvRNN's unroll length for the stimuli (default: the run's T).
    pub unroll: Option<usize>,
    /// The step at which a ConvRNN's image is replaced by the blank (default: the run's).
    pub image_off: Option<usize>,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        Self { layers: None, times: None, pool: Pool::None, batch_size: 64, unroll: None, image_off: None }
    }
}

/// One stored array: a layer at a step.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayInfo {
    pub layer: String,
    pub step: usize,
    /// The layer's output shape `[c, h, w]` (before pooling).
    pub shape: [usize; 3],
    /// Columns stored per stimulus (after average pooling; PCA happens when packed).
    pub columns: usize,
}

impl ArrayInfo {
    /// The array's name in a features NPZ: `conv1.t03`.
    pub fn key(&self) -> String {
        format!("{}.t{:02}", self.layer, self.step)
    }
}

/// A network prepared to show stimuli: evaluation mode, the run's (or the overridden) timing.
pub struct Viewer {
    pub model: Network,
    pub preprocessing: Preprocessing,
    pub device: Device,
    pub layers: Vec<String>,
    pub times: Vec<usize>,
    /// The model's unroll length and image-off step as used.
    pub unroll: usize,
    pub image_off: Option<usize>,
}

impl Viewer {
    /// Checks `options` against `model` (names every unknown layer or step).
    pub fn new(model: Network, preprocessing: Preprocessing, device: &Device, options: &FeatureOptions) -> Result<Self> {
        let device = device.clone().without_autodiff();
        let model = model.with_timing(options.unroll, options.image_off)?.valid();
        let all = model.feature_layers();
        let layers = match &options.layers {
            None => all.clone(),
            Some(wanted) => {
                if let Some(bad) = wanted.iter().find(|l| !all.contains(l)) {
                    return Err(NeuralError::Invalid(format!("--layers: the network has no layer {bad:?}; its layers are {}", all.join(", "))));
                }
                all.iter().filter(|l| wanted.contains(l)).cloned().collect()
            }
        };
        let unroll = model.times();
        let times = match &options.times {
            None => (0..unroll).collect(),
            Some(t) => {
                if let Some(bad) = t.iter().find(|&&s| s >= unroll) {
                    return Err(NeuralError::Invalid(format!("--times: step {bad} is past the last step ({}) of a {unroll}-step forward pass", unroll - 1)));
                }
                let mut t = t.clone();
                t.sort_unstable();
                t.dedup();
                t
            }
        };
        let image_off = match &model {
            Network::ConvRnn(m) => Some(m.plan.image_off),
            Network::Cnn(_) => None,
        };
        Ok(Self { model, preprocessing, device, layers, times, unroll, image_off })
    }

    /// Runs stimuli `range` through the network: per time step (all of them), per feature
    /// layer (all of them), the outputs; and the readout's logits per step.
    pub fn forward(&self, stimuli: &Stimuli, range: std::ops::Range<usize>) -> (Vec<Vec<Tensor<4>>>, Vec<Tensor<2>>) {
        let batch = stimuli.batch(range, &self.preprocessing);
        let images = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &self.device);
        self.model.step_outputs(images)
    }
}

/// Host values of a tensor, row-major.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("float features")
}

/// The most bytes of layer outputs one forward pass may hold (all layers, all steps).
const OUTPUT_BUDGET: usize = 1 << 30;

/// Extracted features in a scratch folder, removed when the store is dropped.
pub struct FeatureStore {
    dir: PathBuf,
    pub stimuli: usize,
    pub arrays: Vec<ArrayInfo>,
}

impl Drop for FeatureStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl FeatureStore {
    fn path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("{index:05}.f32"))
    }

    /// Array `index` as `[stimuli × columns]`, row-major.
    pub fn read(&self, index: usize) -> Result<Vec<f32>> {
        let path = self.path(index);
        let mut bytes = Vec::new();
        File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| NeuralError::io(&path, e))?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// Bytes the store holds.
    pub fn bytes(&self) -> u64 {
        self.arrays.iter().map(|a| (self.stimuli * a.columns * 4) as u64).sum()
    }
}

/// Bytes free on the file system holding `path` (or its closest existing ancestor).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `stat` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// A human-readable size.
pub fn size_text(bytes: u64) -> String {
    let b = bytes as f64;
    match b {
        _ if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        _ if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} kB", b / 1e3),
    }
}

/// What an extraction will store and hold, found by running the network on one stimulus.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The arrays it stores, with `pool` applied.
    pub arrays: Vec<ArrayInfo>,
    pub pool: Pool,
    /// Bytes of layer outputs (every layer, every step) one stimulus's forward pass holds.
    pub per_image_bytes: usize,
}

impl Plan {
    /// Bytes the store will take for `stimuli` stimuli.
    pub fn store_bytes(&self, stimuli: usize) -> u64 {
        self.arrays.iter().map(|a| stimuli as u64 * a.columns as u64 * 4).sum()
    }
}

/// The plan of extracting `viewer`'s features of `stimuli` with `pool`.
pub fn plan(viewer: &Viewer, stimuli: &Stimuli, pool: Pool) -> Plan {
    let (steps, _) = viewer.forward(stimuli, 0..1);
    let per_image_bytes = steps.iter().flatten().map(|t| t.dims().iter().product::<usize>() * 4).sum();
    let all = viewer.model.feature_layers();
    let mut arrays = Vec::new();
    for &t in &viewer.times {
        for layer in &viewer.layers {
            let index = all.iter().position(|l| l == layer).expect("checked");
            let [_, c, h, w] = steps[t][index].dims();
            let columns = if pool == Pool::Avg { c } else { c * h * w };
            arrays.push(ArrayInfo { layer: layer.clone(), step: t, shape: [c, h, w], columns });
        }
    }
    Plan { arrays, pool, per_image_bytes }
}

/// Refuses, with the size and what to do, a store of `needed` bytes that would not fit in
/// what is free at `path` (with a 5 % margin).
pub fn check_space(needed: u64, path: &Path, what: &str) -> Result<()> {
    if let Some(free) = free_bytes(path)
        && needed as f64 > 0.95 * free as f64
    {
        return Err(NeuralError::Invalid(format!(
            "{what} would take {} but only {} is free at {}; use --pool avg or --pool pca:K, or fewer --layers / --times",
            size_text(needed),
            size_text(free),
            path.display()
        )));
    }
    Ok(())
}

/// Extracts `viewer`'s features of `stimuli` as `plan` says into a store under `scratch`
/// (pooling `Avg` as it goes; `Pca` is applied by [`write_npz`]). `progress(done)` is called
/// after each batch.
pub fn extract(viewer: &Viewer, stimuli: &Stimuli, plan: Plan, batch_size: usize, scratch: &Path, progress: &mut dyn FnMut(usize)) -> Result<FeatureStore> {
    let Plan { arrays, pool, per_image_bytes } = plan;
    let store_pool = if pool == Pool::Avg { Pool::Avg } else { Pool::None };
    std::fs::create_dir_all(scratch).map_err(|e| NeuralError::io(scratch, e))?;
    let dir = scratch.join(format!(".features-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).map_err(|e| NeuralError::io(&dir, e))?;
    let store = FeatureStore { dir, stimuli: stimuli.len(), arrays };
    let mut files: Vec<BufWriter<File>> = (0..store.arrays.len())
        .map(|i| File::create(store.path(i)).map(|f| BufWriter::with_capacity(1 << 20, f)).map_err(|e| NeuralError::io(store.path(i), e)))
        .collect::<Result<_>>()?;
    let all = viewer.model.feature_layers();
    let index: Vec<usize> = store.arrays.iter().map(|a| all.iter().position(|l| *l == a.layer).expect("planned")).collect();
    // A forward pass keeps every layer's output at every step until the batch is stored:
    // keep that under OUTPUT_BUDGET bytes, whatever the requested batch.
    let batch_size = batch_size.min(OUTPUT_BUDGET / per_image_bytes.max(1)).max(1);
    let mut start = 0;
    while start < stimuli.len() {
        let end = (start + batch_size).min(stimuli.len());
        let (steps, _) = viewer.forward(stimuli, start..end);
        for (k, a) in store.arrays.iter().enumerate() {
            let out = steps[a.step][index[k]].clone();
            let out = if store_pool == Pool::Avg { out.mean_dim(3).mean_dim(2) } else { out };
            let values = host(out);
            let mut bytes = Vec::with_capacity(values.len() * 4);
            for v in values {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            files[k].write_all(&bytes).map_err(|e| NeuralError::io(store.path(k), e))?;
        }
        start = end;
        progress(end);
    }
    for (k, f) in files.into_iter().enumerate() {
        f.into_inner().map_err(|e| NeuralError::io(store.path(k), e.into_error()))?.sync_all().map_err(|e| NeuralError::io(store.path(k), e))?;
    }
    Ok(store)
}

fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The leading `k` principal-component scores of `x` (`[rows × cols]`), `[rows × min(k, rank)]`
/// row-major: centred over the rows, from the Gram matrix's eigenvectors (U √λ).
pub fn pca_scores(x: &[f32], rows: usize, cols: usize, k: usize) -> (Vec<f32>, usize) {
    let g = gram(x, rows, cols);
    let all: Vec<usize> = (0..rows).collect();
    let (centred, _) = centred_blocks(&g, &all, &[]);
    let energy: f64 = (0..rows).map(|i| g[(i, i)]).sum();
    let (values, u) = leading_eigen(&centred, k, 1e-10 * energy);
    let kept = values.len();
    let mut out = Vec::with_capacity(rows * kept);
    for i in 0..rows {
        out.extend((0..kept).map(|j| (u[(i, j)] * values[j].sqrt()) as f32));
    }
    (out, kept)
}

/// What a features file says about where its numbers came from (its `meta` entry, JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeatureMeta {
    pub run: String,
    pub checkpoint: String,
    pub step: usize,
    pub stimuli: String,
    pub pool: String,
    pub unroll: usize,
    pub image_off: Option<usize>,
    pub preprocessing: Preprocessing,
}

/// Packs `store` into an NPZ at `path` (written to a temporary file, then renamed):
/// `stimulus_id` [n], `labels` [n] (empty string where unknown), `layers`, `times`, `arrays`
/// (the names of the feature arrays, in order), `meta` (JSON) and, per layer and step,
/// `LAYER.tSS` `[n × columns]` f32 with `shape.LAYER` `[3]` the layer's output shape.
pub fn write_npz(store: &FeatureStore, stimuli: &Stimuli, meta: &FeatureMeta, pool: Pool, path: &Path) -> Result<Vec<(String, usize)>> {
    use npyz::WriterBuilder;
    use npyz::npz::NpzWriter;
    let tmp = path.with_file_name(format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("features.npz"), std::process::id()));
    let io = |e: std::io::Error| NeuralError::io(path, e);
    let result = (|| -> Result<Vec<(String, usize)>> {
        let file = File::create(&tmp).map_err(|e| NeuralError::io(&tmp, e))?;
        let mut npz = NpzWriter::new(BufWriter::new(file));
        let stored = || npyz::zip::write::FileOptions::default().compression_method(npyz::zip::CompressionMethod::Stored).large_file(true).last_modified_time(npyz::zip::DateTime::default());
        let strings = |npz: &mut NpzWriter<BufWriter<File>>, name: &str, values: &[String]| plastic_data::npz_write_strings(npz, name, values, stored());
        strings(&mut npz, "stimulus_id", &stimuli.ids).map_err(io)?;
        strings(&mut npz, "labels", &stimuli.labels.iter().map(|l| l.clone().unwrap_or_default()).collect::<Vec<_>>()).map_err(io)?;
        let mut layers: Vec<String> = Vec::new();
        let mut times: Vec<usize> = Vec::new();
        for a in &store.arrays {
            if !layers.contains(&a.layer) {
                layers.push(a.layer.clone());
            }
            if !times.contains(&a.step) {
                times.push(a.step);
            }
        }
        strings(&mut npz, "layers", &layers).map_err(io)?;
        let mut w = npz.array::<i64>("times", stored()).map_err(io)?.default_dtype().shape(&[times.len() as u64]).begin_nd().map_err(io)?;
        w.extend(times.iter().map(|&t| t as i64)).map_err(io)?;
        w.finish().map_err(io)?;
        strings(&mut npz, "arrays", &store.arrays.iter().map(ArrayInfo::key).collect::<Vec<_>>()).map_err(io)?;
        strings(&mut npz, "meta", &[serde_json::to_string(meta).expect("plain data")]).map_err(io)?;
        for layer in &layers {
            let a = store.arrays.iter().find(|a| &a.layer == layer).expect("listed");
            let mut w = npz.array::<i64>(&format!("shape.{layer}"), stored()).map_err(io)?.default_dtype().shape(&[3]).begin_nd().map_err(io)?;
            w.extend(a.shape.iter().map(|&d| d as i64)).map_err(io)?;
            w.finish().map_err(io)?;
        }
        let mut written = Vec::new();
        for (k, a) in store.arrays.iter().enumerate() {
            let values = store.read(k)?;
            let (values, columns) = match pool {
                Pool::Pca(n) => pca_scores(&values, store.stimuli, a.columns, n),
                _ => (values, a.columns),
            };
            let mut w = npz.array::<f32>(&a.key(), stored()).map_err(io)?.default_dtype().shape(&[store.stimuli as u64, columns as u64]).begin_nd().map_err(io)?;
            w.extend(values).map_err(io)?;
            w.finish().map_err(io)?;
            written.push((a.key(), columns));
        }
        let file = npz.zip_writer().finish().map_err(|e| io(std::io::Error::other(e)))?.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_parses_and_refuses() {
        assert_eq!("none".parse::<Pool>(), Ok(Pool::None));
        assert_eq!("avg".parse::<Pool>(), Ok(Pool::Avg));
        assert_eq!("pca:20".parse::<Pool>(), Ok(Pool::Pca(20)));
        assert!("pca:0".parse::<Pool>().unwrap_err().contains("pca:K"));
        assert!("max".parse::<Pool>().is_err());
    }

    #[test]
    fn pca_scores_keep_the_variance_in_decreasing_order() {
        // Rank-2 data in 6 columns: two components, variances in decreasing order, summing to
        // the total variance.
        let rows = 20;
        let x: Vec<f32> = (0..rows)
            .flat_map(|i| {
                let (a, b) = ((i as f32 * 0.7).sin() * 3.0, (i as f32 * 1.3).cos());
                [a, b, a + b, a - b, 2.0 * a, 0.5 * b]
            })
            .collect();
        let (scores, kept) = pca_scores(&x, rows, 6, 5);
        assert_eq!(kept, 2);
        let var = |j: usize| (0..rows).map(|i| (scores[i * kept + j] as f64).powi(2)).sum::<f64>();
        let mean = |k: usize| (0..rows).map(|i| x[i * 6 + k] as f64).sum::<f64>() / rows as f64;
        let total: f64 = (0..6).map(|k| (0..rows).map(|i| (x[i * 6 + k] as f64 - mean(k)).powi(2)).sum::<f64>()).sum();
        assert!(var(0) >= var(1));
        assert!(((var(0) + var(1)) - total).abs() < 1e-3 * total, "{} vs {total}", var(0) + var(1));
    }
}
