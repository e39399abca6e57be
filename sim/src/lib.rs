//! `gantry-sim`: replays GPU-cluster job traces through the scheduler's own policies
//! (`gantry_policies::schedule`, the very pass `gantry-schedd` runs) and measures what
//! happened: completion and waiting times, utilization, fragmentation, fairness, deadlines.

pub mod cluster;
pub mod engine;
pub mod metrics;
pub mod plots;
pub mod suite;
pub mod trace;

use std::path::Path;

use anyhow::Context;
use gantry_policies::{PolicyConfig, SchedulingProfile};

use crate::cluster::Cluster;
use crate::engine::{Run, Settings, simulate};
use crate::metrics::{Metrics, measure};
use crate::trace::TraceJob;

/// One run of `trace` on `cluster` under `profile`.
pub fn run_profile(
    trace: &[TraceJob],
    cluster: &Cluster,
    profile: SchedulingProfile,
    settings: &Settings,
) -> (Run, Metrics) {
    let mut config: PolicyConfig = settings.config.clone();
    config.profile = profile;
    let settings = Settings {
        config,
        ..settings.clone()
    };
    let run = simulate(trace, cluster.nodes(), cluster.topology(), &settings);
    let metrics = measure(&run, profile.as_str());
    (run, metrics)
}

/// Writes `metrics.json` (one object per profile), `table.txt` and, per profile,
/// `timeline-PROFILE.csv` (utilization, queue and fragmentation over time) and the plots
/// (`utilization.svg`, `queue.svg`, `jct_cdf.svg`) into `dir`.
pub fn write_outputs(dir: &Path, runs: &[(Run, Metrics)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let metrics: Vec<&Metrics> = runs.iter().map(|(_, m)| m).collect();
    let json = if metrics.len() == 1 {
        serde_json::to_string_pretty(metrics[0])?
    } else {
        serde_json::to_string_pretty(&metrics)?
    };
    write(dir, "metrics.json", &(json + "\n"))?;
    let rows: Vec<Metrics> = metrics.into_iter().cloned().collect();
    write(dir, "table.txt", &metrics::table(&rows))?;
    for (run, m) in runs {
        let mut csv = String::from("time_s,busy_gpus,queued_jobs,free_gpus,fragmented_gpus\n");
        for s in &run.samples {
            csv.push_str(&format!(
                "{:.3},{},{},{},{}\n",
                s.at_ms as f64 / 1000.0,
                s.busy_gpus,
                s.queued,
                s.free_gpus,
                s.fragmented_gpus
            ));
        }
        write(dir, &format!("timeline-{}.csv", m.profile), &csv)?;
    }
    plots::write_plots(dir, runs)?;
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}
