//! The node daemon against a tiny fake scheduler (a tonic `NodeSession` server in this test):
//! registration, launches, reports, heartbeats, reconnects, the session lease (a silent
//! scheduler is left for the next address), and a daemon restart while a job runs.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_noded::lease::lease_for;
use gantry_noded::{
    InventoryArgs, NodeConfig, Shutdown, SupervisorCommand, discover_inventory, run_node,
};
use gantry_proto as pb;
use gantry_testkit::scripts::until_exists;
use gantry_testkit::{Daemon, kill_leftovers};
use pb::node_message::Msg as Up;
use pb::node_session_server::{NodeSession, NodeSessionServer};
use pb::scheduler_message::Msg as Down;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

const BIN: &str = env!("CARGO_BIN_EXE_gantry-noded");
/// Generous: the machine is small and shared.
const DEADLINE: Duration = Duration::from_secs(60);

/// One node's stream, as the fake scheduler sees it. Dropping it closes the stream.
struct Session {
    inbound: Streaming<pb::NodeMessage>,
    outbound: mpsc::UnboundedSender<Result<pb::SchedulerMessage, Status>>,
    /// The last desired set sent, repeated by the keepalive. Locked while a set is sent, so
    /// a keepalive never overtakes a newer set with an older one.
    last_set: Arc<Mutex<Option<pb::Assignments>>>,
}

impl Session {
    /// The next message from the node that is not a heartbeat.
    async fn next(&mut self) -> Up {
        loop {
            match self.next_any().await {
                Up::Heartbeat(_) => continue,
                other => return other,
            }
        }
    }

    async fn next_any(&mut self) -> Up {
        let message = tokio::time::timeout(DEADLINE, self.inbound.message())
            .await
            .expect("a message from the node in time")
            .expect("the stream is healthy")
            .expect("the stream is open");
        message.msg.expect("a message with content")
    }

    fn send(&self, msg: Down) {
        self.outbound
            .send(Ok(pb::SchedulerMessage { msg: Some(msg) }))
            .expect("the node's stream is open");
    }

    /// Accepts the node as a live scheduler does: from the first set on, the last set is sent
    /// again every heartbeat interval (a keepalive that renews the node's session lease).
    fn registered(&self, name: &str, heartbeat_interval_ms: u64) {
        self.registered_then_silent(name, heartbeat_interval_ms);
        self.keep_alive(Duration::from_millis(heartbeat_interval_ms));
    }

    /// Accepts the node, then sends only what the test sends: no keepalive.
    fn registered_then_silent(&self, name: &str, heartbeat_interval_ms: u64) {
        self.registered_in_term(name, heartbeat_interval_ms, 0);
    }

    /// Accepts the node as the leader of Raft term `term`.
    fn registered_in_term(&self, name: &str, heartbeat_interval_ms: u64, term: u64) {
        self.send(Down::Registered(pb::Registered {
            node: name.into(),
            heartbeat_interval_ms,
            term,
            heartbeat_timeout_ms: 0,
            cluster: "test".into(),
        }));
    }

    fn assign(&self, jobs: Vec<pb::Assignment>) {
        let mut last_set = self.last_set.lock().unwrap();
        let set = pb::Assignments { jobs };
        self.send(Down::Assignments(set.clone()));
        *last_set = Some(set);
    }

    /// Repeats the last set every `interval` until the session is dropped, without launch
    /// details (as the scheduler does once a launch was sent).
    fn keep_alive(&self, interval: Duration) {
        let outbound = self.outbound.downgrade();
        let last_set = Arc::clone(&self.last_set);
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                ticks.tick().await;
                let Some(outbound) = outbound.upgrade() else {
                    return;
                };
                let last_set = last_set.lock().unwrap();
                let Some(set) = last_set.as_ref() else {
                    continue;
                };
                let mut set = set.clone();
                for assignment in &mut set.jobs {
                    assignment.launch = None;
                }
                let msg = Down::Assignments(set);
                if outbound
                    .send(Ok(pb::SchedulerMessage { msg: Some(msg) }))
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    /// Reads until the node drops the stream: every message must be a heartbeat.
    async fn dropped_by_the_node(&mut self) {
        loop {
            let received = tokio::time::timeout(DEADLINE, self.inbound.message())
                .await
                .expect("the node drops the stream in time");
            match received {
                Ok(Some(pb::NodeMessage {
                    msg: Some(Up::Heartbeat(_)),
                })) => continue,
                Ok(Some(other)) => panic!("expected only heartbeats, got {other:?}"),
                Ok(None) | Err(_) => return,
            }
        }
    }

    async fn register(&mut self) -> pb::RegisterNode {
        match self.next().await {
            Up::Register(register) => register,
            other => panic!("expected RegisterNode first, got {other:?}"),
        }
    }

    async fn started(&mut self, job_id: u64) -> pb::JobStarted {
        match self.next().await {
            Up::Started(started) if started.job_id == job_id => started,
            other => panic!("expected JobStarted for job {job_id}, got {other:?}"),
        }
    }

    async fn exited(&mut self, job_id: u64) -> pb::JobExited {
        match self.next().await {
            Up::Exited(exited) if exited.job_id == job_id => exited,
            other => panic!("expected JobExited for job {job_id}, got {other:?}"),
        }
    }
}

struct FakeScheduler {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl NodeSession for FakeScheduler {
    type AttachStream = UnboundedReceiverStream<Result<pb::SchedulerMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<pb::NodeMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let (outbound, rx) = mpsc::unbounded_channel();
        self.sessions
            .send(Session {
                inbound: request.into_inner(),
                outbound,
                last_set: Arc::default(),
            })
            .map_err(|_| Status::unavailable("the test is over"))?;
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// Starts the fake scheduler on 127.0.0.1 with an OS-picked port.
async fn fake_scheduler() -> (String, mpsc::UnboundedReceiver<Session>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sessions, rx) = mpsc::unbounded_channel();
    let service = NodeSessionServer::new(FakeScheduler { sessions });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr.to_string(), rx)
}

async fn next_session(sessions: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    tokio::time::timeout(DEADLINE, sessions.recv())
        .await
        .expect("the node connects in time")
        .expect("server running")
}

fn command(argv: &[&str]) -> Option<pb::Program> {
    Some(pb::Program {
        kind: Some(pb::program::Kind::Command(pb::CommandLine {
            argv: argv.iter().map(|a| a.to_string()).collect(),
        })),
    })
}

fn launch(work: &Path, job_id: u64, argv: &[&str]) -> pb::Launch {
    pb::Launch {
        name: format!("job-{job_id}"),
        user: "tester".into(),
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        program: command(argv),
        work_dir: work.to_str().unwrap().into(),
        stdout_path: work
            .join(format!("out-{job_id}.txt"))
            .to_str()
            .unwrap()
            .into(),
        stderr_path: String::new(),
        env: vec![pb::EnvVar {
            name: "PATH".into(),
            value: std::env::var("PATH").unwrap_or_default(),
        }],
        gpus: vec![0],
        cpus: 1,
        mem_mib: 100,
        time_limit_ms: 0,
        node_rank: 0,
        nodes: vec!["n1".into()],
        submit_dir: work.to_str().unwrap().into(),
        checkpoint: None,
        job_token: String::new(),
        append_output: false,
        cluster: "test".into(),
    }
}

fn assignment(job_id: u64, launch: Option<pb::Launch>, cancel: bool) -> pb::Assignment {
    pb::Assignment {
        job_id,
        attempt: 0,
        epoch: 7,
        cancel,
        launch,
        preempt: false,
        warning: String::new(),
    }
}

/// The in-process daemon's logs, shown when a test fails.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("gantry_noded=debug")
        .try_init();
}

/// Polls `check` with a generous deadline.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Some process holds a `flock` on `path` (as /proc/locks lists it: `... FLOCK ... MAJ:MIN:INODE
/// ...`). Read, not probed: a probe could take the lock from the daemon.
fn flock_held(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(inode) = fs::metadata(path).map(|m| m.ino()) else {
        return false;
    };
    let suffix = format!(":{inode}");
    match fs::read_to_string("/proc/locks") {
        Ok(locks) => locks.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&"FLOCK") && fields.get(5).is_some_and(|f| f.ends_with(&suffix))
        }),
        // Cannot tell: the file exists, the lock follows it within microseconds.
        Err(_) => true,
    }
}

fn alive(pid: u32) -> bool {
    // A zombie has no command line.
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Kills the daemons and whatever job processes they left, even when a test fails.
struct Scratch {
    root: tempfile::TempDir,
    work: PathBuf,
    data: PathBuf,
    daemons: Vec<Daemon>,
}

impl Scratch {
    fn new() -> Scratch {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        fs::create_dir(&work).unwrap();
        let data = root.path().join("data");
        Scratch {
            work,
            data,
            root,
            daemons: Vec::new(),
        }
    }

    fn job_dir(&self, job_id: u64) -> PathBuf {
        self.data.join("jobs").join(format!("{job_id}.0"))
    }

    fn start_noded(&mut self, server: &str) {
        let log = self
            .root
            .path()
            .join(format!("noded-{}.log", self.daemons.len()));
        let args = [
            "--server",
            server,
            "--name",
            "n1",
            "--data-dir",
            self.data.to_str().unwrap(),
            "--gpus",
            "2",
            "--gpu-model",
            "T4",
            "--cpus",
            "4",
            "--mem",
            "4G",
            "--kill-grace",
            "2s",
        ];
        self.daemons.push(Daemon::spawn(Path::new(BIN), &args, log));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for daemon in &mut self.daemons {
            daemon.kill9();
        }
        kill_leftovers(&self.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_runs_jobs_reports_them_and_survives_its_own_restart() {
    init_logs();
    let (addr, mut sessions) = fake_scheduler().await;
    let mut scratch = Scratch::new();
    scratch.start_noded(&addr);

    // Registration: inventory, nothing running yet.
    let mut session = next_session(&mut sessions).await;
    let register = session.register().await;
    assert_eq!(
        (register.name.as_str(), register.pool.as_str()),
        ("n1", "default")
    );
    assert_eq!((register.cpus, register.mem_mib), (4, 4096));
    assert_eq!(
        register
            .gpus
            .iter()
            .map(|g| (g.index, g.model.as_str()))
            .collect::<Vec<_>>(),
        vec![(0, "T4"), (1, "T4")]
    );
    assert!(register.running.is_empty() && register.finished.is_empty());
    assert!(!register.version.is_empty());
    session.registered("n1", 100);

    // A job that says hi: started, then exited 0, its output in its file.
    session.assign(vec![assignment(
        1,
        Some(launch(&scratch.work, 1, &["echo", "hi"])),
        false,
    )]);
    let started = session.started(1).await;
    assert!(started.pid > 0);
    let exited = session.exited(1).await;
    assert_eq!(
        (exited.reason, exited.exit_code, exited.signal),
        (pb::ExitReason::Exited as i32, Some(0), None)
    );
    assert_eq!(
        fs::read_to_string(scratch.work.join("out-1.txt")).unwrap(),
        "hi\n"
    );

    // Heartbeats come at the interval the scheduler asked for.
    loop {
        if let Up::Heartbeat(_) = session.next_any().await {
            break;
        }
    }

    // Still assigned (the scheduler has not applied the end yet): nothing happens, it is not
    // launched again. Then no longer assigned: the record goes.
    session.assign(vec![assignment(
        1,
        Some(launch(&scratch.work, 1, &["echo", "again"])),
        false,
    )]);
    session.assign(vec![]);
    let dir1 = scratch.job_dir(1);
    eventually("job 1's record to be forgotten", || !dir1.exists()).await;
    assert_eq!(
        fs::read_to_string(scratch.work.join("out-1.txt")).unwrap(),
        "hi\n"
    );

    // A job that runs until the test lets it end (a fixed sleep would end on its own on a
    // loaded machine before the checks below); the daemon crashes under it.
    session.assign(vec![assignment(
        2,
        Some(launch(
            &scratch.work,
            2,
            &[
                "sh",
                "-c",
                &format!("{}; echo slept", until_exists(Path::new("release-2"))),
            ],
        )),
        false,
    )]);
    let supervisor = session.started(2).await.pid;
    scratch.daemons[0].kill9();
    assert!(alive(supervisor), "the supervisor died with its daemon");

    // Restarted, the daemon re-attaches and says the job still runs, then reports its end.
    scratch.start_noded(&addr);
    let mut session = next_session(&mut sessions).await;
    let register = session.register().await;
    assert_eq!(
        register.running,
        vec![pb::JobRef {
            job_id: 2,
            attempt: 0
        }]
    );
    assert!(register.finished.is_empty(), "{:?}", register.finished);
    session.registered("n1", 1000);
    session.assign(vec![assignment(2, None, false)]);
    fs::write(scratch.work.join("release-2"), "").unwrap();
    let exited = session.exited(2).await;
    assert_eq!(
        (exited.reason, exited.exit_code),
        (pb::ExitReason::Exited as i32, Some(0)),
        "{exited:?}"
    );
    assert_eq!(
        fs::read_to_string(scratch.work.join("out-2.txt")).unwrap(),
        "slept\n"
    );

    // Assigned without a launch and unknown here: LOST.
    session.assign(vec![assignment(2, None, false), assignment(3, None, false)]);
    let exited = session.exited(3).await;
    assert_eq!(exited.reason, pb::ExitReason::Lost as i32);
    assert_eq!(exited.message, "node has no record of this job");

    // Cancel of a running job: SIGTERM, CANCELLED.
    let sleeper = |id| {
        assignment(
            id,
            Some(launch(&scratch.work, id, &["sleep", "1000"])),
            false,
        )
    };
    session.assign(vec![sleeper(4), sleeper(5)]);
    session.started(4).await;
    let job5 = session.started(5).await.pid;
    let job4_pid = scratch.job_dir(4).join("job.pid");
    eventually("job 4 to run", || job4_pid.exists()).await;
    session.assign(vec![assignment(4, None, true), assignment(5, None, false)]);
    let exited = session.exited(4).await;
    assert_eq!(
        (exited.reason, exited.signal),
        (pb::ExitReason::Cancelled as i32, Some(15)),
        "{exited:?}"
    );

    // The stream breaks: job 5 keeps running, the node reconnects and reports what it has.
    drop(session);
    let mut session = next_session(&mut sessions).await;
    let register = session.register().await;
    assert_eq!(
        register.running,
        vec![pb::JobRef {
            job_id: 5,
            attempt: 0
        }]
    );
    let finished: Vec<(u64, i32)> = register
        .finished
        .iter()
        .map(|f| (f.job_id, f.reason))
        .collect();
    // Jobs 2 and 3 were dropped from the set when 4 and 5 came: forgotten already.
    assert_eq!(finished, vec![(4, pb::ExitReason::Cancelled as i32)]);
    assert!(!scratch.job_dir(2).exists() && !scratch.job_dir(3).exists());
    assert!(alive(job5));
    session.registered("n1", 1000);

    // Nothing assigned any more: job 5 is stopped, every record is forgotten (job 5's too,
    // without another set: the scheduler's set does not change when it ends).
    session.assign(vec![]);
    let exited = session.exited(5).await;
    assert_eq!(exited.reason, pb::ExitReason::Cancelled as i32);
    let jobs = scratch.data.join("jobs");
    eventually("every job record to be forgotten", || {
        fs::read_dir(&jobs).is_ok_and(|mut d| d.next().is_none())
    })
    .await;
}

/// A job's record goes as soon as the node knows both that it ended and that the scheduler no
/// longer assigns it, in whichever order the two come. The scheduler pushes a set only when
/// the set changes, so nothing else would ever remove a record left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_job_the_scheduler_no_longer_assigns_is_forgotten_at_once() {
    init_logs();
    let (addr, mut sessions) = fake_scheduler().await;
    let mut scratch = Scratch::new();
    scratch.start_noded(&addr);
    let mut session = next_session(&mut sessions).await;
    session.register().await;
    session.registered("n1", 1000);

    // The end is reported first, then the scheduler (having applied it) pushes an empty set.
    session.assign(vec![assignment(
        1,
        Some(launch(&scratch.work, 1, &["echo", "hi"])),
        false,
    )]);
    session.started(1).await;
    session.exited(1).await;
    session.assign(vec![]);
    let dir1 = scratch.job_dir(1);
    eventually("job 1's record to be forgotten", || !dir1.exists()).await;

    // The other order: the job leaves the set while it still runs (the scheduler ended it
    // already, e.g. it declared the node lost). The node stops it and reports the end; the
    // set does not change again, so no new set comes.
    session.assign(vec![assignment(
        2,
        Some(launch(&scratch.work, 2, &["sleep", "1000"])),
        false,
    )]);
    session.started(2).await;
    let dir2 = scratch.job_dir(2);
    let job_pid = dir2.join("job.pid");
    eventually("job 2 to run", || job_pid.exists()).await;
    session.assign(vec![]);
    let exited = session.exited(2).await;
    assert_eq!(
        exited.reason,
        pb::ExitReason::Cancelled as i32,
        "{exited:?}"
    );
    eventually("job 2's record to be forgotten", || !dir2.exists()).await;
}

/// The library API that `gantry dev` embeds: `StopJobs` stops the jobs and reports them,
/// `LeaveJobs` leaves them running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_shutdown_stops_or_leaves_the_jobs() {
    init_logs();
    let (addr, mut sessions) = fake_scheduler().await;
    let scratch = Scratch::new();
    let inventory = discover_inventory(&InventoryArgs {
        gpus: Some(1),
        ..Default::default()
    })
    .unwrap();
    let config = NodeConfig {
        servers: vec![format!("http://{addr}")],
        name: "n1".into(),
        data_dir: scratch.data.clone(),
        pool: String::new(),
        inventory,
        supervisor: SupervisorCommand {
            program: BIN.into(),
            args: vec!["supervise".into()],
        },
        kill_grace_ms: 2_000,
        checkpoint_root: None,
        checkpoint_sweep_every_ms: gantry_noded::DEFAULT_CHECKPOINT_SWEEP_MS,
        watch_nvml: false,
    };

    // LeaveJobs: run_node returns, the job keeps running.
    let (stop, shutdown) = watch::channel(None);
    let node = tokio::spawn(run_node(config.clone(), shutdown));
    let mut session = next_session(&mut sessions).await;
    session.register().await;
    session.registered("n1", 1000);

    // A cancel right behind the launch, before the supervisor can take signals: still a
    // clean CANCELLED.
    session.assign(vec![assignment(
        9,
        Some(launch(&scratch.work, 9, &["sleep", "1000"])),
        false,
    )]);
    session.assign(vec![assignment(9, None, true)]);
    session.started(9).await;
    let exited = session.exited(9).await;
    assert_eq!(
        exited.reason,
        pb::ExitReason::Cancelled as i32,
        "{exited:?}"
    );
    session.assign(vec![assignment(
        1,
        Some(launch(&scratch.work, 1, &["sleep", "1000"])),
        false,
    )]);
    let supervisor = session.started(1).await.pid;
    // Running for real (the supervisor is ready and has started the job).
    let job_pid = scratch.job_dir(1).join("job.pid");
    eventually("the job to run", || job_pid.exists()).await;
    stop.send(Some(Shutdown::LeaveJobs)).unwrap();
    tokio::time::timeout(DEADLINE, node)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(alive(supervisor), "LeaveJobs stopped the job");

    // A second daemon on the same data dir re-attaches; StopJobs stops the job and reports it.
    let (stop, shutdown) = watch::channel(None);
    let node = tokio::spawn(run_node(config, shutdown));
    let mut session = next_session(&mut sessions).await;
    let register = session.register().await;
    assert_eq!(
        register.running,
        vec![pb::JobRef {
            job_id: 1,
            attempt: 0
        }]
    );
    session.registered("n1", 1000);
    stop.send(Some(Shutdown::StopJobs)).unwrap();
    let exited = session.exited(1).await;
    assert_eq!(
        (exited.reason, exited.signal),
        (pb::ExitReason::NodeShutdown as i32, Some(15)),
        "{exited:?}"
    );
    tokio::time::timeout(DEADLINE, node)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eventually("the supervisor to exit", || !alive(supervisor)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_cannot_share_a_data_dir() {
    init_logs();
    let scratch = Scratch::new();
    let config = NodeConfig {
        // Nothing listens there: the first daemon keeps retrying while holding the lock.
        servers: vec!["127.0.0.1:1".into()],
        name: "n1".into(),
        data_dir: scratch.data.clone(),
        pool: String::new(),
        inventory: Default::default(),
        supervisor: SupervisorCommand {
            program: BIN.into(),
            args: vec!["supervise".into()],
        },
        kill_grace_ms: 1_000,
        checkpoint_root: None,
        checkpoint_sweep_every_ms: gantry_noded::DEFAULT_CHECKPOINT_SWEEP_MS,
        watch_nvml: false,
    };
    let (stop, shutdown) = watch::channel(None);
    let first = tokio::spawn(run_node(config.clone(), shutdown.clone()));
    let lock = scratch.data.join("noded.lock");
    eventually("the first daemon to take its lock", || flock_held(&lock)).await;
    let err = run_node(config, shutdown).await.unwrap_err().to_string();
    assert!(err.contains("is in use by another gantry-noded"), "{err}");
    stop.send(Some(Shutdown::LeaveJobs)).unwrap();
    tokio::time::timeout(DEADLINE, first)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The heartbeat interval the lease tests ask for: short, so the lease is its 3 s floor.
const SHORT_HEARTBEAT_MS: u64 = 200;

/// A replica that goes silent with its stream open (frozen or partitioned, as the node sees
/// it) loses the node once the session lease has passed: the daemon drops that session and
/// registers with the next address of `--server`, and the job it runs keeps running and is
/// reported there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_scheduler_is_left_for_the_next_address_and_jobs_keep_running() {
    init_logs();
    let (silent_addr, mut silent_sessions) = fake_scheduler().await;
    let (next_addr, mut next_sessions) = fake_scheduler().await;
    let mut scratch = Scratch::new();
    scratch.start_noded(&format!("{silent_addr},{next_addr}"));

    let mut silent = next_session(&mut silent_sessions).await;
    silent.register().await;
    silent.registered_then_silent("n1", SHORT_HEARTBEAT_MS);
    // The last thing this scheduler ever sends: the node hears it after this instant.
    let last_sent = tokio::time::Instant::now();
    silent.assign(vec![assignment(
        1,
        Some(launch(&scratch.work, 1, &["sleep", "1000"])),
        false,
    )]);
    let supervisor = silent.started(1).await.pid;
    let job_pid = scratch.job_dir(1).join("job.pid");
    eventually("job 1 to run", || job_pid.exists()).await;
    let job: u32 = fs::read_to_string(&job_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // `silent` is kept: its stream stays open, it just says nothing any more.
    let mut moved = next_session(&mut next_sessions).await;
    let lease = lease_for(Duration::from_millis(SHORT_HEARTBEAT_MS));
    let waited = last_sent.elapsed();
    assert!(
        waited >= lease,
        "the node left after {waited:?}, before its lease of {lease:?}"
    );
    assert!(
        silent_sessions.try_recv().is_err(),
        "the node tried the silent scheduler again before the next address"
    );
    // Until it left, the node only heartbeated into the silent session; then it dropped it.
    silent.dropped_by_the_node().await;
    let log = scratch.daemons[0].log_tail();
    assert!(
        log.lines().any(|line| line.contains("WARN")
            && line.contains(&silent_addr)
            && line.contains("no message from the scheduler for")),
        "no warning naming the silent scheduler in the log:\n{log}"
    );

    // The job ran on through the switch and is reported at the new registration.
    let register = moved.register().await;
    assert_eq!(
        register.running,
        vec![pb::JobRef {
            job_id: 1,
            attempt: 0
        }]
    );
    assert!(register.finished.is_empty(), "{:?}", register.finished);
    assert!(
        alive(supervisor) && alive(job),
        "the job died with the session"
    );

    // The new scheduler still assigns it: it is neither launched again nor stopped.
    moved.registered("n1", SHORT_HEARTBEAT_MS);
    moved.assign(vec![assignment(1, None, false)]);
    for _ in 0..5 {
        match moved.next_any().await {
            Up::Heartbeat(_) => {}
            other => panic!("expected only heartbeats, got {other:?}"),
        }
    }
    assert!(alive(supervisor) && alive(job), "the job was stopped");
}

/// A scheduler that sends its assignments every heartbeat interval keeps the node well past
/// the lease: the keepalives renew it, and the node neither drops the session nor looks
/// elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_keeps_sending_keeps_its_session() {
    init_logs();
    let (first_addr, mut first_sessions) = fake_scheduler().await;
    let (other_addr, mut other_sessions) = fake_scheduler().await;
    let mut scratch = Scratch::new();
    scratch.start_noded(&format!("{first_addr},{other_addr}"));

    let mut session = next_session(&mut first_sessions).await;
    session.register().await;
    session.registered("n1", SHORT_HEARTBEAT_MS);
    session.assign(vec![]);

    // Twice the lease (30 intervals): a session that was not renewed would have ended,
    // and the node's heartbeats would stop coming on this stream.
    let hold = lease_for(Duration::from_millis(SHORT_HEARTBEAT_MS)) * 2;
    let until = tokio::time::Instant::now() + hold;
    let mut heartbeats = 0;
    while tokio::time::Instant::now() < until {
        match session.next_any().await {
            Up::Heartbeat(_) => heartbeats += 1,
            other => panic!("expected only heartbeats, got {other:?}"),
        }
    }
    assert!(heartbeats > 0);
    assert!(
        first_sessions.try_recv().is_err() && other_sessions.try_recv().is_err(),
        "the node opened another session while its scheduler kept sending"
    );
}

/// A replica that leads an older term than one the node has followed is a deposed leader:
/// its state may lack what the newer leader decided. The node refuses its session before
/// taking any set from it, so its (empty) set stops nothing, and returns to the newer leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_is_refused_and_stops_nothing() {
    init_logs();
    let (new_addr, mut new_sessions) = fake_scheduler().await;
    let (old_addr, mut old_sessions) = fake_scheduler().await;
    let mut scratch = Scratch::new();
    scratch.start_noded(&format!("{new_addr},{old_addr}"));

    let mut leader = next_session(&mut new_sessions).await;
    leader.register().await;
    leader.registered_in_term("n1", SHORT_HEARTBEAT_MS, 5);
    leader.assign(vec![assignment(
        1,
        Some(launch(&scratch.work, 1, &["sleep", "1000"])),
        false,
    )]);
    let supervisor = leader.started(1).await.pid;
    // The leader's session ends, and so does the node's next attempt there: the node tries
    // the next address and finds the deposed leader.
    drop(leader);
    drop(next_session(&mut new_sessions).await);

    let mut deposed = next_session(&mut old_sessions).await;
    let register = deposed.register().await;
    assert_eq!(register.running.len(), 1, "{register:?}");
    deposed.registered_in_term("n1", SHORT_HEARTBEAT_MS, 4);
    let _ = deposed.outbound.send(Ok(pb::SchedulerMessage {
        msg: Some(Down::Assignments(pb::Assignments { jobs: vec![] })),
    }));
    deposed.dropped_by_the_node().await;

    // Back with the leader of term 5, which still assigns the job: it ran on throughout.
    let mut back = next_session(&mut new_sessions).await;
    let register = back.register().await;
    assert_eq!(
        register.running,
        vec![pb::JobRef {
            job_id: 1,
            attempt: 0
        }]
    );
    assert!(
        alive(supervisor),
        "the deposed leader's empty set stopped the job"
    );
    let log = scratch.daemons[0].log_tail();
    assert!(
        log.contains("deposed leader"),
        "no word of the deposed leader in the log:\n{log}"
    );
}
