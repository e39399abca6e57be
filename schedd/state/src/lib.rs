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

pub use command::{Command, Control, DrainMode, ExitReason, GpuAsk, Outcome, PartExit, Rejection};
pub use job::{Attempt, Job, Part, Requeue};
pub use machine::{SnapshotError, StateMachine};
pub use node::{Drain, Node, NodeState};
