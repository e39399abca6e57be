//! Guarantees: an account may always reach its guaranteed GPUs. While it does not use them
//! others may borrow them; when one of its jobs waits and the account holds less than its
//! guarantee, the pass takes GPUs back from borrowers — the youngest jobs first, so the least
//! work is lost — and emits them as preemptions (the scheduler requeues them).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use gantry_model::{JobId, Shape};

use crate::accounts::Tree;
use crate::fragmentation::Demand;
use crate::placement::{Pick, Picks, place, total_gpus};
use crate::profile::{Profile, Share};
use crate::view::{ClusterView, RunningJob};

/// At most this many jobs are preempted for one waiting job in one pass.
const MAX_VICTIMS: usize = 64;

/// GPUs held per account, its sub-accounts' included.
#[derive(Clone, Default)]
struct Held(BTreeMap<String, u64>);

impl Held {
    fn add(&mut self, tree: &Tree, account: &str, gpus: u64) {
        for a in tree.path(account) {
            *self.0.entry(a.to_string()).or_default() += gpus;
        }
    }

    fn remove(&mut self, tree: &Tree, account: &str, gpus: u64) {
        for a in tree.path(account) {
            if let Some(held) = self.0.get_mut(a) {
                *held = held.saturating_sub(gpus);
            }
        }
    }

    fn of(&self, account: &str) -> u64 {
        self.0.get(account).copied().unwrap_or(0)
    }
}

fn running_gpus(job: &RunningJob) -> u64 {
    job.parts.iter().map(|p| u64::from(p.res.gpus)).sum()
}

/// GPUs held by running jobs that are not being stopped, per account subtree.
fn held_now(view: &ClusterView, tree: &Tree) -> Held {
    let mut held = Held::default();
    if !tree.has_guarantees() {
        // Only guarantees read it.
        return held;
    }
    for job in view.running.iter().filter(|j| !j.stopping) {
        held.add(tree, &job.account, running_gpus(job));
    }
    held
}

/// Whether a job of `account` needing `shape` is within a guarantee on its path: some
/// account above it (or itself) would hold no more than its guarantee with the job.
pub(crate) fn within_guarantee(view: &ClusterView, tree: &Tree) -> impl Fn(&str, &Shape) -> bool {
    let held = held_now(view, tree);
    let accounts: BTreeSet<&str> = view.pending.iter().map(|j| j.account.as_str()).collect();
    let tree_guarantees: BTreeMap<String, Vec<(String, u32)>> = accounts
        .into_iter()
        .map(|account| {
            let g = tree
                .guarantees(account)
                .into_iter()
                .map(|(a, g)| (a.to_string(), g))
                .collect();
            (account.to_string(), g)
        })
        .filter(|(_, g): &(String, Vec<_>)| !g.is_empty())
        .collect();
    move |account: &str, shape: &Shape| {
        tree_guarantees.get(account).is_some_and(|gs| {
            gs.iter()
                .any(|(a, g)| held.of(a) + total_gpus(shape) <= u64::from(*g))
        })
    }
}

/// The accounts through which `borrower` borrows from `owed`: the borrower's own and those
/// above it, up to the child of their common ancestor. `None` when the borrower is `owed`,
/// inside it (its jobs use the guarantee, they do not borrow from it) or above it.
fn lenders<'a>(tree: &'a Tree, owed: &str, borrower: &'a str) -> Option<Vec<&'a str>> {
    let above: BTreeSet<&str> = tree.path(owed).into_iter().collect();
    let path = tree.path(borrower);
    if path.contains(&owed) {
        return None;
    }
    let meet = path.iter().position(|a| above.contains(a))?;
    (meet > 0).then(|| path[..meet].to_vec())
}

/// What a waiting job gets from a reclaim: the GPUs it will take, and the borrowers to stop
/// for them (none when jobs being stopped already free enough).
pub(crate) struct Reclaimed {
    /// The account whose guarantee it is.
    pub(crate) owed: String,
    pub(crate) picks: Picks,
    pub(crate) victims: Vec<JobId>,
    /// What accounts hold once the victims are gone and the job runs.
    held: Held,
}

/// Reclaims within one pass, in rank order: remembers what it took and who holds what.
pub(crate) struct Reclaimer<'v> {
    view: &'v ClusterView,
    index: BTreeMap<&'v str, usize>,
    held: Held,
    taken: BTreeSet<JobId>,
}

impl<'v> Reclaimer<'v> {
    pub(crate) fn new(view: &'v ClusterView, tree: &Tree) -> Reclaimer<'v> {
        Reclaimer {
            view,
            index: view
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.name.as_str(), i))
                .collect(),
            held: held_now(view, tree),
            taken: BTreeSet::new(),
        }
    }

    fn shares(&self, job: &RunningJob) -> Vec<Share> {
        job.parts
            .iter()
            .filter_map(|p| {
                Some(Share {
                    node: *self.index.get(p.node.as_str())?,
                    res: p.res,
                    gpus: p.gpus.clone(),
                })
            })
            .collect()
    }

    /// A job of `account` that pass started (its GPUs count for its account).
    pub(crate) fn started(&mut self, tree: &Tree, account: &str, shape: &Shape) {
        if tree.has_guarantees() {
            self.held.add(tree, account, total_gpus(shape));
        }
    }

    /// For a job of `account` that cannot start now in `shape`: when an account on its path
    /// holds less than its guarantee even with the job, the GPUs it can have now from jobs
    /// being stopped and, if those are not enough, from borrowers, youngest first. Changes
    /// nothing until [`Reclaimer::commit`].
    pub(crate) fn plan(
        &self,
        tree: &Tree,
        profile: &Profile,
        account: &str,
        shape: &Shape,
    ) -> Option<Reclaimed> {
        let view = self.view;
        let need = total_gpus(shape);
        let (owed, _) = tree
            .guarantees(account)
            .into_iter()
            .find(|(a, g)| self.held.of(a) + need <= u64::from(*g))?;
        let end = shape.end_if_started(view.now_ms);
        let mut extra: Vec<Share> = view
            .running
            .iter()
            .filter(|j| j.stopping)
            .flat_map(|j| self.shares(j))
            .collect();
        let try_place = |extra: &[Share]| {
            let free = profile.free_during_with(view.now_ms, end, extra);
            place(
                shape,
                &view.nodes,
                &free,
                Pick::Start(&Demand::default()),
                &view.topology,
            )
        };
        // Borrowers on nodes the job may not use free nothing for it.
        let usable: BTreeSet<&str> = view
            .nodes
            .iter()
            .filter(|n| shape.admits(&n.pool, &n.labels))
            .map(|n| n.name.as_str())
            .collect();
        let mut victims: Vec<&RunningJob> = view
            .running
            .iter()
            .filter(|r| !r.stopping && !self.taken.contains(&r.id))
            .filter(|r| r.parts.iter().any(|p| usable.contains(p.node.as_str())))
            .filter(|r| lenders(tree, owed, &r.account).is_some())
            .collect();
        victims.sort_by_key(|r| (Reverse(r.start_ms), Reverse(r.id)));
        let mut held = self.held.clone();
        let mut chosen = Vec::new();
        let mut picks = try_place(&extra);
        for victim in victims {
            if picks.is_some() || chosen.len() >= MAX_VICTIMS {
                break;
            }
            let Some(lenders) = lenders(tree, owed, &victim.account) else {
                continue;
            };
            // Only from lenders above their own guarantees, at every level: never take a
            // guarantee to pay one.
            let gpus = running_gpus(victim);
            if lenders
                .iter()
                .any(|a| held.of(a) < u64::from(tree.guarantee(a)) + gpus)
            {
                continue;
            }
            extra.extend(self.shares(victim));
            held.remove(tree, &victim.account, gpus);
            chosen.push(victim.id);
            picks = try_place(&extra);
        }
        let picks = picks?;
        held.add(tree, account, need);
        Some(Reclaimed {
            owed: owed.to_string(),
            picks,
            victims: chosen,
            held,
        })
    }

    /// The pass goes ahead with `plan`.
    pub(crate) fn commit(&mut self, plan: &Reclaimed) {
        self.taken.extend(plan.victims.iter().copied());
        self.held = plan.held.clone();
    }
}

#[cfg(test)]
mod tests {
    use gantry_model::{Gpu, Resources};

    use crate::view::{AccountView, Held as HeldPart, NodeView, PendingJob};
    use crate::{ClusterView, schedule};

    use super::*;

    fn account(name: &str, guarantee: Option<u32>) -> AccountView {
        AccountView {
            name: name.into(),
            parent: (name != "root").then(|| "root".into()),
            share: 1,
            guarantee_gpus: guarantee,
            max_gpus: None,
        }
    }

    fn res(gpus: u32) -> Resources {
        Resources {
            gpus,
            cpus: 1,
            mem_mib: 1,
        }
    }

    fn running(id: u64, account: &str, start_ms: u64, gpus: &[u32]) -> RunningJob {
        RunningJob {
            id,
            account: account.into(),
            start_ms,
            stopping: false,
            ends_at_ms: None,
            parts: vec![HeldPart {
                node: "a".into(),
                res: res(gpus.len() as u32),
                gpus: gpus.to_vec(),
            }],
        }
    }

    /// Node a, 4 GPUs, all held by nlp's jobs 10 (older) and 11; vision waits for `gpus`.
    fn view(vision: Option<u32>, nlp: Option<u32>, gpus: u32) -> ClusterView {
        let capacity = Resources {
            gpus: 4,
            cpus: 8,
            mem_mib: 64,
        };
        let mut job = PendingJob::single(
            1,
            Shape {
                num_nodes: 1,
                per_node: res(gpus),
                gpu_model: None,
                time_limit_ms: None,
                pool: None,
                labels: vec![],
            },
        );
        job.account = "vision".into();
        ClusterView {
            now_ms: 1_000,
            nodes: vec![NodeView {
                name: "a".into(),
                schedulable: true,
                unavailable_reason: None,
                gpus: (0..4)
                    .map(|index| Gpu {
                        index,
                        model: "H100".into(),
                        memory_mib: 1,
                        nvlink_group: 0,
                        numa_node: None,
                        uuid: String::new(),
                    })
                    .collect(),
                capacity,
                free: capacity.saturating_sub(&res(4)),
                free_gpus: vec![],
                pool: "default".into(),
                labels: vec![],
            }],
            pending: vec![job],
            running: vec![
                running(10, "nlp", 100, &[0, 1]),
                running(11, "nlp", 200, &[2, 3]),
            ],
            accounts: vec![
                account("root", None),
                account("vision", vision),
                account("nlp", nlp),
            ],
            ..Default::default()
        }
    }

    fn preempted(view: &ClusterView) -> Vec<JobId> {
        schedule(view).preempt.into_iter().map(|(j, _)| j).collect()
    }

    #[test]
    fn a_guarantee_takes_back_from_the_youngest_borrowers_only_what_it_needs() {
        let d = schedule(&view(Some(4), None, 2));
        assert!(d.starts.is_empty());
        assert_eq!(
            d.preempt,
            [(
                11,
                "account vision reclaims its guaranteed GPUs for job 1".to_string()
            )]
        );
        assert_eq!(preempted(&view(Some(4), None, 4)), [11, 10]);
    }

    #[test]
    fn nothing_is_taken_beyond_a_guarantee_or_from_a_lender_within_its_own() {
        // Beyond vision's guarantee of 2: it waits like anyone else.
        assert!(preempted(&view(Some(2), None, 4)).is_empty());
        // No guarantee, nothing owed.
        assert!(preempted(&view(None, None, 2)).is_empty());
        // nlp holds exactly its own guarantee of 4: it lends nothing.
        assert!(preempted(&view(Some(4), Some(4), 2)).is_empty());
        // nlp's guarantee is 2: it gives back the 2 above it, no more.
        assert_eq!(preempted(&view(Some(4), Some(2), 2)), [11]);
        assert!(preempted(&view(Some(4), Some(2), 4)).is_empty());
    }

    #[test]
    fn jobs_inside_the_owed_account_and_lenders_at_their_guarantee_are_never_taken() {
        // research (guarantee 4) holds 2 through vision; nlp, also under research, waits.
        // Vision's job uses research's guarantee rather than borrowing from it; team's job is
        // within team's and ops' own guarantees.
        let mut v = view(None, None, 2);
        v.accounts = vec![
            account("root", None),
            AccountView {
                guarantee_gpus: Some(4),
                ..account("research", None)
            },
            AccountView {
                parent: Some("research".into()),
                ..account("vision", None)
            },
            AccountView {
                parent: Some("research".into()),
                ..account("nlp", None)
            },
            AccountView {
                guarantee_gpus: Some(2),
                ..account("ops", None)
            },
            AccountView {
                parent: Some("ops".into()),
                guarantee_gpus: Some(2),
                ..account("team", None)
            },
        ];
        v.pending[0].account = "nlp".into();
        // Job 11 (youngest) is vision's, inside research; job 10 is team's, at team's own
        // guarantee of 2 although ops holds 2, at its own 2: nothing may be taken.
        v.running[1].account = "vision".into();
        v.running[0].account = "team".into();
        assert!(preempted(&v).is_empty(), "{:?}", schedule(&v));
        // Without team's guarantee, ops (guarantee 2, holds 2) still lends nothing.
        v.accounts[5].guarantee_gpus = None;
        assert!(preempted(&v).is_empty());
        // Without ops' guarantee either, team's job is the borrower to take.
        v.accounts[4].guarantee_gpus = None;
        assert_eq!(preempted(&v), [10]);
    }

    #[test]
    fn jobs_already_stopping_are_counted_before_anyone_else_is_preempted() {
        let mut v = view(Some(4), None, 2);
        v.running[1].stopping = true;
        assert!(preempted(&v).is_empty());
    }
}
