//! Commands (the log's entries) and what applying one yields.

pub use gantry_model::ExitReason;
use gantry_model::{JobId, JobSpec, JobState, NodeInventory, Owner, SpecError};
use gantry_policies::{ConfigError, PartPlan};

use crate::accounts::{AccountChange, AccountError, NewAccount};
use crate::reservation::Reservation;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One entry of the replicated log. `now_ms` is the proposer's wall clock at proposal time:
/// the only way time enters the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Submit {
        owner: Owner,
        spec: Box<JobSpec>,
        /// The client's key for this submit: a retry with the same key (by the same user)
        /// returns the first job instead of creating another.
        key: Option<String>,
        now_ms: u64,
    },
    /// `admin` is decided by the proposer from its configuration; owners may cancel their own jobs.
    Cancel {
        jobs: Vec<JobId>,
        by: String,
        admin: bool,
        now_ms: u64,
    },
    /// A scheduling decision: start `job` on these nodes. Verified at apply.
    Allocate {
        job: JobId,
        attempt: u32,
        /// Which of the job's shapes (0: its main request).
        shape: u32,
        parts: Vec<PartPlan>,
        /// A secret the leader draws for this run: the job presents it (`GANTRY_JOB_TOKEN`)
        /// to report its checkpoints.
        token: String,
        now_ms: u64,
    },
    /// A user's or admin's hand on jobs (`gantry hold|release|requeue|preempt`): all or
    /// nothing, like a cancel. `admin` was checked by the proposer.
    Control {
        jobs: Vec<JobId>,
        action: Control,
        by: String,
        admin: bool,
        now_ms: u64,
    },
    /// The job's run `attempt` reports a completed checkpoint (`gantry checkpoint done`);
    /// the proposer has checked its token.
    CheckpointDone {
        job: JobId,
        attempt: u32,
        /// How far the job got, in its own units.
        progress: Option<u64>,
        /// The job's work is done (`gantry checkpoint done --final`): the run ending with
        /// exit code 0 completes the job, whatever stop was under way.
        work_done: bool,
        now_ms: u64,
    },
    /// A node daemon (re)connected, with its identity (kept in its data dir), what it
    /// offers, which jobs it still runs, how those that ended while it was away ended, and
    /// which of its GPUs are failing (index, why). Refused when the name belongs to another
    /// daemon's identity (see `ReplaceNode`).
    RegisterNode {
        name: String,
        identity: String,
        inventory: NodeInventory,
        running: Vec<(JobId, u32)>,
        finished: Vec<(JobId, u32, PartExit)>,
        failed_gpus: Vec<(u32, String)>,
        now_ms: u64,
    },
    /// The first leader names the cluster (a random name drawn outside apply); ignored once
    /// it has one.
    NameCluster { name: String },
    /// An admin lets another machine take node `name` over (`gantry nodes replace`): the next
    /// node daemon to register under the name claims it, whatever its identity. Refused while
    /// the node is up.
    ReplaceNode {
        name: String,
        by: String,
        now_ms: u64,
    },
    /// A node daemon saw one of its GPUs fail (XID error, uncorrectable ECC errors, GPU
    /// lost): it is given to no job; the jobs on it stop, to run again elsewhere; the node is
    /// drained if `gpu_failure.drain` says so.
    GpuFailed {
        node: String,
        gpu: u32,
        reason: String,
        now_ms: u64,
    },
    JobStarted {
        job: JobId,
        attempt: u32,
        node: String,
        now_ms: u64,
    },
    JobExited {
        job: JobId,
        attempt: u32,
        node: String,
        exit: PartExit,
        now_ms: u64,
    },
    /// The node stopped answering for longer than the heartbeat timeout.
    NodeLost {
        node: String,
        reason: String,
        now_ms: u64,
    },
    /// An admin takes nodes out of service (`gantry drain`): nothing new starts there; what
    /// runs there is handled by `mode`.
    Drain {
        nodes: Vec<String>,
        reason: String,
        by: String,
        mode: DrainMode,
        now_ms: u64,
    },
    /// The leader saw the drain deadlines of these nodes pass: the jobs still running there
    /// are requeued. Nodes whose deadline is not past at `now_ms` are left alone.
    DrainDeadline { nodes: Vec<String>, now_ms: u64 },
    Resume {
        nodes: Vec<String>,
        by: String,
        now_ms: u64,
    },
    /// Where scheduler replica `id` listens (`None`: it left the group). Applied together
    /// with the Raft membership change that adds or removes it, so every replica learns the
    /// addresses of members that joined after it started.
    ReplicaAddress { id: u64, address: Option<String> },
    /// An admin changes a policy setting (`gantry admin config set`); the proposer checks
    /// that `by` is an admin.
    SetConfig {
        key: String,
        value: String,
        by: String,
        now_ms: u64,
    },
    /// The scheduler takes a running job's resources back (guarantee reclaim, QoS): its parts are
    /// stopped and it goes back to the queue. Ignored unless `attempt` is still running.
    Requeue {
        job: JobId,
        attempt: u32,
        /// The waiting job it is stopped for, and where that job is counted to start: it is a
        /// claimant, keeping that place, while pending (`Job::claim`).
        for_job: JobId,
        for_place: Vec<PartPlan>,
        reason: String,
        /// It is moved to defragment, to start again here: the passes keep this place for it
        /// while it stops; pending again, it ranks ahead of all but guaranteed jobs
        /// (`Job::moved_to`).
        moved_to: Option<Vec<PartPlan>>,
        now_ms: u64,
    },
    /// An admin creates an advance reservation (`gantry reservation create`). Refused over
    /// nodes with running jobs that would still run in its window, unless `force`.
    CreateReservation {
        reservation: Reservation,
        /// Hold this many GPUs, picked at apply, instead of `reservation.nodes`.
        gpus: Option<GpuAsk>,
        force: bool,
        now_ms: u64,
    },
    /// An admin changes a reservation (`gantry reservation update`): `reservation` replaces
    /// the one of that name, checked as a new one would be (itself aside).
    UpdateReservation {
        reservation: Reservation,
        force: bool,
        now_ms: u64,
    },
    /// The leader saw maintenance reservation `name` start: the jobs still on its nodes are
    /// requeued. Ignored before its start, or once done.
    ReservationStarted { name: String, now_ms: u64 },
    /// An admin deletes one (`gantry reservation delete`); its pending members then wait.
    DeleteReservation {
        name: String,
        by: String,
        now_ms: u64,
    },
    /// An admin adds an account to the tree (`gantry account add`).
    AddAccount {
        account: NewAccount,
        by: String,
        now_ms: u64,
    },
    /// An admin lets `users` charge jobs to `account` (`gantry account add-user`).
    AddAccountUsers {
        account: String,
        users: Vec<String>,
        by: String,
        now_ms: u64,
    },
    /// An admin changes an account (`gantry account set`): checked as an addition is.
    SetAccount {
        name: String,
        change: AccountChange,
        by: String,
        now_ms: u64,
    },
    /// An admin removes an account (`gantry account remove`): refused while it has
    /// sub-accounts, users, or jobs that have not ended.
    RemoveAccount {
        name: String,
        by: String,
        now_ms: u64,
    },
    /// An admin takes users off an account (`gantry account remove-user`).
    RemoveAccountUsers {
        account: String,
        users: Vec<String>,
        by: String,
        now_ms: u64,
    },
}

/// GPUs a reservation asks for (`--gpus N [--pool P]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuAsk {
    pub count: u32,
    pub pool: Option<String>,
}

/// What a drain does to the jobs running on the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrainMode {
    /// They run to their end (`--wait`, the default).
    Wait,
    /// They are stopped at once (warned first, with a checkpoint contract) and requeued
    /// (`--requeue`), to run elsewhere.
    Requeue,
    /// They may run this long; those still running then are requeued (`--deadline DUR`).
    Deadline { after_ms: u64 },
}

/// What `Command::Control` does to each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// A pending job is not scheduled until released.
    Hold,
    Release,
    /// A running job is stopped (warned first, with a checkpoint contract) and queued again
    /// as its next run; its owner or an admin.
    Requeue,
    /// The same, by an admin, recorded as a preemption.
    Preempt,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Hold => "hold",
            Control::Release => "release",
            Control::Requeue => "requeue",
            Control::Preempt => "preempt",
        }
    }
}

/// How the part of a job on one node ended, as its node reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartExit {
    pub reason: ExitReason,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub message: String,
    /// It was warned of its time limit (its checkpoint signal) before it ended: with
    /// `--requeue-on-timeout` it runs again whatever its exit, since it ran out of time.
    pub after_time_limit_warning: bool,
}

impl PartExit {
    pub fn succeeded(&self) -> bool {
        self.reason == ExitReason::Exited && self.exit_code == Some(0) && self.signal.is_none()
    }

    /// The job's process exited with code 0, whether or not it was being stopped (it may
    /// have finished its work during a warning's lead); a part the node lost or fenced did
    /// not.
    pub fn exited_zero(&self) -> bool {
        self.exit_code == Some(0)
            && self.signal.is_none()
            && matches!(
                self.reason,
                ExitReason::Exited
                    | ExitReason::Preempted
                    | ExitReason::Cancelled
                    | ExitReason::Timeout
                    | ExitReason::NodeShutdown
            )
    }

    /// The job state a job ends in when this is the exit that decides it.
    pub fn job_state(&self) -> JobState {
        match self.reason {
            _ if self.succeeded() => JobState::Completed,
            ExitReason::Exited | ExitReason::LaunchFailed => JobState::Failed,
            // Preempted parts requeue the job; one alone (its requeue gone) ends it cancelled.
            ExitReason::Cancelled | ExitReason::Preempted => JobState::Cancelled,
            ExitReason::Timeout => JobState::Timeout,
            ExitReason::Lost | ExitReason::NodeShutdown | ExitReason::Fenced => JobState::NodeFail,
        }
    }
}

/// What applying a command yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Submitted(JobId),
    Cancelled {
        cancelled: Vec<JobId>,
        signalled: Vec<JobId>,
    },
    Applied,
    /// A report that no longer matches the state (a duplicate, or about an attempt that has
    /// ended); nothing changed. Not an error for anyone: reports are retried freely.
    Ignored(String),
    /// Refused; nothing changed.
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("invalid job: {0}")]
    InvalidSpec(#[from] SpecError),
    #[error("{0}")]
    Unsatisfiable(String),
    #[error("job {0} does not exist")]
    UnknownJob(JobId),
    #[error("job {0} has already ended ({1})")]
    AlreadyEnded(JobId, JobState),
    #[error("dependency {dependency} can never be met: job {} ended {}", .dependency.job, .ended.as_str())]
    DependencyNeverMet {
        dependency: gantry_model::Dependency,
        ended: JobState,
    },
    #[error("job {job} belongs to {owner}; only its owner or an admin may {what} it")]
    NotOwner {
        job: JobId,
        owner: String,
        what: &'static str,
    },
    #[error("node {0:?} does not exist")]
    UnknownNode(String),
    #[error("invalid node registration: {0}")]
    BadRegistration(String),
    #[error(
        "node name {name} is in use by another node daemon (identity {held}; this one is \
         {asking}): if this machine replaces that one, stop the other daemon and run `gantry \
         nodes replace {name}`; otherwise give this one another --name"
    )]
    NodeInUse {
        name: String,
        held: String,
        asking: String,
    },
    #[error("job {id} is {}: only pending jobs can be held", state.as_str())]
    NotPending { id: JobId, state: JobState },
    #[error("job {0} is not held")]
    NotHeld(JobId),
    #[error("job {id} is {}: only running jobs can be {what}", state.as_str())]
    NotRunning {
        id: JobId,
        state: JobState,
        what: &'static str,
    },
    #[error("job {0} is being stopped already")]
    Stopping(JobId),
    #[error("only admins may {0}")]
    AdminOnly(&'static str),
    #[error(
        "job {0}: the token is not this run's (only the job itself may report its checkpoints)"
    )]
    BadToken(JobId),
    #[error("stale decision for job {job}: {why}")]
    Stale { job: JobId, why: String },
    #[error("unknown QoS {qos:?} (levels: {known})")]
    UnknownQos { qos: String, known: String },
    #[error("the deadline has passed already")]
    DeadlinePassed,
    #[error("{0}")]
    BadReservation(String),
    #[error("reservation {0} does not exist")]
    UnknownReservation(String),
    #[error("reservation {0} exists already")]
    ReservationExists(String),
    #[error("reservation {0} is a maintenance window: no job runs in it")]
    MaintenanceWindow(String),
    #[error("{user} may not use reservation {reservation} (it is for {members})")]
    NotInReservation {
        reservation: String,
        user: String,
        members: String,
    },
    #[error(
        "pool {pool} takes jobs of accounts {allowed} (and their sub-accounts), not of {account}"
    )]
    PoolAccount {
        pool: String,
        account: String,
        allowed: String,
    },
    #[error("the time limit {asked} is above pool {pool}'s maximum of {max}")]
    PoolTime {
        pool: String,
        asked: String,
        max: String,
    },
    #[error("account {account} has jobs that have not ended: {jobs}")]
    AccountInUse { account: String, jobs: String },
    #[error("account {account} is named by {by}: change those first")]
    AccountNamed { account: String, by: String },
    #[error(
        "node {0} is up: its node daemon is connected, or has not been declared lost yet; stop \
         that daemon and wait for the heartbeat timeout, then replace the node"
    )]
    NodeUp(String),
    #[error("cluster name {0:?} must be 1 to 64 letters or digits")]
    BadCluster(String),
    #[error(transparent)]
    BadConfig(#[from] ConfigError),
    #[error(transparent)]
    Account(#[from] AccountError),
}
