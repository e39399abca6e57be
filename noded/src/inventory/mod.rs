//! What this node offers: its GPUs (from NVML, or declared), CPUs and memory.
//!
//! Precedence: flags override the `--inventory` file; with neither `--gpus` nor a file the
//! GPUs come from NVML, and without the NVIDIA driver that is an error saying how to declare
//! them. CPUs and memory default to the machine's. See [`declared`] for the file format.

pub mod declared;
mod error;
pub mod machine;
pub mod nvml;
mod ranges;

use std::path::PathBuf;

use gantry_model::units::parse_size_mib;
use gantry_model::{Gpu, NodeInventory};

pub use declared::{DeclaredInventory, DeviceOverride, InventoryFile};
pub use error::InventoryError;
pub use nvml::NvmlInventory;
pub use ranges::GroupSpec;

/// A source of GPUs.
pub trait GpuInventory {
    fn discover(&self) -> Result<Vec<Gpu>, InventoryError>;
}

/// The inventory flags, shared by `gantry-noded` and `gantry dev` (flatten it).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct InventoryArgs {
    /// Declare N GPUs instead of discovering them with NVML (0: a node without GPUs).
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Model of the declared GPUs [default: fake].
    #[arg(long, value_name = "MODEL")]
    pub gpu_model: Option<String>,
    /// Memory of each declared GPU, e.g. 80G.
    #[arg(long, value_name = "SIZE")]
    pub gpu_mem: Option<String>,
    /// NVLink domains of the declared GPUs, e.g. 0-3,4-7 [default: all in one].
    #[arg(long, value_name = "RANGES")]
    pub nvlink_groups: Option<String>,
    /// CPUs offered to jobs [default: the CPUs this process may use, affinity and cgroup
    /// quota included].
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Memory offered to jobs, e.g. 256G [default: the machine's physical memory].
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// A TOML file declaring the node's GPUs, CPUs and memory (flags override it).
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
}

fn flag_size(flag: &str, text: &str) -> Result<u64, InventoryError> {
    parse_size_mib(text).map_err(|error| InventoryError::BadSize {
        source_name: flag.to_string(),
        error,
    })
}

/// The declared GPUs (file, then flags over it); `None` when the GPUs should come from NVML.
pub fn declared_gpus(
    args: &InventoryArgs,
    file: Option<&InventoryFile>,
) -> Result<Option<DeclaredInventory>, InventoryError> {
    let mut declared = match (args.gpus, file) {
        (None, None) => {
            let gpu_flags = [
                ("--gpu-model", args.gpu_model.is_some()),
                ("--gpu-mem", args.gpu_mem.is_some()),
                ("--nvlink-groups", args.nvlink_groups.is_some()),
            ];
            if let Some((flag, _)) = gpu_flags.into_iter().find(|(_, set)| *set) {
                return Err(InventoryError::NeedsGpuCount { flag });
            }
            return Ok(None);
        }
        (Some(count), None) => DeclaredInventory::new(count),
        (Some(count), Some(file)) => DeclaredInventory {
            count,
            ..file.gpus.clone()
        },
        (None, Some(file)) => file.gpus.clone(),
    };
    if let Some(model) = &args.gpu_model {
        declared.model = model.clone();
    }
    if let Some(mem) = &args.gpu_mem {
        declared.memory_mib = flag_size("--gpu-mem", mem)?;
    }
    if let Some(groups) = &args.nvlink_groups {
        declared.nvlink_groups = Some(GroupSpec::from_flag("--nvlink-groups", groups)?);
    }
    Ok(Some(declared))
}

/// The node's inventory from flags, the inventory file, NVML and the machine. `pool` is left
/// empty: the daemon's configuration names it.
pub fn discover_inventory(args: &InventoryArgs) -> Result<NodeInventory, InventoryError> {
    let file = args
        .inventory
        .as_deref()
        .map(InventoryFile::load)
        .transpose()?;
    let gpus = match declared_gpus(args, file.as_ref())? {
        Some(declared) => declared.discover()?,
        None => NvmlInventory.discover()?,
    };
    let file_name = || {
        args.inventory
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let cpus = match (args.cpus, file.as_ref().and_then(|f| f.cpus)) {
        (Some(0), _) => {
            return Err(InventoryError::ZeroCpus {
                source_name: "--cpus".into(),
            });
        }
        (Some(n), _) => n,
        (None, Some(0)) => {
            return Err(InventoryError::ZeroCpus {
                source_name: format!("cpus in {}", file_name()),
            });
        }
        (None, Some(n)) => n,
        (None, None) => machine::cpu_count(),
    };
    let mem_mib = match (&args.mem, file.as_ref().and_then(|f| f.mem_mib)) {
        (Some(text), _) => match flag_size("--mem", text)? {
            0 => {
                return Err(InventoryError::ZeroMemory {
                    source_name: "--mem".into(),
                });
            }
            n => n,
        },
        (None, Some(0)) => {
            return Err(InventoryError::ZeroMemory {
                source_name: format!("mem in {}", file_name()),
            });
        }
        (None, Some(n)) => n,
        (None, None) => machine::memory_mib()?,
    };
    Ok(NodeInventory {
        gpus,
        cpus,
        mem_mib,
        pool: String::new(),
        labels: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        inventory: InventoryArgs,
    }

    fn args(flags: &[&str]) -> InventoryArgs {
        Cli::try_parse_from(std::iter::once("test").chain(flags.iter().copied()))
            .unwrap()
            .inventory
    }

    fn discover(flags: &[&str]) -> Result<NodeInventory, InventoryError> {
        discover_inventory(&args(flags))
    }

    #[test]
    fn declared_flags() {
        let inv = discover(&[
            "--gpus",
            "8",
            "--gpu-model",
            "H100",
            "--gpu-mem",
            "80G",
            "--nvlink-groups",
            "0-3,4-7",
            "--cpus",
            "64",
            "--mem",
            "512G",
        ])
        .unwrap();
        assert_eq!(inv.gpus.len(), 8);
        assert!(
            inv.gpus
                .iter()
                .all(|g| g.model == "H100" && g.memory_mib == 81920)
        );
        assert_eq!(
            inv.gpus.iter().map(|g| g.nvlink_group).collect::<Vec<_>>(),
            vec![0, 0, 0, 0, 1, 1, 1, 1]
        );
        assert_eq!(
            inv.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        assert_eq!((inv.cpus, inv.mem_mib), (64, 512 * 1024));
    }

    #[test]
    fn zero_gpus_is_a_valid_node_and_machine_defaults_apply() {
        let inv = discover(&["--gpus", "0"]).unwrap();
        assert!(inv.gpus.is_empty());
        assert_eq!(inv.cpus, machine::cpu_count());
        assert_eq!(inv.mem_mib, machine::memory_mib().unwrap());
        assert_eq!(discover(&["--gpus", "2"]).unwrap().gpus[0].model, "fake");
    }

    #[test]
    fn invalid_flags_are_rejected_precisely() {
        let err = |flags: &[&str]| discover(flags).unwrap_err().to_string();
        assert_eq!(
            err(&["--gpu-model", "H100"]),
            "--gpu-model needs --gpus N (or a [gpus] table in --inventory FILE): without them the GPUs come from NVML"
        );
        assert_eq!(
            err(&["--gpus", "2", "--gpu-mem", "big"]),
            "--gpu-mem: invalid size \"big\": use e.g. 512M, 4G, 1.5T (a bare number is MiB)"
        );
        assert_eq!(
            err(&["--gpus", "2", "--cpus", "0"]),
            "--cpus: a node needs at least 1 CPU"
        );
        assert_eq!(
            err(&["--gpus", "2", "--mem", "0"]),
            "--mem: a node needs more than 0 memory"
        );
        assert!(
            err(&["--gpus", "4", "--nvlink-groups", "0-2,2-3"])
                .starts_with("GPU 2 is in NVLink group 0")
        );
        assert!(
            err(&["--gpus", "4", "--nvlink-groups", "0-1"])
                .starts_with("GPU 2 is in no NVLink group")
        );
        assert!(
            err(&["--gpus", "4", "--nvlink-groups", "0-7"])
                .contains("names GPU 4, but the node has 4 GPUs (0-3)")
        );
        assert!(
            err(&["--gpus", "4", "--nvlink-groups", "0..3"])
                .starts_with("invalid GPU range \"0..3\"")
        );
        assert!(
            err(&["--inventory", "/no/such/inventory.toml"])
                .starts_with("cannot read inventory file /no/such/inventory.toml: ")
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.toml");
        std::fs::write(&path, "cpus = 16\nmem = \"64G\"\n[gpus]\ncount = 4\nmodel = \"A100\"\nmemory = \"40G\"\nnvlink_groups = [\"0-1\", \"2-3\"]\n").unwrap();
        let path = path.to_str().unwrap();
        let inv = discover(&["--inventory", path]).unwrap();
        assert_eq!((inv.gpus.len(), inv.cpus, inv.mem_mib), (4, 16, 64 * 1024));
        assert_eq!(inv.gpus[3].nvlink_group, 1);
        assert_eq!(inv.gpus[0].model, "A100");

        let inv = discover(&[
            "--inventory",
            path,
            "--cpus",
            "8",
            "--gpu-model",
            "H100",
            "--nvlink-groups",
            "0-3",
        ])
        .unwrap();
        assert_eq!(inv.cpus, 8);
        assert_eq!(inv.mem_mib, 64 * 1024);
        assert!(
            inv.gpus
                .iter()
                .all(|g| g.model == "H100" && g.nvlink_group == 0 && g.memory_mib == 40 * 1024)
        );

        // A count from the flags must still agree with the file's groups.
        let err = discover(&["--inventory", path, "--gpus", "6"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("GPU 4 is in no NVLink group in nvlink_groups in "),
            "{err}"
        );
        let inv =
            discover(&["--inventory", path, "--gpus", "2", "--nvlink-groups", "0-1"]).unwrap();
        assert_eq!(inv.gpus.len(), 2);
    }

    #[test]
    fn without_declared_gpus_nvml_is_asked() {
        // This machine has no NVIDIA driver; where it has one, discovery simply works.
        match discover(&["--cpus", "2", "--mem", "1G"]) {
            Err(e) => assert!(
                e.to_string()
                    .starts_with("no NVIDIA driver found on this machine"),
                "{e}"
            ),
            Ok(inv) => assert_eq!(inv.cpus, 2),
        }
    }
}
