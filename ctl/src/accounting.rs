//! `gantry usage` (like sreport) and `gantry history` (like sacct): what ended runs used,
//! from the scheduler's committed state, as a table, JSON or CSV.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use gantry_model::units::parse_time_ms;
use gantry_proto as pb;
use serde::Serialize;

use crate::client::Scheduler;
use crate::jobs::parse_states;
use crate::output::{emit, emit_json, render_table, timestamp};

/// `-o table|json|csv`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportFormat {
    #[default]
    Table,
    Json,
    Csv,
}

/// What both reports take.
#[derive(clap::Args, Debug, Clone)]
pub struct Window {
    /// Count run time from here: now-7d, 2026-11-01, 2026-11-01T09:00 [default: the beginning]
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Count run time until here [default: now]
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only these users' jobs (comma-separated)
    #[arg(
        short = 'u',
        long = "user",
        value_name = "U[,U...]",
        value_delimiter = ','
    )]
    pub users: Vec<String>,
    /// Only jobs of these accounts (comma-separated)
    #[arg(
        short = 'A',
        long = "account",
        value_name = "A[,A...]",
        value_delimiter = ','
    )]
    pub accounts: Vec<String>,
    /// Only jobs of these pools (comma-separated)
    #[arg(
        short = 'p',
        long = "pool",
        value_name = "P[,P...]",
        value_delimiter = ','
    )]
    pub pools: Vec<String>,
    /// Only jobs now in these states (names or codes: CD, F, CA, TO, NF, R, PD)
    #[arg(
        short = 't',
        long = "state",
        value_name = "S[,S...]",
        value_delimiter = ','
    )]
    pub states: Vec<String>,
    /// Answer from the first replica that responds, from its own copy of the state
    #[arg(long)]
    pub stale: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(clap::Args, Debug, Clone)]
pub struct UsageArgs {
    /// Group by account, user or pool
    #[arg(long, value_enum, default_value_t = By::Account)]
    pub by: By,
    #[command(flatten)]
    pub window: Window,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Account,
    User,
    Pool,
}

impl By {
    fn name(self) -> &'static str {
        match self {
            By::Account => "account",
            By::User => "user",
            By::Pool => "pool",
        }
    }
}

impl Window {
    fn request(&self, by: &str) -> anyhow::Result<pb::AccountingRequest> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let time = |flag: &str, text: &Option<String>| -> anyhow::Result<u64> {
            match text {
                Some(t) => parse_time_ms(t, now).with_context(|| format!("--{flag}")),
                None => Ok(0),
            }
        };
        let (since_ms, until_ms) = (time("since", &self.since)?, time("until", &self.until)?);
        if until_ms > 0 && until_ms <= since_ms {
            anyhow::bail!("--until must come after --since");
        }
        Ok(pb::AccountingRequest {
            stale: self.stale,
            since_ms,
            until_ms,
            users: self.users.clone(),
            accounts: self.accounts.clone(),
            pools: self.pools.clone(),
            states: parse_states(&self.states)?
                .into_iter()
                .map(|s| gantry_wire::state_to_pb(s) as i32)
                .collect(),
            by: by.to_string(),
        })
    }
}

/// What ended runs used, in whole seconds, as both reports print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsedRow {
    pub runs: u32,
    pub wall_seconds: u64,
    pub gpu_seconds: u64,
    pub cpu_seconds: u64,
}

impl From<Option<&pb::Used>> for UsedRow {
    fn from(used: Option<&pb::Used>) -> Self {
        let used = used.cloned().unwrap_or_default();
        UsedRow {
            runs: used.runs,
            wall_seconds: used.wall_seconds,
            gpu_seconds: used.gpu_seconds,
            cpu_seconds: used.cpu_seconds,
        }
    }
}

/// One job of `gantry history -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub id: u64,
    pub name: String,
    pub user: String,
    pub account: String,
    pub pool: String,
    pub state: String,
    pub submit_time: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    #[serde(flatten)]
    pub used: UsedRow,
}

/// One group of `gantry usage -o json`, and its total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// The account, user or pool; `total` for the total.
    pub key: String,
    pub jobs: u32,
    #[serde(flatten)]
    pub used: UsedRow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    pub by: String,
    pub rows: Vec<UsageRow>,
    pub total: UsageRow,
}

const USED_HEADER: [&str; 5] = [
    "RUNS",
    "ELAPSED_S",
    "GPU_SECONDS",
    "CPU_SECONDS",
    "GPU_HOURS",
];

fn used_cells(used: &UsedRow) -> Vec<String> {
    vec![
        used.runs.to_string(),
        used.wall_seconds.to_string(),
        used.gpu_seconds.to_string(),
        used.cpu_seconds.to_string(),
        format!("{:.2}", used.gpu_seconds as f64 / 3600.0),
    ]
}

/// Rows as CSV, header first.
fn csv_text(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(header)?;
    for row in rows {
        writer.write_record(row)?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

fn emit_rows(format: ReportFormat, header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    match format {
        ReportFormat::Csv => emit(&csv_text(header, rows)?)?,
        _ => emit(&render_table(header, rows))?,
    }
    Ok(())
}

pub async fn history(args: Window, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let request = args.request("")?;
    let response = scheduler
        .call(|mut client| {
            let request = request.clone();
            async move { client.history(request).await }
        })
        .await?;
    let rows: Vec<HistoryRow> = response
        .jobs
        .iter()
        .map(|j| HistoryRow {
            id: j.job_id,
            name: j.name.clone(),
            user: j.user.clone(),
            account: j.account.clone(),
            pool: j.pool.clone(),
            state: gantry_wire::state_from_pb(j.state)
                .map_or("UNKNOWN", |s| s.as_str())
                .to_string(),
            submit_time: timestamp(j.submit_time_ms),
            start_time: j.start_time_ms.and_then(timestamp),
            end_time: j.end_time_ms.and_then(timestamp),
            used: UsedRow::from(j.used.as_ref()),
        })
        .collect();
    if args.format == ReportFormat::Json {
        return emit_json(&rows);
    }
    let mut header = vec![
        "JOBID", "NAME", "USER", "ACCOUNT", "POOL", "STATE", "START", "END",
    ];
    header.extend(USED_HEADER);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.id.to_string(),
                r.name.clone(),
                r.user.clone(),
                r.account.clone(),
                r.pool.clone(),
                r.state.clone(),
                r.start_time.clone().unwrap_or_else(|| "-".into()),
                r.end_time.clone().unwrap_or_else(|| "-".into()),
            ];
            cells.extend(used_cells(&r.used));
            cells
        })
        .collect();
    emit_rows(args.format, &header, &cells)
}

pub async fn usage(args: UsageArgs, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let request = args.window.request(args.by.name())?;
    let response = scheduler
        .call(|mut client| {
            let request = request.clone();
            async move { client.usage(request).await }
        })
        .await?;
    let row = |r: &pb::UsageRow| UsageRow {
        key: r.key.clone(),
        jobs: r.jobs,
        used: UsedRow::from(r.used.as_ref()),
    };
    let report = UsageReport {
        by: response.by.clone(),
        rows: response.rows.iter().map(row).collect(),
        total: response
            .total
            .as_ref()
            .map_or_else(|| row(&pb::UsageRow::default()), row),
    };
    if args.window.format == ReportFormat::Json {
        return emit_json(&report);
    }
    let key = report.by.to_uppercase();
    let mut header = vec![key.as_str(), "JOBS"];
    header.extend(USED_HEADER);
    let cells: Vec<Vec<String>> = report
        .rows
        .iter()
        .chain(std::iter::once(&report.total))
        .map(|r| {
            let key = if r.key.is_empty() {
                "-".into()
            } else {
                r.key.clone()
            };
            let mut cells = vec![key, r.jobs.to_string()];
            cells.extend(used_cells(&r.used));
            cells
        })
        .collect();
    emit_rows(args.window.format, &header, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let text = csv_text(
            &["NAME", "GPU_SECONDS"],
            &[
                vec!["a,b".into(), "12".into()],
                vec!["plain".into(), "3".into()],
            ],
        )
        .unwrap();
        assert_eq!(text, "NAME,GPU_SECONDS\n\"a,b\",12\nplain,3\n");
    }

    #[test]
    fn json_rows_carry_gpu_and_cpu_seconds() {
        let row = UsageRow {
            key: "vision".into(),
            jobs: 2,
            used: UsedRow {
                runs: 3,
                wall_seconds: 10,
                gpu_seconds: 40,
                cpu_seconds: 20,
            },
        };
        let value = serde_json::to_value(&row).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"key": "vision", "jobs": 2, "runs": 3, "wall_seconds": 10,
                               "gpu_seconds": 40, "cpu_seconds": 20})
        );
    }
}
