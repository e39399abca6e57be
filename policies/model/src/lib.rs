//! Gantry's domain model, shared by the state machine, the policies, the daemons and the CLI.
//!
//! Pure data and validation: no I/O, no clock reads, no async runtime.

pub mod address;
pub mod checkpoint;
pub mod dependency;
pub mod job;
pub mod names;
pub mod node;
pub mod shape;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod units;

pub use checkpoint::{Checkpoint, SignalTarget, Warning};
pub use dependency::{Condition, Dependency};
pub use job::{
    ExitReason, JobId, JobSpec, JobState, OpenMode, Owner, Program, RequeuePolicy, SpecError,
};
pub use node::{Gpu, NodeInventory, Resources};
pub use shape::{Alternative, Shape};
