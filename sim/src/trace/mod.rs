//! Job traces: the formats `gantry-sim` reads, all into one [`TraceJob`] list sorted by
//! submit time. A malformed row is reported with its file and line and skipped, or, in strict
//! mode, fails the read; a reader never panics on its input.

mod alibaba;
mod gantry;
pub mod generated;
mod philly;
mod pollux;
pub mod throughput;

use std::path::Path;

use gantry_model::JobId;
use thiserror::Error;

use crate::trace::throughput::Profiles;

/// One job of a trace, in simulator units (ms from the start of the trace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceJob {
    pub id: JobId,
    pub submit_ms: u64,
    pub user: String,
    pub account: String,
    pub num_nodes: u32,
    pub gpus_per_node: u32,
    pub gpu_model: Option<String>,
    /// How long it runs once started (its work).
    pub duration_ms: u64,
    pub time_limit_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub qos: String,
    pub checkpoint_interval_ms: Option<u64>,
}

impl TraceJob {
    /// A job as most traces describe one: who, when, what shape and how long; no GPU model,
    /// time limit, deadline or checkpoints, QoS `normal`.
    pub fn plain(id: JobId, submit_ms: u64, user: String, account: String) -> Self {
        TraceJob {
            id,
            submit_ms,
            user,
            account,
            num_nodes: 1,
            gpus_per_node: 0,
            gpu_model: None,
            duration_ms: 0,
            time_limit_ms: None,
            deadline_ms: None,
            qos: "normal".into(),
            checkpoint_interval_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Gantry's generic CSV (docs/simulation.md).
    Gantry,
    /// The Philly job table as the Pollux authors flattened it.
    Philly,
    /// Alibaba's "openb" GPU pod lists (v2023).
    Alibaba,
    /// The Pollux (OSDI'21) and Sia (SOSP'23) benchmark workloads, timed by the
    /// applications' throughput profiles.
    Pollux,
}

/// `jobs` as Gantry CSV (`--format gantry`), as `gantry-sim generate` writes them.
pub fn to_gantry_csv(jobs: &[TraceJob]) -> String {
    gantry::write(jobs)
}

/// How a read went: the jobs, and the rows skipped with why.
#[derive(Debug, Default)]
pub struct Trace {
    pub jobs: Vec<TraceJob>,
    pub skipped: Vec<String>,
}

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Profiles(String),
}

/// What the readers need beyond the file.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// A malformed row fails the read instead of being skipped.
    pub strict: bool,
    /// Users for traces without a user column are drawn from this seed.
    pub seed: u64,
    /// GPUs per node of the cluster: a trace that gives only a GPU count splits larger jobs
    /// into gangs of nodes of this size.
    pub gpus_per_node: u32,
    /// Keep only the first this many jobs (by submit time).
    pub limit_jobs: Option<usize>,
    /// Where the Pollux applications' throughput profiles are (found near the trace when
    /// `None`).
    pub app_profiles: Option<std::path::PathBuf>,
}

pub fn read(path: &Path, format: Format, options: &ReadOptions) -> Result<Trace, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let name = path.display().to_string();
    let mut trace = match format {
        Format::Gantry => gantry::parse(&name, &text, options)?,
        Format::Philly => philly::parse(&name, &text, options)?,
        Format::Alibaba => alibaba::parse(&name, &text, options)?,
        Format::Pollux => {
            let dir = Profiles::find(path, options.app_profiles.as_deref())
                .map_err(TraceError::Profiles)?;
            let profiles = Profiles::load(&dir).map_err(TraceError::Profiles)?;
            pollux::parse(&name, &text, &profiles, options)?
        }
    };
    trace.jobs.sort_by_key(|j| (j.submit_ms, j.id));
    if let Some(limit) = options.limit_jobs {
        trace.jobs.truncate(limit);
    }
    Ok(trace)
}

/// The rows of a CSV trace: `header` reads the header row into what `row` needs (or says
/// what is wrong with it), then `row` makes each record — of as many fields as the header —
/// into a `T`, given its 0-based index and its line. Blank rows are skipped; malformed ones are
/// reported to `rows` with their line.
pub(crate) fn read_rows<H, T>(
    text: &str,
    rows: &mut Rows<'_>,
    header: impl FnOnce(&csv::StringRecord) -> Result<H, String>,
    mut row: impl FnMut(&H, &csv::StringRecord, u64, u64) -> Result<T, String>,
) -> Result<Vec<T>, TraceError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let found = reader
        .headers()
        .map_err(|e| TraceError::Malformed(format!("{}:1: {e}", rows.file)))?
        .clone();
    let context =
        header(&found).map_err(|why| TraceError::Malformed(format!("{}:1: {why}", rows.file)))?;
    let mut out = Vec::new();
    for (index, record) in reader.records().enumerate() {
        // The line the record starts on (a quoted field may span lines).
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(index as u64 + 2, |p| p.line());
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                rows.bad(line, e)?;
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != found.len() {
            let why = format!("expected {} fields, found {}", found.len(), record.len());
            rows.bad(line, why)?;
            continue;
        }
        match row(&context, &record, index as u64, line) {
            Ok(item) => out.push(item),
            Err(why) => rows.bad(line, why)?,
        }
    }
    Ok(out)
}

/// A header check for `read_rows`: the columns must be exactly `expected`, in order.
pub(crate) fn exactly(expected: &[&str]) -> impl FnOnce(&csv::StringRecord) -> Result<(), String> {
    move |found| {
        if found.iter().eq(expected.iter().copied()) {
            Ok(())
        } else {
            Err(format!("expected the header {}", expected.join(",")))
        }
    }
}

/// Collects row problems: skipped, or the first one returned in strict mode.
pub(crate) struct Rows<'a> {
    file: &'a str,
    strict: bool,
    skipped: Vec<String>,
}

impl<'a> Rows<'a> {
    pub(crate) fn new(file: &'a str, options: &ReadOptions) -> Rows<'a> {
        Rows {
            file,
            strict: options.strict,
            skipped: Vec::new(),
        }
    }

    /// Records that row `line` is malformed; `Err` in strict mode.
    pub(crate) fn bad(&mut self, line: u64, why: impl std::fmt::Display) -> Result<(), TraceError> {
        let message = format!("{}:{line}: {why}", self.file);
        if self.strict {
            return Err(TraceError::Malformed(message));
        }
        self.skipped.push(message);
        Ok(())
    }

    pub(crate) fn finish(self, jobs: Vec<TraceJob>) -> Trace {
        Trace {
            jobs,
            skipped: self.skipped,
        }
    }
}

/// A job of `gpus` GPUs on nodes of `per_node`: one node when it fits, else the fewest nodes
/// holding it, each with the same share (rounded up).
pub(crate) fn gang(gpus: u32, per_node: u32) -> (u32, u32) {
    let per_node = per_node.max(1);
    if gpus <= per_node {
        return (1, gpus);
    }
    let nodes = gpus.div_ceil(per_node);
    (nodes, gpus.div_ceil(nodes))
}

/// A user for job `index` of a trace without users, from the seed: one of 32.
pub(crate) fn assigned_user(seed: u64, index: u64) -> String {
    format!("user{:02}", draw(seed, index) % 32)
}

/// SplitMix64: a fixed, well-mixed function of the seed and the index.
fn draw(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a run may add to or change in a trace (`--qos-mix`, `--checkpoint-every`, `--load`).
#[derive(Debug, Clone)]
pub struct Additions {
    /// QoS levels and their weights: every job gets one, drawn from the seed and its id.
    pub qos_mix: Vec<(String, u32)>,
    /// The checkpoint interval of jobs that have none.
    pub checkpoint_every_ms: Option<u64>,
    /// Arrivals this many times as dense (1: as traced): every job's time after the first
    /// arrival is divided by it, its deadline moving with it.
    pub load: f64,
}

impl Default for Additions {
    fn default() -> Self {
        Additions {
            qos_mix: Vec::new(),
            checkpoint_every_ms: None,
            load: 1.0,
        }
    }
}

impl Additions {
    /// `low=3,normal=5,high=2`: levels with whole-number weights.
    pub fn parse_qos_mix(text: &str) -> Result<Vec<(String, u32)>, String> {
        let mix =
            text.split(',')
                .map(|item| {
                    let (name, weight) = item.split_once('=').ok_or_else(|| {
                        format!("expected LEVEL=WEIGHT, e.g. low=3,normal=5,high=2 (got {item:?})")
                    })?;
                    let weight = weight.trim().parse::<u32>().map_err(|_| {
                        format!("the weight of {} is not a whole number", name.trim())
                    })?;
                    Ok((name.trim().to_string(), weight))
                })
                .collect::<Result<Vec<_>, String>>()?;
        if mix.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
            return Err("the weights add up to 0".into());
        }
        Ok(mix)
    }

    /// `--load`: from 0.01 to 100 (beyond, arrival times would leave the range of time).
    pub fn parse_load(text: &str) -> Result<f64, String> {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|f| (0.01..=100.0).contains(f))
            .ok_or_else(|| format!("expected a number from 0.01 to 100, e.g. 1.5 (got {text:?})"))
    }

    pub fn apply(&self, jobs: &mut [TraceJob], seed: u64) {
        let total: u64 = self.qos_mix.iter().map(|(_, w)| u64::from(*w)).sum();
        let first = jobs.iter().map(|j| j.submit_ms).min().unwrap_or(0);
        for job in jobs {
            if self.load != 1.0 {
                let later = ((job.submit_ms - first) as f64 / self.load).round() as u64;
                let submit = first.saturating_add(later);
                job.deadline_ms = job
                    .deadline_ms
                    .map(|d| submit.saturating_add(d.saturating_sub(job.submit_ms)));
                job.submit_ms = submit;
            }
            if total > 0 {
                // Its own stream (seed + 1), so the levels do not follow the users.
                let mut at = draw(seed.wrapping_add(1), job.id) % total;
                for (name, weight) in &self.qos_mix {
                    if at < u64::from(*weight) {
                        job.qos = name.clone();
                        break;
                    }
                    at -= u64::from(*weight);
                }
            }
            if job.checkpoint_interval_ms.is_none() {
                job.checkpoint_interval_ms = self.checkpoint_every_ms;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_jobs_become_even_gangs() {
        assert_eq!(gang(1, 8), (1, 1));
        assert_eq!(gang(8, 8), (1, 8));
        assert_eq!(gang(16, 8), (2, 8));
        assert_eq!(gang(12, 8), (2, 6));
        assert_eq!(gang(24, 8), (3, 8));
        assert_eq!(gang(3, 0), (3, 1));
    }

    #[test]
    fn additions_draw_levels_by_weight_and_fill_missing_intervals() {
        let mix = Additions::parse_qos_mix("low=1, high=3").unwrap();
        assert_eq!(mix, [("low".into(), 1), ("high".into(), 3)]);
        for bad in ["low", "low=x", "low=0,high=0"] {
            assert!(Additions::parse_qos_mix(bad).is_err(), "{bad}");
        }
        let job = |id| TraceJob {
            gpus_per_node: 1,
            duration_ms: 1,
            checkpoint_interval_ms: (id == 1).then_some(5),
            ..TraceJob::plain(id, 0, "u".into(), "a".into())
        };
        let mut jobs: Vec<TraceJob> = (1..=4000).map(job).collect();
        let additions = Additions {
            qos_mix: mix,
            checkpoint_every_ms: Some(60_000),
            ..Additions::default()
        };
        additions.apply(&mut jobs, 9);
        let high = jobs.iter().filter(|j| j.qos == "high").count();
        assert!((2800..3200).contains(&high), "{high}");
        assert!(jobs.iter().all(|j| j.qos == "high" || j.qos == "low"));
        assert_eq!(jobs[0].checkpoint_interval_ms, Some(5));
        assert_eq!(jobs[1].checkpoint_interval_ms, Some(60_000));
        let mut again: Vec<TraceJob> = (1..=4000).map(job).collect();
        additions.apply(&mut again, 9);
        assert_eq!(jobs, again);
    }

    #[test]
    fn a_load_compresses_arrivals_after_the_first_and_keeps_deadlines_slack() {
        let job = |id, submit_ms, deadline_ms| TraceJob {
            deadline_ms,
            ..TraceJob::plain(id, submit_ms, "u".into(), "a".into())
        };
        let mut jobs = vec![
            job(1, 10_000, None),
            job(2, 20_000, Some(25_000)),
            job(3, 40_000, None),
        ];
        let twice = Additions {
            load: Additions::parse_load("2").unwrap(),
            ..Additions::default()
        };
        twice.apply(&mut jobs, 0);
        let times: Vec<_> = jobs.iter().map(|j| (j.submit_ms, j.deadline_ms)).collect();
        assert_eq!(
            times,
            [(10_000, None), (15_000, Some(20_000)), (25_000, None)]
        );
        // Half the load spreads them out.
        let half = Additions {
            load: 0.5,
            ..Additions::default()
        };
        half.apply(&mut jobs, 0);
        assert_eq!(jobs[2].submit_ms, 40_000);
        for bad in ["0", "-1", "inf", "NaN", "fast", "1e-13", "0.009", "101"] {
            assert!(Additions::parse_load(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn assigned_users_depend_only_on_seed_and_index() {
        assert_eq!(assigned_user(1, 5), assigned_user(1, 5));
        let users: std::collections::BTreeSet<String> =
            (0..1000).map(|i| assigned_user(7, i)).collect();
        assert!(users.len() > 20, "{users:?}");
    }
}
