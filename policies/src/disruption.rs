//! The record defragmentation's disruption budget reads: when each account's jobs were
//! preempted, for any reason, over the last hour. Kept by the scheduler's state and by the
//! simulator alike, in the time of their commands or events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The window the budget (`defrag.per_hour`) counts over.
pub const WINDOW_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preemptions(BTreeMap<String, Vec<u64>>);

impl Preemptions {
    /// A job of `account` was preempted at `now_ms`. Times older than the window go.
    pub fn note(&mut self, account: &str, now_ms: u64) {
        let times = self.0.entry(account.to_string()).or_default();
        times.retain(|at| in_window(*at, now_ms));
        times.push(now_ms);
    }

    /// Per account with any, how many of its jobs were preempted in the hour before `now_ms`.
    pub fn last_hour(&self, now_ms: u64) -> BTreeMap<String, u32> {
        self.0
            .iter()
            .map(|(account, times)| {
                let recent = times.iter().filter(|at| in_window(**at, now_ms)).count();
                (account.clone(), u32::try_from(recent).unwrap_or(u32::MAX))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

fn in_window(at: u64, now_ms: u64) -> bool {
    at.saturating_add(WINDOW_MS) > now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_hour_and_forgets_older_times() {
        let mut p = Preemptions::default();
        p.note("a", 0);
        p.note("a", 1_000);
        p.note("b", 2_000);
        assert_eq!(
            p.last_hour(3_000),
            BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)])
        );
        assert_eq!(
            p.last_hour(WINDOW_MS + 500),
            BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 1)])
        );
        p.note("a", WINDOW_MS + 1_500);
        assert_eq!(p.0["a"], [WINDOW_MS + 1_500], "older times are dropped");
        assert!(p.last_hour(10 * WINDOW_MS).is_empty());
    }
}
