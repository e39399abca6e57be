//! Scenarios as files: each `scenarios/*.toml` describes a cluster, what runs on it, a queue,
//! and what one scheduling pass must decide — starts with their nodes and GPUs, reasons,
//! the order jobs are considered in, preemptions. Readable on their own; one per feature.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use gantry_model::units::parse_duration_ms;
use gantry_model::{Gpu, Resources, Shape};
use gantry_policies::{
    AccountView, ClusterView, Held, NodeView, PartPlan, PendingJob, PolicyConfig, ReservationView,
    RunningJob, Topology, schedule,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// What the scenario shows, in a sentence.
    about: String,
    #[serde(default, rename = "node")]
    nodes: Vec<Node>,
    #[serde(default, rename = "running")]
    running: Vec<Running>,
    #[serde(default, rename = "job")]
    jobs: Vec<Job>,
    #[serde(default, rename = "account")]
    accounts: Vec<Account>,
    /// A topology file, inline.
    topology: Option<String>,
    /// `gantry` (the default), `slurm-like` or `fifo`.
    profile: Option<String>,
    /// Policy settings, as `gantry admin config set` takes them.
    #[serde(default)]
    settings: BTreeMap<String, String>,
    /// Per account, its jobs preempted in the last hour.
    #[serde(default)]
    preempted_last_hour: BTreeMap<String, u32>,
    #[serde(default, rename = "reservation")]
    reservations: Vec<Reservation>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reservation {
    name: String,
    /// From now (`0s`) or later (`1h`), for `lasts`.
    starts_in: String,
    lasts: String,
    #[serde(default)]
    nodes: Vec<String>,
    /// `node:gpu,gpu`: GPUs held rather than whole nodes (the nodes named here too).
    #[serde(default)]
    gpus: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Node {
    name: String,
    gpus: u32,
    #[serde(default = "default_model")]
    model: String,
    /// GPUs per NVLink group (all in one group by default).
    nvlink_group_size: Option<u32>,
    /// GPUs per NUMA node (none by default).
    numa_size: Option<u32>,
    #[serde(default = "default_pool")]
    pool: String,
    #[serde(default)]
    labels: Vec<String>,
}

fn default_pool() -> String {
    "default".into()
}

fn default_model() -> String {
    "NVIDIA H100 80GB HBM3".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Running {
    id: u64,
    /// `node:gpu,gpu` for each node it holds.
    on: Vec<String>,
    /// Time left until its limit (`30m`); none: no limit.
    ends_in: Option<String>,
    #[serde(default = "default_account")]
    account: String,
    /// How long ago it started (`10m`).
    #[serde(default)]
    started_ago: Option<String>,
    /// It has a checkpoint contract: defragmentation may move it.
    #[serde(default)]
    checkpointed: bool,
    /// It is being stopped to be moved for defragmentation, to start again here
    /// (`node:gpu,gpu` per node; implies `checkpointed`).
    #[serde(default)]
    moving_to: Vec<String>,
    #[serde(default = "normal")]
    qos: String,
    deadline_in: Option<String>,
    /// How long ago it last checkpointed (never, when absent: stopping it loses its whole
    /// run).
    checkpointed_ago: Option<String>,
    /// How many of its earlier runs were preempted.
    #[serde(default)]
    preemptions: u32,
}

fn default_account() -> String {
    "default".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    id: u64,
    #[serde(default = "one")]
    nodes: u32,
    gpus: u32,
    model: Option<String>,
    limit: Option<String>,
    #[serde(default = "default_account")]
    account: String,
    #[serde(default = "normal")]
    qos: String,
    deadline_in: Option<String>,
    /// How long ago it was submitted.
    submitted_ago: Option<String>,
    /// Only nodes of this pool (any when absent).
    pool: Option<String>,
    /// Only nodes with all these labels.
    #[serde(default)]
    labels: Vec<String>,
    /// Runs in this reservation.
    reservation: Option<String>,
    /// Stopped to be moved for defragmentation, not started since.
    #[serde(default)]
    moved: bool,
    /// How many of its runs were preempted.
    #[serde(default)]
    preemptions: u32,
}

fn one() -> u32 {
    1
}

fn normal() -> String {
    "normal".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Account {
    name: String,
    #[serde(default = "root")]
    parent: String,
    #[serde(default = "one")]
    share: u32,
    guarantee_gpus: Option<u32>,
    max_gpus: Option<u32>,
}

fn root() -> String {
    "root".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// Job id → `node:gpu,gpu` per node, in allocation order.
    #[serde(default)]
    starts: BTreeMap<String, Vec<String>>,
    /// Job id → the reason it waits, as users see it (a prefix is enough).
    #[serde(default)]
    waiting: BTreeMap<String, String>,
    /// The order jobs are considered in (job ids, highest priority first).
    #[serde(default)]
    order: Vec<u64>,
    /// Running jobs the pass stops and requeues.
    #[serde(default)]
    preempt: Vec<u64>,
}

const NOW: u64 = 1_000_000_000;

fn ms(text: &str) -> u64 {
    parse_duration_ms(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn parse_part(text: &str) -> (String, Vec<u32>) {
    let (node, gpus) = text.split_once(':').unwrap_or((text, ""));
    let gpus = gpus
        .split(',')
        .filter(|g| !g.is_empty())
        .map(|g| g.trim().parse().unwrap())
        .collect();
    (node.to_string(), gpus)
}

fn view(s: &Scenario) -> ClusterView {
    let mut nodes: Vec<NodeView> = s
        .nodes
        .iter()
        .map(|n| {
            let capacity = Resources {
                gpus: n.gpus,
                cpus: 64,
                mem_mib: 1 << 20,
            };
            let group = n.nvlink_group_size.unwrap_or(n.gpus).max(1);
            NodeView {
                name: n.name.clone(),
                schedulable: true,
                unavailable_reason: None,
                gpus: (0..n.gpus)
                    .map(|index| Gpu {
                        index,
                        model: n.model.clone(),
                        memory_mib: 81_920,
                        nvlink_group: index / group,
                        numa_node: n.numa_size.map(|size| index / size.max(1)),
                        uuid: String::new(),
                    })
                    .collect(),
                capacity,
                free: capacity,
                free_gpus: (0..n.gpus).collect(),
                pool: n.pool.clone(),
                labels: n.labels.clone(),
            }
        })
        .collect();
    let running = s
        .running
        .iter()
        .map(|r| {
            let parts =
                r.on.iter()
                    .map(|text| {
                        let (node, gpus) = parse_part(text);
                        let res = Resources {
                            gpus: gpus.len() as u32,
                            cpus: 1,
                            mem_mib: 1024,
                        };
                        let n = nodes.iter_mut().find(|n| n.name == node).unwrap();
                        n.free = n.free.saturating_sub(&res);
                        n.free_gpus.retain(|g| !gpus.contains(g));
                        Held { node, res, gpus }
                    })
                    .collect();
            let parts: Vec<Held> = parts;
            let moving = !r.moving_to.is_empty();
            let movable = (r.checkpointed || moving).then(|| Shape {
                num_nodes: parts.len() as u32,
                per_node: parts[0].res,
                gpu_model: None,
                time_limit_ms: None,
                pool: None,
                labels: vec![],
            });
            RunningJob {
                id: r.id,
                account: r.account.clone(),
                start_ms: NOW - r.started_ago.as_deref().map_or(0, ms),
                stopping: moving,
                moving_to: moving.then(|| {
                    r.moving_to
                        .iter()
                        .map(|text| {
                            // As its parts above hold.
                            let (node, gpus) = parse_part(text);
                            PartPlan {
                                node,
                                gpus,
                                cpus: 1,
                                mem_mib: 1024,
                            }
                        })
                        .collect()
                }),
                ends_at_ms: r.ends_in.as_deref().map(|t| NOW + ms(t)),
                parts,
                qos: r.qos.clone(),
                checkpointed_ms: r.checkpointed_ago.as_deref().map(|t| NOW - ms(t)),
                movable,
                deadline_ms: r.deadline_in.as_deref().map(|t| NOW + ms(t)),
                preemptions: r.preemptions,
            }
        })
        .collect();
    let pending = s
        .jobs
        .iter()
        .map(|j| {
            let mut job = PendingJob::single(
                j.id,
                Shape {
                    num_nodes: j.nodes,
                    per_node: Resources {
                        gpus: j.gpus,
                        cpus: 1,
                        mem_mib: 1024,
                    },
                    gpu_model: j.model.clone(),
                    time_limit_ms: j.limit.as_deref().map(ms),
                    pool: j.pool.clone(),
                    labels: j.labels.clone(),
                },
            );
            job.account = j.account.clone();
            job.qos = j.qos.clone();
            job.deadline_ms = j.deadline_in.as_deref().map(|t| NOW + ms(t));
            job.reservation = j.reservation.clone();
            job.moved = j.moved;
            job.preemptions = j.preemptions;
            job.submit_ms = NOW - j.submitted_ago.as_deref().map_or(0, ms) + j.id;
            job
        })
        .collect();
    let mut accounts = vec![AccountView {
        name: "root".into(),
        parent: None,
        share: 1,
        guarantee_gpus: None,
        max_gpus: None,
    }];
    accounts.extend(s.accounts.iter().map(|a| AccountView {
        name: a.name.clone(),
        parent: Some(a.parent.clone()),
        share: a.share,
        guarantee_gpus: a.guarantee_gpus,
        max_gpus: a.max_gpus,
    }));
    let mut config = PolicyConfig::default();
    if let Some(profile) = &s.profile {
        config.set("profile", profile).unwrap();
    }
    for (key, value) in &s.settings {
        config.set(key, value).unwrap();
    }
    ClusterView {
        now_ms: NOW,
        config,
        nodes,
        running,
        pending,
        accounts,
        topology: s
            .topology
            .as_deref()
            .map(|t| std::sync::Arc::new(Topology::from_toml(t).unwrap()))
            .unwrap_or_default(),
        preempted_last_hour: s.preempted_last_hour.clone(),
        reservations: s
            .reservations
            .iter()
            .map(|r| ReservationView {
                name: r.name.clone(),
                start_ms: NOW + ms(&r.starts_in),
                end_ms: NOW + ms(&r.starts_in) + ms(&r.lasts),
                nodes: r.nodes.clone(),
                gpus: r.gpus.iter().map(|text| parse_part(text)).collect(),
            })
            .collect(),
        ..Default::default()
    }
}

fn check(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let scenario: Scenario = toml::from_str(&text).map_err(|e| e.to_string())?;
    let view = view(&scenario);
    let d = schedule(&view);
    let mut problems = Vec::new();
    // Exactly the jobs stopped to defragment are marked as moved.
    let moves: BTreeSet<u64> = d
        .preempt
        .iter()
        .filter(|v| v.reason.starts_with("moved to defragment"))
        .map(|v| v.job)
        .collect();
    let moved: BTreeSet<u64> = d.moved.iter().map(|(id, _)| *id).collect();
    if moves != moved {
        problems.push(format!("moved: {moved:?}, but moves: {moves:?}"));
    }
    let starts: BTreeMap<String, Vec<String>> = d
        .starts
        .iter()
        .map(|s| {
            let parts = s
                .parts
                .iter()
                .map(|p| {
                    let gpus: Vec<String> = p.gpus.iter().map(u32::to_string).collect();
                    format!("{}:{}", p.node, gpus.join(","))
                })
                .collect();
            (s.job.to_string(), parts)
        })
        .collect();
    if starts != scenario.expect.starts {
        problems.push(format!(
            "starts: expected {:?}, got {starts:?}",
            scenario.expect.starts
        ));
    }
    let waiting: BTreeMap<String, String> = d
        .waiting
        .iter()
        .map(|(id, why)| (id.to_string(), why.to_string()))
        .collect();
    for (id, expected) in &scenario.expect.waiting {
        match waiting.get(id) {
            Some(why) if why.starts_with(expected.as_str()) => {}
            other => problems.push(format!("job {id} waits for {other:?}, not {expected:?}")),
        }
    }
    if !scenario.expect.order.is_empty() {
        let order: Vec<u64> = d.ranked.iter().map(|(id, _)| *id).collect();
        if order != scenario.expect.order {
            problems.push(format!(
                "order: expected {:?}, got {order:?}",
                scenario.expect.order
            ));
        }
    }
    let preempt: Vec<u64> = d.preempt.iter().map(|v| v.job).collect();
    if preempt != scenario.expect.preempt {
        problems.push(format!(
            "preempt: expected {:?}, got {preempt:?}",
            scenario.expect.preempt
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} ({})", problems.join("; "), scenario.about))
    }
}

#[test]
fn every_scenario_decides_as_written() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "scenarios missing from {}", dir.display());
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|p| check(p).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
