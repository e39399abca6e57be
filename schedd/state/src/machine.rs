//! The state machine and its apply function.

use std::collections::{BTreeMap, BTreeSet};

use gantry_model::names::is_plain_name;
use gantry_model::units::format_duration_ms;
use gantry_model::{JobId, JobSpec, JobState, NodeInventory, Owner};
use gantry_policies::{Claimant, PartPlan, PolicyConfig, Preemptions, none_fits};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::accounts::Accounts;
use crate::command::{
    Command, Control, DrainMode, ExitReason, GpuAsk, Outcome, PartExit, Rejection,
};
use crate::job::{Attempt, Job, Part, Requeue, RequeueCause};
use crate::node::{Drain, Node};
use crate::reservation::Reservation;
use crate::usage::Usage;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    applied_index: u64,
    /// The index of the last command that changed anything but the queue's arrivals and their
    /// starts: a scheduling plan made at or after it is still what a pass would make, give or
    /// take the jobs submitted and started since.
    changed_at: u64,
    /// Ids are handed out here, in log order, so one is never handed out twice.
    next_job_id: JobId,
    pub(crate) jobs: BTreeMap<JobId, Job>,
    pub(crate) nodes: BTreeMap<String, Node>,
    /// Pending jobs, in priority order (submit order for now).
    pub(crate) pending: BTreeSet<JobId>,
    /// Jobs with an allocation whose parts have not all ended.
    pub(crate) active: BTreeSet<JobId>,
    /// (user, idempotency key) of every keyed submit, and the job it created.
    submit_keys: BTreeMap<(String, String), JobId>,
    /// Addresses of scheduler replicas added by membership changes, by replica id.
    replicas: BTreeMap<u64, String>,
    /// Priority weights, QoS levels, backfill depth: `gantry admin config`.
    pub(crate) config: PolicyConfig,
    /// What each account has used, for fair share.
    pub(crate) usage: Usage,
    pub(crate) accounts: Accounts,
    /// Per job not yet ended, the pending jobs that depend on it: settled when it ends.
    dependents: BTreeMap<JobId, BTreeSet<JobId>>,
    /// When each account's jobs were preempted (by the scheduler or an admin), for
    /// defragmentation's disruption budget.
    pub(crate) preemptions: Preemptions,
    /// Advance reservations, by name; ended ones go when the next is created.
    pub(crate) reservations: BTreeMap<String, Reservation>,
    /// The cluster's name, drawn by its first leader (`Command::NameCluster`): what this
    /// cluster's job ids are unique within (checkpoint dirs are `<root>/<cluster>/<job>`).
    cluster: String,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine {
            applied_index: 0,
            changed_at: 0,
            next_job_id: 1,
            jobs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            pending: BTreeSet::new(),
            active: BTreeSet::new(),
            submit_keys: BTreeMap::new(),
            replicas: BTreeMap::new(),
            config: PolicyConfig::default(),
            usage: Usage::default(),
            accounts: Accounts::default(),
            dependents: BTreeMap::new(),
            preemptions: Preemptions::default(),
            reservations: BTreeMap::new(),
            cluster: String::new(),
        }
    }
}

#[derive(Debug, Error)]
#[error("cannot decode a state snapshot: {0}")]
pub struct SnapshotError(#[from] postcard::Error);

impl StateMachine {
    /// The cluster's name; empty until its first leader has named it.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// See [`StateMachine::changed_at`]'s field: the scheduler compares it with the index its
    /// plan was made at.
    pub fn changed_at(&self) -> u64 {
        self.changed_at
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    pub fn pending_jobs(&self) -> impl Iterator<Item = &Job> {
        self.pending.iter().filter_map(|id| self.jobs.get(id))
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Jobs whose part on `node` has not ended: what the node should be running.
    pub fn jobs_on(&self, node: &str) -> impl Iterator<Item = &Job> {
        self.nodes
            .get(node)
            .into_iter()
            .flat_map(|n| n.jobs.iter())
            .filter_map(|id| self.jobs.get(id))
    }

    /// Addresses of the replicas that joined by a membership change, by id (the founding
    /// members' addresses are in each replica's configuration).
    pub fn replica_addresses(&self) -> &BTreeMap<u64, String> {
        &self.replicas
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// GPUs held by running jobs per account, its sub-accounts' included.
    pub fn gpus_in_use_by_account(&self) -> BTreeMap<&str, u64> {
        let mut held: BTreeMap<&str, u64> = BTreeMap::new();
        for job in self.active.iter().filter_map(|id| self.jobs.get(id)) {
            let gpus: u64 = job
                .parts
                .iter()
                .filter(|p| p.exit.is_none())
                .map(|p| p.gpus.len() as u64)
                .sum();
            for account in self.accounts.path(&job.spec.account) {
                *held.entry(account).or_default() += gpus;
            }
        }
        held
    }

    /// The policy settings in force.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Place of a pending job in the queue, 1 for the next one.
    pub fn queue_position(&self, id: JobId) -> Option<usize> {
        let held = |j: &JobId| self.jobs.get(j).is_some_and(|job| job.held_by.is_some());
        if held(&id) {
            // Out of the queue until released.
            return None;
        }
        self.pending
            .iter()
            .filter(|j| !held(j))
            .position(|j| *j == id)
            .map(|p| p + 1)
    }

    /// Why a job could never run on the nodes known now, if it could not.
    pub fn never_fits(&self, spec: &JobSpec) -> Option<String> {
        none_fits(&self.node_views(), &spec.shapes())
    }

    pub fn to_snapshot(&self) -> Vec<u8> {
        // Serializing plain owned data into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<StateMachine, SnapshotError> {
        Ok(postcard::from_bytes(bytes)?)
    }

    /// Applies the command at log `index`. Entries at or below the applied index were
    /// applied already (a replay overlap) and change nothing.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        if index <= self.applied_index {
            return Outcome::Ignored(format!("entry {index} was applied already"));
        }
        self.applied_index = index;
        let outcome = self.apply_command(index, command);
        let arrival = matches!(
            command,
            Command::Submit { .. }
                | Command::Allocate { .. }
                | Command::JobStarted { .. }
                // Victim order may change; the plan it affects is at most a second old.
                | Command::CheckpointDone { .. }
                | Command::ReplicaAddress { .. }
        );
        if !arrival && !matches!(outcome, Outcome::Ignored(_) | Outcome::Rejected(_)) {
            self.changed_at = index;
        }
        outcome
    }

    fn apply_command(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::Submit {
                owner,
                spec,
                key,
                now_ms,
            } => self.submit(owner, spec, key.as_deref(), *now_ms),
            Command::Cancel {
                jobs,
                by,
                admin,
                now_ms,
            } => self.cancel(jobs, by, *admin, *now_ms),
            Command::Allocate {
                job,
                attempt,
                shape,
                parts,
                token,
                now_ms,
            } => {
                let outcome = self.allocate(index, *job, *attempt, *shape, parts, *now_ms);
                if outcome == Outcome::Applied
                    && let Some(job) = self.jobs.get_mut(job)
                {
                    job.token = token.clone();
                }
                outcome
            }
            Command::CheckpointDone {
                job,
                attempt,
                progress,
                work_done,
                now_ms,
            } => self.checkpoint_done(*job, *attempt, *progress, *work_done, *now_ms),
            Command::Control {
                jobs,
                action,
                by,
                admin,
                now_ms,
            } => self.control(jobs, *action, by, *admin, *now_ms),
            Command::RegisterNode {
                name,
                identity,
                inventory,
                running,
                finished,
                failed_gpus,
                now_ms,
            } => {
                let registration = Registration {
                    name,
                    identity,
                    inventory,
                    running,
                    finished,
                    failed_gpus,
                };
                self.register_node(&registration, *now_ms)
            }
            Command::ReplaceNode { name, .. } => match self.nodes.get_mut(name) {
                // Not under a daemon that may still be there: only once it is down.
                Some(node) if node.up => Outcome::Rejected(Rejection::NodeUp(name.clone())),
                Some(node) => {
                    node.identity.clear();
                    Outcome::Applied
                }
                None => Outcome::Rejected(Rejection::UnknownNode(name.clone())),
            },
            Command::NameCluster { name } => {
                if !self.cluster.is_empty() {
                    return Outcome::Ignored(format!(
                        "the cluster is named {} already",
                        self.cluster
                    ));
                }
                if name.is_empty()
                    || name.len() > 64
                    || !name.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Outcome::Rejected(Rejection::BadCluster(name.clone()));
                }
                self.cluster = name.clone();
                Outcome::Applied
            }
            Command::GpuFailed {
                node,
                gpu,
                reason,
                now_ms,
            } => self.gpu_failed(node, *gpu, reason, *now_ms),
            Command::JobStarted {
                job, attempt, node, ..
            } => self.job_started(*job, *attempt, node),
            Command::JobExited {
                job,
                attempt,
                node,
                exit,
                now_ms,
            } => self.job_exited(*job, *attempt, node, exit, *now_ms),
            Command::NodeLost {
                node,
                reason,
                now_ms,
            } => self.node_lost(node, reason, *now_ms),
            Command::Drain {
                nodes,
                reason,
                by,
                mode,
                now_ms,
            } => self.drain(nodes, reason, by, *mode, *now_ms),
            Command::DrainDeadline { nodes, now_ms } => self.drain_deadline(nodes, *now_ms),
            Command::Resume { nodes, .. } => self.resume(nodes),
            Command::ReplicaAddress { id, address } => {
                match address {
                    Some(address) => self.replicas.insert(*id, address.clone()),
                    None => self.replicas.remove(id),
                };
                Outcome::Applied
            }
            Command::SetConfig { key, value, .. } => {
                // On a copy: a refused setting changes nothing.
                let mut config = self.config.clone();
                match config.set(key, value) {
                    Ok(()) => {
                        self.config = config;
                        Outcome::Applied
                    }
                    Err(e) => Outcome::Rejected(e.into()),
                }
            }
            Command::Requeue {
                job,
                attempt,
                for_job,
                for_place,
                reason,
                moved_to,
                now_ms,
            } => {
                let stop = Stop {
                    job: *job,
                    attempt: *attempt,
                    for_job: *for_job,
                    for_place,
                };
                self.requeue(index, stop, reason, moved_to.as_ref(), *now_ms)
            }
            Command::CreateReservation {
                reservation,
                gpus,
                force,
                now_ms,
            } => self.create_reservation(reservation, gpus.as_ref(), *force, *now_ms),
            Command::UpdateReservation {
                reservation,
                force,
                now_ms,
            } => self.update_reservation(reservation, *force, *now_ms),
            Command::ReservationStarted { name, now_ms } => self.reservation_started(name, *now_ms),
            Command::DeleteReservation { name, .. } => match self.reservations.remove(name) {
                Some(_) => Outcome::Applied,
                None => Outcome::Rejected(Rejection::UnknownReservation(name.clone())),
            },
            Command::AddAccount { account, .. } => {
                let added = self
                    .known_qos(account.qos.as_ref())
                    .and_then(|()| Ok(self.accounts.add(account)?));
                match added {
                    Ok(()) => Outcome::Applied,
                    Err(refusal) => Outcome::Rejected(refusal),
                }
            }
            Command::SetAccount { name, change, .. } => {
                let changed = self
                    .known_qos(change.qos.as_ref().and_then(Option::as_ref))
                    .and_then(|()| Ok(self.accounts.set(name, change)?));
                match changed {
                    Ok(()) => Outcome::Applied,
                    Err(refusal) => Outcome::Rejected(refusal),
                }
            }
            Command::RemoveAccount { name, .. } => {
                // Re-created under the same name, it would get these rights back silently.
                let references: Vec<String> = self
                    .reservations
                    .values()
                    .filter(|r| r.accounts.contains(name))
                    .map(|r| format!("reservation {}", r.name))
                    .chain(
                        self.config
                            .pools
                            .iter()
                            .filter(|(_, limits)| limits.accounts.contains(name))
                            .map(|(pool, _)| format!("pool {pool}")),
                    )
                    .collect();
                if !references.is_empty() {
                    return Outcome::Rejected(Rejection::AccountNamed {
                        account: name.clone(),
                        by: references.join(", "),
                    });
                }
                let live: Vec<String> = self
                    .pending
                    .iter()
                    .chain(&self.active)
                    .filter(|id| self.jobs.get(id).is_some_and(|j| &j.spec.account == name))
                    .map(JobId::to_string)
                    .collect();
                if !live.is_empty() {
                    return Outcome::Rejected(Rejection::AccountInUse {
                        account: name.clone(),
                        jobs: live.join(", "),
                    });
                }
                match self.accounts.remove(name) {
                    Ok(()) => Outcome::Applied,
                    Err(e) => Outcome::Rejected(e.into()),
                }
            }
            Command::AddAccountUsers { account, users, .. } => {
                match self.accounts.add_users(account, users) {
                    Ok(()) => Outcome::Applied,
                    Err(e) => Outcome::Rejected(e.into()),
                }
            }
            Command::RemoveAccountUsers { account, users, .. } => {
                match self.accounts.remove_users(account, users) {
                    Ok(()) => Outcome::Applied,
                    Err(e) => Outcome::Rejected(e.into()),
                }
            }
        }
    }

    /// Refuses a grant naming a QoS level the configuration does not have.
    fn known_qos(&self, qos: Option<&BTreeSet<String>>) -> Result<(), Rejection> {
        match qos
            .into_iter()
            .flatten()
            .find(|q| self.config.qos_priority(q).is_none())
        {
            Some(unknown) => Err(Rejection::UnknownQos {
                qos: unknown.clone(),
                known: self.config.qos_names().join(", "),
            }),
            None => Ok(()),
        }
    }

    fn requeue(
        &mut self,
        index: u64,
        Stop {
            job: id,
            attempt,
            for_job,
            for_place,
        }: Stop,
        reason: &str,
        moved_to: Option<&Vec<PartPlan>>,
        now_ms: u64,
    ) -> Outcome {
        match self.jobs.get_mut(&id) {
            Some(job)
                if job.state == JobState::Running && job.attempt == attempt && !job.stopping() =>
            {
                job.requeue = Some(Requeue {
                    why: reason.to_string(),
                    cause: RequeueCause::Preempted,
                });
                job.moved_to = moved_to.cloned();
                let account = job.spec.account.clone();
                self.preemptions.note(&account, now_ms);
                if let Some(waiting) = self
                    .jobs
                    .get_mut(&for_job)
                    .filter(|w| w.state == JobState::Pending && w.held_by.is_none())
                {
                    // The latest pass's place; the first claim's rank.
                    waiting.claim = Some(Claimant {
                        since: waiting.claim.as_ref().map_or(index, |c| c.since),
                        place: for_place.to_vec(),
                    });
                }
                Outcome::Applied
            }
            _ => Outcome::Ignored(format!("job {id}.{attempt} is not running unstopped")),
        }
    }

    fn submit(&mut self, owner: &Owner, spec: &JobSpec, key: Option<&str>, now_ms: u64) -> Outcome {
        let key = key.map(|k| (owner.user.clone(), k.to_string()));
        if let Some(id) = key.as_ref().and_then(|k| self.submit_keys.get(k)) {
            return Outcome::Submitted(*id);
        }
        if let Err(e) = spec.validate() {
            return Outcome::Rejected(e.into());
        }
        // The default pool is the one of the time of submission.
        let mut spec = spec.clone();
        spec.pool
            .get_or_insert_with(|| self.config.default_pool.clone());
        if let Err(e) = self.accounts.admit(&owner.user, &spec.account) {
            return Outcome::Rejected(e.into());
        }
        if let Err(refusal) = self.apply_pool_limits(&mut spec) {
            return Outcome::Rejected(refusal);
        }
        // Again with the pool's default time limit: a checkpoint lead must fit in it.
        if let Err(e) = spec.validate() {
            return Outcome::Rejected(e.into());
        }
        if let Some(name) = &spec.reservation
            && let Err(refusal) =
                self.admit_to_reservation(name, &owner.user, &spec.account, now_ms)
        {
            return Outcome::Rejected(refusal);
        }
        let spec = &spec;
        if self.config.qos_priority(&spec.qos).is_none() {
            return Outcome::Rejected(Rejection::UnknownQos {
                qos: spec.qos.clone(),
                known: self.config.qos_names().join(", "),
            });
        }
        if spec.deadline_ms.is_some_and(|deadline| deadline <= now_ms) {
            return Outcome::Rejected(Rejection::DeadlinePassed);
        }
        // A QoS level or a deadline raises a job's priority and may preempt others: only as
        // the job's account was granted.
        if let Err(e) = self.accounts.admit_asks(
            &spec.account,
            &spec.qos,
            spec.deadline_ms.is_some(),
            &self.config,
        ) {
            return Outcome::Rejected(e.into());
        }
        if let Some(why) = self.never_fits(spec) {
            return Outcome::Rejected(Rejection::Unsatisfiable(why));
        }
        for dependency in &spec.dependencies {
            match self.jobs.get(&dependency.job) {
                None => return Outcome::Rejected(Rejection::UnknownJob(dependency.job)),
                Some(on) if on.state.is_terminal() && !dependency.condition.met_by(on.state) => {
                    return Outcome::Rejected(Rejection::DependencyNeverMet {
                        dependency: *dependency,
                        ended: on.state,
                    });
                }
                Some(_) => {}
            }
        }
        let id = self.next_job_id;
        self.next_job_id += 1;
        if let Some(key) = key {
            self.submit_keys.insert(key, id);
        }
        self.jobs.insert(
            id,
            Job {
                id,
                owner: owner.clone(),
                spec: spec.clone(),
                state: JobState::Pending,
                reason: String::new(),
                exit_code: None,
                signal: None,
                submit_time_ms: now_ms,
                start_time_ms: None,
                end_time_ms: None,
                attempt: 0,
                epoch: 0,
                shape: 0,
                requeue: None,
                parts: vec![],
                cancel_requested: false,
                first_failure: None,
                attempts: Vec::new(),
                held_by: None,
                token: String::new(),
                last_checkpoint_ms: None,
                checkpoint_progress: None,
                automatic_requeues: 0,
                claim: None,
                work_done: false,
                moved_to: None,
            },
        );
        for dependency in &spec.dependencies {
            if self
                .jobs
                .get(&dependency.job)
                .is_some_and(|on| !on.state.is_terminal())
            {
                self.dependents
                    .entry(dependency.job)
                    .or_default()
                    .insert(id);
            }
        }
        self.pending.insert(id);
        Outcome::Submitted(id)
    }

    fn cancel(&mut self, ids: &[JobId], by: &str, admin: bool, now_ms: u64) -> Outcome {
        // Check every job first: a request naming one bad id changes nothing.
        for id in ids {
            if let Err(refusal) = self.may_touch(*id, by, admin, "cancel") {
                return Outcome::Rejected(refusal);
            }
        }
        let (mut cancelled, mut signalled) = (vec![], vec![]);
        for id in ids {
            let Some(job) = self.jobs.get_mut(id) else {
                continue;
            };
            match job.state {
                // Cancelled a moment ago with a job it depended on.
                state if state.is_terminal() => cancelled.push(*id),
                JobState::Pending => {
                    job.state = JobState::Cancelled;
                    job.reason = format!("cancelled by {by}");
                    job.end_time_ms = Some(now_ms);
                    self.pending.remove(id);
                    cancelled.push(*id);
                    self.settle_dependents(*id, now_ms);
                }
                _ => {
                    if !job.cancel_requested {
                        job.cancel_requested = true;
                        job.reason = format!("cancelled by {by}");
                    }
                    signalled.push(*id);
                }
            }
        }
        Outcome::Cancelled {
            cancelled,
            signalled,
        }
    }

    /// Job `id`, when `by` may act on it: it exists, has not ended, and is theirs (or `by` is
    /// an admin).
    /// Whether `by` may `what` (cancel, hold, ...) job `id`: its owner or an admin, while it
    /// has not ended.
    fn may_touch(
        &self,
        id: JobId,
        by: &str,
        admin: bool,
        what: &'static str,
    ) -> Result<&Job, Rejection> {
        let job = self.jobs.get(&id).ok_or(Rejection::UnknownJob(id))?;
        if job.state.is_terminal() {
            return Err(Rejection::AlreadyEnded(id, job.state));
        }
        if !admin && job.owner.user != by {
            return Err(Rejection::NotOwner {
                job: id,
                owner: job.owner.user.clone(),
                what,
            });
        }
        Ok(job)
    }

    /// Whether `user`'s job of `account` may run in reservation `name`, which has not ended.
    fn admit_to_reservation(
        &self,
        name: &str,
        user: &str,
        account: &str,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        let r = self
            .reservations
            .get(name)
            .filter(|r| r.end_ms > now_ms)
            .ok_or_else(|| Rejection::UnknownReservation(name.to_string()))?;
        let in_account = self
            .accounts
            .path(account)
            .iter()
            .any(|a| r.accounts.iter().any(|m| m == a));
        if r.users.iter().any(|u| u == user) || in_account {
            return Ok(());
        }
        let members: Vec<String> = r
            .users
            .iter()
            .map(|u| format!("user {u}"))
            .chain(r.accounts.iter().map(|a| format!("account {a}")))
            .collect();
        if members.is_empty() {
            return Err(Rejection::MaintenanceWindow(name.to_string()));
        }
        Err(Rejection::NotInReservation {
            reservation: name.to_string(),
            user: user.to_string(),
            members: members.join(", "),
        })
    }

    /// A start against the reservations: a member only inside its own, in its window; any
    /// other job on no reserved node whose window its time limit reaches.
    fn check_reservations(
        &self,
        id: JobId,
        shape: u32,
        parts: &[PartPlan],
        now_ms: u64,
    ) -> Result<(), String> {
        let Some(job) = self.jobs.get(&id) else {
            return Ok(());
        };
        let end = job
            .spec
            .time_limit_for(shape)
            .map(|limit| now_ms.saturating_add(limit));
        if let Some(name) = &job.spec.reservation {
            let r = self
                .reservations
                .get(name)
                .ok_or_else(|| format!("reservation {name} does not exist"))?;
            if now_ms < r.start_ms || end.is_none_or(|end| end > r.end_ms) {
                return Err(format!(
                    "the job does not fit in reservation {name}'s window"
                ));
            }
            if let Some(p) = parts.iter().find(|p| !r.covers(&p.node, &p.gpus)) {
                return Err(format!(
                    "GPUs {:?} of node {} are not in reservation {name}",
                    p.gpus, p.node
                ));
            }
            return Ok(());
        }
        for r in self
            .reservations
            .values()
            .filter(|r| r.overlaps(now_ms, end))
        {
            if let Some(p) = parts.iter().find(|p| r.touches(&p.node, &p.gpus)) {
                return Err(format!(
                    "node {} is held by reservation {} in the job's time",
                    p.node, r.name
                ));
            }
        }
        Ok(())
    }

    fn create_reservation(
        &mut self,
        r: &Reservation,
        gpus: Option<&GpuAsk>,
        force: bool,
        now_ms: u64,
    ) -> Outcome {
        self.reservations.retain(|_, old| old.end_ms > now_ms);
        if self.reservations.contains_key(&r.name) {
            return Outcome::Rejected(Rejection::ReservationExists(r.name.clone()));
        }
        let mut r = r.clone();
        if let Some(ask) = gpus {
            match self.pick_gpus(&r, ask, force, now_ms) {
                Ok(held) => {
                    r.nodes = held.keys().cloned().collect();
                    r.gpus = held;
                }
                Err(why) => return Outcome::Rejected(Rejection::BadReservation(why)),
            }
        }
        if let Err(refusal) = self.check_reservation(&r, force, now_ms) {
            return Outcome::Rejected(refusal);
        }
        self.reservations.insert(r.name.clone(), r);
        Outcome::Applied
    }

    /// `ask.count` GPUs for `r`'s window, from nodes that take work (of `ask.pool`), in name
    /// order: none another reservation holds then, nor (unless `force`) one a running job may
    /// still hold when it starts.
    fn pick_gpus(
        &self,
        r: &Reservation,
        ask: &GpuAsk,
        force: bool,
        now_ms: u64,
    ) -> Result<BTreeMap<String, Vec<u32>>, String> {
        let others: Vec<&Reservation> = self
            .reservations
            .values()
            .filter(|o| o.overlaps(r.start_ms, Some(r.end_ms)))
            .collect();
        let mut held = BTreeMap::new();
        let mut left = ask.count;
        let candidates = self.nodes.values().filter(|n| {
            n.unavailable_reason().is_none()
                && ask.pool.as_ref().is_none_or(|p| *p == n.inventory.pool)
        });
        for node in candidates {
            if left == 0 {
                break;
            }
            let busy: BTreeSet<u32> = node
                .jobs
                .iter()
                .filter_map(|id| self.jobs.get(id))
                .filter(|j| {
                    let end = j
                        .spec
                        .time_limit_for(j.shape)
                        .map(|limit| j.start_time_ms.unwrap_or(now_ms).saturating_add(limit));
                    !force && end.is_none_or(|end| end > r.start_ms)
                })
                .filter_map(|j| j.part_on(&node.name))
                .flat_map(|p| p.gpus.iter().copied())
                .collect();
            let free: Vec<u32> = node
                .usable_gpus()
                .iter()
                .map(|g| g.index)
                .filter(|g| !busy.contains(g))
                .filter(|g| !others.iter().any(|o| o.touches(&node.name, &[*g])))
                .take(left as usize)
                .collect();
            if !free.is_empty() {
                left -= u32::try_from(free.len()).unwrap_or(left);
                held.insert(node.name.clone(), free);
            }
        }
        if left > 0 {
            let pool = ask
                .pool
                .as_ref()
                .map(|p| format!(" of pool {p}"))
                .unwrap_or_default();
            return Err(format!(
                "only {} GPU(s){pool} can be held for that window (wanted {}){}",
                ask.count - left,
                ask.count,
                if force {
                    ""
                } else {
                    "; --force counts those of running jobs too"
                }
            ));
        }
        Ok(held)
    }

    fn update_reservation(&mut self, r: &Reservation, force: bool, now_ms: u64) -> Outcome {
        let Some(old) = self.reservations.get(&r.name).filter(|o| o.end_ms > now_ms) else {
            return Outcome::Rejected(Rejection::UnknownReservation(r.name.clone()));
        };
        // A maintenance window that has opened keeps having opened.
        let started = old.started && r.start_ms <= now_ms;
        let old = old.clone();
        if let Err(refusal) = self.check_reservation(r, force, now_ms) {
            return Outcome::Rejected(refusal);
        }
        let mut new = r.clone();
        new.started = started;
        new.created_by = old.created_by.clone();
        self.reservations.insert(r.name.clone(), new);
        Outcome::Applied
    }

    /// `r` against the cluster and the other reservations (one of its own name aside).
    fn check_reservation(
        &self,
        r: &Reservation,
        force: bool,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        let bad = |why: String| Err(Rejection::BadReservation(why));
        if let Err(why) = r.check() {
            return bad(why);
        }
        if r.end_ms <= now_ms {
            return bad("the reservation would have ended already".into());
        }
        if let Some(unknown) = r.nodes.iter().find(|n| !self.nodes.contains_key(*n)) {
            return Err(Rejection::UnknownNode(unknown.clone()));
        }
        let window = (r.start_ms, Some(r.end_ms));
        for other in self.reservations.values().filter(|o| o.name != r.name) {
            if other.overlaps(window.0, window.1)
                && let Some(node) = r.clash(other)
            {
                return bad(format!(
                    "node {node} is in reservation {} at that time",
                    other.name
                ));
            }
        }
        if !force {
            for name in &r.nodes {
                let running = self.nodes.get(name).into_iter().flat_map(|n| &n.jobs);
                for id in running {
                    // Its own members' jobs run there by right.
                    let Some(job) = self.jobs.get(id).filter(|j| {
                        j.spec.reservation.as_deref() != Some(r.name.as_str())
                            && j.part_on(name).is_some_and(|p| r.touches(name, &p.gpus))
                    }) else {
                        continue;
                    };
                    let end = job
                        .spec
                        .time_limit_for(job.shape)
                        .map(|limit| job.start_time_ms.unwrap_or(now_ms).saturating_add(limit));
                    if end.is_none_or(|end| end > r.start_ms) {
                        return bad(format!(
                            "job {id} on node {name} may still run when the reservation starts; \
                             --force creates it anyway (running jobs finish, nothing new starts there)"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn reservation_started(&mut self, name: &str, now_ms: u64) -> Outcome {
        let Some(r) = self.reservations.get_mut(name) else {
            return Outcome::Ignored(format!("reservation {name} does not exist"));
        };
        if !r.maintenance || r.started || now_ms < r.start_ms {
            return Outcome::Ignored(format!("nothing to do for reservation {name} yet"));
        }
        r.started = true;
        let nodes = r.nodes.clone();
        for node in nodes {
            self.requeue_jobs_on(
                &node,
                &format!("maintenance reservation {name} starts on node {node}"),
            );
        }
        Outcome::Applied
    }

    /// Reservations that have not ended by `now_ms`, by name.
    pub fn reservations(&self, now_ms: u64) -> impl Iterator<Item = &Reservation> {
        self.reservations
            .values()
            .filter(move |r| r.end_ms > now_ms)
    }

    /// The job's pool's limits: its accounts may run there; a job without a time limit gets
    /// the pool's default (or its maximum); none may ask for more than the maximum.
    fn apply_pool_limits(&self, spec: &mut JobSpec) -> Result<(), Rejection> {
        let pool = spec.pool.clone().unwrap_or_default();
        let Some(limits) = self.config.pools.get(&pool) else {
            return Ok(());
        };
        let allowed = |a: &&str| limits.accounts.iter().any(|l| l == a);
        if !limits.accounts.is_empty() && !self.accounts.path(&spec.account).iter().any(allowed) {
            return Err(Rejection::PoolAccount {
                pool,
                account: spec.account.clone(),
                allowed: limits.accounts.join(", "),
            });
        }
        if spec.time_limit_ms.is_none() {
            spec.time_limit_ms = limits.default_time_ms.or(limits.max_time_ms);
        }
        if let (Some(asked), Some(max)) = (spec.time_limit_ms, limits.max_time_ms)
            && asked > max
        {
            return Err(Rejection::PoolTime {
                pool,
                asked: format_duration_ms(asked),
                max: format_duration_ms(max),
            });
        }
        Ok(())
    }

    fn control(
        &mut self,
        ids: &[JobId],
        action: Control,
        by: &str,
        admin: bool,
        now_ms: u64,
    ) -> Outcome {
        if action == Control::Preempt && !admin {
            return Outcome::Rejected(Rejection::AdminOnly("preempt jobs"));
        }
        // Check every job first: a request naming one bad id changes nothing.
        for id in ids {
            let job = match self.may_touch(*id, by, admin, action.as_str()) {
                Ok(job) => job,
                Err(refusal) => return Outcome::Rejected(refusal),
            };
            let stopped = if action == Control::Preempt {
                "preempted"
            } else {
                "requeued"
            };
            let refusal = match action {
                Control::Hold if job.state != JobState::Pending => Some(Rejection::NotPending {
                    id: *id,
                    state: job.state,
                }),
                Control::Release if job.held_by.is_none() => Some(Rejection::NotHeld(*id)),
                Control::Requeue | Control::Preempt if job.state != JobState::Running => {
                    Some(Rejection::NotRunning {
                        id: *id,
                        state: job.state,
                        what: stopped,
                    })
                }
                Control::Requeue | Control::Preempt if job.stopping() => {
                    Some(Rejection::Stopping(*id))
                }
                _ => None,
            };
            if let Some(refusal) = refusal {
                return Outcome::Rejected(refusal);
            }
        }
        for id in ids {
            let Some(job) = self.jobs.get_mut(id) else {
                continue;
            };
            match action {
                Control::Hold => {
                    job.held_by = Some(by.to_string());
                    job.reason = format!("held by {by}");
                    // Held, it gives up what was stopped for it.
                    job.claim = None;
                }
                Control::Release => {
                    job.held_by = None;
                    job.reason = String::new();
                }
                Control::Requeue => {
                    job.requeue = Some(Requeue {
                        why: format!("by {by}"),
                        cause: RequeueCause::ByHand,
                    });
                }
                Control::Preempt => {
                    job.requeue = Some(Requeue {
                        why: format!("preempted by {by}"),
                        cause: RequeueCause::Preempted,
                    });
                    let account = job.spec.account.clone();
                    self.preemptions.note(&account, now_ms);
                }
            }
        }
        Outcome::Applied
    }

    fn allocate(
        &mut self,
        index: u64,
        id: JobId,
        attempt: u32,
        shape: u32,
        parts: &[PartPlan],
        now_ms: u64,
    ) -> Outcome {
        if let Err(why) = self
            .check_allocation(id, attempt, shape, parts)
            .and_then(|()| self.check_reservations(id, shape, parts, now_ms))
        {
            return Outcome::Rejected(Rejection::Stale { job: id, why });
        }
        for plan in parts {
            if let Some(node) = self.nodes.get_mut(&plan.node) {
                let part = plan_part(plan);
                node.allocated = node.allocated.saturating_add(&part.resources());
                node.used_gpus.extend(plan.gpus.iter().copied());
                node.jobs.insert(id);
            }
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.state = JobState::Running;
            job.start_time_ms = Some(now_ms);
            job.moved_to = None;
            job.claim = None;
            job.work_done = false;
            job.epoch = index;
            job.shape = shape;
            job.parts = parts.iter().map(plan_part).collect();
        }
        self.pending.remove(&id);
        self.active.insert(id);
        Outcome::Applied
    }

    /// Of `ids`, the jobs whose checkpoint dirs may be removed at `now_ms`: ended at least
    /// `checkpoint.keep` ago, or no longer known though their id was handed out. A job that
    /// has not ended, or an id this state never gave (another cluster's dir on shared
    /// storage), keeps its dir.
    pub fn checkpoints_to_remove(&self, ids: &[JobId], now_ms: u64) -> Vec<JobId> {
        let Some(keep) = self.config.checkpoint_keep_ms else {
            return Vec::new();
        };
        ids.iter()
            .copied()
            .filter(|id| match self.jobs.get(id) {
                Some(job) => {
                    let ended = job.end_time_ms.unwrap_or(job.submit_time_ms);
                    job.state.is_terminal() && ended.saturating_add(keep) <= now_ms
                }
                None => *id < self.next_job_id,
            })
            .collect()
    }

    /// Verifies a scheduling decision against the state at its index.
    fn check_allocation(
        &self,
        id: JobId,
        attempt: u32,
        shape: u32,
        parts: &[PartPlan],
    ) -> Result<(), String> {
        let job = self.jobs.get(&id).ok_or("the job does not exist")?;
        if job.state != JobState::Pending || job.attempt != attempt {
            return Err(format!(
                "the job is {} (attempt {})",
                job.state, job.attempt
            ));
        }
        let spec = job
            .spec
            .shape(shape)
            .ok_or_else(|| format!("the job has no alternative {shape}"))?;
        if parts.len() != spec.num_nodes as usize {
            return Err(format!(
                "{} nodes planned for a {}-node job",
                parts.len(),
                spec.num_nodes
            ));
        }
        let distinct: BTreeSet<&str> = parts.iter().map(|p| p.node.as_str()).collect();
        if distinct.len() != parts.len() {
            return Err("a node appears twice".into());
        }
        for plan in parts {
            let node = self
                .nodes
                .get(&plan.node)
                .ok_or_else(|| format!("node {} is unknown", plan.node))?;
            if let Some(why) = node.unavailable_reason() {
                return Err(format!("node {} is {why}", plan.node));
            }
            let gpus: BTreeSet<u32> = plan.gpus.iter().copied().collect();
            if gpus.len() != plan.gpus.len() || plan.gpus.len() != spec.per_node.gpus as usize {
                return Err(format!(
                    "GPUs {:?} on {} do not match the request",
                    plan.gpus, plan.node
                ));
            }
            if plan.cpus != spec.per_node.cpus || plan.mem_mib != spec.per_node.mem_mib {
                return Err(format!(
                    "CPUs or memory on {} do not match the request",
                    plan.node
                ));
            }
            for g in &plan.gpus {
                let gpu = node
                    .inventory
                    .gpus
                    .iter()
                    .find(|x| x.index == *g)
                    .ok_or_else(|| format!("node {} has no GPU {g}", plan.node))?;
                if !spec.takes(gpu) {
                    return Err(format!(
                        "GPU {g} on {} is a {}, not a {}",
                        plan.node,
                        gpu.model,
                        spec.gpu_model.as_deref().unwrap_or("?")
                    ));
                }
            }
            if let Some(g) = plan.gpus.iter().find(|g| node.used_gpus.contains(g)) {
                return Err(format!("GPU {g} on {} is in use", plan.node));
            }
            if let Some(g) = plan.gpus.iter().find(|g| node.failed_gpus.contains_key(g)) {
                return Err(format!("GPU {g} on {} has failed", plan.node));
            }
            if !spec.per_node.fits_in(&node.free()) {
                return Err(format!(
                    "node {} has not enough free CPUs or memory",
                    plan.node
                ));
            }
        }
        Ok(())
    }

    fn register_node(&mut self, registration: &Registration, now_ms: u64) -> Outcome {
        let Registration {
            name,
            identity,
            inventory,
            running,
            finished,
            failed_gpus,
        } = *registration;
        if name.is_empty()
            || name.len() > 253
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Outcome::Rejected(Rejection::BadRegistration(format!(
                "node name {name:?} is invalid"
            )));
        }
        let indices: BTreeSet<u32> = inventory.gpus.iter().map(|g| g.index).collect();
        if indices.len() != inventory.gpus.len() {
            return Outcome::Rejected(Rejection::BadRegistration(
                "two GPUs have the same index".into(),
            ));
        }
        if inventory.cpus == 0 || inventory.mem_mib == 0 {
            return Outcome::Rejected(Rejection::BadRegistration(
                "a node needs at least 1 CPU and some memory".into(),
            ));
        }
        let names = std::iter::once(&inventory.pool).chain(&inventory.labels);
        if let Some(bad) = names.into_iter().find(|n| !is_plain_name(n)) {
            return Outcome::Rejected(Rejection::BadRegistration(format!(
                "pool or label {bad:?} is not a name: 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if let Some((gpu, _)) = failed_gpus.iter().find(|(g, _)| !indices.contains(g)) {
            return Outcome::Rejected(Rejection::BadRegistration(format!(
                "failing GPU {gpu} is not in the inventory"
            )));
        }
        if identity.is_empty() {
            return Outcome::Rejected(Rejection::BadRegistration(
                "the node daemon names no identity (an old version: upgrade it)".into(),
            ));
        }
        if let Some(held) = self
            .nodes
            .get(name)
            .map(|n| &n.identity)
            .filter(|held| !held.is_empty() && held.as_str() != identity)
        {
            return Outcome::Rejected(Rejection::NodeInUse {
                name: name.to_string(),
                held: short_identity(held),
                asking: short_identity(identity),
            });
        }
        // What ended while the daemon was away is recorded before it is reconciled.
        for (id, attempt, exit) in finished {
            if self.live_part(*id, *attempt, name).is_some() {
                self.end_part(*id, name, exit, now_ms);
            }
        }
        let node = self
            .nodes
            .entry(name.to_string())
            .or_insert_with(|| Node::new(name.to_string(), inventory.clone(), now_ms));
        node.inventory = inventory.clone();
        node.identity = identity.to_string();
        node.up = true;
        node.down_reason = None;
        node.registered_time_ms = now_ms;
        node.failed_gpus = failed_gpus.iter().cloned().collect();
        // Reconcile: a part the node had started but no longer runs is lost; a part not yet
        // started is left alone (it is pushed to the node again).
        let running: BTreeSet<(JobId, u32)> = running.iter().copied().collect();
        let assigned: Vec<JobId> = self.jobs_on(name).map(|j| j.id).collect();
        for id in assigned {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let key = (id, job.attempt);
            let Some(part) = job
                .parts
                .iter_mut()
                .find(|p| p.node == name && p.exit.is_none())
            else {
                continue;
            };
            if running.contains(&key) {
                part.started = true;
            } else if part.started {
                let lost = PartExit {
                    reason: ExitReason::Lost,
                    exit_code: None,
                    signal: None,
                    message: format!("node {name} restarted without it"),
                    after_time_limit_warning: false,
                };
                self.end_part(id, name, &lost, now_ms);
            }
        }
        Outcome::Applied
    }

    fn gpu_failed(&mut self, name: &str, gpu: u32, reason: &str, now_ms: u64) -> Outcome {
        let Some(node) = self.nodes.get_mut(name) else {
            return Outcome::Rejected(Rejection::UnknownNode(name.to_string()));
        };
        if !node.inventory.gpus.iter().any(|g| g.index == gpu) {
            return Outcome::Rejected(Rejection::BadRegistration(format!(
                "node {name} has no GPU {gpu}"
            )));
        }
        if node.failed_gpus.contains_key(&gpu) {
            return Outcome::Ignored(format!("GPU {gpu} on {name} is known to have failed"));
        }
        node.failed_gpus.insert(gpu, reason.to_string());
        let why = format!("GPU {gpu} on node {name} failed: {reason}");
        if self.config.drain_on_gpu_failure && node.drain.is_none() {
            node.drain = Some(Drain {
                reason: format!("GPU {gpu} failed: {reason}"),
                by: "gantry".to_string(),
                since_ms: now_ms,
                deadline_ms: None,
            });
        }
        let on_it: Vec<JobId> = node.jobs.iter().copied().collect();
        let max_requeues = self.config.max_requeues;
        for id in on_it {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let holds_it = job
                .parts
                .iter()
                .any(|p| p.node == name && p.exit.is_none() && p.gpus.contains(&gpu));
            if !holds_it || job.stopping() {
                continue;
            }
            // As if the node had failed under the job, but the job is stopped, not lost.
            if job.spec.requeue.on_node_failure && job.automatic_requeues < max_requeues {
                job.requeue = Some(Requeue {
                    why: why.clone(),
                    cause: RequeueCause::NodeFail,
                });
            } else {
                let failed = PartExit {
                    reason: ExitReason::Lost,
                    exit_code: None,
                    signal: None,
                    message: why.clone(),
                    after_time_limit_warning: false,
                };
                job.first_failure = Some((name.to_string(), failed));
            }
        }
        Outcome::Applied
    }

    fn checkpoint_done(
        &mut self,
        id: JobId,
        attempt: u32,
        progress: Option<u64>,
        work_done: bool,
        now_ms: u64,
    ) -> Outcome {
        match self.jobs.get_mut(&id) {
            Some(job) if job.state == JobState::Running && job.attempt == attempt => {
                job.last_checkpoint_ms = Some(now_ms);
                job.checkpoint_progress = progress.or(job.checkpoint_progress);
                job.work_done |= work_done;
                Outcome::Applied
            }
            _ => Outcome::Ignored(format!("job {id}.{attempt} is not running")),
        }
    }

    /// Whether `token` is the secret of job `id`'s run `attempt`, which is running.
    pub fn token_matches(&self, id: JobId, attempt: u32, token: &str) -> Result<(), Rejection> {
        let job = self.jobs.get(&id).ok_or(Rejection::UnknownJob(id))?;
        if job.state != JobState::Running || job.attempt != attempt {
            return Err(Rejection::Stale {
                job: id,
                why: format!("run {attempt} is not running"),
            });
        }
        if job.token.is_empty() || job.token != token {
            return Err(Rejection::BadToken(id));
        }
        Ok(())
    }

    fn job_started(&mut self, id: JobId, attempt: u32, node: &str) -> Outcome {
        let Some(part) = self.live_part(id, attempt, node) else {
            return Outcome::Ignored(format!("job {id}.{attempt} does not run on {node}"));
        };
        part.started = true;
        Outcome::Applied
    }

    fn job_exited(
        &mut self,
        id: JobId,
        attempt: u32,
        node: &str,
        exit: &PartExit,
        now_ms: u64,
    ) -> Outcome {
        if self.live_part(id, attempt, node).is_none() {
            return Outcome::Ignored(format!("job {id}.{attempt} does not run on {node}"));
        }
        self.end_part(id, node, exit, now_ms);
        Outcome::Applied
    }

    fn live_part(&mut self, id: JobId, attempt: u32, node: &str) -> Option<&mut Part> {
        let job = self.jobs.get_mut(&id)?;
        if job.attempt != attempt || job.state != JobState::Running {
            return None;
        }
        job.parts
            .iter_mut()
            .find(|p| p.node == node && p.exit.is_none())
    }

    /// Ends one part: frees its resources, and ends the job when it was the last part.
    fn end_part(&mut self, id: JobId, node_name: &str, exit: &PartExit, now_ms: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some(part) = job
            .parts
            .iter_mut()
            .find(|p| p.node == node_name && p.exit.is_none())
        else {
            return;
        };
        part.exit = Some(exit.clone());
        let freed = part.resources();
        let gpus = part.gpus.clone();
        let capacity = self
            .nodes
            .values()
            .fold(gantry_model::Resources::default(), |sum, n| {
                sum.saturating_add(&n.inventory.capacity())
            });
        self.usage.charge(
            &job.spec.account,
            &freed,
            &capacity,
            job.start_time_ms.unwrap_or(now_ms),
            now_ms,
            self.config.half_life_ms,
        );
        if let Some(node) = self.nodes.get_mut(node_name) {
            node.allocated = node.allocated.saturating_sub(&freed);
            for g in &gpus {
                node.used_gpus.remove(g);
            }
            node.jobs.remove(&id);
        }
        // The first part to end badly, or after the time limit's warning (it ran out of time
        // whatever its exit), may send the run back to the queue by the job's own policy.
        let out_of_time = exit.after_time_limit_warning && !job.work_done;
        if job.first_failure.is_none()
            && (!exit.succeeded() || out_of_time)
            && job.requeue.is_none()
            && !job.cancel_requested
            && job.automatic_requeues < self.config.max_requeues
        {
            job.requeue = automatic_requeue(&job.spec, exit, job.work_done);
        }
        if !exit.succeeded() && job.first_failure.is_none() {
            job.first_failure = Some((node_name.to_string(), exit.clone()));
        }
        if job.parts.iter().any(|p| p.exit.is_none()) {
            return;
        }
        // An acknowledged requeue holds however the run ended: a job that asked its own
        // requeue and exited at once, or saved its checkpoint and exited 0 when warned, exited
        // 0 too. Only the job's own word that its work is done, and exits 0, complete it.
        let finished = job.work_done
            && job
                .parts
                .iter()
                .all(|p| p.exit.as_ref().is_some_and(PartExit::exited_zero));
        let requeue = job.requeue.take();
        if !job.cancel_requested
            && !finished
            && let Some(requeue) = requeue
        {
            let why = requeue.why;
            let mut record = attempt_record(job, now_ms, requeue.cause.outcome(), &why);
            record.lost_gpu_ms = lost_gpu_ms(job, now_ms);
            job.attempts.push(record);
            if requeue.cause.automatic() {
                job.automatic_requeues += 1;
            }
            // Back in the queue as its next attempt, however its parts were stopped.
            job.state = JobState::Pending;
            job.attempt += 1;
            job.parts.clear();
            job.shape = 0;
            job.start_time_ms = None;
            job.first_failure = None;
            job.exit_code = None;
            job.signal = None;
            job.reason = format!("requeued: {why}");
            self.active.remove(&id);
            self.pending.insert(id);
            return;
        }
        let (failed_node, decisive) = match &job.first_failure {
            Some((node, exit)) => (Some(node.as_str()), exit.clone()),
            None => (None, exit.clone()),
        };
        job.state = if job.cancel_requested {
            JobState::Cancelled
        } else if finished {
            JobState::Completed
        } else {
            decisive.job_state()
        };
        job.exit_code = decisive.exit_code;
        job.signal = decisive.signal;
        if finished {
            job.reason = String::new();
        } else if !job.cancel_requested {
            let on_node = failed_node.filter(|_| job.parts.len() > 1);
            job.reason = describe_exit(&decisive, on_node);
        }
        job.end_time_ms = Some(now_ms);
        let record = attempt_record(job, now_ms, job.state.as_str(), &job.reason);
        job.attempts.push(record);
        self.active.remove(&id);
        self.settle_dependents(id, now_ms);
    }

    /// Once job `ended` has ended: the pending jobs whose dependency on it can now never be
    /// met are cancelled, saying why (and so on down their own dependents). Those it met
    /// start once their other dependencies are met too.
    fn settle_dependents(&mut self, ended: JobId, now_ms: u64) {
        let mut ends = vec![ended];
        while let Some(ended) = ends.pop() {
            let Some(state) = self.jobs.get(&ended).map(|j| j.state) else {
                continue;
            };
            for id in self.dependents.remove(&ended).unwrap_or_default() {
                if !self.pending.contains(&id) {
                    continue;
                }
                let Some(job) = self.jobs.get_mut(&id) else {
                    continue;
                };
                let unmet = job
                    .spec
                    .dependencies
                    .iter()
                    .find(|d| d.job == ended && !d.condition.met_by(state));
                if let Some(dependency) = unmet {
                    job.state = JobState::Cancelled;
                    job.reason = format!(
                        "dependency {dependency} can never be met: job {ended} ended {}",
                        state.as_str()
                    );
                    job.end_time_ms = Some(now_ms);
                    self.pending.remove(&id);
                    ends.push(id);
                }
            }
        }
    }

    fn node_lost(&mut self, name: &str, reason: &str, now_ms: u64) -> Outcome {
        let Some(node) = self.nodes.get_mut(name) else {
            return Outcome::Rejected(Rejection::UnknownNode(name.to_string()));
        };
        if !node.up {
            return Outcome::Ignored(format!("node {name} is down already"));
        }
        node.up = false;
        node.down_reason = Some(reason.to_string());
        let lost = PartExit {
            reason: ExitReason::Lost,
            exit_code: None,
            signal: None,
            message: format!("node {name} lost: {reason}"),
            after_time_limit_warning: false,
        };
        let ids: Vec<JobId> = node.jobs.iter().copied().collect();
        for id in ids {
            self.end_part(id, name, &lost, now_ms);
        }
        Outcome::Applied
    }

    fn drain(
        &mut self,
        names: &[String],
        reason: &str,
        by: &str,
        mode: DrainMode,
        now_ms: u64,
    ) -> Outcome {
        if let Some(unknown) = names.iter().find(|n| !self.nodes.contains_key(*n)) {
            return Outcome::Rejected(Rejection::UnknownNode(unknown.clone()));
        }
        let deadline_ms = match mode {
            DrainMode::Deadline { after_ms } => Some(now_ms.saturating_add(after_ms)),
            DrainMode::Wait | DrainMode::Requeue => None,
        };
        for name in names {
            if let Some(node) = self.nodes.get_mut(name) {
                node.drain = Some(Drain {
                    reason: reason.to_string(),
                    by: by.to_string(),
                    since_ms: now_ms,
                    deadline_ms,
                });
            }
            if mode == DrainMode::Requeue {
                self.requeue_jobs_on(name, &format!("node {name} drained by {by}: {reason}"));
            }
        }
        Outcome::Applied
    }

    fn drain_deadline(&mut self, names: &[String], now_ms: u64) -> Outcome {
        let mut due = Vec::new();
        for name in names {
            let Some(drain) = self.nodes.get_mut(name).and_then(|n| n.drain.as_mut()) else {
                continue;
            };
            if drain.deadline_ms.is_some_and(|at| at <= now_ms) {
                drain.deadline_ms = None;
                due.push((name.clone(), drain.reason.clone()));
            }
        }
        if due.is_empty() {
            return Outcome::Ignored("no drain deadline has passed".into());
        }
        for (name, reason) in due {
            self.requeue_jobs_on(&name, &format!("drain deadline of node {name} ({reason})"));
        }
        Outcome::Applied
    }

    /// Stops every job running on `node` that is not being stopped already, to run again.
    fn requeue_jobs_on(&mut self, node: &str, why: &str) {
        let Some(ids) = self.nodes.get(node).map(|n| n.jobs.clone()) else {
            return;
        };
        for id in ids {
            if let Some(job) = self.jobs.get_mut(&id).filter(|j| !j.stopping()) {
                job.requeue = Some(Requeue {
                    why: why.to_string(),
                    cause: RequeueCause::Drain,
                });
            }
        }
    }

    fn resume(&mut self, names: &[String]) -> Outcome {
        if let Some(unknown) = names.iter().find(|n| !self.nodes.contains_key(*n)) {
            return Outcome::Rejected(Rejection::UnknownNode(unknown.clone()));
        }
        for name in names {
            if let Some(node) = self.nodes.get_mut(name) {
                node.drain = None;
            }
        }
        Outcome::Applied
    }
}

/// A node daemon's registration (`Command::RegisterNode`), borrowed.
#[derive(Clone, Copy)]
struct Registration<'a> {
    name: &'a str,
    identity: &'a str,
    inventory: &'a NodeInventory,
    running: &'a [(JobId, u32)],
    finished: &'a [(JobId, u32, PartExit)],
    failed_gpus: &'a [(u32, String)],
}

/// How a node daemon's identity shows in messages: enough to tell two apart.
pub fn short_identity(identity: &str) -> String {
    identity.chars().take(8).collect()
}

/// A running job's run to stop, and the waiting job it is stopped for, with the place that
/// job is counted to take.
#[derive(Clone, Copy)]
struct Stop<'a> {
    job: JobId,
    attempt: u32,
    for_job: JobId,
    for_place: &'a [PartPlan],
}

fn plan_part(plan: &PartPlan) -> Part {
    Part {
        node: plan.node.clone(),
        gpus: plan.gpus.clone(),
        cpus: plan.cpus,
        mem_mib: plan.mem_mib,
        started: false,
        exit: None,
    }
}

/// The reason shown for an ended job; for a job of several nodes, names the node whose
/// part decided it.
fn describe_exit(exit: &PartExit, failed_node: Option<&str>) -> String {
    let what = match (exit.reason, exit.exit_code, exit.signal) {
        (_, _, _) if exit.succeeded() => String::new(),
        (ExitReason::Exited, _, Some(sig)) => format!("killed by signal {sig}"),
        (ExitReason::Exited, Some(code), None) => format!("exit code {code}"),
        (ExitReason::Timeout, _, _) => "time limit reached".to_string(),
        _ => exit.message.clone(),
    };
    match failed_node {
        Some(node) if !what.is_empty() => format!("{what} on node {node}"),
        _ => what,
    }
}

/// Whether a run that ended this way goes back to the queue by the job's own request
/// (`--no-requeue`, `--requeue-on-timeout`): at its time limit, or after the limit's warning
/// however it ended — unless the job said its work is done.
fn automatic_requeue(
    spec: &gantry_model::JobSpec,
    exit: &PartExit,
    work_done: bool,
) -> Option<Requeue> {
    let out_of_time = exit.reason == ExitReason::Timeout || exit.after_time_limit_warning;
    let cause = match exit.reason {
        ExitReason::Lost | ExitReason::NodeShutdown | ExitReason::Fenced
            if spec.requeue.on_node_failure =>
        {
            RequeueCause::NodeFail
        }
        _ if out_of_time && spec.requeue.on_timeout && !work_done => RequeueCause::Timeout,
        _ => return None,
    };
    let why = match cause {
        RequeueCause::Timeout => "time limit reached".to_string(),
        _ => exit.message.clone(),
    };
    Some(Requeue { why, cause })
}

/// The work the current run has to do again if it stops at `end_ms`: GPUs held × the time
/// since its last checkpoint (since its start without one).
fn lost_gpu_ms(job: &Job, end_ms: u64) -> u64 {
    let start = job.start_time_ms.unwrap_or(end_ms);
    let from = job.checkpointed_this_run().unwrap_or(start);
    let gpus: u64 = job.parts.iter().map(|p| p.gpus.len() as u64).sum();
    gpus.saturating_mul(end_ms.saturating_sub(from))
}

/// The record of job's current run, ending at `end_ms`.
fn attempt_record(job: &Job, end_ms: u64, outcome: &str, reason: &str) -> Attempt {
    Attempt {
        attempt: job.attempt,
        parts: job
            .parts
            .iter()
            .map(|p| (p.node.clone(), p.gpus.clone()))
            .collect(),
        start_ms: job.start_time_ms.unwrap_or(end_ms),
        end_ms,
        outcome: outcome.to_string(),
        reason: reason.to_string(),
        lost_gpu_ms: 0,
    }
}

#[cfg(test)]
mod tests;
