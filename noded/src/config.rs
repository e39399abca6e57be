//! How a node daemon is configured: by `main.rs` from flags, or by `gantry dev` in-process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use gantry_model::NodeInventory;
use gantry_model::address::{AddressError, parse_servers};

use crate::error::NodedError;

/// Default time between SIGTERM and SIGKILL when a job is stopped.
pub const DEFAULT_KILL_GRACE_MS: u64 = 10_000;
/// Default time between two checkpoint sweeps.
pub const DEFAULT_CHECKPOINT_SWEEP_MS: u64 = 3_600_000;

/// How to start a per-job supervisor: `program args... --job-dir DIR`, where the program ends
/// up calling [`crate::supervise_main`] (`gantry-noded supervise`, or the `gantry` binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl SupervisorCommand {
    /// The running executable with `args` (e.g. `["supervise"]` for `gantry-noded`).
    pub fn current_exe(args: &[&str]) -> std::io::Result<SupervisorCommand> {
        Ok(SupervisorCommand {
            program: std::env::current_exe()?,
            args: args.iter().map(OsString::from).collect(),
        })
    }

    /// The full argument list for the supervisor of `job_dir`.
    pub fn args_for(&self, job_dir: &Path) -> Vec<OsString> {
        let mut args = self.args.clone();
        args.push("--job-dir".into());
        args.push(job_dir.as_os_str().to_owned());
        args
    }
}

/// Everything a node daemon needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Scheduler addresses as given (`host:port`, `http://host:port` or a bare host; comma
    /// lists allowed): see [`server_urls`].
    pub servers: Vec<String>,
    pub name: String,
    pub data_dir: PathBuf,
    /// The node's pool (partition); when empty, `inventory.pool`, then `default`.
    pub pool: String,
    /// Already discovered (GPUs, CPUs, memory).
    pub inventory: NodeInventory,
    pub supervisor: SupervisorCommand,
    pub kill_grace_ms: u64,
    /// Where jobs that checkpoint get `GANTRY_CHECKPOINT_DIR` (`<root>/<job id>`); `None`:
    /// `<data-dir>/checkpoints`. Shared storage lets a job resume on another node.
    pub checkpoint_root: Option<PathBuf>,
    /// How often the daemon asks the leader which checkpoint dirs belong to jobs that ended
    /// `checkpoint.keep` ago, and removes those.
    pub checkpoint_sweep_every_ms: u64,
    /// The GPUs came from NVML: watch their health there too (the fault file is always
    /// watched, see [`crate::health`]).
    pub watch_nvml: bool,
}

impl NodeConfig {
    pub fn effective_pool(&self) -> String {
        [&self.pool, &self.inventory.pool]
            .into_iter()
            .find(|p| !p.trim().is_empty())
            .map_or_else(|| "default".to_string(), |p| p.trim().to_string())
    }
}

/// How [`crate::run_node`] should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Return at once and leave every job running under its supervisor (upgrade-safe); a
    /// restarted daemon re-attaches to them.
    LeaveJobs,
    /// Stop every job (`NODE_SHUTDOWN`), wait (bounded) for their supervisors, then return.
    StopJobs,
}

/// Scheduler addresses as `http://host:port` URLs, by the one parser every Gantry program
/// uses (a bare host means port 7420; `https://`, paths and bad ports are refused). Entries
/// may themselves be comma lists (`--server a,b --server c`).
pub fn server_urls(servers: &[String]) -> Result<Vec<String>, NodedError> {
    parse_servers(&servers.join(",")).map_err(|e| match e {
        AddressError::Empty => NodedError::NoServers,
        invalid => NodedError::Address(invalid),
    })
}

/// The default data dir: `/var/lib/gantry/noded` for root, else
/// `$HOME/.local/share/gantry/noded`.
pub fn default_data_dir() -> Result<PathBuf, NodedError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/gantry/noded"));
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".local/share/gantry/noded")),
        _ => Err(NodedError::NoDefaultDataDir),
    }
}

/// The machine's host name, the default node name.
pub fn hostname() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let name = name.trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(servers: &[&str]) -> Vec<String> {
        servers.iter().map(|s| s.to_string()).collect()
    }

    // The forms themselves are the model's parser's tests; these are what the daemon adds:
    // repeated flags, its own error for "none at all", and no https.
    #[test]
    fn server_entries_are_joined_and_parsed_by_the_shared_parser() {
        assert_eq!(
            server_urls(&given(&["sched-1", " http://a:1/ , b:2"])).unwrap(),
            vec!["http://sched-1:7420", "http://a:1", "http://b:2"]
        );
        assert!(matches!(
            server_urls(&given(&[" , ", ""])),
            Err(NodedError::NoServers)
        ));
        let err = server_urls(&given(&["a:1", "https://c:3"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"https://c:3\"") && err.contains("TLS"),
            "{err}"
        );
    }

    #[test]
    fn supervisor_args_end_with_the_job_dir() {
        let cmd = SupervisorCommand {
            program: "/bin/gantry".into(),
            args: vec!["supervise".into()],
        };
        assert_eq!(
            cmd.args_for(Path::new("/d/jobs/1.0")),
            vec![
                OsString::from("supervise"),
                "--job-dir".into(),
                "/d/jobs/1.0".into()
            ]
        );
    }
}
