//! The account tree: who may charge work to which account, each account's share of its
//! parent, its guaranteed GPUs and its GPU limit. `root` is the top; `default` exists out of
//! the box and takes jobs from everybody, every other account only from its users.

use std::collections::{BTreeMap, BTreeSet};

use gantry_model::names::is_plain_name;
use gantry_model::units::gpus;
use gantry_policies::{AccountView, DEFAULT_QOS, PolicyConfig};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const ROOT: &str = "root";
pub const DEFAULT: &str = "default";
/// Shares are relative weights among siblings; beyond this they are typos.
pub const MAX_SHARE: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    /// `None` only for `root`.
    pub parent: Option<String>,
    pub share: u32,
    /// GPUs the account may always reach, lending them out while it does not use them.
    pub guarantee_gpus: Option<u32>,
    /// GPUs its jobs (its sub-accounts' included) may hold at most.
    pub max_gpus: Option<u32>,
    pub users: BTreeSet<String>,
    /// The QoS levels its jobs may ask for (`--qos`); `None`: its parent's, and at the top
    /// the levels no higher than `normal`.
    pub qos: Option<BTreeSet<String>>,
    /// Whether its jobs may set deadlines (`--deadline`); `None`: as its parent, and at the
    /// top no: a deadline raises a job's priority and lets it preempt.
    pub deadlines: Option<bool>,
}

/// What `gantry account add` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub name: String,
    pub parent: String,
    pub share: u32,
    pub guarantee_gpus: Option<u32>,
    pub max_gpus: Option<u32>,
    pub qos: Option<BTreeSet<String>>,
    pub deadlines: Option<bool>,
}

/// What `gantry account set` changes: each `Some` replaces that field (an inner `None`
/// clears it: no guarantee, no limit, inherit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChange {
    pub share: Option<u32>,
    pub guarantee_gpus: Option<Option<u32>>,
    pub max_gpus: Option<Option<u32>>,
    pub qos: Option<Option<BTreeSet<String>>>,
    pub deadlines: Option<Option<bool>>,
}

impl AccountChange {
    /// From `gantry account set`'s words: `none` clears a guarantee or a limit, `inherit` a
    /// QoS or deadline grant (its parent's then).
    pub fn parse(
        share: Option<u32>,
        guarantee_gpus: Option<&str>,
        max_gpus: Option<&str>,
        qos: Option<&str>,
        deadlines: Option<&str>,
    ) -> Result<AccountChange, String> {
        let gpus_or_none = |what: &str, text: &str| match text.trim() {
            "none" => Ok(None),
            n => n
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("{what} is a number of GPUs or none (got {text:?})")),
        };
        Ok(AccountChange {
            share,
            guarantee_gpus: guarantee_gpus
                .map(|t| gpus_or_none("--guarantee-gpus", t))
                .transpose()?,
            max_gpus: max_gpus
                .map(|t| gpus_or_none("--max-gpus", t))
                .transpose()?,
            qos: qos
                .map(|t| match t.trim() {
                    "inherit" => Ok(None),
                    list => parse_qos_list(list).map(Some),
                })
                .transpose()?,
            deadlines: deadlines
                .map(|t| match t.trim() {
                    "inherit" => Ok(None),
                    yes_no => parse_yes_no(yes_no).map(Some),
                })
                .transpose()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == AccountChange::default()
    }
}

/// `low,normal,high` as a set; an empty list is refused (a grant of nothing is a typo: use
/// a level that preempts nothing).
pub fn parse_qos_list(text: &str) -> Result<BTreeSet<String>, String> {
    let levels: BTreeSet<String> = text
        .split(',')
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_string)
        .collect();
    if levels.is_empty() {
        return Err(format!(
            "--qos names QoS levels, comma-separated (got {text:?})"
        ));
    }
    Ok(levels)
}

/// `yes`/`no` (or `true`/`false`).
pub fn parse_yes_no(text: &str) -> Result<bool, String> {
    match text.trim() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        other => Err(format!("--deadlines is yes or no (got {other:?})")),
    }
}

/// What an account's jobs may ask for, its parents' grants included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub qos: BTreeSet<String>,
    pub deadlines: bool,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("account name {0:?} must be 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("account {0:?} exists already")]
    Exists(String),
    #[error("account {0:?} does not exist")]
    Unknown(String),
    #[error("a share must be from 1 to {MAX_SHARE} (got {0})")]
    BadShare(u32),
    #[error("the guarantee ({}) is above the limit ({})", gpus(*.guarantee), gpus(*.max))]
    GuaranteeAboveLimit { guarantee: u32, max: u32 },
    #[error(
        "the guarantees under {parent} would add up to {}, more than its own {}",
        gpus(*.total),
        gpus(*.guarantee)
    )]
    GuaranteesAboveParent {
        parent: String,
        total: u64,
        guarantee: u32,
    },
    #[error("user name {0:?} is invalid")]
    BadUser(String),
    #[error("{user} may not charge jobs to account {account} (its users: {users})")]
    NotAMember {
        user: String,
        account: String,
        users: String,
    },
    #[error("{user} is not a user of account {account}")]
    NotAUser { user: String, account: String },
    #[error(
        "account {account} may not use QoS {qos} (it may use {granted}); an admin grants it \
         with `gantry account set {account} --qos ...`"
    )]
    QosNotGranted {
        account: String,
        qos: String,
        granted: String,
    },
    #[error(
        "account {0} may not set deadlines; an admin grants it with `gantry account set {0} \
         --deadlines yes`"
    )]
    DeadlinesNotGranted(String),
    #[error("account {0} cannot be removed")]
    Permanent(String),
    #[error("account {account} has sub-accounts ({children}): remove them first")]
    HasChildren { account: String, children: String },
    #[error(
        "account {account} has users ({users}): remove them first (gantry account remove-user)"
    )]
    HasUsers { account: String, users: String },
}

impl Default for Accounts {
    fn default() -> Self {
        let account = |name: &str, parent: Option<&str>| Account {
            name: name.to_string(),
            parent: parent.map(str::to_string),
            share: 1,
            guarantee_gpus: None,
            max_gpus: None,
            users: BTreeSet::new(),
            qos: None,
            deadlines: None,
        };
        Accounts {
            by_name: BTreeMap::from([
                (ROOT.to_string(), account(ROOT, None)),
                (DEFAULT.to_string(), account(DEFAULT, Some(ROOT))),
            ]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounts {
    by_name: BTreeMap<String, Account>,
}

fn check_name(name: &str) -> Result<(), AccountError> {
    is_plain_name(name)
        .then_some(())
        .ok_or_else(|| AccountError::BadName(name.to_string()))
}

fn list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.into_iter().map(String::as_str).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

impl Accounts {
    pub fn get(&self, name: &str) -> Option<&Account> {
        self.by_name.get(name)
    }

    /// Every account, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.by_name.values()
    }

    /// Adds an account; on error nothing changes.
    pub fn add(&mut self, new: &NewAccount) -> Result<(), AccountError> {
        check_name(&new.name)?;
        if self.by_name.contains_key(&new.name) {
            return Err(AccountError::Exists(new.name.clone()));
        }
        if !self.by_name.contains_key(&new.parent) {
            return Err(AccountError::Unknown(new.parent.clone()));
        }
        let account = Account {
            name: new.name.clone(),
            parent: Some(new.parent.clone()),
            share: new.share,
            guarantee_gpus: new.guarantee_gpus,
            max_gpus: new.max_gpus,
            users: BTreeSet::new(),
            qos: new.qos.clone(),
            deadlines: new.deadlines,
        };
        self.check(&account)?;
        self.by_name.insert(new.name.clone(), account);
        Ok(())
    }

    /// Changes what `change` names; checked as an addition is, against its parent and its
    /// own sub-accounts. On error nothing changes.
    pub fn set(&mut self, name: &str, change: &AccountChange) -> Result<(), AccountError> {
        let mut account = self
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| AccountError::Unknown(name.to_string()))?;
        if let Some(share) = change.share {
            account.share = share;
        }
        if let Some(guarantee) = change.guarantee_gpus {
            account.guarantee_gpus = guarantee;
        }
        if let Some(max) = change.max_gpus {
            account.max_gpus = max;
        }
        if let Some(qos) = &change.qos {
            account.qos = qos.clone();
        }
        if let Some(deadlines) = change.deadlines {
            account.deadlines = deadlines;
        }
        self.check(&account)?;
        let children: u64 = self
            .children(name)
            .filter_map(|a| a.guarantee_gpus)
            .map(u64::from)
            .sum();
        if let Some(own) = account.guarantee_gpus
            && children > u64::from(own)
        {
            return Err(AccountError::GuaranteesAboveParent {
                parent: name.to_string(),
                total: children,
                guarantee: own,
            });
        }
        self.by_name.insert(name.to_string(), account);
        Ok(())
    }

    /// Removes an account without sub-accounts or users (the caller checks its jobs).
    pub fn remove(&mut self, name: &str) -> Result<(), AccountError> {
        let account = self
            .by_name
            .get(name)
            .ok_or_else(|| AccountError::Unknown(name.to_string()))?;
        if name == ROOT || name == DEFAULT {
            return Err(AccountError::Permanent(name.to_string()));
        }
        let children: Vec<&String> = self.children(name).map(|a| &a.name).collect();
        if !children.is_empty() {
            return Err(AccountError::HasChildren {
                account: name.to_string(),
                children: list(children),
            });
        }
        if !account.users.is_empty() {
            return Err(AccountError::HasUsers {
                account: name.to_string(),
                users: list(&account.users),
            });
        }
        self.by_name.remove(name);
        Ok(())
    }

    /// An account (new or changed) in its place: its share, its guarantee within its limit,
    /// and its siblings' guarantees with its own within their parent's.
    fn check(&self, account: &Account) -> Result<(), AccountError> {
        if !(1..=MAX_SHARE).contains(&account.share) {
            return Err(AccountError::BadShare(account.share));
        }
        if let (Some(guarantee), Some(max)) = (account.guarantee_gpus, account.max_gpus)
            && guarantee > max
        {
            return Err(AccountError::GuaranteeAboveLimit { guarantee, max });
        }
        let Some(parent) = account.parent.as_deref() else {
            return Ok(());
        };
        let parent_guarantee = self.by_name.get(parent).and_then(|p| p.guarantee_gpus);
        if let (Some(own), Some(parent_guarantee)) = (account.guarantee_gpus, parent_guarantee) {
            let siblings: u64 = self
                .children(parent)
                .filter(|a| a.name != account.name)
                .filter_map(|a| a.guarantee_gpus)
                .map(u64::from)
                .sum();
            let total = siblings + u64::from(own);
            if total > u64::from(parent_guarantee) {
                return Err(AccountError::GuaranteesAboveParent {
                    parent: parent.to_string(),
                    total,
                    guarantee: parent_guarantee,
                });
            }
        }
        Ok(())
    }

    fn check_users(users: &[String]) -> Result<(), AccountError> {
        match users.iter().find(|u| {
            u.is_empty()
                || u.len() > 256
                || u.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        }) {
            Some(bad) => Err(AccountError::BadUser(bad.clone())),
            None => Ok(()),
        }
    }

    pub fn add_users(&mut self, account: &str, users: &[String]) -> Result<(), AccountError> {
        Accounts::check_users(users)?;
        let entry = self
            .by_name
            .get_mut(account)
            .ok_or_else(|| AccountError::Unknown(account.to_string()))?;
        entry.users.extend(users.iter().cloned());
        Ok(())
    }

    /// Takes `users` off `account`; all or nothing: one that is not its user refuses all.
    pub fn remove_users(&mut self, account: &str, users: &[String]) -> Result<(), AccountError> {
        let entry = self
            .by_name
            .get_mut(account)
            .ok_or_else(|| AccountError::Unknown(account.to_string()))?;
        if let Some(stranger) = users.iter().find(|u| !entry.users.contains(*u)) {
            return Err(AccountError::NotAUser {
                user: stranger.clone(),
                account: account.to_string(),
            });
        }
        for user in users {
            entry.users.remove(user);
        }
        Ok(())
    }

    /// Whether `user` may charge a job to `account`.
    pub fn admit(&self, user: &str, account: &str) -> Result<(), AccountError> {
        let entry = self
            .by_name
            .get(account)
            .ok_or_else(|| AccountError::Unknown(account.to_string()))?;
        if account == DEFAULT || entry.users.contains(user) {
            return Ok(());
        }
        Err(AccountError::NotAMember {
            user: user.to_string(),
            account: account.to_string(),
            users: list(&entry.users),
        })
    }

    /// What `account`'s jobs may ask for: the nearest grant on its path, and at the top the
    /// QoS levels no higher than the default one, and no deadlines.
    pub fn grants(&self, account: &str, config: &PolicyConfig) -> Grants {
        let path = self.path(account);
        let on_path = |pick: &dyn Fn(&Account) -> bool| {
            path.iter()
                .filter_map(|a| self.by_name.get(*a))
                .find(|a| pick(a))
        };
        let qos = on_path(&|a| a.qos.is_some())
            .and_then(|a| a.qos.clone())
            .unwrap_or_else(|| {
                // No higher, and preempting no more, than the default level.
                let default = config.qos.get(DEFAULT_QOS);
                let ceiling = default.map_or(0, |d| d.priority);
                let may_preempt = |level: &gantry_policies::QosLevel| {
                    level
                        .preempts
                        .iter()
                        .all(|p| default.is_some_and(|d| d.preempts.contains(p)))
                };
                config
                    .qos
                    .iter()
                    .filter(|(_, level)| level.priority <= ceiling && may_preempt(level))
                    .map(|(name, _)| name.clone())
                    .collect()
            });
        let deadlines = on_path(&|a| a.deadlines.is_some())
            .and_then(|a| a.deadlines)
            .unwrap_or(false);
        Grants { qos, deadlines }
    }

    /// Whether a job of `account` may ask for QoS `qos`, and for a deadline if it has one.
    pub fn admit_asks(
        &self,
        account: &str,
        qos: &str,
        deadline: bool,
        config: &PolicyConfig,
    ) -> Result<(), AccountError> {
        let grants = self.grants(account, config);
        if !grants.qos.contains(qos) {
            return Err(AccountError::QosNotGranted {
                account: account.to_string(),
                qos: qos.to_string(),
                granted: list(&grants.qos),
            });
        }
        if deadline && !grants.deadlines {
            return Err(AccountError::DeadlinesNotGranted(account.to_string()));
        }
        Ok(())
    }

    /// `name` and every account above it, nearest first (bounded, in case of a cycle).
    pub fn path<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        let mut path = vec![name];
        let mut at = name;
        while let Some(parent) = self.by_name.get(at).and_then(|a| a.parent.as_deref()) {
            if path.len() > self.by_name.len() {
                break;
            }
            path.push(parent);
            at = parent;
        }
        path
    }

    fn children<'a>(&'a self, parent: &'a str) -> impl Iterator<Item = &'a Account> + 'a {
        self.by_name
            .values()
            .filter(move |a| a.parent.as_deref() == Some(parent))
    }

    /// The tree as the policies see it.
    pub fn views(&self) -> Vec<AccountView> {
        self.by_name
            .values()
            .map(|a| AccountView {
                name: a.name.clone(),
                parent: a.parent.clone(),
                share: a.share,
                guarantee_gpus: a.guarantee_gpus,
                max_gpus: a.max_gpus,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, parent: &str, guarantee: Option<u32>, max: Option<u32>) -> NewAccount {
        NewAccount {
            name: name.into(),
            parent: parent.into(),
            share: 1,
            guarantee_gpus: guarantee,
            max_gpus: max,
            qos: None,
            deadlines: None,
        }
    }

    #[test]
    fn a_tree_is_built_and_bad_additions_change_nothing() {
        let mut accounts = Accounts::default();
        accounts
            .add(&new("research", ROOT, Some(16), None))
            .unwrap();
        accounts
            .add(&new("vision", "research", Some(8), Some(12)))
            .unwrap();
        let before = accounts.clone();
        let cases = [
            (
                new("vision", ROOT, None, None),
                AccountError::Exists("vision".into()),
            ),
            (
                new("nlp", "nosuch", None, None),
                AccountError::Unknown("nosuch".into()),
            ),
            (
                new("bad name", ROOT, None, None),
                AccountError::BadName("bad name".into()),
            ),
            (
                new("nlp", ROOT, Some(9), Some(8)),
                AccountError::GuaranteeAboveLimit {
                    guarantee: 9,
                    max: 8,
                },
            ),
            (
                new("nlp", "research", Some(9), None),
                AccountError::GuaranteesAboveParent {
                    parent: "research".into(),
                    total: 17,
                    guarantee: 16,
                },
            ),
            (
                NewAccount {
                    share: 0,
                    ..new("nlp", ROOT, None, None)
                },
                AccountError::BadShare(0),
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(accounts.add(&bad), Err(expected));
        }
        assert_eq!(accounts, before);
        assert_eq!(
            accounts.add_users("vision", &["a b".into()]),
            Err(AccountError::BadUser("a b".into()))
        );
        assert_eq!(accounts, before);
    }

    #[test]
    fn default_takes_everybody_and_other_accounts_only_their_users() {
        let mut accounts = Accounts::default();
        accounts.add(&new("vision", ROOT, None, None)).unwrap();
        assert_eq!(accounts.admit("ann", DEFAULT), Ok(()));
        assert_eq!(
            accounts.admit("ann", "vision"),
            Err(AccountError::NotAMember {
                user: "ann".into(),
                account: "vision".into(),
                users: "none".into()
            })
        );
        accounts
            .add_users("vision", &["ann".into(), "bob".into()])
            .unwrap();
        assert_eq!(accounts.admit("ann", "vision"), Ok(()));
        assert!(
            accounts
                .admit("cy", "vision")
                .unwrap_err()
                .to_string()
                .ends_with("(its users: ann, bob)")
        );
        assert_eq!(
            accounts.admit("ann", "nosuch"),
            Err(AccountError::Unknown("nosuch".into()))
        );
    }

    #[test]
    fn accounts_change_as_they_are_checked_and_go_without_orphans() {
        let mut accounts = Accounts::default();
        accounts.add(&new("research", ROOT, Some(8), None)).unwrap();
        accounts
            .add(&new("vision", "research", Some(4), None))
            .unwrap();
        let before = accounts.clone();
        let change = |text: (Option<u32>, Option<&str>, Option<&str>)| {
            AccountChange::parse(text.0, text.1, text.2, None, None).unwrap()
        };
        // A child's guarantee above its parent's, a parent's below its children's, share 0.
        for (name, bad) in [
            ("vision", change((None, Some("9"), None))),
            ("research", change((None, Some("3"), None))),
            ("vision", change((Some(0), None, None))),
            ("vision", change((None, Some("4"), Some("3")))),
        ] {
            assert!(accounts.set(name, &bad).is_err(), "{name}: {bad:?}");
        }
        assert_eq!(accounts, before);
        accounts
            .set("vision", &change((Some(3), Some("none"), Some("6"))))
            .unwrap();
        let vision = accounts.get("vision").unwrap();
        assert_eq!(
            (vision.share, vision.guarantee_gpus, vision.max_gpus),
            (3, None, Some(6))
        );
        assert!(AccountChange::parse(None, Some("lots"), None, None, None).is_err());
        assert_eq!(
            accounts.remove("research"),
            Err(AccountError::HasChildren {
                account: "research".into(),
                children: "vision".into()
            })
        );
        accounts.add_users("vision", &["ann".into()]).unwrap();
        assert!(matches!(
            accounts.remove("vision"),
            Err(AccountError::HasUsers { .. })
        ));
        assert!(matches!(
            accounts.remove_users("vision", &["bob".into()]),
            Err(AccountError::NotAUser { .. })
        ));
        accounts.remove_users("vision", &["ann".into()]).unwrap();
        accounts.remove("vision").unwrap();
        accounts.remove("research").unwrap();
        assert_eq!(
            accounts.remove(DEFAULT),
            Err(AccountError::Permanent(DEFAULT.into()))
        );
    }

    #[test]
    fn grants_are_inherited_and_default_to_levels_no_higher_than_normal() {
        let mut config = PolicyConfig::default();
        config.set("qos.urgent.priority", "900").unwrap();
        config.set("qos.scavenger.priority", "0").unwrap();
        let mut accounts = Accounts::default();
        accounts.add(&new("team", ROOT, None, None)).unwrap();
        accounts.add(&new("sub", "team", None, None)).unwrap();
        let grants = accounts.grants("sub", &config);
        assert_eq!(
            grants.qos,
            ["low", "normal", "scavenger"].map(String::from).into()
        );
        assert!(!grants.deadlines);
        let err = accounts
            .admit_asks("sub", "urgent", false, &config)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "account sub may not use QoS urgent (it may use low, normal, scavenger)"
            ),
            "{err}"
        );
        let grant = AccountChange::parse(None, None, None, Some("normal,urgent"), Some("yes"));
        accounts.set("team", &grant.unwrap()).unwrap();
        assert_eq!(accounts.admit_asks("sub", "urgent", true, &config), Ok(()));
        assert!(accounts.admit_asks("sub", "low", false, &config).is_err());
        assert_eq!(accounts.admit_asks(DEFAULT, "low", false, &config), Ok(()));
        assert_eq!(
            accounts.admit_asks(DEFAULT, "low", true, &config),
            Err(AccountError::DeadlinesNotGranted(DEFAULT.into()))
        );
    }
}
