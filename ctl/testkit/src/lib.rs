//! Dev-only helpers for Gantry's multi-process tests: start the real binaries on
//! 127.0.0.1 with ports the OS picks, poll for conditions with generous deadlines, and
//! kill exactly the processes a test started (daemons, and the job supervisors they left).

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

/// Generous: CI machines are small and busy. A broken run still fails, just later.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The path of a workspace binary, next to the running test's own directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `DEADLINE`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A process a test started; killed (SIGKILL) and reaped when dropped.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `program args`, stdout read line by line, stderr into `log`.
    pub fn spawn(program: &Path, args: &[&str], log: PathBuf) -> Daemon {
        let err = fs::File::create(&log).expect("create the daemon log");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, log, lines }
    }

    /// Waits for a stdout line containing `marker` and returns the text after it.
    pub fn wait_line(&mut self, marker: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "daemon exited with {status} before printing {marker:?}; log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100))
                && let Some(pos) = line.find(marker)
            {
                return line[pos + marker.len()..].trim().to_string();
            }
        }
        panic!(
            "no {marker:?} from the daemon within {DEADLINE:?}; log:\n{}",
            self.log_tail()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns whether it exited by itself.
    pub fn terminate(&mut self) -> bool {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"));
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `gantry-schedd` on 127.0.0.1 with an OS-picked port.
pub struct Schedd {
    pub daemon: Daemon,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub listen: String,
    pub data_dir: PathBuf,
}

impl Schedd {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Schedd {
        Schedd::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts on a given address (to restart on the same port).
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Schedd {
        let dir = data_dir.to_str().expect("utf-8 path");
        let mut args = vec!["--listen", listen, "--data-dir", dir];
        args.extend_from_slice(extra);
        let log = data_dir.with_extension(format!("schedd.{}.log", unique()));
        let mut daemon = Daemon::spawn(&bin("gantry-schedd"), &args, log);
        let listen = daemon.wait_line("gantry-schedd listening on");
        let url = format!("http://{listen}");
        Schedd {
            daemon,
            url,
            listen,
            data_dir: data_dir.to_path_buf(),
        }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A `gantry-noded` with a declared inventory. Dropping it kills the daemon and every
/// job supervisor and job it left in its data directory.
pub struct Noded {
    pub daemon: Daemon,
    pub name: String,
    pub data_dir: PathBuf,
}

impl Noded {
    pub fn start(server: &str, name: &str, data_dir: &Path, extra: &[&str]) -> Noded {
        let dir = data_dir.to_str().expect("utf-8 path");
        let mut args = vec!["--server", server, "--name", name, "--data-dir", dir];
        args.extend_from_slice(extra);
        let log = data_dir.with_extension(format!("noded.{}.log", unique()));
        let daemon = Daemon::spawn(&bin("gantry-noded"), &args, log);
        Noded {
            daemon,
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
        }
    }
}

impl Drop for Noded {
    fn drop(&mut self) {
        self.daemon.kill9();
        kill_leftovers(&self.data_dir);
    }
}

/// Kills the process groups of every supervisor and job recorded under `dir` (any
/// `*.pid` file below it). Supervisors outlive their daemon by design; tests must not.
pub fn kill_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            kill_leftovers(&path);
        } else if path.extension().is_some_and(|e| e == "pid") {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            if let Some(pid) = pid.filter(|p| *p > 1) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Runs the `gantry` CLI against `server`.
pub fn gantry(server: &str, args: &[&str]) -> Output {
    gantry_in(server, args, None)
}

/// Runs the `gantry` CLI in a working directory.
pub fn gantry_in(server: &str, args: &[&str], cwd: Option<&Path>) -> Output {
    let mut cmd = Command::new(bin("gantry"));
    cmd.args(args)
        .env("GANTRY_SERVER", server)
        .stdin(Stdio::null());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.output().expect("run gantry")
}

/// Runs the CLI and returns its stdout, panicking with its stderr when it fails.
pub fn gantry_ok(server: &str, args: &[&str]) -> String {
    let out = gantry(server, args);
    assert!(
        out.status.success(),
        "gantry {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Submits and returns the job id (`--parsable`).
pub fn submit(server: &str, args: &[&str]) -> u64 {
    let mut all = vec!["submit", "--parsable"];
    all.extend_from_slice(args);
    let out = gantry_ok(server, &all);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("submit printed {out:?}, not a job id"))
}

/// `gantry show JOB -o json`.
pub fn job(server: &str, id: u64) -> Value {
    let out = gantry_ok(server, &["show", &id.to_string(), "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("show printed invalid JSON ({e}): {out}"))
}

pub fn job_state(server: &str, id: u64) -> String {
    job(server, id)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the job is in `state`, returning its JSON.
pub fn wait_state(server: &str, id: u64, state: &str) -> Value {
    wait_for(&format!("job {id} to be {state}"), || {
        let j = job(server, id);
        (j["state"] == state).then_some(j)
    })
}

/// `gantry nodes -o json`.
pub fn nodes(server: &str) -> Vec<Value> {
    let out = gantry_ok(server, &["nodes", "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("nodes printed invalid JSON ({e}): {out}"))
}

/// Waits until `count` nodes are registered and up.
pub fn wait_nodes_up(server: &str, count: usize) {
    wait_for(&format!("{count} node(s) up"), || {
        let up = nodes(server)
            .iter()
            .filter(|n| n["state"] != "DOWN")
            .count();
        (up >= count).then_some(())
    });
}

/// Whether a process with this pid exists (zombies count as gone).
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Whether any process is in process group `pgid`.
pub fn process_group_alive(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            return false;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after the command name: state ppid pgrp ...
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        rest.first().is_some_and(|s| *s != "Z")
            && rest.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
    })
}
