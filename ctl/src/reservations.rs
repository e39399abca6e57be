//! `gantry reservation ...`: advance reservations, nodes held over a window for some users'
//! and accounts' jobs (like `scontrol create reservation`).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use gantry_model::units::{format_duration_ms, parse_duration_ms, parse_future_time_ms};
use gantry_proto as pb;
use serde::Serialize;

use crate::client::{Scheduler, caller};
use crate::hostlist;
use crate::output::{Format, emit, emit_json, render_table, timestamp};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ReservationCommand {
    /// Hold nodes over a window for some users' and accounts' jobs (admins only)
    #[command(group = clap::ArgGroup::new("what").required(true).args(["nodes", "gpus"]))]
    Create {
        /// Its name: letters, digits, '-', '_', '.'
        name: String,
        /// When it starts: now, now+2h, 2026-12-01T09:00 (UTC)
        #[arg(long, value_name = "TIME")]
        start: String,
        /// How long it lasts: 4h, 2d, 1-00:00:00
        #[arg(long, value_name = "DUR")]
        duration: String,
        /// The nodes it holds: gpu01,gpu02 or gpu[01-04]
        #[arg(long, value_name = "LIST")]
        nodes: Option<String>,
        /// Hold this many GPUs instead, picked by the scheduler (from --pool)
        #[arg(long, value_name = "N")]
        gpus: Option<u32>,
        /// With --gpus: only GPUs of this pool's nodes
        #[arg(long, value_name = "POOL", requires = "gpus")]
        pool: Option<String>,
        /// Users whose jobs may run in it (comma-separated)
        #[arg(long, value_name = "U[,U...]", value_delimiter = ',')]
        users: Vec<String>,
        /// Accounts whose jobs (and their sub-accounts' jobs) may run in it
        #[arg(long, value_name = "A[,A...]", value_delimiter = ',')]
        accounts: Vec<String>,
        /// For maintenance: no job runs in it; nothing starts there that would run into it,
        /// and jobs still there when it starts are requeued
        #[arg(long, conflicts_with_all = ["users", "accounts"])]
        maintenance: bool,
        /// Create it even over nodes whose running jobs may still run when it starts (they
        /// finish; nothing new starts there)
        #[arg(long)]
        force: bool,
    },
    /// List the reservations that have not ended
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Ask the first replica that answers, even a follower
        #[arg(long)]
        stale: bool,
    },
    /// Show one reservation
    Show {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Change a reservation (admins only): what is given replaces what it had; a new start
    /// keeps its length unless --duration is given too
    Update {
        name: String,
        #[arg(long, value_name = "TIME")]
        start: Option<String>,
        #[arg(long, value_name = "DUR")]
        duration: Option<String>,
        #[arg(long, value_name = "LIST")]
        nodes: Option<String>,
        #[arg(long, value_name = "U[,U...]", value_delimiter = ',')]
        users: Option<Vec<String>>,
        #[arg(long, value_name = "A[,A...]", value_delimiter = ',')]
        accounts: Option<Vec<String>>,
        /// Change it even over nodes whose running jobs may still run when it starts
        #[arg(long)]
        force: bool,
    },
    /// Delete a reservation (admins only); jobs waiting for it stay pending
    Delete { name: String },
}

/// One reservation in `-o json`; the field names are stable.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReservationRow {
    pub name: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    /// `ACTIVE` in its window, `PLANNED` before it.
    pub state: String,
    pub nodes: Vec<String>,
    /// For a reservation of GPUs, those it holds per node; `{}` when it holds whole nodes.
    pub gpus: std::collections::BTreeMap<String, Vec<u32>>,
    pub users: Vec<String>,
    pub accounts: Vec<String>,
    pub created_by: String,
    pub maintenance: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn row(r: &pb::Reservation, now: u64) -> ReservationRow {
    ReservationRow {
        name: r.name.clone(),
        start_time: timestamp(r.start_ms),
        end_time: timestamp(r.end_ms),
        state: if r.start_ms <= now {
            "ACTIVE"
        } else {
            "PLANNED"
        }
        .to_string(),
        nodes: r.nodes.clone(),
        gpus: r
            .gpus
            .iter()
            .map(|h| (h.node.clone(), h.gpus.clone()))
            .collect(),
        users: r.users.clone(),
        accounts: r.accounts.clone(),
        created_by: r.created_by.clone(),
        maintenance: r.maintenance,
    }
}

/// The window from the flags: its start and end, ms since the epoch.
fn window(start: &str, duration: &str, now: u64) -> anyhow::Result<(u64, u64)> {
    let start = parse_future_time_ms(start, now).context("--start")?;
    let length = parse_duration_ms(duration)
        .ok()
        .filter(|ms| *ms > 0)
        .with_context(|| {
            format!("--duration: expected a duration longer than 0 such as 4h (got {duration:?})")
        })?;
    Ok((start, start.saturating_add(length)))
}

pub async fn run(command: ReservationCommand, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let now = now_ms();
    match command {
        ReservationCommand::Create {
            name,
            start,
            duration,
            nodes,
            gpus,
            pool,
            users,
            accounts,
            maintenance,
            force,
        } => {
            let (start_ms, end_ms) = window(&start, &duration, now)?;
            let nodes = match &nodes {
                Some(list) => hostlist::expand(list)?,
                None => Vec::new(),
            };
            if gpus == Some(0) {
                bail!("--gpus: reserve at least 1 GPU");
            }
            if !maintenance && users.is_empty() && accounts.is_empty() {
                bail!("name the --users or --accounts whose jobs may run in it (or --maintenance)");
            }
            let request = pb::CreateReservationRequest {
                caller: Some(caller()),
                reservation: Some(pb::Reservation {
                    name: name.clone(),
                    start_ms,
                    end_ms,
                    nodes: nodes.clone(),
                    users,
                    accounts,
                    created_by: String::new(),
                    maintenance,
                    gpus: Vec::new(),
                }),
                force,
                gpu_count: gpus.unwrap_or(0),
                pool: pool.unwrap_or_default(),
            };
            let response = scheduler
                .call(|mut client| {
                    let request = request.clone();
                    async move { client.create_reservation(request).await }
                })
                .await?;
            let created = response.reservations.iter().find(|r| r.name == name);
            emit(&format!(
                "Reservation {name} holds {} for {} from {}\n",
                created.map_or_else(|| nodes.join(","), |r| row(r, now).holds()),
                format_duration_ms(end_ms - start_ms),
                timestamp(start_ms).unwrap_or_default()
            ))?;
        }
        ReservationCommand::Update {
            name,
            start,
            duration,
            nodes,
            users,
            accounts,
            force,
        } => {
            let request = pb::ListReservationsRequest { stale: false };
            let current = scheduler
                .call(|mut client| async move { client.list_reservations(request).await })
                .await?
                .reservations
                .into_iter()
                .find(|r| r.name == name)
                .with_context(|| format!("reservation {name} does not exist"))?;
            let length = match &duration {
                Some(text) => window("now", text, now)?.1 - now,
                None => current.end_ms - current.start_ms,
            };
            let start_ms = match &start {
                Some(text) => parse_future_time_ms(text, now).context("--start")?,
                None => current.start_ms,
            };
            let changed = pb::Reservation {
                start_ms,
                end_ms: start_ms.saturating_add(length),
                nodes: match &nodes {
                    Some(list) => hostlist::expand(list)?,
                    None => current.nodes.clone(),
                },
                // New nodes are held whole.
                gpus: if nodes.is_some() {
                    Vec::new()
                } else {
                    current.gpus.clone()
                },
                users: users.unwrap_or_else(|| current.users.clone()),
                accounts: accounts.unwrap_or_else(|| current.accounts.clone()),
                ..current
            };
            let request = pb::CreateReservationRequest {
                caller: Some(caller()),
                reservation: Some(changed.clone()),
                force,
                gpu_count: 0,
                pool: String::new(),
            };
            scheduler
                .call(|mut client| {
                    let request = request.clone();
                    async move { client.update_reservation(request).await }
                })
                .await?;
            emit(&format!(
                "Reservation {name} holds {} for {} from {}\n",
                row(&changed, now).holds(),
                format_duration_ms(changed.end_ms - changed.start_ms),
                timestamp(changed.start_ms).unwrap_or_default()
            ))?;
        }
        ReservationCommand::Delete { name } => {
            let request = pb::DeleteReservationRequest {
                caller: Some(caller()),
                name: name.clone(),
            };
            scheduler
                .call(|mut client| {
                    let request = request.clone();
                    async move { client.delete_reservation(request).await }
                })
                .await?;
            emit(&format!("Reservation {name} deleted\n"))?;
        }
        ReservationCommand::List { format, stale } => {
            let rows = list(scheduler, stale, now).await?;
            match format {
                Format::Json => emit_json(&rows)?,
                Format::Table => emit(&table(&rows))?,
            }
        }
        ReservationCommand::Show { name, format } => {
            let rows = list(scheduler, false, now).await?;
            let Some(r) = rows.into_iter().find(|r| r.name == name) else {
                bail!("reservation {name} does not exist");
            };
            match format {
                Format::Json => emit_json(&r)?,
                Format::Table => emit(&show(&r))?,
            }
        }
    }
    Ok(())
}

async fn list(
    scheduler: &mut Scheduler,
    stale: bool,
    now: u64,
) -> anyhow::Result<Vec<ReservationRow>> {
    let request = pb::ListReservationsRequest { stale };
    let response = scheduler
        .call(|mut client| async move { client.list_reservations(request).await })
        .await?;
    Ok(response.reservations.iter().map(|r| row(r, now)).collect())
}

impl ReservationRow {
    /// What it holds: `gpu01,gpu02` (whole nodes) or `gpu01:0,1 gpu02:3`.
    fn holds(&self) -> String {
        if self.gpus.is_empty() {
            return self.nodes.join(",");
        }
        let parts: Vec<String> = self
            .gpus
            .iter()
            .map(|(node, gpus)| {
                let gpus: Vec<String> = gpus.iter().map(u32::to_string).collect();
                format!("{node}:{}", gpus.join(","))
            })
            .collect();
        parts.join(" ")
    }
}

fn or_dash(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn table(rows: &[ReservationRow]) -> String {
    let header = [
        "NAME", "STATE", "START", "END", "HOLDS", "USERS", "ACCOUNTS", "MAINT",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.state.clone(),
                r.start_time.clone().unwrap_or_default(),
                r.end_time.clone().unwrap_or_default(),
                r.holds(),
                or_dash(&r.users),
                or_dash(&r.accounts),
                if r.maintenance { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    render_table(&header, &cells)
}

fn show(r: &ReservationRow) -> String {
    [
        ("name", r.name.clone()),
        ("state", r.state.clone()),
        ("start_time", r.start_time.clone().unwrap_or_default()),
        ("end_time", r.end_time.clone().unwrap_or_default()),
        ("holds", r.holds()),
        ("users", or_dash(&r.users)),
        ("accounts", or_dash(&r.accounts)),
        ("created_by", r.created_by.clone()),
        (
            "maintenance",
            if r.maintenance { "yes" } else { "no" }.to_string(),
        ),
    ]
    .iter()
    .map(|(k, v)| format!("{k}: {v}\n"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_when_told_and_last_as_long() {
        assert_eq!(window("now", "2h", 1_000).unwrap(), (1_000, 7_201_000));
        assert_eq!(window("now+1h", "30m", 0).unwrap(), (3_600_000, 5_400_000));
        assert!(
            window("now", "0s", 0)
                .unwrap_err()
                .to_string()
                .contains("longer than 0")
        );
        assert!(format!("{:#}", window("soon", "1h", 0).unwrap_err()).contains("--start"));
    }

    #[test]
    fn rows_are_active_inside_their_window() {
        let r = pb::Reservation {
            name: "demo".into(),
            start_ms: 10,
            end_ms: 20,
            nodes: vec!["a".into()],
            users: vec!["ann".into()],
            ..Default::default()
        };
        assert_eq!(row(&r, 5).state, "PLANNED");
        assert_eq!(row(&r, 10).state, "ACTIVE");
        let value = serde_json::to_value(row(&r, 10)).unwrap();
        assert_eq!(value["accounts"], serde_json::json!([]));
        assert!(show(&row(&r, 10)).contains("\nusers: ann\naccounts: -\n"));
    }
}
