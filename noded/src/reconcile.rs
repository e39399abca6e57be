//! What to do when the scheduler sends the complete set of jobs this node should run: a pure
//! function from (what runs here, what should run) to actions, so every rule is unit-tested
//! without processes or sockets.
//!
//! The scheduler is level-triggered: each `Assignments` is the whole desired set. A job dir is
//! the record that a `(job_id, attempt)` was launched here, so nothing is launched twice.

use std::collections::{BTreeMap, BTreeSet};

use gantry_proto as pb;

use gantry_model::Warning;

use crate::jobdir::{ExitReason, JobKey, JobStatus};

/// What the node knows about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalJob {
    /// Its supervisor is alive. `stopping`: a stop was requested already.
    Running { stopping: bool },
    /// It ended; kept until the scheduler stops assigning it (it has applied the end).
    Ended(JobStatus),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start it under a supervisor.
    Launch {
        key: JobKey,
        launch: Box<pb::Launch>,
    },
    /// SIGTERM, then SIGKILL after the grace period; with a `warning`, the job's checkpoint
    /// signal first (it is stopped to run again, for that reason).
    Stop {
        key: JobKey,
        reason: ExitReason,
        warning: Option<Warning>,
    },
    /// Delete its record: the scheduler has applied its end.
    Forget { key: JobKey },
    /// Record and report an end without running anything.
    Report {
        key: JobKey,
        reason: ExitReason,
        message: String,
    },
}

pub const NO_RECORD_MESSAGE: &str = "node has no record of this job";
pub const CANCELLED_BEFORE_START_MESSAGE: &str = "cancelled before it started";

/// The jobs a desired set names.
pub fn desired_keys(assignments: &pb::Assignments) -> BTreeSet<JobKey> {
    assignments
        .jobs
        .iter()
        .map(|a| JobKey::new(a.job_id, a.attempt))
        .collect()
}

/// The forget step: ended jobs that are not desired, in key order. Also run on its own when
/// a job ends, against the last desired set (see `Node::forget_undesired`): a job stopped
/// because it left the set ends only after that set was applied.
pub fn forgettable(local: &BTreeMap<JobKey, LocalJob>, desired: &BTreeSet<JobKey>) -> Vec<JobKey> {
    local
        .iter()
        .filter(|(key, job)| matches!(job, LocalJob::Ended(_)) && !desired.contains(key))
        .map(|(key, _)| *key)
        .collect()
}

/// The actions that bring `local` to the desired set `assignments`, in a deterministic order
/// (desired jobs in the order given, then stops and forgets of the others in key order).
pub fn reconcile(local: &BTreeMap<JobKey, LocalJob>, assignments: &pb::Assignments) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut desired = BTreeSet::new();
    for assignment in &assignments.jobs {
        let key = JobKey::new(assignment.job_id, assignment.attempt);
        if !desired.insert(key) {
            // A duplicate entry: the first one decided already.
            continue;
        }
        match (local.get(&key), &assignment.launch) {
            (None, Some(_)) if assignment.cancel => actions.push(Action::Report {
                key,
                reason: ExitReason::Cancelled,
                message: CANCELLED_BEFORE_START_MESSAGE.to_string(),
            }),
            (None, Some(launch)) => actions.push(Action::Launch {
                key,
                launch: Box::new(launch.clone()),
            }),
            (None, None) => actions.push(Action::Report {
                key,
                reason: ExitReason::Lost,
                message: NO_RECORD_MESSAGE.to_string(),
            }),
            (Some(LocalJob::Running { stopping: false }), _) if assignment.cancel => {
                let (reason, warning) = if assignment.preempt {
                    // A scheduler that names no reason is older than the word: a preemption.
                    let warning =
                        Warning::parse(&assignment.warning).unwrap_or(Warning::Preemption);
                    (ExitReason::Preempted, Some(warning))
                } else {
                    (ExitReason::Cancelled, None)
                };
                actions.push(Action::Stop {
                    key,
                    reason,
                    warning,
                });
            }
            // Running as it should, being stopped already, or ended and reported already.
            (Some(_), _) => {}
        }
    }
    for (key, job) in local {
        if !desired.contains(key) && *job == (LocalJob::Running { stopping: false }) {
            actions.push(Action::Stop {
                key: *key,
                reason: ExitReason::Cancelled,
                warning: None,
            });
        }
    }
    actions.extend(
        forgettable(local, &desired)
            .into_iter()
            .map(|key| Action::Forget { key }),
    );
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(name: &str) -> pb::Launch {
        pb::Launch {
            name: name.into(),
            ..Default::default()
        }
    }

    fn boxed(name: &str) -> Box<pb::Launch> {
        Box::new(launch(name))
    }

    fn assign(
        job_id: u64,
        attempt: u32,
        launch: Option<pb::Launch>,
        cancel: bool,
    ) -> pb::Assignment {
        pb::Assignment {
            job_id,
            attempt,
            epoch: 1,
            cancel,
            launch,
            preempt: false,
            warning: String::new(),
        }
    }

    fn ended() -> LocalJob {
        LocalJob::Ended(JobStatus::without_process(
            ExitReason::Exited,
            "exited with code 0",
        ))
    }

    fn run(local: &[(JobKey, LocalJob)], jobs: Vec<pb::Assignment>) -> Vec<Action> {
        reconcile(&local.iter().cloned().collect(), &pb::Assignments { jobs })
    }

    const K1: JobKey = JobKey {
        job_id: 1,
        attempt: 0,
    };
    const K2: JobKey = JobKey {
        job_id: 2,
        attempt: 0,
    };

    #[test]
    fn launches_a_new_job_that_comes_with_its_launch() {
        assert_eq!(
            run(&[], vec![assign(1, 0, Some(launch("a")), false)]),
            vec![Action::Launch {
                key: K1,
                launch: boxed("a")
            }]
        );
    }

    #[test]
    fn never_launches_a_known_job_twice() {
        let again = vec![assign(1, 0, Some(launch("a")), false)];
        assert_eq!(
            run(
                &[(K1, LocalJob::Running { stopping: false })],
                again.clone()
            ),
            vec![]
        );
        assert_eq!(run(&[(K1, ended())], again), vec![]);
    }

    #[test]
    fn a_new_attempt_is_a_new_job() {
        let actions = run(
            &[(K1, LocalJob::Running { stopping: false })],
            vec![assign(1, 1, Some(launch("a")), false)],
        );
        assert_eq!(
            actions,
            vec![
                Action::Launch {
                    key: JobKey::new(1, 1),
                    launch: boxed("a")
                },
                Action::Stop {
                    key: K1,
                    reason: ExitReason::Cancelled,
                    warning: None,
                },
            ]
        );
    }

    #[test]
    fn stops_a_running_job_on_cancel_once() {
        let cancel = vec![assign(1, 0, None, true)];
        assert_eq!(
            run(
                &[(K1, LocalJob::Running { stopping: false })],
                cancel.clone()
            ),
            vec![Action::Stop {
                key: K1,
                reason: ExitReason::Cancelled,
                warning: None,
            }]
        );
        assert_eq!(
            run(
                &[(K1, LocalJob::Running { stopping: true })],
                cancel.clone()
            ),
            vec![]
        );
        assert_eq!(run(&[(K1, ended())], cancel), vec![]);
    }

    #[test]
    fn a_preemption_stops_the_job_as_preempted() {
        let preempt = vec![pb::Assignment {
            preempt: true,
            ..assign(1, 0, None, true)
        }];
        assert_eq!(
            run(&[(K1, LocalJob::Running { stopping: false })], preempt),
            vec![Action::Stop {
                key: K1,
                reason: ExitReason::Preempted,
                warning: Some(Warning::Preemption),
            }]
        );
    }

    #[test]
    fn stops_a_running_job_that_is_no_longer_assigned() {
        let local = [
            (K1, LocalJob::Running { stopping: false }),
            (K2, LocalJob::Running { stopping: true }),
        ];
        assert_eq!(
            run(&local, vec![]),
            vec![Action::Stop {
                key: K1,
                reason: ExitReason::Cancelled,
                warning: None,
            }]
        );
    }

    #[test]
    fn forgets_an_ended_job_once_it_is_no_longer_assigned() {
        let local = [(K1, ended()), (K2, ended())];
        assert_eq!(
            run(&local, vec![assign(2, 0, None, false)]),
            vec![Action::Forget { key: K1 }]
        );
    }

    #[test]
    fn the_forget_step_alone_picks_ended_jobs_outside_the_set() {
        let local: BTreeMap<JobKey, LocalJob> = [
            (K1, ended()),
            (K2, ended()),
            (JobKey::new(3, 0), LocalJob::Running { stopping: true }),
        ]
        .into_iter()
        .collect();
        let desired = desired_keys(&pb::Assignments {
            jobs: vec![assign(2, 0, None, false)],
        });
        assert_eq!(forgettable(&local, &desired), vec![K1]);
        assert_eq!(forgettable(&local, &BTreeSet::new()), vec![K1, K2]);
    }

    #[test]
    fn reports_lost_for_an_assigned_job_without_record_or_launch() {
        for cancel in [false, true] {
            assert_eq!(
                run(&[], vec![assign(1, 0, None, cancel)]),
                vec![Action::Report {
                    key: K1,
                    reason: ExitReason::Lost,
                    message: NO_RECORD_MESSAGE.into()
                }]
            );
        }
    }

    #[test]
    fn a_job_cancelled_before_it_started_is_not_launched() {
        assert_eq!(
            run(&[], vec![assign(1, 0, Some(launch("a")), true)]),
            vec![Action::Report {
                key: K1,
                reason: ExitReason::Cancelled,
                message: CANCELLED_BEFORE_START_MESSAGE.into()
            }]
        );
    }

    #[test]
    fn duplicate_entries_act_once() {
        let jobs = vec![
            assign(1, 0, Some(launch("a")), false),
            assign(1, 0, Some(launch("b")), false),
        ];
        assert_eq!(
            run(&[], jobs),
            vec![Action::Launch {
                key: K1,
                launch: boxed("a")
            }]
        );
    }

    #[test]
    fn everything_at_once() {
        let k3 = JobKey::new(3, 0);
        let k4 = JobKey::new(4, 0);
        let local = [
            (K1, LocalJob::Running { stopping: false }),
            (K2, ended()),
            (k3, LocalJob::Running { stopping: false }),
        ];
        let jobs = vec![
            assign(3, 0, None, true),
            assign(4, 0, Some(launch("d")), false),
            assign(5, 0, None, false),
            assign(2, 0, None, false),
        ];
        assert_eq!(
            run(&local, jobs),
            vec![
                Action::Stop {
                    key: k3,
                    reason: ExitReason::Cancelled,
                    warning: None,
                },
                Action::Launch {
                    key: k4,
                    launch: boxed("d")
                },
                Action::Report {
                    key: JobKey::new(5, 0),
                    reason: ExitReason::Lost,
                    message: NO_RECORD_MESSAGE.into()
                },
                Action::Stop {
                    key: K1,
                    reason: ExitReason::Cancelled,
                    warning: None,
                },
            ]
        );
    }
}
