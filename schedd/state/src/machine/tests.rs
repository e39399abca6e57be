//! Given state + command ⇒ outcome + new state.

use gantry_model::{Condition, Dependency, JobSpec, JobState, NodeInventory, Owner};
use gantry_policies::PartPlan;
use proptest::prelude::*;

use super::StateMachine;
use crate::command::{Command, Control, DrainMode, ExitReason, Outcome, PartExit, Rejection};
use crate::node::NodeState;

fn owner(user: &str) -> Owner {
    Owner {
        user: user.into(),
        uid: 1000,
        gid: 1000,
    }
}

fn spec(nodes: u32, gpus: u32) -> JobSpec {
    gantry_model::testing::job_spec(nodes, gpus)
}

fn inventory(gpus: u32) -> NodeInventory {
    gantry_model::testing::node_inventory(gpus, 8, 4096)
}

/// Applies commands at consecutive indices, like the log does.
struct Log {
    sm: StateMachine,
    next: u64,
}

impl Log {
    fn new() -> Log {
        Log {
            sm: StateMachine::default(),
            next: 1,
        }
    }
    fn apply(&mut self, c: Command) -> Outcome {
        self.next += 1;
        self.sm.apply(self.next - 1, &c)
    }
    fn register(&mut self, name: &str, gpus: u32) {
        let c = Command::RegisterNode {
            name: name.into(),
            identity: "daemon".into(),
            finished: vec![],
            inventory: inventory(gpus),
            running: vec![],
            now_ms: 1,
            failed_gpus: vec![],
        };
        assert_eq!(self.apply(c), Outcome::Applied);
    }
    fn submit(&mut self, nodes: u32, gpus: u32) -> u64 {
        self.submit_spec(spec(nodes, gpus))
    }
    fn submit_spec(&mut self, spec: JobSpec) -> u64 {
        match self.apply(Command::Submit {
            owner: owner("ann"),
            spec: Box::new(spec),
            key: None,
            now_ms: 2,
        }) {
            Outcome::Submitted(id) => id,
            other => panic!("submit: {other:?}"),
        }
    }
    fn allocate(&mut self, job: u64, node: &str, gpus: Vec<u32>) -> Outcome {
        let parts = vec![PartPlan {
            node: node.into(),
            gpus,
            cpus: 1,
            mem_mib: 256,
        }];
        self.apply(Command::Allocate {
            shape: 0,
            job,
            attempt: 0,
            parts,
            now_ms: 3,
            token: String::new(),
        })
    }
    fn exit(&mut self, job: u64, node: &str, reason: ExitReason, code: Option<i32>) -> Outcome {
        let exit = PartExit {
            reason,
            exit_code: code,
            signal: None,
            message: "m".into(),
            after_time_limit_warning: false,
        };
        self.apply(Command::JobExited {
            job,
            attempt: 0,
            node: node.into(),
            exit,
            now_ms: 9,
        })
    }
}

#[test]
fn submit_hands_out_increasing_ids() {
    let mut log = Log::new();
    log.register("n1", 4);
    assert_eq!(log.submit(1, 2), 1);
    assert_eq!(log.submit(1, 2), 2);
    let job = log.sm.job(2).unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(log.sm.queue_position(2), Some(2));
}

#[test]
fn a_retried_submit_with_the_same_key_creates_no_second_job() {
    let mut log = Log::new();
    log.register("n1", 4);
    let keyed = |user: &str, key: &str| Command::Submit {
        owner: owner(user),
        spec: Box::new(spec(1, 1)),
        key: Some(key.into()),
        now_ms: 2,
    };
    assert_eq!(log.apply(keyed("ann", "k1")), Outcome::Submitted(1));
    assert_eq!(
        log.apply(keyed("ann", "k1")),
        Outcome::Submitted(1),
        "the retry"
    );
    assert_eq!(log.apply(keyed("ann", "k2")), Outcome::Submitted(2));
    assert_eq!(
        log.apply(keyed("bob", "k1")),
        Outcome::Submitted(3),
        "keys are per user"
    );
    assert_eq!(log.sm.jobs().count(), 3);
}

#[test]
fn impossible_and_invalid_submits_change_nothing() {
    let mut log = Log::new();
    log.register("n1", 8);
    let before = log.sm.clone();
    let out = log.apply(Command::Submit {
        owner: owner("ann"),
        spec: Box::new(spec(1, 16)),
        key: None,
        now_ms: 2,
    });
    assert_eq!(
        out,
        Outcome::Rejected(Rejection::Unsatisfiable(
            "asks 16 GPUs per node; the largest node has 8".into()
        ))
    );
    let out = log.apply(Command::Submit {
        owner: owner("ann"),
        spec: Box::new(spec(0, 1)),
        key: None,
        now_ms: 2,
    });
    assert!(matches!(out, Outcome::Rejected(Rejection::InvalidSpec(_))));
    assert_eq!(log.sm.jobs().count(), 0);
    assert_eq!(
        log.sm.next_job_id, before.next_job_id,
        "a rejected submit consumes no id"
    );
}

#[test]
fn allocation_runs_the_job_and_holds_its_gpus() {
    let mut log = Log::new();
    log.register("n1", 4);
    let a = log.submit(1, 2);
    let b = log.submit(1, 2);
    assert_eq!(log.allocate(a, "n1", vec![0, 1]), Outcome::Applied);
    assert_eq!(log.sm.job(a).unwrap().state, JobState::Running);
    assert_eq!(log.sm.job(a).unwrap().epoch, 4);
    assert_eq!(log.sm.node("n1").unwrap().state(), NodeState::Mixed);
    // A decision made on an old snapshot that reuses GPU 1 is rejected, not applied.
    let out = log.allocate(b, "n1", vec![1, 2]);
    assert!(
        matches!(out, Outcome::Rejected(Rejection::Stale { .. })),
        "{out:?}"
    );
    assert_eq!(log.sm.job(b).unwrap().state, JobState::Pending);
    assert_eq!(log.allocate(b, "n1", vec![2, 3]), Outcome::Applied);
    assert_eq!(log.sm.node("n1").unwrap().state(), NodeState::Allocated);
    // Allocating a running job again is stale too.
    assert!(matches!(
        log.allocate(a, "n1", vec![]),
        Outcome::Rejected(Rejection::Stale { .. })
    ));
}

#[test]
fn the_view_tells_the_policies_when_running_jobs_give_their_gpus_back() {
    let mut log = Log::new();
    log.register("n1", 4);
    let limited = match log.apply(Command::Submit {
        owner: owner("ann"),
        spec: Box::new(JobSpec {
            time_limit_ms: Some(60_000),
            ..spec(1, 2)
        }),
        key: None,
        now_ms: 2,
    }) {
        Outcome::Submitted(id) => id,
        other => panic!("submit: {other:?}"),
    };
    let unlimited = log.submit(1, 1);
    let waiting = log.submit(1, 4);
    assert_eq!(log.allocate(limited, "n1", vec![0, 1]), Outcome::Applied);
    assert_eq!(log.allocate(unlimited, "n1", vec![2]), Outcome::Applied);
    let view = log.sm.cluster_view(10);
    let ends: Vec<(u64, Option<u64>, Vec<u32>)> = view
        .running
        .iter()
        .map(|r| (r.id, r.ends_at_ms, r.parts[0].gpus.clone()))
        .collect();
    // Allocated at 3: the limited job ends at 3 + 60 s; the other holds its GPU for ever.
    assert_eq!(
        ends,
        [
            (limited, Some(60_003), vec![0, 1]),
            (unlimited, None, vec![2])
        ]
    );
    assert_eq!(view.pending.len(), 1);
    assert_eq!(view.pending[0].id, waiting);
    assert_eq!(view.pending[0].shapes[0].time_limit_ms, None);
    // Once a part has ended it holds nothing.
    log.exit(limited, "n1", ExitReason::Exited, Some(0));
    assert!(
        log.sm
            .cluster_view(10)
            .running
            .iter()
            .all(|r| r.id != limited)
    );
}

/// Node `name` with `gpus` GPUs of `model`.
fn register_model(log: &mut Log, name: &str, gpus: u32, model: &str) {
    let mut inventory = inventory(gpus);
    for g in &mut inventory.gpus {
        g.model = model.into();
    }
    let c = Command::RegisterNode {
        name: name.into(),
        identity: "daemon".into(),
        finished: vec![],
        inventory,
        running: vec![],
        now_ms: 1,
        failed_gpus: vec![],
    };
    assert_eq!(log.apply(c), Outcome::Applied);
}

#[test]
fn an_allocation_must_match_the_shape_it_names_gpu_model_included() {
    let mut log = Log::new();
    register_model(&mut log, "a", 2, "NVIDIA A100");
    register_model(&mut log, "h", 2, "NVIDIA H100");
    let spec = JobSpec {
        gpu_model: Some("h100".into()),
        alternatives: vec![gantry_model::Alternative {
            num_nodes: 1,
            gpus_per_node: 1,
            gpu_model: Some("a100".into()),
            speed: 500,
        }],
        time_limit_ms: Some(60_000),
        ..spec(1, 2)
    };
    let id = match log.apply(Command::Submit {
        owner: owner("ann"),
        spec: Box::new(spec),
        key: None,
        now_ms: 2,
    }) {
        Outcome::Submitted(id) => id,
        other => panic!("submit: {other:?}"),
    };
    let allocate = |log: &mut Log, shape: u32, node: &str, gpus: Vec<u32>| {
        log.apply(Command::Allocate {
            job: id,
            attempt: 0,
            shape,
            parts: vec![PartPlan {
                node: node.into(),
                gpus,
                cpus: 1,
                mem_mib: 256,
            }],
            now_ms: 3,
            token: String::new(),
        })
    };
    let stale = |out: Outcome| match out {
        Outcome::Rejected(Rejection::Stale { why, .. }) => why,
        other => panic!("applied: {other:?}"),
    };
    assert_eq!(
        stale(allocate(&mut log, 0, "a", vec![0, 1])),
        "GPU 0 on a is a NVIDIA A100, not a h100"
    );
    assert_eq!(
        stale(allocate(&mut log, 2, "a", vec![0])),
        "the job has no alternative 2"
    );
    assert!(stale(allocate(&mut log, 1, "a", vec![0, 1])).contains("do not match"));
    assert_eq!(log.sm.job(id).unwrap().state, JobState::Pending);
    // Alternative 1: one A100 at half speed, so twice the time limit.
    assert_eq!(allocate(&mut log, 1, "a", vec![1]), Outcome::Applied);
    assert_eq!(log.sm.job(id).unwrap().shape, 1);
    let view = log.sm.cluster_view(10);
    assert_eq!(view.running[0].ends_at_ms, Some(3 + 120_000));
}

#[test]
fn exits_decide_the_final_state() {
    let cases = [
        (ExitReason::Exited, Some(0), JobState::Completed),
        (ExitReason::Exited, Some(3), JobState::Failed),
        (ExitReason::Timeout, None, JobState::Timeout),
        (ExitReason::LaunchFailed, None, JobState::Failed),
        (ExitReason::Lost, None, JobState::NodeFail),
    ];
    for (reason, code, state) in cases {
        let mut log = Log::new();
        log.register("n1", 4);
        let mut final_run = spec(1, 1);
        final_run.requeue.on_node_failure = false;
        let a = log.submit_spec(final_run);
        log.allocate(a, "n1", vec![0]);
        assert_eq!(log.exit(a, "n1", reason, code), Outcome::Applied);
        let job = log.sm.job(a).unwrap();
        assert_eq!(job.state, state, "{reason:?} {code:?}");
        assert_eq!(job.end_time_ms, Some(9));
        assert_eq!(
            log.sm.node("n1").unwrap().state(),
            NodeState::Idle,
            "resources freed"
        );
        // The same report again changes nothing.
        assert!(matches!(
            log.exit(a, "n1", reason, code),
            Outcome::Ignored(_)
        ));
    }
}

#[test]
fn cancel_pending_ends_it_and_cancel_running_asks_the_node() {
    let mut log = Log::new();
    log.register("n1", 4);
    let a = log.submit(1, 1);
    let b = log.submit(1, 1);
    log.allocate(a, "n1", vec![0]);
    let out = log.apply(Command::Cancel {
        jobs: vec![a, b],
        by: "ann".into(),
        admin: false,
        now_ms: 4,
    });
    assert_eq!(
        out,
        Outcome::Cancelled {
            cancelled: vec![b],
            signalled: vec![a]
        }
    );
    assert_eq!(log.sm.job(b).unwrap().state, JobState::Cancelled);
    assert!(log.sm.job(a).unwrap().stopping());
    log.exit(a, "n1", ExitReason::Cancelled, None);
    assert_eq!(log.sm.job(a).unwrap().state, JobState::Cancelled);
}

#[test]
fn cancel_with_one_bad_id_changes_nothing() {
    let mut log = Log::new();
    log.register("n1", 4);
    let a = log.submit(1, 1);
    let before = log.sm.clone();
    let out = log.apply(Command::Cancel {
        jobs: vec![a, 99],
        by: "ann".into(),
        admin: false,
        now_ms: 4,
    });
    assert_eq!(out, Outcome::Rejected(Rejection::UnknownJob(99)));
    let out = log.apply(Command::Cancel {
        jobs: vec![a],
        by: "bob".into(),
        admin: false,
        now_ms: 4,
    });
    assert!(matches!(out, Outcome::Rejected(Rejection::NotOwner { .. })));
    assert_eq!(log.sm.job(a), before.job(a));
    let out = log.apply(Command::Cancel {
        jobs: vec![a],
        by: "root".into(),
        admin: true,
        now_ms: 4,
    });
    assert!(matches!(out, Outcome::Cancelled { .. }));
}

fn node_lost(name: &str, now_ms: u64) -> Command {
    Command::NodeLost {
        node: name.into(),
        reason: "no heartbeat for 30s".into(),
        now_ms,
    }
}

#[test]
fn a_lost_node_fails_its_no_requeue_jobs_and_goes_down() {
    let mut log = Log::new();
    log.register("n1", 4);
    let mut once = spec(1, 1);
    once.requeue.on_node_failure = false;
    let a = log.submit_spec(once);
    log.allocate(a, "n1", vec![0]);
    assert_eq!(log.apply(node_lost("n1", 5)), Outcome::Applied);
    let job = log.sm.job(a).unwrap();
    assert_eq!(job.state, JobState::NodeFail);
    assert_eq!(job.reason, "node n1 lost: no heartbeat for 30s");
    assert_eq!(log.sm.node("n1").unwrap().state(), NodeState::Down);
    log.register("n1", 4);
    assert_eq!(log.sm.node("n1").unwrap().state(), NodeState::Idle);
}

/// By default a node failure puts the job back in the queue as its next run, recording the
/// failed run and the work lost since its last checkpoint; after `requeue.max` such requeues
/// the next failure is final.
#[test]
fn a_lost_node_requeues_its_jobs_up_to_the_limit() {
    let mut log = Log::new();
    log.register("n1", 4);
    log.register("n2", 4);
    let set = log.apply(Command::SetConfig {
        key: "requeue.max".into(),
        value: "2".into(),
        by: "root".into(),
        now_ms: 1,
    });
    assert_eq!(set, Outcome::Applied);
    let a = log.submit(1, 2);
    let mut at = 10;
    for attempt in 0..3u32 {
        let node = if attempt % 2 == 0 { "n1" } else { "n2" };
        let parts = vec![PartPlan {
            node: node.into(),
            gpus: vec![0, 1],
            cpus: 1,
            mem_mib: 256,
        }];
        let start = log.apply(Command::Allocate {
            shape: 0,
            job: a,
            attempt,
            parts,
            now_ms: at,
            token: format!("t{attempt}"),
        });
        assert_eq!(start, Outcome::Applied);
        // The first run checkpoints 400 ms in: 600 ms of it are lost at the failure.
        if attempt == 0 {
            let done = Command::CheckpointDone {
                job: a,
                attempt,
                progress: None,
                work_done: false,
                now_ms: at + 400,
            };
            assert_eq!(log.apply(done), Outcome::Applied);
        }
        at += 1000;
        assert_eq!(log.apply(node_lost(node, at)), Outcome::Applied);
        log.register(node, 4);
    }
    let job = log.sm.job(a).unwrap();
    assert_eq!(job.state, JobState::NodeFail, "the third failure is final");
    let runs: Vec<(&str, u64)> = job
        .attempts
        .iter()
        .map(|r| (r.outcome.as_str(), r.lost_gpu_ms))
        .collect();
    assert_eq!(
        runs,
        [
            ("NODE_FAIL", 2 * 600),
            ("NODE_FAIL", 2 * 1000),
            ("NODE_FAIL", 0)
        ]
    );
    assert_eq!(job.attempts[0].reason, "node n1 lost: no heartbeat for 30s");
    assert_eq!(job.automatic_requeues, 2);
}

/// `--requeue-on-timeout` runs the job again at its time limit; without it the job ends
/// TIMEOUT. A cancel wins over either.
#[test]
fn time_limits_requeue_only_jobs_that_ask() {
    let mut log = Log::new();
    log.register("n1", 4);
    let mut again = spec(1, 1);
    again.requeue.on_timeout = true;
    let a = log.submit_spec(again);
    let b = log.submit(1, 1);
    log.allocate(a, "n1", vec![0]);
    log.allocate(b, "n1", vec![1]);
    log.exit(a, "n1", ExitReason::Timeout, None);
    log.exit(b, "n1", ExitReason::Timeout, None);
    let job = log.sm.job(a).unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 1));
    assert_eq!(job.attempts[0].outcome, "TIMEOUT");
    assert_eq!(job.reason, "requeued: time limit reached");
    assert_eq!(log.sm.job(b).unwrap().state, JobState::Timeout);
}

#[test]
fn a_multi_node_job_ends_when_all_parts_end_and_the_first_failure_decides() {
    let mut log = Log::new();
    log.register("n1", 4);
    log.register("n2", 4);
    let a = log.submit(2, 2);
    let parts = ["n1", "n2"]
        .map(|n| PartPlan {
            node: n.into(),
            gpus: vec![0, 1],
            cpus: 1,
            mem_mib: 256,
        })
        .to_vec();
    assert_eq!(
        log.apply(Command::Allocate {
            shape: 0,
            job: a,
            attempt: 0,
            parts,
            now_ms: 3,
            token: String::new(),
        }),
        Outcome::Applied
    );
    log.exit(a, "n2", ExitReason::Exited, Some(7));
    let job = log.sm.job(a).unwrap();
    assert_eq!(job.state, JobState::Running);
    assert!(job.stopping(), "the other part is stopped");
    log.exit(a, "n1", ExitReason::Cancelled, None);
    let job = log.sm.job(a).unwrap();
    assert_eq!((job.state, job.exit_code), (JobState::Failed, Some(7)));
    assert_eq!(job.reason, "exit code 7 on node n2");
}

#[test]
fn a_restarted_node_reconciles_what_it_runs() {
    let mut log = Log::new();
    log.register("n1", 4);
    let (a, b, c) = (log.submit(1, 1), log.submit(1, 1), log.submit(1, 1));
    log.allocate(a, "n1", vec![0]);
    log.allocate(b, "n1", vec![1]);
    log.allocate(c, "n1", vec![2]);
    for j in [a, b] {
        log.apply(Command::JobStarted {
            job: j,
            attempt: 0,
            node: "n1".into(),
            now_ms: 4,
        });
    }
    // The node comes back running only `a`; `b` had started and is gone; `c` never started.
    let reg = Command::RegisterNode {
        name: "n1".into(),
        identity: "daemon".into(),
        finished: vec![],
        inventory: inventory(4),
        running: vec![(a, 0)],
        now_ms: 5,
        failed_gpus: vec![],
    };
    assert_eq!(log.apply(reg), Outcome::Applied);
    assert_eq!(log.sm.job(a).unwrap().state, JobState::Running);
    // `b` goes back to the queue as its next run (it did not say --no-requeue).
    let lost = log.sm.job(b).unwrap();
    assert_eq!((lost.state, lost.attempt), (JobState::Pending, 1));
    assert_eq!(lost.attempts[0].outcome, "NODE_FAIL");
    assert_eq!(lost.attempts[0].reason, "node n1 restarted without it");
    assert_eq!(log.sm.job(c).unwrap().state, JobState::Running);
}

#[test]
fn drain_and_resume() {
    let mut log = Log::new();
    log.register("n1", 4);
    let a = log.submit(1, 1);
    log.allocate(a, "n1", vec![0]);
    let drain = Command::Drain {
        nodes: vec!["n1".into()],
        reason: "fan".into(),
        by: "root".into(),
        mode: DrainMode::Wait,
        now_ms: 4,
    };
    assert_eq!(log.apply(drain), Outcome::Applied);
    assert_eq!(log.sm.node("n1").unwrap().state(), NodeState::Draining);
    let b = log.submit(1, 1);
    assert!(matches!(
        log.allocate(b, "n1", vec![1]),
        Outcome::Rejected(Rejection::Stale { .. })
    ));
    log.exit(a, "n1", ExitReason::Exited, Some(0));
    assert_eq!(log.sm.node("n1").unwrap().state(), NodeState::Drained);
    let bad = Command::Drain {
        nodes: vec!["n1".into(), "nope".into()],
        reason: "x".into(),
        by: "root".into(),
        mode: DrainMode::Requeue,
        now_ms: 5,
    };
    assert_eq!(
        log.apply(bad),
        Outcome::Rejected(Rejection::UnknownNode("nope".into()))
    );
    let resume = Command::Resume {
        nodes: vec!["n1".into()],
        by: "root".into(),
        now_ms: 6,
    };
    assert_eq!(log.apply(resume), Outcome::Applied);
    assert_eq!(log.sm.node("n1").unwrap().state(), NodeState::Idle);
}

/// `--requeue` stops what runs there at once, to run elsewhere; `--deadline` lets it run
/// until then, and the leader's `DrainDeadline` requeues what is left — not before.
#[test]
fn drains_requeue_at_once_or_at_their_deadline() {
    let mut log = Log::new();
    log.register("n1", 4);
    log.register("n2", 4);
    let a = log.submit(1, 1);
    let b = log.submit(1, 1);
    log.allocate(a, "n1", vec![0]);
    log.allocate(b, "n2", vec![0]);
    let drain = |node: &str, mode| Command::Drain {
        nodes: vec![node.into()],
        reason: "maintenance".into(),
        by: "root".into(),
        mode,
        now_ms: 10,
    };
    assert_eq!(log.apply(drain("n1", DrainMode::Requeue)), Outcome::Applied);
    let job = log.sm.job(a).unwrap();
    assert!(job.stopping());
    assert_eq!(
        job.requeue.as_ref().unwrap().why,
        "node n1 drained by root: maintenance"
    );
    log.exit(a, "n1", ExitReason::Preempted, Some(0));
    let job = log.sm.job(a).unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 1));
    assert_eq!(job.attempts[0].outcome, "REQUEUED");
    assert_eq!(log.sm.node("n1").unwrap().state(), NodeState::Drained);

    let late = DrainMode::Deadline { after_ms: 1_000 };
    assert_eq!(log.apply(drain("n2", late)), Outcome::Applied);
    let due = |now_ms| Command::DrainDeadline {
        nodes: vec!["n2".into()],
        now_ms,
    };
    assert!(matches!(log.apply(due(1_009)), Outcome::Ignored(_)));
    assert!(
        !log.sm.job(b).unwrap().stopping(),
        "not before its deadline"
    );
    assert_eq!(log.apply(due(1_010)), Outcome::Applied);
    let job = log.sm.job(b).unwrap();
    assert_eq!(
        job.requeue.as_ref().unwrap().why,
        "drain deadline of node n2 (maintenance)"
    );
    assert!(matches!(log.apply(due(2_000)), Outcome::Ignored(_)), "once");
}

#[test]
fn replayed_entries_change_nothing() {
    let mut log = Log::new();
    log.register("n1", 4);
    let before = log.sm.clone();
    let out = log.sm.apply(
        1,
        &Command::Submit {
            owner: owner("ann"),
            spec: Box::new(spec(1, 1)),
            key: None,
            now_ms: 2,
        },
    );
    assert!(matches!(out, Outcome::Ignored(_)));
    assert_eq!(log.sm, before);
}

// ---- Properties ----

fn arb_command() -> impl Strategy<Value = Command> {
    let node = prop::sample::select(vec!["n1", "n2", "n3"]).prop_map(String::from);
    let job = 1u64..12;
    let reason = prop::sample::select(vec![
        ExitReason::Exited,
        ExitReason::Cancelled,
        ExitReason::Timeout,
        ExitReason::LaunchFailed,
        ExitReason::Lost,
        ExitReason::Preempted,
    ]);
    prop_oneof![
        (
            1u32..3,
            0u32..5,
            0u64..1000,
            prop::option::of(prop::sample::select(vec!["a", "b"])),
            prop::option::of((job.clone(), prop::sample::select(Condition::ALL.to_vec()))),
            (
                any::<bool>(),
                any::<bool>(),
                prop::option::of(prop::sample::select(vec!["r1", "r2"]))
            )
        )
            .prop_map(
                |(n, g, t, key, dependency, (on_node_failure, on_timeout, reservation))| {
                    let mut spec = spec(n, g);
                    spec.reservation = reservation.map(String::from);
                    spec.requeue = gantry_model::RequeuePolicy {
                        on_node_failure,
                        on_timeout,
                    };
                    spec.dependencies = dependency
                        .map(|(job, condition)| Dependency { condition, job })
                        .into_iter()
                        .collect();
                    Command::Submit {
                        owner: owner("ann"),
                        spec: Box::new(spec),
                        key: key.map(String::from),
                        now_ms: t,
                    }
                }
            ),
        (
            node.clone(),
            0u32..9,
            prop::sample::select(vec!["daemon", "impostor"])
        )
            .prop_map(|(name, g, identity)| Command::RegisterNode {
                name,
                identity: identity.into(),
                finished: vec![],
                inventory: inventory(g),
                running: vec![],
                now_ms: 1,
                failed_gpus: vec![],
            }),
        prop::sample::select(vec!["c1", "c2", ""])
            .prop_map(|name| Command::NameCluster { name: name.into() }),
        node.clone().prop_map(|name| Command::ReplaceNode {
            name,
            by: "root".into(),
            now_ms: 2,
        }),
        (
            job.clone(),
            0u32..3,
            node.clone(),
            prop::collection::btree_set(0u32..8, 0..4)
        )
            .prop_map(|(job, attempt, node, gpus)| Command::Allocate {
                shape: 0,
                job,
                attempt,
                parts: vec![PartPlan {
                    node,
                    gpus: gpus.into_iter().collect(),
                    cpus: 1,
                    mem_mib: 256
                }],
                now_ms: 5,
                token: String::new(),
            }),
        (
            job.clone(),
            0u32..3,
            node.clone(),
            reason,
            prop::option::of(0i32..3),
            any::<bool>(),
        )
            .prop_map(|(job, attempt, node, reason, exit_code, warned)| {
                Command::JobExited {
                    job,
                    attempt,
                    node,
                    exit: PartExit {
                        reason,
                        exit_code,
                        signal: None,
                        message: String::new(),
                        after_time_limit_warning: warned,
                    },
                    now_ms: 7,
                }
            }),
        (job.clone(), node.clone()).prop_map(|(job, node)| Command::JobStarted {
            job,
            attempt: 0,
            node,
            now_ms: 6,
        }),
        prop::collection::vec(job.clone(), 1..3).prop_map(|jobs| Command::Cancel {
            jobs,
            by: "ann".into(),
            admin: false,
            now_ms: 8,
        }),
        node.clone().prop_map(|node| Command::NodeLost {
            node,
            reason: "timeout".into(),
            now_ms: 9,
        }),
        (
            node.clone(),
            prop::sample::select(vec![
                DrainMode::Wait,
                DrainMode::Requeue,
                DrainMode::Deadline { after_ms: 2 },
            ])
        )
            .prop_map(|(n, mode)| Command::Drain {
                nodes: vec![n],
                reason: "r".into(),
                by: "root".into(),
                mode,
                now_ms: 9,
            }),
        (
            prop::sample::select(vec!["r1", "r2"]),
            node.clone(),
            0u64..20,
            (any::<bool>(), any::<bool>())
        )
            .prop_map(|(name, node, start_ms, (force, update))| {
                let reservation = crate::reservation::Reservation {
                    name: name.into(),
                    start_ms,
                    end_ms: start_ms + 5,
                    nodes: vec![node],
                    users: vec!["ann".into()],
                    accounts: vec![],
                    created_by: "root".into(),
                    maintenance: false,
                    started: false,
                    gpus: Default::default(),
                };
                if update {
                    Command::UpdateReservation {
                        reservation,
                        force,
                        now_ms: 4,
                    }
                } else {
                    Command::CreateReservation {
                        reservation,
                        force,
                        now_ms: 4,
                        gpus: None,
                    }
                }
            }),
        prop::sample::select(vec!["r1", "r2"]).prop_map(|name| Command::DeleteReservation {
            name: name.into(),
            by: "root".into(),
            now_ms: 8,
        }),
        (node.clone(), 0u32..5).prop_map(|(node, gpu)| Command::GpuFailed {
            node,
            gpu,
            reason: "XID 79".into(),
            now_ms: 9,
        }),
        (node.clone(), 9u64..13).prop_map(|(n, now_ms)| Command::DrainDeadline {
            nodes: vec![n],
            now_ms,
        }),
        node.prop_map(|n| Command::Resume {
            nodes: vec![n],
            by: "root".into(),
            now_ms: 9,
        }),
        (job.clone(), 0u32..2, any::<bool>(), job.clone()).prop_map(
            |(job, attempt, moved, for_job)| {
                Command::Requeue {
                    job,
                    attempt,
                    for_job,
                    for_place: vec![PartPlan {
                        node: "n2".into(),
                        gpus: vec![0],
                        cpus: 1,
                        mem_mib: 256,
                    }],
                    reason: "reclaimed".into(),
                    moved_to: moved.then(|| {
                        vec![PartPlan {
                            node: "n1".into(),
                            gpus: vec![1],
                            cpus: 1,
                            mem_mib: 256,
                        }]
                    }),
                    now_ms: 10,
                }
            }
        ),
        (
            prop::collection::vec(job.clone(), 1..3),
            prop::sample::select(vec![
                Control::Hold,
                Control::Release,
                Control::Requeue,
                Control::Preempt
            ]),
            any::<bool>()
        )
            .prop_map(|(jobs, action, admin)| Command::Control {
                jobs,
                action,
                by: "ann".into(),
                admin,
                now_ms: 12,
            }),
        (
            job.clone(),
            0u32..2,
            prop::option::of(0u64..100),
            any::<bool>()
        )
            .prop_map(
                |(job, attempt, progress, work_done)| Command::CheckpointDone {
                    job,
                    attempt,
                    progress,
                    work_done,
                    now_ms: 11,
                }
            ),
        prop::sample::select(vec![
            ("weight.age", "5"),
            ("checkpoint.keep", "0s"),
            ("backfill.depth", "2"),
            ("qos.urgent.priority", "900"),
            ("weight.qos", "lots"),
            ("requeue.max", "1"),
            ("pool.default.max_time", "1s"),
            ("pool.default.accounts", "a"),
        ])
        .prop_map(|(key, value)| Command::SetConfig {
            key: key.into(),
            value: value.into(),
            by: "root".into(),
            now_ms: 11,
        }),
        prop::sample::select(vec![("vision", "root"), ("nlp", "vision"), ("x", "nosuch")])
            .prop_map(|(name, parent)| Command::AddAccount {
                account: crate::accounts::NewAccount {
                    name: name.into(),
                    parent: parent.into(),
                    share: 1,
                    guarantee_gpus: None,
                    max_gpus: Some(4),
                    qos: None,
                    deadlines: None,
                },
                by: "root".into(),
                now_ms: 12,
            }),
        (
            prop::sample::select(vec!["vision", "default", "root", "nosuch"]),
            any::<bool>()
        )
            .prop_map(|(name, grant)| Command::SetAccount {
                name: name.into(),
                change: crate::accounts::AccountChange {
                    qos: Some(grant.then(|| ["low", "normal", "high"].map(String::from).into())),
                    deadlines: Some(Some(grant)),
                    ..Default::default()
                },
                by: "root".into(),
                now_ms: 13,
            }),
        prop::sample::select(vec!["vision", "nlp", "default"]).prop_map(|name| {
            Command::RemoveAccount {
                name: name.into(),
                by: "root".into(),
                now_ms: 14,
            }
        }),
    ]
}

fn replay(commands: &[Command]) -> StateMachine {
    let mut sm = StateMachine::default();
    for (i, c) in commands.iter().enumerate() {
        sm.apply(i as u64 + 1, c);
    }
    sm
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Applying the same log twice gives identical state, byte for byte.
    #[test]
    fn apply_is_deterministic(commands in prop::collection::vec(arb_command(), 0..80)) {
        prop_assert_eq!(replay(&commands).to_snapshot(), replay(&commands).to_snapshot());
    }

    /// A snapshot taken anywhere plus the rest of the log gives the state of the whole log.
    #[test]
    fn snapshot_plus_rest_equals_whole_log(
        commands in prop::collection::vec(arb_command(), 1..80),
        cut in 0usize..80,
    ) {
        let cut = cut.min(commands.len());
        let whole = replay(&commands);
        let snapshot = replay(&commands[..cut]).to_snapshot();
        let mut resumed = StateMachine::from_snapshot(&snapshot).unwrap();
        for (i, c) in commands.iter().enumerate().skip(cut) {
            resumed.apply(i as u64 + 1, c);
        }
        prop_assert_eq!(resumed, whole);
    }

    /// No GPU is ever held by two running jobs, and node bookkeeping matches the jobs.
    #[test]
    fn no_overcommit(commands in prop::collection::vec(arb_command(), 0..120)) {
        let sm = replay(&commands);
        for node in sm.nodes() {
            let mut held = std::collections::BTreeSet::new();
            let mut cpus = 0;
            for job in sm.jobs() {
                for part in job.parts.iter().filter(|p| p.node == node.name && p.exit.is_none()) {
                    prop_assert_eq!(job.state, JobState::Running);
                    cpus += part.cpus;
                    for g in &part.gpus {
                        prop_assert!(held.insert(*g), "GPU {} of {} held twice", g, node.name);
                    }
                }
            }
            prop_assert_eq!(&held, &node.used_gpus);
            prop_assert_eq!(cpus, node.allocated.cpus);
            prop_assert!(node.allocated.cpus <= node.inventory.cpus);
        }
        let ids: Vec<u64> = sm.jobs().map(|j| j.id).collect();
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn a_requeued_job_is_stopped_then_pending_again_as_its_next_attempt() {
    let mut log = Log::new();
    log.register("n1", 4);
    let id = log.submit(1, 2);
    assert_eq!(log.allocate(id, "n1", vec![0, 1]), Outcome::Applied);
    let requeue = |attempt| Command::Requeue {
        job: id,
        attempt,
        for_job: 9,
        for_place: vec![],
        reason: "account vision reclaims its guaranteed GPUs for job 9".into(),
        moved_to: None,
        now_ms: 5,
    };
    assert!(
        matches!(log.apply(requeue(7)), Outcome::Ignored(_)),
        "stale attempt"
    );
    assert_eq!(log.apply(requeue(0)), Outcome::Applied);
    assert!(
        log.sm.job(id).unwrap().stopping(),
        "the node is told to stop it"
    );
    assert!(
        matches!(log.apply(requeue(0)), Outcome::Ignored(_)),
        "once is enough"
    );
    // Killed by the stop signal: not FAILED, back in the queue.
    log.exit(id, "n1", ExitReason::Cancelled, None);
    let job = log.sm.job(id).unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 1));
    assert!(job.parts.is_empty() && job.start_time_ms.is_none());
    assert!(
        job.reason.starts_with("requeued: account vision reclaims"),
        "{}",
        job.reason
    );
    assert_eq!(log.sm.node("n1").unwrap().state(), NodeState::Idle);
    assert_eq!(log.sm.queue_position(id), Some(1));
    // A late report of the old attempt changes nothing.
    assert!(matches!(
        log.exit(id, "n1", ExitReason::Exited, Some(0)),
        Outcome::Ignored(_)
    ));
    // Cancelled while being requeued: the cancel wins.
    let other = log.submit(1, 1);
    assert_eq!(log.allocate(other, "n1", vec![2]), Outcome::Applied);
    log.apply(Command::Requeue {
        job: other,
        attempt: 0,
        for_job: 9,
        for_place: vec![],
        reason: "r".into(),
        moved_to: None,
        now_ms: 6,
    });
    log.apply(Command::Cancel {
        jobs: vec![other],
        by: "ann".into(),
        admin: false,
        now_ms: 7,
    });
    log.exit(other, "n1", ExitReason::Cancelled, None);
    assert_eq!(log.sm.job(other).unwrap().state, JobState::Cancelled);
    // Exited 0 before the stop reached it: the requeue was acknowledged, so it runs again.
    let quick = log.submit(1, 1);
    assert_eq!(log.allocate(quick, "n1", vec![3]), Outcome::Applied);
    log.apply(Command::Requeue {
        job: quick,
        attempt: 0,
        for_job: 9,
        for_place: vec![],
        reason: "r".into(),
        moved_to: None,
        now_ms: 8,
    });
    log.exit(quick, "n1", ExitReason::Exited, Some(0));
    let job = log.sm.job(quick).unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 1));
}

/// A preempted job that saved its checkpoint and exited 0 is requeued, not COMPLETED; its
/// reported checkpoint is what the policies see, and only its run's token may report one.
#[test]
fn checkpoints_are_reported_with_the_runs_token_and_a_preempted_exit_requeues() {
    let mut log = Log::new();
    log.register("n1", 4);
    let id = log.submit(1, 2);
    let parts = vec![PartPlan {
        node: "n1".into(),
        gpus: vec![0, 1],
        cpus: 1,
        mem_mib: 256,
    }];
    log.apply(Command::Allocate {
        shape: 0,
        job: id,
        attempt: 0,
        parts,
        now_ms: 3,
        token: "s3cret".into(),
    });
    assert_eq!(log.sm.token_matches(id, 0, "s3cret"), Ok(()));
    assert_eq!(
        log.sm.token_matches(id, 0, "guess"),
        Err(Rejection::BadToken(id))
    );
    assert!(matches!(
        log.sm.token_matches(id, 1, "s3cret"),
        Err(Rejection::Stale { .. })
    ));
    assert_eq!(
        log.sm.token_matches(99, 0, "s3cret"),
        Err(Rejection::UnknownJob(99))
    );
    let done = |attempt, at| Command::CheckpointDone {
        job: id,
        attempt,
        progress: Some(20),
        work_done: false,
        now_ms: at,
    };
    assert!(matches!(log.apply(done(1, 4)), Outcome::Ignored(_)));
    assert_eq!(log.apply(done(0, 4)), Outcome::Applied);
    let view = log.sm.cluster_view(5);
    assert_eq!(view.running[0].checkpointed_ms, Some(4));
    log.apply(Command::Requeue {
        job: id,
        attempt: 0,
        for_job: 9,
        for_place: vec![],
        reason: "preempted for job 9 of QoS high".into(),
        moved_to: None,
        now_ms: 5,
    });
    // It saved and left with code 0 when warned: preempted all the same.
    log.exit(id, "n1", ExitReason::Preempted, Some(0));
    let job = log.sm.job(id).unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 1));
    assert_eq!(
        (job.last_checkpoint_ms, job.checkpoint_progress),
        (Some(4), Some(20))
    );
    let run = &job.attempts[0];
    assert_eq!(
        (run.attempt, run.outcome.as_str(), run.reason.as_str()),
        (0, "PREEMPTED", "preempted for job 9 of QoS high")
    );
    assert_eq!(run.parts, [("n1".to_string(), vec![0, 1])]);
    // A new run has not checkpointed yet, whatever earlier runs did.
    assert_eq!(job.checkpointed_this_run(), None);
    assert!(log.sm.token_matches(id, 0, "s3cret").is_err());
}

/// The scheduler decides new jobs from its last plan while `changed_at` stays put: submits
/// and starts leave it, anything else moves it, refusals do not.
#[test]
fn only_changes_other_than_arrivals_and_their_starts_move_changed_at() {
    let mut log = Log::new();
    log.register("n1", 4);
    let registered = log.sm.changed_at();
    assert_eq!(registered, log.sm.applied_index());
    let a = log.submit(1, 1);
    let b = log.submit(1, 1);
    assert_eq!(log.allocate(a, "n1", vec![0]), Outcome::Applied);
    assert_eq!(log.sm.changed_at(), registered, "arrivals and starts");
    assert!(matches!(
        log.allocate(a, "n1", vec![1]),
        Outcome::Rejected(_)
    ));
    log.exit(a, "n9", ExitReason::Exited, Some(0));
    assert_eq!(log.sm.changed_at(), registered, "refused and ignored");
    let pending: Vec<u64> = log.sm.pending_after(a).iter().map(|j| j.id).collect();
    assert_eq!(pending, [b], "jobs after a plan that knew job {a}");
    log.exit(a, "n1", ExitReason::Exited, Some(0));
    assert_eq!(log.sm.changed_at(), log.sm.applied_index(), "an exit");
}

/// A job waits for the jobs it depends on; when one ends so that the dependency can never be
/// met, it is cancelled saying why, and so are the jobs depending on it in turn.
#[test]
fn dependencies_are_checked_at_submit_and_settled_when_jobs_end() {
    let mut log = Log::new();
    log.register("n1", 4);
    let first = log.submit(1, 1);
    let submit_after = |log: &mut Log, condition, job| {
        let mut spec = spec(1, 1);
        spec.dependencies = vec![Dependency { condition, job }];
        log.apply(Command::Submit {
            owner: owner("ann"),
            spec: Box::new(spec),
            key: None,
            now_ms: 3,
        })
    };
    assert_eq!(
        submit_after(&mut log, Condition::AfterOk, 99),
        Outcome::Rejected(Rejection::UnknownJob(99))
    );
    let Outcome::Submitted(ok) = submit_after(&mut log, Condition::AfterOk, first) else {
        panic!("afterok on a pending job is accepted");
    };
    let Outcome::Submitted(chained) = submit_after(&mut log, Condition::AfterAny, ok) else {
        panic!("afterany on a pending job is accepted");
    };
    let Outcome::Submitted(not_ok) = submit_after(&mut log, Condition::AfterNotOk, first) else {
        panic!("afternotok on a pending job is accepted");
    };
    let view = log.sm.cluster_view(4);
    let waiting = |id: u64| {
        view.pending
            .iter()
            .find(|j| j.id == id)
            .unwrap()
            .waiting_on
            .clone()
    };
    assert_eq!(
        waiting(ok),
        [Dependency {
            condition: Condition::AfterOk,
            job: first
        }]
    );
    assert!(waiting(first).is_empty());

    log.allocate(first, "n1", vec![0]);
    log.exit(first, "n1", ExitReason::Exited, Some(3));
    assert_eq!(log.sm.job(first).unwrap().state, JobState::Failed);
    let ok_job = log.sm.job(ok).unwrap();
    assert_eq!(ok_job.state, JobState::Cancelled);
    assert_eq!(
        ok_job.reason,
        format!("dependency afterok:{first} can never be met: job {first} ended FAILED")
    );
    // afterany on the cancelled job is met: the chained job waits for nothing now.
    assert_eq!(log.sm.job(chained).unwrap().state, JobState::Pending);
    assert_eq!(log.sm.job(not_ok).unwrap().state, JobState::Pending);
    assert!(
        log.sm
            .cluster_view(5)
            .pending
            .iter()
            .all(|j| j.waiting_on.is_empty())
    );
    assert_eq!(
        submit_after(&mut log, Condition::AfterOk, first),
        Outcome::Rejected(Rejection::DependencyNeverMet {
            dependency: Dependency {
                condition: Condition::AfterOk,
                job: first
            },
            ended: JobState::Failed
        })
    );

    // Cancelling a job and its dependent together cancels both, once.
    let a = log.submit(1, 1);
    let Outcome::Submitted(b) = submit_after(&mut log, Condition::AfterOk, a) else {
        panic!("accepted");
    };
    let out = log.apply(Command::Cancel {
        jobs: vec![a, b],
        by: "ann".into(),
        admin: false,
        now_ms: 6,
    });
    assert_eq!(
        out,
        Outcome::Cancelled {
            cancelled: vec![a, b],
            signalled: vec![]
        }
    );
    assert_eq!(log.sm.job(b).unwrap().state, JobState::Cancelled);
}

/// Hold and release pending jobs, requeue and preempt running ones: owners or admins, all
/// or nothing, and only in the states they make sense in.
#[test]
fn jobs_are_held_released_and_requeued_by_their_owners_or_admins() {
    let mut log = Log::new();
    log.register("n1", 4);
    let running = log.submit(1, 2);
    assert_eq!(log.allocate(running, "n1", vec![0, 1]), Outcome::Applied);
    let pending = log.submit(1, 4);
    let control = |jobs: Vec<u64>, action, by: &str, admin| Command::Control {
        jobs,
        action,
        by: by.into(),
        admin,
        now_ms: 4,
    };
    let refused = |outcome: Outcome| match outcome {
        Outcome::Rejected(r) => r.to_string(),
        other => panic!("not refused: {other:?}"),
    };
    assert!(
        refused(log.apply(control(vec![pending], Control::Hold, "bob", false)))
            .contains("only its owner or an admin")
    );
    assert_eq!(
        refused(log.apply(control(vec![running], Control::Hold, "ann", false))),
        format!("job {running} is RUNNING: only pending jobs can be held")
    );
    assert_eq!(
        refused(log.apply(control(vec![pending, 99], Control::Hold, "ann", false))),
        "job 99 does not exist"
    );
    assert_eq!(log.sm.job(pending).unwrap().held_by, None, "all or nothing");
    assert_eq!(
        log.apply(control(vec![pending], Control::Hold, "ann", false)),
        Outcome::Applied
    );
    assert!(
        log.sm.pending_after(0).is_empty(),
        "held jobs are not scheduled"
    );
    assert_eq!(log.sm.job(pending).unwrap().reason, "held by ann");
    assert_eq!(
        log.apply(control(vec![pending], Control::Release, "root", true)),
        Outcome::Applied
    );
    assert_eq!(log.sm.pending_after(0).len(), 1);
    assert_eq!(
        refused(log.apply(control(vec![pending], Control::Release, "ann", false))),
        format!("job {pending} is not held")
    );
    assert_eq!(
        refused(log.apply(control(vec![pending], Control::Requeue, "ann", false))),
        format!("job {pending} is PENDING: only running jobs can be requeued")
    );
    assert_eq!(
        refused(log.apply(control(vec![running], Control::Preempt, "ann", false))),
        "only admins may preempt jobs"
    );
    assert_eq!(
        log.apply(control(vec![running], Control::Requeue, "ann", false)),
        Outcome::Applied
    );
    assert!(log.sm.job(running).unwrap().stopping());
    assert_eq!(
        refused(log.apply(control(vec![running], Control::Preempt, "root", true))),
        format!("job {running} is being stopped already")
    );
    log.exit(running, "n1", ExitReason::Preempted, None);
    let job = log.sm.job(running).unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 1));
    assert_eq!(job.reason, "requeued: by ann");
    assert_eq!(job.attempts[0].outcome, "REQUEUED");
}

/// Defragmentation's budget reads the preemptions of the last hour per account, by the
/// scheduler or an admin; only jobs with a checkpoint contract are offered to it as movable,
/// and a moved job is marked so until it starts again.
#[test]
fn preemptions_are_counted_per_account_and_checkpointed_jobs_are_movable() {
    let mut log = Log::new();
    log.register("n1", 4);
    let mut contract = spec(1, 1);
    contract.checkpoint = Some(gantry_model::Checkpoint::default());
    let a = log.submit_spec(contract);
    let b = log.submit(1, 1);
    log.allocate(a, "n1", vec![0]);
    log.allocate(b, "n1", vec![1]);
    let view = log.sm.cluster_view(5);
    let movable: Vec<(u64, bool)> = view
        .running
        .iter()
        .map(|r| (r.id, r.movable.is_some()))
        .collect();
    assert_eq!(movable, [(a, true), (b, false)]);
    assert_eq!(view.running[0].movable.as_ref().unwrap().per_node.gpus, 1);
    let requeue = Command::Requeue {
        job: a,
        attempt: 0,
        for_job: 9,
        for_place: vec![],
        reason: "moved to defragment: job 9 needs its GPUs together".into(),
        moved_to: Some(vec![PartPlan {
            node: "n1".into(),
            gpus: vec![3],
            cpus: 1,
            mem_mib: 256,
        }]),
        now_ms: 10,
    };
    assert_eq!(log.apply(requeue), Outcome::Applied);
    // While it stops, the passes keep a place for it; an ordinary stop is not a move.
    let moving = |log: &Log| -> Vec<(u64, bool, bool)> {
        let view = log.sm.cluster_view(11);
        view.running
            .iter()
            .map(|r| (r.id, r.stopping, r.moving_to.is_some()))
            .collect()
    };
    assert_eq!(moving(&log), [(a, true, true), (b, false, false)]);
    // Stopped, it is pending again marked as moved (it ranks first) until it starts again.
    log.exit(a, "n1", ExitReason::Cancelled, None);
    let pending = |log: &Log| -> Vec<(u64, bool)> {
        let view = log.sm.cluster_view(12);
        view.pending.iter().map(|p| (p.id, p.moved)).collect()
    };
    assert_eq!(pending(&log), [(a, true)]);
    let restart = Command::Allocate {
        job: a,
        attempt: 1,
        shape: 0,
        parts: vec![PartPlan {
            node: "n1".into(),
            gpus: vec![2],
            cpus: 1,
            mem_mib: 256,
        }],
        token: String::new(),
        now_ms: 13,
    };
    assert_eq!(log.apply(restart), Outcome::Applied);
    assert!(log.sm.job(a).unwrap().moved_to.is_none());
    let preempt = Command::Control {
        jobs: vec![b],
        action: Control::Preempt,
        by: "root".into(),
        admin: true,
        now_ms: 20,
    };
    assert_eq!(log.apply(preempt), Outcome::Applied);
    assert_eq!(moving(&log), [(a, false, false), (b, true, false)]);
    let hour = gantry_policies::disruption::WINDOW_MS;
    let counted = |now| log.sm.cluster_view(now).preempted_last_hour;
    assert_eq!(counted(30), [("default".to_string(), 2)].into());
    assert_eq!(counted(15 + hour), [("default".to_string(), 1)].into());
    assert!(counted(25 + hour).is_empty());
}

/// Accounting counts ended runs only, in whole seconds per run inside the window, GPUs and
/// CPUs of every node; usage per group sums exactly what the history lists.
#[test]
fn accounting_sums_ended_runs_inside_the_window() {
    use crate::accounting::{By, Filter};
    let mut log = Log::new();
    log.register("n1", 4);
    log.register("n2", 4);
    for command in [
        Command::AddAccount {
            account: crate::accounts::NewAccount {
                name: "vision".into(),
                parent: "root".into(),
                share: 1,
                guarantee_gpus: None,
                max_gpus: None,
                qos: None,
                deadlines: None,
            },
            by: "root".into(),
            now_ms: 1,
        },
        Command::AddAccountUsers {
            account: "vision".into(),
            users: vec!["ann".into()],
            by: "root".into(),
            now_ms: 1,
        },
    ] {
        assert_eq!(log.apply(command), Outcome::Applied);
    }
    let mut two_nodes = spec(2, 2);
    two_nodes.account = "vision".into();
    let a = log.submit_spec(two_nodes);
    let b = log.submit(1, 1);
    let c = log.submit(1, 1);
    let start = |log: &mut Log, job, attempt, parts: Vec<(&str, Vec<u32>)>, at| {
        let parts = parts
            .into_iter()
            .map(|(node, gpus)| PartPlan {
                node: node.into(),
                gpus,
                cpus: 1,
                mem_mib: 256,
            })
            .collect();
        let out = log.apply(Command::Allocate {
            shape: 0,
            job,
            attempt,
            parts,
            now_ms: at,
            token: String::new(),
        });
        assert_eq!(out, Outcome::Applied);
    };
    let end = |log: &mut Log, job, attempt, node: &str, at| {
        let exit = PartExit {
            reason: ExitReason::Exited,
            exit_code: Some(0),
            signal: None,
            message: String::new(),
            after_time_limit_warning: false,
        };
        let out = log.apply(Command::JobExited {
            job,
            attempt,
            node: node.into(),
            exit,
            now_ms: at,
        });
        assert_eq!(out, Outcome::Applied);
    };
    // a: 2 nodes × 2 GPUs for 100 s.
    start(
        &mut log,
        a,
        0,
        vec![("n1", vec![0, 1]), ("n2", vec![0, 1])],
        1_000,
    );
    end(&mut log, a, 0, "n1", 101_000);
    end(&mut log, a, 0, "n2", 101_000);
    // b: requeued after 10.4 s, then 20 s more; two runs.
    start(&mut log, b, 0, vec![("n1", vec![2])], 200_000);
    let requeue = Command::Control {
        jobs: vec![b],
        action: Control::Requeue,
        by: "ann".into(),
        admin: false,
        now_ms: 205_000,
    };
    assert_eq!(log.apply(requeue), Outcome::Applied);
    let stopped = PartExit {
        reason: ExitReason::Preempted,
        exit_code: None,
        signal: Some(15),
        message: String::new(),
        after_time_limit_warning: false,
    };
    log.apply(Command::JobExited {
        job: b,
        attempt: 0,
        node: "n1".into(),
        exit: stopped,
        now_ms: 210_400,
    });
    start(&mut log, b, 1, vec![("n2", vec![3])], 300_000);
    end(&mut log, b, 1, "n2", 320_000);
    // c still runs: not counted.
    start(&mut log, c, 0, vec![("n1", vec![3])], 300_000);

    let all = Filter::default();
    let history = log.sm.history(&all);
    let rows: Vec<(u64, u32, u64, u64, u64)> = history
        .iter()
        .map(|r| {
            (
                r.job.id,
                r.used.runs,
                r.used.wall_s,
                r.used.gpu_s,
                r.used.cpu_s,
            )
        })
        .collect();
    // CPUs: the spec's 1 per node.
    assert_eq!(rows, [(a, 1, 100, 400, 200), (b, 2, 30, 30, 30)]);
    let (groups, total) = log.sm.usage(&all, By::Account);
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["default", "vision"]);
    assert_eq!(
        (groups["vision"].jobs, groups["vision"].used.gpu_s),
        (1, 400)
    );
    assert_eq!(
        (total.jobs, total.used.gpu_s, total.used.cpu_s),
        (2, 430, 230)
    );
    // A window clips the runs: from 51 s to 305 s.
    let window = Filter {
        since_ms: Some(51_000),
        until_ms: Some(305_000),
        ..Filter::default()
    };
    let clipped: Vec<(u64, u64)> = log
        .sm
        .history(&window)
        .iter()
        .map(|r| (r.job.id, r.used.gpu_s))
        .collect();
    assert_eq!(clipped, [(a, 200), (b, 15)]);
    let users = Filter {
        users: vec!["nobody".into()],
        ..Filter::default()
    };
    assert!(log.sm.history(&users).is_empty());
}

/// A pool's limits at submit: only its accounts (and their sub-accounts), its default time
/// limit for jobs without one, nothing above its maximum.
#[test]
fn pool_limits_are_applied_at_submit() {
    let mut log = Log::new();
    log.register("n1", 4);
    let account = |name: &str, parent: &str| Command::AddAccount {
        account: crate::accounts::NewAccount {
            name: name.into(),
            parent: parent.into(),
            share: 1,
            guarantee_gpus: None,
            max_gpus: None,
            qos: None,
            deadlines: None,
        },
        by: "root".into(),
        now_ms: 1,
    };
    let users = |name: &str| Command::AddAccountUsers {
        account: name.into(),
        users: vec!["ann".into()],
        by: "root".into(),
        now_ms: 1,
    };
    let set = |key: &str, value: &str| Command::SetConfig {
        key: key.into(),
        value: value.into(),
        by: "root".into(),
        now_ms: 1,
    };
    for command in [
        account("vision", "root"),
        account("cv", "vision"),
        users("vision"),
        users("cv"),
        set("pool.default.accounts", "vision"),
        set("pool.default.max_time", "2h"),
        set("pool.default.default_time", "30m"),
    ] {
        assert_eq!(log.apply(command), Outcome::Applied);
    }
    let submit = |log: &mut Log, account: &str, limit: Option<u64>| {
        let mut s = spec(1, 1);
        s.account = account.into();
        s.time_limit_ms = limit;
        log.apply(Command::Submit {
            owner: owner("ann"),
            spec: Box::new(s),
            key: None,
            now_ms: 2,
        })
    };
    assert_eq!(
        submit(&mut log, "default", Some(60_000)),
        Outcome::Rejected(Rejection::PoolAccount {
            pool: "default".into(),
            account: "default".into(),
            allowed: "vision".into(),
        })
    );
    let Outcome::Submitted(defaulted) = submit(&mut log, "cv", None) else {
        panic!("a sub-account of vision is let in");
    };
    assert_eq!(
        log.sm.job(defaulted).unwrap().spec.time_limit_ms,
        Some(1_800_000)
    );
    let refused = submit(&mut log, "vision", Some(3 * 3_600_000));
    assert_eq!(
        refused.clone(),
        Outcome::Rejected(Rejection::PoolTime {
            pool: "default".into(),
            asked: "3:00:00".into(),
            max: "2:00:00".into(),
        })
    );
    let Outcome::Rejected(why) = refused else {
        unreachable!()
    };
    assert_eq!(
        why.to_string(),
        "the time limit 3:00:00 is above pool default's maximum of 2:00:00"
    );
    assert!(matches!(
        submit(&mut log, "vision", Some(3_600_000)),
        Outcome::Submitted(_)
    ));
}

/// A failed GPU is given to no job; the job on it stops to run again (or ends NODE_FAIL with
/// --no-requeue); the node is drained unless `gpu_failure.drain` is off; registering again
/// without the failure clears it.
#[test]
fn a_failed_gpu_stops_its_job_drains_the_node_and_is_given_to_no_one() {
    let mut log = Log::new();
    log.register("n1", 4);
    let a = log.submit(1, 1);
    let mut once = spec(1, 1);
    once.requeue.on_node_failure = false;
    let b = log.submit_spec(once);
    let c = log.submit(1, 1);
    log.allocate(a, "n1", vec![0]);
    log.allocate(b, "n1", vec![1]);
    log.allocate(c, "n1", vec![2]);
    let failed = |gpu: u32| Command::GpuFailed {
        node: "n1".into(),
        gpu,
        reason: "XID 79".into(),
        now_ms: 5,
    };
    assert_eq!(log.apply(failed(0)), Outcome::Applied);
    assert!(matches!(log.apply(failed(0)), Outcome::Ignored(_)));
    assert!(matches!(log.apply(failed(9)), Outcome::Rejected(_)));
    let job = log.sm.job(a).unwrap();
    assert_eq!(
        job.requeue.as_ref().unwrap().why,
        "GPU 0 on node n1 failed: XID 79"
    );
    assert!(!log.sm.job(c).unwrap().stopping(), "other GPUs' jobs go on");
    let node = log.sm.node("n1").unwrap();
    assert_eq!(node.state(), NodeState::Draining);
    assert_eq!(node.drain.as_ref().unwrap().reason, "GPU 0 failed: XID 79");
    log.exit(a, "n1", ExitReason::Preempted, None);
    assert_eq!(log.sm.job(a).unwrap().attempts[0].outcome, "NODE_FAIL");
    assert!(!log.sm.node("n1").unwrap().free_gpus().contains(&0));
    assert_eq!(log.sm.node_views()[0].gpus.len(), 3);

    // A --no-requeue job on a failed GPU ends NODE_FAIL.
    assert_eq!(log.apply(failed(1)), Outcome::Applied);
    log.exit(b, "n1", ExitReason::Cancelled, None);
    let job = log.sm.job(b).unwrap();
    assert_eq!(job.state, JobState::NodeFail);
    assert_eq!(job.reason, "GPU 1 on node n1 failed: XID 79");

    // Back without failures, resumed: every GPU is usable again.
    log.register("n1", 4);
    assert!(log.sm.node("n1").unwrap().failed_gpus.is_empty());
    let resume = Command::Resume {
        nodes: vec!["n1".into()],
        by: "root".into(),
        now_ms: 6,
    };
    assert_eq!(log.apply(resume), Outcome::Applied);
    let set = Command::SetConfig {
        key: "gpu_failure.drain".into(),
        value: "false".into(),
        by: "root".into(),
        now_ms: 7,
    };
    assert_eq!(log.apply(set), Outcome::Applied);
    assert_eq!(log.apply(failed(3)), Outcome::Applied);
    assert!(log.sm.node("n1").unwrap().drain.is_none());
}

/// Reservations in the log: checked when created, members admitted at submit, and starts
/// that break a window refused at apply (a plan made before the reservation).
#[test]
fn reservations_are_checked_and_enforced_at_apply() {
    use crate::reservation::Reservation;
    let mut log = Log::new();
    log.register("n1", 4);
    log.register("n2", 4);
    let hour = 3_600_000;
    let reservation = |name: &str, start_ms, nodes: &[&str]| Reservation {
        name: name.into(),
        start_ms,
        end_ms: start_ms + hour,
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        users: vec!["ann".into()],
        accounts: vec![],
        created_by: "root".into(),
        maintenance: false,
        started: false,
        gpus: Default::default(),
    };
    let create = |r: Reservation, force| Command::CreateReservation {
        reservation: r,
        force,
        now_ms: 10,
        gpus: None,
    };
    let running = log.submit(1, 1);
    log.allocate(running, "n2", vec![0]);
    assert_eq!(
        log.apply(create(reservation("r", 0, &["n1"]), false)),
        Outcome::Applied
    );
    for (bad, why) in [
        (reservation("bad name", 10, &["n1"]), "must be 1 to 64"),
        (
            reservation("clash", 20, &["n1"]),
            "node n1 is in reservation r",
        ),
        (
            reservation("busy", 20, &["n2"]),
            "job 1 on node n2 may still run",
        ),
        (
            reservation("gone", 10, &["n9"]),
            "node \"n9\" does not exist",
        ),
        (
            reservation("r", hour * 5, &["n2"]),
            "reservation r exists already",
        ),
    ] {
        let Outcome::Rejected(refusal) = log.apply(create(bad, false)) else {
            panic!("accepted");
        };
        assert!(refusal.to_string().contains(why), "{refusal}");
    }
    let submit_in = |log: &mut Log, user: &str, name: &str| {
        let mut s = spec(1, 1);
        s.reservation = Some(name.into());
        s.time_limit_ms = Some(60_000);
        log.apply(Command::Submit {
            owner: owner(user),
            spec: Box::new(s),
            key: None,
            now_ms: 11,
        })
    };
    assert!(matches!(
        submit_in(&mut log, "bob", "r"),
        Outcome::Rejected(Rejection::NotInReservation { .. })
    ));
    assert_eq!(
        submit_in(&mut log, "ann", "nope"),
        Outcome::Rejected(Rejection::UnknownReservation("nope".into()))
    );
    let Outcome::Submitted(member) = submit_in(&mut log, "ann", "r") else {
        panic!("a member is admitted");
    };
    let outsider = log.submit(1, 1);
    let refused = |out: Outcome| match out {
        Outcome::Rejected(Rejection::Stale { why, .. }) => why,
        other => panic!("not refused: {other:?}"),
    };
    // An outsider may not start on n1 in the window; the member only there.
    assert!(refused(log.allocate(outsider, "n1", vec![1])).contains("held by reservation r"));
    assert!(refused(log.allocate(member, "n2", vec![1])).contains("not in reservation r"));
    assert_eq!(log.allocate(member, "n1", vec![1]), Outcome::Applied);
    assert_eq!(log.allocate(outsider, "n2", vec![1]), Outcome::Applied);
    let view = log.sm.cluster_view(11);
    assert_eq!(view.reservations.len(), 1);
    let delete = Command::DeleteReservation {
        name: "r".into(),
        by: "root".into(),
        now_ms: 12,
    };
    assert_eq!(log.apply(delete.clone()), Outcome::Applied);
    assert_eq!(
        log.apply(delete),
        Outcome::Rejected(Rejection::UnknownReservation("r".into()))
    );
}

/// A maintenance reservation admits no job; when it starts, what still runs on its nodes
/// is requeued, once.
#[test]
fn a_maintenance_reservation_requeues_what_is_left_when_it_starts() {
    use crate::reservation::Reservation;
    let mut log = Log::new();
    log.register("n1", 4);
    let left = log.submit(1, 1);
    log.allocate(left, "n1", vec![0]);
    let mut window = Reservation {
        name: "m".into(),
        start_ms: 100,
        end_ms: 200,
        nodes: vec!["n1".into()],
        users: vec!["ann".into()],
        accounts: vec![],
        created_by: "root".into(),
        maintenance: true,
        started: false,
        gpus: Default::default(),
    };
    let create = |r: &Reservation| Command::CreateReservation {
        reservation: r.clone(),
        force: true,
        now_ms: 10,
        gpus: None,
    };
    assert!(
        matches!(log.apply(create(&window)), Outcome::Rejected(_)),
        "no members"
    );
    window.users.clear();
    assert_eq!(log.apply(create(&window)), Outcome::Applied);
    let started = |now_ms| Command::ReservationStarted {
        name: "m".into(),
        now_ms,
    };
    assert!(matches!(log.apply(started(99)), Outcome::Ignored(_)));
    assert!(!log.sm.job(left).unwrap().stopping());
    assert_eq!(log.apply(started(100)), Outcome::Applied);
    assert_eq!(
        log.sm.job(left).unwrap().requeue.as_ref().unwrap().why,
        "maintenance reservation m starts on node n1"
    );
    assert!(
        matches!(log.apply(started(101)), Outcome::Ignored(_)),
        "once"
    );
}

/// A reservation of GPUs: picked at apply in node order, around running jobs and other
/// reservations; outsiders keep the node's other GPUs, members get only the held ones.
#[test]
fn a_reservation_of_gpus_holds_those_gpus_only() {
    use crate::command::GpuAsk;
    use crate::reservation::Reservation;
    let mut log = Log::new();
    log.register("n1", 4);
    log.register("n2", 4);
    let busy = log.submit(1, 1);
    log.allocate(busy, "n1", vec![0]);
    let create = |name: &str, count| Command::CreateReservation {
        reservation: Reservation {
            name: name.into(),
            start_ms: 0,
            end_ms: 3_600_000,
            nodes: vec![],
            gpus: Default::default(),
            users: vec!["ann".into()],
            accounts: vec![],
            created_by: "root".into(),
            maintenance: false,
            started: false,
        },
        gpus: Some(GpuAsk { count, pool: None }),
        force: false,
        now_ms: 1,
    };
    assert_eq!(log.apply(create("five", 5)), Outcome::Applied);
    let held = log.sm.reservations(2).next().unwrap().gpus.clone();
    assert_eq!(
        held,
        [
            ("n1".to_string(), vec![1, 2, 3]),
            ("n2".to_string(), vec![0, 1])
        ]
        .into()
    );
    let Outcome::Rejected(refusal) = log.apply(create("more", 3)) else {
        panic!("only 2 GPUs are left");
    };
    assert!(
        refusal
            .to_string()
            .contains("only 2 GPU(s) can be held for that window (wanted 3)"),
        "{refusal}"
    );
    // Outsiders: n2's GPUs 2 and 3 are free for them, 0 and 1 are not.
    let outsider = log.submit(1, 1);
    let refused = |out: Outcome| match out {
        Outcome::Rejected(Rejection::Stale { why, .. }) => why,
        other => panic!("not refused: {other:?}"),
    };
    assert!(refused(log.allocate(outsider, "n2", vec![1])).contains("held by reservation five"));
    assert_eq!(log.allocate(outsider, "n2", vec![2]), Outcome::Applied);
}

/// FNV-1a: a hash whose value never changes with the Rust or crate versions.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The bytes of commands and snapshots are what `STATE_FORMAT` says: any change to their
/// encoding (a field or variant of a command or of the state added, removed or moved)
/// changes this fingerprint of a fixed, seeded sample of logs. When it fails: bump
/// `crate::STATE_FORMAT` and record the new fingerprint with it — unless only the sample
/// changed (`arb_command`, or proptest's generator after an upgrade of proptest), which
/// needs the new fingerprint alone.
#[test]
fn the_encoding_is_the_recorded_state_format() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for _ in 0..64 {
        let commands = prop::collection::vec(arb_command(), 40)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        for command in &commands {
            hash = fnv1a(hash, &postcard::to_stdvec(command).unwrap());
        }
        hash = fnv1a(hash, &replay(&commands).to_snapshot());
    }
    assert_eq!(
        (crate::STATE_FORMAT, format!("{hash:016x}")),
        (3, "5675f984ab3a202c".to_string()),
        "the encoding of commands or snapshots changed: bump STATE_FORMAT and record the new \
         fingerprint"
    );
}

// ---- An acknowledged requeue is never lost (issue 16, defect 1) ----

/// The ways a running job is asked to stop and run again, each acknowledged once applied.
#[derive(Debug, Clone, Copy)]
enum RequeueAsk {
    /// `gantry requeue` (the Slurm idiom `scontrol requeue $SLURM_JOB_ID` from the job itself).
    ByHand,
    /// `gantry preempt`, by an admin.
    ByAdmin,
    /// A reclaim or a QoS preemption from the scheduling pass.
    Reclaim,
    /// `gantry drain --requeue`.
    Drain,
}

fn requeue_command(ask: RequeueAsk, job: u64, now_ms: u64) -> Command {
    let control = |action| Command::Control {
        jobs: vec![job],
        action,
        by: "ann".into(),
        admin: true,
        now_ms,
    };
    match ask {
        RequeueAsk::ByHand => control(Control::Requeue),
        RequeueAsk::ByAdmin => control(Control::Preempt),
        RequeueAsk::Reclaim => Command::Requeue {
            job,
            attempt: 0,
            for_job: 9,
            for_place: vec![],
            reason: "account vision reclaims its guaranteed GPUs for job 9".into(),
            moved_to: None,
            now_ms,
        },
        RequeueAsk::Drain => Command::Drain {
            nodes: vec!["n1".into()],
            reason: "maintenance".into(),
            by: "root".into(),
            mode: DrainMode::Requeue,
            now_ms,
        },
    }
}

/// The job asked its own requeue and exited 0 before the stop reached it (`gantry requeue
/// "$GANTRY_JOB_ID"; exit 0`): 4 of 13 such jobs ended COMPLETED at attempt 0 and never ran
/// again. Once a requeue is acknowledged, the run counts as requeued however it ends.
#[test]
fn an_acknowledged_requeue_is_not_lost_when_the_job_exits_before_the_stop() {
    for ask in [
        RequeueAsk::ByHand,
        RequeueAsk::ByAdmin,
        RequeueAsk::Reclaim,
        RequeueAsk::Drain,
    ] {
        for (reason, code) in [
            (ExitReason::Exited, Some(0)),
            (ExitReason::Exited, Some(3)),
            (ExitReason::Preempted, Some(0)),
        ] {
            let mut log = Log::new();
            log.register("n1", 4);
            let id = log.submit(1, 1);
            assert_eq!(log.allocate(id, "n1", vec![0]), Outcome::Applied);
            assert_eq!(
                log.apply(requeue_command(ask, id, 5)),
                Outcome::Applied,
                "{ask:?}"
            );
            assert_eq!(log.exit(id, "n1", reason, code), Outcome::Applied);
            let job = log.sm.job(id).unwrap();
            assert_eq!(
                (job.state, job.attempt),
                (JobState::Pending, 1),
                "{ask:?} then {reason:?} {code:?}: {}",
                job.reason
            );
        }
    }
}

/// What can happen to a running job's run, in any order.
#[derive(Debug, Clone)]
enum RunEvent {
    Requeue(RequeueAsk),
    Started {
        node: usize,
    },
    Exit {
        node: usize,
        reason: ExitReason,
        code: Option<i32>,
    },
    /// The node daemon registers again, still running the job or not.
    Reconnect {
        node: usize,
        runs_it: bool,
    },
    /// The node is declared lost, then comes back.
    Lost {
        node: usize,
    },
}

fn arb_run_event() -> impl Strategy<Value = RunEvent> {
    let ask = prop::sample::select(vec![
        RequeueAsk::ByHand,
        RequeueAsk::ByAdmin,
        RequeueAsk::Reclaim,
        RequeueAsk::Drain,
    ]);
    let exit = prop::sample::select(vec![
        (ExitReason::Exited, Some(0)),
        (ExitReason::Exited, Some(1)),
        (ExitReason::Preempted, Some(0)),
        (ExitReason::Cancelled, None),
        (ExitReason::Timeout, None),
        (ExitReason::Lost, None),
    ]);
    prop_oneof![
        ask.prop_map(RunEvent::Requeue),
        (0..2usize).prop_map(|node| RunEvent::Started { node }),
        (0..2usize, exit).prop_map(|(node, (reason, code))| RunEvent::Exit { node, reason, code }),
        (0..2usize, any::<bool>())
            .prop_map(|(node, runs_it)| RunEvent::Reconnect { node, runs_it }),
        (0..2usize).prop_map(|node| RunEvent::Lost { node }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Requeue, exits, starts, node reports and reconnects in every order: once a requeue is
    /// acknowledged (applied), the run that ends counts as requeued — the job is pending as
    /// its next run — whatever its parts' exits were.
    #[test]
    fn an_acknowledged_requeue_counts_however_and_whenever_the_run_ends(
        nodes in 1..=2usize,
        no_requeue in any::<bool>(),
        events in prop::collection::vec(arb_run_event(), 1..12),
    ) {
        let names = ["n1", "n2"];
        let mut log = Log::new();
        for name in names {
            log.register(name, 4);
        }
        let mut s = spec(u32::try_from(nodes).unwrap(), 1);
        s.requeue.on_node_failure = !no_requeue;
        let id = log.submit_spec(s);
        let parts = names[..nodes]
            .iter()
            .map(|n| PartPlan { node: (*n).into(), gpus: vec![0], cpus: 1, mem_mib: 256 })
            .collect();
        let allocated = log.apply(Command::Allocate {
            shape: 0, job: id, attempt: 0, parts, now_ms: 3, token: String::new(),
        });
        prop_assert_eq!(allocated, Outcome::Applied);
        let mut acknowledged = false;
        let mut at = 10;
        for event in events {
            at += 1;
            let ended_before = log.sm.job(id).unwrap().attempt > 0
                || log.sm.job(id).unwrap().state.is_terminal();
            match event {
                RunEvent::Requeue(ask) => {
                    // A drain applies to its node whether or not the job still runs there.
                    if log.apply(requeue_command(ask, id, at)) == Outcome::Applied
                        && log.sm.job(id).unwrap().requeue.is_some()
                    {
                        prop_assert!(!ended_before, "a requeue of an ended run was acknowledged");
                        acknowledged = true;
                    }
                }
                RunEvent::Started { node } => {
                    log.apply(Command::JobStarted {
                        job: id, attempt: 0, node: names[node % nodes].into(), now_ms: at,
                    });
                }
                RunEvent::Exit { node, reason, code } => {
                    let exit = PartExit { reason, exit_code: code, signal: None, message: "m".into(), after_time_limit_warning: false };
                    log.apply(Command::JobExited {
                        job: id, attempt: 0, node: names[node % nodes].into(), exit, now_ms: at,
                    });
                }
                RunEvent::Reconnect { node, runs_it } => {
                    let running = if runs_it { vec![(id, 0)] } else { vec![] };
                    log.apply(Command::RegisterNode {
                        name: names[node % nodes].into(),
                        identity: "daemon".into(),
                        finished: vec![],
                        inventory: inventory(4),
                        running,
                        failed_gpus: vec![],
                        now_ms: at,
                    });
                }
                RunEvent::Lost { node } => {
                    log.apply(node_lost(names[node % nodes], at));
                    log.register(names[node % nodes], 4);
                }
            }
        }
        let job = log.sm.job(id).unwrap();
        let ended = job.attempt > 0 || job.state.is_terminal();
        if acknowledged && ended {
            prop_assert_eq!(
                (job.state, job.attempt), (JobState::Pending, 1),
                "an acknowledged requeue was lost: {}", job.reason
            );
        }
    }
}

// ---- The time limit's warning and a job's own word that its work is done (defect 3) ----

fn warned_exit(code: i32) -> PartExit {
    PartExit {
        reason: ExitReason::Exited,
        exit_code: Some(code),
        signal: None,
        message: "exited".into(),
        after_time_limit_warning: true,
    }
}

fn work_done(job: u64, attempt: u32) -> Command {
    Command::CheckpointDone {
        job,
        attempt,
        progress: Some(20),
        work_done: true,
        now_ms: 8,
    }
}

/// Saved and exited 0 once warned of its time limit: with `--requeue-on-timeout` it ran out
/// of time, so it runs again (the guide's recipe ended COMPLETED after 5 of 20 steps);
/// without, the exit is its own end; with `checkpoint done --final`, its work is done.
#[test]
fn an_exit_after_the_time_limit_warning_requeues_jobs_that_ask() {
    let mut log = Log::new();
    log.register("n1", 4);
    let mut again = spec(1, 1);
    again.requeue.on_timeout = true;
    let (asks, plain, done) = (
        log.submit_spec(again.clone()),
        log.submit(1, 1),
        log.submit_spec(again),
    );
    for (i, id) in [asks, plain, done].into_iter().enumerate() {
        assert_eq!(
            log.allocate(id, "n1", vec![u32::try_from(i).unwrap()]),
            Outcome::Applied
        );
    }
    assert_eq!(log.apply(work_done(done, 0)), Outcome::Applied);
    for id in [asks, plain, done] {
        let exit = Command::JobExited {
            job: id,
            attempt: 0,
            node: "n1".into(),
            exit: warned_exit(0),
            now_ms: 9,
        };
        assert_eq!(log.apply(exit), Outcome::Applied);
    }
    let job = log.sm.job(asks).unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Pending, 1));
    assert_eq!(job.attempts[0].outcome, "TIMEOUT");
    assert_eq!(job.automatic_requeues, 1);
    assert_eq!(log.sm.job(plain).unwrap().state, JobState::Completed);
    let job = log.sm.job(done).unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Completed, 0));
    // The next run starts without the word of the last one.
    let parts = vec![PartPlan {
        node: "n1".into(),
        gpus: vec![3],
        cpus: 1,
        mem_mib: 256,
    }];
    let again = Command::Allocate {
        job: asks,
        attempt: 1,
        shape: 0,
        parts,
        token: String::new(),
        now_ms: 10,
    };
    assert_eq!(log.apply(again), Outcome::Applied);
    assert!(!log.sm.job(asks).unwrap().work_done);
}

/// `gantry checkpoint done --final`, then exit 0 during a preemption's lead: COMPLETED, not run
/// again; an exit other than 0 still goes back to the queue.
#[test]
fn a_job_whose_work_is_done_completes_though_it_was_being_requeued() {
    for (code, state, attempt) in [(0, JobState::Completed, 0), (1, JobState::Pending, 1)] {
        let mut log = Log::new();
        log.register("n1", 4);
        let id = log.submit(1, 1);
        assert_eq!(log.allocate(id, "n1", vec![0]), Outcome::Applied);
        assert_eq!(
            log.apply(requeue_command(RequeueAsk::Reclaim, id, 5)),
            Outcome::Applied
        );
        assert_eq!(log.apply(work_done(id, 0)), Outcome::Applied);
        assert_eq!(
            log.exit(id, "n1", ExitReason::Preempted, Some(code)),
            Outcome::Applied
        );
        let job = log.sm.job(id).unwrap();
        assert_eq!((job.state, job.attempt), (state, attempt), "{}", job.reason);
        if state == JobState::Completed {
            assert_eq!(job.reason, "");
        }
    }
}

/// What a stopped job's checkpoint warning says: why it runs again.
#[test]
fn a_stop_to_run_again_names_its_cause() {
    use gantry_model::Warning;
    let warning = |ask| {
        let mut log = Log::new();
        log.register("n1", 4);
        let id = log.submit(1, 1);
        log.allocate(id, "n1", vec![0]);
        log.apply(requeue_command(ask, id, 5));
        log.sm.job(id).unwrap().requeue_warning()
    };
    assert_eq!(warning(RequeueAsk::ByHand), Some(Warning::Requeue));
    assert_eq!(warning(RequeueAsk::ByAdmin), Some(Warning::Preemption));
    assert_eq!(warning(RequeueAsk::Reclaim), Some(Warning::Preemption));
    assert_eq!(warning(RequeueAsk::Drain), Some(Warning::Drain));
}

/// A checkpoint dir goes `checkpoint.keep` after its job ended; never while the job has not
/// ended, nor for an id this state never gave out (another cluster's, on shared storage).
#[test]
fn checkpoint_dirs_go_only_once_their_jobs_ended_long_enough_ago() {
    let mut log = Log::new();
    log.register("n1", 4);
    let keep = |log: &mut Log, value: &str| {
        let set = Command::SetConfig {
            key: "checkpoint.keep".into(),
            value: value.into(),
            by: "root".into(),
            now_ms: 1,
        };
        assert_eq!(log.apply(set), Outcome::Applied);
    };
    keep(&mut log, "10s");
    let ended = log.submit(1, 1);
    let running = log.submit(1, 1);
    let pending = log.submit(1, 4);
    log.allocate(ended, "n1", vec![0]);
    log.allocate(running, "n1", vec![1]);
    log.exit(ended, "n1", ExitReason::Exited, Some(0));
    let asked = [ended, running, pending, 99];
    // Ended at 9 ms: kept until 10 009 ms.
    assert_eq!(
        log.sm.checkpoints_to_remove(&asked, 10_008),
        Vec::<u64>::new()
    );
    assert_eq!(log.sm.checkpoints_to_remove(&asked, 10_009), [ended]);
    keep(&mut log, "none");
    assert_eq!(
        log.sm.checkpoints_to_remove(&asked, u64::MAX),
        Vec::<u64>::new()
    );
}

/// A second node daemon under a name in use is refused, and changes nothing; the owner comes
/// back freely, with the exits it recorded while away; an admin's `ReplaceNode` lets another
/// daemon claim the name.
#[test]
fn a_node_name_belongs_to_one_node_daemon_until_an_admin_replaces_it() {
    let mut log = Log::new();
    log.register("n1", 4);
    let id = log.submit(1, 1);
    assert_eq!(log.allocate(id, "n1", vec![0]), Outcome::Applied);
    let register =
        |identity: &str, gpus, finished: Vec<(u64, u32, PartExit)>| Command::RegisterNode {
            name: "n1".into(),
            identity: identity.into(),
            inventory: inventory(gpus),
            running: vec![],
            finished,
            failed_gpus: vec![],
            now_ms: 5,
        };
    let before = log.sm.clone();
    let exit = PartExit {
        reason: ExitReason::Exited,
        exit_code: Some(0),
        signal: None,
        message: "done".into(),
        after_time_limit_warning: false,
    };
    // An impostor's exits would end the owner's job: refused whole.
    let refused = log.apply(register("impostor-1234567", 8, vec![(id, 0, exit.clone())]));
    let Outcome::Rejected(why) = refused else {
        panic!("{refused:?}");
    };
    assert!(
        why.to_string().contains(
            "node name n1 is in use by another node daemon (identity daemon; this one is impostor)"
        ),
        "{why}"
    );
    assert_eq!(log.sm.job(id), before.job(id));
    assert_eq!(log.sm.node("n1").unwrap().inventory.gpus.len(), 4);
    // The owner, back with the exit it recorded while away.
    assert_eq!(
        log.apply(register("daemon", 4, vec![(id, 0, exit)])),
        Outcome::Applied
    );
    assert_eq!(log.sm.job(id).unwrap().state, JobState::Completed);
    let replace = |name: &str| Command::ReplaceNode {
        name: name.into(),
        by: "root".into(),
        now_ms: 6,
    };
    assert_eq!(
        log.apply(replace("nope")),
        Outcome::Rejected(Rejection::UnknownNode("nope".into()))
    );
    // Not while the node is up: its daemon may still be there.
    assert_eq!(
        log.apply(replace("n1")),
        Outcome::Rejected(Rejection::NodeUp("n1".into()))
    );
    assert_eq!(log.apply(node_lost("n1", 6)), Outcome::Applied);
    assert_eq!(log.apply(replace("n1")), Outcome::Applied);
    assert_eq!(
        log.apply(register("impostor-1234567", 8, vec![])),
        Outcome::Applied
    );
    assert_eq!(log.sm.node("n1").unwrap().identity, "impostor-1234567");
    assert_eq!(log.sm.node("n1").unwrap().inventory.gpus.len(), 8);
    assert!(matches!(
        log.apply(register("daemon", 4, vec![])),
        Outcome::Rejected(_)
    ));
}

/// A held job showed a queue position, as if it were waiting its turn: it is not in the
/// queue until released, and the jobs behind it move up.
#[test]
fn a_held_job_has_no_queue_position() {
    let mut log = Log::new();
    log.register("n1", 4);
    let (a, b, c) = (log.submit(1, 4), log.submit(1, 4), log.submit(1, 4));
    let hold = Command::Control {
        jobs: vec![b],
        action: Control::Hold,
        by: "ann".into(),
        admin: false,
        now_ms: 5,
    };
    assert_eq!(log.apply(hold), Outcome::Applied);
    let places: Vec<Option<usize>> = [a, b, c].map(|id| log.sm.queue_position(id)).into();
    assert_eq!(places, [Some(1), None, Some(2)]);
}

/// The first leader names the cluster, once; a bad name is refused.
#[test]
fn a_cluster_is_named_once() {
    let mut log = Log::new();
    assert_eq!(log.sm.cluster(), "");
    let name = |n: &str| Command::NameCluster { name: n.into() };
    assert!(matches!(log.apply(name("../x")), Outcome::Rejected(_)));
    assert_eq!(log.apply(name("c0ffee")), Outcome::Applied);
    assert!(matches!(log.apply(name("beef")), Outcome::Ignored(_)));
    assert_eq!(log.sm.cluster(), "c0ffee");
}
