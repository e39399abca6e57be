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

pub mod scripts;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
// Re-exported so a crate's tests can read the CLI's JSON without depending on serde_json.
pub use serde_json::Value;

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

    /// Waits until the daemon's log (its stderr) has a line containing `marker`; returns
    /// that line.
    pub fn wait_log(&self, marker: &str) -> String {
        wait_for(&format!("{marker:?} in {}", self.log.display()), || {
            fs::read_to_string(&self.log)
                .ok()?
                .lines()
                .find(|line| line.contains(marker))
                .map(str::to_string)
        })
    }

    /// Waits for a stdout line containing `marker` and returns the text after it.
    pub fn wait_line(&mut self, marker: &str) -> String {
        self.try_wait_line(marker).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Daemon::wait_line`], but a daemon that exits first, or stays silent past
    /// `DEADLINE`, is an `Err` describing it (with its log) instead of a panic.
    pub fn try_wait_line(&mut self, marker: &str) -> Result<String, String> {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!(
                    "daemon exited with {status} before printing {marker:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100))
                && let Some(pos) = line.find(marker)
            {
                return Ok(line[pos + marker.len()..].trim().to_string());
            }
        }
        Err(format!(
            "no {marker:?} from the daemon within {DEADLINE:?}; log:\n{}",
            self.log_tail()
        ))
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
        tail(&self.log)
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

/// One `gantry-schedd` replica of a [`Cluster`]. Its address and data directory stay the
/// same across kills and restarts; `daemon` is `None` while it is down.
pub struct Replica {
    /// Its Raft id, 1-based.
    pub id: u64,
    /// `127.0.0.1:PORT`
    pub listen: String,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub data_dir: PathBuf,
    pub daemon: Option<Daemon>,
    /// Every log file this replica wrote, one per start, oldest first.
    pub logs: Vec<PathBuf>,
    stopped: bool,
}

impl Replica {
    /// Started and not frozen by SIGSTOP: it can answer.
    pub fn is_up(&self) -> bool {
        self.daemon.is_some() && !self.stopped
    }

    fn signal(&self, signal: Signal) {
        let daemon = self
            .daemon
            .as_ref()
            .unwrap_or_else(|| panic!("replica {} is not running", self.id));
        let pid = Pid::from_raw(i32::try_from(daemon.pid()).expect("pid fits"));
        kill(pid, signal).unwrap_or_else(|e| panic!("{signal} to replica {}: {e}", self.id));
    }
}

/// `n` `gantry-schedd` replicas forming one Raft group on 127.0.0.1. Every replica is
/// started with the full `--peers` list (itself included), so the ports are picked before
/// any replica starts. Dropping the cluster kills every replica it started.
pub struct Cluster {
    pub replicas: Vec<Replica>,
    /// `1=127.0.0.1:P1,2=127.0.0.1:P2,...`
    pub peers: String,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Cluster {
    /// Starts `n` replicas with data directories `dir/replica-ID` and logs beside them,
    /// waits until each says it listens, then until one of them leads (clients are
    /// refused before that). `extra` goes to every replica's command line.
    pub fn start(dir: &Path, n: usize, extra: &[&str]) -> Cluster {
        let cluster = Cluster::start_listening(dir, n, extra);
        cluster.leader();
        cluster
    }

    /// As [`Cluster::start`], without waiting for a leader.
    pub fn start_listening(dir: &Path, n: usize, extra: &[&str]) -> Cluster {
        assert!(n > 0, "a cluster needs at least one replica");
        match Cluster::try_start(dir, n, extra) {
            Ok(cluster) => cluster,
            // The ports were free when picked but are released before the replicas bind
            // them; another process may have taken one meanwhile. Pick new ones, once.
            Err(e) if is_bind_failure(&e) => {
                eprintln!("a replica could not bind its port; starting the cluster again: {e}");
                Cluster::try_start(dir, n, extra).unwrap_or_else(|e| panic!("{e}"))
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn try_start(dir: &Path, n: usize, extra: &[&str]) -> Result<Cluster, String> {
        fs::create_dir_all(dir).expect("create the cluster directory");
        let ports = free_ports(n);
        let replicas: Vec<Replica> = ports
            .iter()
            .zip(1u64..)
            .map(|(port, id)| {
                let listen = format!("127.0.0.1:{port}");
                let data_dir = dir.join(format!("replica-{id}"));
                // A failed first attempt may have left a log for other peers behind.
                let _ = fs::remove_dir_all(&data_dir);
                Replica {
                    id,
                    url: format!("http://{listen}"),
                    listen,
                    data_dir,
                    daemon: None,
                    logs: Vec::new(),
                    stopped: false,
                }
            })
            .collect();
        let peers = replicas
            .iter()
            .map(|r| format!("{}={}", r.id, r.listen))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            replicas,
            peers,
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|a| (*a).to_string()).collect(),
        };
        let ids = cluster.ids();
        cluster.launch(&ids, false)?;
        Ok(cluster)
    }

    /// Spawns every replica in `ids` first, then waits for each: a replica may need its
    /// peers up before it is ready. A `joining` replica is not in its own `--peers`: it
    /// waits to be added by `gantry admin replica add`.
    fn launch(&mut self, ids: &[u64], joining: bool) -> Result<(), String> {
        for &id in ids {
            let peers = if joining {
                self.peers
                    .split(',')
                    .filter(|p| !p.starts_with(&format!("{id}=")))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                self.peers.clone()
            };
            let extra = self.extra.clone();
            let log_dir = self.dir.clone();
            let replica = self.replica_mut(id);
            assert!(
                replica.daemon.is_none(),
                "replica {id} still runs; kill9 it before starting it again"
            );
            let id_text = id.to_string();
            let dir = replica.data_dir.to_str().expect("utf-8 path").to_string();
            let mut args = vec![
                "--id",
                &id_text,
                "--listen",
                &replica.listen,
                "--peers",
                &peers,
                "--data-dir",
                &dir,
            ];
            args.extend(extra.iter().map(String::as_str));
            let log = log_dir.join(format!("replica-{id}.{}.log", unique()));
            replica.logs.push(log.clone());
            replica.daemon = Some(Daemon::spawn(&bin("gantry-schedd"), &args, log));
            replica.stopped = false;
        }
        for &id in ids {
            let replica = self.replica_mut(id);
            let daemon = replica.daemon.as_mut().expect("just spawned");
            let listening = daemon
                .try_wait_line("gantry-schedd listening on")
                .map_err(|e| format!("replica {id} did not start: {e}"))?;
            assert_eq!(
                listening, replica.listen,
                "replica {id} listens elsewhere than its --listen"
            );
        }
        Ok(())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.replicas.iter().map(|r| r.id).collect()
    }

    pub fn replica(&self, id: u64) -> &Replica {
        self.replicas
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no replica {id}"))
    }

    fn replica_mut(&mut self, id: u64) -> &mut Replica {
        self.replicas
            .iter_mut()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no replica {id}"))
    }

    /// `http://127.0.0.1:PORT` of one replica.
    pub fn url(&self, id: u64) -> String {
        self.replica(id).url.clone()
    }

    /// Every replica's URL, comma-separated, in id order: what `--server` and
    /// `GANTRY_SERVER` take.
    pub fn servers(&self) -> String {
        self.replicas
            .iter()
            .map(|r| r.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL, as a crash would; its address and data directory are kept for a restart.
    pub fn kill9(&mut self, id: u64) {
        let replica = self.replica_mut(id);
        if let Some(mut daemon) = replica.daemon.take() {
            daemon.kill9();
        }
        replica.stopped = false;
    }

    pub fn kill9_all(&mut self) {
        for id in self.ids() {
            self.kill9(id);
        }
    }

    /// Starts a killed replica again on the same port and data directory, and waits until
    /// it listens.
    pub fn restart(&mut self, id: u64) {
        self.restart_many(&[id]);
    }

    /// Restarts several killed replicas together (all of them after a total outage, when
    /// none can be ready before a majority is back).
    pub fn restart_many(&mut self, ids: &[u64]) {
        self.launch(ids, false).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Deletes a killed replica's data directory, as a lost disk would.
    pub fn wipe(&mut self, id: u64) {
        let replica = self.replica(id);
        assert!(
            replica.daemon.is_none(),
            "kill9 replica {id} before wiping it"
        );
        fs::remove_dir_all(&replica.data_dir).expect("remove the replica's data directory");
    }

    /// Starts a killed replica as a newcomer: `--peers` names only the others, so it waits
    /// to be added (`gantry admin replica add`).
    pub fn start_joining(&mut self, id: u64) {
        self.launch(&[id], true).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Freezes a replica with SIGSTOP: to the others it looks partitioned away.
    pub fn stop(&mut self, id: u64) {
        self.replica(id).signal(Signal::SIGSTOP);
        self.replica_mut(id).stopped = true;
    }

    /// Resumes a replica frozen by [`Cluster::stop`] with SIGCONT.
    pub fn cont(&mut self, id: u64) {
        self.replica(id).signal(Signal::SIGCONT);
        self.replica_mut(id).stopped = false;
    }

    /// The replicas that answer a client right now (`gantry queue --server <that one
    /// only>` succeeds); followers refuse with "not the leader". Killed and frozen
    /// replicas are not asked.
    pub fn leaders(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .filter(|r| r.is_up())
            .filter(|r| {
                gantry(&r.url, &["queue", "-o", "json", "--server", &r.url])
                    .status
                    .success()
            })
            .map(|r| r.id)
            .collect()
    }

    /// Waits until exactly one replica answers as leader and returns its id.
    pub fn leader(&self) -> u64 {
        let start = Instant::now();
        let mut last = Vec::new();
        while start.elapsed() < DEADLINE {
            last = self.leaders();
            if let [one] = last[..] {
                return one;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no single leader within {DEADLINE:?} (answering as leader: {last:?}); replica logs:\n{}",
            self.log_tails()
        );
    }

    /// The replicas that are up and are not `leader`.
    pub fn followers_of(&self, leader: u64) -> Vec<u64> {
        self.replicas
            .iter()
            .filter(|r| r.is_up() && r.id != leader)
            .map(|r| r.id)
            .collect()
    }

    /// The end of every replica's current log, for failure messages.
    pub fn log_tails(&self) -> String {
        self.replicas
            .iter()
            .map(|r| match r.logs.last() {
                Some(log) => format!("--- replica {} ({}):\n{}", r.id, log.display(), tail(log)),
                None => format!("--- replica {}: never started", r.id),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `n` distinct ports that were free a moment ago: bound together so the OS hands out
/// different ones, then released for the replicas to bind.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

fn is_bind_failure(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("cannot listen") || error.contains("address already in use")
}

/// The last 40 lines of a log file.
fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
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

/// A scheduler and one node daemon (`node1`, declared with `node_args`) in a scratch
/// directory that also holds `work/`, a directory for jobs to run in. Up when returned.
pub struct OneNode {
    /// Declared before `dir`: the daemons are stopped before their directory goes.
    pub node: Noded,
    pub schedd: Schedd,
    pub work: PathBuf,
    pub dir: tempfile::TempDir,
}

impl OneNode {
    pub fn start(node_args: &[&str]) -> OneNode {
        let dir = tempfile::tempdir().expect("a scratch dir");
        let work = dir.path().join("work");
        fs::create_dir_all(&work).expect("the work dir");
        let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
        let node = Noded::start(&schedd.url, "node1", &dir.path().join("node1"), node_args);
        wait_nodes_up(&schedd.url, 1);
        OneNode {
            node,
            schedd,
            work,
            dir,
        }
    }

    pub fn url(&self) -> &str {
        &self.schedd.url
    }

    /// The work dir as `-D` takes it.
    pub fn wd(&self) -> &str {
        self.work.to_str().expect("utf-8 path")
    }
}

/// A scheduler, and node daemons (1 to N GPUs, 4 CPUs, 4G) started one by one, sharing a
/// checkpoint root as nodes on shared storage do; `work/` is for jobs to run in.
pub struct Site {
    pub schedd: Schedd,
    pub work: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn start(schedd_args: &[&str]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        fs::create_dir_all(&work).unwrap();
        let schedd = Schedd::start(&dir.path().join("schedd"), schedd_args);
        Site { schedd, work, dir }
    }

    pub fn node(&self, name: &str, gpus: u32) -> Noded {
        let shared = self.dir.path().join("checkpoints");
        let gpus = gpus.to_string();
        let args = [
            "--gpus",
            &gpus,
            "--cpus",
            "4",
            "--mem",
            "4G",
            "--checkpoint-root",
            shared.to_str().unwrap(),
        ];
        Noded::start(self.url(), name, &self.dir.path().join(name), &args)
    }

    pub fn url(&self) -> &str {
        &self.schedd.url
    }

    pub fn wd(&self) -> &str {
        self.work.to_str().unwrap()
    }

    /// A job to move: node `first` (1 GPU) runs [`scripts::counter`] with a checkpoint
    /// contract until it has counted to 20; then node `second` (1 GPU) is up to take it.
    /// Returns the job's id and both nodes.
    pub fn counter_on_first_of_two(&self, first: &str, second: &str) -> (u64, Noded, Noded) {
        let url = self.url();
        let first = self.node(first, 1);
        wait_nodes_up(url, 1);
        let script = scripts::script(&self.work, "count.sh", &scripts::counter(&self.work));
        let args = [
            "-G",
            "1",
            "--checkpoint",
            "SIGUSR1@60s",
            "-D",
            self.wd(),
            &script,
        ];
        let id = submit(url, &args);
        scripts::wait_lines("the job to count to 20", &self.work.join("steps"), 20);
        let second = self.node(second, 1);
        wait_nodes_up(url, 2);
        (id, first, second)
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

/// Every job, ended ones too (`gantry queue --all -o json`), or `None` when no replica
/// answers (during an election, or with every replica down).
pub fn try_all_jobs(server: &str) -> Option<Vec<Value>> {
    let out = gantry(server, &["queue", "--all", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("queue printed invalid JSON ({e}): {text}")),
    )
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

/// The user name the CLI sends for this process (as `gantry`'s own `caller()` finds it).
pub fn caller_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.as_raw().to_string(),
    }
}

/// For tests that switch users (jobs run as their owners): they need root, which CI has.
/// They fail rather than skip without it, so that a run that cannot check them says so.
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root, to run jobs as another user: run the tests as root (CI does)"
    );
}

/// A user other than root that jobs can run as: `nobody`, uid and gid 65534 on Linux.
pub const NOBODY: u32 = 65534;

/// Lets everyone (the `default` account) use QoS `high` and deadlines, which are granted per
/// account: for tests of what those do, not of who may use them.
pub fn grant_high_qos_and_deadlines(server: &str) {
    gantry_ok(
        server,
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
}

/// Makes a higher QoS preempt at once, whatever it costs: no minimum runtime, and a
/// minute of it outweighs any victim's (`preempt.qos_gain`). For tests of what a
/// preemption does, not of when it pays.
pub fn preempt_at_once(server: &str) {
    for (key, value) in [("preempt.min_runtime", "0s"), ("preempt.qos_gain", "1000")] {
        gantry_ok(server, &["admin", "config", "set", key, value]);
    }
}

/// `gantry submit --parsable ARGS` from `cwd`, the command shaped by `with` first (another
/// user, more environment); returns the job id, panicking with stderr when refused.
pub fn submit_with(
    server: &str,
    cwd: &Path,
    args: &[&str],
    with: impl FnOnce(&mut Command) -> &mut Command,
) -> u64 {
    let mut command = Command::new(bin("gantry"));
    command
        .arg("submit")
        .arg("--parsable")
        .args(args)
        .env("GANTRY_SERVER", server)
        .current_dir(cwd)
        .stdin(Stdio::null());
    let out = with(&mut command).output().expect("run gantry submit");
    assert!(
        out.status.success(),
        "gantry submit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a job id: {text:?}"))
}

/// Runs the CLI and checks that it is refused (a non-zero exit) saying `expected`.
pub fn refused(server: &str, args: &[&str], expected: &str) {
    let out = gantry(server, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
}
