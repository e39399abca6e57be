//! Jobs as local processes, each under its own supervisor process.
//!
//! Supervisors spawned by this daemon are its children and are waited on; those found at
//! start-up (left by an earlier daemon) are polled through `/proc`. Either way the end comes
//! from the supervisor's `status.json`.

use std::fs::File;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use gantry_proto as pb;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, Span, info, warn};

use super::{Executor, ExecutorError, JobEnded, LaunchOutcome};
use crate::checkpoints::CheckpointRoot;
use crate::config::SupervisorCommand;
use crate::jobdir::{
    CheckpointRecord, ExitReason, JOB_PID_FILE, JobDir, JobKey, JobStatus, LaunchRecord,
    SUPERVISOR_LOG_FILE, SUPERVISOR_PID_FILE, Warning, list_job_dirs,
};
use crate::procfs;
use crate::reconcile::LocalJob;

/// How often a supervisor that is not our child is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(250);

pub const VANISHED_MESSAGE: &str = "supervisor vanished without an exit status";

#[derive(Debug, Clone)]
pub struct LocalExecutorConfig {
    /// `<data-dir>/jobs`, absolute (it is matched against supervisors' command lines).
    pub jobs_root: PathBuf,
    pub node_name: String,
    pub supervisor: SupervisorCommand,
    pub kill_grace_ms: u64,
    /// The contact lease every job's supervisor enforces.
    pub contact_lease: PathBuf,
    /// Where jobs' checkpoint dirs are (`<root>/<job id>`).
    pub checkpoints: CheckpointRoot,
    /// The schedulers, as `GANTRY_SERVER` takes them: jobs report checkpoints there.
    pub servers: String,
}

pub struct LocalExecutor {
    config: LocalExecutorConfig,
    events: mpsc::UnboundedSender<JobEnded>,
    /// One task per live supervisor; dropped (aborted) with the executor. The supervisors
    /// themselves keep running.
    watchers: JoinSet<()>,
}

impl LocalExecutor {
    /// The executor and the receiving end of its [`JobEnded`] events.
    pub fn new(config: LocalExecutorConfig) -> (LocalExecutor, mpsc::UnboundedReceiver<JobEnded>) {
        let (events, receiver) = mpsc::unbounded_channel();
        (
            LocalExecutor {
                config,
                events,
                watchers: JoinSet::new(),
            },
            receiver,
        )
    }

    fn dir(&self, key: JobKey) -> JobDir {
        JobDir::new(&self.config.jobs_root, key)
    }

    /// The pid of the live supervisor of `dir`, checked against its command line.
    fn supervisor_pid(dir: &JobDir) -> Option<u32> {
        dir.read_pid(SUPERVISOR_PID_FILE)
            .filter(|pid| procfs::is_supervisor_of(*pid, dir.path()))
            .or_else(|| procfs::find_supervisor_of(dir.path()))
    }

    fn reap_finished_watchers(&mut self) {
        while self.watchers.try_join_next().is_some() {}
    }

    fn watch_child(&mut self, key: JobKey, dir: JobDir, mut child: tokio::process::Child) {
        let events = self.events.clone();
        let watcher = async move {
            let exit = match child.wait().await {
                Ok(status) => Some(status),
                Err(e) => {
                    warn!(job = %key, "cannot wait for the supervisor: {e}");
                    None
                }
            };
            let status = settle(&dir, key, exit);
            let _ = events.send(JobEnded { key, status });
        };
        // In the daemon's span, so that logs name the node (`gantry dev` runs several).
        self.watchers.spawn(watcher.instrument(Span::current()));
    }

    fn watch_adopted(&mut self, key: JobKey, dir: JobDir, pid: u32) {
        let events = self.events.clone();
        let watcher = async move {
            let mut tick = tokio::time::interval(ADOPTED_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if !procfs::is_supervisor_of(pid, dir.path()) {
                    break;
                }
            }
            let status = settle(&dir, key, None);
            let _ = events.send(JobEnded { key, status });
        };
        self.watchers.spawn(watcher.instrument(Span::current()));
    }

    /// Records a launch that failed before a supervisor ran.
    fn failed(dir: &JobDir, key: JobKey, message: String) -> Result<LaunchOutcome, ExecutorError> {
        warn!(job = %key, "launch failed: {message}");
        let status = JobStatus::without_process(ExitReason::LaunchFailed, message);
        dir.write_status(&status)?;
        Ok(LaunchOutcome::Failed(status))
    }
}

/// How a job ended, once its supervisor is gone: its `status.json`, or else what can be
/// inferred (and is then recorded, so a restart reaches the same verdict).
fn settle(dir: &JobDir, key: JobKey, supervisor_exit: Option<ExitStatus>) -> JobStatus {
    let unreadable = match dir.read_status() {
        Ok(Some(status)) => return status,
        Ok(None) => None,
        Err(e) => Some(e),
    };
    let signalled = supervisor_exit.and_then(|s| s.signal());
    let status = match (signalled, dir.read_stop_reason()) {
        // A SIGTERM killed the supervisor before its handlers were in place (the daemon itself
        // waits for them, but an admin's `kill` may not): the job never started.
        (Some(sig), Some(reason)) if sig == Signal::SIGTERM as i32 => {
            JobStatus::without_process(reason, "stopped before the job started")
        }
        _ => {
            warn!(
                job = %key,
                supervisor_exit = ?supervisor_exit,
                unreadable_status = ?unreadable.map(|e| e.to_string()),
                "{VANISHED_MESSAGE}"
            );
            kill_orphaned_job(dir, key);
            JobStatus::without_process(ExitReason::Lost, VANISHED_MESSAGE)
        }
    };
    if let Err(e) = dir.write_status(&status) {
        warn!(job = %key, "cannot record the end of the job: {e}");
    }
    status
}

/// A supervisor that died without a status (e.g. SIGKILL) may leave its job running: kill the
/// job's process group, but only after checking (by its environment) that the group still is
/// that job's and not a reused pid.
fn kill_orphaned_job(dir: &JobDir, key: JobKey) {
    let Some(pgid) = dir.read_pid(JOB_PID_FILE) else {
        return;
    };
    let marks = [
        format!("GANTRY_JOB_ID={}", key.job_id),
        format!("GANTRY_RESTART_COUNT={}", key.attempt),
    ];
    let ours = procfs::live_group_members(pgid)
        .into_iter()
        .any(|pid| marks.iter().all(|mark| procfs::environ_has(pid, mark)));
    if ours && let Ok(raw) = i32::try_from(pgid) {
        warn!(job = %key, pgid, "killing the processes its supervisor left behind");
        let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    }
}

impl Executor for LocalExecutor {
    fn recover(&mut self) -> Result<Vec<(JobKey, LocalJob)>, ExecutorError> {
        let mut jobs = Vec::new();
        for (key, dir) in list_job_dirs(&self.config.jobs_root)? {
            if let Ok(Some(status)) = dir.read_status() {
                jobs.push((key, LocalJob::Ended(status)));
                continue;
            }
            match Self::supervisor_pid(&dir) {
                Some(pid) => {
                    info!(job = %key, pid, "re-attached to a running job");
                    let stopping = dir.read_stop_reason().is_some();
                    self.watch_adopted(key, dir, pid);
                    jobs.push((key, LocalJob::Running { stopping }));
                }
                None => jobs.push((key, LocalJob::Ended(settle(&dir, key, None)))),
            }
        }
        Ok(jobs)
    }

    fn launch(&mut self, key: JobKey, launch: &pb::Launch) -> Result<LaunchOutcome, ExecutorError> {
        self.reap_finished_watchers();
        let dir = self.dir(key);
        // The dir is the record of the launch: created first, and refused if it exists.
        if let Err(e) = dir.create() {
            return Err(if e.is_already_exists() {
                ExecutorError::AlreadyLaunched(key)
            } else {
                e.into()
            });
        }
        let record = match LaunchRecord::from_launch(
            key,
            &self.config.node_name,
            launch,
            self.config.kill_grace_ms,
        ) {
            Ok(record) => LaunchRecord {
                contact_lease: Some(self.config.contact_lease.clone()),
                servers: self.config.servers.clone(),
                ..record
            },
            Err(message) => return Self::failed(&dir, key, message),
        };
        let record = match launch.checkpoint.as_ref() {
            Some(checkpoint) => {
                let checkpoints = &self.config.checkpoints;
                let made = checkpoints.job_dir(&launch.cluster, key.job_id, record.uid, record.gid);
                let path = match made {
                    Ok(path) => path,
                    Err(e) => {
                        let message = format!(
                            "cannot prepare the checkpoint dir {}/{}/{}: {e}",
                            checkpoints.path().display(),
                            launch.cluster,
                            key.job_id
                        );
                        return Self::failed(&dir, key, message);
                    }
                };
                LaunchRecord {
                    checkpoint: Some(CheckpointRecord {
                        signal: checkpoint.signal.clone(),
                        lead_ms: checkpoint.lead_ms,
                        dir: path,
                        whole_job: checkpoint.whole_job,
                    }),
                    ..record
                }
            }
            None => record,
        };
        if let Err(e) = dir.write_record(&record) {
            return Self::failed(&dir, key, format!("cannot record the launch: {e}"));
        }
        let log = match File::options()
            .create(true)
            .append(true)
            .open(dir.file(SUPERVISOR_LOG_FILE))
        {
            Ok(log) => log,
            Err(e) => {
                return Self::failed(
                    &dir,
                    key,
                    format!("cannot create the supervisor's log: {e}"),
                );
            }
        };
        let stdout = match log.try_clone() {
            Ok(file) => file,
            Err(e) => {
                return Self::failed(
                    &dir,
                    key,
                    format!("cannot create the supervisor's log: {e}"),
                );
            }
        };
        let program = &self.config.supervisor.program;
        let spawned = tokio::process::Command::new(program)
            .args(self.config.supervisor.args_for(dir.path()))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .kill_on_drop(false)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return Self::failed(
                    &dir,
                    key,
                    format!("cannot start the supervisor {}: {e}", program.display()),
                );
            }
        };
        // The supervisor writes `supervisor.pid` itself, once its signal handlers are in place:
        // that file is what makes it safe to signal (see `stop`).
        let pid = child.id().unwrap_or(0);
        info!(job = %key, pid, "job started");
        self.watch_child(key, dir, child);
        Ok(LaunchOutcome::Started { pid })
    }

    fn stop(
        &mut self,
        key: JobKey,
        reason: ExitReason,
        warning: Option<Warning>,
    ) -> Result<(), ExecutorError> {
        let dir = self.dir(key);
        // The reason first: the supervisor reads it when the SIGTERM arrives, and also right
        // after it has installed its signal handlers and written its pid file. So a supervisor
        // without a pid file yet must not be signalled (SIGTERM would kill it outright); it
        // will find the reason itself and not start the job. The warning before the reason:
        // a supervisor that sees the reason finds it.
        if let Some(warning) = warning {
            dir.write_stop_warning(warning)?;
        }
        dir.write_stop_reason(reason)?;
        let ready = dir
            .read_pid(SUPERVISOR_PID_FILE)
            .filter(|pid| procfs::is_supervisor_of(*pid, dir.path()));
        let Some(pid) = ready else {
            if procfs::find_supervisor_of(dir.path()).is_some() {
                info!(job = %key, %reason, "stopping job before it started");
                return Ok(());
            }
            return Err(ExecutorError::NotRunning(key));
        };
        let raw = i32::try_from(pid).map_err(|_| ExecutorError::NotRunning(key))?;
        kill(Pid::from_raw(raw), Signal::SIGTERM).map_err(|source| ExecutorError::Signal {
            key,
            pid,
            source,
        })?;
        info!(job = %key, pid, %reason, "stopping job");
        Ok(())
    }

    fn record_ended(&mut self, key: JobKey, status: &JobStatus) -> Result<(), ExecutorError> {
        let dir = self.dir(key);
        if let Err(e) = dir.create()
            && !e.is_already_exists()
        {
            return Err(e.into());
        }
        dir.write_status(status)?;
        Ok(())
    }

    fn forget(&mut self, key: JobKey) -> Result<(), ExecutorError> {
        self.dir(key).remove()?;
        Ok(())
    }
}
