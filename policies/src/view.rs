//! The policies' input and output: plain data, built by the caller from its own state.

use gantry_model::{Gpu, JobId, Resources, Shape};
use serde::{Deserialize, Serialize};

/// A snapshot of what the policies need to decide.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub now_ms: u64,
    /// Every known node, in a stable order (by name).
    pub nodes: Vec<NodeView>,
    /// Jobs waiting to start, highest priority first.
    pub pending: Vec<PendingJob>,
    /// Jobs holding resources, with when their time limits give them back.
    pub running: Vec<RunningJob>,
}

#[derive(Debug, Clone)]
pub struct RunningJob {
    pub id: JobId,
    /// Start plus time limit; `None`: no limit.
    pub ends_at_ms: Option<u64>,
    /// What it holds on each node it still runs on.
    pub parts: Vec<Held>,
}

#[derive(Debug, Clone)]
pub struct Held {
    pub node: String,
    pub res: Resources,
    pub gpus: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    /// Up and not drained: may take new work.
    pub schedulable: bool,
    /// Why the node takes no work, when it does not.
    pub unavailable_reason: Option<String>,
    pub gpus: Vec<Gpu>,
    pub capacity: Resources,
    pub free: Resources,
    /// Indices of the GPUs no job holds, ascending.
    pub free_gpus: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct PendingJob {
    pub id: JobId,
    /// The ways it can run: its main request first, then its alternatives. A shape without
    /// a time limit may run for ever as far as backfill can tell.
    pub shapes: Vec<Shape>,
}

impl PendingJob {
    /// A job with one way to run.
    pub fn single(id: JobId, shape: Shape) -> PendingJob {
        PendingJob {
            id,
            shapes: vec![shape],
        }
    }
}

/// What the policies decided in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    pub starts: Vec<Start>,
    /// Every pending job that does not start now, with why.
    pub waiting: Vec<(JobId, WaitReason)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub job: JobId,
    /// Which of the job's shapes: 0 for its main request.
    pub shape: u32,
    pub parts: Vec<PartPlan>,
}

/// The share of a job on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartPlan {
    pub node: String,
    pub gpus: Vec<u32>,
    pub cpus: u32,
    pub mem_mib: u64,
}

/// Why a pending job waits. Shown by `gantry queue` and `gantry show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// Not enough free resources now; says which.
    Resources(String),
    /// Resources are reserved for it: it starts at the latest when running jobs reach
    /// their time limits, `in_ms` from the pass that said so (earlier if they end sooner).
    Reserved { in_ms: u64 },
    /// A job ahead of it in the queue is waiting for resources.
    Priority { behind: JobId },
    /// No known node could ever run it (the cluster shrank, or nodes are gone).
    NeverFits(String),
}

impl std::fmt::Display for WaitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitReason::Resources(why) => write!(f, "Resources: {why}"),
            WaitReason::Reserved { in_ms } => write!(
                f,
                "Resources: reserved, starts within {}",
                gantry_model::units::format_duration_ms(*in_ms)
            ),
            WaitReason::Priority { behind } => {
                write!(f, "Priority: waiting behind job {behind}")
            }
            WaitReason::NeverFits(why) => write!(f, "Unsatisfiable: {why}"),
        }
    }
}
