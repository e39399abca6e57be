//! `gantry submit`: turns flags, script directives and the submitter's environment into a
//! job spec, checks it locally, and sends it.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use gantry_model::dependency::parse_dependencies;
use gantry_model::units::{parse_duration_ms, parse_size_mib};
use gantry_model::{Checkpoint, OpenMode, SpecError};
use gantry_proto as pb;
use thiserror::Error;

use crate::client::{ClientError, Scheduler, caller};
use crate::directives::{self, DirectiveError, Directives, Flag};
use crate::output::emit;

/// Memory per node when `--mem` is not given, per CPU asked for (as Slurm's DefMemPerCPU).
pub const DEFAULT_MEM_PER_CPU_MIB: u64 = 256;
pub const DEFAULT_ACCOUNT: &str = "default";
/// Scripts travel inside the submit request, far below the scheduler's 64 MiB message limit,
/// but each is then kept in the replicated state (its log and snapshots) and sent with every
/// launch: the cap keeps that small. Slurm caps scripts too (`max_script_size`, 4 MB).
pub const MAX_SCRIPT_BYTES: u64 = 1024 * 1024;

// Numbers, sizes and durations are taken as text so that `-c -1` reaches our own check,
// which says what is wrong, instead of clap's generic "unexpected argument '-1'". The
// option names must match `directives::Flag` (a test checks it).
#[derive(clap::Args, Debug, Clone, Default)]
#[command(
    override_usage = "gantry submit [OPTIONS] SCRIPT [ARGS]...\n       \
                      gantry submit [OPTIONS] -- COMMAND [ARGS]...",
    after_help = SUBMIT_AFTER_HELP
)]
pub struct SubmitArgs {
    /// Job name [default: the script's file name, or the command's program name]
    #[arg(short = 'J', long = "job-name", value_name = "NAME")]
    pub name: Option<String>,
    /// GPUs on each node, optionally of one model: 8, 8:h100 (or Slurm's h100:8); 0 for a
    /// CPU-only job [default: 0]
    #[arg(
        short = 'G',
        long = "gpus-per-node",
        value_name = "GPUS[:MODEL]",
        allow_hyphen_values = true
    )]
    pub gpus: Option<String>,
    /// Another way to run the job, at a speed relative to the main request: e.g.
    /// `--alt 2x8:a100@0.6` (2 nodes of 8 A100s, at 0.6x the speed). Repeatable; the
    /// scheduler runs the job in whichever way would finish first, judged by the time limit
    /// (stretched by the speed)
    #[arg(long = "alt", value_name = "[NODESx]GPUS[:MODEL][@SPEED]")]
    pub alternatives: Vec<String>,
    /// CPUs on each node [default: 1]
    #[arg(
        short = 'c',
        long = "cpus-per-node",
        visible_alias = "cpus-per-task",
        value_name = "CPUS",
        allow_hyphen_values = true
    )]
    pub cpus: Option<String>,
    /// Memory on each node, e.g. 512M, 16G, 1.5T; a bare number is MiB [default: 256M per CPU]
    #[arg(long = "mem", value_name = "SIZE", allow_hyphen_values = true)]
    pub mem: Option<String>,
    /// Number of nodes; all are allocated at once or not at all [default: 1]
    #[arg(
        short = 'N',
        long = "nodes",
        value_name = "NODES",
        allow_hyphen_values = true
    )]
    pub nodes: Option<String>,
    /// Time limit: 30s, 90m, 2h30m, 90 (minutes), 1:30:00, 1-00:00:00; UNLIMITED for
    /// none [default: none]
    #[arg(
        short = 't',
        long = "time",
        value_name = "TIME",
        allow_hyphen_values = true
    )]
    pub time: Option<String>,
    /// Account charged for the job [default: default]
    #[arg(short = 'A', long = "account", value_name = "ACCOUNT")]
    pub account: Option<String>,
    /// Quality of service: a level with its own priority and preemption rights
    /// (`gantry admin config show` lists them; low, normal and high by default)
    /// [default: normal]
    #[arg(short = 'q', long = "qos", value_name = "QOS")]
    pub qos: Option<String>,
    /// Node pool (partition) to run in [default: the scheduler's default pool, `default`]
    #[arg(
        short = 'p',
        long = "partition",
        visible_alias = "pool",
        value_name = "POOL"
    )]
    pub partition: Option<String>,
    /// Labels every node of the job must carry, e.g. ib or ib&nvme (all of them; `,` works
    /// as `&`)
    #[arg(short = 'C', long = "constraint", value_name = "LABELS")]
    pub constraint: Option<String>,
    /// Jobs that must have ended first: afterok:ID[:ID...] (completed successfully),
    /// afterany:ID (ended), afternotok:ID (ended without success); several joined by `,`
    #[arg(short = 'd', long = "dependency", value_name = "DEPS")]
    pub dependency: Option<String>,
    /// Warn the job's batch shell (or command) with SIGNAL, LEAD before it is preempted or
    /// reaches its time limit, so it can checkpoint (e.g. SIGUSR1@120s, the defaults; a bare
    /// LEAD is seconds; job:SIGNAL@LEAD warns every process of the job); it gets
    /// GANTRY_CHECKPOINT_DIR, kept across its restarts, and a preempted run is requeued to
    /// resume from it
    #[arg(long = "checkpoint", value_name = "SIGNAL@LEAD")]
    pub checkpoint: Option<String>,
    /// Slurm's --signal: the checkpoint warning with Slurm's meaning, [B:]SIG[@SECONDS]
    /// (every process of the job, or with B: only the batch shell; 60 seconds before by
    /// default; SIG a name or a number)
    #[arg(long = "signal", value_name = "[B:]SIG[@SECS]")]
    pub signal: Option<String>,
    /// How often the job checkpoints on its own, e.g. 30m (implies --checkpoint with its
    /// defaults): preemption prefers jobs that lose the least since their last checkpoint
    #[arg(long = "checkpoint-interval", value_name = "DUR")]
    pub checkpoint_interval: Option<String>,
    /// When the job must have ended: now+6h, +30m, or ISO 8601 UTC (2026-12-01T09:00). The
    /// job grows more urgent as its slack (deadline − now − time limit) shrinks
    #[arg(long = "deadline", value_name = "TIME")]
    pub deadline: Option<String>,
    /// File for standard output, relative to the working directory; %j is the job id, %x its
    /// name, %r the run (0, then 1, 2... when requeued), %n the node's rank, %N the node's
    /// name [default: gantry-%j.out]
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<String>,
    /// File for standard error, relative to the working directory; the same patterns as -o
    /// [default: the standard output file]
    #[arg(short = 'e', long = "error", value_name = "ERR")]
    pub error: Option<String>,
    /// How each run opens its output files: append, or truncate [default: the first run
    /// truncates, later runs (requeues) append]
    #[arg(long = "open-mode", value_name = "MODE")]
    pub open_mode: Option<String>,
    /// Directory the job runs in [default: the current directory]
    #[arg(short = 'D', long = "chdir", value_name = "DIR")]
    pub chdir: Option<String>,
    /// Print only the job id
    #[arg(long = "parsable")]
    pub parsable: bool,
    /// Run in this advance reservation: only on its nodes, inside its window (see gantry
    /// reservation list)
    #[arg(long = "reservation", value_name = "NAME")]
    pub reservation: Option<String>,
    /// Run the job again if its node fails under it (the default; overrides a --no-requeue
    /// directive)
    #[arg(long = "requeue", conflicts_with = "no_requeue")]
    pub requeue: bool,
    /// End the job NODE_FAIL if its node fails under it, instead of running it again
    #[arg(long = "no-requeue")]
    pub no_requeue: bool,
    /// Run the job again when it reaches its time limit, instead of ending it TIMEOUT (it is
    /// warned LEAD before, with --checkpoint)
    #[arg(long = "requeue-on-timeout")]
    pub requeue_on_timeout: bool,
    /// SCRIPT [ARGS...]: a batch script (its text is sent with the job) and its arguments;
    /// or, after `--`, COMMAND [ARGS...]: a program run without a script. Everything after
    /// SCRIPT or `--` belongs to the job, as with sbatch.
    #[arg(value_name = "PROGRAM", trailing_var_arg = true)]
    pub program: Vec<String>,
    /// Set from the raw command line: the program came after `--`.
    #[arg(skip)]
    pub is_command: bool,
}

const SUBMIT_AFTER_HELP: &str = "\
A script may set the same options in #GANTRY (or #SBATCH) lines after its shebang and before \
its first command, e.g. `#GANTRY --gpus-per-node=4` or `#SBATCH -t 2:00:00`. Options on the \
command line win over directives.

Examples:
  gantry submit -G 2 -t 2h train.sh --epochs 10
  gantry submit -G 1 -c 8 --mem 32G -- python train.py";

#[derive(Debug, Error)]
pub enum SubmitError {
    #[error("{origin}{message}")]
    InvalidValue { origin: Origin, message: String },
    #[error(transparent)]
    Directive(#[from] DirectiveError),
    #[error("script {0:?} not found")]
    ScriptNotFound(String),
    #[error("script {0:?} is a directory")]
    ScriptIsDirectory(String),
    #[error("cannot read script {path:?}: {reason}")]
    ScriptUnreadable { path: String, reason: String },
    #[error(
        "script {0:?} is not UTF-8 text; to run a program, use `gantry submit -- PROGRAM ARGS...`"
    )]
    ScriptNotUtf8(String),
    #[error(
        "script {0:?} does not start with #! (e.g. #!/bin/bash): the first line must name the \
         interpreter that runs it"
    )]
    NoShebang(String),
    #[error(
        "script {0:?} is larger than {limit} KiB: a batch script is sent with the job, so \
         keep data in files it reads",
        limit = MAX_SCRIPT_BYTES / 1024
    )]
    ScriptTooLarge(String),
    #[error("nothing to run: give a script, or `-- COMMAND ARGS...`")]
    NothingToRun,
    #[error("{what} is not valid UTF-8: {path:?}")]
    NonUtf8Path { what: &'static str, path: PathBuf },
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Where a setting came from, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    Directive { file: String, line: usize },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::CommandLine => Ok(()),
            Origin::Directive { file, line } => write!(f, "{file}:{line}: "),
        }
    }
}

/// A value as typed, with where it was typed.
struct Setting<'a> {
    value: &'a str,
    origin: Origin,
}

impl Setting<'_> {
    fn invalid(&self, message: String) -> SubmitError {
        SubmitError::InvalidValue {
            origin: self.origin.clone(),
            message,
        }
    }
}

/// What the submitter's process contributes besides its arguments.
pub struct Context {
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    /// What `now` means in `--deadline now+2h`.
    pub now_ms: u64,
}

impl Context {
    pub fn from_process() -> anyhow::Result<Context> {
        let cwd = std::env::current_dir()
            .map_err(|e| anyhow::anyhow!("cannot determine the current directory: {e}"))?;
        // Like sbatch's --export=ALL; a variable that is not UTF-8 cannot travel in the API.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(Context { cwd, env, now_ms })
    }
}

/// The command line's value for `flag`, else the last directive's.
fn pick<'a>(
    cli: &'a Option<String>,
    directives: &'a Directives,
    file: &str,
    flag: Flag,
) -> Option<Setting<'a>> {
    match cli {
        Some(value) => Some(Setting {
            value,
            origin: Origin::CommandLine,
        }),
        None => directives.last(flag).map(|(value, line)| Setting {
            value,
            origin: Origin::Directive {
                file: file.to_string(),
                line,
            },
        }),
    }
}

/// A checked request, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub spec: pb::JobSpec,
    pub parsable: bool,
}

/// Whether the program words came after `--`. clap drops the `--`, but the program is
/// always the tail of the command line (everything after it belongs to the job), so the
/// word just before that tail tells.
pub fn after_double_dash<S: AsRef<std::ffi::OsStr>>(raw: &[S], program: &[String]) -> bool {
    let Some(start) = raw.len().checked_sub(program.len()) else {
        return false;
    };
    start > 0
        && raw[start - 1].as_ref() == "--"
        && raw[start..]
            .iter()
            .zip(program)
            .all(|(r, p)| r.as_ref() == p.as_str())
}

pub async fn run(mut args: SubmitArgs, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    args.is_command = after_double_dash(&raw, &args.program);
    let request = build_request(&args, &Context::from_process()?)?;
    let job_id = send(request.spec, scheduler).await?;
    let text = if request.parsable {
        format!("{job_id}\n")
    } else {
        format!("Submitted job {job_id}\n")
    };
    emit(&text)?;
    Ok(())
}

/// Sends a checked spec as the current user; returns the new job's id. The request carries
/// a fresh idempotency key, so retrying it (while a leader is elected, or after an answer
/// was lost) never creates a second job.
pub async fn send(spec: pb::JobSpec, scheduler: &mut Scheduler) -> Result<u64, ClientError> {
    let submit = pb::SubmitRequest {
        caller: Some(caller()),
        spec: Some(spec),
        idempotency_key: idempotency_key(),
    };
    let response = scheduler
        .call_retrying(|mut client| {
            let submit = submit.clone();
            async move { client.submit(submit).await }
        })
        .await?;
    Ok(response.job_id)
}

/// 128 random bits from the kernel, as hex; the time and pid if that fails (still unique
/// enough for one user's submits).
pub fn idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (now ^ (u128::from(std::process::id()) << 96)).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds and checks the job spec: everything that can be wrong without asking the
/// scheduler is reported here.
pub fn build_request(args: &SubmitArgs, ctx: &Context) -> Result<Request, SubmitError> {
    let Some(first) = args.program.first() else {
        return Err(SubmitError::NothingToRun);
    };
    let script = if args.is_command {
        None
    } else {
        Some(read_script(first, &ctx.cwd)?)
    };
    let directives = match &script {
        Some(s) => directives::parse(&s.shown, &s.body)?,
        None => Directives::default(),
    };
    let file = script
        .as_ref()
        .map_or_else(String::new, |s| s.shown.clone());
    let setting = |cli, flag| pick(cli, &directives, &file, flag);

    let (gpus, gpu_model) = match setting(&args.gpus, Flag::GpusPerNode) {
        Some(s) => gpu_request(&s)?,
        None => (0, None),
    };
    // Repeatable: the command line's replace the script's.
    let alternative_settings: Vec<Setting<'_>> = if args.alternatives.is_empty() {
        directives
            .all(Flag::Alternative)
            .into_iter()
            .map(|(value, line)| Setting {
                value,
                origin: Origin::Directive {
                    file: file.clone(),
                    line,
                },
            })
            .collect()
    } else {
        args.alternatives
            .iter()
            .map(|value| Setting {
                value,
                origin: Origin::CommandLine,
            })
            .collect()
    };
    let alternatives = alternative_settings
        .iter()
        .map(alternative)
        .collect::<Result<Vec<_>, _>>()?;
    let cpus = setting(&args.cpus, Flag::CpusPerNode)
        .map(|s| count(&s, Flag::CpusPerNode, 1))
        .transpose()?
        .unwrap_or(1);
    let nodes = setting(&args.nodes, Flag::Nodes)
        .map(|s| count(&s, Flag::Nodes, 1))
        .transpose()?
        .unwrap_or(1);
    let mem = match setting(&args.mem, Flag::Mem) {
        Some(s) => memory(&s)?,
        None => u64::from(cpus) * DEFAULT_MEM_PER_CPU_MIB,
    };
    let time_limit_ms = match setting(&args.time, Flag::Time) {
        Some(s) => time_limit(&s)?,
        None => 0,
    };
    let deadline_ms = match setting(&args.deadline, Flag::Deadline) {
        Some(s) => gantry_model::units::parse_future_time_ms(s.value, ctx.now_ms)
            .map_err(|e| s.invalid(format!("{}: {e}", Flag::Deadline.label())))?,
        None => 0,
    };
    let text = |cli: &Option<String>, flag: Flag| {
        pick(cli, &directives, &file, flag)
            .map(|s| s.value.to_string())
            .filter(|v| !v.is_empty())
    };
    let constraints = match setting(&args.constraint, Flag::Constraint) {
        Some(s) => constraints(&s)?,
        None => vec![],
    };
    let dependencies = match setting(&args.dependency, Flag::Dependency) {
        Some(s) => parse_dependencies(s.value)
            .map_err(|e| s.invalid(format!("{}: {e}", Flag::Dependency.label())))?
            .iter()
            .map(gantry_wire::dependency_to_pb)
            .collect(),
        None => vec![],
    };
    // Two ways to say the same thing: the command line's wins over a directive, and both at
    // one level is a contradiction.
    let warning = match (
        setting(&args.checkpoint, Flag::Checkpoint),
        setting(&args.signal, Flag::Signal),
    ) {
        (Some(c), Some(s))
            if (c.origin == Origin::CommandLine) == (s.origin == Origin::CommandLine) =>
        {
            return Err(s.invalid(format!(
                "{} and {} both say how the job is warned: give one",
                Flag::Checkpoint.label(),
                Flag::Signal.label()
            )));
        }
        (Some(_), Some(s)) if s.origin == Origin::CommandLine => Some((s, Flag::Signal)),
        (Some(c), _) => Some((c, Flag::Checkpoint)),
        (None, s) => s.map(|s| (s, Flag::Signal)),
    };
    let mut checkpoint = match warning {
        Some((s, flag)) => {
            let parsed = match flag {
                Flag::Signal => Checkpoint::parse_slurm(s.value),
                _ => Checkpoint::parse(s.value),
            };
            Some(parsed.map_err(|e| s.invalid(format!("{}: {e}", flag.label())))?)
        }
        None => None,
    };
    if let Some(s) = setting(&args.checkpoint_interval, Flag::CheckpointInterval) {
        let label = Flag::CheckpointInterval.label();
        let every = parse_duration_ms(s.value)
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                s.invalid(format!(
                    "{label}: expected a duration longer than 0 such as 30m (got {:?})",
                    s.value
                ))
            })?;
        checkpoint
            .get_or_insert_with(Checkpoint::default)
            .interval_ms = Some(every);
    }
    let open_mode = match setting(&args.open_mode, Flag::OpenMode) {
        Some(s) => OpenMode::parse(s.value)
            .map(|m| m.as_str().to_string())
            .ok_or_else(|| {
                s.invalid(format!(
                    "{}: expected append or truncate (got {:?})",
                    Flag::OpenMode.label(),
                    s.value
                ))
            })?,
        None => String::new(),
    };
    let work_dir = match text(&args.chdir, Flag::Chdir) {
        Some(dir) => absolute(&ctx.cwd, Path::new(&dir)),
        None => ctx.cwd.clone(),
    };
    let work_dir_text = utf8(&work_dir, "the working directory")?;
    let output_path = |path: Option<String>| -> Result<String, SubmitError> {
        match path {
            Some(p) => utf8(&absolute(&work_dir, Path::new(&p)), "an output path"),
            None => Ok(String::new()),
        }
    };

    let (program, default_name) = match script {
        Some(s) => {
            let name = Path::new(&s.shown)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| s.shown.clone());
            let kind = pb::program::Kind::Script(pb::Script {
                path: s.absolute,
                body: s.body,
                args: args.program[1..].to_vec(),
            });
            (kind, name)
        }
        None => {
            let name = Path::new(first)
                .file_name()
                .map_or_else(|| first.clone(), |n| n.to_string_lossy().into_owned());
            let kind = pb::program::Kind::Command(pb::CommandLine {
                argv: args.program.clone(),
            });
            (kind, name)
        }
    };

    let spec = pb::JobSpec {
        name: text(&args.name, Flag::JobName).unwrap_or(default_name),
        account: text(&args.account, Flag::Account).unwrap_or_else(|| DEFAULT_ACCOUNT.to_string()),
        num_nodes: nodes,
        gpus_per_node: gpus,
        gpu_model: gpu_model.unwrap_or_default(),
        alternatives,
        qos: text(&args.qos, Flag::Qos).unwrap_or_else(|| "normal".to_string()),
        deadline_ms,
        pool: text(&args.partition, Flag::Partition).unwrap_or_default(),
        constraints,
        dependencies,
        checkpoint: checkpoint.as_ref().map(gantry_wire::checkpoint_to_pb),
        cpus_per_node: cpus,
        mem_per_node_mib: mem,
        time_limit_ms,
        program: Some(pb::Program {
            kind: Some(program),
        }),
        work_dir: work_dir_text,
        stdout_path: output_path(text(&args.output, Flag::Output))?,
        stderr_path: output_path(text(&args.error, Flag::Error))?,
        env: gantry_wire::env_to_pb(&ctx.env),
        reservation: text(&args.reservation, Flag::Reservation).unwrap_or_default(),
        no_requeue: !requeue_on_node_failure(args, &directives),
        requeue_on_timeout: args.requeue_on_timeout
            || directives.last(Flag::RequeueOnTimeout).is_some(),
        open_mode,
    };
    gantry_wire::spec_from_pb(&spec)?.validate()?;
    let parsable = args.parsable || directives.last(Flag::Parsable).is_some();
    Ok(Request { spec, parsable })
}

/// `--requeue` or `--no-requeue` on the command line, else the last of them in the script,
/// else yes.
fn requeue_on_node_failure(args: &SubmitArgs, directives: &Directives) -> bool {
    if args.requeue || args.no_requeue {
        return args.requeue;
    }
    let line = |flag| directives.last(flag).map(|(_, line)| line);
    match (line(Flag::Requeue), line(Flag::NoRequeue)) {
        (Some(yes), Some(no)) => yes > no,
        (_, no) => no.is_none(),
    }
}

struct Script {
    /// As the user typed it, for messages and the default job name.
    shown: String,
    absolute: String,
    body: String,
}

fn read_script(shown: &str, cwd: &Path) -> Result<Script, SubmitError> {
    let path = absolute(cwd, Path::new(shown));
    let metadata = std::fs::metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SubmitError::ScriptNotFound(shown.to_string()),
        _ => SubmitError::ScriptUnreadable {
            path: shown.to_string(),
            reason: io_reason(&e),
        },
    })?;
    if metadata.is_dir() {
        return Err(SubmitError::ScriptIsDirectory(shown.to_string()));
    }
    let unreadable = |e: std::io::Error| SubmitError::ScriptUnreadable {
        path: shown.to_string(),
        reason: io_reason(&e),
    };
    // Bounded, so `/dev/zero` or a data file given by mistake cannot exhaust memory.
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_SCRIPT_BYTES + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(SubmitError::ScriptTooLarge(shown.to_string()));
    }
    let body =
        String::from_utf8(bytes).map_err(|_| SubmitError::ScriptNotUtf8(shown.to_string()))?;
    // sbatch refuses scripts without an interpreter line too: without one the node could
    // not execute the script.
    if !body.is_empty() && !body.starts_with("#!") {
        return Err(SubmitError::NoShebang(shown.to_string()));
    }
    Ok(Script {
        shown: shown.to_string(),
        absolute: utf8(&path, "the script path")?,
        body,
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_string(),
                None => text,
            }
        }
    }
}

/// `path` made absolute against `base`, with `.` segments dropped. `..` stays: resolving it
/// lexically would be wrong across symlinks.
fn absolute(base: &Path, path: &Path) -> PathBuf {
    base.join(path).components().collect()
}

fn utf8(path: &Path, what: &'static str) -> Result<String, SubmitError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| SubmitError::NonUtf8Path {
            what,
            path: path.to_path_buf(),
        })
}

/// A whole number of at least `min`.
/// `-G`: a count, or a count and a model. A plain count keeps the count's own messages.
fn gpu_request(setting: &Setting<'_>) -> Result<(u32, Option<String>), SubmitError> {
    if !setting.value.contains(':') {
        return Ok((count(setting, Flag::GpusPerNode, 0)?, None));
    }
    gantry_model::shape::parse_gpus(setting.value)
        .map_err(|why| setting.invalid(format!("{}: {why}", Flag::GpusPerNode.label())))
}

fn alternative(setting: &Setting<'_>) -> Result<pb::Alternative, SubmitError> {
    gantry_model::shape::parse_alternative(setting.value)
        .map(|alt| gantry_wire::alternative_to_pb(&alt))
        .map_err(|why| {
            setting.invalid(format!(
                "{}: {why} (the form is [NODESx]GPUS[:MODEL][@SPEED], e.g. 2x8:a100@0.6)",
                Flag::Alternative.label()
            ))
        })
}

fn count(setting: &Setting<'_>, flag: Flag, min: u32) -> Result<u32, SubmitError> {
    let text = setting.value.trim();
    let is_number = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u32>() {
        Ok(n) if is_number && n >= min => Ok(n),
        Err(_) if is_number => Err(setting.invalid(format!(
            "{} is too large (got {:?})",
            flag.label(),
            setting.value
        ))),
        _ => Err(setting.invalid(format!(
            "{} must be a whole number of at least {min} (got {:?})",
            flag.label(),
            setting.value
        ))),
    }
}

fn memory(setting: &Setting<'_>) -> Result<u64, SubmitError> {
    let label = Flag::Mem.label();
    match parse_size_mib(setting.value) {
        Ok(0) => Err(setting.invalid(format!(
            "{label}: the memory per node must be more than 0 (got {:?})",
            setting.value
        ))),
        Ok(mib) => Ok(mib),
        Err(e) => Err(setting.invalid(format!("{label}: {e}"))),
    }
}

/// Node labels that must all be present: `ib`, `ib&nvme` (Slurm's AND), `ib,nvme`. Slurm's
/// OR (`|`) and counts (`*`) are refused rather than misread.
fn constraints(setting: &Setting<'_>) -> Result<Vec<String>, SubmitError> {
    let label = Flag::Constraint.label();
    let text = setting.value.trim();
    if text.contains(['|', '*', '[', ']', '(', ')']) {
        return Err(setting.invalid(format!(
            "{label}: only labels that must all be present are supported (ib&nvme), not \
             alternatives or counts (got {text:?})"
        )));
    }
    let labels: Vec<String> = text
        .split(['&', ','])
        .map(str::trim)
        .map(str::to_string)
        .collect();
    if let Some(bad) = labels
        .iter()
        .find(|l| !gantry_model::names::is_plain_name(l))
    {
        return Err(setting.invalid(format!(
            "{label}: {bad:?} is not a label: 1 to 64 letters, digits, '-', '_' or '.' (got {text:?})"
        )));
    }
    Ok(labels)
}

/// The limit in ms, 0 meaning none. Slurm's words for no limit work; a zero duration is
/// refused rather than read as "none", because it is far more often a typo.
fn time_limit(setting: &Setting<'_>) -> Result<u64, SubmitError> {
    let text = setting.value.trim();
    if ["unlimited", "infinite"]
        .iter()
        .any(|w| text.eq_ignore_ascii_case(w))
    {
        return Ok(0);
    }
    let label = Flag::Time.label();
    match parse_duration_ms(text) {
        Ok(0) => Err(setting.invalid(format!(
            "{label}: a time limit must be longer than 0 (got {:?}); for no limit leave it \
             out or give UNLIMITED",
            setting.value
        ))),
        Ok(ms) => Ok(ms),
        Err(e) => Err(setting.invalid(format!("{label}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    fn ctx(dir: &Path) -> Context {
        Context {
            cwd: dir.to_path_buf(),
            env: vec![
                ("HOME".into(), "/home/alice".into()),
                ("LANG".into(), "C".into()),
            ],
            now_ms: 1_800_000_000_000,
        }
    }

    fn command(argv: &[&str]) -> SubmitArgs {
        SubmitArgs {
            program: argv.iter().map(|s| s.to_string()).collect(),
            is_command: true,
            ..Default::default()
        }
    }

    /// Parses as `gantry submit ARGV...` does, including the `--` detection.
    fn parse_args(argv: &[&str]) -> Result<SubmitArgs, clap::Error> {
        let cmd = SubmitArgs::augment_args(Command::new("submit").no_binary_name(true));
        let matches = cmd.try_get_matches_from(argv)?;
        let mut args = <SubmitArgs as clap::FromArgMatches>::from_arg_matches(&matches)?;
        args.is_command = after_double_dash(argv, &args.program);
        Ok(args)
    }

    fn error(args: &SubmitArgs, dir: &Path) -> String {
        build_request(args, &ctx(dir)).unwrap_err().to_string()
    }

    /// A bad `--deadline` suggested `now-7d`: a deadline in the past, refused as soon as given.
    #[test]
    fn a_bad_deadline_suggests_times_to_come() {
        let dir = tempfile::tempdir().unwrap();
        let err = error(
            &SubmitArgs {
                deadline: Some("soon".into()),
                ..command(&["true"])
            },
            dir.path(),
        );
        assert!(err.contains("--deadline: invalid time \"soon\""), "{err}");
        assert!(err.contains("now+6h"), "{err}");
        assert!(!err.contains("now-"), "{err}");
    }

    #[test]
    fn defaults_for_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let request =
            build_request(&command(&["/usr/bin/python3", "-c", "1"]), &ctx(dir.path())).unwrap();
        let spec = request.spec;
        assert_eq!(spec.name, "python3");
        assert_eq!(spec.account, "default");
        assert_eq!(
            (
                spec.num_nodes,
                spec.gpus_per_node,
                spec.cpus_per_node,
                spec.mem_per_node_mib
            ),
            (1, 0, 1, 256)
        );
        assert_eq!(spec.time_limit_ms, 0);
        assert_eq!(spec.work_dir, dir.path().to_str().unwrap());
        assert_eq!(
            (spec.stdout_path.as_str(), spec.stderr_path.as_str()),
            ("", "")
        );
        assert_eq!(spec.env.len(), 2);
        assert_eq!(
            spec.env[0],
            pb::EnvVar {
                name: "HOME".into(),
                value: "/home/alice".into()
            }
        );
        match spec.program.unwrap().kind.unwrap() {
            pb::program::Kind::Command(c) => assert_eq!(c.argv, ["/usr/bin/python3", "-c", "1"]),
            other => panic!("{other:?}"),
        }
        assert!(!request.parsable);
    }

    #[test]
    fn memory_defaults_to_256m_per_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let args = SubmitArgs {
            cpus: Some("8".into()),
            ..command(&["true"])
        };
        assert_eq!(
            build_request(&args, &ctx(dir.path()))
                .unwrap()
                .spec
                .mem_per_node_mib,
            2048
        );
    }

    #[test]
    fn flags_are_parsed_and_paths_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let args = parse_args(&[
            "-J",
            "big",
            "-G",
            "4",
            "-c",
            "16",
            "--mem",
            "64G",
            "-N",
            "2",
            "-t",
            "2h30m",
            "-A",
            "research",
            "-o",
            "logs/%j.out",
            "-e",
            "/tmp/err-%j",
            "-D",
            "sub/./dir",
            "--parsable",
            "--",
            "train",
            "--lr",
            "3",
        ])
        .unwrap();
        let request = build_request(&args, &ctx(dir.path())).unwrap();
        let spec = request.spec;
        let work_dir = dir.path().join("sub/dir");
        assert_eq!(spec.name, "big");
        assert_eq!(spec.account, "research");
        assert_eq!(
            (
                spec.num_nodes,
                spec.gpus_per_node,
                spec.cpus_per_node,
                spec.mem_per_node_mib
            ),
            (2, 4, 16, 65_536)
        );
        assert_eq!(spec.time_limit_ms, 9_000_000);
        assert_eq!(spec.work_dir, work_dir.to_str().unwrap());
        assert_eq!(
            spec.stdout_path,
            work_dir.join("logs/%j.out").to_str().unwrap()
        );
        assert_eq!(spec.stderr_path, "/tmp/err-%j");
        assert!(request.parsable);
        match spec.program.unwrap().kind.unwrap() {
            pb::program::Kind::Command(c) => assert_eq!(c.argv, ["train", "--lr", "3"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_script_carries_its_text_arguments_and_directives() {
        let dir = tempfile::tempdir().unwrap();
        let body = "#!/bin/bash\n#SBATCH -G 2 --time=1:00:00\n#GANTRY -c 4\n#GANTRY -J from-file\necho hi\n";
        std::fs::write(dir.path().join("run.sh"), body).unwrap();
        let args = parse_args(&["-c", "6", "run.sh", "--epochs", "3", "-x"]).unwrap();
        let spec = build_request(&args, &ctx(dir.path())).unwrap().spec;
        // The command line wins over the directive; the other directives apply.
        assert_eq!(spec.cpus_per_node, 6);
        assert_eq!(spec.gpus_per_node, 2);
        assert_eq!(spec.time_limit_ms, 3_600_000);
        assert_eq!(spec.name, "from-file");
        match spec.program.unwrap().kind.unwrap() {
            pb::program::Kind::Script(s) => {
                assert_eq!(s.path, dir.path().join("run.sh").to_str().unwrap());
                assert_eq!(s.body, body);
                assert_eq!(s.args, ["--epochs", "3", "-x"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gpu_models_and_alternatives_come_from_flags_or_directives() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |argv: &[&str]| build_request(&parse_args(argv).unwrap(), &ctx(dir.path()));
        let s = spec(&["-G", "8:h100", "--", "true"]).unwrap().spec;
        assert_eq!((s.gpus_per_node, s.gpu_model.as_str()), (8, "h100"));
        // Slurm's order, as in `#SBATCH --gpus-per-node=h100:8`.
        let s = spec(&["-G", "h100:8", "--", "true"]).unwrap().spec;
        assert_eq!((s.gpus_per_node, s.gpu_model.as_str()), (8, "h100"));
        let s = spec(&[
            "-G",
            "8:h100",
            "--alt",
            "2x8:a100@0.6",
            "--alt",
            "16@0.5",
            "--",
            "true",
        ])
        .unwrap()
        .spec;
        let alts: Vec<_> = s
            .alternatives
            .iter()
            .map(gantry_wire::alternative_from_pb)
            .collect();
        let shown: Vec<String> = alts
            .iter()
            .map(gantry_model::shape::format_alternative)
            .collect();
        assert_eq!(shown, ["2x8:a100@0.6", "1x16@0.5"]);

        let body = "#!/bin/sh\n#SBATCH --gpus-per-node=h100:4\n#GANTRY --alt 2x4:a100@0.5\ntrue\n";
        std::fs::write(dir.path().join("alt.sh"), body).unwrap();
        let s = spec(&["alt.sh"]).unwrap().spec;
        assert_eq!((s.gpus_per_node, s.gpu_model.as_str()), (4, "h100"));
        assert_eq!(s.alternatives.len(), 1);
        assert_eq!(s.alternatives[0].speed_permille, 500);
        // The command line's alternatives replace the script's.
        let s = spec(&["--alt", "8", "alt.sh"]).unwrap().spec;
        assert_eq!(s.alternatives[0].gpus_per_node, 8);

        let err = |argv: &[&str]| spec(argv).unwrap_err().to_string();
        assert_eq!(
            err(&["-G", "8:", "--", "true"]),
            "-G/--gpus-per-node: a GPU model name must not be empty"
        );
        assert!(err(&["--alt", "0x8", "--", "true"]).starts_with("--alt: the node count \"0\""));
        let too_many: Vec<&str> = std::iter::repeat_n(["--alt", "1"], 9).flatten().collect();
        let argv: Vec<&str> = too_many.into_iter().chain(["--", "true"]).collect();
        assert_eq!(err(&argv), "a job may name at most 8 alternatives (got 9)");
        let body = "#!/bin/sh\n#GANTRY --alt 2x8@2000\ntrue\n";
        std::fs::write(dir.path().join("fast.sh"), body).unwrap();
        assert!(
            err(&["fast.sh"]).contains("fast.sh:2: --alt: a speed is a factor"),
            "{}",
            err(&["fast.sh"])
        );
    }

    #[test]
    fn the_default_name_of_a_script_is_its_file_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        std::fs::write(dir.path().join("jobs/prep.sh"), "#!/bin/sh\ntrue\n").unwrap();
        let args = SubmitArgs {
            program: vec!["jobs/prep.sh".into()],
            ..Default::default()
        };
        assert_eq!(
            build_request(&args, &ctx(dir.path())).unwrap().spec.name,
            "prep.sh"
        );
    }

    #[test]
    fn bad_numbers_say_which_flag_and_what_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let err = |args: &[&str]| {
            let mut argv = args.to_vec();
            argv.extend(["--", "true"]);
            error(&parse_args(&argv).unwrap(), dir.path())
        };
        assert_eq!(
            err(&["-c", "-1"]),
            "-c/--cpus-per-node must be a whole number of at least 1 (got \"-1\")"
        );
        assert_eq!(
            err(&["-c", "0"]),
            "-c/--cpus-per-node must be a whole number of at least 1 (got \"0\")"
        );
        assert_eq!(
            err(&["-N", "0"]),
            "-N/--nodes must be a whole number of at least 1 (got \"0\")"
        );
        assert_eq!(
            err(&["-N", "two"]),
            "-N/--nodes must be a whole number of at least 1 (got \"two\")"
        );
        assert_eq!(
            err(&["-G", "-2"]),
            "-G/--gpus-per-node must be a whole number of at least 0 (got \"-2\")"
        );
        assert_eq!(
            err(&["-G", "1.5"]),
            "-G/--gpus-per-node must be a whole number of at least 0 (got \"1.5\")"
        );
        assert_eq!(
            err(&["-c", "99999999999"]),
            "-c/--cpus-per-node is too large (got \"99999999999\")"
        );
        assert_eq!(
            err(&["--mem", "0"]),
            "--mem: the memory per node must be more than 0 (got \"0\")"
        );
        assert!(err(&["--mem", "-1G"]).starts_with("--mem: invalid size \"-1G\""));
        assert!(err(&["--mem", "lots"]).starts_with("--mem: invalid size \"lots\""));
        assert!(err(&["-t", "5x"]).starts_with("-t/--time: invalid duration \"5x\""));
        assert!(err(&["-t", "-5"]).starts_with("-t/--time: invalid duration \"-5\""));
        // Zero GPUs is a CPU-only job, and the model's own limits still apply.
        assert_eq!(
            err(&["-G", "5000"]),
            "GPUs per node 5000 is more than the most Gantry accepts (1024)"
        );
    }

    #[test]
    fn unlimited_means_no_limit_and_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let limit = |text: &str| {
            let args = SubmitArgs {
                time: Some(text.into()),
                ..command(&["true"])
            };
            build_request(&args, &ctx(dir.path())).map(|r| r.spec.time_limit_ms)
        };
        assert_eq!(limit("UNLIMITED").unwrap(), 0);
        assert_eq!(limit("infinite").unwrap(), 0);
        assert_eq!(limit("1-00:00:00").unwrap(), 86_400_000);
        assert_eq!(limit("30s").unwrap(), 30_000);
        for zero in ["0", "0s", "00:00"] {
            let err = limit(zero).unwrap_err().to_string();
            assert!(
                err.starts_with("-t/--time: a time limit must be longer than 0"),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_directive_values_point_at_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("job.sh"),
            "#!/bin/sh\n\n#GANTRY --mem=0\ntrue\n",
        )
        .unwrap();
        let args = SubmitArgs {
            program: vec!["job.sh".into()],
            ..Default::default()
        };
        assert_eq!(
            error(&args, dir.path()),
            "job.sh:3: --mem: the memory per node must be more than 0 (got \"0\")"
        );
        // The command line overrides the bad directive, so nothing is wrong any more.
        let args = SubmitArgs {
            mem: Some("1G".into()),
            ..args
        };
        assert_eq!(
            build_request(&args, &ctx(dir.path()))
                .unwrap()
                .spec
                .mem_per_node_mib,
            1024
        );

        std::fs::write(
            dir.path().join("slurm.sh"),
            "#!/bin/sh\n#SBATCH --partition=gpu\n#SBATCH -C ib&nvme\n#SBATCH --gres=gpu:2\ntrue\n",
        )
        .unwrap();
        let args = SubmitArgs {
            program: vec!["slurm.sh".into()],
            ..Default::default()
        };
        assert!(error(&args, dir.path()).starts_with("slurm.sh:4: unknown option \"--gres\""));
    }

    #[test]
    fn pools_and_constraints_from_flags_and_directives() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("job.sh"),
            "#!/bin/sh\n#SBATCH --partition=gpu\n#SBATCH -C ib&nvme\ntrue\n",
        )
        .unwrap();
        let script = SubmitArgs {
            program: vec!["job.sh".into()],
            ..Default::default()
        };
        let spec = build_request(&script, &ctx(dir.path())).unwrap().spec;
        assert_eq!(
            (spec.pool.as_str(), spec.constraints),
            ("gpu", vec!["ib".into(), "nvme".into()])
        );
        let flags = SubmitArgs {
            partition: Some("debug".into()),
            constraint: Some("ib,a100".into()),
            ..script.clone()
        };
        let spec = build_request(&flags, &ctx(dir.path())).unwrap().spec;
        assert_eq!(
            (spec.pool.as_str(), spec.constraints),
            ("debug", vec!["ib".into(), "a100".into()])
        );
        let or = SubmitArgs {
            constraint: Some("ib|nvme".into()),
            ..script.clone()
        };
        assert!(error(&or, dir.path()).contains("only labels that must all be present"));
        let bad = SubmitArgs {
            partition: Some("gpu pool".into()),
            ..script
        };
        assert!(error(&bad, dir.path()).contains("pool \"gpu pool\" is not a name"));
        let default = build_request(&command(&["true"]), &ctx(dir.path()))
            .unwrap()
            .spec;
        assert_eq!((default.pool.as_str(), default.constraints.len()), ("", 0));
    }

    #[test]
    fn checkpoint_contracts_from_flags_and_directives() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("job.sh"),
            "#!/bin/sh\n#SBATCH --checkpoint=USR2@5m\ntrue\n",
        )
        .unwrap();
        let script = SubmitArgs {
            program: vec!["job.sh".into()],
            ..Default::default()
        };
        let contract = |args: &SubmitArgs| {
            build_request(args, &ctx(dir.path()))
                .unwrap()
                .spec
                .checkpoint
                .map(|c| (c.signal, c.lead_ms, c.interval_ms))
        };
        assert_eq!(contract(&script), Some(("SIGUSR2".into(), 300_000, 0)));
        // An interval alone brings the default signal and lead.
        let interval = SubmitArgs {
            checkpoint_interval: Some("30m".into()),
            ..command(&["true"])
        };
        assert_eq!(
            contract(&interval),
            Some(("SIGUSR1".into(), 120_000, 1_800_000))
        );
        assert_eq!(contract(&command(&["true"])), None);
        for (args, needle) in [
            (
                SubmitArgs {
                    checkpoint: Some("SIGKILL@1m".into()),
                    ..command(&["true"])
                },
                "--checkpoint: checkpoint signal \"SIGKILL\" is not one of",
            ),
            (
                SubmitArgs {
                    checkpoint_interval: Some("0s".into()),
                    ..command(&["true"])
                },
                "--checkpoint-interval: expected a duration longer than 0",
            ),
            (
                SubmitArgs {
                    checkpoint: Some("USR1@60s".into()),
                    signal: Some("B:USR1@60".into()),
                    ..command(&["true"])
                },
                "--checkpoint and --signal both say how the job is warned",
            ),
            (
                SubmitArgs {
                    signal: Some("R:USR1@60".into()),
                    ..command(&["true"])
                },
                "--signal: --signal R: (a reservation's overlap) is not supported",
            ),
        ] {
            let err = error(&args, dir.path());
            assert!(err.contains(needle), "{err}");
        }
    }

    /// `#SBATCH --signal=B:USR1@90` as Slurm means it; the command line's `--checkpoint` wins
    /// over it.
    #[test]
    fn slurm_signal_directives_and_who_gets_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("job.sh"),
            "#!/bin/sh\n#SBATCH --signal=B:USR1@90\ntrue\n",
        )
        .unwrap();
        let contract = |args: &SubmitArgs| {
            build_request(args, &ctx(dir.path()))
                .unwrap()
                .spec
                .checkpoint
                .map(|c| (c.signal, c.lead_ms, c.whole_job))
        };
        let script = SubmitArgs {
            program: vec!["job.sh".into()],
            ..Default::default()
        };
        assert_eq!(contract(&script), Some(("SIGUSR1".into(), 90_000, false)));
        let over = SubmitArgs {
            checkpoint: Some("job:USR2@30".into()),
            ..script.clone()
        };
        assert_eq!(contract(&over), Some(("SIGUSR2".into(), 30_000, true)));
        let slurm = SubmitArgs {
            signal: Some("USR1".into()),
            ..command(&["true"])
        };
        assert_eq!(contract(&slurm), Some(("SIGUSR1".into(), 60_000, true)));
    }

    /// Node failures requeue unless `--no-requeue`; the command line beats the script, and
    /// the script's last line of the two wins.
    #[test]
    fn requeue_choices_from_flags_and_directives() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, lines: &str| {
            std::fs::write(dir.path().join(name), format!("#!/bin/sh\n{lines}true\n")).unwrap();
            SubmitArgs {
                program: vec![name.into()],
                ..Default::default()
            }
        };
        let requeue = |args: &SubmitArgs| {
            let spec = build_request(args, &ctx(dir.path())).unwrap().spec;
            (!spec.no_requeue, spec.requeue_on_timeout)
        };
        assert_eq!(requeue(&command(&["true"])), (true, false));
        let no = write(
            "no.sh",
            "#SBATCH --no-requeue\n#SBATCH --requeue-on-timeout\n",
        );
        assert_eq!(requeue(&no), (false, true));
        let flip = write("flip.sh", "#SBATCH --no-requeue\n#SBATCH --requeue\n");
        assert_eq!(requeue(&flip), (true, false));
        let flag_wins = SubmitArgs {
            requeue: true,
            ..no.clone()
        };
        assert_eq!(requeue(&flag_wins), (true, true));
        let flags = SubmitArgs {
            no_requeue: true,
            requeue_on_timeout: true,
            ..command(&["true"])
        };
        assert_eq!(requeue(&flags), (false, true));
        let valued = write("valued.sh", "#SBATCH --no-requeue=yes\n");
        assert!(error(&valued, dir.path()).contains("--no-requeue takes no value"));
    }

    #[test]
    fn script_problems_are_reported_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str| SubmitArgs {
            program: vec![name.into()],
            ..Default::default()
        };
        assert_eq!(
            error(&script("x.sh"), dir.path()),
            "script \"x.sh\" not found"
        );
        assert_eq!(
            error(&script("."), dir.path()),
            "script \".\" is a directory"
        );
        std::fs::write(dir.path().join("bin.sh"), [0xff, 0xfe, 0x00]).unwrap();
        assert!(error(&script("bin.sh"), dir.path()).starts_with("script \"bin.sh\" is not UTF-8"));
        let big = format!("#!/bin/sh\n{}", "#".repeat(MAX_SCRIPT_BYTES as usize));
        std::fs::write(dir.path().join("big.sh"), big).unwrap();
        assert!(
            error(&script("big.sh"), dir.path())
                .starts_with("script \"big.sh\" is larger than 1024 KiB")
        );
        assert!(error(&script("/dev/zero"), dir.path()).contains("is larger than"));
        std::fs::write(dir.path().join("plain.sh"), "echo hi\n").unwrap();
        assert!(error(&script("plain.sh"), dir.path()).contains("does not start with #!"));
        std::fs::write(dir.path().join("empty.sh"), "").unwrap();
        assert_eq!(
            error(&script("empty.sh"), dir.path()),
            format!(
                "the script {:?} is empty",
                dir.path().join("empty.sh").to_str().unwrap()
            )
        );
    }

    #[test]
    fn an_unreadable_script_says_so() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.sh");
        std::fs::write(&path, "#!/bin/sh\ntrue\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read(&path).is_ok() {
            // Running as root: permissions do not stop reading, nothing to check here.
            return;
        }
        let args = SubmitArgs {
            program: vec!["secret.sh".into()],
            ..Default::default()
        };
        assert_eq!(
            error(&args, dir.path()),
            "cannot read script \"secret.sh\": permission denied"
        );
    }

    #[test]
    fn a_program_is_required() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            error(&SubmitArgs::default(), dir.path()),
            SubmitError::NothingToRun.to_string()
        );
        assert_eq!(
            error(&parse_args(&["-c", "2", "--"]).unwrap(), dir.path()),
            SubmitError::NothingToRun.to_string()
        );
    }

    #[test]
    fn everything_after_the_script_or_double_dash_belongs_to_the_job() {
        let parsed = |argv: &[&str]| {
            let args = parse_args(argv).unwrap();
            (args.program, args.is_command, args.cpus)
        };
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parsed(&["-c", "2", "a.sh", "-c", "3"]),
            (words(&["a.sh", "-c", "3"]), false, Some("2".into()))
        );
        assert_eq!(
            parsed(&["a.sh", "--", "x"]),
            (words(&["a.sh", "--", "x"]), false, None)
        );
        assert_eq!(
            parsed(&["--", "python", "-c", "1"]),
            (words(&["python", "-c", "1"]), true, None)
        );
        assert_eq!(
            parsed(&["-c", "2", "--", "--", "x"]),
            (words(&["--", "x"]), true, Some("2".into()))
        );
        // A script named like the word before it is still a script.
        assert_eq!(
            parsed(&["-J", "a.sh", "a.sh"]),
            (words(&["a.sh"]), false, None)
        );
    }

    #[test]
    fn script_and_command_forms_build_different_programs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.sh"), "#!/bin/sh\ntrue\n").unwrap();
        let kind = |argv: &[&str]| {
            build_request(&parse_args(argv).unwrap(), &ctx(dir.path()))
                .unwrap()
                .spec
                .program
                .unwrap()
                .kind
                .unwrap()
        };
        assert!(
            matches!(kind(&["a.sh", "--", "x"]), pb::program::Kind::Script(s) if s.args == ["--", "x"])
        );
        assert!(
            matches!(kind(&["--", "a.sh"]), pb::program::Kind::Command(c) if c.argv == ["a.sh"])
        );
    }

    #[test]
    fn clap_options_match_the_directive_table() {
        let cmd = SubmitArgs::augment_args(Command::new("submit"));
        for flag in Flag::ALL {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(flag.long()))
                .unwrap_or_else(|| panic!("no --{} in clap", flag.long()));
            assert_eq!(arg.get_short(), flag.short(), "{flag:?}");
            let aliases: Vec<&str> = arg.get_all_aliases().unwrap_or_default();
            assert_eq!(aliases, flag.aliases(), "{flag:?}");
        }
    }

    #[tokio::test]
    async fn a_submit_carries_the_spec_and_the_callers_identity() {
        use crate::fake_scheduler::{Fake, serve};
        let fake = std::sync::Arc::new(Fake::default());
        let server = serve(fake.clone());
        let mut scheduler = Scheduler::new(vec![server.address.clone()]);
        let dir = tempfile::tempdir().unwrap();
        let spec = build_request(&command(&["true"]), &ctx(dir.path()))
            .unwrap()
            .spec;
        assert_eq!(send(spec.clone(), &mut scheduler).await.unwrap(), 42);
        let submits = fake.submits.lock().unwrap().clone();
        assert_eq!(submits.len(), 1);
        assert_eq!(submits[0].spec.as_ref(), Some(&spec));
        let who = submits[0].caller.clone().unwrap();
        assert_eq!(who.uid, nix::unistd::getuid().as_raw());
        assert_eq!(who.gid, nix::unistd::getgid().as_raw());
    }
}
