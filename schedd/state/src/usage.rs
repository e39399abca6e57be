//! What each account has used, for fair share: charges in hourly buckets, pruned once they
//! are too old to count. The policies decay them by the configured half-life.

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
    /// `end_ms`, and drops what has decayed away by then.
    pub fn charge(
        &mut self,
        account: &str,
        res: &Resources,
        capacity: &Resources,
        start_ms: u64,
        end_ms: u64,
        half_life_ms: u64,
    ) {
        let amount = charge(res, capacity, start_ms, end_ms);
        let buckets = self.accounts.entry(account.to_string()).or_default();
        if amount > 0 {
            let bucket = end_ms - end_ms % BUCKET_MS;
            let slot = buckets.entry(bucket).or_default();
            *slot = slot.saturating_add(amount);
        }
        let horizon = end_ms.saturating_sub(half_life_ms.saturating_mul(KEEP_HALF_LIVES));
        buckets.retain(|at, _| *at >= horizon);
        if buckets.is_empty() {
            self.accounts.remove(account);
        }
    }

    /// Every account's charges as `(when, amount)`, for the policies.
    pub fn charges(&self) -> BTreeMap<String, Vec<(u64, u64)>> {
        self.accounts
            .iter()
            .map(|(account, buckets)| {
                let charges = buckets.iter().map(|(at, c)| (*at, *c)).collect();
                (account.clone(), charges)
            })
            .collect()
    }
}

/// Dominant-share ppm × seconds: the largest fraction of the cluster's GPUs, CPUs or memory
/// that `res` is, over `[start_ms, end_ms)`.
pub fn charge(res: &Resources, capacity: &Resources, start_ms: u64, end_ms: u64) -> u64 {
    let ppm = |asked: u64, total: u64| {
        asked
            .saturating_mul(1_000_000)
            .checked_div(total)
            .map_or(0, |share| share.min(1_000_000))
    };
    let share = ppm(u64::from(res.gpus), u64::from(capacity.gpus))
        .max(ppm(u64::from(res.cpus), u64::from(capacity.cpus)))
        .max(ppm(res.mem_mib, capacity.mem_mib));
    share.saturating_mul(end_ms.saturating_sub(start_ms) / 1000)
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
        assert_eq!(charge(&res(4, 1, 1), &cluster, 0, 10_000), 500_000 * 10);
        // A CPU-only job is charged for its CPUs.
        assert_eq!(charge(&res(0, 32, 1), &cluster, 0, 2_000), 500_000 * 2);
        assert_eq!(charge(&res(4, 1, 1), &res(0, 0, 0), 0, 10_000), 0);
    }

    #[test]
    fn charges_land_in_hourly_buckets_and_old_ones_are_dropped() {
        let cluster = res(8, 64, 1024);
        let mut usage = Usage::default();
        let hour = BUCKET_MS;
        usage.charge("a", &res(8, 1, 1), &cluster, 0, 1000, hour);
        usage.charge("a", &res(8, 1, 1), &cluster, 0, 2000, hour);
        assert_eq!(usage.charges()["a"], [(0, 3_000_000)]);
        // Ten half-lives (hours) later the first bucket is gone.
        usage.charge(
            "a",
            &res(8, 1, 1),
            &cluster,
            11 * hour,
            11 * hour + 1000,
            hour,
        );
        assert_eq!(usage.charges()["a"], [(11 * hour, 1_000_000)]);
        usage.charge("b", &res(0, 0, 0), &cluster, 0, 0, hour);
        assert!(!usage.charges().contains_key("b"));
    }
}
