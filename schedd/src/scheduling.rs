//! The scheduling loop: whenever the state changes, ask the policies what to start and
//! propose their decisions. Decisions are verified again when applied, so a plan made on
//! a state that has moved on is rejected rather than overcommitting.
//!
//! A full pass looks at every pending job. When all that changed since the last one is new
//! submissions (and the starts the loop itself proposed), the pass's [`Plan`] decides each
//! new job alone — what a new pass would decide for it — at the cost of one job instead of
//! the whole queue. Anything else, or an arrival the plan cannot decide, gets a full pass.

use std::sync::Arc;
use std::time::Duration;

use gantry_policies::{ClusterView, Decisions, Plan, Topology};
use gantry_state::{Command, Outcome};
use tracing::{debug, warn};

use crate::clock::now_ms;
use crate::engine::{Engine, EngineError};
use crate::explain::{Explanations, arrived, explain};

/// How often a pass runs even when nothing changed (reasons mentioning time stay fresh), and
/// so how old a plan may get: its priorities and free times are judged at its pass.
const IDLE_PASS: Duration = Duration::from_secs(1);
/// The shortest time between full passes: a pass looks at every pending job, so under a
/// storm of changes one pass per few milliseconds (each seeing many) beats one per change.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(5);
/// And passes may use at most a fifth of the time: with a long queue a pass costs
/// milliseconds, which must not starve the Raft loop and the API of CPU.
const PASS_DUTY: u32 = 5;

/// The last full pass's plan, and the state it was made on.
struct Planned {
    plan: Plan,
    /// [`gantry_state::StateMachine::changed_at`] when the pass read the state.
    changed_at: u64,
    made: tokio::time::Instant,
}

/// What to do with the state as it is now.
enum Step {
    /// Decide these jobs, which arrived since the plan, from it.
    Arrivals(Vec<gantry_policies::PendingJob>),
    /// A full pass over this view.
    Pass(Box<ClusterView>, u64),
}

pub async fn run(engine: Engine, explanations: Explanations, topology: Arc<Topology>) {
    let mut applied = engine.subscribe();
    let mut role = engine.subscribe_role();
    let mut planned: Option<Planned> = None;
    loop {
        // Only the leader schedules; a follower waits to become one.
        if !role.borrow_and_update().is_leader {
            planned = None;
            explanations
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            if role.changed().await.is_err() {
                return;
            }
            continue;
        }
        let step_started = tokio::time::Instant::now();
        applied.borrow_and_update();
        if engine.read(|s| s.cluster().is_empty()) {
            // A new cluster's first leader names it: 128 random bits, drawn here so that
            // apply stays deterministic.
            match engine
                .propose(Command::NameCluster { name: run_token() })
                .await
            {
                Ok(_) => {}
                Err(EngineError::Stopped) => return,
                Err(e) => {
                    debug!(error = %e, "the cluster is not named yet");
                    tokio::time::sleep(MIN_PASS_INTERVAL * 20).await;
                }
            }
            continue;
        }
        let now = now_ms();
        let step = engine.read(|s| match &planned {
            Some(p) if p.changed_at == s.changed_at() && p.made.elapsed() < IDLE_PASS => {
                Step::Arrivals(s.pending_after(p.plan.newest()))
            }
            _ => Step::Pass(Box::new(s.cluster_view(now)), s.changed_at()),
        });
        let (decisions, full) = match step {
            Step::Arrivals(jobs) => match decide_arrivals(&mut planned, jobs, now, &explanations) {
                Some(decisions) => (decisions, false),
                // The loop comes straight back for a full pass.
                None => continue,
            },
            Step::Pass(view, changed_at) => {
                let plan = Plan::new(ClusterView {
                    topology: topology.clone(),
                    ..*view
                });
                *explanations.write().unwrap_or_else(|p| p.into_inner()) =
                    explain(plan.decisions(), plan.view().now_ms);
                // Only what is proposed: the rest of a pass's decisions is explanations.
                let decisions = Decisions {
                    starts: plan.decisions().starts.clone(),
                    preempt: plan.decisions().preempt.clone(),
                    moved: plan.decisions().moved.clone(),
                    ..Decisions::default()
                };
                planned = Some(Planned {
                    plan,
                    changed_at,
                    made: step_started,
                });
                (decisions, true)
            }
        };
        let step_time = step_started.elapsed();
        match propose(&engine, &decisions).await {
            Proposed::Nothing => {}
            Proposed::Applied { any, all } => {
                // A rejected decision leaves the plan holding what the state does not.
                if !all {
                    planned = None;
                }
                if any {
                    continue;
                }
            }
            Proposed::LeaderMoved => planned = None,
            Proposed::Stopped => return,
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(IDLE_PASS) => {}
        }
        if full {
            let rest = MIN_PASS_INTERVAL.max(step_time * PASS_DUTY);
            tokio::time::sleep_until(step_started + rest).await;
        }
    }
}

/// Decides `jobs` from the plan, in id order, and adds their explanations. `None` (and the
/// plan dropped) when one needs a full pass; the decisions to propose otherwise.
fn decide_arrivals(
    planned: &mut Option<Planned>,
    jobs: Vec<gantry_policies::PendingJob>,
    now: u64,
    explanations: &Explanations,
) -> Option<Decisions> {
    let plan = &mut planned.as_mut()?.plan;
    let mut decisions = Decisions::default();
    for job in jobs {
        match plan.arrive(job, now) {
            Ok(arrival) => {
                debug!(
                    job = arrival.job,
                    rank = arrival.rank,
                    starts = arrival.start.is_some(),
                    "decided from the plan"
                );
                arrived(
                    &mut explanations.write().unwrap_or_else(|p| p.into_inner()),
                    &arrival,
                    now,
                );
                decisions.starts.extend(arrival.start);
            }
            Err(why) => {
                debug!(%why, "a full pass for an arrival");
                *planned = None;
                return None;
            }
        }
    }
    Some(decisions)
}

enum Proposed {
    /// Nothing to propose.
    Nothing,
    /// Proposed; `any`: some were applied, `all`: none was rejected.
    Applied { any: bool, all: bool },
    /// Not proposed: leadership moved while deciding.
    LeaderMoved,
    /// The log has stopped.
    Stopped,
}

/// A fresh secret for one run of a job (or a new cluster's name): 128 bits from the OS, as
/// hex. Drawn by the leader before proposing, so applying the command stays deterministic.
fn run_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Err(e) => {
            // No secret: the job simply cannot report checkpoints (an empty token never matches).
            tracing::warn!(error = %e, "cannot read /dev/urandom for a job token");
            String::new()
        }
    }
}

/// Proposes the requeues and starts of `decisions` and waits for them to be applied.
async fn propose(engine: &Engine, decisions: &Decisions) -> Proposed {
    if decisions.starts.is_empty() && decisions.preempt.is_empty() {
        return Proposed::Nothing;
    }
    let commands: Vec<Command> = engine.read(|s| {
        let attempt = |job| s.job(job).map_or(0, |j| j.attempt);
        let requeues = decisions.preempt.iter().map(|victim| {
            let job = victim.job;
            tracing::info!(job, for_job = victim.for_job, reason = %victim.reason, "preempting");
            Command::Requeue {
                job,
                attempt: attempt(job),
                for_job: victim.for_job,
                for_place: victim.place.clone(),
                reason: victim.reason.clone(),
                moved_to: decisions
                    .moved
                    .iter()
                    .find(|(moved, _)| *moved == job)
                    .map(|(_, place)| place.clone()),
                now_ms: now_ms(),
            }
        });
        let allocations = decisions.starts.iter().map(|start| Command::Allocate {
            job: start.job,
            attempt: attempt(start.job),
            shape: start.shape,
            parts: start.parts.clone(),
            token: run_token(),
            now_ms: now_ms(),
        });
        requeues.chain(allocations).collect()
    });
    match engine.propose_all(commands).await {
        Ok(outcomes) => {
            let (mut any, mut all) = (false, true);
            for outcome in outcomes {
                match outcome {
                    Outcome::Applied => any = true,
                    Outcome::Rejected(r) => {
                        all = false;
                        debug!(%r, "decision rejected at apply");
                    }
                    Outcome::Ignored(why) => {
                        all = false;
                        debug!(%why, "decision ignored at apply");
                    }
                    other => {
                        all = false;
                        warn!(?other, "unexpected outcome of a decision");
                    }
                }
            }
            Proposed::Applied { any, all }
        }
        Err(EngineError::Stopped) => {
            warn!("the scheduling loop stops: the log has stopped");
            Proposed::Stopped
        }
        // Leadership moved while deciding; the loop waits to lead again.
        Err(e) => {
            debug!(error = %e, "allocations not proposed");
            Proposed::LeaderMoved
        }
    }
}
