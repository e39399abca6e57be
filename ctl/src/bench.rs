//! `gantry bench`: load generators whose figures go into docs/benchmarks.md. They measure;
//! they assert nothing.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gantry_proto as pb;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::client::{Scheduler, caller};
use crate::submit::idempotency_key;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// Acknowledged submits/s and commit latency with C concurrent clients, each on its own
    /// connection, submitting N jobs in all (`true`, 1 CPU). Every submit waits for its
    /// commit. The jobs stay in the queue: run it against a scheduler whose nodes are
    /// drained, or that has none (`gantry dev --nodes 0`).
    Submit(SubmitBench),
    /// The time of one scheduling pass (the scheduler's own policy code, run here) on a
    /// synthetic cluster whose every GPU is busy and a queue behind it. Needs no scheduler
    Schedule(crate::bench_schedule::ScheduleBench),
}

#[derive(clap::Args, Debug, Clone)]
pub struct SubmitBench {
    /// Concurrent clients
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    clients: u32,
    /// Submits in all
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Print one JSON object instead of a line
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct SubmitReport {
    clients: u32,
    submits: usize,
    seconds: f64,
    submits_per_second: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
}

pub async fn submit(args: SubmitBench, addresses: Vec<String>) -> anyhow::Result<()> {
    let work_dir = std::env::current_dir()?.to_string_lossy().into_owned();
    let spec = pb::JobSpec {
        name: "bench".into(),
        account: "default".into(),
        num_nodes: 1,
        cpus_per_node: 1,
        mem_per_node_mib: 256,
        work_dir,
        program: Some(pb::Program {
            kind: Some(pb::program::Kind::Command(pb::CommandLine {
                argv: vec!["true".into()],
            })),
        }),
        ..Default::default()
    };
    // Each client connects (and finds the leader) before the clock starts.
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let mut scheduler = Scheduler::new(addresses.clone());
        scheduler
            .call(|mut c| async move { c.list_nodes(pb::ListNodesRequest::default()).await })
            .await
            .context("cannot reach the scheduler")?;
        clients.push(scheduler);
    }
    let per_client = args.count / args.clients;
    let extra = args.count % args.clients;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, mut scheduler) in (0..).zip(clients) {
        let n = per_client + u32::from(i < extra);
        let spec = spec.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let request = pb::SubmitRequest {
                    caller: Some(caller()),
                    spec: Some(spec.clone()),
                    idempotency_key: idempotency_key(),
                };
                let sent = Instant::now();
                scheduler
                    .call(|mut c| {
                        let request = request.clone();
                        async move { c.submit(request).await }
                    })
                    .await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, crate::client::ClientError>(latencies)
        });
    }
    let mut latencies: Vec<Duration> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let seconds = started.elapsed().as_secs_f64();
    if latencies.is_empty() {
        bail!("no submit was made");
    }
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(latencies[((latencies.len() - 1) as f64 * q).round() as usize]);
    let report = SubmitReport {
        clients: args.clients,
        submits: latencies.len(),
        seconds,
        submits_per_second: latencies.len() as f64 / seconds,
        latency_p50_ms: at(0.50),
        latency_p99_ms: at(0.99),
        latency_max_ms: at(1.0),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} clients: {} submits in {:.2} s = {:.0} submits/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            report.clients,
            report.submits,
            report.seconds,
            report.submits_per_second,
            report.latency_p50_ms,
            report.latency_p99_ms,
            report.latency_max_ms
        );
    }
    Ok(())
}
