//! Checkpoint directories of jobs that run as their users: each is the user's own, and it is
//! removed by a documented rule once its job has ended. Runs as root (CI does) and fails,
//! never skips, without it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use gantry_testkit::scripts::{script, until_exists};
use gantry_testkit::{NOBODY, OneNode, gantry_ok, require_root, submit_with, wait_for, wait_state};

/// `gantry submit ARGS` as `nobody`, from `dir`.
fn submit_as_nobody(url: &str, dir: &Path, args: &[&str]) -> u64 {
    submit_with(url, dir, args, |c| c.uid(NOBODY).gid(NOBODY))
}

/// A job run as `nobody` failed with `Permission denied`: the checkpoint root was made 0700
/// root. Now its own dir is the user's (0700), the root lets users through, and once the job
/// has ended for `checkpoint.keep` the node daemons' sweep removes it — never the dir of a
/// job that has not ended.
#[test]
fn a_job_run_as_its_user_owns_its_checkpoint_dir_which_goes_after_the_job() {
    require_root("running a job as nobody");
    let c = OneNode::start(&[
        "--gpus",
        "2",
        "--cpus",
        "4",
        "--mem",
        "4G",
        "--checkpoint-sweep-every",
        "1s",
    ]);
    let url = c.url();
    // nobody must reach the work dir (and the job's files under the node's data dir).
    fs::set_permissions(c.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(
        &c.work,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    gantry_ok(url, &["admin", "config", "set", "checkpoint.keep", "0s"]);
    let release = c.work.join("release");
    let body = format!(
        "#!/bin/sh\n\
         echo saved > \"$GANTRY_CHECKPOINT_DIR/state\" || exit 3\n\
         stat -c '%u %a' \"$GANTRY_CHECKPOINT_DIR\"\n\
         [ \"$GANTRY_JOB_NAME\" = long ] && {}\n\
         exit 0\n",
        until_exists(&release)
    );
    let job_script = script(&c.work, "save.sh", &body);
    fs::set_permissions(&job_script, fs::Permissions::from_mode(0o755)).unwrap();
    let args = |name: &'static str| {
        [
            "-J",
            name,
            "-G",
            "1",
            "-t",
            "10m",
            "--checkpoint",
            "USR1@10",
            job_script.as_str(),
        ]
    };
    let root = c.node.data_dir.join("checkpoints");
    // A job that runs on, then one that ends at once.
    let long = submit_as_nobody(url, &c.work, &args("long"));
    // `<root>/<cluster>/<job>`: the cluster's folder is the only one.
    let cluster = wait_for("the cluster's checkpoint folder", || {
        fs::read_dir(&root).ok()?.flatten().next().map(|e| e.path())
    });
    let long_dir = cluster.join(long.to_string());
    wait_for("the long job's checkpoint", || {
        long_dir.join("state").exists().then_some(())
    });
    let short = submit_as_nobody(url, &c.work, &args("short"));
    let done = wait_state(url, short, "COMPLETED");
    let out = fs::read_to_string(c.work.join(format!("gantry-{short}.out"))).unwrap();
    assert_eq!(out, format!("{NOBODY} 700\n"), "{done}");
    // Users may pass through the root and the cluster's folder, not list them.
    for dir in [&root, &cluster] {
        let mode = fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o711, "{} mode {mode:o}", dir.display());
    }
    let meta = fs::metadata(&long_dir).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
    // Ended and kept 0 s: the next sweep removes it; the running job's stays.
    let short_dir = cluster.join(short.to_string());
    wait_for("the ended job's checkpoint dir to go", || {
        (!short_dir.exists()).then_some(())
    });
    assert!(long_dir.join("state").exists(), "a running job's dir went");
    fs::write(&release, "").unwrap();
    wait_state(url, long, "COMPLETED");
    wait_for("the second job's checkpoint dir to go", || {
        (!long_dir.exists()).then_some(())
    });
}
