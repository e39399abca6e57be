//! The discrete-event engine: jobs arrive, the scheduler's own pass
//! (`gantry_policies::schedule`) decides what starts, jobs end when their work is done or at
//! their time limit, and borrowers the pass preempts go back to the queue with their work
//! lost plus a restart cost. Scheduling happens at every event (arrivals and ends), or, with a
//! round length, at fixed ticks. Same inputs, same output: nothing here reads a clock or a
//! random source.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use gantry_model::{JobId, Resources, Shape};
use gantry_policies::{
    Claimant, ClusterView, Held, NodeView, PendingJob, Plan, PolicyConfig, Preemptions, RunningJob,
    Start, Topology, never_fits,
};
use gantry_state::usage::Usage;

use crate::trace::TraceJob;

/// How a run is set up, beyond the trace and the cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: PolicyConfig,
    /// Jobs without a time limit get their duration times this (a perfect estimate at 1.0);
    /// `None`: they run without one.
    pub limit_factor: Option<f64>,
    /// Added to the remaining work of a preempted job.
    pub restart_cost_ms: u64,
    /// Schedule only every this often instead of at every event.
    pub round_ms: Option<u64>,
}

/// How one job went.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub account: String,
    pub qos: String,
    pub gpus: u64,
    pub submit_ms: u64,
    pub first_start_ms: u64,
    pub end_ms: u64,
    /// Its work, as the trace gives it.
    pub duration_ms: u64,
    /// Time it held its GPUs, over every attempt.
    pub run_ms: u64,
    /// It reached its time limit before its work was done.
    pub timed_out: bool,
    pub deadline_ms: Option<u64>,
    pub preemptions: u32,
    /// GPU-milliseconds of work lost to preemption.
    pub lost_gpu_ms: u64,
}

/// The cluster at one moment, for utilization and queue plots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    pub busy_gpus: u64,
    pub queued: usize,
    /// Free GPUs no waiting job could use: on nodes with fewer free GPUs than the smallest
    /// per-node request queued.
    pub fragmented_gpus: u64,
    pub free_gpus: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub jobs: Vec<JobRecord>,
    /// Jobs no node of the cluster could ever run, refused as the scheduler refuses them at
    /// submit: (job, why).
    pub refused: Vec<(JobId, String)>,
    pub samples: Vec<Sample>,
    pub capacity_gpus: u64,
    pub passes: u64,
}

/// A job the engine knows: what is left of its work, and how it has gone so far.
struct Tracked {
    trace: TraceJob,
    remaining_ms: u64,
    /// Work kept by its last checkpoint before a preemption.
    saved_ms: u64,
    limit_ms: Option<u64>,
    first_start_ms: Option<u64>,
    run_ms: u64,
    preemptions: u32,
    lost_gpu_ms: u64,
    /// Moved to defragment and not started since: it ranks ahead of the rest of the queue.
    moved: bool,
    /// Jobs were preempted for it, and it has not started since: it ranks first and keeps
    /// its place (`PendingJob::claimant`).
    claimant: Option<Claimant>,
}

impl Tracked {
    /// Its last checkpoint in the run that started at `start`, if it took one: the work it
    /// keeps, and when. It checkpoints every `checkpoint_interval` of work, which starts after
    /// the restart cost on a restart.
    fn last_checkpoint(&self, start: u64, now: u64, restart_cost: u64) -> Option<(u64, u64)> {
        let every = self.trace.checkpoint_interval_ms.filter(|e| *e > 0)?;
        let overhead = if self.preemptions > 0 {
            restart_cost
        } else {
            0
        };
        let worked = now.saturating_sub(start).saturating_sub(overhead);
        let progress = (self.saved_ms + worked).min(self.trace.duration_ms);
        let kept = progress - progress % every;
        (kept > self.saved_ms).then(|| (kept, start + overhead + (kept - self.saved_ms)))
    }
}

struct Running {
    start_ms: u64,
    end_ms: u64,
    parts: Vec<Held>,
}

pub fn simulate(
    trace: &[TraceJob],
    nodes: Vec<NodeView>,
    topology: Topology,
    settings: &Settings,
) -> Run {
    let capacity_gpus: u64 = nodes.iter().map(|n| u64::from(n.capacity.gpus)).sum();
    let nodes_capacity = nodes.iter().fold(Resources::default(), |sum, n| {
        sum.saturating_add(&n.capacity)
    });
    let mut sim = Engine {
        settings,
        nodes,
        tracked: BTreeMap::new(),
        pending: Vec::new(),
        running: BTreeMap::new(),
        ends: BinaryHeap::new(),
        usage: Usage::default(),
        records: Vec::new(),
        refused: Vec::new(),
        samples: Vec::new(),
        capacity_gpus,
        capacity: nodes_capacity,
        passes: 0,
        topology: std::sync::Arc::new(topology),
        plan: None,
        preemptions: Preemptions::default(),
    };
    let mut arrivals = trace.iter().peekable();
    let mut next_round = settings.round_ms.map(|_| 0);
    loop {
        let next_arrival = arrivals.peek().map(|j| j.submit_ms);
        let next_end = sim.ends.peek().map(|Reverse((at, _))| *at);
        // Rounds go on only while anything is left to do.
        let busy = next_arrival.is_some() || !sim.pending.is_empty() || !sim.running.is_empty();
        let round = next_round.filter(|_| busy);
        let Some(now) = [next_arrival, next_end, round].into_iter().flatten().min() else {
            break;
        };
        while let Some(Reverse((at, id))) = sim.ends.peek().copied() {
            if at > now {
                break;
            }
            sim.ends.pop();
            sim.end(id, at);
        }
        let mut arrived = Vec::new();
        while let Some(job) = arrivals.next_if(|j| j.submit_ms <= now) {
            if sim.arrive(job) {
                arrived.push(job.id);
            }
        }
        let tick = match (settings.round_ms, next_round) {
            (Some(round), Some(at)) if at <= now => {
                next_round = Some(at + round.max(1));
                true
            }
            (Some(_), _) => false,
            (None, _) => true,
        };
        if tick && !sim.pending.is_empty() && !sim.decide_from_plan(&arrived, now) {
            sim.schedule(now);
        }
        sim.sample(now);
    }
    Run {
        jobs: sim.records,
        refused: sim.refused,
        samples: sim.samples,
        capacity_gpus,
        passes: sim.passes,
    }
}

struct Engine<'s> {
    settings: &'s Settings,
    nodes: Vec<NodeView>,
    tracked: BTreeMap<JobId, Tracked>,
    /// Waiting jobs, in arrival (and requeue) order.
    pending: Vec<JobId>,
    running: BTreeMap<JobId, Running>,
    /// (when, job): ends by work done or time limit.
    ends: BinaryHeap<Reverse<(u64, JobId)>>,
    /// Fair-share charges, bucketed and pruned as the scheduler's state does.
    usage: Usage,
    records: Vec<JobRecord>,
    refused: Vec<(JobId, String)>,
    samples: Vec<Sample>,
    capacity_gpus: u64,
    /// The whole cluster's resources, for dominant shares.
    capacity: Resources,
    passes: u64,
    topology: std::sync::Arc<Topology>,
    /// The last full pass, while only arrivals have happened since: it decides them alone,
    /// as the scheduler does (see `gantry_policies::Plan`).
    plan: Option<Plan>,
    /// For the disruption budget.
    preemptions: Preemptions,
}

impl Engine<'_> {
    /// Queues a job; `false` when no node could ever run it (it is refused).
    fn arrive(&mut self, job: &TraceJob) -> bool {
        let limit_ms = job.time_limit_ms.or_else(|| {
            self.settings
                .limit_factor
                .map(|f| ((job.duration_ms as f64 * f).ceil() as u64).max(1))
        });
        let tracked = Tracked {
            trace: job.clone(),
            remaining_ms: job.duration_ms,
            saved_ms: 0,
            limit_ms,
            first_start_ms: None,
            run_ms: 0,
            preemptions: 0,
            lost_gpu_ms: 0,
            moved: false,
            claimant: None,
        };
        if let Some(why) = never_fits(&self.nodes, &self.shape(&tracked)) {
            self.refused.push((job.id, why));
            return false;
        }
        self.tracked.insert(job.id, tracked);
        self.pending.push(job.id);
        true
    }

    fn shape(&self, job: &Tracked) -> Shape {
        Shape {
            num_nodes: job.trace.num_nodes,
            per_node: per_node(job.trace.gpus_per_node),
            gpu_model: job.trace.gpu_model.clone(),
            time_limit_ms: job.limit_ms,
            pool: None,
            labels: vec![],
        }
    }

    fn pending_job(&self, id: JobId) -> Option<PendingJob> {
        let job = self.tracked.get(&id)?;
        Some(PendingJob {
            account: job.trace.account.clone(),
            qos: job.trace.qos.clone(),
            deadline_ms: job.trace.deadline_ms,
            submit_ms: job.trace.submit_ms,
            moved: job.moved,
            claimant: job.claimant.clone(),
            preemptions: job.preemptions,
            ..PendingJob::single(job.trace.id, self.shape(job))
        })
    }

    /// Decides `arrived` (and nothing else happened since the last pass) from that pass's
    /// plan; `false` when a full pass is needed instead.
    fn decide_from_plan(&mut self, arrived: &[JobId], now: u64) -> bool {
        // Rounds decide everything that arrived since the last one together: a pass.
        if self.plan.is_none() || self.settings.round_ms.is_some() {
            return false;
        }
        let mut starts = Vec::new();
        for id in arrived {
            let Some(job) = self.pending_job(*id) else {
                continue;
            };
            let Some(plan) = self.plan.as_mut() else {
                return false;
            };
            match plan.arrive(job, now) {
                Ok(arrival) => starts.extend(arrival.start),
                Err(_) => {
                    self.plan = None;
                    // Starts decided so far stand: the plan had them claimed already.
                    self.start_all(starts, now);
                    return false;
                }
            }
        }
        self.start_all(starts, now);
        true
    }

    fn view(&self, now: u64) -> ClusterView {
        let pending = self
            .pending
            .iter()
            .filter_map(|id| self.pending_job(*id))
            .collect();
        let running = self
            .running
            .iter()
            .filter_map(|(id, run)| Some((id, run, self.tracked.get(id)?)))
            .map(|(id, run, job)| RunningJob {
                id: *id,
                account: job.trace.account.clone(),
                start_ms: run.start_ms,
                stopping: false,
                moving_to: None,
                ends_at_ms: job.limit_ms.map(|limit| run.start_ms + limit),
                parts: run.parts.clone(),
                qos: job.trace.qos.clone(),
                checkpointed_ms: job
                    .last_checkpoint(run.start_ms, now, self.settings.restart_cost_ms)
                    .map(|(_, at)| at),
                movable: job.trace.checkpoint_interval_ms.map(|_| self.shape(job)),
                deadline_ms: job.trace.deadline_ms,
                preemptions: job.preemptions,
            })
            .collect();
        ClusterView {
            now_ms: now,
            nodes: self.nodes.clone(),
            pending,
            running,
            config: self.settings.config.clone(),
            usage: self.usage.charges(),
            accounts: Vec::new(),
            topology: self.topology.clone(),
            preempted_last_hour: self.preemptions.last_hour(now),
            reservations: Vec::new(),
        }
    }

    /// Full passes at `now`: after one that preempts, another starts the jobs the victims
    /// made room for (victims stop at once: the simulator has no stop delay).
    fn schedule(&mut self, now: u64) {
        // Bounds a cycle of QoS levels preempting each other with no minimum runtime.
        const PASSES_PER_MOMENT: usize = 4;
        for _ in 0..PASSES_PER_MOMENT {
            self.passes += 1;
            let plan = Plan::new(self.view(now));
            let decisions = plan.decisions();
            let (preempt, starts) = (decisions.preempt.clone(), decisions.starts.clone());
            let moved: Vec<JobId> = decisions.moved.iter().map(|(id, _)| *id).collect();
            // A plan stands only while nothing but arrivals happens: not past a preemption.
            self.plan = preempt.is_empty().then_some(plan);
            for victim in &preempt {
                self.preempt(victim.job, now, moved.contains(&victim.job));
                if let Some(waiting) = self.tracked.get_mut(&victim.for_job) {
                    waiting.claimant = Some(Claimant {
                        since: waiting.claimant.as_ref().map_or(now, |c| c.since),
                        place: victim.place.clone(),
                    });
                }
            }
            self.start_all(starts, now);
            if preempt.is_empty() || self.pending.is_empty() {
                break;
            }
        }
    }

    fn start_all(&mut self, starts: Vec<Start>, now: u64) {
        for start in starts {
            let Some(job) = self.tracked.get_mut(&start.job) else {
                continue;
            };
            let res = per_node(job.trace.gpus_per_node);
            let mut parts = Vec::new();
            for part in start.parts {
                if let Some(node) = self.nodes.iter_mut().find(|n| n.name == part.node) {
                    node.free = node.free.saturating_sub(&res);
                    node.free_gpus.retain(|g| !part.gpus.contains(g));
                }
                parts.push(Held {
                    node: part.node,
                    res,
                    gpus: part.gpus,
                });
            }
            job.first_start_ms.get_or_insert(now);
            job.moved = false;
            job.claimant = None;
            let work_end = now + job.remaining_ms;
            let end_ms = job.limit_ms.map_or(work_end, |l| work_end.min(now + l));
            self.ends.push(Reverse((end_ms, start.job)));
            self.running.insert(
                start.job,
                Running {
                    start_ms: now,
                    end_ms,
                    parts,
                },
            );
            self.pending.retain(|id| *id != start.job);
        }
    }

    /// Gives a running job's GPUs back; what it ran is charged to its account.
    fn release(&mut self, id: JobId, now: u64) -> Option<Running> {
        let run = self.running.remove(&id)?;
        for part in &run.parts {
            if let Some(node) = self.nodes.iter_mut().find(|n| n.name == part.node) {
                node.free = node.free.saturating_add(&part.res);
                node.free_gpus.extend(part.gpus.iter().copied());
                node.free_gpus.sort_unstable();
            }
        }
        if let Some(job) = self.tracked.get_mut(&id) {
            job.run_ms += now.saturating_sub(run.start_ms);
            for part in &run.parts {
                self.usage.charge(
                    &job.trace.account,
                    &part.res,
                    &self.capacity,
                    run.start_ms,
                    now,
                    self.settings.config.half_life_ms,
                );
            }
        }
        Some(run)
    }

    fn end(&mut self, id: JobId, at: u64) {
        // A preempted job's old end is still in the heap: only the current one counts.
        if self.running.get(&id).is_none_or(|r| r.end_ms != at) {
            return;
        }
        self.plan = None;
        let Some(run) = self.release(id, at) else {
            return;
        };
        let Some(job) = self.tracked.remove(&id) else {
            return;
        };
        let done = at - run.start_ms >= job.remaining_ms;
        self.records.push(JobRecord {
            id,
            account: job.trace.account.clone(),
            qos: job.trace.qos.clone(),
            gpus: u64::from(job.trace.num_nodes) * u64::from(job.trace.gpus_per_node),
            submit_ms: job.trace.submit_ms,
            first_start_ms: job.first_start_ms.unwrap_or(at),
            end_ms: at,
            duration_ms: job.trace.duration_ms,
            run_ms: job.run_ms,
            timed_out: !done,
            deadline_ms: job.trace.deadline_ms,
            preemptions: job.preemptions,
            lost_gpu_ms: job.lost_gpu_ms,
        });
    }

    /// Stops a running job and queues it again. It keeps the work up to its last checkpoint
    /// (every `checkpoint_interval` of work; none without one); the rest of this attempt,
    /// restart cost included, is lost, and the next attempt pays the restart cost again.
    fn preempt(&mut self, id: JobId, now: u64, moved: bool) {
        let Some(run) = self.release(id, now) else {
            return;
        };
        let restart = self.settings.restart_cost_ms;
        if let Some(job) = self.tracked.get_mut(&id) {
            let ran = now - run.start_ms;
            let gpus: u64 = run.parts.iter().map(|p| u64::from(p.res.gpus)).sum();
            let saved = job
                .last_checkpoint(run.start_ms, now, restart)
                .map_or(job.saved_ms, |(saved, _)| saved);
            job.preemptions += 1;
            job.moved = moved;
            job.lost_gpu_ms += (ran - (saved - job.saved_ms).min(ran)) * gpus;
            job.saved_ms = saved;
            job.remaining_ms = job.trace.duration_ms - saved + restart;
            self.pending.push(id);
            self.preemptions.note(&job.trace.account, now);
        }
    }

    fn sample(&mut self, now: u64) {
        let free: u64 = self.nodes.iter().map(|n| n.free_gpus.len() as u64).sum();
        let smallest = self
            .pending
            .iter()
            .filter_map(|id| self.tracked.get(id))
            .map(|j| j.trace.gpus_per_node)
            .filter(|g| *g > 0)
            .min();
        let fragmented = match smallest {
            Some(ask) => self
                .nodes
                .iter()
                .map(|n| n.free_gpus.len() as u64)
                .filter(|f| *f < u64::from(ask))
                .sum(),
            None => 0,
        };
        let sample = Sample {
            at_ms: now,
            busy_gpus: self.capacity_gpus - free.min(self.capacity_gpus),
            queued: self.pending.len(),
            fragmented_gpus: fragmented,
            free_gpus: free,
        };
        // One sample per moment: the last word on it.
        if self.samples.last().is_some_and(|s| s.at_ms == now) {
            self.samples.pop();
        }
        self.samples.push(sample);
    }
}

/// What a job holds on each node: its GPUs, with 8 CPUs and 64 GiB each (at least one CPU).
fn per_node(gpus: u32) -> Resources {
    Resources {
        gpus,
        cpus: (8 * gpus).max(1),
        mem_mib: 65_536 * u64::from(gpus.max(1)),
    }
}
