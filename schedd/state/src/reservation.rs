//! Advance reservations: nodes held over a window for some users' and accounts' jobs
//! (`gantry reservation`). Replicated state; the policies plan around them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use gantry_model::names::is_plain_name;

/// The longest reservation: a year. Longer is a typo.
pub const MAX_DURATION_MS: u64 = 366 * 24 * 3_600_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub nodes: Vec<String>,
    /// For a reservation of GPUs (`--gpus N`): the GPUs it holds on each of its nodes. Empty:
    /// it holds its nodes whole.
    pub gpus: BTreeMap<String, Vec<u32>>,
    /// Whose jobs may run in it: these users, and the users of these accounts (and their
    /// sub-accounts).
    pub users: Vec<String>,
    pub accounts: Vec<String>,
    pub created_by: String,
    /// For maintenance: no job runs in it, and jobs still on its nodes when it starts (no
    /// time limit, or created with `--force`) are requeued then.
    pub maintenance: bool,
    /// Its start was acted on (see [`Reservation::maintenance`]).
    pub started: bool,
}

impl Reservation {
    /// The request's own consistency; what it asks of the cluster is the state's to check.
    pub fn check(&self) -> Result<(), String> {
        if !is_plain_name(&self.name) {
            return Err(format!(
                "reservation name {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                self.name
            ));
        }
        if self.end_ms <= self.start_ms {
            return Err("a reservation must last longer than 0".into());
        }
        if self.end_ms - self.start_ms > MAX_DURATION_MS {
            return Err("a reservation may last a year at most".into());
        }
        if self.nodes.is_empty() {
            return Err("a reservation needs nodes or GPUs".into());
        }
        if self.maintenance && !self.gpus.is_empty() {
            return Err("a maintenance reservation holds whole nodes: give --nodes".into());
        }
        if self.maintenance && !(self.users.is_empty() && self.accounts.is_empty()) {
            return Err("a maintenance reservation runs no jobs: give no users or accounts".into());
        }
        if !self.maintenance && self.users.is_empty() && self.accounts.is_empty() {
            return Err("name the users or accounts whose jobs may run in it".into());
        }
        for name in self.users.iter().chain(&self.accounts) {
            if name.trim().is_empty() || name.contains(',') {
                return Err(format!("{name:?} is not a user or account name"));
            }
        }
        Ok(())
    }

    /// Whether it holds `gpus` on `node`, or any of them (`all` false).
    fn holds(&self, node: &str, gpus: &[u32], all: bool) -> bool {
        if !self.nodes.iter().any(|n| n == node) {
            return false;
        }
        if self.gpus.is_empty() {
            return true;
        }
        let held = self.gpus.get(node).map_or(&[][..], Vec::as_slice);
        if all {
            gpus.iter().all(|g| held.contains(g))
        } else {
            gpus.iter().any(|g| held.contains(g))
        }
    }

    /// Whether a job's part of `gpus` on `node` would use what it holds.
    pub fn touches(&self, node: &str, gpus: &[u32]) -> bool {
        self.holds(node, gpus, false)
    }

    /// Whether a member's part of `gpus` on `node` is inside it.
    pub fn covers(&self, node: &str, gpus: &[u32]) -> bool {
        self.holds(node, gpus, true)
    }

    /// A node both hold something of at once, if any.
    pub fn clash<'a>(&'a self, other: &Reservation) -> Option<&'a str> {
        self.nodes.iter().map(String::as_str).find(|node| {
            if !other.nodes.iter().any(|n| n == node) {
                return false;
            }
            match (self.gpus.get(*node), other.gpus.get(*node)) {
                (Some(mine), Some(theirs)) => mine.iter().any(|g| theirs.contains(g)),
                _ => self.gpus.is_empty() || other.gpus.is_empty(),
            }
        })
    }

    /// Whether its window overlaps `[start, end)` (`end` None: for ever).
    pub fn overlaps(&self, start: u64, end: Option<u64>) -> bool {
        start < self.end_ms && end.is_none_or(|end| end > self.start_ms)
    }
}
