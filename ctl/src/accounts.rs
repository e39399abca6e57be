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
        /// The QoS levels its jobs may use, e.g. low,normal,high [default: its parent's; at
        /// the top, the levels no higher than normal]
        #[arg(long, value_name = "LEVELS")]
        qos: Option<String>,
        /// Whether its jobs may set deadlines: yes or no [default: as its parent; at the top,
        /// no]
        #[arg(long, value_name = "yes|no")]
        deadlines: Option<String>,
    },
    /// Change an account (admins only): only what is given changes
    Set {
        name: String,
        /// Its fair share relative to its siblings
        #[arg(long)]
        share: Option<u32>,
        /// GPUs it may always reach, or none
        #[arg(long = "guarantee-gpus", value_name = "G|none")]
        guarantee_gpus: Option<String>,
        /// The most GPUs its jobs may hold at once, or none
        #[arg(long = "max-gpus", value_name = "M|none")]
        max_gpus: Option<String>,
        /// The QoS levels its jobs may use (low,normal,high), or inherit (its parent's)
        #[arg(long, value_name = "LEVELS|inherit")]
        qos: Option<String>,
        /// Whether its jobs may set deadlines: yes, no, or inherit
        #[arg(long, value_name = "yes|no|inherit")]
        deadlines: Option<String>,
    },
    /// Remove an account (admins only); refused while it has sub-accounts, users, or jobs
    /// that have not ended
    Remove { name: String },
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
    /// Stop USERS charging jobs to ACCOUNT (admins only); their jobs already queued run
    RemoveUser {
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
    /// The QoS levels its jobs may use, and whether they may set deadlines (its own grants
    /// or inherited).
    pub qos: Vec<String>,
    pub deadlines: bool,
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
            qos: a.qos.clone(),
            deadlines: a.deadlines,
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
            qos,
            deadlines,
        } => {
            let request = pb::AddAccountRequest {
                caller: Some(caller()),
                name,
                parent,
                share: Some(share),
                guarantee_gpus,
                max_gpus,
                qos,
                deadlines,
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
        AccountCommand::Set {
            name,
            share,
            guarantee_gpus,
            max_gpus,
            qos,
            deadlines,
        } => {
            let request = pb::SetAccountRequest {
                caller: Some(caller()),
                name,
                share,
                guarantee_gpus,
                max_gpus,
                qos,
                deadlines,
            };
            // Setting the same values again is harmless: retried across a failover.
            scheduler
                .call_retrying(|mut client| {
                    let request = request.clone();
                    async move { client.set_account(request).await }
                })
                .await?
        }
        AccountCommand::Remove { name } => {
            let request = pb::RemoveAccountRequest {
                caller: Some(caller()),
                name,
            };
            scheduler
                .call(|mut client| {
                    let request = request.clone();
                    async move { client.remove_account(request).await }
                })
                .await?
        }
        AccountCommand::RemoveUser { account, users } => {
            let request = pb::RemoveAccountUsersRequest {
                caller: Some(caller()),
                account,
                users,
            };
            scheduler
                .call(|mut client| {
                    let request = request.clone();
                    async move { client.remove_account_users(request).await }
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
                r.qos.join(","),
                if r.deadlines { "yes" } else { "no" }.to_string(),
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
            "QOS",
            "DEADLINES",
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
            qos: vec!["low".into(), "normal".into()],
            qos_inherited: true,
            deadlines: false,
            deadlines_inherited: true,
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
            "ACCOUNT     SHARE  GUARANTEE  MAX_GPUS  GPUS_IN_USE  QOS         DEADLINES  USERS\n\
             root        1      -          -         0            low,normal  no         -\n  \
             research  1      -          16        0            low,normal  no         -\n    \
             vision  1      -          -         0            low,normal  no         -\n"
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
                "deadlines",
                "gpus_in_use",
                "guarantee_gpus",
                "max_gpus",
                "name",
                "parent",
                "qos",
                "share",
                "users"
            ]
        );
    }
}
