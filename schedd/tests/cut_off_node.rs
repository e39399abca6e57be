//! A node cut off from every replica stops its jobs before the leader could declare it lost
//! and hand its GPUs to other jobs: no GPU ever runs two jobs, even across a partition.
//! All three replicas are frozen with SIGSTOP; to the node that is a partition.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;
use std::time::{Duration, Instant};

use gantry_testkit::{Cluster, Noded, process_alive, submit, wait_for, wait_nodes_up, wait_state};

/// The leader declares a node lost after this much silence.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn a_node_cut_off_from_every_replica_stops_its_jobs_before_its_gpus_can_be_reused() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let mut cluster = Cluster::start(
        &dir.path().join("cluster"),
        3,
        &[
            "--heartbeat-interval",
            "500ms",
            "--heartbeat-timeout",
            "10s",
        ],
    );
    let servers = cluster.servers();
    let _node = Noded::start(
        &servers,
        "node1",
        &dir.path().join("node1"),
        &[
            "--gpus",
            "1",
            "--cpus",
            "2",
            "--mem",
            "2G",
            "--kill-grace",
            "3s",
        ],
    );
    wait_nodes_up(&servers, 1);

    let pid_file = work.join("pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pid_file.display());
    let wd = work.to_str().unwrap();
    // --no-requeue: the job ends with its run (a requeued one would take the GPU again).
    let id = submit(
        &servers,
        &[
            "-G",
            "1",
            "--no-requeue",
            "-D",
            wd,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_state(&servers, id, "RUNNING");
    let pid: i32 = wait_for("the job's pid", || {
        fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });

    let ids = cluster.ids();
    for replica in &ids {
        cluster.stop(*replica);
    }
    let frozen = Instant::now();
    wait_for("the cut-off node to stop its job", || {
        (!process_alive(pid)).then_some(())
    });
    let stopped_after = frozen.elapsed();
    eprintln!("job stopped {stopped_after:?} after the node lost every replica");
    // The leader may count the node's silence from its last heartbeat, just before the
    // freeze: past the timeout it would give the GPU away.
    assert!(
        stopped_after < HEARTBEAT_TIMEOUT,
        "the job outlived the heartbeat timeout: {stopped_after:?}"
    );

    for replica in &ids {
        cluster.cont(*replica);
    }
    // Whichever comes first, the leader's verdict on the silent node or the node's report
    // of the fenced job, the job ends NODE_FAIL; the node comes back and takes work.
    let ended = wait_state(&servers, id, "NODE_FAIL");
    eprintln!("job {id} ended: {}", ended["reason"]);
    wait_nodes_up(&servers, 1);
    let next = submit(&servers, &["-G", "1", "-D", wd, "--", "true"]);
    wait_state(&servers, next, "COMPLETED");
}
