//! `gantry admin ...`: the scheduler's own machinery.

use gantry_proto as pb;
use serde::Serialize;

use crate::client::Scheduler;
use crate::output::{Format, emit, emit_json, render_table};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// List the scheduler replicas: role, term, applied index and lag behind the leader
    Replicas(ReplicasArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReplicasArgs {
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// One replica in `gantry admin replicas -o json`; the field names are stable.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReplicaRow {
    pub id: u64,
    pub address: String,
    pub role: String,
    pub term: u64,
    pub applied_index: u64,
    pub lag: u64,
}

impl From<&pb::Replica> for ReplicaRow {
    fn from(r: &pb::Replica) -> Self {
        ReplicaRow {
            id: r.id,
            address: r.address.clone(),
            role: r.role.clone(),
            term: r.term,
            applied_index: r.applied_index,
            lag: r.lag,
        }
    }
}

pub async fn run(command: AdminCommand, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    match command {
        AdminCommand::Replicas(args) => replicas(args, scheduler).await,
    }
}

async fn replicas(args: ReplicasArgs, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let response = scheduler
        .call(|mut client| async move { client.replicas(pb::ReplicasRequest {}).await })
        .await?;
    let rows: Vec<ReplicaRow> = response.replicas.iter().map(ReplicaRow::from).collect();
    match args.format {
        Format::Json => emit_json(&rows)?,
        Format::Table => emit(&replicas_table(&rows))?,
    }
    Ok(())
}

fn replicas_table(rows: &[ReplicaRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.address.clone(),
                r.role.clone(),
                r.term.to_string(),
                r.applied_index.to_string(),
                r.lag.to_string(),
            ]
        })
        .collect();
    render_table(&["ID", "ADDRESS", "ROLE", "TERM", "APPLIED", "LAG"], &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_have_the_documented_fields() {
        let row = ReplicaRow::from(&pb::Replica {
            id: 2,
            address: "http://b:7420".into(),
            role: "follower".into(),
            term: 3,
            applied_index: 40,
            lag: 1,
        });
        let value = serde_json::to_value(&row).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["address", "applied_index", "id", "lag", "role", "term"]
        );
        let table = replicas_table(&[row]);
        assert!(table.starts_with("ID  ADDRESS"), "{table}");
        assert!(table.contains("follower"), "{table}");
    }
}
