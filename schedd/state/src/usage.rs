//! What each account has used, for fair share: charges in hourly buckets, pruned once they
//! are too old to count. The policies decay them by the configured half-life; what running
//! jobs have used so far they add themselves (see `gantry_policies`' fair share).

use std::collections::BTreeMap;

use gantry_model::Resources;
use serde::{Deserialize, Serialize};

const BUCKET_MS: u64 = 3_600_000;
/// Charges older than this many half-lives weigh under 0.1% and are dropped.
const KEEP_HALF_LIVES: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Per account: bucket start (ms) → charge (dominant-share ppm × seconds).
    accounts: BTreeMap<String, BTreeMap<u64, u64>>,
}

impl Usage {
    /// Charges `account` for holding `res` of a cluster of `capacity` from `start_ms` to
    /// `end_ms`, each hour's part in that hour's bucket (so a long run's early hours decay
    /// from when they were used, not from its end), and drops what has decayed away by then.
    pub fn charge(
        &mut self,
        account: &str,
        res: &Resources,
        capacity: &Resources,
        start_ms: u64,
        end_ms: u64,
        half_life_ms: u64,
    ) {
        let share = res.dominant_share_ppm(capacity);
        let horizon = end_ms.saturating_sub(half_life_ms.saturating_mul(KEEP_HALF_LIVES));
        let buckets = self.accounts.entry(account.to_string()).or_default();
        if share > 0 {
            let mut from = start_ms.max(horizon);
            while from < end_ms {
                let bucket = from - from % BUCKET_MS;
                let to = end_ms.min(bucket + BUCKET_MS);
                let slot = buckets.entry(bucket).or_default();
                *slot = slot.saturating_add(share.saturating_mul(to - from) / 1000);
                from = to;
            }
        }
        let first_kept = horizon - horizon % BUCKET_MS;
        buckets.retain(|at, _| *at >= first_kept);
        if buckets.is_empty() {
            self.accounts.remove(account);
        }
    }

    /// Every account's charges as `(when, amount)`, for the policies. An hour's charge is
    /// dated at the hour's middle: dated at its start, it would decay as if all of it were
    /// as old as its oldest part (by up to a third at a one-hour half-life), and an
    /// account's use would jump when a run's last hour moved from running into the buckets.
    pub fn charges(&self) -> BTreeMap<String, Vec<(u64, u64)>> {
        self.accounts
            .iter()
            .map(|(account, buckets)| {
                let charges = buckets
                    .iter()
                    .map(|(at, c)| (at + BUCKET_MS / 2, *c))
                    .collect();
                (account.clone(), charges)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(gpus: u32, cpus: u32, mem_mib: u64) -> Resources {
        Resources {
            gpus,
            cpus,
            mem_mib,
        }
    }

    #[test]
    fn the_dominant_resource_is_charged_for_the_time_held() {
        let cluster = res(8, 64, 1024);
        let mut usage = Usage::default();
        usage.charge("a", &res(4, 1, 1), &cluster, 0, 10_000, BUCKET_MS);
        // A CPU-only job is charged for its CPUs.
        usage.charge("b", &res(0, 32, 1), &cluster, 0, 2_000, BUCKET_MS);
        usage.charge("c", &res(4, 1, 1), &res(0, 0, 0), 0, 10_000, BUCKET_MS);
        let charges = usage.charges();
        // Dated at the middle of their hour.
        let mid = BUCKET_MS / 2;
        assert_eq!(charges["a"], [(mid, 500_000 * 10)]);
        assert_eq!(charges["b"], [(mid, 500_000 * 2)]);
        assert!(!charges.contains_key("c"));
    }

    #[test]
    fn a_long_run_is_charged_in_the_hours_it_used() {
        let cluster = res(8, 64, 1024);
        let mut usage = Usage::default();
        let hour = BUCKET_MS;
        // Half the cluster from 0:30 to 3:15.
        usage.charge(
            "a",
            &res(4, 1, 1),
            &cluster,
            hour / 2,
            3 * hour + hour / 4,
            1000 * hour,
        );
        let half = 500_000;
        assert_eq!(
            usage.charges()["a"],
            [
                (hour / 2, half * 1800),
                (hour + hour / 2, half * 3600),
                (2 * hour + hour / 2, half * 3600),
                (3 * hour + hour / 2, half * 900)
            ]
        );
        // Hours older than ten half-lives are not charged at all.
        let mut usage = Usage::default();
        usage.charge("a", &res(8, 1, 1), &cluster, 0, 20 * hour, hour);
        let charges = &usage.charges()["a"];
        assert_eq!(charges.len(), 10);
        assert_eq!(charges[0], (10 * hour + hour / 2, 1_000_000 * 3600));
    }

    #[test]
    fn charges_land_in_hourly_buckets_and_old_ones_are_dropped() {
        let cluster = res(8, 64, 1024);
        let mut usage = Usage::default();
        let hour = BUCKET_MS;
        usage.charge("a", &res(8, 1, 1), &cluster, 0, 1000, hour);
        usage.charge("a", &res(8, 1, 1), &cluster, 0, 2000, hour);
        assert_eq!(usage.charges()["a"], [(hour / 2, 3_000_000)]);
        // Ten half-lives (hours) later the first bucket is gone.
        usage.charge(
            "a",
            &res(8, 1, 1),
            &cluster,
            11 * hour,
            11 * hour + 1000,
            hour,
        );
        assert_eq!(usage.charges()["a"], [(11 * hour + hour / 2, 1_000_000)]);
        usage.charge("b", &res(0, 0, 0), &cluster, 0, 0, hour);
        assert!(!usage.charges().contains_key("b"));
    }
}
