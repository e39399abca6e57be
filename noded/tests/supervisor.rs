//! The per-job supervisor, run as the real binary (`gantry-noded supervise --job-dir DIR`).

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use gantry_noded::contact::{self, ContactLease};
use gantry_noded::jobdir::{
    CheckpointRecord, ExitReason, JOB_PID_FILE, JobDir, JobKey, JobStatus, LaunchRecord,
    STATUS_FILE, SUPERVISOR_PID_FILE, WARNING_FILE, Warning,
};
use gantry_proto as pb;
use gantry_testkit::{NOBODY, kill_leftovers, require_root, wait_for};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getsid};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_gantry-noded");

/// A job dir in a scratch data dir, and a work dir; kills whatever is left when dropped.
struct Scratch {
    root: TempDir,
    work: PathBuf,
    dir: JobDir,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        kill_leftovers(self.root.path());
    }
}

fn launch(work: &Path, argv: &[&str]) -> pb::Launch {
    pb::Launch {
        name: "test-job".into(),
        user: "tester".into(),
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        program: Some(pb::Program {
            kind: Some(pb::program::Kind::Command(pb::CommandLine {
                argv: argv.iter().map(|a| a.to_string()).collect(),
            })),
        }),
        work_dir: work.to_str().unwrap().into(),
        stdout_path: work.join("out.txt").to_str().unwrap().into(),
        stderr_path: String::new(),
        env: vec![
            pb::EnvVar {
                name: "PATH".into(),
                value: std::env::var("PATH").unwrap_or_default(),
            },
            pb::EnvVar {
                name: "MY_VAR".into(),
                value: "from the submitter".into(),
            },
        ],
        gpus: vec![],
        cpus: 2,
        mem_mib: 1024,
        time_limit_ms: 0,
        node_rank: 0,
        nodes: vec![],
        submit_dir: "/submit/here".into(),
        checkpoint: None,
        job_token: String::new(),
        append_output: false,
        cluster: "test".into(),
    }
}

fn script(body: &str, args: &[&str]) -> Option<pb::Program> {
    Some(pb::Program {
        kind: Some(pb::program::Kind::Script(pb::Script {
            path: "/home/tester/job.sh".into(),
            body: body.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        })),
    })
}

/// Prepares the job dir for `make(work_dir)` as the daemon would.
fn prepare(key: JobKey, grace_ms: u64, make: impl FnOnce(&Path) -> pb::Launch) -> Scratch {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    fs::create_dir(&work).unwrap();
    let record = LaunchRecord::from_launch(key, "node-a", &make(&work), grace_ms).unwrap();
    let dir = JobDir::new(root.path(), key);
    dir.prepare(&record).unwrap();
    Scratch { root, work, dir }
}

fn supervise(dir: &JobDir) -> Child {
    Command::new(BIN)
        .args(["supervise", "--job-dir"])
        .arg(dir.path())
        // Must not reach the job: it starts from its own environment only.
        .env("LEAKED_FROM_THE_DAEMON", "1")
        .stdin(Stdio::null())
        .stderr(fs::File::create(dir.path().with_extension("supervisor.log")).unwrap())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    wait_for("the supervisor to exit", || child.try_wait().unwrap())
}

fn status(dir: &JobDir) -> JobStatus {
    dir.read_status().unwrap().expect("status.json is written")
}

fn run_to_end(scratch: &Scratch) -> JobStatus {
    let mut child = supervise(&scratch.dir);
    assert!(wait_exit(&mut child).success());
    status(&scratch.dir)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// No process (zombies included) is left in process group `pgid`.
fn group_is_gone(pgid: u32) -> bool {
    killpg(Pid::from_raw(pgid as i32), None) == Err(Errno::ESRCH)
}

#[test]
fn the_job_gets_exactly_its_env_and_its_output_lands_in_the_file() {
    let key = JobKey::new(42, 3);
    let scratch = prepare(key, 1_000, |work| pb::Launch {
        gpus: vec![1, 3],
        nodes: vec!["node-z".into(), "node-a".into()],
        node_rank: 1,
        ..launch(
            work,
            &["sh", "-c", "env; echo \"cwd=$(pwd)\"; echo to-stderr >&2"],
        )
    });
    let status = run_to_end(&scratch);
    assert_eq!(
        (status.reason, status.exit_code, status.signal),
        (ExitReason::Exited, Some(0), None),
        "{status:?}"
    );
    assert!(status.start_ms > 0 && status.start_ms <= status.end_ms);

    let out = read(&scratch.work.join("out.txt"));
    let env: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let expected = [
        ("CUDA_VISIBLE_DEVICES", "1,3"),
        ("GANTRY_JOB_ID", "42"),
        ("GANTRY_JOB_NAME", "test-job"),
        ("GANTRY_NODE", "node-a"),
        ("GANTRY_GPUS", "1,3"),
        ("GANTRY_SUBMIT_DIR", "/submit/here"),
        ("GANTRY_NODE_RANK", "1"),
        ("GANTRY_NUM_NODES", "2"),
        ("GANTRY_NODELIST", "node-z,node-a"),
        ("GANTRY_CPUS", "2"),
        ("GANTRY_RESTART_COUNT", "3"),
        ("SLURM_JOB_ID", "42"),
        ("SLURM_JOB_NAME", "test-job"),
        ("SLURM_SUBMIT_DIR", "/submit/here"),
        ("SLURM_JOB_NODELIST", "node-z,node-a"),
        ("SLURM_NNODES", "2"),
        ("SLURM_NODEID", "1"),
        ("SLURM_CPUS_ON_NODE", "2"),
        ("SLURM_GPUS_ON_NODE", "2"),
        ("MY_VAR", "from the submitter"),
    ];
    for (name, value) in expected {
        assert_eq!(get(name), Some(value), "{name} in:\n{out}");
    }
    let gantry_vars: Vec<&str> = env
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with("GANTRY_"))
        .collect();
    assert_eq!(
        gantry_vars.len(),
        10,
        "unexpected GANTRY_ variables: {gantry_vars:?}"
    );
    assert_eq!(
        get("LEAKED_FROM_THE_DAEMON"),
        None,
        "the daemon's environment leaked:\n{out}"
    );
    assert_eq!(get("cwd"), Some(scratch.work.to_str().unwrap()));
    // stderr shares stdout's file when no separate path is given.
    assert!(out.lines().last() == Some("to-stderr"), "{out}");

    let supervisor_pid = scratch.dir.read_pid(SUPERVISOR_PID_FILE).unwrap();
    let job_pid = scratch.dir.read_pid(JOB_PID_FILE).unwrap();
    assert_ne!(supervisor_pid, job_pid);
}

#[test]
fn the_job_does_not_inherit_the_supervisors_signal_handling() {
    let scratch = prepare(JobKey::new(14, 0), 1_000, |work| {
        launch(work, &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])
    });
    run_to_end(&scratch);
    let out = read(&scratch.work.join("out.txt"));
    let mask = |name: &str| {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{out}");
    // Whatever the test runner ignores, the signals the supervisor handles are reset by exec.
    for signal in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGCHLD,
    ] {
        assert_eq!(
            mask("SigIgn:") & (1 << (signal as i32 - 1)),
            0,
            "{signal} ignored: {out}"
        );
    }
}

#[test]
fn no_gpus_gives_an_empty_device_list_and_separate_files_stay_separate() {
    let scratch = prepare(JobKey::new(1, 0), 1_000, |work| pb::Launch {
        stderr_path: work.join("err.txt").to_str().unwrap().into(),
        ..launch(
            work,
            &[
                "sh",
                "-c",
                "echo \"devices=[$CUDA_VISIBLE_DEVICES]\"; echo oops >&2",
            ],
        )
    });
    run_to_end(&scratch);
    assert_eq!(read(&scratch.work.join("out.txt")), "devices=[]\n");
    assert_eq!(read(&scratch.work.join("err.txt")), "oops\n");
}

#[test]
fn every_rank_of_a_multi_node_job_appends_to_the_shared_output_file() {
    // Two nodes' supervisors (each with its own data dir) writing one file, as on a shared
    // file system. The file already has a line: a multi-node job does not truncate it.
    let key = JobKey::new(16, 0);
    let two_nodes = |work: &Path, rank: u32| pb::Launch {
        nodes: vec!["node-a".into(), "node-b".into()],
        node_rank: rank,
        ..launch(
            work,
            &[
                "sh",
                "-c",
                "echo \"rank $GANTRY_NODE_RANK first\"; sleep 0.2; echo \"rank $GANTRY_NODE_RANK last\"",
            ],
        )
    };
    let rank0 = prepare(key, 1_000, |work| two_nodes(work, 0));
    let shared = rank0.work.clone();
    let out = shared.join("out.txt");
    fs::write(&out, "before the job\n").unwrap();
    let rank1 = prepare(key, 1_000, |_| two_nodes(&shared, 1));
    let mut supervisors = [supervise(&rank0.dir), supervise(&rank1.dir)];
    for child in &mut supervisors {
        assert!(wait_exit(child).success());
    }
    for scratch in [&rank0, &rank1] {
        assert_eq!(status(&scratch.dir).exit_code, Some(0));
    }
    let text = read(&out);
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"before the job"), "{text}");
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "before the job",
            "rank 0 first",
            "rank 0 last",
            "rank 1 first",
            "rank 1 last"
        ],
        "{text}"
    );
}

#[test]
fn a_single_node_job_starts_its_output_file_afresh() {
    let scratch = prepare(JobKey::new(17, 0), 1_000, |work| {
        launch(work, &["echo", "new"])
    });
    let out = scratch.work.join("out.txt");
    fs::write(&out, "an older run's output, longer than the new one\n").unwrap();
    run_to_end(&scratch);
    assert_eq!(read(&out), "new\n");
}

#[test]
fn scripts_run_with_their_arguments_with_or_without_an_interpreter_line() {
    for body in ["echo \"args: $*\"\n", "#!/bin/sh\necho \"args: $*\"\n"] {
        let scratch = prepare(JobKey::new(2, 0), 1_000, |work| pb::Launch {
            program: script(body, &["a", "b c"]),
            ..launch(work, &[])
        });
        let status = run_to_end(&scratch);
        assert_eq!(status.exit_code, Some(0), "{status:?}");
        assert_eq!(read(&scratch.work.join("out.txt")), "args: a b c\n");
        let mode = fs::metadata(scratch.dir.file("script"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}

#[test]
fn exit_codes_and_signals_are_recorded() {
    let scratch = prepare(JobKey::new(3, 0), 1_000, |work| {
        launch(work, &["sh", "-c", "exit 3"])
    });
    let status = run_to_end(&scratch);
    assert_eq!(
        (status.reason, status.exit_code, status.signal),
        (ExitReason::Exited, Some(3), None)
    );
    assert_eq!(status.message, "exited with code 3");

    let scratch = prepare(JobKey::new(4, 0), 1_000, |work| {
        launch(work, &["sh", "-c", "kill -USR1 $$"])
    });
    let status = run_to_end(&scratch);
    assert_eq!(
        (status.reason, status.exit_code, status.signal),
        (ExitReason::Exited, None, Some(Signal::SIGUSR1 as i32))
    );
    assert_eq!(status.message, "killed by SIGUSR1");
}

#[test]
fn a_time_limit_ends_the_job_with_timeout() {
    let scratch = prepare(JobKey::new(5, 0), 5_000, |work| pb::Launch {
        time_limit_ms: 300,
        ..launch(work, &["sleep", "30"])
    });
    let started = Instant::now();
    let status = run_to_end(&scratch);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        (status.reason, status.signal),
        (ExitReason::Timeout, Some(Signal::SIGTERM as i32)),
        "{status:?}"
    );
    assert!(
        status
            .message
            .starts_with("time limit of 0.3s reached: killed by SIGTERM"),
        "{}",
        status.message
    );
}

#[test]
fn a_job_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
    // The limit leaves the shell time to trap SIGTERM on a loaded machine.
    let scratch = prepare(JobKey::new(6, 0), 300, |work| pb::Launch {
        time_limit_ms: 2_000,
        ..launch(work, &["sh", "-c", "trap '' TERM; echo ready; sleep 30"])
    });
    let status = run_to_end(&scratch);
    assert_eq!(
        (status.reason, status.signal),
        (ExitReason::Timeout, Some(Signal::SIGKILL as i32)),
        "{status:?}"
    );
    assert!(
        status
            .message
            .ends_with("SIGKILL after the 0.3s grace period"),
        "{}",
        status.message
    );
    assert!(group_is_gone(scratch.dir.read_pid(JOB_PID_FILE).unwrap()));
}

/// Starts a job whose shell leaves two `sleep 1000` children, and waits until they run.
fn start_job_with_children(key: JobKey) -> (Scratch, Child, u32) {
    let scratch = prepare(key, 5_000, |work| pb::Launch {
        program: script("sleep 1000 &\nsleep 1000 &\necho started\nwait\n", &[]),
        ..launch(work, &[])
    });
    let child = supervise(&scratch.dir);
    let out = scratch.work.join("out.txt");
    wait_for("the job to start", || {
        read(&out).contains("started").then_some(())
    });
    // The job may print before its supervisor has recorded its pid.
    let pgid = wait_for("the job's pid file", || scratch.dir.read_pid(JOB_PID_FILE));
    let members = wait_for("the job's children", || {
        let n = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let stat = read(Path::new(&format!("/proc/{pid}/stat")));
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map(|(_, r)| r.split_whitespace().collect())
                    .unwrap_or_default();
                fields.get(2) == Some(&pgid.to_string().as_str())
            })
            .count();
        (n >= 3).then_some(n)
    });
    assert!(members >= 3);
    (scratch, child, pgid)
}

/// Gives the job a checkpoint contract (as the daemon does for `--checkpoint`), its work dir
/// as checkpoint dir.
fn with_checkpoint(scratch: &Scratch, signal: &str, lead_ms: u64) {
    let mut record = scratch.dir.read_launch().unwrap();
    record.checkpoint = Some(CheckpointRecord {
        signal: signal.into(),
        lead_ms,
        dir: scratch.work.clone(),
        whole_job: false,
    });
    scratch.dir.write_record(&record).unwrap();
}

/// A job declaring `SIGUSR1@LEAD` gets SIGUSR1 that long before its time limit, told why in
/// `GANTRY_WARNING_FILE`, and ends `TIMEOUT` at the limit, its status saying it was warned.
#[test]
fn the_checkpoint_signal_comes_its_lead_before_the_time_limit() {
    // The warning comes 2 s after the start: time for the shell to trap SIGUSR1.
    let scratch = prepare(JobKey::new(15, 0), 5_000, |work| pb::Launch {
        time_limit_ms: 3_000,
        program: script(
            "#!/bin/sh
trap 'cat \"$GANTRY_WARNING_FILE\" > warned' USR1
while true; do sleep 0.05; done
",
            &[],
        ),
        ..launch(work, &[])
    });
    with_checkpoint(&scratch, "SIGUSR1", 1_000);
    let status = run_to_end(&scratch);
    assert_eq!(status.reason, ExitReason::Timeout, "{status:?}");
    assert!(status.after_time_limit_warning, "{status:?}");
    assert_eq!(read(&scratch.work.join("warned")), "time_limit\n");
}

/// A job that exits by itself once warned of its time limit still says it was warned (with
/// `--requeue-on-timeout` it runs again: it ran out of time); one that ends before the
/// warning does not.
#[test]
fn an_exit_after_the_time_limit_warning_is_reported_as_warned() {
    for (limit_ms, warned) in [(3_000, true), (60_000, false)] {
        let scratch = prepare(JobKey::new(18, 0), 5_000, |work| pb::Launch {
            time_limit_ms: limit_ms,
            program: script(
                "#!/bin/sh
trap 'exit 0' USR1
i=0
while [ $i -lt 60 ]; do sleep 0.05; i=$((i + 1)); done
",
                &[],
            ),
            ..launch(work, &[])
        });
        with_checkpoint(&scratch, "SIGUSR1", 2_500);
        let status = run_to_end(&scratch);
        assert_eq!(
            (
                status.reason,
                status.exit_code,
                status.after_time_limit_warning
            ),
            (ExitReason::Exited, Some(0), warned),
            "{status:?}"
        );
    }
}

/// A stop for a preemption warns a job with a checkpoint signal and lets it end by itself:
/// it was preempted, whatever its exit code.
#[test]
fn a_preemption_warns_the_job_and_its_own_exit_counts_as_preempted() {
    let scratch = prepare(JobKey::new(16, 0), 5_000, |work| pb::Launch {
        program: script(
            "#!/bin/sh
trap 'echo saved > saved; exit 0' USR2
echo up > up
             while true; do sleep 0.05; done
",
            &[],
        ),
        ..launch(work, &[])
    });
    with_checkpoint(&scratch, "SIGUSR2", 60_000);
    let mut child = supervise(&scratch.dir);
    wait_for("the job to start", || {
        scratch.work.join("up").exists().then_some(())
    });
    scratch.dir.write_stop_warning(Warning::Drain).unwrap();
    scratch
        .dir
        .write_stop_reason(ExitReason::Preempted)
        .unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(wait_exit(&mut child).success());
    let status = status(&scratch.dir);
    assert_eq!(
        (status.reason, status.exit_code),
        (ExitReason::Preempted, Some(0)),
        "{status:?}"
    );
    assert_eq!(status.message, "preempted: exited with code 0");
    assert_eq!(read(&scratch.work.join("saved")), "saved\n");
    assert_eq!(read(&scratch.dir.file(WARNING_FILE)), "drain\n");
}

/// A preempted job that reports its checkpoint done (the file `gantry checkpoint done`
/// touches) but keeps running gets SIGTERM then, not at the end of its lead.
#[test]
fn a_checkpoint_done_during_a_preemption_ends_the_wait_for_it() {
    let scratch = prepare(JobKey::new(17, 0), 5_000, |work| pb::Launch {
        program: script(
            "#!/bin/sh\ntrap 'touch .gantry-checkpoint-done' USR1\necho up > up\n\
             while true; do sleep 0.05; done\n",
            &[],
        ),
        ..launch(work, &[])
    });
    with_checkpoint(&scratch, "SIGUSR1", 600_000);
    let mut child = supervise(&scratch.dir);
    wait_for("the job to start", || {
        scratch.work.join("up").exists().then_some(())
    });
    let started = Instant::now();
    scratch
        .dir
        .write_stop_reason(ExitReason::Preempted)
        .unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(wait_exit(&mut child).success());
    // Well before the 10-minute lead.
    assert!(started.elapsed() < Duration::from_secs(120));
    let status = status(&scratch.dir);
    assert_eq!(
        (status.reason, status.signal),
        (ExitReason::Preempted, Some(Signal::SIGTERM as i32)),
        "{status:?}"
    );
}

#[test]
fn sigterm_to_the_supervisor_stops_the_whole_process_group() {
    let (scratch, mut child, pgid) = start_job_with_children(JobKey::new(7, 0));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(wait_exit(&mut child).success());
    let status = status(&scratch.dir);
    assert_eq!(
        (status.reason, status.signal),
        (ExitReason::Cancelled, Some(Signal::SIGTERM as i32)),
        "{status:?}"
    );
    assert!(
        group_is_gone(pgid),
        "processes of the cancelled job are left"
    );
}

#[test]
fn a_stop_reason_file_turns_the_cancel_into_a_node_shutdown() {
    let (scratch, mut child, pgid) = start_job_with_children(JobKey::new(8, 0));
    scratch
        .dir
        .write_stop_reason(ExitReason::NodeShutdown)
        .unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(wait_exit(&mut child).success());
    assert_eq!(status(&scratch.dir).reason, ExitReason::NodeShutdown);
    assert!(group_is_gone(pgid));
}

#[test]
fn a_stop_requested_before_the_supervisor_is_ready_means_the_job_never_starts() {
    let scratch = prepare(JobKey::new(15, 0), 1_000, |work| {
        launch(work, &["touch", "ran"])
    });
    scratch
        .dir
        .write_stop_reason(ExitReason::Cancelled)
        .unwrap();
    let status = run_to_end(&scratch);
    assert_eq!(
        (status.reason, status.exit_code, status.signal),
        (ExitReason::Cancelled, None, None)
    );
    assert_eq!(status.message, "stopped before the job started");
    assert!(!scratch.work.join("ran").exists());
    assert!(!scratch.work.join("out.txt").exists());
}

#[test]
fn launch_failures_say_precisely_what_failed() {
    let scratch = prepare(JobKey::new(9, 0), 1_000, |work| pb::Launch {
        work_dir: "/nonexistent/gantry/work".into(),
        ..launch(work, &["true"])
    });
    let status = run_to_end(&scratch);
    assert_eq!(status.reason, ExitReason::LaunchFailed);
    assert_eq!(
        status.message,
        "cannot use working directory \"/nonexistent/gantry/work\": No such file or directory (os error 2)"
    );

    let scratch = prepare(JobKey::new(10, 0), 1_000, |work| {
        launch(work, &["no-such-program-gantry"])
    });
    let status = run_to_end(&scratch);
    assert_eq!(status.reason, ExitReason::LaunchFailed);
    assert_eq!(
        status.message,
        "cannot start \"no-such-program-gantry\": No such file or directory (os error 2)"
    );

    let scratch = prepare(JobKey::new(11, 0), 1_000, |work| pb::Launch {
        stdout_path: "/nonexistent/gantry/out.txt".into(),
        ..launch(work, &["true"])
    });
    let status = run_to_end(&scratch);
    assert_eq!(status.reason, ExitReason::LaunchFailed);
    assert_eq!(
        status.message,
        "cannot open output file \"/nonexistent/gantry/out.txt\": No such file or directory (os error 2)"
    );
}

#[test]
fn the_supervisor_outlives_the_process_that_spawned_it() {
    let scratch = prepare(JobKey::new(12, 0), 1_000, |work| {
        launch(work, &["sh", "-c", "sleep 1; echo done"])
    });
    // A shell in its own process group starts the supervisor in the background and exits;
    // then its whole group is killed, as a crashing daemon's would be.
    let spawner = Command::new("sh")
        .args([
            "-c",
            "\"$0\" supervise --job-dir \"$1\" >/dev/null 2>&1 & echo $!",
        ])
        .arg(BIN)
        .arg(scratch.dir.path())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let spawner_group = Pid::from_raw(spawner.id() as i32);
    let output = spawner.wait_with_output().unwrap();
    let supervisor: i32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    // It leaves the spawner's session for its own.
    wait_for("the supervisor to start its own session", || {
        (getsid(Some(Pid::from_raw(supervisor))) == Ok(Pid::from_raw(supervisor))).then_some(())
    });
    let _ = killpg(spawner_group, Signal::SIGKILL);
    let status = wait_for("status.json", || scratch.dir.read_status().unwrap());
    assert_eq!(
        (status.reason, status.exit_code),
        (ExitReason::Exited, Some(0)),
        "{status:?}"
    );
    assert_eq!(read(&scratch.work.join("out.txt")), "done\n");
    assert!(scratch.dir.file(STATUS_FILE).exists());
}

#[test]
fn a_root_daemon_runs_the_job_as_its_user() {
    require_root("running a job as nobody");
    let nobody = NOBODY;
    let scratch = prepare(JobKey::new(13, 0), 1_000, |work| pb::Launch {
        uid: nobody,
        gid: nobody,
        ..launch(work, &["sh", "-c", "echo \"$(id -u) $(id -g)\""])
    });
    // The user must be able to reach its work dir and the job dir (for scripts).
    for dir in [scratch.root.path(), scratch.work.as_path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let status = run_to_end(&scratch);
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    let out = scratch.work.join("out.txt");
    assert_eq!(read(&out), format!("{nobody} {nobody}\n"));
    // The output file is the user's, not root's.
    assert_eq!(fs::metadata(&out).unwrap().uid(), nobody);
}

/// Points the job's record at a contact lease in the scratch data dir, as the daemon does.
fn with_contact_lease(scratch: &Scratch) {
    let record = LaunchRecord {
        contact_lease: Some(scratch.root.path().join(contact::FILE)),
        ..scratch.dir.read_launch().unwrap()
    };
    scratch.dir.write_record(&record).unwrap();
}

fn store_lease(scratch: &Scratch, stop_in_ms: u64, kill_in_ms: u64) {
    let now = contact::boottime_ms();
    ContactLease {
        stop_at_ms: now + stop_in_ms,
        kill_by_ms: now + kill_in_ms,
    }
    .store(scratch.root.path())
    .unwrap();
}

#[test]
fn a_job_is_stopped_when_the_contact_lease_runs_out_and_killed_by_its_end() {
    // A two-minute kill grace: only the lease's own end can bring the SIGKILL sooner.
    let scratch = prepare(JobKey::new(13, 0), 120_000, |work| {
        launch(work, &["sh", "-c", "trap '' TERM; echo ready; sleep 1000"])
    });
    with_contact_lease(&scratch);
    // A long lease until the job has trapped SIGTERM (a lease running out before that would
    // kill it with SIGTERM), then one about to run out: the supervisor reads the file again.
    store_lease(&scratch, 600_000, 1_200_000);
    let mut child = supervise(&scratch.dir);
    let out = scratch.work.join("out.txt");
    wait_for("the job to trap SIGTERM", || {
        read(&out).contains("ready").then_some(())
    });
    store_lease(&scratch, 1_000, 2_000);
    let started = Instant::now();
    assert!(wait_exit(&mut child).success());
    let status = status(&scratch.dir);
    assert!(started.elapsed() < Duration::from_secs(60), "{status:?}");
    assert_eq!(
        (status.reason, status.signal),
        (ExitReason::Fenced, Some(Signal::SIGKILL as i32)),
        "{status:?}"
    );
    assert!(
        status.message.contains("lost contact with the scheduler"),
        "{}",
        status.message
    );
    assert!(group_is_gone(scratch.dir.read_pid(JOB_PID_FILE).unwrap()));
}

#[test]
fn a_renewed_contact_lease_lets_the_job_finish() {
    let scratch = prepare(JobKey::new(14, 0), 1_000, |work| {
        launch(work, &["sh", "-c", "sleep 4; exit 3"])
    });
    with_contact_lease(&scratch);
    // The job outlives the first lease; the renewals keep it going (a 2 s lease leaves the
    // renewing thread room to stall on a loaded machine).
    store_lease(&scratch, 2_000, 4_000);
    let mut child = supervise(&scratch.dir);
    // Renewed every 100 ms, as heartbeats do, for as long as the job runs.
    let exit = wait_for("the supervisor to exit", || {
        store_lease(&scratch, 2_000, 4_000);
        thread::sleep(Duration::from_millis(100));
        child.try_wait().unwrap()
    });
    assert!(exit.success());
    let status = status(&scratch.dir);
    assert_eq!(
        (status.reason, status.exit_code),
        (ExitReason::Exited, Some(3)),
        "{status:?}"
    );
}

#[test]
fn an_unreadable_contact_lease_fences_nothing() {
    let scratch = prepare(JobKey::new(15, 0), 1_000, |work| {
        launch(work, &["sh", "-c", "sleep 1; exit 0"])
    });
    with_contact_lease(&scratch);
    fs::write(scratch.root.path().join(contact::FILE), "not a lease").unwrap();
    let status = run_to_end(&scratch);
    assert_eq!(
        (status.reason, status.exit_code),
        (ExitReason::Exited, Some(0)),
        "{status:?}"
    );
}
