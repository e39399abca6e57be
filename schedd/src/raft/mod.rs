//! Durable storage for the raft-rs group that replicates the scheduler's commands.
//!
//! raft-rs ships only an in-memory `MemStorage` and leaves durability to its user; this
//! module is that part, behind one seam with two implementations:
//!
//! - [`storage`]: the [`RaftLog`] trait ([`raft::Storage`] plus the writes of a `Ready`
//!   loop: [`RaftLog::persist_ready`], [`RaftLog::persist_commit`],
//!   [`RaftLog::set_conf_state`], [`RaftLog::save_snapshot`], [`RaftLog::set_applied`]),
//!   its error type and the checks both implementations share.
//! - [`sled_log`]: [`SledRaftLog`], the durable one: entries keyed by big-endian index in
//!   one tree, hard state, conf state, snapshot and applied index in a meta tree; each
//!   `Ready` is one atomic batch and one flush.
//! - [`mem_log`]: [`MemRaftLog`], in memory, for tests.
//! - [`logger`]: raft-rs's slog logging routed into tracing.
//!
//! A contract suite (`conformance`) runs against both implementations, and `cluster_tests`
//! drives three or four real `RawNode`s over each to prove the storage against raft-rs
//! itself: elections, replication, failover, restart from disk, catch-up by snapshot.
//!
//! The state machine's snapshot is opaque bytes here: the node that owns the state
//! machine serializes it, calls [`RaftLog::save_snapshot`] (which compacts the log up to
//! it), and [`raft::Storage::snapshot`] hands exactly that snapshot to raft-rs when a
//! follower is too far behind for the log.

pub mod logger;
pub mod mem_log;
pub mod sled_log;
pub mod storage;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod conformance;

pub use logger::raft_logger;
pub use mem_log::MemRaftLog;
pub use sled_log::SledRaftLog;
pub use storage::{RaftLog, RaftLogError, ReadyWrite};
