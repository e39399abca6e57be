//! The policies' input and output: plain data, built by the caller from its own state.

use std::collections::BTreeMap;
use std::sync::Arc;

use gantry_model::{Dependency, Gpu, JobId, Resources, Shape};
use serde::{Deserialize, Serialize};

use crate::config::{DEFAULT_QOS, PolicyConfig};
use crate::priority::Priority;
use crate::topology::Topology;

/// A snapshot of what the policies need to decide.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub now_ms: u64,
    /// Every known node, in a stable order (by name).
    pub nodes: Vec<NodeView>,
    /// Jobs waiting to start, in any order: the pass ranks them.
    pub pending: Vec<PendingJob>,
    /// Jobs holding resources, with when their time limits give them back.
    pub running: Vec<RunningJob>,
    pub config: PolicyConfig,
    /// Per account, what ended runs used: `(when, dominant-share ppm × seconds)`, for fair
    /// share (what running jobs have used so far, fair share adds from `running`).
    pub usage: BTreeMap<String, Vec<(u64, u64)>>,
    /// The account tree. Accounts jobs name that are not in it count as children of `root`
    /// with a share of 1.
    pub accounts: Vec<AccountView>,
    /// The switches above each node; empty when no topology file is loaded.
    pub topology: Arc<Topology>,
    /// Per account, how many of its jobs were preempted (for any reason) in the last hour:
    /// defragmentation moves no more of them than `defrag.per_hour` allows.
    pub preempted_last_hour: BTreeMap<String, u32>,
    /// Advance reservations that have not ended: nodes held for their members' jobs.
    pub reservations: Vec<ReservationView>,
}

/// Nodes (or GPUs of them) held over `[start, end)`: only jobs submitted with
/// `--reservation NAME` run there then, and nothing else starts there that would still run
/// by `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationView {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub nodes: Vec<String>,
    /// The GPUs it holds on each of its nodes; empty: it holds the nodes whole.
    pub gpus: BTreeMap<String, Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub name: String,
    /// `None` for the top of the tree.
    pub parent: Option<String>,
    /// Relative to its siblings.
    pub share: u32,
    pub guarantee_gpus: Option<u32>,
    /// GPUs its jobs and its sub-accounts' jobs may hold at most.
    pub max_gpus: Option<u32>,
}

impl ClusterView {
    /// The view once `decisions` have started their jobs and begun stopping the ones they
    /// preempt, as the state machine records them (starting now, holding what they were given
    /// until their time limits; victims `stopping`): what the next pass sees if nothing else
    /// happens. For benchmarks and tests.
    pub fn with_starts(&self, decisions: &Decisions) -> ClusterView {
        let mut next = self.clone();
        for victim in &decisions.preempt {
            if let Some(job) = next.running.iter_mut().find(|j| j.id == victim.job) {
                job.stopping = true;
            }
            if let Some(job) = next.pending.iter_mut().find(|j| j.id == victim.for_job) {
                job.claimant = Some(Claimant {
                    since: job.claimant.as_ref().map_or(self.now_ms, |c| c.since),
                    place: victim.place.clone(),
                });
            }
        }
        for start in &decisions.starts {
            let Some(at) = next.pending.iter().position(|j| j.id == start.job) else {
                continue;
            };
            let job = next.pending.remove(at);
            let Some(shape) = job.shapes.get(start.shape as usize) else {
                continue;
            };
            let mut parts = Vec::new();
            for part in &start.parts {
                if let Some(n) = next.nodes.iter_mut().find(|n| n.name == part.node) {
                    n.free = n.free.saturating_sub(&shape.per_node);
                    n.free_gpus.retain(|g| !part.gpus.contains(g));
                }
                parts.push(Held {
                    node: part.node.clone(),
                    res: shape.per_node,
                    gpus: part.gpus.clone(),
                });
            }
            next.running.push(RunningJob {
                id: job.id,
                account: job.account.clone(),
                qos: job.qos.clone(),
                checkpointed_ms: None,
                movable: None,
                deadline_ms: job.deadline_ms,
                preemptions: job.preemptions,
                start_ms: self.now_ms,
                stopping: false,
                moving_to: None,
                ends_at_ms: shape.end_if_started(self.now_ms),
                parts,
            });
        }
        next
    }
}

#[derive(Debug, Clone)]
pub struct RunningJob {
    pub id: JobId,
    pub account: String,
    pub start_ms: u64,
    /// Being stopped already (cancelled, failed elsewhere, requeued): its resources are
    /// about to be free.
    pub stopping: bool,
    /// Being stopped to be moved for defragmentation: the place the pass that moved it found
    /// for it to start again at once. Every pass keeps it for it while it stops (else a job
    /// arriving meanwhile could take it, and the moved job the GPUs it freed).
    pub moving_to: Option<Vec<PartPlan>>,
    /// Start plus time limit; `None`: no limit.
    pub ends_at_ms: Option<u64>,
    /// Its QoS level: who may preempt it.
    pub qos: String,
    /// When it last reported a completed checkpoint (this run); `None`: never, so stopping
    /// it loses everything since its start.
    pub checkpointed_ms: Option<u64>,
    /// The shape it runs in, when it may be moved: it has a checkpoint contract, so
    /// defragmentation may stop it and start it again elsewhere.
    pub movable: Option<Shape>,
    /// When it must have ended (`--deadline`): a job racing its own deadline is not stopped
    /// for another's.
    pub deadline_ms: Option<u64>,
    /// How many of its earlier runs were preempted: each one doubles the time it runs
    /// before it may be stopped again, and `preempt.budget` of them spare it for good
    /// (but from guarantees).
    pub preemptions: u32,
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
    /// Its pool (partition): jobs of other pools never land on it.
    pub pool: String,
    /// What jobs may require of it (`-C`).
    pub labels: Vec<String>,
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
    pub submit_ms: u64,
    pub account: String,
    pub qos: String,
    /// When it must have ended, wall clock.
    pub deadline_ms: Option<u64>,
    /// Its dependencies on jobs that have not ended yet: it waits for them.
    pub waiting_on: Vec<Dependency>,
    /// The reservation it runs in (`--reservation`): only there, only in its window.
    pub reservation: Option<String>,
    /// It was stopped to be moved for defragmentation and has not started since. It ranks
    /// right after the jobs guarantees cover, ahead of every other, so that the room kept for
    /// it while it stopped is still there when it is placed (afresh, fragmentation-aware:
    /// the job it was moved for is in the demand).
    pub moved: bool,
    /// Running jobs were stopped for its current run (a reclaim, a QoS or deadline
    /// preemption, a defragmentation) and it has not started since. It ranks first, so that
    /// what they free goes to it and not to a job queued behind (which would leave it to stop
    /// more, or the same ones again), and keeps the place it was counted to take.
    pub claimant: Option<Claimant>,
    /// How many of its runs so far were preempted: a job preempted before ranks ahead of
    /// its peers (the `preempted` priority factor).
    pub preemptions: u32,
}

/// A waiting job's claim on what the jobs stopped for it free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimant {
    /// When the first of them was stopped (any increasing count: the state machine gives
    /// the log index): among claimants, the earliest first.
    pub since: u64,
    /// Where it was counted to start, in its main shape: the passes keep it for it.
    pub place: Vec<PartPlan>,
}

impl PendingJob {
    /// A job of account `default` and QoS `normal`, submitted at 0, without a deadline.
    pub fn new(id: JobId, shapes: Vec<Shape>) -> PendingJob {
        PendingJob {
            id,
            shapes,
            submit_ms: 0,
            account: "default".into(),
            qos: DEFAULT_QOS.into(),
            deadline_ms: None,
            waiting_on: vec![],
            reservation: None,
            moved: false,
            claimant: None,
            preemptions: 0,
        }
    }

    /// Like [`PendingJob::new`], with one way to run.
    pub fn single(id: JobId, shape: Shape) -> PendingJob {
        PendingJob::new(id, vec![shape])
    }
}

/// What the policies decided in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    pub starts: Vec<Start>,
    /// Every pending job that does not start now, with why.
    pub waiting: Vec<(JobId, WaitReason)>,
    /// Every pending job in the order it was considered, with its priority.
    pub ranked: Vec<(JobId, Priority)>,
    /// Running jobs to stop and requeue: borrowers whose GPUs an account below its
    /// guarantee takes back, jobs a higher QoS preempts, jobs moved to defragment.
    pub preempt: Vec<Victim>,
    /// Of `preempt`, the jobs moved to defragment, with the place kept for each while it
    /// stops (see [`RunningJob::moving_to`]); pending again, they rank ahead of all but
    /// guaranteed jobs (see [`PendingJob::moved`]).
    pub moved: Vec<(JobId, Vec<PartPlan>)>,
}

/// A running job a pass stops, for whom and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub job: JobId,
    /// The waiting job it is stopped for: a claimant until it starts (see
    /// [`PendingJob::claimant`]).
    pub for_job: JobId,
    /// As its history shows it: `preempted for job 9 of QoS high`.
    pub reason: String,
    /// Where the job it is stopped for is counted to start: kept for it (see
    /// [`PendingJob::claimant`]).
    pub place: Vec<PartPlan>,
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
    /// Starting it would take its account (or one above) past its GPU limit.
    Quota(String),
    /// Jobs it depends on have not ended yet.
    Dependency { on: Vec<Dependency> },
    /// Its account is below its guarantee: GPUs are being taken back for it from borrowers,
    /// these jobs.
    Reclaiming { stopping: Vec<JobId> },
    /// Its QoS preempts the jobs being stopped for it.
    Preempting { stopping: Vec<JobId>, qos: String },
    /// It starts on what these jobs, being stopped already, hold: as soon as they end.
    Stopping { awaits: Vec<JobId> },
    /// It would miss its deadline waiting: these jobs without one are being stopped for it.
    Deadline { stopping: Vec<JobId> },
    /// It runs in a reservation and waits for it: its window, or room in it; says which.
    Reservation(String),
    /// The GPUs it needs are free but scattered: these checkpointable jobs are being moved
    /// elsewhere so that it fits.
    Defragmenting { moving: Vec<JobId> },
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
            WaitReason::Quota(why) => write!(f, "Quota: {why}"),
            WaitReason::Dependency { on } => {
                let on: Vec<String> = on.iter().map(Dependency::to_string).collect();
                write!(f, "Dependency: waits for {}", on.join(", "))
            }
            WaitReason::Stopping { awaits } => match &awaits[..] {
                [] => write!(f, "Resources: starts as the jobs being stopped end"),
                [one] => write!(f, "Resources: starts as job {one}, being stopped, ends"),
                many => {
                    let ids: Vec<String> = many.iter().map(u64::to_string).collect();
                    write!(
                        f,
                        "Resources: starts as jobs {}, being stopped, end",
                        ids.join(", ")
                    )
                }
            },
            WaitReason::Preempting { stopping, qos } => {
                let ids: Vec<String> = stopping.iter().map(u64::to_string).collect();
                write!(
                    f,
                    "Preempting: QoS {qos} stops lower-QoS job {} for it",
                    ids.join(", ")
                )
            }
            WaitReason::Reservation(why) => write!(f, "Reservation: {why}"),
            WaitReason::Deadline { stopping } => {
                let ids: Vec<String> = stopping.iter().map(u64::to_string).collect();
                write!(
                    f,
                    "Deadline: stopping job {} so that it ends by its deadline",
                    ids.join(", ")
                )
            }
            WaitReason::Defragmenting { moving } => {
                let ids: Vec<String> = moving.iter().map(u64::to_string).collect();
                write!(
                    f,
                    "Defragmenting: moving job {} elsewhere so that it fits",
                    ids.join(", ")
                )
            }
            WaitReason::Reclaiming { stopping } => {
                let ids: Vec<String> = stopping.iter().map(u64::to_string).collect();
                write!(
                    f,
                    "Reclaiming: its account's guaranteed GPUs are being taken back (stopping job {})",
                    ids.join(", ")
                )
            }
        }
    }
}
