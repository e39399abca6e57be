//! The per-job supervisor: a small synchronous process (the daemon's own executable re-run
//! with a hidden subcommand) that starts one job, watches it and records how it ended in
//! `status.json`. It runs in its own session, so it outlives the node daemon — a daemon crash
//! or upgrade loses no job, as slurmstepd outlives slurmd.

mod command;
mod signals;
mod watch;

use std::path::Path;
use std::time::Duration;

use gantry_model::units::format_duration_ms;
use nix::sys::prctl::set_child_subreaper;
use nix::sys::signal::Signal;
use nix::unistd::{Pid, setsid};

use signals::SignalWatch;
use watch::{JobEnd, Limits, ProcessEnd, Warn, watch_job};

use crate::jobdir::{
    ExitReason, JOB_PID_FILE, JobDir, JobStatus, LaunchRecord, SUPERVISOR_PID_FILE, Warning, now_ms,
};

fn log(message: &str) {
    eprintln!("gantry-supervisor[{}]: {message}", std::process::id());
}

/// Supervises the job described in `job_dir` until it ends; returns the process exit code
/// (0 once `status.json` is written). Synchronous and small: call it first thing in `main`,
/// before any async runtime or thread is started (it installs process-wide signal handlers
/// and, as root, switches its effective user while opening the job's files), then exit with
/// the code it returns.
pub fn supervise_main(job_dir: &Path) -> i32 {
    let dir = JobDir::at(job_dir);
    // Own session first: Ctrl-C on the daemon's terminal, or the daemon's death, must not
    // reach the job.
    if let Err(e) = setsid() {
        log(&format!(
            "setsid failed ({e}); the supervisor shares its parent's session"
        ));
    }
    // Orphans of the job are reparented to us, so we can reap them and see that none is left.
    let subreaper = match set_child_subreaper(true) {
        Ok(()) => true,
        Err(e) => {
            log(&format!("cannot become a child subreaper: {e}"));
            false
        }
    };
    let signals = match SignalWatch::install() {
        Ok(s) => s,
        Err(e) => {
            let message = format!("the supervisor cannot watch signals: {e}");
            return finish(
                &dir,
                JobStatus::without_process(ExitReason::LaunchFailed, message),
            );
        }
    };
    // Only now: the daemon takes this file as the sign that SIGTERM is safe to send.
    if let Err(e) = dir.write_pid(SUPERVISOR_PID_FILE, std::process::id()) {
        log(&format!("cannot record the supervisor's pid: {e}"));
    }
    match dir.read_status() {
        Ok(Some(_)) => {
            log("the job has an exit status already; nothing to do");
            return 0;
        }
        Ok(None) => {}
        Err(e) => log(&format!("unreadable status file is replaced: {e}")),
    }
    // Asked to stop before we could be signalled (the daemon signals only once our pid file
    // exists): the job is not started at all.
    if let Some(reason) = dir.read_stop_reason() {
        let status = JobStatus::without_process(reason, "stopped before the job started");
        return finish(&dir, status);
    }
    let record = match dir.read_launch() {
        Ok(record) => record,
        Err(e) => {
            let message = format!("the supervisor cannot read the launch request: {e}");
            return finish(
                &dir,
                JobStatus::without_process(ExitReason::LaunchFailed, message),
            );
        }
    };
    let status = run_job(&dir, &record, &signals, subreaper);
    finish(&dir, status)
}

fn finish(dir: &JobDir, status: JobStatus) -> i32 {
    match dir.write_status(&status) {
        Ok(()) => 0,
        Err(e) => {
            log(&format!("cannot record the exit status {status:?}: {e}"));
            1
        }
    }
}

fn run_job(
    dir: &JobDir,
    record: &LaunchRecord,
    signals: &SignalWatch,
    subreaper: bool,
) -> JobStatus {
    let start_ms = now_ms();
    let child = match command::spawn_job(dir, record) {
        Ok(child) => child,
        Err(message) => {
            log(&message);
            return JobStatus {
                start_ms,
                ..JobStatus::without_process(ExitReason::LaunchFailed, message)
            };
        }
    };
    let pid = child.id();
    if let Err(e) = dir.write_pid(JOB_PID_FILE, pid) {
        log(&format!("cannot record the job's pid: {e}"));
    }
    let limits = Limits {
        time_limit: (record.time_limit_ms > 0).then(|| Duration::from_millis(record.time_limit_ms)),
        grace: Duration::from_millis(record.kill_grace_ms),
        warning: record.checkpoint.as_ref().and_then(|c| {
            Some(Warn {
                signal: c.signal.parse::<Signal>().ok()?,
                lead: Duration::from_millis(c.lead_ms),
                whole_job: c.whole_job,
            })
        }),
        checkpoint_done: record
            .checkpoint
            .as_ref()
            .map(|c| c.dir.join(gantry_model::checkpoint::DONE_FILE)),
        subreaper,
        contact_lease: record.contact_lease.clone(),
    };
    let stop_reason = || match dir.read_stop_reason() {
        Some(ExitReason::Preempted) => (ExitReason::Preempted, dir.read_stop_warning()),
        Some(ExitReason::NodeShutdown) => (ExitReason::NodeShutdown, None),
        _ => (ExitReason::Cancelled, None),
    };
    let announce = |why: Warning| {
        if let Err(e) = dir.write_warning(why) {
            log(&format!("cannot tell the job why it is warned: {e}"));
        }
    };
    let end = watch_job(
        Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
        limits,
        signals,
        stop_reason,
        announce,
    );
    // The child was reaped by `watch_job`; dropping the handle does nothing more.
    drop(child);
    status_of(&end, record, start_ms, now_ms())
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string())
}

/// `10s`, `0.5s`, `2:30`, `1:00:00`: for limits and grace periods in messages.
fn short_duration(ms: u64) -> String {
    if !ms.is_multiple_of(1000) {
        format!("{}s", ms as f64 / 1000.0)
    } else if ms >= 60_000 {
        format_duration_ms(ms)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// The record of how the job ended.
fn status_of(end: &JobEnd, record: &LaunchRecord, start_ms: u64, end_ms: u64) -> JobStatus {
    let (exit_code, signal, how) = match &end.process {
        Ok(ProcessEnd::Code(code)) => (Some(*code), None, format!("exited with code {code}")),
        Ok(ProcessEnd::Signal(sig)) => {
            (None, Some(*sig), format!("killed by {}", signal_name(*sig)))
        }
        Err(e) => {
            return JobStatus {
                reason: ExitReason::Lost,
                exit_code: None,
                signal: None,
                message: e.clone(),
                start_ms,
                end_ms,
                after_time_limit_warning: end.warned_of_limit,
            };
        }
    };
    let escalation = if end.killed {
        format!(
            "; SIGKILL after the {} grace period",
            short_duration(record.kill_grace_ms)
        )
    } else {
        String::new()
    };
    let (reason, message) = match end.stopped {
        None => (ExitReason::Exited, how),
        Some(ExitReason::Timeout) => (
            ExitReason::Timeout,
            format!(
                "time limit of {} reached: {how}{escalation}",
                short_duration(record.time_limit_ms)
            ),
        ),
        Some(ExitReason::NodeShutdown) => (
            ExitReason::NodeShutdown,
            format!("stopped because the node daemon shut down: {how}{escalation}"),
        ),
        Some(ExitReason::Fenced) => (
            ExitReason::Fenced,
            format!(
                "stopped because the node lost contact with the scheduler for so long that its \
                 GPUs may have been given to other jobs: {how}{escalation}"
            ),
        ),
        Some(ExitReason::Preempted) => (
            ExitReason::Preempted,
            format!("preempted: {how}{escalation}"),
        ),
        Some(reason) => (reason, format!("cancelled: {how}{escalation}")),
    };
    JobStatus {
        reason,
        exit_code,
        signal,
        message,
        start_ms,
        end_ms,
        after_time_limit_warning: end.warned_of_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobdir::ProgramRecord;

    fn record() -> LaunchRecord {
        LaunchRecord {
            job_id: 1,
            attempt: 0,
            node: "n".into(),
            name: "j".into(),
            user: "u".into(),
            uid: 0,
            gid: 0,
            program: ProgramRecord::Command {
                argv: vec!["true".into()],
            },
            work_dir: "/".into(),
            stdout_path: "/dev/null".into(),
            stderr_path: "/dev/null".into(),
            env: vec![],
            gpus: vec![],
            cpus: 1,
            mem_mib: 1,
            time_limit_ms: 60_000,
            node_rank: 0,
            nodes: vec!["n".into()],
            submit_dir: "/".into(),
            kill_grace_ms: 10_000,
            contact_lease: None,
            checkpoint: None,
            job_token: String::new(),
            servers: String::new(),
            append_output: false,
        }
    }

    #[test]
    fn statuses_say_why_and_how() {
        let end = |process, stopped, killed| JobEnd {
            process: Ok(process),
            stopped,
            killed,
            warned_of_limit: false,
        };
        let s = status_of(&end(ProcessEnd::Code(3), None, false), &record(), 1, 2);
        assert_eq!(
            (s.reason, s.exit_code, s.signal),
            (ExitReason::Exited, Some(3), None)
        );
        assert_eq!(s.message, "exited with code 3");

        let s = status_of(
            &end(ProcessEnd::Signal(9), Some(ExitReason::Timeout), true),
            &record(),
            1,
            2,
        );
        assert_eq!(
            (s.reason, s.exit_code, s.signal),
            (ExitReason::Timeout, None, Some(9))
        );
        assert_eq!(
            s.message,
            "time limit of 1:00 reached: killed by SIGKILL; SIGKILL after the 10s grace period"
        );

        let s = status_of(
            &end(ProcessEnd::Signal(15), Some(ExitReason::Cancelled), false),
            &record(),
            1,
            2,
        );
        assert_eq!(s.reason, ExitReason::Cancelled);
        assert_eq!(s.message, "cancelled: killed by SIGTERM");

        let s = status_of(
            &end(ProcessEnd::Code(0), Some(ExitReason::NodeShutdown), false),
            &record(),
            1,
            2,
        );
        assert_eq!(s.reason, ExitReason::NodeShutdown);

        let lost = JobEnd {
            process: Err("gone".into()),
            stopped: None,
            killed: false,
            warned_of_limit: false,
        };
        assert_eq!(status_of(&lost, &record(), 1, 2).reason, ExitReason::Lost);
    }

    #[test]
    fn grace_periods_read_naturally() {
        assert_eq!(short_duration(10_000), "10s");
        assert_eq!(short_duration(500), "0.5s");
        assert_eq!(short_duration(150_000), "2:30");
    }
}
