//! Multifactor priority: age, fair share, QoS, deadline urgency, size, shortness and whether
//! the job was preempted before, each a factor from 0 to 1000, weighted by the scheduler
//! config. The queue is served in priority order; every
//! factor is shown to users (`gantry show`, `gantry queue --explain`).

use std::collections::BTreeMap;

use gantry_model::{JobId, Resources, Shape};
use serde::Serialize;

use crate::accounts::Tree;
use crate::config::{FACTOR_MAX, PolicyConfig, SchedulingProfile, Weights};
use crate::placement::total_gpus;
use crate::reclaim::within_guarantee;
use crate::view::{ClusterView, PendingJob};

/// Each factor of a job's priority, 0 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Factors {
    pub age: u32,
    pub fair_share: u32,
    pub qos: u32,
    pub deadline: u32,
    pub size: u32,
    pub short: u32,
    /// 1000 when a run of the job was preempted: it comes back ahead of its peers.
    pub preempted: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Priority {
    /// Σ weight × factor / 1000.
    pub total: u64,
    pub factors: Factors,
}

/// Where a job stands in the queue; lower keys are served first: jobs for which running
/// jobs were stopped, then jobs within their account's guarantee, then jobs moved to
/// defragment, then jobs that have waited `priority.starve_after`, then the rest (the
/// [`Tier`]); within a tier highest priority (earliest submitted among the starving), then
/// earliest submitted, then lowest id.
pub(crate) type RankKey = (Tier, std::cmp::Reverse<u64>, u64, JobId);

/// The first part of a [`RankKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tier {
    /// Running jobs were stopped for it: what they free is its, or another job would take
    /// it and the claimant would stop more jobs (or the same ones, restarted, again). The
    /// earliest claim first: its victims are the first to be gone.
    Claimant {
        since: u64,
    },
    /// Within its account's guarantee: borrowers never hold it back.
    Guaranteed,
    /// Moved to defragment, not restarted yet: it is placed before the jobs queued behind it
    /// could take the room kept for it while it stopped (but never before a guarantee's).
    Moved,
    /// It has waited `priority.starve_after`: it goes before every job ranked by priority,
    /// earliest submitted first. Jobs become starving in the order they were submitted, so
    /// no job ever gets ahead of a starving one again, and the start reserved for it holds:
    /// however short the jobs that keep arriving, nothing waits for ever.
    Starving,
    Rest,
}

/// Computes priorities and queue places, for the jobs of a view and for jobs arriving after
/// it (judged at the view's time).
#[derive(Clone)]
pub(crate) struct Ranker {
    fair: FairShare,
    capacity: Resources,
}

impl Ranker {
    pub(crate) fn new(view: &ClusterView, tree: &Tree) -> Ranker {
        let capacity = view.nodes.iter().fold(Resources::default(), |sum, n| {
            sum.saturating_add(&n.capacity)
        });
        Ranker {
            fair: FairShare::new(view, tree, &capacity),
            capacity,
        }
    }

    pub(crate) fn priority(&self, job: &PendingJob, view: &ClusterView, tree: &Tree) -> Priority {
        let config = &view.config;
        let now = view.now_ms;
        let factors = Factors {
            age: ratio(now.saturating_sub(job.submit_ms), config.age_max_ms),
            fair_share: self.fair.factor(tree, &job.account),
            qos: config.qos_priority(&job.qos).unwrap_or(0).min(FACTOR_MAX),
            deadline: urgency(job, now, config),
            size: job.shapes.first().map_or(0, |s| size(s, &self.capacity)),
            short: job.shapes.first().map_or(0, |s| shortness(s, config)),
            preempted: if job.preemptions > 0 { FACTOR_MAX } else { 0 },
        };
        let w = match config.profile {
            SchedulingProfile::Gantry => &config.weights,
            _ => &Weights::BASELINE,
        };
        let weighted = |weight: u32, factor: u32| u64::from(weight) * u64::from(factor);
        let total = (weighted(w.age, factors.age)
            + weighted(w.fair_share, factors.fair_share)
            + weighted(w.qos, factors.qos)
            + weighted(w.deadline, factors.deadline)
            + weighted(w.size, factors.size)
            + weighted(w.short, factors.short)
            + weighted(w.preempted, factors.preempted))
            / u64::from(FACTOR_MAX);
        Priority { total, factors }
    }
}

/// The key of `job` with `priority`, judged at `now`; `covered`: within its account's
/// guarantee; `claim`: when jobs were stopped for it, if the place they free still holds
/// (see [`Tier`]).
pub(crate) fn rank_key(
    job: &PendingJob,
    priority: &Priority,
    covered: bool,
    claim: Option<u64>,
    (config, now): (&PolicyConfig, u64),
) -> RankKey {
    let profile = config.profile;
    let starving = config
        .starve_after_ms
        .is_some_and(|after| now.saturating_sub(job.submit_ms) >= after);
    let tier = match (profile, claim, covered, job.moved, starving) {
        (SchedulingProfile::Gantry, Some(since), _, _, _) => Tier::Claimant { since },
        (SchedulingProfile::Gantry, None, true, _, _) => Tier::Guaranteed,
        (SchedulingProfile::Gantry, None, false, true, _) => Tier::Moved,
        (SchedulingProfile::Gantry, None, false, false, true) => Tier::Starving,
        _ => Tier::Rest,
    };
    let priority = match (profile, tier) {
        (SchedulingProfile::Fifo, _) | (_, Tier::Starving) => 0,
        _ => priority.total,
    };
    (tier, std::cmp::Reverse(priority), job.submit_ms, job.id)
}

/// The pending jobs in the order they are served (see [`RankKey`]): indices into
/// `view.pending` with their priorities and keys.
pub(crate) fn rank(
    view: &ClusterView,
    tree: &Tree,
    ranker: &Ranker,
) -> Vec<(usize, Priority, RankKey)> {
    let guaranteed = within_guarantee(view, tree);
    let mut ranked: Vec<(usize, Priority, RankKey)> = view
        .pending
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let priority = ranker.priority(job, view, tree);
            let covered = job
                .shapes
                .first()
                .is_some_and(|shape| guaranteed(&job.account, shape));
            // A claim on a place that lost a node (down, drained) gives no precedence: the
            // job is placed afresh, in its own tier.
            let claim = job
                .claimant
                .as_ref()
                .filter(|c| {
                    c.place.iter().all(|part| {
                        view.nodes
                            .iter()
                            .any(|n| n.name == part.node && n.schedulable)
                    })
                })
                .map(|c| c.since);
            let key = rank_key(job, &priority, covered, claim, (&view.config, view.now_ms));
            (i, priority, key)
        })
        .collect();
    ranked.sort_unstable_by_key(|r| r.2);
    ranked
}

/// `part / whole` in thousandths, at most 1000; a zero `whole` counts as reached.
fn ratio(part: u64, whole: u64) -> u32 {
    if whole == 0 || part >= whole {
        return FACTOR_MAX;
    }
    let r = u128::from(part) * u128::from(FACTOR_MAX) / u128::from(whole);
    u32::try_from(r).unwrap_or(FACTOR_MAX)
}

/// How urgent a deadline is: the slack (deadline − now − the shortest time limit among the
/// job's shapes) falls from the horizon to zero as the factor rises from 0 to 1000. A job
/// without a time limit is judged as if it took no time; a job past its slack is at 1000.
fn urgency(job: &PendingJob, now: u64, config: &PolicyConfig) -> u32 {
    let Some(deadline) = job.deadline_ms else {
        return 0;
    };
    let runtime = job
        .shapes
        .iter()
        .filter_map(|s| s.time_limit_ms)
        .min()
        .unwrap_or(0);
    let slack = deadline.saturating_sub(now).saturating_sub(runtime);
    FACTOR_MAX - ratio(slack, config.deadline_horizon_ms)
}

/// The job's dominant share of the cluster: its largest fraction of all GPUs, CPUs or
/// memory, in thousandths.
fn size(shape: &Shape, capacity: &Resources) -> u32 {
    let ppm = shape.total().dominant_share_ppm(capacity);
    u32::try_from(ppm / 1000).unwrap_or(FACTOR_MAX)
}

/// How short a job is, by the GPU time its main request asks for (GPUs × time limit; a job
/// without GPUs counts as one): 1000 at one GPU-minute or less, falling on a log scale to 0
/// at `priority.short_max`; 0 without a time limit. Shortest-first is what minimizes mean
/// completion time, and a time limit is the only length a scheduler is told.
fn shortness(shape: &Shape, config: &PolicyConfig) -> u32 {
    const FLOOR_MS: f64 = 60_000.0;
    let Some(limit) = shape.time_limit_ms else {
        return 0;
    };
    let asked = total_gpus(shape).max(1).saturating_mul(limit) as f64;
    let most = (config.short_max_gpu_ms as f64).max(2.0 * FLOOR_MS);
    if asked <= FLOOR_MS {
        return FACTOR_MAX;
    }
    let left = 1.0 - (asked / FLOOR_MS).ln() / (most / FLOOR_MS).ln();
    (f64::from(FACTOR_MAX) * left.max(0.0)).round() as u32
}

/// Fair share, Slurm's classic form over the account tree: factor = 2^(−U/S), where U is the
/// account's (sub-accounts included) part of all recent usage, decayed by the half-life, and
/// S its normalized share of the cluster (see [`Tree::normalized_share`]). Running jobs count
/// for what they have used so far, so a long job lowers its account's share as it runs.
#[derive(Clone)]
struct FairShare {
    /// Decayed usage of each account, its sub-accounts' included.
    subtree: BTreeMap<String, f64>,
    /// Of all accounts.
    all: f64,
    /// Per account with pending jobs, computed once.
    factors: BTreeMap<String, u32>,
}

impl FairShare {
    fn new(view: &ClusterView, tree: &Tree, capacity: &Resources) -> FairShare {
        let half_life = view.config.half_life_ms.max(1) as f64;
        let mut used: BTreeMap<&str, f64> = BTreeMap::new();
        for (account, charges) in &view.usage {
            *used.entry(account).or_default() += charges
                .iter()
                .map(|(at, charge)| {
                    let age = view.now_ms.saturating_sub(*at) as f64;
                    *charge as f64 * (-age / half_life).exp2()
                })
                .sum::<f64>();
        }
        for job in &view.running {
            let share: u64 = job
                .parts
                .iter()
                .map(|p| p.res.dominant_share_ppm(capacity))
                .sum();
            let ran = view.now_ms.saturating_sub(job.start_ms) as f64;
            *used.entry(&job.account).or_default() +=
                share as f64 * decayed_seconds(ran, half_life);
        }
        let mut subtree: BTreeMap<&str, f64> = BTreeMap::new();
        let mut all = 0.0;
        for (account, used) in used {
            all += used;
            for a in tree.path(account) {
                *subtree.entry(a).or_default() += used;
            }
        }
        let subtree: BTreeMap<String, f64> = subtree
            .into_iter()
            .map(|(a, used)| (a.to_string(), used))
            .collect();
        let mut fair = FairShare {
            subtree,
            all,
            factors: BTreeMap::new(),
        };
        let mut accounts: Vec<&str> = view.pending.iter().map(|j| j.account.as_str()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        fair.factors = accounts
            .into_iter()
            .map(|account| (account.to_string(), fair.compute(tree, account)))
            .collect();
        fair
    }

    fn compute(&self, tree: &Tree, account: &str) -> u32 {
        let used = self.subtree.get(account).copied().unwrap_or(0.0);
        let u = if self.all > 0.0 { used / self.all } else { 0.0 };
        let share = tree.normalized_share(account).max(f64::MIN_POSITIVE);
        let factor = (f64::from(FACTOR_MAX) * (-u / share).exp2()).round();
        factor.clamp(0.0, f64::from(FACTOR_MAX)) as u32
    }

    fn factor(&self, tree: &Tree, account: &str) -> u32 {
        match self.factors.get(account) {
            Some(factor) => *factor,
            None => self.compute(tree, account),
        }
    }
}

/// Seconds of use at a constant rate over the last `ran_ms`, each weighed as the half-life
/// `half_life_ms` has decayed it by now: ∫ 2^(−age/h) d(age) over [0, ran] = h/ln 2 · (1 − 2^(−ran/h)).
fn decayed_seconds(ran_ms: f64, half_life_ms: f64) -> f64 {
    half_life_ms / 1000.0 / std::f64::consts::LN_2 * (1.0 - (-ran_ms / half_life_ms).exp2())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{NodeView, RunningJob};

    const HOUR: u64 = 3_600_000;

    fn rank_all(view: &ClusterView) -> Vec<(usize, Priority)> {
        let tree = Tree::new(view);
        rank(view, &tree, &Ranker::new(view, &tree))
            .into_iter()
            .map(|(i, p, _)| (i, p))
            .collect()
    }

    fn node() -> NodeView {
        let capacity = Resources {
            gpus: 8,
            cpus: 64,
            mem_mib: 512 * 1024,
        };
        NodeView {
            name: "n".into(),
            schedulable: true,
            unavailable_reason: None,
            gpus: vec![],
            capacity,
            free: capacity,
            free_gpus: (0..8).collect(),
            pool: "default".into(),
            labels: vec![],
        }
    }

    fn job(id: u64, gpus: u32, limit_h: Option<u64>) -> PendingJob {
        PendingJob::single(
            id,
            Shape {
                num_nodes: 1,
                per_node: Resources {
                    gpus,
                    cpus: 1,
                    mem_mib: 1024,
                },
                gpu_model: None,
                time_limit_ms: limit_h.map(|h| h * HOUR),
                pool: None,
                labels: vec![],
            },
        )
    }

    fn view(now_ms: u64, pending: Vec<PendingJob>) -> ClusterView {
        ClusterView {
            now_ms,
            nodes: vec![node(), node()],
            pending,
            ..Default::default()
        }
    }

    fn order(view: &ClusterView) -> Vec<u64> {
        rank_all(view)
            .into_iter()
            .map(|(i, _)| view.pending[i].id)
            .collect()
    }

    #[test]
    fn every_factor_is_computed_and_weighted() {
        let mut j = job(1, 8, Some(2));
        j.submit_ms = 0;
        j.qos = "high".into();
        j.deadline_ms = Some(14 * HOUR); // slack 12 h of a 24 h horizon
        let v = view(84 * HOUR, vec![j]); // waited 3.5 days of 7
        let p = rank_all(&v)[0].1;
        assert_eq!(
            p.factors,
            Factors {
                age: 500,
                fair_share: 1000,
                qos: 1000,
                deadline: 1000,
                size: 500,
                // 16 GPU-hours: 1 − ln(960) / ln(60,000) of the way from 1 GPU-minute to 1,000
                // GPU-hours.
                short: 376,
                preempted: 0,
            }
        );
        // Past its slack: deadline at its maximum. Defaults: age 1000·0.5, fair share
        // 200·1, QoS 4000·1, deadline 4000·1, size 0, short 8000·0.376, preempted 1000·0.
        assert_eq!(p.total, 500 + 200 + 4000 + 4000 + 3008);
        // Preempted before: it comes back 1000 ahead of its peers.
        let mut v = v;
        v.pending[0].preemptions = 2;
        let p = rank_all(&v)[0].1;
        assert_eq!(p.factors.preempted, 1000);
        assert_eq!(p.total, 500 + 200 + 4000 + 4000 + 3008 + 1000);
        // The baselines weigh as Slurm's usual setup, whatever the settings: 1000·0.5 +
        // 2000 + 2000 + 4000 + 500·0.5, nothing for shortness or a preemption.
        v.config.profile = SchedulingProfile::SlurmLike;
        assert_eq!(rank_all(&v)[0].1.total, 500 + 2000 + 2000 + 4000 + 250);
        let mut j = job(1, 8, Some(2));
        j.deadline_ms = Some(14 * HOUR);
        let v = view(0, vec![j]);
        assert_eq!(rank_all(&v)[0].1.factors.deadline, 500, "12 h of slack");
    }

    #[test]
    fn a_job_that_has_waited_starve_after_goes_first_earliest_submitted_first() {
        const DAY: u64 = 24 * HOUR;
        // Job 1: long and big, waiting 4 days; job 3: short and high, waiting 3.5 days;
        // job 2: short and high, just submitted.
        let mut long = job(1, 8, Some(100));
        long.submit_ms = 0;
        let mut fresh = job(2, 1, Some(1));
        fresh.submit_ms = 4 * DAY;
        fresh.qos = "high".into();
        let mut older = job(3, 1, Some(1));
        older.submit_ms = DAY / 2;
        older.qos = "high".into();
        let v = view(4 * DAY, vec![long, fresh, older]);
        // Both past the default 3 days, by submission; then by priority.
        assert_eq!(order(&v), [1, 3, 2]);
        let mut v = v;
        v.config.set("priority.starve_after", "none").unwrap();
        assert_eq!(order(&v), [3, 2, 1]);
        v.config.set("priority.starve_after", "soon").unwrap_err();
        v.config.set("priority.starve_after", "84h").unwrap();
        assert_eq!(order(&v), [1, 3, 2], "3.5 days is 84 hours");
        v.config.set("priority.starve_after", "97h").unwrap();
        assert_eq!(order(&v), [3, 2, 1], "job 1 has waited 96 hours");
    }

    #[test]
    fn with_a_short_weight_jobs_asking_less_gpu_time_go_first() {
        let short = |gpus: u32, limit_h: Option<u64>| {
            let v = view(0, vec![job(1, gpus, limit_h)]);
            rank_all(&v)[0].1.factors.short
        };
        // 1 GPU-hour, 16, 1,000 and more; no limit: nothing known, nothing favoured.
        assert_eq!(short(1, Some(1)), 628);
        assert!(short(8, Some(2)) < short(1, Some(1)));
        assert_eq!(short(8, Some(125)), 0);
        assert_eq!(short(8, Some(1000)), 0);
        assert_eq!(short(1, None), 0);
        let mut tiny = job(9, 1, None);
        tiny.shapes[0].time_limit_ms = Some(30_000);
        assert_eq!(rank_all(&view(0, vec![tiny]))[0].1.factors.short, 1000);
        // The shortest first by default; without the weight, submit order.
        let jobs = || vec![job(1, 8, Some(10)), job(2, 1, None), job(3, 1, Some(1))];
        assert_eq!(order(&view(0, jobs())), [3, 1, 2]);
        let mut v = view(0, jobs());
        v.config.set("weight.short", "0").unwrap();
        assert_eq!(order(&v), [1, 2, 3]);
        v.config.set("weight.short", "1000").unwrap();
        assert_eq!(order(&v), [3, 1, 2]);
        v.config.set("priority.short_max", "10h").unwrap();
        assert_eq!(
            rank_all(&v)[1].1.factors.short,
            0,
            "80 GPU-hours is past 10"
        );
    }

    #[test]
    fn qos_deadline_and_age_each_move_a_job_forward() {
        let mut urgent = job(2, 1, Some(1));
        urgent.deadline_ms = Some(2 * HOUR);
        let mut high = job(3, 1, None);
        high.qos = "high".into();
        let mut low = job(4, 1, None);
        low.qos = "low".into();
        let v = view(0, vec![job(1, 1, None), urgent, high, low]);
        assert_eq!(order(&v), [2, 3, 1, 4]);
        // Among equals the earlier submit goes first, then the lower id.
        let mut late = job(1, 1, None);
        late.submit_ms = 5;
        let v = view(10, vec![late, job(2, 1, None), job(3, 1, None)]);
        assert_eq!(order(&v), [2, 3, 1]);
        // An unknown QoS (removed since) counts as 0, not as an error.
        let mut gone = job(5, 1, None);
        gone.qos = "retired".into();
        let v = view(0, vec![gone, job(6, 1, None)]);
        assert_eq!(order(&v), [6, 5]);
    }

    #[test]
    fn heavy_recent_use_lowers_an_accounts_fair_share_and_decays() {
        let mut vision = job(1, 1, None);
        vision.account = "vision".into();
        let mut nlp = job(2, 1, None);
        nlp.account = "nlp".into();
        let mut v = view(0, vec![vision, nlp]);
        v.usage.insert("vision".into(), vec![(0, 1_000_000)]);
        let ranked = rank_all(&v);
        let factor = |id: u64| {
            ranked
                .iter()
                .find(|(i, _)| v.pending[*i].id == id)
                .unwrap()
                .1
                .factors
                .fair_share
        };
        // vision used everything: U = 1, S = 1/2, 2^-2.
        assert_eq!((factor(1), factor(2)), (250, 1000));
        assert_eq!(order(&v), [2, 1]);
        // Both used the same, one half-life apart: the older counts half.
        v.now_ms = 7 * 24 * HOUR;
        v.usage
            .insert("nlp".into(), vec![(7 * 24 * HOUR, 1_000_000)]);
        let ranked = rank_all(&v);
        let f: Vec<u32> = ranked.iter().map(|(_, p)| p.factors.fair_share).collect();
        // vision: U = 1/3 → 2^(-2/3) = 0.63; nlp: U = 2/3 → 2^(-4/3) = 0.397.
        assert_eq!(f, [630, 397]);
    }

    #[test]
    fn a_running_job_counts_as_it_runs_as_much_as_when_it_has_ended() {
        let of = |id: u64, account: &str| {
            let mut j = job(id, 1, None);
            j.account = account.into();
            j
        };
        let fair_shares = |v: &ClusterView| -> Vec<u32> {
            let ranked = rank_all(v);
            [1, 2]
                .map(|id| {
                    let r = ranked.iter().find(|(i, _)| v.pending[*i].id == id);
                    r.map_or(0, |(_, p)| p.factors.fair_share)
                })
                .to_vec()
        };
        let half = 500_000 * 3600; // half the 16 GPUs for an hour
        let mut v = view(12 * HOUR, vec![of(1, "vision"), of(2, "nlp")]);
        v.usage.insert("vision".into(), vec![(0, 6 * half)]);
        assert_eq!(
            fair_shares(&v),
            [250, 1000],
            "only vision has used anything"
        );
        // nlp has held 8 of the 16 GPUs for the last 12 hours and still does.
        v.running = vec![RunningJob {
            id: 9,
            account: "nlp".into(),
            start_ms: 0,
            stopping: false,
            moving_to: None,
            ends_at_ms: None,
            qos: "normal".into(),
            checkpointed_ms: None,
            movable: None,
            deadline_ms: None,
            preemptions: 0,
            parts: vec![crate::Held {
                node: "n".into(),
                res: Resources {
                    gpus: 8,
                    cpus: 1,
                    mem_mib: 1024,
                },
                gpus: (0..8).collect(),
            }],
        }];
        let running = fair_shares(&v);
        assert!(
            running[0] > running[1],
            "nlp's running job weighs more than vision's 6 hours: {running:?}"
        );
        // Ended now and charged by the hour, as the state records it, it weighs the same.
        v.running.clear();
        v.usage
            .insert("nlp".into(), (0..12).map(|h| (h * HOUR, half)).collect());
        let ended = fair_shares(&v);
        for (r, e) in running.iter().zip(&ended) {
            assert!(r.abs_diff(*e) <= 3, "running {running:?}, ended {ended:?}");
        }
    }

    #[test]
    fn fair_share_follows_the_account_tree() {
        let account = |name: &str, parent: Option<&str>, share: u32| crate::AccountView {
            name: name.into(),
            parent: parent.map(str::to_string),
            share,
            guarantee_gpus: None,
            max_gpus: None,
        };
        let of = |id: u64, account: &str| {
            let mut j = job(id, 1, None);
            j.account = account.into();
            j
        };
        let mut v = view(0, vec![of(1, "vision"), of(2, "ops")]);
        v.accounts = vec![
            account("root", None, 1),
            account("research", Some("root"), 3),
            account("ops", Some("root"), 1),
            account("vision", Some("research"), 1),
        ];
        // Equal use: vision (3/4 of the cluster through research) is far below its share,
        // ops (1/4) far above it.
        v.usage.insert("vision".into(), vec![(0, 1_000)]);
        v.usage.insert("ops".into(), vec![(0, 1_000)]);
        let ranked = rank_all(&v);
        let f: Vec<(u64, u32)> = ranked
            .iter()
            .map(|(i, p)| (v.pending[*i].id, p.factors.fair_share))
            .collect();
        // 2^(-0.5/0.75) = 0.630, 2^(-0.5/0.25) = 0.25.
        assert_eq!(f, [(1, 630), (2, 250)]);
    }
}
