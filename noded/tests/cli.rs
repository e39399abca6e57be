//! `gantry-noded`'s command line, run as the real binary: addresses, the grace period, and
//! what its logs look like in a file.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use gantry_testkit::{Daemon, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_gantry-noded");

/// Runs the daemon with `args` (after a declared inventory and a scratch data dir) and
/// returns its output; only for runs that end by themselves (bad input).
fn noded(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--name", "n1", "--gpus", "1", "--cpus", "1", "--mem", "1G"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("GANTRY_SERVER")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn refused(output: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_scheduler_addresses_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    refused(
        &noded(&data, &["--server", "https://sched-1:7420"]),
        1,
        &["\"https://sched-1:7420\"", "TLS is not supported"],
    );
    refused(
        &noded(&data, &["--server", "sched-1:7420,sched-2:0"]),
        1,
        &["\"sched-2:0\"", "port"],
    );
    refused(
        &noded(&data, &["--server", "http://sched-1:7420/gantry"]),
        1,
        &["no path"],
    );
    refused(&noded(&data, &[]), 1, &["no scheduler address given"]);
    // Refused before the daemon made its data dir.
    assert!(!data.exists());
}

#[test]
fn the_grace_period_needs_a_unit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = noded(&data, &["--server", "127.0.0.1:1", "--kill-grace", "30"]);
    refused(&output, 2, &["--kill-grace", "\"30\"", "name the unit"]);
    assert!(!data.exists());
}

#[test]
fn a_bare_host_means_port_7420_and_logs_in_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("noded.log");
    // TEST-NET-3 (RFC 5737): nothing answers there, so the daemon never reaches a scheduler
    // (certainly not another one on this machine); it only has to start and log.
    let _daemon = Daemon::spawn(
        Path::new(BIN),
        &[
            "--server",
            "203.0.113.1",
            "--name",
            "n1",
            "--data-dir",
            data.to_str().unwrap(),
            "--gpus",
            "1",
            "--cpus",
            "1",
            "--mem",
            "1G",
        ],
        log.clone(),
    );
    let text = wait_for("the daemon's start-up line", || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        text.contains("node daemon started").then_some(text)
    });
    assert!(!text.contains('\u{1b}'), "colour codes in the log:\n{text}");
    assert!(
        text.contains("servers=http://203.0.113.1:7420"),
        "the daemon does not dial port 7420:\n{text}"
    );
}
