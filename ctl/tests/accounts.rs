//! The account tree end to end: admins build it, only an account's users charge jobs to it,
//! a GPU limit holds an account's jobs back without holding others back, and bad requests
//! are refused with what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;

use gantry_testkit::scripts::until_exists;
use gantry_testkit::{OneNode, Schedd, gantry, gantry_ok, job, submit, wait_for, wait_state};
use serde_json::Value;

fn refused(url: &str, args: &[&str], expected: &str) {
    let out = gantry(url, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
}

fn accounts(url: &str) -> Vec<Value> {
    serde_json::from_str(&gantry_ok(url, &["account", "list", "-o", "json"])).unwrap()
}

fn in_use(url: &str, name: &str) -> u64 {
    accounts(url).iter().find(|a| a["name"] == name).unwrap()["gpus_in_use"]
        .as_u64()
        .unwrap()
}

#[test]
fn an_account_tree_with_members_and_a_gpu_limit() {
    let c = OneNode::start(&["--gpus", "4", "--cpus", "8", "--mem", "8G"]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());

    gantry_ok(
        url,
        &[
            "account",
            "add",
            "research",
            "--share",
            "3",
            "--max-gpus",
            "3",
        ],
    );
    gantry_ok(url, &["account", "add", "vision", "--parent", "research"]);
    let names: Vec<String> = accounts(url)
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["root", "default", "research", "vision"]);
    let table = gantry_ok(url, &["account", "list"]);
    assert!(table.contains("\n    vision "), "{table}");

    refused(
        url,
        &["submit", "-A", "vision", "--", "true"],
        "may not charge jobs to account vision (its users: none)",
    );
    let me = gantry_testkit::caller_user();
    gantry_ok(url, &["account", "add-user", "vision", &me]);
    let release = work.join("release");
    let hold = until_exists(&release);
    let held = |account: &str| {
        submit(
            url,
            &["-A", account, "-G", "2", "-D", wd, "--", "sh", "-c", &hold],
        )
    };
    let first = held("vision");
    wait_state(url, first, "RUNNING");
    let second = held("vision");
    // research may hold 3 GPUs: vision's second job waits, the default account's job starts.
    let other = held("default");
    wait_state(url, other, "RUNNING");
    wait_for("the quota reason", || {
        let reason = job(url, second)["reason"].as_str()?.to_string();
        reason.starts_with("Quota:").then_some(reason)
    });
    let reason = job(url, second)["reason"].as_str().unwrap().to_string();
    assert_eq!(
        reason,
        "Quota: account research may hold 3 GPUs; it holds 2 and this job needs 2"
    );
    assert_eq!((in_use(url, "vision"), in_use(url, "research")), (2, 2));
    assert_eq!(in_use(url, "root"), 4);

    fs::write(&release, "").unwrap();
    for id in [first, second, other] {
        wait_state(url, id, "COMPLETED");
    }
}

#[test]
fn bad_account_requests_are_refused_and_only_admins_manage_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let url = schedd.url.as_str();
    gantry_ok(
        url,
        &["account", "add", "research", "--guarantee-gpus", "8"],
    );
    let before = accounts(url);
    refused(
        url,
        &["account", "add", "research"],
        "account \"research\" exists already",
    );
    refused(
        url,
        &["account", "add", "vision", "--parent", "nosuch"],
        "account \"nosuch\" does not exist",
    );
    refused(url, &["account", "add", "a b"], "must be 1 to 64 letters");
    refused(
        url,
        &[
            "account",
            "add",
            "x",
            "--guarantee-gpus",
            "9",
            "--max-gpus",
            "4",
        ],
        "the guarantee (9 GPUs) is above the limit (4 GPUs)",
    );
    refused(
        url,
        &[
            "account",
            "add",
            "x",
            "--parent",
            "research",
            "--guarantee-gpus",
            "9",
        ],
        "the guarantees under research would add up to 9 GPUs, more than its own 8",
    );
    refused(
        url,
        &["account", "add-user", "nosuch", "ann"],
        "account \"nosuch\" does not exist",
    );
    refused(
        url,
        &["submit", "-A", "nosuch", "--", "true"],
        "account \"nosuch\" does not exist",
    );
    assert_eq!(accounts(url), before, "a refused request changed the tree");

    let alone = Schedd::start(&dir.path().join("alone"), &["--admin", "nobody-here"]);
    refused(
        &alone.url,
        &["account", "add", "x"],
        "only admins may manage accounts",
    );
    refused(
        &alone.url,
        &["account", "add-user", "default", "x"],
        "only admins may manage accounts",
    );
}

/// A guarantee reclaimed: the default account borrows the only two GPUs; when vision, whose
/// guarantee they are, wants them, the borrower is stopped and requeued, vision's job runs,
/// and the borrower then runs again as its next attempt and completes.
#[test]
fn a_guarantee_is_reclaimed_from_a_borrower_which_is_requeued_and_runs_again() {
    let c = OneNode::start(&[
        "--gpus",
        "2",
        "--cpus",
        "4",
        "--mem",
        "4G",
        "--kill-grace",
        "2s",
    ]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    gantry_ok(url, &["account", "add", "vision", "--guarantee-gpus", "2"]);
    gantry_ok(
        url,
        &[
            "account",
            "add-user",
            "vision",
            &gantry_testkit::caller_user(),
        ],
    );

    let release = work.join("release");
    let hold = until_exists(&release);
    let borrower = submit(url, &["-G", "2", "-D", wd, "--", "sh", "-c", &hold]);
    wait_state(url, borrower, "RUNNING");
    let owner = submit(url, &["-A", "vision", "-G", "2", "-D", wd, "--", "true"]);
    wait_state(url, owner, "COMPLETED");
    // The borrower went back to the queue and runs again, as attempt 1.
    let again = wait_for("the borrower to run again", || {
        let j = job(url, borrower);
        (j["state"] == "RUNNING" && j["attempt"] == 1).then_some(j)
    });
    assert_eq!(again["account"], "default");
    fs::write(&release, "").unwrap();
    let done = wait_state(url, borrower, "COMPLETED");
    assert_eq!(done["attempt"], 1);
    let owner = job(url, owner);
    let started = |j: &Value| j["start_time"].as_str().unwrap().to_string();
    assert!(started(&owner) < started(&done), "{owner} {done}");
}
