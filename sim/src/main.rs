//! `gantry-sim run` and `gantry-sim compare`: see docs/simulation.md.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use gantry_model::units::parse_duration_ms;
use gantry_policies::{PolicyConfig, SchedulingProfile};
use gantry_sim::cluster::Cluster;
use gantry_sim::engine::Settings;
use gantry_sim::suite;
use gantry_sim::trace::{self, Additions, Format, ReadOptions, generated};
use gantry_sim::{metrics, run_profile, write_outputs};

#[derive(Parser)]
#[command(
    name = "gantry-sim",
    version,
    about = "Replays GPU-cluster job traces through Gantry's own scheduling policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a trace under one profile
    Run {
        #[command(flatten)]
        common: Common,
        /// gantry, slurm-like or fifo
        #[arg(long, default_value = "gantry")]
        profile: String,
    },
    /// Replay a trace under several profiles and print one row per profile
    Compare {
        #[command(flatten)]
        common: Common,
        /// Comma-separated profiles
        #[arg(long, default_value = "gantry,slurm-like,fifo", value_delimiter = ',')]
        profiles: Vec<String>,
    },
    /// The scoreboard: the fixed matrix of workloads under every profile, and the targets
    /// the gantry profile must meet against slurm-like (docs/simulation.md)
    Suite {
        /// Where suite.md and suite.json go
        #[arg(long)]
        out: Option<PathBuf>,
        /// The generated workloads only, smaller (a few minutes on CI's machine)
        #[arg(long, conflicts_with = "tuning")]
        quick: bool,
        /// The generated workloads on the tuning seeds instead, to try settings on
        #[arg(long)]
        tuning: bool,
        /// A policy setting for the gantry profile, as `gantry admin config set` takes it
        /// (repeatable): to try it on the tuning seeds. The scoreboard is the defaults'.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Where the public traces are (philly/, sia-pollux-workloads/)
        #[arg(long, default_value = "../shared/traces", value_name = "DIR")]
        traces: PathBuf,
        /// Exit 1 when a target is missed
        #[arg(long)]
        check: bool,
    },
    /// Write a generated workload as Gantry CSV (docs/simulation.md)
    Generate {
        #[arg(long, value_enum)]
        kind: generated::Kind,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The smaller variant `suite --quick` uses
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Args)]
struct Common {
    /// The trace file
    #[arg(long)]
    trace: PathBuf,
    /// Its format: gantry (docs/simulation.md), philly, alibaba or pollux
    #[arg(long, value_enum, default_value = "gantry")]
    format: Format,
    /// A cluster TOML file, an Alibaba node list (*.csv), or NODESxGPUS[:MODEL] for a
    /// uniform one (e.g. 32x8:V100)
    #[arg(long)]
    cluster: String,
    /// The Pollux applications' throughput profiles (`<app>/placements.csv`, ...), for
    /// `--format pollux`; found beside or above the trace when not given
    #[arg(long, value_name = "DIR")]
    app_profiles: Option<PathBuf>,
    /// Seed for what the trace leaves open (users of traces without a user column)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replay only the first N jobs (by submit time)
    #[arg(long, value_name = "N")]
    limit_jobs: Option<usize>,
    /// Fail on the first malformed row instead of skipping it
    #[arg(long)]
    strict: bool,
    /// Jobs without a time limit get their duration times this (1: exact estimates); `none`:
    /// no limit
    #[arg(long, default_value = "1")]
    limit_factor: String,
    /// What restarting a preempted job costs, e.g. 2m
    #[arg(long, default_value = "0s")]
    restart_cost: String,
    /// Give every job a QoS level drawn from the seed by weight, e.g. low=3,normal=5,high=2
    /// (the level must exist: low, normal, high, or one made with --set qos.NAME.priority=P)
    #[arg(long, value_name = "LEVEL=WEIGHT,...")]
    qos_mix: Option<String>,
    /// Jobs without a checkpoint interval checkpoint every DUR of work, e.g. 30m
    #[arg(long, value_name = "DUR")]
    checkpoint_every: Option<String>,
    /// Replay arrivals this many times as dense (2: the same jobs in half the time)
    #[arg(long, value_name = "FACTOR", default_value = "1")]
    load: String,
    /// A policy setting, as `gantry admin config set` takes it (repeatable), e.g.
    /// `--set preempt.victims=youngest`
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Schedule every DUR instead of at every arrival and end, e.g. 60s
    #[arg(long, value_name = "DUR")]
    round: Option<String>,
    /// Where metrics.json, table.txt and the timelines go
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (common, profiles) = match cli.command {
        Command::Run { common, profile } => (common, vec![profile]),
        Command::Compare { common, profiles } => (common, profiles),
        Command::Suite {
            out,
            quick,
            tuning,
            sets,
            traces,
            check,
        } => {
            let matrix = match (quick, tuning) {
                (_, true) => suite::Matrix::Tuning,
                (true, false) => suite::Matrix::Quick,
                (false, false) => suite::Matrix::Report,
            };
            return run_suite(out, matrix, &sets, &traces, check);
        }
        Command::Generate { kind, seed, quick } => {
            let params = generated::Params::of(kind, quick);
            print!(
                "{}",
                trace::to_gantry_csv(&generated::generate(&params, seed))
            );
            eprintln!("cluster: {}", params.cluster());
            return Ok(());
        }
    };
    let profiles = profiles
        .iter()
        .map(|p| {
            SchedulingProfile::parse(p).with_context(|| {
                format!(
                    "unknown profile {p:?} (profiles: {})",
                    SchedulingProfile::ALL
                        .map(SchedulingProfile::as_str)
                        .join(", ")
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cluster = Cluster::load(&common.cluster)?;
    let options = ReadOptions {
        strict: common.strict,
        seed: common.seed,
        gpus_per_node: cluster.largest_node_gpus(),
        limit_jobs: common.limit_jobs,
        app_profiles: common.app_profiles.clone(),
    };
    let mut trace = trace::read(&common.trace, common.format, &options)?;
    const SHOWN: usize = 10;
    for skipped in trace.skipped.iter().take(SHOWN) {
        eprintln!("skipped: {skipped}");
    }
    if trace.skipped.len() > SHOWN {
        eprintln!("skipped: ... and {} more rows", trace.skipped.len() - SHOWN);
    }
    if trace.jobs.is_empty() {
        bail!("the trace has no job to replay");
    }
    let duration = |flag: &str, text: &str| {
        parse_duration_ms(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
    };
    let additions = Additions {
        qos_mix: common
            .qos_mix
            .as_deref()
            .map(Additions::parse_qos_mix)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--qos-mix: {e}"))?
            .unwrap_or_default(),
        checkpoint_every_ms: common
            .checkpoint_every
            .as_deref()
            .map(|d| duration("--checkpoint-every", d))
            .transpose()?
            .filter(|ms| *ms > 0),
        load: Additions::parse_load(&common.load).map_err(|e| anyhow::anyhow!("--load: {e}"))?,
    };
    additions.apply(&mut trace.jobs, common.seed);
    let limit_factor = match common.limit_factor.as_str() {
        "none" => None,
        text => Some(
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 1.0)
                .with_context(|| {
                    format!("--limit-factor: expected a number ≥ 1 or none (got {text:?})")
                })?,
        ),
    };
    let mut config = PolicyConfig::default();
    for setting in &common.settings {
        apply_setting(&mut config, setting)?;
    }
    if let Some((level, _)) = additions
        .qos_mix
        .iter()
        .find(|(level, _)| !config.qos.contains_key(level))
    {
        bail!("--qos-mix: no QoS level {level:?} (add it with --set qos.{level}.priority=P)");
    }
    let restart_cost_ms = duration("--restart-cost", &common.restart_cost)?;
    // The policies weigh the restart cost the simulator charges.
    config.preemption.restart_cost_ms = restart_cost_ms;
    let settings = Settings {
        config,
        limit_factor,
        restart_cost_ms,
        round_ms: common
            .round
            .as_deref()
            .map(|r| duration("--round", r))
            .transpose()?,
    };
    let runs: Vec<_> = profiles
        .into_iter()
        .map(|profile| run_profile(&trace.jobs, &cluster, profile, &settings))
        .collect();
    let rows: Vec<_> = runs.iter().map(|(_, m)| m.clone()).collect();
    print!("{}", metrics::table(&rows));
    if let Some(dir) = &common.out {
        write_outputs(dir, &runs)?;
    }
    Ok(())
}

fn run_suite(
    out: Option<PathBuf>,
    matrix: suite::Matrix,
    sets: &[String],
    traces: &std::path::Path,
    check: bool,
) -> anyhow::Result<()> {
    let mut config = PolicyConfig::default();
    for set in sets {
        apply_setting(&mut config, set)?;
    }
    // Only what `--set` named changes: each workload keeps its own restart cost.
    let sets = sets.to_vec();
    let workloads = suite::matrix(traces, matrix)
        .with_context(|| format!("the suite's workloads (traces in {})", traces.display()))?;
    let apply = |c: &mut PolicyConfig| {
        for set in &sets {
            // Checked above.
            let _ = apply_setting(c, set);
        }
    };
    let board = suite::run(&workloads, apply, |row| {
        eprintln!(
            "{} {}: jct_avg {:.0} s, wait {:.0} s",
            row.workload, row.metrics.profile, row.metrics.jct_avg_s, row.metrics.delay_avg_s
        );
    });
    print!("{}", suite::markdown(&board));
    if let Some(dir) = &out {
        suite::write(dir, &board)?;
    }
    let missed = board.missed();
    if check && !missed.is_empty() {
        bail!(
            "{} target(s) missed: {}",
            missed.len(),
            missed
                .iter()
                .map(|c| format!("{}: {}", c.workload, c.target))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

/// One `--set KEY=VALUE`.
fn apply_setting(config: &mut PolicyConfig, setting: &str) -> anyhow::Result<()> {
    let (key, value) = setting
        .split_once('=')
        .with_context(|| format!("--set: expected KEY=VALUE (got {setting:?})"))?;
    config
        .set(key.trim(), value)
        .with_context(|| format!("--set {setting}"))
}
