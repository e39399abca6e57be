//! One node name, one machine: a second node daemon started with a name in use is refused,
//! naming both; the daemon that owns the name comes back freely; another machine takes the
//! name over only when an admin says so (`gantry nodes replace`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use gantry_testkit::{Noded, Schedd, gantry, nodes, wait_for};

fn gpus_of(url: &str, name: &str) -> Option<u64> {
    nodes(url)
        .iter()
        .find(|n| n["name"] == name && n["state"] != "DOWN")
        .and_then(|n| n["gpus_total"].as_u64())
}

/// A second `gantry-noded --name gpu01 --gpus 8` and the real gpu01 took the node over in
/// turn every 2 s, its GPUs flipping between 4 and 8.
#[test]
fn a_second_node_daemon_cannot_take_a_name_in_use() {
    let dir = tempfile::tempdir().unwrap();
    // A short heartbeat timeout: a node is replaced only once it is declared lost.
    let schedd = Schedd::start(
        &dir.path().join("schedd"),
        &["--heartbeat-timeout", "6s", "--heartbeat-interval", "500ms"],
    );
    let url = schedd.url.clone();
    let gpus = |n: &'static str| ["--gpus", n, "--cpus", "8", "--mem", "8G"];
    let first = Noded::start(&url, "gpu01", &dir.path().join("a"), &gpus("4"));
    wait_for("gpu01 with 4 GPUs", || {
        (gpus_of(&url, "gpu01") == Some(4)).then_some(())
    });
    let second = Noded::start(&url, "gpu01", &dir.path().join("b"), &gpus("8"));
    // The second daemon is told why, naming both, and the scheduler warns.
    let refusal = second.daemon.wait_log("is in use by another node daemon");
    assert!(refusal.contains("gantry nodes replace gpu01"), "{refusal}");
    assert_eq!(refusal.matches("identity ").count(), 2, "{refusal}");
    let warned = schedd
        .daemon
        .wait_log("refused a second node daemon for gpu01");
    assert!(warned.contains("WARN"), "{warned}");
    assert_eq!(gpus_of(&url, "gpu01"), Some(4), "the first keeps its node");

    // The same daemon coming back (its data dir, its identity) is itself: welcome.
    let a_dir = first.data_dir.clone();
    drop(first);
    let first = Noded::start(&url, "gpu01", &a_dir, &gpus("4"));
    wait_for("gpu01 back with 4 GPUs", || {
        (gpus_of(&url, "gpu01") == Some(4)).then_some(())
    });

    // Replacing a machine is an admin's act, and only once the old daemon is gone.
    let out = gantry(&url, &["nodes", "replace", "gpu01"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is connected"),
        "{stderr}"
    );
    drop(first);
    wait_for("gpu01 to be declared lost", || {
        let out = gantry(&url, &["nodes", "replace", "gpu01"]);
        out.status.success().then_some(())
    });
    wait_for("gpu01 taken over with 8 GPUs", || {
        (gpus_of(&url, "gpu01") == Some(8)).then_some(())
    });
    let out = gantry(&url, &["nodes", "replace", "nosuch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("node \"nosuch\" does not exist"),
        "{stderr}"
    );
    drop(second);
}
