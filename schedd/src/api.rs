//! The client API (`gantry.v1.Scheduler`): checks requests, proposes commands, reads state.

use std::sync::Arc;

use gantry_model::{JobId, JobState, Owner};
use gantry_policies::Topology;
use gantry_proto as pb;
use gantry_state::accounting;
use gantry_state::accounts::{self, Account, AccountChange, AccountError, NewAccount};
use gantry_state::reservation::Reservation;
use gantry_state::{Command, Control, DrainMode, GpuAsk, Job, Node, NodeState, Outcome, Rejection};
use tonic::{Request, Response, Status};

use crate::clock::now_ms;
use crate::config::SchedConfig;
use crate::engine::{Engine, EngineError};
use crate::explain::{Explanation, Explanations, lookup};
use crate::membership;
use gantry_model::address::parse_server;
use gantry_wire as convert;

pub struct SchedulerApi {
    pub engine: Engine,
    pub config: Arc<SchedConfig>,
    pub explanations: Explanations,
}

fn caller(c: Option<pb::Caller>) -> Result<Owner, Status> {
    let c = c.ok_or_else(|| Status::invalid_argument("the request names no caller"))?;
    if c.user.is_empty() {
        return Err(Status::invalid_argument("the caller's user name is empty"));
    }
    Ok(Owner {
        user: c.user,
        uid: c.uid,
        gid: c.gid,
    })
}

/// `Unavailable` unless this replica is the leader: only the leader's state is current, so
/// clients (and node daemons) move on to the next replica of their list.
pub fn require_leader(engine: &Engine, config: &SchedConfig) -> Result<(), Status> {
    let role = engine.role();
    if role.is_leader {
        return Ok(());
    }
    if role.leader == Some(role.id) {
        return Err(Status::unavailable(format!(
            "replica {} was just elected leader and is applying the log it inherited; retry",
            role.id
        )));
    }
    let leader = role.leader.map(|id| {
        let url = membership::replica_url(engine, config, id);
        format!(
            "; replica {id}{} is",
            url.map(|u| format!(" at {u}")).unwrap_or_default()
        )
    });
    Err(Status::unavailable(match leader {
        Some(hint) => format!("replica {} is not the leader{hint}", role.id),
        None => format!(
            "replica {} is not the leader; no leader is elected yet",
            role.id
        ),
    }))
}

/// The tree, parents before children (depth first, siblings by name), with GPUs in use.
fn accounts_to_pb(state: &gantry_state::StateMachine) -> pb::AccountsResponse {
    let all: Vec<&Account> = state.accounts().iter().collect();
    let in_use = state.gpus_in_use_by_account();
    let mut ordered = Vec::with_capacity(all.len());
    let mut stack: Vec<&Account> = all.iter().copied().filter(|a| a.parent.is_none()).collect();
    stack.reverse();
    while let Some(account) = stack.pop() {
        ordered.push(account);
        let mut children: Vec<&Account> = all
            .iter()
            .copied()
            .filter(|a| a.parent.as_deref() == Some(account.name.as_str()))
            .collect();
        children.reverse();
        stack.extend(children);
    }
    pb::AccountsResponse {
        accounts: ordered
            .into_iter()
            .map(|a| {
                let grants = state.accounts().grants(&a.name, state.config());
                pb::Account {
                    name: a.name.clone(),
                    parent: a.parent.clone().unwrap_or_default(),
                    share: a.share,
                    guarantee_gpus: a.guarantee_gpus,
                    max_gpus: a.max_gpus,
                    users: a.users.iter().cloned().collect(),
                    gpus_in_use: in_use.get(a.name.as_str()).copied().unwrap_or(0),
                    qos: grants.qos.into_iter().collect(),
                    qos_inherited: a.qos.is_none(),
                    deadlines: grants.deadlines,
                    deadlines_inherited: a.deadlines.is_none(),
                }
            })
            .collect(),
    }
}

fn config_to_pb(config: &gantry_policies::PolicyConfig) -> pb::ConfigResponse {
    pb::ConfigResponse {
        entries: config
            .entries()
            .into_iter()
            .map(|(key, value)| pb::ConfigEntry { key, value })
            .collect(),
    }
}

pub fn engine_status(e: EngineError) -> Status {
    Status::unavailable(e.to_string())
}

fn rejection_status(r: Rejection) -> Status {
    let message = r.to_string();
    match r {
        Rejection::InvalidSpec(_)
        | Rejection::Unsatisfiable(_)
        | Rejection::BadRegistration(_)
        | Rejection::UnknownQos { .. }
        | Rejection::DeadlinePassed
        | Rejection::PoolTime { .. }
        | Rejection::BadReservation(_)
        | Rejection::DependencyNeverMet { .. }
        | Rejection::BadConfig(_) => Status::invalid_argument(message),
        Rejection::Account(AccountError::NotAMember { .. })
        | Rejection::PoolAccount { .. }
        | Rejection::NotInReservation { .. } => Status::permission_denied(message),
        Rejection::UnknownReservation(_) => Status::not_found(message),
        Rejection::MaintenanceWindow(_) => Status::permission_denied(message),
        Rejection::AccountInUse { .. } | Rejection::AccountNamed { .. } | Rejection::NodeUp(_) => {
            Status::failed_precondition(message)
        }
        Rejection::BadCluster(_) => Status::invalid_argument(message),
        Rejection::ReservationExists(_) | Rejection::NodeInUse { .. } => {
            Status::already_exists(message)
        }
        Rejection::Account(AccountError::Unknown(_)) => Status::not_found(message),
        Rejection::Account(AccountError::Exists(_)) => Status::already_exists(message),
        Rejection::Account(
            AccountError::QosNotGranted { .. } | AccountError::DeadlinesNotGranted(_),
        ) => Status::permission_denied(message),
        Rejection::Account(
            AccountError::HasChildren { .. }
            | AccountError::HasUsers { .. }
            | AccountError::Permanent(_),
        ) => Status::failed_precondition(message),
        Rejection::Account(_) => Status::invalid_argument(message),
        Rejection::UnknownJob(_) | Rejection::UnknownNode(_) => Status::not_found(message),
        Rejection::AlreadyEnded(..) | Rejection::Stale { .. } => {
            Status::failed_precondition(message)
        }
        Rejection::NotOwner { .. } | Rejection::BadToken(_) | Rejection::AdminOnly(_) => {
            Status::permission_denied(message)
        }
        Rejection::NotPending { .. }
        | Rejection::NotHeld(_)
        | Rejection::NotRunning { .. }
        | Rejection::Stopping(_) => Status::failed_precondition(message),
    }
}

impl SchedulerApi {
    /// An admin's change of the account tree: `command` builds it for the caller (or says
    /// what is wrong with the request); the answer is the tree once it is applied.
    async fn change_accounts(
        &self,
        caller_of: Option<pb::Caller>,
        command: impl FnOnce(String) -> Result<Command, String>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let who = caller(caller_of)?;
        self.require_admin(&who, "manage accounts")?;
        let command = command(who.user).map_err(Status::invalid_argument)?;
        self.propose(command).await?;
        Ok(Response::new(self.engine.read(accounts_to_pb)))
    }

    async fn propose(&self, command: Command) -> Result<Outcome, Status> {
        match self.engine.propose(command).await.map_err(engine_status)? {
            Outcome::Rejected(r) => Err(rejection_status(r)),
            outcome => Ok(outcome),
        }
    }

    /// A read may go ahead: at once when `stale` (this replica's state, whatever its role);
    /// otherwise only on the leader, once a majority has confirmed it still leads and its
    /// state holds everything committed before the request (linearizable).
    async fn readable(&self, stale: bool) -> Result<(), Status> {
        if stale {
            return Ok(());
        }
        require_leader(&self.engine, &self.config)?;
        self.engine.read_index().await.map_err(engine_status)
    }

    fn require_admin(&self, who: &Owner, what: &str) -> Result<(), Status> {
        if self.config.is_admin(&who.user) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "only admins may {what}; {} is not one (admins: {})",
            who.user,
            self.config.admins.join(", ")
        )))
    }

    /// Take this before reading the state (never the other way round), so readers and
    /// the scheduling loop cannot deadlock.
    /// A create or update request from an admin, as the state takes it.
    fn reservation_request(
        &self,
        request: pb::CreateReservationRequest,
    ) -> Result<(Reservation, bool), Status> {
        require_leader(&self.engine, &self.config)?;
        let who = caller(request.caller)?;
        self.require_admin(&who, "manage reservations")?;
        let r = request
            .reservation
            .ok_or_else(|| Status::invalid_argument("no reservation given"))?;
        let gpu_holds = !r.gpus.is_empty();
        let reservation = Reservation {
            name: r.name,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            nodes: if request.gpu_count > 0 || gpu_holds {
                r.gpus.iter().map(|h| h.node.clone()).collect()
            } else {
                node_names(r.nodes)?
            },
            gpus: r.gpus.into_iter().map(|h| (h.node, h.gpus)).collect(),
            users: r.users,
            accounts: r.accounts,
            created_by: who.user,
            maintenance: r.maintenance,
            started: false,
        };
        Ok((reservation, request.force))
    }

    /// Every reservation that has not ended, by name.
    fn reservations_pb(&self) -> pb::ReservationsResponse {
        let now = now_ms();
        let reservations = self.engine.read(|s| {
            s.reservations(now)
                .map(|r| pb::Reservation {
                    name: r.name.clone(),
                    start_ms: r.start_ms,
                    end_ms: r.end_ms,
                    nodes: r.nodes.clone(),
                    users: r.users.clone(),
                    accounts: r.accounts.clone(),
                    created_by: r.created_by.clone(),
                    maintenance: r.maintenance,
                    gpus: r
                        .gpus
                        .iter()
                        .map(|(node, gpus)| pb::NodeGpus {
                            node: node.clone(),
                            gpus: gpus.clone(),
                        })
                        .collect(),
                })
                .collect()
        });
        pb::ReservationsResponse { reservations }
    }

    fn explanations(&self) -> std::sync::RwLockReadGuard<'_, Vec<(JobId, Explanation)>> {
        self.explanations.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A job as the API shows it. `explained` is the last pass's explanation of a pending job;
/// `summary` leaves out the fields a table does not show.
fn job_to_pb(
    job: &Job,
    position: Option<usize>,
    explained: Option<&Explanation>,
    summary: bool,
) -> pb::Job {
    // A held job is out of the passes: an explanation would be from before the hold.
    let explained = explained.filter(|_| job.state == JobState::Pending && job.held_by.is_none());
    let wait = explained.and_then(|e| e.wait.as_ref());
    let reason = match (job.state, wait) {
        (JobState::Pending, _) if job.held_by.is_some() => job.reason.clone(),
        (JobState::Pending, Some(why)) => why.to_string(),
        (JobState::Pending, None) => "Scheduling".to_string(),
        // The transient state of a run being stopped to run again.
        (JobState::Running, _) => job.requeue.as_ref().map_or_else(
            || job.reason.clone(),
            |r| format!("{}, stopping to run again: {}", r.cause.outcome(), r.why),
        ),
        _ => job.reason.clone(),
    };
    let (stdout_path, stderr_path) = if summary {
        Default::default()
    } else {
        job.spec.output_paths(job.id, job.attempt)
    };
    pb::Job {
        id: job.id,
        name: job.spec.name.clone(),
        user: job.owner.user.clone(),
        account: job.spec.account.clone(),
        state: convert::state_to_pb(job.state) as i32,
        reason,
        exit_code: job.exit_code,
        signal: job.signal,
        num_nodes: job.spec.num_nodes,
        gpus_per_node: job.spec.gpus_per_node,
        cpus_per_node: job.spec.cpus_per_node,
        mem_per_node_mib: job.spec.mem_per_node_mib,
        time_limit_ms: job.spec.time_limit_ms.unwrap_or(0),
        gpu_model: job.spec.gpu_model.clone().unwrap_or_default(),
        alternatives: job
            .spec
            .alternatives
            .iter()
            .map(convert::alternative_to_pb)
            .collect(),
        shape: job.shape,
        qos: job.spec.qos.clone(),
        deadline_ms: job.spec.deadline_ms,
        pool: job.spec.pool.clone().unwrap_or_default(),
        constraints: job.spec.constraints.clone(),
        checkpoint: job.spec.checkpoint.as_ref().map(convert::checkpoint_to_pb),
        last_checkpoint_ms: job.last_checkpoint_ms.unwrap_or(0),
        has_checkpoint_progress: job.checkpoint_progress.is_some(),
        checkpoint_progress: job.checkpoint_progress.unwrap_or(0),
        no_requeue: !job.spec.requeue.on_node_failure,
        requeue_on_timeout: job.spec.requeue.on_timeout,
        attempts: job
            .attempts
            .iter()
            .map(|a| pb::Attempt {
                attempt: a.attempt,
                allocation: a
                    .parts
                    .iter()
                    .map(|(node, gpus)| {
                        let gpus: Vec<String> = gpus.iter().map(u32::to_string).collect();
                        format!("{node}:{}", gpus.join(","))
                    })
                    .collect(),
                start_ms: a.start_ms,
                end_ms: a.end_ms,
                outcome: a.outcome.clone(),
                reason: a.reason.clone(),
                lost_gpu_ms: a.lost_gpu_ms,
            })
            .collect(),
        dependencies: job
            .spec
            .dependencies
            .iter()
            .map(convert::dependency_to_pb)
            .collect(),
        priority: explained.map_or(0, |e| e.priority.total),
        factors: explained.map(|e| {
            let f = &e.priority.factors;
            pb::PriorityFactors {
                age: f.age,
                fair_share: f.fair_share,
                qos: f.qos,
                deadline: f.deadline,
                size: f.size,
                short: f.short,
                preempted: f.preempted,
            }
        }),
        rank: explained.map_or(0, |e| e.rank),
        estimated_start_ms: explained.and_then(|e| e.estimated_start_ms),
        allocation: job
            .parts
            .iter()
            .map(|p| pb::NodeAllocation {
                node: p.node.clone(),
                gpus: p.gpus.clone(),
                cpus: p.cpus,
                mem_mib: p.mem_mib,
                ended: p.exit.is_some(),
            })
            .collect(),
        submit_time_ms: job.submit_time_ms,
        start_time_ms: job.start_time_ms,
        end_time_ms: job.end_time_ms,
        work_dir: if summary {
            String::new()
        } else {
            job.spec.work_dir.clone()
        },
        stdout_path,
        stderr_path,
        command: if summary {
            vec![]
        } else {
            job.spec.program.display_argv()
        },
        cancel_requested: job.cancel_requested,
        attempt: job.attempt,
        queue_position: position.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
    }
}

/// The report's filter; a `since` or `until` of 0 is no bound.
fn accounting_filter(request: &pb::AccountingRequest) -> Result<accounting::Filter, Status> {
    let mut states = Vec::with_capacity(request.states.len());
    for s in &request.states {
        states
            .push(convert::state_from_pb(*s).ok_or_else(|| {
                Status::invalid_argument(format!("unknown job state number {s}"))
            })?);
    }
    if request.until_ms > 0 && request.until_ms <= request.since_ms {
        return Err(Status::invalid_argument(
            "the report's end must come after its start",
        ));
    }
    Ok(accounting::Filter {
        since_ms: (request.since_ms > 0).then_some(request.since_ms),
        until_ms: (request.until_ms > 0).then_some(request.until_ms),
        users: request.users.clone(),
        accounts: request.accounts.clone(),
        pools: request.pools.clone(),
        states,
    })
}

fn used_to_pb(used: &accounting::Used) -> pb::Used {
    pb::Used {
        runs: used.runs,
        wall_seconds: used.wall_s,
        gpu_seconds: used.gpu_s,
        cpu_seconds: used.cpu_s,
    }
}

pub fn node_to_pb(node: &Node, topology: &Topology) -> pb::Node {
    let state = match node.state() {
        NodeState::Idle => pb::NodeState::Idle,
        NodeState::Mixed => pb::NodeState::Mixed,
        NodeState::Allocated => pb::NodeState::Allocated,
        NodeState::Draining => pb::NodeState::Draining,
        NodeState::Drained => pb::NodeState::Drained,
        NodeState::Down => pb::NodeState::Down,
    };
    let failed_gpus: Vec<pb::GpuFailure> = node
        .failed_gpus
        .iter()
        .map(|(gpu, reason)| pb::GpuFailure {
            gpu: *gpu,
            reason: reason.clone(),
        })
        .collect();
    let reason = match (&node.drain, &node.down_reason) {
        (_, Some(down)) if !node.up => down.clone(),
        (Some(d), _) => match d.deadline_ms.filter(|_| !node.jobs.is_empty()) {
            Some(at) => format!(
                "{} (by {}; jobs still running at {} are requeued)",
                d.reason,
                d.by,
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(at)
                )
            ),
            None => format!("{} (by {})", d.reason, d.by),
        },
        _ => String::new(),
    };
    let capacity = node.inventory.capacity();
    pb::Node {
        name: node.name.clone(),
        state: state as i32,
        reason,
        pool: node.inventory.pool.clone(),
        gpus: node.inventory.gpus.iter().map(convert::gpu_to_pb).collect(),
        gpus_total: capacity.gpus,
        gpus_allocated: node.allocated.gpus,
        gpu_model: node.inventory.gpu_model(),
        cpus: capacity.cpus,
        cpus_allocated: node.allocated.cpus,
        mem_mib: capacity.mem_mib,
        mem_allocated_mib: node.allocated.mem_mib,
        registered_time_ms: node.registered_time_ms,
        jobs: node.jobs.iter().copied().collect(),
        switches: topology.switches_of(&node.name).to_vec(),
        labels: node.inventory.labels.clone(),
        failed_gpus,
    }
}

fn node_names(nodes: Vec<String>) -> Result<Vec<String>, Status> {
    if nodes.is_empty() {
        return Err(Status::invalid_argument("name at least one node"));
    }
    Ok(nodes)
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerApi {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let owner = caller(request.caller)?;
        let spec = request
            .spec
            .as_ref()
            .map(convert::spec_from_pb)
            .ok_or_else(|| Status::invalid_argument("the request has no job spec"))?
            .and_then(|spec| spec.validate().map(|()| spec))
            .map_err(|e| Status::invalid_argument(format!("invalid job: {e}")))?;
        match self
            .propose(Command::Submit {
                owner,
                spec: Box::new(spec),
                key: Some(request.idempotency_key).filter(|k| !k.is_empty()),
                now_ms: now_ms(),
            })
            .await?
        {
            Outcome::Submitted(job_id) => Ok(Response::new(pb::SubmitResponse { job_id })),
            other => Err(Status::internal(format!(
                "unexpected outcome of a submit: {other:?}"
            ))),
        }
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let who = caller(request.caller)?;
        if request.job_ids.is_empty() {
            return Err(Status::invalid_argument("name at least one job to cancel"));
        }
        let admin = self.config.is_admin(&who.user);
        let command = Command::Cancel {
            jobs: request.job_ids,
            by: who.user,
            admin,
            now_ms: now_ms(),
        };
        match self.propose(command).await? {
            Outcome::Cancelled {
                cancelled,
                signalled,
            } => Ok(Response::new(pb::CancelResponse {
                cancelled,
                signalled,
            })),
            other => Err(Status::internal(format!(
                "unexpected outcome of a cancel: {other:?}"
            ))),
        }
    }

    async fn control(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::ControlResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let who = caller(request.caller)?;
        let action = match pb::ControlAction::try_from(request.action) {
            Ok(pb::ControlAction::Hold) => Control::Hold,
            Ok(pb::ControlAction::Release) => Control::Release,
            Ok(pb::ControlAction::Requeue) => Control::Requeue,
            Ok(pb::ControlAction::Preempt) => Control::Preempt,
            Ok(pb::ControlAction::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown action {}: hold, release, requeue or preempt",
                    request.action
                )));
            }
        };
        if request.job_ids.is_empty() {
            return Err(Status::invalid_argument(format!(
                "name at least one job to {}",
                action.as_str()
            )));
        }
        if action == Control::Preempt {
            self.require_admin(&who, "preempt jobs")?;
        }
        let command = Command::Control {
            jobs: request.job_ids,
            action,
            admin: self.config.is_admin(&who.user),
            by: who.user,
            now_ms: now_ms(),
        };
        match self.propose(command).await? {
            Outcome::Applied => Ok(Response::new(pb::ControlResponse {})),
            other => Err(Status::internal(format!(
                "unexpected outcome of a {}: {other:?}",
                action.as_str()
            ))),
        }
    }

    async fn checkpoint_done(
        &self,
        request: Request<pb::CheckpointDoneRequest>,
    ) -> Result<Response<pb::CheckpointDoneResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        self.engine
            .read(|s| s.token_matches(request.job_id, request.attempt, &request.token))
            .map_err(rejection_status)?;
        let command = Command::CheckpointDone {
            job: request.job_id,
            attempt: request.attempt,
            progress: request.has_progress.then_some(request.progress),
            work_done: request.work_done,
            now_ms: now_ms(),
        };
        match self.propose(command).await? {
            Outcome::Applied => Ok(Response::new(pb::CheckpointDoneResponse {})),
            Outcome::Ignored(why) => Err(Status::failed_precondition(why)),
            other => Err(Status::internal(format!(
                "unexpected outcome of a checkpoint report: {other:?}"
            ))),
        }
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let request = request.into_inner();
        self.readable(request.stale).await?;
        let id = request.job_id;
        // Lock order everywhere: explanations, then the state.
        let explanations = self.explanations();
        let why = lookup(&explanations, id);
        self.engine
            .read(|s| Some(job_to_pb(s.job(id)?, s.queue_position(id), why, false)))
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("job {id} does not exist")))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        self.readable(request.stale).await?;
        let mut states = Vec::with_capacity(request.states.len());
        for s in &request.states {
            states.push(convert::state_from_pb(*s).ok_or_else(|| {
                Status::invalid_argument(format!("unknown job state number {s}"))
            })?);
        }
        let wanted = |j: &Job| {
            (request.all || !states.is_empty() || !j.state.is_terminal())
                && (states.is_empty() || states.contains(&j.state))
                && (request.user.is_empty() || j.owner.user == request.user)
        };
        let explanations = self.explanations();
        let jobs = self.engine.read(|s| {
            let mut position = 0;
            s.jobs()
                .filter_map(|j| {
                    let pos = (j.state == JobState::Pending).then(|| {
                        position += 1;
                        position
                    });
                    wanted(j)
                        .then(|| job_to_pb(j, pos, lookup(&explanations, j.id), request.summary))
                })
                .collect()
        });
        drop(explanations);
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn history(
        &self,
        request: Request<pb::AccountingRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let request = request.into_inner();
        self.readable(request.stale).await?;
        let filter = accounting_filter(&request)?;
        let jobs = self.engine.read(|s| {
            s.history(&filter)
                .iter()
                .map(|r| pb::HistoryRow {
                    job_id: r.job.id,
                    name: r.job.spec.name.clone(),
                    user: r.job.owner.user.clone(),
                    account: r.job.spec.account.clone(),
                    pool: r.job.spec.pool.clone().unwrap_or_default(),
                    state: convert::state_to_pb(r.job.state) as i32,
                    submit_time_ms: r.job.submit_time_ms,
                    start_time_ms: r.job.attempts.first().map(|a| a.start_ms),
                    end_time_ms: r.job.end_time_ms,
                    used: Some(used_to_pb(&r.used)),
                })
                .collect()
        });
        Ok(Response::new(pb::HistoryResponse { jobs }))
    }

    async fn usage(
        &self,
        request: Request<pb::AccountingRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let request = request.into_inner();
        self.readable(request.stale).await?;
        let filter = accounting_filter(&request)?;
        let (by, name) = match request.by.as_str() {
            "" | "account" => (accounting::By::Account, "account"),
            "user" => (accounting::By::User, "user"),
            "pool" => (accounting::By::Pool, "pool"),
            other => {
                return Err(Status::invalid_argument(format!(
                    "usage is grouped by account, user or pool, not {other:?}"
                )));
            }
        };
        let (groups, total) = self.engine.read(|s| s.usage(&filter, by));
        let row = |key: String, g: &accounting::Group| pb::UsageRow {
            key,
            jobs: g.jobs,
            used: Some(used_to_pb(&g.used)),
        };
        Ok(Response::new(pb::UsageResponse {
            by: name.to_string(),
            rows: groups.into_iter().map(|(k, g)| row(k, &g)).collect(),
            total: Some(row("total".into(), &total)),
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.readable(request.into_inner().stale).await?;
        let topology = &self.config.fabric;
        let nodes = self
            .engine
            .read(|s| s.nodes().map(|n| node_to_pb(n, topology)).collect());
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let who = caller(request.caller)?;
        self.require_admin(&who, "drain nodes")?;
        if request.reason.trim().is_empty() {
            return Err(Status::invalid_argument("a drain needs a reason"));
        }
        let nodes = node_names(request.nodes)?;
        let mode = match pb::DrainMode::try_from(request.mode) {
            Ok(pb::DrainMode::Wait) => DrainMode::Wait,
            Ok(pb::DrainMode::Requeue) => DrainMode::Requeue,
            Ok(pb::DrainMode::Deadline) if request.deadline_after_ms > 0 => DrainMode::Deadline {
                after_ms: request.deadline_after_ms,
            },
            Ok(pb::DrainMode::Deadline) => {
                return Err(Status::invalid_argument(
                    "a drain deadline must be longer than 0",
                ));
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown drain mode number {}",
                    request.mode
                )));
            }
        };
        let command = Command::Drain {
            nodes,
            reason: request.reason,
            by: who.user,
            mode,
            now_ms: now_ms(),
        };
        self.propose(command).await?;
        Ok(Response::new(pb::DrainResponse {}))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let who = caller(request.caller)?;
        self.require_admin(&who, "resume nodes")?;
        let nodes = node_names(request.nodes)?;
        self.propose(Command::Resume {
            nodes,
            by: who.user,
            now_ms: now_ms(),
        })
        .await?;
        Ok(Response::new(pb::ResumeResponse {}))
    }

    async fn replace_node(
        &self,
        request: Request<pb::ReplaceNodeRequest>,
    ) -> Result<Response<pb::ReplaceNodeResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let who = caller(request.caller)?;
        self.require_admin(&who, "replace nodes")?;
        let name = request.node;
        self.propose(Command::ReplaceNode {
            name: name.clone(),
            by: who.user.clone(),
            now_ms: now_ms(),
        })
        .await?;
        tracing::info!(node = %name, by = %who.user, "node replaced: the next node daemon to register under its name takes it");
        Ok(Response::new(pb::ReplaceNodeResponse {}))
    }

    async fn replicas(
        &self,
        request: Request<pb::ReplicasRequest>,
    ) -> Result<Response<pb::ReplicasResponse>, Status> {
        self.readable(request.into_inner().stale).await?;
        Ok(Response::new(membership::replicas(
            &self.engine,
            &self.config,
        )))
    }

    async fn add_replica(
        &self,
        request: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::ReplicasResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let who = caller(request.caller)?;
        self.require_admin(&who, "change the scheduler replicas")?;
        let url = parse_server(&request.address)
            .map_err(|e| Status::invalid_argument(format!("invalid replica address: {e}")))?;
        membership::add(&self.engine, &self.config, request.id, &url).await?;
        Ok(Response::new(membership::replicas(
            &self.engine,
            &self.config,
        )))
    }

    async fn get_config(
        &self,
        request: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::ConfigResponse>, Status> {
        self.readable(request.into_inner().stale).await?;
        Ok(Response::new(
            self.engine.read(|s| config_to_pb(s.config())),
        ))
    }

    async fn set_config(
        &self,
        request: Request<pb::SetConfigRequest>,
    ) -> Result<Response<pb::ConfigResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let who = caller(request.caller)?;
        self.require_admin(&who, "change the scheduler configuration")?;
        self.propose(Command::SetConfig {
            key: request.key,
            value: request.value,
            by: who.user,
            now_ms: now_ms(),
        })
        .await?;
        Ok(Response::new(
            self.engine.read(|s| config_to_pb(s.config())),
        ))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        self.readable(request.into_inner().stale).await?;
        Ok(Response::new(self.engine.read(accounts_to_pb)))
    }

    async fn create_reservation(
        &self,
        request: Request<pb::CreateReservationRequest>,
    ) -> Result<Response<pb::ReservationsResponse>, Status> {
        let request = request.into_inner();
        let gpus = (request.gpu_count > 0).then(|| GpuAsk {
            count: request.gpu_count,
            pool: (!request.pool.is_empty()).then(|| request.pool.clone()),
        });
        let (reservation, force) = self.reservation_request(request)?;
        self.propose(Command::CreateReservation {
            reservation,
            gpus,
            force,
            now_ms: now_ms(),
        })
        .await?;
        Ok(Response::new(self.reservations_pb()))
    }

    async fn update_reservation(
        &self,
        request: Request<pb::CreateReservationRequest>,
    ) -> Result<Response<pb::ReservationsResponse>, Status> {
        let (reservation, force) = self.reservation_request(request.into_inner())?;
        self.propose(Command::UpdateReservation {
            reservation,
            force,
            now_ms: now_ms(),
        })
        .await?;
        Ok(Response::new(self.reservations_pb()))
    }

    async fn delete_reservation(
        &self,
        request: Request<pb::DeleteReservationRequest>,
    ) -> Result<Response<pb::ReservationsResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let who = caller(request.caller)?;
        self.require_admin(&who, "manage reservations")?;
        self.propose(Command::DeleteReservation {
            name: request.name,
            by: who.user,
            now_ms: now_ms(),
        })
        .await?;
        Ok(Response::new(self.reservations_pb()))
    }

    async fn list_reservations(
        &self,
        request: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ReservationsResponse>, Status> {
        self.readable(request.into_inner().stale).await?;
        Ok(Response::new(self.reservations_pb()))
    }

    async fn add_account(
        &self,
        request: Request<pb::AddAccountRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        let request = request.into_inner();
        self.change_accounts(request.caller.clone(), |by| {
            let account = NewAccount {
                name: request.name,
                parent: if request.parent.is_empty() {
                    accounts::ROOT.to_string()
                } else {
                    request.parent
                },
                share: request.share.unwrap_or(1),
                guarantee_gpus: request.guarantee_gpus,
                max_gpus: request.max_gpus,
                qos: request
                    .qos
                    .as_deref()
                    .map(accounts::parse_qos_list)
                    .transpose()?,
                deadlines: request
                    .deadlines
                    .as_deref()
                    .map(accounts::parse_yes_no)
                    .transpose()?,
            };
            Ok(Command::AddAccount {
                account,
                by,
                now_ms: now_ms(),
            })
        })
        .await
    }

    async fn add_account_users(
        &self,
        request: Request<pb::AddAccountUsersRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        let request = request.into_inner();
        self.change_accounts(request.caller.clone(), |by| {
            if request.users.is_empty() {
                return Err("name at least one user".into());
            }
            Ok(Command::AddAccountUsers {
                account: request.account,
                users: request.users,
                by,
                now_ms: now_ms(),
            })
        })
        .await
    }

    async fn set_account(
        &self,
        request: Request<pb::SetAccountRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        let request = request.into_inner();
        self.change_accounts(request.caller.clone(), |by| {
            let change = AccountChange::parse(
                request.share,
                request.guarantee_gpus.as_deref(),
                request.max_gpus.as_deref(),
                request.qos.as_deref(),
                request.deadlines.as_deref(),
            )?;
            if change.is_empty() {
                return Err(
                    "nothing to change: give --share, --guarantee-gpus, --max-gpus, \
                            --qos or --deadlines"
                        .into(),
                );
            }
            Ok(Command::SetAccount {
                name: request.name,
                change,
                by,
                now_ms: now_ms(),
            })
        })
        .await
    }

    async fn remove_account(
        &self,
        request: Request<pb::RemoveAccountRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        let request = request.into_inner();
        self.change_accounts(request.caller.clone(), |by| {
            Ok(Command::RemoveAccount {
                name: request.name,
                by,
                now_ms: now_ms(),
            })
        })
        .await
    }

    async fn remove_account_users(
        &self,
        request: Request<pb::RemoveAccountUsersRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        let request = request.into_inner();
        self.change_accounts(request.caller.clone(), |by| {
            if request.users.is_empty() {
                return Err("name at least one user".into());
            }
            Ok(Command::RemoveAccountUsers {
                account: request.account,
                users: request.users,
                by,
                now_ms: now_ms(),
            })
        })
        .await
    }

    async fn remove_replica(
        &self,
        request: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::ReplicasResponse>, Status> {
        require_leader(&self.engine, &self.config)?;
        let request = request.into_inner();
        let who = caller(request.caller)?;
        self.require_admin(&who, "change the scheduler replicas")?;
        membership::remove(&self.engine, request.id).await?;
        Ok(Response::new(membership::replicas(
            &self.engine,
            &self.config,
        )))
    }
}
