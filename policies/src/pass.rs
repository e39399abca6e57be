//! One scheduling pass: in priority order, give each job the first nodes that fit it, with
//! backfill.
//!
//! A job that cannot start now gets a reservation (up to `backfill.depth` of them per
//! pass): the earliest moment, judged by the time limits of running jobs, at which it fits,
//! and the very GPUs, CPUs and memory it will take then. A job behind it may start now only
//! on resources no reservation needs during its own time limit (a job without a limit runs
//! for ever, as far as anyone can plan), so backfill never delays a reserved job, and a big
//! gang starts within a bounded time under a stream of small jobs. A blocked job that can
//! get no reservation (what it waits for is held by jobs without time limits) blocks every
//! job behind it, as without backfill.

use std::collections::BTreeSet;

use gantry_model::units::format_duration_ms;
use gantry_model::{JobId, Resources, Shape};

use crate::accounts::{GpuLedger, Tree};
use crate::config::SchedulingProfile;
use crate::feasibility::never_fits;
use crate::fragmentation::Demand;
use crate::placement::{Pick, Picks, place, shortage, total_gpus};
use crate::priority::{RankKey, Ranker, rank};
use crate::profile::{Profile, Share, shares};
use crate::reclaim::{Ask, Claim, Kept, Reclaimed, Reclaimer};
use crate::topology::Topology;
use crate::view::{
    ClusterView, Decisions, NodeView, PartPlan, PendingJob, Start, Victim, WaitReason,
};

/// One scheduling pass. Jobs that could never run on the known nodes block nothing. A job
/// with alternatives runs in the shape that would finish first, judged by time limits.
pub fn schedule(view: &ClusterView) -> Decisions {
    full_pass(view).decisions
}

/// A pass over every pending job, and what it leaves behind for jobs arriving after it.
#[derive(Clone)]
pub(crate) struct FullPass {
    pub(crate) decisions: Decisions,
    pub(crate) pass: Pass,
    pub(crate) ranker: Ranker,
    /// The queue place of every job in `decisions.ranked`, in the same order.
    pub(crate) keys: Vec<RankKey>,
    /// The place of the last job that holds the ones behind it back: a reservation, a
    /// reclaim, or a job blocked without one. A job ranked behind it sees the pass exactly
    /// as it ended.
    pub(crate) holds_back: Option<RankKey>,
}

/// How many arrivals the lists of a pass have room for (more only cost a copy).
pub(crate) const ARRIVAL_ROOM: usize = 1024;

pub(crate) fn full_pass(view: &ClusterView) -> FullPass {
    let mut pass = Pass::new(view);
    let ranker = Ranker::new(view, &pass.tree);
    let mut reclaimer = Reclaimer::new(view, &pass.tree);
    // Room for the jobs a plan decides after the pass, so the first of them does not copy
    // the queue-long lists.
    let room = view.pending.len() + ARRIVAL_ROOM;
    let mut decisions = Decisions {
        ranked: Vec::with_capacity(room),
        waiting: Vec::with_capacity(room),
        ..Decisions::default()
    };
    let mut keys = Vec::with_capacity(room);
    let mut holds_back = None;
    for (shape, held) in reclaimer.places_of_moving(&pass.profile) {
        pass.profile.claim(&shape, view.now_ms, held);
    }
    for (index, priority, key) in rank(view, &pass.tree, &ranker) {
        let job = &view.pending[index];
        decisions.ranked.push((job.id, priority));
        keys.push(key);
        let take_back = TakeBack::From(&mut reclaimer);
        if pass.consider(view, take_back, job, view.now_ms, &mut decisions) == Some(true) {
            holds_back = Some(key);
        }
    }
    FullPass {
        decisions,
        pass,
        ranker,
        keys,
        holds_back,
    }
}

/// Whether GPUs may be taken back from running jobs for the job considered.
pub(crate) enum TakeBack<'r, 'v> {
    /// Yes, by this reclaimer (a full pass).
    From(&'r mut Reclaimer<'v>),
    /// No; `consider` returns `None` when the job could not start now and its QoS might
    /// preempt others (an arrival decided from a plan: a full pass must decide it).
    Ask,
    /// No, and it would not be needed.
    Never,
}

/// One way to run a job, found in this pass: which shape, from when, until when, where.
struct Candidate {
    shape: usize,
    start: u64,
    end: Option<u64>,
    picks: Picks,
    /// Starts now only once these borrowers are stopped.
    reclaim: Option<Reclaimed>,
}

/// What a pass has decided so far: the resources and quotas it has claimed over time, and
/// whether a job already holds everything behind it back.
#[derive(Clone)]
pub(crate) struct Pass {
    pub(crate) tree: Tree,
    profile: Profile,
    ledger: GpuLedger,
    /// Sizes the queue wants, for fragmentation-aware starts.
    pub(crate) demand: Demand,
    feasibility: Feasibility,
    cannot_start: CannotStartNow,
    reserved: Vec<JobId>,
    blocked_by: Option<JobId>,
    depth: usize,
    kind: SchedulingProfile,
}

impl Pass {
    fn new(view: &ClusterView) -> Pass {
        let kind = view.config.profile;
        let depth = match kind {
            SchedulingProfile::Gantry => {
                usize::try_from(view.config.reservation_depth).unwrap_or(usize::MAX)
            }
            // EASY backfill: one reservation.
            SchedulingProfile::SlurmLike => 1,
            SchedulingProfile::Fifo => 0,
        };
        let tree = Tree::new(view);
        let demand = match kind {
            SchedulingProfile::Gantry => Demand::of(view),
            // The baselines place first fit.
            _ => Demand::default(),
        };
        Pass {
            ledger: GpuLedger::new(view, &tree),
            profile: Profile::new(view),
            tree,
            demand,
            feasibility: Feasibility::default(),
            cannot_start: CannotStartNow::default(),
            reserved: Vec::new(),
            blocked_by: None,
            depth,
            kind,
        }
    }

    pub(crate) fn kind(&self) -> SchedulingProfile {
        self.kind
    }

    /// Decides `job` at `now`, after every job ranked before it, into `decisions` (its start,
    /// or why it waits, and the jobs stopped for it). Returns whether it now holds the jobs
    /// behind it back (a reservation, a reclaim, or a block), or `None` when `take_back` asks
    /// and it would need GPUs taken back (the pass is then spent).
    pub(crate) fn consider(
        &mut self,
        view: &ClusterView,
        mut take_back: TakeBack,
        job: &PendingJob,
        now: u64,
        decisions: &mut Decisions,
    ) -> Option<bool> {
        let kind = self.kind;
        let mut never = None;
        let mut possible: Vec<(usize, &Shape)> = job
            .shapes
            .iter()
            .enumerate()
            .filter(
                |(_, shape)| match self.feasibility.never_fits(&view.nodes, shape) {
                    Some(why) => {
                        never.get_or_insert(why);
                        false
                    }
                    None => true,
                },
            )
            .collect();
        if kind != SchedulingProfile::Gantry {
            // The baselines know one request per job, as Slurm does: the first that can run
            // here (the main request, unless only an alternative could ever fit).
            possible.truncate(1);
        }
        if possible.is_empty() {
            let why = never.unwrap_or_else(|| "the job names no way to run".into());
            decisions.waiting.push((job.id, WaitReason::NeverFits(why)));
            return Some(false);
        }
        if !job.waiting_on.is_empty() {
            let why = WaitReason::Dependency {
                on: job.waiting_on.clone(),
            };
            decisions.waiting.push((job.id, why));
            return Some(false);
        }
        if let Some(name) = &job.reservation {
            // Inside its reservation it competes with the other members only.
            self.start_in_reservation(view, take_back, (job, &possible), name, now, decisions);
            return Some(false);
        }
        if let Some(behind) = self.blocked_by {
            decisions
                .waiting
                .push((job.id, WaitReason::Priority { behind }));
            return Some(false);
        }
        let Pass {
            tree,
            profile,
            ledger,
            demand,
            cannot_start,
            ..
        } = self;
        // A shape is a candidate only within its account's GPU caps over the time it would
        // run, reservations included; a job held back by its caps alone waits without holding
        // anyone else back (the cap, not the cluster, is what it waits for).
        let mut over_limit = None;
        let mut within_limits = |start: u64, shape: &Shape| {
            let end = shape.end_if_started(start);
            match ledger.over_limit(tree, &job.account, start, end, total_gpus(shape)) {
                Some(why) => {
                    over_limit.get_or_insert(why);
                    false
                }
                None => true,
            }
        };
        // A claimant keeps the place the jobs stopped for it free, while it holds (and its
        // account's caps allow).
        let kept = match (&take_back, &job.claimant) {
            (TakeBack::From(reclaimer), Some(claim)) if kind == SchedulingProfile::Gantry => {
                let ask = Ask {
                    tree,
                    profile,
                    job,
                    shape: &job.shapes[0],
                };
                reclaimer.kept(&ask, &claim.place)
            }
            _ => None,
        }
        .filter(|_| within_limits(now, &job.shapes[0]));
        let keeps = kept.is_some();
        let mut options: Vec<Candidate> = Vec::new();
        let mut waits_at_kept = None;
        match kept {
            Some(Kept::Free(picks)) => options.push(Candidate {
                shape: 0,
                start: now,
                end: job.shapes[0].end_if_started(now),
                picks,
                reclaim: None,
            }),
            Some(Kept::Stopping(plan)) => waits_at_kept = Some(plan),
            None => {}
        }
        let kept_free = !options.is_empty();
        for &(index, shape) in possible.iter().filter(|_| !kept_free) {
            if !within_limits(now, shape) {
                continue;
            }
            let end = shape.end_if_started(now);
            if cannot_start.known(shape, end) {
                continue;
            }
            let free_now = profile.free_during(now, end);
            match place(
                shape,
                &view.nodes,
                &free_now,
                Pick::Start(demand),
                &view.topology,
            ) {
                Some(picks) => options.push(Candidate {
                    shape: index,
                    start: now,
                    end,
                    picks,
                    reclaim: None,
                }),
                None => cannot_start.record(shape, end),
            }
        }
        // A claimant that can start now elsewhere does; otherwise it waits at its place while
        // what holds it stops (a stop that never ends holds it up, but no one else).
        if options.is_empty()
            && let Some(plan) = waits_at_kept
        {
            options.push(Candidate {
                shape: 0,
                start: now,
                end: job.shapes[0].end_if_started(now),
                picks: plan.picks.clone(),
                reclaim: Some(plan),
            });
        }
        // Below its account's guarantee, or with a QoS that preempts others', the main
        // request can also start now on GPUs taken back: one more candidate, chosen if it
        // finishes first.
        if kind == SchedulingProfile::Gantry
            && !keeps
            && !options.iter().any(|o| o.shape == 0)
            && possible.iter().any(|(index, _)| *index == 0)
            && within_limits(now, &job.shapes[0])
        {
            match &mut take_back {
                TakeBack::From(reclaimer) => {
                    let main = &job.shapes[0];
                    // Late: starting now meets its deadline, waiting for its earliest later
                    // start would not.
                    let late = job.deadline_ms.is_some_and(|deadline| {
                        main.end_if_started(now).is_some_and(|end| end <= deadline)
                            && earliest_later_start(
                                main,
                                &view.nodes,
                                &view.topology,
                                profile,
                                |start| within_limits(start, main),
                            )
                            .and_then(|(start, _)| main.end_if_started(start))
                            .is_none_or(|end| end > deadline)
                    });
                    let ask = Ask {
                        tree,
                        profile,
                        job,
                        shape: main,
                    };
                    if let Some(plan) = reclaimer.plan(&ask, late) {
                        options.push(Candidate {
                            shape: 0,
                            start: now,
                            end: job.shapes[0].end_if_started(now),
                            picks: plan.picks.clone(),
                            reclaim: Some(plan),
                        });
                    }
                }
                TakeBack::Ask => return None,
                TakeBack::Never => {}
            }
        }
        let may_reserve = self.reserved.len() < self.depth;
        // A later start may still finish first when the job has alternatives.
        if may_reserve && !keeps && (options.is_empty() || possible.len() > 1) {
            for &(index, shape) in &possible {
                if options.iter().any(|o| o.shape == index) {
                    continue;
                }
                let later =
                    earliest_later_start(shape, &view.nodes, &view.topology, profile, |start| {
                        within_limits(start, shape)
                    });
                if let Some((start, picks)) = later {
                    options.push(Candidate {
                        shape: index,
                        start,
                        end: shape.end_if_started(start),
                        picks,
                        reclaim: None,
                    });
                }
            }
        }
        let best = options.into_iter().min_by_key(|o| {
            let end = o.end.unwrap_or(u64::MAX);
            (end, o.start, o.shape, o.reclaim.is_some())
        });
        let Some(chosen) = best else {
            match (over_limit, self.reserved.first()) {
                (Some(why), _) => decisions.waiting.push((job.id, WaitReason::Quota(why))),
                (None, Some(&first)) if !may_reserve => decisions
                    .waiting
                    .push((job.id, WaitReason::Priority { behind: first })),
                _ => {
                    let (_, shape) = possible[0];
                    let free_now = profile.free_during(now, shape.end_if_started(now));
                    let why = shortage(shape, &view.nodes, &free_now);
                    decisions.waiting.push((job.id, WaitReason::Resources(why)));
                    self.blocked_by = Some(job.id);
                    return Some(true);
                }
            }
            return Some(false);
        };
        let shape = &job.shapes[chosen.shape];
        let held = if chosen.start > now && kind == SchedulingProfile::SlurmLike {
            whole_nodes(&view.nodes, &chosen.picks)
        } else {
            shares(shape, &chosen.picks)
        };
        profile.claim(shape, chosen.start, held);
        let end = shape.end_if_started(chosen.start);
        ledger.claim(tree, &job.account, chosen.start, end, total_gpus(shape));
        if let Some(plan) = chosen.reclaim {
            if let TakeBack::From(reclaimer) = take_back {
                reclaimer.commit(&plan);
            }
            // Where the moved jobs start again is theirs: later jobs of the pass keep off, and
            // the passes while they stop keep it for them.
            for (mover, shape, picks) in &plan.moves {
                profile.claim(shape, now, shares(shape, picks));
                let place = parts(shape, &view.nodes, picks.clone());
                decisions.moved.push((*mover, place));
            }
            let place = parts(shape, &view.nodes, plan.picks.clone());
            for victim in &plan.victims {
                decisions.preempt.push(Victim {
                    job: *victim,
                    for_job: job.id,
                    reason: plan.claim.victim_reason(job.id),
                    place: place.clone(),
                });
            }
            let why = match plan.claim {
                // Nothing stopped for it (now): what it waits for is being stopped already,
                // for it or for whatever reason (another job's preemption, a cancel, a drain).
                Claim::Kept => WaitReason::Stopping {
                    awaits: plan.awaits,
                },
                _ if plan.victims.is_empty() => WaitReason::Stopping {
                    awaits: plan.awaits,
                },
                Claim::Guarantee(_) => WaitReason::Reclaiming {
                    stopping: plan.victims,
                },
                Claim::Qos(qos) => WaitReason::Preempting {
                    stopping: plan.victims,
                    qos,
                },
                Claim::Deadline => WaitReason::Deadline {
                    stopping: plan.victims,
                },
                Claim::Defragment => WaitReason::Defragmenting {
                    moving: plan.victims,
                },
            };
            decisions.waiting.push((job.id, why));
            Some(true)
        } else if chosen.start == now {
            if let TakeBack::From(reclaimer) = take_back {
                reclaimer.started(tree, &job.account, shape);
            }
            self.demand.started(job, shape);
            decisions.starts.push(Start {
                job: job.id,
                shape: u32::try_from(chosen.shape).unwrap_or(u32::MAX),
                parts: parts(shape, &view.nodes, chosen.picks),
            });
            Some(false)
        } else {
            self.reserved.push(job.id);
            let why = WaitReason::Reserved {
                in_ms: chosen.start.saturating_sub(now),
            };
            decisions.waiting.push((job.id, why));
            Some(true)
        }
    }
}

impl Pass {
    /// A member of reservation `name` starts on its nodes, inside its window and within its
    /// account's caps, or waits saying why. It never holds anyone back. `possible`: the
    /// shapes it may run in, by index.
    fn start_in_reservation(
        &mut self,
        view: &ClusterView,
        take_back: TakeBack,
        (job, possible): (&PendingJob, &[(usize, &Shape)]),
        name: &str,
        now: u64,
        decisions: &mut Decisions,
    ) {
        let wait = |decisions: &mut Decisions, why: String| {
            decisions
                .waiting
                .push((job.id, WaitReason::Reservation(why)));
        };
        let Some(reservation) = view.reservations.iter().find(|r| r.name == name) else {
            return wait(
                decisions,
                format!("reservation {name} does not exist any more"),
            );
        };
        if now < reservation.start_ms {
            let opens = format_duration_ms(reservation.start_ms - now);
            return wait(decisions, format!("reservation {name} opens in {opens}"));
        }
        let inside: BTreeSet<usize> = view
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| reservation.nodes.contains(&n.name))
            .map(|(i, _)| i)
            .collect();
        let mut fits_in_time = false;
        for &(index, shape) in possible {
            let end = shape.end_if_started(now);
            if end.is_none_or(|end| end > reservation.end_ms) {
                continue;
            }
            fits_in_time = true;
            let total = total_gpus(shape);
            if let Some(why) = self
                .ledger
                .over_limit(&self.tree, &job.account, now, end, total)
            {
                decisions.waiting.push((job.id, WaitReason::Quota(why)));
                return;
            }
            let mut free = self.profile.free_during_for(now, end, &[], Some(name));
            for (i, node) in free.iter_mut().enumerate() {
                if !inside.contains(&i) {
                    node.take(&node.res.clone(), &node.gpus.clone());
                } else if let Some(held) = reservation.gpus.get(&view.nodes[i].name) {
                    let others: Vec<u32> = node
                        .gpus
                        .iter()
                        .copied()
                        .filter(|g| !held.contains(g))
                        .collect();
                    node.take(&Resources::default(), &others);
                }
            }
            let pick = Pick::Start(&self.demand);
            let Some(picks) = place(shape, &view.nodes, &free, pick, &view.topology) else {
                continue;
            };
            self.profile.claim(shape, now, shares(shape, &picks));
            self.ledger.claim(&self.tree, &job.account, now, end, total);
            if let TakeBack::From(reclaimer) = take_back {
                reclaimer.started(&self.tree, &job.account, shape);
            }
            self.demand.started(job, shape);
            decisions.starts.push(Start {
                job: job.id,
                shape: u32::try_from(index).unwrap_or(u32::MAX),
                parts: parts(shape, &view.nodes, picks),
            });
            return;
        }
        let left = format_duration_ms(reservation.end_ms.saturating_sub(now));
        let why = if fits_in_time {
            format!("waiting for room in reservation {name}")
        } else {
            format!("its time limit does not fit in what is left of reservation {name} ({left})")
        };
        wait(decisions, why);
    }
}

/// Whether two shapes ask for the same resources on the same nodes (time limits aside).
fn same_ask(a: &Shape, b: &Shape) -> bool {
    a.num_nodes == b.num_nodes
        && a.per_node == b.per_node
        && a.gpu_model == b.gpu_model
        && a.pool == b.pool
        && a.labels == b.labels
}

/// Per shape: whether any known node could ever run it (a look at every node, done once per
/// shape and pass).
#[derive(Default, Clone)]
struct Feasibility(Vec<(Shape, Option<String>)>);

impl Feasibility {
    fn never_fits(&mut self, nodes: &[NodeView], shape: &Shape) -> Option<String> {
        if let Some((_, never)) = self.0.iter().find(|(known, _)| same_ask(known, shape)) {
            return never.clone();
        }
        let never = never_fits(nodes, shape);
        self.0.push((shape.clone(), never.clone()));
        never
    }
}

/// Shapes that cannot start now, each with the earliest end it was tried with. Within a
/// pass claims are only ever added, so free resources only shrink: a shape that did not fit
/// until some end fits no better until a later one, and need not be placed again. A long
/// queue holds few shapes, so most jobs behind the reservations cost a lookup.
#[derive(Default, Clone)]
struct CannotStartNow(Vec<(Shape, Option<u64>)>);

impl CannotStartNow {
    fn known(&self, shape: &Shape, end: Option<u64>) -> bool {
        self.0.iter().any(|(tried_shape, tried)| {
            same_ask(tried_shape, shape)
                && match (tried, end) {
                    (_, None) => true,
                    (None, Some(_)) => false,
                    (Some(tried), Some(end)) => *tried <= end,
                }
        })
    }

    fn record(&mut self, shape: &Shape, end: Option<u64>) {
        self.0.push((shape.clone(), end));
    }
}

/// The first moment after now at which `shape` fits for its whole time limit and `allowed`
/// (the account's caps) agrees, and where.
pub(crate) fn earliest_later_start(
    shape: &Shape,
    nodes: &[NodeView],
    topology: &Topology,
    profile: &Profile,
    mut allowed: impl FnMut(u64) -> bool,
) -> Option<(u64, Picks)> {
    profile.first_later(
        shape.num_nodes,
        shape.per_node.gpus,
        |start| shape.end_if_started(start),
        |start, free| {
            let picks = place(shape, nodes, free, Pick::Reserve, topology)?;
            allowed(start).then_some(picks)
        },
    )
}

/// Slurm reserves whole nodes for a blocked job, not the GPUs it needs.
fn whole_nodes(nodes: &[NodeView], picks: &[(usize, Vec<u32>)]) -> Vec<Share> {
    picks
        .iter()
        .map(|(node, _)| Share {
            node: *node,
            res: nodes[*node].capacity,
            gpus: nodes[*node].gpus.iter().map(|g| g.index).collect(),
        })
        .collect()
}

fn parts(shape: &Shape, nodes: &[NodeView], picks: Picks) -> Vec<PartPlan> {
    picks
        .into_iter()
        .map(|(i, gpus)| PartPlan {
            node: nodes[i].name.clone(),
            gpus,
            cpus: shape.per_node.cpus,
            mem_mib: shape.per_node.mem_mib,
        })
        .collect()
}
