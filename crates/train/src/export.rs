//! Exporting weights for PyTorch users: a safetensors file with PyTorch's names and layouts.
//!
//! Names are the model's parameter paths without burn's enum-variant segments
//! (`stages.0.conv.weight`). Linear weights (and their B and sign-symmetry magnitudes) are
//! transposed to PyTorch's `[out, in]`, whatever the layer is called (a CNN's `linear`, a
//! ConvRNN's `readout`): they are told apart from conv kernels by their rank, 2 against 4.
//! BatchNorm's `gamma` / `beta` become `weight` / `bias`. The file's metadata maps each
//! feedback layer name (`conv1`, `fc3`, …) to its parameter prefix.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use plastic_rules::FeedbackNetwork;

use crate::error::Result;
use crate::network::Network;
use crate::store::{HostTensor, module_tensors, to_safetensors, write_atomic};

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
        ("plastic.layout".to_string(), "conv kernels [out, in/groups, kh, kw]; linear [out, in]; feedback B in its layer's kernel layout".to_string()),
    ]);
    if let Some(p) = preprocessing {
        metadata.insert("plastic.preprocessing".to_string(), serde_json::to_string(p).expect("plain data"));
    }
    write_atomic(path, &to_safetensors(&tensors, metadata))
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
