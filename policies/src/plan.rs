//! Deciding a job that arrives after a pass without a new pass over the whole queue.
//!
//! A pass leaves behind what it claimed (starts, reservations, reclaims, quota use) and the
//! place of the last job that holds the jobs behind it back. A job arriving afterwards that
//! ranks behind that job would, in a new pass, meet exactly the claims the pass ended with:
//! every job ranked behind it claimed nothing (jobs the pass started are running now, in
//! both). So it is decided against the pass's end state, at the cost of one job, and gets
//! the decision a full pass would give it. An arrival that ranks ahead of such a job, or
//! for which GPUs might be taken back (from borrowers, by preemption, by defragmentation),
//! needs a full pass: [`NeedsPass`].
//!
//! Priorities are judged at the pass's time; the arrival's start (and so whether it fits
//! before a reservation) at the time it is decided. A plan is only as fresh as its pass:
//! the caller makes a new one when anything but arrivals changed.

use std::collections::BTreeSet;

use gantry_model::JobId;

use crate::config::SchedulingProfile;
use crate::pass::{ARRIVAL_ROOM, FullPass, TakeBack, full_pass};
use crate::priority::{Priority, RankKey, rank_key};
use crate::view::{ClusterView, Decisions, PendingJob, Start, WaitReason};

/// A pass and the state it ended in, ready to decide arrivals.
pub struct Plan {
    view: ClusterView,
    full: FullPass,
    /// The places of the jobs still waiting after the pass (it started the others), sorted:
    /// an arrival's rank is its place among them.
    waiting: Vec<RankKey>,
    /// The highest pending job id of the view: arrivals above it cannot be known already.
    newest: JobId,
    /// The QoS levels of the jobs running, started by the pass or by arrivals: an arrival
    /// whose QoS preempts one of them needs a full pass.
    running_qos: BTreeSet<String>,
}

/// What the plan decided for an arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub job: JobId,
    pub priority: Priority,
    /// Its place among the jobs waiting, 1 for the job served first.
    pub rank: u32,
    /// `Some` when it starts now.
    pub start: Option<Start>,
    /// Why it waits, when it does not start.
    pub wait: Option<WaitReason>,
}

/// Why an arrival cannot be decided without a full pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeedsPass {
    #[error("job {job} ranks ahead of job {ahead_of}, which holds the jobs behind it back")]
    RanksAhead { job: JobId, ahead_of: JobId },
    #[error("job {0} is in an account with a guarantee: GPUs may be taken back for it")]
    Guarantee(JobId),
    #[error(
        "job {0} cannot start at once, and its QoS preempts running jobs, its deadline may, or defragmentation may move jobs for it"
    )]
    Preempts(JobId),
    #[error("the pass preempted jobs: the cluster is not what the plan left")]
    PassPreempted,
    #[error("job {0} is in the plan already")]
    Known(JobId),
    #[error("job {job}'s account {account} is new to the plan: its fair share changes the tree")]
    NewAccount { job: JobId, account: String },
}

/// A copy with room for arrivals, as a new plan has.
impl Clone for Plan {
    fn clone(&self) -> Plan {
        let mut copy = Plan {
            view: self.view.clone(),
            full: self.full.clone(),
            waiting: self.waiting.clone(),
            newest: self.newest,
            running_qos: self.running_qos.clone(),
        };
        copy.waiting.reserve(ARRIVAL_ROOM);
        copy.full.keys.reserve(ARRIVAL_ROOM);
        copy.full.decisions.ranked.reserve(ARRIVAL_ROOM);
        copy.full.decisions.waiting.reserve(ARRIVAL_ROOM);
        copy
    }
}

impl Plan {
    /// Runs a full pass over `view`.
    pub fn new(view: ClusterView) -> Plan {
        let full = full_pass(&view);
        let started: BTreeSet<JobId> = full.decisions.starts.iter().map(|s| s.job).collect();
        let running_qos = view
            .running
            .iter()
            .map(|r| r.qos.clone())
            .chain(
                view.pending
                    .iter()
                    .filter(|j| started.contains(&j.id))
                    .map(|j| j.qos.clone()),
            )
            .collect();
        let mut waiting: Vec<RankKey> = Vec::with_capacity(full.keys.capacity());
        waiting.extend(full.keys.iter().filter(|key| !started.contains(&key.3)));
        let newest = view.pending.iter().map(|j| j.id).max().unwrap_or(0);
        Plan {
            view,
            full,
            waiting,
            newest,
            running_qos,
        }
    }

    /// What the pass decided, arrivals included.
    pub fn decisions(&self) -> &Decisions {
        &self.full.decisions
    }

    /// The highest job id the plan has decided: jobs above it arrived after it.
    pub fn newest(&self) -> JobId {
        self.newest
    }

    /// The view the pass was made on.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// Decides `job`, which arrived after the pass, at `now_ms` (the pass's time if
    /// earlier); its decision is also added to [`Plan::decisions`]. Deciding arrivals one
    /// after another decides each after the ones before it. After an `Err` the plan is
    /// spent: a full pass decides from there.
    pub fn arrive(&mut self, job: PendingJob, now_ms: u64) -> Result<Arrival, NeedsPass> {
        let full = &mut self.full;
        // Its victims are still running as far as the view goes, and the jobs they made room
        // for hold claims a later pass would place anew.
        if !full.decisions.preempt.is_empty() {
            return Err(NeedsPass::PassPreempted);
        }
        if job.id <= self.newest && full.decisions.ranked.iter().any(|(id, _)| *id == job.id) {
            return Err(NeedsPass::Known(job.id));
        }
        if !full.pass.tree.knows(&job.account) {
            return Err(NeedsPass::NewAccount {
                job: job.id,
                account: job.account,
            });
        }
        let kind = full.pass.kind();
        if kind == SchedulingProfile::Gantry && !full.pass.tree.guarantees(&job.account).is_empty()
        {
            return Err(NeedsPass::Guarantee(job.id));
        }
        let priority = full.ranker.priority(&job, &self.view, &full.pass.tree);
        let key = rank_key(
            &job,
            &priority,
            false,
            None,
            (&self.view.config, self.view.now_ms),
        );
        if let Some(holding) = full.holds_back
            && key < holding
        {
            return Err(NeedsPass::RanksAhead {
                job: job.id,
                ahead_of: holding.3,
            });
        }
        if kind == SchedulingProfile::Gantry {
            full.pass.demand.add(&job);
        }
        let mut decided = Decisions::default();
        let now = now_ms.max(self.view.now_ms);
        // A job that cannot start at once may preempt others when its QoS allows, or have
        // jobs moved for it when defragmentation is on: only a full pass may decide that.
        let may_preempt = kind == SchedulingProfile::Gantry
            && (self.view.config.preemption.defrag_per_hour > 0
                || job.deadline_ms.is_some()
                || self.view.config.qos.get(&job.qos).is_some_and(|level| {
                    level.preempts.iter().any(|q| self.running_qos.contains(q))
                }));
        let take_back = if may_preempt {
            TakeBack::Ask
        } else {
            TakeBack::Never
        };
        match full
            .pass
            .consider(&self.view, take_back, &job, now, &mut decided)
        {
            None => return Err(NeedsPass::Preempts(job.id)),
            Some(true) => full.holds_back = Some(key),
            Some(false) => {}
        }
        let at = full.keys.partition_point(|k| *k < key);
        full.keys.insert(at, key);
        full.decisions.ranked.insert(at, (job.id, priority));
        let place = self.waiting.partition_point(|k| *k < key);
        let start = decided.starts.pop();
        match &start {
            None => self.waiting.insert(place, key),
            Some(_) if !self.running_qos.contains(&job.qos) => {
                self.running_qos.insert(job.qos.clone());
            }
            Some(_) => {}
        }
        let wait = decided.waiting.pop().map(|(_, why)| why);
        full.decisions.starts.extend(start.clone());
        if let Some(why) = &wait {
            full.decisions.waiting.push((job.id, why.clone()));
        }
        self.newest = self.newest.max(job.id);
        Ok(Arrival {
            job: job.id,
            priority,
            rank: u32::try_from(place + 1).unwrap_or(u32::MAX),
            start,
            wait,
        })
    }
}
