//! Placement v0: in priority order, give each job the first nodes that fit it.

use std::collections::BTreeMap;

use gantry_model::{Gpu, Resources};

use crate::feasibility::never_fits;
use crate::view::{ClusterView, Decisions, NodeView, PartPlan, PendingJob, Start, WaitReason};

/// One scheduling pass. Jobs that could never run on the known nodes do not block
/// the queue; the first job that merely has to wait for resources does.
pub fn schedule(view: &ClusterView) -> Decisions {
    let mut free: Vec<Free> = view
        .nodes
        .iter()
        .map(|n| Free {
            res: n.free,
            gpus: n.free_gpus.clone(),
        })
        .collect();
    let mut decisions = Decisions::default();
    let mut blocked_by = None;
    for job in &view.pending {
        if let Some(why) = never_fits(&view.nodes, job.num_nodes, &job.per_node) {
            decisions.waiting.push((job.id, WaitReason::NeverFits(why)));
            continue;
        }
        if let Some(behind) = blocked_by {
            decisions
                .waiting
                .push((job.id, WaitReason::Priority { behind }));
            continue;
        }
        match place(job, &view.nodes, &free) {
            Some(picks) => {
                let parts = picks
                    .into_iter()
                    .map(|(i, gpus)| {
                        let node = &mut free[i];
                        node.res = node.res.saturating_sub(&job.per_node);
                        node.gpus.retain(|g| !gpus.contains(g));
                        PartPlan {
                            node: view.nodes[i].name.clone(),
                            gpus,
                            cpus: job.per_node.cpus,
                            mem_mib: job.per_node.mem_mib,
                        }
                    })
                    .collect();
                decisions.starts.push(Start { job: job.id, parts });
            }
            None => {
                let why = shortage(job, &view.nodes, &free);
                decisions.waiting.push((job.id, WaitReason::Resources(why)));
                blocked_by = Some(job.id);
            }
        }
    }
    decisions
}

struct Free {
    res: Resources,
    gpus: Vec<u32>,
}

/// The first `num_nodes` schedulable nodes with room, and the GPUs to use on each.
fn place(job: &PendingJob, nodes: &[NodeView], free: &[Free]) -> Option<Vec<(usize, Vec<u32>)>> {
    let wanted = usize::try_from(job.num_nodes).ok()?;
    let picks: Vec<(usize, Vec<u32>)> = nodes
        .iter()
        .zip(free)
        .enumerate()
        .filter(|(_, (node, f))| node.schedulable && job.per_node.fits_in(&f.res))
        .filter_map(|(i, (node, f))| Some((i, pick_gpus(&node.gpus, &f.gpus, job.per_node.gpus)?)))
        .take(wanted)
        .collect();
    (picks.len() == wanted).then_some(picks)
}

/// Chooses `count` of the free GPUs: all inside one NVLink group when one has room,
/// preferring the group with the fewest free GPUs (keeping larger groups whole for
/// larger jobs); otherwise the lowest free indices.
fn pick_gpus(gpus: &[Gpu], free: &[u32], count: u32) -> Option<Vec<u32>> {
    let count = usize::try_from(count).ok()?;
    if free.len() < count {
        return None;
    }
    let group_of = |index: u32| {
        gpus.iter()
            .find(|g| g.index == index)
            .map(|g| g.nvlink_group)
    };
    let mut groups: BTreeMap<Option<u32>, Vec<u32>> = BTreeMap::new();
    for &g in free {
        groups.entry(group_of(g)).or_default().push(g);
    }
    let best_group = groups
        .values()
        .filter(|members| members.len() >= count)
        .min_by_key(|members| members.len());
    let chosen = match best_group {
        Some(members) => members[..count].to_vec(),
        None => free[..count].to_vec(),
    };
    Some(chosen)
}

/// Says what a blocked job waits for, in words a user understands.
fn shortage(job: &PendingJob, nodes: &[NodeView], free: &[Free]) -> String {
    let ask = &job.per_node;
    let schedulable = nodes.iter().filter(|n| n.schedulable).count();
    if schedulable < usize::try_from(job.num_nodes).unwrap_or(usize::MAX) {
        let away: Vec<String> = nodes
            .iter()
            .filter(|n| !n.schedulable)
            .map(|n| {
                format!(
                    "{} {}",
                    n.name,
                    n.unavailable_reason.as_deref().unwrap_or("unavailable")
                )
            })
            .collect();
        return format!(
            "needs {} node(s) but only {schedulable} take work ({})",
            job.num_nodes,
            away.join(", ")
        );
    }
    let with_room = nodes
        .iter()
        .zip(free)
        .filter(|(n, f)| n.schedulable && ask.fits_in(&f.res))
        .count();
    format!(
        "needs {} GPU(s), {} CPU(s) and {} MiB on each of {} node(s); {with_room} node(s) have that free",
        ask.gpus, ask.cpus, ask.mem_mib, job.num_nodes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, group: u32) -> Gpu {
        Gpu {
            index,
            model: "H100".into(),
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
        }
    }

    fn job(id: u64, num_nodes: u32, gpus: u32) -> PendingJob {
        PendingJob {
            id,
            num_nodes,
            per_node: Resources {
                gpus,
                cpus: 1,
                mem_mib: 256,
            },
        }
    }

    #[test]
    fn three_two_gpu_jobs_on_a_four_gpu_node_run_two_at_a_time() {
        let view = ClusterView {
            now_ms: 0,
            nodes: vec![node("a", 4)],
            pending: vec![job(1, 1, 2), job(2, 1, 2), job(3, 1, 2)],
        };
        let d = schedule(&view);
        assert_eq!(d.starts.len(), 2);
        assert_eq!(d.starts[0].parts[0].gpus, vec![0, 1]);
        assert_eq!(d.starts[1].parts[0].gpus, vec![2, 3]);
        assert!(matches!(d.waiting[..], [(3, WaitReason::Resources(_))]));
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
            pending: vec![job(1, 1, 4), job(2, 1, 1)],
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
            pending: vec![job(1, 1, 16), job(2, 1, 1)],
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
            pending: vec![job(1, 2, 8)],
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
            pending: vec![job(1, 1, 2)],
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
            pending: vec![job(1, 1, 1)],
        };
        let d = schedule(&view);
        assert!(d.starts.is_empty());
        assert!(matches!(&d.waiting[0].1, WaitReason::Resources(w) if w.contains("a drained")));
    }
}
