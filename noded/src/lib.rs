//! Gantry's node daemon: owns one machine's GPUs and CPUs, starts the jobs the scheduler
//! assigns under per-job supervisors, and reports what happened over the `NodeSession` stream.
//!
//! - [`run_node`] runs a daemon (used by `gantry-noded` and in-process by `gantry dev`);
//! - [`supervise_main`] is the per-job supervisor, run as a hidden subcommand of the binary
//!   that embeds the daemon;
//! - [`discover_inventory`] finds the node's GPUs (NVML or declared), CPUs and memory.

pub mod checkpoints;
mod config;
pub mod contact;
mod error;
pub mod executor;
mod fence;
pub mod health;
pub mod identity;
pub mod inventory;
pub mod jobdir;
pub mod lease;
mod node;
mod procfs;
pub mod reconcile;
mod session;
mod supervisor;

pub use config::{
    DEFAULT_CHECKPOINT_SWEEP_MS, DEFAULT_KILL_GRACE_MS, NodeConfig, Shutdown, SupervisorCommand,
    default_data_dir, hostname, server_urls,
};
pub use error::NodedError;
pub use inventory::{GpuInventory, InventoryArgs, InventoryError, discover_inventory};
pub use node::run_node;
pub use supervisor::supervise_main;
