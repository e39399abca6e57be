//! What a run measured, under the JSON names docs/simulation.md lists.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::Run;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub profile: String,
    pub jobs: usize,
    /// Jobs no node could ever run (refused, not simulated).
    pub refused: usize,
    pub jct_avg_s: f64,
    pub jct_p50_s: f64,
    pub jct_p95_s: f64,
    pub jct_p99_s: f64,
    /// Until the first start.
    pub wait_avg_s: f64,
    pub wait_p99_s: f64,
    /// JCT minus run time (its work alone): every moment the job was not doing new work —
    /// queued, or redoing what a preemption threw away. What a scheduler can remove.
    pub delay_avg_s: f64,
    /// Per QoS level, the mean delay of its jobs.
    pub delay_by_qos: BTreeMap<String, f64>,
    pub makespan_s: f64,
    pub gpu_util_mean: f64,
    /// min(1, GPU time the trace asks for / (capacity × makespan)).
    pub gpu_util_bound: f64,
    pub fragmentation_mean: f64,
    pub jain_fairness: f64,
    pub ftf_max: f64,
    /// Share of the jobs with a deadline that ended by it; null when none has one.
    pub deadline_hit_rate: Option<f64>,
    pub timeouts: usize,
    pub preemptions: u64,
    pub gpu_hours_lost: f64,
    /// GPU-hours lost to preemption as a share of the GPU-hours used.
    pub redone_share: f64,
    pub passes: u64,
}

const S: f64 = 1000.0;

pub fn measure(run: &Run, profile: &str) -> Metrics {
    let jobs = &run.jobs;
    let mut jct: Vec<f64> = jobs
        .iter()
        .map(|j| (j.end_ms - j.submit_ms) as f64 / S)
        .collect();
    let mut wait: Vec<f64> = jobs
        .iter()
        .map(|j| (j.first_start_ms - j.submit_ms) as f64 / S)
        .collect();
    jct.sort_by(f64::total_cmp);
    wait.sort_by(f64::total_cmp);
    let first = jobs.iter().map(|j| j.submit_ms).min().unwrap_or(0);
    let last = jobs.iter().map(|j| j.end_ms).max().unwrap_or(0);
    let makespan_ms = last.saturating_sub(first);
    let capacity_ms = run.capacity_gpus as f64 * makespan_ms as f64;
    let used: f64 = jobs.iter().map(|j| (j.gpus * j.run_ms) as f64).sum();
    let asked: f64 = jobs.iter().map(|j| (j.gpus * j.duration_ms) as f64).sum();
    let ratio = |x: f64| {
        if capacity_ms > 0.0 {
            x / capacity_ms
        } else {
            0.0
        }
    };
    let delay = |j: &&crate::engine::JobRecord| {
        (j.end_ms - j.submit_ms).saturating_sub(j.duration_ms) as f64 / S
    };
    let mut by_qos: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for j in jobs {
        let entry = by_qos.entry(j.qos.clone()).or_default();
        entry.0 += delay(&j);
        entry.1 += 1;
    }
    let lost_gpu_ms: f64 = jobs.iter().map(|j| j.lost_gpu_ms as f64).sum();
    let with_deadline: Vec<bool> = jobs
        .iter()
        .filter_map(|j| j.deadline_ms.map(|d| j.end_ms <= d))
        .collect();
    Metrics {
        profile: profile.to_string(),
        jobs: jobs.len(),
        refused: run.refused.len(),
        jct_avg_s: mean(&jct),
        jct_p50_s: percentile(&jct, 50.0),
        jct_p95_s: percentile(&jct, 95.0),
        jct_p99_s: percentile(&jct, 99.0),
        wait_avg_s: mean(&wait),
        wait_p99_s: percentile(&wait, 99.0),
        delay_avg_s: mean(&jobs.iter().map(|j| delay(&j)).collect::<Vec<_>>()),
        delay_by_qos: by_qos
            .into_iter()
            .map(|(qos, (sum, n))| (qos, sum / n as f64))
            .collect(),
        makespan_s: makespan_ms as f64 / S,
        gpu_util_mean: ratio(used),
        gpu_util_bound: ratio(asked).min(1.0),
        fragmentation_mean: fragmentation(run),
        jain_fairness: jain(run),
        ftf_max: ftf_max(run),
        deadline_hit_rate: (!with_deadline.is_empty()).then(|| {
            with_deadline.iter().filter(|hit| **hit).count() as f64 / with_deadline.len() as f64
        }),
        timeouts: jobs.iter().filter(|j| j.timed_out).count(),
        preemptions: jobs.iter().map(|j| u64::from(j.preemptions)).sum(),
        gpu_hours_lost: lost_gpu_ms / 3_600_000.0,
        redone_share: if used > 0.0 { lost_gpu_ms / used } else { 0.0 },
        passes: run.passes,
    }
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Nearest rank on sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The share of free GPUs no waiting job could use, averaged over time (each sample holds
/// until the next one); moments with nothing free or nothing waiting count as 0.
fn fragmentation(run: &Run) -> f64 {
    let mut weighted = 0.0;
    let mut span = 0.0;
    for pair in run.samples.windows(2) {
        let (s, next) = (&pair[0], &pair[1]);
        let dt = (next.at_ms - s.at_ms) as f64;
        let share = if s.free_gpus == 0 {
            0.0
        } else {
            s.fragmented_gpus as f64 / s.free_gpus as f64
        };
        weighted += share * dt;
        span += dt;
    }
    if span > 0.0 { weighted / span } else { 0.0 }
}

/// Jain's index over the GPU time each account got: 1 when all got the same.
fn jain(run: &Run) -> f64 {
    let mut per: BTreeMap<&str, f64> = BTreeMap::new();
    for j in &run.jobs {
        *per.entry(j.account.as_str()).or_default() += (j.gpus * j.run_ms) as f64;
    }
    let xs: Vec<f64> = per.into_values().collect();
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return 1.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

/// Finish-time fairness (Themis): per account, the mean over its jobs of completion time
/// over run time alone (its duration); the worst account's.
fn ftf_max(run: &Run) -> f64 {
    let mut per: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for j in &run.jobs {
        let ideal = j.duration_ms.max(1) as f64;
        let entry = per.entry(j.account.as_str()).or_default();
        entry.0 += (j.end_ms - j.submit_ms) as f64 / ideal;
        entry.1 += 1;
    }
    per.values()
        .map(|(sum, n)| sum / *n as f64)
        .fold(0.0, f64::max)
}

/// The metrics as a table, one row per run.
pub fn table(rows: &[Metrics]) -> String {
    let header = [
        "profile",
        "jobs",
        "jct_avg_s",
        "jct_p50_s",
        "jct_p99_s",
        "wait_avg_s",
        "makespan_s",
        "util",
        "util_bound",
        "frag",
        "jain",
        "ftf_max",
        "deadline_hit",
        "preempt",
        "lost_gpu_h",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for m in rows {
        lines.push(vec![
            m.profile.clone(),
            m.jobs.to_string(),
            format!("{:.0}", m.jct_avg_s),
            format!("{:.0}", m.jct_p50_s),
            format!("{:.0}", m.jct_p99_s),
            format!("{:.0}", m.wait_avg_s),
            format!("{:.0}", m.makespan_s),
            format!("{:.3}", m.gpu_util_mean),
            format!("{:.3}", m.gpu_util_bound),
            format!("{:.3}", m.fragmentation_mean),
            format!("{:.3}", m.jain_fairness),
            format!("{:.2}", m.ftf_max),
            m.deadline_hit_rate
                .map_or("-".into(), |r| format!("{r:.3}")),
            m.preemptions.to_string(),
            format!("{:.0}", m.gpu_hours_lost),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}
