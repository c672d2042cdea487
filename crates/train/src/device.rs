//! Choosing where a run computes: `auto` takes a hardware GPU when one works and otherwise the
//! CPU, saying which and why; the explicit choices fail with a clear message instead of
//! panicking in the driver.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::backend::{CubeDevice, DispatchDevice};
use burn::tensor::{Device, DeviceKind, Tensor};
use plastic_rules::Precision;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// A hardware GPU (CUDA when built with it, else wgpu) if one starts, else the CPU.
    #[default]
    Auto,
    /// burn-flex on the CPU.
    Cpu,
    /// wgpu's default adapter (a software one such as lavapipe if that is all there is).
    Wgpu,
    /// `wgpu:N`: the N-th discrete GPU in wgpu's adapter order (with none, `wgpu:0` is the
    /// default adapter, so the software Vulkan can stand in for a GPU in tests).
    WgpuIndex(usize),
    /// `wgpu:slurm`: the GPU Slurm assigned to this job ([`slurm_gpu_index`]).
    WgpuSlurm,
    /// CUDA device 0 (needs the `cuda` feature).
    Cuda,
    /// The deprecated burn-ndarray CPU backend (needs the `ndarray` feature), to compare with flex.
    Ndarray,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "wgpu:slurm" => Ok(Self::WgpuSlurm),
            s if s.starts_with("wgpu:") => s[5..].parse().map(Self::WgpuIndex).map_err(|_| format!("unknown device {s:?} (expected wgpu:N with N a GPU index, or wgpu:slurm)")),
            "cuda" => Ok(Self::Cuda),
            "ndarray" => Ok(Self::Ndarray),
            other => Err(format!("unknown device {other:?} (expected auto, cpu, wgpu, wgpu:N, wgpu:slurm, cuda or ndarray)")),
        }
    }
}

/// The device a run uses and how it was chosen.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    /// Short name for `summary.json` (`cpu`, `wgpu`, `cuda`, `ndarray`).
    pub name: String,
    /// One line for the user: what was taken, and what was tried and failed.
    pub description: String,
}

/// Refuses a `train.precision` the device cannot compute in (wgpu adapters without shader
/// f16, say) with a one-line error naming what it can, instead of failing in a kernel.
pub fn check_precision(precision: Precision, device: &Device, description: &str) -> Result<()> {
    let device = device.clone().without_autodiff();
    if device.supports_dtype(precision.dtype()) {
        return Ok(());
    }
    let alternatives: Vec<String> = [Precision::Bf16, Precision::F16]
        .into_iter()
        .filter(|p| *p != precision && device.supports_dtype(p.dtype()))
        .map(|p| format!("\"{}\"", p.name()))
        .chain(["\"f32\"".to_string()])
        .collect();
    Err(TrainError::Config(format!("train.precision = \"{}\": {description} has no {} arithmetic; use {}", precision.name(), precision.name(), alternatives.join(" or "))))
}

/// Short name of a device's backend.
pub fn backend_name(device: &Device) -> &'static str {
    match device.clone().without_autodiff().as_dispatch() {
        DispatchDevice::Flex(_) => "cpu",
        DispatchDevice::Cube(CubeDevice::Wgpu(_)) => "wgpu",
        #[allow(unreachable_patterns)]
        DispatchDevice::Cube(_) => "cuda",
        #[allow(unreachable_patterns)]
        _ => "ndarray",
    }
}

/// Runs a tiny computation; a device that panics or errors is reported, not propagated.
fn smoke_test(device: &Device) -> std::result::Result<(), String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let t = Tensor::<1>::from_floats([1.0, 2.0], device);
        (t.clone() + t).into_data().try_into_vec_as::<f32>().map_err(|e| format!("{e:?}"))
    }));
    std::panic::set_hook(hook);
    match outcome {
        Ok(Ok(v)) if v == vec![2.0, 4.0] => Ok(()),
        Ok(Ok(v)) => Err(format!("wrong result {v:?}")),
        Ok(Err(e)) => Err(e),
        Err(p) => Err(p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "panicked".into())),
    }
}

/// Names and kinds of the wgpu adapters, without creating a device.
fn wgpu_adapters() -> Vec<(String, bool)> {
    use burn::tensor::wgpu::wgpu;
    let backends = wgpu::Backends::VULKAN | wgpu::Backends::GL | wgpu::Backends::METAL | wgpu::Backends::DX12;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let adapters = catch_unwind(|| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor { backends, ..wgpu::InstanceDescriptor::new_without_display_handle() });
        burn::tensor::read_sync(instance.enumerate_adapters(backends))
            .into_iter()
            .map(|a| {
                let info = a.get_info();
                (format!("{} ({:?})", info.name, info.backend), info.device_type != wgpu::DeviceType::Cpu)
            })
            .collect::<Vec<_>>()
    })
    .unwrap_or_default();
    std::panic::set_hook(hook);
    adapters
}

fn cuda(notes: &mut Vec<String>) -> Option<SelectedDevice> {
    #[cfg(feature = "cuda")]
    {
        if Device::enumerate(burn::tensor::DeviceType::Cuda).is_empty() {
            notes.push("no CUDA device (driver library not found or no GPU)".into());
            return None;
        }
        let device = Device::cuda(0);
        match smoke_test(&device) {
            Ok(()) => Some(SelectedDevice { device, name: "cuda".into(), description: "CUDA device 0".into() }),
            Err(e) => {
                notes.push(format!("CUDA failed to start: {e}"));
                None
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        notes.push("CUDA support not built in (cargo feature `cuda`)".into());
        None
    }
}

fn cpu(note: Option<String>) -> SelectedDevice {
    let threads = rayon_threads();
    let mut description = format!("CPU (burn-flex, {threads} threads)");
    if let Some(n) = note {
        description = format!("{description}; {n}");
    }
    SelectedDevice { device: Device::flex(), name: "cpu".into(), description }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX))
}

/// The GPU index Slurm assigned to this job, as a wgpu adapter index.
///
/// Slurm hands a job its GPUs in `CUDA_VISIBLE_DEVICES` (AMD: `ROCR_VISIBLE_DEVICES`; also
/// `GPU_DEVICE_ORDINAL`), numbered among the devices the job can see. Vulkan, which wgpu uses,
/// ignores these variables, but it sees the same devices: where the cluster constrains devices
/// (cgroup `ConstrainDevices=yes`) the job's `/dev` holds only its own GPUs, Vulkan enumerates
/// just those and the index Slurm gives is 0-based among them; without the constraint Vulkan
/// sees every GPU of the node and Slurm's index is the global one — the same adapter in both
/// cases, as both orders follow the PCI bus. `SLURM_STEP_GPUS` / `SLURM_JOB_GPUS` (global
/// indices) are the fallback. UUID entries (`GPU-…`) cannot be mapped and give `None`.
pub fn slurm_gpu_index(env: &dyn Fn(&str) -> Option<String>) -> Option<usize> {
    ["CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"]
        .iter()
        .find_map(|k| env(k).filter(|v| !v.trim().is_empty()))
        .and_then(|v| v.split(',').next().and_then(|first| first.trim().parse().ok()))
}

/// Opens the N-th discrete GPU (or, with none, the default adapter for `N = 0`).
fn wgpu_index(index: usize, label: &str) -> Result<SelectedDevice> {
    let adapters = wgpu_adapters();
    let hardware: Vec<&String> = adapters.iter().filter(|(_, h)| *h).map(|(n, _)| n).collect();
    let (device, name) = if hardware.is_empty() {
        if index != 0 || adapters.is_empty() {
            return Err(TrainError::Config(format!(
                "--device {label}: no GPU adapter{}",
                if adapters.is_empty() { String::new() } else { format!(" (only software ones: {})", adapters.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")) }
            )));
        }
        (Device::wgpu(DeviceKind::DefaultDevice), adapters[0].0.clone())
    } else {
        let name = hardware.get(index).ok_or_else(|| TrainError::Config(format!("--device {label}: there are {} GPU adapters (wgpu:0 to wgpu:{})", hardware.len(), hardware.len() - 1)))?;
        let device = Device::wgpu_options().device_kind(DeviceKind::DiscreteGpu(index)).init().map_err(|e| TrainError::Config(format!("--device {label}: {name} could not be opened: {e:?}")))?;
        (device, name.to_string())
    };
    smoke_test(&device).map_err(|e| TrainError::Config(format!("--device {label} failed to start: {e}")))?;
    Ok(SelectedDevice { device, name: "wgpu".into(), description: format!("wgpu adapter {index}: {name}") })
}

/// `wgpu:0` … for every hardware GPU wgpu sees (empty without one): what `--device wgpu`
/// spreads a search's workers over.
pub fn wgpu_gpu_devices() -> Vec<String> {
    let n = wgpu_adapters().iter().filter(|(_, h)| *h).count();
    (0..n).map(|i| format!("wgpu:{i}")).collect()
}

/// Picks the device for `choice`.
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice> {
    match choice {
        DeviceChoice::WgpuIndex(i) => wgpu_index(i, &format!("wgpu:{i}")),
        DeviceChoice::WgpuSlurm => {
            let index = slurm_gpu_index(&|k| std::env::var(k).ok())
                .ok_or_else(|| TrainError::Config("--device wgpu:slurm: Slurm assigned no GPU index (CUDA_VISIBLE_DEVICES, SLURM_JOB_GPUS unset or UUIDs); request one with gpus_per_trial".into()))?;
            wgpu_index(index, &format!("wgpu:slurm (GPU {index})"))
        }
        DeviceChoice::Cpu => Ok(cpu(None)),
        DeviceChoice::Ndarray => {
            #[cfg(feature = "ndarray")]
            {
                #[allow(deprecated)]
                let device = Device::ndarray();
                Ok(SelectedDevice { device, name: "ndarray".into(), description: "CPU (deprecated burn-ndarray)".into() })
            }
            #[cfg(not(feature = "ndarray"))]
            Err(TrainError::Config("--device ndarray needs plastic built with the `ndarray` feature".into()))
        }
        DeviceChoice::Cuda => {
            let mut notes = Vec::new();
            cuda(&mut notes).ok_or_else(|| TrainError::Config(format!("--device cuda: {}", notes.join("; "))))
        }
        DeviceChoice::Wgpu => {
            let adapters = wgpu_adapters();
            if adapters.is_empty() {
                return Err(TrainError::Config("--device wgpu: no wgpu adapter (no Vulkan, Metal, DX12 or GL driver found)".into()));
            }
            let device = Device::wgpu(DeviceKind::DefaultDevice);
            smoke_test(&device).map_err(|e| TrainError::Config(format!("--device wgpu failed to start: {e}")))?;
            let names: Vec<&str> = adapters.iter().map(|(n, _)| n.as_str()).collect();
            Ok(SelectedDevice { device, name: "wgpu".into(), description: format!("wgpu, default adapter among: {}", names.join(", ")) })
        }
        DeviceChoice::Auto => {
            let mut notes = Vec::new();
            if let Some(d) = cuda(&mut notes) {
                return Ok(d);
            }
            let adapters = wgpu_adapters();
            match adapters.iter().find(|(_, hardware)| *hardware) {
                Some((name, _)) => {
                    let device = [DeviceKind::DiscreteGpu(0), DeviceKind::IntegratedGpu(0), DeviceKind::VirtualGpu(0)]
                        .into_iter()
                        .find_map(|kind| Device::wgpu_options().device_kind(kind).init().ok());
                    match device.map(|d| smoke_test(&d).map(|_| d)) {
                        Some(Ok(device)) => return Ok(SelectedDevice { device, name: "wgpu".into(), description: format!("GPU via wgpu: {name}") }),
                        Some(Err(e)) => notes.push(format!("GPU {name} failed to start: {e}")),
                        None => notes.push(format!("GPU {name} could not be opened")),
                    }
                }
                None if adapters.is_empty() => notes.push("no GPU adapter found".into()),
                None => notes.push(format!("only software adapters ({})", adapters.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "))),
            }
            Ok(cpu(Some(format!("no usable GPU: {}", notes.join("; ")))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse_with_indices() {
        assert_eq!("wgpu:3".parse::<DeviceChoice>(), Ok(DeviceChoice::WgpuIndex(3)));
        assert_eq!("wgpu:slurm".parse::<DeviceChoice>(), Ok(DeviceChoice::WgpuSlurm));
        assert!("wgpu:x".parse::<DeviceChoice>().unwrap_err().contains("wgpu:N"));
    }

    #[test]
    fn slurm_gpu_assignment_maps_to_the_adapter_index() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        // Constrained devices: the job sees only its GPU, numbered 0.
        assert_eq!(slurm_gpu_index(&env(&[("CUDA_VISIBLE_DEVICES", "0"), ("SLURM_JOB_GPUS", "3")])), Some(0));
        // Unconstrained: the global index, which is also Vulkan's.
        assert_eq!(slurm_gpu_index(&env(&[("CUDA_VISIBLE_DEVICES", "3"), ("SLURM_JOB_GPUS", "3")])), Some(3));
        assert_eq!(slurm_gpu_index(&env(&[("CUDA_VISIBLE_DEVICES", "2,3")])), Some(2));
        assert_eq!(slurm_gpu_index(&env(&[("ROCR_VISIBLE_DEVICES", "1")])), Some(1));
        assert_eq!(slurm_gpu_index(&env(&[("SLURM_STEP_GPUS", "5")])), Some(5));
        assert_eq!(slurm_gpu_index(&env(&[("CUDA_VISIBLE_DEVICES", ""), ("SLURM_STEP_GPUS", "6"), ("SLURM_JOB_GPUS", "7")])), Some(6));
        assert_eq!(slurm_gpu_index(&env(&[("GPU_DEVICE_ORDINAL", "5")])), Some(5));
        assert_eq!(slurm_gpu_index(&env(&[("CUDA_VISIBLE_DEVICES", "GPU-8f1c2a"), ("SLURM_JOB_GPUS", "0")])), None);
        assert_eq!(slurm_gpu_index(&env(&[("CUDA_VISIBLE_DEVICES", "NoDevFiles")])), None);
        assert_eq!(slurm_gpu_index(&env(&[])), None);
    }
}
