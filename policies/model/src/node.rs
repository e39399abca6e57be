//! Nodes, their GPUs and the resources jobs ask for.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many heartbeat intervals may pass without a message. One late keepalive is ordinary
/// (a slow Raft commit, a busy machine); three missed in a row mean the replica is gone. It
/// stays well under the scheduler's node timeout (by default 30 s, at a 2 s interval: a 6 s
/// lease), so the node finds the new leader before that leader declares it lost.
pub const SESSION_LEASE_INTERVALS: u32 = 3;

/// The shortest session lease: with very short intervals, scheduling jitter alone would
/// otherwise drop healthy sessions.
pub const MIN_SESSION_LEASE: Duration = Duration::from_secs(3);

/// How long a node daemon listens to a silent scheduler that asked for heartbeats every
/// `heartbeat`: `max(SESSION_LEASE_INTERVALS × heartbeat, MIN_SESSION_LEASE)`.
pub fn session_lease(heartbeat: Duration) -> Duration {
    heartbeat
        .saturating_mul(SESSION_LEASE_INTERVALS)
        .max(MIN_SESSION_LEASE)
}

/// One GPU of a node, as discovered by NVML or declared by the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// The index `CUDA_VISIBLE_DEVICES` uses for it.
    pub index: u32,
    pub model: String,
    pub memory_mib: u64,
    /// GPUs with the same group share an NVLink domain.
    pub nvlink_group: u32,
    pub numa_node: Option<u32>,
    pub uuid: String,
}

/// What a node offers, reported by its node daemon when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeInventory {
    pub gpus: Vec<Gpu>,
    pub cpus: u32,
    pub mem_mib: u64,
    pub pool: String,
    /// What jobs may require of it (`-C`): `ib`, `nvme`, ...
    pub labels: Vec<String>,
}

impl NodeInventory {
    pub fn capacity(&self) -> Resources {
        Resources {
            gpus: u32::try_from(self.gpus.len()).unwrap_or(u32::MAX),
            cpus: self.cpus,
            mem_mib: self.mem_mib,
        }
    }

    /// The model name shown for the node: the GPUs' model, or `mixed` when they differ.
    pub fn gpu_model(&self) -> String {
        let mut models = self.gpus.iter().map(|g| g.model.as_str());
        match models.next() {
            None => String::new(),
            Some(first) if models.all(|m| m == first) => first.to_string(),
            Some(_) => "mixed".to_string(),
        }
    }
}

/// An amount of the node-local resources a job asks for on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    pub gpus: u32,
    pub cpus: u32,
    pub mem_mib: u64,
}

impl Resources {
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.gpus <= free.gpus && self.cpus <= free.cpus && self.mem_mib <= free.mem_mib
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            gpus: self.gpus.saturating_sub(other.gpus),
            cpus: self.cpus.saturating_sub(other.cpus),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
        }
    }

    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            gpus: self.gpus.saturating_add(other.gpus),
            cpus: self.cpus.saturating_add(other.cpus),
            mem_mib: self.mem_mib.saturating_add(other.mem_mib),
        }
    }

    /// The largest fraction of `capacity`'s GPUs, CPUs or memory that this is, in parts
    /// per million (at most a million; a dimension `capacity` lacks counts as none).
    pub fn dominant_share_ppm(&self, capacity: &Resources) -> u64 {
        let ppm = |asked: u64, total: u64| {
            asked
                .saturating_mul(1_000_000)
                .checked_div(total)
                .map_or(0, |share| share.min(1_000_000))
        };
        ppm(u64::from(self.gpus), u64::from(capacity.gpus))
            .max(ppm(u64::from(self.cpus), u64::from(capacity.cpus)))
            .max(ppm(self.mem_mib, capacity.mem_mib))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dominant_share_is_the_largest_fraction_of_capacity() {
        let r = |gpus, cpus, mem_mib| Resources {
            gpus,
            cpus,
            mem_mib,
        };
        let cluster = r(8, 64, 1024);
        assert_eq!(r(4, 1, 1).dominant_share_ppm(&cluster), 500_000);
        assert_eq!(r(0, 48, 1).dominant_share_ppm(&cluster), 750_000);
        assert_eq!(r(1, 1, 1024).dominant_share_ppm(&cluster), 1_000_000);
        // More than there is counts as all of it; a dimension the cluster lacks, as none.
        assert_eq!(r(16, 1, 1).dominant_share_ppm(&cluster), 1_000_000);
        assert_eq!(r(4, 0, 0).dominant_share_ppm(&r(0, 64, 1024)), 0);
    }

    #[test]
    fn fits_in_checks_every_dimension() {
        let free = Resources {
            gpus: 4,
            cpus: 8,
            mem_mib: 1024,
        };
        assert!(
            Resources {
                gpus: 4,
                cpus: 8,
                mem_mib: 1024
            }
            .fits_in(&free)
        );
        assert!(
            !Resources {
                gpus: 5,
                cpus: 1,
                mem_mib: 1
            }
            .fits_in(&free)
        );
        assert!(
            !Resources {
                gpus: 0,
                cpus: 9,
                mem_mib: 1
            }
            .fits_in(&free)
        );
        assert!(
            !Resources {
                gpus: 0,
                cpus: 1,
                mem_mib: 1025
            }
            .fits_in(&free)
        );
    }

    #[test]
    fn gpu_model_names_mixed_nodes() {
        let gpu = |m: &str| Gpu {
            index: 0,
            model: m.into(),
            memory_mib: 0,
            nvlink_group: 0,
            numa_node: None,
            uuid: String::new(),
        };
        let mut inv = NodeInventory {
            gpus: vec![gpu("H100"), gpu("H100")],
            ..Default::default()
        };
        assert_eq!(inv.gpu_model(), "H100");
        inv.gpus.push(gpu("A100"));
        assert_eq!(inv.gpu_model(), "mixed");
    }
}
