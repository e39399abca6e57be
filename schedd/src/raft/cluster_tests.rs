//! The storage proven against raft-rs itself: real `RawNode`s in one process over each
//! [`RaftLog`], an in-memory router, and the Ready loop the engine will run. Every loop is
//! bounded by a tick count; time never enters.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{Config, GetEntriesContext, RawNode, SnapshotStatus, StateRole, Storage, StorageError};
use serde::{Deserialize, Serialize};

use super::conformance::reopen_sled;
use super::{MemRaftLog, RaftLog, ReadyWrite, SledRaftLog, raft_logger};

/// Ticks allowed for an election, or for a catch-up, before a test gives up.
const MAX_TICKS: usize = 1_000;
/// Delivery rounds allowed for the cluster to go quiet between two ticks.
const MAX_ROUNDS: usize = 10_000;

/// The test's state machine: the normal entries applied, in order, with their index.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Machine {
    applied: u64,
    values: Vec<(u64, Vec<u8>)>,
}

impl Machine {
    fn restore(snapshot: &Snapshot) -> Machine {
        let machine: Machine = postcard::from_bytes(&snapshot.data).unwrap();
        assert_eq!(machine.applied, snapshot.get_metadata().index);
        machine
    }

    fn apply_normal(&mut self, entry: &Entry) {
        if !entry.data.is_empty() {
            self.values.push((entry.index, entry.data.to_vec()));
        }
    }
}

/// Where replicas keep their raft log, and what survives a replica being stopped.
trait Backend {
    type Log: RaftLog;
    /// An empty store for a replica that never ran.
    fn create(&mut self, id: u64) -> Self::Log;
    /// The replica stops; its store is closed.
    fn stop(&mut self, id: u64, node: RawNode<Self::Log>);
    /// The store a stopped replica left behind.
    fn reopen(&mut self, id: u64) -> Self::Log;
}

#[derive(Default)]
struct MemBackend {
    stopped: BTreeMap<u64, MemRaftLog>,
}

impl Backend for MemBackend {
    type Log = MemRaftLog;

    fn create(&mut self, _id: u64) -> MemRaftLog {
        MemRaftLog::new()
    }

    fn stop(&mut self, id: u64, node: RawNode<MemRaftLog>) {
        self.stopped.insert(id, node.store().clone());
    }

    fn reopen(&mut self, id: u64) -> MemRaftLog {
        self.stopped.remove(&id).unwrap()
    }
}

struct SledBackend {
    dir: tempfile::TempDir,
}

impl SledBackend {
    fn new() -> SledBackend {
        SledBackend {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("replica-{id}"))
    }
}

impl Backend for SledBackend {
    type Log = SledRaftLog;

    fn create(&mut self, id: u64) -> SledRaftLog {
        assert!(!self.path(id).exists());
        SledRaftLog::open(&self.path(id)).unwrap()
    }

    fn stop(&mut self, _id: u64, node: RawNode<SledRaftLog>) {
        drop(node);
    }

    fn reopen(&mut self, id: u64) -> SledRaftLog {
        reopen_sled(&self.path(id))
    }
}

struct Replica<L: RaftLog> {
    node: RawNode<L>,
    machine: Machine,
    snapshots_restored: usize,
}

fn config(id: u64, applied: u64) -> Config {
    let config = Config {
        id,
        election_tick: 10,
        heartbeat_tick: 3,
        applied,
        pre_vote: true,
        check_quorum: true,
        // Small, so catching up takes several appends read back from the store.
        max_size_per_msg: 512,
        max_inflight_msgs: 16,
        ..Config::default()
    };
    config.validate().unwrap();
    config
}

impl<L: RaftLog> Replica<L> {
    /// Starts a replica on `log`, rebuilding its state machine the way a restart does:
    /// the stored snapshot, then the stored entries up to the recorded applied index.
    fn start(id: u64, log: L) -> Replica<L> {
        let applied = log.applied().unwrap();
        let mut machine = match log.snapshot(0, id) {
            Ok(snapshot) => Machine::restore(&snapshot),
            Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => {
                Machine::default()
            }
            Err(error) => panic!("replica {id}: {error}"),
        };
        let first = log.first_index().unwrap();
        if applied >= first {
            let context = GetEntriesContext::empty(false);
            for entry in log.entries(first, applied + 1, None, context).unwrap() {
                if entry.get_entry_type() == EntryType::EntryNormal {
                    machine.apply_normal(&entry);
                }
            }
        }
        machine.applied = applied;
        let node = RawNode::new(&config(id, applied), log, &raft_logger(id)).unwrap();
        Replica {
            node,
            machine,
            snapshots_restored: 0,
        }
    }

    fn id(&self) -> u64 {
        self.node.raft.id
    }

    fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// One turn of the Ready loop, in the order raft-rs requires: messages a leader may send
    /// at once; persist snapshot + entries + hard state in one write; only then the
    /// persisted messages; apply; advance; persist the newer commit before applying more.
    fn handle_ready(&mut self, outbox: &mut Vec<Message>) {
        if !self.node.has_ready() {
            return;
        }
        let mut ready = self.node.ready();
        outbox.extend(ready.take_messages());
        self.node
            .mut_store()
            .persist_ready(ReadyWrite::from_ready(&ready))
            .unwrap();
        if !ready.snapshot().is_empty() {
            self.machine = Machine::restore(ready.snapshot());
            self.snapshots_restored += 1;
        }
        outbox.extend(ready.take_persisted_messages());
        self.apply(ready.take_committed_entries());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().persist_commit(commit).unwrap();
        }
        outbox.extend(light.take_messages());
        self.apply(light.take_committed_entries());
        self.node.advance_apply();
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|entry| entry.index) else {
            return;
        };
        for entry in &entries {
            assert_eq!(
                entry.index,
                self.machine.applied + 1,
                "applied out of order"
            );
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.machine.apply_normal(entry),
                EntryType::EntryConfChange => {
                    let change = ConfChange::parse_from_bytes(&entry.data).unwrap();
                    let conf_state = self.node.apply_conf_change(&change).unwrap();
                    self.node
                        .mut_store()
                        .set_conf_state(&conf_state, entry.index)
                        .unwrap();
                }
                EntryType::EntryConfChangeV2 => {
                    let change = ConfChangeV2::parse_from_bytes(&entry.data).unwrap();
                    let conf_state = self.node.apply_conf_change(&change).unwrap();
                    self.node
                        .mut_store()
                        .set_conf_state(&conf_state, entry.index)
                        .unwrap();
                }
            }
            self.machine.applied = entry.index;
        }
        self.node.mut_store().set_applied(last).unwrap();
    }

    /// Snapshots the state machine at its applied index and compacts the log up to it.
    fn compact(&mut self) {
        let index = self.machine.applied;
        let store = self.node.mut_store();
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = store.term(index).unwrap();
        meta.set_conf_state(store.initial_state().unwrap().conf_state);
        snapshot.data = postcard::to_allocvec(&self.machine).unwrap().into();
        store.save_snapshot(snapshot).unwrap();
        assert_eq!(store.first_index().unwrap(), index + 1);
    }
}

struct Cluster<B: Backend> {
    backend: B,
    replicas: BTreeMap<u64, Replica<B::Log>>,
}

impl<B: Backend> Cluster<B> {
    /// A fresh cluster whose members all start with the same voters and an empty log.
    fn bootstrap(mut backend: B, ids: &[u64]) -> Cluster<B> {
        let voters = raft::prelude::ConfState::from((ids.to_vec(), Vec::new()));
        let mut replicas = BTreeMap::new();
        for &id in ids {
            let mut log = backend.create(id);
            log.set_conf_state(&voters, 0).unwrap();
            replicas.insert(id, Replica::start(id, log));
        }
        Cluster { backend, replicas }
    }

    fn replica(&self, id: u64) -> &Replica<B::Log> {
        &self.replicas[&id]
    }

    fn replica_mut(&mut self, id: u64) -> &mut Replica<B::Log> {
        self.replicas.get_mut(&id).unwrap()
    }

    /// Handles every Ready and delivers every message until the cluster is quiet.
    fn settle(&mut self) {
        let mut in_flight = VecDeque::new();
        for _ in 0..MAX_ROUNDS {
            let mut outbox = Vec::new();
            for replica in self.replicas.values_mut() {
                replica.handle_ready(&mut outbox);
            }
            in_flight.extend(outbox);
            if in_flight.is_empty() && !self.replicas.values().any(|r| r.node.has_ready()) {
                return;
            }
            while let Some(message) = in_flight.pop_front() {
                self.deliver(message);
            }
        }
        panic!("the cluster did not go quiet in {MAX_ROUNDS} rounds");
    }

    /// The in-memory router: messages to a stopped or unknown replica are lost.
    fn deliver(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        let delivered = match self.replicas.get_mut(&to) {
            Some(replica) => match replica.node.step(message) {
                Ok(()) | Err(raft::Error::StepPeerNotFound) => true,
                Err(error) => panic!("replica {to} refused a message: {error}"),
            },
            None => false,
        };
        // raft-rs must hear how a snapshot it sent went, or it waits on it.
        if is_snapshot && let Some(sender) = self.replicas.get_mut(&from) {
            let status = if delivered {
                SnapshotStatus::Finish
            } else {
                sender.node.report_unreachable(to);
                SnapshotStatus::Failure
            };
            sender.node.report_snapshot(to, status);
        }
    }

    fn tick(&mut self) {
        for replica in self.replicas.values_mut() {
            replica.node.tick();
        }
        self.settle();
    }

    /// Ticks until `done` holds, at most `MAX_TICKS` times.
    fn run_until(&mut self, what: &str, done: impl Fn(&Cluster<B>) -> bool) {
        self.settle();
        for _ in 0..MAX_TICKS {
            if done(self) {
                return;
            }
            self.tick();
        }
        panic!(
            "{what}: not reached in {MAX_TICKS} ticks; replicas: {:?}",
            self.replicas
                .values()
                .map(|r| (
                    r.id(),
                    r.node.raft.state,
                    r.node.raft.term,
                    r.machine.applied
                ))
                .collect::<Vec<_>>()
        );
    }

    fn leader(&self) -> Option<u64> {
        let leaders: Vec<_> = self.replicas.values().filter(|r| r.is_leader()).collect();
        // A deposed leader can linger for a moment; the highest term is the real one.
        leaders
            .iter()
            .max_by_key(|r| r.node.raft.term)
            .map(|r| r.id())
    }

    /// Waits until exactly one leader is known to every replica, and returns it.
    fn elect(&mut self) -> u64 {
        self.run_until("a leader is elected", |cluster| {
            cluster.leader().is_some_and(|leader| {
                cluster
                    .replicas
                    .values()
                    .all(|r| r.node.raft.leader_id == leader)
            })
        });
        self.leader().unwrap()
    }

    /// Proposes `values` on the current leader, a few per tick so they batch.
    fn propose(&mut self, values: impl IntoIterator<Item = String>) {
        let mut values = values.into_iter().peekable();
        let mut ticks = 0;
        while values.peek().is_some() {
            let leader = self.elect();
            for value in values.by_ref().take(7) {
                self.replica_mut(leader)
                    .node
                    .propose(Vec::new(), value.into_bytes())
                    .unwrap();
            }
            self.tick();
            ticks += 1;
            assert!(ticks < MAX_TICKS, "proposals did not drain");
        }
    }

    fn values(&self, id: u64) -> Vec<String> {
        self.replica(id)
            .machine
            .values
            .iter()
            .map(|(_, value)| String::from_utf8(value.clone()).unwrap())
            .collect()
    }

    /// Waits until every live replica has applied exactly `expected`, the same entries at
    /// the same indices.
    fn await_applied(&mut self, expected: &[String]) {
        self.run_until("every replica applies the proposals", |cluster| {
            cluster
                .replicas
                .keys()
                .all(|&id| cluster.values(id).len() >= expected.len())
        });
        let reference = self
            .replicas
            .values()
            .next()
            .unwrap()
            .machine
            .values
            .clone();
        for replica in self.replicas.values() {
            assert_eq!(
                replica.machine.values,
                reference,
                "replica {}",
                replica.id()
            );
        }
        for id in self.replicas.keys() {
            assert_eq!(self.values(*id), expected, "replica {id}");
        }
    }

    fn stop(&mut self, id: u64) {
        let replica = self.replicas.remove(&id).unwrap();
        self.backend.stop(id, replica.node);
    }

    fn restart(&mut self, id: u64) {
        let log = self.backend.reopen(id);
        self.replicas.insert(id, Replica::start(id, log));
    }

    fn add_empty(&mut self, id: u64) {
        let log = self.backend.create(id);
        self.replicas.insert(id, Replica::start(id, log));
    }
}

fn values(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("value {i}")).collect()
}

/// Three replicas elect a leader and apply 100 proposals alike; the leader is stopped, a
/// new one is elected and commits more; the old leader restarts from its store (snapshot
/// plus the rest of its log) and catches up.
fn replicates_fails_over_and_restarts<B: Backend>(backend: B) {
    let mut cluster = Cluster::bootstrap(backend, &[1, 2, 3]);
    cluster.propose(values(0..60));
    cluster.await_applied(&values(0..60));
    for id in [1, 2, 3] {
        cluster.replica_mut(id).compact();
    }
    cluster.propose(values(60..100));
    cluster.await_applied(&values(0..100));

    let first_leader = cluster.elect();
    cluster.stop(first_leader);
    let second_leader = cluster.elect();
    assert_ne!(second_leader, first_leader);
    cluster.propose(values(100..150));
    cluster.await_applied(&values(0..150));

    cluster.restart(first_leader);
    let restarted = cluster.replica(first_leader);
    assert_eq!(
        restarted.machine.values.len(),
        100,
        "the restarted replica rebuilt what it had applied from its store"
    );
    assert_eq!(
        restarted.node.raft.raft_log.applied, restarted.machine.applied,
        "raft resumes after the recorded applied index"
    );
    cluster.await_applied(&values(0..150));
    cluster.propose(values(150..160));
    cluster.await_applied(&values(0..160));
}

/// After the leader compacts its log behind a snapshot, a replica added with an empty store
/// can only catch up through that snapshot.
fn empty_replica_catches_up_by_snapshot<B: Backend>(backend: B) {
    let mut cluster = Cluster::bootstrap(backend, &[1, 2, 3]);
    cluster.elect();
    cluster.propose(values(0..50));
    cluster.await_applied(&values(0..50));

    let leader = cluster.elect();
    let mut add = ConfChange::default();
    add.set_change_type(ConfChangeType::AddNode);
    add.node_id = 4;
    cluster
        .replica_mut(leader)
        .node
        .propose_conf_change(Vec::new(), add)
        .unwrap();
    cluster.run_until("the new voter is in every conf state", |cluster| {
        cluster.replicas.values().all(|r| {
            let conf_state = r.node.store().initial_state().unwrap().conf_state;
            conf_state.voters.contains(&4)
        })
    });
    for id in [1, 2, 3] {
        cluster.replica_mut(id).compact();
    }
    assert!(cluster.replica(leader).node.store().first_index().unwrap() > 50);

    cluster.add_empty(4);
    cluster.propose(values(50..60));
    cluster.await_applied(&values(0..60));
    let newcomer = cluster.replica(4);
    assert_eq!(
        newcomer.snapshots_restored, 1,
        "caught up through the snapshot"
    );
    let received = newcomer.node.store().snapshot(0, 4).unwrap();
    let sent = cluster
        .replica(leader)
        .node
        .store()
        .snapshot(0, leader)
        .unwrap();
    assert_eq!(
        received, sent,
        "the leader sent its stored state-machine snapshot"
    );
    let restored = Machine::restore(&received);
    assert_eq!(restored.values.len(), 50);
}

/// A follower asks for a snapshot: raft-rs asks the leader's store for one at least as new
/// as the follower's log, which is refused until the leader has compacted that far.
fn follower_requests_a_snapshot<B: Backend>(backend: B) {
    let mut cluster = Cluster::bootstrap(backend, &[1, 2, 3]);
    let leader = cluster.elect();
    cluster.propose(values(0..20));
    cluster.await_applied(&values(0..20));
    cluster.replica_mut(leader).compact();
    cluster.propose(values(20..30));
    cluster.await_applied(&values(0..30));

    let follower = *cluster.replicas.keys().find(|&&id| id != leader).unwrap();
    cluster
        .replica_mut(follower)
        .node
        .request_snapshot()
        .unwrap();
    for _ in 0..50 {
        cluster.tick();
    }
    assert_eq!(
        cluster.replica(follower).snapshots_restored,
        0,
        "the leader's snapshot is older than the follower's request"
    );

    cluster.replica_mut(leader).compact();
    let wanted = cluster.replica(leader).machine.applied;
    cluster.run_until("the follower restores the snapshot", |cluster| {
        cluster.replica(follower).snapshots_restored == 1
    });
    let store = cluster.replica(follower).node.store();
    assert_eq!(store.first_index().unwrap(), wanted + 1);
    cluster.propose(values(30..40));
    cluster.await_applied(&values(0..40));
}

#[test]
fn raft_cluster_on_mem_replicates_fails_over_and_restarts() {
    replicates_fails_over_and_restarts(MemBackend::default());
}

#[test]
fn raft_cluster_on_sled_replicates_fails_over_and_restarts() {
    replicates_fails_over_and_restarts(SledBackend::new());
}

#[test]
fn raft_cluster_on_mem_catches_up_an_empty_replica_by_snapshot() {
    empty_replica_catches_up_by_snapshot(MemBackend::default());
}

#[test]
fn raft_cluster_on_sled_catches_up_an_empty_replica_by_snapshot() {
    empty_replica_catches_up_by_snapshot(SledBackend::new());
}

#[test]
fn raft_cluster_on_mem_serves_a_requested_snapshot() {
    follower_requests_a_snapshot(MemBackend::default());
}

#[test]
fn raft_cluster_on_sled_serves_a_requested_snapshot() {
    follower_requests_a_snapshot(SledBackend::new());
}
