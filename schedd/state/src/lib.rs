//! Gantry's state machine: every change of the scheduler's state is a [`Command`], applied by
//! [`StateMachine::apply`] in log order. Apply is deterministic — no clock reads (time is a
//! field of the command), no hash-map iteration, no randomness — so replaying the same log
//! gives the same state, byte for byte, on every replica and after every restart.
//!
//! Decisions made elsewhere (allocations from the scheduling loop, reports from nodes) are
//! verified here against the state at their index: a stale one is rejected, never applied.

pub mod accounting;
pub mod accounts;
pub mod command;
pub mod job;
pub mod machine;
pub mod node;
pub mod reservation;
pub mod usage;
mod view;

/// The encoding of [`Command`]s in the log and of the state in snapshots. Both are postcard,
/// which is positional: a field or variant added, removed or moved anywhere changes it, and
/// data of another format would decode into wrong commands rather than fail. Bump it with
/// every such change (the test `the_encoding_is_the_recorded_state_format` notices them);
/// the scheduler refuses a data directory written in another format.
pub const STATE_FORMAT: u32 = 3;

pub use command::{Command, Control, DrainMode, ExitReason, GpuAsk, Outcome, PartExit, Rejection};
pub use job::{Attempt, Job, Part, Requeue};
pub use machine::{SnapshotError, StateMachine};
pub use node::{Drain, Node, NodeState};
