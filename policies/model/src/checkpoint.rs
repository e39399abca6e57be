//! The checkpoint contract a job declares (`--checkpoint SIGNAL@LEAD`, Slurm's `--signal`,
//! `--checkpoint-interval`): which signal asks it to checkpoint, which of its processes get it,
//! and how long before a stop it comes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::units::{format_duration_ms, parse_duration_ms};

/// The signals a job may ask to be warned with: those a program can catch and that mean
/// nothing else to the node daemon (never SIGKILL, SIGSTOP or SIGCHLD), with their numbers
/// on Linux (Slurm's `--signal` takes either).
pub const SIGNALS: [(&str, u32); 7] = [
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGTERM", 15),
    ("SIGINT", 2),
    ("SIGHUP", 1),
    ("SIGQUIT", 3),
    ("SIGURG", 23),
];
pub const DEFAULT_SIGNAL: &str = "SIGUSR1";
/// Touched in `GANTRY_CHECKPOINT_DIR` by `gantry checkpoint done`: the job's supervisor, waiting
/// for the job to checkpoint before a preemption's SIGTERM, stops waiting when it sees it.
pub const DONE_FILE: &str = ".gantry-checkpoint-done";
pub const DEFAULT_LEAD_MS: u64 = 120_000;
/// Slurm's `--signal` without `@TIME` warns 60 seconds before.
pub const SLURM_DEFAULT_LEAD_MS: u64 = 60_000;
/// A longer warning than this is a typo: the stop it announces would wait that long.
pub const MAX_LEAD_MS: u64 = 3_600_000;

/// Which of the job's processes get the checkpoint signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SignalTarget {
    /// Its main process only: the batch script's shell, or the command (`--checkpoint`'s
    /// default; `--signal B:`). Launchers such as `torchrun`, and a shell's background
    /// helpers, have no handler and would die of it.
    #[default]
    Batch,
    /// Every process of the job, its whole process group (`--checkpoint job:...`; `--signal`
    /// without `B:`, as in Slurm).
    Job,
}

impl SignalTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalTarget::Batch => "batch",
            SignalTarget::Job => "job",
        }
    }
}

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
    pub to: SignalTarget,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            signal: DEFAULT_SIGNAL.into(),
            lead_ms: DEFAULT_LEAD_MS,
            interval_ms: None,
            to: SignalTarget::Batch,
        }
    }
}

/// `USR1`, `sigusr1`, `SIGUSR1` or `10` as `SIGUSR1`; anything else is refused by
/// [`Checkpoint::check`].
fn signal_name(text: &str) -> String {
    let text = text.trim();
    if let Ok(number) = text.parse::<u32>() {
        return SIGNALS
            .iter()
            .find(|(_, n)| *n == number)
            .map_or_else(|| format!("signal {number}"), |(name, _)| name.to_string());
    }
    let upper = text.to_ascii_uppercase();
    if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    }
}

/// A lead as `--checkpoint` and `--signal` take it: a bare number is seconds, as in
/// Slurm's `--signal=USR1@30`; otherwise any duration (`120s`, `5m`, `1:30`).
fn parse_lead_ms(lead: &str) -> Result<u64, String> {
    let lead = lead.trim();
    let bad = || format!("checkpoint lead {lead:?} is not a duration (e.g. 30 seconds, 120s, 5m)");
    if !lead.is_empty() && lead.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = lead.parse().map_err(|_| bad())?;
        return seconds.checked_mul(1000).ok_or_else(bad);
    }
    parse_duration_ms(lead).map_err(|_| bad())
}

impl Checkpoint {
    /// `--checkpoint [job:|batch:|B:]SIGNAL[@LEAD]`: `SIGUSR1@120s`, `USR2@5m`, `USR1@30` (30
    /// seconds), `SIGUSR1` (the default lead), `@30s` (the default signal), `job:USR1@60`
    /// (every process of the job, not only its batch shell).
    pub fn parse(text: &str) -> Result<Checkpoint, String> {
        let text = text.trim();
        let (to, rest) = match text.split_once(':') {
            Some((prefix, rest)) if !prefix.contains('@') => {
                let to = match prefix.trim().to_ascii_lowercase().as_str() {
                    "job" => SignalTarget::Job,
                    "batch" | "b" => SignalTarget::Batch,
                    other => {
                        return Err(format!(
                            "{other:?} before ':' is not who gets the signal: job (every \
                             process of the job) or batch (its batch shell, the default)"
                        ));
                    }
                };
                (to, rest)
            }
            _ => (SignalTarget::Batch, text),
        };
        Checkpoint::parse_signal_lead(rest, to, DEFAULT_LEAD_MS)
    }

    /// Slurm's `--signal=[B:]SIG[@TIME]`: without `B:` every process of the job gets the
    /// signal, with it only the batch shell; `SIG` is a name or a number; `TIME` is seconds
    /// (60 when left out).
    pub fn parse_slurm(text: &str) -> Result<Checkpoint, String> {
        let text = text.trim();
        let (to, rest) = match text.split_once(':') {
            Some((flags, rest)) if !flags.contains('@') => match flags.trim() {
                "B" => (SignalTarget::Batch, rest),
                "R" | "BR" | "RB" => {
                    return Err(
                        "--signal R: (a reservation's overlap) is not supported; leave it out"
                            .into(),
                    );
                }
                other => {
                    return Err(format!(
                        "--signal takes B: (the batch shell only) before the signal, not {other:?}"
                    ));
                }
            },
            _ => (SignalTarget::Job, text),
        };
        Checkpoint::parse_signal_lead(rest, to, SLURM_DEFAULT_LEAD_MS)
    }

    fn parse_signal_lead(
        text: &str,
        to: SignalTarget,
        default_lead_ms: u64,
    ) -> Result<Checkpoint, String> {
        let (signal, lead) = match text.trim().split_once('@') {
            Some((signal, lead)) => (signal.trim(), Some(lead)),
            None => (text.trim(), None),
        };
        let signal = if signal.is_empty() {
            DEFAULT_SIGNAL.to_string()
        } else {
            signal_name(signal)
        };
        let lead_ms = match lead {
            Some(lead) => parse_lead_ms(lead)?,
            None => default_lead_ms,
        };
        let checkpoint = Checkpoint {
            signal,
            lead_ms,
            interval_ms: None,
            to,
        };
        checkpoint.check()?;
        Ok(checkpoint)
    }

    pub fn check(&self) -> Result<(), String> {
        if !SIGNALS.iter().any(|(name, _)| *name == self.signal) {
            let names: Vec<&str> = SIGNALS.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "checkpoint signal {:?} is not one of {}",
                self.signal,
                names.join(", ")
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

    /// Refused when the warning would come no later than the start of a run limited to
    /// `limit_ms`: the job would be told to checkpoint before it could do anything.
    pub fn check_against_limit(&self, limit_ms: u64) -> Result<(), String> {
        if self.lead_ms >= limit_ms {
            return Err(format!(
                "the checkpoint lead ({}) must be shorter than the time limit ({}): the warning \
                 would come at the job's start",
                format_duration_ms(self.lead_ms),
                format_duration_ms(limit_ms)
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Checkpoint {
    /// `SIGUSR1@120s`, or `job:SIGUSR1@120s`, as `--checkpoint` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.to == SignalTarget::Job {
            write!(f, "job:")?;
        }
        write!(f, "{}@{}s", self.signal, self.lead_ms.div_ceil(1000))
    }
}

/// Why a job is warned with its checkpoint signal. Its supervisor writes the word to the
/// file `GANTRY_WARNING_FILE` names just before the signal, so the job can tell a stop
/// that sends it back to the queue from its time running out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Warning {
    /// Its time limit comes in `LEAD`.
    TimeLimit,
    /// Stopped for another job: a higher QoS, a guarantee, a deadline, or by an admin.
    Preemption,
    /// Requeued by its owner or an admin (`gantry requeue`).
    Requeue,
    /// Its node is being drained or taken for maintenance.
    Drain,
    /// Another node of the job failed: the whole job runs again.
    NodeFailure,
    /// Moved to defragment: it starts again at once elsewhere.
    Move,
}

impl Warning {
    pub const ALL: [Warning; 6] = [
        Warning::TimeLimit,
        Warning::Preemption,
        Warning::Requeue,
        Warning::Drain,
        Warning::NodeFailure,
        Warning::Move,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Warning::TimeLimit => "time_limit",
            Warning::Preemption => "preemption",
            Warning::Requeue => "requeue",
            Warning::Drain => "drain",
            Warning::NodeFailure => "node_failure",
            Warning::Move => "move",
        }
    }

    pub fn parse(text: &str) -> Option<Warning> {
        Warning::ALL.into_iter().find(|w| w.as_str() == text.trim())
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
        assert_eq!(Checkpoint::parse("10@5m").unwrap().signal, "SIGUSR1");
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

    #[test]
    fn who_gets_the_signal() {
        let to = |text: &str| Checkpoint::parse(text).map(|c| c.to);
        assert_eq!(to("USR1@30"), Ok(SignalTarget::Batch));
        assert_eq!(to("batch:USR1@30"), Ok(SignalTarget::Batch));
        assert_eq!(to("job:USR1@30"), Ok(SignalTarget::Job));
        assert!(
            to("all:USR1")
                .unwrap_err()
                .contains("not who gets the signal")
        );
        assert_eq!(
            Checkpoint::parse("job:USR2@1m").unwrap().to_string(),
            "job:SIGUSR2@60s"
        );
        // Slurm's --signal: every process unless B:, a bare lead in seconds, 60 by default.
        let slurm = |text: &str| Checkpoint::parse_slurm(text).map(|c| (c.to, c.signal, c.lead_ms));
        assert_eq!(
            slurm("USR1@30"),
            Ok((SignalTarget::Job, "SIGUSR1".into(), 30_000))
        );
        assert_eq!(
            slurm("B:12"),
            Ok((SignalTarget::Batch, "SIGUSR2".into(), 60_000))
        );
        assert!(slurm("R:USR1@30").unwrap_err().contains("not supported"));
        assert!(slurm("X:USR1").unwrap_err().contains("B:"));
        assert!(slurm("9@30").unwrap_err().contains("not one of"));
    }

    #[test]
    fn warnings_read_back() {
        for w in Warning::ALL {
            assert_eq!(Warning::parse(w.as_str()), Some(w));
        }
    }
}
