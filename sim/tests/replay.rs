//! The simulator end to end: a hand-computed trace, determinism, and conservation of work.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::BTreeMap;
use std::path::Path;

use gantry_policies::{PolicyConfig, SchedulingProfile};
use gantry_sim::cluster::Cluster;
use gantry_sim::engine::Settings;
use gantry_sim::trace::{self, Format, ReadOptions, TraceJob};
use gantry_sim::{run_profile, write_outputs};

fn settings() -> Settings {
    Settings {
        config: PolicyConfig::default(),
        limit_factor: Some(1.0),
        restart_cost_ms: 0,
        round_ms: None,
    }
}

fn fixture() -> Vec<TraceJob> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backfill.csv");
    let options = ReadOptions {
        strict: true,
        seed: 0,
        gpus_per_node: 4,
        limit_jobs: None,
        app_profiles: None,
    };
    trace::read(&path, Format::Gantry, &options).unwrap().jobs
}

/// (job, start s, end s) of every job.
fn timeline(profile: SchedulingProfile) -> Vec<(u64, u64, u64)> {
    let cluster = Cluster::load("1x4").unwrap();
    let (run, _) = run_profile(&fixture(), &cluster, profile, &settings());
    let mut jobs: Vec<_> = run
        .jobs
        .iter()
        .map(|j| (j.id, j.first_start_ms / 1000, j.end_ms / 1000))
        .collect();
    jobs.sort_unstable();
    jobs
}

/// One 4-GPU node. Job 1 (2 GPUs, 100 s) starts at 0; job 2 (4 GPUs) must wait for it; job 3
/// (2 GPUs, 90 s) fits beside job 1 and ends at 92, before job 2 can start at 100.
#[test]
fn a_hand_computed_trace_replays_exactly() {
    let backfilled = [(1, 0, 100), (2, 100, 150), (3, 2, 92)];
    assert_eq!(timeline(SchedulingProfile::Gantry), backfilled);
    assert_eq!(timeline(SchedulingProfile::SlurmLike), backfilled);
    // First come, first served: job 3 waits behind job 2.
    assert_eq!(
        timeline(SchedulingProfile::Fifo),
        [(1, 0, 100), (2, 100, 150), (3, 150, 240)]
    );
    let cluster = Cluster::load("1x4").unwrap();
    let (_, m) = run_profile(&fixture(), &cluster, SchedulingProfile::Gantry, &settings());
    // JCTs 100, 149, 90.
    assert_eq!(
        (m.jct_avg_s, m.jct_p50_s, m.jct_p99_s),
        (113.0, 100.0, 149.0)
    );
    assert_eq!((m.wait_avg_s, m.makespan_s), (33.0, 150.0));
    // Job 3 had a deadline at 95 s and ended at 92.
    assert_eq!(m.deadline_hit_rate, Some(1.0));
    // 2×100 + 4×50 + 2×90 GPU-s over 4 GPUs × 150 s.
    assert_eq!(m.gpu_util_mean, 580.0 / 600.0);
    let (_, fifo) = run_profile(&fixture(), &cluster, SchedulingProfile::Fifo, &settings());
    assert_eq!(fifo.deadline_hit_rate, Some(0.0));
}

/// A deterministic mixed trace: sizes 1–8 GPUs, some gangs, arrivals in bursts.
fn synthetic(jobs: u64) -> Vec<TraceJob> {
    let mut x: u64 = 12345;
    let mut next = |below: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % below
    };
    let mut at = 0;
    (1..=jobs)
        .map(|id| {
            at += next(120) * 1000;
            let gpus = [1, 1, 2, 4, 8][next(5) as usize];
            let user = format!("u{}", next(4));
            let account = ["a", "b", "c"][next(3) as usize].into();
            TraceJob {
                num_nodes: if id % 7 == 0 { 2 } else { 1 },
                gpus_per_node: gpus,
                duration_ms: (1 + next(1800)) * 1000,
                ..TraceJob::plain(id, at, user, account)
            }
        })
        .collect()
}

#[test]
fn every_job_ends_once_and_gpu_time_is_conserved() {
    let cluster = Cluster::load("4x8").unwrap();
    let trace = synthetic(300);
    for profile in SchedulingProfile::ALL {
        let (run, m) = run_profile(&trace, &cluster, profile, &settings());
        let mut ids: Vec<u64> = run.jobs.iter().map(|j| j.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=300).collect::<Vec<_>>(), "{profile:?}");
        // GPU time by the jobs' own accounts equals the busy GPUs integrated over time.
        let by_jobs: u64 = run.jobs.iter().map(|j| j.gpus * j.run_ms).sum();
        let by_time: u64 = run
            .samples
            .windows(2)
            .map(|w| w[0].busy_gpus * (w[1].at_ms - w[0].at_ms))
            .sum();
        assert_eq!(by_jobs, by_time, "{profile:?}");
        let asked: u64 = trace
            .iter()
            .map(|j| u64::from(j.num_nodes * j.gpus_per_node) * j.duration_ms)
            .sum();
        assert_eq!(by_jobs, asked, "{profile:?}: exact limits, no preemption");
        assert!(m.gpu_util_mean <= m.gpu_util_bound + 1e-9, "{m:?}");
        assert!(
            run.jobs
                .iter()
                .all(|j| j.first_start_ms >= j.submit_ms && j.end_ms > j.first_start_ms)
        );
    }
}

/// With preemptions (a third of the jobs `high`, a third `low`, some checkpointing), every
/// GPU-millisecond is accounted for: what the trace asks, plus the work preemptions lost,
/// plus the restart cost of each job's last start after a preemption.
#[test]
fn preempted_work_is_lost_only_back_to_the_last_checkpoint_and_accounted_for() {
    let cluster = Cluster::load("4x8").unwrap();
    let mut trace = synthetic(300);
    for (i, job) in trace.iter_mut().enumerate() {
        job.qos = ["low", "normal", "high"][i % 3].into();
        job.checkpoint_interval_ms = i.is_multiple_of(2).then_some(60_000);
    }
    let restart = 30_000;
    let mut settings = settings();
    // Room in each attempt's limit for the restart cost: no timeouts.
    settings.limit_factor = Some(2.0);
    settings.restart_cost_ms = restart;
    settings.config.preemption.restart_cost_ms = restart;
    settings.config.set("preempt.min_runtime", "0s").unwrap();
    let (run, m) = run_profile(&trace, &cluster, SchedulingProfile::Gantry, &settings);
    assert_eq!(run.jobs.len(), 300);
    assert!(m.preemptions > 10, "{m:?}");
    let by_jobs: u64 = run.jobs.iter().map(|j| j.gpus * j.run_ms).sum();
    let asked: u64 = run.jobs.iter().map(|j| j.gpus * j.duration_ms).sum();
    let lost: u64 = run.jobs.iter().map(|j| j.lost_gpu_ms).sum();
    let restarts: u64 = run
        .jobs
        .iter()
        .filter(|j| j.preemptions > 0)
        .map(|j| j.gpus * restart)
        .sum();
    assert!(run.jobs.iter().all(|j| !j.timed_out));
    assert_eq!(by_jobs, asked + lost + restarts);
}

/// One node of 4 GPUs. Low-QoS job 1 (2 GPUs, checkpoints every 100 s) starts at 0, low-QoS
/// job 2 (2 GPUs, no checkpoints) at 1500 s; high-QoS job 3 (2 GPUs, 1000 s) arrives at
/// 2550 s. Job 1 loses 50 s since its checkpoint at 2500 s, job 2 all its 1050 s: the
/// checkpoint-aware choice stops job 1, youngest-first job 2.
#[test]
fn checkpoint_aware_preemption_loses_less_than_youngest_first() {
    let job = |id, submit_s: u64, qos: &str, checkpoint_s: Option<u64>| TraceJob {
        gpus_per_node: 2,
        duration_ms: if qos == "high" { 1_000_000 } else { 10_000_000 },
        qos: qos.into(),
        checkpoint_interval_ms: checkpoint_s.map(|s| s * 1000),
        ..TraceJob::plain(id, submit_s * 1000, "u".into(), "a".into())
    };
    let trace = [
        job(1, 0, "low", Some(100)),
        job(2, 1500, "low", None),
        job(3, 2550, "high", None),
    ];
    let cluster = Cluster::load("1x4").unwrap();
    let run = |victims: &str| {
        let mut settings = settings();
        settings.config.set("preempt.victims", victims).unwrap();
        // Which victim, not whether: the high job's time outweighs any victim's.
        settings.config.set("preempt.qos_gain", "1000").unwrap();
        let (run, m) = run_profile(&trace, &cluster, SchedulingProfile::Gantry, &settings);
        let ends: BTreeMap<u64, (u64, u32)> = run
            .jobs
            .iter()
            .map(|j| (j.id, (j.end_ms / 1000, j.preemptions)))
            .collect();
        (ends, m.gpu_hours_lost * 3600.0)
    };
    let (ends, lost_s) = run("checkpoint-aware");
    // Job 3 runs 2550–3550; job 1 resumes from 2500 s of work and ends at 3550 + 7500.
    assert_eq!(ends[&3], (3550, 0));
    assert_eq!(ends[&1], (11_050, 1));
    assert_eq!(ends[&2], (11_500, 0));
    assert!((lost_s - 100.0).abs() < 1e-6, "{lost_s}");
    let (ends, lost_s) = run("youngest");
    // Job 2 starts over at 3550 and ends at 13550.
    assert_eq!(ends[&2], (13_550, 1));
    assert_eq!(ends[&1], (10_000, 0));
    assert!((lost_s - 2100.0).abs() < 1e-6, "{lost_s}");
}

#[test]
fn the_same_inputs_give_byte_identical_outputs() {
    let cluster = Cluster::load("4x8").unwrap();
    let trace = synthetic(200);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for dir in &dirs {
        let runs: Vec<_> = SchedulingProfile::ALL
            .into_iter()
            .map(|p| run_profile(&trace, &cluster, p, &settings()))
            .collect();
        write_outputs(dir.path(), &runs).unwrap();
    }
    let files = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let first = files(dirs[0].path());
    for name in [
        "metrics.json",
        "table.txt",
        "timeline-gantry.csv",
        "utilization.svg",
        "queue.svg",
        "jct_cdf.svg",
    ] {
        assert!(first.contains_key(name), "{name} missing");
    }
    assert_eq!(first, files(dirs[1].path()));
}

/// The binary: `compare` prints one row per profile and writes its files; bad input is an
/// error naming the problem.
#[test]
fn the_cli_compares_profiles_and_refuses_bad_input() {
    let bin = env!("CARGO_BIN_EXE_gantry-sim");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backfill.csv");
    let out = tempfile::tempdir().unwrap();
    let result = std::process::Command::new(bin)
        .args(["compare", "--cluster", "1x4", "--trace"])
        .arg(&fixture)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    assert!(
        rows[1].starts_with("gantry ") && rows[3].starts_with("fifo "),
        "{stdout}"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics[0]["jct_avg_s"], 113.0);
    // Each plot has a legend entry (and so a line) per profile.
    for plot in ["utilization.svg", "queue.svg", "jct_cdf.svg"] {
        let svg = std::fs::read_to_string(out.path().join(plot)).unwrap();
        for profile in ["gantry", "slurm-like", "fifo"] {
            assert!(
                svg.contains(&format!("\n{profile}\n</text>")),
                "{plot}: {profile}"
            );
        }
    }
    for (args, needle) in [
        (
            vec!["run", "--cluster", "4x", "--trace"],
            "neither a cluster file nor NODESxGPUS",
        ),
        (
            vec!["run", "--cluster", "1x4", "--profile", "lifo", "--trace"],
            "unknown profile \"lifo\"",
        ),
        (
            vec!["run", "--cluster", "1x4", "--format", "philly", "--trace"],
            "expected the header",
        ),
        (
            vec!["run", "--cluster", "1x4", "--load", "0", "--trace"],
            "--load: expected a number from 0.01 to 100",
        ),
    ] {
        let result = std::process::Command::new(bin)
            .args(&args)
            .arg(&fixture)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(
            !result.status.success() && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
}
