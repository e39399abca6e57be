//! The session lease: how long a node daemon listens to a silent scheduler before it takes
//! that replica for gone and looks for the leader at the next address.
//!
//! A frozen (SIGSTOP) or partitioned leader keeps its TCP connections open: the node's
//! reports go into kernel buffers and the stream never errors. The scheduler sends the
//! node's `Assignments` at least once per heartbeat interval even when nothing changed, so
//! silence is the only sign the node gets.

use std::time::Duration;

/// Shared with the scheduler, which checks its heartbeat timeout against the lease.
pub use gantry_model::node::{
    MIN_SESSION_LEASE as MIN_LEASE, SESSION_LEASE_INTERVALS as LEASE_INTERVALS,
    session_lease as lease_for,
};

/// The longest heartbeat interval the node accepts from a scheduler: beyond it, deadlines
/// stop being representable and the node would never notice a silent scheduler.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

/// The heartbeat interval a scheduler asks for in `Registered` (`0`: it names none), capped
/// at [`MAX_HEARTBEAT`].
pub fn heartbeat_interval(asked_ms: u64, default: Duration) -> Duration {
    match asked_ms {
        0 => default,
        ms => Duration::from_millis(ms).min(MAX_HEARTBEAT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_three_intervals_but_never_under_three_seconds() {
        assert_eq!(lease_for(Duration::from_secs(5)), Duration::from_secs(15));
        assert_eq!(
            lease_for(Duration::from_millis(1001)),
            Duration::from_millis(3003)
        );
        assert_eq!(lease_for(Duration::from_millis(1000)), MIN_LEASE);
        assert_eq!(lease_for(Duration::from_millis(200)), MIN_LEASE);
        assert_eq!(lease_for(Duration::ZERO), MIN_LEASE);
        assert_eq!(lease_for(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn the_interval_asked_for_is_taken_within_bounds() {
        let default = Duration::from_secs(5);
        assert_eq!(heartbeat_interval(0, default), default);
        assert_eq!(heartbeat_interval(200, default), Duration::from_millis(200));
        assert_eq!(heartbeat_interval(u64::MAX, default), MAX_HEARTBEAT);
    }
}
