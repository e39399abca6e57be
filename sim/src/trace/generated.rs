//! Generated workloads: a seeded generator whose parameters are frozen and documented
//! (docs/simulation.md, "The scoreboard") before any policy is tuned against them, so the
//! scoreboard measures the scheduler, not how well it was fitted to one trace.
//!
//! Every kind draws, per job: a team (four, of unequal demand), a size (GPUs per node ×
//! nodes), a run time (log-normal), a time limit padded the way users pad them, a QoS level,
//! sometimes a checkpoint interval, sometimes a deadline derived as deadline-scheduling papers
//! derive them (submit + λ × run time), and an arrival: Poisson, with bursts. The arrival rate
//! is set so that the work offered is a stated share of the cluster's GPU time.

use crate::trace::TraceJob;

/// The kinds of generated workload; each is one fixed set of parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Everything at once: 1-GPU jobs to 8-node gangs, QoS and checkpoint mixes, some
    /// deadlines, bursts.
    Mixed,
    /// Mostly multi-node gangs.
    Gangs,
    /// 1-GPU jobs only.
    SingleGpu,
    /// Half of the jobs with deadlines, tight ones among them.
    Deadlines,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Mixed, Kind::Gangs, Kind::SingleGpu, Kind::Deadlines];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mixed => "mixed",
            Kind::Gangs => "gangs",
            Kind::SingleGpu => "single-gpu",
            Kind::Deadlines => "deadlines",
        }
    }
}

/// The frozen parameters of a kind (see the module comment).
#[derive(Debug, Clone)]
pub struct Params {
    pub jobs: usize,
    /// Nodes × GPUs per node of the cluster it is meant for (`NODESxGPUS`).
    pub nodes: u32,
    pub gpus_per_node: u32,
    /// The GPU time offered over the arrival span, as a share of the cluster's.
    pub load: f64,
    /// (team, weight): how much of the work each team submits.
    pub teams: [(&'static str, u32); 4],
    /// (nodes, GPUs per node, weight).
    pub sizes: Vec<(u32, u32, u32)>,
    /// Log-normal run time: median and σ of its logarithm, clamped to [min, max].
    pub run_median_ms: u64,
    pub run_sigma: f64,
    pub run_min_ms: u64,
    pub run_max_ms: u64,
    /// Time limit = run time × U[1, pad_max], rounded up to `limit_step_ms`.
    pub pad_max: f64,
    pub limit_step_ms: u64,
    /// Per cent of jobs of QoS `low` and `high` (the rest `normal`).
    pub low_pct: u64,
    pub high_pct: u64,
    /// Per cent of jobs that checkpoint, every U[min, max] of work.
    pub checkpoint_pct: u64,
    pub checkpoint_ms: (u64, u64),
    /// Per cent of jobs with a deadline of submit + λ × run time, λ ∈ U[lo, hi].
    pub deadline_pct: u64,
    pub lambda: (f64, f64),
    /// Per cent of arrival events that are bursts of U[lo, hi] jobs at once.
    pub burst_pct: u64,
    pub burst: (u64, u64),
}

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

impl Params {
    /// The kind's parameters; `quick`: the same shape at a sixth of the size (CI).
    pub fn of(kind: Kind, quick: bool) -> Params {
        let base = Params {
            jobs: 3000,
            nodes: 32,
            gpus_per_node: 8,
            load: 0.9,
            teams: [("vision", 8), ("nlp", 4), ("speech", 2), ("robotics", 1)],
            sizes: vec![
                (1, 1, 40),
                (1, 2, 15),
                (1, 4, 15),
                (1, 8, 15),
                (2, 8, 8),
                (4, 8, 5),
                (8, 8, 2),
            ],
            run_median_ms: 30 * MINUTE,
            run_sigma: 1.5,
            run_min_ms: MINUTE,
            run_max_ms: 48 * HOUR,
            pad_max: 4.0,
            limit_step_ms: 10 * MINUTE,
            low_pct: 10,
            high_pct: 10,
            checkpoint_pct: 30,
            checkpoint_ms: (10 * MINUTE, 30 * MINUTE),
            deadline_pct: 20,
            lambda: (1.5, 5.0),
            burst_pct: 10,
            burst: (5, 20),
        };
        let mut params = match kind {
            Kind::Mixed => base,
            Kind::Gangs => Params {
                sizes: vec![(1, 8, 20), (2, 8, 35), (4, 8, 30), (8, 8, 15)],
                jobs: 1500,
                ..base
            },
            Kind::SingleGpu => Params {
                sizes: vec![(1, 1, 1)],
                ..base
            },
            Kind::Deadlines => Params {
                deadline_pct: 50,
                lambda: (1.2, 4.0),
                ..base
            },
        };
        if quick {
            params.jobs /= 6;
            params.nodes /= 4;
            // Gangs as wide as the smaller cluster allows.
            let widest = params.nodes;
            for size in &mut params.sizes {
                size.0 = size.0.min(widest);
            }
        }
        params
    }

    /// The cluster it is meant for, as `gantry-sim --cluster` takes it.
    pub fn cluster(&self) -> String {
        format!("{}x{}", self.nodes, self.gpus_per_node)
    }
}

/// splitmix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn percent(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }

    /// A standard normal draw (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// One of `items` by weight.
    fn pick<'a, T>(&mut self, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
        let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
        let mut at = self.next() % total.max(1);
        for item in items {
            let w = u64::from(weight(item));
            if at < w {
                return item;
            }
            at -= w;
        }
        &items[items.len() - 1]
    }
}

/// The workload of `params` drawn from `seed`, sorted by submit time.
pub fn generate(params: &Params, seed: u64) -> Vec<TraceJob> {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED);
    let mut jobs = Vec::with_capacity(params.jobs);
    for id in 1..=params.jobs as u64 {
        let (team, _) = *rng.pick(&params.teams, |t| t.1);
        let (num_nodes, gpus_per_node, _) = *rng.pick(&params.sizes, |s| s.2);
        let run = (params.run_median_ms as f64 * (params.run_sigma * rng.normal()).exp())
            .round()
            .clamp(params.run_min_ms as f64, params.run_max_ms as f64) as u64;
        let padded = run as f64 * rng.between(1.0, params.pad_max);
        let limit = (padded / params.limit_step_ms as f64).ceil() as u64 * params.limit_step_ms;
        let qos = if rng.percent(params.low_pct) {
            "low"
        } else if rng.percent(params.high_pct * 100 / (100 - params.low_pct).max(1)) {
            "high"
        } else {
            "normal"
        };
        let checkpoint = rng.percent(params.checkpoint_pct).then(|| {
            rng.between(params.checkpoint_ms.0 as f64, params.checkpoint_ms.1 as f64) as u64
        });
        let lambda = rng
            .percent(params.deadline_pct)
            .then(|| rng.between(params.lambda.0, params.lambda.1));
        let mut job = TraceJob::plain(id, 0, format!("{team}-user"), team.to_string());
        job.num_nodes = num_nodes;
        job.gpus_per_node = gpus_per_node;
        job.duration_ms = run;
        job.time_limit_ms = Some(limit.max(run));
        job.qos = qos.to_string();
        job.checkpoint_interval_ms = checkpoint;
        // The deadline is set once the submit time is known: λ is kept meanwhile.
        job.deadline_ms = lambda.map(|l| (l * run as f64).round() as u64);
        jobs.push(job);
    }
    // Arrivals: the offered GPU time spread over a span at the stated load; Poisson gaps
    // between arrival events, an event a burst now and then.
    let offered: f64 = jobs
        .iter()
        .map(|j| f64::from(j.num_nodes * j.gpus_per_node) * j.duration_ms as f64)
        .sum();
    let capacity = f64::from(params.nodes * params.gpus_per_node);
    let span = offered / (capacity * params.load);
    let mut events = 0usize;
    let mut at = 0usize;
    let mut sizes = Vec::new();
    while at < jobs.len() {
        let size = if rng.percent(params.burst_pct) {
            rng.between(params.burst.0 as f64, params.burst.1 as f64 + 1.0) as usize
        } else {
            1
        };
        sizes.push(size);
        at += size;
        events += 1;
    }
    let mean_gap = span / events.max(1) as f64;
    let mut now = 0.0;
    let mut index = 0;
    for size in sizes {
        now += -mean_gap * (1.0 - rng.unit()).ln();
        for job in jobs.iter_mut().skip(index).take(size) {
            job.submit_ms = now.round() as u64;
            job.deadline_ms = job.deadline_ms.map(|slack| job.submit_ms + slack);
        }
        index += size;
    }
    jobs.sort_by_key(|j| (j.submit_ms, j.id));
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_workload_and_the_parameters_hold() {
        let params = Params::of(Kind::Mixed, false);
        let jobs = generate(&params, 7);
        assert_eq!(jobs, generate(&params, 7), "the same seed, the same jobs");
        assert_ne!(jobs, generate(&params, 8));
        assert_eq!(jobs.len(), params.jobs);
        let share = |f: &dyn Fn(&TraceJob) -> bool| {
            jobs.iter().filter(|j| f(j)).count() as f64 / jobs.len() as f64
        };
        // Within a few points of what was asked.
        assert!((share(&|j| j.qos == "low") - 0.10).abs() < 0.03);
        assert!((share(&|j| j.qos == "high") - 0.10).abs() < 0.03);
        assert!((share(&|j| j.checkpoint_interval_ms.is_some()) - 0.30).abs() < 0.04);
        assert!((share(&|j| j.deadline_ms.is_some()) - 0.20).abs() < 0.04);
        assert!(share(&|j| j.num_nodes * j.gpus_per_node == 1) > 0.3);
        for j in &jobs {
            let limit = j.time_limit_ms.unwrap();
            assert!(limit >= j.duration_ms && limit <= 4 * j.duration_ms + 10 * MINUTE);
            if let Some(deadline) = j.deadline_ms {
                assert!(deadline >= j.submit_ms + j.duration_ms);
            }
        }
        // The offered load over the arrival span is about the one asked for.
        let span = jobs.last().unwrap().submit_ms as f64;
        let offered: f64 = jobs
            .iter()
            .map(|j| f64::from(j.num_nodes * j.gpus_per_node) * j.duration_ms as f64)
            .sum();
        let load = offered / (256.0 * span);
        assert!((0.7..1.2).contains(&load), "load {load}");
        let single = generate(&Params::of(Kind::SingleGpu, false), 1);
        assert!(single.iter().all(|j| j.num_nodes * j.gpus_per_node == 1));
        let quick = Params::of(Kind::Gangs, true);
        assert!(quick.sizes.iter().all(|s| s.0 <= quick.nodes));
    }

    #[test]
    fn a_generated_workload_reads_back_from_its_csv() {
        let jobs = generate(&Params::of(Kind::Mixed, true), 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.csv");
        std::fs::write(&path, crate::trace::to_gantry_csv(&jobs)).unwrap();
        let options = crate::trace::ReadOptions {
            strict: true,
            seed: 0,
            gpus_per_node: 8,
            limit_jobs: None,
            app_profiles: None,
        };
        let read = crate::trace::read(&path, crate::trace::Format::Gantry, &options).unwrap();
        assert_eq!(read.jobs, jobs);
    }
}
