//! Crashes: kill -9 of the scheduler or the node daemon loses no acknowledged job, hands
//! out no id twice, and does not disturb running jobs; a node that stays away has its
//! `--no-requeue` jobs end NODE_FAIL (the others run again elsewhere: ctl/tests/preemption.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::BTreeSet;
use std::fs;

use gantry_testkit::scripts::until_exists;
use gantry_testkit::{Noded, Schedd, gantry_ok, job, submit, wait_for, wait_nodes_up, wait_state};

#[test]
fn kill_9_of_the_scheduler_loses_no_acknowledged_job_and_running_jobs_complete() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let wd = work.to_str().unwrap();
    let mut schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let url = schedd.url.clone();
    let _node = Noded::start(
        &url,
        "node1",
        &dir.path().join("node1"),
        &["--gpus", "4", "--cpus", "8", "--mem", "8G"],
    );
    wait_nodes_up(&url, 1);

    // Jobs that outlive the crash, held until the test releases them.
    let release = work.join("release");
    let hold = format!("{}; echo done", until_exists(&release));
    let running: Vec<u64> = (0..2)
        .map(|_| submit(&url, &["-G", "2", "-D", wd, "--", "sh", "-c", &hold]))
        .collect();
    for id in &running {
        wait_state(&url, *id, "RUNNING");
    }
    // Acknowledged while the GPUs are busy: these wait in the queue.
    let queued: Vec<u64> = (0..20)
        .map(|_| submit(&url, &["-G", "1", "-D", wd, "--", "true"]))
        .collect();

    schedd.daemon.kill9();
    let schedd = Schedd::start_on(&dir.path().join("schedd"), &schedd.listen, &[]);
    assert_eq!(schedd.url, url);

    let all: Vec<u64> = running.iter().chain(&queued).copied().collect();
    for id in &all {
        let j = job(&url, *id);
        assert!(
            j["state"].is_string(),
            "acknowledged job {id} lost after kill -9: {j}"
        );
    }
    for id in &running {
        assert_eq!(
            job(&url, *id)["state"],
            "RUNNING",
            "a scheduler restart must not disturb running jobs"
        );
    }
    fs::write(&release, "").unwrap();
    for id in &all {
        wait_state(&url, *id, "COMPLETED");
    }
    for id in &running {
        let out = fs::read_to_string(work.join(format!("gantry-{id}.out"))).unwrap();
        assert!(out.contains("done"), "job {id} output: {out:?}");
    }
    // Ids are never handed out twice, not even across the crash.
    let next = submit(&url, &["-D", wd, "--", "true"]);
    assert!(all.iter().all(|id| *id < next), "id {next} reused");
    let ids: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(ids.len(), all.len());
}

#[test]
fn a_node_daemon_crash_loses_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let wd = work.to_str().unwrap();
    let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let url = schedd.url.clone();
    let args = ["--gpus", "2", "--cpus", "4", "--mem", "4G"];
    let mut node = Noded::start(&url, "node1", &dir.path().join("node1"), &args);
    wait_nodes_up(&url, 1);

    let release = work.join("release");
    let hold = format!("{}; echo survived", until_exists(&release));
    let survivor = submit(&url, &["-G", "1", "-D", wd, "--", "sh", "-c", &hold]);
    let quick = submit(
        &url,
        &[
            "-G",
            "1",
            "-D",
            wd,
            "--",
            "sh",
            "-c",
            &format!("{}; exit 4", until_exists(&release)),
        ],
    );
    wait_state(&url, survivor, "RUNNING");
    wait_state(&url, quick, "RUNNING");

    node.daemon.kill9();
    // Both jobs end while their node daemon is away; their supervisors record the exits.
    fs::write(&release, "").unwrap();
    wait_for("the survivor's output", || {
        fs::read_to_string(work.join(format!("gantry-{survivor}.out")))
            .ok()
            .filter(|o| o.contains("survived"))
    });
    let node_dir = node.data_dir.clone();
    std::mem::forget(node); // the daemon is dead; keep its supervisors for the restart
    let _node = Noded::start(&url, "node1", &node_dir, &args);
    let done = wait_state(&url, survivor, "COMPLETED");
    assert_eq!(done["exit_code"], 0);
    let failed = wait_state(&url, quick, "FAILED");
    assert_eq!(failed["exit_code"], 4);
}

#[test]
fn a_node_that_stays_away_has_its_no_requeue_jobs_end_node_fail() {
    let dir = tempfile::tempdir().unwrap();
    let schedd = Schedd::start(
        &dir.path().join("schedd"),
        &["--heartbeat-timeout", "4s", "--heartbeat-interval", "500ms"],
    );
    let url = schedd.url.clone();
    let mut node = Noded::start(
        &url,
        "node1",
        &dir.path().join("node1"),
        &["--gpus", "1", "--cpus", "2", "--mem", "2G"],
    );
    wait_nodes_up(&url, 1);
    // Its output goes to the test's directory, not the source tree.
    let wd = dir.path().to_str().unwrap();
    let id = submit(
        &url,
        &["-G", "1", "--no-requeue", "-D", wd, "--", "sleep", "1000"],
    );
    wait_state(&url, id, "RUNNING");
    node.daemon.kill9();
    let ended = wait_state(&url, id, "NODE_FAIL");
    assert!(
        ended["reason"].as_str().unwrap().contains("node1"),
        "{}",
        ended["reason"]
    );
    let nodes = gantry_testkit::nodes(&url);
    assert_eq!(nodes[0]["state"], "DOWN");
    let out = gantry_ok(&url, &["queue", "--all"]);
    assert!(out.contains("NODE_FAIL"), "{out}");
}
