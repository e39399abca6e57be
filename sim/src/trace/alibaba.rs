//! The Alibaba "openb" pod lists (`name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,
//! pod_phase,creation_time,deletion_time,scheduled_time`). Gantry gives whole GPUs, so a pod
//! asking for a share of one (`gpu_milli` < 1000) gets a whole one; a pod of several allowed
//! GPU types (`gpu_spec` `A|B`) may use any; the QoS class is the account (the trace has no
//! tenant) and maps to a QoS level (BE → low, Guaranteed → high, others normal).

use super::gantry::seconds_ms;
use super::{
    ReadOptions, Rows, Trace, TraceError, TraceJob, assigned_user, exactly, gang, read_rows,
};

const HEADER: [&str; 11] = [
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
];

pub(super) fn parse(file: &str, text: &str, options: &ReadOptions) -> Result<Trace, TraceError> {
    let mut rows = Rows::new(file, options);
    let jobs = read_rows(text, &mut rows, exactly(&HEADER), |(), record, index, _| {
        pod(record, index, options)
    })?;
    Ok(rows.finish(jobs))
}

fn pod(record: &csv::StringRecord, index: u64, options: &ReadOptions) -> Result<TraceJob, String> {
    let field = |i: usize| record.get(i).unwrap_or("");
    let time = |i: usize| {
        seconds_ms(field(i))
            .ok_or_else(|| format!("{} {:?} is not a time in seconds", HEADER[i], field(i)))
    };
    let gpus: u32 = field(3)
        .parse()
        .map_err(|_| format!("num_gpu {:?} is not a whole number", field(3)))?;
    if field(10).is_empty() {
        return Err("never scheduled (no scheduled_time): no run time to replay".into());
    }
    let created = time(8)?;
    let deleted = time(9)?;
    let scheduled = time(10)?.max(created);
    if deleted < scheduled {
        return Err(format!(
            "deleted at {} s, before it was scheduled",
            field(9)
        ));
    }
    let class = field(6);
    if class.is_empty() {
        return Err("qos is empty".into());
    }
    let qos = match class {
        "BE" => "low",
        "Guaranteed" => "high",
        _ => "normal",
    };
    let types: Vec<&str> = field(5).split('|').filter(|t| !t.is_empty()).collect();
    let (num_nodes, gpus_per_node) = gang(gpus, options.gpus_per_node);
    Ok(TraceJob {
        num_nodes: if gpus == 0 { 1 } else { num_nodes },
        gpus_per_node: if gpus == 0 { 0 } else { gpus_per_node },
        gpu_model: (types.len() == 1).then(|| types[0].to_string()),
        duration_ms: deleted - scheduled,
        qos: qos.to_string(),
        ..TraceJob::plain(
            index + 1,
            created,
            assigned_user(options.seed, index),
            class.to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_become_whole_gpu_jobs_and_bad_rows_are_reported() {
        let text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
openb-pod-0000,12000,16384,1,460,,LS,Running,10,1010,12
openb-pod-0001,6000,12288,8,1000,V100M16,BE,Running,20,120,20
openb-pod-0002,6000,12288,0,0,,Guaranteed,Running,30,40,30
openb-pod-0003,6000,12288,1,1000,,LS,Running,40,30,40
openb-pod-0004,6000,12288,x,1000,,LS,Running,40,50,40
";
        let options = ReadOptions {
            strict: false,
            seed: 0,
            gpus_per_node: 8,
            limit_jobs: None,
            app_profiles: None,
        };
        let trace = parse("a.csv", text, &options).unwrap();
        let shapes: Vec<_> = trace
            .jobs
            .iter()
            .map(|j| {
                (
                    j.submit_ms,
                    j.gpus_per_node,
                    j.duration_ms,
                    j.account.as_str(),
                    j.qos.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shapes,
            [
                (10_000, 1, 998_000, "LS", "normal"),
                (20_000, 8, 100_000, "BE", "low"),
                (30_000, 0, 10_000, "Guaranteed", "high"),
            ]
        );
        assert_eq!(trace.jobs[1].gpu_model.as_deref(), Some("V100M16"));
        assert_eq!(trace.skipped.len(), 2, "{:?}", trace.skipped);
        assert!(
            trace.skipped[0].starts_with("a.csv:5: deleted at"),
            "{:?}",
            trace.skipped
        );
        assert!(trace.skipped[1].starts_with("a.csv:6: num_gpu"));
    }
}
