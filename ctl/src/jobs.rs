//! `gantry queue`, `show`, `cancel` and `wait`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use gantry_model::JobState;
use gantry_model::units::{format_duration_ms, format_size_mib, parse_duration_ms};
use gantry_proto as pb;
use gantry_wire::{state_from_pb, state_to_pb};

use crate::client::{ClientError, Scheduler, caller};
use crate::output::{self, Format, JobRow, emit, emit_json, render_table};

#[derive(clap::Args, Debug, Clone)]
pub struct QueueArgs {
    /// Include jobs that have ended
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only jobs in these states (comma-separated names or Slurm codes: PD, R, CD, F, CA,
    /// TO, NF); naming an ended state implies --all
    #[arg(
        short = 't',
        long = "state",
        visible_alias = "states",
        value_name = "S[,S...]",
        value_delimiter = ','
    )]
    pub states: Vec<String>,
    /// Only this user's jobs
    #[arg(short = 'u', long, value_name = "USER", conflicts_with = "me")]
    pub user: Option<String>,
    /// Only your own jobs
    #[arg(long)]
    pub me: bool,
    /// Answer from the first replica that responds, from its own copy of the state, even
    /// if it is not the leader (possibly a little behind; pending jobs' reasons are known
    /// only to the leader)
    #[arg(long)]
    pub stale: bool,
    /// Pending jobs only, in the order the scheduler considers them, with each job's priority
    /// and its factors, and when it is expected to start
    #[arg(long)]
    pub explain: bool,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ShowArgs {
    /// Job id
    pub job: u64,
    /// Answer from the first replica that responds, from its own copy of the state, even
    /// if it is not the leader (possibly a little behind; pending jobs' reasons are known
    /// only to the leader)
    #[arg(long)]
    pub stale: bool,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CancelArgs {
    /// Job ids
    #[arg(required = true, value_name = "JOB")]
    pub jobs: Vec<u64>,
}

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Exit status:
  0  every job ended COMPLETED
  1  a job ended in another state (FAILED, CANCELLED, TIMEOUT, NODE_FAIL...), or an error
     (unknown job id, scheduler unreachable at the start)
  2  --timeout passed before every job ended (or a usage error)")]
pub struct WaitArgs {
    /// Job ids
    #[arg(required = true, value_name = "JOB")]
    pub jobs: Vec<u64>,
    /// Give up after this long, e.g. 30s, 10m, 1:00:00 [default: wait forever]
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<String>,
    /// How often to ask the scheduler
    #[arg(long, value_name = "DUR", default_value = "200ms")]
    pub interval: String,
}

pub async fn queue(args: QueueArgs, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let mut states = parse_states(&args.states)?;
    if args.explain {
        if states.iter().any(|s| *s != JobState::Pending) {
            bail!("--explain shows pending jobs only; leave out --state or give PD");
        }
        states = vec![JobState::Pending];
    }
    let request = pb::ListJobsRequest {
        // Asking for an ended state means wanting to see ended jobs.
        all: args.all || states.iter().any(|s| s.is_terminal()),
        states: states.iter().map(|s| state_to_pb(*s) as i32).collect(),
        user: if args.me {
            caller().user
        } else {
            args.user.unwrap_or_default()
        },
        summary: matches!(args.format, Format::Table),
        stale: args.stale,
    };
    let response = scheduler
        .call(|mut client| {
            let request = request.clone();
            async move { client.list_jobs(request).await }
        })
        .await?;
    let mut jobs = response.jobs;
    if args.explain {
        // In the order the scheduler considers them; unranked (not yet seen) last.
        jobs.sort_by_key(|j| (j.rank == 0, j.rank, j.id));
    }
    match args.format {
        Format::Json => {
            let rows: Vec<JobRow> = jobs.iter().map(JobRow::from).collect();
            emit_json(&rows)?;
        }
        Format::Table if args.explain => emit(&explain_table(&jobs))?,
        Format::Table => emit(&queue_table(&jobs, SystemTime::now()))?,
    }
    Ok(())
}

pub const EXPLAIN_HEADER: [&str; 15] = [
    "RANK",
    "JOBID",
    "USER",
    "ACCOUNT",
    "QOS",
    "PRIORITY",
    "AGE",
    "FAIR",
    "QOSF",
    "DEADL",
    "SIZE",
    "SHORT",
    "PRMPT",
    "EST_START",
    "REASON",
];

/// `queue --explain`: each pending job's standing and why it waits. Factors are 0 to 1000.
pub fn explain_table(jobs: &[pb::Job]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let row = JobRow::from(job);
            let (rank, priority, factors, start) = match &row.explanation {
                Some(e) => {
                    let f = e.factors;
                    (
                        e.rank.to_string(),
                        e.priority.to_string(),
                        [
                            f.age,
                            f.fair_share,
                            f.qos,
                            f.deadline,
                            f.size,
                            f.short,
                            f.preempted,
                        ]
                        .map(|v| v.to_string()),
                        e.estimated_start.clone().unwrap_or_else(|| "-".into()),
                    )
                }
                None => (
                    "-".into(),
                    "-".into(),
                    std::array::from_fn(|_| "-".to_string()),
                    "-".into(),
                ),
            };
            let mut cells = vec![
                rank,
                job.id.to_string(),
                job.user.clone(),
                job.account.clone(),
                job.qos.clone(),
                priority,
            ];
            cells.extend(factors);
            cells.push(start);
            cells.push(if job.reason.is_empty() {
                "-".to_string()
            } else {
                job.reason.clone()
            });
            cells
        })
        .collect();
    render_table(&EXPLAIN_HEADER, &rows)
}

pub fn parse_states(names: &[String]) -> anyhow::Result<Vec<JobState>> {
    let mut states = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match JobState::parse(name) {
            Some(state) if !states.contains(&state) => states.push(state),
            Some(_) => {}
            None => bail!(
                "unknown job state {name:?}: use one of {} (or PD, R, CD, F, CA, TO, NF)",
                JobState::ALL.map(|s| s.as_str()).join(", ")
            ),
        }
    }
    Ok(states)
}

pub const QUEUE_HEADER: [&str; 9] = [
    "JOBID",
    "NAME",
    "USER",
    "ACCOUNT",
    "STATE",
    "TIME",
    "NODES",
    "GPUS",
    "NODELIST(REASON)",
];

pub fn queue_table(jobs: &[pb::Job], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            vec![
                job.id.to_string(),
                job.name.clone(),
                job.user.clone(),
                job.account.clone(),
                output::job_state_name(job.state).to_string(),
                output::elapsed_text(job, now),
                job.num_nodes.to_string(),
                // The job's total, as the NODES column already says how it is spread.
                (u64::from(job.gpus_per_node) * u64::from(job.num_nodes)).to_string(),
                nodelist_or_reason(job),
            ]
        })
        .collect();
    render_table(&QUEUE_HEADER, &rows)
}

/// squeue's last column: where a job runs, or in parentheses why it does not.
fn nodelist_or_reason(job: &pb::Job) -> String {
    let pending = state_from_pb(job.state) == Some(JobState::Pending);
    if !pending && !job.allocation.is_empty() {
        return job
            .allocation
            .iter()
            .map(|a| a.node.as_str())
            .collect::<Vec<_>>()
            .join(",");
    }
    match (pending, job.reason.is_empty()) {
        (_, false) => format!("({})", job.reason),
        (true, true) => "(None)".to_string(),
        (false, true) => String::new(),
    }
}

pub async fn show(args: ShowArgs, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let job = get_job(scheduler, args.job, args.stale)
        .await
        .map_err(|e| about_job(args.job, e))?;
    match args.format {
        Format::Json => emit_json(&JobRow::from(&job))?,
        Format::Table => emit(&show_text(&job, SystemTime::now()))?,
    }
    Ok(())
}

async fn get_job(
    scheduler: &mut Scheduler,
    job_id: u64,
    stale: bool,
) -> Result<pb::Job, ClientError> {
    let request = pb::GetJobRequest { job_id, stale };
    scheduler
        .call(|mut client| async move { client.get_job(request).await })
        .await
}

/// `key: value` lines, one per field, like `scontrol show job`. Keys are the JSON field
/// names, except where the value is shown in another unit (`time_limit`, `mem_per_node`).
pub fn show_text(job: &pb::Job, now: SystemTime) -> String {
    let row = JobRow::from(job);
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let mut lines: Vec<(&str, String)> = vec![
        ("id", row.id.to_string()),
        ("name", row.name.clone()),
        ("user", row.user.clone()),
        ("account", row.account.clone()),
        ("state", row.state.clone()),
        ("reason", or_dash(&row.reason)),
        ("exit_code", opt(row.exit_code.map(|c| c.to_string()))),
        ("signal", opt(row.signal.map(|s| s.to_string()))),
        ("num_nodes", row.num_nodes.to_string()),
        (
            "gpus_per_node",
            gantry_model::shape::format_gpus(row.gpus_per_node, row.gpu_model.as_deref()),
        ),
        ("cpus_per_node", row.cpus_per_node.to_string()),
        ("mem_per_node", format_size_mib(row.mem_per_node_mib)),
        ("time_limit", output::time_limit_text(job.time_limit_ms)),
        ("run_time", output::elapsed_text(job, now)),
        ("nodes", or_dash(&row.nodes.join(","))),
    ];
    for (i, alt) in row.alternatives.iter().enumerate() {
        let chosen = if row.shape as usize == i + 1 && !row.allocation.is_empty() {
            " (runs this way)"
        } else {
            ""
        };
        lines.push(("alternative", format!("{}: {alt}{chosen}", i + 1)));
    }
    if row.allocation.is_empty() {
        lines.push(("allocation", "-".to_string()));
    }
    for a in &row.allocation {
        let gpus = a
            .gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let text = format!(
            "{} gpus={} cpus={} mem={}",
            a.node,
            or_dash(&gpus),
            a.cpus,
            format_size_mib(a.mem_mib)
        );
        lines.push(("allocation", text));
    }
    lines.extend([
        ("submit_time", opt(row.submit_time.clone())),
        ("start_time", opt(row.start_time.clone())),
        ("end_time", opt(row.end_time.clone())),
        ("work_dir", or_dash(&row.work_dir)),
        ("stdout", or_dash(&row.stdout)),
        ("stderr", or_dash(&row.stderr)),
        ("command", or_dash(&shell_words(&row.command))),
        ("attempt", row.attempt.to_string()),
        ("queue_position", row.queue_position.to_string()),
        ("qos", row.qos.clone()),
        ("pool", or_dash(&row.pool)),
        ("constraints", or_dash(&row.constraints.join("&"))),
        ("dependencies", or_dash(&row.dependencies.join(","))),
        ("deadline", opt(row.deadline.clone())),
        (
            "checkpoint",
            row.checkpoint
                .as_ref()
                .map_or("-".into(), |c| match c.interval_s {
                    Some(every) => {
                        format!("{} every {}", c.signal, format_duration_ms(every * 1000))
                    }
                    None => c.signal.clone(),
                }),
        ),
        ("last_checkpoint", last_checkpoint(&row)),
        (
            "requeue_on",
            if row.requeue_on.is_empty() {
                "never".to_string()
            } else {
                row.requeue_on.join(",")
            },
        ),
    ]);
    if let Some(e) = &row.explanation {
        lines.extend([
            ("priority", e.priority_text()),
            ("rank", e.rank.to_string()),
            ("estimated_start", opt(e.estimated_start.clone())),
        ]);
    }
    if job.cancel_requested {
        lines.push(("cancel_requested", "yes".to_string()));
    }
    let mut text: String = lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    // Every ended run: `run 0: PREEMPTED on node1:0 from ... to ... (why)`.
    for a in &row.attempts {
        let why = if a.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", a.reason)
        };
        let lost = if a.lost_gpu_seconds > 0 {
            format!(", {} GPU-s lost", a.lost_gpu_seconds)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "run {}: {} on {} from {} to {}{why}{lost}\n",
            a.attempt,
            a.outcome,
            a.allocation.join(" "),
            opt(a.start_time.clone()),
            opt(a.end_time.clone()),
        ));
    }
    text
}

/// A command line as it could be typed back: words with blanks or quotes are quoted.
fn shell_words(words: &[String]) -> String {
    let quote = |w: &String| {
        let plain = !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+%@".contains(c));
        if plain {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    words.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// `gantry hold|release|requeue|preempt JOB...`: all the jobs or none, as one request.
pub async fn control(
    args: CancelArgs,
    scheduler: &mut Scheduler,
    action: pb::ControlAction,
) -> anyhow::Result<u8> {
    let job_ids = unique(&args.jobs);
    let request = pb::ControlRequest {
        caller: Some(caller()),
        job_ids: job_ids.clone(),
        action: action as i32,
    };
    scheduler
        .call(|mut client| {
            let request = request.clone();
            async move { client.control(request).await }
        })
        .await?;
    let done = match action {
        pb::ControlAction::Hold => "held: it is not scheduled until released",
        pb::ControlAction::Release => "released",
        pb::ControlAction::Requeue => "being requeued: stopped, then pending again",
        pb::ControlAction::Preempt => "being preempted: stopped, then pending again",
        pb::ControlAction::Unspecified => "unchanged",
    };
    let text: String = job_ids
        .iter()
        .map(|id| format!("Job {id} {done}\n"))
        .collect();
    emit(&text)?;
    Ok(0)
}

/// `2026-11-22T12:00:00.000Z (progress 20)`, or `-` before any.
fn last_checkpoint(row: &JobRow) -> String {
    let Some(c) = &row.checkpoint else {
        return "-".into();
    };
    match (&c.last, c.progress) {
        (Some(at), Some(progress)) => format!("{at} (progress {progress})"),
        (Some(at), None) => at.clone(),
        (None, _) => "-".into(),
    }
}

/// Cancels each job on its own, so one unknown id does not hide what happened to the others.
/// Returns the exit code: 1 if any job could not be cancelled.
pub async fn cancel(args: CancelArgs, scheduler: &mut Scheduler) -> anyhow::Result<u8> {
    let who = caller();
    let mut code = 0;
    for job_id in unique(&args.jobs) {
        let request = pb::CancelRequest {
            caller: Some(who.clone()),
            job_ids: vec![job_id],
        };
        let result = scheduler
            .call(|mut client| {
                let request = request.clone();
                async move { client.cancel(request).await }
            })
            .await;
        match result {
            Ok(response) => match cancel_text(job_id, &response) {
                Ok(text) => emit(&text)?,
                Err(text) => {
                    eprintln!("error: {text}");
                    code = 1;
                }
            },
            // An unreachable scheduler is the same for every job: stop rather than repeat it.
            Err(e @ (ClientError::Unreachable(_) | ClientError::NoAnswer { .. })) => {
                return Err(e.into());
            }
            Err(e) => {
                eprintln!("error: {}", about_job(job_id, e));
                code = 1;
            }
        }
    }
    Ok(code)
}

/// What happened to one job: `Ok` for a cancellation, `Err` when there was nothing to
/// cancel (the job had already ended), which scancel also reports as an error.
fn cancel_text(job_id: u64, response: &pb::CancelResponse) -> Result<String, String> {
    if response.cancelled.contains(&job_id) {
        Ok(format!("Cancelled job {job_id} (it was pending)\n"))
    } else if response.signalled.contains(&job_id) {
        Ok(format!(
            "Stopping job {job_id}: sent SIGTERM, SIGKILL follows after the grace period\n"
        ))
    } else {
        Err(format!(
            "job {job_id} is not pending or running: nothing to cancel"
        ))
    }
}

/// The scheduler's answer about one job, made to name the job if it does not already.
fn about_job(job_id: u64, error: ClientError) -> anyhow::Error {
    match error {
        ClientError::Rpc(_) => anyhow::anyhow!(naming_job(job_id, &error.to_string())),
        other => other.into(),
    }
}

/// A per-job error message that says which job it is about.
fn naming_job(job_id: u64, message: &str) -> String {
    if message.contains(&job_id.to_string()) {
        message.to_string()
    } else {
        format!("job {job_id}: {message}")
    }
}

fn unique(ids: &[u64]) -> Vec<u64> {
    let mut seen = BTreeSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// Polls until every job has ended. Exit code: 0 all COMPLETED, 1 otherwise, 2 on timeout.
pub async fn wait(args: WaitArgs, scheduler: &mut Scheduler) -> anyhow::Result<u8> {
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| parse_duration_ms(t).context("--timeout"))
        .transpose()?
        .map(Duration::from_millis);
    let interval = Duration::from_millis(parse_duration_ms(&args.interval).context("--interval")?);
    if interval.is_zero() {
        bail!("--interval must be more than 0 (got {:?})", args.interval);
    }
    let deadline = timeout.map(|t| Instant::now() + t);

    let mut waiting: Vec<(u64, String)> = unique(&args.jobs)
        .into_iter()
        .map(|id| (id, "UNKNOWN".to_string()))
        .collect();
    let mut all_completed = true;
    let mut answered_once = false;
    let mut warned = false;
    loop {
        let mut still = Vec::new();
        for (job_id, last_state) in waiting {
            match get_job(scheduler, job_id, false).await {
                Ok(job) => {
                    answered_once = true;
                    match state_from_pb(job.state) {
                        Some(state) if state.is_terminal() => {
                            all_completed &= state == JobState::Completed;
                            emit(&final_state_text(&job, state))?;
                        }
                        // Unknown states (from a newer scheduler) are not treated as ended.
                        _ => still.push((job_id, output::job_state_name(job.state).to_string())),
                    }
                }
                // A scheduler restarting mid-wait is not the job's failure: keep polling.
                Err(ClientError::Unreachable(_) | ClientError::NoAnswer { .. })
                    if answered_once =>
                {
                    if !warned {
                        eprintln!("warning: the scheduler stopped answering; still waiting");
                        warned = true;
                    }
                    still.push((job_id, last_state));
                }
                Err(e) => return Err(about_job(job_id, e)),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            return Ok(if all_completed { 0 } else { 1 });
        }
        let now = Instant::now();
        let pause = match deadline {
            Some(deadline) if now >= deadline => {
                let list = waiting
                    .iter()
                    .map(|(id, state)| format!("{id} ({state})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let after = humantime::format_duration(timeout.unwrap_or_default());
                eprintln!("error: timed out after {after}; still not done: {list}");
                return Ok(2);
            }
            Some(deadline) => interval.min(deadline - now),
            None => interval,
        };
        tokio::time::sleep(pause).await;
    }
}

/// `Job 7 FAILED (exit code 3)`: the state and the scheduler's reason, which already says how
/// the job ended ("exit code N", "killed by signal N", "time limit reached", a launch error,
/// "cancelled by alice"...). The exit code (or signal) stands in only when there is no reason,
/// as for a job that completed.
fn final_state_text(job: &pb::Job, state: JobState) -> String {
    let detail = if job.reason.is_empty() {
        job.exit_code
            .map(|code| format!("exit code {code}"))
            .or_else(|| {
                job.signal
                    .map(|signal| format!("killed by signal {signal}"))
            })
    } else {
        Some(job.reason.clone())
    };
    match detail {
        Some(detail) => format!("Job {} {state} ({detail})\n", job.id),
        None => format!("Job {} {state}\n", job.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn job(id: u64, state: pb::JobState) -> pb::Job {
        pb::Job {
            id,
            name: format!("job-{id}"),
            user: "alice".into(),
            account: "default".into(),
            state: state as i32,
            num_nodes: 1,
            gpus_per_node: 2,
            cpus_per_node: 1,
            mem_per_node_mib: 256,
            submit_time_ms: 1_000,
            command: vec![
                "python".into(),
                "train.py".into(),
                "--name".into(),
                "my run".into(),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn queue_table_reads_like_squeue() {
        let running = pb::Job {
            start_time_ms: Some(10_000),
            num_nodes: 2,
            allocation: vec![
                pb::NodeAllocation {
                    node: "n1".into(),
                    gpus: vec![0, 1],
                    ..Default::default()
                },
                pb::NodeAllocation {
                    node: "n2".into(),
                    gpus: vec![2, 3],
                    ..Default::default()
                },
            ],
            ..job(7, pb::JobState::Running)
        };
        let pending = pb::Job {
            reason: "Resources".into(),
            ..job(8, pb::JobState::Pending)
        };
        let pending_no_reason = job(9, pb::JobState::Pending);
        let now = UNIX_EPOCH + Duration::from_millis(75_000);
        assert_eq!(
            queue_table(&[running, pending, pending_no_reason], now),
            "JOBID  NAME   USER   ACCOUNT  STATE    TIME  NODES  GPUS  NODELIST(REASON)\n\
             7      job-7  alice  default  RUNNING  1:05  2      4     n1,n2\n\
             8      job-8  alice  default  PENDING  0:00  1      2     (Resources)\n\
             9      job-9  alice  default  PENDING  0:00  1      2     (None)\n"
        );
    }

    #[test]
    fn states_parse_by_name_or_code_and_unknown_ones_are_rejected() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_states(&names(&["pending", "R", "CD", "R"])).unwrap(),
            vec![JobState::Pending, JobState::Running, JobState::Completed]
        );
        let err = parse_states(&names(&["RUNNING", "BOGUS"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown job state \"BOGUS\": use one of PENDING, RUNNING"),
            "{err}"
        );
    }

    #[test]
    fn show_prints_every_field() {
        let ended = pb::Job {
            exit_code: Some(1),
            start_time_ms: Some(2_000),
            end_time_ms: Some(5_000),
            time_limit_ms: 3_600_000,
            allocation: vec![pb::NodeAllocation {
                node: "n1".into(),
                gpus: vec![0, 1],
                cpus: 1,
                mem_mib: 256,
                ended: true,
            }],
            ..job(3, pb::JobState::Failed)
        };
        let text = show_text(&ended, UNIX_EPOCH);
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "name",
                "user",
                "account",
                "state",
                "reason",
                "exit_code",
                "signal",
                "num_nodes",
                "gpus_per_node",
                "cpus_per_node",
                "mem_per_node",
                "time_limit",
                "run_time",
                "nodes",
                "allocation",
                "submit_time",
                "start_time",
                "end_time",
                "work_dir",
                "stdout",
                "stderr",
                "command",
                "attempt",
                "queue_position",
                "qos",
                "pool",
                "constraints",
                "dependencies",
                "deadline",
                "checkpoint",
                "last_checkpoint",
                "requeue_on"
            ]
        );
        assert!(text.contains("requeue_on: node_failure\n"));
        assert!(text.contains("state: FAILED\n"));
        assert!(text.contains("exit_code: 1\nsignal: -\n"));
        assert!(text.contains("time_limit: 1:00:00\nrun_time: 0:03\n"));
        assert!(text.contains("allocation: n1 gpus=0,1 cpus=1 mem=256M\n"));
        assert!(text.contains("start_time: 1970-01-01T00:00:02.000Z\n"));
        assert!(text.contains("command: python train.py --name 'my run'\n"));
    }

    #[test]
    fn a_pending_job_shows_its_standing_and_the_explain_table_lists_it() {
        let pending = pb::Job {
            reason: "Priority: waiting behind job 3".into(),
            qos: "high".into(),
            priority: 2750,
            factors: Some(pb::PriorityFactors {
                age: 0,
                fair_share: 1000,
                qos: 1000,
                deadline: 0,
                size: 250,
                short: 600,
                preempted: 1000,
            }),
            rank: 2,
            estimated_start_ms: Some(60_000),
            ..job(4, pb::JobState::Pending)
        };
        let text = show_text(&pending, UNIX_EPOCH);
        assert!(
            text.contains(
                "priority: 2750 (age 0, fair_share 1000, qos 1000, deadline 0, size 250, short 600, \
                 preempted 1000)\n\
                 rank: 2\nestimated_start: 1970-01-01T00:01:00.000Z\n"
            ),
            "{text}"
        );
        let unranked = job(5, pb::JobState::Pending);
        assert!(!show_text(&unranked, UNIX_EPOCH).contains("rank:"));
        assert_eq!(
            explain_table(&[pending, unranked]),
            "RANK  JOBID  USER   ACCOUNT  QOS   PRIORITY  AGE  FAIR  QOSF  DEADL  SIZE  SHORT  PRMPT  EST_START                 REASON\n\
             2     4      alice  default  high  2750      0    1000  1000  0      250   600    1000   1970-01-01T00:01:00.000Z  Priority: waiting behind job 3\n\
             -     5      alice  default        -         -    -     -     -      -     -      -      -                         -\n"
        );
    }

    #[test]
    fn cancel_says_what_happened() {
        let response = pb::CancelResponse {
            cancelled: vec![4],
            signalled: vec![5],
        };
        assert_eq!(
            cancel_text(4, &response),
            Ok("Cancelled job 4 (it was pending)\n".to_string())
        );
        assert!(
            cancel_text(5, &response)
                .unwrap()
                .starts_with("Stopping job 5: sent SIGTERM")
        );
        assert_eq!(
            cancel_text(6, &response),
            Err("job 6 is not pending or running: nothing to cancel".to_string())
        );
        assert_eq!(
            naming_job(7, "job 7 does not exist"),
            "job 7 does not exist"
        );
        assert_eq!(
            naming_job(7, "permission denied"),
            "job 7: permission denied"
        );
    }

    #[test]
    fn final_states_say_the_reason_once() {
        let done = pb::Job {
            exit_code: Some(0),
            ..job(1, pb::JobState::Completed)
        };
        assert_eq!(
            final_state_text(&done, JobState::Completed),
            "Job 1 COMPLETED (exit code 0)\n"
        );
        let killed = pb::Job {
            signal: Some(9),
            reason: "time limit reached".into(),
            ..job(2, pb::JobState::Timeout)
        };
        assert_eq!(
            final_state_text(&killed, JobState::Timeout),
            "Job 2 TIMEOUT (time limit reached)\n"
        );
        // A multi-node job's reason restates the code with more words: not said twice.
        let failed = pb::Job {
            exit_code: Some(1),
            reason: "exit code 1 (first failing node)".into(),
            ..job(4, pb::JobState::Failed)
        };
        assert_eq!(
            final_state_text(&failed, JobState::Failed),
            "Job 4 FAILED (exit code 1 (first failing node))\n"
        );
        let cancelled = pb::Job {
            signal: Some(15),
            reason: "cancelled by alice".into(),
            ..job(5, pb::JobState::Cancelled)
        };
        assert_eq!(
            final_state_text(&cancelled, JobState::Cancelled),
            "Job 5 CANCELLED (cancelled by alice)\n"
        );
        // Without a reason (an older scheduler), the code or signal stands in.
        let signalled = pb::Job {
            signal: Some(11),
            ..job(6, pb::JobState::Failed)
        };
        assert_eq!(
            final_state_text(&signalled, JobState::Failed),
            "Job 6 FAILED (killed by signal 11)\n"
        );
        assert_eq!(
            final_state_text(&job(3, pb::JobState::Cancelled), JobState::Cancelled),
            "Job 3 CANCELLED\n"
        );
    }

    #[test]
    fn repeated_ids_are_handled_once_in_order() {
        assert_eq!(unique(&[3, 1, 3, 2, 1]), vec![3, 1, 2]);
    }

    mod over_grpc {
        use super::*;
        use crate::fake_scheduler::{Fake, serve};
        use pb::JobState::{Cancelled, Completed, Failed, Pending, Running};
        use std::sync::Arc;

        fn wait_args(jobs: &[u64], timeout: Option<&str>) -> WaitArgs {
            WaitArgs {
                jobs: jobs.to_vec(),
                timeout: timeout.map(str::to_string),
                interval: "10ms".into(),
            }
        }

        #[tokio::test]
        async fn wait_exit_codes() {
            let fake = Arc::new(Fake::with_jobs(&[
                (1, &[Pending, Running, Completed]),
                (2, &[Running, Completed]),
                (3, &[Running, Failed]),
                (4, &[Running]),
                (5, &[Cancelled]),
            ]));
            let server = serve(fake);
            let mut scheduler = Scheduler::new(vec![server.address.clone()]);
            let code = wait(wait_args(&[1, 2, 1], None), &mut scheduler)
                .await
                .unwrap();
            assert_eq!(code, 0, "every job completed");
            let code = wait(wait_args(&[3], None), &mut scheduler).await.unwrap();
            assert_eq!(code, 1, "a job failed");
            let code = wait(wait_args(&[5], None), &mut scheduler).await.unwrap();
            assert_eq!(code, 1, "a job was cancelled");

            let started = Instant::now();
            let code = wait(wait_args(&[4, 2], Some("300ms")), &mut scheduler)
                .await
                .unwrap();
            assert_eq!(code, 2, "job 4 never ends");
            assert!(started.elapsed() >= Duration::from_millis(300));
            assert!(started.elapsed() < Duration::from_secs(30));

            let err = wait(wait_args(&[999], None), &mut scheduler)
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), "job 999 does not exist");
        }

        #[tokio::test]
        async fn wait_refuses_bad_durations() {
            let mut scheduler = Scheduler::new(vec!["http://127.0.0.1:1".into()]);
            let args = WaitArgs {
                interval: "0s".into(),
                ..wait_args(&[1], None)
            };
            let err = wait(args, &mut scheduler).await.unwrap_err().to_string();
            assert!(err.starts_with("--interval must be more than 0"), "{err}");
            let err = wait(wait_args(&[1], Some("soon")), &mut scheduler)
                .await
                .unwrap_err();
            assert_eq!(
                format!("{err:#}"),
                format!("--timeout: {}", parse_duration_ms("soon").unwrap_err())
            );
        }

        #[tokio::test]
        async fn cancel_reports_each_job_and_fails_if_any_did() {
            let fake = Arc::new(Fake::with_jobs(&[
                (1, &[Pending]),
                (2, &[Running]),
                (3, &[Completed]),
            ]));
            let server = serve(fake);
            let mut scheduler = Scheduler::new(vec![server.address.clone()]);
            let code = cancel(CancelArgs { jobs: vec![1, 2] }, &mut scheduler)
                .await
                .unwrap();
            assert_eq!(code, 0);
            let code = cancel(CancelArgs { jobs: vec![1, 3] }, &mut scheduler)
                .await
                .unwrap();
            assert_eq!(code, 1, "job 3 had already ended");
            let code = cancel(CancelArgs { jobs: vec![999] }, &mut scheduler)
                .await
                .unwrap();
            assert_eq!(code, 1, "unknown job");
        }
    }
}
