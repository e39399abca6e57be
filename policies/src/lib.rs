//! Gantry's scheduling brain. Pure and deterministic: it takes a plain snapshot of the cluster
//! ([`ClusterView`]) and returns [`Decisions`]; no I/O, no clock, no randomness. The scheduler
//! daemon and the simulator call the very same [`schedule`].
//!
//! Priority is submit order; placement is first fit per node, gangs all-or-nothing, with
//! backfill behind reserved start times (see [`placement`]).

pub mod feasibility;
pub mod placement;
mod profile;
pub mod view;

pub use feasibility::{never_fits, none_fits};
pub use placement::{RESERVATION_DEPTH, schedule};
pub use view::{
    ClusterView, Decisions, Held, NodeView, PartPlan, PendingJob, RunningJob, Start, WaitReason,
};
