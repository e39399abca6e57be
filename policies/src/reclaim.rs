//! Taking GPUs back from running jobs, emitted as preemptions (the scheduler requeues them):
//!
//! - Guarantees: an account may always reach its guaranteed GPUs. While it does not use them
//!   others may borrow them; when one of its jobs waits and the account holds less than its
//!   guarantee, the pass takes GPUs back from borrowers.
//! - QoS: a waiting job whose QoS level preempts others' (`qos.NAME.preempts`) may stop their
//!   jobs — only those that have run their minimum runtime and would not end by themselves
//!   before the stop would.
//! - Deadlines: a waiting job that would miss its deadline by waiting for its earliest later
//!   start may stop jobs without deadlines of its QoS level or a lower one.
//! - Defragmentation (`defrag.per_hour` above 0): a waiting job for which enough GPUs are
//!   free, but not together on nodes it can use, may have a few checkpointable jobs moved:
//!   stopped, and started again at once where this pass keeps room for them. Each account
//!   loses at most `defrag.per_hour` jobs an hour to preemptions of any kind before
//!   defragmentation leaves its jobs alone.
//!
//! Victims are chosen so the least work is lost (`preempt.victims`): by default the jobs with
//! the fewest GPU-seconds since their last checkpoint, plus their restart cost, per GPU freed;
//! then any victim the job turns out not to need is spared.
//!
//! Whatever the reason, a stop must pay: the waiting job's GPUs × how much sooner it starts
//! than at its earliest later start (by the running jobs' time limits), weighted up by the
//! QoS priority it has above each victim's (`preempt.qos_gain`), must exceed the work the
//! victims throw away. And no job is stopped again and again: each preemption doubles the
//! time a job runs before it may be stopped again, and after `preempt.budget` of them only a
//! guarantee may take it back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use gantry_model::{JobId, Resources, Shape};

use std::cell::Cell;

use crate::accounts::Tree;
use crate::config::{Preemption, VictimOrder};
use crate::feasibility::could_hold_part;
use crate::pass::earliest_later_start;
use crate::placement::{Pick, Picks, place, total_gpus};
use crate::profile::{Free, Profile, Share, shares};
use crate::view::{ClusterView, PartPlan, PendingJob, RunningJob};

/// At most this many jobs are preempted for one waiting job in one pass.
const MAX_VICTIMS: usize = 64;

/// At most this many jobs are moved for one waiting job: defragmentation is for a few moves
/// that let a gang start, not a reshuffle of the cluster.
const MAX_MOVES: usize = 4;

/// Waiting jobs one pass tries to defragment for: each try places the job and its movers,
/// and a long blocked queue must not make every pass pay that for every job.
const MAX_DEFRAG_TRIES: usize = 8;

/// GPUs held per account, its sub-accounts' included.
#[derive(Clone, Default)]
struct Held(BTreeMap<String, u64>);

impl Held {
    fn add(&mut self, tree: &Tree, account: &str, gpus: u64) {
        for a in tree.path(account) {
            *self.0.entry(a.to_string()).or_default() += gpus;
        }
    }

    fn remove(&mut self, tree: &Tree, account: &str, gpus: u64) {
        for a in tree.path(account) {
            if let Some(held) = self.0.get_mut(a) {
                *held = held.saturating_sub(gpus);
            }
        }
    }

    fn of(&self, account: &str) -> u64 {
        self.0.get(account).copied().unwrap_or(0)
    }
}

fn running_gpus(job: &RunningJob) -> u64 {
    job.parts.iter().map(|p| u64::from(p.res.gpus)).sum()
}

/// The work stopping `job` now loses per GPU, in ms: since its last checkpoint (or its
/// start), plus the restart cost.
fn lost_per_gpu(job: &RunningJob, now: u64, rules: &Preemption) -> u64 {
    let since = job
        .checkpointed_ms
        .unwrap_or(job.start_ms)
        .max(job.start_ms);
    now.saturating_sub(since)
        .saturating_add(rules.restart_cost_ms)
}

/// How long `job` runs before it may be stopped again: `min_runtime`, doubled for each of its
/// earlier preemptions.
fn backoff(min_runtime_ms: u64, job: &RunningJob) -> u64 {
    min_runtime_ms.saturating_mul(1u64 << job.preemptions.min(32))
}

/// Puts the jobs a preemption should stop first first: the least work lost per GPU freed,
/// or the youngest.
fn order_victims(jobs: &mut [&RunningJob], now: u64, rules: &Preemption) {
    match rules.victims {
        VictimOrder::Youngest => jobs.sort_by_key(|r| (Reverse(r.start_ms), Reverse(r.id))),
        VictimOrder::CheckpointAware => jobs.sort_by_key(|r| {
            (
                lost_per_gpu(r, now, rules),
                Reverse(r.start_ms),
                Reverse(r.id),
            )
        }),
    }
}

/// GPUs held by running jobs that are not being stopped, per account subtree.
fn held_now(view: &ClusterView, tree: &Tree) -> Held {
    let mut held = Held::default();
    if !tree.has_guarantees() {
        // Only guarantees read it.
        return held;
    }
    for job in view.running.iter().filter(|j| !j.stopping) {
        held.add(tree, &job.account, running_gpus(job));
    }
    held
}

/// Whether a job of `account` needing `shape` is within a guarantee on its path: some
/// account above it (or itself) would hold no more than its guarantee with the job.
pub(crate) fn within_guarantee(view: &ClusterView, tree: &Tree) -> impl Fn(&str, &Shape) -> bool {
    let held = held_now(view, tree);
    let accounts: BTreeSet<&str> = view.pending.iter().map(|j| j.account.as_str()).collect();
    let tree_guarantees: BTreeMap<String, Vec<(String, u32)>> = accounts
        .into_iter()
        .map(|account| {
            let g = tree
                .guarantees(account)
                .into_iter()
                .map(|(a, g)| (a.to_string(), g))
                .collect();
            (account.to_string(), g)
        })
        .filter(|(_, g): &(String, Vec<_>)| !g.is_empty())
        .collect();
    move |account: &str, shape: &Shape| {
        tree_guarantees.get(account).is_some_and(|gs| {
            gs.iter()
                .any(|(a, g)| held.of(a) + total_gpus(shape) <= u64::from(*g))
        })
    }
}

/// The accounts through which `borrower` borrows from `owed`: the borrower's own and those
/// above it, up to the child of their common ancestor. `None` when the borrower is `owed`,
/// inside it (its jobs use the guarantee, they do not borrow from it) or above it.
fn lenders<'a>(tree: &'a Tree, owed: &str, borrower: &'a str) -> Option<Vec<&'a str>> {
    let above: BTreeSet<&str> = tree.path(owed).into_iter().collect();
    let path = tree.path(borrower);
    if path.contains(&owed) {
        return None;
    }
    let meet = path.iter().position(|a| above.contains(a))?;
    (meet > 0).then(|| path[..meet].to_vec())
}

/// Whether stopping `victim` for a job of `account` leaves every account that loses the
/// victim's GPUs (the victim's own and those above it that `account` is not in) at or above
/// its guarantee. A QoS or a deadline never takes what a guarantee covers: the guarantee would
/// take it straight back, and the two would undo each other pass after pass.
fn keeps_guarantees(tree: &Tree, held: &Held, account: &str, victim: &RunningJob) -> bool {
    if !tree.has_guarantees() {
        return true;
    }
    let ours = tree.path(account);
    let gpus = running_gpus(victim);
    tree.path(&victim.account)
        .into_iter()
        .filter(|a| !ours.contains(a))
        .all(|a| match tree.guarantee(a) {
            0 => true,
            guarantee => held.of(a) >= u64::from(guarantee) + gpus,
        })
}

/// Why GPUs are taken back for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The guarantee of this account.
    Guarantee(String),
    /// The job's QoS level preempts the victims'.
    Qos(String),
    /// The job would miss its deadline waiting: the victims have none.
    Deadline,
    /// The job's GPUs are free but scattered: the victims move elsewhere.
    Defragment,
    /// Jobs were stopped for it in an earlier pass: it keeps the place they free.
    Kept,
}

impl Claim {
    /// Why a job is stopped for job `for_job`, as its history shows it.
    pub(crate) fn victim_reason(&self, for_job: JobId) -> String {
        match self {
            Claim::Guarantee(owed) => {
                format!("account {owed} reclaims its guaranteed GPUs for job {for_job}")
            }
            Claim::Qos(qos) => format!("preempted for job {for_job} of QoS {qos}"),
            Claim::Deadline => {
                format!("preempted for job {for_job}, which would miss its deadline")
            }
            Claim::Defragment => {
                format!("moved to defragment: job {for_job} needs its GPUs together")
            }
            Claim::Kept => format!("stopped for job {for_job}"),
        }
    }
}

/// A claimant's kept place ([`Reclaimer::kept`]).
pub(crate) enum Kept {
    /// All free: it starts there now.
    Free(Picks),
    /// Partly held by jobs being stopped: it waits for them, the place claimed for it.
    Stopping(Reclaimed),
}

/// A waiting job's question to a reclaim: the pass's account tree and free resources, the
/// job, and the shape it would start in.
#[derive(Clone, Copy)]
pub(crate) struct Ask<'a> {
    pub(crate) tree: &'a Tree,
    pub(crate) profile: &'a Profile,
    pub(crate) job: &'a PendingJob,
    pub(crate) shape: &'a Shape,
}

/// What a waiting job gets from a reclaim: the GPUs it will take, and the jobs to stop
/// for them (none when jobs being stopped already free enough).
pub(crate) struct Reclaimed {
    pub(crate) claim: Claim,
    pub(crate) picks: Picks,
    pub(crate) victims: Vec<JobId>,
    /// The jobs being stopped already (for whatever reason) whose GPUs it takes.
    pub(crate) awaits: Vec<JobId>,
    /// Where moved victims start again: the pass keeps these for them.
    pub(crate) moves: Vec<(JobId, Shape, Picks)>,
    /// What accounts hold once the victims are gone and the job runs.
    held: Held,
}

/// Reclaims within one pass, in rank order: remembers what it took and who holds what.
pub(crate) struct Reclaimer<'v> {
    view: &'v ClusterView,
    index: BTreeMap<&'v str, usize>,
    held: Held,
    taken: BTreeSet<JobId>,
    /// Jobs preempted per account in the last hour, this pass's included.
    preempted: BTreeMap<String, u32>,
    /// The QoS levels of the running jobs not being stopped, and whether any is stopping:
    /// most blocked jobs can take nothing from anyone, and need not look further.
    running_qos: BTreeSet<&'v str>,
    any_stopping: bool,
    defrag_tries: Cell<usize>,
}

impl<'v> Reclaimer<'v> {
    pub(crate) fn new(view: &'v ClusterView, tree: &Tree) -> Reclaimer<'v> {
        Reclaimer {
            view,
            index: view
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.name.as_str(), i))
                .collect(),
            held: held_now(view, tree),
            taken: BTreeSet::new(),
            preempted: view.preempted_last_hour.clone(),
            defrag_tries: Cell::new(0),
            running_qos: view
                .running
                .iter()
                .filter(|r| !r.stopping)
                .map(|r| r.qos.as_str())
                .collect(),
            any_stopping: view.running.iter().any(|r| r.stopping),
        }
    }

    fn shares(&self, job: &RunningJob) -> Vec<Share> {
        job.parts
            .iter()
            .filter_map(|p| {
                Some(Share {
                    node: *self.index.get(p.node.as_str())?,
                    res: p.res,
                    gpus: p.gpus.clone(),
                })
            })
            .collect()
    }

    /// A job of `account` that pass started (its GPUs count for its account).
    pub(crate) fn started(&mut self, tree: &Tree, account: &str, shape: &Shape) {
        if tree.has_guarantees() {
            self.held.add(tree, account, total_gpus(shape));
        }
    }

    /// For a job that cannot start now in `shape`: GPUs taken back for it, when an account on
    /// its path holds less than its guarantee even with the job (from borrowers), or else when
    /// its QoS preempts others' (from their jobs), or else when it is `late` (would miss its
    /// deadline waiting: from jobs without one), or else by moving jobs to defragment.
    /// Changes nothing until [`Reclaimer::commit`].
    pub(crate) fn plan(&self, ask: &Ask, late: bool) -> Option<Reclaimed> {
        let Ask {
            tree, job, shape, ..
        } = *ask;
        let need = total_gpus(shape);
        if let Some((owed, _)) = tree
            .guarantees(&job.account)
            .into_iter()
            .find(|(a, g)| self.held.of(a) + need <= u64::from(*g))
        {
            // Only from lenders above their own guarantees, at every level: never take a
            // guarantee to pay one.
            let may_take = |held: &Held, _: &[&RunningJob], victim: &RunningJob| {
                self.reclaimable(victim)
                    && lenders(tree, owed, &victim.account).is_some_and(|lenders| {
                        let gpus = running_gpus(victim);
                        lenders
                            .iter()
                            .all(|a| held.of(a) >= u64::from(tree.guarantee(a)) + gpus)
                    })
            };
            let claim = Claim::Guarantee(owed.into());
            return self.take(ask, claim, MAX_VICTIMS, may_take);
        }
        self.preempt(ask)
            .or_else(|| late.then(|| self.make_time(ask)).flatten())
            .or_else(|| self.defragment(ask))
    }

    /// Stops jobs without a deadline, of `job`'s QoS level or a lower one, so that it ends
    /// by its deadline.
    fn make_time(&self, ask: &Ask) -> Option<Reclaimed> {
        let config = &self.view.config;
        let level = config.qos_priority(&ask.job.qos)?;
        let may_take = |held: &Held, _: &[&RunningJob], victim: &RunningJob| {
            victim.deadline_ms.is_none()
                && config.qos_priority(&victim.qos).is_none_or(|p| p <= level)
                && self.stoppable(victim)
                && keeps_guarantees(ask.tree, held, &ask.job.account, victim)
        };
        self.take(ask, Claim::Deadline, MAX_VICTIMS, may_take)
    }

    /// Whether `victim` may be stopped for a QoS, a deadline or defragmentation: it has not
    /// spent its preemption budget, has run its minimum runtime (doubled for each earlier
    /// preemption) and would not end by itself before the stop would.
    fn stoppable(&self, victim: &RunningJob) -> bool {
        let rules = &self.view.config.preemption;
        let now = self.view.now_ms;
        victim.preemptions < rules.budget
            && now.saturating_sub(victim.start_ms) >= backoff(rules.min_runtime_ms, victim)
            && victim
                .ends_at_ms
                .is_none_or(|end| end > now.saturating_add(rules.grace_ms))
    }

    /// Whether a guarantee may take `victim` back: whatever its budget, once it has run the
    /// backoff of its earlier preemptions (none before the first).
    fn reclaimable(&self, victim: &RunningJob) -> bool {
        let rules = &self.view.config.preemption;
        victim.preemptions == 0
            || self.view.now_ms.saturating_sub(victim.start_ms)
                >= backoff(rules.min_runtime_ms, victim)
    }

    /// Whether stopping `victims` for `ask` (a `claim`) pays: the job's GPUs × how much
    /// sooner it starts now than at its earliest later start (`sooner`), weighted by its QoS
    /// priority above each victim's, against what each victim loses: its GPUs × the work it
    /// throws away, and, stopped for a QoS, × `sooner` again, for it goes back to the queue
    /// and waits about as long as the job would have. (A borrower stopped for a guarantee
    /// knew it borrowed; a job stopped for a deadline yields to a date; a moved job starts
    /// again at once.) A job no later start is known for (what it waits for has no time
    /// limit) always gains.
    fn pays(&self, ask: &Ask, claim: &Claim, victims: &[&RunningJob]) -> bool {
        if victims.is_empty() {
            return true;
        }
        let view = self.view;
        let rules = &view.config.preemption;
        let now = view.now_ms;
        let later =
            earliest_later_start(ask.shape, &view.nodes, &view.topology, ask.profile, |_| {
                true
            });
        let Some((start, _)) = later else {
            return true;
        };
        let sooner = u128::from(start.saturating_sub(now));
        let requeued = if matches!(claim, Claim::Qos(_) | Claim::Deadline) {
            sooner
        } else {
            0
        };
        let level = |qos: &str| u128::from(view.config.qos_priority(qos).unwrap_or(0));
        let ours = level(&ask.job.qos);
        // Each victim's loss, divided by the weight of the job's time against its own:
        // 1 + qos_gain × Δpriority / 1000 (kept whole by scaling both sides by 1000).
        let lost: u128 = victims
            .iter()
            .map(|v| {
                let per_gpu = u128::from(lost_per_gpu(v, now, rules)) + requeued;
                let above = ours.saturating_sub(level(&v.qos));
                let weight = 1000 + u128::from(rules.qos_gain) * above;
                u128::from(running_gpus(v)) * per_gpu * 1000 * 1000 / weight
            })
            .sum();
        let gain = u128::from(total_gpus(ask.shape)) * sooner;
        gain * 1000 > lost
    }

    fn preempt(&self, ask: &Ask) -> Option<Reclaimed> {
        let preempts = &self.view.config.qos.get(&ask.job.qos)?.preempts;
        let any_victim = preempts
            .iter()
            .any(|q| self.running_qos.contains(q.as_str()));
        if preempts.is_empty() || (!any_victim && !self.any_stopping) {
            return None;
        }
        let may_take = |held: &Held, _: &[&RunningJob], victim: &RunningJob| {
            preempts.contains(&victim.qos)
                && self.stoppable(victim)
                && keeps_guarantees(ask.tree, held, &ask.job.account, victim)
        };
        let claim = Claim::Qos(ask.job.qos.clone());
        self.take(ask, claim, MAX_VICTIMS, may_take)
    }

    /// Moves a few checkpointable jobs so that `job` fits, when the GPUs it needs are free
    /// (or being freed) on nodes it may use, only not together: each mover must fit again at
    /// once elsewhere, on what the job leaves.
    fn defragment(&self, ask: &Ask) -> Option<Reclaimed> {
        let Ask { profile, shape, .. } = *ask;
        let view = self.view;
        let per_hour = view.config.preemption.defrag_per_hour;
        if per_hour == 0 || self.defrag_tries.get() >= MAX_DEFRAG_TRIES {
            return None;
        }
        let now = view.now_ms;
        let stopping = self.stopping_shares();
        let free = profile.free_during_with(now, shape.end_if_started(now), &stopping);
        // Free GPUs of the kind it asks for, on nodes that could hold a part of it.
        let scattered: u64 = view
            .nodes
            .iter()
            .zip(&free)
            .filter(|(n, _)| could_hold_part(n, shape))
            .map(|(n, f)| {
                let takes = |i: &u32| n.gpus.iter().any(|g| g.index == *i && shape.takes(g));
                match shape.gpu_model {
                    None => u64::from(f.res.gpus),
                    Some(_) => f.gpus.iter().filter(|i| takes(i)).count() as u64,
                }
            })
            .sum();
        if scattered < total_gpus(shape) {
            return None;
        }
        self.defrag_tries.set(self.defrag_tries.get() + 1);
        let may_take = |_: &Held, chosen: &[&RunningJob], victim: &RunningJob| {
            let same_account = chosen.iter().filter(|c| c.account == victim.account);
            let preempted = self.preempted.get(&victim.account).copied().unwrap_or(0);
            victim.movable.is_some()
                && self.stoppable(victim)
                && preempted.saturating_add(same_account.count() as u32) < per_hour
        };
        let mut plan = self.take(ask, Claim::Defragment, MAX_MOVES, may_take)?;
        // Each mover starts again at once elsewhere, on what the job and the movers before
        // it leave.
        let movers: Vec<&RunningJob> = view
            .running
            .iter()
            .filter(|r| plan.victims.contains(&r.id))
            .collect();
        let mut freed = stopping;
        freed.extend(movers.iter().flat_map(|m| self.shares(m)));
        let mut kept = shares(shape, &plan.picks);
        for mover in &movers {
            let mover_shape = mover.movable.as_ref()?;
            let end = mover_shape.end_if_started(now);
            let mut free = profile.free_during_with(now, end, &freed);
            for share in &kept {
                free[share.node].take(&share.res, &share.gpus);
            }
            let picks = place(
                mover_shape,
                &view.nodes,
                &free,
                Pick::Reserve,
                &view.topology,
            )?;
            kept.extend(shares(mover_shape, &picks));
            plan.moves.push((mover.id, mover_shape.clone(), picks));
        }
        Some(plan)
    }

    /// What jobs being stopped already hold: free for whoever takes it back.
    fn stopping_shares(&self) -> Vec<Share> {
        self.view
            .running
            .iter()
            .filter(|j| j.stopping)
            .flat_map(|j| self.shares(j))
            .collect()
    }

    /// The places kept for the jobs being moved, as the passes that moved them chose them:
    /// each that is still free (counting what jobs being stopped hold as free, as the move
    /// did). One that is not (its node went down) is kept no more: the job then waits
    /// as any moved job does.
    pub(crate) fn places_of_moving(&self, profile: &Profile) -> Vec<(Shape, Vec<Share>)> {
        let view = self.view;
        let mut movers = view
            .running
            .iter()
            .filter_map(|r| Some((r.moving_to.as_ref()?, r.movable.as_ref()?)))
            .peekable();
        let mut places = Vec::new();
        if movers.peek().is_none() {
            // Every pass comes here: most have nothing to keep.
            return places;
        }
        // As the move counted: what every job being stopped holds (the movers' own) is free.
        let stopping = self.stopping_shares();
        let mut kept: Vec<Share> = Vec::new();
        for (place, shape) in movers {
            let mut free =
                profile.free_during_with(view.now_ms, shape.end_if_started(view.now_ms), &stopping);
            for share in &kept {
                free[share.node].take(&share.res, &share.gpus);
            }
            if let Some(held) = self.place_in(place, &free) {
                kept.extend(held.iter().cloned());
                places.push((shape.clone(), held));
            }
        }
        places
    }

    /// `place` as shares, if every part of it is on a schedulable node and fits in `free`
    /// there, its very GPUs included.
    fn place_in(&self, place: &[PartPlan], free: &[Free]) -> Option<Vec<Share>> {
        place
            .iter()
            .map(|part| {
                let node = *self.index.get(part.node.as_str())?;
                let res = Resources {
                    gpus: u32::try_from(part.gpus.len()).ok()?,
                    cpus: part.cpus,
                    mem_mib: part.mem_mib,
                };
                let room = &free[node];
                (self.view.nodes[node].schedulable
                    && res.fits_in(&room.res)
                    && part.gpus.iter().all(|g| room.gpus.contains(g)))
                .then(|| Share {
                    node,
                    res,
                    gpus: part.gpus.clone(),
                })
            })
            .collect()
    }

    /// The place a claimant was counted to take when jobs were stopped for it (`place`, in
    /// its main shape): it starts there if all of it is free now, or keeps it — waiting for
    /// the jobs being stopped there — if the rest is theirs. `None` when the place no longer
    /// holds (a node down, its GPUs taken): it is placed afresh. Keeping it is what stops two
    /// claimants from taking each other's GPUs, or a victim restarting on its own.
    pub(crate) fn kept(&self, ask: &Ask, place: &[PartPlan]) -> Option<Kept> {
        let Ask {
            tree,
            profile,
            job,
            shape,
        } = *ask;
        let now = self.view.now_ms;
        let end = shape.end_if_started(now);
        let fits_shape = place.len() == shape.num_nodes as usize
            && place.iter().all(|p| {
                p.gpus.len() == shape.per_node.gpus as usize
                    && p.cpus == shape.per_node.cpus
                    && p.mem_mib == shape.per_node.mem_mib
            });
        if !fits_shape {
            return None;
        }
        let picks = |shares: Vec<Share>| -> Picks {
            shares.into_iter().map(|s| (s.node, s.gpus)).collect()
        };
        if let Some(shares) = self.place_in(place, &profile.free_during(now, end)) {
            return Some(Kept::Free(picks(shares)));
        }
        let stopping = self.stopping_shares();
        let shares = self.place_in(place, &profile.free_during_with(now, end, &stopping))?;
        let picks = picks(shares);
        let mut held = self.held.clone();
        held.add(tree, &job.account, total_gpus(shape));
        Some(Kept::Stopping(Reclaimed {
            claim: Claim::Kept,
            awaits: self.stopping_under(&picks),
            picks,
            victims: Vec::new(),
            moves: Vec::new(),
            held,
        }))
    }

    /// The GPUs `job` can have now in `shape` from jobs being stopped and, if those are not
    /// enough, from up to `max_victims` running jobs `may_take` allows (given those chosen
    /// so far), cheapest first; victims it does not need after all are spared.
    fn take(
        &self,
        ask: &Ask,
        claim: Claim,
        max_victims: usize,
        may_take: impl Fn(&Held, &[&RunningJob], &RunningJob) -> bool,
    ) -> Option<Reclaimed> {
        let Ask {
            tree,
            profile,
            job,
            shape,
        } = *ask;
        let view = self.view;
        let end = shape.end_if_started(view.now_ms);
        let stopping = self.stopping_shares();
        let try_place = |victims: &[&RunningJob]| {
            let mut extra = stopping.clone();
            extra.extend(victims.iter().flat_map(|v| self.shares(v)));
            let free = profile.free_during_with(view.now_ms, end, &extra);
            place(shape, &view.nodes, &free, Pick::Reserve, &view.topology)
        };
        // Jobs on nodes the job may not use, or that could never hold a part of it (too
        // small, other GPU models), free nothing for it.
        let usable: BTreeSet<&str> = view
            .nodes
            .iter()
            .filter(|n| could_hold_part(n, shape))
            .map(|n| n.name.as_str())
            .collect();
        let mut candidates: Vec<&RunningJob> = view
            .running
            .iter()
            .filter(|r| !r.stopping && !self.taken.contains(&r.id))
            .filter(|r| r.parts.iter().any(|p| usable.contains(p.node.as_str())))
            .collect();
        let mut held = self.held.clone();
        // What `may_take` allows only shrinks as victims are chosen: a job no candidate is
        // allowed for, with nothing being stopped, gets nothing (placing costs; most blocked
        // jobs end here).
        if stopping.is_empty() && !candidates.iter().any(|v| may_take(&held, &[], v)) {
            return None;
        }
        order_victims(&mut candidates, view.now_ms, &view.config.preemption);
        if claim == Claim::Defragment {
            // Moves on the nodes closest to fitting the job first.
            let free = profile.free_during_with(view.now_ms, end, &stopping);
            let short = |r: &&RunningJob| {
                r.parts
                    .iter()
                    .filter_map(|p| self.index.get(p.node.as_str()))
                    .map(|n| shape.per_node.gpus.saturating_sub(free[*n].res.gpus))
                    .min()
                    .unwrap_or(u32::MAX)
            };
            candidates.sort_by_key(short);
        }
        let mut chosen: Vec<&RunningJob> = Vec::new();
        let mut picks = try_place(&chosen);
        for victim in candidates {
            if picks.is_some() || chosen.len() >= max_victims {
                break;
            }
            if !may_take(&held, &chosen, victim) {
                continue;
            }
            held.remove(tree, &victim.account, running_gpus(victim));
            chosen.push(victim);
            picks = try_place(&chosen);
        }
        let mut picks = picks?;
        // The last victim made it fit; an earlier one may not be needed with it.
        let mut i = chosen.len().saturating_sub(1);
        while i > 0 {
            i -= 1;
            let mut without = chosen.clone();
            let spared = without.remove(i);
            if let Some(p) = try_place(&without) {
                held.add(tree, &spared.account, running_gpus(spared));
                chosen = without;
                picks = p;
            }
        }
        if !self.pays(ask, &claim, &chosen) {
            return None;
        }
        held.add(tree, &job.account, total_gpus(shape));
        let awaits = self.stopping_under(&picks);
        Some(Reclaimed {
            claim,
            picks,
            victims: chosen.iter().map(|v| v.id).collect(),
            awaits,
            moves: Vec::new(),
            held,
        })
    }

    /// The jobs being stopped that hold some of `picks`: a GPU picked, or, on a node where
    /// no GPU is picked, any of its CPUs and memory.
    fn stopping_under(&self, picks: &Picks) -> Vec<JobId> {
        self.view
            .running
            .iter()
            .filter(|r| r.stopping)
            .filter(|r| {
                self.shares(r).iter().any(|held| {
                    picks.iter().any(|(node, gpus)| {
                        *node == held.node
                            && (gpus.is_empty() || gpus.iter().any(|g| held.gpus.contains(g)))
                    })
                })
            })
            .map(|r| r.id)
            .collect()
    }

    /// The pass goes ahead with `plan`.
    pub(crate) fn commit(&mut self, plan: &Reclaimed) {
        self.taken.extend(plan.victims.iter().copied());
        self.held = plan.held.clone();
        for id in &plan.victims {
            if let Some(victim) = self.view.running.iter().find(|r| r.id == *id) {
                *self.preempted.entry(victim.account.clone()).or_default() += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use gantry_model::{Gpu, Resources};

    use crate::view::{AccountView, Held as HeldPart, NodeView, PendingJob};
    use crate::{ClusterView, schedule};

    use super::*;

    fn account(name: &str, guarantee: Option<u32>) -> AccountView {
        AccountView {
            name: name.into(),
            parent: (name != "root").then(|| "root".into()),
            share: 1,
            guarantee_gpus: guarantee,
            max_gpus: None,
        }
    }

    fn res(gpus: u32) -> Resources {
        Resources {
            gpus,
            cpus: 1,
            mem_mib: 1,
        }
    }

    fn running(id: u64, account: &str, start_ms: u64, gpus: &[u32]) -> RunningJob {
        RunningJob {
            id,
            account: account.into(),
            start_ms,
            stopping: false,
            moving_to: None,
            ends_at_ms: None,
            parts: vec![HeldPart {
                node: "a".into(),
                res: res(gpus.len() as u32),
                gpus: gpus.to_vec(),
            }],
            qos: crate::DEFAULT_QOS.to_string(),
            checkpointed_ms: None,
            movable: None,
            deadline_ms: None,
            preemptions: 0,
        }
    }

    /// Node a, 4 GPUs, all held by nlp's jobs 10 (older) and 11; vision waits for `gpus`.
    fn view(vision: Option<u32>, nlp: Option<u32>, gpus: u32) -> ClusterView {
        let capacity = Resources {
            gpus: 4,
            cpus: 8,
            mem_mib: 64,
        };
        let mut job = PendingJob::single(
            1,
            Shape {
                num_nodes: 1,
                per_node: res(gpus),
                gpu_model: None,
                time_limit_ms: None,
                pool: None,
                labels: vec![],
            },
        );
        job.account = "vision".into();
        ClusterView {
            now_ms: 1_000,
            nodes: vec![NodeView {
                name: "a".into(),
                schedulable: true,
                unavailable_reason: None,
                gpus: (0..4)
                    .map(|index| Gpu {
                        index,
                        model: "H100".into(),
                        memory_mib: 1,
                        nvlink_group: 0,
                        numa_node: None,
                        uuid: String::new(),
                    })
                    .collect(),
                capacity,
                free: capacity.saturating_sub(&res(4)),
                free_gpus: vec![],
                pool: "default".into(),
                labels: vec![],
            }],
            pending: vec![job],
            running: vec![
                running(10, "nlp", 100, &[0, 1]),
                running(11, "nlp", 200, &[2, 3]),
            ],
            accounts: vec![
                account("root", None),
                account("vision", vision),
                account("nlp", nlp),
            ],
            ..Default::default()
        }
    }

    fn preempted(view: &ClusterView) -> Vec<JobId> {
        schedule(view).preempt.into_iter().map(|v| v.job).collect()
    }

    const MIN: u64 = 60_000;

    /// Node a at minute 60: low-QoS jobs 10 (started at minute 0, checkpointed at minute
    /// 55) and 11 (started at minute 30, never checkpointed), 2 GPUs each; job 1 of QoS
    /// `qos` waits for `gpus`. No guarantees. A minute of a job counts 1 + 2 × (its QoS
    /// priority − a victim's) / 1000 times the victim's (`high` over `low`: 3).
    fn qos_view(qos: &str, gpus: u32) -> ClusterView {
        let mut v = view(None, None, gpus);
        v.now_ms = 60 * MIN;
        v.config.set("preempt.qos_gain", "2").unwrap();
        v.pending[0].qos = qos.into();
        v.running = vec![
            RunningJob {
                qos: "low".into(),
                checkpointed_ms: Some(55 * MIN),
                ..running(10, "nlp", 0, &[0, 1])
            },
            RunningJob {
                qos: "low".into(),
                ..running(11, "nlp", 30 * MIN, &[2, 3])
            },
        ];
        v
    }

    #[test]
    fn a_higher_qos_stops_the_job_that_loses_least_since_its_checkpoint() {
        // Job 10 loses 5 minutes of work, job 11 30 minutes: 10 goes, though it is older.
        let d = schedule(&qos_view("high", 2));
        assert!(d.starts.is_empty());
        let victims: Vec<(u64, u64, &str)> = d
            .preempt
            .iter()
            .map(|v| (v.job, v.for_job, v.reason.as_str()))
            .collect();
        assert_eq!(victims, [(10, 1, "preempted for job 1 of QoS high")]);
        assert_eq!(
            d.waiting[0].1.to_string(),
            "Preempting: QoS high stops lower-QoS job 10 for it"
        );
        // Youngest first, as others do: job 11 and its 30 minutes.
        let mut v = qos_view("high", 2);
        v.config.set("preempt.victims", "youngest").unwrap();
        assert_eq!(preempted(&v), [11]);
        // Both when it needs all four GPUs; none for a QoS that preempts nothing.
        assert_eq!(preempted(&qos_view("high", 4)), [10, 11]);
        assert!(preempted(&qos_view("low", 2)).is_empty());
        // `normal` preempts nothing by default; it may be set to.
        let mut v = qos_view("normal", 2);
        assert!(preempted(&v).is_empty());
        v.config.set("qos.normal.preempts", "low").unwrap();
        assert_eq!(preempted(&v), [10]);
    }

    #[test]
    fn jobs_within_their_minimum_runtime_or_about_to_end_are_spared() {
        let mut v = qos_view("high", 2);
        v.config.set("preempt.min_runtime", "45m").unwrap();
        // Job 11 has run 30 minutes only.
        assert_eq!(preempted(&v), [10]);
        v.config.set("preempt.min_runtime", "2h").unwrap();
        assert!(preempted(&v).is_empty());
        // Job 10 reaches its time limit within the 2-minute grace: it ends by itself, and
        // job 1 starts then. Stopping job 11 instead would throw away 30 minutes on 2 GPUs
        // to start job 1 a minute sooner: it does not pay.
        let mut v = qos_view("high", 2);
        v.running[0].ends_at_ms = Some(61 * MIN);
        assert!(preempted(&v).is_empty());
        // Checkpointed 30 s ago, job 11 loses 1.5 minutes a GPU with its restart, and waits
        // about the minute job 1 gains: 5 GPU-minutes, a third of that (QoS high over low
        // weighs 3) against job 1's two.
        v.running[1].checkpointed_ms = Some(59 * MIN + 30_000);
        assert_eq!(preempted(&v), [11]);
        // Checkpointed later still, job 10 would be the cheaper victim once the grace no
        // longer covers its end.
        v.running[0].checkpointed_ms = Some(59 * MIN + 45_000);
        assert_eq!(preempted(&v), [11]);
        v.config.set("preempt.grace", "30s").unwrap();
        assert_eq!(preempted(&v), [10]);
    }

    #[test]
    fn a_victim_the_job_does_not_need_is_spared() {
        // Cheapest first: 12 (1 GPU, a minute lost), 10 (1 GPU, 2 minutes), 11 (2 GPUs,
        // 10 minutes).
        let mut v = qos_view("high", 2);
        v.running = vec![
            RunningJob {
                qos: "low".into(),
                checkpointed_ms: Some(59 * MIN),
                ..running(12, "nlp", 0, &[0])
            },
            RunningJob {
                qos: "low".into(),
                checkpointed_ms: Some(58 * MIN),
                ..running(10, "nlp", 0, &[1])
            },
            RunningJob {
                qos: "low".into(),
                checkpointed_ms: Some(50 * MIN),
                ..running(11, "nlp", 0, &[2, 3])
            },
        ];
        // 12 and 10 free GPUs 0 and 1: enough, and both needed.
        assert_eq!(preempted(&v), [12, 10]);
        // With a job that needs 3, 12 and 10 are not enough; with 11 they are, and 10 is
        // then not needed: 12 + 11 make 3.
        v.pending[0].shapes[0].per_node = res(3);
        assert_eq!(preempted(&v), [12, 11]);
    }

    #[test]
    fn victims_are_looked_for_only_on_nodes_that_could_run_the_job() {
        // Job 1 wants 4 H100s: node a's. Nine A100 nodes hold 72 one-GPU jobs, each cheaper
        // to stop than either of node a's, more than a reclaim ever looks at.
        let mut v = qos_view("high", 4);
        v.pending[0].shapes[0].gpu_model = Some("h100".into());
        let h100_node = v.nodes[0].clone();
        let a100 = |name: String| {
            let capacity = Resources {
                gpus: 8,
                cpus: 8,
                mem_mib: 64,
            };
            NodeView {
                name,
                gpus: (0..8)
                    .map(|index| Gpu {
                        index,
                        model: "A100".into(),
                        ..h100_node.gpus[0].clone()
                    })
                    .collect(),
                capacity,
                free: Resources::default(),
                free_gpus: vec![],
                ..h100_node.clone()
            }
        };
        for n in 0..9u64 {
            let name = format!("b{n}");
            v.nodes.push(a100(name.clone()));
            for gpu in 0..8u32 {
                let mut cheap = RunningJob {
                    qos: "low".into(),
                    checkpointed_ms: Some(59 * MIN),
                    ..running(100 + n * 8 + u64::from(gpu), "nlp", 0, &[gpu])
                };
                cheap.parts[0].node = name.clone();
                v.running.push(cheap);
            }
        }
        assert_eq!(preempted(&v), [10, 11]);
    }

    #[test]
    fn a_guarantee_takes_back_from_the_youngest_borrowers_only_what_it_needs() {
        let d = schedule(&view(Some(4), None, 2));
        assert!(d.starts.is_empty());
        let victims: Vec<(u64, u64, &str)> = d
            .preempt
            .iter()
            .map(|v| (v.job, v.for_job, v.reason.as_str()))
            .collect();
        assert_eq!(
            victims,
            [(
                11,
                1,
                "account vision reclaims its guaranteed GPUs for job 1"
            )]
        );
        // The place job 1 is counted to take: the borrower's GPUs.
        assert_eq!(d.preempt[0].place[0].gpus, [2, 3]);
        assert_eq!(preempted(&view(Some(4), None, 4)), [11, 10]);
    }

    #[test]
    fn nothing_is_taken_beyond_a_guarantee_or_from_a_lender_within_its_own() {
        // Beyond vision's guarantee of 2: it waits like anyone else.
        assert!(preempted(&view(Some(2), None, 4)).is_empty());
        // No guarantee, nothing owed.
        assert!(preempted(&view(None, None, 2)).is_empty());
        // nlp holds exactly its own guarantee of 4: it lends nothing.
        assert!(preempted(&view(Some(4), Some(4), 2)).is_empty());
        // nlp's guarantee is 2: it gives back the 2 above it, no more.
        assert_eq!(preempted(&view(Some(4), Some(2), 2)), [11]);
        assert!(preempted(&view(Some(4), Some(2), 4)).is_empty());
    }

    #[test]
    fn jobs_inside_the_owed_account_and_lenders_at_their_guarantee_are_never_taken() {
        // research (guarantee 4) holds 2 through vision; nlp, also under research, waits.
        // Vision's job uses research's guarantee rather than borrowing from it; team's job is
        // within team's and ops' own guarantees.
        let mut v = view(None, None, 2);
        v.accounts = vec![
            account("root", None),
            AccountView {
                guarantee_gpus: Some(4),
                ..account("research", None)
            },
            AccountView {
                parent: Some("research".into()),
                ..account("vision", None)
            },
            AccountView {
                parent: Some("research".into()),
                ..account("nlp", None)
            },
            AccountView {
                guarantee_gpus: Some(2),
                ..account("ops", None)
            },
            AccountView {
                parent: Some("ops".into()),
                guarantee_gpus: Some(2),
                ..account("team", None)
            },
        ];
        v.pending[0].account = "nlp".into();
        // Job 11 (youngest) is vision's, inside research; job 10 is team's, at team's own
        // guarantee of 2 although ops holds 2, at its own 2: nothing may be taken.
        v.running[1].account = "vision".into();
        v.running[0].account = "team".into();
        assert!(preempted(&v).is_empty(), "{:?}", schedule(&v));
        // Without team's guarantee, ops (guarantee 2, holds 2) still lends nothing.
        v.accounts[5].guarantee_gpus = None;
        assert!(preempted(&v).is_empty());
        // Without ops' guarantee either, team's job is the borrower to take.
        v.accounts[4].guarantee_gpus = None;
        assert_eq!(preempted(&v), [10]);
    }

    #[test]
    fn jobs_already_stopping_are_counted_before_anyone_else_is_preempted() {
        let mut v = view(Some(4), None, 2);
        v.running[1].stopping = true;
        assert!(preempted(&v).is_empty());
    }
}
