//! The replicated engine: proposed commands go through a raft-rs group and are applied to
//! the state machine in log order once committed (a majority has them durably on disk);
//! only then is the proposer answered. Everything else reads the state through
//! [`Engine::read`].
//!
//! One thread owns the `RawNode` and runs its `Ready` loop, in the order raft-rs prescribes:
//! send the leader's messages, persist entries and hard state as one batch with one flush,
//! apply what is committed, send the messages that needed the flush, advance. Proposals
//! that arrive while a flush is under way go out together in the next `Ready`, so one flush
//! serves many acknowledged submits.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

use gantry_state::{Command, Outcome, StateMachine};
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot,
};
use raft::{Config, RawNode, StateRole};
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::raft::{RaftLog, RaftLogError, ReadyWrite, raft_logger};

/// Raft's clock: one tick every 20 ms; elections after 50–100 ticks (1–2 s), heartbeats
/// every 15 (300 ms). raft-rs draws each replica's election timeout as a whole number of
/// ticks: at 100 ms there were only ten to draw from, and two followers of a dead leader
/// often drew the same one and split the vote, costing a second election round.
const TICK: Duration = Duration::from_millis(20);
const ELECTION_TICKS: usize = 50;
const HEARTBEAT_TICKS: usize = 15;
/// Longest a start-up may take to re-apply the committed log.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest a linearizable read waits for a majority to confirm the leader.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("the scheduler's log has stopped after a storage error; restart the daemon")]
    Stopped,
    #[error("not the leader{}", leader_hint(*.0))]
    NotLeader(Option<u64>),
    #[error(
        "leadership changed before the command was committed; it may or may not have been applied"
    )]
    LeadershipLost,
    #[error(transparent)]
    Store(#[from] RaftLogError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("log entry {index} cannot be decoded: {source}")]
    Decode { index: u64, source: postcard::Error },
    #[error(transparent)]
    Snapshot(#[from] gantry_state::SnapshotError),
    #[error("the committed log up to entry {index} was not re-applied within {timeout:?}")]
    Recovery { index: u64, timeout: Duration },
    #[error("another membership change is under way; retry once it is done")]
    ChangePending,
    #[error("the leader could not confirm with a majority that it still leads within {0:?}")]
    ReadTimeout(Duration),
}

fn leader_hint(leader: Option<u64>) -> String {
    leader.map_or_else(String::new, |id| format!("; replica {id} is"))
}

/// Where the raft thread sends messages for other replicas.
pub trait Transport: Send + 'static {
    fn send(&mut self, messages: Vec<Message>);

    /// Learns where replica `id` listens (`None`: forget it), after a membership change.
    fn set_peer(&mut self, id: u64, url: Option<&str>);
}

/// A group of one: nothing to send.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, messages: Vec<Message>) {
        if !messages.is_empty() {
            warn!(
                count = messages.len(),
                "raft messages for peers, but this replica has none"
            );
        }
    }

    fn set_peer(&mut self, id: u64, url: Option<&str>) {
        warn!(
            id,
            ?url,
            "a group without a transport cannot reach new members"
        );
    }
}

/// This replica's view of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// Leads, and has applied every entry committed before its term: it may serve.
    pub is_leader: bool,
    /// When this replica last became leader (the heartbeat clock of nodes starts there).
    pub leader_since: Option<Instant>,
}

enum Input {
    Propose {
        command: Box<Command>,
        reply: oneshot::Sender<Result<Outcome, EngineError>>,
    },
    /// A linearizable read: answered once the state has applied everything committed when
    /// it was asked, as confirmed by a majority (Raft's ReadIndex).
    ReadIndex(ReadReply),
    /// A membership change; `change.context` holds the address of an added replica.
    ChangeMembers {
        change: ConfChangeV2,
        reply: oneshot::Sender<Result<ConfState, EngineError>>,
    },
    TransferLeader(u64),
    Step(Box<Message>),
    /// The transport could not deliver to this replica.
    Unreachable(u64),
    /// A snapshot sent to this replica arrived (true) or did not (false).
    SnapshotSent {
        to: u64,
        delivered: bool,
    },
}

/// What the transport tells the raft thread about deliveries.
#[derive(Clone)]
pub struct Reports {
    inputs: std_mpsc::Sender<Input>,
}

impl Reports {
    pub fn unreachable(&self, to: u64) {
        let _ = self.inputs.send(Input::Unreachable(to));
    }

    pub fn snapshot_sent(&self, to: u64, delivered: bool) {
        let _ = self.inputs.send(Input::SnapshotSent { to, delivered });
    }
}

/// The group as this replica sees it (complete only on the leader, which tracks the others).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStatus {
    pub commit: u64,
    pub last_index: u64,
    pub applied: u64,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub learner: bool,
    /// The last index the leader knows this member holds (the leader: its last index).
    pub matched: u64,
}

struct Shared {
    group: RwLock<GroupStatus>,
    state: RwLock<StateMachine>,
    applied: watch::Sender<u64>,
    role: watch::Sender<Role>,
    /// Set when the raft thread stops for good.
    failed: watch::Sender<Option<String>>,
}

#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    inputs: std_mpsc::Sender<Input>,
}

/// How a replica starts.
pub struct EngineConfig {
    pub id: u64,
    /// The voters of a brand-new group (its first start); ignored once the log has a
    /// configuration. Empty: join an existing group and wait to be added.
    pub initial_voters: Vec<u64>,
    pub snapshot_every: u64,
}

impl Engine {
    /// Recovers the state (the stored snapshot, then the committed log after it, which
    /// raft-rs hands back as committed entries) and starts the raft thread.
    pub fn open<S>(
        mut store: S,
        config: EngineConfig,
        transport: impl FnOnce(Reports) -> Box<dyn Transport>,
    ) -> Result<Engine, EngineError>
    where
        S: RaftLog + Send + 'static,
    {
        if is_blank(&store)? && !config.initial_voters.is_empty() {
            bootstrap(&mut store, &config.initial_voters)?;
        }
        let (state, snapshot_index) = match store.snapshot(0, config.id) {
            Ok(snapshot) => {
                let index = snapshot.get_metadata().index;
                (StateMachine::from_snapshot(snapshot.get_data())?, index)
            }
            Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable)) => {
                (StateMachine::default(), 0)
            }
            Err(e) => return Err(e.into()),
        };
        let raft_config = Config {
            id: config.id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied: snapshot_index,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 4 * 1024 * 1024,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        let recovered = store.initial_state()?;
        let (conf_state, commit) = (recovered.conf_state, recovered.hard_state.commit);
        let mut node = RawNode::new(&raft_config, store, &raft_logger(config.id))?;
        // A group of one need not wait out an election timeout to start serving.
        let single = conf_state.voters == [config.id];
        if single {
            node.campaign()?;
        }
        let role = Role {
            id: config.id,
            leader: None,
            term: 0,
            is_leader: false,
            leader_since: None,
        };
        let (applied, _) = watch::channel(snapshot_index);
        let (role, _) = watch::channel(role);
        let (failed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            group: RwLock::new(GroupStatus::default()),
            state: RwLock::new(state),
            applied,
            role,
            failed,
        });
        let (inputs, rx) = std_mpsc::channel();
        let mut transport = transport(Reports {
            inputs: inputs.clone(),
        });
        // Members that joined after the configuration was written are known from the state.
        for (id, url) in shared
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .replica_addresses()
        {
            if *id != config.id {
                transport.set_peer(*id, Some(url));
            }
        }
        let replica = Replica {
            node,
            shared: shared.clone(),
            transport,
            pending: BTreeMap::new(),
            next_proposal: 1,
            leading: false,
            reads: Reads::default(),
            pending_conf: None,
            conf_state,
            applied_index: snapshot_index,
            applied_term: 0,
            last_snapshot: snapshot_index,
            snapshot_every: config.snapshot_every,
            snapshot_conf_state: false,
        };
        thread::Builder::new()
            .name("gantry-raft".into())
            .spawn(move || replica.run(&rx))
            .map_err(|e| RaftLogError::Corrupt(format!("cannot start the raft thread: {e}")))?;
        let engine = Engine { shared, inputs };
        // Serve nothing until the log this replica knows to be committed is applied: a
        // restarted scheduler must never answer from a state older than what it acknowledged.
        engine.wait_applied(commit)?;
        if single {
            // A group of one leads as soon as its campaign is processed: wait for that, so
            // it answers clients the moment it says it listens.
            engine.wait_for_role(|role| role.is_leader)?;
        }
        info!(
            id = config.id,
            snapshot_index,
            applied = commit.max(snapshot_index),
            "state recovered"
        );
        Ok(engine)
    }

    /// Blocks until entries up to `index` are applied (only used at start-up).
    fn wait_applied(&self, index: u64) -> Result<(), EngineError> {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        while *self.shared.applied.borrow() < index {
            if let Some(reason) = self.shared.failed.borrow().clone() {
                return Err(RaftLogError::Corrupt(reason).into());
            }
            if Instant::now() > deadline {
                return Err(EngineError::Recovery {
                    index,
                    timeout: RECOVERY_TIMEOUT,
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Blocks until the role satisfies `ready` (only used at start-up).
    fn wait_for_role(&self, ready: impl Fn(&Role) -> bool) -> Result<(), EngineError> {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        while !ready(&self.shared.role.borrow()) {
            if self.shared.failed.borrow().is_some() || Instant::now() > deadline {
                return Err(EngineError::Stopped);
            }
            thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Hands an input to the raft thread.
    fn send(&self, input: Input) -> Result<(), EngineError> {
        self.inputs.send(input).map_err(|_| EngineError::Stopped)
    }

    /// Proposes one command; answers once it is committed and applied.
    pub async fn propose(&self, command: Command) -> Result<Outcome, EngineError> {
        let mut outcomes = self.propose_all(vec![command]).await?;
        outcomes.pop().ok_or(EngineError::Stopped)
    }

    /// Proposes several commands at once, so that they share a flush; answers in order.
    pub async fn propose_all(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, EngineError> {
        let mut replies = Vec::with_capacity(commands.len());
        for command in commands {
            let (reply, rx) = oneshot::channel();
            self.send(Input::Propose {
                command: Box::new(command),
                reply,
            })?;
            replies.push(rx);
        }
        let mut outcomes = Vec::with_capacity(replies.len());
        for rx in replies {
            outcomes.push(rx.await.map_err(|_| EngineError::Stopped)??);
        }
        Ok(outcomes)
    }

    /// Returns once this replica's state holds everything committed before the call, as
    /// confirmed by a majority that it still leads: a read after it is linearizable.
    pub async fn read_index(&self) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::ReadIndex(reply))?;
        match tokio::time::timeout(READ_TIMEOUT, rx).await {
            Ok(answer) => answer.map_err(|_| EngineError::Stopped)?,
            Err(_) => Err(EngineError::ReadTimeout(READ_TIMEOUT)),
        }
    }

    /// Proposes a membership change (one at a time); answers with the configuration once
    /// the change is committed and applied.
    pub async fn change_members(&self, change: ConfChangeV2) -> Result<ConfState, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::ChangeMembers { change, reply })?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Asks raft to hand leadership to `to` (it must be an up-to-date voter to take it).
    pub fn transfer_leader(&self, to: u64) -> Result<(), EngineError> {
        self.send(Input::TransferLeader(to))
    }

    /// Hands a message from another replica to raft.
    pub fn step(&self, message: Message) -> Result<(), EngineError> {
        self.send(Input::Step(Box::new(message)))
    }

    /// Reads the state. Keep the closure short: the raft thread waits for readers.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&self.state())
    }

    fn state(&self) -> RwLockReadGuard<'_, StateMachine> {
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes whenever new entries are applied; holds the applied index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    pub fn role(&self) -> Role {
        *self.shared.role.borrow()
    }

    pub fn group(&self) -> GroupStatus {
        self.shared
            .group
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes whenever leadership or the term changes.
    pub fn subscribe_role(&self) -> watch::Receiver<Role> {
        self.shared.role.subscribe()
    }

    /// Resolves with the reason once the raft thread has stopped for good.
    pub async fn failed(&self) -> String {
        let mut rx = self.shared.failed.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return "the raft thread is gone".into();
            }
        }
    }
}

/// No log, no snapshot, no configuration: a replica that has never been part of a group.
fn is_blank<S: RaftLog>(store: &S) -> Result<bool, EngineError> {
    let initial = store.initial_state()?;
    let members = &initial.conf_state;
    Ok(members.voters.is_empty() && members.learners.is_empty() && store.last_index()? == 0)
}

/// Starts a brand-new group as if its founding members had received a snapshot at index 1:
/// the empty state and the initial voters. A replica added later starts blank and gets its
/// first state the same way, as a snapshot from the leader: the log it needs was never
/// written (index 1 is compacted away from the start), so it cannot be handed entries that
/// assume a configuration it does not have.
fn bootstrap<S: RaftLog>(store: &mut S, voters: &[u64]) -> Result<(), EngineError> {
    let mut snapshot = Snapshot::default();
    snapshot.set_data(StateMachine::default().to_snapshot().into());
    let meta = snapshot.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.mut_conf_state().voters = voters.to_vec();
    store.persist_ready(ReadyWrite {
        snapshot: Some(&snapshot),
        ..ReadyWrite::default()
    })?;
    Ok(())
}

/// The replica a single-change membership entry adds (with its address) or removes.
fn member_change(change: &ConfChangeV2) -> Option<(u64, Option<String>)> {
    let [single] = change.get_changes() else {
        return None;
    };
    let address = match single.get_change_type() {
        ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
            Some(String::from_utf8_lossy(change.get_context()).into_owned())
                .filter(|a| !a.is_empty())
        }
        ConfChangeType::RemoveNode => None,
    };
    Some((single.node_id, address))
}

fn decode_conf_change<C: protobuf::Message>(entry: &Entry) -> Result<C, EngineError> {
    C::parse_from_bytes(entry.get_data())
        .map_err(|e| RaftLogError::Corrupt(format!("conf change at {}: {e}", entry.index)).into())
}

type ReadReply = oneshot::Sender<Result<(), EngineError>>;

/// Linearizable reads on their way through raft's ReadIndex.
#[derive(Default)]
struct Reads {
    /// Asked since the last request to raft: they share the next one.
    asked: Vec<ReadReply>,
    next_context: u64,
    /// Handed to raft, by request context, until a majority confirms the leadership.
    sent: BTreeMap<u64, Vec<ReadReply>>,
    /// Confirmed at a commit index: answered once the state has applied up to it.
    confirmed: Vec<(u64, Vec<ReadReply>)>,
}

impl Reads {
    fn fail(&mut self, error: impl Fn() -> EngineError) {
        let sent = std::mem::take(&mut self.sent).into_values();
        let confirmed = std::mem::take(&mut self.confirmed)
            .into_iter()
            .map(|(_, r)| r);
        let waiting = sent.chain(confirmed).flatten();
        for reply in std::mem::take(&mut self.asked).into_iter().chain(waiting) {
            let _ = reply.send(Err(error()));
        }
    }

    /// Answers the confirmed reads the state has caught up with.
    fn answer(&mut self, applied: u64) {
        let (ready, waiting) = std::mem::take(&mut self.confirmed)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.confirmed = waiting;
        for reply in ready.into_iter().flat_map(|(_, replies)| replies) {
            let _ = reply.send(Ok(()));
        }
    }
}

/// The raft thread's state.
struct Replica<S: RaftLog> {
    node: RawNode<S>,
    shared: Arc<Shared>,
    transport: Box<dyn Transport>,
    /// Proposals of this replica waiting for their entry to be applied, by proposal id.
    pending: BTreeMap<u64, oneshot::Sender<Result<Outcome, EngineError>>>,
    next_proposal: u64,
    /// Whether raft had this replica leading at the last look (proposals are accepted then).
    leading: bool,
    reads: Reads,
    /// The membership change this replica proposed, by proposal id, and its proposer.
    pending_conf: Option<(u64, oneshot::Sender<Result<ConfState, EngineError>>)>,
    conf_state: ConfState,
    applied_index: u64,
    applied_term: u64,
    last_snapshot: u64,
    snapshot_every: u64,
    /// The configuration changed since the stored snapshot was taken.
    snapshot_conf_state: bool,
}

impl<S: RaftLog> Replica<S> {
    fn run(mut self, inputs: &std_mpsc::Receiver<Input>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            if let Err(e) = self.handle_ready() {
                error!(error = %e, "the raft thread stops: no further commands are accepted");
                self.fail_pending(|| EngineError::Stopped);
                self.shared.failed.send_replace(Some(e.to_string()));
                return;
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            match inputs.recv_timeout(wait) {
                Ok(input) => self.take(input),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
            // Everything queued meanwhile joins the same Ready, and so the same flush.
            while let Ok(input) = inputs.try_recv() {
                self.take(input);
            }
            self.request_read_index();
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick += TICK;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + TICK;
                }
            }
        }
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Propose { command, reply } => self.propose(*command, reply),
            Input::ReadIndex(reply) => match self.not_serving() {
                Some(error) => {
                    let _ = reply.send(Err(error));
                }
                None => self.reads.asked.push(reply),
            },
            Input::ChangeMembers { change, reply } => self.change_members(change, reply),
            Input::TransferLeader(to) => self.node.transfer_leader(to),
            Input::Step(message) => {
                if let Err(e) = self.node.step(*message) {
                    warn!(error = %e, "a raft message was refused");
                }
            }
            Input::Unreachable(to) => self.node.report_unreachable(to),
            Input::SnapshotSent { to, delivered } => {
                let status = if delivered {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.node.report_snapshot(to, status);
            }
        }
    }

    /// Why this replica cannot confirm reads or change the membership now, if it cannot.
    fn not_serving(&self) -> Option<EngineError> {
        let raft = &self.node.raft;
        if raft.state == StateRole::Leader && raft.commit_to_current_term() {
            return None;
        }
        Some(EngineError::NotLeader(
            Some(raft.leader_id).filter(|id| *id != 0),
        ))
    }

    /// One ReadIndex request for every read asked since the last one.
    fn request_read_index(&mut self) {
        if self.reads.asked.is_empty() {
            return;
        }
        let context = self.reads.next_context;
        self.reads.next_context += 1;
        let asked = std::mem::take(&mut self.reads.asked);
        self.reads.sent.insert(context, asked);
        self.node.read_index(context.to_be_bytes().to_vec());
    }

    fn change_members(
        &mut self,
        change: ConfChangeV2,
        reply: oneshot::Sender<Result<ConfState, EngineError>>,
    ) {
        if let Some(error) = self.not_serving() {
            let _ = reply.send(Err(error));
            return;
        }
        // raft-rs would turn a second change into an empty entry and never say so.
        if self.pending_conf.is_some() || self.node.raft.has_pending_conf() {
            let _ = reply.send(Err(EngineError::ChangePending));
            return;
        }
        let id = self.next_proposal;
        self.next_proposal += 1;
        match self
            .node
            .propose_conf_change(id.to_be_bytes().to_vec(), change)
        {
            Ok(()) => self.pending_conf = Some((id, reply)),
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn propose(&mut self, command: Command, reply: oneshot::Sender<Result<Outcome, EngineError>>) {
        if self.node.raft.state != StateRole::Leader {
            let leader = Some(self.node.raft.leader_id).filter(|id| *id != 0);
            let _ = reply.send(Err(EngineError::NotLeader(leader)));
            return;
        }
        let id = self.next_proposal;
        self.next_proposal += 1;
        let data = postcard::to_stdvec(&command).unwrap_or_default();
        match self.node.propose(id.to_be_bytes().to_vec(), data) {
            Ok(()) => {
                self.pending.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn handle_ready(&mut self) -> Result<(), EngineError> {
        // Before anything is applied, so nobody sees an answer from a leader not yet known
        // as one.
        self.publish_role();
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        for read in ready.take_read_states() {
            let context = read
                .request_ctx
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes);
            if let Some(replies) = context.ok().and_then(|c| self.reads.sent.remove(&c)) {
                self.reads.confirmed.push((read.index, replies));
            }
        }
        self.transport.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.restore(ready.snapshot())?;
        }
        self.node
            .mut_store()
            .persist_ready(ReadyWrite::from_ready(&ready))?;
        self.transport.send(ready.take_persisted_messages());
        self.apply(ready.take_committed_entries())?;
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().persist_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        self.reads.answer(self.applied_index);
        self.publish_role();
        self.publish_group();
        self.maybe_snapshot()?;
        Ok(())
    }

    /// A snapshot from the leader replaces the whole state.
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), EngineError> {
        let state = StateMachine::from_snapshot(snapshot.get_data())?;
        for (id, url) in state.replica_addresses() {
            if *id != self.node.raft.id {
                self.transport.set_peer(*id, Some(url));
            }
        }
        let meta = snapshot.get_metadata();
        *self.shared.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        self.applied_index = meta.index;
        self.applied_term = meta.term;
        self.last_snapshot = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        self.shared.applied.send_replace(meta.index);
        info!(
            index = meta.index,
            "state replaced by a snapshot from the leader"
        );
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), EngineError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut replies = Vec::new();
        {
            let shared = self.shared.clone();
            let mut state = shared.state.write().unwrap_or_else(|p| p.into_inner());
            for entry in &entries {
                match entry.get_entry_type() {
                    EntryType::EntryNormal if !entry.get_data().is_empty() => {
                        let command: Command =
                            postcard::from_bytes(entry.get_data()).map_err(|source| {
                                EngineError::Decode {
                                    index: entry.index,
                                    source,
                                }
                            })?;
                        let outcome = state.apply(entry.index, &command);
                        if let Some(reply) = self.proposal_of(entry) {
                            replies.push((reply, outcome));
                        }
                    }
                    EntryType::EntryNormal => {}
                    EntryType::EntryConfChange => {
                        let change: ConfChange = decode_conf_change(entry)?;
                        let conf_state = self.node.apply_conf_change(&change)?;
                        self.record_conf_state(entry.index, conf_state)?;
                    }
                    EntryType::EntryConfChangeV2 => {
                        let change: ConfChangeV2 = decode_conf_change(entry)?;
                        let conf_state = self.node.apply_conf_change(&change)?;
                        if let Some((id, address)) = member_change(&change) {
                            if id != self.node.raft.id {
                                self.transport.set_peer(id, address.as_deref());
                            }
                            state.apply(entry.index, &Command::ReplicaAddress { id, address });
                        }
                        self.record_conf_state(entry.index, conf_state.clone())?;
                        // The proposer's answer lists the new membership.
                        self.publish_group();
                        self.answer_conf_change(entry, conf_state);
                        // raft-rs refuses a snapshot whose configuration lacks the replica it
                        // is sent to: a newcomer can only catch up from one taken now.
                        self.snapshot_conf_state = true;
                    }
                }
                self.applied_index = entry.index;
                self.applied_term = entry.term;
            }
        }
        // No `set_applied` here: a restart rebuilds the state from the stored snapshot and
        // lets raft-rs re-apply the committed log after it (`Config::applied` is the
        // snapshot's index), so recording every applied batch would be a write per batch on
        // the hot path that nothing reads.
        self.shared.applied.send_replace(self.applied_index);
        for (reply, outcome) in replies {
            // The proposer may have given up waiting; the command stands regardless.
            let _ = reply.send(Ok(outcome));
        }
        Ok(())
    }

    /// A membership change raft-rs has adopted: the store records it with its index.
    fn record_conf_state(&mut self, index: u64, conf_state: ConfState) -> Result<(), EngineError> {
        self.node.mut_store().set_conf_state(&conf_state, index)?;
        self.conf_state = conf_state;
        Ok(())
    }

    /// Answers the proposer of a membership change entry, if it was this replica's.
    fn answer_conf_change(&mut self, entry: &Entry, conf_state: ConfState) {
        let id = entry.get_context().try_into().map(u64::from_be_bytes);
        if let (Ok(id), Some((pending, _))) = (id, &self.pending_conf)
            && id == *pending
            && let Some((_, reply)) = self.pending_conf.take()
        {
            let _ = reply.send(Ok(conf_state));
        }
    }

    /// The waiting proposer of an entry this replica proposed, if any.
    fn proposal_of(
        &mut self,
        entry: &Entry,
    ) -> Option<oneshot::Sender<Result<Outcome, EngineError>>> {
        let id = u64::from_be_bytes(entry.get_context().try_into().ok()?);
        self.pending.remove(&id)
    }

    fn publish_role(&mut self) {
        let raft = &self.node.raft;
        // A new leader may not yet have applied everything committed before its term: its
        // state could lack the last allocations, and a node told what to run from it would
        // kill jobs that are rightly running. Its own term's first entry (the empty one
        // raft appends on election) being applied proves the state complete.
        let is_leader = raft.state == StateRole::Leader && self.applied_term == raft.term;
        let leader = Some(raft.leader_id).filter(|id| *id != 0);
        let leading = raft.state == StateRole::Leader;
        if self.leading && !leading {
            // Entries this replica proposed may still commit under the new leader, or not:
            // their proposers cannot know, and retry (submits carry idempotency keys).
            self.fail_pending(|| EngineError::LeadershipLost);
            self.reads.fail(|| EngineError::LeadershipLost);
            if let Some((_, reply)) = self.pending_conf.take() {
                let _ = reply.send(Err(EngineError::LeadershipLost));
            }
        }
        self.leading = leading;
        let raft = &self.node.raft;
        let previous = *self.shared.role.borrow();
        if previous.is_leader == is_leader
            && previous.leader == leader
            && previous.term == raft.term
        {
            return;
        }
        let leader_since = match (previous.is_leader, is_leader) {
            (false, true) => Some(Instant::now()),
            (true, true) => previous.leader_since,
            _ => None,
        };
        let role = Role {
            id: raft.id,
            leader,
            term: raft.term,
            is_leader,
            leader_since,
        };
        info!(term = role.term, leader = ?role.leader, is_leader, "raft role");
        self.shared.role.send_replace(role);
    }

    fn publish_group(&mut self) {
        let raft = &self.node.raft;
        let last_index = raft.raft_log.last_index();
        let matched = |id: u64| {
            if id == raft.id {
                last_index
            } else {
                raft.prs().get(id).map_or(0, |p| p.matched)
            }
        };
        let voters = self.conf_state.voters.iter().map(|id| (*id, false));
        let learners = self.conf_state.learners.iter().map(|id| (*id, true));
        let members = voters
            .chain(learners)
            .map(|(id, learner)| Member {
                id,
                learner,
                matched: matched(id),
            })
            .collect();
        let status = GroupStatus {
            commit: raft.raft_log.committed,
            last_index,
            applied: self.applied_index,
            members,
        };
        *self.shared.group.write().unwrap_or_else(|p| p.into_inner()) = status;
    }

    fn fail_pending(&mut self, error: impl Fn() -> EngineError) {
        for (_, reply) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(error()));
        }
    }

    /// Every `snapshot_every` entries, stores the state and compacts the log up to it.
    fn maybe_snapshot(&mut self) -> Result<(), EngineError> {
        let due = self.applied_index >= self.last_snapshot + self.snapshot_every;
        if !(due || self.snapshot_conf_state) {
            return Ok(());
        }
        self.snapshot_conf_state = false;
        let started = Instant::now();
        let data = {
            let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
            state.to_snapshot()
        };
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = self.applied_index;
        meta.term = self.applied_term;
        meta.set_conf_state(self.conf_state.clone());
        let bytes = snapshot.get_data().len();
        let serialized = started.elapsed();
        self.node.mut_store().save_snapshot(snapshot)?;
        self.last_snapshot = self.applied_index;
        info!(
            index = self.applied_index,
            bytes,
            serialize_ms = serialized.as_millis(),
            store_ms = (started.elapsed() - serialized).as_millis(),
            "snapshot taken, log compacted"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use gantry_model::{JobSpec, Owner};

    use super::*;
    use crate::raft::{MemRaftLog, SledRaftLog};

    fn submit(n: u64) -> Command {
        Command::Submit {
            owner: Owner {
                user: "ann".into(),
                uid: 1,
                gid: 1,
            },
            spec: Box::new(JobSpec {
                name: format!("j{n}"),
                ..gantry_model::testing::job_spec(1, 0)
            }),
            key: None,
            now_ms: n,
        }
    }

    fn single(snapshot_every: u64) -> EngineConfig {
        EngineConfig {
            id: 1,
            initial_voters: vec![1],
            snapshot_every,
        }
    }

    #[tokio::test]
    async fn proposals_are_applied_in_order_and_answered() {
        let engine = Engine::open(MemRaftLog::new(), single(1000), |_| Box::new(NoPeers)).unwrap();
        let outcomes = engine
            .propose_all((1..=5).map(submit).collect())
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            (1..=5).map(Outcome::Submitted).collect::<Vec<_>>()
        );
        assert!(engine.role().is_leader);
    }

    #[tokio::test]
    async fn a_replica_that_is_not_the_leader_refuses_proposals() {
        // A joining replica: no configuration yet, so it is nobody's leader.
        let config = EngineConfig {
            id: 4,
            initial_voters: vec![],
            snapshot_every: 1000,
        };
        let engine = Engine::open(MemRaftLog::new(), config, |_| Box::new(NoPeers)).unwrap();
        assert!(matches!(
            engine.propose(submit(1)).await,
            Err(EngineError::NotLeader(None))
        ));
        assert_eq!(engine.read(|s| s.jobs().count()), 0);
        assert!(matches!(
            engine.read_index().await,
            Err(EngineError::NotLeader(None))
        ));
    }

    #[tokio::test]
    async fn a_confirmed_read_sees_every_acknowledged_write() {
        let engine = Engine::open(MemRaftLog::new(), single(1000), |_| Box::new(NoPeers)).unwrap();
        for n in 1..=3 {
            engine.propose(submit(n)).await.unwrap();
            engine.read_index().await.unwrap();
            assert_eq!(engine.read(|s| s.jobs().count()), n as usize);
        }
        // Many reads at once share the confirmations.
        let reads: Vec<_> = (0..50)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.read_index().await })
            })
            .collect();
        for read in reads {
            read.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_reopened_log_recovers_every_job_across_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let engine = Engine::open(SledRaftLog::open(dir.path()).unwrap(), single(7), |_| {
                Box::new(NoPeers)
            })
            .unwrap();
            for n in 1..=20 {
                assert_eq!(
                    engine.propose(submit(n)).await.unwrap(),
                    Outcome::Submitted(n)
                );
            }
            engine.read(|s| s.jobs().cloned().collect::<Vec<_>>())
        };
        // The raft thread still holds the old handle; wait until sled lets go of it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let store = loop {
            match SledRaftLog::open(dir.path()) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("reopen: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let engine = Engine::open(store, single(7), |_| Box::new(NoPeers)).unwrap();
        // The committed tail after the snapshot is replayed by raft once it leads again.
        assert_eq!(
            engine.propose(submit(21)).await.unwrap(),
            Outcome::Submitted(21)
        );
        let after = engine.read(|s| s.jobs().cloned().collect::<Vec<_>>());
        assert_eq!(after[..20], before[..]);
    }
}
