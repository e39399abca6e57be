//! What the last scheduling pass said about each pending job: why it waits, its priority
//! and rank, when it is expected to start. Kept as values, in job id order, and formatted
//! only when a client asks: a pass explains every pending job.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use gantry_model::JobId;
use gantry_policies::{Arrival, Decisions, Priority, WaitReason};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Its place among the jobs left waiting, 1 for the first served.
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
    let mut waiting_ahead = 0;
    let mut explained: Vec<(JobId, Explanation)> = decisions
        .ranked
        .iter()
        .map(|(id, priority)| {
            let wait = waits.get(id).map(|why| (*why).clone());
            let place = waiting_ahead;
            waiting_ahead += usize::from(wait.is_some());
            let estimated_start_ms = estimated_start(wait.as_ref(), now_ms);
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

/// Adds the explanation of a job decided after the pass, from its plan. Arrivals have ids
/// above every job the pass knew, so the list stays in id order. (The ranks of the jobs
/// behind it stay as the pass left them until the next pass.)
pub fn arrived(explanations: &mut Vec<(JobId, Explanation)>, arrival: &Arrival, now_ms: u64) {
    let explanation = Explanation {
        rank: arrival.rank,
        priority: arrival.priority,
        wait: arrival.wait.clone(),
        estimated_start_ms: estimated_start(arrival.wait.as_ref(), now_ms),
    };
    match explanations.binary_search_by_key(&arrival.job, |(job, _)| *job) {
        Ok(at) => explanations[at].1 = explanation,
        Err(at) => explanations.insert(at, (arrival.job, explanation)),
    }
}

fn estimated_start(wait: Option<&WaitReason>, now_ms: u64) -> Option<u64> {
    match wait {
        Some(WaitReason::Reserved { in_ms }) => Some(now_ms.saturating_add(*in_ms)),
        None => Some(now_ms),
        Some(_) => None,
    }
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
            ..Decisions::default()
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

    #[test]
    fn ranks_count_waiting_jobs_and_arrivals_are_added_in_id_order() {
        let decisions = Decisions {
            starts: vec![],
            waiting: vec![(3, WaitReason::Priority { behind: 1 })],
            // Job 1 started: it is ahead of nobody.
            ranked: vec![(1, Priority::default()), (3, Priority::default())],
            ..Decisions::default()
        };
        let mut explained = explain(&decisions, 1_000);
        assert_eq!(lookup(&explained, 3).unwrap().rank, 1);
        let arrival = Arrival {
            job: 9,
            priority: Priority::default(),
            rank: 2,
            start: None,
            wait: Some(WaitReason::Reserved { in_ms: 50 }),
        };
        arrived(&mut explained, &arrival, 2_000);
        let nine = lookup(&explained, 9).unwrap();
        assert_eq!((nine.rank, nine.estimated_start_ms), (2, Some(2_050)));
        assert_eq!(
            explained.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [1, 3, 9]
        );
    }
}
