//! The scheduler daemon's configuration (a TOML file; flags override it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use gantry_model::node::session_lease;
use gantry_policies::Topology;

use serde::Deserialize;

/// Every field is documented in docs/admin.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedConfig {
    /// This replica's id in the Raft group (1 and up).
    pub id: u64,
    /// Every replica of the group as `ID=ADDR` (this one included, for a new cluster);
    /// empty: a group of one. A replica started without itself in the list joins an
    /// existing group and waits to be added.
    pub peers: Vec<String>,
    /// Where the client API, node sessions and Raft traffic listen.
    pub listen: SocketAddr,
    /// Holds the command log and snapshots.
    pub data_dir: PathBuf,
    /// Users who may drain, resume and cancel anybody's jobs.
    pub admins: Vec<String>,
    /// A node that sends nothing for this long is declared lost and its jobs end NODE_FAIL.
    #[serde(with = "humantime_ms", rename = "heartbeat_timeout")]
    pub heartbeat_timeout_ms: u64,
    /// How often node daemons are told to send a heartbeat.
    #[serde(with = "humantime_ms", rename = "heartbeat_interval")]
    pub heartbeat_interval_ms: u64,
    /// Take a snapshot of the state and compact the log after this many entries.
    pub snapshot_every: u64,
    /// The fabric topology file (switches and the nodes under them); none: no topology.
    pub topology: Option<PathBuf>,
    /// What `topology` names, once loaded ([`SchedConfig::load_topology`]).
    #[serde(skip)]
    pub fabric: Arc<Topology>,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            id: 1,
            peers: vec![],
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            data_dir: PathBuf::from("/var/lib/gantry/schedd"),
            admins: vec!["root".into()],
            heartbeat_timeout_ms: 30_000,
            heartbeat_interval_ms: 2_000,
            snapshot_every: 10_000,
            topology: None,
            fabric: Arc::default(),
        }
    }
}

impl SchedConfig {
    /// Reads and checks the topology file, if one is named.
    pub fn load_topology(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.topology else {
            return Ok(());
        };
        let error = |why: String| ConfigError::Topology {
            path: path.clone(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let topology = Topology::from_toml(&text).map_err(|e| error(e.to_string()))?;
        self.fabric = Arc::new(topology);
        Ok(())
    }
}

/// The admins when nothing names them: root and the user running the daemon.
pub fn default_admins(current_user: Option<String>) -> Vec<String> {
    let mut admins = vec!["root".to_string()];
    admins.extend(current_user.filter(|u| u != "root"));
    admins
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "heartbeat_timeout ({timeout_ms} ms) must be longer than a node's session lease \
         ({lease_ms} ms: {intervals} heartbeat intervals of {interval_ms} ms, at least \
         {min_lease_ms} ms): node daemons leave a silent scheduler only after the lease, and \
         must reach the new leader before it declares them lost",
        intervals = gantry_model::node::SESSION_LEASE_INTERVALS,
        min_lease_ms = gantry_model::node::MIN_SESSION_LEASE.as_millis()
    )]
    HeartbeatTimeout {
        timeout_ms: u64,
        interval_ms: u64,
        lease_ms: u64,
    },
    #[error("heartbeat_interval must be longer than 0")]
    ZeroInterval,
    #[error("topology file {}: {why}", path.display())]
    Topology { path: PathBuf, why: String },
    #[error("snapshot_every must be at least 1")]
    ZeroSnapshot,
    #[error("the replica id must be at least 1")]
    ZeroId,
    #[error("invalid peer {0:?}: use ID=ADDR, e.g. 2=10.0.0.2:7420")]
    BadPeer(String),
    #[error("invalid address for peer {id}: {error}")]
    BadPeerAddress {
        id: u64,
        error: gantry_model::address::AddressError,
    },
    #[error("peer {0} is listed twice")]
    DuplicatePeer(u64),
}

impl SchedConfig {
    /// Checks what each field cannot check alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::ZeroInterval);
        }
        let lease = session_lease(Duration::from_millis(self.heartbeat_interval_ms));
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        if self.heartbeat_timeout_ms <= lease_ms {
            return Err(ConfigError::HeartbeatTimeout {
                timeout_ms: self.heartbeat_timeout_ms,
                interval_ms: self.heartbeat_interval_ms,
                lease_ms,
            });
        }
        if self.snapshot_every == 0 {
            return Err(ConfigError::ZeroSnapshot);
        }
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        self.peer_urls().map(|_| ())
    }

    /// The peers as id → `http://host:port`.
    pub fn peer_urls(&self) -> Result<BTreeMap<u64, String>, ConfigError> {
        let mut peers = BTreeMap::new();
        for entry in &self.peers {
            let (id, address) = entry
                .split_once('=')
                .ok_or_else(|| ConfigError::BadPeer(entry.clone()))?;
            let id: u64 = id
                .trim()
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| ConfigError::BadPeer(entry.clone()))?;
            let url = gantry_model::address::parse_server(address.trim())
                .map_err(|error| ConfigError::BadPeerAddress { id, error })?;
            if peers.insert(id, url).is_some() {
                return Err(ConfigError::DuplicatePeer(id));
            }
        }
        Ok(peers)
    }

    /// The voters of a brand-new group: every peer when this replica is among them, itself
    /// alone when no peers are named, nobody (join and wait to be added) otherwise.
    pub fn initial_voters(&self) -> Result<Vec<u64>, ConfigError> {
        let peers = self.peer_urls()?;
        Ok(if peers.is_empty() {
            vec![self.id]
        } else if peers.contains_key(&self.id) {
            peers.keys().copied().collect()
        } else {
            vec![]
        })
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|a| a == user)
    }
}

/// Durations in the file are humantime strings (`30s`, `2m`), held as milliseconds.
mod humantime_ms {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        gantry_model::units::parse_interval_ms(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_file_and_rejects_unknown_keys() {
        let c: SchedConfig = toml::from_str(
            "listen = \"0.0.0.0:7420\"\nadmins = [\"ops\"]\nheartbeat_timeout = \"45s\"\n",
        )
        .unwrap();
        assert_eq!(c.heartbeat_timeout_ms, 45_000);
        assert!(c.is_admin("ops") && !c.is_admin("root"));
        assert!(toml::from_str::<SchedConfig>("bogus = 1").is_err());
        assert!(toml::from_str::<SchedConfig>("heartbeat_timeout = \"soon\"").is_err());
        assert!(
            toml::from_str::<SchedConfig>("heartbeat_timeout = \"30\"").is_err(),
            "30 what?"
        );
        assert!(c.validate().is_ok());
        let short = SchedConfig {
            heartbeat_timeout_ms: 1000,
            heartbeat_interval_ms: 2000,
            ..c.clone()
        };
        assert!(short.validate().is_err());
        let within_lease = SchedConfig {
            heartbeat_timeout_ms: 6000,
            heartbeat_interval_ms: 2000,
            ..c.clone()
        };
        assert!(
            within_lease.validate().is_err(),
            "a node's lease outlasts the timeout"
        );
        let within_min_lease = SchedConfig {
            heartbeat_timeout_ms: 2000,
            heartbeat_interval_ms: 200,
            ..c.clone()
        };
        assert!(
            within_min_lease.validate().is_err(),
            "a node's lease is never under 3 s"
        );
        assert_eq!(default_admins(Some("root".into())), ["root"]);
        assert_eq!(default_admins(Some("ann".into())), ["root", "ann"]);
    }

    #[test]
    fn peers_decide_the_initial_group() {
        let with = |id, peers: &[&str]| SchedConfig {
            id,
            peers: peers.iter().map(|p| p.to_string()).collect(),
            ..SchedConfig::default()
        };
        assert_eq!(with(1, &[]).initial_voters().unwrap(), [1]);
        let three = ["1=a:1", "2=http://b:2", "3=c"];
        assert_eq!(with(2, &three).initial_voters().unwrap(), [1, 2, 3]);
        assert_eq!(
            with(4, &three).initial_voters().unwrap(),
            Vec::<u64>::new(),
            "a joiner"
        );
        assert_eq!(with(2, &three).peer_urls().unwrap()[&3], "http://c:7420");
        for bad in [
            &["x=a:1"][..],
            &["1"],
            &["0=a:1"],
            &["1=a:1", "1=b:2"],
            &["1=https://a"],
        ] {
            assert!(with(1, bad).validate().is_err(), "{bad:?}");
        }
    }
}
