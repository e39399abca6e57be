//! Gantry's scheduling brain. Pure and deterministic: it takes a plain snapshot of the cluster
//! ([`ClusterView`]) and returns [`Decisions`]; no I/O, no clock, no randomness. The scheduler
//! daemon and the simulator call the very same [`schedule`].
//!
//! This is placement v0: priority by submit order, first fit per node, gangs all-or-nothing.
//! Like Slurm's main scheduler without backfill, a job that cannot start blocks the jobs
//! behind it, so a big job is never starved by a stream of small ones.

pub mod feasibility;
pub mod placement;
pub mod view;

pub use feasibility::never_fits;
pub use placement::schedule;
pub use view::{ClusterView, Decisions, NodeView, PartPlan, PendingJob, Start, WaitReason};
