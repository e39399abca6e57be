//! Placement: where a job goes, given what is free. One-node starts go where they fragment
//! least (see [`crate::fragmentation`]); gangs under one leaf switch when one has room, then
//! the fewest switches; GPUs inside one NVLink group, then one NUMA node. Reservations take
//! the lowest free GPUs, so the next pass reserves the very same ones.

use std::collections::BTreeMap;

use gantry_model::{Gpu, Shape};

use crate::fragmentation::Demand;
use crate::profile::Free;
use crate::topology::Topology;
use crate::view::NodeView;

/// Where a job goes: node indices, each with the GPUs it gets there.
pub(crate) type Picks = Vec<(usize, Vec<u32>)>;

pub(crate) fn total_gpus(shape: &Shape) -> u64 {
    u64::from(shape.num_nodes) * u64::from(shape.per_node.gpus)
}

/// How nodes and GPUs are chosen.
#[derive(Clone, Copy)]
pub(crate) enum Pick<'d> {
    /// For a start: a one-node job on the node where it grows fragmentation the least for the
    /// sizes waiting (see [`crate::fragmentation`]); GPUs inside one NVLink group when one has
    /// room (see [`choose_gpus`]).
    Start(&'d Demand),
    /// For a reservation: the lowest free indices. Jobs placed later in the pass never
    /// take a reserved GPU, so the lowest ones stay the lowest, and the next pass reserves
    /// the very same GPUs (an NVLink-group choice could move as other GPUs fill up, and push
    /// a lower reservation back). The job gets its NVLink-aware GPUs when it starts.
    Reserve,
}

/// Where a job of `shape` fits in `free`: `num_nodes` schedulable nodes with room, and the
/// GPUs to use on each. A single node is, for a start, the one where it fragments least (the
/// first such), for a reservation the first with room. A gang goes under one leaf
/// switch when one has enough nodes with room (the one with the fewest, keeping larger
/// groups whole), else under one switch a level up, and so on; without a topology, or when
/// no switch has enough, anywhere. Within that, a starting gang takes the nodes where it
/// fragments least, a reserved one the first nodes with room.
pub(crate) fn place(
    shape: &Shape,
    nodes: &[NodeView],
    free: &[Free],
    how: Pick,
    topology: &Topology,
) -> Option<Picks> {
    let wanted = usize::try_from(shape.num_nodes).ok()?;
    if let (1, Pick::Start(demand)) = (wanted, how)
        && !demand.is_empty()
    {
        return least_fragmenting(shape, nodes, free, demand);
    }
    let mut fitting = nodes
        .iter()
        .zip(free)
        .enumerate()
        .filter(|(_, (node, f))| takes(node, shape) && shape.per_node.fits_in(&f.res))
        .filter_map(|(i, (node, f))| Some((i, pick_gpus(node, shape, &f.gpus, how)?)));
    let demand = match how {
        Pick::Start(demand) if !demand.is_empty() => Some(demand),
        _ => None,
    };
    if wanted <= 1 || (topology.is_empty() && demand.is_none()) {
        let picks: Picks = fitting.by_ref().take(wanted).collect();
        return (picks.len() == wanted).then_some(picks);
    }
    let mut fitting: Picks = fitting.collect();
    if fitting.len() < wanted {
        return None;
    }
    // A gang that starts takes, among equals, the nodes where it fragments least.
    if let Some(demand) = demand {
        let mut growth: BTreeMap<usize, i128> = BTreeMap::new();
        fitting.sort_by_cached_key(|(i, _)| {
            let count = free[*i].gpus.len();
            let g = *growth.entry(count).or_insert_with(|| {
                demand.growth(
                    u32::try_from(count).unwrap_or(u32::MAX),
                    shape.per_node.gpus,
                )
            });
            // Ties to the fullest node (best fit), then the first.
            (g, count, *i)
        });
    }
    let levels = fitting
        .iter()
        .map(|(i, _)| topology.switches_of(&nodes[*i].name).len())
        .max()
        .unwrap_or(0);
    for level in 0..levels {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (k, (i, _)) in fitting.iter().enumerate() {
            if let Some(switch) = topology.switches_of(&nodes[*i].name).get(level) {
                groups.entry(switch.as_str()).or_default().push(k);
            }
        }
        let best = groups
            .values()
            .filter(|members| members.len() >= wanted)
            .min_by_key(|members| members.len());
        if let Some(members) = best {
            return Some(
                members[..wanted]
                    .iter()
                    .map(|k| fitting[*k].clone())
                    .collect(),
            );
        }
    }
    Some(fitting.into_iter().take(wanted).collect())
}

/// The node a one-node job fragments least (the first such), and its GPUs there. One look
/// at each node; the growth depends only on a node's free GPU count, so it is worked out
/// once per count.
fn least_fragmenting(
    shape: &Shape,
    nodes: &[NodeView],
    free: &[Free],
    demand: &Demand,
) -> Option<Picks> {
    let wanted = shape.per_node.gpus;
    let mut growth: BTreeMap<usize, i128> = BTreeMap::new();
    let (best, _, _) = nodes
        .iter()
        .zip(free)
        .enumerate()
        .filter(|(_, (node, f))| takes(node, shape) && shape.per_node.fits_in(&f.res))
        .filter(|(_, (node, f))| {
            shape.gpu_model.is_none() || usable_free(node, shape, &f.gpus).len() >= wanted as usize
        })
        .map(|(i, (_, f))| {
            let count = f.gpus.len();
            let g = *growth
                .entry(count)
                .or_insert_with(|| demand.growth(u32::try_from(count).unwrap_or(u32::MAX), wanted));
            (i, g, count)
        })
        // Ties to the fullest node (best fit): what fragments alike now leaves the larger
        // holes whole for the jobs that come next.
        .min_by_key(|(i, g, count)| (*g, *count, *i))?;
    let gpus = pick_gpus(&nodes[best], shape, &free[best].gpus, Pick::Start(demand))?;
    Some(vec![(best, gpus)])
}

/// Whether `node` takes new work of `shape`: up, not drained, of its pool and labels.
fn takes(node: &NodeView, shape: &Shape) -> bool {
    node.schedulable && shape.admits(&node.pool, &node.labels)
}

/// The free GPUs of `node` that `shape` may use.
fn usable_free(node: &NodeView, shape: &Shape, free: &[u32]) -> Vec<u32> {
    if shape.gpu_model.is_none() {
        return free.to_vec();
    }
    free.iter()
        .copied()
        .filter(|i| node.gpus.iter().any(|g| g.index == *i && shape.takes(g)))
        .collect()
}

fn pick_gpus(node: &NodeView, shape: &Shape, free: &[u32], how: Pick) -> Option<Vec<u32>> {
    let usable = usable_free(node, shape, free);
    match how {
        Pick::Start(_) => choose_gpus(&node.gpus, &usable, shape.per_node.gpus),
        Pick::Reserve => {
            let count = usize::try_from(shape.per_node.gpus).ok()?;
            (usable.len() >= count).then(|| usable[..count].to_vec())
        }
    }
}

/// Chooses `count` of the free GPUs: all inside one NVLink group when one has room,
/// preferring the group with the fewest free GPUs (keeping larger groups whole for
/// larger jobs); otherwise the lowest free indices.
fn choose_gpus(gpus: &[Gpu], free: &[u32], count: u32) -> Option<Vec<u32>> {
    let count = usize::try_from(count).ok()?;
    if free.len() < count {
        return None;
    }
    let gpu = |index: u32| gpus.iter().find(|g| g.index == index);
    // The tightest group that holds them all: one NVLink group, else one NUMA node.
    let tightest = |key: &dyn Fn(&Gpu) -> Option<u32>| {
        let mut groups: BTreeMap<Option<u32>, Vec<u32>> = BTreeMap::new();
        for &g in free {
            groups.entry(gpu(g).and_then(key)).or_default().push(g);
        }
        groups
            .into_iter()
            .filter(|(key, members)| key.is_some() && members.len() >= count)
            .min_by_key(|(_, members)| members.len())
            .map(|(_, members)| members[..count].to_vec())
    };
    let chosen = tightest(&|g| Some(g.nvlink_group))
        .or_else(|| tightest(&|g| g.numa_node))
        .unwrap_or_else(|| free[..count].to_vec());
    Some(chosen)
}

/// Says what a blocked job waits for, in words a user understands.
pub(crate) fn shortage(shape: &Shape, nodes: &[NodeView], free: &[Free]) -> String {
    let ask = &shape.per_node;
    let admitted = |n: &NodeView| shape.admits(&n.pool, &n.labels);
    // Which nodes it may use, said when it may not use them all.
    let among = if nodes.iter().all(admitted) {
        String::new()
    } else {
        format!(" of {}", shape.nodes_text())
    };
    let schedulable = nodes.iter().filter(|n| takes(n, shape)).count();
    if schedulable < usize::try_from(shape.num_nodes).unwrap_or(usize::MAX) {
        let away: Vec<String> = nodes
            .iter()
            .filter(|n| admitted(n) && !n.schedulable)
            .map(|n| {
                format!(
                    "{} {}",
                    n.name,
                    n.unavailable_reason.as_deref().unwrap_or("unavailable")
                )
            })
            .collect();
        return format!(
            "needs {} node(s){among} but only {schedulable} take work ({})",
            shape.num_nodes,
            away.join(", ")
        );
    }
    let with_room = nodes
        .iter()
        .zip(free)
        .filter(|(n, f)| {
            takes(n, shape)
                && ask.fits_in(&f.res)
                && pick_gpus(n, shape, &f.gpus, Pick::Reserve).is_some()
        })
        .count();
    format!(
        "needs {} GPU(s), {} CPU(s) and {} MiB on each of {} node(s){among}; {with_room} node(s) have that free",
        shape.gpus_text(),
        ask.cpus,
        ask.mem_mib,
        shape.num_nodes
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule;
    use crate::view::{ClusterView, Decisions, Held, PendingJob, RunningJob, WaitReason};
    use gantry_model::Resources;

    fn gpu(index: u32, group: u32) -> Gpu {
        Gpu {
            index,
            model: "NVIDIA H100 80GB HBM3".into(),
            memory_mib: 81920,
            nvlink_group: group,
            numa_node: None,
            uuid: String::new(),
        }
    }

    fn node(name: &str, gpus: u32) -> NodeView {
        let capacity = Resources {
            gpus,
            cpus: 32,
            mem_mib: 65536,
        };
        NodeView {
            name: name.into(),
            schedulable: true,
            unavailable_reason: None,
            gpus: (0..gpus).map(|i| gpu(i, i / 4)).collect(),
            capacity,
            free: capacity,
            free_gpus: (0..gpus).collect(),
            pool: "default".into(),
            labels: vec![],
        }
    }

    fn node_of(name: &str, gpus: u32, model: &str) -> NodeView {
        let mut n = node(name, gpus);
        for g in &mut n.gpus {
            g.model = model.into();
        }
        n
    }

    fn shape(num_nodes: u32, gpus: u32, model: Option<&str>, limit_ms: Option<u64>) -> Shape {
        Shape {
            num_nodes,
            per_node: Resources {
                gpus,
                cpus: 1,
                mem_mib: 256,
            },
            gpu_model: model.map(str::to_string),
            time_limit_ms: limit_ms,
            pool: None,
            labels: vec![],
        }
    }

    fn job(id: u64, num_nodes: u32, gpus: u32) -> PendingJob {
        PendingJob::single(id, shape(num_nodes, gpus, None, None))
    }

    fn limited(id: u64, gpus: u32, limit_ms: u64) -> PendingJob {
        PendingJob::single(id, shape(1, gpus, None, Some(limit_ms)))
    }

    /// `n` with `gpus` held until `ends_at_ms` by job `id`.
    fn holding(n: &mut NodeView, id: u64, gpus: &[u32], ends_at_ms: Option<u64>) -> RunningJob {
        let res = Resources {
            gpus: gpus.len() as u32,
            cpus: 1,
            mem_mib: 256,
        };
        n.free = n.free.saturating_sub(&res);
        n.free_gpus.retain(|g| !gpus.contains(g));
        RunningJob {
            id,
            account: "default".into(),
            start_ms: 0,
            stopping: false,
            moving_to: None,
            ends_at_ms,
            parts: vec![Held {
                node: n.name.clone(),
                res,
                gpus: gpus.to_vec(),
            }],
            qos: crate::DEFAULT_QOS.to_string(),
            checkpointed_ms: None,
            movable: None,
            deadline_ms: None,
            preemptions: 0,
        }
    }

    #[test]
    fn three_two_gpu_jobs_on_a_four_gpu_node_run_two_at_a_time() {
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![node("a", 4)],
            running: vec![],
            pending: vec![job(1, 1, 2), job(2, 1, 2), job(3, 1, 2)],
            ..Default::default()
        };
        let d = schedule(&view);
        assert_eq!(d.starts.len(), 2);
        assert_eq!(d.starts[0].parts[0].gpus, vec![0, 1]);
        assert_eq!(d.starts[1].parts[0].gpus, vec![2, 3]);
        assert!(matches!(d.waiting[..], [(3, WaitReason::Resources(_))]));
    }

    #[test]
    fn a_job_waiting_on_a_dependency_holds_nothing_and_nobody_back() {
        let mut waits = job(1, 1, 4);
        waits.submit_ms = 0;
        waits.waiting_on = vec![gantry_model::Dependency {
            condition: gantry_model::Condition::AfterOk,
            job: 9,
        }];
        let mut behind = job(2, 1, 4);
        behind.submit_ms = 1;
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![node("a", 4)],
            pending: vec![waits, behind],
            ..Default::default()
        };
        let d = schedule(&view);
        assert_eq!(d.starts.iter().map(|s| s.job).collect::<Vec<_>>(), [2]);
        assert_eq!(d.waiting.len(), 1);
        assert_eq!(
            d.waiting[0].1.to_string(),
            "Dependency: waits for afterok:9"
        );
    }

    #[test]
    fn a_blocked_job_blocks_the_jobs_behind_it() {
        let mut n = node("a", 8);
        n.free = Resources {
            gpus: 2,
            ..n.capacity
        };
        n.free_gpus = vec![6, 7];
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![n],
            running: vec![],
            pending: vec![job(1, 1, 4), job(2, 1, 1)],
            ..Default::default()
        };
        let d = schedule(&view);
        assert!(d.starts.is_empty());
        assert_eq!(d.waiting[1], (2, WaitReason::Priority { behind: 1 }));
    }

    #[test]
    fn an_impossible_job_does_not_block_the_queue() {
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![node("a", 4)],
            running: vec![],
            pending: vec![job(1, 1, 16), job(2, 1, 1)],
            ..Default::default()
        };
        let d = schedule(&view);
        assert_eq!(d.starts.len(), 1);
        assert!(matches!(d.waiting[..], [(1, WaitReason::NeverFits(_))]));
    }

    #[test]
    fn gangs_are_all_or_nothing_across_nodes() {
        let mut busy = node("b", 8);
        busy.free = Resources {
            gpus: 0,
            ..busy.capacity
        };
        busy.free_gpus = vec![];
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![node("a", 8), busy],
            running: vec![],
            pending: vec![job(1, 2, 8)],
            ..Default::default()
        };
        let d = schedule(&view);
        assert!(d.starts.is_empty(), "half a gang must never start");
        let view = ClusterView {
            nodes: vec![node("a", 8), node("b", 8)],
            ..view
        };
        let d = schedule(&view);
        let nodes: Vec<&str> = d.starts[0].parts.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(nodes, ["a", "b"]);
    }

    #[test]
    fn gpus_come_from_one_nvlink_group_when_one_has_room() {
        let mut n = node("a", 8);
        n.free_gpus = vec![2, 3, 4, 5, 6, 7];
        n.free = Resources {
            gpus: 6,
            ..n.capacity
        };
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![n],
            running: vec![],
            pending: vec![job(1, 1, 2)],
            ..Default::default()
        };
        // Group 0 has {2,3} free, group 1 has {4..7}: the tighter group is used, group 1 stays whole.
        assert_eq!(schedule(&view).starts[0].parts[0].gpus, vec![2, 3]);
    }

    #[test]
    fn drained_nodes_take_no_work() {
        let mut n = node("a", 8);
        n.schedulable = false;
        n.unavailable_reason = Some("drained".into());
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![n],
            running: vec![],
            pending: vec![job(1, 1, 1)],
            ..Default::default()
        };
        let d = schedule(&view);
        assert!(d.starts.is_empty());
        assert!(matches!(&d.waiting[0].1, WaitReason::Resources(w) if w.contains("a drained")));
    }

    #[test]
    fn a_short_job_backfills_before_a_reservation_and_a_long_one_waits() {
        let mut n = node("a", 8);
        let running = holding(&mut n, 10, &[0, 1, 2, 3, 4, 5], Some(100_000));
        let mut view = ClusterView {
            now_ms: 0,
            nodes: vec![n],
            running: vec![running],
            pending: vec![
                limited(1, 8, 3_600_000),
                limited(2, 2, 50_000),
                limited(3, 2, 200_000),
                job(4, 1, 1),
            ],
            ..Default::default()
        };
        // In submission order: job 2 goes ahead of job 1 by backfill, not by being shorter.
        view.config.set("weight.short", "0").unwrap();
        let d = schedule(&view);
        let started: Vec<u64> = d.starts.iter().map(|s| s.job).collect();
        assert_eq!(started, [2], "{d:?}");
        assert_eq!(d.starts[0].parts[0].gpus, [6, 7]);
        assert_eq!(d.waiting[0], (1, WaitReason::Reserved { in_ms: 100_000 }));
        // Both would still hold GPUs when job 1 is due.
        assert_eq!(d.waiting[1].0, 3);
        assert_eq!(d.waiting[2].0, 4);
        assert!(matches!(
            d.waiting[1].1,
            WaitReason::Reserved { .. } | WaitReason::Priority { .. }
        ));
        assert_eq!(
            WaitReason::Reserved { in_ms: 100_000 }.to_string(),
            "Resources: reserved, starts within 1:40"
        );
    }

    #[test]
    fn a_job_on_resources_no_reservation_needs_starts_whatever_its_limit() {
        let mut a = node("a", 8);
        let running = holding(&mut a, 10, &[0, 1, 2, 3], Some(100_000));
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![a, node("b", 4)],
            running: vec![running],
            // Job 1 needs all of node a (b is too small); job 2 fits on b for ever.
            pending: vec![limited(1, 8, 1_000), job(2, 1, 4)],
            ..Default::default()
        };
        let d = schedule(&view);
        assert_eq!(d.starts.len(), 1, "{d:?}");
        assert_eq!(d.starts[0].job, 2);
        assert_eq!(d.starts[0].parts[0].node, "b");
        assert_eq!(d.waiting, [(1, WaitReason::Reserved { in_ms: 100_000 })]);
    }

    #[test]
    fn without_time_limits_to_plan_by_a_blocked_job_blocks_the_queue() {
        let mut n = node("a", 8);
        let running = holding(&mut n, 10, &[0, 1, 2, 3, 4, 5], None);
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![n],
            running: vec![running],
            pending: vec![limited(1, 8, 1_000), limited(2, 1, 1_000)],
            ..Default::default()
        };
        let d = schedule(&view);
        assert!(d.starts.is_empty(), "{d:?}");
        assert!(matches!(d.waiting[0].1, WaitReason::Resources(_)));
        assert_eq!(d.waiting[1], (2, WaitReason::Priority { behind: 1 }));
    }

    /// A big gang arrives into a steady stream of small jobs that would always fill any GPU
    /// freed, each shorter than it: by priority it would wait for ever. Every job runs
    /// exactly its time limit. Once it has waited `priority.starve_after` only the jobs
    /// submitted before it go first, so it starts by the time those and the jobs running
    /// then are done; and nothing ever overcommits a GPU.
    #[test]
    fn a_big_job_starts_in_bounded_time_under_a_stream_of_small_ones() {
        // Jobs asking more than a GPU-minute, so the big one is the longer by GPU time.
        const STEP: u64 = 10_000;
        const LIMIT: u64 = 10 * STEP;
        const STARVE: u64 = 30 * STEP;
        let mut now = 0;
        let mut next_id = 1;
        let mut queue: Vec<PendingJob> = Vec::new();
        let mut running: Vec<(u64, u64, Vec<u32>)> = Vec::new(); // (id, end, gpus)
        let big_id = 1_000_000;
        let mut big_started = None;
        let mut bound = None;
        while big_started.is_none() && now < 1_000 * STEP {
            running.retain(|(_, end, _)| *end > now);
            // Four new 1-GPU jobs every step, with staggered limits.
            for k in 0..4 {
                let mut small = limited(next_id, 1, LIMIT + k * STEP);
                small.submit_ms = now;
                queue.push(small);
                next_id += 1;
            }
            if now == 20 * STEP {
                let mut big = limited(big_id, 4, LIMIT);
                big.submit_ms = now;
                // The jobs ahead of it once it starves, four at a time, each at most
                // LIMIT + 3 steps; then the jobs running at that moment end.
                let older = queue.len() as u64;
                let longest = LIMIT + 3 * STEP;
                bound = Some(now + STARVE + older.div_ceil(4) * longest + longest);
                queue.push(big);
            }
            let mut n = node("a", 4);
            let held: Vec<RunningJob> = running
                .iter()
                .map(|(id, end, gpus)| holding(&mut n, *id, gpus, Some(*end)))
                .collect();
            let mut view = ClusterView {
                now_ms: now,
                nodes: vec![n],
                running: held,
                pending: queue.clone(),
                ..Default::default()
            };
            view.config.set("priority.starve_after", "300s").unwrap();
            for start in schedule(&view).starts {
                let job = queue.iter().position(|j| j.id == start.job).unwrap();
                let job = queue.remove(job);
                let gpus = start.parts[0].gpus.clone();
                for (_, _, other) in &running {
                    assert!(gpus.iter().all(|g| !other.contains(g)), "GPU overcommitted");
                }
                running.push((job.id, now + job.shapes[0].time_limit_ms.unwrap(), gpus));
                if job.id == big_id {
                    big_started = Some(now);
                }
            }
            now += STEP;
        }
        let (started, bound) = (
            big_started.expect("the big job never started"),
            bound.unwrap(),
        );
        assert!(started <= bound, "started at {started}, bound {bound}");
    }

    #[test]
    fn a_gpu_model_request_lands_only_on_that_model() {
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![
                node_of("a", 4, "NVIDIA A100-SXM4-80GB"),
                node_of("b", 4, "NVIDIA H100 80GB HBM3"),
            ],
            running: vec![],
            pending: vec![
                PendingJob::single(1, shape(1, 3, Some("h100"), None)),
                PendingJob::single(2, shape(1, 2, Some("h100"), None)),
                PendingJob::single(3, shape(1, 1, Some("v100"), None)),
            ],
            ..Default::default()
        };
        let d = schedule(&view);
        assert_eq!(d.starts.len(), 1, "{d:?}");
        assert_eq!(
            (d.starts[0].job, d.starts[0].parts[0].node.as_str()),
            (1, "b")
        );
        // Node a has four free GPUs, but not of the model job 2 asks for.
        assert!(
            matches!(&d.waiting[0], (2, WaitReason::Resources(why)) if why.contains("2 × h100") && why.contains("0 node(s)")),
            "{d:?}"
        );
        assert!(
            matches!(&d.waiting[1], (3, WaitReason::NeverFits(why)) if why.contains("v100")),
            "{d:?}"
        );
    }

    /// Node h has 8 H100s, 6 of them busy until 100 s; node a has 8 idle A100s. The job
    /// wants 8 H100s for 60 s, or 8 A100s at some speed.
    fn h100_or_a100(a100_speed_limit_ms: u64) -> Decisions {
        let mut h = node_of("h", 8, "NVIDIA H100 80GB HBM3");
        let running = holding(&mut h, 10, &[0, 1, 2, 3, 4, 5], Some(100_000));
        let job = PendingJob::new(
            1,
            vec![
                shape(1, 8, Some("h100"), Some(60_000)),
                shape(1, 8, Some("a100"), Some(a100_speed_limit_ms)),
            ],
        );
        schedule(&ClusterView {
            now_ms: 0,
            nodes: vec![h, node_of("a", 8, "NVIDIA A100-SXM4-80GB")],
            running: vec![running],
            pending: vec![job],
            ..Default::default()
        })
    }

    #[test]
    fn a_job_runs_in_the_shape_that_finishes_first() {
        // At 0.6×, 100 s on the A100s now beats 100 s of waiting plus 60 s on the H100s.
        let d = h100_or_a100(100_000);
        assert_eq!(d.starts.len(), 1, "{d:?}");
        assert_eq!(d.starts[0].shape, 1);
        assert_eq!(d.starts[0].parts[0].node, "a");
        // At 0.3× (200 s) waiting for the H100s finishes first: the job reserves them.
        let d = h100_or_a100(200_000);
        assert!(d.starts.is_empty(), "{d:?}");
        assert_eq!(d.waiting, [(1, WaitReason::Reserved { in_ms: 100_000 })]);
        // A tie goes to the earlier start, then to the earlier shape.
        let d = h100_or_a100(160_000);
        assert_eq!(d.starts[0].shape, 1, "{d:?}");
    }

    #[test]
    fn the_baselines_run_the_first_request_that_can_ever_fit() {
        use crate::config::SchedulingProfile;
        let both = vec![
            shape(1, 8, Some("h100"), Some(60_000)),
            shape(1, 8, Some("a100"), Some(100_000)),
        ];
        // No H100s at all: only the alternative can run; every profile runs it.
        for profile in [
            SchedulingProfile::Gantry,
            SchedulingProfile::SlurmLike,
            SchedulingProfile::Fifo,
        ] {
            let mut view = ClusterView {
                now_ms: 0,
                nodes: vec![node_of("a", 8, "NVIDIA A100-SXM4-80GB")],
                pending: vec![PendingJob::new(1, both.clone())],
                ..Default::default()
            };
            view.config.profile = profile;
            let d = schedule(&view);
            assert_eq!(d.starts.len(), 1, "{profile:?}: {d:?}");
            assert_eq!(d.starts[0].shape, 1, "{profile:?}");
        }
        // With H100s that are busy, the baselines wait for the main request; only Gantry
        // weighs the alternative.
        let mut h = node_of("h", 8, "NVIDIA H100 80GB HBM3");
        let running = holding(&mut h, 10, &[0, 1, 2, 3, 4, 5], Some(100_000));
        let mut view = ClusterView {
            now_ms: 0,
            nodes: vec![h, node_of("a", 8, "NVIDIA A100-SXM4-80GB")],
            running: vec![running],
            pending: vec![PendingJob::new(1, both)],
            ..Default::default()
        };
        view.config.profile = SchedulingProfile::SlurmLike;
        let d = schedule(&view);
        assert!(d.starts.is_empty(), "{d:?}");
    }

    #[test]
    fn an_account_at_its_gpu_limit_waits_without_holding_others_back() {
        let account = |name: &str, parent: Option<&str>, max: Option<u32>| crate::AccountView {
            name: name.into(),
            parent: parent.map(str::to_string),
            share: 1,
            guarantee_gpus: None,
            max_gpus: max,
        };
        let of = |mut job: PendingJob, account: &str| {
            job.account = account.into();
            job
        };
        let mut n = node("a", 8);
        let mut running = holding(&mut n, 10, &[0], None);
        running.account = "vision".into();
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![n],
            running: vec![running],
            pending: vec![
                of(job(1, 1, 2), "vision"),
                of(job(2, 1, 2), "vision"),
                of(job(3, 1, 1), "nlp"),
            ],
            accounts: vec![
                account("root", None, None),
                account("research", Some("root"), Some(4)),
                account("vision", Some("research"), Some(3)),
                account("nlp", Some("research"), None),
            ],
            ..Default::default()
        };
        let d = schedule(&view);
        let started: Vec<u64> = d.starts.iter().map(|s| s.job).collect();
        // vision holds 1 GPU of its 3: job 1 brings it to 3, job 2 would make 5; nlp's job
        // fits under research's 4.
        assert_eq!(started, [1, 3], "{d:?}");
        assert_eq!(
            d.waiting,
            [(
                2,
                WaitReason::Quota(
                    "account vision may hold 3 GPUs; it holds 3 and this job needs 2".into()
                )
            )]
        );
        assert_eq!(
            d.waiting[0].1.to_string(),
            "Quota: account vision may hold 3 GPUs; it holds 3 and this job needs 2"
        );
    }
}
