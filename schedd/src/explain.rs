//! What the last scheduling pass said about each pending job: why it waits, its priority
//! and rank, when it is expected to start. Kept as values, in job id order, and formatted
//! only when a client asks: a pass explains every pending job.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use gantry_model::JobId;
use gantry_policies::{Decisions, Priority, WaitReason};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// 1: the job the pass considered first.
    pub rank: u32,
    pub priority: Priority,
    /// `None` for a job the pass started.
    pub wait: Option<WaitReason>,
    /// The start a reservation promises at the latest.
    pub estimated_start_ms: Option<u64>,
}

/// Shared between the scheduling loop (writer) and the API (readers).
pub type Explanations = Arc<RwLock<Vec<(JobId, Explanation)>>>;

/// The explanations of one pass, in job id order.
pub fn explain(decisions: &Decisions, now_ms: u64) -> Vec<(JobId, Explanation)> {
    let waits: BTreeMap<JobId, &WaitReason> = decisions
        .waiting
        .iter()
        .map(|(id, why)| (*id, why))
        .collect();
    let mut explained: Vec<(JobId, Explanation)> = decisions
        .ranked
        .iter()
        .enumerate()
        .map(|(place, (id, priority))| {
            let wait = waits.get(id).map(|why| (*why).clone());
            let estimated_start_ms = match &wait {
                Some(WaitReason::Reserved { in_ms }) => Some(now_ms.saturating_add(*in_ms)),
                None => Some(now_ms),
                Some(_) => None,
            };
            let explanation = Explanation {
                rank: u32::try_from(place + 1).unwrap_or(u32::MAX),
                priority: *priority,
                wait,
                estimated_start_ms,
            };
            (*id, explanation)
        })
        .collect();
    explained.sort_unstable_by_key(|(id, _)| *id);
    explained
}

/// The explanation of job `id`, if the last pass gave one.
pub fn lookup(explanations: &[(JobId, Explanation)], id: JobId) -> Option<&Explanation> {
    let at = explanations
        .binary_search_by_key(&id, |(job, _)| *job)
        .ok()?;
    explanations.get(at).map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanations_are_found_by_id_with_rank_and_estimate() {
        let p = |total| Priority {
            total,
            ..Priority::default()
        };
        let decisions = Decisions {
            starts: vec![],
            waiting: vec![
                (7, WaitReason::Reserved { in_ms: 500 }),
                (3, WaitReason::Priority { behind: 7 }),
            ],
            ranked: vec![(7, p(20)), (3, p(10))],
            preempt: vec![],
        };
        let explained = explain(&decisions, 1_000);
        assert_eq!(
            explained.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [3, 7]
        );
        let seven = lookup(&explained, 7).unwrap();
        assert_eq!((seven.rank, seven.estimated_start_ms), (1, Some(1_500)));
        let three = lookup(&explained, 3).unwrap();
        assert_eq!((three.rank, three.estimated_start_ms), (2, None));
        assert!(lookup(&explained, 5).is_none());
    }
}
