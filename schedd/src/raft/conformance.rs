//! The contract every [`RaftLog`] keeps: one suite of generic cases, run against
//! [`MemRaftLog`] and [`SledRaftLog`]; the sled-only cases cover reopening and corruption.

use std::path::Path;
use std::time::{Duration, Instant};

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, Storage, StorageError};

use super::{MemRaftLog, RaftLog, RaftLogError, ReadyWrite, SledRaftLog};

/// What compaction frees, which the `Storage` reads cannot show.
pub(super) trait StoredEntries {
    fn stored_entries(&self) -> usize;
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("entry {index} of term {term}").into_bytes().into(),
        ..Entry::default()
    }
}

/// Entries `from..=to`, all of `term`.
fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|index| entry(index, term)).collect()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState::from((ids.to_vec(), Vec::new()))
}

fn snapshot(index: u64, term: u64, conf_state: ConfState, data: &str) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let meta = snapshot.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf_state);
    snapshot.data = data.as_bytes().to_vec().into();
    snapshot
}

fn read(
    log: &impl RaftLog,
    low: u64,
    high: u64,
    max_size: Option<u64>,
) -> raft::Result<Vec<Entry>> {
    log.entries(low, high, max_size, GetEntriesContext::empty(false))
}

fn append(log: &mut impl RaftLog, entries: &[Entry], hard_state: Option<&HardState>) {
    log.persist_ready(ReadyWrite {
        snapshot: None,
        entries,
        hard_state,
    })
    .unwrap();
}

fn is_store_error(result: raft::Result<impl std::fmt::Debug>, expected: StorageError) -> bool {
    matches!(result, Err(raft::Error::Store(error)) if error == expected)
}

fn new_store_is_empty(log: &mut impl RaftLog) {
    let state = log.initial_state().unwrap();
    assert_eq!(state.hard_state, HardState::default());
    assert!(!state.initialized());
    assert_eq!(log.first_index().unwrap(), 1);
    assert_eq!(log.last_index().unwrap(), 0);
    assert_eq!(log.term(0).unwrap(), 0);
    assert!(is_store_error(log.term(1), StorageError::Unavailable));
    assert!(read(log, 1, 1, None).unwrap().is_empty());
    assert!(is_store_error(
        log.snapshot(0, 2),
        StorageError::SnapshotTemporarilyUnavailable
    ));
    assert_eq!(log.applied().unwrap(), 0);
}

fn appends_and_reads_back(log: &mut impl RaftLog) {
    let hs = hard_state(1, 1, 0);
    append(log, &entries(1, 3, 1), Some(&hs));
    append(log, &entries(4, 6, 2), None);
    assert_eq!(log.initial_state().unwrap().hard_state, hs);
    assert_eq!(log.first_index().unwrap(), 1);
    assert_eq!(log.last_index().unwrap(), 6);
    assert_eq!(
        read(log, 1, 7, None).unwrap(),
        [entries(1, 3, 1), entries(4, 6, 2)].concat()
    );
    assert_eq!(
        read(log, 3, 5, None).unwrap(),
        vec![entry(3, 1), entry(4, 2)]
    );
    assert!(read(log, 7, 7, None).unwrap().is_empty());
    assert_eq!(log.term(0).unwrap(), 0);
    assert_eq!(log.term(3).unwrap(), 1);
    assert_eq!(log.term(4).unwrap(), 2);
    assert_eq!(log.term(6).unwrap(), 2);
}

fn reads_within_max_size(log: &mut impl RaftLog) {
    append(log, &entries(1, 5, 1), None);
    let size = u64::from(protobuf::Message::compute_size(&entry(1, 1)));
    // All entries here encode to the same size.
    assert_eq!(
        read(log, 1, 6, Some(0)).unwrap(),
        entries(1, 1, 1),
        "never fewer than one"
    );
    assert_eq!(read(log, 1, 6, Some(size)).unwrap(), entries(1, 1, 1));
    assert_eq!(read(log, 1, 6, Some(2 * size)).unwrap(), entries(1, 2, 1));
    assert_eq!(
        read(log, 2, 6, Some(3 * size + 1)).unwrap(),
        entries(2, 4, 1)
    );
    assert_eq!(read(log, 1, 6, Some(u64::MAX)).unwrap(), entries(1, 5, 1));
    assert_eq!(
        read(log, 1, 6, Some(raft::NO_LIMIT)).unwrap(),
        entries(1, 5, 1)
    );
}

fn unavailable_beyond_the_last_index(log: &mut impl RaftLog) {
    append(log, &entries(1, 4, 1), None);
    assert!(is_store_error(log.term(5), StorageError::Unavailable));
    assert!(is_store_error(
        read(log, 3, 6, None),
        StorageError::Unavailable
    ));
    assert!(is_store_error(
        read(log, 9, 12, None),
        StorageError::Unavailable
    ));
    assert_eq!(read(log, 3, 5, None).unwrap(), entries(3, 4, 1));
}

fn truncates_a_conflicting_suffix(log: &mut impl RaftLog) {
    append(log, &entries(1, 5, 1), Some(&hard_state(1, 1, 2)));
    // A new leader of term 2 overwrites from index 3: the old 3..=5 go, all of them.
    append(log, &entries(3, 4, 2), Some(&hard_state(2, 2, 2)));
    assert_eq!(log.last_index().unwrap(), 4);
    assert_eq!(
        read(log, 1, 5, None).unwrap(),
        [entries(1, 2, 1), entries(3, 4, 2)].concat()
    );
    assert!(is_store_error(log.term(5), StorageError::Unavailable));
    append(log, &entries(5, 5, 2), None);
    assert_eq!(log.term(5).unwrap(), 2);
    // Rewriting the last entry alone works too.
    append(log, &entries(5, 5, 3), None);
    assert_eq!(
        read(log, 4, 6, None).unwrap(),
        vec![entry(4, 2), entry(5, 3)]
    );
}

fn refuses_bad_appends_and_changes_nothing(log: &mut impl RaftLog) {
    let hs = hard_state(1, 1, 2);
    append(log, &entries(1, 4, 1), Some(&hs));
    let newer = hard_state(5, 5, 4);
    let mut refuse = |bad: &[Entry]| {
        log.persist_ready(ReadyWrite {
            snapshot: None,
            entries: bad,
            hard_state: Some(&newer),
        })
        .unwrap_err()
    };
    assert!(matches!(
        refuse(&entries(6, 7, 1)),
        RaftLogError::Gap { last: 4, got: 6 }
    ));
    assert!(matches!(
        refuse(&[entry(5, 1), entry(7, 1)]),
        RaftLogError::NotConsecutive {
            previous: 5,
            got: 7
        }
    ));
    assert!(matches!(
        refuse(&entries(2, 5, 2)),
        RaftLogError::OverwritesCommitted {
            index: 2,
            commit: 2
        }
    ));
    assert_eq!(log.initial_state().unwrap().hard_state, hs);
    assert_eq!(read(log, 1, 5, None).unwrap(), entries(1, 4, 1));
}

fn hard_state_and_conf_state_round_trip(log: &mut impl RaftLog) {
    let hs = hard_state(7, 3, 0);
    log.persist_ready(ReadyWrite {
        hard_state: Some(&hs),
        ..ReadyWrite::default()
    })
    .unwrap();
    log.set_conf_state(&voters(&[1, 2, 3]), 0).unwrap();
    let state = log.initial_state().unwrap();
    assert_eq!(state.hard_state, hs);
    assert_eq!(state.conf_state, voters(&[1, 2, 3]));
    assert!(state.initialized());

    append(log, &entries(1, 3, 7), None);
    log.persist_commit(2).unwrap();
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(7, 3, 2));

    // A conf change applied at index 2: its conf state and applied index go together.
    let mut joint = voters(&[1, 2, 4]);
    joint.voters_outgoing = vec![1, 2, 3];
    joint.learners = vec![5];
    log.set_conf_state(&joint, 2).unwrap();
    assert_eq!(log.initial_state().unwrap().conf_state, joint);
    assert_eq!(log.applied().unwrap(), 2);
    assert!(matches!(
        log.set_conf_state(&voters(&[9]), 3),
        Err(RaftLogError::AppliedBeyondCommit {
            applied: 3,
            commit: 2
        })
    ));
    assert_eq!(
        log.initial_state().unwrap().conf_state,
        joint,
        "refused: unchanged"
    );
    assert!(matches!(
        log.persist_commit(4),
        Err(RaftLogError::CommitBeyondLog { commit: 4, last: 3 })
    ));
    log.set_applied(2).unwrap();
    assert_eq!(log.applied().unwrap(), 2);
    assert!(matches!(
        log.set_applied(3),
        Err(RaftLogError::AppliedBeyondCommit {
            applied: 3,
            commit: 2
        })
    ));
    assert_eq!(log.applied().unwrap(), 2);
}

fn snapshot_compacts_the_log(log: &mut (impl RaftLog + StoredEntries)) {
    append(
        log,
        &[entries(1, 5, 1), entries(6, 10, 2)].concat(),
        Some(&hard_state(2, 1, 8)),
    );
    log.save_snapshot(snapshot(6, 2, voters(&[1, 2, 3]), "state at 6"))
        .unwrap();

    assert_eq!(log.first_index().unwrap(), 7);
    assert_eq!(log.last_index().unwrap(), 10);
    assert_eq!(
        log.stored_entries(),
        4,
        "entries up to the snapshot are dropped"
    );
    assert_eq!(log.term(6).unwrap(), 2, "the snapshot keeps its term");
    assert!(is_store_error(log.term(5), StorageError::Compacted));
    assert!(is_store_error(
        read(log, 5, 8, None),
        StorageError::Compacted
    ));
    assert!(is_store_error(
        read(log, 6, 8, None),
        StorageError::Compacted
    ));
    assert_eq!(read(log, 7, 11, None).unwrap(), entries(7, 10, 2));
    assert_eq!(log.applied().unwrap(), 6, "never below the snapshot");

    let stored = log.snapshot(0, 2).unwrap();
    assert_eq!(stored, snapshot(6, 2, voters(&[1, 2, 3]), "state at 6"));
    assert_eq!(log.snapshot(6, 2).unwrap(), stored);
    // raft asks for a snapshot at least as new as a follower's request; this one is older.
    assert!(is_store_error(
        log.snapshot(7, 2),
        StorageError::SnapshotTemporarilyUnavailable
    ));

    assert!(matches!(
        log.save_snapshot(snapshot(9, 2, voters(&[1]), "uncommitted")),
        Err(RaftLogError::SnapshotNotCommitted {
            index: 9,
            commit: 8
        })
    ));
    assert!(matches!(
        log.save_snapshot(snapshot(8, 1, voters(&[1]), "wrong term")),
        Err(RaftLogError::SnapshotTermMismatch {
            index: 8,
            term: 1,
            log_term: 2
        })
    ));
    assert!(matches!(
        log.save_snapshot(snapshot(5, 1, voters(&[1]), "older")),
        Err(RaftLogError::SnapshotOutOfDate {
            index: 5,
            snapshot_index: 6
        })
    ));
    assert_eq!(
        log.snapshot(0, 2).unwrap(),
        stored,
        "refused snapshots change nothing"
    );
    assert_eq!(log.first_index().unwrap(), 7);

    // Compacting everything keeps the last index and term; the log goes on after it.
    log.persist_commit(10).unwrap();
    log.save_snapshot(snapshot(10, 2, voters(&[1, 2, 3]), "state at 10"))
        .unwrap();
    assert_eq!(log.first_index().unwrap(), 11);
    assert_eq!(log.last_index().unwrap(), 10);
    assert_eq!(log.stored_entries(), 0);
    assert_eq!(log.term(10).unwrap(), 2);
    assert!(read(log, 11, 11, None).unwrap().is_empty());
    append(log, &entries(11, 12, 3), None);
    assert_eq!(read(log, 11, 13, None).unwrap(), entries(11, 12, 3));
    assert!(matches!(
        log.persist_ready(ReadyWrite {
            entries: &entries(10, 10, 3),
            ..ReadyWrite::default()
        }),
        Err(RaftLogError::Compacted {
            index: 10,
            snapshot_index: 10
        })
    ));
}

fn received_snapshot_replaces_the_log(log: &mut (impl RaftLog + StoredEntries)) {
    append(log, &entries(1, 5, 1), Some(&hard_state(1, 1, 3)));
    log.set_conf_state(&voters(&[1, 2, 3]), 3).unwrap();
    let received = snapshot(20, 4, voters(&[1, 2, 3, 4]), "state at 20");
    log.persist_ready(ReadyWrite {
        snapshot: Some(&received),
        entries: &entries(21, 22, 4),
        hard_state: None,
    })
    .unwrap();

    assert_eq!(log.first_index().unwrap(), 21);
    assert_eq!(log.last_index().unwrap(), 22);
    assert_eq!(log.stored_entries(), 2, "the old log is gone");
    assert_eq!(log.term(20).unwrap(), 4);
    assert!(is_store_error(log.term(5), StorageError::Compacted));
    assert!(is_store_error(
        read(log, 1, 6, None),
        StorageError::Compacted
    ));
    assert_eq!(read(log, 21, 23, None).unwrap(), entries(21, 22, 4));
    let state = log.initial_state().unwrap();
    assert_eq!(state.conf_state, voters(&[1, 2, 3, 4]));
    assert_eq!(state.hard_state, hard_state(4, 1, 20));
    assert_eq!(log.snapshot(0, 1).unwrap(), received);
    assert_eq!(
        log.applied().unwrap(),
        20,
        "the state machine restarts from it"
    );

    // A snapshot no newer than what the log holds is refused and changes nothing.
    let stale = snapshot(20, 4, voters(&[1]), "stale");
    assert!(matches!(
        log.persist_ready(ReadyWrite {
            snapshot: Some(&stale),
            ..ReadyWrite::default()
        }),
        Err(RaftLogError::SnapshotOutOfDate {
            index: 20,
            snapshot_index: 20
        })
    ));
    assert_eq!(log.snapshot(0, 1).unwrap(), received);
    assert_eq!(log.last_index().unwrap(), 22);

    // With a hard state in the same Ready, that hard state is what is stored.
    let later = snapshot(30, 5, voters(&[1, 2, 3]), "state at 30");
    let hs = hard_state(6, 2, 30);
    log.persist_ready(ReadyWrite {
        snapshot: Some(&later),
        entries: &[],
        hard_state: Some(&hs),
    })
    .unwrap();
    assert_eq!(log.initial_state().unwrap().hard_state, hs);
    assert_eq!(log.first_index().unwrap(), 31);
    assert_eq!(log.last_index().unwrap(), 30);
}

/// Every case, as one test per implementation and case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod on_mem {
            $(
                #[test]
                fn $case() {
                    super::$case(&mut super::MemRaftLog::new());
                }
            )*
        }
        mod on_sled {
            $(
                #[test]
                fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$case(&mut super::SledRaftLog::open(dir.path()).unwrap());
                }
            )*
        }
    };
}

conformance!(
    new_store_is_empty,
    appends_and_reads_back,
    reads_within_max_size,
    unavailable_beyond_the_last_index,
    truncates_a_conflicting_suffix,
    refuses_bad_appends_and_changes_nothing,
    hard_state_and_conf_state_round_trip,
    snapshot_compacts_the_log,
    received_snapshot_replaces_the_log,
);

/// Opens the store in `dir`, retrying while a just-dropped handle still holds its lock.
pub(super) fn reopen_sled(dir: &Path) -> SledRaftLog {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match SledRaftLog::open(dir) {
            Ok(log) => return log,
            Err(error) if Instant::now() < deadline => {
                eprintln!("reopening {}: {error}; retrying", dir.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("cannot reopen {}: {error}", dir.display()),
        }
    }
}

/// A new log records the data format it is opened with; reopened in the same format it
/// opens, in another (or without a record, with data in it) it is refused and untouched.
#[test]
fn sled_refuses_data_of_another_format() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = SledRaftLog::open(dir.path()).unwrap();
        log.check_format(3).unwrap();
        append(&mut log, &entries(1, 2, 1), Some(&hard_state(1, 0, 2)));
    }
    let log = reopen_sled(dir.path());
    log.check_format(3).unwrap();
    let refused = log.check_format(4).unwrap_err().to_string();
    assert!(
        refused.starts_with("the data was written in state format 3; this build reads format 4"),
        "{refused}"
    );
    log.check_format(3).unwrap();
    assert_eq!(log.last_index().unwrap(), 2);
    drop(log);

    // Data from before formats were recorded.
    let old = tempfile::tempdir().unwrap();
    {
        let mut log = SledRaftLog::open(old.path()).unwrap();
        append(&mut log, &entries(1, 1, 1), Some(&hard_state(1, 0, 1)));
    }
    let log = reopen_sled(old.path());
    let refused = log.check_format(1).unwrap_err().to_string();
    assert!(
        refused
            .starts_with("the data was written by a version that did not record its state format"),
        "{refused}"
    );
    assert_eq!(log.last_index().unwrap(), 1);
}

#[test]
fn sled_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let stored = snapshot(4, 1, voters(&[1, 2, 3]), "state at 4");
    {
        let mut log = SledRaftLog::open(dir.path()).unwrap();
        append(
            &mut log,
            &[entries(1, 5, 1), entries(6, 8, 2)].concat(),
            Some(&hard_state(2, 3, 6)),
        );
        log.set_conf_state(&voters(&[1, 2, 3]), 3).unwrap();
        log.save_snapshot(stored.clone()).unwrap();
        log.set_applied(5).unwrap();
        // Truncation must be durable too, not only additions.
        append(&mut log, &entries(8, 9, 3), None);
    }
    let log = reopen_sled(dir.path());
    let state = log.initial_state().unwrap();
    assert_eq!(state.hard_state, hard_state(2, 3, 6));
    assert_eq!(state.conf_state, voters(&[1, 2, 3]));
    assert_eq!(log.snapshot(0, 1).unwrap(), stored);
    assert_eq!(log.first_index().unwrap(), 5);
    assert_eq!(log.last_index().unwrap(), 9);
    assert_eq!(log.stored_entries(), 5);
    assert_eq!(log.term(4).unwrap(), 1);
    assert_eq!(
        read(&log, 5, 10, None).unwrap(),
        [entries(5, 5, 1), entries(6, 7, 2), entries(8, 9, 3)].concat()
    );
    assert_eq!(log.applied().unwrap(), 5);
}

#[test]
fn sled_survives_reopen_after_a_received_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let received = snapshot(50, 3, voters(&[1, 2, 4]), "state at 50");
    {
        let mut log = SledRaftLog::open(dir.path()).unwrap();
        append(&mut log, &entries(1, 10, 1), Some(&hard_state(1, 1, 10)));
        log.persist_ready(ReadyWrite {
            snapshot: Some(&received),
            entries: &entries(51, 51, 3),
            hard_state: Some(&hard_state(3, 0, 50)),
        })
        .unwrap();
    }
    let log = reopen_sled(dir.path());
    assert_eq!(log.snapshot(0, 1).unwrap(), received);
    assert_eq!(log.initial_state().unwrap().conf_state, voters(&[1, 2, 4]));
    assert!(is_store_error(log.term(10), StorageError::Compacted));
    assert_eq!(read(&log, 51, 52, None).unwrap(), entries(51, 51, 3));
    assert_eq!(log.applied().unwrap(), 50);
}

#[test]
fn sled_reports_corrupt_bytes_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = SledRaftLog::open(dir.path()).unwrap();
        append(&mut log, &entries(1, 3, 1), Some(&hard_state(1, 1, 1)));
    }
    {
        // The layout the sled implementation documents: entries by big-endian index.
        let db = reopen_db(dir.path());
        let entries = db.open_tree("raft_entries").unwrap();
        entries
            .insert(2u64.to_be_bytes(), &b"\xff\xff\xff not protobuf"[..])
            .unwrap();
        entries.insert(b"bad key", &b""[..]).unwrap();
        let meta = db.open_tree("raft_meta").unwrap();
        meta.insert("hard_state", &b"\x0a"[..]).unwrap();
        meta.insert("applied", &b"123"[..]).unwrap();
        db.flush().unwrap();
    }
    let log = reopen_sled(dir.path());
    assert!(log.initial_state().is_err());
    assert!(log.term(2).is_err());
    assert!(read(&log, 1, 4, None).is_err());
    assert!(matches!(log.applied(), Err(RaftLogError::Corrupt(_))));
    assert_eq!(log.term(1).unwrap(), 1, "intact entries still read");
}

#[test]
fn sled_reports_a_corrupt_snapshot_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = SledRaftLog::open(dir.path()).unwrap();
        append(&mut log, &entries(1, 3, 1), Some(&hard_state(1, 1, 3)));
        log.save_snapshot(snapshot(2, 1, voters(&[1]), "state at 2"))
            .unwrap();
    }
    {
        let db = reopen_db(dir.path());
        let meta = db.open_tree("raft_meta").unwrap();
        meta.insert("snapshot_meta", &b"\xff\xff\xff"[..]).unwrap();
        db.flush().unwrap();
    }
    let log = reopen_sled(dir.path());
    assert!(log.first_index().is_err());
    assert!(log.last_index().is_err());
    assert!(log.term(3).is_err());
    assert!(read(&log, 3, 4, None).is_err());
    assert!(log.snapshot(0, 1).is_err());
    assert!(log.applied().is_err());
}

fn reopen_db(dir: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(error) if Instant::now() < deadline => {
                eprintln!("reopening {}: {error}; retrying", dir.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("cannot reopen {}: {error}", dir.display()),
        }
    }
}

#[test]
fn mem_is_the_reference_for_sled() {
    // The same random-free sequence of writes gives identical answers on both.
    let dir = tempfile::tempdir().unwrap();
    let mut sled_log = SledRaftLog::open(dir.path()).unwrap();
    let mut mem_log = MemRaftLog::new();
    fn script(log: &mut impl RaftLog) -> Vec<String> {
        let mut seen = Vec::new();
        for round in 0..20u64 {
            let from = log.last_index().unwrap() + 1 - (round % 3).min(log.last_index().unwrap());
            let commit = log.initial_state().unwrap().hard_state.commit;
            let from = from.max(commit + 1);
            let hs = hard_state(round + 1, 1, commit);
            append(
                log,
                &entries(from, from + round % 4 + 1, round + 1),
                Some(&hs),
            );
            if round % 5 == 4 {
                let last = log.last_index().unwrap();
                log.persist_commit(last).unwrap();
                let term = log.term(last - 1).unwrap();
                log.save_snapshot(snapshot(last - 1, term, voters(&[1]), "s"))
                    .unwrap();
            }
            let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
            seen.push(format!(
                "{first} {last} {:?} {:?}",
                read(log, first, last + 1, None).unwrap(),
                log.initial_state().unwrap().hard_state
            ));
        }
        seen
    }
    assert_eq!(script(&mut sled_log), script(&mut mem_log));
}
