//! GPU failures end to end: a failure injected through a node's fault file drains the node,
//! takes the GPU out of service, and requeues the job on it, which resumes from its
//! checkpoint on another node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;

use gantry_testkit::scripts::lines;
use gantry_testkit::{Site, nodes, wait_for, wait_state};

#[test]
fn an_injected_gpu_failure_drains_the_node_and_requeues_its_job() {
    let site = Site::start(&[]);
    let (url, work) = (site.url(), &site.work);
    let (id, _gpu1, _gpu2) = site.counter_on_first_of_two("gpu1", "gpu2");

    // The test hook: what NVML would report on a real GPU.
    let faults = site.dir.path().join("gpu1").join("gpu-faults");
    fs::write(&faults, "0 XID 79 (injected)\n").unwrap();
    let done = wait_state(url, id, "COMPLETED");
    assert_eq!(
        lines(&work.join("runs")),
        ["run 0 from 0", "run 1 from 20", "done"]
    );
    let runs = &done["attempts"];
    assert_eq!(runs[0]["outcome"], "NODE_FAIL", "{done}");
    assert_eq!(
        runs[0]["reason"],
        "GPU 0 on node gpu1 failed: XID 79 (injected)"
    );
    assert_eq!(runs[1]["allocation"][0], "gpu2:0");
    let gpu1 = wait_for("gpu1 to be DRAINED", || {
        nodes(url)
            .into_iter()
            .find(|n| n["name"] == "gpu1" && n["state"] == "DRAINED")
    });
    assert_eq!(
        gpu1["reason"],
        "GPU 0 failed: XID 79 (injected) (by gantry)"
    );
    assert_eq!(
        gpu1["failed_gpus"],
        serde_json::json!([{"index": 0, "reason": "XID 79 (injected)"}])
    );
}
