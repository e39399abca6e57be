//! GPU-hour accounting end to end: `gantry usage` and `gantry history` report the same
//! figures from every replica, totals equal the sum over jobs, and nothing changes across a
//! leader failover.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use gantry_testkit::{
    Cluster, Noded, Value, gantry, gantry_ok, submit, wait_for, wait_nodes_up, wait_state,
};

fn json(server: &str, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    serde_json::from_str(&gantry_ok(server, &full)).unwrap()
}

fn sum(rows: &Value, field: &str) -> u64 {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[field].as_u64().unwrap())
        .sum()
}

#[test]
fn usage_totals_equal_the_sum_over_jobs_on_every_replica_and_after_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("cluster"), 3, &[]);
    let servers = cluster.servers();
    let _node = Noded::start(
        &servers,
        "node1",
        &dir.path().join("node1"),
        &["--gpus", "4", "--cpus", "8", "--mem", "8G"],
    );
    wait_nodes_up(&servers, 1);
    gantry_ok(&servers, &["account", "add", "vision"]);
    gantry_ok(&servers, &["account", "add-user", "vision", "root"]);
    let wd = dir.path().to_str().unwrap();
    let jobs = [
        submit(&servers, &["-G", "1", "-D", wd, "--", "sleep", "1"]),
        submit(
            &servers,
            &[
                "-G", "2", "-c", "3", "-A", "vision", "-D", wd, "--", "sleep", "2",
            ],
        ),
        submit(
            &servers,
            &["-G", "0", "-c", "2", "-A", "vision", "-D", wd, "--", "true"],
        ),
    ];
    for id in jobs {
        wait_state(&servers, id, "COMPLETED");
    }

    let history = json(&servers, &["history"]);
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    for row in history.as_array().unwrap() {
        let gpus = match row["id"].as_u64().unwrap() {
            id if id == jobs[0] => 1,
            id if id == jobs[1] => 2,
            _ => 0,
        };
        assert_eq!(
            row["gpu_seconds"].as_u64().unwrap(),
            gpus * row["wall_seconds"].as_u64().unwrap(),
            "{row}"
        );
        assert_eq!(row["runs"], 1);
    }
    let usage = json(&servers, &["usage", "--by", "account"]);
    let keys: Vec<&str> = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["default", "vision"]);
    for field in ["gpu_seconds", "cpu_seconds", "wall_seconds", "runs", "jobs"] {
        let total = usage["total"][field].as_u64().unwrap();
        assert_eq!(total, sum(&usage["rows"], field), "{field}: {usage}");
        if field != "jobs" {
            assert_eq!(total, sum(&history, field), "{field}: {usage}");
        }
    }
    // At least 1 GPU × 1 s and 2 GPUs × 2 s.
    let gpu_seconds = usage["total"]["gpu_seconds"].as_u64().unwrap();
    assert!(gpu_seconds >= 5, "{usage}");
    // The same on every replica, from its own copy of the state (once it has applied the
    // last commit: a follower may be a moment behind).
    for id in cluster.ids() {
        let url = cluster.url(id);
        wait_for(&format!("replica {id} to report {usage}"), || {
            (json(&url, &["usage", "--stale", "--server", &url]) == usage).then_some(())
        });
    }

    let leader = cluster.leader();
    cluster.kill9(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    assert_eq!(json(&servers, &["usage", "--by", "account"]), usage);
    assert_eq!(json(&servers, &["history"]), history);

    // CSV, filters, and a window before any job: nothing.
    let csv = gantry_ok(&servers, &["usage", "--by", "user", "-o", "csv"]);
    assert!(
        csv.starts_with("USER,JOBS,RUNS,ELAPSED_S,GPU_SECONDS,CPU_SECONDS,GPU_HOURS\nroot,3,3,"),
        "{csv}"
    );
    let vision = json(&servers, &["history", "-A", "vision"]);
    assert_eq!(vision.as_array().unwrap().len(), 2);
    let before = json(&servers, &["usage", "--until", "2000-01-01"]);
    assert_eq!(before["total"]["jobs"], 0, "{before}");
    let out = gantry(&servers, &["usage", "--since", "now", "--until", "now-1h"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--until must come after --since"),
        "{stderr}"
    );
}
