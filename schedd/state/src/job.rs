//! A job as the state machine keeps it.

use gantry_model::{JobId, JobSpec, JobState, Owner, Resources, Warning};
use gantry_policies::{Claimant, PartPlan};
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
    /// How many times it was requeued on the scheduler's own account (node failures, time
    /// limits): at `requeue.max` the next such end is final.
    pub automatic_requeues: u32,
    /// Stopped to be moved for defragmentation, and not started since, with the place the
    /// move found for it: while it stops the passes keep that place for it
    /// (`RunningJob::moving_to`); pending, it ranks right after the jobs guarantees cover
    /// (`PendingJob::moved`).
    pub moved_to: Option<Vec<PartPlan>>,
    /// Pending, running jobs were stopped for this run (`Command::Requeue.for_job`), and it
    /// has not started since: it ranks first, earliest claim (log index) first, and the
    /// passes keep the place the last of them counted it to take (`PendingJob::claimant`).
    /// Ends when it starts or is held.
    pub claim: Option<Claimant>,
    /// The current run said its work is done (`gantry checkpoint done --final`): ending
    /// with exit code 0 it completes the job, whatever stop was under way.
    pub work_done: bool,
}

/// Why a running job is being stopped to run again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requeue {
    pub why: String,
    pub cause: RequeueCause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequeueCause {
    /// For another job (QoS, a guarantee reclaim, defragmentation) or by `gantry preempt`.
    Preempted,
    /// `gantry requeue`.
    ByHand,
    /// Its node is drained (`--requeue`, `--deadline`) or taken by a maintenance reservation.
    Drain,
    /// A node of the run failed (its job spec lets it run again).
    NodeFail,
    /// The run reached its time limit (`--requeue-on-timeout`).
    Timeout,
}

impl RequeueCause {
    /// The outcome the ended run shows in the job's history.
    pub fn outcome(self) -> &'static str {
        match self {
            RequeueCause::Preempted => "PREEMPTED",
            RequeueCause::ByHand | RequeueCause::Drain => "REQUEUED",
            RequeueCause::NodeFail => "NODE_FAIL",
            RequeueCause::Timeout => "TIMEOUT",
        }
    }

    /// Requeued by the scheduler on its own, counted against `requeue.max`.
    pub fn automatic(self) -> bool {
        matches!(self, RequeueCause::NodeFail | RequeueCause::Timeout)
    }
}

/// One run of a job that has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    /// Each node it ran on, with the GPUs it held there.
    pub parts: Vec<(String, Vec<u32>)>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The cause of a requeue ([`RequeueCause::outcome`]), or the state the job ended in.
    pub outcome: String,
    pub reason: String,
    /// GPU-milliseconds of work to do again: GPUs held × the time since the run's last
    /// checkpoint (since its start without one). 0 for the final run.
    pub lost_gpu_ms: u64,
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
    /// Why it is being stopped to run again, as its checkpoint warning names it; `None`
    /// when it is not (or a cancel came meanwhile: that stop is final).
    pub fn requeue_warning(&self) -> Option<Warning> {
        let requeue = self.requeue.as_ref().filter(|_| !self.cancel_requested)?;
        Some(match requeue.cause {
            RequeueCause::Preempted if self.moved_to.is_some() => Warning::Move,
            RequeueCause::Preempted => Warning::Preemption,
            RequeueCause::ByHand => Warning::Requeue,
            RequeueCause::Drain => Warning::Drain,
            RequeueCause::NodeFail => Warning::NodeFailure,
            RequeueCause::Timeout => Warning::TimeLimit,
        })
    }

    /// Whether its node should be stopping it now.
    pub fn stopping(&self) -> bool {
        self.cancel_requested || self.first_failure.is_some() || self.requeue.is_some()
    }

    /// When the current run last checkpointed; `None` when it has not yet.
    pub fn checkpointed_this_run(&self) -> Option<u64> {
        let start = self.start_time_ms?;
        self.last_checkpoint_ms.filter(|at| *at >= start)
    }

    /// How many of its ended runs were preempted (for another job or by hand).
    pub fn preemptions(&self) -> u32 {
        let preempted = RequeueCause::Preempted.outcome();
        let runs = self.attempts.iter().filter(|a| a.outcome == preempted);
        u32::try_from(runs.count()).unwrap_or(u32::MAX)
    }

    pub fn part_on(&self, node: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.node == node)
    }

    /// The node's rank in the job (0 for the first node) and the list of the job's nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.node.clone()).collect()
    }
}
