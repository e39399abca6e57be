//! The on-disk record of one job on this node, `<data-dir>/jobs/<job_id>.<attempt>/`.
//!
//! The directory itself is the record that the job was launched here: it is created (with
//! `launch.json`) before the supervisor is spawned and is only deleted once the scheduler has
//! applied the job's end, so a crash at any point never leads to a second launch.
//!
//! | file | written by | what |
//! | --- | --- | --- |
//! | `launch.json` | daemon, before spawning | [`LaunchRecord`]: the launch request plus the grace period |
//! | `script` | daemon | the job's script (mode 0755), when the program is a script |
//! | `supervisor.log` | supervisor (stderr) | the supervisor's own messages |
//! | `supervisor.pid` | supervisor, once its signal handlers are installed | the supervisor's pid |
//! | `job.pid` | supervisor | the job's pid, which is also its process group id |
//! | `stop-reason` | daemon, before SIGTERM | `CANCELLED`, `NODE_SHUTDOWN` or `PREEMPTED` |
//! | `stop-warning` | daemon, before `stop-reason` | with `PREEMPTED`: why it is stopped to run again ([`Warning`]) |
//! | `warning` | supervisor, before the checkpoint signal | why the job is warned (`GANTRY_WARNING_FILE`, mode 0644) |
//! | `status.json` | supervisor at the end | [`JobStatus`], written atomically |

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use gantry_proto as pb;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const LAUNCH_FILE: &str = "launch.json";
pub const SCRIPT_FILE: &str = "script";
pub const SUPERVISOR_LOG_FILE: &str = "supervisor.log";
pub const SUPERVISOR_PID_FILE: &str = "supervisor.pid";
pub const JOB_PID_FILE: &str = "job.pid";
pub const STOP_REASON_FILE: &str = "stop-reason";
pub const STOP_WARNING_FILE: &str = "stop-warning";
pub const WARNING_FILE: &str = "warning";
pub const STATUS_FILE: &str = "status.json";

/// One run of one job: the scheduler never reuses a `(job_id, attempt)` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub job_id: u64,
    pub attempt: u32,
}

impl JobKey {
    pub fn new(job_id: u64, attempt: u32) -> Self {
        JobKey { job_id, attempt }
    }

    /// The job directory's name, `<job_id>.<attempt>`.
    pub fn dir_name(&self) -> String {
        format!("{}.{}", self.job_id, self.attempt)
    }

    /// The inverse of [`JobKey::dir_name`]; `None` for anything else (temporary files...).
    pub fn parse_dir_name(name: &str) -> Option<JobKey> {
        let (id, attempt) = name.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(id) || !digits(attempt) {
            return None;
        }
        Some(JobKey {
            job_id: id.parse().ok()?,
            attempt: attempt.parse().ok()?,
        })
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.job_id, self.attempt)
    }
}

/// Why a job ended (shared with the scheduler; the wire's `ExitReason` has the same names).
pub use gantry_model::ExitReason;
/// Why a job is warned with its checkpoint signal.
pub use gantry_model::Warning;

/// How a job ended: `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub reason: ExitReason,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub message: String,
    /// When the job was started (ms since the Unix epoch); 0 if it never was.
    pub start_ms: u64,
    pub end_ms: u64,
    /// The supervisor had warned it of its time limit (its checkpoint signal) before it
    /// ended: it ran out of time, whatever its exit.
    #[serde(default)]
    pub after_time_limit_warning: bool,
}

impl JobStatus {
    /// An end without a process: a launch that failed, a lost job, a cancel before the start.
    pub fn without_process(reason: ExitReason, message: impl Into<String>) -> JobStatus {
        JobStatus {
            reason,
            exit_code: None,
            signal: None,
            message: message.into(),
            start_ms: 0,
            end_ms: now_ms(),
            after_time_limit_warning: false,
        }
    }

    pub fn to_pb(&self, key: JobKey) -> pb::JobExited {
        pb::JobExited {
            job_id: key.job_id,
            attempt: key.attempt,
            reason: gantry_wire::exit_reason_to_pb(self.reason) as i32,
            exit_code: self.exit_code,
            signal: self.signal,
            message: self.message.clone(),
            after_time_limit_warning: self.after_time_limit_warning,
        }
    }
}

/// What the job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramRecord {
    /// The body is also written to the job dir's `script` file, which is what runs.
    Script {
        path: String,
        body: String,
        args: Vec<String>,
    },
    Command {
        argv: Vec<String>,
    },
}

/// `launch.json`: everything the supervisor needs, so it never talks to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub job_id: u64,
    pub attempt: u32,
    /// The name of the node running it (`GANTRY_NODE`).
    pub node: String,
    pub name: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub program: ProgramRecord,
    pub work_dir: String,
    pub stdout_path: String,
    pub stderr_path: String,
    pub env: Vec<(String, String)>,
    pub gpus: Vec<u32>,
    pub cpus: u32,
    pub mem_mib: u64,
    /// 0 means no limit.
    pub time_limit_ms: u64,
    pub node_rank: u32,
    pub nodes: Vec<String>,
    pub submit_dir: String,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace_ms: u64,
    /// The node's contact lease file (see [`crate::contact`]): the job is stopped when the
    /// lease runs out. Records written before fencing existed have none.
    #[serde(default)]
    pub contact_lease: Option<PathBuf>,
    /// The job's checkpoint contract and dir, when it declared one.
    #[serde(default)]
    pub checkpoint: Option<CheckpointRecord>,
    /// The run's secret (`GANTRY_JOB_TOKEN`) and the schedulers to report to
    /// (`GANTRY_SERVER`, when the job's environment has none).
    #[serde(default)]
    pub job_token: String,
    #[serde(default)]
    pub servers: String,
    /// Append to the output files rather than truncate them (a later run, `--open-mode
    /// append`, or a job of several nodes). Records written before it existed: by the
    /// number of nodes.
    #[serde(default)]
    pub append_output: bool,
}

/// How the supervisor warns the job before stopping it, and where it checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// `SIGUSR1`, ...
    pub signal: String,
    /// How long before SIGTERM (or the time limit) the signal comes.
    pub lead_ms: u64,
    /// `GANTRY_CHECKPOINT_DIR`.
    pub dir: PathBuf,
    /// Every process of the job gets the signal, not only its main one.
    #[serde(default)]
    pub whole_job: bool,
}

impl LaunchRecord {
    /// The record for a wire launch request. Fills Slurm's defaults: the working directory is
    /// the submit directory when none is given, output goes to `gantry-<id>.out` in it, stderr
    /// goes with stdout, relative output paths are relative to the working directory.
    pub fn from_launch(
        key: JobKey,
        node: &str,
        launch: &pb::Launch,
        kill_grace_ms: u64,
    ) -> Result<LaunchRecord, String> {
        let program = match launch.program.as_ref().and_then(|p| p.kind.as_ref()) {
            Some(pb::program::Kind::Script(s)) => ProgramRecord::Script {
                path: s.path.clone(),
                body: s.body.clone(),
                args: s.args.clone(),
            },
            Some(pb::program::Kind::Command(c)) => {
                if c.argv.first().is_none_or(|a| a.is_empty()) {
                    return Err("the launch request has an empty command line".to_string());
                }
                ProgramRecord::Command {
                    argv: c.argv.clone(),
                }
            }
            None => return Err("the launch request names no program".to_string()),
        };
        let work_dir = if launch.work_dir.is_empty() {
            launch.submit_dir.clone()
        } else {
            launch.work_dir.clone()
        };
        if work_dir.is_empty() {
            return Err("the launch request names no working directory".to_string());
        }
        let resolve = |path: &str| -> String {
            if path.is_empty() {
                String::new()
            } else if path.starts_with('/') {
                path.to_string()
            } else {
                Path::new(&work_dir)
                    .join(path)
                    .to_string_lossy()
                    .into_owned()
            }
        };
        let stdout_path = match resolve(&launch.stdout_path) {
            p if p.is_empty() => Path::new(&work_dir)
                .join(format!("gantry-{}.out", key.job_id))
                .to_string_lossy()
                .into_owned(),
            p => p,
        };
        let stderr_path = match resolve(&launch.stderr_path) {
            p if p.is_empty() => stdout_path.clone(),
            p => p,
        };
        let nodes = if launch.nodes.is_empty() {
            vec![node.to_string()]
        } else {
            launch.nodes.clone()
        };
        Ok(LaunchRecord {
            job_id: key.job_id,
            attempt: key.attempt,
            node: node.to_string(),
            name: launch.name.clone(),
            user: launch.user.clone(),
            uid: launch.uid,
            gid: launch.gid,
            program,
            work_dir,
            stdout_path,
            stderr_path,
            env: launch
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            gpus: launch.gpus.clone(),
            cpus: launch.cpus,
            mem_mib: launch.mem_mib,
            time_limit_ms: launch.time_limit_ms,
            node_rank: launch.node_rank,
            nodes,
            submit_dir: launch.submit_dir.clone(),
            kill_grace_ms,
            contact_lease: None,
            checkpoint: None,
            job_token: launch.job_token.clone(),
            servers: String::new(),
            append_output: launch.append_output,
        })
    }

    pub fn key(&self) -> JobKey {
        JobKey::new(self.job_id, self.attempt)
    }
}

#[derive(Debug, Error)]
pub enum JobDirError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: invalid content: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl JobDirError {
    fn io(path: &Path, source: io::Error) -> Self {
        JobDirError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The job dir (or the file) exists already.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, JobDirError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
    }
}

/// Paths and file I/O of one job dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDir {
    path: PathBuf,
}

impl JobDir {
    /// The dir of `key` under `jobs_root` (`<data-dir>/jobs`).
    pub fn new(jobs_root: &Path, key: JobKey) -> JobDir {
        JobDir {
            path: jobs_root.join(key.dir_name()),
        }
    }

    pub fn at(path: &Path) -> JobDir {
        JobDir {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates the dir; fails if it exists, which is how a second launch is refused.
    /// Mode 0711: a job running as its submitter may execute `script` but not list the dir or
    /// read `launch.json` (it holds the environment).
    pub fn create(&self) -> Result<(), JobDirError> {
        fs::DirBuilder::new()
            .mode(0o711)
            .create(&self.path)
            .map_err(|e| JobDirError::io(&self.path, e))
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Creates the dir and writes `launch.json` (and `script`), durably, before any spawn.
    pub fn prepare(&self, record: &LaunchRecord) -> Result<(), JobDirError> {
        self.create()?;
        self.write_record(record)
    }

    /// Writes `launch.json`, and `script` when the program is one.
    pub fn write_record(&self, record: &LaunchRecord) -> Result<(), JobDirError> {
        if let ProgramRecord::Script { body, .. } = &record.program {
            write_atomic(&self.file(SCRIPT_FILE), body.as_bytes(), 0o755, true)?;
        }
        self.write_launch(record)
    }

    pub fn write_launch(&self, record: &LaunchRecord) -> Result<(), JobDirError> {
        let path = self.file(LAUNCH_FILE);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| JobDirError::Json {
            path: path.clone(),
            source: e,
        })?;
        write_atomic(&path, &bytes, 0o600, true)
    }

    pub fn read_launch(&self) -> Result<LaunchRecord, JobDirError> {
        let path = self.file(LAUNCH_FILE);
        let bytes = fs::read(&path).map_err(|e| JobDirError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| JobDirError::Json { path, source: e })
    }

    pub fn write_status(&self, status: &JobStatus) -> Result<(), JobDirError> {
        let path = self.file(STATUS_FILE);
        let bytes = serde_json::to_vec_pretty(status).map_err(|e| JobDirError::Json {
            path: path.clone(),
            source: e,
        })?;
        write_atomic(&path, &bytes, 0o644, true)
    }

    /// `None` while the job has not ended.
    pub fn read_status(&self) -> Result<Option<JobStatus>, JobDirError> {
        let path = self.file(STATUS_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| JobDirError::Json { path, source: e }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JobDirError::io(&path, e)),
        }
    }

    /// Pid files are checked against `/proc` before use, so they need no fsync.
    pub fn write_pid(&self, file: &str, pid: u32) -> Result<(), JobDirError> {
        write_atomic(
            &self.file(file),
            format!("{pid}\n").as_bytes(),
            0o644,
            false,
        )
    }

    /// `None` when the file is missing or does not hold a pid.
    pub fn read_pid(&self, file: &str) -> Option<u32> {
        let text = fs::read_to_string(self.file(file)).ok()?;
        text.trim().parse().ok().filter(|pid| *pid > 0)
    }

    pub fn write_stop_reason(&self, reason: ExitReason) -> Result<(), JobDirError> {
        write_atomic(
            &self.file(STOP_REASON_FILE),
            format!("{reason}\n").as_bytes(),
            0o644,
            false,
        )
    }

    pub fn read_stop_reason(&self) -> Option<ExitReason> {
        ExitReason::parse(&fs::read_to_string(self.file(STOP_REASON_FILE)).ok()?)
    }

    /// Written before `stop-reason`, so a supervisor that reads a preemption there finds why.
    pub fn write_stop_warning(&self, warning: Warning) -> Result<(), JobDirError> {
        write_atomic(
            &self.file(STOP_WARNING_FILE),
            format!("{}\n", warning.as_str()).as_bytes(),
            0o644,
            false,
        )
    }

    pub fn read_stop_warning(&self) -> Option<Warning> {
        Warning::parse(&fs::read_to_string(self.file(STOP_WARNING_FILE)).ok()?)
    }

    /// What the job finds in `GANTRY_WARNING_FILE` when its checkpoint signal comes: written
    /// just before the signal, readable by the job's user.
    pub fn write_warning(&self, warning: Warning) -> Result<(), JobDirError> {
        write_atomic(
            &self.file(WARNING_FILE),
            format!("{}\n", warning.as_str()).as_bytes(),
            0o644,
            false,
        )
    }

    pub fn remove(&self) -> Result<(), JobDirError> {
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(JobDirError::io(&self.path, e)),
            _ => Ok(()),
        }
    }
}

/// Every job dir under `jobs_root`, in key order. Other entries are skipped.
pub fn list_job_dirs(jobs_root: &Path) -> Result<Vec<(JobKey, JobDir)>, JobDirError> {
    let entries = fs::read_dir(jobs_root).map_err(|e| JobDirError::io(jobs_root, e))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JobDirError::io(jobs_root, e))?;
        let Some(key) = entry.file_name().to_str().and_then(JobKey::parse_dir_name) else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push((key, JobDir::at(&entry.path())));
        }
    }
    dirs.sort_by_key(|(key, _)| *key);
    Ok(dirs)
}

/// Writes `path` so that readers see the old content or the new one, never a torn file:
/// a temporary file (named per process, so concurrent writers never share one), optionally
/// fsynced, renamed over the target, then the dir fsynced.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durable: bool,
) -> Result<(), JobDirError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable && let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        JobDirError::io(path, e)
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> pb::Launch {
        pb::Launch {
            name: "train".into(),
            user: "ada".into(),
            uid: 1000,
            gid: 1000,
            program: Some(pb::Program {
                kind: Some(pb::program::Kind::Command(pb::CommandLine {
                    argv: vec!["echo".into(), "hi".into()],
                })),
            }),
            work_dir: "/work".into(),
            stdout_path: String::new(),
            stderr_path: String::new(),
            env: vec![pb::EnvVar {
                name: "A".into(),
                value: "1".into(),
            }],
            gpus: vec![1, 3],
            cpus: 4,
            mem_mib: 1024,
            time_limit_ms: 0,
            node_rank: 0,
            nodes: vec![],
            submit_dir: "/home/ada".into(),
            checkpoint: None,
            job_token: String::new(),
            append_output: false,
            cluster: "test".into(),
        }
    }

    #[test]
    fn dir_names_round_trip_and_reject_strangers() {
        let key = JobKey::new(42, 3);
        assert_eq!(key.dir_name(), "42.3");
        assert_eq!(JobKey::parse_dir_name("42.3"), Some(key));
        for bad in [
            "42",
            "42.",
            ".3",
            "a.3",
            "42.3.1",
            ".launch.json.tmp.7",
            "-1.2",
            "4 2.3",
        ] {
            assert_eq!(JobKey::parse_dir_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_round_trips_through_the_job_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = JobDir::new(root.path(), JobKey::new(7, 1));
        dir.create().unwrap();
        assert_eq!(dir.read_status().unwrap(), None);
        let status = JobStatus {
            reason: ExitReason::Timeout,
            exit_code: None,
            signal: Some(9),
            message: "time limit reached".into(),
            start_ms: 1_000,
            end_ms: 2_000,
            after_time_limit_warning: true,
        };
        dir.write_status(&status).unwrap();
        assert_eq!(dir.read_status().unwrap(), Some(status.clone()));
        let text = fs::read_to_string(dir.file(STATUS_FILE)).unwrap();
        assert!(text.contains("\"reason\": \"TIMEOUT\""), "{text}");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATUS_FILE)]);
        let exited = status.to_pb(JobKey::new(7, 1));
        assert_eq!(exited.reason, pb::ExitReason::Timeout as i32);
        assert_eq!(
            (exited.job_id, exited.attempt, exited.signal),
            (7, 1, Some(9))
        );
    }

    #[test]
    fn a_job_dir_is_created_once() {
        let root = tempfile::tempdir().unwrap();
        let key = JobKey::new(1, 0);
        let record = LaunchRecord::from_launch(key, "n1", &launch(), 10_000).unwrap();
        let dir = JobDir::new(root.path(), key);
        dir.prepare(&record).unwrap();
        assert_eq!(dir.read_launch().unwrap(), record);
        assert!(dir.prepare(&record).unwrap_err().is_already_exists());
        assert_eq!(
            list_job_dirs(root.path()).unwrap(),
            vec![(key, dir.clone())]
        );
        dir.remove().unwrap();
        assert!(!dir.exists());
        dir.remove().unwrap();
    }

    #[test]
    fn launch_records_fill_slurm_defaults() {
        let key = JobKey::new(12, 0);
        let record = LaunchRecord::from_launch(key, "n1", &launch(), 5_000).unwrap();
        assert_eq!(record.stdout_path, "/work/gantry-12.out");
        assert_eq!(record.stderr_path, "/work/gantry-12.out");
        assert_eq!(record.nodes, vec!["n1".to_string()]);
        assert_eq!(record.kill_grace_ms, 5_000);

        let relative = pb::Launch {
            stdout_path: "o.txt".into(),
            stderr_path: "/abs/e.txt".into(),
            work_dir: String::new(),
            ..launch()
        };
        let record = LaunchRecord::from_launch(key, "n1", &relative, 5_000).unwrap();
        assert_eq!(record.work_dir, "/home/ada");
        assert_eq!(record.stdout_path, "/home/ada/o.txt");
        assert_eq!(record.stderr_path, "/abs/e.txt");

        let no_program = pb::Launch {
            program: None,
            ..launch()
        };
        assert_eq!(
            LaunchRecord::from_launch(key, "n1", &no_program, 0).unwrap_err(),
            "the launch request names no program"
        );
    }

    #[test]
    fn stop_reasons_and_pids_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let dir = JobDir::new(root.path(), JobKey::new(3, 2));
        dir.create().unwrap();
        assert_eq!(dir.read_stop_reason(), None);
        dir.write_stop_reason(ExitReason::NodeShutdown).unwrap();
        assert_eq!(dir.read_stop_reason(), Some(ExitReason::NodeShutdown));
        assert_eq!(dir.read_pid(JOB_PID_FILE), None);
        dir.write_pid(JOB_PID_FILE, 1234).unwrap();
        assert_eq!(dir.read_pid(JOB_PID_FILE), Some(1234));
    }
}
