//! Start-up: bad settings are refused with a clear message, the data directory is private,
//! and a second scheduler on the same data directory is refused before it listens.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use gantry_testkit::{Schedd, bin};

fn schedd_fails(args: &[&str], needle: &str) {
    let out = Command::new(bin("gantry-schedd"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "gantry-schedd {args:?} started");
    assert!(
        stderr.contains(needle),
        "gantry-schedd {args:?}: expected {needle:?} in: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "it said it listens"
    );
}

#[test]
fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    let listen = ["--listen", "127.0.0.1:0", "--data-dir", data];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        listen
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    };
    schedd_fails(&with(&["--heartbeat-timeout", "30"]), "name the unit");
    schedd_fails(
        &with(&["--heartbeat-timeout", "1s", "--heartbeat-interval", "2s"]),
        "must be longer than a node's session lease",
    );
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nsurprise = 1\n").unwrap();
    schedd_fails(&["--config", config.to_str().unwrap()], "surprise");
    let topology = dir.path().join("topology.toml");
    std::fs::write(
        &topology,
        "[[switch]]\nname = \"leaf\"\nparent = \"spine\"\n",
    )
    .unwrap();
    let topology = topology.to_str().unwrap();
    let mut args = with(&["--topology"]);
    args.push(topology);
    schedd_fails(&args, "unknown parent \"spine\"");
    let mut args = with(&["--topology"]);
    args.push("/nonexistent/topology.toml");
    schedd_fails(&args, "topology file /nonexistent/topology.toml");
}

#[test]
fn the_data_directory_is_private_and_used_by_one_scheduler_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("schedd");
    let _first = Schedd::start(&data, &[]);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the log holds every job's environment");
    schedd_fails(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "cannot open the log",
    );
}

/// A data directory written in another state format (an older or newer Gantry) is refused
/// with what to do, before the scheduler listens, and left as it was.
#[test]
fn a_data_directory_of_another_state_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("schedd");
    let mut first = Schedd::start(&data, &[]);
    first.daemon.kill9();
    let other = gantry_state::STATE_FORMAT + 1;
    {
        let db = sled::open(data.join("raft")).unwrap();
        let meta = db.open_tree("raft_meta").unwrap();
        meta.insert("data_format", &other.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let refusal = format!(
        "the data was written in state format {other}; this build reads format {}, and there is \
         no migration between formats",
        gantry_state::STATE_FORMAT
    );
    schedd_fails(&args, &refusal);
    // Refused again: nothing was rewritten.
    schedd_fails(&args, &refusal);
}
