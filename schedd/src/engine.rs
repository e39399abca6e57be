//! The one writer: takes proposed commands, makes them durable in the log (one flush per
//! batch), applies them to the state machine in log order, and only then answers.
//! Everything else reads the state through [`Engine::read`].
//!
//! Batching is what makes a flush per acknowledged submit affordable: proposals that
//! arrive while a flush is under way go out together in the next one.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::thread;

use gantry_state::{Command, Outcome, StateMachine};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info};

use crate::log_store::{LogStore, StoreError};

/// Most proposals written in one flush.
const MAX_BATCH: usize = 1024;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("the scheduler's log writer has stopped after a storage error; restart the daemon")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("log entry {index} cannot be decoded: {source}")]
    Decode { index: u64, source: postcard::Error },
    #[error(transparent)]
    Snapshot(#[from] gantry_state::SnapshotError),
}

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Outcome>,
}

struct Shared {
    state: RwLock<StateMachine>,
    applied: watch::Sender<u64>,
    /// Set when the writer stops for good.
    failed: watch::Sender<Option<String>>,
}

#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    proposals: mpsc::Sender<Proposal>,
}

impl Engine {
    /// Recovers the state from the store (snapshot, then the rest of the log) and starts
    /// the writer thread.
    pub fn open(store: Box<dyn LogStore>, snapshot_every: u64) -> Result<Engine, EngineError> {
        let mut state = match store.load_snapshot()? {
            Some((_, bytes)) => StateMachine::from_snapshot(&bytes)?,
            None => StateMachine::default(),
        };
        let snapshot_index = state.applied_index();
        let entries = store.entries_after(snapshot_index)?;
        let replayed = entries.len();
        for (index, bytes) in entries {
            let command: Command = postcard::from_bytes(&bytes)
                .map_err(|source| EngineError::Decode { index, source })?;
            state.apply(index, &command);
        }
        info!(
            snapshot_index,
            replayed,
            applied_index = state.applied_index(),
            "state recovered"
        );
        let (applied, _) = watch::channel(state.applied_index());
        let (failed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            applied,
            failed,
        });
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let writer = Writer {
            store,
            shared: shared.clone(),
            snapshot_every,
            last_snapshot: snapshot_index,
        };
        thread::Builder::new()
            .name("gantry-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the log writer: {e}")))?;
        Ok(Engine {
            shared,
            proposals: tx,
        })
    }

    /// Proposes one command; answers once it is durable and applied.
    pub async fn propose(&self, command: Command) -> Result<Outcome, EngineError> {
        let mut outcomes = self.propose_all(vec![command]).await?;
        outcomes.pop().ok_or(EngineError::Stopped)
    }

    /// Proposes several commands at once, so that they share a flush.
    pub async fn propose_all(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, EngineError> {
        let mut replies = Vec::with_capacity(commands.len());
        for command in commands {
            let (reply, rx) = oneshot::channel();
            self.proposals
                .send(Proposal { command, reply })
                .await
                .map_err(|_| EngineError::Stopped)?;
            replies.push(rx);
        }
        let mut outcomes = Vec::with_capacity(replies.len());
        for rx in replies {
            outcomes.push(rx.await.map_err(|_| EngineError::Stopped)?);
        }
        Ok(outcomes)
    }

    /// Reads the state. Keep the closure short: the writer waits for readers.
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

    /// Resolves with the reason once the writer has stopped for good.
    pub async fn failed(&self) -> String {
        let mut rx = self.shared.failed.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return "the log writer is gone".into();
            }
        }
    }
}

struct Writer {
    store: Box<dyn LogStore>,
    shared: Arc<Shared>,
    snapshot_every: u64,
    last_snapshot: u64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Proposal>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.write(batch) {
                error!(error = %e, "the log writer stops: no further commands are accepted");
                self.shared.failed.send_replace(Some(e.to_string()));
                return;
            }
        }
    }

    fn write(&mut self, batch: Vec<Proposal>) -> Result<(), EngineError> {
        let first = self.store.last_index()? + 1;
        let entries: Vec<(u64, Vec<u8>)> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    first + i as u64,
                    postcard::to_stdvec(&p.command).unwrap_or_default(),
                )
            })
            .collect();
        // Durable first: nothing is applied, and nobody is answered, before the flush.
        self.store.append(&entries)?;
        let last = first + batch.len() as u64 - 1;
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
            for (i, p) in batch.iter().enumerate() {
                outcomes.push(state.apply(first + i as u64, &p.command));
            }
        }
        self.shared.applied.send_replace(last);
        for (p, outcome) in batch.into_iter().zip(outcomes) {
            // The proposer may have given up waiting; the command stands regardless.
            let _ = p.reply.send(outcome);
        }
        if last - self.last_snapshot >= self.snapshot_every {
            let bytes = {
                let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
                state.to_snapshot()
            };
            self.store.save_snapshot(last, &bytes)?;
            self.last_snapshot = last;
            info!(
                index = last,
                bytes = bytes.len(),
                "snapshot taken, log compacted"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use gantry_model::{JobSpec, Owner, Program};

    use super::*;
    use crate::log_store::{MemLog, SledLog};

    fn submit(n: u64) -> Command {
        Command::Submit {
            owner: Owner {
                user: "ann".into(),
                uid: 1,
                gid: 1,
            },
            spec: JobSpec {
                name: format!("j{n}"),
                account: "default".into(),
                num_nodes: 1,
                gpus_per_node: 0,
                cpus_per_node: 1,
                mem_per_node_mib: 256,
                time_limit_ms: None,
                program: Program::Command {
                    argv: vec!["true".into()],
                },
                work_dir: "/tmp".into(),
                stdout_path: None,
                stderr_path: None,
                env: vec![],
            },
            now_ms: n,
        }
    }

    #[tokio::test]
    async fn proposals_are_applied_in_order_and_answered() {
        let engine = Engine::open(Box::new(MemLog::default()), 1000).unwrap();
        let outcomes = engine
            .propose_all((1..=5).map(submit).collect())
            .await
            .unwrap();
        assert_eq!(
            outcomes,
            (1..=5).map(Outcome::Submitted).collect::<Vec<_>>()
        );
        assert_eq!(engine.read(|s| s.applied_index()), 5);
    }

    #[tokio::test]
    async fn a_reopened_log_recovers_every_job_across_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let engine = Engine::open(Box::new(SledLog::open(dir.path()).unwrap()), 7).unwrap();
            for n in 1..=20 {
                assert_eq!(
                    engine.propose(submit(n)).await.unwrap(),
                    Outcome::Submitted(n)
                );
            }
            engine.read(|s| s.to_snapshot())
        };
        // The writer thread still holds the old handle; wait until sled lets go of it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let store = loop {
            match SledLog::open(dir.path()) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => panic!("reopen: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        let engine = Engine::open(Box::new(store), 7).unwrap();
        assert_eq!(engine.read(|s| s.to_snapshot()), before);
        assert_eq!(
            engine.propose(submit(21)).await.unwrap(),
            Outcome::Submitted(21)
        );
    }
}
