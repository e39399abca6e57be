//! GPU-hour accounting from committed state (`gantry usage`, `gantry history`): only runs
//! that have ended count, with the times the log gave them, so every replica answers alike.
//! Each run's seconds inside the window asked about are rounded once, and every figure is a
//! sum of those whole seconds: totals reconcile exactly with the sum over jobs.

use std::collections::BTreeMap;

use gantry_model::JobState;

use crate::job::{Attempt, Job};
use crate::machine::StateMachine;

/// Which jobs, and which part of their runs, a report covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only run time from here on (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only run time before this.
    pub until_ms: Option<u64>,
    /// Only these users, accounts, pools, states (each: any when empty).
    pub users: Vec<String>,
    pub accounts: Vec<String>,
    pub pools: Vec<String>,
    pub states: Vec<JobState>,
}

/// What ended runs used, in whole seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    pub runs: u32,
    pub wall_s: u64,
    pub gpu_s: u64,
    pub cpu_s: u64,
}

impl Used {
    fn add(&mut self, other: &Used) {
        self.runs += other.runs;
        self.wall_s += other.wall_s;
        self.gpu_s += other.gpu_s;
        self.cpu_s += other.cpu_s;
    }
}

/// One job in the history: what it is and what its ended runs used in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUse<'a> {
    pub job: &'a Job,
    pub used: Used,
}

/// How usage is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Account,
    User,
    Pool,
}

/// Usage per group, with the number of jobs that used something.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub jobs: u32,
    pub used: Used,
}

impl Filter {
    fn admits(&self, job: &Job) -> bool {
        let any = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        any(&self.users, &job.owner.user)
            && any(&self.accounts, &job.spec.account)
            && any(&self.pools, pool(job))
            && (self.states.is_empty() || self.states.contains(&job.state))
    }

    /// The run's whole seconds inside the window `[since, until)`; `None` when it lies
    /// outside (a run of no time counts where it happened).
    fn seconds(&self, run: &Attempt) -> Option<u64> {
        let (from, to) = (
            self.since_ms.unwrap_or(0),
            self.until_ms.unwrap_or(u64::MAX),
        );
        let overlaps = if run.start_ms == run.end_ms {
            from <= run.start_ms && run.start_ms < to
        } else {
            run.start_ms < to && run.end_ms > from
        };
        let inside = run.end_ms.min(to).saturating_sub(run.start_ms.max(from));
        overlaps.then(|| (inside + 500) / 1000)
    }
}

fn pool(job: &Job) -> &str {
    job.spec.pool.as_deref().unwrap_or("")
}

/// What one job's ended runs used in the window; `None` when it had none there.
fn job_use(job: &Job, filter: &Filter) -> Option<Used> {
    let cpus_per_node = u64::from(job.spec.cpus_per_node);
    let mut used = Used::default();
    for run in &job.attempts {
        let Some(seconds) = filter.seconds(run) else {
            continue;
        };
        let gpus: u64 = run.parts.iter().map(|(_, gpus)| gpus.len() as u64).sum();
        let nodes = run.parts.len() as u64;
        used.add(&Used {
            runs: 1,
            wall_s: seconds,
            gpu_s: gpus * seconds,
            cpu_s: cpus_per_node * nodes * seconds,
        });
    }
    (used.runs > 0).then_some(used)
}

impl StateMachine {
    /// Every job the filter admits with an ended run in its window, by id.
    pub fn history(&self, filter: &Filter) -> Vec<JobUse<'_>> {
        self.jobs()
            .filter(|job| filter.admits(job))
            .filter_map(|job| {
                let used = job_use(job, filter)?;
                Some(JobUse { job, used })
            })
            .collect()
    }

    /// The history summed per account, user or pool, in name order, and the total.
    pub fn usage(&self, filter: &Filter, by: By) -> (BTreeMap<String, Group>, Group) {
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut total = Group::default();
        for JobUse { job, used } in self.history(filter) {
            let key = match by {
                By::Account => job.spec.account.clone(),
                By::User => job.owner.user.clone(),
                By::Pool => pool(job).to_string(),
            };
            let group = groups.entry(key).or_default();
            group.jobs += 1;
            group.used.add(&used);
            total.jobs += 1;
            total.used.add(&used);
        }
        (groups, total)
    }
}
