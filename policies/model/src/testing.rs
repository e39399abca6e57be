//! Fixtures shared by the tests of every crate (feature `testing`): one place that knows
//! how to write a plain, valid job.

use crate::job::{JobSpec, Program};

/// A valid job of `num_nodes` nodes × `gpus_per_node` GPUs, 1 CPU and 256 MiB each,
/// running `true` in /tmp.
pub fn job_spec(num_nodes: u32, gpus_per_node: u32) -> JobSpec {
    JobSpec {
        name: "j".into(),
        account: "default".into(),
        num_nodes,
        gpus_per_node,
        gpu_model: None,
        alternatives: vec![],
        cpus_per_node: 1,
        mem_per_node_mib: 256,
        time_limit_ms: None,
        qos: "normal".into(),
        deadline_ms: None,
        pool: None,
        constraints: vec![],
        dependencies: vec![],
        program: Program::Command {
            argv: vec!["true".into()],
        },
        work_dir: "/tmp".into(),
        stdout_path: None,
        stderr_path: None,
        env: vec![],
        checkpoint: None,
        requeue: Default::default(),
        reservation: None,
        open_mode: None,
    }
}
