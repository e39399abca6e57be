//! What the CLI prints: JSON rows built from the wire types (their field names are a stable,
//! documented interface: docs/cli-reference.md), aligned tables, and writing to stdout.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gantry_model::units::{format_duration_ms, format_size_mib};
use gantry_proto as pb;
use gantry_wire::{node_state_name, state_from_pb};
use serde::Serialize;

/// `-o table|json` on every command that shows something.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// One job, as `show -o json` and `queue -o json` print it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub id: u64,
    pub name: String,
    pub user: String,
    pub account: String,
    pub state: String,
    pub reason: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub gpus_per_node: u32,
    /// Only GPUs of this model; `null`: any.
    pub gpu_model: Option<String>,
    pub cpus_per_node: u32,
    pub mem_per_node_mib: u64,
    pub num_nodes: u32,
    /// Other ways to run the job, as `--alt` takes them (`2x8:a100@0.6`).
    pub alternatives: Vec<String>,
    /// The way it runs or ran: 0 for the main request, N for alternative N.
    pub shape: u32,
    pub nodes: Vec<String>,
    pub allocation: Vec<AllocationRow>,
    pub time_limit_s: Option<u64>,
    pub submit_time: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub work_dir: String,
    pub stdout: String,
    pub stderr: String,
    pub command: Vec<String>,
    pub attempt: u32,
    pub queue_position: u32,
    pub qos: String,
    /// The node pool it runs in, and the labels its nodes must carry.
    pub pool: String,
    pub constraints: Vec<String>,
    /// `afterok:12`: jobs that must have ended, as each says, before it may start.
    pub dependencies: Vec<String>,
    pub deadline: Option<String>,
    /// `SIGUSR1@120s`, and how often it checkpoints on its own; null without one.
    pub checkpoint: Option<CheckpointRow>,
    /// When an ended run goes back to the queue on its own: `node_failure` (unless
    /// `--no-requeue`), `timeout` (`--requeue-on-timeout`).
    pub requeue_on: Vec<String>,
    /// Its runs that have ended, oldest first.
    pub attempts: Vec<AttemptRow>,
    /// For a pending job, why and where it stands as of the leader's last pass; null when
    /// not pending or not known (a `--stale` read from a follower).
    pub explanation: Option<ExplanationRow>,
}

/// One run of a job that has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    pub attempt: u32,
    /// `node:gpu,gpu` per node.
    pub allocation: Vec<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    /// Why it went back to the queue (`PREEMPTED`, `REQUEUED`, `NODE_FAIL`, `TIMEOUT`), or
    /// the state the job ended in.
    pub outcome: String,
    pub reason: String,
    /// GPU-seconds of work to do again (since the run's last checkpoint), rounded.
    pub lost_gpu_seconds: u64,
}

/// A job's checkpoint contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointRow {
    /// `SIGUSR1@120s`: the signal, and how long before a stop it comes.
    pub signal: String,
    pub interval_s: Option<u64>,
    /// When the job last reported a completed checkpoint (`gantry checkpoint done`), and
    /// the progress it reported.
    pub last: Option<String>,
    pub progress: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplanationRow {
    /// 1: the job the scheduler considers first.
    pub rank: u32,
    /// Σ weight × factor / 1000 (weights: `gantry admin config show`).
    pub priority: u64,
    /// Each factor, 0 to 1000.
    pub factors: FactorsRow,
    /// The latest start a reservation promises, if the job has one.
    pub estimated_start: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FactorsRow {
    pub age: u32,
    pub fair_share: u32,
    pub qos: u32,
    pub deadline: u32,
    pub size: u32,
    pub short: u32,
    pub preempted: u32,
}

impl ExplanationRow {
    fn from_job(job: &pb::Job) -> Option<ExplanationRow> {
        if job.rank == 0 {
            return None;
        }
        let f = job.factors.unwrap_or_default();
        Some(ExplanationRow {
            rank: job.rank,
            priority: job.priority,
            factors: FactorsRow {
                age: f.age,
                fair_share: f.fair_share,
                qos: f.qos,
                deadline: f.deadline,
                size: f.size,
                short: f.short,
                preempted: f.preempted,
            },
            estimated_start: job.estimated_start_ms.and_then(timestamp),
        })
    }

    /// `2750 (age 120, fair_share 1000, qos 500, deadline 0, size 250, short 0,
    /// preempted 0)`.
    pub fn priority_text(&self) -> String {
        let f = &self.factors;
        format!(
            "{} (age {}, fair_share {}, qos {}, deadline {}, size {}, short {}, preempted {})",
            self.priority, f.age, f.fair_share, f.qos, f.deadline, f.size, f.short, f.preempted
        )
    }
}

/// The part of a job on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllocationRow {
    pub node: String,
    pub gpus: Vec<u32>,
    pub cpus: u32,
    pub mem_mib: u64,
}

/// One node, as `nodes -o json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRow {
    pub name: String,
    pub state: String,
    pub reason: String,
    pub pool: String,
    pub labels: Vec<String>,
    pub gpus_total: u32,
    pub gpus_allocated: u32,
    pub gpu_model: String,
    pub cpus: u32,
    pub cpus_allocated: u32,
    pub mem: u64,
    pub mem_allocated: u64,
    pub gpus: Vec<GpuRow>,
    pub jobs: Vec<u64>,
    /// The switches above it, its leaf first; `[]` without a topology file.
    pub switches: Vec<String>,
    /// Its GPUs that failed, given to no job.
    pub failed_gpus: Vec<FailedGpuRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedGpuRow {
    pub index: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuRow {
    pub index: u32,
    pub model: String,
    pub memory_mib: u64,
    pub nvlink_group: u32,
    pub numa_node: Option<u32>,
}

/// The name of a wire job state; `UNKNOWN` for numbers this client does not know.
pub fn job_state_name(state: i32) -> &'static str {
    state_from_pb(state).map_or("UNKNOWN", |s| s.as_str())
}

/// Milliseconds since the epoch as RFC 3339 UTC; `None` for 0, the wire's "unset".
pub fn timestamp(ms: u64) -> Option<String> {
    (ms > 0).then(|| {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    })
}

impl From<&pb::Job> for JobRow {
    fn from(job: &pb::Job) -> Self {
        JobRow {
            id: job.id,
            name: job.name.clone(),
            user: job.user.clone(),
            account: job.account.clone(),
            state: job_state_name(job.state).to_string(),
            reason: job.reason.clone(),
            exit_code: job.exit_code,
            signal: job.signal,
            gpus_per_node: job.gpus_per_node,
            gpu_model: (!job.gpu_model.is_empty()).then(|| job.gpu_model.clone()),
            cpus_per_node: job.cpus_per_node,
            mem_per_node_mib: job.mem_per_node_mib,
            num_nodes: job.num_nodes,
            alternatives: job
                .alternatives
                .iter()
                .map(|alt| {
                    gantry_model::shape::format_alternative(&gantry_wire::alternative_from_pb(alt))
                })
                .collect(),
            shape: job.shape,
            nodes: job.allocation.iter().map(|a| a.node.clone()).collect(),
            allocation: job
                .allocation
                .iter()
                .map(|a| AllocationRow {
                    node: a.node.clone(),
                    gpus: a.gpus.clone(),
                    cpus: a.cpus,
                    mem_mib: a.mem_mib,
                })
                .collect(),
            // A limit is typed in whole seconds or coarser; round up so it never reads as 0.
            time_limit_s: (job.time_limit_ms > 0).then(|| job.time_limit_ms.div_ceil(1000)),
            submit_time: timestamp(job.submit_time_ms),
            start_time: job.start_time_ms.and_then(timestamp),
            end_time: job.end_time_ms.and_then(timestamp),
            work_dir: job.work_dir.clone(),
            stdout: job.stdout_path.clone(),
            stderr: job.stderr_path.clone(),
            command: job.command.clone(),
            attempt: job.attempt,
            queue_position: job.queue_position,
            qos: job.qos.clone(),
            pool: job.pool.clone(),
            constraints: job.constraints.clone(),
            dependencies: job
                .dependencies
                .iter()
                .map(|d| format!("{}:{}", d.condition, d.job_id))
                .collect(),
            deadline: job.deadline_ms.and_then(timestamp),
            checkpoint: job.checkpoint.as_ref().map(|c| CheckpointRow {
                signal: gantry_wire::checkpoint_from_pb(c).to_string(),
                interval_s: (c.interval_ms > 0).then_some(c.interval_ms / 1000),
                last: (job.last_checkpoint_ms > 0)
                    .then_some(job.last_checkpoint_ms)
                    .and_then(timestamp),
                progress: job
                    .has_checkpoint_progress
                    .then_some(job.checkpoint_progress),
            }),
            requeue_on: [
                (!job.no_requeue).then_some("node_failure"),
                job.requeue_on_timeout.then_some("timeout"),
            ]
            .into_iter()
            .flatten()
            .map(str::to_string)
            .collect(),
            attempts: job
                .attempts
                .iter()
                .map(|a| AttemptRow {
                    attempt: a.attempt,
                    allocation: a.allocation.clone(),
                    start_time: timestamp(a.start_ms),
                    end_time: timestamp(a.end_ms),
                    outcome: a.outcome.clone(),
                    reason: a.reason.clone(),
                    lost_gpu_seconds: (a.lost_gpu_ms + 500) / 1000,
                })
                .collect(),
            explanation: ExplanationRow::from_job(job),
        }
    }
}

impl From<&pb::Node> for NodeRow {
    fn from(node: &pb::Node) -> Self {
        NodeRow {
            name: node.name.clone(),
            state: node_state_name(node.state).to_string(),
            reason: node.reason.clone(),
            pool: node.pool.clone(),
            labels: node.labels.clone(),
            gpus_total: node.gpus_total,
            gpus_allocated: node.gpus_allocated,
            gpu_model: node.gpu_model.clone(),
            cpus: node.cpus,
            cpus_allocated: node.cpus_allocated,
            mem: node.mem_mib,
            mem_allocated: node.mem_allocated_mib,
            gpus: node
                .gpus
                .iter()
                .map(|g| GpuRow {
                    index: g.index,
                    model: g.model.clone(),
                    memory_mib: g.memory_mib,
                    nvlink_group: g.nvlink_group,
                    numa_node: u32::try_from(g.numa_node).ok(),
                })
                .collect(),
            jobs: node.jobs.clone(),
            switches: node.switches.clone(),
            failed_gpus: node
                .failed_gpus
                .iter()
                .map(|f| FailedGpuRow {
                    index: f.gpu,
                    reason: f.reason.clone(),
                })
                .collect(),
        }
    }
}

/// How long a job has run: until now while running, until its end once ended, 0 before
/// it starts. A client clock behind the scheduler's reads as 0, never as negative.
pub fn elapsed_ms(job: &pb::Job, now: SystemTime) -> u64 {
    let Some(start) = job.start_time_ms.filter(|s| *s > 0) else {
        return 0;
    };
    let end = match job.end_time_ms.filter(|e| *e > 0) {
        Some(end) => end,
        None => now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    end.saturating_sub(start)
}

pub fn elapsed_text(job: &pb::Job, now: SystemTime) -> String {
    format_duration_ms(elapsed_ms(job, now))
}

/// The time limit as Slurm prints it, `UNLIMITED` for none.
pub fn time_limit_text(time_limit_ms: u64) -> String {
    if time_limit_ms == 0 {
        "UNLIMITED".to_string()
    } else {
        format_duration_ms(time_limit_ms)
    }
}

/// `alloc/total` memory, e.g. `4G/64G`.
pub fn mem_pair(allocated_mib: u64, total_mib: u64) -> String {
    format!(
        "{}/{}",
        format_size_mib(allocated_mib),
        format_size_mib(total_mib)
    )
}

/// Renders rows under a header as left-aligned columns two spaces apart, without trailing
/// blanks. Widths count characters, so non-ASCII names stay aligned.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = header.iter().map(|h| (*h).to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate().take(columns) {
            let cell = row.get(i).map_or("", String::as_str);
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Writes to stdout. Output cut short by a closed pipe (`gantry queue | head`) is not an
/// error worth reporting, so callers can treat `BrokenPipe` as a quiet end.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

pub fn emit_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    pub fn job() -> pb::Job {
        pb::Job {
            id: 42,
            name: "train".into(),
            user: "alice".into(),
            account: "default".into(),
            state: pb::JobState::Running as i32,
            reason: String::new(),
            exit_code: None,
            signal: None,
            num_nodes: 1,
            gpus_per_node: 2,
            cpus_per_node: 4,
            mem_per_node_mib: 1024,
            time_limit_ms: 90_500,
            allocation: vec![pb::NodeAllocation {
                node: "node-0".into(),
                gpus: vec![2, 3],
                cpus: 4,
                mem_mib: 1024,
                ended: false,
            }],
            submit_time_ms: 1_700_000_000_000,
            start_time_ms: Some(1_700_000_001_500),
            end_time_ms: None,
            work_dir: "/home/alice".into(),
            stdout_path: "/home/alice/gantry-42.out".into(),
            stderr_path: "/home/alice/gantry-42.out".into(),
            command: vec!["/home/alice/run.sh".into(), "--lr".into(), "3".into()],
            cancel_requested: false,
            attempt: 1,
            queue_position: 0,
            gpu_model: String::new(),
            alternatives: vec![],
            shape: 0,
            qos: "normal".into(),
            deadline_ms: None,
            pool: "default".into(),
            constraints: vec![],
            dependencies: vec![],
            priority: 0,
            factors: None,
            rank: 0,
            estimated_start_ms: None,
            checkpoint: None,
            last_checkpoint_ms: 0,
            has_checkpoint_progress: false,
            checkpoint_progress: 0,
            no_requeue: false,
            requeue_on_timeout: false,
            attempts: vec![],
        }
    }

    fn keys(value: &serde_json::Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    fn set(names: &str) -> BTreeSet<String> {
        names.split(',').map(|s| s.trim().to_string()).collect()
    }

    #[test]
    fn job_json_has_exactly_the_documented_fields() {
        let value = serde_json::to_value(JobRow::from(&job())).unwrap();
        assert_eq!(
            keys(&value),
            set(
                "id, name, user, account, state, reason, exit_code, signal, gpus_per_node, \
                 gpu_model, cpus_per_node, mem_per_node_mib, num_nodes, alternatives, shape, \
                 nodes, allocation, time_limit_s, \
                 submit_time, start_time, end_time, work_dir, stdout, stderr, command, attempt, \
                 queue_position, qos, pool, constraints, dependencies, deadline, checkpoint, \
                 requeue_on, attempts, explanation"
            )
        );
        assert_eq!(
            keys(&value["allocation"][0]),
            set("node, gpus, cpus, mem_mib")
        );
    }

    #[test]
    fn job_json_values() {
        let value = serde_json::to_value(JobRow::from(&job())).unwrap();
        assert_eq!(value["state"], "RUNNING");
        assert_eq!(value["exit_code"], serde_json::Value::Null);
        assert_eq!(value["end_time"], serde_json::Value::Null);
        assert_eq!(value["nodes"], serde_json::json!(["node-0"]));
        assert_eq!(value["requeue_on"], serde_json::json!(["node_failure"]));
        assert_eq!(value["allocation"][0]["gpus"], serde_json::json!([2, 3]));
        assert_eq!(value["time_limit_s"], 91);
        assert_eq!(value["submit_time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(value["start_time"], "2023-11-14T22:13:21.500Z");

        let ended = pb::Job {
            state: pb::JobState::Failed as i32,
            exit_code: Some(3),
            time_limit_ms: 0,
            end_time_ms: Some(1_700_000_002_000),
            ..job()
        };
        let value = serde_json::to_value(JobRow::from(&ended)).unwrap();
        assert_eq!(value["state"], "FAILED");
        assert_eq!(value["exit_code"], 3);
        assert_eq!(value["time_limit_s"], serde_json::Value::Null);
        assert_eq!(value["end_time"], "2023-11-14T22:13:22.000Z");
        assert_eq!(
            JobRow::from(&pb::Job { state: 99, ..job() }).state,
            "UNKNOWN"
        );
    }

    #[test]
    fn node_json_has_exactly_the_documented_fields() {
        let node = pb::Node {
            name: "node-0".into(),
            state: pb::NodeState::Mixed as i32,
            gpus: vec![pb::Gpu {
                index: 0,
                model: "H100".into(),
                memory_mib: 81_920,
                nvlink_group: 0,
                numa_node: -1,
                uuid: "GPU-x".into(),
            }],
            gpus_total: 1,
            jobs: vec![42],
            ..Default::default()
        };
        let value = serde_json::to_value(NodeRow::from(&node)).unwrap();
        assert_eq!(
            keys(&value),
            set(
                "name, state, reason, pool, labels, gpus_total, gpus_allocated, gpu_model, cpus, \
                 cpus_allocated, mem, mem_allocated, gpus, jobs, switches, failed_gpus"
            )
        );
        assert_eq!(
            keys(&value["gpus"][0]),
            set("index, model, memory_mib, nvlink_group, numa_node")
        );
        assert_eq!(value["state"], "MIXED");
        assert_eq!(value["gpus"][0]["numa_node"], serde_json::Value::Null);
        assert_eq!(value["jobs"], serde_json::json!([42]));
    }

    #[test]
    fn elapsed_time_counts_to_now_while_running_and_to_the_end_after() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_061_500);
        assert_eq!(elapsed_text(&job(), now), "1:00");
        let ended = pb::Job {
            end_time_ms: Some(1_700_000_004_500),
            ..job()
        };
        assert_eq!(elapsed_text(&ended, now), "0:03");
        let pending = pb::Job {
            start_time_ms: None,
            ..job()
        };
        assert_eq!(elapsed_text(&pending, now), "0:00");
        // A client clock behind the scheduler's must not underflow.
        assert_eq!(elapsed_ms(&job(), UNIX_EPOCH), 0);
    }

    #[test]
    fn tables_align_columns_without_trailing_blanks() {
        let rows = vec![
            vec!["1".to_string(), "a-long-name".to_string(), "x".to_string()],
            vec!["1234".to_string(), "ünï".to_string(), String::new()],
        ];
        assert_eq!(
            render_table(&["ID", "NAME", "LAST"], &rows),
            "ID    NAME         LAST\n\
             1     a-long-name  x\n\
             1234  ünï\n"
        );
        assert_eq!(render_table(&["ID", "NAME"], &[]), "ID  NAME\n");
    }

    #[test]
    fn limits_and_sizes_read_like_slurm() {
        assert_eq!(time_limit_text(0), "UNLIMITED");
        assert_eq!(time_limit_text(9_000_000), "2:30:00");
        assert_eq!(mem_pair(1024, 65_536), "1G/64G");
    }
}
