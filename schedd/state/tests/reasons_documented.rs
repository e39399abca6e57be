//! Every reason a pending job can show is in the user guide's table ("Why is my job
//! pending?"): the table lacked `held by ...`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use gantry_model::{Condition, Dependency, Owner};
use gantry_policies::WaitReason;
use gantry_state::{Command, Control, Outcome, StateMachine};

/// The rows of the table under `heading`: each row's first cell, without its backquotes.
fn table_after(heading: &str) -> Vec<String> {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/user-guide.md"
    ))
    .unwrap();
    let (_, after) = guide
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in the user guide"));
    after
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .map(|cell| cell.trim().trim_matches('`').to_string())
        .collect()
}

/// One of each reason the policies give: the match is exhaustive, so a new kind of reason
/// fails to compile here until it is listed (and documented).
fn every_wait_reason() -> Vec<WaitReason> {
    let all = vec![
        WaitReason::Resources("needs 2 GPU(s)".into()),
        WaitReason::Reserved { in_ms: 60_000 },
        WaitReason::Priority { behind: 3 },
        WaitReason::NeverFits("asks 8 GPUs per node".into()),
        WaitReason::Quota("account a may hold 1 GPU".into()),
        WaitReason::Dependency {
            on: vec![Dependency {
                condition: Condition::AfterOk,
                job: 12,
            }],
        },
        WaitReason::Stopping { awaits: vec![4] },
        WaitReason::Preempting {
            stopping: vec![4],
            qos: "high".into(),
        },
        WaitReason::Reservation("reservation r starts at 12:00".into()),
        WaitReason::Deadline { stopping: vec![4] },
        WaitReason::Defragmenting { moving: vec![4] },
        WaitReason::Reclaiming { stopping: vec![4] },
    ];
    for reason in &all {
        match reason {
            WaitReason::Resources(_)
            | WaitReason::Reserved { .. }
            | WaitReason::Priority { .. }
            | WaitReason::NeverFits(_)
            | WaitReason::Quota(_)
            | WaitReason::Dependency { .. }
            | WaitReason::Stopping { .. }
            | WaitReason::Preempting { .. }
            | WaitReason::Reservation(_)
            | WaitReason::Deadline { .. }
            | WaitReason::Defragmenting { .. }
            | WaitReason::Reclaiming { .. } => {}
        }
    }
    all
}

/// A state machine with nodes `names` (no GPUs) and a job of `nodes` nodes from ann, id 1.
fn one_job(names: &[&str], nodes: u32) -> StateMachine {
    let mut sm = StateMachine::default();
    let mut index = 0;
    for name in names {
        let register = Command::RegisterNode {
            name: (*name).into(),
            identity: (*name).into(),
            inventory: gantry_model::testing::node_inventory(0, 4, 4096),
            running: vec![],
            finished: vec![],
            failed_gpus: vec![],
            now_ms: 1,
        };
        index += 1;
        assert_eq!(sm.apply(index, &register), Outcome::Applied);
    }
    let submit = Command::Submit {
        owner: Owner {
            user: "ann".into(),
            uid: 1000,
            gid: 1000,
        },
        spec: Box::new(gantry_model::testing::job_spec(nodes, 0)),
        key: None,
        now_ms: 1,
    };
    assert_eq!(sm.apply(index + 1, &submit), Outcome::Submitted(1));
    sm
}

/// What a held job's reason reads, from the state machine itself.
fn held_reason() -> String {
    let mut sm = one_job(&["n1"], 1);
    let hold = Command::Control {
        jobs: vec![1],
        action: Control::Hold,
        by: "ann".into(),
        admin: false,
        now_ms: 2,
    };
    assert_eq!(sm.apply(10, &hold), Outcome::Applied);
    sm.job(1).unwrap().reason.clone()
}

#[test]
fn every_reason_a_pending_job_shows_is_in_the_user_guide() {
    let rows = table_after("### Why is my job pending?");
    let reasons: Vec<String> = every_wait_reason()
        .iter()
        .map(ToString::to_string)
        .chain([held_reason()])
        .collect();
    for reason in reasons {
        // Its leading word (`Resources:`), or for a reason without one its first two
        // (`held by`), begins a row.
        let key = match reason.split_once(':') {
            Some((word, _)) => format!("{word}:"),
            None => reason.split(' ').take(2).collect::<Vec<_>>().join(" "),
        };
        assert!(
            rows.iter().any(|row| row.starts_with(&key)),
            "{reason:?} is not in the table: {rows:?}"
        );
    }
}

/// The reason of a job of several nodes that failed on one names the node; the guide said
/// `exit code 1 (first failing node)`.
#[test]
fn the_multi_node_failure_reason_is_as_the_guide_shows_it() {
    let mut sm = one_job(&["n1", "n2"], 2);
    let mut index = 10;
    let mut apply = |sm: &mut StateMachine, c: Command| {
        index += 1;
        sm.apply(index, &c)
    };
    let parts = ["n1", "n2"]
        .map(|node| gantry_policies::PartPlan {
            node: node.into(),
            gpus: vec![],
            cpus: 1,
            mem_mib: 256,
        })
        .to_vec();
    let allocate = Command::Allocate {
        job: 1,
        attempt: 0,
        shape: 0,
        parts,
        token: String::new(),
        now_ms: 2,
    };
    assert_eq!(apply(&mut sm, allocate), Outcome::Applied);
    for (node, code) in [("n2", 7), ("n1", 0)] {
        let exit = Command::JobExited {
            job: 1,
            attempt: 0,
            node: node.into(),
            exit: gantry_state::PartExit {
                reason: gantry_state::ExitReason::Exited,
                exit_code: Some(code),
                signal: None,
                message: String::new(),
                after_time_limit_warning: false,
            },
            now_ms: 3,
        };
        assert_eq!(apply(&mut sm, exit), Outcome::Applied);
    }
    let reason = sm.job(1).unwrap().reason.clone();
    assert_eq!(reason, "exit code 7 on node n2");
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/user-guide.md"
    ))
    .unwrap();
    assert!(
        guide.contains("reason `exit code 7 on node gpu-2`"),
        "the guide's multi-node failure example is not the code's"
    );
}
