//! How jobs are run on this node. The daemon's loop only talks to the [`Executor`] trait;
//! [`LocalExecutor`] runs each job as local processes under a per-job supervisor (containers
//! can come later as another implementation).

mod local;

pub use local::{LocalExecutor, LocalExecutorConfig};

use gantry_proto as pb;
use thiserror::Error;

use crate::jobdir::{ExitReason, JobDirError, JobKey, JobStatus, Warning};
use crate::reconcile::LocalJob;

/// A job ended; sent by the executor on the channel it was created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnded {
    pub key: JobKey,
    pub status: JobStatus,
}

/// The result of a launch that could be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchOutcome {
    /// The supervisor runs; `pid` is its pid.
    Started { pid: u32 },
    /// It could not be started; the end is recorded (`LAUNCH_FAILED`) and must be reported.
    Failed(JobStatus),
}

#[derive(Debug, Error)]
pub enum ExecutorError {
    #[error("job {0} was launched on this node before; it is never launched twice")]
    AlreadyLaunched(JobKey),
    #[error("job {0} is not running on this node")]
    NotRunning(JobKey),
    #[error("cannot signal the supervisor of job {key} (pid {pid}): {source}")]
    Signal {
        key: JobKey,
        pid: u32,
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    JobDir(#[from] JobDirError),
}

/// Runs jobs. Ends are delivered asynchronously as [`JobEnded`] events.
pub trait Executor {
    /// Every job recorded from earlier runs of the daemon, running (re-attached: its end
    /// will be delivered as an event) or ended, in key order.
    fn recover(&mut self) -> Result<Vec<(JobKey, LocalJob)>, ExecutorError>;

    /// Starts a job that was never launched here. `Err` only when nothing could be recorded.
    fn launch(&mut self, key: JobKey, launch: &pb::Launch) -> Result<LaunchOutcome, ExecutorError>;

    /// Asks a running job to stop (SIGTERM, then SIGKILL after the grace period); its end is
    /// delivered as an event with `reason`. With a `warning` (a stop to run again) a job with
    /// a checkpoint contract gets its signal first, told why.
    fn stop(
        &mut self,
        key: JobKey,
        reason: ExitReason,
        warning: Option<Warning>,
    ) -> Result<(), ExecutorError>;

    /// Records the end of a job that never ran here (lost, or cancelled before it started).
    fn record_ended(&mut self, key: JobKey, status: &JobStatus) -> Result<(), ExecutorError>;

    /// Deletes everything recorded about an ended job.
    fn forget(&mut self, key: JobKey) -> Result<(), ExecutorError>;
}
