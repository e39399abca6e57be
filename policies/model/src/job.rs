//! What a job asks for, and the states it goes through.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::Checkpoint;
use crate::dependency::{Dependency, MAX_DEPENDENCIES};
use crate::names::is_plain_name;
use crate::node::Resources;
use crate::shape::{
    Alternative, MAX_ALTERNATIVES, MAX_SPEED, MIN_SPEED, Shape, check_model_name, format_speed,
    scaled_limit,
};

pub type JobId = u64;

/// Who submitted a job. Until authentication lands this is the client's OS identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Owner {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Program {
    /// A script whose text travels with the job; `path` is where it was read from.
    Script {
        path: String,
        body: String,
        args: Vec<String>,
    },
    /// A command line, run without a shell.
    Command { argv: Vec<String> },
}

impl Program {
    /// The command line for display: argv, or the script path and its arguments.
    pub fn display_argv(&self) -> Vec<String> {
        match self {
            Program::Script { path, args, .. } => std::iter::once(path.clone())
                .chain(args.iter().cloned())
                .collect(),
            Program::Command { argv } => argv.clone(),
        }
    }
}

/// A job as submitted. Every amount is per node: a job of `num_nodes` nodes gets
/// `gpus_per_node` GPUs (and CPUs, memory) on each of them, all at once or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub account: String,
    pub num_nodes: u32,
    pub gpus_per_node: u32,
    /// Only GPUs of this model (`-G 8:h100`); any model when `None`.
    pub gpu_model: Option<String>,
    /// Other ways to run it, at a relative speed; the solver picks the one that would finish
    /// first. CPUs and memory per node are the same in every one.
    pub alternatives: Vec<Alternative>,
    pub cpus_per_node: u32,
    pub mem_per_node_mib: u64,
    /// At the main request's speed; alternatives stretch it by their speed.
    pub time_limit_ms: Option<u64>,
    /// The QoS level (`--qos`): its priority factor and preemption rights.
    pub qos: String,
    /// When it must have ended, wall clock (`--deadline`).
    pub deadline_ms: Option<u64>,
    /// The node pool it runs in (`-p`); `None`: the scheduler's default pool, filled in when
    /// the job is accepted.
    pub pool: Option<String>,
    /// Labels every node it runs on must carry (`-C`, `--constraint`).
    pub constraints: Vec<String>,
    /// Jobs that must have ended, as each says, before it may start (`-d`).
    pub dependencies: Vec<Dependency>,
    /// How it is warned before a stop so it can checkpoint (`--checkpoint`); `None`: it is
    /// not, and a preempted run starts over.
    pub checkpoint: Option<Checkpoint>,
    /// When an ended run goes back to the queue instead of ending the job.
    pub requeue: RequeuePolicy,
    /// The advance reservation it runs in (`--reservation`): only on its nodes, in its window.
    pub reservation: Option<String>,
    pub program: Program,
    pub work_dir: String,
    /// Output path templates (`%j` the job id, `%x` its name, `%r` the run; `%n`, `%N` per
    /// node); `None` means `gantry-%j.out`.
    pub stdout_path: Option<String>,
    pub stderr_path: Option<String>,
    /// How each run opens them (`--open-mode`); `None`: the first run truncates, later runs
    /// append, so a requeued run keeps its earlier runs' lines.
    pub open_mode: Option<OpenMode>,
    /// The environment the job starts with (the submitter's, by default), in submit order.
    pub env: Vec<(String, String)>,
}

/// How a run opens its output files (`--open-mode`, as Slurm's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpenMode {
    Append,
    Truncate,
}

impl OpenMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OpenMode::Append => "append",
            OpenMode::Truncate => "truncate",
        }
    }

    pub fn parse(text: &str) -> Option<OpenMode> {
        [OpenMode::Append, OpenMode::Truncate]
            .into_iter()
            .find(|m| m.as_str() == text.trim().to_ascii_lowercase())
    }
}

/// When the scheduler runs a job again, as its next run, instead of ending it. Preemptions
/// and `gantry requeue` always requeue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequeuePolicy {
    /// Its node failed under it (`--no-requeue` turns this off): the job ends NODE_FAIL instead.
    pub on_node_failure: bool,
    /// It reached its time limit (`--requeue-on-timeout`); otherwise it ends TIMEOUT.
    pub on_timeout: bool,
}

impl Default for RequeuePolicy {
    fn default() -> Self {
        RequeuePolicy {
            on_node_failure: true,
            on_timeout: false,
        }
    }
}

/// The largest amounts one request may name; beyond these a request is a typo, not a job.
pub const MAX_NODES: u32 = 4096;
pub const MAX_GPUS_PER_NODE: u32 = 1024;
pub const MAX_CPUS_PER_NODE: u32 = 1 << 20;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("the number of nodes must be at least 1 (got {0})")]
    ZeroNodes(u32),
    #[error("the number of CPUs per node must be at least 1 (got {0})")]
    ZeroCpus(u32),
    #[error("the memory per node must be more than 0")]
    ZeroMemory,
    #[error("a time limit must be longer than 0")]
    ZeroTimeLimit,
    #[error("{what} {value} is more than the most Gantry accepts ({max})")]
    TooLarge {
        what: &'static str,
        value: u64,
        max: u64,
    },
    #[error("nothing to run: give a script or `-- COMMAND ARGS...`")]
    NoProgram,
    #[error("the script {0:?} is empty")]
    EmptyScript(String),
    #[error("the working directory must be an absolute path (got {0:?})")]
    RelativeWorkDir(String),
    #[error("{0} must not contain a NUL byte")]
    NulByte(&'static str),
    #[error("environment variable name {0:?} is invalid")]
    BadEnvName(String),
    #[error("{0}")]
    BadGpuModel(String),
    #[error("alternative {index}: {why}")]
    BadAlternative { index: usize, why: String },
    #[error("a job may name at most {MAX_ALTERNATIVES} alternatives (got {0})")]
    TooManyAlternatives(usize),
    #[error("{what} {name:?} is not a name: 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName { what: &'static str, name: String },
    #[error("a job may require at most {MAX_CONSTRAINTS} node labels (got {0})")]
    TooManyConstraints(usize),
    #[error("a job may name at most {MAX_DEPENDENCIES} dependencies (got {0})")]
    TooManyDependencies(usize),
    #[error("dependency: {0}")]
    BadDependency(String),
    #[error("{0}")]
    BadCheckpoint(String),
    #[error("open mode {0:?} is not append or truncate")]
    BadOpenMode(String),
}

/// More required labels than this is a script gone wrong, not a request.
pub const MAX_CONSTRAINTS: usize = 16;

impl JobSpec {
    /// Resources the job holds on each of its nodes.
    pub fn per_node(&self) -> Resources {
        Resources {
            gpus: self.gpus_per_node,
            cpus: self.cpus_per_node,
            mem_mib: self.mem_per_node_mib,
        }
    }

    /// The main request as a shape: alternative 0.
    pub fn main_shape(&self) -> Shape {
        Shape {
            num_nodes: self.num_nodes,
            per_node: self.per_node(),
            gpu_model: self.gpu_model.clone(),
            time_limit_ms: self.time_limit_ms,
            pool: self.pool.clone(),
            labels: self.constraints.clone(),
        }
    }

    /// Every way the job can run: the main request first, then the alternatives in the
    /// order given.
    pub fn shapes(&self) -> Vec<Shape> {
        std::iter::once(self.main_shape())
            .chain(self.alternatives.iter().map(|alt| Shape {
                num_nodes: alt.num_nodes,
                per_node: Resources {
                    gpus: alt.gpus_per_node,
                    ..self.per_node()
                },
                gpu_model: alt.gpu_model.clone(),
                time_limit_ms: self.time_limit_ms.map(|l| scaled_limit(l, alt.speed)),
                pool: self.pool.clone(),
                labels: self.constraints.clone(),
            }))
            .collect()
    }

    /// The time limit in shape `index` (0: the main request's own).
    pub fn time_limit_for(&self, index: u32) -> Option<u64> {
        let limit = self.time_limit_ms?;
        match index.checked_sub(1) {
            None => Some(limit),
            Some(alt) => self
                .alternatives
                .get(usize::try_from(alt).ok()?)
                .map(|alt| scaled_limit(limit, alt.speed)),
        }
    }

    /// Shape `index` (0: the main request); `None` when the job has no such alternative.
    pub fn shape(&self, index: u32) -> Option<Shape> {
        self.shapes().into_iter().nth(usize::try_from(index).ok()?)
    }

    /// Run `attempt`'s stdout and stderr paths: absolute, with `%j` replaced by the job id,
    /// `%x` by its name and `%r` by the run (`GANTRY_RESTART_COUNT`). Both default to
    /// `gantry-<id>.out` in the working directory; stderr defaults to stdout's.
    pub fn output_paths(&self, id: JobId, attempt: u32) -> (String, String) {
        let resolve = |template: &str| {
            let path = template
                .replace("%j", &id.to_string())
                .replace("%x", &self.name)
                .replace("%r", &attempt.to_string());
            if path.starts_with('/') {
                path
            } else {
                format!("{}/{path}", self.work_dir.trim_end_matches('/'))
            }
        };
        let stdout = resolve(self.stdout_path.as_deref().unwrap_or("gantry-%j.out"));
        let stderr = self
            .stderr_path
            .as_deref()
            .map_or_else(|| stdout.clone(), resolve);
        (stdout, stderr)
    }

    /// Whether run `attempt` on `nodes` nodes appends to its output files: a later run by
    /// default, and every node of a job of several (they share the files, and no rank may
    /// truncate another's lines).
    pub fn appends_output(&self, attempt: u32, nodes: usize) -> bool {
        nodes > 1
            || match self.open_mode {
                Some(OpenMode::Append) => true,
                Some(OpenMode::Truncate) => false,
                None => attempt > 0,
            }
    }

    /// Checks everything that can be checked without knowing the cluster.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.num_nodes == 0 {
            return Err(SpecError::ZeroNodes(self.num_nodes));
        }
        if self.cpus_per_node == 0 {
            return Err(SpecError::ZeroCpus(self.cpus_per_node));
        }
        if self.mem_per_node_mib == 0 {
            return Err(SpecError::ZeroMemory);
        }
        if self.time_limit_ms == Some(0) {
            return Err(SpecError::ZeroTimeLimit);
        }
        let limits = [
            (
                "the number of nodes",
                u64::from(self.num_nodes),
                u64::from(MAX_NODES),
            ),
            (
                "GPUs per node",
                u64::from(self.gpus_per_node),
                u64::from(MAX_GPUS_PER_NODE),
            ),
            (
                "CPUs per node",
                u64::from(self.cpus_per_node),
                u64::from(MAX_CPUS_PER_NODE),
            ),
        ];
        for (what, value, max) in limits {
            if value > max {
                return Err(SpecError::TooLarge { what, value, max });
            }
        }
        if let Some(model) = &self.gpu_model {
            check_model_name(model).map_err(SpecError::BadGpuModel)?;
        }
        if self.alternatives.len() > MAX_ALTERNATIVES {
            return Err(SpecError::TooManyAlternatives(self.alternatives.len()));
        }
        for (i, alt) in self.alternatives.iter().enumerate() {
            check_alternative(alt)
                .map_err(|why| SpecError::BadAlternative { index: i + 1, why })?;
        }
        if self.dependencies.len() > MAX_DEPENDENCIES {
            return Err(SpecError::TooManyDependencies(self.dependencies.len()));
        }
        if let Some(zero) = self.dependencies.iter().find(|d| d.job == 0) {
            return Err(SpecError::BadDependency(format!(
                "{zero}: 0 is not a job id"
            )));
        }
        if let Some(checkpoint) = &self.checkpoint {
            checkpoint.check().map_err(SpecError::BadCheckpoint)?;
            // The shortest limit among the ways it may run: an alternative's is scaled.
            if let Some(limit) = self.shapes().iter().filter_map(|s| s.time_limit_ms).min() {
                checkpoint
                    .check_against_limit(limit)
                    .map_err(SpecError::BadCheckpoint)?;
            }
        }
        if self.constraints.len() > MAX_CONSTRAINTS {
            return Err(SpecError::TooManyConstraints(self.constraints.len()));
        }
        let names = self.pool.iter().map(|p| ("pool", p));
        let names = names.chain(self.reservation.iter().map(|r| ("reservation", r)));
        let names = names.chain(self.constraints.iter().map(|c| ("node label", c)));
        for (what, name) in names {
            if !is_plain_name(name) {
                return Err(SpecError::BadName {
                    what,
                    name: name.clone(),
                });
            }
        }
        match &self.program {
            Program::Command { argv } if argv.is_empty() || argv[0].is_empty() => {
                return Err(SpecError::NoProgram);
            }
            Program::Script { path, body, .. } if body.trim().is_empty() => {
                return Err(SpecError::EmptyScript(path.clone()));
            }
            _ => {}
        }
        if !self.work_dir.starts_with('/') {
            return Err(SpecError::RelativeWorkDir(self.work_dir.clone()));
        }
        let texts = self
            .program
            .display_argv()
            .into_iter()
            .chain([self.work_dir.clone(), self.name.clone()])
            .chain(self.stdout_path.clone())
            .chain(self.stderr_path.clone());
        for text in texts {
            if text.contains('\0') {
                return Err(SpecError::NulByte("the job's command, paths and name"));
            }
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(SpecError::BadEnvName(name.clone()));
            }
            if value.contains('\0') {
                return Err(SpecError::NulByte("environment values"));
            }
        }
        Ok(())
    }
}

fn check_alternative(alt: &Alternative) -> Result<(), String> {
    if alt.num_nodes == 0 {
        return Err("the number of nodes must be at least 1".into());
    }
    if alt.num_nodes > MAX_NODES {
        return Err(format!("{} nodes is more than {MAX_NODES}", alt.num_nodes));
    }
    if alt.gpus_per_node > MAX_GPUS_PER_NODE {
        return Err(format!(
            "{} GPUs per node is more than {MAX_GPUS_PER_NODE}",
            alt.gpus_per_node
        ));
    }
    if !(MIN_SPEED..=MAX_SPEED).contains(&alt.speed) {
        return Err(format!(
            "the speed must be between {} and {} (got {})",
            format_speed(MIN_SPEED),
            format_speed(MAX_SPEED),
            format_speed(alt.speed)
        ));
    }
    if let Some(model) = &alt.gpu_model {
        check_model_name(model)?;
    }
    Ok(())
}

/// How the part of a job on one node ended, as its node saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExitReason {
    /// Ended by itself, with any exit code or signal.
    Exited,
    /// Stopped because the scheduler asked.
    Cancelled,
    /// Killed at its time limit.
    Timeout,
    /// Could not be started at all.
    LaunchFailed,
    /// Its node or supervisor vanished without an exit status.
    Lost,
    /// Stopped because its node daemon shut down with its jobs.
    NodeShutdown,
    /// Stopped because the node lost contact with the scheduler for so long that the leader
    /// may have declared it lost (see the node daemon's contact lease).
    Fenced,
    /// Stopped so that it can be requeued (preemption): warned with its checkpoint signal
    /// first when it declared one.
    Preempted,
}

impl ExitReason {
    pub const ALL: [ExitReason; 8] = [
        ExitReason::Exited,
        ExitReason::Cancelled,
        ExitReason::Timeout,
        ExitReason::LaunchFailed,
        ExitReason::Lost,
        ExitReason::NodeShutdown,
        ExitReason::Fenced,
        ExitReason::Preempted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Exited => "EXITED",
            ExitReason::Cancelled => "CANCELLED",
            ExitReason::Timeout => "TIMEOUT",
            ExitReason::LaunchFailed => "LAUNCH_FAILED",
            ExitReason::Lost => "LOST",
            ExitReason::NodeShutdown => "NODE_SHUTDOWN",
            ExitReason::Fenced => "FENCED",
            ExitReason::Preempted => "PREEMPTED",
        }
    }

    pub fn parse(text: &str) -> Option<ExitReason> {
        ExitReason::ALL
            .into_iter()
            .find(|r| r.as_str() == text.trim())
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Job states, named as Slurm users know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Timeout,
        JobState::NodeFail,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::Timeout => "TIMEOUT",
            JobState::NodeFail => "NODE_FAIL",
        }
    }

    /// Parses a state name; case-insensitive, and Slurm's short codes (`PD`, `R`, `CD`...) work.
    pub fn parse(text: &str) -> Option<JobState> {
        let upper = text.trim().to_ascii_uppercase();
        let short = [
            ("PD", JobState::Pending),
            ("R", JobState::Running),
            ("CD", JobState::Completed),
            ("F", JobState::Failed),
            ("CA", JobState::Cancelled),
            ("TO", JobState::Timeout),
            ("NF", JobState::NodeFail),
        ];
        JobState::ALL
            .into_iter()
            .find(|s| s.as_str() == upper)
            .or_else(|| {
                short
                    .into_iter()
                    .find(|(code, _)| *code == upper)
                    .map(|(_, s)| s)
            })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn spec() -> JobSpec {
        crate::testing::job_spec(1, 2)
    }

    #[test]
    fn a_plain_spec_is_valid_and_zero_gpus_is_fine() {
        assert_eq!(spec().validate(), Ok(()));
        assert_eq!(
            JobSpec {
                gpus_per_node: 0,
                ..spec()
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert_eq!(
            JobSpec {
                num_nodes: 0,
                ..spec()
            }
            .validate(),
            Err(SpecError::ZeroNodes(0))
        );
        assert_eq!(
            JobSpec {
                cpus_per_node: 0,
                ..spec()
            }
            .validate(),
            Err(SpecError::ZeroCpus(0))
        );
        assert_eq!(
            JobSpec {
                mem_per_node_mib: 0,
                ..spec()
            }
            .validate(),
            Err(SpecError::ZeroMemory)
        );
        assert_eq!(
            JobSpec {
                time_limit_ms: Some(0),
                ..spec()
            }
            .validate(),
            Err(SpecError::ZeroTimeLimit)
        );
        assert_eq!(
            JobSpec {
                program: Program::Command { argv: vec![] },
                ..spec()
            }
            .validate(),
            Err(SpecError::NoProgram)
        );
        assert_eq!(
            JobSpec {
                work_dir: "rel".into(),
                ..spec()
            }
            .validate(),
            Err(SpecError::RelativeWorkDir("rel".into()))
        );
        assert!(matches!(
            JobSpec {
                gpus_per_node: 5000,
                ..spec()
            }
            .validate(),
            Err(SpecError::TooLarge { .. })
        ));
        assert_eq!(
            JobSpec {
                env: vec![("A=B".into(), "x".into())],
                ..spec()
            }
            .validate(),
            Err(SpecError::BadEnvName("A=B".into()))
        );
    }

    /// `-t 20s --checkpoint USR1@30m` was accepted and the job died of the signal at its
    /// start: the warning must come after the start, for every way the job may run.
    #[test]
    fn a_checkpoint_lead_not_shorter_than_the_time_limit_is_refused() {
        let with = |limit_ms: u64, lead_ms: u64| JobSpec {
            time_limit_ms: Some(limit_ms),
            checkpoint: Some(Checkpoint {
                lead_ms,
                ..Checkpoint::default()
            }),
            ..spec()
        };
        assert_eq!(with(60_000, 30_000).validate(), Ok(()));
        for (limit, lead) in [(20_000, 1_800_000), (30_000, 30_000)] {
            let err = with(limit, lead).validate().unwrap_err().to_string();
            assert!(err.contains("must be shorter than the time limit"), "{err}");
        }
    }

    #[test]
    fn output_paths_default_substitute_and_resolve() {
        assert_eq!(
            spec().output_paths(7, 0),
            ("/tmp/gantry-7.out".into(), "/tmp/gantry-7.out".into())
        );
        let s = JobSpec {
            stdout_path: Some("logs/%j.log".into()),
            stderr_path: Some("/var/err-%j".into()),
            ..spec()
        };
        assert_eq!(
            s.output_paths(9, 0),
            ("/tmp/logs/9.log".into(), "/var/err-9".into())
        );
        let s = JobSpec {
            name: "train".into(),
            stdout_path: Some("%x-%j.%r.out".into()),
            ..spec()
        };
        assert_eq!(s.output_paths(9, 2).0, "/tmp/train-9.2.out");
    }

    #[test]
    fn later_runs_and_several_nodes_append_to_the_output() {
        let with = |open_mode| JobSpec {
            open_mode,
            ..spec()
        };
        assert!(!with(None).appends_output(0, 1));
        assert!(with(None).appends_output(1, 1));
        assert!(with(None).appends_output(0, 2));
        assert!(!with(Some(OpenMode::Truncate)).appends_output(3, 1));
        assert!(with(Some(OpenMode::Truncate)).appends_output(3, 2));
        assert!(with(Some(OpenMode::Append)).appends_output(0, 1));
    }

    #[test]
    fn states_parse_by_name_and_short_code() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("pd"), Some(JobState::Pending));
        assert_eq!(JobState::parse("node_fail"), Some(JobState::NodeFail));
        assert_eq!(JobState::parse("bogus"), None);
    }
}
