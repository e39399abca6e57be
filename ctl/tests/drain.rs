//! Draining nodes: `--requeue` moves what runs there to other nodes (resuming from its
//! checkpoint), `--deadline` lets it run that long first, plain drains let it finish; node
//! ranges; only admins drain.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;

use gantry_testkit::scripts::{first_run_hangs, lines, script, until_exists};
use gantry_testkit::{
    Schedd, Site, gantry, gantry_ok, job, nodes, submit, wait_for, wait_nodes_up, wait_state,
};

fn node_state(url: &str, name: &str) -> (String, String) {
    let node = nodes(url).into_iter().find(|n| n["name"] == name).unwrap();
    (
        node["state"].as_str().unwrap().to_string(),
        node["reason"].as_str().unwrap().to_string(),
    )
}

#[test]
fn drain_requeue_moves_a_checkpointable_job_and_the_node_ends_drained() {
    let site = Site::start(&[]);
    let (url, work) = (site.url(), &site.work);
    let (id, _gpu1, _gpu2) = site.counter_on_first_of_two("gpu1", "gpu2");

    let out = gantry_ok(
        url,
        &["drain", "gpu[1]", "--reason", "fan failure", "--requeue"],
    );
    assert_eq!(
        out,
        "Draining gpu1: no new jobs start there; running jobs are stopped and requeued\n"
    );
    let done = wait_state(url, id, "COMPLETED");
    assert_eq!(
        lines(&work.join("runs")),
        ["run 0 from 0", "run 1 from 20", "done"]
    );
    let runs = &done["attempts"];
    assert_eq!(runs[0]["outcome"], "REQUEUED", "{done}");
    assert_eq!(runs[0]["reason"], "node gpu1 drained by root: fan failure");
    assert_eq!(runs[1]["allocation"][0], "gpu2:0");
    wait_for("gpu1 to be DRAINED", || {
        (node_state(url, "gpu1").0 == "DRAINED").then_some(())
    });
    assert_eq!(node_state(url, "gpu1").1, "fan failure (by root)");

    gantry_ok(url, &["resume", "gpu[1-2]"]);
    assert_eq!(node_state(url, "gpu1").0, "IDLE");
}

#[test]
fn drain_deadline_lets_jobs_run_until_then_and_a_plain_drain_lets_them_finish() {
    let site = Site::start(&[]);
    let (url, work, wd) = (site.url(), &site.work, site.wd());
    let _node1 = site.node("gpu1", 2);
    wait_nodes_up(url, 1);
    // Runs until killed on its first run; its second ends at once.
    let hangs = script(work, "hangs.sh", &first_run_hangs(work, ""));
    let requeued = submit(url, &["-G", "1", "-D", wd, &hangs]);
    let release = work.join("release");
    let finishes = submit(
        url,
        &[
            "-G",
            "1",
            "-D",
            wd,
            "--",
            "sh",
            "-c",
            &until_exists(&release),
        ],
    );
    wait_state(url, requeued, "RUNNING");
    wait_state(url, finishes, "RUNNING");

    let out = gantry_ok(
        url,
        &[
            "drain",
            "gpu1",
            "--reason",
            "kernel update",
            "--deadline",
            "5s",
        ],
    );
    // (Long enough for the next call to see the node still draining on a slow machine.)
    assert!(
        out.contains("running jobs may go on for 0:05, then are requeued"),
        "{out}"
    );
    let (state, reason) = node_state(url, "gpu1");
    assert_eq!(state, "DRAINING");
    assert!(
        reason.starts_with("kernel update (by root; jobs still running at 20"),
        "{reason}"
    );
    // At the deadline both are stopped and requeued; nothing can run them while gpu1 is out.
    wait_for("the jobs to be requeued", || {
        let pending = [requeued, finishes]
            .iter()
            .all(|id| job(url, *id)["state"] == "PENDING");
        pending.then_some(())
    });
    assert_eq!(
        job(url, requeued)["attempts"][0]["reason"],
        "drain deadline of node gpu1 (kernel update)"
    );
    assert_eq!(node_state(url, "gpu1").0, "DRAINED");

    // A plain drain lets what runs finish.
    gantry_ok(url, &["resume", "gpu1"]);
    wait_state(url, requeued, "COMPLETED");
    wait_state(url, finishes, "RUNNING");
    let out = gantry_ok(url, &["drain", "gpu1", "--reason", "later", "--wait"]);
    assert!(out.ends_with("running jobs finish\n"), "{out}");
    fs::write(&release, "").unwrap();
    let done = wait_state(url, finishes, "COMPLETED");
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(node_state(url, "gpu1").0, "DRAINED");
}

#[test]
fn bad_drains_are_refused_with_the_reason() {
    let site = Site::start(&[]);
    let url = site.url();
    let _node1 = site.node("gpu1", 1);
    wait_nodes_up(url, 1);
    for (args, needle) in [
        (
            vec!["drain", "gpu[1-2]", "--reason", "x"],
            "node \"gpu2\" does not exist",
        ),
        (vec!["drain", "gpu[2-1]", "--reason", "x"], "goes backwards"),
        (
            vec!["drain", "gpu1", "--reason", "x", "--deadline", "0s"],
            "--deadline: expected a duration longer than 0",
        ),
        (
            vec!["drain", "gpu1", "--reason", "x", "--requeue", "--wait"],
            "cannot be used with",
        ),
    ] {
        let out = gantry(url, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        node_state(url, "gpu1").0,
        "IDLE",
        "a refused drain changed nothing"
    );

    let dir = tempfile::tempdir().unwrap();
    let alone = Schedd::start(&dir.path().join("alone"), &["--admin", "nobody-here"]);
    let out = gantry(&alone.url, &["drain", "gpu1", "--reason", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only admins may drain nodes"), "{stderr}");
}
