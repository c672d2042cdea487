//! The three analyses end to end, as the CLI runs them: load a run's model and preprocessing
//! (never its training data), read the stimuli, compute, write the files.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use plastic_data::Stimuli;
use plastic_plot::{BarChart, HeatMap, bar_chart, heat_map};
use plastic_train::RunDir;
use plastic_train::checkpoint::load_model;
use serde::Serialize;

use crate::error::{NeuralError, Result};
use crate::features::{FeatureMeta, FeatureOptions, Pool, Viewer, check_space, extract, plan};
use crate::fit::{FeatureSource, FitOptions, FitReport, fit};
use crate::ost::{Criterion, ReferenceCorrelation, Solution, correlate, decoder_probabilities, read_labels, read_reference, readout_probabilities, solutions};
use crate::responses::Responses;

/// A run's model, ready to be shown stimuli.
pub struct Subject {
    pub viewer: Viewer,
    pub run: PathBuf,
    pub checkpoint: PathBuf,
    pub step: usize,
}

impl Subject {
    pub fn open(run: &Path, checkpoint: Option<&Path>, device: &Device, options: &FeatureOptions) -> Result<Self> {
        let loaded = load_model(&RunDir::new(run), checkpoint, device)?;
        let viewer = Viewer::new(loaded.model, loaded.preprocessing, device, options)?;
        Ok(Self { viewer, run: run.to_path_buf(), checkpoint: loaded.checkpoint, step: loaded.step })
    }

    fn meta(&self, stimuli: &Stimuli, pool: Pool) -> FeatureMeta {
        FeatureMeta {
            run: self.run.display().to_string(),
            checkpoint: self.checkpoint.display().to_string(),
            step: self.step,
            stimuli: stimuli.source.display().to_string(),
            pool: pool.to_string(),
            unroll: self.viewer.unroll,
            image_off: self.viewer.image_off,
            preprocessing: self.viewer.preprocessing.clone(),
        }
    }
}

/// What `plastic features` wrote.
#[derive(Debug, Serialize)]
pub struct FeaturesWritten {
    pub path: PathBuf,
    pub stimuli: usize,
    pub arrays: Vec<(String, usize)>,
    pub bytes: u64,
}

/// `plastic features`: every chosen layer × step for `stimuli`, into one NPZ at `out`.
pub fn features(subject: &Subject, stimuli_path: &Path, options: &FeatureOptions, out: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<FeaturesWritten> {
    let stimuli = Stimuli::load(stimuli_path, &subject.viewer.preprocessing)?;
    let planned = plan(&subject.viewer, &stimuli, options.pool);
    let n = stimuli.len() as u64;
    let stored = planned.store_bytes(stimuli.len());
    let written: u64 = match options.pool {
        Pool::Pca(k) => planned.arrays.len() as u64 * n * (k as u64).min(n) * 4,
        _ => stored,
    };
    let folder = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // The scratch store and the file live side by side until the file is complete.
    check_space(stored + written, folder, &format!("features of {} stimuli × {} arrays", stimuli.len(), planned.arrays.len()))?;
    let total = stimuli.len();
    let store = extract(&subject.viewer, &stimuli, planned, options.batch_size, folder, &mut |done| progress(done, total))?;
    let arrays = crate::features::write_npz(&store, &stimuli, &subject.meta(&stimuli, options.pool), options.pool, out)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(FeaturesWritten { path: out.to_path_buf(), stimuli: stimuli.len(), arrays, bytes })
}

/// What `plastic neural-fit` wrote and found.
#[derive(Debug, Serialize)]
pub struct NeuralFitWritten {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub report: FitReport,
}

/// `plastic neural-fit`: features of the stimuli that have responses, fitted per layer × step
/// (× time bin) to every region's neuroids; writes `neural_fit.csv`, `neural_fit.json`,
/// `commitment.json` and one heat map per region into `out`.
/// `neural-fit` end to end. With `pca_stimuli`, PCA is fitted on that stimulus set's features
/// (once per layer × step) rather than on each training fold.
#[allow(clippy::too_many_arguments)]
pub fn neural_fit(subject: &Subject, stimuli_path: &Path, responses_path: &Path, pca_stimuli: Option<&Path>, options: &FitOptions, batch_size: usize, out: &Path, progress: &mut dyn FnMut(&str, usize, usize)) -> Result<NeuralFitWritten> {
    // The cheap checks first: the responses and their match with the stimuli.
    let responses = Responses::load(responses_path)?;
    let stimuli = Stimuli::load(stimuli_path, &subject.viewer.preprocessing)?;
    let rows = responses.rows_in(&stimuli.ids, stimuli_path)?;
    let pca_set = pca_stimuli.map(|p| Stimuli::load(p, &subject.viewer.preprocessing)).transpose()?;
    std::fs::create_dir_all(out).map_err(|e| NeuralError::io(out, e))?;
    let planned = plan(&subject.viewer, &stimuli, Pool::None);
    let pca_rows = pca_set.as_ref().map_or(0, Stimuli::len);
    check_space(planned.store_bytes(stimuli.len() + pca_rows), out, &format!("the features of {} stimuli × {} layer-steps", stimuli.len() + pca_rows, planned.arrays.len()))?;
    let total = stimuli.len();
    let pca_store = match &pca_set {
        Some(set) => Some(extract(&subject.viewer, set, planned.clone(), batch_size, out, &mut |done| progress("PCA stimuli", done, pca_rows))?),
        None => None,
    };
    let store = extract(&subject.viewer, &stimuli, planned, batch_size, out, &mut |done| progress("features", done, total))?;
    let report = fit(&store, &rows, &responses, options, pca_store.as_ref().map(|s| s as &dyn FeatureSource), &mut |done, total| progress("fits", done, total))?;
    drop((store, pca_store));
    let files = write_fit(&report, subject, pca_stimuli, out)?;
    Ok(NeuralFitWritten { dir: out.to_path_buf(), files, report })
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    plastic_train::store::write_atomic(path, text.as_bytes()).map_err(NeuralError::from)
}

fn number(v: f64) -> String {
    if v.is_finite() { format!("{v:.6}") } else { String::new() }
}

fn write_fit(report: &FitReport, subject: &Subject, pca_stimuli: Option<&Path>, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut csv = String::from("region,bin,bin_start_ms,bin_end_ms,layer,step,score,raw,ceiling,fold_std,neuroid_q25,neuroid_q75,neuroids\n");
    for s in &report.scores {
        let (start, end) = report.time_bins.as_ref().map_or((String::new(), String::new()), |b| (b[s.bin].0.to_string(), b[s.bin].1.to_string()));
        csv.push_str(&format!(
            "{},{},{start},{end},{},{},{},{},{},{},{},{},{}\n",
            s.region,
            s.bin,
            s.layer,
            s.step,
            number(s.score),
            number(s.raw),
            s.ceiling.map_or(String::new(), number),
            number(s.fold_std),
            number(s.neuroid_q25),
            number(s.neuroid_q75),
            s.neuroids
        ));
    }
    let path = out.join("neural_fit.csv");
    write_text(&path, &csv)?;
    files.push(path);
    let json = serde_json::json!({
        "run": subject.run.display().to_string(),
        "checkpoint": subject.checkpoint.display().to_string(),
        "step": subject.step,
        "unroll": subject.viewer.unroll,
        "image_off": subject.viewer.image_off,
        "pca_stimuli": pca_stimuli.map(|p| p.display().to_string()),
        "report": report,
    });
    let path = out.join("neural_fit.json");
    write_text(&path, &serde_json::to_string_pretty(&json).expect("plain data"))?;
    files.push(path);
    // The region-to-layer commitment, reusable as it is.
    let commitment: serde_json::Map<String, serde_json::Value> =
        report.best.iter().map(|b| (b.region.clone(), serde_json::json!({ "layer": b.layer, "step": b.step, "score": b.score }))).collect();
    let path = out.join("commitment.json");
    write_text(&path, &serde_json::to_string_pretty(&commitment).expect("plain data"))?;
    files.push(path);
    // Heat maps: layer × step, the score averaged over bins.
    let mut layers: Vec<String> = Vec::new();
    let mut steps: Vec<usize> = Vec::new();
    for s in &report.scores {
        if !layers.contains(&s.layer) {
            layers.push(s.layer.clone());
        }
        if !steps.contains(&s.step) {
            steps.push(s.step);
        }
    }
    steps.sort_unstable();
    for region in &report.regions {
        let value = |layer: &str, step: usize| {
            let v: Vec<f64> = report.scores.iter().filter(|s| &s.region == region && s.layer == layer && s.step == step).map(|s| s.score).collect();
            if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
        };
        let values: Vec<Vec<f64>> = layers.iter().map(|l| steps.iter().map(|&t| value(l, t)).collect()).collect();
        let ceiled = report.scores.iter().any(|s| &s.region == region && s.ceiling.is_some());
        let map = HeatMap {
            title: format!("{region}: {} predictivity ({})", if ceiled { "ceiled" } else { "raw" }, serde_json::to_value(report.options.method).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()),
            x_label: "time step".into(),
            y_label: "layer".into(),
            row_names: layers.clone(),
            col_names: steps.iter().map(|t| t.to_string()).collect(),
            cell_text: (steps.len() <= 20).then(|| values.iter().map(|r| r.iter().map(|v| if v.is_finite() { format!("{v:.2}") } else { "–".into() }).collect()).collect()),
            values,
            range: None,
        };
        let safe: String = region.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let path = out.join(format!("neural_fit_{safe}.png"));
        heat_map(&path, &map)?;
        files.push(path);
    }
    Ok(files)
}

/// What `plastic ost` wrote and found.
#[derive(Debug, Serialize)]
pub struct OstWritten {
    pub files: Vec<PathBuf>,
    pub images: usize,
    pub solved: usize,
    pub criterion: String,
    pub decoder: String,
    pub mean_ost: Option<f64>,
    pub reference: Option<ReferenceCorrelation>,
    #[serde(skip)]
    pub solutions: Vec<Solution>,
}

/// Where `ost` reads each step's answer from.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoder {
    /// The network's own readout applied to the last layer at each step.
    Readout,
    /// Per-step logistic-regression decoders of a layer's channel means, cross-validated.
    Logistic { layer: String, folds: usize, alpha: f64, seed: u64 },
}

/// `plastic ost`: per image, the first step from which the decoded answer meets `criterion`
/// for good.
#[allow(clippy::too_many_arguments)]
pub fn ost(subject: &Subject, stimuli_path: &Path, labels: Option<&Path>, reference: Option<&Path>, criterion: Criterion, decoder: &Decoder, batch_size: usize, out: &Path) -> Result<OstWritten> {
    if subject.viewer.unroll < 2 {
        return Err(NeuralError::Invalid("ost needs a recurrent model (a ConvRNN unrolled over time steps); this run's model has one step".into()));
    }
    let classes = subject.viewer.preprocessing.class_names.clone();
    let mut stimuli = Stimuli::load(stimuli_path, &subject.viewer.preprocessing)?;
    if let Some(path) = labels {
        let given = read_labels(path, &classes)?;
        let index: std::collections::HashMap<&str, usize> = given.iter().map(|(id, k)| (id.as_str(), *k)).collect();
        for (id, label) in stimuli.ids.iter().zip(stimuli.labels.iter_mut()) {
            if let Some(&k) = index.get(id.as_str()) {
                *label = Some(classes[k].clone());
            }
        }
    }
    let labelled = stimuli.labelled(&classes)?;
    let labels: Vec<usize> = labelled.labels.iter().map(|&l| l as usize).collect();
    let probs = match decoder {
        Decoder::Readout => readout_probabilities(&subject.viewer, &stimuli, batch_size),
        Decoder::Logistic { layer, folds, alpha, seed } => decoder_probabilities(&subject.viewer, &stimuli, layer, &labels, *folds, *alpha, *seed, batch_size)?,
    };
    let solved = solutions(&probs, &labels, &stimuli.ids, &classes, criterion);
    let reference = reference.map(read_reference).transpose()?.map(|r| correlate(&solved, &r));
    std::fs::create_dir_all(out).map_err(|e| NeuralError::io(out, e))?;
    let mut csv = String::from("stimulus_id,label,ost,solved,prediction_last,p_label_last\n");
    for s in &solved {
        csv.push_str(&format!(
            "{},{},{},{},{},{:.6}\n",
            s.stimulus_id,
            s.label,
            s.ost.map_or(String::new(), |t| t.to_string()),
            s.ost.is_some(),
            s.prediction,
            s.p_label.last().copied().unwrap_or(f64::NAN)
        ));
    }
    let mut files = Vec::new();
    let path = out.join("ost.csv");
    write_text(&path, &csv)?;
    files.push(path);
    let steps = probs.len();
    let mut counts = vec![0.0; steps + 1];
    for s in &solved {
        counts[s.ost.unwrap_or(steps)] += 1.0;
    }
    let solved_n = solved.iter().filter(|s| s.ost.is_some()).count();
    let chart = BarChart {
        title: format!("Solution times ({criterion}{}): {solved_n} of {} solved", if matches!(decoder, Decoder::Readout) { "" } else { ", decoder" }, solved.len()),
        x_label: "time step".into(),
        y_label: "images".into(),
        categories: (0..steps).map(|t| t.to_string()).chain(std::iter::once("never".to_string())).collect(),
        values: counts,
    };
    let path = out.join("ost_hist.png");
    bar_chart(&path, &chart)?;
    files.push(path);
    let times: Vec<f64> = solved.iter().filter_map(|s| s.ost.map(|t| t as f64)).collect();
    let mean_ost = (!times.is_empty()).then(|| times.iter().sum::<f64>() / times.len() as f64);
    let decoder = match decoder {
        Decoder::Readout => "readout".to_string(),
        Decoder::Logistic { layer, folds, .. } => format!("logistic on {layer} ({folds}-fold)"),
    };
    let written = OstWritten { files, images: solved.len(), solved: solved_n, criterion: criterion.to_string(), decoder, mean_ost, reference, solutions: solved };
    let path = out.join("ost.json");
    let json = serde_json::json!({ "run": subject.run.display().to_string(), "step": subject.step, "unroll": subject.viewer.unroll, "image_off": subject.viewer.image_off, "result": &written });
    write_text(&path, &serde_json::to_string_pretty(&json).expect("plain data"))?;
    let mut written = written;
    written.files.push(path);
    Ok(written)
}
