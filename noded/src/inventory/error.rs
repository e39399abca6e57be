//! Why a node's inventory could not be determined. Every message says what to change.

use std::path::PathBuf;

use gantry_model::units::UnitError;
use thiserror::Error;

/// How to declare GPUs when NVML cannot be used.
pub const DECLARE_HINT: &str = "declare the GPUs instead with --gpus N [--gpu-model MODEL] [--gpu-mem SIZE] \
     [--nvlink-groups 0-3,4-7] (--gpus 0 for a node without GPUs), or with --inventory FILE";

#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("no NVIDIA driver found on this machine (NVML: {detail}); {DECLARE_HINT}", DECLARE_HINT = DECLARE_HINT)]
    NoNvidiaDriver { detail: String },
    #[error("NVML cannot read {what}: {source}")]
    Nvml {
        what: String,
        source: nvml_wrapper::error::NvmlError,
    },
    #[error("cannot read inventory file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("inventory file {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("{source_name}: {error}")]
    BadSize {
        source_name: String,
        error: UnitError,
    },
    #[error("invalid GPU range {text:?} in {source_name}: use GPU indices and ranges like 0-3,4-7")]
    BadRange { source_name: String, text: String },
    #[error("{what} {id} ({text:?}) in {source_name} names GPU {gpu}, but the node has {}", gpu_count(*count))]
    OutOfRange {
        what: &'static str,
        source_name: String,
        id: usize,
        text: String,
        gpu: u32,
        count: u32,
    },
    #[error(
        "GPU {gpu} is in {what} {first} ({first_text:?}) and {what} {second} ({second_text:?}) in {source_name}; \
         every GPU must be in exactly one"
    )]
    Overlap {
        what: &'static str,
        source_name: String,
        gpu: u32,
        first: usize,
        first_text: String,
        second: usize,
        second_text: String,
    },
    #[error(
        "GPU {gpu} is in no NVLink group in {source_name}; every GPU must be in exactly one (e.g. --nvlink-groups 0-3,4-7)"
    )]
    NotInAnyGroup { source_name: String, gpu: u32 },
    #[error("{source_name}: a [[gpus.device]] entry names GPU {index}, but the node has {}", gpu_count(*count))]
    DeviceOutOfRange {
        source_name: String,
        index: u32,
        count: u32,
    },
    #[error("{source_name}: GPU {index} has two [[gpus.device]] entries")]
    DuplicateDevice { source_name: String, index: u32 },
    #[error(
        "{flag} needs --gpus N (or a [gpus] table in --inventory FILE): without them the GPUs come from NVML"
    )]
    NeedsGpuCount { flag: &'static str },
    #[error("{source_name}: a node needs at least 1 CPU")]
    ZeroCpus { source_name: String },
    #[error("{source_name}: a node needs more than 0 memory")]
    ZeroMemory { source_name: String },
    #[error("cannot read the machine's memory size from /proc/meminfo: {0}; give --mem SIZE")]
    MachineMemory(String),
}

fn gpu_count(count: u32) -> String {
    match count {
        0 => "no GPUs".to_string(),
        1 => "1 GPU (0)".to_string(),
        n => format!("{n} GPUs (0-{})", n - 1),
    }
}

impl InventoryError {
    /// NVML is missing (no NVIDIA driver): callers that may fall back to declared GPUs (e.g.
    /// `gantry dev`) check this.
    pub fn is_no_nvidia_driver(&self) -> bool {
        matches!(self, InventoryError::NoNvidiaDriver { .. })
    }
}
