//! The account tree: who may charge work to which account, each account's share of its
//! parent, its guaranteed GPUs and its GPU limit. `root` is the top; `default` exists out of
//! the box and takes jobs from everybody, every other account only from its users.

use std::collections::{BTreeMap, BTreeSet};

use gantry_model::names::is_plain_name;
use gantry_policies::AccountView;
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
}

/// What `gantry account add` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub name: String,
    pub parent: String,
    pub share: u32,
    pub guarantee_gpus: Option<u32>,
    pub max_gpus: Option<u32>,
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
    #[error("the guarantee ({guarantee} GPUs) is above the limit ({max} GPUs)")]
    GuaranteeAboveLimit { guarantee: u32, max: u32 },
    #[error(
        "the guarantees under {parent} would add up to {total} GPUs, more than its own {guarantee}"
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounts {
    by_name: BTreeMap<String, Account>,
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
        };
        Accounts {
            by_name: BTreeMap::from([
                (ROOT.to_string(), account(ROOT, None)),
                (DEFAULT.to_string(), account(DEFAULT, Some(ROOT))),
            ]),
        }
    }
}

fn check_name(name: &str) -> Result<(), AccountError> {
    is_plain_name(name)
        .then_some(())
        .ok_or_else(|| AccountError::BadName(name.to_string()))
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
        let parent = self
            .by_name
            .get(&new.parent)
            .ok_or_else(|| AccountError::Unknown(new.parent.clone()))?;
        if !(1..=MAX_SHARE).contains(&new.share) {
            return Err(AccountError::BadShare(new.share));
        }
        if let (Some(guarantee), Some(max)) = (new.guarantee_gpus, new.max_gpus)
            && guarantee > max
        {
            return Err(AccountError::GuaranteeAboveLimit { guarantee, max });
        }
        if let (Some(own), Some(parent_guarantee)) = (new.guarantee_gpus, parent.guarantee_gpus) {
            let siblings: u64 = self
                .children(&new.parent)
                .filter_map(|a| a.guarantee_gpus)
                .map(u64::from)
                .sum();
            let total = siblings + u64::from(own);
            if total > u64::from(parent_guarantee) {
                return Err(AccountError::GuaranteesAboveParent {
                    parent: new.parent.clone(),
                    total,
                    guarantee: parent_guarantee,
                });
            }
        }
        self.by_name.insert(
            new.name.clone(),
            Account {
                name: new.name.clone(),
                parent: Some(new.parent.clone()),
                share: new.share,
                guarantee_gpus: new.guarantee_gpus,
                max_gpus: new.max_gpus,
                users: BTreeSet::new(),
            },
        );
        Ok(())
    }

    pub fn add_users(&mut self, account: &str, users: &[String]) -> Result<(), AccountError> {
        if let Some(bad) = users.iter().find(|u| {
            u.is_empty()
                || u.len() > 256
                || u.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        }) {
            return Err(AccountError::BadUser(bad.clone()));
        }
        let entry = self
            .by_name
            .get_mut(account)
            .ok_or_else(|| AccountError::Unknown(account.to_string()))?;
        entry.users.extend(users.iter().cloned());
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
        let users: Vec<&str> = entry.users.iter().map(String::as_str).collect();
        Err(AccountError::NotAMember {
            user: user.to_string(),
            account: account.to_string(),
            users: if users.is_empty() {
                "none".to_string()
            } else {
                users.join(", ")
            },
        })
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
}
