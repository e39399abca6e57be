//! Drain deadlines (`gantry drain --deadline DUR`) and maintenance reservations: the leader
//! watches the clock and, once a drained node's deadline has passed or a maintenance window
//! opened, proposes the command that requeues the jobs still there. Apply checks the time
//! against the command's own.

use std::time::Duration;

use gantry_state::Command;

use crate::clock::now_ms;
use crate::engine::Engine;

/// How often the leader looks: deadlines are minutes, a second late is nothing.
const TICK: Duration = Duration::from_secs(1);

pub async fn requeue_at_deadlines(engine: Engine) {
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
        let opened: Vec<String> = engine.read(|s| {
            s.reservations(now)
                .filter(|r| r.maintenance && !r.started && r.start_ms <= now)
                .map(|r| r.name.clone())
                .collect()
        });
        let mut commands: Vec<Command> = opened
            .into_iter()
            .map(|name| {
                tracing::info!(reservation = %name, "maintenance window opens: requeuing the jobs still on its nodes");
                Command::ReservationStarted { name, now_ms: now }
            })
            .collect();
        if !due.is_empty() {
            tracing::info!(nodes = ?due, "drain deadline passed: requeuing the jobs still there");
            commands.push(Command::DrainDeadline {
                nodes: due,
                now_ms: now,
            });
        }
        if commands.is_empty() {
            continue;
        }
        if let Err(e) = engine.propose_all(commands).await {
            tracing::debug!(error = %e, "drain deadlines or maintenance starts not recorded");
        }
    }
}
