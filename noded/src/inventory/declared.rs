//! GPUs declared by the admin, for machines without the NVIDIA driver, tests and `gantry dev`:
//! from flags (`--gpus N [--gpu-model M] [--gpu-mem SIZE] [--nvlink-groups 0-3,4-7]`) or from a
//! TOML file (`--inventory FILE`). Flags override the file.
//!
//! # The inventory file
//!
//! ```toml
//! # /etc/gantry/inventory.toml — every key is optional unless marked required.
//! cpus = 64                 # default: the machine's CPU count
//! mem = "512G"              # default: the machine's physical memory (/proc/meminfo)
//!
//! [gpus]                    # without this table the node has no GPUs
//! count = 8                 # required; 0 is a CPU-only node
//! model = "H100"            # default "fake"
//! memory = "80G"            # per GPU; default 0 (unknown)
//! nvlink_groups = ["0-3", "4-7"]   # one entry per NVLink domain; every GPU in exactly one;
//!                                  # default: all GPUs in one group (group 0)
//! numa_nodes = ["0-3", "4-7"]      # entry i lists the GPUs on NUMA node i; GPUs not listed
//!                                  # have an unknown NUMA node (the default)
//!
//! [[gpus.device]]           # optional, per GPU: overrides the values above
//! index = 7                 # required: which GPU (0 .. count-1)
//! model = "A100"
//! memory = "40G"
//! uuid = "GPU-5c5e0a8e-..."
//! numa_node = 1
//! ```
//!
//! Entries of `nvlink_groups` and `numa_nodes` are comma lists of indices and ranges
//! (`"0,2,4-5"`); on the command line `--nvlink-groups 0-3,4-7` makes each comma-separated
//! range one group. Sizes take `M`, `G`, `T` suffixes (a bare number is MiB). Unknown keys are
//! errors.

use std::collections::BTreeSet;
use std::path::Path;

use gantry_model::Gpu;
use gantry_model::units::parse_size_mib;
use serde::Deserialize;

use super::ranges::GroupSpec;
use super::{GpuInventory, InventoryError};

pub const DEFAULT_GPU_MODEL: &str = "fake";

/// Per-GPU values that differ from the declared defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceOverride {
    pub index: u32,
    pub model: Option<String>,
    pub memory_mib: Option<u64>,
    pub uuid: Option<String>,
    pub numa_node: Option<u32>,
}

/// A declared set of GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredInventory {
    pub count: u32,
    pub model: String,
    pub memory_mib: u64,
    /// `None`: every GPU in NVLink group 0.
    pub nvlink_groups: Option<GroupSpec>,
    /// `None`: NUMA nodes unknown.
    pub numa_nodes: Option<GroupSpec>,
    pub devices: Vec<DeviceOverride>,
    /// Where per-device entries came from, for messages.
    pub source_name: String,
}

impl DeclaredInventory {
    /// `count` GPUs of the default model, all in one NVLink group.
    pub fn new(count: u32) -> DeclaredInventory {
        DeclaredInventory {
            count,
            model: DEFAULT_GPU_MODEL.to_string(),
            memory_mib: 0,
            nvlink_groups: None,
            numa_nodes: None,
            devices: Vec::new(),
            source_name: "--gpus".to_string(),
        }
    }
}

impl GpuInventory for DeclaredInventory {
    fn discover(&self) -> Result<Vec<Gpu>, InventoryError> {
        let nvlink = match &self.nvlink_groups {
            Some(spec) => spec.assign("NVLink group", self.count, true)?,
            None => vec![Some(0); usize::try_from(self.count).unwrap_or(0)],
        };
        let numa = match &self.numa_nodes {
            Some(spec) => spec.assign("NUMA node", self.count, false)?,
            None => vec![None; usize::try_from(self.count).unwrap_or(0)],
        };
        let mut seen = BTreeSet::new();
        for device in &self.devices {
            if device.index >= self.count {
                return Err(InventoryError::DeviceOutOfRange {
                    source_name: self.source_name.clone(),
                    index: device.index,
                    count: self.count,
                });
            }
            if !seen.insert(device.index) {
                return Err(InventoryError::DuplicateDevice {
                    source_name: self.source_name.clone(),
                    index: device.index,
                });
            }
        }
        let gpus = (0..self.count)
            .zip(nvlink.into_iter().zip(numa))
            .map(|(index, (group, numa_node))| {
                let device = self.devices.iter().find(|d| d.index == index);
                Gpu {
                    index,
                    model: device
                        .and_then(|d| d.model.clone())
                        .unwrap_or_else(|| self.model.clone()),
                    memory_mib: device.and_then(|d| d.memory_mib).unwrap_or(self.memory_mib),
                    nvlink_group: group.unwrap_or(0),
                    numa_node: device.and_then(|d| d.numa_node).or(numa_node),
                    uuid: device.and_then(|d| d.uuid.clone()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(gpus)
    }
}

/// The inventory file, as read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTop {
    cpus: Option<u32>,
    mem: Option<String>,
    gpus: Option<FileGpus>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGpus {
    count: u32,
    model: Option<String>,
    memory: Option<String>,
    nvlink_groups: Option<Vec<String>>,
    numa_nodes: Option<Vec<String>>,
    #[serde(default)]
    device: Vec<FileDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDevice {
    index: u32,
    model: Option<String>,
    memory: Option<String>,
    uuid: Option<String>,
    numa_node: Option<u32>,
}

/// An inventory file, checked and with sizes parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryFile {
    pub cpus: Option<u32>,
    pub mem_mib: Option<u64>,
    /// The declared GPUs; a file without `[gpus]` declares none.
    pub gpus: DeclaredInventory,
}

fn size(source_name: String, text: &str) -> Result<u64, InventoryError> {
    parse_size_mib(text).map_err(|error| InventoryError::BadSize { source_name, error })
}

impl InventoryFile {
    pub fn load(path: &Path) -> Result<InventoryFile, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        InventoryFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<InventoryFile, InventoryError> {
        let top: FileTop = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text.get(..span.start).unwrap_or("").matches('\n').count() + 1);
            let message = match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_string(),
            };
            InventoryError::ParseFile {
                path: path.to_path_buf(),
                message,
            }
        })?;
        let shown = path.display();
        let mem_mib = top
            .mem
            .as_deref()
            .map(|m| size(format!("mem in {shown}"), m))
            .transpose()?;
        let gpus = match top.gpus {
            None => DeclaredInventory {
                source_name: shown.to_string(),
                ..DeclaredInventory::new(0)
            },
            Some(g) => {
                let devices = g
                    .device
                    .iter()
                    .map(|d| {
                        Ok(DeviceOverride {
                            index: d.index,
                            model: d.model.clone(),
                            memory_mib: d
                                .memory
                                .as_deref()
                                .map(|m| size(format!("memory of GPU {} in {shown}", d.index), m))
                                .transpose()?,
                            uuid: d.uuid.clone(),
                            numa_node: d.numa_node,
                        })
                    })
                    .collect::<Result<Vec<_>, InventoryError>>()?;
                DeclaredInventory {
                    count: g.count,
                    model: g.model.unwrap_or_else(|| DEFAULT_GPU_MODEL.to_string()),
                    memory_mib: g
                        .memory
                        .as_deref()
                        .map(|m| size(format!("gpus.memory in {shown}"), m))
                        .transpose()?
                        .unwrap_or(0),
                    nvlink_groups: g
                        .nvlink_groups
                        .map(|list| {
                            GroupSpec::from_list(&format!("nvlink_groups in {shown}"), &list)
                        })
                        .transpose()?,
                    numa_nodes: g
                        .numa_nodes
                        .map(|list| GroupSpec::from_list(&format!("numa_nodes in {shown}"), &list))
                        .transpose()?,
                    devices,
                    source_name: shown.to_string(),
                }
            }
        };
        Ok(InventoryFile {
            cpus: top.cpus,
            mem_mib,
            gpus,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<InventoryFile, InventoryError> {
        InventoryFile::parse(Path::new("inv.toml"), text)
    }

    #[test]
    fn declared_defaults() {
        let gpus = DeclaredInventory::new(2).discover().unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!(
            gpus[1],
            Gpu {
                index: 1,
                model: "fake".into(),
                memory_mib: 0,
                nvlink_group: 0,
                numa_node: None,
                uuid: String::new()
            }
        );
        assert_eq!(DeclaredInventory::new(0).discover().unwrap(), vec![]);
    }

    #[test]
    fn a_full_file() {
        let file = parse(
            r#"
cpus = 64
mem = "512G"
[gpus]
count = 8
model = "H100"
memory = "80G"
nvlink_groups = ["0-3", "4-7"]
numa_nodes = ["0-3", "4-6"]
[[gpus.device]]
index = 7
model = "A100"
memory = "40G"
uuid = "GPU-7"
numa_node = 1
"#,
        )
        .unwrap();
        assert_eq!(file.cpus, Some(64));
        assert_eq!(file.mem_mib, Some(512 * 1024));
        let gpus = file.gpus.discover().unwrap();
        assert_eq!(gpus.len(), 8);
        assert_eq!(
            (
                gpus[0].model.as_str(),
                gpus[0].memory_mib,
                gpus[0].nvlink_group,
                gpus[0].numa_node
            ),
            ("H100", 81920, 0, Some(0))
        );
        assert_eq!((gpus[5].nvlink_group, gpus[5].numa_node), (1, Some(1)));
        assert_eq!(
            gpus[7],
            Gpu {
                index: 7,
                model: "A100".into(),
                memory_mib: 40960,
                nvlink_group: 1,
                numa_node: Some(1),
                uuid: "GPU-7".into()
            }
        );
    }

    #[test]
    fn a_file_without_gpus_is_a_cpu_only_node() {
        let file = parse("cpus = 4\n").unwrap();
        assert_eq!(file.gpus.discover().unwrap(), vec![]);
        assert_eq!(file.mem_mib, None);
    }

    #[test]
    fn invalid_files_are_rejected_with_the_line_and_the_problem() {
        let err = parse("cpus = 4\nbogus = 1\n").unwrap_err().to_string();
        assert!(
            err.starts_with("inventory file inv.toml: line 2: unknown field `bogus`"),
            "{err}"
        );
        let err = parse("[gpus]\ncount = 2\ncolour = \"red\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3: unknown field `colour`"), "{err}");
        let err = parse("[gpus]\nmodel = \"H100\"\n").unwrap_err().to_string();
        assert!(err.contains("missing field `count`"), "{err}");
        let err = parse("mem = 512\n").unwrap_err().to_string();
        assert!(
            err.contains("line 1: invalid type: integer `512`, expected a string"),
            "{err}"
        );
        let err = parse("mem = \"lots\"\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "mem in inv.toml: invalid size \"lots\": use e.g. 512M, 4G, 1.5T (a bare number is MiB)"
        );
        let err = parse("[gpus]\ncount = 2\nnvlink_groups = [\"0-x\"]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid GPU range \"0-x\" in nvlink_groups in inv.toml: use GPU indices and ranges like 0-3,4-7"
        );
        let err = parse("cpus = [1]\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn invalid_groupings_and_devices_are_rejected_at_discovery() {
        let discover = |text: &str| {
            parse(text)
                .unwrap()
                .gpus
                .discover()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            discover("[gpus]\ncount = 4\nnvlink_groups = [\"0-1\", \"1-3\"]\n"),
            "GPU 1 is in NVLink group 0 (\"0-1\") and NVLink group 1 (\"1-3\") in nvlink_groups in inv.toml; \
             every GPU must be in exactly one"
        );
        assert_eq!(
            discover("[gpus]\ncount = 4\nnvlink_groups = [\"0-1\"]\n"),
            "GPU 2 is in no NVLink group in nvlink_groups in inv.toml; every GPU must be in exactly one \
             (e.g. --nvlink-groups 0-3,4-7)"
        );
        assert_eq!(
            discover("[gpus]\ncount = 4\nnuma_nodes = [\"0-4\"]\n"),
            "NUMA node 0 (\"0-4\") in numa_nodes in inv.toml names GPU 4, but the node has 4 GPUs (0-3)"
        );
        assert_eq!(
            discover("[gpus]\ncount = 2\n[[gpus.device]]\nindex = 2\n"),
            "inv.toml: a [[gpus.device]] entry names GPU 2, but the node has 2 GPUs (0-1)"
        );
        assert_eq!(
            discover("[gpus]\ncount = 2\n[[gpus.device]]\nindex = 1\n[[gpus.device]]\nindex = 1\n"),
            "inv.toml: GPU 1 has two [[gpus.device]] entries"
        );
    }
}
