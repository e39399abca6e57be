//! Properties of one scheduling pass over random clusters and queues: nothing is ever
//! overcommitted, gangs are all or nothing, account caps hold, the same input gives the same
//! decisions, backfill never delays a reserved start, and a big job under a stream of small
//! ones starts by the time it was first promised; a job arriving after a pass is decided by
//! the pass's plan exactly as a new full pass would decide it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::{BTreeMap, BTreeSet};

use gantry_model::{Gpu, Resources, Shape};
use gantry_policies::{
    AccountView, ClusterView, Held, NodeView, PartPlan, PendingJob, Plan, RunningJob, Victim,
    WaitReason, schedule,
};
use proptest::prelude::*;

const ACCOUNTS: [&str; 3] = ["a", "b", "c"];

fn gpus(count: u32, groups: u32) -> Vec<Gpu> {
    (0..count)
        .map(|index| Gpu {
            index,
            model: if index % 2 == 0 {
                "NVIDIA H100"
            } else {
                "NVIDIA A100"
            }
            .into(),
            memory_mib: 81920,
            nvlink_group: index % groups.max(1),
            numa_node: None,
            uuid: String::new(),
        })
        .collect()
}

/// A node of `count` GPUs with the first `busy` of them (and some CPUs) held by job `id`.
fn node(
    i: usize,
    count: u32,
    busy: u32,
    limit: Option<u64>,
    id: u64,
) -> (NodeView, Option<RunningJob>) {
    let capacity = Resources {
        gpus: count,
        cpus: 32,
        mem_mib: 262_144,
    };
    let name = format!("n{i:02}");
    let held = Resources {
        gpus: busy.min(count),
        cpus: 4 * busy.min(count),
        mem_mib: 16_384 * u64::from(busy.min(count)),
    };
    let held_gpus: Vec<u32> = (0..held.gpus).collect();
    let view = NodeView {
        name: name.clone(),
        schedulable: true,
        unavailable_reason: None,
        gpus: gpus(count, 2),
        capacity,
        free: capacity.saturating_sub(&held),
        free_gpus: (held.gpus..count).collect(),
        pool: if i % 3 == 2 { "p1" } else { "default" }.into(),
        labels: vec![],
    };
    let running = (held.gpus > 0).then(|| RunningJob {
        id,
        account: ACCOUNTS[(id % 3) as usize].into(),
        start_ms: 0,
        stopping: false,
        moving_to: None,
        ends_at_ms: limit,
        parts: vec![Held {
            node: name,
            res: held,
            gpus: held_gpus,
        }],
        qos: gantry_policies::DEFAULT_QOS.to_string(),
        checkpointed_ms: None,
        // Every other job has a checkpoint contract: defragmentation may move it.
        movable: id.is_multiple_of(2).then(|| Shape {
            num_nodes: 1,
            per_node: held,
            gpu_model: None,
            time_limit_ms: None,
            pool: None,
            labels: vec![],
        }),
        // Every third job races a deadline of its own: never stopped for another's.
        deadline_ms: id.is_multiple_of(3).then_some(2_000_000),
        // Preempted 0 to 3 times before: the third spends the default budget, the first
        // doubles the minimum runtime past what these jobs have run.
        preemptions: (id % 4) as u32,
    });
    (view, running)
}

fn arb_view() -> impl Strategy<Value = ClusterView> {
    let nodes = prop::collection::vec(
        (
            1u32..=8,
            0u32..=8,
            prop::option::of(1u64..=50).prop_map(|l| l.map(|l| l * 10_000)),
        ),
        1..6,
    );
    let jobs = prop::collection::vec(
        (
            1u32..=3,
            0u32..=8,
            prop::option::of(1u64..=30).prop_map(|l| l.map(|l| l * 10_000)),
            0usize..3,
            prop::bool::weighted(0.2),
            prop::option::of(prop::bool::ANY),
            prop::option::of(prop::bool::ANY),
        ),
        0..25,
    );
    let caps = prop::collection::vec(prop::option::of(1u32..=16), 3);
    // Defragmentation's budget, and how much of it account "a" has used; the short factor's
    // weight (off, at the age factor's, above it); whether every job has waited long enough
    // to be starving (they have waited 1,000 s at most).
    let settings = (
        0u32..=2,
        0u32..=2,
        prop::sample::select(vec![0u32, 1000, 4000]),
        prop::sample::select(vec!["3d", "999s"]),
    );
    (nodes, jobs, caps, settings).prop_map(
        |(nodes, jobs, caps, (per_hour, used, short, starve))| {
            let mut view = ClusterView {
                now_ms: 1_000_000,
                preempted_last_hour: BTreeMap::from([(ACCOUNTS[0].to_string(), used)]),
                ..Default::default()
            };
            view.config
                .set("defrag.per_hour", &per_hour.to_string())
                .unwrap();
            view.config.set("weight.short", &short.to_string()).unwrap();
            view.config.set("priority.starve_after", starve).unwrap();
            for (i, (count, busy, limit)) in nodes.into_iter().enumerate() {
                let (n, running) = node(
                    i,
                    count,
                    busy,
                    limit.map(|l| 1_000_000 + l),
                    10_000 + i as u64,
                );
                view.nodes.push(n);
                view.running.extend(running);
            }
            for (i, (num_nodes, gpus, limit, account, alternative, model, pool)) in
                jobs.into_iter().enumerate()
            {
                let pool = pool.map(|p1| if p1 { "p1" } else { "default" }.to_string());
                let shape =
                    |num_nodes: u32, gpus: u32, model: Option<&str>, limit: Option<u64>| Shape {
                        num_nodes,
                        per_node: Resources {
                            gpus,
                            cpus: 2,
                            mem_mib: 8_192,
                        },
                        gpu_model: model.map(str::to_string),
                        time_limit_ms: limit,
                        pool: pool.clone(),
                        labels: vec![],
                    };
                let model = model.map(|h100| if h100 { "h100" } else { "a100" });
                let mut shapes = vec![shape(num_nodes, gpus, model, limit)];
                if alternative {
                    shapes.push(shape(1, gpus.div_ceil(2), None, limit.map(|l| l * 2)));
                }
                let mut job = PendingJob::new(i as u64 + 1, shapes);
                job.account = ACCOUNTS[account].into();
                job.submit_ms = i as u64;
                // Every fourth job has a deadline twice its limit away: it may stop others for it.
                if i % 4 == 1 {
                    job.deadline_ms = limit.map(|l| view.now_ms + 2 * l);
                }
                // Every fifth was moved to defragment a moment ago: it ranks right after the jobs
                // guarantees cover.
                job.moved = i % 5 == 3;
                // Every third was preempted before: it ranks ahead of its peers.
                job.preemptions = u32::from(i % 3 == 2);
                view.pending.push(job);
            }
            view.accounts = std::iter::once(AccountView {
                name: "root".into(),
                parent: None,
                share: 1,
                guarantee_gpus: None,
                max_gpus: None,
            })
            .chain(ACCOUNTS.iter().zip(caps).map(|(name, cap)| AccountView {
                name: (*name).into(),
                parent: Some("root".into()),
                share: 1,
                guarantee_gpus: None,
                max_gpus: cap,
            }))
            .collect();
            view
        },
    )
}

fn shape_of(view: &ClusterView, job: u64, shape: u32) -> &Shape {
    let job = view.pending.iter().find(|j| j.id == job).unwrap();
    &job.shapes[shape as usize]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn nothing_is_overcommitted_and_gangs_are_whole(view in arb_view()) {
        let d = schedule(&view);
        let mut taken: BTreeMap<&str, (Resources, BTreeSet<u32>)> = BTreeMap::new();
        let mut held_by_account: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &view.running {
            let gpus: u64 = r.parts.iter().map(|p| u64::from(p.res.gpus)).sum();
            *held_by_account.entry(r.account.as_str()).or_default() += gpus;
        }
        for start in &d.starts {
            let shape = shape_of(&view, start.job, start.shape);
            let nodes: BTreeSet<&str> = start.parts.iter().map(|p| p.node.as_str()).collect();
            prop_assert_eq!(nodes.len(), start.parts.len(), "a node twice in {:?}", start);
            prop_assert_eq!(start.parts.len() as u32, shape.num_nodes, "half a gang: {:?}", start);
            for part in &start.parts {
                let node = view.nodes.iter().find(|n| n.name == part.node).unwrap();
                prop_assert!(shape.admits(&node.pool, &node.labels), "{} is not in pool {:?}", node.name, shape.pool);
                prop_assert_eq!(part.gpus.len() as u32, shape.per_node.gpus);
                let entry = taken.entry(node.name.as_str()).or_default();
                entry.0 = entry.0.saturating_add(&shape.per_node);
                for g in &part.gpus {
                    prop_assert!(node.free_gpus.contains(g), "GPU {} on {} is busy", g, node.name);
                    prop_assert!(entry.1.insert(*g), "GPU {} on {} given twice", g, node.name);
                    let gpu = node.gpus.iter().find(|x| x.index == *g).unwrap();
                    prop_assert!(shape.takes(gpu), "GPU {} is not a {:?}", g, shape.gpu_model);
                }
                prop_assert!(entry.0.fits_in(&node.free), "{} overcommitted", node.name);
            }
            let account = view.pending.iter().find(|j| j.id == start.job).unwrap().account.as_str();
            *held_by_account.entry(account).or_default() +=
                u64::from(shape.num_nodes) * u64::from(shape.per_node.gpus);
        }
        for a in &view.accounts {
            if let Some(max) = a.max_gpus {
                let before: u64 = view.running.iter().filter(|r| r.account == a.name)
                    .flat_map(|r| r.parts.iter()).map(|p| u64::from(p.res.gpus)).sum();
                let after = held_by_account.get(a.name.as_str()).copied().unwrap_or(0);
                // Running jobs may already be over a cap lowered since; starts never add to that.
                prop_assert!(after <= u64::from(max).max(before), "{} holds {} > {}", a.name, after, max);
            }
        }
        // Every pending job is either started or explained, exactly once.
        let mut seen: Vec<u64> = d.starts.iter().map(|s| s.job).chain(d.waiting.iter().map(|(j, _)| *j)).collect();
        seen.sort_unstable();
        let mut all: Vec<u64> = view.pending.iter().map(|j| j.id).collect();
        all.sort_unstable();
        prop_assert_eq!(seen, all);
        prop_assert_eq!(d.ranked.len(), view.pending.len());
        // Defragmentation moves only checkpointable jobs, within each account's budget; a
        // deadline stops only jobs without one.
        let mut moved: BTreeMap<&str, u32> = BTreeMap::new();
        let rules = &view.config.preemption;
        for Victim { job: victim, reason: why, .. } in &d.preempt {
            // No guarantees here: every stop is for a QoS, a deadline or a move, and spares
            // jobs that spent their budget or run within their backoff.
            let r = view.running.iter().find(|r| r.id == *victim).unwrap();
            prop_assert!(r.preemptions < rules.budget, "job {} spent its budget", victim);
            let ran = view.now_ms - r.start_ms;
            prop_assert!(
                ran >= rules.min_runtime_ms << r.preemptions,
                "job {} preempted {} times stopped after {} ms", victim, r.preemptions, ran
            );
            if why.ends_with("which would miss its deadline") {
                let r = view.running.iter().find(|r| r.id == *victim).unwrap();
                prop_assert!(r.deadline_ms.is_none(), "job {} races its own deadline", victim);
            }
            if why.starts_with("moved to defragment") {
                let r = view.running.iter().find(|r| r.id == *victim).unwrap();
                prop_assert!(r.movable.is_some(), "job {} has no checkpoint contract", victim);
                *moved.entry(r.account.as_str()).or_default() += 1;
            }
        }
        let per_hour = view.config.preemption.defrag_per_hour;
        for (account, n) in moved {
            let used = view.preempted_last_hour.get(account).copied().unwrap_or(0);
            prop_assert!(used + n <= per_hour, "{} moved {} with {} of {} used", account, n, used, per_hour);
        }
    }

    #[test]
    fn the_same_input_gives_the_same_decisions(view in arb_view()) {
        prop_assert_eq!(schedule(&view), schedule(&view.clone()));
    }

    /// Without account caps: a capped job that waits for its cap (never blocking) can, once
    /// an unlimited job has taken GPUs it would need, wait for resources instead and then
    /// hold back the jobs behind it (see docs/scheduling.md, "Not there yet"). Without
    /// preemptions: the next pass plans anew around stopping jobs (same place).
    #[test]
    fn jobs_started_by_backfill_never_delay_a_reserved_start(mut view in arb_view()) {
        for a in &mut view.accounts {
            a.max_gpus = None;
        }
        let first = schedule(&view);
        prop_assume!(first.preempt.is_empty());
        let next = view.with_starts(&first);
        let second = schedule(&next);
        let again: BTreeMap<u64, &WaitReason> = second.waiting.iter().map(|(j, w)| (*j, w)).collect();
        for (job, why) in &first.waiting {
            if let WaitReason::Reserved { in_ms } = why {
                match again.get(job) {
                    // It starts on GPUs being freed for it, as soon as they are.
                    Some(
                        WaitReason::Preempting { .. }
                        | WaitReason::Reclaiming { .. }
                        | WaitReason::Stopping { .. },
                    ) => {}
                    Some(WaitReason::Reserved { in_ms: later }) => prop_assert!(
                        later <= in_ms,
                        "job {} was promised {} ms, now {} ms\nfirst {:?}\nsecond {:?}\npending {:?}\ncaps {:?}\nfree {:?}\nrunning {:?}", job, in_ms, later, first, second, view.pending.iter().map(|j| (j.id, j.account.clone(), j.shapes.iter().map(|s| (s.num_nodes, s.per_node.gpus, s.gpu_model.clone(), s.time_limit_ms)).collect::<Vec<_>>())).collect::<Vec<_>>(), view.accounts.iter().map(|a| (a.name.clone(), a.max_gpus)).collect::<Vec<_>>(), view.nodes.iter().map(|n| (n.name.clone(), n.free_gpus.clone(), n.gpus.iter().map(|g| g.model.clone()).collect::<Vec<_>>())).collect::<Vec<_>>(), view.running.iter().map(|r| (r.id, r.account.clone(), r.ends_at_ms, r.parts.iter().map(|p| (p.node.clone(), p.gpus.clone())).collect::<Vec<_>>())).collect::<Vec<_>>()
                    ),
                    other => prop_assert!(false, "job {} lost its reservation: {:?}\nfirst {:?}\nsecond {:?}\npending {:?}\nfree {:?}\nrunning {:?}", job, other, first, second, view.pending.iter().map(|j| (j.id, j.account.clone(), j.shapes.iter().map(|s| (s.num_nodes, s.per_node.gpus, s.gpu_model.clone(), s.time_limit_ms)).collect::<Vec<_>>())).collect::<Vec<_>>(), view.nodes.iter().map(|n| (n.name.clone(), n.free_gpus.clone(), n.capacity.gpus)).collect::<Vec<_>>(), view.running.iter().map(|r| (r.id, r.account.clone(), r.ends_at_ms, r.parts.iter().map(|p| (p.node.clone(), p.gpus.clone())).collect::<Vec<_>>())).collect::<Vec<_>>()),
                }
            }
        }
    }

    /// Account `a` has a guarantee; `b` and `c` have none, so whatever they run is borrowed.
    /// When the first job considered is `a`'s and within the guarantee, and it could start
    /// were every borrower gone, the pass preempts borrowers, and once those are gone it starts.
    #[test]
    fn an_account_within_its_guarantee_is_never_blocked_by_borrowers(
        mut view in arb_view(),
        guarantee in 1u32..=16,
    ) {
        for a in &mut view.accounts {
            a.max_gpus = None;
            if a.name == "a" {
                a.guarantee_gpus = Some(guarantee);
            }
        }
        // Borrowers without time limits, never preempted before: every reclaim pays (the
        // job would otherwise wait for ever) and none is within a backoff. The rules that
        // spare borrowers have their own scenarios.
        for r in &mut view.running {
            r.ends_at_ms = None;
            r.preemptions = 0;
        }
        let d = schedule(&view);
        let Some((first, _)) = d.ranked.first() else { return Ok(()) };
        let job = view.pending.iter().find(|j| j.id == *first).unwrap();
        let held: u64 = view.running.iter().filter(|r| r.account == "a")
            .flat_map(|r| r.parts.iter()).map(|p| u64::from(p.res.gpus)).sum();
        let main = &job.shapes[0];
        let need = u64::from(main.num_nodes) * u64::from(main.per_node.gpus);
        if job.account != "a" || held + need > u64::from(guarantee)
            || d.starts.iter().any(|s| s.job == *first)
        {
            return Ok(());
        }
        let without = |view: &ClusterView, gone: &dyn Fn(&RunningJob) -> bool| {
            let mut next = view.clone();
            for r in view.running.iter().filter(|r| gone(r)) {
                for part in &r.parts {
                    let n = next.nodes.iter_mut().find(|n| n.name == part.node).unwrap();
                    n.free = n.free.saturating_add(&part.res);
                    n.free_gpus.extend(part.gpus.iter().copied());
                    n.free_gpus.sort_unstable();
                }
            }
            next.running.retain(|r| !gone(r));
            next
        };
        let no_borrowers = without(&view, &|r: &RunningJob| r.account != "a");
        let could = schedule(&no_borrowers).starts.iter().any(|s| s.job == *first && s.shape == 0);
        if !could {
            return Ok(());
        }
        // Jobs later in the pass may preempt for their own reasons (deadlines, moves).
        let victims: BTreeSet<u64> = d.preempt.iter()
            .filter(|v| v.for_job == *first && v.reason.contains("reclaims its guaranteed GPUs"))
            .map(|v| v.job)
            .collect();
        prop_assert!(!victims.is_empty(), "job {} waits behind borrowers: {:?}", first, d);
        prop_assert!(view.running.iter().filter(|r| victims.contains(&r.id)).all(|r| r.account != "a"));
        let after = without(&view, &|r: &RunningJob| victims.contains(&r.id));
        prop_assert!(
            schedule(&after).starts.iter().any(|s| s.job == *first),
            "job {} still waits once {:?} are gone", first, victims
        );
    }

    /// Jobs arrive one by one after a pass. Whatever the plan decides for one (start or
    /// wait, where, why, rank and priority) is what a full pass over the queue with it
    /// decides, and that pass starts nothing else. An arrival the plan cannot decide gets a
    /// full pass, and a new plan.
    #[test]
    fn an_arrival_is_decided_as_a_full_pass_would(
        view in arb_view(),
        arrivals in prop::collection::vec((1u32..=2, 0u32..=8, prop::option::of(1u64..=30), 0usize..4, prop::bool::weighted(0.2)), 1..8),
    ) {
        let mut view = view;
        // Some movable jobs are being moved, each to the lowest free GPUs of another node
        // with room: the passes keep that place for it.
        let places: Vec<Option<Vec<PartPlan>>> = view
            .running
            .iter()
            .map(|job| {
                let ask = job.movable.as_ref().filter(|_| job.id % 3 == 1)?.per_node;
                let node = view.nodes.iter().find(|n| {
                    n.name != job.parts[0].node
                        && ask.fits_in(&n.free)
                        && n.free_gpus.len() >= ask.gpus as usize
                })?;
                Some(vec![PartPlan {
                    node: node.name.clone(),
                    gpus: node.free_gpus[..ask.gpus as usize].to_vec(),
                    cpus: ask.cpus,
                    mem_mib: ask.mem_mib,
                }])
            })
            .collect();
        // Every level, some checkpointed: higher QoS levels preempt them.
        for (i, (job, place)) in view.running.iter_mut().zip(places).enumerate() {
            job.qos = ["low", "normal", "high"][i % 3].into();
            job.checkpointed_ms = (i % 2 == 0).then_some(view.now_ms / 2);
            if place.is_some() {
                job.stopping = true;
                job.moving_to = place;
            }
        }
        let mut plan = Plan::new(view.clone());
        let mut truth = view.with_starts(plan.decisions());
        let mut decided = 0;
        for (k, (num_nodes, gpus, limit, account, high)) in arrivals.into_iter().enumerate() {
            let mut job = PendingJob::single(1_000 + k as u64, Shape {
                num_nodes,
                per_node: Resources { gpus, cpus: 2, mem_mib: 8_192 },
                gpu_model: None,
                time_limit_ms: limit.map(|l| l * 10_000),
                pool: None,
                labels: vec![],
            });
            // "d" is in no tree: a full pass hangs it under root.
            job.account = ["a", "b", "c", "d"][account].into();
            job.submit_ms = view.now_ms;
            if high {
                job.qos = "high".into();
            }
            truth.pending.push(job.clone());
            let full = schedule(&truth);
            match plan.arrive(job.clone(), view.now_ms) {
                Ok(arrival) => {
                    decided += 1;
                    let expected: Vec<_> = full.starts.iter().filter(|s| s.job == job.id).cloned().collect();
                    prop_assert_eq!(&full.starts, &expected, "a full pass starts more than the arrival");
                    prop_assert_eq!(arrival.start.into_iter().collect::<Vec<_>>(), expected);
                    let why = full.waiting.iter().find(|(j, _)| *j == job.id).map(|(_, w)| w.clone());
                    prop_assert_eq!(arrival.wait, why);
                    let place = full.ranked.iter().position(|(j, _)| *j == job.id).unwrap();
                    prop_assert_eq!(arrival.rank as usize, place + 1);
                    prop_assert_eq!(arrival.priority, full.ranked[place].1);
                }
                Err(_) => plan = Plan::new(truth.clone()),
            }
            truth = truth.with_starts(&full);
        }
        // Not a vacuous property: most arrivals are decided by the plan.
        prop_assume!(decided > 0);
    }

    /// A whole-cluster job arrives into a stream of 1-GPU jobs of random limits that would
    /// fill any GPU freed; every job runs exactly its limit. It starts, and once it has
    /// waited `priority.starve_after` (only jobs submitted before it go first, so the start
    /// reserved for it holds), no later than the start the first pass after that promised.
    #[test]
    fn a_full_cluster_job_starts_by_its_reserved_time(
        limits in prop::collection::vec(1u64..=20, 8..40),
        nodes in 1usize..=3,
    ) {
        // Jobs of more than a GPU-minute: their lengths order them.
        const STEP: u64 = 10_000;
        const STARVE: u64 = 50 * STEP;
        let mut now = 0;
        let mut queue: Vec<PendingJob> = Vec::new();
        let mut running: Vec<(u64, String, u64, Vec<u32>)> = Vec::new();
        let big = 1_000_000;
        let mut promised = None;
        let mut started = None;
        let mut next_id = 1;
        let one = |id: u64, gpus: u32, limit: u64| PendingJob::single(id, Shape {
            num_nodes: 1,
            per_node: Resources { gpus, cpus: 1, mem_mib: 1 },
            gpu_model: None,
            time_limit_ms: Some(limit),
            pool: None,
            labels: vec![],
        });
        while started.is_none() && now < 2_000 * STEP {
            running.retain(|(_, _, end, _)| *end > now);
            for limit in &limits {
                if queue.len() < 60 {
                    let mut small = one(next_id, 1, limit * STEP);
                    small.submit_ms = now;
                    queue.push(small);
                    next_id += 1;
                }
            }
            if now == 10 * STEP {
                let mut whole = one(big, 4, 5 * STEP);
                whole.shapes[0].num_nodes = nodes as u32;
                whole.submit_ms = now;
                queue.push(whole);
            }
            let mut view = ClusterView { now_ms: now, pending: queue.clone(), ..Default::default() };
            view.config.set("priority.starve_after", &format!("{}s", STARVE / 1000)).unwrap();
            for i in 0..nodes {
                let (mut n, _) = node(i, 4, 0, None, 0);
                for (id, name, end, gpus) in running.iter().filter(|r| r.1 == n.name) {
                    let res = Resources { gpus: gpus.len() as u32, cpus: 1, mem_mib: 1 };
                    n.free = n.free.saturating_sub(&res);
                    n.free_gpus.retain(|g| !gpus.contains(g));
                    view.running.push(RunningJob {
                        id: *id,
                        start_ms: 0,
                        stopping: false,
                        moving_to: None,
                        account: "default".into(),
                        ends_at_ms: Some(*end),
                        parts: vec![Held { node: name.clone(), res, gpus: gpus.clone() }],
                        qos: gantry_policies::DEFAULT_QOS.to_string(),
                        checkpointed_ms: None,
                        movable: None,
                        deadline_ms: None,
                        preemptions: 0,
                    });
                }
                view.nodes.push(n);
            }
            let d = schedule(&view);
            if promised.is_none()
                && now >= 10 * STEP + STARVE
                && let Some((_, WaitReason::Reserved { in_ms })) = d.waiting.iter().find(|(j, _)| *j == big)
            {
                promised = Some(now + in_ms);
            }
            for start in d.starts {
                let job = queue.iter().position(|j| j.id == start.job).unwrap();
                let job = queue.remove(job);
                let end = now + job.shapes[0].time_limit_ms.unwrap();
                for part in start.parts {
                    running.push((job.id, part.node, end, part.gpus));
                }
                if job.id == big {
                    started = Some(now);
                }
            }
            now += STEP;
        }
        let started = started.expect("the whole-cluster job never started");
        // Starving, it ranks behind only the older jobs, so the first pass after that
        // reserves it, unless it started before.
        if let Some(promised) = promised {
            prop_assert!(started <= promised, "started at {}, promised {}", started, promised);
        }
    }
}
