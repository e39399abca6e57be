//! `gantry bench schedule`: the cost of one scheduling pass (`gantry_policies::schedule`,
//! the very function the scheduler runs) on a synthetic cluster and queue, in this process.
//! Deterministic inputs: the same flags give the same cluster, queue and decisions.

use std::time::Instant;

use gantry_model::{Gpu, Resources, Shape};
use gantry_policies::{ClusterView, Held, NodeView, PendingJob, RunningJob, WaitReason, schedule};
use serde::Serialize;

use crate::output::Format;

#[derive(clap::Args, Debug, Clone)]
pub struct ScheduleBench {
    /// Nodes in the cluster
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    nodes: u32,
    /// GPUs per node (NVLink groups of 4)
    #[arg(
        long = "gpus-per-node",
        visible_alias = "gpus",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    gpus: u32,
    /// Pending jobs: 1, 2, 4 or 8 GPUs, every tenth a 2- or 4-node gang
    #[arg(long, default_value_t = 10_000)]
    pending: u32,
    /// Passes to time
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    passes: u32,
    /// Output format: a line, or one JSON object (`--json` is the same as `-o json`)
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    format: Format,
    #[arg(long, hide = true)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct ScheduleReport {
    nodes: u32,
    gpus_per_node: u32,
    running: usize,
    pending: usize,
    starts: usize,
    reserved: usize,
    pass_p50_ms: f64,
    pass_p99_ms: f64,
    pass_max_ms: f64,
    /// A pass right after one more job arrived in the cluster the first pass left (its starts
    /// applied): what deciding one arrival costs. Gantry has no incremental path: an arrival
    /// costs a whole pass.
    arrival_p50_ms: f64,
}

/// A small deterministic generator: the bench needs variety, not randomness.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

const HOUR_MS: u64 = 3_600_000;

/// Every node full of running jobs (1, 2 or 4 GPUs, limits up to 8 h), and a queue.
fn view(args: &ScheduleBench) -> ClusterView {
    let mut rng = Lcg(42);
    let mut nodes = Vec::new();
    let mut running = Vec::new();
    for n in 0..args.nodes {
        let name = format!("gpu{n:05}");
        let capacity = Resources {
            gpus: args.gpus,
            cpus: args.gpus * 8,
            mem_mib: u64::from(args.gpus) * 65_536,
        };
        let mut next_gpu = 0;
        while next_gpu < args.gpus {
            let size = [1, 2, 4][rng.next(3) as usize].min(args.gpus - next_gpu);
            let gpus: Vec<u32> = (next_gpu..next_gpu + size).collect();
            next_gpu += size;
            running.push(RunningJob {
                id: running.len() as u64 + 1,
                start_ms: 0,
                stopping: false,
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
            });
        }
        nodes.push(NodeView {
            name,
            schedulable: true,
            unavailable_reason: None,
            gpus: (0..args.gpus)
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
        });
    }
    let first_pending = running.len() as u64 + 1;
    let pending = (0..u64::from(args.pending))
        .map(|i| {
            let gpus = [1, 2, 4, 8][rng.next(4) as usize].min(args.gpus);
            let num_nodes = if i % 10 == 9 {
                2 + 2 * (rng.next(2) as u32)
            } else {
                1
            };
            PendingJob::single(
                first_pending + i,
                Shape {
                    num_nodes: num_nodes.min(args.nodes),
                    per_node: Resources {
                        gpus,
                        cpus: gpus * 8,
                        mem_mib: u64::from(gpus) * 65_536,
                    },
                    gpu_model: None,
                    time_limit_ms: Some((1 + rng.next(24)) * HOUR_MS / 2),
                },
            )
        })
        .collect();
    ClusterView {
        now_ms: 0,
        nodes,
        pending,
        running,
        ..Default::default()
    }
}

/// Milliseconds of each of `runs` calls of `f`, sorted.
fn timed(runs: u32, mut f: impl FnMut()) -> Vec<f64> {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

pub fn run(args: &ScheduleBench) -> anyhow::Result<()> {
    let view = view(args);
    let decisions = schedule(&view);
    let times = timed(args.passes, || {
        schedule(&view);
    });
    let mut steady = view.with_starts(&decisions);
    let next_id = steady.pending.iter().map(|j| j.id).max().unwrap_or(0) + 1;
    steady.pending.push(PendingJob::single(
        next_id,
        Shape {
            num_nodes: 1,
            per_node: Resources {
                gpus: 1,
                cpus: 8,
                mem_mib: 65_536,
            },
            gpu_model: None,
            time_limit_ms: Some(HOUR_MS),
        },
    ));
    let arrivals = timed(args.passes, || {
        schedule(&steady);
    });
    let report = ScheduleReport {
        nodes: args.nodes,
        gpus_per_node: args.gpus,
        running: view.running.len(),
        pending: view.pending.len(),
        starts: decisions.starts.len(),
        reserved: decisions
            .waiting
            .iter()
            .filter(|(_, why)| matches!(why, WaitReason::Reserved { .. }))
            .count(),
        pass_p50_ms: percentile(&times, 50),
        pass_p99_ms: percentile(&times, 99),
        pass_max_ms: percentile(&times, 100),
        arrival_p50_ms: percentile(&arrivals, 50),
    };
    if args.json || args.format == Format::Json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} nodes x {} GPUs, {} running, {} pending: {} starts, {} reserved; pass p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; arrival p50 {:.2} ms",
            report.nodes,
            report.gpus_per_node,
            report.running,
            report.pending,
            report.starts,
            report.reserved,
            report.pass_p50_ms,
            report.pass_p99_ms,
            report.pass_max_ms,
            report.arrival_p50_ms
        );
    }
    Ok(())
}
