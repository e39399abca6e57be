//! Drain deadlines (`gantry drain --deadline DUR`): the leader watches the clock and, once a
//! drained node's deadline has passed, proposes `DrainDeadline` so the jobs still running
//! there are requeued. Apply checks the deadline against the command's own time.

use std::time::Duration;

use gantry_state::Command;

use crate::clock::now_ms;
use crate::engine::Engine;

/// How often the leader looks: deadlines are minutes, a second late is nothing.
const TICK: Duration = Duration::from_secs(1);

pub async fn requeue_at_drain_deadlines(engine: Engine) {
    loop {
        tokio::time::sleep(TICK).await;
        if !engine.role().is_leader {
            continue;
        }
        let now = now_ms();
        let due: Vec<String> = engine.read(|s| {
            s.nodes()
                .filter(|n| !n.jobs.is_empty())
                .filter(|n| {
                    n.drain
                        .as_ref()
                        .and_then(|d| d.deadline_ms)
                        .is_some_and(|at| at <= now)
                })
                .map(|n| n.name.clone())
                .collect()
        });
        if due.is_empty() {
            continue;
        }
        tracing::info!(nodes = ?due, "drain deadline passed: requeuing the jobs still there");
        let command = Command::DrainDeadline {
            nodes: due,
            now_ms: now,
        };
        if let Err(e) = engine.propose(command).await {
            tracing::debug!(error = %e, "drain deadline not recorded");
        }
    }
}
