//! GPUs as NVML reports them (needs the NVIDIA driver).

use std::collections::BTreeMap;

use gantry_model::Gpu;
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use super::{GpuInventory, InventoryError};

/// NVML's upper bound on NVLink links per GPU (`NVML_NVLINK_MAX_LINKS`).
const MAX_NVLINK_LINKS: u32 = 18;

/// Discovers the GPUs through NVML: index, model, memory, NUMA node, NVLink groups, uuid.
#[derive(Debug, Clone, Copy, Default)]
pub struct NvmlInventory;

/// Without the driver NVML's init fails with `LibloadingError` (the library cannot be
/// loaded), `DriverNotLoaded` or `LibraryNotFound`: all mean "no NVIDIA driver here".
pub fn init_error(error: NvmlError) -> InventoryError {
    match error {
        NvmlError::LibloadingError(_) | NvmlError::DriverNotLoaded | NvmlError::LibraryNotFound => {
            InventoryError::NoNvidiaDriver {
                detail: error.to_string(),
            }
        }
        source => InventoryError::Nvml {
            what: "the GPU list (init)".to_string(),
            source,
        },
    }
}

fn nvml_err(what: impl Into<String>) -> impl FnOnce(NvmlError) -> InventoryError {
    let what = what.into();
    move |source| InventoryError::Nvml { what, source }
}

/// `00000000:3B:00.0` (NVML) and `0000:3b:00.0` (sysfs) name the same device.
pub fn normalise_bus_id(bus_id: &str) -> String {
    let lower = bus_id.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        Some((domain, rest)) => {
            let domain = domain.trim_start_matches('0');
            format!("{domain:0>4}:{rest}")
        }
        None => lower,
    }
}

/// The NUMA node sysfs gives for a PCI device; `None` when unknown (-1) or unreadable.
fn sysfs_numa_node(bus_id: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!(
        "/sys/bus/pci/devices/{}/numa_node",
        normalise_bus_id(bus_id)
    ))
    .ok()?;
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// Connected components of `n` GPUs joined by `links`, numbered in order of their lowest GPU.
pub fn components(n: usize, links: &[(usize, usize)]) -> Vec<u32> {
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for &(a, b) in links {
        if a < n && b < n {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut ids = BTreeMap::new();
    (0..n)
        .map(|i| {
            let r = root(&mut parent, i);
            let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            *ids.entry(r).or_insert(next)
        })
        .collect()
}

impl GpuInventory for NvmlInventory {
    fn discover(&self) -> Result<Vec<Gpu>, InventoryError> {
        let nvml = Nvml::init().map_err(init_error)?;
        let count = nvml
            .device_count()
            .map_err(nvml_err("the number of GPUs"))?;
        let mut gpus = Vec::new();
        let mut bus_ids = Vec::new();
        let mut links = Vec::new();
        for i in 0..count {
            let device = nvml
                .device_by_index(i)
                .map_err(nvml_err(format!("GPU {i}")))?;
            let bus_id = device
                .pci_info()
                .map(|p| normalise_bus_id(&p.bus_id))
                .unwrap_or_default();
            let numa_node = device
                .numa_node_id()
                .ok()
                .or_else(|| sysfs_numa_node(&bus_id));
            gpus.push(Gpu {
                index: device.index().unwrap_or(i),
                model: device
                    .name()
                    .map_err(nvml_err(format!("the name of GPU {i}")))?,
                memory_mib: device
                    .memory_info()
                    .map_err(nvml_err(format!("the memory of GPU {i}")))?
                    .total
                    / (1024 * 1024),
                nvlink_group: 0,
                numa_node,
                uuid: device
                    .uuid()
                    .map_err(nvml_err(format!("the uuid of GPU {i}")))?,
            });
            // Links to a switch or CPU, or unsupported queries, simply add no edge.
            for link in 0..MAX_NVLINK_LINKS {
                let wrapper = device.link_wrapper_for(link);
                if wrapper.is_active().unwrap_or(false)
                    && let Ok(remote) = wrapper.remote_pci_info()
                {
                    links.push((gpus.len() - 1, normalise_bus_id(&remote.bus_id)));
                }
            }
            bus_ids.push(bus_id);
        }
        let edges: Vec<(usize, usize)> = links
            .iter()
            .filter_map(|(a, remote)| {
                bus_ids
                    .iter()
                    .position(|b| !b.is_empty() && b == remote)
                    .map(|b| (*a, b))
            })
            .collect();
        for (gpu, group) in gpus.iter_mut().zip(components(bus_ids.len(), &edges)) {
            gpu.nvlink_group = group;
        }
        gpus.sort_by_key(|g| g.index);
        Ok(gpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_driver_the_error_says_so_and_how_to_declare_gpus() {
        match NvmlInventory.discover() {
            Err(err @ InventoryError::NoNvidiaDriver { .. }) => {
                let text = err.to_string();
                assert!(
                    text.starts_with("no NVIDIA driver found on this machine (NVML: "),
                    "{text}"
                );
                assert!(text.contains("--gpus N"), "{text}");
                assert!(text.contains("--inventory FILE"), "{text}");
            }
            Err(other) => panic!("expected the no-driver error, got: {other}"),
            // A machine with the driver: the real inventory is fine too.
            Ok(gpus) => assert!(gpus.iter().all(|g| !g.model.is_empty())),
        }
    }

    #[test]
    fn driver_errors_are_classified() {
        assert!(matches!(
            init_error(NvmlError::DriverNotLoaded),
            InventoryError::NoNvidiaDriver { .. }
        ));
        assert!(matches!(
            init_error(NvmlError::LibraryNotFound),
            InventoryError::NoNvidiaDriver { .. }
        ));
        assert!(matches!(
            init_error(NvmlError::Unknown),
            InventoryError::Nvml { .. }
        ));
    }

    #[test]
    fn nvlink_groups_are_connected_components() {
        assert_eq!(components(4, &[]), vec![0, 1, 2, 3]);
        assert_eq!(
            components(8, &[(0, 1), (1, 2), (2, 3), (4, 5), (6, 7), (5, 6)]),
            vec![0, 0, 0, 0, 1, 1, 1, 1]
        );
        assert_eq!(components(4, &[(3, 1), (0, 2), (9, 0)]), vec![0, 1, 0, 1]);
    }

    #[test]
    fn bus_ids_are_compared_in_sysfs_form() {
        assert_eq!(normalise_bus_id("00000000:3B:00.0"), "0000:3b:00.0");
        assert_eq!(normalise_bus_id("0000:3b:00.0"), "0000:3b:00.0");
        assert_eq!(normalise_bus_id("00000001:01:00.0"), "0001:01:00.0");
    }
}
