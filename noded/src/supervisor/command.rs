//! Turning a launch record into the job's process: program, environment, identity, output files.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::unistd::{Gid, Uid, getegid, geteuid, setegid, seteuid, setgroups};

use crate::jobdir::{JobDir, LaunchRecord, ProgramRecord, SCRIPT_FILE, WARNING_FILE};

/// Used when the job's own environment has no `PATH`, so a bare command name still resolves.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The user the job runs as, when it is not the supervisor's own: only a root daemon switches
/// users, and a job submitted by root stays root.
pub fn job_identity(record: &LaunchRecord) -> Option<(Uid, Gid)> {
    (geteuid().is_root() && record.uid != 0)
        .then(|| (Uid::from_raw(record.uid), Gid::from_raw(record.gid)))
}

/// The job's environment: exactly its own (not the daemon's), then Gantry's and Slurm's
/// variables on top. Later entries win. `dir` is the job's own directory on this node.
pub fn job_env(record: &LaunchRecord, dir: &JobDir) -> Vec<(String, String)> {
    let mut env = record.env.clone();
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let gpus = record
        .gpus
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let nodelist = record.nodes.join(",");
    let num_nodes = record.nodes.len().to_string();
    let ours = [
        ("CUDA_VISIBLE_DEVICES", gpus.clone()),
        ("GANTRY_JOB_ID", record.job_id.to_string()),
        ("GANTRY_JOB_NAME", record.name.clone()),
        ("GANTRY_NODE", record.node.clone()),
        ("GANTRY_GPUS", gpus),
        ("GANTRY_SUBMIT_DIR", record.submit_dir.clone()),
        ("GANTRY_NODE_RANK", record.node_rank.to_string()),
        ("GANTRY_NUM_NODES", num_nodes.clone()),
        ("GANTRY_NODELIST", nodelist.clone()),
        ("GANTRY_CPUS", record.cpus.to_string()),
        ("GANTRY_RESTART_COUNT", record.attempt.to_string()),
        ("SLURM_JOB_ID", record.job_id.to_string()),
        ("SLURM_JOB_NAME", record.name.clone()),
        ("SLURM_SUBMIT_DIR", record.submit_dir.clone()),
        ("SLURM_JOB_NODELIST", nodelist),
        ("SLURM_NNODES", num_nodes),
        ("SLURM_NODEID", record.node_rank.to_string()),
        ("SLURM_CPUS_ON_NODE", record.cpus.to_string()),
        ("SLURM_GPUS_ON_NODE", record.gpus.len().to_string()),
        ("SLURM_RESTART_COUNT", record.attempt.to_string()),
    ];
    env.extend(
        ours.into_iter()
            .map(|(name, value)| (name.to_string(), value)),
    );
    if !record.job_token.is_empty() {
        env.push(("GANTRY_JOB_TOKEN".into(), record.job_token.clone()));
    }
    if !record.servers.is_empty() && !env.iter().any(|(name, _)| name == "GANTRY_SERVER") {
        env.push(("GANTRY_SERVER".into(), record.servers.clone()));
    }
    if let Some(checkpoint) = &record.checkpoint {
        env.push((
            "GANTRY_CHECKPOINT_DIR".into(),
            checkpoint.dir.to_string_lossy().into_owned(),
        ));
        env.push(("GANTRY_CHECKPOINT_SIGNAL".into(), checkpoint.signal.clone()));
        env.push((
            "GANTRY_WARNING_FILE".into(),
            dir.file(WARNING_FILE).to_string_lossy().into_owned(),
        ));
    }
    env
}

/// The program to execute, its arguments, and how to name it in messages.
fn program(dir: &JobDir, record: &LaunchRecord) -> Result<(PathBuf, Vec<String>, String), String> {
    match &record.program {
        ProgramRecord::Command { argv } => match argv.split_first() {
            Some((first, rest)) if !first.is_empty() => {
                Ok((PathBuf::from(first), rest.to_vec(), first.clone()))
            }
            _ => Err("the job has an empty command line".to_string()),
        },
        ProgramRecord::Script { path, body, args } => {
            let script = dir.file(SCRIPT_FILE);
            let shown = if path.is_empty() {
                script.to_string_lossy().into_owned()
            } else {
                path.clone()
            };
            if body.starts_with("#!") {
                Ok((script, args.clone(), shown))
            } else {
                // Like sbatch: a script without an interpreter line runs under the shell.
                let mut sh_args = vec![script.to_string_lossy().into_owned()];
                sh_args.extend(args.iter().cloned());
                Ok((PathBuf::from("/bin/sh"), sh_args, shown))
            }
        }
    }
}

/// Runs `f` with the effective identity of the job's user, so that files are opened with the
/// user's rights (root must not create or truncate a file where the user could not). The
/// supervisor is single-threaded, so switching the effective ids is safe.
fn as_user<T>(
    identity: Option<(Uid, Gid)>,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let Some((uid, gid)) = identity else {
        return f();
    };
    let (root_uid, root_gid) = (geteuid(), getegid());
    let restore = || -> nix::Result<()> {
        seteuid(root_uid)?;
        setegid(root_gid)
    };
    let switched = setgroups(&[gid])
        .and_then(|()| setegid(gid))
        .and_then(|()| seteuid(uid));
    if let Err(e) = switched {
        let _ = restore();
        return Err(format!("cannot switch to uid {uid} gid {gid}: {e}"));
    }
    let result = f();
    restore().map_err(|e| format!("cannot switch back from uid {uid} to root: {e}"))?;
    result
}

/// How the job's output files are opened, as the scheduler said (`append_output`): a later
/// run appends (unless `--open-mode truncate`), so the lines of the runs before it stay.
/// Every node of a multi-node job opens the same file (on a shared file system): each
/// appends, so no rank truncates or overwrites the lines of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputMode {
    Truncate,
    Append,
}

impl OutputMode {
    fn for_job(record: &LaunchRecord) -> OutputMode {
        if record.append_output || record.nodes.len() > 1 {
            OutputMode::Append
        } else {
            OutputMode::Truncate
        }
    }
}

fn open_output(path: &str, mode: OutputMode) -> Result<File, String> {
    let mut options = OpenOptions::new();
    options.create(true).mode(0o644);
    match mode {
        OutputMode::Truncate => options.write(true).truncate(true),
        OutputMode::Append => options.append(true),
    };
    options
        .open(path)
        .map_err(|e| format!("cannot open output file {path:?}: {e}"))
}

/// Starts the job in its own process group. Errors are the precise `LAUNCH_FAILED` message.
pub fn spawn_job(dir: &JobDir, record: &LaunchRecord) -> Result<Child, String> {
    let identity = job_identity(record);
    let (program, args, shown) = program(dir, record)?;
    let (stdout, stderr) = as_user(identity, || {
        match fs::metadata(&record.work_dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "cannot use working directory {:?}: not a directory",
                    record.work_dir
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cannot use working directory {:?}: {e}",
                    record.work_dir
                ));
            }
        }
        let mode = OutputMode::for_job(record);
        let stdout = open_output(&record.stdout_path, mode)?;
        // One shared open file when both go to the same path, so lines interleave in order.
        let stderr = if record.stderr_path == record.stdout_path {
            stdout
                .try_clone()
                .map_err(|e| format!("cannot share output file {:?}: {e}", record.stdout_path))?
        } else {
            open_output(&record.stderr_path, mode)?
        };
        Ok((stdout, stderr))
    })?;
    let mut command = Command::new(&program);
    command
        .args(&args)
        .env_clear()
        .envs(job_env(record, dir))
        .current_dir(&record.work_dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if let Some((uid, gid)) = identity {
        command.uid(uid.as_raw()).gid(gid.as_raw());
    }
    command.spawn().map_err(|e| match identity {
        Some((uid, gid)) => format!("cannot start {shown:?} as uid {uid} gid {gid}: {e}"),
        None => format!("cannot start {shown:?}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobdir::JobKey;
    use gantry_proto as pb;

    fn record() -> LaunchRecord {
        let launch = pb::Launch {
            name: "train".into(),
            program: Some(pb::Program {
                kind: Some(pb::program::Kind::Command(pb::CommandLine {
                    argv: vec!["env".into()],
                })),
            }),
            work_dir: "/tmp".into(),
            env: vec![
                pb::EnvVar {
                    name: "HOME".into(),
                    value: "/home/ada".into(),
                },
                pb::EnvVar {
                    name: "CUDA_VISIBLE_DEVICES".into(),
                    value: "0,1,2,3".into(),
                },
            ],
            gpus: vec![2, 5],
            cpus: 8,
            node_rank: 1,
            nodes: vec!["a".into(), "b".into()],
            submit_dir: "/home/ada/run".into(),
            ..Default::default()
        };
        LaunchRecord::from_launch(JobKey::new(42, 2), "b", &launch, 1_000).unwrap()
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        // The last entry wins, as with `Command::env`.
        env.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn job_env_is_the_jobs_own_plus_gantry_and_slurm_variables() {
        let env = job_env(
            &record(),
            &JobDir::at(std::path::Path::new("/data/jobs/42.2")),
        );
        assert_eq!(get(&env, "HOME"), Some("/home/ada"));
        assert_eq!(get(&env, "PATH"), Some(DEFAULT_PATH));
        // The allocation wins over whatever the submitter had.
        assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES"), Some("2,5"));
        assert_eq!(get(&env, "GANTRY_GPUS"), Some("2,5"));
        assert_eq!(get(&env, "GANTRY_JOB_ID"), Some("42"));
        assert_eq!(get(&env, "GANTRY_NODE"), Some("b"));
        assert_eq!(get(&env, "GANTRY_NODE_RANK"), Some("1"));
        assert_eq!(get(&env, "GANTRY_NUM_NODES"), Some("2"));
        assert_eq!(get(&env, "GANTRY_NODELIST"), Some("a,b"));
        assert_eq!(get(&env, "GANTRY_RESTART_COUNT"), Some("2"));
        assert_eq!(get(&env, "SLURM_GPUS_ON_NODE"), Some("2"));
        assert_eq!(get(&env, "SLURM_JOB_NODELIST"), Some("a,b"));
        assert_eq!(get(&env, "SLURM_SUBMIT_DIR"), Some("/home/ada/run"));
    }

    #[test]
    fn only_multi_node_jobs_append_to_their_output() {
        assert_eq!(OutputMode::for_job(&record()), OutputMode::Append);
        let single = LaunchRecord {
            nodes: vec!["b".into()],
            ..record()
        };
        assert_eq!(OutputMode::for_job(&single), OutputMode::Truncate);
    }

    #[test]
    fn no_gpus_means_an_empty_device_list() {
        let dir = JobDir::at(std::path::Path::new("/data/jobs/42.2"));
        let env = job_env(
            &LaunchRecord {
                gpus: vec![],
                ..record()
            },
            &dir,
        );
        assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES"), Some(""));
        assert_eq!(get(&env, "SLURM_GPUS_ON_NODE"), Some("0"));
    }

    #[test]
    fn scripts_without_an_interpreter_line_run_under_sh() {
        let dir = JobDir::at(std::path::Path::new("/data/jobs/1.0"));
        let script = |body: &str| LaunchRecord {
            program: ProgramRecord::Script {
                path: "/x/run.sh".into(),
                body: body.into(),
                args: vec!["a".into()],
            },
            ..record()
        };
        let (program_path, args, shown) = program(&dir, &script("echo hi\n")).unwrap();
        assert_eq!(program_path, PathBuf::from("/bin/sh"));
        assert_eq!(args, vec!["/data/jobs/1.0/script".to_string(), "a".into()]);
        assert_eq!(shown, "/x/run.sh");
        let (program_path, args, _) = program(&dir, &script("#!/usr/bin/env python3\n")).unwrap();
        assert_eq!(program_path, PathBuf::from("/data/jobs/1.0/script"));
        assert_eq!(args, vec!["a".to_string()]);
    }
}
