//! A node as the state machine keeps it.

use std::collections::{BTreeMap, BTreeSet};

use gantry_model::{JobId, NodeInventory, Resources};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// The identity of the node daemon that owns the name (kept in its data dir): another
    /// daemon's registration under the name is refused. Empty: the next one claims it (a
    /// node replaced by an admin).
    pub identity: String,
    pub inventory: NodeInventory,
    pub registered_time_ms: u64,
    /// Its node daemon is connected (registered and not declared lost since).
    pub up: bool,
    /// Why it is down, when it is.
    pub down_reason: Option<String>,
    pub drain: Option<Drain>,
    /// GPUs its node daemon reported failing, with why: never given to a job. Cleared when
    /// the node registers again (it reports those still failing).
    pub failed_gpus: BTreeMap<u32, String>,
    /// What the parts of running jobs hold here (derived, kept for speed).
    pub allocated: Resources,
    pub used_gpus: BTreeSet<u32>,
    pub jobs: BTreeSet<JobId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub reason: String,
    pub by: String,
    pub since_ms: u64,
    /// When the jobs still running here are requeued (`gantry drain --deadline`).
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Idle,
    Mixed,
    Allocated,
    Draining,
    Drained,
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Idle => "IDLE",
            NodeState::Mixed => "MIXED",
            NodeState::Allocated => "ALLOCATED",
            NodeState::Draining => "DRAINING",
            NodeState::Drained => "DRAINED",
            NodeState::Down => "DOWN",
        }
    }
}

impl Node {
    pub fn new(name: String, inventory: NodeInventory, now_ms: u64) -> Node {
        Node {
            name,
            identity: String::new(),
            inventory,
            registered_time_ms: now_ms,
            up: true,
            down_reason: None,
            drain: None,
            failed_gpus: BTreeMap::new(),
            allocated: Resources::default(),
            used_gpus: BTreeSet::new(),
            jobs: BTreeSet::new(),
        }
    }

    pub fn state(&self) -> NodeState {
        let capacity = self.capacity();
        match (&self.drain, self.up) {
            (_, false) => NodeState::Down,
            (Some(_), true) if self.jobs.is_empty() => NodeState::Drained,
            (Some(_), true) => NodeState::Draining,
            (None, true) if self.jobs.is_empty() => NodeState::Idle,
            (None, true)
                if (capacity.gpus > 0 && self.allocated.gpus >= capacity.gpus)
                    || self.allocated.cpus >= capacity.cpus =>
            {
                NodeState::Allocated
            }
            (None, true) => NodeState::Mixed,
        }
    }

    /// Why the node takes no new work, or `None` when it takes work.
    pub fn unavailable_reason(&self) -> Option<String> {
        if !self.up {
            return Some(format!(
                "down ({})",
                self.down_reason.as_deref().unwrap_or("not connected")
            ));
        }
        self.drain
            .as_ref()
            .map(|d| format!("drained ({})", d.reason))
    }

    /// What it offers: its inventory without the failed GPUs.
    pub fn capacity(&self) -> Resources {
        let mut capacity = self.inventory.capacity();
        let failed = u32::try_from(self.failed_gpus.len()).unwrap_or(u32::MAX);
        capacity.gpus = capacity.gpus.saturating_sub(failed);
        capacity
    }

    pub fn free(&self) -> Resources {
        self.capacity().saturating_sub(&self.allocated)
    }

    pub fn free_gpus(&self) -> Vec<u32> {
        self.inventory
            .gpus
            .iter()
            .map(|g| g.index)
            .filter(|i| !self.used_gpus.contains(i) && !self.failed_gpus.contains_key(i))
            .collect()
    }

    /// Its GPUs that work.
    pub fn usable_gpus(&self) -> Vec<gantry_model::Gpu> {
        self.inventory
            .gpus
            .iter()
            .filter(|g| !self.failed_gpus.contains_key(&g.index))
            .cloned()
            .collect()
    }
}
