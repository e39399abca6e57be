//! Multifactor priority end to end: QoS and deadlines order the queue, `queue --explain` and
//! `show` say where each pending job stands and why, the weights are replicated settings an
//! admin changes with `gantry admin config set`, and bad settings or asks are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;

use gantry_testkit::scripts::until_exists;
use gantry_testkit::{
    OneNode, Schedd, gantry, gantry_ok, grant_high_qos_and_deadlines, submit, wait_for, wait_state,
};
use serde_json::Value;

/// `queue --explain -o json`: job ids by rank, once every pending job has been ranked.
fn ranked(url: &str) -> Option<Vec<(u64, Value)>> {
    let out = gantry_ok(url, &["queue", "--explain", "-o", "json"]);
    let jobs: Vec<Value> = serde_json::from_str(&out).unwrap();
    let all_ranked = jobs.iter().all(|j| !j["explanation"].is_null());
    all_ranked.then(|| {
        jobs.into_iter()
            .map(|j| (j["id"].as_u64().unwrap(), j["explanation"].clone()))
            .collect()
    })
}

fn stderr_of(url: &str, args: &[&str]) -> String {
    let out = gantry(url, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn qos_and_deadlines_order_the_queue_and_every_pending_job_is_explained() {
    let c = OneNode::start(&["--gpus", "1", "--cpus", "4", "--mem", "4G"]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    grant_high_qos_and_deadlines(url);

    // The only GPU is busy until the test lets go; everything else queues behind it.
    let release = work.join("release");
    let hold = until_exists(&release);
    let blocker = submit(
        url,
        &["-G", "1", "-t", "1h", "-D", wd, "--", "sh", "-c", &hold],
    );
    wait_state(url, blocker, "RUNNING");
    let order = work.join("order");
    let record = format!("echo $GANTRY_JOB_ID >> {}", order.display());
    let job = |extra: &[&str]| {
        let mut args = vec!["-G", "1", "-t", "30m", "-D", wd];
        args.extend_from_slice(extra);
        args.extend(["--", "sh", "-c", &record]);
        submit(url, &args)
    };
    let normal = job(&[]);
    let low = job(&["--qos", "low"]);
    let high = job(&["-q", "high"]);
    let urgent = job(&["--deadline", "now+1h"]);

    let ranks = wait_for("every pending job ranked", || ranked(url));
    let ids: Vec<u64> = ranks.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [urgent, high, normal, low], "{ranks:?}");
    let (_, first) = &ranks[0];
    assert_eq!(first["rank"], 1);
    // 30 minutes of slack in a 24-hour horizon: nearly as urgent as it gets.
    assert!(
        first["factors"]["deadline"].as_u64().unwrap() > 950,
        "{first}"
    );
    assert_eq!(first["factors"]["qos"], 500);
    // 1 GPU for 30 minutes: shown, though it weighs nothing by default.
    assert_eq!(first["factors"]["short"], 691, "{first}");
    // The blocker's time limit lets the first job get a reservation, with a start.
    assert!(first["estimated_start"].is_string(), "{first}");
    assert_eq!(ranks[1].1["factors"]["qos"], 1000);
    assert_eq!(ranks[3].1["factors"]["qos"], 0);
    let shown = gantry_ok(url, &["show", &urgent.to_string()]);
    assert!(shown.contains("\nrank: 1\n"), "{shown}");
    assert!(shown.contains("\nqos: normal\n"), "{shown}");
    assert!(shown.contains("\npriority: "), "{shown}");
    let table = gantry_ok(url, &["queue", "--explain"]);
    assert!(table.starts_with("RANK  JOBID"), "{table}");

    // Deadlines stop counting: the high-QoS job goes first from the next pass on.
    let settings = gantry_ok(url, &["admin", "config", "set", "weight.deadline", "0"]);
    assert!(settings.contains("weight.deadline"), "{settings}");
    wait_for("the new weights to rank the queue", || {
        let ranks = ranked(url)?;
        (ranks.first()?.0 == high).then_some(())
    });
    let shown: Value =
        serde_json::from_str(&gantry_ok(url, &["admin", "config", "show", "-o", "json"])).unwrap();
    assert_eq!(shown["weight.deadline"], "0");
    assert_eq!(shown["qos.high.preempts"], "low,normal");

    // Without deadlines, the normal job is as urgent as the one with a deadline, and older.
    fs::write(&release, "").unwrap();
    for id in [high, urgent, normal, low] {
        wait_state(url, id, "COMPLETED");
    }
    let ran: Vec<u64> = fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(ran, [high, normal, urgent, low]);
}

#[test]
fn bad_settings_qos_and_deadlines_are_refused_and_only_admins_change_settings() {
    let dir = tempfile::tempdir().unwrap();
    let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let url = schedd.url.as_str();
    let before = gantry_ok(url, &["admin", "config", "show", "-o", "json"]);
    let cases: [(&[&str], &str); 4] = [
        (
            &["weight.qos", "lots"],
            "weight.qos: a weight is a whole number from 0 to 1000000 (got \"lots\")",
        ),
        (&["nosuch", "1"], "unknown setting \"nosuch\""),
        (
            &["qos.urgent.preempts", "low"],
            "create it with qos.urgent.priority first",
        ),
        (
            &["backfill.depth", "-1"],
            "backfill.depth: a whole number from 0 to 1000 (got \"-1\")",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["admin", "config", "set"];
        full.extend_from_slice(args);
        let stderr = stderr_of(url, &full);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert_eq!(
        gantry_ok(url, &["admin", "config", "show", "-o", "json"]),
        before,
        "a refused setting changed something"
    );

    let stderr = stderr_of(url, &["submit", "--qos", "nosuch", "--", "true"]);
    assert!(
        stderr.contains("unknown QoS \"nosuch\" (levels: high, low, normal)"),
        "{stderr}"
    );
    let stderr = stderr_of(url, &["submit", "--deadline", "1970-01-02", "--", "true"]);
    assert!(
        stderr.contains("the deadline has passed already"),
        "{stderr}"
    );
    let stderr = stderr_of(url, &["submit", "--deadline", "soon", "--", "true"]);
    assert!(
        stderr.contains("--deadline: invalid time \"soon\""),
        "{stderr}"
    );
    // A new level exists as soon as it has a priority, for the accounts granted it.
    gantry_ok(
        url,
        &["admin", "config", "set", "qos.urgent.priority", "900"],
    );
    let stderr = stderr_of(url, &["submit", "--qos", "urgent", "--", "true"]);
    assert!(
        stderr.contains("account default may not use QoS urgent"),
        "{stderr}"
    );
    gantry_ok(
        url,
        &["account", "set", "default", "--qos", "normal,urgent"],
    );
    gantry_ok(url, &["submit", "--qos", "urgent", "--", "true"]);

    let alone = Schedd::start(&dir.path().join("alone"), &["--admin", "nobody-here"]);
    let stderr = stderr_of(&alone.url, &["admin", "config", "set", "weight.age", "1"]);
    assert!(
        stderr.contains("only admins may change the scheduler configuration"),
        "{stderr}"
    );
}
