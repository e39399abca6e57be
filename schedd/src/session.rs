//! Node sessions (`gantry.v1.NodeSession`): one bidirectional stream per node daemon.
//!
//! Down the stream goes the complete set of jobs the node should run, whenever it changes
//! (level-triggered, so a reconnecting node converges without replaying history). Up come
//! registration, heartbeats and start/exit reports, each turned into a command.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use gantry_model::{JobId, NodeInventory};
use gantry_proto as pb;
use gantry_state::machine::short_identity;
use gantry_state::{Command, Job, Outcome, PartExit, StateMachine};
use pb::node_message::Msg;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::clock::now_ms;
use crate::config::SchedConfig;
use crate::engine::Engine;
use crate::liveness::Liveness;
use gantry_wire as convert;

pub struct NodeSessions {
    pub engine: Engine,
    pub config: Arc<SchedConfig>,
    pub liveness: Arc<Liveness>,
}

type Outbound = Pin<Box<dyn Stream<Item = Result<pb::SchedulerMessage, Status>> + Send>>;

fn exit_from_pb(e: &pb::JobExited) -> PartExit {
    PartExit {
        reason: convert::exit_reason_from_pb(e.reason),
        exit_code: e.exit_code,
        signal: e.signal,
        message: e.message.clone(),
        after_time_limit_warning: e.after_time_limit_warning,
    }
}

fn exited(node: &str, e: &pb::JobExited) -> Command {
    Command::JobExited {
        job: e.job_id,
        attempt: e.attempt,
        node: node.to_string(),
        exit: exit_from_pb(e),
        now_ms: now_ms(),
    }
}

#[tonic::async_trait]
impl pb::node_session_server::NodeSession for NodeSessions {
    type AttachStream = Outbound;

    async fn attach(
        &self,
        request: Request<Streaming<pb::NodeMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        crate::api::require_leader(&self.engine, &self.config)?;
        let peer = request
            .remote_addr()
            .map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let register = match inbound.message().await? {
            Some(pb::NodeMessage {
                msg: Some(Msg::Register(r)),
            }) => r,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first message of a node session must be RegisterNode",
                ));
            }
            None => {
                return Err(Status::invalid_argument(
                    "the stream ended before RegisterNode",
                ));
            }
        };
        let name = register.name.clone();
        let cluster = self.engine.read(|s| s.cluster().to_string());
        if cluster.is_empty() {
            return Err(Status::unavailable(
                "the scheduler is naming this new cluster; retry",
            ));
        }
        self.admit_daemon(&name, &register.identity, &peer)?;
        let inventory = NodeInventory {
            gpus: register.gpus.iter().map(convert::gpu_from_pb).collect(),
            cpus: register.cpus,
            mem_mib: register.mem_mib,
            pool: if register.pool.is_empty() {
                "default".into()
            } else {
                register.pool.clone()
            },
            labels: register.labels.clone(),
        };
        let running = register
            .running
            .iter()
            .map(|r| (r.job_id, r.attempt))
            .collect();
        let command = Command::RegisterNode {
            name: name.clone(),
            identity: register.identity.clone(),
            inventory,
            running,
            // What ended while the node was away is recorded before it is reconciled.
            finished: register
                .finished
                .iter()
                .map(|e| (e.job_id, e.attempt, exit_from_pb(e)))
                .collect(),
            failed_gpus: register
                .failed_gpus
                .iter()
                .map(|f| (f.gpu, f.reason.clone()))
                .collect(),
            now_ms: now_ms(),
        };
        match self
            .engine
            .propose(command)
            .await
            .map_err(crate::api::engine_status)?
        {
            Outcome::Rejected(r) => return Err(Status::invalid_argument(r.to_string())),
            _ => {
                info!(node = %name, gpus = register.gpus.len(), version = %register.version, "node registered")
            }
        }
        // The term of the leadership that accepted the node: if this replica has lost it by
        // now, the session must not start under it.
        let term = self.engine.role().term;
        crate::api::require_leader(&self.engine, &self.config)?;
        let session = self.liveness.connected(&name, &peer);
        let (tx, rx) = mpsc::channel(16);
        let registered = pb::Registered {
            node: name.clone(),
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            term,
            heartbeat_timeout_ms: self.config.heartbeat_timeout_ms,
            cluster,
        };
        let hello = pb::SchedulerMessage {
            msg: Some(pb::scheduler_message::Msg::Registered(registered)),
        };
        tx.send(Ok(hello))
            .await
            .map_err(|_| Status::cancelled("the node went away"))?;
        tokio::spawn(push_assignments(
            self.engine.clone(),
            self.liveness.clone(),
            name.clone(),
            session,
            Duration::from_millis(self.config.heartbeat_interval_ms),
            tx.clone(),
        ));
        tokio::spawn(read_reports(
            self.engine.clone(),
            self.liveness.clone(),
            name,
            session,
            inbound,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl NodeSessions {
    /// Refuses a node daemon whose name belongs to another daemon's identity, saying which
    /// and where both connect from (the state machine refuses it too, should two race).
    fn admit_daemon(&self, name: &str, identity: &str, peer: &str) -> Result<(), Status> {
        let held = self
            .engine
            .read(|s| s.node(name).map(|n| n.identity.clone()))
            .filter(|held| !held.is_empty() && held != identity);
        let Some(held) = held else {
            return Ok(());
        };
        let owner = match self.liveness.open_session(name) {
            Some(from) => format!("connected from {from}"),
            None => "not connected now".to_string(),
        };
        let message = format!(
            "node name {name} is in use by another node daemon (identity {}, {owner}); this \
             one (identity {}, from {peer}) is refused: if this machine replaces that one, stop \
             the other daemon and run `gantry nodes replace {name}`; otherwise give this one \
             another --name",
            short_identity(&held),
            short_identity(identity)
        );
        warn!(node = %name, %peer, "refused a second node daemon for {name}: {message}");
        Err(Status::already_exists(message))
    }
}

/// Sends the node its desired job set whenever that changes, and at least once per
/// heartbeat interval even when it does not: the node daemon takes silence as a sign that
/// this replica is gone (frozen, partitioned) and looks for the leader elsewhere. Runs until
/// the session ends or a newer session of the same node supersedes it.
async fn push_assignments(
    engine: Engine,
    liveness: Arc<Liveness>,
    node: String,
    session: u64,
    keepalive: Duration,
    tx: mpsc::Sender<Result<pb::SchedulerMessage, Status>>,
) {
    let mut applied = engine.subscribe();
    let mut role = engine.subscribe_role();
    let mut launched: BTreeSet<(JobId, u32)> = BTreeSet::new();
    let mut last_sent: Option<Vec<(JobId, u32, bool)>> = None;
    let mut sent_at = tokio::time::Instant::now();
    loop {
        if !liveness.is_current(&node, session) {
            break;
        }
        if !engine.role().is_leader {
            // The node daemon reconnects and finds the new leader.
            let _ = tx
                .send(Err(Status::unavailable(
                    "this replica is no longer the leader",
                )))
                .await;
            break;
        }
        let (keys, message) = engine.read(|s| desired(s, &node, &launched));
        if last_sent.as_ref() != Some(&keys) || sent_at.elapsed() >= keepalive {
            launched = keys
                .iter()
                .map(|(id, attempt, _)| (*id, *attempt))
                .collect();
            let msg = pb::SchedulerMessage {
                msg: Some(pb::scheduler_message::Msg::Assignments(message)),
            };
            if tx.send(Ok(msg)).await.is_err() {
                break;
            }
            last_sent = Some(keys);
            sent_at = tokio::time::Instant::now();
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { break },
            changed = role.changed() => if changed.is_err() { break },
            () = tx.closed() => break,
            // Also wakes up for the keepalive and to notice a superseding session.
            () = tokio::time::sleep_until(sent_at + keepalive) => {}
        }
    }
    debug!(node = %node, session, "assignment push ended");
}

/// The jobs `node` should run now, with launch details for those not yet sent.
fn desired(
    state: &StateMachine,
    node: &str,
    launched: &BTreeSet<(JobId, u32)>,
) -> (Vec<(JobId, u32, bool)>, pb::Assignments) {
    let mut keys = vec![];
    let mut jobs = vec![];
    for job in state.jobs_on(node) {
        let cancel = job.stopping();
        keys.push((job.id, job.attempt, cancel));
        let launch = (!launched.contains(&(job.id, job.attempt)))
            .then(|| launch(job, node, state.cluster()))
            .flatten();
        // Stopped to be requeued, and not cancelled meanwhile: warn it to checkpoint.
        let warning = job.requeue_warning();
        jobs.push(pb::Assignment {
            job_id: job.id,
            attempt: job.attempt,
            epoch: job.epoch,
            cancel,
            launch,
            preempt: warning.is_some(),
            warning: warning.map(|w| w.as_str().to_string()).unwrap_or_default(),
        });
    }
    (keys, pb::Assignments { jobs })
}

fn launch(job: &Job, node: &str, cluster: &str) -> Option<pb::Launch> {
    let rank = job.parts.iter().position(|p| p.node == node)?;
    let part = &job.parts[rank];
    // Per node, like Slurm's filename patterns: %n is the node's rank, %N its name.
    let per_node = |path: String| path.replace("%n", &rank.to_string()).replace("%N", node);
    let (stdout_path, stderr_path) = job.spec.output_paths(job.id, job.attempt);
    let (stdout_path, stderr_path) = (per_node(stdout_path), per_node(stderr_path));
    let submit_dir = job
        .spec
        .env
        .iter()
        .find(|(k, _)| k == "PWD")
        .map_or_else(|| job.spec.work_dir.clone(), |(_, v)| v.clone());
    Some(pb::Launch {
        name: job.spec.name.clone(),
        user: job.owner.user.clone(),
        uid: job.owner.uid,
        gid: job.owner.gid,
        program: Some(convert::program_to_pb(&job.spec.program)),
        work_dir: job.spec.work_dir.clone(),
        stdout_path,
        stderr_path,
        env: convert::env_to_pb(&job.spec.env),
        gpus: part.gpus.clone(),
        cpus: part.cpus,
        mem_mib: part.mem_mib,
        time_limit_ms: job.spec.time_limit_for(job.shape).unwrap_or(0),
        node_rank: u32::try_from(rank).unwrap_or(u32::MAX),
        nodes: job.node_names(),
        submit_dir,
        checkpoint: job.spec.checkpoint.as_ref().map(convert::checkpoint_to_pb),
        job_token: job.token.clone(),
        append_output: job.spec.appends_output(job.attempt, job.parts.len()),
        cluster: cluster.to_string(),
    })
}

/// Turns the node's reports into commands until the stream ends. Reports that arrive
/// together are proposed together, in order, so they share a flush.
async fn read_reports(
    engine: Engine,
    liveness: Arc<Liveness>,
    node: String,
    session: u64,
    mut inbound: Streaming<pb::NodeMessage>,
    downlink: mpsc::Sender<Result<pb::SchedulerMessage, Status>>,
) {
    let (tx, mut rx) = mpsc::channel::<Command>(1024);
    let reader_node = node.clone();
    let reader_engine = engine.clone();
    let reader_liveness = liveness.clone();
    let reader = tokio::spawn(async move {
        loop {
            let message = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    debug!(node = %reader_node, %status, "node stream broke");
                    break;
                }
            };
            reader_liveness.heard(&reader_node, session);
            let command = match message.msg {
                Some(Msg::Started(s)) => Command::JobStarted {
                    job: s.job_id,
                    attempt: s.attempt,
                    node: reader_node.clone(),
                    now_ms: now_ms(),
                },
                Some(Msg::Exited(e)) => exited(&reader_node, &e),
                Some(Msg::GpuFailure(f)) => {
                    warn!(node = %reader_node, gpu = f.gpu, reason = %f.reason, "a GPU failed");
                    Command::GpuFailed {
                        node: reader_node.clone(),
                        gpu: f.gpu,
                        reason: f.reason,
                        now_ms: now_ms(),
                    }
                }
                Some(Msg::Heartbeat(_)) => continue,
                Some(Msg::CheckpointSweep(sweep)) => {
                    // A question, not a report: answered from the applied state.
                    let ended =
                        reader_engine.read(|s| s.checkpoints_to_remove(&sweep.job_ids, now_ms()));
                    debug!(node = %reader_node, asked = sweep.job_ids.len(), ended = ended.len(), "checkpoint sweep");
                    let answer = pb::SchedulerMessage {
                        msg: Some(pb::scheduler_message::Msg::CheckpointsEnded(
                            pb::CheckpointsEnded { job_ids: ended },
                        )),
                    };
                    if downlink.send(Ok(answer)).await.is_err() {
                        break;
                    }
                    continue;
                }
                Some(Msg::Register(_)) | None => {
                    warn!(node = %reader_node, "ignoring an unexpected message on an established session");
                    continue;
                }
            };
            if tx.send(command).await.is_err() {
                break;
            }
        }
    });
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
        }
        match engine.propose_all(batch).await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    if let Outcome::Ignored(why) = outcome {
                        debug!(node = %node, %why, "report ignored");
                    }
                }
            }
            Err(e) => {
                warn!(node = %node, error = %e, "cannot record node reports");
                break;
            }
        }
    }
    reader.abort();
    liveness.ended(&node, session);
    info!(node = %node, session, "node session ended");
}
