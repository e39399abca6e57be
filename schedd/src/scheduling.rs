//! The scheduling loop: whenever the state changes, ask the policies what to start and
//! propose their decisions. Decisions are verified again when applied, so a plan made on
//! a state that has moved on is rejected rather than overcommitting.

use std::time::Duration;

use std::sync::Arc;

use gantry_policies::{ClusterView, Topology};
use gantry_state::{Command, Outcome};
use tracing::{debug, warn};

use crate::clock::now_ms;
use crate::engine::{Engine, EngineError};
use crate::explain::{Explanations, explain};

/// How often a pass runs even when nothing changed (reasons mentioning time stay fresh).
const IDLE_PASS: Duration = Duration::from_secs(1);
/// The shortest time between passes: a pass looks at every pending job, so under a storm
/// of submits one pass per few milliseconds (each seeing many new jobs) beats one per submit.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(5);
/// And a pass may use at most a fifth of the time: with a long queue a pass costs
/// milliseconds, which must not starve the Raft loop and the API of CPU.
const PASS_DUTY: u32 = 5;

pub async fn run(engine: Engine, explanations: Explanations, topology: Arc<Topology>) {
    let mut applied = engine.subscribe();
    let mut role = engine.subscribe_role();
    loop {
        // Only the leader schedules; a follower waits to become one.
        if !role.borrow_and_update().is_leader {
            explanations
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            if role.changed().await.is_err() {
                return;
            }
            continue;
        }
        let pass_started = tokio::time::Instant::now();
        applied.borrow_and_update();
        let view = ClusterView {
            topology: topology.clone(),
            ..engine.read(|s| s.cluster_view(now_ms()))
        };
        let decisions = gantry_policies::schedule(&view);
        *explanations.write().unwrap_or_else(|p| p.into_inner()) = explain(&decisions, view.now_ms);
        let pass_time = pass_started.elapsed();
        let mut progressed = false;
        if !decisions.starts.is_empty() || !decisions.preempt.is_empty() {
            let commands: Vec<Command> = engine.read(|s| {
                let attempt = |job| s.job(job).map_or(0, |j| j.attempt);
                let requeues = decisions.preempt.iter().map(|(job, reason)| {
                    tracing::info!(job, %reason, "requeueing a borrower");
                    Command::Requeue {
                        job: *job,
                        attempt: attempt(*job),
                        reason: reason.clone(),
                        now_ms: now_ms(),
                    }
                });
                let allocations = decisions.starts.iter().map(|start| Command::Allocate {
                    job: start.job,
                    attempt: attempt(start.job),
                    shape: start.shape,
                    parts: start.parts.clone(),
                    now_ms: now_ms(),
                });
                requeues.chain(allocations).collect()
            });
            match engine.propose_all(commands).await {
                Ok(outcomes) => {
                    for outcome in outcomes {
                        match outcome {
                            Outcome::Applied => progressed = true,
                            Outcome::Rejected(r) => debug!(%r, "decision rejected at apply"),
                            Outcome::Ignored(why) => debug!(%why, "decision ignored at apply"),
                            other => warn!(?other, "unexpected outcome of a decision"),
                        }
                    }
                }
                Err(EngineError::Stopped) => {
                    warn!("the scheduling loop stops: the log has stopped");
                    return;
                }
                // Leadership moved while deciding; the loop waits to lead again.
                Err(e) => debug!(error = %e, "allocations not proposed"),
            }
        }
        if progressed {
            continue;
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(IDLE_PASS) => {}
        }
        tokio::time::sleep_until(pass_started + MIN_PASS_INTERVAL.max(pass_time * PASS_DUTY)).await;
    }
}
