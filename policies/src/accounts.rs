//! The account tree as the policies use it: normalized shares for fair share, and GPU limits
//! checked up the tree.

use std::collections::BTreeMap;

use crate::view::ClusterView;

const ROOT: &str = "root";

#[derive(Clone)]
pub(crate) struct Tree {
    parent: BTreeMap<String, Option<String>>,
    share: BTreeMap<String, u32>,
    max_gpus: BTreeMap<String, u32>,
    guarantee: BTreeMap<String, u32>,
}

impl Tree {
    /// The view's tree, with every account a job names but the tree lacks hung under `root`
    /// with a share of 1.
    pub(crate) fn new(view: &ClusterView) -> Tree {
        let mut tree = Tree {
            parent: BTreeMap::new(),
            share: BTreeMap::new(),
            max_gpus: BTreeMap::new(),
            guarantee: BTreeMap::new(),
        };
        for a in &view.accounts {
            tree.parent.insert(a.name.clone(), a.parent.clone());
            tree.share.insert(a.name.clone(), a.share.max(1));
            if let Some(max) = a.max_gpus {
                tree.max_gpus.insert(a.name.clone(), max);
            }
            if let Some(guarantee) = a.guarantee_gpus {
                tree.guarantee.insert(a.name.clone(), guarantee);
            }
        }
        let named = view
            .pending
            .iter()
            .map(|j| &j.account)
            .chain(view.running.iter().map(|j| &j.account))
            .chain(view.usage.keys());
        let mut last: Option<&String> = None;
        for account in named {
            // Queues come in runs of one account: skip the lookups for a repeat.
            if last != Some(account) {
                tree.adopt(account);
                last = Some(account);
            }
        }
        tree
    }

    /// Whether `account` is in the tree (a view's job or usage names it, or the view's tree).
    pub(crate) fn knows(&self, account: &str) -> bool {
        self.parent.contains_key(account)
    }

    fn adopt(&mut self, account: &str) {
        if !self.parent.contains_key(ROOT) {
            self.parent.insert(ROOT.to_string(), None);
            self.share.insert(ROOT.to_string(), 1);
        }
        if !self.parent.contains_key(account) {
            self.parent
                .insert(account.to_string(), Some(ROOT.to_string()));
            self.share.insert(account.to_string(), 1);
        }
    }

    /// `account` and every account above it, nearest first. Bounded by the tree's size, so a
    /// malformed tree (a cycle) cannot loop.
    pub(crate) fn path<'a>(&'a self, account: &'a str) -> Vec<&'a str> {
        let mut path = vec![account];
        let mut at = account;
        while let Some(Some(parent)) = self.parent.get(at) {
            if path.len() > self.parent.len() {
                break;
            }
            path.push(parent);
            at = parent;
        }
        path
    }

    /// The account's share of the whole cluster: at each level, its share over the sum of its
    /// siblings' shares, multiplied down from the top.
    pub(crate) fn normalized_share(&self, account: &str) -> f64 {
        self.path(account)
            .into_iter()
            .filter_map(|a| {
                let parent = self.parent.get(a)?.as_deref()?;
                let siblings: u32 = self
                    .parent
                    .iter()
                    .filter(|(_, p)| p.as_deref() == Some(parent))
                    .map(|(name, _)| self.share.get(name).copied().unwrap_or(1))
                    .sum();
                let own = self.share.get(a).copied().unwrap_or(1);
                Some(f64::from(own) / f64::from(siblings.max(1)))
            })
            .product()
    }

    pub(crate) fn has_guarantees(&self) -> bool {
        !self.guarantee.is_empty()
    }

    pub(crate) fn guarantee(&self, account: &str) -> u32 {
        self.guarantee.get(account).copied().unwrap_or(0)
    }

    /// The accounts on `account`'s path with a guarantee: `(account, guarantee)`, nearest
    /// first.
    pub(crate) fn guarantees<'a>(&'a self, account: &'a str) -> Vec<(&'a str, u32)> {
        if self.guarantee.is_empty() {
            return Vec::new();
        }
        self.path(account)
            .into_iter()
            .filter_map(|a| self.guarantee.get(a).map(|g| (a, *g)))
            .collect()
    }

    /// The GPU limits on `account` and above it: `(account, limit)`, nearest first.
    pub(crate) fn limits<'a>(&'a self, account: &'a str) -> Vec<(&'a str, u32)> {
        if self.max_gpus.is_empty() {
            // The common case, and no walk up the tree for every job.
            return Vec::new();
        }
        self.path(account)
            .into_iter()
            .filter_map(|a| self.max_gpus.get(a).map(|max| (a, *max)))
            .collect()
    }
}

/// GPUs held or promised per account, its sub-accounts' included, over time: what running
/// jobs hold until their limits, what the pass starts, and what its reservations will take.
#[derive(Clone)]
pub(crate) struct GpuLedger {
    claims: BTreeMap<String, Vec<Claim>>,
}

#[derive(Clone, Copy)]
struct Claim {
    start: u64,
    /// `None`: for ever.
    end: Option<u64>,
    gpus: u64,
}

impl GpuLedger {
    pub(crate) fn new(view: &ClusterView, tree: &Tree) -> GpuLedger {
        let mut ledger = GpuLedger {
            claims: BTreeMap::new(),
        };
        for job in &view.running {
            let gpus: u64 = job.parts.iter().map(|p| u64::from(p.res.gpus)).sum();
            // A job past its limit is being stopped: it holds its GPUs a little longer.
            let end = job.ends_at_ms.map(|end| end.max(view.now_ms + 1));
            ledger.claim(tree, &job.account, view.now_ms, end, gpus);
        }
        ledger
    }

    /// `gpus` held by a job of `account` over `[start, end)`.
    pub(crate) fn claim(
        &mut self,
        tree: &Tree,
        account: &str,
        start: u64,
        end: Option<u64>,
        gpus: u64,
    ) {
        // Only caps read the ledger.
        if gpus == 0 || tree.max_gpus.is_empty() {
            return;
        }
        for a in tree.path(account) {
            self.claims
                .entry(a.to_string())
                .or_default()
                .push(Claim { start, end, gpus });
        }
    }

    /// Why `gpus` more for `account` over `[start, end)` would break a cap, if they would:
    /// judged at the busiest moment of the interval (claims that never overlap each other
    /// never add up).
    pub(crate) fn over_limit(
        &self,
        tree: &Tree,
        account: &str,
        start: u64,
        end: Option<u64>,
        gpus: u64,
    ) -> Option<String> {
        tree.limits(account).into_iter().find_map(|(a, max)| {
            let claims = self.claims.get(a).map_or(&[][..], Vec::as_slice);
            let active_at = |t: u64| -> u64 {
                claims
                    .iter()
                    .filter(|c| c.start <= t && c.end.is_none_or(|e| t < e))
                    .map(|c| c.gpus)
                    .sum()
            };
            // The load only rises where a claim starts.
            let held = claims
                .iter()
                .map(|c| c.start)
                .filter(|t| *t > start && end.is_none_or(|e| *t < e))
                .map(active_at)
                .fold(active_at(start), u64::max);
            (held + gpus > u64::from(max)).then(|| {
                format!(
                    "account {a} may hold {}; it holds {held} and this job needs {gpus}",
                    gantry_model::units::gpus(max)
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::AccountView;

    fn account(name: &str, parent: &str, share: u32, max: Option<u32>) -> AccountView {
        AccountView {
            name: name.into(),
            parent: Some(parent.into()),
            share,
            guarantee_gpus: None,
            max_gpus: max,
        }
    }

    fn view(accounts: Vec<AccountView>) -> ClusterView {
        let mut all = vec![AccountView {
            name: ROOT.into(),
            parent: None,
            share: 1,
            guarantee_gpus: None,
            max_gpus: None,
        }];
        all.extend(accounts);
        ClusterView {
            accounts: all,
            ..Default::default()
        }
    }

    #[test]
    fn shares_multiply_down_the_tree() {
        let tree = Tree::new(&view(vec![
            account("research", ROOT, 3, None),
            account("ops", ROOT, 1, None),
            account("vision", "research", 1, None),
            account("nlp", "research", 2, None),
        ]));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(tree.normalized_share("research"), 0.75));
        assert!(close(tree.normalized_share("ops"), 0.25));
        assert!(close(tree.normalized_share("nlp"), 0.5));
        assert!(close(tree.normalized_share("vision"), 0.25));
        assert_eq!(tree.path("nlp"), ["nlp", "research", ROOT]);
    }

    #[test]
    fn limits_are_checked_up_the_tree() {
        let v = view(vec![
            account("research", ROOT, 1, Some(8)),
            account("vision", "research", 1, Some(6)),
            account("nlp", "research", 1, None),
        ]);
        let tree = Tree::new(&v);
        let mut ledger = GpuLedger::new(&v, &tree);
        assert_eq!(ledger.over_limit(&tree, "vision", 0, None, 6), None);
        assert_eq!(
            ledger.over_limit(&tree, "vision", 0, None, 7).as_deref(),
            Some("account vision may hold 6 GPUs; it holds 0 and this job needs 7")
        );
        // nlp holds 4 from 100 until 200.
        ledger.claim(&tree, "nlp", 100, Some(200), 4);
        assert_eq!(
            ledger.over_limit(&tree, "vision", 0, None, 5).as_deref(),
            Some("account research may hold 8 GPUs; it holds 4 and this job needs 5")
        );
        // Before nlp's claim starts, or from when it ends, vision may have 5.
        assert_eq!(ledger.over_limit(&tree, "vision", 0, Some(100), 5), None);
        assert_eq!(ledger.over_limit(&tree, "vision", 200, None, 5), None);
        // An account outside the tree has no limit.
        assert_eq!(ledger.over_limit(&tree, "stray", 0, None, 1000), None);
    }
}
