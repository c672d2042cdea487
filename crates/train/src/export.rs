//! Exporting weights for PyTorch users: a safetensors file with PyTorch's names and layouts.
//!
//! Names are the model's parameter paths without burn's enum-variant segments
//! (`stages.0.conv.weight`). Linear weights (and their B and sign-symmetry magnitudes) are
//! transposed to PyTorch's `[out, in]`, whatever the layer is called (a CNN's `linear`, a
//! ConvRNN's `readout`): they are told apart from conv kernels by their rank, 2 against 4.
//! BatchNorm's `gamma` / `beta` become `weight` / `bias`. Direct feedback alignment's B,
//! `direct_feedback.N.feedback` (burn's `[input, classes]`), belongs to no layer and is
//! transposed like a Linear kernel, to `[classes, input]`. The file's metadata maps each
//! feedback layer name (`conv1`, `fc3`, …) to its parameter prefix.
//!
//! [`export_pytorch`] writes a folder PyTorch can load without plastic: those weights, the
//! resolved graph as data (`model.json`), the run's config, `plastic_torch.py` (the module in
//! the repository's `python/`, which rebuilds every zoo CNN and ConvRNN from `model.json`) and
//! a probe batch with plastic's own outputs at every step, against which that module checks
//! itself (`python plastic_torch.py check DIR`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use plastic_rules::FeedbackNetwork;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::LoadedModel;
use crate::error::{Result, TrainError};
use crate::network::Network;
use crate::store::{HostTensor, module_tensors, to_safetensors, write_atomic};

/// The PyTorch re-implementation, shipped in every PyTorch export. It is kept (and tested) in
/// the repository as an ordinary Python file; this is that file.
pub const PLASTIC_TORCH_PY: &str = include_str!("../../../python/plastic_torch.py");

/// Images in an export's probe batch.
const PROBE_BATCH: usize = 2;

/// The exported name of a parameter path.
fn torch_name(path: &str) -> String {
    // Variant segments are capitalised (`Cnn`, `Conv`, `Dense`); fields are snake_case.
    let parts: Vec<&str> = path.split('.').filter(|p| !p.starts_with(|c: char| c.is_ascii_uppercase())).collect();
    let mut name = parts.join(".");
    for (from, to) in [(".gamma", ".weight"), (".beta", ".bias")] {
        if let Some(stem) = name.strip_suffix(from) {
            name = format!("{stem}{to}");
        }
    }
    name
}

/// Whether a parameter is a Linear kernel in burn's `[in, out]` layout: W, B or the magnitudes
/// of a `FeedbackLinear`. Every other kernel of our models is a convolution's (rank 4); biases
/// and norm parameters have rank 1.
fn is_linear_kernel(path: &str, t: &HostTensor) -> bool {
    t.shape.len() == 2 && matches!(path.rsplit('.').next(), Some("weight" | "feedback" | "magnitude"))
}

fn transpose(t: &HostTensor) -> HostTensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let mut values = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            values[j * r + i] = t.values[i * c + j];
        }
    }
    HostTensor { shape: vec![c, r], values }
}

/// The tensors of `model` under PyTorch names and layouts.
pub fn torch_tensors(model: &Network) -> BTreeMap<String, HostTensor> {
    module_tensors(model)
        .into_iter()
        .map(|(path, t)| {
            let t = if is_linear_kernel(&path, &t) { transpose(&t) } else { t };
            (torch_name(&path), t)
        })
        .collect()
}

/// Writes `model` to `path` (atomically), with what an image must go through to be shown to
/// it (`plastic.preprocessing`, JSON) when given.
pub fn export_safetensors(model: &Network, preprocessing: Option<&plastic_data::Preprocessing>, path: &Path) -> Result<()> {
    let tensors = torch_tensors(model);
    // Each feedback layer's name → the exported prefix of its parameters.
    let ids = crate::optim::param_ids(model);
    let mut layers = serde_json::Map::new();
    for (name, layer) in model.feedback_layers() {
        if let Some((path, _)) = ids.iter().find(|(_, id)| **id == layer.weight_id()) {
            layers.insert(name, torch_name(path).trim_end_matches(".weight").into());
        }
    }
    let mut metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("plastic.layers".to_string(), serde_json::Value::Object(layers).to_string()),
        ("plastic.layout".to_string(), "conv kernels [out, in/groups, kh, kw]; linear [out, in]; feedback B in its layer's kernel layout; direct feedback B [classes, input]".to_string()),
    ]);
    if let Some(p) = preprocessing {
        metadata.insert("plastic.preprocessing".to_string(), serde_json::to_string(p).expect("plain data"));
    }
    write_atomic(path, &to_safetensors(&tensors, metadata))
}

/// The resolved graph of `loaded`'s model as data: a CNN's stages (`StageSpec`s) or a
/// ConvRNN's layer wiring and unroll plan, with the input shape, classes and preprocessing.
pub fn architecture(loaded: &LoadedModel) -> serde_json::Value {
    let input = loaded.preprocessing.shape();
    let classes = loaded.preprocessing.num_classes();
    let graph = match &loaded.model {
        Network::Cnn(_) => {
            let cnn = loaded.config.model.cnn().expect("a CNN run has a zoo kind");
            serde_json::json!({ "kind": "cnn", "stages": cnn.stages(input, classes) })
        }
        Network::ConvRnn(m) => serde_json::json!({
            "kind": "convrnn",
            "plan": m.plan,
            "layers": m.layers.iter().map(|l| &l.wiring).collect::<Vec<_>>(),
        }),
    };
    serde_json::json!({
        "format": "plastic-pytorch/1",
        "step": loaded.step,
        "input": input,
        "classes": classes,
        "preprocessing": loaded.preprocessing,
        "feature_layers": loaded.model.feature_layers(),
        "model": graph,
    })
}

/// A fixed probe batch `[PROBE_BATCH, c, h, w]`: uniform values in [−2, 2] from a fixed
/// SplitMix64 stream, about the range of normalised pixels.
fn probe_images(shape: [usize; 3]) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..PROBE_BATCH * shape.iter().product::<usize>())
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// plastic's outputs on the probe batch: `input`, the prediction `logits`, and at every step
/// t every feature layer's output (`step{t}/{layer}`) and the readout of the last layer
/// (`step{t}/readout`).
pub fn probe(model: &Network, input: [usize; 3]) -> BTreeMap<String, HostTensor> {
    let device = Device::flex();
    let [c, h, w] = input;
    let images = Tensor::<4>::from_data(TensorData::new(probe_images(input), [PROBE_BATCH, c, h, w]), &device);
    let model = model.clone().valid();
    let mut out = BTreeMap::new();
    out.insert("input".to_string(), HostTensor::from_tensor(images.clone()));
    out.insert("logits".to_string(), HostTensor::from_tensor(model.forward(images.clone()).logits));
    let (steps, readouts) = model.step_outputs(images);
    let names = model.feature_layers();
    for (t, (layers, readout)) in steps.into_iter().zip(readouts).enumerate() {
        for (name, y) in names.iter().zip(layers) {
            out.insert(format!("step{t}/{name}"), HostTensor::from_tensor(y));
        }
        out.insert(format!("step{t}/readout"), HostTensor::from_tensor(readout));
    }
    out
}

/// Writes the PyTorch export of `loaded` to the folder `dir`: `model.safetensors`,
/// `model.json` ([`architecture`]), `config.toml`, `preprocessing.json`, `plastic_torch.py`
/// and `probe.safetensors` ([`probe`]). Each file is written atomically; files of an earlier
/// export in `dir` are replaced, nothing else there is touched.
pub fn export_pytorch(loaded: &LoadedModel, dir: &Path) -> Result<()> {
    if dir.is_file() {
        return Err(TrainError::Run(format!("--output {}: a PyTorch export is a folder, and this is a file", dir.display())));
    }
    let json = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("plain data") + "\n";
    // The probe first: everything that runs the model is done before anything is replaced, so
    // a failed export leaves an earlier one in `dir` whole.
    let probe = to_safetensors(&probe(&loaded.model, loaded.preprocessing.shape()), HashMap::from([("format".to_string(), "pt".to_string())]));
    export_safetensors(&loaded.model, Some(&loaded.preprocessing), &dir.join("model.safetensors"))?;
    write_atomic(&dir.join("model.json"), json(&architecture(loaded)).as_bytes())?;
    write_atomic(&dir.join("config.toml"), loaded.config.to_toml().as_bytes())?;
    write_atomic(&dir.join("preprocessing.json"), json(&serde_json::to_value(&loaded.preprocessing).expect("plain data")).as_bytes())?;
    write_atomic(&dir.join("plastic_torch.py"), PLASTIC_TORCH_PY.as_bytes())?;
    write_atomic(&dir.join("probe.safetensors"), &probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::tensor::Device;

    use crate::config::RunConfig;

    #[test]
    fn names_drop_variants_and_follow_pytorch() {
        assert_eq!(torch_name("Cnn.stages.2.Dense.linear.weight"), "stages.2.linear.weight");
        assert_eq!(torch_name("Cnn.stages.2.Dense.linear.bias"), "stages.2.linear.bias");
        assert_eq!(torch_name("Cnn.stages.0.Conv.norm.gamma"), "stages.0.norm.weight");
        assert_eq!(torch_name("Cnn.stages.1.Residual.norm1.running_var"), "stages.1.norm1.running_var");
        let t = HostTensor { shape: vec![2, 3], values: vec![1., 2., 3., 4., 5., 6.] };
        assert_eq!(transpose(&t), HostTensor { shape: vec![3, 2], values: vec![1., 4., 2., 5., 3., 6.] });
    }

    /// Every Linear kernel of every model kind leaves as PyTorch's `[out, in]`, its B and
    /// magnitudes too, holding W's (B's) values transposed; conv kernels keep their layout.
    #[test]
    fn every_linear_kernel_is_exported_as_out_by_in() {
        let convrnn = "[model]\nkind = \"convrnn\"\n[model.convrnn]\ntimes = 3\n[[model.convrnn.layers]]\nname = \"conv1\"\nchannels = 6\ncell = { kind = \"gru\" }\n";
        let mlp = "[model]\nkind = \"mlp\"\nhidden = [6]\n";
        for (text, linears) in [(convrnn, vec![("readout", [5, 6])]), (mlp, vec![("stages.0.linear", [6, 64]), ("stages.1.linear", [5, 6])])] {
            for (rule, stored) in [("feedback_alignment", "feedback"), ("sign_symmetry", "magnitude")] {
                let overrides = [format!("rule.kind={rule}"), "rule.variant=frsf".into()];
                let config = RunConfig::parse(text, &overrides).unwrap();
                let model = Network::build(&config, [1, 8, 8], 5, &Device::flex()).unwrap();
                let burn: BTreeMap<String, HostTensor> = module_tensors(&model).into_iter().map(|(p, t)| (torch_name(&p), t)).collect();
                let torch = torch_tensors(&model);
                for (prefix, [out, d_in]) in &linears {
                    for part in ["weight", stored] {
                        let name = format!("{prefix}.{part}");
                        let t = torch.get(&name).unwrap_or_else(|| panic!("{rule}: no {name} in {:?}", torch.keys()));
                        assert_eq!(t.shape, vec![*out, *d_in], "{rule}: {name}");
                        let w = &burn[&name];
                        assert_eq!(w.shape, vec![*d_in, *out], "{rule}: {name} in burn");
                        // Row o of the export is column o of burn's kernel.
                        for (o, i) in [(0, 0), (out - 1, 0), (0, d_in - 1), (out - 1, d_in - 1)] {
                            assert_eq!(t.values[o * d_in + i], w.values[i * out + o], "{rule}: {name}[{o}, {i}]");
                        }
                    }
                }
                for (name, t) in &torch {
                    if t.shape.len() == 4 {
                        assert_eq!(t, &burn[name], "{rule}: conv tensor {name} changed");
                    }
                }
            }
        }
    }
}
