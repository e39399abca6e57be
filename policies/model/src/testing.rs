//! Fixtures shared by the tests of every crate (feature `testing`): one place that knows
//! how to write a plain, valid job, and a node.

use crate::job::{JobSpec, Program};
use crate::node::{Gpu, NodeInventory};

/// A node of the default pool with `gpus` fake GPUs (one NVLink group, no NUMA), `cpus`
/// CPUs and `mem_mib` of memory.
pub fn node_inventory(gpus: u32, cpus: u32, mem_mib: u64) -> NodeInventory {
    NodeInventory {
        gpus: (0..gpus)
            .map(|index| Gpu {
                index,
                model: "fake".into(),
                memory_mib: 1024,
                nvlink_group: 0,
                numa_node: None,
                uuid: String::new(),
            })
            .collect(),
        cpus,
        mem_mib,
        pool: "default".into(),
        labels: vec![],
    }
}

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
