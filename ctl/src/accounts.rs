//! `gantry account ...`: the account tree, its shares, guarantees, limits and users.

use gantry_proto as pb;
use serde::Serialize;

use crate::client::{Scheduler, caller};
use crate::output::{Format, emit, emit_json, render_table};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AccountCommand {
    /// Add an account under PARENT (admins only)
    Add {
        /// The account's name: letters, digits, '-', '_', '.'
        name: String,
        /// The account above it
        #[arg(long, default_value = "root")]
        parent: String,
        /// Its fair share relative to its siblings
        #[arg(long, default_value_t = 1)]
        share: u32,
        /// GPUs it may always reach: lent to others while idle, reclaimed when it wants them
        #[arg(long = "guarantee-gpus", value_name = "G")]
        guarantee_gpus: Option<u32>,
        /// The most GPUs its jobs (its sub-accounts' included) may hold at once
        #[arg(long = "max-gpus", value_name = "M")]
        max_gpus: Option<u32>,
    },
    /// List the account tree, with users and GPUs in use
    List {
        /// Output format
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Ask the first replica that answers, even a follower
        #[arg(long)]
        stale: bool,
    },
    /// Let USERS charge jobs to ACCOUNT (admins only)
    AddUser {
        account: String,
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
    },
}

/// One account in `gantry account list -o json`; the field names are stable.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AccountRow {
    pub name: String,
    pub parent: Option<String>,
    pub share: u32,
    pub guarantee_gpus: Option<u32>,
    pub max_gpus: Option<u32>,
    pub users: Vec<String>,
    pub gpus_in_use: u64,
}

impl From<&pb::Account> for AccountRow {
    fn from(a: &pb::Account) -> Self {
        AccountRow {
            name: a.name.clone(),
            parent: (!a.parent.is_empty()).then(|| a.parent.clone()),
            share: a.share,
            guarantee_gpus: a.guarantee_gpus,
            max_gpus: a.max_gpus,
            users: a.users.clone(),
            gpus_in_use: a.gpus_in_use,
        }
    }
}

pub async fn run(command: AccountCommand, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let response = match command {
        AccountCommand::Add {
            name,
            parent,
            share,
            guarantee_gpus,
            max_gpus,
        } => {
            let request = pb::AddAccountRequest {
                caller: Some(caller()),
                name,
                parent,
                share,
                guarantee_gpus,
                max_gpus,
            };
            scheduler
                .call(|mut client| {
                    let request = request.clone();
                    async move { client.add_account(request).await }
                })
                .await?
        }
        AccountCommand::AddUser { account, users } => {
            let request = pb::AddAccountUsersRequest {
                caller: Some(caller()),
                account,
                users,
            };
            // Adding a user twice is harmless: retried across a failover.
            scheduler
                .call_retrying(|mut client| {
                    let request = request.clone();
                    async move { client.add_account_users(request).await }
                })
                .await?
        }
        AccountCommand::List { format, stale } => {
            let request = pb::ListAccountsRequest { stale };
            let response = scheduler
                .call(|mut client| async move { client.list_accounts(request).await })
                .await?;
            return print(&response, format);
        }
    };
    print(&response, Format::Table)
}

fn print(response: &pb::AccountsResponse, format: Format) -> anyhow::Result<()> {
    let rows: Vec<AccountRow> = response.accounts.iter().map(AccountRow::from).collect();
    match format {
        Format::Json => emit_json(&rows)?,
        Format::Table => emit(&table(&rows))?,
    }
    Ok(())
}

/// Indented by depth, so the tree reads from the names.
fn table(rows: &[AccountRow]) -> String {
    let depth = |row: &AccountRow| {
        let mut depth = 0;
        let mut parent = row.parent.as_deref();
        while let Some(p) = parent {
            depth += 1;
            if depth > rows.len() {
                break;
            }
            parent = rows
                .iter()
                .find(|r| r.name == p)
                .and_then(|r| r.parent.as_deref());
        }
        depth
    };
    let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{}{}", "  ".repeat(depth(r)), r.name),
                r.share.to_string(),
                opt(r.guarantee_gpus),
                opt(r.max_gpus),
                r.gpus_in_use.to_string(),
                if r.users.is_empty() {
                    "-".to_string()
                } else {
                    r.users.join(",")
                },
            ]
        })
        .collect();
    render_table(
        &[
            "ACCOUNT",
            "SHARE",
            "GUARANTEE",
            "MAX_GPUS",
            "GPUS_IN_USE",
            "USERS",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_indented_and_json_has_the_documented_fields() {
        let account = |name: &str, parent: &str, max: Option<u32>| pb::Account {
            name: name.into(),
            parent: parent.into(),
            share: 1,
            guarantee_gpus: None,
            max_gpus: max,
            users: vec![],
            gpus_in_use: 0,
        };
        let rows: Vec<AccountRow> = [
            account("root", "", None),
            account("research", "root", Some(16)),
            account("vision", "research", None),
        ]
        .iter()
        .map(AccountRow::from)
        .collect();
        assert_eq!(
            table(&rows),
            "ACCOUNT     SHARE  GUARANTEE  MAX_GPUS  GPUS_IN_USE  USERS\n\
             root        1      -          -         0            -\n  \
             research  1      -          16        0            -\n    \
             vision  1      -          -         0            -\n"
        );
        let value = serde_json::to_value(&rows[0]).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "gpus_in_use",
                "guarantee_gpus",
                "max_gpus",
                "name",
                "parent",
                "share",
                "users"
            ]
        );
    }
}
