//! Many scheduling passes in a row, as the leader runs them: the state machine's view goes
//! to the policies, their starts and preemptions are applied as commands, and node daemons
//! report starts and exits (a stopped job ends a round or two after it was told). What one
//! pass cannot show — that reclaims, QoS preemptions and the queue do not undo each other
//! from one pass to the next — shows here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::{BTreeMap, BTreeSet};

use gantry_model::{JobId, JobSpec, JobState, NodeInventory, Owner};
use gantry_state::accounts::{AccountChange, NewAccount};
use gantry_state::{Command, ExitReason, Outcome, PartExit, StateMachine};
use proptest::prelude::*;

/// A round is one pass and what the nodes do until the next.
const ROUND_MS: u64 = 1_000;

struct Rounds {
    sm: StateMachine,
    index: u64,
    now_ms: u64,
    /// How long each job runs once started, in rounds.
    runs_for: BTreeMap<JobId, u64>,
    /// Running jobs: the round their run started.
    started: BTreeMap<JobId, u64>,
    /// Jobs being stopped: the round the stop was applied.
    stopping_since: BTreeMap<JobId, u64>,
    /// How many rounds a stopped job takes to end.
    stop_lag: u64,
    round: u64,
    /// (victim, waiting job, its run) → how many times the victim was stopped for that run
    /// of the job. (A job preempted in turn waits again as its next run, which may preempt
    /// the same victims: a cascade of QoS levels, not a loop.)
    stopped_for: BTreeMap<(JobId, JobId, u32), u32>,
    /// Waiting job → its victims still being stopped.
    victims: BTreeMap<JobId, BTreeSet<JobId>>,
    /// Waiting job → the round its last victim ended.
    victims_gone: BTreeMap<JobId, u64>,
}

fn inventory(gpus: u32) -> NodeInventory {
    gantry_model::testing::node_inventory(gpus, 64, 1 << 20)
}

impl Rounds {
    fn new(nodes: &[u32], stop_lag: u64) -> Rounds {
        let mut r = Rounds {
            sm: StateMachine::default(),
            index: 1,
            now_ms: 1_000_000,
            runs_for: BTreeMap::new(),
            started: BTreeMap::new(),
            stopping_since: BTreeMap::new(),
            stop_lag,
            round: 0,
            stopped_for: BTreeMap::new(),
            victims: BTreeMap::new(),
            victims_gone: BTreeMap::new(),
        };
        for (i, gpus) in nodes.iter().enumerate() {
            r.ok(Command::RegisterNode {
                name: format!("n{i}"),
                identity: "daemon".into(),
                finished: vec![],
                inventory: inventory(*gpus),
                running: vec![],
                failed_gpus: vec![],
                now_ms: r.now_ms,
            });
        }
        r
    }

    fn apply(&mut self, command: Command) -> Outcome {
        self.index += 1;
        self.sm.apply(self.index, &command)
    }

    fn ok(&mut self, command: Command) {
        let outcome = self.apply(command.clone());
        assert_eq!(outcome, Outcome::Applied, "{command:?}");
    }

    fn set(&mut self, key: &str, value: &str) {
        self.ok(Command::SetConfig {
            key: key.into(),
            value: value.into(),
            by: "root".into(),
            now_ms: self.now_ms,
        });
    }

    /// Lets every account use every QoS level configured now (a grant at the root).
    fn grant_every_qos(&mut self) {
        let levels = self.sm.config().qos.keys().cloned().collect();
        self.ok(Command::SetAccount {
            name: "root".into(),
            change: AccountChange {
                qos: Some(Some(levels)),
                ..AccountChange::default()
            },
            by: "root".into(),
            now_ms: self.now_ms,
        });
    }

    fn account(&mut self, name: &str, guarantee_gpus: Option<u32>) {
        self.ok(Command::AddAccount {
            account: NewAccount {
                name: name.into(),
                parent: "root".into(),
                share: 1,
                guarantee_gpus,
                max_gpus: None,
                qos: None,
                deadlines: None,
            },
            by: "root".into(),
            now_ms: self.now_ms,
        });
        self.ok(Command::AddAccountUsers {
            account: name.into(),
            users: vec!["ann".into()],
            by: "root".into(),
            now_ms: self.now_ms,
        });
    }

    fn submit(&mut self, spec: JobSpec, runs_for: u64) -> JobId {
        let outcome = self.apply(Command::Submit {
            owner: Owner {
                user: "ann".into(),
                uid: 1000,
                gid: 1000,
            },
            spec: Box::new(spec),
            key: None,
            now_ms: self.now_ms,
        });
        let Outcome::Submitted(id) = outcome else {
            panic!("submit: {outcome:?}");
        };
        self.runs_for.insert(id, runs_for);
        id
    }

    fn state(&self, id: JobId) -> JobState {
        self.sm.job(id).unwrap().state
    }

    fn exit_all_parts(&mut self, id: JobId, reason: ExitReason) {
        let job = self.sm.job(id).unwrap();
        let attempt = job.attempt;
        let nodes: Vec<String> = job
            .parts
            .iter()
            .filter(|p| p.exit.is_none())
            .map(|p| p.node.clone())
            .collect();
        for node in nodes {
            let exit = PartExit {
                reason,
                exit_code: Some(0),
                signal: None,
                message: "m".into(),
                after_time_limit_warning: false,
            };
            self.apply(Command::JobExited {
                job: id,
                attempt,
                node,
                exit,
                now_ms: self.now_ms,
            });
        }
    }

    /// One pass, its decisions applied, then the nodes' reports until the next one.
    fn round(&mut self) {
        let view = self.sm.cluster_view(self.now_ms);
        let decisions = gantry_policies::schedule(&view);
        for stop in &decisions.preempt {
            let victim = &stop.job;
            let attempt = self.sm.job(*victim).unwrap().attempt;
            let outcome = self.apply(Command::Requeue {
                job: *victim,
                attempt,
                for_job: stop.for_job,
                for_place: stop.place.clone(),
                reason: stop.reason.clone(),
                moved_to: decisions
                    .moved
                    .iter()
                    .find(|(moved, _)| moved == victim)
                    .map(|(_, place)| place.clone()),
                now_ms: self.now_ms,
            });
            if outcome == Outcome::Applied {
                let waiting = stop.for_job;
                let run = self.sm.job(waiting).unwrap().attempt;
                *self.stopped_for.entry((*victim, waiting, run)).or_default() += 1;
                self.victims.entry(waiting).or_default().insert(*victim);
                self.stopping_since.insert(*victim, self.round);
            }
        }
        for start in &decisions.starts {
            let attempt = self.sm.job(start.job).unwrap().attempt;
            let outcome = self.apply(Command::Allocate {
                job: start.job,
                attempt,
                shape: start.shape,
                parts: start.parts.clone(),
                token: String::new(),
                now_ms: self.now_ms,
            });
            if outcome == Outcome::Applied {
                self.started.insert(start.job, self.round);
                for part in &start.parts {
                    self.ok(Command::JobStarted {
                        job: start.job,
                        attempt,
                        node: part.node.clone(),
                        now_ms: self.now_ms,
                    });
                }
            }
        }
        self.round += 1;
        self.now_ms += ROUND_MS;
        // The nodes: stopped jobs end after the lag, the others when their work is done.
        let running: Vec<JobId> = self.started.keys().copied().collect();
        for id in running {
            let stopped_at = self.stopping_since.get(&id).copied();
            let done = self.started[&id] + self.runs_for[&id] <= self.round;
            match stopped_at {
                Some(at) if at + self.stop_lag <= self.round => {
                    self.exit_all_parts(id, ExitReason::Preempted);
                    self.stopping_since.remove(&id);
                    for (waiting, victims) in &mut self.victims {
                        if victims.remove(&id) && victims.is_empty() {
                            self.victims_gone.insert(*waiting, self.round);
                        }
                    }
                }
                None if done => self.exit_all_parts(id, ExitReason::Exited),
                _ => continue,
            }
            if self.state(id) != JobState::Running {
                self.started.remove(&id);
            }
        }
    }

    /// No job was stopped twice for the same waiting job.
    fn stopped_at_most_once_for_each(&self) -> Result<(), String> {
        match self.stopped_for.iter().find(|(_, n)| **n > 1) {
            Some(((victim, waiting, run), n)) => Err(format!(
                "job {victim} was stopped {n} times for run {run} of job {waiting}"
            )),
            None => Ok(()),
        }
    }
}

fn spec(account: &str, qos: &str, gpus: u32) -> JobSpec {
    let mut spec = gantry_model::testing::job_spec(1, gpus);
    spec.account = account.into();
    spec.qos = qos.into();
    spec
}

/// The report: account vision (a 2-GPU guarantee) runs a 2-GPU job on a 4-GPU node; a
/// `-q urgent -G 4` job, whose QoS preempts vision's, arrives. The vision job was preempted
/// and restarted 20 times in 26 s and the urgent job never started.
#[test]
fn a_guarantee_reclaim_and_a_qos_preemption_do_not_undo_each_other() {
    let mut r = Rounds::new(&[4], 1);
    r.set("preempt.min_runtime", "0s");
    r.set("qos.urgent.priority", "900");
    r.set("qos.urgent.preempts", "low,normal");
    r.grant_every_qos();
    r.account("vision", Some(2));
    let vision = r.submit(spec("vision", "normal", 2), 20);
    r.round();
    assert_eq!(r.state(vision), JobState::Running);
    let urgent = r.submit(spec("default", "urgent", 4), 5);
    for _ in 0..60 {
        r.round();
        r.stopped_at_most_once_for_each().unwrap();
    }
    assert_eq!(r.state(urgent), JobState::Completed, "the urgent job ran");
    assert_eq!(r.state(vision), JobState::Completed);
}

/// What the property draws: nodes, accounts with or without guarantees, QoS levels that
/// preempt, and jobs arriving over time.
#[derive(Debug, Clone)]
struct Case {
    nodes: Vec<u32>,
    guarantees: Vec<Option<u32>>,
    urgent: bool,
    min_runtime_s: u64,
    stop_lag: u64,
    /// (arrives in round, account index, QoS, GPUs, runs for rounds)
    jobs: Vec<(u64, usize, &'static str, u32, u64)>,
}

fn arb_case() -> impl Strategy<Value = Case> {
    let nodes = prop::collection::vec(prop::sample::select(vec![2u32, 4, 8]), 1..=3);
    let guarantees = prop::collection::vec(prop::option::of(1u32..=6), 1..=3);
    (nodes, guarantees, any::<bool>(), 0u64..=3, 1u64..=3).prop_flat_map(
        |(nodes, guarantees, urgent, min_runtime_s, stop_lag)| {
            let accounts = guarantees.len();
            let widest = nodes.iter().copied().max().unwrap_or(1);
            let qos = prop::sample::select(vec!["low", "normal", "high", "urgent"]);
            let job = (0u64..15, 0..accounts, qos, 1..=widest, 1u64..=12);
            prop::collection::vec(job, 1..=8).prop_map(move |jobs| Case {
                nodes: nodes.clone(),
                guarantees: guarantees.clone(),
                urgent,
                min_runtime_s,
                stop_lag,
                jobs,
            })
        },
    )
}

/// Rounds enough for every job of a case to have run (each runs at most 12).
const ROUNDS: u64 = 200;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// However guarantees, QoS levels and arrivals combine: no job is stopped twice for the
    /// same waiting job, a waiting job whose victims have all stopped starts in the next pass
    /// (nothing queued behind takes their GPUs), and every job ends.
    #[test]
    fn reclaims_and_preemptions_never_loop_and_their_jobs_start(case in arb_case()) {
        let mut r = Rounds::new(&case.nodes, case.stop_lag);
        r.set("preempt.min_runtime", &format!("{}s", case.min_runtime_s));
        if case.urgent {
            r.set("qos.urgent.priority", "900");
            r.set("qos.urgent.preempts", "low,normal");
        }
        r.grant_every_qos();
        let names: Vec<String> = (0..case.guarantees.len()).map(|i| format!("a{i}")).collect();
        for (name, guarantee) in names.iter().zip(&case.guarantees) {
            r.account(name, *guarantee);
        }
        let mut ids = Vec::new();
        for round in 0..ROUNDS {
            for (_, account, qos, gpus, runs_for) in
                case.jobs.iter().filter(|(at, ..)| *at == round)
            {
                let qos = if *qos == "urgent" && !case.urgent { "high" } else { qos };
                ids.push(r.submit(spec(&names[*account], qos, *gpus), *runs_for));
            }
            r.round();
            prop_assert!(r.stopped_at_most_once_for_each().is_ok(), "{:?}", r.stopped_at_most_once_for_each());
            // A waiting job whose victims all ended last round started in this one.
            for (waiting, gone) in &r.victims_gone {
                if *gone + 1 == r.round && r.state(*waiting) == JobState::Pending {
                    let job = r.sm.job(*waiting).unwrap();
                    prop_assert!(
                        false,
                        "job {waiting}'s victims stopped in round {gone} but it still waits: {}",
                        job.reason
                    );
                }
            }
        }
        for id in ids {
            prop_assert_eq!(r.state(id), JobState::Completed, "job {} never ended", id);
        }
    }
}
