//! Exporting weights for PyTorch users: a safetensors file with PyTorch's names and layouts.
//!
//! Names are the model's parameter paths without burn's enum-variant segments
//! (`stages.0.conv.weight`). Linear weights (and their B) are transposed to PyTorch's
//! `[out, in]`; BatchNorm's `gamma` / `beta` become `weight` / `bias`. The file's metadata maps
//! each feedback layer name (`conv1`, `fc3`, …) to its parameter prefix.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use plastic_rules::FeedbackNetwork;

use crate::error::Result;
use crate::network::Network;
use crate::store::{HostTensor, module_tensors, to_safetensors, write_atomic};

/// The exported name of a parameter path, and whether its tensor is a Linear kernel.
fn torch_name(path: &str) -> (String, bool) {
    // Variant segments are capitalised (`Cnn`, `Conv`, `Dense`); fields are snake_case.
    let parts: Vec<&str> = path.split('.').filter(|p| !p.starts_with(|c: char| c.is_ascii_uppercase())).collect();
    let mut name = parts.join(".");
    let is_linear_kernel = parts.len() >= 2 && parts[parts.len() - 2] == "linear" && matches!(parts[parts.len() - 1], "weight" | "feedback" | "magnitude");
    for (from, to) in [(".gamma", ".weight"), (".beta", ".bias")] {
        if let Some(stem) = name.strip_suffix(from) {
            name = format!("{stem}{to}");
        }
    }
    (name, is_linear_kernel)
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
            let (name, linear) = torch_name(&path);
            (name, if linear { transpose(&t) } else { t })
        })
        .collect()
}

/// Writes `model` to `path` (atomically).
pub fn export_safetensors(model: &Network, path: &Path) -> Result<()> {
    let tensors = torch_tensors(model);
    // Each feedback layer's name → the exported prefix of its parameters.
    let ids = crate::optim::param_ids(model);
    let mut layers = serde_json::Map::new();
    for (name, layer) in model.feedback_layers() {
        if let Some((path, _)) = ids.iter().find(|(_, id)| **id == layer.weight_id()) {
            layers.insert(name, torch_name(path).0.trim_end_matches(".weight").into());
        }
    }
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("plastic.layers".to_string(), serde_json::Value::Object(layers).to_string()),
        ("plastic.layout".to_string(), "conv kernels [out, in/groups, kh, kw]; linear [out, in]; feedback B in its layer's kernel layout".to_string()),
    ]);
    write_atomic(path, &to_safetensors(&tensors, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_variants_and_follow_pytorch() {
        assert_eq!(torch_name("Cnn.stages.2.Dense.linear.weight"), ("stages.2.linear.weight".into(), true));
        assert_eq!(torch_name("Cnn.stages.2.Dense.linear.bias"), ("stages.2.linear.bias".into(), false));
        assert_eq!(torch_name("Cnn.stages.0.Conv.norm.gamma"), ("stages.0.norm.weight".into(), false));
        assert_eq!(torch_name("Cnn.stages.1.Residual.norm1.running_var"), ("stages.1.norm1.running_var".into(), false));
        let t = HostTensor { shape: vec![2, 3], values: vec![1., 2., 3., 4., 5., 6.] };
        assert_eq!(transpose(&t), HostTensor { shape: vec![3, 2], values: vec![1., 4., 2., 5., 3., 6.] });
    }
}
