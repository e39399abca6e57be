//! Which node daemons are alive: the time each was last heard from, and which session is
//! current. Liveness is the shell's business: only its verdict (`NodeLost`) enters the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Liveness {
    nodes: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    at: Instant,
    session: u64,
    /// Where the session's daemon connects from, while its stream is open.
    open_from: Option<String>,
}

impl Liveness {
    /// A new session for `node`, from `peer`, starts; it supersedes any earlier one.
    /// Returns its number.
    pub fn connected(&self, node: &str, peer: &str) -> u64 {
        let mut nodes = self.lock();
        let session = nodes.get(node).map_or(1, |s| s.session + 1);
        nodes.insert(
            node.to_string(),
            Seen {
                at: Instant::now(),
                session,
                open_from: Some(peer.to_string()),
            },
        );
        session
    }

    /// Session `session` of `node` has ended (its stream closed).
    pub fn ended(&self, node: &str, session: u64) {
        if let Some(seen) = self.lock().get_mut(node).filter(|s| s.session == session) {
            seen.open_from = None;
        }
    }

    /// Where the daemon of `node` connects from, while its session is open.
    pub fn open_session(&self, node: &str) -> Option<String> {
        self.lock().get(node).and_then(|s| s.open_from.clone())
    }

    /// The node said something on session `session`.
    pub fn heard(&self, node: &str, session: u64) {
        if let Some(seen) = self.lock().get_mut(node).filter(|s| s.session == session) {
            seen.at = Instant::now();
        }
    }

    pub fn is_current(&self, node: &str, session: u64) -> bool {
        self.lock().get(node).is_some_and(|s| s.session == session)
    }

    /// How long since the node was last heard from, counting from `started` at the
    /// earliest (when this replica began to lead: what it heard before does not count).
    pub fn silent_for(&self, node: &str, started: Instant) -> Duration {
        let at = self.lock().get(node).map_or(started, |s| s.at.max(started));
        at.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Declares lost every up node silent for longer than `timeout`: its jobs end NODE_FAIL.
/// Nodes get a full timeout after this daemon starts, to reconnect after a restart.
pub async fn expire_silent_nodes(
    engine: crate::engine::Engine,
    liveness: std::sync::Arc<Liveness>,
    timeout: Duration,
) {
    let tick = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        // Only the leader judges nodes, and gives each a full timeout from when it began to
        // lead: node daemons need that long to find a new leader.
        let role = engine.role();
        let Some(started) = role.leader_since.filter(|_| role.is_leader) else {
            continue;
        };
        let up: Vec<String> =
            engine.read(|s| s.nodes().filter(|n| n.up).map(|n| n.name.clone()).collect());
        let lost: Vec<gantry_state::Command> = up
            .into_iter()
            .filter(|n| liveness.silent_for(n, started) > timeout)
            .map(|node| {
                tracing::warn!(node = %node, ?timeout, "node silent too long: declaring it lost");
                gantry_state::Command::NodeLost {
                    node,
                    reason: format!("no heartbeat for {}", humantime::format_duration(timeout)),
                    now_ms: crate::clock::now_ms(),
                }
            })
            .collect();
        if !lost.is_empty()
            && let Err(e) = engine.propose_all(lost).await
        {
            tracing::debug!(error = %e, "lost nodes not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_supersedes_the_old_one() {
        let l = Liveness::default();
        let first = l.connected("n1", "10.0.0.1:5000");
        let second = l.connected("n1", "10.0.0.1:5001");
        assert!(!l.is_current("n1", first));
        assert!(l.is_current("n1", second));
        // The first session's end does not close the second.
        l.ended("n1", first);
        assert_eq!(l.open_session("n1").as_deref(), Some("10.0.0.1:5001"));
        l.ended("n1", second);
        assert_eq!(l.open_session("n1"), None);
        assert!(l.silent_for("n1", Instant::now()) < Duration::from_secs(5));
        let started = Instant::now() - Duration::from_secs(60);
        assert!(l.silent_for("never", started) >= Duration::from_secs(60));
    }
}
