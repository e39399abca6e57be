//! Bad input gets a precise error and a non-zero exit, and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::Write;

use gantry_testkit::{Noded, Schedd, gantry, gantry_ok, wait_nodes_up};

fn fails_with(url: &str, args: &[&str], needle: &str) {
    let out = gantry(url, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "gantry {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "gantry {args:?}: expected {needle:?} in the error, got: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_kind_of_bad_input_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let url = schedd.url.as_str();
    let _node = Noded::start(
        url,
        "node1",
        &dir.path().join("node1"),
        &["--gpus", "8", "--cpus", "8", "--mem", "8G"],
    );
    wait_nodes_up(url, 1);

    fails_with(url, &["submit", "-c", "0", "--", "true"], "cpu");
    fails_with(url, &["submit", "-c", "-1", "--", "true"], "-1");
    fails_with(url, &["submit", "--mem", "0", "--", "true"], "memory");
    fails_with(url, &["submit", "-N", "0", "--", "true"], "node");
    fails_with(url, &["submit", "-N", "-2", "--", "true"], "-2");
    fails_with(url, &["submit", "-G", "-1", "--", "true"], "-1");
    fails_with(
        url,
        &["submit", "-G", "16", "--", "true"],
        "asks 16 GPUs per node; the largest node has 8",
    );
    fails_with(
        url,
        &["submit", "-N", "2", "-G", "1", "--", "true"],
        "only 1 node",
    );
    fails_with(
        url,
        &["submit", "-c", "64", "--", "true"],
        "asks 64 CPUs per node; the largest node has 8",
    );
    fails_with(url, &["submit", "-t", "5x", "--", "true"], "5x");
    fails_with(url, &["submit", "-t", "0", "--", "true"], "time limit");
    fails_with(url, &["submit", "--mem", "4X", "--", "true"], "4X");
    fails_with(url, &["submit", "/no/such/script.sh"], "/no/such/script.sh");
    fails_with(url, &["submit"], "");
    fails_with(url, &["show", "999"], "999");
    fails_with(url, &["show", "abc"], "abc");
    fails_with(url, &["cancel", "999"], "999");
    fails_with(url, &["wait", "999"], "999");
    fails_with(url, &["queue", "--state", "bogus"], "bogus");
    fails_with(url, &["drain", "nosuchnode", "--reason", "x"], "nosuchnode");
    fails_with(url, &["resume", "nosuchnode"], "nosuchnode");

    let all = gantry_ok(url, &["queue", "--all", "-o", "json"]);
    let jobs: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(0),
        "bad input created jobs: {all}"
    );
    // The next good submit gets the first id: rejected submits consumed none.
    let id = gantry_testkit::submit(url, &["--", "true"]);
    assert_eq!(id, 1);
}

#[test]
fn an_unreachable_server_is_named_in_the_error() {
    // Bind then drop a listener: the port is almost certainly closed afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    fails_with(&address, &["queue"], &address);
    fails_with(
        &format!("http://{address}"),
        &["submit", "--", "true"],
        &address,
    );
}

#[test]
fn garbage_on_the_wire_does_not_hurt_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let mut schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x05garbage",
        &[0xff; 4096],
    ] {
        let mut s = std::net::TcpStream::connect(&schedd.listen).unwrap();
        let _ = s.write_all(junk);
        drop(s);
    }
    assert!(schedd.daemon.is_running(), "the scheduler died on garbage");
    gantry_ok(&schedd.url, &["queue"]);
}
