//! The cluster's free resources over time, as far as time limits tell: what each node has
//! free now, what running jobs give back when they reach their limits, and what this pass
//! has already claimed (jobs it starts, reservations it makes). Backfill asks it when a job
//! could start without taking anything a claim needs.

use gantry_model::{Resources, Shape};

use crate::view::ClusterView;

/// What one node has free at some moment: amounts, and which GPUs. The GPU amount is always
/// the length of the list: a claim that starts after the moment looked at may name GPUs a
/// running job still holds then, and must not be counted as taking them twice. (CPUs and
/// memory have no identity, so such a claim does count twice for them: conservative.)
#[derive(Debug, Clone)]
pub(crate) struct Free {
    pub(crate) res: Resources,
    pub(crate) gpus: Vec<u32>,
}

impl Free {
    pub(crate) fn give(&mut self, res: &Resources, gpus: &[u32]) {
        self.res = self.res.saturating_add(res);
        self.gpus.extend_from_slice(gpus);
        self.count_gpus();
    }

    pub(crate) fn take(&mut self, res: &Resources, gpus: &[u32]) {
        self.res = self.res.saturating_sub(res);
        self.gpus.retain(|g| !gpus.contains(g));
        self.count_gpus();
    }

    fn count_gpus(&mut self) {
        self.res.gpus = u32::try_from(self.gpus.len()).unwrap_or(u32::MAX);
    }
}

/// Resources on one node, by node index.
#[derive(Debug, Clone)]
pub(crate) struct Share {
    pub(crate) node: usize,
    pub(crate) res: Resources,
    pub(crate) gpus: Vec<u32>,
}

/// What a job of `shape` placed at `picks` holds on each of its nodes.
pub(crate) fn shares(shape: &Shape, picks: &[(usize, Vec<u32>)]) -> Vec<Share> {
    picks
        .iter()
        .map(|(node, gpus)| Share {
            node: *node,
            res: shape.per_node,
            gpus: gpus.clone(),
        })
        .collect()
}

/// Shares held over `[start, end)`; `end: None` is for ever (no time limit).
#[derive(Debug, Clone)]
struct Claim {
    start: u64,
    end: Option<u64>,
    shares: Vec<Share>,
    /// The reservation that holds them, when one does: its members' jobs may use them.
    reservation: Option<String>,
}

/// How many nodes have each number of free GPUs: answers "how many nodes have at least G
/// free" without a look at every node.
#[derive(Default)]
struct FreeCounts(Vec<u64>);

impl FreeCounts {
    fn add(&mut self, free: usize) {
        if self.0.len() <= free {
            self.0.resize(free + 1, 0);
        }
        self.0[free] += 1;
    }

    fn remove(&mut self, free: usize) {
        if let Some(count) = self.0.get_mut(free) {
            *count = count.saturating_sub(1);
        }
    }

    fn at_least(&self, gpus: u32) -> u64 {
        let from = usize::try_from(gpus).unwrap_or(usize::MAX);
        self.0.iter().skip(from).sum()
    }
}

fn insert_sorted(gpus: &mut Vec<u32>, g: u32) {
    if let Err(at) = gpus.binary_search(&g) {
        gpus.insert(at, g);
    }
}

fn overlaps(a_start: u64, a_end: Option<u64>, b_start: u64, b_end: Option<u64>) -> bool {
    a_end.is_none_or(|end| b_start < end) && b_end.is_none_or(|end| a_start < end)
}

#[derive(Clone)]
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
            .map(|n| {
                let mut free = Free {
                    res: n.free,
                    gpus: n.free_gpus.clone(),
                };
                free.count_gpus();
                free
            })
            .collect();
        // Looked up once per part of every running job: hashed, not compared along a tree.
        let index: std::collections::HashMap<&str, usize> = view
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut releases = Vec::new();
        for job in &view.running {
            let Some(end) = job.ends_at_ms else {
                continue;
            };
            // A job past its limit is being stopped: free soon, but not now.
            let end = end.max(view.now_ms + 1);
            for held in &job.parts {
                if let Some(&node) = index.get(held.node.as_str()) {
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
        // Reservations hold their whole nodes through their windows.
        let claims = view
            .reservations
            .iter()
            .filter(|r| r.end_ms > view.now_ms)
            .map(|r| Claim {
                start: r.start_ms,
                end: Some(r.end_ms),
                shares: r
                    .nodes
                    .iter()
                    .filter_map(|name| Some((name, *index.get(name.as_str())?)))
                    .map(|(name, node)| match r.gpus.get(name) {
                        // GPUs alone: CPUs and memory stay everyone's.
                        Some(gpus) => Share {
                            node,
                            res: gantry_model::Resources {
                                gpus: u32::try_from(gpus.len()).unwrap_or(u32::MAX),
                                ..Default::default()
                            },
                            gpus: gpus.clone(),
                        },
                        None => Share {
                            node,
                            res: view.nodes[node].capacity,
                            gpus: view.nodes[node].gpus.iter().map(|g| g.index).collect(),
                        },
                    })
                    .collect(),
                reservation: Some(r.name.clone()),
            })
            .collect();
        Profile {
            now_ms: view.now_ms,
            now,
            releases,
            claims,
        }
    }

    /// What each node has free throughout `[start, end)`: free now, plus what running jobs
    /// give back by `start`, minus every claim that overlaps the interval. Resources freed
    /// later only grow this, so it is what a job may use for the whole interval.
    pub(crate) fn free_during(&self, start: u64, end: Option<u64>) -> Vec<Free> {
        self.free_during_with(start, end, &[])
    }

    /// Like [`Profile::free_during`], as if `extra` (shares running jobs hold now) were free
    /// too; claims still come out of them.
    pub(crate) fn free_during_with(
        &self,
        start: u64,
        end: Option<u64>,
        extra: &[Share],
    ) -> Vec<Free> {
        self.free_during_for(start, end, extra, None)
    }

    /// What a member of `reservation` may use throughout `[start, end)`: as
    /// [`Profile::free_during_with`], but that reservation's own hold does not count.
    pub(crate) fn free_during_for(
        &self,
        start: u64,
        end: Option<u64>,
        extra: &[Share],
        reservation: Option<&str>,
    ) -> Vec<Free> {
        let mut free = self.now.clone();
        let released = self.releases.iter().take_while(|(at, _)| *at <= start);
        for (_, share) in released {
            free[share.node].give(&share.res, &share.gpus);
        }
        for share in extra {
            free[share.node].give(&share.res, &share.gpus);
        }
        for claim in &self.claims {
            let own = reservation.is_some() && claim.reservation.as_deref() == reservation;
            if !own && overlaps(claim.start, claim.end, start, end) {
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

    /// The first moment after now, among those at which more may be free, for which
    /// `try_at(start, free throughout [start, end(start)))` succeeds, for a job of
    /// `num_nodes` × `gpus_per_node`. Walks the moments in order, adding releases as it goes
    /// instead of rebuilding from scratch, and skips without a look at the nodes every moment
    /// at which fewer than `num_nodes` nodes have `gpus_per_node` GPUs free.
    pub(crate) fn first_later<T>(
        &self,
        num_nodes: u32,
        gpus_per_node: u32,
        end: impl Fn(u64) -> Option<u64>,
        mut try_at: impl FnMut(u64, &[Free]) -> Option<T>,
    ) -> Option<(u64, T)> {
        // Free at the moment looked at, GPU lists kept sorted; claims are taken out for the
        // look and put back after it, so nothing is copied per moment.
        let mut base = self.now.clone();
        let mut by_free = FreeCounts::default();
        for node in &mut base {
            node.gpus.sort_unstable();
            by_free.add(node.gpus.len());
        }
        let mut released = self.releases.iter().peekable();
        for start in self.later_moments() {
            while let Some((_, share)) = released.next_if(|(at, _)| *at <= start) {
                let node = &mut base[share.node];
                by_free.remove(node.gpus.len());
                node.res = node.res.saturating_add(&share.res);
                for g in &share.gpus {
                    insert_sorted(&mut node.gpus, *g);
                }
                node.count_gpus();
                by_free.add(node.gpus.len());
            }
            let until = end(start);
            let overlapping: Vec<&Claim> = self
                .claims
                .iter()
                .filter(|c| overlaps(c.start, c.end, start, until))
                .collect();
            let mut undo: Vec<(usize, Resources, Vec<u32>)> = Vec::new();
            for share in overlapping.iter().flat_map(|c| c.shares.iter()) {
                let node = &mut base[share.node];
                by_free.remove(node.gpus.len());
                let before = node.res;
                let mut removed = Vec::new();
                node.gpus.retain(|g| {
                    let claimed = share.gpus.contains(g);
                    if claimed {
                        removed.push(*g);
                    }
                    !claimed
                });
                node.res = node.res.saturating_sub(&share.res);
                node.count_gpus();
                by_free.add(node.gpus.len());
                undo.push((share.node, before, removed));
            }
            let found = if by_free.at_least(gpus_per_node) >= u64::from(num_nodes) {
                try_at(start, &base)
            } else {
                None
            };
            for (index, before, removed) in undo.into_iter().rev() {
                let node = &mut base[index];
                by_free.remove(node.gpus.len());
                node.res = before;
                for g in removed {
                    insert_sorted(&mut node.gpus, g);
                }
                by_free.add(node.gpus.len());
            }
            if let Some(found) = found {
                return Some((start, found));
            }
        }
        None
    }

    /// The moments after now at which more may be free: ends of running jobs and of claims.
    fn later_moments(&self) -> Vec<u64> {
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
        self.claims.push(Claim {
            start,
            end,
            shares,
            reservation: None,
        });
    }
}
