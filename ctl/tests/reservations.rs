//! Advance reservations end to end: outsiders are kept off reserved nodes in the window (a
//! job that would run into it does not start; one that ends before it does), members run
//! inside it only, and bad requests are refused with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use gantry_testkit::{
    OneNode, Schedd, Value, gantry_ok, job, refused, submit, wait_for, wait_state,
};

/// Waits until the scheduler has looked at a pending job, and returns its reason.
fn reason(url: &str, id: u64) -> String {
    wait_for(&format!("job {id} to be considered"), || {
        let j = job(url, id);
        let why = j["reason"].as_str().unwrap().to_string();
        (j["state"] == "PENDING" && why != "Scheduling").then_some(why)
    })
}

#[test]
fn reservations_keep_outsiders_out_and_let_members_in() {
    let c = OneNode::start(&["--gpus", "2", "--cpus", "4", "--mem", "4G"]);
    let (url, wd) = (c.url(), c.wd());
    let forever = submit(url, &["-G", "1", "-D", wd, "--", "sleep", "1000"]);
    wait_state(url, forever, "RUNNING");

    let later = [
        "reservation",
        "create",
        "later",
        "--start",
        "now+1h",
        "--duration",
        "1h",
        "--nodes",
        "node[1]",
        "--users",
        "root",
    ];
    refused(
        url,
        &later,
        "may still run when the reservation starts; --force",
    );
    let mut forced = later.to_vec();
    forced.push("--force");
    let out = gantry_ok(url, &forced);
    assert!(
        out.starts_with("Reservation later holds node1 for 1:00:00 from "),
        "{out}"
    );

    // Would run into the window: waits. Ends before it: runs.
    let long = submit(url, &["-G", "1", "-t", "2h", "-D", wd, "--", "true"]);
    assert!(
        reason(url, long).starts_with("Resources: reserved"),
        "{}",
        job(url, long)
    );
    let short = submit(url, &["-G", "1", "-t", "10m", "-D", wd, "--", "true"]);
    wait_state(url, short, "COMPLETED");
    let member = submit(
        url,
        &[
            "--reservation",
            "later",
            "-G",
            "1",
            "-t",
            "10m",
            "-D",
            wd,
            "--",
            "true",
        ],
    );
    assert!(
        reason(url, member).starts_with("Reservation: reservation later opens in 59:"),
        "{}",
        job(url, member)
    );

    refused(
        url,
        &["submit", "--reservation", "nope", "--", "true"],
        "reservation nope does not exist",
    );
    gantry_ok(
        url,
        &[
            "reservation",
            "create",
            "others",
            "--start",
            "now+3h",
            "--duration",
            "1h",
            "--nodes",
            "node1",
            "--users",
            "nobody-here",
            "--force",
        ],
    );
    refused(
        url,
        &["submit", "--reservation", "others", "--", "true"],
        "root may not use reservation others (it is for user nobody-here)",
    );
    // Updated: root is in, an hour later, for as long.
    let out = gantry_ok(
        url,
        &[
            "reservation",
            "update",
            "others",
            "--users",
            "root",
            "--start",
            "now+4h",
            "--force",
        ],
    );
    assert!(
        out.starts_with("Reservation others holds node1 for 1:00:00 from "),
        "{out}"
    );
    let waits = submit(
        url,
        &[
            "--reservation",
            "others",
            "-G",
            "1",
            "-t",
            "10m",
            "-D",
            wd,
            "--",
            "true",
        ],
    );
    assert!(reason(url, waits).starts_with("Reservation: reservation others opens in 3:59:"));
    gantry_ok(url, &["cancel", &waits.to_string()]);
    // Of GPUs: the scheduler picks one no running job may still hold then.
    let out = gantry_ok(
        url,
        &[
            "reservation",
            "create",
            "one-gpu",
            "--start",
            "now+6h",
            "--duration",
            "1h",
            "--gpus",
            "1",
            "--users",
            "root",
        ],
    );
    assert!(out.starts_with("Reservation one-gpu holds node1:"), "{out}");
    refused(
        url,
        &["reservation", "update", "nope", "--users", "root"],
        "reservation nope does not exist",
    );
    refused(
        url,
        &[
            "reservation",
            "create",
            "clash",
            "--start",
            "now+270m",
            "--duration",
            "1h",
            "--nodes",
            "node1",
            "--accounts",
            "default",
            "--force",
        ],
        "node node1 is in reservation others at that time",
    );
    let listed: Value =
        serde_json::from_str(&gantry_ok(url, &["reservation", "list", "-o", "json"])).unwrap();
    let names: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("later", "PLANNED"),
            ("one-gpu", "PLANNED"),
            ("others", "PLANNED")
        ]
    );

    // An open reservation, up to where the other starts: its member runs at once, outsiders
    // still wait.
    gantry_ok(
        url,
        &[
            "reservation",
            "create",
            "open",
            "--start",
            "now",
            "--duration",
            "30m",
            "--nodes",
            "node1",
            "--accounts",
            "default",
            "--force",
        ],
    );
    let inside = submit(
        url,
        &[
            "--reservation",
            "open",
            "-G",
            "1",
            "-t",
            "10m",
            "-D",
            wd,
            "--",
            "true",
        ],
    );
    wait_state(url, inside, "COMPLETED");
    gantry_ok(url, &["reservation", "delete", "later"]);
    // Reasons come from the next pass after the delete.
    wait_for("the member to learn its reservation is gone", || {
        reason(url, member)
            .contains("reservation later does not exist any more")
            .then_some(())
    });
    assert_eq!(job(url, long)["state"], "PENDING");
    let shown = gantry_ok(url, &["reservation", "show", "open"]);
    assert!(
        shown.contains("\nstate: ACTIVE\n") && shown.contains("\naccounts: default\n"),
        "{shown}"
    );
    refused(
        url,
        &["reservation", "delete", "nope"],
        "reservation nope does not exist",
    );
    for id in [forever, long, member] {
        gantry_ok(url, &["cancel", &id.to_string()]);
    }

    let dir = tempfile::tempdir().unwrap();
    let alone = Schedd::start(&dir.path().join("alone"), &["--admin", "nobody-here"]);
    refused(
        &alone.url,
        &[
            "reservation",
            "create",
            "x",
            "--start",
            "now",
            "--duration",
            "1h",
            "--nodes",
            "n1",
            "--users",
            "root",
        ],
        "only admins may manage reservations",
    );
}

/// A maintenance window: nothing starts that would run into it, and what still runs on its
/// nodes when it opens (a job without a time limit) is requeued then.
#[test]
fn a_maintenance_window_keeps_long_jobs_out_and_requeues_what_is_left() {
    let c = OneNode::start(&["--gpus", "2", "--cpus", "4", "--mem", "4G"]);
    let (url, wd) = (c.url(), c.wd());
    let forever = submit(url, &["-G", "1", "-D", wd, "--", "sleep", "1000"]);
    wait_state(url, forever, "RUNNING");
    let window = [
        "reservation",
        "create",
        "fw-update",
        "--start",
        "now+5s",
        "--duration",
        "1h",
        "--nodes",
        "node1",
        "--maintenance",
        "--force",
    ];
    gantry_ok(url, &window);
    refused(
        url,
        &["submit", "--reservation", "fw-update", "--", "true"],
        "reservation fw-update is a maintenance window: no job runs in it",
    );
    // A GPU is free, but an hour would run into the window: it waits for the window's end,
    // an hour and 5 s after the create (less what the calls since took on a slow machine).
    let long = submit(url, &["-G", "1", "-t", "1h", "-D", wd, "--", "true"]);
    let why = reason(url, long);
    let within = why
        .strip_prefix("Resources: reserved, starts within ")
        .unwrap_or_else(|| panic!("{}", job(url, long)));
    assert!(
        within.starts_with("1:00:0") || within.starts_with("59:"),
        "{}",
        job(url, long)
    );
    let requeued = wait_for("the job left on the node to be requeued", || {
        let j = job(url, forever);
        (j["state"] == "PENDING").then_some(j)
    });
    assert_eq!(
        requeued["attempts"][0]["reason"], "maintenance reservation fw-update starts on node node1",
        "{requeued}"
    );
    for id in [forever, long] {
        gantry_ok(url, &["cancel", &id.to_string()]);
    }
}
