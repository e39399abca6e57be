//! The Pollux (OSDI'21) and Sia (SOSP'23) benchmark workloads: `name,time,application,
//! num_replicas,batch_size`. The jobs carry no duration: each runs as long as its
//! application's measured throughput says it takes with the GPUs and batch size it asks for
//! (see `throughput`), plus the artifact's 30 s to start. No users or tenants: users come from
//! the seed, and each user is its own account.

use super::gantry::seconds_ms;
use super::throughput::Profiles;
use super::{
    ReadOptions, Rows, Trace, TraceError, TraceJob, assigned_user, exactly, gang, read_rows,
};

const HEADER: [&str; 5] = ["name", "time", "application", "num_replicas", "batch_size"];

/// What every (re)start costs in the Pollux artifact (`rescale_time`).
pub const START_COST_MS: u64 = 30_000;

pub(super) fn parse(
    file: &str,
    text: &str,
    profiles: &Profiles,
    options: &ReadOptions,
) -> Result<Trace, TraceError> {
    let mut rows = Rows::new(file, options);
    let jobs = read_rows(text, &mut rows, exactly(&HEADER), |(), record, index, _| {
        job(record, index, profiles, options)
    })?;
    Ok(rows.finish(jobs))
}

fn job(
    record: &csv::StringRecord,
    index: u64,
    profiles: &Profiles,
    options: &ReadOptions,
) -> Result<TraceJob, String> {
    let field = |i: usize| record.get(i).unwrap_or("");
    let number = |i: usize| -> Result<u32, String> {
        field(i)
            .parse()
            .map_err(|_| format!("{} {:?} is not a whole number", HEADER[i], field(i)))
    };
    // Sia's workloads write `401.0`.
    let submit_ms =
        seconds_ms(field(1)).ok_or_else(|| format!("time {:?} is not seconds", field(1)))?;
    let app_name = field(2);
    let app = profiles
        .app(app_name)
        .ok_or_else(|| format!("unknown application {app_name:?} (no profile for it)"))?;
    let (replicas, batch) = (number(3)?, number(4)?);
    let (num_nodes, gpus_per_node) = gang(replicas, options.gpus_per_node);
    let run_s = app
        .run_time_s(num_nodes * gpus_per_node, gpus_per_node, batch)
        .map_err(|why| format!("{app_name} with {replicas} GPUs, batch {batch}: {why}"))?;
    let user = assigned_user(options.seed, index);
    Ok(TraceJob {
        num_nodes,
        gpus_per_node,
        duration_ms: START_COST_MS + (run_s * 1000.0).round() as u64,
        ..TraceJob::plain(index + 1, submit_ms, user.clone(), user)
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn jobs_are_timed_by_their_profiles_and_bad_rows_are_reported() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pollux");
        let profiles = Profiles::load(&dir.join("profiles")).unwrap();
        let text = std::fs::read_to_string(dir.join("workload.csv")).unwrap();
        let options = ReadOptions {
            strict: false,
            seed: 3,
            gpus_per_node: 4,
            limit_jobs: None,
            app_profiles: None,
        };
        let trace = parse("w.csv", &text, &profiles, &options).unwrap();
        let got: Vec<_> = trace
            .jobs
            .iter()
            .map(|j| (j.id, j.submit_ms, j.num_nodes, j.gpus_per_node))
            .collect();
        assert_eq!(got, [(1, 53_000, 2, 4), (4, 368_000, 4, 4)]);
        // 30 s to start, then 869 s and 479 s of training.
        assert_eq!(trace.jobs[0].duration_ms, START_COST_MS + 868_992);
        assert_eq!(trace.jobs[1].duration_ms, START_COST_MS + 478_906);
        assert_eq!(trace.jobs[0].account, trace.jobs[0].user);
        assert_eq!(trace.skipped.len(), 2, "{:?}", trace.skipped);
        assert!(trace.skipped[0].starts_with("w.csv:3: time \"x\""));
        assert!(trace.skipped[1].starts_with("w.csv:4: unknown application \"bert\""));
        let strict = ReadOptions {
            strict: true,
            ..options
        };
        assert!(parse("w.csv", &text, &profiles, &strict).is_err());
        assert!(parse("w.csv", "name,time\n", &profiles, &strict).is_err());
    }
}
