//! Waiting for the job while enforcing its time limit and stop requests, then making sure
//! nothing of it is left behind.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::signals::SignalWatch;
use crate::contact::{ContactLease, boottime_ms};
use crate::jobdir::{ExitReason, Warning};
use crate::procfs;

/// How the job's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    Code(i32),
    Signal(i32),
}

/// What the wait loop saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    /// `Err` when the supervisor lost track of its child (should not happen).
    pub process: Result<ProcessEnd, String>,
    /// Set when the supervisor stopped the job, with the reason.
    pub stopped: Option<ExitReason>,
    /// The grace period ran out and the group got SIGKILL.
    pub killed: bool,
    /// The job got its checkpoint signal for its time limit before it ended.
    pub warned_of_limit: bool,
}

/// The job's checkpoint signal, and who gets it.
#[derive(Debug, Clone, Copy)]
pub struct Warn {
    pub signal: Signal,
    /// Sent that long before the time limit, and that long before SIGTERM when the job is
    /// stopped to run again.
    pub lead: Duration,
    /// Its whole process group; otherwise its main process only (the batch shell, or the
    /// command), as launchers and a shell's helpers have no handler and would die of it.
    pub whole_job: bool,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub time_limit: Option<Duration>,
    pub grace: Duration,
    /// The job's checkpoint signal, when it declared one.
    pub warning: Option<Warn>,
    /// Touched by `gantry checkpoint done` in the job: once touched after a preemption's
    /// warning, the SIGTERM comes at once instead of at the end of the lead.
    pub checkpoint_done: Option<PathBuf>,
    /// The supervisor is a child subreaper: the job's orphans are its children.
    pub subreaper: bool,
    /// The node's contact lease file: the job is stopped when it runs out.
    pub contact_lease: Option<PathBuf>,
}

/// How often the contact lease is read. Small against the lease's slack (a second).
const LEASE_POLL: Duration = Duration::from_millis(250);

/// Reads the contact lease at `path`; `Some(kill_by)` once it has run out, with the instant
/// by which nothing of the job may remain.
fn lease_ran_out(path: &Path, now: Instant, warned: &mut bool) -> Option<Instant> {
    match ContactLease::load(path) {
        Ok(Some(lease)) => {
            let boot = boottime_ms();
            (boot >= lease.stop_at_ms)
                .then(|| now + Duration::from_millis(lease.kill_by_ms.saturating_sub(boot)))
        }
        Ok(None) => None,
        Err(e) => {
            if !*warned {
                super::log(&format!("contact lease ignored: {e}"));
                *warned = true;
            }
            None
        }
    }
}

/// When the job last touched `path` (`gantry checkpoint done`); `None` if it never did.
fn touched(path: Option<&Path>) -> Option<std::time::SystemTime> {
    path.and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
}

enum Reap {
    Alive,
    Ended(ProcessEnd),
}

/// Reaps every child that has ended (the supervisor is a subreaper, so orphans of the job
/// land here too) and reports whether `job` was among them.
fn reap(job: Pid) -> Result<Reap, String> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == job => {
                return Ok(Reap::Ended(ProcessEnd::Code(code)));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == job => {
                return Ok(Reap::Ended(ProcessEnd::Signal(signal as i32)));
            }
            Ok(WaitStatus::StillAlive) => return Ok(Reap::Alive),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("lost track of the job's process {job}: {e}")),
        }
    }
}

/// Waits for the job (pid `job`, also its process group) to end. On the time limit or on
/// SIGTERM/SIGINT: SIGTERM to the group, SIGKILL after the grace period. `stop_reason` says
/// why a SIGTERM came (the daemon leaves a `stop-reason` file before signalling), and for a
/// stop to run again why (`stop-warning`). A job with a checkpoint signal gets it its lead
/// before the time limit, and on a stop to run again its lead before the SIGTERM; `announce`
/// tells it why just before (`GANTRY_WARNING_FILE`).
pub fn watch_job(
    job: Pid,
    limits: Limits,
    signals: &SignalWatch,
    stop_reason: impl Fn() -> (ExitReason, Option<Warning>),
    announce: impl Fn(Warning),
) -> JobEnd {
    let started = Instant::now();
    let limit_at = limits.time_limit.map(|d| started + d);
    // When the checkpoint signal is due before the limit (at once for a limit shorter than
    // the lead); `None` once sent or without one.
    let mut warn_at = match (limits.warning, limit_at) {
        (Some(w), Some(limit)) => Some(limit.checked_sub(w.lead).unwrap_or(started)),
        _ => None,
    };
    let mut warned_of_limit = false;
    let warn = |w: Warn, why: Warning| {
        announce(why);
        let _ = if w.whole_job {
            killpg(job, w.signal)
        } else {
            nix::sys::signal::kill(job, w.signal)
        };
    };
    // A preemption: warned now, SIGTERM at this instant.
    let mut term_at: Option<Instant> = None;
    // Whatever the job does once warned of a preemption, it was preempted.
    let mut preempting = false;
    // The done file as it was when the warning went out: any change after is the job's word.
    // (Compared with the file's own earlier time, not the clock: file times are coarse.)
    let mut done_before: Option<Option<std::time::SystemTime>> = None;
    let mut stopped: Option<(ExitReason, Instant)> = None;
    let mut killed = false;
    let mut lease_read_at: Option<Instant> = None;
    let mut lease_warned = false;
    let begin_stop = |reason: ExitReason| {
        let _ = killpg(job, Signal::SIGTERM);
        (reason, Instant::now() + limits.grace)
    };
    let process = loop {
        match reap(job) {
            Ok(Reap::Ended(end)) => break Ok(end),
            Ok(Reap::Alive) => {}
            Err(e) => break Err(e),
        }
        let now = Instant::now();
        if let (Some(at), Some(w)) = (warn_at, limits.warning)
            && now >= at
            && stopped.is_none()
            && term_at.is_none()
        {
            warn(w, Warning::TimeLimit);
            warn_at = None;
            warned_of_limit = true;
        }
        if stopped.is_none() && limit_at.is_some_and(|at| now >= at) {
            term_at = None;
            stopped = Some(begin_stop(ExitReason::Timeout));
        }
        if term_at.is_some()
            && let Some(before) = done_before
            && touched(limits.checkpoint_done.as_deref()) != before
        {
            term_at = Some(now);
        }
        if stopped.is_none() && term_at.is_some_and(|at| now >= at) {
            term_at = None;
            stopped = Some(begin_stop(ExitReason::Preempted));
        }
        if let Some(path) = &limits.contact_lease
            && !killed
            && lease_read_at.is_none_or(|at| now >= at + LEASE_POLL)
        {
            lease_read_at = Some(now);
            if let Some(kill_by) = lease_ran_out(path, now, &mut lease_warned) {
                // Whatever else is stopping it, the job may not outlive the lease.
                let (reason, kill_at) = stopped.unwrap_or_else(|| begin_stop(ExitReason::Fenced));
                stopped = Some((reason, kill_at.min(kill_by)));
            }
        }
        if let Some((_, kill_at)) = stopped
            && !killed
            && now >= kill_at
        {
            let _ = killpg(job, Signal::SIGKILL);
            killed = true;
        }
        let next_deadline = match stopped {
            None => [limit_at, warn_at, term_at].into_iter().flatten().min(),
            Some((_, kill_at)) if !killed => Some(kill_at),
            Some(_) => None,
        };
        let lease_check = lease_read_at
            .filter(|_| limits.contact_lease.is_some() && !killed)
            .map(|at| at + LEASE_POLL)
            // While a preempted job checkpoints, look for its word as often.
            .or_else(|| term_at.map(|_| now + LEASE_POLL));
        let next_deadline = match (next_deadline, lease_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // SIGCHLD wakes us when the job ends; a signal that came meanwhile returns at once.
        if signals.wait(next_deadline.map(|at| at.saturating_duration_since(now)))
            && stopped.is_none()
            && term_at.is_none()
        {
            match (stop_reason(), limits.warning) {
                // Checkpoint first; the SIGTERM follows after the lead.
                ((ExitReason::Preempted, why), Some(w)) => {
                    done_before = Some(touched(limits.checkpoint_done.as_deref()));
                    warn(w, why.unwrap_or(Warning::Preemption));
                    warn_at = None;
                    term_at = Some(Instant::now() + w.lead);
                    preempting = true;
                }
                ((reason, _), _) => stopped = Some(begin_stop(reason)),
            }
        }
    };
    kill_leftovers(job, limits.subreaper);
    JobEnd {
        process,
        stopped: stopped
            .map(|(reason, _)| reason)
            .or(preempting.then_some(ExitReason::Preempted)),
        killed,
        warned_of_limit,
    }
}

/// A job is over when its main process is: SIGKILL whatever is left in its process group and
/// reap it, so that no process of an ended job survives. As a subreaper we wait until the group
/// is empty (its orphans are our children, so their zombies get reaped too); otherwise until
/// only zombies remain, which are init's to reap. Bounded, in case a process hangs in the
/// kernel.
fn kill_leftovers(group: Pid, subreaper: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pause = Duration::from_millis(1);
    loop {
        if killpg(group, Signal::SIGKILL) == Err(Errno::ESRCH) {
            return;
        }
        let _ = reap(Pid::from_raw(0));
        let leader = u32::try_from(group.as_raw()).unwrap_or(0);
        if !subreaper && procfs::live_group_members(leader).is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "gantry-supervisor: processes of group {group} are still there after SIGKILL"
            );
            return;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
