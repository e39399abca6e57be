//! What a refusal says: who may do what, to which job; what a reservation is for; counts in
//! words that agree with them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use gantry_testkit::scripts::until_exists;
use gantry_testkit::{
    NOBODY, OneNode, bin, gantry_ok, job, refused, require_root, submit, wait_for, wait_state,
};

/// `gantry hold` or `requeue` of another user's job said "only its owner or an admin may
/// cancel it"; a member refused from a maintenance reservation read "(it is for )"; a quota of
/// one GPU read "may hold 1 GPUs".
#[test]
fn refusals_name_the_act_the_reservation_and_count_in_words() {
    require_root("acting as another user");
    let c = OneNode::start(&["--gpus", "2", "--cpus", "4", "--mem", "4G"]);
    let (url, wd) = (c.url(), c.wd());
    let pending = submit(
        url,
        &[
            "-G",
            "2",
            "-t",
            "1h",
            "-D",
            wd,
            "--",
            "sh",
            "-c",
            &until_exists(&c.work.join("never")),
        ],
    );
    wait_state(url, pending, "RUNNING");
    let waiting = submit(url, &["-G", "2", "-D", wd, "--", "true"]);
    for action in ["hold", "requeue", "cancel"] {
        let out = Command::new(bin("gantry"))
            .args([action, &waiting.to_string()])
            .env("GANTRY_SERVER", url)
            .stdin(Stdio::null())
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains(&format!("only its owner or an admin may {action} it")),
            "{action}: {stderr}"
        );
    }
    gantry_ok(
        url,
        &[
            "reservation",
            "create",
            "fw",
            "--start",
            "now+2h",
            "--duration",
            "1h",
            "--nodes",
            "node1",
            "--maintenance",
            "--force",
        ],
    );
    refused(
        url,
        &["submit", "--reservation", "fw", "-D", wd, "--", "true"],
        "reservation fw is a maintenance window: no job runs in it",
    );
    gantry_ok(url, &["account", "add", "solo", "--max-gpus", "1"]);
    let me = gantry_testkit::caller_user();
    gantry_ok(url, &["account", "add-user", "solo", &me]);
    gantry_ok(url, &["cancel", &pending.to_string(), &waiting.to_string()]);
    let capped = submit(url, &["-A", "solo", "-G", "2", "-D", wd, "--", "true"]);
    let reason = wait_for("the quota reason", || {
        let reason = job(url, capped)["reason"].as_str()?.to_string();
        reason.starts_with("Quota:").then_some(reason)
    });
    assert!(
        reason.contains("account solo may hold 1 GPU; it holds 0 and this job needs 2"),
        "{reason}"
    );
}
