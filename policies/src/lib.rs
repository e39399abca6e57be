//! Gantry's scheduling brain. Pure and deterministic: it takes a plain snapshot of the cluster
//! ([`ClusterView`]) and returns [`Decisions`]; no I/O, no clock, no randomness. The scheduler
//! daemon and the simulator call the very same [`schedule`].
//!
//! Jobs are served in multifactor priority order (see [`priority`]); placement is first fit
//! per node, gangs all-or-nothing, with backfill behind reserved start times (see
//! [`placement`]).

mod accounts;
pub mod config;
pub mod disruption;
pub mod feasibility;
mod fragmentation;
mod pass;
pub mod placement;
mod plan;
pub mod priority;
mod profile;
mod reclaim;
pub mod synthetic;
pub mod topology;
pub mod view;

pub use config::{
    ConfigError, DEFAULT_POOL, DEFAULT_QOS, PolicyConfig, Preemption, QosLevel, SchedulingProfile,
    VictimOrder, Weights,
};
pub use disruption::Preemptions;
pub use feasibility::{never_fits, none_fits};
pub use pass::schedule;
pub use plan::{Arrival, NeedsPass, Plan};
pub use priority::{Factors, Priority};
pub use topology::{Switch, Topology, TopologyError};
pub use view::{
    AccountView, Claimant, ClusterView, Decisions, Held, NodeView, PartPlan, PendingJob,
    ReservationView, RunningJob, Start, Victim, WaitReason,
};
