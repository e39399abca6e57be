//! [`RaftLog`] in memory: for tests, and the reference the sled implementation is held to.

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::storage::{
    RaftLog, RaftLogError, ReadyWrite, SizeLimit, check_append, check_applied, check_own_snapshot,
    check_received_snapshot, compacted, hard_state_after_snapshot, unavailable,
};

#[derive(Debug, Default, Clone)]
pub struct MemRaftLog {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index 0 (the default) means no snapshot yet.
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
    applied: u64,
}

impl MemRaftLog {
    pub fn new() -> MemRaftLog {
        MemRaftLog::default()
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn first(&self) -> u64 {
        self.snapshot_index().saturating_add(1)
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |entry| entry.index)
    }

    /// The position of `index` in `entries` (0 for indices before the first).
    fn offset(&self, index: u64) -> usize {
        usize::try_from(index.saturating_sub(self.first())).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
impl super::conformance::StoredEntries for MemRaftLog {
    fn stored_entries(&self) -> usize {
        self.entries.len()
    }
}

impl raft::Storage for MemRaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(compacted());
        }
        if high > self.last().saturating_add(1) {
            return Err(unavailable());
        }
        let mut limit = SizeLimit::new(max_size.into());
        Ok(self
            .entries
            .iter()
            .skip(self.offset(low))
            .take_while(|entry| entry.index < high)
            .take_while(|entry| limit.admits(entry))
            .cloned()
            .collect())
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.snapshot_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if index < self.first() {
            return Err(compacted());
        }
        if index > self.last() {
            return Err(unavailable());
        }
        self.entries
            .get(self.offset(index))
            .map(|entry| entry.term)
            .ok_or_else(unavailable)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.snapshot_index();
        // Only a snapshot of the state machine can be sent; a newer one must be made first.
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

impl RaftLog for MemRaftLog {
    fn persist_ready(&mut self, write: ReadyWrite<'_>) -> Result<(), RaftLogError> {
        // Checked in full before anything changes, so a refused write changes nothing.
        let mut hard_state = self.hard_state.clone();
        let (mut first, mut last) = (self.first(), self.last());
        if let Some(snapshot) = write.snapshot {
            let meta = snapshot.get_metadata();
            check_received_snapshot(meta, self.snapshot_index())?;
            hard_state = hard_state_after_snapshot(hard_state, meta);
            (first, last) = (meta.index.saturating_add(1), meta.index);
        }
        check_append(write.entries, first, last, hard_state.commit)?;

        if let Some(snapshot) = write.snapshot {
            let meta = snapshot.get_metadata();
            self.entries.clear();
            self.conf_state = meta.get_conf_state().clone();
            self.snapshot = snapshot.clone();
        }
        if let Some(head) = write.entries.first() {
            let keep = self.offset(head.index).min(self.entries.len());
            self.entries.truncate(keep);
            self.entries.extend_from_slice(write.entries);
        }
        self.hard_state = write.hard_state.cloned().unwrap_or(hard_state);
        Ok(())
    }

    fn persist_commit(&mut self, commit: u64) -> Result<(), RaftLogError> {
        let last = self.last();
        if commit > last {
            return Err(RaftLogError::CommitBeyondLog { commit, last });
        }
        self.hard_state.commit = commit;
        Ok(())
    }

    fn set_conf_state(&mut self, conf_state: &ConfState, applied: u64) -> Result<(), RaftLogError> {
        check_applied(applied, self.hard_state.commit)?;
        self.conf_state = conf_state.clone();
        self.applied = applied;
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), RaftLogError> {
        let meta = snapshot.get_metadata();
        check_own_snapshot(
            meta,
            self.snapshot_index(),
            self.hard_state.commit,
            |index| {
                raft::Storage::term(self, index).map_err(|error| {
                    RaftLogError::Corrupt(format!("no term for committed index {index}: {error}"))
                })
            },
        )?;
        let drop = self
            .offset(meta.index.saturating_add(1))
            .min(self.entries.len());
        self.entries.drain(..drop);
        self.snapshot = snapshot;
        Ok(())
    }

    fn set_applied(&mut self, applied: u64) -> Result<(), RaftLogError> {
        check_applied(applied, self.hard_state.commit)?;
        self.applied = applied;
        Ok(())
    }

    fn applied(&self) -> Result<u64, RaftLogError> {
        Ok(self.applied.max(self.snapshot_index()))
    }
}
