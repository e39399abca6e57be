//! The Philly job table (`timestamp,duration,num_gpus,gpu_time,cluster`) as the Pollux authors
//! flattened it: submit times are wall-clock and unsorted; the virtual cluster becomes the
//! account; users are drawn from the seed (the table has none).

use gantry_model::units::parse_time_ms;

use super::gantry::seconds_ms;
use super::{
    ReadOptions, Rows, Trace, TraceError, TraceJob, assigned_user, exactly, gang, read_rows,
};

const HEADER: [&str; 5] = ["timestamp", "duration", "num_gpus", "gpu_time", "cluster"];

pub(super) fn parse(file: &str, text: &str, options: &ReadOptions) -> Result<Trace, TraceError> {
    let mut rows = Rows::new(file, options);
    // (wall-clock submit, job) until the earliest submit is known.
    let read: Vec<(u64, TraceJob)> =
        read_rows(text, &mut rows, exactly(&HEADER), |(), record, index, _| {
            row(record, index, options)
        })?;
    let start = read.iter().map(|(at, _)| *at).min().unwrap_or(0);
    let jobs = read
        .into_iter()
        .map(|(at, mut job)| {
            job.submit_ms = at - start;
            job
        })
        .collect();
    Ok(rows.finish(jobs))
}

fn row(
    record: &csv::StringRecord,
    index: u64,
    options: &ReadOptions,
) -> Result<(u64, TraceJob), String> {
    let field = |i: usize| record.get(i).unwrap_or("");
    let at = parse_time_ms(field(0), 0)
        .map_err(|_| format!("timestamp {:?} is not a time", field(0)))?;
    let duration_ms = seconds_ms(field(1))
        .ok_or_else(|| format!("duration {:?} is not a number of seconds", field(1)))?;
    let gpus: u32 = field(2)
        .parse()
        .ok()
        .filter(|g| *g > 0)
        .ok_or_else(|| format!("num_gpus {:?} is not a whole number above 0", field(2)))?;
    let account = field(4);
    if account.is_empty() {
        return Err("cluster is empty".into());
    }
    let (num_nodes, gpus_per_node) = gang(gpus, options.gpus_per_node);
    Ok((
        at,
        TraceJob {
            num_nodes,
            gpus_per_node,
            duration_ms,
            ..TraceJob::plain(
                index + 1,
                0,
                assigned_user(options.seed, index),
                format!("vc-{account}"),
            )
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rows_relative_to_the_first_submit_and_skips_bad_ones() {
        let text = "timestamp,duration,num_gpus,gpu_time,cluster
2017-10-09 07:01:55,66.0,1,66.0,11cb48
2017-10-09 06:13:03,2951.5,16,47224.0,6214e9
2017-10-09 99:00:00,1.0,1,1.0,6214e9
2017-10-09 06:13:04,1.0,0,0.0,6214e9
2017-10-09 06:13:05,1.0,1,1.0

";
        let options = ReadOptions {
            strict: false,
            seed: 3,
            gpus_per_node: 8,
            limit_jobs: None,
            app_profiles: None,
        };
        let trace = parse("p.csv", text, &options).unwrap();
        assert_eq!(trace.jobs.len(), 2);
        let first = &trace.jobs[0];
        assert_eq!(
            (first.id, first.submit_ms, first.duration_ms),
            (1, 2_932_000, 66_000)
        );
        let second = &trace.jobs[1];
        assert_eq!(
            (second.submit_ms, second.num_nodes, second.gpus_per_node),
            (0, 2, 8)
        );
        assert_eq!(second.account, "vc-6214e9");
        assert_eq!(trace.skipped.len(), 3, "{:?}", trace.skipped);
        assert!(
            trace.skipped[0].starts_with("p.csv:4: timestamp"),
            "{:?}",
            trace.skipped
        );
        assert!(trace.skipped[1].starts_with("p.csv:5: num_gpus"));
        assert!(trace.skipped[2].starts_with("p.csv:6: expected 5 fields"));
        let strict = ReadOptions {
            strict: true,
            ..options
        };
        assert!(parse("p.csv", text, &strict).is_err());
        assert!(parse("p.csv", "a,b\n", &strict).is_err());
    }
}
