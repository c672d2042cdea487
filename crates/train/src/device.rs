//! Choosing where a run computes: `auto` takes a hardware GPU when one works and otherwise the
//! CPU, saying which and why; the explicit choices fail with a clear message instead of
//! panicking in the driver.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::backend::{CubeDevice, DispatchDevice};
use burn::tensor::{Device, DeviceKind, Tensor};
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
            "cuda" => Ok(Self::Cuda),
            "ndarray" => Ok(Self::Ndarray),
            other => Err(format!("unknown device {other:?} (expected auto, cpu, wgpu, cuda or ndarray)")),
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

/// Picks the device for `choice`.
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice> {
    match choice {
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
