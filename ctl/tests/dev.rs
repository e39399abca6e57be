//! `gantry dev`: one process running a scheduler and node daemons.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;
use std::path::{Path, PathBuf};

use gantry_testkit::scripts::until_exists;
use gantry_testkit::{
    Daemon, bin, job, kill_leftovers, process_group_alive, submit, wait_for, wait_nodes_up,
    wait_state,
};

/// A `gantry dev` process; dropping it kills it and whatever jobs it left.
struct Dev {
    daemon: Daemon,
    url: String,
    listen: String,
    data: PathBuf,
}

impl Dev {
    fn start(data: &Path, listen: &str) -> Dev {
        let args = [
            "dev",
            "--listen",
            listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--gpus",
            "4",
            "--cpus",
            "8",
            "--mem",
            "8G",
            "--kill-grace",
            "2s",
        ];
        let log = data.with_extension(format!("dev.{}.log", std::process::id()));
        let mut daemon = Daemon::spawn(&bin("gantry"), &args, log);
        let rest = daemon.wait_line("scheduler listening on");
        let url = rest.split(';').next().unwrap().trim().to_string();
        let listen = url.trim_start_matches("http://").to_string();
        Dev {
            daemon,
            url,
            listen,
            data: data.to_path_buf(),
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.daemon.kill9();
        kill_leftovers(&self.data);
    }
}

fn hold_script(release: &Path) -> String {
    format!("echo pgid=$$; {}; echo finished", until_exists(release))
}

#[test]
fn kill_9_of_gantry_dev_then_restart_keeps_history_and_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let wd = work.to_str().unwrap();
    let release = work.join("release");

    let mut dev = Dev::start(&data, "127.0.0.1:0");
    let url = dev.url.clone();
    wait_nodes_up(&url, 1);
    let done = submit(&url, &["-D", wd, "--", "true"]);
    wait_state(&url, done, "COMPLETED");
    let running = submit(
        &url,
        &[
            "-G",
            "4",
            "-D",
            wd,
            "--",
            "sh",
            "-c",
            &hold_script(&release),
        ],
    );
    wait_state(&url, running, "RUNNING");
    let queued: Vec<u64> = (0..5)
        .map(|_| submit(&url, &["-G", "1", "-D", wd, "--", "true"]))
        .collect();

    dev.daemon.kill9();
    let listen = dev.listen.clone();
    std::mem::forget(dev); // keep the running job's supervisor alive across the restart
    let dev = Dev::start(&data, &listen);
    assert_eq!(dev.url, url);

    assert_eq!(job(&url, done)["state"], "COMPLETED", "history survives");
    assert_eq!(job(&url, running)["state"], "RUNNING");
    for id in &queued {
        assert!(
            job(&url, *id)["state"].is_string(),
            "acknowledged job {id} lost"
        );
    }
    fs::write(&release, "").unwrap();
    wait_state(&url, running, "COMPLETED");
    let out = fs::read_to_string(work.join(format!("gantry-{running}.out"))).unwrap();
    assert!(out.contains("finished"), "{out}");
    for id in &queued {
        wait_state(&url, *id, "COMPLETED");
    }
    let next = submit(&url, &["-D", wd, "--", "true"]);
    assert!(
        next > *queued.iter().max().unwrap(),
        "id {next} handed out twice"
    );
}

#[test]
fn sigterm_stops_gantry_dev_together_with_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let mut dev = Dev::start(&data, "127.0.0.1:0");
    let url = dev.url.clone();
    wait_nodes_up(&url, 1);
    let id = submit(
        &url,
        &[
            "-D",
            work.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &hold_script(&work.join("never")),
        ],
    );
    wait_state(&url, id, "RUNNING");
    let pgid: i32 = wait_for("the job's pid", || {
        fs::read_to_string(work.join(format!("gantry-{id}.out")))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("pgid=")?.trim().parse().ok())
    });
    assert!(
        dev.daemon.terminate(),
        "gantry dev did not exit after SIGTERM"
    );
    assert!(!process_group_alive(pgid), "the job outlived gantry dev");
}

/// The banner's suggestion works on the cluster it describes: it suggested `nvidia-smi -L`,
/// which fails where the GPUs are declared (no driver).
#[test]
fn the_dev_banner_suggests_a_job_that_runs_here() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let mut dev = Dev::start(&data, "127.0.0.1:0");
    let banner = dev.daemon.wait_line("gantry dev: try");
    let suggested = banner
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {banner:?}"));
    assert!(!suggested.contains("nvidia-smi"), "{banner}");
    wait_nodes_up(&dev.url, 1);
    let path = format!(
        "{}:{}",
        bin("gantry").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &suggested.replace("gantry submit", "gantry submit --parsable"),
        ])
        .env("PATH", path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let id: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{suggested}: {}", String::from_utf8_lossy(&out.stderr)));
    wait_state(&dev.url, id, "COMPLETED");
}
