//! The scoreboard (`gantry-sim suite`): a fixed, documented matrix of workloads replayed under
//! every profile, one table of what happened, and the targets the `gantry` profile must meet
//! against the Slurm-like baseline, checked cell by cell. The matrix and the generators'
//! parameters are frozen; the defaults of the `gantry` profile are what this table chooses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gantry_policies::{PolicyConfig, SchedulingProfile};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::engine::Settings;
use crate::metrics::Metrics;
use crate::run_profile;
use crate::trace::generated::{self, Kind, Params};
use crate::trace::{self, Additions, Format, ReadOptions, TraceJob};

/// The seeds the generated workloads are reported on. Policies were tuned on
/// [`TUNING_SEEDS`]; these were never looked at while tuning.
pub const REPORT_SEEDS: [u64; 2] = [101, 102];

/// The seeds policies are tuned on (`suite --tuning`).
pub const TUNING_SEEDS: [u64; 3] = [1, 2, 3];

/// Which workloads a suite replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    /// The scoreboard: the real traces, then the generated kinds on the report seeds.
    Report,
    /// The generated kinds on the report seed 101 alone, smaller: a few minutes on CI's
    /// machine.
    Quick,
    /// The generated kinds on the tuning seeds, for trying settings (`--set`).
    Tuning,
}

/// The profiles every workload is replayed under; `gantry` is judged against `slurm-like`.
pub const PROFILES: [SchedulingProfile; 3] = [
    SchedulingProfile::Gantry,
    SchedulingProfile::SlurmLike,
    SchedulingProfile::Fifo,
];

/// One workload of the matrix: its jobs, its cluster and how it is replayed.
pub struct Workload {
    pub name: String,
    pub jobs: Vec<TraceJob>,
    pub cluster: Cluster,
    pub settings: Settings,
    /// It has a QoS mix: the `high` against `normal` target applies.
    pub qos_mix: bool,
}

fn settings(restart_cost_ms: u64, round_ms: Option<u64>) -> Settings {
    let mut config = PolicyConfig::default();
    config.preemption.restart_cost_ms = restart_cost_ms;
    Settings {
        config,
        limit_factor: Some(1.0),
        restart_cost_ms,
        round_ms,
    }
}

const MINUTE: u64 = 60_000;

/// The Philly trace: as traced, 1.5 times as dense, and with QoS and checkpoint mixes.
fn philly(traces: &Path, seed: u64) -> anyhow::Result<Vec<Workload>> {
    let path = traces.join("philly/philly_jobs.csv");
    let cluster = Cluster::load(concat!(env!("CARGO_MANIFEST_DIR"), "/clusters/philly.toml"))?;
    let options = ReadOptions {
        strict: false,
        seed,
        gpus_per_node: cluster.largest_node_gpus(),
        limit_jobs: None,
        app_profiles: None,
    };
    let base = trace::read(&path, Format::Philly, &options)?.jobs;
    let variant = |name: &str, additions: Additions, restart_ms: u64| {
        let mut jobs = base.clone();
        additions.apply(&mut jobs, seed);
        Workload {
            name: name.to_string(),
            jobs,
            cluster: cluster.clone(),
            settings: settings(restart_ms, None),
            qos_mix: !additions.qos_mix.is_empty(),
        }
    };
    Ok(vec![
        variant("philly", Additions::default(), 0),
        variant(
            "philly-1.5x",
            Additions {
                load: 1.5,
                ..Additions::default()
            },
            0,
        ),
        variant(
            "philly-qos-ckpt",
            Additions {
                qos_mix: vec![("low".into(), 4), ("normal".into(), 4), ("high".into(), 2)],
                checkpoint_every_ms: Some(30 * MINUTE),
                load: 1.0,
            },
            2 * MINUTE,
        ),
    ])
}

/// The eight Pollux (OSDI '21) workloads on its testbed, as its artifact schedules them.
fn pollux(traces: &Path) -> anyhow::Result<Vec<Workload>> {
    let dir = traces.join("sia-pollux-workloads/pollux-osdi21/workloads");
    let cluster = Cluster::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clusters/pollux-64.toml"
    ))?;
    let options = ReadOptions {
        strict: false,
        seed: 0,
        gpus_per_node: cluster.largest_node_gpus(),
        limit_jobs: None,
        app_profiles: None,
    };
    (1..=8)
        .map(|n| {
            let path = dir.join(format!("workload-{n}.csv"));
            Ok(Workload {
                name: format!("pollux-{n}"),
                jobs: trace::read(&path, Format::Pollux, &options)?.jobs,
                cluster: cluster.clone(),
                settings: settings(MINUTE / 2, Some(MINUTE)),
                qos_mix: false,
            })
        })
        .collect()
}

/// The generated kinds on `seeds`; `quick`: their smaller variants.
fn generated(seeds: &[u64], quick: bool) -> anyhow::Result<Vec<Workload>> {
    let mut workloads = Vec::new();
    for kind in Kind::ALL {
        let params = Params::of(kind, quick);
        for seed in seeds {
            workloads.push(Workload {
                name: format!("gen-{}-s{seed}", kind.as_str()),
                jobs: generated::generate(&params, *seed),
                cluster: Cluster::load(&params.cluster())?,
                settings: settings(2 * MINUTE, None),
                qos_mix: params.low_pct + params.high_pct > 0,
            });
        }
    }
    Ok(workloads)
}

/// The workloads of `matrix`; the real traces are read from under `traces`.
pub fn matrix(traces: &Path, matrix: Matrix) -> anyhow::Result<Vec<Workload>> {
    match matrix {
        Matrix::Report => {
            let mut all = philly(traces, 0)?;
            all.extend(pollux(traces)?);
            all.extend(generated(&REPORT_SEEDS, false)?);
            Ok(all)
        }
        Matrix::Quick => generated(&REPORT_SEEDS[..1], true),
        Matrix::Tuning => generated(&TUNING_SEEDS, false),
    }
}

/// One cell of the scoreboard.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// A target the `gantry` profile must meet on a workload, and whether it does.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub workload: String,
    pub target: &'static str,
    pub gantry: f64,
    /// What it is measured against (slurm-like's figure, or the bound).
    pub bound: f64,
    pub met: bool,
}

/// The targets of issue 17 for one workload: `gantry` against `slurm-like`.
pub fn checks(workload: &Workload, gantry: &Metrics, slurm: &Metrics) -> Vec<Check> {
    let name = &workload.name;
    let check = |target, value: f64, bound: f64, met: bool| Check {
        workload: name.clone(),
        target,
        gantry: value,
        bound,
        met,
    };
    let mut out = Vec::new();
    // Where nobody waits there is nothing for a scheduler to win.
    if slurm.delay_avg_s >= 1.0 {
        out.push(check(
            "wait (JCT − run) ≤ 0.7 × slurm-like",
            gantry.delay_avg_s,
            0.7 * slurm.delay_avg_s,
            gantry.delay_avg_s <= 0.7 * slurm.delay_avg_s,
        ));
        out.push(check(
            "mean JCT ≤ slurm-like",
            gantry.jct_avg_s,
            slurm.jct_avg_s,
            gantry.jct_avg_s <= slurm.jct_avg_s,
        ));
        out.push(check(
            "p99 JCT ≤ 1.1 × slurm-like",
            gantry.jct_p99_s,
            1.1 * slurm.jct_p99_s,
            gantry.jct_p99_s <= 1.1 * slurm.jct_p99_s,
        ));
        out.push(check(
            "ftf_max ≤ slurm-like",
            gantry.ftf_max,
            slurm.ftf_max,
            gantry.ftf_max <= slurm.ftf_max,
        ));
        out.push(check(
            "Jain ≥ slurm-like − 0.01",
            gantry.jain_fairness,
            slurm.jain_fairness - 0.01,
            gantry.jain_fairness >= slurm.jain_fairness - 0.01,
        ));
    }
    if let (Some(g), Some(s)) = (gantry.deadline_hit_rate, slurm.deadline_hit_rate) {
        out.push(check("deadlines met ≥ slurm-like", g, s, g >= s));
    }
    out.push(check(
        "redone GPU-hours ≤ 3% of used",
        gantry.redone_share,
        0.03,
        gantry.redone_share <= 0.03,
    ));
    if workload.qos_mix
        && let (Some(high), Some(normal)) = (
            gantry.delay_by_qos.get("high"),
            gantry.delay_by_qos.get("normal"),
        )
    {
        out.push(check(
            "high's wait ≤ ¼ of normal's",
            *high,
            normal / 4.0,
            *high <= normal / 4.0,
        ));
    }
    out
}

/// The scoreboard of a whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Scoreboard {
    pub rows: Vec<Row>,
    pub checks: Vec<Check>,
}

impl Scoreboard {
    /// The targets missed.
    pub fn missed(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.met).collect()
    }
}

/// Replays every workload under every profile, the `gantry` profile with `config` on top
/// of the workload's own settings; `progress` hears of each as it ends.
pub fn run(
    workloads: &[Workload],
    config: impl Fn(&mut PolicyConfig),
    mut progress: impl FnMut(&Row),
) -> Scoreboard {
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    for workload in workloads {
        let mut by_profile: BTreeMap<&str, Metrics> = BTreeMap::new();
        for profile in PROFILES {
            let mut settings = workload.settings.clone();
            if profile == SchedulingProfile::Gantry {
                config(&mut settings.config);
            }
            let (_, metrics) = run_profile(&workload.jobs, &workload.cluster, profile, &settings);
            let row = Row {
                workload: workload.name.clone(),
                metrics: metrics.clone(),
            };
            progress(&row);
            rows.push(row);
            by_profile.insert(profile.as_str(), metrics);
        }
        if let (Some(g), Some(s)) = (by_profile.get("gantry"), by_profile.get("slurm-like")) {
            checks.extend(self::checks(workload, g, s));
        }
    }
    Scoreboard { rows, checks }
}

/// The scoreboard as markdown: the results, then the targets.
pub fn markdown(board: &Scoreboard) -> String {
    let mut out = String::from(
        "| workload | profile | jobs | jct_avg_s | jct_p99_s | wait_s (JCT − run) | first-start wait_s | util | ftf_max | jain | deadlines met | preemptions | redone | high/normal wait |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in &board.rows {
        let m = &row.metrics;
        let qos_ratio = match (m.delay_by_qos.get("high"), m.delay_by_qos.get("normal")) {
            (Some(h), Some(n)) if *n > 0.0 => format!("{:.2}", h / n),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} | {:.2} | {:.3} | {} | {} | {:.1}% | {} |\n",
            row.workload,
            m.profile,
            m.jobs,
            m.jct_avg_s,
            m.jct_p99_s,
            m.delay_avg_s,
            m.wait_avg_s,
            m.gpu_util_mean,
            m.ftf_max,
            m.jain_fairness,
            m.deadline_hit_rate
                .map_or("-".into(), |r| format!("{r:.3}")),
            m.preemptions,
            100.0 * m.redone_share,
            qos_ratio,
        ));
    }
    out.push_str(
        "\n| workload | target | gantry | bound | met |\n| --- | --- | --- | --- | --- |\n",
    );
    for c in &board.checks {
        out.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {} |\n",
            c.workload,
            c.target,
            c.gantry,
            c.bound,
            if c.met { "yes" } else { "**no**" }
        ));
    }
    let missed = board.missed().len();
    out.push_str(&format!(
        "\n{} of {} targets met.\n",
        board.checks.len() - missed,
        board.checks.len()
    ));
    out
}

/// Writes `suite.md` and `suite.json` into `dir`.
pub fn write(dir: &PathBuf, board: &Scoreboard) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let md = dir.join("suite.md");
    std::fs::write(&md, markdown(board))
        .with_context(|| format!("cannot write {}", md.display()))?;
    let json = dir.join("suite.json");
    std::fs::write(&json, serde_json::to_string_pretty(board)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    Ok(())
}
