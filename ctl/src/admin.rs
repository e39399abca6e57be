//! `gantry admin ...`: the scheduler's own machinery.

use gantry_proto as pb;
use serde::Serialize;

use crate::client::{Scheduler, caller};
use crate::output::{Format, emit, emit_json, render_table};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// List the scheduler replicas: role, term, applied index and lag behind the leader
    Replicas(ReplicasArgs),
    /// Add or remove a scheduler replica (a Raft membership change; admins only)
    #[command(subcommand)]
    Replica(ReplicaCommand),
    /// Show or change the scheduling policy: priority weights, fair-share half-life,
    /// backfill depth, QoS levels (changes: admins only; replicated like every change)
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ConfigCommand {
    /// Every setting and its value
    Show {
        /// Output format (json: an object of setting → value)
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Ask the first replica that answers, even a follower
        #[arg(long)]
        stale: bool,
    },
    /// Change one setting, e.g. `weight.fair_share 3000`, `fair_share.half_life 3d`,
    /// `qos.urgent.priority 900` (creates level urgent), `qos.urgent.preempts low,normal`
    Set {
        /// The setting (`gantry admin config show` lists them)
        key: String,
        /// Its new value
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReplicasArgs {
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Ask the first replica that answers, even a follower: it knows only its own progress
    #[arg(long)]
    pub stale: bool,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ReplicaCommand {
    /// Add replica ID listening at ADDR: it joins as a learner, catches up (by snapshot
    /// when far behind), then votes. Start it first with --peers naming the others
    Add {
        /// The new replica's id (its --id)
        id: u64,
        /// Where it listens: host:port, http://host:port or a bare host (port 7420)
        address: String,
        /// Output format of the resulting replica list
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove replica ID from the group (a leader first hands its leadership over)
    Remove {
        /// The replica's id
        id: u64,
        /// Output format of the resulting replica list
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        format: Format,
    },
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
        AdminCommand::Replica(ReplicaCommand::Add {
            id,
            address,
            format,
        }) => {
            let request = pb::AddReplicaRequest {
                caller: Some(caller()),
                id,
                address,
            };
            // Safe to repeat: an add that was cut short carries on where it stopped.
            let response = scheduler
                .call_retrying(|mut client| {
                    let request = request.clone();
                    async move { client.add_replica(request).await }
                })
                .await?;
            print_replicas(&response, format)
        }
        AdminCommand::Config(ConfigCommand::Show { format, stale }) => {
            let request = pb::GetConfigRequest { stale };
            let response = scheduler
                .call(|mut client| async move { client.get_config(request).await })
                .await?;
            print_config(&response, format)
        }
        AdminCommand::Config(ConfigCommand::Set { key, value }) => {
            let request = pb::SetConfigRequest {
                caller: Some(caller()),
                key,
                value,
            };
            // Setting a value twice is harmless: retried across a failover.
            let response = scheduler
                .call_retrying(|mut client| {
                    let request = request.clone();
                    async move { client.set_config(request).await }
                })
                .await?;
            print_config(&response, Format::Table)
        }
        AdminCommand::Replica(ReplicaCommand::Remove { id, format }) => {
            let request = pb::RemoveReplicaRequest {
                caller: Some(caller()),
                id,
            };
            // Retried while a leader that removes itself hands its leadership over.
            let response = scheduler
                .call_retrying(|mut client| {
                    let request = request.clone();
                    async move { client.remove_replica(request).await }
                })
                .await?;
            print_replicas(&response, format)
        }
    }
}

async fn replicas(args: ReplicasArgs, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let request = pb::ReplicasRequest { stale: args.stale };
    let response = scheduler
        .call(|mut client| async move { client.replicas(request).await })
        .await?;
    print_replicas(&response, args.format)
}

fn print_replicas(response: &pb::ReplicasResponse, format: Format) -> anyhow::Result<()> {
    let rows: Vec<ReplicaRow> = response.replicas.iter().map(ReplicaRow::from).collect();
    match format {
        Format::Json => emit_json(&rows)?,
        Format::Table => emit(&replicas_table(&rows))?,
    }
    Ok(())
}

fn print_config(response: &pb::ConfigResponse, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let object: serde_json::Map<String, serde_json::Value> = response
                .entries
                .iter()
                .map(|e| (e.key.clone(), serde_json::Value::String(e.value.clone())))
                .collect();
            emit_json(&object)?;
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = response
                .entries
                .iter()
                .map(|e| vec![e.key.clone(), e.value.clone()])
                .collect();
            emit(&render_table(&["SETTING", "VALUE"], &rows))?;
        }
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
