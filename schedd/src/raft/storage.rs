//! The storage seam under raft-rs: [`RaftLog`] is [`raft::Storage`] (the reads raft makes)
//! plus the writes a `Ready` loop makes, with the checks both implementations share.
//!
//! Every implementation keeps one invariant: the stored entries, if any, start right after
//! the snapshot's index, so `first_index = snapshot index + 1` and
//! `last_index = last entry's index`, or the snapshot's index when there is no entry.

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{Ready, StorageError};
use thiserror::Error;

/// Why a raft log operation failed. Where [`raft::Storage`] needs a [`raft::Error`], it is
/// carried as `raft::Error::Store(StorageError::Other(..))`.
#[derive(Debug, Error)]
pub enum RaftLogError {
    #[error("raft log storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("raft log storage is corrupt: {0}")]
    Corrupt(String),
    #[error("raft log storage is corrupt: cannot decode the stored {what}: {source}")]
    Decode {
        what: &'static str,
        source: protobuf::ProtobufError,
    },
    #[error("cannot encode a raft {what}: {source}")]
    Encode {
        what: &'static str,
        source: protobuf::ProtobufError,
    },
    #[error("raft entries must be consecutive: index {got} follows {previous}")]
    NotConsecutive { previous: u64, got: u64 },
    #[error("raft entries starting at {got} leave a gap after the last index {last}")]
    Gap { last: u64, got: u64 },
    #[error("raft entry {index} is already compacted into the snapshot at {snapshot_index}")]
    Compacted { index: u64, snapshot_index: u64 },
    #[error("raft entry {index} would overwrite a committed entry (commit is {commit})")]
    OverwritesCommitted { index: u64, commit: u64 },
    #[error(
        "snapshot at index {index} is out of date: the log already starts after {snapshot_index}"
    )]
    SnapshotOutOfDate { index: u64, snapshot_index: u64 },
    #[error("cannot snapshot at index {index}: only entries up to {commit} are committed")]
    SnapshotNotCommitted { index: u64, commit: u64 },
    #[error("snapshot at index {index} says term {term}, the log has term {log_term} there")]
    SnapshotTermMismatch {
        index: u64,
        term: u64,
        log_term: u64,
    },
    #[error("commit index {commit} is beyond the last log index {last}")]
    CommitBeyondLog { commit: u64, last: u64 },
    #[error("applied index {applied} is beyond the commit index {commit}")]
    AppliedBeyondCommit { applied: u64, commit: u64 },
    #[error(
        "{}; this build reads format {expected}, and there is no migration between formats: \
         run the version that wrote it, or move the directory aside to start empty",
        match found {
            Some(found) => format!("the data was written in state format {found}"),
            None => "the data was written by a version that did not record its state format".into(),
        }
    )]
    Format { found: Option<u32>, expected: u32 },
}

impl From<RaftLogError> for raft::Error {
    fn from(error: RaftLogError) -> raft::Error {
        raft::Error::Store(StorageError::Other(Box::new(error)))
    }
}

/// What one `Ready` asks to make durable, written as one batch with one flush.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadyWrite<'a> {
    /// A snapshot received from the leader: it replaces the whole log and the conf state.
    pub snapshot: Option<&'a Snapshot>,
    /// New entries; those at an index already stored replace it and everything after it.
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
}

impl<'a> ReadyWrite<'a> {
    /// Everything `ready` asks to persist.
    pub fn from_ready(ready: &'a Ready) -> ReadyWrite<'a> {
        ReadyWrite {
            snapshot: (!ready.snapshot().is_empty()).then(|| ready.snapshot()),
            entries: ready.entries(),
            hard_state: ready.hs(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// Durable storage for one raft-rs node.
///
/// A `Ready` loop calls, in this order: [`RaftLog::persist_ready`] (then sends the persisted
/// messages), applies the committed entries and records [`RaftLog::set_applied`], calls
/// `advance`, then [`RaftLog::persist_commit`] if the `LightReady` carries a commit index,
/// before applying its entries. A restart builds its `RawNode` from
/// [`raft::Storage::initial_state`] with `Config::applied` set to [`RaftLog::applied`].
pub trait RaftLog: raft::Storage {
    /// Persists a received snapshot, then the entries (truncating any conflicting suffix,
    /// Raft's rule), then the hard state: one atomic batch, one flush.
    fn persist_ready(&mut self, write: ReadyWrite<'_>) -> Result<(), RaftLogError>;

    /// Persists a commit index learned after `advance` (from a `LightReady`): must be durable
    /// before the entries up to it are applied, or a restart could find `applied > commit`.
    fn persist_commit(&mut self, commit: u64) -> Result<(), RaftLogError>;

    /// Durably replaces the conf state after applying the configuration change at index
    /// `applied`, and records that index as applied in the same write: a restart never finds
    /// a conf state newer than its applied index (which would apply the change twice).
    /// Bootstrapping a new cluster's members passes index 0.
    fn set_conf_state(&mut self, conf_state: &ConfState, applied: u64) -> Result<(), RaftLogError>;

    /// Durably stores our own state-machine snapshot (its metadata must name a committed
    /// index of this log, with that entry's term, and the conf state at that index), then
    /// drops the entries up to it.
    fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), RaftLogError>;

    /// Records how far the state machine has applied. Called after applying, so the stored
    /// value never runs ahead of the state machine; it becomes durable with the next flush
    /// of this store (it may lag, never lead). A restart rebuilds the state machine from the
    /// stored snapshot plus the stored entries up to [`RaftLog::applied`], so a lagging
    /// value only means raft-rs hands those entries over again.
    fn set_applied(&mut self, applied: u64) -> Result<(), RaftLogError>;

    /// The recorded applied index, never below the snapshot's index (the state machine is
    /// rebuilt from that snapshot): pass it as `Config::applied` on restart.
    fn applied(&self) -> Result<u64, RaftLogError>;
}

/// Checks that `applied` does not pass the commit index (raft-rs refuses to start then).
pub(crate) fn check_applied(applied: u64, commit: u64) -> Result<(), RaftLogError> {
    if applied > commit {
        return Err(RaftLogError::AppliedBeyondCommit { applied, commit });
    }
    Ok(())
}

/// Checks entries about to be appended to a log holding `first..=last` whose commit index
/// is `commit`.
pub(crate) fn check_append(
    entries: &[Entry],
    first: u64,
    last: u64,
    commit: u64,
) -> Result<(), RaftLogError> {
    let Some(head) = entries.first() else {
        return Ok(());
    };
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index.saturating_add(1) {
            return Err(RaftLogError::NotConsecutive {
                previous: pair[0].index,
                got: pair[1].index,
            });
        }
    }
    if head.index < first {
        return Err(RaftLogError::Compacted {
            index: head.index,
            snapshot_index: first.saturating_sub(1),
        });
    }
    if head.index > last.saturating_add(1) {
        return Err(RaftLogError::Gap {
            last,
            got: head.index,
        });
    }
    // Raft never rewrites a committed entry; doing so would lose an acknowledged command.
    if head.index <= last && head.index <= commit {
        return Err(RaftLogError::OverwritesCommitted {
            index: head.index,
            commit,
        });
    }
    Ok(())
}

/// Checks a snapshot received from the leader against a log whose snapshot is at
/// `snapshot_index`.
pub(crate) fn check_received_snapshot(
    meta: &SnapshotMetadata,
    snapshot_index: u64,
) -> Result<(), RaftLogError> {
    if meta.index <= snapshot_index {
        return Err(RaftLogError::SnapshotOutOfDate {
            index: meta.index,
            snapshot_index,
        });
    }
    Ok(())
}

/// Checks our own snapshot: not older than the stored one, committed, and with the term
/// `log_term` gives for its index (asked only once the index is known to be in the log).
pub(crate) fn check_own_snapshot(
    meta: &SnapshotMetadata,
    snapshot_index: u64,
    commit: u64,
    log_term: impl FnOnce(u64) -> Result<u64, RaftLogError>,
) -> Result<(), RaftLogError> {
    if meta.index < snapshot_index {
        return Err(RaftLogError::SnapshotOutOfDate {
            index: meta.index,
            snapshot_index,
        });
    }
    if meta.index > commit {
        return Err(RaftLogError::SnapshotNotCommitted {
            index: meta.index,
            commit,
        });
    }
    let log_term = log_term(meta.index)?;
    if meta.term != log_term {
        return Err(RaftLogError::SnapshotTermMismatch {
            index: meta.index,
            term: meta.term,
            log_term,
        });
    }
    Ok(())
}

/// The hard state after a received snapshot: its index is committed, its term is seen.
pub(crate) fn hard_state_after_snapshot(
    mut hard_state: HardState,
    meta: &SnapshotMetadata,
) -> HardState {
    hard_state.term = hard_state.term.max(meta.term);
    hard_state.commit = hard_state.commit.max(meta.index);
    hard_state
}

/// Keeps the entries within `max_size` bytes as raft-rs counts them, but always the first.
pub(crate) struct SizeLimit {
    max: u64,
    used: u64,
    admitted: usize,
}

impl SizeLimit {
    pub(crate) fn new(max_size: Option<u64>) -> SizeLimit {
        SizeLimit {
            max: max_size.unwrap_or(raft::NO_LIMIT),
            used: 0,
            admitted: 0,
        }
    }

    /// Whether `entry` still fits after those already admitted.
    pub(crate) fn admits(&mut self, entry: &Entry) -> bool {
        self.used = self
            .used
            .saturating_add(u64::from(protobuf::Message::compute_size(entry)));
        let fits = self.admitted == 0 || self.used <= self.max;
        if fits {
            self.admitted += 1;
        }
        fits
    }
}

/// The error raft-rs expects for reads below the first index.
pub(crate) fn compacted() -> raft::Error {
    raft::Error::Store(StorageError::Compacted)
}

/// The error raft-rs expects for reads beyond the last index.
pub(crate) fn unavailable() -> raft::Error {
    raft::Error::Store(StorageError::Unavailable)
}
