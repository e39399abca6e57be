//! Job traces: the formats `gantry-sim` reads, all into one [`TraceJob`] list sorted by
//! submit time. A malformed row is reported with its file and line and skipped, or, in strict
//! mode, fails the read; a reader never panics on its input.

mod alibaba;
mod gantry;
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
    // SplitMix64: a fixed, well-mixed function of the seed and the index.
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("user{:02}", z % 32)
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
    fn assigned_users_depend_only_on_seed_and_index() {
        assert_eq!(assigned_user(1, 5), assigned_user(1, 5));
        let users: std::collections::BTreeSet<String> =
            (0..1000).map(|i| assigned_user(7, i)).collect();
        assert!(users.len() > 20, "{users:?}");
    }
}
