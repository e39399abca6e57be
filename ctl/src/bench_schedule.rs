//! `gantry bench schedule`: the cost of one scheduling pass (`gantry_policies::schedule`,
//! the very function the scheduler runs) on a synthetic cluster and queue, in this process.
//! Deterministic inputs: the same flags give the same cluster, queue and decisions.

use std::time::Instant;

use gantry_policies::synthetic::{Lcg, arrival, full_cluster, with_room};
use gantry_policies::{ClusterView, Decisions, Plan, WaitReason, schedule};
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
    /// Deciding one more job arriving in the cluster the first pass left (its starts
    /// applied), as the scheduler does: from the pass's plan, without a new pass.
    arrival_p50_ms: f64,
    arrival_p99_ms: f64,
    /// How many arrivals were timed, and how many of them the plan could not decide (they
    /// rank ahead of a reservation, so they get a full pass, timed as part of them).
    arrivals: usize,
    arrivals_needing_a_pass: usize,
    /// The same for the arrivals that start, in a cluster with every other node idle and
    /// nothing queued: their placement looks at every node.
    arrival_start_p50_ms: f64,
    /// A whole pass over the queue with the arrival in it, for comparison.
    arrival_full_pass_p50_ms: f64,
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

/// 0 for no figures.
fn percentile(sorted: &[f64], p: usize) -> f64 {
    let at = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(at).copied().unwrap_or(0.0)
}

/// How deciding a run of arrivals went.
struct Arrivals {
    /// Milliseconds per arrival, sorted.
    times: Vec<f64>,
    /// Those of the arrivals that started, sorted.
    start_times: Vec<f64>,
    /// Arrivals the plan could not decide (they rank ahead of a reservation): each cost a
    /// full pass and a new plan, as in the scheduler, and is timed as such.
    full_passes: usize,
}

/// Decides `runs` arrivals one after another as the scheduler does: from the plan of the
/// last pass, or, when the plan cannot decide one, by a new pass.
fn arrivals(view: &ClusterView, runs: u32) -> Arrivals {
    let mut now = view.clone();
    let mut plan = Plan::new(view.clone());
    let mut rng = Lcg(7);
    let mut report = Arrivals {
        times: Vec::new(),
        start_times: Vec::new(),
        full_passes: 0,
    };
    for n in 0..runs {
        let job = arrival(view, u64::from(n), &mut rng);
        let id = job.id;
        now.pending.push(job.clone());
        let next = now.clone();
        let began = Instant::now();
        let decisions = match plan.arrive(job, view.now_ms) {
            Ok(arrival) => Decisions {
                starts: arrival.start.into_iter().collect(),
                ..Decisions::default()
            },
            Err(_) => {
                plan = Plan::new(next);
                report.full_passes += 1;
                plan.decisions().clone()
            }
        };
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        report.times.push(ms);
        if decisions.starts.iter().any(|s| s.job == id) {
            report.start_times.push(ms);
        }
        now = now.with_starts(&decisions);
    }
    report.times.sort_by(f64::total_cmp);
    report.start_times.sort_by(f64::total_cmp);
    report
}

pub fn run(args: &ScheduleBench) -> anyhow::Result<()> {
    let view = full_cluster(args.nodes, args.gpus, args.pending);
    let decisions = schedule(&view);
    let times = timed(args.passes, || {
        schedule(&view);
    });
    let steady = view.with_starts(&decisions);
    let steady_arrivals = arrivals(&steady, args.passes.max(100));
    let roomy = with_room(&steady);
    let starting = arrivals(&roomy, args.passes.max(100));
    let mut with_one_more = steady.clone();
    with_one_more.pending.push(arrival(&steady, 0, &mut Lcg(7)));
    let full_passes = timed(args.passes, || {
        schedule(&with_one_more);
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
        arrival_p50_ms: percentile(&steady_arrivals.times, 50),
        arrival_p99_ms: percentile(&steady_arrivals.times, 99),
        arrivals: steady_arrivals.times.len(),
        arrivals_needing_a_pass: steady_arrivals.full_passes,
        arrival_start_p50_ms: percentile(&starting.start_times, 50),
        arrival_full_pass_p50_ms: percentile(&full_passes, 50),
    };
    if args.json || args.format == Format::Json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} nodes x {} GPUs, {} running, {} pending: {} starts, {} reserved; pass p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; arrival p50 {:.3} ms, p99 {:.3} ms ({} of {} needed a pass), starting {:.3} ms (a full pass: {:.2} ms)",
            report.nodes,
            report.gpus_per_node,
            report.running,
            report.pending,
            report.starts,
            report.reserved,
            report.pass_p50_ms,
            report.pass_p99_ms,
            report.pass_max_ms,
            report.arrival_p50_ms,
            report.arrival_p99_ms,
            report.arrivals_needing_a_pass,
            report.arrivals,
            report.arrival_start_p50_ms,
            report.arrival_full_pass_p50_ms
        );
    }
    Ok(())
}
