//! The contact lease: how long this node's jobs may keep running without a word from the
//! scheduler.
//!
//! The leader declares a node lost when it has heard nothing from it for its heartbeat
//! timeout, and then hands the node's GPUs to other jobs. A node that is cut off cannot be
//! told, so it must stop its jobs on its own before that moment, or two jobs would share a
//! GPU. Every message from the leader renews the lease; the node daemon writes it to a file
//! in its data dir and each job's supervisor enforces it: SIGTERM at `stop_at`, SIGKILL by
//! `kill_by`. Supervisors outlive the daemon, so a node whose daemon crashed is fenced too.
//!
//! Times are `CLOCK_BOOTTIME` milliseconds: shared by every process of the machine and
//! immune to wall-clock steps. A job never outlives a reboot, so neither need the lease.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};
use tracing::warn;

use crate::jobdir::{JobDirError, write_atomic};

/// The lease file in the node daemon's data dir.
pub const FILE: &str = "contact-lease";

/// The leader checks for silent nodes about once a second, and messages take time to travel:
/// the node gives up this much of the timeout.
const SLACK: Duration = Duration::from_secs(1);

/// When the jobs on this node must stop unless the scheduler is heard from again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactLease {
    /// SIGTERM goes to every job from here on.
    pub stop_at_ms: u64,
    /// No process of any job may live past this.
    pub kill_by_ms: u64,
}

impl ContactLease {
    /// The lease after a message from a scheduler that declares nodes lost after `timeout`
    /// of silence and expects a heartbeat every `interval`, heard at `heard_ms`. The leader
    /// may have last heard from the node up to an interval before that, and it may start its
    /// count then: the jobs must be dead by `heard + timeout - interval - slack`. They get
    /// their kill grace before that, at most half of the lease.
    pub fn after(
        heard_ms: u64,
        timeout: Duration,
        interval: Duration,
        kill_grace: Duration,
    ) -> ContactLease {
        let total = timeout.saturating_sub(interval).saturating_sub(SLACK);
        let grace = kill_grace.min(total / 2);
        ContactLease {
            stop_at_ms: heard_ms.saturating_add(millis(total - grace)),
            kill_by_ms: heard_ms.saturating_add(millis(total)),
        }
    }

    /// How long after a message jobs start to be stopped.
    pub fn stop_after(&self, heard_ms: u64) -> Duration {
        Duration::from_millis(self.stop_at_ms.saturating_sub(heard_ms))
    }

    /// Writes the lease where supervisors read it. Not fsynced: a machine crash ends the
    /// jobs as well.
    pub fn store(&self, data_dir: &Path) -> Result<(), JobDirError> {
        let text = format!("{} {}\n", self.stop_at_ms, self.kill_by_ms);
        write_atomic(&data_dir.join(FILE), text.as_bytes(), 0o644, false)
    }

    /// The lease at `path`: `Ok(None)` when there is none (no scheduler has named a
    /// timeout), `Err` with a description when the file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Option<ContactLease>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next(), fields.next()) {
            (Some(Ok(stop_at_ms)), Some(Ok(kill_by_ms)), None) => Ok(Some(ContactLease {
                stop_at_ms,
                kill_by_ms,
            })),
            _ => Err(format!("malformed contact lease in {}", path.display())),
        }
    }

    /// Removes the lease: the scheduler names no timeout, so nothing is fenced.
    pub fn clear(data_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(data_dir.join(FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The node daemon's side: renews the lease on every message from the leader.
#[derive(Debug)]
pub(crate) struct Renewal {
    data_dir: PathBuf,
    kill_grace: Duration,
    /// The leader's heartbeat timeout and interval; `None` until a scheduler names a timeout.
    terms: Option<(Duration, Duration)>,
}

impl Renewal {
    pub(crate) fn new(data_dir: &Path, kill_grace: Duration) -> Renewal {
        Renewal {
            data_dir: data_dir.to_path_buf(),
            kill_grace,
            terms: None,
        }
    }

    /// Takes the terms a leader named at registration (a zero timeout: none, so no fencing)
    /// and renews the lease. Returns how long jobs survive without contact under them.
    pub(crate) fn registered(&mut self, timeout: Duration, interval: Duration) -> Option<Duration> {
        if timeout.is_zero() {
            self.terms = None;
            if let Err(e) = ContactLease::clear(&self.data_dir) {
                warn!(error = %e, "cannot remove the contact lease");
            }
            return None;
        }
        self.terms = Some((timeout, interval));
        self.renew().map(|(lease, heard)| lease.stop_after(heard))
    }

    /// The leader was heard from: jobs may run for another lease.
    pub(crate) fn renew(&self) -> Option<(ContactLease, u64)> {
        let (timeout, interval) = self.terms?;
        let heard = boottime_ms();
        let lease = ContactLease::after(heard, timeout, interval, self.kill_grace);
        if let Err(e) = lease.store(&self.data_dir) {
            // The old lease stays: jobs are stopped early rather than late.
            warn!(error = %e, "cannot renew the contact lease");
        }
        Some((lease, heard))
    }
}

/// Milliseconds of `CLOCK_BOOTTIME`.
pub fn boottime_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        let ms = i128::from(t.tv_sec()) * 1000 + i128::from(t.tv_nsec()) / 1_000_000;
        u64::try_from(ms).unwrap_or(0)
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn jobs_are_dead_an_interval_and_the_slack_before_the_leader_may_reuse_their_gpus() {
        // Defaults: 30 s timeout, 2 s heartbeats, 10 s kill grace.
        let lease = ContactLease::after(1_000, 30 * S, 2 * S, 10 * S);
        assert_eq!(lease.kill_by_ms, 1_000 + 27_000);
        assert_eq!(lease.stop_at_ms, 1_000 + 17_000);
        assert_eq!(lease.stop_after(1_000), 17 * S);
    }

    #[test]
    fn a_long_kill_grace_is_cut_to_half_the_lease() {
        let lease = ContactLease::after(0, 4 * S, S / 2, 10 * S);
        assert_eq!(lease.kill_by_ms, 2_500);
        assert_eq!(lease.stop_at_ms, 1_250);
        // A timeout shorter than interval and slack stops jobs at once rather than late.
        let lease = ContactLease::after(500, S, S, S);
        assert_eq!((lease.stop_at_ms, lease.kill_by_ms), (500, 500));
    }

    #[test]
    fn the_lease_survives_a_round_trip_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert_eq!(ContactLease::load(&path), Ok(None));
        let lease = ContactLease {
            stop_at_ms: 5,
            kill_by_ms: 9,
        };
        lease.store(dir.path()).unwrap();
        assert_eq!(ContactLease::load(&path), Ok(Some(lease)));
        for bad in ["", "5", "5 x", "5 9 13", "-1 2"] {
            std::fs::write(&path, bad).unwrap();
            assert!(ContactLease::load(&path).is_err(), "{bad:?}");
        }
        ContactLease::clear(dir.path()).unwrap();
        ContactLease::clear(dir.path()).unwrap();
        assert_eq!(ContactLease::load(&path), Ok(None));
    }

    #[test]
    fn boottime_moves_forward() {
        let a = boottime_ms();
        assert!(a > 0);
        assert!(boottime_ms() >= a);
    }
}
