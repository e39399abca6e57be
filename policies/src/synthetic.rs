//! Synthetic clusters and queues for benchmarks (`gantry bench schedule`, the criterion
//! benches): deterministic, so the same sizes always give the same cluster, queue and
//! decisions.

use gantry_model::{Gpu, Resources, Shape};

use crate::view::{ClusterView, Held, NodeView, PendingJob, RunningJob};

/// A small deterministic generator: the bench needs variety, not randomness.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `below`.
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

const HOUR_MS: u64 = 3_600_000;

/// `nodes` nodes of `gpus` GPUs (NVLink groups of 4), every one full of running jobs (1, 2
/// or 4 GPUs, limits up to 8 h), and `pending` jobs queued: 1, 2, 4 or 8 GPUs, every tenth a
/// 2- or 4-node gang, limits up to 12 h.
pub fn full_cluster(nodes: u32, gpus: u32, pending: u32) -> ClusterView {
    let mut rng = Lcg(42);
    let mut node_views = Vec::new();
    let mut running = Vec::new();
    for n in 0..nodes {
        let name = format!("gpu{n:05}");
        let capacity = Resources {
            gpus,
            cpus: gpus * 8,
            mem_mib: u64::from(gpus) * 65_536,
        };
        let mut next_gpu = 0;
        while next_gpu < gpus {
            let size = [1, 2, 4][rng.next(3) as usize].min(gpus - next_gpu);
            let gpus: Vec<u32> = (next_gpu..next_gpu + size).collect();
            next_gpu += size;
            running.push(RunningJob {
                id: running.len() as u64 + 1,
                start_ms: 0,
                stopping: false,
                moving_to: None,
                account: "default".into(),
                ends_at_ms: Some(1 + rng.next(8 * HOUR_MS)),
                parts: vec![Held {
                    node: name.clone(),
                    res: Resources {
                        gpus: size,
                        cpus: size * 8,
                        mem_mib: u64::from(size) * 65_536,
                    },
                    gpus,
                }],
                qos: crate::DEFAULT_QOS.to_string(),
                checkpointed_ms: None,
                movable: None,
                deadline_ms: None,
                preemptions: 0,
            });
        }
        node_views.push(NodeView {
            name,
            schedulable: true,
            unavailable_reason: None,
            gpus: (0..gpus)
                .map(|i| Gpu {
                    index: i,
                    model: "H100".into(),
                    memory_mib: 81_920,
                    nvlink_group: i / 4,
                    numa_node: None,
                    uuid: String::new(),
                })
                .collect(),
            capacity,
            free: Resources {
                gpus: 0,
                cpus: 0,
                mem_mib: 0,
            },
            free_gpus: vec![],
            pool: "default".into(),
            labels: vec![],
        });
    }
    let first_pending = running.len() as u64 + 1;
    let pending = (0..u64::from(pending))
        .map(|i| {
            let gpus = [1, 2, 4, 8][rng.next(4) as usize].min(gpus);
            let num_nodes = if i % 10 == 9 {
                2 + 2 * (rng.next(2) as u32)
            } else {
                1
            };
            queued(first_pending + i, num_nodes.min(nodes), gpus, &mut rng)
        })
        .collect();
    ClusterView {
        now_ms: 0,
        nodes: node_views,
        pending,
        running,
        ..Default::default()
    }
}

/// The `n`th job arriving after the pass: 1, 2, 4 or 8 GPUs on one node, up to 12 h.
pub fn arrival(view: &ClusterView, n: u64, rng: &mut Lcg) -> PendingJob {
    let largest = view
        .nodes
        .iter()
        .map(|n| n.capacity.gpus)
        .max()
        .unwrap_or(8);
    let gpus = [1, 2, 4, 8][rng.next(4) as usize].min(largest);
    let id = view.pending.iter().map(|j| j.id).max().unwrap_or(0)
        + view.running.iter().map(|j| j.id).max().unwrap_or(0)
        + 1
        + n;
    queued(id, 1, gpus, rng)
}

/// A job of `num_nodes` × `gpus` GPUs (8 CPUs and 64 GiB per GPU), limit 0.5–12 h.
fn queued(id: u64, num_nodes: u32, gpus: u32, rng: &mut Lcg) -> PendingJob {
    PendingJob::single(
        id,
        Shape {
            num_nodes,
            per_node: Resources {
                gpus,
                cpus: gpus * 8,
                mem_mib: u64::from(gpus) * 65_536,
            },
            gpu_model: None,
            time_limit_ms: Some((1 + rng.next(24)) * HOUR_MS / 2),
            pool: None,
            labels: vec![],
        },
    )
}

/// `view` with every other node idle (its running jobs gone) and nothing queued: a cluster
/// where arrivals start.
pub fn with_room(view: &ClusterView) -> ClusterView {
    let mut roomy = view.clone();
    roomy.pending.clear();
    let idle: std::collections::BTreeSet<&str> = view
        .nodes
        .iter()
        .step_by(2)
        .map(|n| n.name.as_str())
        .collect();
    let on_idle = |j: &RunningJob| j.parts.iter().any(|p| idle.contains(p.node.as_str()));
    roomy.running.retain(|j| !on_idle(j));
    for node in roomy.nodes.iter_mut().step_by(2) {
        node.free = node.capacity;
        node.free_gpus = node.gpus.iter().map(|g| g.index).collect();
    }
    roomy
}
