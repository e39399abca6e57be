//! A job as the state machine keeps it.

use gantry_model::{JobId, JobSpec, JobState, Owner, Resources};
use serde::{Deserialize, Serialize};

use crate::command::PartExit;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub owner: Owner,
    pub spec: JobSpec,
    pub state: JobState,
    /// Why it ended the way it did (empty while pending or running).
    pub reason: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub submit_time_ms: u64,
    pub start_time_ms: Option<u64>,
    pub end_time_ms: Option<u64>,
    /// Incremented each time the job starts again (requeue, later issues).
    pub attempt: u32,
    /// Fencing token of the current allocation: the log index that decided it.
    pub epoch: u64,
    /// One per node of the current allocation.
    pub parts: Vec<Part>,
    /// The shape of the current or last allocation: 0 for the main request, N for
    /// alternative N.
    pub shape: u32,
    pub cancel_requested: bool,
    /// Set when the job is to run again (a preemption, a reclaim, `gantry requeue`): its
    /// parts are stopped, and once all have ended the job is pending again, as its next run.
    pub requeue: Option<Requeue>,
    /// The first part that ended badly, and its node; the other parts are being stopped
    /// and the job will end the way this one did.
    pub first_failure: Option<(String, PartExit)>,
    /// Its runs that have ended, oldest first.
    pub attempts: Vec<Attempt>,
    /// Who holds it back from scheduling (`gantry hold`), while pending.
    pub held_by: Option<String>,
    /// The secret of the current run (see `Command::Allocate`); never shown.
    pub token: String,
    /// When its last checkpoint completed, in any run, and how far it had got.
    pub last_checkpoint_ms: Option<u64>,
    pub checkpoint_progress: Option<u64>,
}

/// Why a running job is being stopped to run again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requeue {
    pub why: String,
    /// For another job (a preemption or reclaim), rather than by hand.
    pub preempted: bool,
}

/// One run of a job that has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    /// Each node it ran on, with the GPUs it held there.
    pub parts: Vec<(String, Vec<u32>)>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// `PREEMPTED`, `REQUEUED`, or the state the job ended in.
    pub outcome: String,
    pub reason: String,
}

/// The share of a running job on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub node: String,
    pub gpus: Vec<u32>,
    pub cpus: u32,
    pub mem_mib: u64,
    /// The node reported it launched.
    pub started: bool,
    pub exit: Option<PartExit>,
}

impl Part {
    pub fn resources(&self) -> Resources {
        Resources {
            gpus: u32::try_from(self.gpus.len()).unwrap_or(u32::MAX),
            cpus: self.cpus,
            mem_mib: self.mem_mib,
        }
    }
}

impl Job {
    /// Whether its node should be stopping it now.
    pub fn stopping(&self) -> bool {
        self.cancel_requested || self.first_failure.is_some() || self.requeue.is_some()
    }

    /// When the current run last checkpointed; `None` when it has not yet.
    pub fn checkpointed_this_run(&self) -> Option<u64> {
        let start = self.start_time_ms?;
        self.last_checkpoint_ms.filter(|at| *at >= start)
    }

    pub fn part_on(&self, node: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.node == node)
    }

    /// The node's rank in the job (0 for the first node) and the list of the job's nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.node.clone()).collect()
    }
}
