//! The checkpoint contract a job declares (`--checkpoint SIGNAL@LEAD`, `--checkpoint-interval`):
//! which signal asks it to checkpoint, and how long before a stop it comes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::units::{format_duration_ms, parse_duration_ms};

/// The signals a job may ask to be warned with: those a program can catch and that mean
/// nothing else to the node daemon (never SIGKILL, SIGSTOP or SIGCHLD).
pub const SIGNALS: [&str; 7] = [
    "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGURG",
];
pub const DEFAULT_SIGNAL: &str = "SIGUSR1";
/// Touched in `GANTRY_CHECKPOINT_DIR` by `gantry checkpoint done`: the job's supervisor, waiting
/// for the job to checkpoint before a preemption's SIGTERM, stops waiting when it sees it.
pub const DONE_FILE: &str = ".gantry-checkpoint-done";
pub const DEFAULT_LEAD_MS: u64 = 120_000;
/// A longer warning than this is a typo: the stop it announces would wait that long.
pub const MAX_LEAD_MS: u64 = 3_600_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `SIGUSR1`, ...: one of [`SIGNALS`].
    pub signal: String,
    /// How long before a stop (preemption, drain, time limit) the signal comes: the job's
    /// time to write a checkpoint.
    pub lead_ms: u64,
    /// How often the job checkpoints on its own (for the scheduler's estimate of what a
    /// stop would lose); `None`: only when signalled.
    pub interval_ms: Option<u64>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            signal: DEFAULT_SIGNAL.into(),
            lead_ms: DEFAULT_LEAD_MS,
            interval_ms: None,
        }
    }
}

impl Checkpoint {
    /// `SIGUSR1@120s`, `USR2@5m`, `SIGUSR1` (the default lead), `@30s` (the default signal).
    pub fn parse(text: &str) -> Result<Checkpoint, String> {
        let (signal, lead) = match text.trim().split_once('@') {
            Some((signal, lead)) => (signal.trim(), Some(lead.trim())),
            None => (text.trim(), None),
        };
        let signal = if signal.is_empty() {
            DEFAULT_SIGNAL.to_string()
        } else {
            let upper = signal.to_ascii_uppercase();
            if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            }
        };
        let lead_ms = match lead {
            Some(lead) => parse_duration_ms(lead).map_err(|_| {
                format!("checkpoint lead {lead:?} is not a duration (e.g. 120s, 5m)")
            })?,
            None => DEFAULT_LEAD_MS,
        };
        let checkpoint = Checkpoint {
            signal,
            lead_ms,
            interval_ms: None,
        };
        checkpoint.check()?;
        Ok(checkpoint)
    }

    pub fn check(&self) -> Result<(), String> {
        if !SIGNALS.contains(&self.signal.as_str()) {
            return Err(format!(
                "checkpoint signal {:?} is not one of {}",
                self.signal,
                SIGNALS.join(", ")
            ));
        }
        if self.lead_ms > MAX_LEAD_MS {
            return Err(format!(
                "a checkpoint lead of {} is more than the most Gantry waits ({})",
                format_duration_ms(self.lead_ms),
                format_duration_ms(MAX_LEAD_MS)
            ));
        }
        if self.interval_ms == Some(0) {
            return Err("a checkpoint interval must be longer than 0".into());
        }
        Ok(())
    }
}

impl fmt::Display for Checkpoint {
    /// `SIGUSR1@2:00`, as `--checkpoint` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}s", self.signal, self.lead_ms.div_ceil(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_and_lead_with_defaults() {
        let c = Checkpoint::parse("SIGUSR1@120s").unwrap();
        assert_eq!((c.signal.as_str(), c.lead_ms), ("SIGUSR1", 120_000));
        assert_eq!(Checkpoint::parse("usr2@5m").unwrap().signal, "SIGUSR2");
        assert_eq!(Checkpoint::parse("USR2@5m").unwrap().lead_ms, 300_000);
        assert_eq!(
            Checkpoint::parse("SIGTERM").unwrap().lead_ms,
            DEFAULT_LEAD_MS
        );
        assert_eq!(Checkpoint::parse("@30s").unwrap().signal, DEFAULT_SIGNAL);
        assert_eq!(Checkpoint::parse("SIGUSR1@0s").unwrap().lead_ms, 0);
        assert_eq!(Checkpoint::default().to_string(), "SIGUSR1@120s");
        for (bad, why) in [
            ("SIGKILL@1m", "not one of"),
            ("SIGSEGV", "not one of"),
            ("SIGUSR1@soon", "not a duration"),
            ("SIGUSR1@2h", "more than the most"),
        ] {
            let err = Checkpoint::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    /// Slurm's `--signal=USR1@30` means 30 seconds; Gantry's bare number meant 30 minutes.
    #[test]
    fn a_bare_lead_is_seconds_as_in_slurm() {
        assert_eq!(Checkpoint::parse("USR1@30").unwrap().lead_ms, 30_000);
        assert_eq!(Checkpoint::parse("USR1@90").unwrap().lead_ms, 90_000);
        assert_eq!(Checkpoint::parse("USR1@2m").unwrap().lead_ms, 120_000);
    }
}
