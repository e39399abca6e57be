//! The node daemon: its table of jobs, the reconnect loop around scheduler sessions, and
//! shutdown. Jobs keep running while sessions come and go; only the scheduler's
//! assignments, `Shutdown::StopJobs`, or the contact lease running out (see
//! [`crate::contact`]) stop them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_proto as pb;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, info, info_span, warn};

use crate::checkpoints::CheckpointRoot;
use crate::config::{NodeConfig, Shutdown, server_urls};
use crate::contact;
use crate::error::NodedError;
use crate::executor::{
    Executor, ExecutorError, JobEnded, LaunchOutcome, LocalExecutor, LocalExecutorConfig,
};
use crate::fence::{LeaderTerm, StaleLeader};
use crate::health::{self, GpuFault};
use crate::identity;
use crate::jobdir::{ExitReason, JobKey, JobStatus};
use crate::reconcile::{Action, LocalJob, desired_keys, forgettable, reconcile};
use crate::session::{OpenSession, SessionEnd, run_session};

/// Reconnect delays: from the first to the cap, doubling. The cap bounds how long after an
/// election the new leader waits for its nodes (and so for its first decision).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Beyond the grace period, how long `StopJobs` waits for supervisors to report.
const STOP_SLACK: Duration = Duration::from_secs(5);

/// Runs a node daemon until `shutdown` asks it to stop (dropping the sender counts as
/// [`Shutdown::LeaveJobs`]).
pub async fn run_node(
    config: NodeConfig,
    shutdown: watch::Receiver<Option<Shutdown>>,
) -> Result<(), NodedError> {
    let servers = server_urls(&config.servers)?;
    if config.name.trim().is_empty() {
        return Err(NodedError::NoName);
    }
    let data_dir = prepare_data_dir(&config.data_dir)?;
    let _lock = lock_data_dir(&data_dir)?;
    let identity = identity::load_or_create(&data_dir).map_err(|source| NodedError::DataDir {
        path: data_dir.join(identity::FILE),
        source,
    })?;
    let checkpoints = CheckpointRoot::new(
        config
            .checkpoint_root
            .clone()
            .unwrap_or_else(|| data_dir.join("checkpoints")),
    );
    checkpoints
        .prepare()
        .map_err(|source| NodedError::DataDir {
            path: checkpoints.path().to_path_buf(),
            source,
        })?;
    let (executor, events) = LocalExecutor::new(LocalExecutorConfig {
        jobs_root: data_dir.join("jobs"),
        node_name: config.name.clone(),
        supervisor: config.supervisor.clone(),
        kill_grace_ms: config.kill_grace_ms,
        contact_lease: data_dir.join(contact::FILE),
        checkpoints: checkpoints.clone(),
        servers: servers.join(","),
    });
    let span = info_span!("node", node = %config.name);
    let gpus = config.inventory.gpus.iter().map(|g| g.index).collect();
    let mut node = Node::new(
        &config,
        executor,
        events,
        LeaderTerm::load(&data_dir),
        contact::Renewal::new(&data_dir, Duration::from_millis(config.kill_grace_ms)),
    );
    node.checkpoints = Some(checkpoints);
    node.identity = identity;
    node.gpu_faults = Some(health::watch(&data_dir, gpus, config.watch_nvml));
    span.in_scope(|| node.recover())?;
    info!(
        node = %config.name,
        servers = %servers.join(","),
        data_dir = %data_dir.display(),
        gpus = config.inventory.gpus.len(),
        cpus = config.inventory.cpus,
        mem_mib = config.inventory.mem_mib,
        jobs = node.jobs.len(),
        "node daemon started"
    );
    node.run(&servers, shutdown).instrument(span).await
}

/// Creates the data dir and its `jobs/` and returns its absolute path (supervisors are found
/// by the absolute job dir in their command line).
fn prepare_data_dir(data_dir: &Path) -> Result<PathBuf, NodedError> {
    let err = |source| NodedError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir.join("jobs")).map_err(err)?;
    data_dir.canonicalize().map_err(err)
}

/// One daemon per data dir: two would launch the same jobs twice.
fn lock_data_dir(data_dir: &Path) -> Result<Flock<File>, NodedError> {
    let lock = data_dir.join("noded.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|source| NodedError::DataDir {
            path: lock.clone(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| NodedError::DataDirLocked {
        path: data_dir.to_path_buf(),
        lock,
    })
}

/// Waits until a shutdown is requested.
pub(crate) async fn shutdown_requested(
    shutdown: &mut watch::Receiver<Option<Shutdown>>,
) -> Shutdown {
    loop {
        if let Some(request) = *shutdown.borrow_and_update() {
            return request;
        }
        if shutdown.changed().await.is_err() {
            // Nobody can ask any more: leave, and leave the jobs running.
            return Shutdown::LeaveJobs;
        }
    }
}

struct Backoff {
    next: Duration,
}

impl Backoff {
    fn take(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// The daemon's state: the jobs it knows and the executor that runs them.
pub(crate) struct Node<E: Executor> {
    name: String,
    pool: String,
    inventory: gantry_model::NodeInventory,
    kill_grace: Duration,
    executor: E,
    pub(crate) events: mpsc::UnboundedReceiver<JobEnded>,
    pub(crate) jobs: BTreeMap<JobKey, LocalJob>,
    /// The jobs of the last `Assignments` received (none yet: `None`). A job stopped because
    /// it left that set ends after the set was applied, and the scheduler sends no new set
    /// for it (its set did not change), so its end is checked against this one.
    desired: Option<BTreeSet<JobKey>>,
    leader_term: LeaderTerm,
    pub(crate) contact: contact::Renewal,
    /// GPU failures as the health watcher finds them (none watched: `None`).
    pub(crate) gpu_faults: Option<mpsc::UnboundedReceiver<GpuFault>>,
    /// Every GPU failure seen since the daemon started, with why.
    failed_gpus: BTreeMap<u32, String>,
    /// This daemon's identity (see [`crate::identity`]).
    pub(crate) identity: String,
    /// The checkpoint root to sweep (none: no sweeping), and how often; the cluster whose
    /// dirs this daemon sweeps, as the leader named it (none before the first registration).
    pub(crate) checkpoints: Option<CheckpointRoot>,
    pub(crate) cluster: Option<String>,
    pub(crate) sweep_every: Duration,
}

impl<E: Executor> Node<E> {
    pub(crate) fn new(
        config: &NodeConfig,
        executor: E,
        events: mpsc::UnboundedReceiver<JobEnded>,
        leader_term: LeaderTerm,
        contact: contact::Renewal,
    ) -> Self {
        Node {
            name: config.name.clone(),
            pool: config.effective_pool(),
            inventory: config.inventory.clone(),
            kill_grace: Duration::from_millis(config.kill_grace_ms),
            executor,
            events,
            jobs: BTreeMap::new(),
            desired: None,
            leader_term,
            contact,
            gpu_faults: None,
            failed_gpus: BTreeMap::new(),
            identity: String::new(),
            checkpoints: None,
            cluster: None,
            sweep_every: Duration::from_millis(config.checkpoint_sweep_every_ms.max(1)),
        }
    }

    /// The jobs this node runs or is told to run: their checkpoint dirs are never swept.
    fn live_job_ids(&self) -> BTreeSet<u64> {
        let assigned = self.desired.iter().flatten();
        let running = self
            .jobs
            .iter()
            .filter(|(_, job)| matches!(job, LocalJob::Running { .. }))
            .map(|(key, _)| key);
        assigned.chain(running).map(|key| key.job_id).collect()
    }

    /// The question of a checkpoint sweep: which of the dirs found (of jobs not running
    /// here) may go. `None` when there is nothing to ask.
    pub(crate) fn checkpoint_sweep(&self) -> Option<pb::NodeMessage> {
        let cluster = self.cluster.as_deref()?;
        let candidates = self
            .checkpoints
            .as_ref()?
            .sweep_candidates(cluster, &self.live_job_ids());
        (!candidates.is_empty()).then(|| {
            message(pb::node_message::Msg::CheckpointSweep(
                pb::CheckpointSweep {
                    job_ids: candidates,
                },
            ))
        })
    }

    /// The leader's answer to a sweep: these jobs ended `checkpoint.keep` ago.
    pub(crate) fn on_checkpoints_ended(&self, ended: &[u64]) {
        if let (Some(checkpoints), Some(cluster)) = (&self.checkpoints, &self.cluster) {
            checkpoints.remove(cluster, ended, &self.live_job_ids());
        }
    }

    /// Records a GPU failure; the report to send.
    pub(crate) fn on_gpu_fault(&mut self, fault: GpuFault) -> pb::NodeMessage {
        warn!(gpu = fault.gpu, reason = %fault.reason, "GPU failed");
        self.failed_gpus.insert(fault.gpu, fault.reason.clone());
        message(pb::node_message::Msg::GpuFailure(pb::GpuFailure {
            gpu: fault.gpu,
            reason: fault.reason,
        }))
    }

    /// Refuses a session from a leader older than one already followed (see [`crate::fence`]).
    pub(crate) fn admit_leader(&mut self, term: u64) -> Result<(), StaleLeader> {
        self.leader_term.admit(term)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn recover(&mut self) -> Result<(), NodedError> {
        let recovered = self.executor.recover().map_err(NodedError::Recover)?;
        for (key, job) in recovered {
            match &job {
                LocalJob::Running { .. } => info!(job = %key, "job still running from before"),
                LocalJob::Ended(status) => {
                    info!(job = %key, reason = %status.reason, "job ended while the daemon was away")
                }
            }
            self.jobs.insert(key, job);
        }
        Ok(())
    }

    /// The first message of a session: inventory, running jobs, and every recorded end.
    pub(crate) fn register_message(&self) -> pb::NodeMessage {
        let mut running = Vec::new();
        let mut finished = Vec::new();
        for (key, job) in &self.jobs {
            match job {
                LocalJob::Running { .. } => running.push(pb::JobRef {
                    job_id: key.job_id,
                    attempt: key.attempt,
                }),
                LocalJob::Ended(status) => finished.push(status.to_pb(*key)),
            }
        }
        let register = pb::RegisterNode {
            name: self.name.clone(),
            pool: self.pool.clone(),
            labels: self.inventory.labels.clone(),
            gpus: self
                .inventory
                .gpus
                .iter()
                .map(gantry_wire::gpu_to_pb)
                .collect(),
            cpus: self.inventory.cpus,
            mem_mib: self.inventory.mem_mib,
            running,
            finished,
            version: env!("CARGO_PKG_VERSION").to_string(),
            identity: self.identity.clone(),
            failed_gpus: self
                .failed_gpus
                .iter()
                .map(|(gpu, reason)| pb::GpuFailure {
                    gpu: *gpu,
                    reason: reason.clone(),
                })
                .collect(),
        };
        message(pb::node_message::Msg::Register(register))
    }

    /// Records a job's end; the report to send, if the job was known as running.
    pub(crate) fn on_job_ended(&mut self, ended: JobEnded) -> Option<pb::NodeMessage> {
        let JobEnded { key, status } = ended;
        match self.jobs.get(&key) {
            Some(LocalJob::Running { .. }) => {
                info!(job = %key, reason = %status.reason, exit_code = ?status.exit_code, signal = ?status.signal, "job ended");
                let report = status.to_pb(key);
                self.jobs.insert(key, LocalJob::Ended(status));
                self.forget_undesired();
                // Sent even when forgotten: a scheduler that has ended the job ignores it.
                Some(message(pb::node_message::Msg::Exited(report)))
            }
            _ => {
                warn!(job = %key, "end of a job that is not running here is ignored");
                None
            }
        }
    }

    /// The forget step of [`reconcile`] again, against the last desired set: ended jobs the
    /// scheduler no longer assigns need no record.
    fn forget_undesired(&mut self) {
        let Some(desired) = &self.desired else {
            return;
        };
        for key in forgettable(&self.jobs, desired) {
            info!(job = %key, "job ended and is no longer assigned here: forgetting it");
            self.forget(key);
        }
    }

    fn forget(&mut self, key: JobKey) {
        if let Err(e) = self.executor.forget(key) {
            warn!(job = %key, "cannot delete the job's record: {e}");
        }
        self.jobs.remove(&key);
    }

    /// Applies a complete desired set; the reports to send.
    pub(crate) fn apply(&mut self, assignments: &pb::Assignments) -> Vec<pb::NodeMessage> {
        self.desired = Some(desired_keys(assignments));
        let mut reports = Vec::new();
        for action in reconcile(&self.jobs, assignments) {
            match action {
                Action::Launch { key, launch } => match self.executor.launch(key, &launch) {
                    Ok(LaunchOutcome::Started { pid }) => {
                        self.jobs.insert(key, LocalJob::Running { stopping: false });
                        reports.push(message(pb::node_message::Msg::Started(pb::JobStarted {
                            job_id: key.job_id,
                            attempt: key.attempt,
                            pid,
                        })));
                    }
                    Ok(LaunchOutcome::Failed(status)) => {
                        reports.push(message(pb::node_message::Msg::Exited(status.to_pb(key))));
                        self.jobs.insert(key, LocalJob::Ended(status));
                    }
                    Err(e) => {
                        // Nothing could be recorded; the scheduler learns of it now, and later
                        // assignments of this job get a LOST report.
                        warn!(job = %key, "cannot launch: {e}");
                        let status =
                            JobStatus::without_process(ExitReason::LaunchFailed, e.to_string());
                        reports.push(message(pb::node_message::Msg::Exited(status.to_pb(key))));
                    }
                },
                Action::Stop {
                    key,
                    reason,
                    warning,
                } => {
                    match self.executor.stop(key, reason, warning) {
                        Ok(()) => {}
                        // It ended as the stop came (a job that requeued itself and exited,
                        // say): its end is on the way, and the scheduler decides what it means.
                        Err(ExecutorError::NotRunning(_)) => {
                            info!(job = %key, "stop not needed: the job has just ended");
                        }
                        Err(e) => warn!(job = %key, "cannot stop: {e}"),
                    }
                    self.jobs.insert(key, LocalJob::Running { stopping: true });
                }
                Action::Forget { key } => self.forget(key),
                Action::Report {
                    key,
                    reason,
                    message: text,
                } => {
                    info!(job = %key, %reason, "{text}");
                    let status = JobStatus::without_process(reason, text);
                    if let Err(e) = self.executor.record_ended(key, &status) {
                        warn!(job = %key, "cannot record the end of the job: {e}");
                    }
                    reports.push(message(pb::node_message::Msg::Exited(status.to_pb(key))));
                    self.jobs.insert(key, LocalJob::Ended(status));
                }
            }
        }
        reports
    }

    fn running(&self) -> usize {
        self.jobs
            .values()
            .filter(|j| matches!(j, LocalJob::Running { .. }))
            .count()
    }

    async fn run(
        mut self,
        servers: &[String],
        mut shutdown: watch::Receiver<Option<Shutdown>>,
    ) -> Result<(), NodedError> {
        let mut backoff = Backoff { next: BACKOFF_MIN };
        let mut index = 0;
        loop {
            let url = &servers[index % servers.len()];
            match run_session(&mut self, url, &mut shutdown).await {
                SessionEnd::Shutdown { request, open } => {
                    return self.shut_down(request, open).await;
                }
                SessionEnd::ConnectFailed(reason) => {
                    warn!(server = %url, "cannot reach the scheduler: {reason}");
                    index += 1;
                }
                SessionEnd::Silent {
                    registered,
                    silence,
                } => {
                    // The replica may be frozen or cut off with its connection still open:
                    // the leader is likely elsewhere now, so the next address goes first.
                    warn!(
                        server = %url,
                        "no message from the scheduler for {} ms, longer than the session lease: dropping the session and trying the next address; jobs keep running until the contact lease runs out",
                        silence.as_millis()
                    );
                    if registered {
                        backoff.reset();
                    }
                    index += 1;
                }
                SessionEnd::Broken { registered, reason } => {
                    warn!(server = %url, "session with the scheduler ended: {reason}; jobs keep running");
                    if registered {
                        backoff.reset();
                    } else {
                        index += 1;
                    }
                }
            }
            let delay = backoff.take();
            if let Some(request) = self.idle(delay, &mut shutdown).await {
                return self.shut_down(request, None).await;
            }
        }
    }

    /// Waits `delay` while still recording job ends; a shutdown request cuts it short.
    async fn idle(
        &mut self,
        delay: Duration,
        shutdown: &mut watch::Receiver<Option<Shutdown>>,
    ) -> Option<Shutdown> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                request = shutdown_requested(shutdown) => return Some(request),
                () = &mut sleep => return None,
                Some(ended) = self.events.recv() => {
                    // Reported in the next registration's `finished`.
                    let _ = self.on_job_ended(ended);
                }
            }
        }
    }

    async fn shut_down(
        mut self,
        request: Shutdown,
        open: Option<Box<OpenSession>>,
    ) -> Result<(), NodedError> {
        if request == Shutdown::LeaveJobs {
            info!(
                running = self.running(),
                "node daemon stopping; its jobs keep running under their supervisors"
            );
            return Ok(());
        }
        let to_stop: Vec<JobKey> = self
            .jobs
            .iter()
            .filter(|(_, job)| matches!(job, LocalJob::Running { stopping: false }))
            .map(|(key, _)| *key)
            .collect();
        info!(jobs = self.running(), "node daemon stopping with its jobs");
        for key in to_stop {
            if let Err(e) = self.executor.stop(key, ExitReason::NodeShutdown, None) {
                warn!(job = %key, "cannot stop: {e}");
            }
            self.jobs.insert(key, LocalJob::Running { stopping: true });
        }
        let deadline = tokio::time::Instant::now() + self.kill_grace + STOP_SLACK;
        while self.running() > 0 {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ended)) => {
                    if let (Some(report), Some(open)) = (self.on_job_ended(ended), &open) {
                        let _ = open.uplink.send(report);
                    }
                }
                Ok(None) | Err(_) => {
                    warn!(
                        running = self.running(),
                        "jobs did not end in time; leaving them"
                    );
                    break;
                }
            }
        }
        if let Some(open) = open {
            open.close().await;
        }
        info!("node daemon stopped");
        Ok(())
    }
}

pub(crate) fn message(msg: pb::node_message::Msg) -> pb::NodeMessage {
    pb::NodeMessage { msg: Some(msg) }
}
