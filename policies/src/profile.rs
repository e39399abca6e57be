//! The cluster's free resources over time, as far as time limits tell: what each node has
//! free now, what running jobs give back when they reach their limits, and what this pass
//! has already claimed (jobs it starts, reservations it makes). Backfill asks it when a job
//! could start without taking anything a claim needs.

use gantry_model::{Resources, Shape};

use crate::view::ClusterView;

/// What one node has free at some moment: amounts, and which GPUs.
#[derive(Debug, Clone)]
pub(crate) struct Free {
    pub(crate) res: Resources,
    pub(crate) gpus: Vec<u32>,
}

impl Free {
    fn give(&mut self, res: &Resources, gpus: &[u32]) {
        self.res = self.res.saturating_add(res);
        self.gpus.extend_from_slice(gpus);
    }

    fn take(&mut self, res: &Resources, gpus: &[u32]) {
        self.res = self.res.saturating_sub(res);
        self.gpus.retain(|g| !gpus.contains(g));
    }
}

/// Resources on one node, by node index.
#[derive(Debug, Clone)]
pub(crate) struct Share {
    pub(crate) node: usize,
    pub(crate) res: Resources,
    pub(crate) gpus: Vec<u32>,
}

/// Shares held over `[start, end)`; `end: None` is for ever (no time limit).
#[derive(Debug, Clone)]
struct Claim {
    start: u64,
    end: Option<u64>,
    shares: Vec<Share>,
}

fn overlaps(a_start: u64, a_end: Option<u64>, b_start: u64, b_end: Option<u64>) -> bool {
    a_end.is_none_or(|end| b_start < end) && b_end.is_none_or(|end| a_start < end)
}

pub(crate) struct Profile {
    now_ms: u64,
    /// Free now, per node (in the view's node order).
    now: Vec<Free>,
    /// Shares running jobs give back, with when: ascending by time. Jobs without a limit
    /// give nothing back as far as anyone can plan.
    releases: Vec<(u64, Share)>,
    claims: Vec<Claim>,
}

impl Profile {
    pub(crate) fn new(view: &ClusterView) -> Profile {
        let now = view
            .nodes
            .iter()
            .map(|n| Free {
                res: n.free,
                gpus: n.free_gpus.clone(),
            })
            .collect();
        let mut releases = Vec::new();
        for job in &view.running {
            let Some(end) = job.ends_at_ms else {
                continue;
            };
            // A job past its limit is being stopped: free soon, but not now.
            let end = end.max(view.now_ms + 1);
            for held in &job.parts {
                if let Some(node) = view.nodes.iter().position(|n| n.name == held.node) {
                    let share = Share {
                        node,
                        res: held.res,
                        gpus: held.gpus.clone(),
                    };
                    releases.push((end, share));
                }
            }
        }
        releases.sort_by_key(|(end, share)| (*end, share.node));
        Profile {
            now_ms: view.now_ms,
            now,
            releases,
            claims: Vec::new(),
        }
    }

    /// What each node has free throughout `[start, end)`: free now, plus what running jobs
    /// give back by `start`, minus every claim that overlaps the interval. Resources freed
    /// later only grow this, so it is what a job may use for the whole interval.
    pub(crate) fn free_during(&self, start: u64, end: Option<u64>) -> Vec<Free> {
        let mut free = self.now.clone();
        let released = self.releases.iter().take_while(|(at, _)| *at <= start);
        for (_, share) in released {
            free[share.node].give(&share.res, &share.gpus);
        }
        for claim in &self.claims {
            if overlaps(claim.start, claim.end, start, end) {
                for share in &claim.shares {
                    free[share.node].take(&share.res, &share.gpus);
                }
            }
        }
        for node in &mut free {
            node.gpus.sort_unstable();
        }
        free
    }

    /// The moments after now at which more may be free: ends of running jobs and of claims.
    pub(crate) fn later_moments(&self) -> Vec<u64> {
        let mut moments: Vec<u64> = self
            .releases
            .iter()
            .map(|(at, _)| *at)
            .chain(self.claims.iter().filter_map(|c| c.end))
            .filter(|at| *at > self.now_ms)
            .collect();
        moments.sort_unstable();
        moments.dedup();
        moments
    }

    /// Holds `shares` for a job of `shape` from `start` until its time limit runs out.
    pub(crate) fn claim(&mut self, shape: &Shape, start: u64, shares: Vec<Share>) {
        let end = shape.end_if_started(start);
        self.claims.push(Claim { start, end, shares });
    }
}
