//! The scheduler's policy settings: priority weights, fair-share half-life, backfill depth and
//! QoS levels. Replicated state (`gantry admin config set`), read by every pass.

use std::collections::BTreeMap;

use gantry_model::units::{format_duration_ms, parse_duration_ms};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Factors are in thousandths: 1000 is a factor at its maximum.
pub const FACTOR_MAX: u32 = 1000;
/// The largest weight a factor may have; keeps every total within `u64`.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Beyond this many reservations a pass costs more than it plans.
pub const MAX_RESERVATION_DEPTH: u32 = 1000;
/// The most `defrag.per_hour`, `requeue.max`, `preempt.budget` and `preempt.qos_gain` take.
const MAX_COUNT: u32 = 1000;
/// The QoS a job gets when it names none; it always exists.
pub const DEFAULT_QOS: &str = "normal";

/// How much each priority factor counts: a job's priority is the sum over factors of
/// `weight × factor / 1000`, each factor between 0 and 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub age: u32,
    pub fair_share: u32,
    pub qos: u32,
    pub deadline: u32,
    pub size: u32,
    /// Shorter jobs first: by the GPU time they ask for.
    pub short: u32,
    /// Jobs preempted before rank ahead of their peers when they come back.
    pub preempted: u32,
}

impl Weights {
    /// What the baselines weigh, whatever the settings: Slurm's usual multifactor setup
    /// (age, fair share, QoS, size; nothing for shortness), so that `slurm-like` stays the
    /// same yardstick while the `gantry` profile's weights are tuned.
    pub const BASELINE: Weights = Weights {
        age: 1000,
        fair_share: 2000,
        qos: 2000,
        deadline: 4000,
        size: 500,
        short: 0,
        preempted: 0,
    };
}

/// A QoS level: its priority factor, and which levels' jobs its jobs may preempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosLevel {
    /// 0 to 1000: the level's QoS factor.
    pub priority: u32,
    pub preempts: Vec<String>,
}

/// Which scheduler the pass behaves as. The baselines exist so the simulator can compare
/// Gantry with what clusters run today on the same trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SchedulingProfile {
    /// Everything this crate does.
    #[default]
    Gantry,
    /// Slurm's usual setup: multifactor priority, EASY backfill (one reservation, of whole
    /// nodes), one request per job (the first that can ever run here), no guarantees
    /// reclaimed.
    SlurmLike,
    /// First come, first served, first fit: the first job that does not fit blocks the
    /// queue; no backfill.
    Fifo,
}

impl SchedulingProfile {
    pub const ALL: [SchedulingProfile; 3] = [
        SchedulingProfile::Gantry,
        SchedulingProfile::SlurmLike,
        SchedulingProfile::Fifo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchedulingProfile::Gantry => "gantry",
            SchedulingProfile::SlurmLike => "slurm-like",
            SchedulingProfile::Fifo => "fifo",
        }
    }

    pub fn parse(text: &str) -> Option<SchedulingProfile> {
        SchedulingProfile::ALL
            .into_iter()
            .find(|p| p.as_str() == text.trim())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub profile: SchedulingProfile,
    pub weights: Weights,
    /// Fair-share usage counts half as much this long after it happened.
    pub half_life_ms: u64,
    /// A job's age factor grows linearly to its maximum over this long in the queue.
    pub age_max_ms: u64,
    /// A job with a deadline grows urgent over this long before it must start (its slack
    /// falls from this to zero).
    pub deadline_horizon_ms: u64,
    /// The GPU time (GPUs × time limit, in GPU-milliseconds) at and above which a job's
    /// `short` factor is 0.
    pub short_max_gpu_ms: u64,
    /// A job that has waited this long goes ahead of every job ranked by priority, earliest
    /// submitted first (`priority.starve_after`); `None`: never.
    pub starve_after_ms: Option<u64>,
    /// How many blocked jobs get a reserved start per pass.
    pub reservation_depth: u32,
    pub qos: BTreeMap<String, QosLevel>,
    /// The pool of jobs submitted without `-p`, fixed when each is accepted.
    pub default_pool: String,
    pub preemption: Preemption,
    /// How many times one job is requeued on its own (node failures, time limits with
    /// `--requeue-on-timeout`) before the next such end is final. Preemptions do not count.
    pub max_requeues: u32,
    /// Limits of the pools that have any (`pool.NAME.*` settings).
    pub pools: BTreeMap<String, PoolLimits>,
    /// A node one of whose GPUs fails is drained (`gpu_failure.drain`).
    pub drain_on_gpu_failure: bool,
    /// How long a job's checkpoint dir outlives the job (`checkpoint.keep`); `None`: for
    /// ever. The node daemons remove the dirs of jobs that ended longer ago.
    pub checkpoint_keep_ms: Option<u64>,
}

/// What a pool asks of the jobs submitted to it (`pool.NAME.*` settings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolLimits {
    /// The time limit of its jobs submitted without one.
    pub default_time_ms: Option<u64>,
    /// The longest time limit its jobs may have.
    pub max_time_ms: Option<u64>,
    /// The accounts whose jobs (and their sub-accounts' jobs) may run there; empty: any.
    pub accounts: Vec<String>,
}

/// How jobs are chosen and spared when a higher QoS preempts (`preempt.*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preemption {
    /// A job runs at least this long before a higher QoS may preempt it: no thrashing.
    pub min_runtime_ms: u64,
    /// What stopping a job takes (its checkpoint signal's lead, then the stop): a job whose
    /// time limit ends within it is left to finish.
    pub grace_ms: u64,
    /// What restarting a preempted job costs (loading its checkpoint), counted as lost work.
    pub restart_cost_ms: u64,
    pub victims: VictimOrder,
    /// Defragmentation: how many running jobs of one account may be moved (checkpointed,
    /// requeued and placed elsewhere) per hour so that a blocked gang can start; 0: never.
    pub defrag_per_hour: u32,
    /// How many times one job may be preempted for a QoS, a deadline or defragmentation
    /// (a guarantee takes back regardless). Each preemption also doubles the time the job
    /// runs before it may be stopped again (`min_runtime` × 2^preemptions).
    pub budget: u32,
    /// How much more a waiting job's GPU-time counts against the work a preemption throws
    /// away per 1000 of QoS priority it has above the victim's: a stop pays when the job's
    /// GPUs × how much sooner it starts × (1 + qos_gain × Δpriority / 1000) exceeds the
    /// victims' GPU-time since their last checkpoints plus restart costs.
    pub qos_gain: u32,
}

/// Which running jobs a preemption stops first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VictimOrder {
    /// The fewest GPU-seconds lost: work since each job's last checkpoint (since its start
    /// without one) plus its restart cost, per GPU freed.
    CheckpointAware,
    /// The most recently started first (what Kubernetes schedulers and Slurm's usual setup
    /// do), for comparison.
    Youngest,
}

impl VictimOrder {
    pub const ALL: [VictimOrder; 2] = [VictimOrder::CheckpointAware, VictimOrder::Youngest];

    pub fn as_str(self) -> &'static str {
        match self {
            VictimOrder::CheckpointAware => "checkpoint-aware",
            VictimOrder::Youngest => "youngest",
        }
    }
}

/// The pool nodes without `--pool` belong to, and the default pool out of the box.
pub const DEFAULT_POOL: &str = "default";

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

impl Default for PolicyConfig {
    fn default() -> Self {
        let level = |priority: u32, preempts: &[&str]| QosLevel {
            priority,
            preempts: preempts.iter().map(|s| s.to_string()).collect(),
        };
        PolicyConfig {
            profile: SchedulingProfile::Gantry,
            // Chosen by the scoreboard (docs/simulation.md) on the tuning seeds: short jobs
            // first lowers the mean wait most; QoS and deadlines must still weigh against it.
            weights: Weights {
                age: 1000,
                fair_share: 200,
                qos: 4000,
                deadline: 4000,
                size: 0,
                short: 8000,
                preempted: 1000,
            },
            half_life_ms: 7 * DAY_MS,
            age_max_ms: 7 * DAY_MS,
            deadline_horizon_ms: DAY_MS,
            short_max_gpu_ms: 1000 * HOUR_MS,
            starve_after_ms: Some(3 * DAY_MS),
            reservation_depth: 8,
            qos: BTreeMap::from([
                ("low".to_string(), level(0, &[])),
                // Preempting `low` for `normal` throws away more than it gains on every
                // workload of the scoreboard: `low` is the lowest priority, not a scavenger.
                (DEFAULT_QOS.to_string(), level(500, &[])),
                ("high".to_string(), level(1000, &["low", "normal"])),
            ]),
            default_pool: DEFAULT_POOL.to_string(),
            preemption: Preemption {
                min_runtime_ms: 10 * MINUTE_MS,
                grace_ms: 2 * MINUTE_MS,
                restart_cost_ms: MINUTE_MS,
                victims: VictimOrder::CheckpointAware,
                defrag_per_hour: 0,
                budget: 3,
                // Any weight above 0 raised the mean wait on the scoreboard: a minute of a
                // `high` job counts as much as anyone's, and `high` still goes first.
                qos_gain: 0,
            },
            max_requeues: 5,
            pools: BTreeMap::new(),
            drain_on_gpu_failure: true,
            checkpoint_keep_ms: Some(7 * DAY_MS),
        }
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown setting {0:?} (settings: {keys})", keys = KEYS.join(", "))]
    UnknownKey(String),
    #[error("{key}: {why}")]
    BadValue { key: String, why: String },
}

/// The settings `config set` takes, besides `qos.NAME.priority` and `qos.NAME.preempts`.
const KEYS: [&str; 25] = [
    "profile",
    "weight.age",
    "weight.fair_share",
    "weight.qos",
    "weight.deadline",
    "weight.size",
    "weight.short",
    "weight.preempted",
    "fair_share.half_life",
    "priority.age_max",
    "deadline.horizon",
    "priority.short_max",
    "priority.starve_after",
    "backfill.depth",
    "pool.default",
    "preempt.min_runtime",
    "preempt.grace",
    "preempt.restart_cost",
    "preempt.victims",
    "preempt.budget",
    "preempt.qos_gain",
    "defrag.per_hour",
    "requeue.max",
    "gpu_failure.drain",
    "checkpoint.keep",
];

impl PolicyConfig {
    /// Every setting and its value, in a stable order, as `config set` takes them.
    pub fn entries(&self) -> Vec<(String, String)> {
        let w = &self.weights;
        let mut entries: Vec<(String, String)> = [
            ("profile", self.profile.as_str().to_string()),
            ("weight.age", w.age.to_string()),
            ("weight.fair_share", w.fair_share.to_string()),
            ("weight.qos", w.qos.to_string()),
            ("weight.deadline", w.deadline.to_string()),
            ("weight.size", w.size.to_string()),
            ("weight.short", w.short.to_string()),
            ("weight.preempted", w.preempted.to_string()),
            (
                "fair_share.half_life",
                format_duration_ms(self.half_life_ms),
            ),
            ("priority.age_max", format_duration_ms(self.age_max_ms)),
            (
                "deadline.horizon",
                format_duration_ms(self.deadline_horizon_ms),
            ),
            (
                "priority.short_max",
                format_duration_ms(self.short_max_gpu_ms),
            ),
            (
                "priority.starve_after",
                self.starve_after_ms
                    .map_or_else(|| "none".to_string(), format_duration_ms),
            ),
            ("backfill.depth", self.reservation_depth.to_string()),
            ("pool.default", self.default_pool.clone()),
            (
                "preempt.min_runtime",
                format_duration_ms(self.preemption.min_runtime_ms),
            ),
            (
                "preempt.grace",
                format_duration_ms(self.preemption.grace_ms),
            ),
            (
                "preempt.restart_cost",
                format_duration_ms(self.preemption.restart_cost_ms),
            ),
            (
                "preempt.victims",
                self.preemption.victims.as_str().to_string(),
            ),
            ("preempt.budget", self.preemption.budget.to_string()),
            ("preempt.qos_gain", self.preemption.qos_gain.to_string()),
            (
                "defrag.per_hour",
                self.preemption.defrag_per_hour.to_string(),
            ),
            ("requeue.max", self.max_requeues.to_string()),
            ("gpu_failure.drain", self.drain_on_gpu_failure.to_string()),
            (
                "checkpoint.keep",
                self.checkpoint_keep_ms
                    .map_or_else(|| "none".to_string(), format_duration_ms),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (name, level) in &self.qos {
            entries.push((format!("qos.{name}.priority"), level.priority.to_string()));
            entries.push((format!("qos.{name}.preempts"), level.preempts.join(",")));
        }
        let time = |t: Option<u64>| t.map_or_else(|| "none".to_string(), format_duration_ms);
        for (name, pool) in &self.pools {
            entries.push((
                format!("pool.{name}.default_time"),
                time(pool.default_time_ms),
            ));
            entries.push((format!("pool.{name}.max_time"), time(pool.max_time_ms)));
            entries.push((format!("pool.{name}.accounts"), pool.accounts.join(",")));
        }
        entries
    }

    /// Changes one setting; on error nothing changes. Setting `qos.NAME.priority` for a new
    /// name creates that level.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::BadValue {
            key: key.to_string(),
            why,
        };
        let value = value.trim();
        let weight = || -> Result<u32, ConfigError> {
            value
                .parse::<u32>()
                .ok()
                .filter(|w| *w <= MAX_WEIGHT)
                .ok_or_else(|| {
                    bad(format!(
                        "a weight is a whole number from 0 to {MAX_WEIGHT} (got {value:?})"
                    ))
                })
        };
        let duration = || -> Result<u64, ConfigError> {
            parse_duration_ms(value)
                .ok()
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "expected a duration longer than 0 such as 7d, 12h or 90m (got {value:?})"
                    ))
                })
        };
        // Zero allowed: no minimum runtime, an instant stop, a free restart.
        let any_duration = || -> Result<u64, ConfigError> {
            parse_duration_ms(value).map_err(|_| {
                bad(format!(
                    "expected a duration such as 0s, 2m or 1h (got {value:?})"
                ))
            })
        };
        let duration_or_none = || -> Result<Option<u64>, ConfigError> {
            match value {
                "none" => Ok(None),
                _ => parse_duration_ms(value).map(Some).map_err(|_| {
                    bad(format!(
                        "expected a duration such as 7d or 0s, or none (got {value:?})"
                    ))
                }),
            }
        };
        let count = |max: u32| -> Result<u32, ConfigError> {
            value
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| bad(format!("a whole number from 0 to {max} (got {value:?})")))
        };
        match key {
            "defrag.per_hour" => self.preemption.defrag_per_hour = count(MAX_COUNT)?,
            "requeue.max" => self.max_requeues = count(MAX_COUNT)?,
            "gpu_failure.drain" => {
                self.drain_on_gpu_failure = value
                    .parse()
                    .map_err(|_| bad(format!("true or false (got {value:?})")))?;
            }
            "checkpoint.keep" => self.checkpoint_keep_ms = duration_or_none()?,
            "priority.starve_after" => self.starve_after_ms = duration_or_none()?,
            "preempt.min_runtime" => self.preemption.min_runtime_ms = any_duration()?,
            "preempt.grace" => self.preemption.grace_ms = any_duration()?,
            "preempt.restart_cost" => self.preemption.restart_cost_ms = any_duration()?,
            "preempt.budget" => self.preemption.budget = count(MAX_COUNT)?,
            "preempt.qos_gain" => self.preemption.qos_gain = count(MAX_COUNT)?,
            "preempt.victims" => {
                self.preemption.victims = VictimOrder::ALL
                    .into_iter()
                    .find(|v| v.as_str() == value)
                    .ok_or_else(|| {
                        bad(format!(
                            "one of {} (got {value:?})",
                            VictimOrder::ALL.map(VictimOrder::as_str).join(", ")
                        ))
                    })?;
            }
            "profile" => {
                self.profile = SchedulingProfile::parse(value).ok_or_else(|| {
                    bad(format!(
                        "a profile is one of {} (got {value:?})",
                        SchedulingProfile::ALL
                            .map(SchedulingProfile::as_str)
                            .join(", ")
                    ))
                })?;
            }
            "weight.age" => self.weights.age = weight()?,
            "weight.fair_share" => self.weights.fair_share = weight()?,
            "weight.qos" => self.weights.qos = weight()?,
            "weight.deadline" => self.weights.deadline = weight()?,
            "weight.size" => self.weights.size = weight()?,
            "weight.short" => self.weights.short = weight()?,
            "weight.preempted" => self.weights.preempted = weight()?,
            "fair_share.half_life" => self.half_life_ms = duration()?,
            "priority.age_max" => self.age_max_ms = duration()?,
            "deadline.horizon" => self.deadline_horizon_ms = duration()?,
            "priority.short_max" => self.short_max_gpu_ms = duration()?,
            "backfill.depth" => self.reservation_depth = count(MAX_RESERVATION_DEPTH)?,
            "pool.default" => {
                if !gantry_model::names::is_plain_name(value) {
                    return Err(bad(format!(
                        "a pool name is 1 to 64 letters, digits, '-', '_' or '.' (got {value:?})"
                    )));
                }
                self.default_pool = value.to_string();
            }
            _ if key.starts_with("pool.") => return self.set_pool(key, value),
            _ => return self.set_qos(key, value),
        }
        Ok(())
    }

    /// `pool.NAME.default_time`, `pool.NAME.max_time` (a duration, or `none`) and
    /// `pool.NAME.accounts` (names separated by commas; empty: any account).
    fn set_pool(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let unknown = || ConfigError::UnknownKey(key.to_string());
        let rest = key.strip_prefix("pool.").ok_or_else(unknown)?;
        let (name, field) = rest.rsplit_once('.').ok_or_else(unknown)?;
        let bad = |why: String| ConfigError::BadValue {
            key: key.to_string(),
            why,
        };
        if !gantry_model::names::is_plain_name(name) {
            return Err(bad(format!(
                "a pool name is 1 to 64 letters, digits, '-', '_' or '.' (got {name:?})"
            )));
        }
        let time = || -> Result<Option<u64>, ConfigError> {
            if value == "none" {
                return Ok(None);
            }
            parse_duration_ms(value)
                .ok()
                .filter(|ms| *ms > 0)
                .map(Some)
                .ok_or_else(|| {
                    bad(format!(
                        "expected a duration longer than 0 such as 24h, or none (got {value:?})"
                    ))
                })
        };
        let mut limits = self.pools.get(name).cloned().unwrap_or_default();
        match field {
            "default_time" => limits.default_time_ms = time()?,
            "max_time" => limits.max_time_ms = time()?,
            "accounts" => {
                let mut accounts: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect();
                accounts.sort();
                accounts.dedup();
                if let Some(bad_name) = accounts
                    .iter()
                    .find(|a| !gantry_model::names::is_plain_name(a))
                {
                    return Err(bad(format!("{bad_name:?} is not an account name")));
                }
                limits.accounts = accounts;
            }
            _ => return Err(unknown()),
        }
        if let (Some(default), Some(max)) = (limits.default_time_ms, limits.max_time_ms)
            && default > max
        {
            return Err(bad(format!(
                "the default time limit ({}) would be above the maximum ({})",
                format_duration_ms(default),
                format_duration_ms(max)
            )));
        }
        if limits == PoolLimits::default() {
            self.pools.remove(name);
        } else {
            self.pools.insert(name.to_string(), limits);
        }
        Ok(())
    }

    fn set_qos(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let unknown = || ConfigError::UnknownKey(key.to_string());
        let rest = key.strip_prefix("qos.").ok_or_else(unknown)?;
        let (name, field) = rest.rsplit_once('.').ok_or_else(unknown)?;
        let bad = |why: String| ConfigError::BadValue {
            key: key.to_string(),
            why,
        };
        check_qos_name(name).map_err(bad)?;
        match field {
            "priority" => {
                let priority = value
                    .parse::<u32>()
                    .ok()
                    .filter(|p| *p <= FACTOR_MAX)
                    .ok_or_else(|| {
                        bad(format!(
                            "a QoS priority is a whole number from 0 to {FACTOR_MAX} (got {value:?})"
                        ))
                    })?;
                self.qos
                    .entry(name.to_string())
                    .or_insert_with(|| QosLevel {
                        priority,
                        preempts: vec![],
                    })
                    .priority = priority;
            }
            "preempts" => {
                if !self.qos.contains_key(name) {
                    return Err(bad(format!(
                        "no QoS level {name:?}; create it with qos.{name}.priority first"
                    )));
                }
                let mut preempts: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                preempts.sort();
                preempts.dedup();
                if let Some(unknown) = preempts.iter().find(|p| !self.qos.contains_key(*p)) {
                    return Err(bad(format!("no QoS level {unknown:?}")));
                }
                if preempts.iter().any(|p| p == name) {
                    return Err(bad("a QoS level cannot preempt itself".into()));
                }
                if let Some(level) = self.qos.get_mut(name) {
                    level.preempts = preempts;
                }
            }
            _ => return Err(unknown()),
        }
        Ok(())
    }

    /// The QoS factor of level `name`; `None` when there is no such level.
    pub fn qos_priority(&self, name: &str) -> Option<u32> {
        self.qos.get(name).map(|level| level.priority)
    }

    /// The level names, for messages.
    pub fn qos_names(&self) -> Vec<&str> {
        self.qos.keys().map(String::as_str).collect()
    }
}

/// QoS names: letters, digits, `-` and `_`, 1 to 32 characters.
pub fn check_qos_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "QoS name {name:?} must be 1 to 32 letters, digits, '-' or '_'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_have_three_qos_levels_and_round_trip_through_set() {
        let config = PolicyConfig::default();
        assert_eq!(config.qos_names(), ["high", "low", "normal"]);
        let mut copy = PolicyConfig {
            qos: BTreeMap::new(),
            ..PolicyConfig::default()
        };
        // Levels first (preempts names them), then everything else.
        let entries = config.entries();
        for (key, value) in entries.iter().filter(|(k, _)| k.ends_with(".priority")) {
            copy.set(key, value).unwrap();
        }
        for (key, value) in &entries {
            copy.set(key, value).unwrap();
        }
        assert_eq!(copy, config);
    }

    #[test]
    fn bad_settings_are_refused_and_change_nothing() {
        let mut config = PolicyConfig::default();
        let before = config.clone();
        let cases = [
            ("weight.size", "-1", "a weight is a whole number"),
            (
                "profile",
                "pbs",
                "a profile is one of gantry, slurm-like, fifo",
            ),
            ("weight.size", "2000000", "a weight is a whole number"),
            ("fair_share.half_life", "0", "longer than 0"),
            ("fair_share.half_life", "soon", "expected a duration"),
            ("backfill.depth", "1001", "from 0 to 1000"),
            ("qos.high.priority", "1001", "from 0 to 1000"),
            ("qos.bad name.priority", "1", "must be 1 to 32"),
            (
                "qos.urgent.preempts",
                "low",
                "create it with qos.urgent.priority first",
            ),
            ("qos.high.preempts", "low,nosuch", "no QoS level \"nosuch\""),
            ("qos.high.preempts", "high", "cannot preempt itself"),
            ("pool.gpu.max_time", "0s", "longer than 0"),
            ("pool.bad name.max_time", "1h", "a pool name is"),
            (
                "pool.gpu.accounts",
                "ok,not ok",
                "\"not ok\" is not an account name",
            ),
        ];
        for (key, value, expected) in cases {
            let err = config.set(key, value).unwrap_err().to_string();
            assert!(err.contains(expected), "{key}={value}: {err}");
            assert!(err.starts_with(key), "{err}");
        }
        for key in [
            "weight",
            "qos.high",
            "qos.high.colour",
            "nosuch",
            "pool.gpu.colour",
        ] {
            assert_eq!(
                config.set(key, "1"),
                Err(ConfigError::UnknownKey(key.into()))
            );
        }
        assert_eq!(config, before);
        config.set("qos.urgent.priority", "900").unwrap();
        config
            .set("qos.urgent.preempts", " normal , low,low")
            .unwrap();
        assert_eq!(config.qos["urgent"].preempts, ["low", "normal"]);
        config.set("fair_share.half_life", "2d").unwrap();
        assert_eq!(config.half_life_ms, 2 * DAY_MS);
    }

    /// Pool limits: set, listed, round-tripped; a default above the maximum is refused; a pool
    /// with no limit left is forgotten.
    #[test]
    fn pool_limits_are_set_listed_and_checked() {
        let mut config = PolicyConfig::default();
        config.set("pool.gpu.max_time", "24h").unwrap();
        config.set("pool.gpu.default_time", "1h").unwrap();
        config
            .set("pool.gpu.accounts", "vision, nlp,vision")
            .unwrap();
        assert_eq!(
            config.pools["gpu"],
            PoolLimits {
                default_time_ms: Some(3_600_000),
                max_time_ms: Some(86_400_000),
                accounts: vec!["nlp".into(), "vision".into()],
            }
        );
        let listed: Vec<(String, String)> = config
            .entries()
            .into_iter()
            .filter(|(k, _)| k.starts_with("pool.gpu."))
            .collect();
        assert_eq!(
            listed,
            [
                ("pool.gpu.default_time".into(), "1:00:00".into()),
                ("pool.gpu.max_time".into(), "1-00:00:00".into()),
                ("pool.gpu.accounts".into(), "nlp,vision".into()),
            ]
        );
        let mut copy = PolicyConfig::default();
        for (key, value) in &listed {
            copy.set(key, value).unwrap();
        }
        assert_eq!(copy, config);
        let err = config
            .set("pool.gpu.max_time", "30m")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("default time limit (1:00:00) would be above the maximum (30:00)"),
            "{err}"
        );
        for (key, value) in [
            ("pool.gpu.default_time", "none"),
            ("pool.gpu.max_time", "none"),
            ("pool.gpu.accounts", ""),
        ] {
            config.set(key, value).unwrap();
        }
        assert!(config.pools.is_empty());
    }
}
