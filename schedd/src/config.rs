//! The scheduler daemon's configuration (a TOML file; flags override it).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Every field is documented in docs/admin.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedConfig {
    /// Where the client API and node sessions listen.
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
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            data_dir: PathBuf::from("/var/lib/gantry/schedd"),
            admins: vec!["root".into()],
            heartbeat_timeout_ms: 30_000,
            heartbeat_interval_ms: 2_000,
            snapshot_every: 10_000,
        }
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
        "heartbeat_timeout ({timeout_ms} ms) must be longer than heartbeat_interval ({interval_ms} ms)"
    )]
    HeartbeatTimeout { timeout_ms: u64, interval_ms: u64 },
    #[error("heartbeat_interval must be longer than 0")]
    ZeroInterval,
    #[error("snapshot_every must be at least 1")]
    ZeroSnapshot,
}

impl SchedConfig {
    /// Checks what each field cannot check alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::ZeroInterval);
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::HeartbeatTimeout {
                timeout_ms: self.heartbeat_timeout_ms,
                interval_ms: self.heartbeat_interval_ms,
            });
        }
        if self.snapshot_every == 0 {
            return Err(ConfigError::ZeroSnapshot);
        }
        Ok(())
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
        assert_eq!(default_admins(Some("root".into())), ["root"]);
        assert_eq!(default_admins(Some("ann".into())), ["root", "ann"]);
    }
}
