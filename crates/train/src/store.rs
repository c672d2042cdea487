//! Named tensors in safetensors files: the parameters of a model by path, optimiser state,
//! and metadata. Files are written atomically (temporary file, fsync, rename), so an
//! interrupted write never leaves a damaged file under the final name.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use plastic_rules::replace_value;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Result, TrainError};

/// A tensor on the host: shape and f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl HostTensor {
    pub fn from_tensor<const D: usize>(t: Tensor<D>) -> Self {
        let shape = t.dims().to_vec();
        let values = t.into_data().try_into_vec_as::<f32>().expect("float tensors read as f32");
        Self { shape, values }
    }

    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.values.clone(), self.shape.clone()), device)
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("file"), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TrainError::io(path, e)
    })
}

/// Serialises named tensors with string metadata to safetensors bytes.
pub fn to_safetensors(tensors: &BTreeMap<String, HostTensor>, metadata: HashMap<String, String>) -> Vec<u8> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        tensors.iter().map(|(k, t)| (k.clone(), t.values.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone())).collect();
    let views: Vec<(String, TensorView<'_>)> =
        bytes.iter().map(|(k, b, s)| (k.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("sizes agree"))).collect();
    safetensors::tensor::serialize(views, Some(metadata)).expect("safetensors serialisation of f32 tensors")
}

/// Reads named tensors and metadata.
pub fn from_safetensors(bytes: &[u8], path: &Path) -> Result<(BTreeMap<String, HostTensor>, HashMap<String, String>)> {
    let bad = |m: String| TrainError::Checkpoint { path: path.into(), message: m };
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name} is {:?}, expected F32", view.dtype())));
        }
        let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        out.insert(name, HostTensor { shape: view.shape().to_vec(), values });
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Folds pending BatchNorm running-statistic updates into their values. burn's `RunningState`
/// keeps the latest update per thread until something syncs it, and visitors and mappers see
/// only the synced value; `valid()` syncs (the states are shared with `model`).
pub fn sync_running_state<M: Module>(model: &M) {
    let _ = model.valid();
}

/// Every float parameter (and BatchNorm running statistic) of `model`, by path.
pub fn module_tensors<M: Module>(model: &M) -> BTreeMap<String, HostTensor> {
    module_tensors_where(model, |_| true)
}

/// The parameters whose path satisfies `keep`.
pub fn module_tensors_where<M: Module>(model: &M, keep: impl Fn(&str) -> bool) -> BTreeMap<String, HostTensor> {
    struct Collect<F> {
        path: Vec<String>,
        keep: F,
        out: BTreeMap<String, HostTensor>,
    }
    impl<F: Fn(&str) -> bool> ModuleVisitor for Collect<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.path.join(".");
            if (self.keep)(&path) {
                self.out.insert(path, HostTensor::from_tensor(param.val().inner()));
            }
        }
    }
    sync_running_state(model);
    let mut c = Collect { path: Vec::new(), keep, out: BTreeMap::new() };
    model.visit(&mut c);
    c.out
}

/// Replaces every parameter of `model` by the tensor of the same path. Every parameter must
/// be present with the same shape; the ids and require-grad flags of `model` are kept.
pub fn load_module_tensors<M: Module>(model: M, tensors: &BTreeMap<String, HostTensor>, path: &Path) -> Result<M> {
    load_module_tensors_where(model, tensors, path, |_| true)
}

/// As [`load_module_tensors`], for the parameters whose path satisfies `select` only.
pub fn load_module_tensors_where<M: Module>(model: M, tensors: &BTreeMap<String, HostTensor>, path: &Path, select: impl Fn(&str) -> bool) -> Result<M> {
    struct Load<'a, F> {
        path: Vec<String>,
        tensors: &'a BTreeMap<String, HostTensor>,
        select: F,
        errors: Vec<String>,
    }
    impl<F: Fn(&str) -> bool> ModuleMapper for Load<'_, F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let name = self.path.join(".");
            if !(self.select)(&name) {
                return param;
            }
            let current = param.val();
            match self.tensors.get(&name) {
                Some(t) if t.shape == current.dims().to_vec() => {
                    let autodiff = current.is_autodiff();
                    let device = current.device().without_autodiff();
                    replace_value(param, t.to_tensor(&device), autodiff)
                }
                Some(t) => {
                    self.errors.push(format!("{name} has shape {:?}, the model expects {:?}", t.shape, current.dims()));
                    param
                }
                None => {
                    self.errors.push(format!("{name} is missing"));
                    param
                }
            }
        }
    }
    sync_running_state(&model);
    let mut l = Load { path: Vec::new(), tensors, select, errors: Vec::new() };
    let model = model.map(&mut l);
    match l.errors.first() {
        None => Ok(model),
        Some(first) => Err(TrainError::Checkpoint {
            path: path.into(),
            message: format!("does not fit this model: {first}{}", if l.errors.len() > 1 { format!(" (and {} more)", l.errors.len() - 1) } else { String::new() }),
        }),
    }
}
