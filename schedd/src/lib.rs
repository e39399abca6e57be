//! `gantry-schedd`: the scheduler daemon.
//!
//! An imperative shell around the pure [`gantry_state::StateMachine`] and
//! [`gantry_policies::schedule`]: a raft-rs group whose log lives in sled ([`raft`]) and
//! the engine that proposes commands and applies them in log order once committed
//! ([`engine`]), the client API ([`api`]), the group's membership ([`membership`]), node
//! sessions ([`session`]), heartbeat tracking ([`liveness`]) and the scheduling loop
//! ([`scheduling`]). [`server::Scheduler`] wires them together.

pub mod api;
pub mod clock;
pub mod config;
pub mod drains;
pub mod engine;
pub mod explain;
pub mod liveness;
pub mod membership;
pub mod raft;
pub mod scheduling;
pub mod server;
pub mod session;
pub mod transport;

pub use config::SchedConfig;
pub use server::{Scheduler, ServeError};
