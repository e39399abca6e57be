//! The account tree end to end: admins build it, only an account's users charge jobs to it,
//! a GPU limit holds an account's jobs back without holding others back, and bad requests
//! are refused with what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;

use gantry_testkit::scripts::until_exists;
use gantry_testkit::{OneNode, Schedd, gantry_ok, job, refused, submit, wait_for, wait_state};
use serde_json::Value;

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

/// Any user could use `-q high` and `--deadline` to jump the queue and preempt others' jobs.
/// Which QoS levels an account may use, and whether it may set deadlines, is granted by
/// admins (Slurm's QOS per association); sub-accounts inherit their parent's.
#[test]
fn qos_levels_and_deadlines_are_granted_per_account() {
    let c = OneNode::start(&["--gpus", "1", "--cpus", "4", "--mem", "4G"]);
    let (url, wd) = (c.url(), c.wd());
    refused(
        url,
        &["submit", "-q", "high", "-D", wd, "--", "true"],
        "account default may not use QoS high (it may use low, normal)",
    );
    refused(
        url,
        &["submit", "--deadline", "now+1h", "-D", wd, "--", "true"],
        "account default may not set deadlines",
    );
    submit(url, &["-q", "low", "-D", wd, "--", "true"]);
    gantry_ok(
        url,
        &[
            "account",
            "set",
            "default",
            "--qos",
            "low,normal,high",
            "--deadlines",
            "yes",
        ],
    );
    submit(url, &["-q", "high", "-D", wd, "--", "true"]);
    submit(url, &["--deadline", "now+1h", "-D", wd, "--", "true"]);
    refused(
        url,
        &["account", "set", "default", "--qos", "low,nosuch"],
        "unknown QoS \"nosuch\"",
    );
    // A sub-account inherits until it is given its own.
    gantry_ok(url, &["account", "add", "team", "--qos", "low,normal,high"]);
    gantry_ok(url, &["account", "add", "sub", "--parent", "team"]);
    let me = gantry_testkit::caller_user();
    gantry_ok(url, &["account", "add-user", "sub", &me]);
    submit(url, &["-A", "sub", "-q", "high", "-D", wd, "--", "true"]);
    refused(
        url,
        &[
            "submit",
            "-A",
            "sub",
            "--deadline",
            "now+1h",
            "-D",
            wd,
            "--",
            "true",
        ],
        "account sub may not set deadlines",
    );
    let sub = accounts(url)
        .into_iter()
        .find(|a| a["name"] == "sub")
        .unwrap();
    assert_eq!(
        sub["qos"],
        serde_json::json!(["high", "low", "normal"]),
        "{sub}"
    );
    assert_eq!(sub["deadlines"], false, "{sub}");
}

/// `gantry account add X --share 0` was taken as share 1; accounts could be neither changed
/// nor removed. Now a share of 0 is refused, `set` changes what it is given (checked as `add`
/// checks it), and `remove` refuses to orphan sub-accounts, jobs or users.
#[test]
fn accounts_are_changed_and_removed_and_a_zero_share_is_refused() {
    let c = OneNode::start(&["--gpus", "2", "--cpus", "4", "--mem", "4G"]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    refused(
        url,
        &["account", "add", "x", "--share", "0"],
        "a share must be from 1 to 1000000 (got 0)",
    );
    gantry_ok(url, &["account", "add", "x"]);
    gantry_ok(
        url,
        &["account", "set", "x", "--share", "4", "--max-gpus", "1"],
    );
    let x = accounts(url)
        .into_iter()
        .find(|a| a["name"] == "x")
        .unwrap();
    assert_eq!(
        (&x["share"], &x["max_gpus"]),
        (&Value::from(4), &Value::from(1))
    );
    refused(
        url,
        &["account", "set", "x", "--guarantee-gpus", "2"],
        "the guarantee (2 GPUs) is above the limit (1 GPU)",
    );
    refused(url, &["account", "set", "x", "--share", "0"], "got 0");
    refused(
        url,
        &["account", "set", "nosuch", "--share", "2"],
        "account \"nosuch\" does not exist",
    );

    let me = gantry_testkit::caller_user();
    gantry_ok(url, &["account", "add-user", "x", &me]);
    let release = work.join("release");
    let running = submit(
        url,
        &[
            "-A",
            "x",
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
    wait_state(url, running, "RUNNING");
    refused(
        url,
        &["account", "remove", "x"],
        &format!("account x has jobs that have not ended: {running}"),
    );
    fs::write(&release, "").unwrap();
    wait_state(url, running, "COMPLETED");
    refused(
        url,
        &["account", "remove", "x"],
        &format!("account x has users ({me}): remove them first"),
    );
    gantry_ok(url, &["account", "remove-user", "x", &me]);
    gantry_ok(url, &["account", "add", "y", "--parent", "x"]);
    refused(
        url,
        &["account", "remove", "x"],
        "account x has sub-accounts (y)",
    );
    gantry_ok(url, &["account", "remove", "y"]);
    gantry_ok(url, &["account", "remove", "x"]);
    assert!(!accounts(url).iter().any(|a| a["name"] == "x"));
    refused(
        url,
        &["account", "remove", "default"],
        "account default cannot be removed",
    );
    // Its ended job's history still names it.
    assert_eq!(job(url, running)["account"], "x");
}
