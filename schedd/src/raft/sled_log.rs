//! [`RaftLog`] on sled.
//!
//! Tree `raft_entries` maps big-endian indices (so key order is index order) to entries;
//! tree `raft_meta` holds the hard state, the conf state, the snapshot's metadata and its
//! data under separate keys (so `term` and `first_index` never decode the data), and the
//! applied index. Values are raft's own protobuf encoding. A write touching both trees is
//! one sled transaction followed by one flush. sled's `flush` survives a process crash
//! (kill -9), not necessarily a power loss (see docs/admin.md).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Mutex;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tracing::warn;

use super::storage::{
    RaftLog, RaftLogError, ReadyWrite, SizeLimit, check_append, check_applied, check_own_snapshot,
    check_received_snapshot, compacted, hard_state_after_snapshot, unavailable,
};

const ENTRIES_TREE: &str = "raft_entries";
const META_TREE: &str = "raft_meta";
const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
const SNAPSHOT_META: &[u8] = b"snapshot_meta";
const SNAPSHOT_DATA: &[u8] = b"snapshot_data";
const APPLIED: &[u8] = b"applied";
const DATA_FORMAT: &[u8] = b"data_format";

pub struct SledRaftLog {
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    /// The thread dropping the entries the last snapshot covers, if one was started.
    compaction: Mutex<Option<JoinHandle<()>>>,
}

impl SledRaftLog {
    /// Opens (or creates) the raft log in directory `dir`. Fails while another handle on
    /// the same directory is still open.
    pub fn open(dir: &Path) -> Result<SledRaftLog, RaftLogError> {
        let db = sled::open(dir)?;
        let entries = db.open_tree(ENTRIES_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        let log = SledRaftLog {
            db,
            entries,
            meta,
            compaction: Mutex::new(None),
        };
        // A crash may have cut short the compaction that follows a snapshot. (Unreadable
        // metadata is reported by the reads that need it.)
        if let Ok(snapshot) = log.snapshot_meta() {
            drop_entries(&log.entries, snapshot.index, false)?;
        }
        Ok(log)
    }

    /// Records `format` — the encoding of what entries and snapshots carry — in a new log,
    /// and refuses a log written in another (or before formats were recorded): positional
    /// encodings would decode it into wrong commands rather than fail.
    pub fn check_format(&self, format: u32) -> Result<(), RaftLogError> {
        match self.meta.get(DATA_FORMAT)? {
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| {
                        RaftLogError::Corrupt(format!(
                            "the data format record has {} bytes, not 4",
                            bytes.len()
                        ))
                    })?;
                if found == format {
                    Ok(())
                } else {
                    Err(RaftLogError::Format {
                        found: Some(found),
                        expected: format,
                    })
                }
            }
            None if self.entries.is_empty()
                && !self.meta.contains_key(HARD_STATE)?
                && !self.meta.contains_key(SNAPSHOT_DATA)? =>
            {
                self.meta.insert(DATA_FORMAT, &format.to_be_bytes())?;
                self.db.flush()?;
                Ok(())
            }
            None => Err(RaftLogError::Format {
                found: None,
                expected: format,
            }),
        }
    }

    /// Waits for the last snapshot's compaction, so that one runs at a time.
    fn wait_for_compaction(&self) {
        let running = self
            .compaction
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = running {
            let _ = thread.join();
        }
    }

    fn read_meta<M: protobuf::Message>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<M, RaftLogError> {
        match self.meta.get(key)? {
            Some(bytes) => decode(&bytes, what),
            None => Ok(M::new()),
        }
    }

    fn hard_state(&self) -> Result<HardState, RaftLogError> {
        self.read_meta(HARD_STATE, "hard state")
    }

    fn conf_state(&self) -> Result<ConfState, RaftLogError> {
        self.read_meta(CONF_STATE, "conf state")
    }

    fn snapshot_meta(&self) -> Result<SnapshotMetadata, RaftLogError> {
        self.read_meta(SNAPSHOT_META, "snapshot metadata")
    }

    fn stored_applied(&self) -> Result<u64, RaftLogError> {
        match self.meta.get(APPLIED)? {
            Some(bytes) => decode_index(&bytes, "applied index"),
            None => Ok(0),
        }
    }

    fn last(&self, snapshot_index: u64) -> Result<u64, RaftLogError> {
        match self.entries.last()? {
            Some((key, _)) => decode_index(&key, "entry key"),
            None => Ok(snapshot_index),
        }
    }

    fn entry(&self, index: u64) -> Result<Option<Entry>, RaftLogError> {
        self.entries
            .get(index.to_be_bytes())?
            .map(|bytes| decode_entry(index, &bytes))
            .transpose()
    }

    /// Applies both batches atomically, then flushes once.
    fn commit(&self, entries: sled::Batch, meta: sled::Batch) -> Result<(), RaftLogError> {
        (&self.entries, &self.meta)
            .transaction(|(entries_tx, meta_tx)| {
                entries_tx.apply_batch(&entries)?;
                meta_tx.apply_batch(&meta)?;
                Ok::<(), ConflictableTransactionError<Infallible>>(())
            })
            .map_err(|error| match error {
                TransactionError::Storage(error) => RaftLogError::Sled(error),
                TransactionError::Abort(never) => match never {},
            })?;
        self.db.flush()?;
        Ok(())
    }

    /// Queues the removal of every entry from `from` on.
    fn remove_from(&self, from: u64, batch: &mut sled::Batch) -> Result<(), RaftLogError> {
        for key in self.entries.range(from.to_be_bytes()..).keys() {
            batch.remove(key?);
        }
        Ok(())
    }

    fn read_entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, RaftLogError> {
        let mut limit = SizeLimit::new(max_size);
        let mut out = Vec::new();
        let mut next = low;
        for pair in self.entries.range(low.to_be_bytes()..high.to_be_bytes()) {
            let (key, value) = pair?;
            let index = decode_index(&key, "entry key")?;
            if index != next {
                break;
            }
            let entry = decode_entry(index, &value)?;
            if !limit.admits(&entry) {
                return Ok(out);
            }
            out.push(entry);
            next += 1;
        }
        // The caller checked `high` against the last index: a hole means lost entries.
        if next < high {
            return Err(RaftLogError::Corrupt(format!(
                "raft entry {next} is missing"
            )));
        }
        Ok(out)
    }
}

fn encode(message: &impl protobuf::Message, what: &'static str) -> Result<Vec<u8>, RaftLogError> {
    message
        .write_to_bytes()
        .map_err(|source| RaftLogError::Encode { what, source })
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &'static str) -> Result<M, RaftLogError> {
    M::parse_from_bytes(bytes).map_err(|source| RaftLogError::Decode { what, source })
}

fn decode_index(bytes: &[u8], what: &str) -> Result<u64, RaftLogError> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| RaftLogError::Corrupt(format!("{what} of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, RaftLogError> {
    let entry: Entry = decode(bytes, "entry")?;
    if entry.index != index {
        return Err(RaftLogError::Corrupt(format!(
            "raft entry stored at {index} says index {}",
            entry.index
        )));
    }
    Ok(entry)
}

/// Entries removed per batch when a snapshot's compaction runs in the background.
const DROP_CHUNK: usize = 256;
/// The pause between those batches: the removal's CPU time is spread out rather than taken
/// at once from the raft threads of a small machine.
const DROP_PAUSE: Duration = Duration::from_millis(2);

/// Removes the entries up to `index` (covered by the snapshot), without a flush of its own:
/// a removal that does not reach the disk is redone at the next open. `pause` spreads the
/// work out in small batches.
fn drop_entries(entries: &sled::Tree, index: u64, pause: bool) -> Result<(), RaftLogError> {
    loop {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for key in entries
            .range(..=index.to_be_bytes())
            .keys()
            .take(DROP_CHUNK)
        {
            batch.remove(key?);
            count += 1;
        }
        entries.apply_batch(batch)?;
        if count < DROP_CHUNK {
            return Ok(());
        }
        if pause {
            thread::sleep(DROP_PAUSE);
        }
    }
}

#[cfg(test)]
impl super::conformance::StoredEntries for SledRaftLog {
    fn stored_entries(&self) -> usize {
        self.wait_for_compaction();
        self.entries.len()
    }
}

impl raft::Storage for SledRaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state()?, self.conf_state()?))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let snapshot_index = self.snapshot_meta()?.index;
        if low <= snapshot_index {
            return Err(compacted());
        }
        if high > self.last(snapshot_index)?.saturating_add(1) {
            return Err(unavailable());
        }
        Ok(self.read_entries(low, high, max_size.into())?)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let snapshot = self.snapshot_meta()?;
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        if index < snapshot.index {
            return Err(compacted());
        }
        match self.entry(index)? {
            Some(entry) => Ok(entry.term),
            None if index <= self.last(snapshot.index)? => {
                Err(RaftLogError::Corrupt(format!("raft entry {index} is missing")).into())
            }
            None => Err(unavailable()),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_meta()?.index.saturating_add(1))
    }

    fn last_index(&self) -> raft::Result<u64> {
        let snapshot_index = self.snapshot_meta()?.index;
        Ok(self.last(snapshot_index)?)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let meta = self.snapshot_meta()?;
        // Only a snapshot of the state machine can be sent; a newer one must be made first.
        if meta.index == 0 || meta.index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let data = self
            .meta
            .get(SNAPSHOT_DATA)
            .map_err(RaftLogError::from)?
            .ok_or_else(|| {
                RaftLogError::Corrupt(format!("snapshot at {} has no data", meta.index))
            })?;
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        snapshot.data = data.to_vec().into();
        Ok(snapshot)
    }
}

impl RaftLog for SledRaftLog {
    fn persist_ready(&mut self, write: ReadyWrite<'_>) -> Result<(), RaftLogError> {
        if write.is_empty() {
            return Ok(());
        }
        let mut entries = sled::Batch::default();
        let mut meta = sled::Batch::default();
        let mut hard_state = self.hard_state()?;
        let snapshot_index = self.snapshot_meta()?.index;
        let (mut first, mut last) = (snapshot_index.saturating_add(1), self.last(snapshot_index)?);

        if let Some(snapshot) = write.snapshot {
            let snapshot_meta = snapshot.get_metadata();
            check_received_snapshot(snapshot_meta, snapshot_index)?;
            self.remove_from(0, &mut entries)?;
            meta.insert(SNAPSHOT_META, encode(snapshot_meta, "snapshot metadata")?);
            meta.insert(SNAPSHOT_DATA, snapshot.data.as_ref());
            meta.insert(
                CONF_STATE,
                encode(snapshot_meta.get_conf_state(), "conf state")?,
            );
            hard_state = hard_state_after_snapshot(hard_state, snapshot_meta);
            (first, last) = (snapshot_meta.index.saturating_add(1), snapshot_meta.index);
        }
        if let Some(head) = write.entries.first() {
            check_append(write.entries, first, last, hard_state.commit)?;
            if head.index <= last {
                self.remove_from(head.index, &mut entries)?;
            }
            for entry in write.entries {
                entries.insert(&entry.index.to_be_bytes(), encode(entry, "entry")?);
            }
        }
        let hard_state = write.hard_state.unwrap_or(&hard_state);
        meta.insert(HARD_STATE, encode(hard_state, "hard state")?);
        self.commit(entries, meta)
    }

    fn persist_commit(&mut self, commit: u64) -> Result<(), RaftLogError> {
        let last = self.last(self.snapshot_meta()?.index)?;
        if commit > last {
            return Err(RaftLogError::CommitBeyondLog { commit, last });
        }
        let mut hard_state = self.hard_state()?;
        hard_state.commit = commit;
        self.meta
            .insert(HARD_STATE, encode(&hard_state, "hard state")?)?;
        self.db.flush()?;
        Ok(())
    }

    fn set_conf_state(&mut self, conf_state: &ConfState, applied: u64) -> Result<(), RaftLogError> {
        check_applied(applied, self.hard_state()?.commit)?;
        let mut meta = sled::Batch::default();
        meta.insert(CONF_STATE, encode(conf_state, "conf state")?);
        meta.insert(APPLIED, &applied.to_be_bytes());
        self.meta.apply_batch(meta)?;
        self.db.flush()?;
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), RaftLogError> {
        let snapshot_meta = snapshot.get_metadata();
        let current = self.snapshot_meta()?;
        check_own_snapshot(
            snapshot_meta,
            current.index,
            self.hard_state()?.commit,
            |index| {
                if index == current.index {
                    return Ok(current.term);
                }
                self.entry(index)?.map(|entry| entry.term).ok_or_else(|| {
                    RaftLogError::Corrupt(format!("committed raft entry {index} is missing"))
                })
            },
        )?;
        let mut meta = sled::Batch::default();
        meta.insert(SNAPSHOT_META, encode(snapshot_meta, "snapshot metadata")?);
        meta.insert(SNAPSHOT_DATA, snapshot.data.as_ref());
        self.meta.apply_batch(meta)?;
        self.db.flush()?;
        // From here on the log starts after the snapshot whatever entries remain below it, and
        // nothing writes there again: they are dropped on another thread. Removing ten
        // thousand keys takes sled a tenth of a second or more, which on the raft thread
        // stalled every commit meanwhile.
        self.wait_for_compaction();
        let entries = self.entries.clone();
        let index = snapshot_meta.index;
        let dropped = thread::Builder::new()
            .name("gantry-compact".into())
            .spawn(move || {
                if let Err(e) = drop_entries(&entries, index, true) {
                    warn!(error = %e, index, "cannot drop log entries covered by a snapshot; retried at the next start");
                }
            });
        match dropped {
            Ok(thread) => {
                *self.compaction.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(thread)
            }
            Err(e) => {
                warn!(error = %e, "no thread to drop compacted log entries; dropping them here");
                drop_entries(&self.entries, index, false)?;
            }
        }
        Ok(())
    }

    fn set_applied(&mut self, applied: u64) -> Result<(), RaftLogError> {
        check_applied(applied, self.hard_state()?.commit)?;
        // No flush of its own: a lagging applied index only replays more on restart.
        self.meta.insert(APPLIED, &applied.to_be_bytes())?;
        Ok(())
    }

    fn applied(&self) -> Result<u64, RaftLogError> {
        Ok(self.stored_applied()?.max(self.snapshot_meta()?.index))
    }
}
