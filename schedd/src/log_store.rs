//! The durable command log and its snapshots, behind a small trait: implemented on sled
//! ([`SledLog`]) and in memory ([`MemLog`]); one contract test suite runs against both.
//!
//! Entries are opaque bytes (encoded commands) at consecutive indices starting at 1. A
//! snapshot at index `i` holds the state after applying entries `1..=i`; entries up to it
//! may then be dropped.

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("log storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("log storage is corrupt: {0}")]
    Corrupt(String),
    #[error("log entries must be appended at {expected}, got {got}")]
    Gap { expected: u64, got: u64 },
}

pub trait LogStore: Send + 'static {
    /// Appends entries at consecutive indices following the last one, and makes them
    /// durable (one flush for the whole batch) before returning.
    fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError>;
    /// Entries with index greater than `after`, in order.
    fn entries_after(&self, after: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// The index of the last entry, or of the snapshot when the log is empty after it.
    fn last_index(&self) -> Result<u64, StoreError>;
    /// Stores the state after entry `index` durably, then drops the entries up to it.
    fn save_snapshot(&mut self, index: u64, state: &[u8]) -> Result<(), StoreError>;
    fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
}

fn check_consecutive(last: u64, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
    for (offset, (index, _)) in entries.iter().enumerate() {
        let expected = last + 1 + offset as u64;
        if *index != expected {
            return Err(StoreError::Gap {
                expected,
                got: *index,
            });
        }
    }
    Ok(())
}

/// The log on sled: tree `log` maps big-endian indices to entries; tree `meta` holds the
/// snapshot. sled's `flush` survives a process crash (kill -9), not necessarily a power
/// loss (see docs/admin.md).
pub struct SledLog {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

const SNAPSHOT_KEY: &[u8] = b"snapshot";

impl SledLog {
    pub fn open(dir: &Path) -> Result<SledLog, StoreError> {
        let db = sled::open(dir)?;
        let log = db.open_tree("log")?;
        let meta = db.open_tree("meta")?;
        Ok(SledLog { db, log, meta })
    }

    fn snapshot_index(&self) -> Result<u64, StoreError> {
        Ok(self.load_snapshot()?.map_or(0, |(i, _)| i))
    }
}

fn decode_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

impl LogStore for SledLog {
    fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        check_consecutive(self.last_index()?, entries)?;
        let mut batch = sled::Batch::default();
        for (index, bytes) in entries {
            batch.insert(&index.to_be_bytes(), bytes.as_slice());
        }
        self.log.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn entries_after(&self, after: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let start = after.saturating_add(1).to_be_bytes();
        self.log
            .range(start..)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((decode_index(&k)?, v.to_vec()))
            })
            .collect()
    }

    fn last_index(&self) -> Result<u64, StoreError> {
        match self.log.last()? {
            Some((k, _)) => decode_index(&k),
            None => self.snapshot_index(),
        }
    }

    fn save_snapshot(&mut self, index: u64, state: &[u8]) -> Result<(), StoreError> {
        let mut value = index.to_be_bytes().to_vec();
        value.extend_from_slice(state);
        self.meta.insert(SNAPSHOT_KEY, value)?;
        // The snapshot must be durable before the entries it replaces are dropped.
        self.db.flush()?;
        let mut batch = sled::Batch::default();
        for key in self.log.range(..=index.to_be_bytes()).keys() {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let Some(value) = self.meta.get(SNAPSHOT_KEY)? else {
            return Ok(None);
        };
        if value.len() < 8 {
            return Err(StoreError::Corrupt(
                "snapshot shorter than its header".into(),
            ));
        }
        let (index, state) = value.split_at(8);
        Ok(Some((decode_index(index)?, state.to_vec())))
    }
}

/// The log in memory, for tests.
#[derive(Default)]
pub struct MemLog {
    entries: BTreeMap<u64, Vec<u8>>,
    snapshot: Option<(u64, Vec<u8>)>,
}

impl LogStore for MemLog {
    fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        check_consecutive(self.last_index()?, entries)?;
        self.entries.extend(entries.iter().cloned());
        Ok(())
    }

    fn entries_after(&self, after: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .entries
            .range(after.saturating_add(1)..)
            .map(|(i, e)| (*i, e.clone()))
            .collect())
    }

    fn last_index(&self) -> Result<u64, StoreError> {
        Ok(self
            .entries
            .keys()
            .next_back()
            .copied()
            .unwrap_or_else(|| self.snapshot.as_ref().map_or(0, |(i, _)| *i)))
    }

    fn save_snapshot(&mut self, index: u64, state: &[u8]) -> Result<(), StoreError> {
        self.snapshot = Some((index, state.to_vec()));
        self.entries.retain(|i, _| *i > index);
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod contract {
    //! The same tests against every implementation.
    use super::*;

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| (i, format!("entry {i}").into_bytes()))
            .collect()
    }

    fn appends_and_reads_back(store: &mut dyn LogStore) {
        assert_eq!(store.last_index().unwrap(), 0);
        store.append(&entries(1..=3)).unwrap();
        store.append(&entries(4..=5)).unwrap();
        assert_eq!(store.last_index().unwrap(), 5);
        assert_eq!(store.entries_after(0).unwrap(), entries(1..=5));
        assert_eq!(store.entries_after(3).unwrap(), entries(4..=5));
        assert!(store.entries_after(5).unwrap().is_empty());
    }

    fn refuses_gaps_and_overwrites(store: &mut dyn LogStore) {
        store.append(&entries(1..=2)).unwrap();
        assert!(matches!(
            store.append(&entries(4..=4)),
            Err(StoreError::Gap {
                expected: 3,
                got: 4
            })
        ));
        assert!(matches!(
            store.append(&entries(2..=2)),
            Err(StoreError::Gap { .. })
        ));
        assert_eq!(store.entries_after(0).unwrap(), entries(1..=2));
    }

    fn snapshot_compacts(store: &mut dyn LogStore) {
        store.append(&entries(1..=10)).unwrap();
        store.save_snapshot(7, b"state at 7").unwrap();
        assert_eq!(
            store.load_snapshot().unwrap(),
            Some((7, b"state at 7".to_vec()))
        );
        assert_eq!(store.entries_after(0).unwrap(), entries(8..=10));
        store.save_snapshot(10, b"state at 10").unwrap();
        assert_eq!(
            store.last_index().unwrap(),
            10,
            "the snapshot keeps the index"
        );
        store.append(&entries(11..=11)).unwrap();
        assert_eq!(store.entries_after(10).unwrap(), entries(11..=11));
    }

    #[test]
    fn mem() {
        appends_and_reads_back(&mut MemLog::default());
        refuses_gaps_and_overwrites(&mut MemLog::default());
        snapshot_compacts(&mut MemLog::default());
    }

    #[test]
    fn sled() {
        type Case = fn(&mut dyn LogStore);
        let cases: [Case; 3] = [
            appends_and_reads_back,
            refuses_gaps_and_overwrites,
            snapshot_compacts,
        ];
        for case in cases {
            let dir = tempfile::tempdir().unwrap();
            case(&mut SledLog::open(dir.path()).unwrap());
        }
    }

    #[test]
    fn sled_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SledLog::open(dir.path()).unwrap();
            store.append(&entries(1..=4)).unwrap();
            store.save_snapshot(2, b"s").unwrap();
        }
        let store = SledLog::open(dir.path()).unwrap();
        assert_eq!(store.load_snapshot().unwrap(), Some((2, b"s".to_vec())));
        assert_eq!(store.entries_after(2).unwrap(), entries(3..=4));
        assert_eq!(store.last_index().unwrap(), 4);
    }
}
