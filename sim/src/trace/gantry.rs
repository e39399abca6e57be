//! Gantry's generic trace CSV: a header row naming the columns (any order), then one job per
//! row. `job_id`, `submit_time_s`, `gpus_per_node` and `duration_s` are required; `user`,
//! `account`, `num_nodes`, `gpu_model`, `time_limit_s`, `deadline_s`, `qos` and
//! `checkpoint_interval_s` may be absent or empty. Times are seconds from the start of the
//! trace (decimals allowed).

use std::collections::BTreeMap;

use super::{ReadOptions, Rows, Trace, TraceError, TraceJob, assigned_user, read_rows};

const COLUMNS: [&str; 12] = [
    "job_id",
    "submit_time_s",
    "user",
    "account",
    "num_nodes",
    "gpus_per_node",
    "gpu_model",
    "duration_s",
    "time_limit_s",
    "deadline_s",
    "qos",
    "checkpoint_interval_s",
];
const REQUIRED: [&str; 4] = ["job_id", "submit_time_s", "gpus_per_node", "duration_s"];

pub(super) fn parse(file: &str, text: &str, options: &ReadOptions) -> Result<Trace, TraceError> {
    let columns = |header: &csv::StringRecord| -> Result<BTreeMap<&'static str, usize>, String> {
        let mut at = BTreeMap::new();
        for (i, name) in header.iter().enumerate() {
            let Some(known) = COLUMNS.iter().find(|c| **c == name) else {
                return Err(format!(
                    "unknown column {name:?} (columns: {})",
                    COLUMNS.join(", ")
                ));
            };
            at.insert(*known, i);
        }
        match REQUIRED.iter().find(|c| !at.contains_key(*c)) {
            Some(missing) => Err(format!("the column {missing:?} is required")),
            None => Ok(at),
        }
    };
    let mut rows = Rows::new(file, options);
    let read = read_rows(text, &mut rows, columns, |at, record, index, line| {
        job(record, at, index, options).map(|job| (line, job))
    })?;
    // A repeated id is reported on the repeat's own line.
    let mut ids = std::collections::BTreeSet::new();
    let mut jobs = Vec::new();
    for (line, job) in read {
        if ids.insert(job.id) {
            jobs.push(job);
        } else {
            rows.bad(line, format!("job id {} again", job.id))?;
        }
    }
    Ok(rows.finish(jobs))
}

fn job(
    record: &csv::StringRecord,
    at: &BTreeMap<&str, usize>,
    index: u64,
    options: &ReadOptions,
) -> Result<TraceJob, String> {
    let field = |name: &str| at.get(name).and_then(|i| record.get(*i)).unwrap_or("");
    let text = |name: &str| {
        Some(field(name))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let whole = |name: &str, default: Option<u64>| -> Result<u64, String> {
        match field(name) {
            "" => default.ok_or_else(|| format!("{name} is required")),
            v => v
                .parse::<u64>()
                .map_err(|_| format!("{name} {v:?} is not a whole number")),
        }
    };
    let count = |name: &str, default: Option<u64>| -> Result<u32, String> {
        let n = whole(name, default)?;
        u32::try_from(n).map_err(|_| format!("{name} {n} is too large"))
    };
    let seconds = |name: &str| -> Result<Option<u64>, String> {
        match field(name) {
            "" => Ok(None),
            v => seconds_ms(v)
                .map(Some)
                .ok_or_else(|| format!("{name} {v:?} is not a number of seconds")),
        }
    };
    let id = whole("job_id", None)?;
    let submit_ms = seconds("submit_time_s")?.ok_or("submit_time_s is required")?;
    let duration_ms = seconds("duration_s")?.ok_or("duration_s is required")?;
    let num_nodes = count("num_nodes", Some(1))?;
    if num_nodes == 0 {
        return Err("num_nodes must be at least 1".into());
    }
    let time_limit_ms = seconds("time_limit_s")?;
    if time_limit_ms == Some(0) {
        return Err("time_limit_s must be more than 0".into());
    }
    Ok(TraceJob {
        id,
        submit_ms,
        user: text("user").unwrap_or_else(|| assigned_user(options.seed, index)),
        account: text("account").unwrap_or_else(|| "default".into()),
        num_nodes,
        gpus_per_node: count("gpus_per_node", None)?,
        gpu_model: text("gpu_model"),
        duration_ms,
        time_limit_ms,
        deadline_ms: seconds("deadline_s")?,
        qos: text("qos").unwrap_or_else(|| "normal".into()),
        checkpoint_interval_ms: seconds("checkpoint_interval_s")?,
    })
}

/// Seconds, decimals allowed, into ms; `None` for anything else (negative, not finite).
pub(super) fn seconds_ms(text: &str) -> Option<u64> {
    let s: f64 = text.trim().parse().ok()?;
    if !s.is_finite() || s < 0.0 || s > (u64::MAX / 1000) as f64 {
        return None;
    }
    Some((s * 1000.0).round() as u64)
}

/// `jobs` in this format, every column present: what `parse` reads back.
pub fn write(jobs: &[TraceJob]) -> String {
    let seconds = |ms: u64| format!("{}", ms as f64 / 1000.0);
    let optional = |ms: Option<u64>| ms.map_or_else(String::new, seconds);
    let mut out = COLUMNS.join(",") + "\n";
    for j in jobs {
        let row = [
            j.id.to_string(),
            seconds(j.submit_ms),
            j.user.clone(),
            j.account.clone(),
            j.num_nodes.to_string(),
            j.gpus_per_node.to_string(),
            j.gpu_model.clone().unwrap_or_default(),
            seconds(j.duration_ms),
            optional(j.time_limit_ms),
            optional(j.deadline_ms),
            j.qos.clone(),
            optional(j.checkpoint_interval_ms),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(strict: bool) -> ReadOptions {
        ReadOptions {
            strict,
            seed: 1,
            gpus_per_node: 8,
            limit_jobs: None,
            app_profiles: None,
        }
    }

    const TEXT: &str = "job_id,submit_time_s,user,account,num_nodes,gpus_per_node,gpu_model,duration_s,time_limit_s,deadline_s,qos,checkpoint_interval_s
1,0,ann,vision,1,4,h100,3600,7200,,high,600
2,1.5,,,2,8,,60.25,,86400,,
3,oops,bob,nlp,1,1,,10,,,,
4,5,bob,nlp,1,1,,-3,,,,
5,6,bob,nlp,0,1,,10,,,,
1,7,bob,nlp,1,1,,10,,,,
";

    #[test]
    fn reads_every_column_and_reports_bad_rows_with_their_line() {
        let trace = parse("t.csv", TEXT, &options(false)).unwrap();
        assert_eq!(trace.jobs.len(), 2);
        let first = &trace.jobs[0];
        assert_eq!(
            (
                first.id,
                first.submit_ms,
                first.user.as_str(),
                first.account.as_str()
            ),
            (1, 0, "ann", "vision")
        );
        assert_eq!(
            (first.gpus_per_node, first.gpu_model.as_deref()),
            (4, Some("h100"))
        );
        assert_eq!(
            (first.duration_ms, first.time_limit_ms),
            (3_600_000, Some(7_200_000))
        );
        assert_eq!(
            (first.qos.as_str(), first.checkpoint_interval_ms),
            ("high", Some(600_000))
        );
        let second = &trace.jobs[1];
        assert_eq!(
            (second.submit_ms, second.num_nodes, second.duration_ms),
            (1_500, 2, 60_250)
        );
        assert_eq!(
            (second.account.as_str(), second.qos.as_str()),
            ("default", "normal")
        );
        assert_eq!(second.deadline_ms, Some(86_400_000));
        assert!(second.user.starts_with("user"));
        assert_eq!(
            trace.skipped,
            [
                "t.csv:4: submit_time_s \"oops\" is not a number of seconds",
                "t.csv:5: duration_s \"-3\" is not a number of seconds",
                "t.csv:6: num_nodes must be at least 1",
                "t.csv:7: job id 1 again",
            ]
        );
    }

    #[test]
    fn strict_mode_fails_on_the_first_bad_row_and_headers_are_checked() {
        let err = parse("t.csv", TEXT, &options(true))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.csv:4: submit_time_s \"oops\" is not a number of seconds"
        );
        let err = parse("t.csv", "job_id,when\n1,2\n", &options(false)).unwrap_err();
        assert!(err.to_string().contains("unknown column \"when\""), "{err}");
        let err = parse("t.csv", "job_id,submit_time_s\n1,2\n", &options(false)).unwrap_err();
        assert!(
            err.to_string().contains("\"gpus_per_node\" is required"),
            "{err}"
        );
    }
}
