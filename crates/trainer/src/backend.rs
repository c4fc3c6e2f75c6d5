//! Backends and devices: `--device cpu|wgpu[:N]|cuda[:N]` picks one of the backends compiled in.
//!
//! Model and loss code is generic over `B: AutodiffBackend`; this module is the one place that
//! names concrete backends. A stage hands a [`BackendRun`] to [`run_on`], which calls it with
//! the backend type and device the user asked for.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;

/// The device a run asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// burn's pure-Rust `flex` CPU backend (feature `cpu`, default).
    Cpu,
    /// A wgpu adapter by index among discrete GPUs (feature `wgpu`).
    Wgpu(usize),
    /// A CUDA device by ordinal (feature `cuda`).
    Cuda(usize),
}

/// A device string that does not name a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device {0:?}: expected cpu, wgpu, wgpu:N, cuda or cuda:N")]
pub struct BadDevice(String);

impl FromStr for DeviceSpec {
    type Err = BadDevice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, index) = match lower.split_once(':') {
            Some((k, i)) => (k, Some(i.parse::<usize>().map_err(|_| BadDevice(s.to_string()))?)),
            None => (lower.as_str(), None),
        };
        match (kind, index) {
            ("cpu", None) => Ok(Self::Cpu),
            ("wgpu", i) => Ok(Self::Wgpu(i.unwrap_or(0))),
            ("cuda", i) => Ok(Self::Cuda(i.unwrap_or(0))),
            _ => Err(BadDevice(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Wgpu(i) => write!(f, "wgpu:{i}"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Why a backend could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The binary was built without the cargo feature for this backend.
    #[error(
        "device {device} needs the `{feature}` backend, which this binary was built without; \
         rebuild with `--features {feature}` (e.g. `cargo build --release --features {feature}`)"
    )]
    NotCompiled {
        /// The device asked for.
        device: DeviceSpec,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The backend is compiled in but no usable device is present.
    #[error("device {device} is not available: {reason}")]
    Unavailable {
        /// The device asked for.
        device: DeviceSpec,
        /// What the pre-flight check found.
        reason: String,
    },
}

/// Work to run on whichever backend the user picked.
pub trait BackendRun {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B` and `device`; `name` is the backend's display name.
    fn run<B: AutodiffBackend>(self, device: B::Device, name: &str) -> Self::Output;
}

/// The CPU backend type used by tests and the default build.
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

/// Calls `work` with the backend and device named by `spec`, or says why it cannot.
pub fn run_on<W: BackendRun>(spec: DeviceSpec, work: W) -> Result<W::Output, BackendError> {
    match spec {
        DeviceSpec::Cpu => {
            #[cfg(feature = "cpu")]
            {
                Ok(work.run::<CpuBackend>(Default::default(), "cpu (burn flex)"))
            }
            #[cfg(not(feature = "cpu"))]
            {
                let _ = work;
                Err(BackendError::NotCompiled { device: spec, feature: "cpu" })
            }
        }
        DeviceSpec::Wgpu(index) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::{Wgpu, WgpuDevice};
                wgpu_preflight(index).map_err(|reason| BackendError::Unavailable { device: spec, reason })?;
                let device = WgpuDevice::DiscreteGpu(index);
                let _probe = DeviceProbeGuard::install::<burn::backend::wgpu::WgpuRuntime>(
                    device.clone(),
                    format!("wgpu:{index}"),
                    || None,
                );
                Ok(work.run::<burn::backend::Autodiff<Wgpu>>(device, &format!("wgpu (discrete gpu {index})")))
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = (work, index);
                Err(BackendError::NotCompiled { device: spec, feature: "wgpu" })
            }
        }
        DeviceSpec::Cuda(index) => {
            #[cfg(feature = "cuda")]
            {
                use burn::backend::cuda::{Cuda, CudaDevice};
                cuda_preflight(index).map_err(|reason| BackendError::Unavailable { device: spec, reason })?;
                // The driver's free/total need a context on the calling thread: a retained
                // primary context of the same device (the one cubecl uses).
                let context = cudarc::driver::CudaContext::new(index).ok();
                let _probe = DeviceProbeGuard::install::<cubecl::cuda::CudaRuntime>(
                    CudaDevice::new(index),
                    format!("cuda:{index}"),
                    move || {
                        let (free, total) = context.as_ref()?.mem_get_info().ok()?;
                        Some((free as u64, total as u64))
                    },
                );
                Ok(work.run::<burn::backend::Autodiff<Cuda>>(CudaDevice::new(index), &format!("cuda:{index}")))
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = (work, index);
                Err(BackendError::NotCompiled { device: spec, feature: "cuda" })
            }
        }
    }
}

/// Keeps a device-memory probe installed for the duration of a run on a GPU backend.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
struct DeviceProbeGuard;

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl DeviceProbeGuard {
    /// Reads allocated / reserved bytes from cubecl's memory pool for `device` (a blocking
    /// call into the device's server, made only when a memory line is logged) and free /
    /// total from `driver`, where the driver says.
    fn install<R: cubecl::Runtime>(
        device: R::Device,
        name: String,
        driver: impl Fn() -> Option<(u64, u64)> + Send + Sync + 'static,
    ) -> Self
    where
        R::Device: Send + Sync + 'static,
    {
        crate::telemetry::set_device_memory_probe(Some(Box::new(move || {
            let usage = R::client(&device).memory_usage().ok()?;
            let (free, total) = driver().unzip();
            Some(crate::telemetry::DeviceMemory {
                device: name.clone(),
                allocated: usage.bytes_in_use,
                reserved: usage.bytes_reserved,
                free,
                total,
            })
        })));
        Self
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl Drop for DeviceProbeGuard {
    fn drop(&mut self) {
        crate::telemetry::set_device_memory_probe(None);
    }
}

/// Checks, without panicking, that wgpu finds an adapter for discrete GPU `index`.
///
/// Mirrors cubecl's selection (discrete GPUs, then adapters of type "other"), which panics in
/// its device thread when none is found.
#[cfg(feature = "wgpu")]
fn wgpu_preflight(index: usize) -> Result<(), String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::all(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
    let discrete = infos.iter().filter(|i| i.device_type == wgpu::DeviceType::DiscreteGpu).count();
    let other = infos.iter().filter(|i| i.device_type == wgpu::DeviceType::Other).count();
    if index < discrete || index < other {
        return Ok(());
    }
    let found: Vec<String> =
        infos.iter().map(|i| format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend)).collect();
    Err(format!(
        "wgpu found {discrete} discrete GPU(s); adapters present: {}",
        if found.is_empty() { "none (no Vulkan/Metal/DX12 driver?)".to_string() } else { found.join(", ") }
    ))
}

/// Checks, without panicking, that the CUDA driver library loads and `index` names a device.
///
/// burn's CUDA device fails lazily with a panic at the first tensor operation; this turns the
/// common cases (no driver, no GPU, index out of range) into an error before any work starts.
#[cfg(feature = "cuda")]
fn cuda_preflight(index: usize) -> Result<(), String> {
    // SAFETY: only probes whether the shared library can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda) was not found; is an NVIDIA driver installed?".into());
    }
    cudarc::driver::result::init().map_err(|e| format!("CUDA driver failed to initialise: {e}"))?;
    let count =
        cudarc::driver::result::device::get_count().map_err(|e| format!("could not count CUDA devices: {e}"))?;
    if count <= 0 {
        return Err("the CUDA driver reports no GPU".into());
    }
    if index >= count as usize {
        return Err(format!("only {count} CUDA device(s) present (cuda:0..cuda:{})", count - 1));
    }
    Ok(())
}

/// The backends this binary was built with, for `--help` and errors.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "cpu") {
        v.push("cpu");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("CUDA:1".parse(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("wgpu:2".parse(), Ok(DeviceSpec::Wgpu(2)));
        assert!("cpu:1".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn backend_not_compiled_names_the_feature() {
        struct Nothing;
        impl BackendRun for Nothing {
            type Output = ();
            fn run<B: AutodiffBackend>(self, _: B::Device, _: &str) {}
        }
        let err = run_on(DeviceSpec::Cuda(0), Nothing).unwrap_err();
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }
}
