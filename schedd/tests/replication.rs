//! A three-replica `gantry-schedd` Raft group of real processes on 127.0.0.1: one leader
//! serves every client through any address list, a follower refuses clients, and kill -9
//! of the leader (or of every replica) loses no acknowledged job.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gantry_testkit::scripts::until_exists;
use gantry_testkit::{
    Cluster, DEADLINE, Noded, Value, gantry, gantry_ok, job, submit, try_all_jobs, wait_for,
    wait_nodes_up, wait_state,
};

/// A temporary directory with a cluster in `cluster/` and a job working directory `work/`.
/// Fields drop in order: the replicas are killed before their directory is removed.
struct Setup {
    cluster: Cluster,
    work: PathBuf,
    dir: tempfile::TempDir,
}

fn three_replicas() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let cluster = Cluster::start(&dir.path().join("cluster"), 3, &[]);
    Setup { cluster, work, dir }
}

impl Setup {
    fn wd(&self) -> &str {
        self.work.to_str().unwrap()
    }

    /// One node daemon talking to the whole address list, registered and up.
    fn node(&self) -> Noded {
        let node = Noded::start(
            &self.cluster.servers(),
            "node1",
            &self.dir.path().join("node1"),
            &["--gpus", "4", "--cpus", "8", "--mem", "8G"],
        );
        wait_nodes_up(&self.cluster.servers(), 1);
        node
    }
}

#[test]
fn three_replicas_elect_a_leader_and_serve_through_any_address_list() {
    let s = three_replicas();
    let c = &s.cluster;
    let servers = c.servers();
    // No node yet: the job is accepted and waits.
    let first = submit(&servers, &["-J", "first", "-D", s.wd(), "--", "true"]);
    let shown = job(&servers, first);
    assert_eq!(shown["id"], first);
    assert_eq!(shown["name"], "first");
    assert_eq!(shown["state"], "PENDING");

    let leader = c.leader();
    assert_eq!(
        c.leaders(),
        vec![leader],
        "exactly one replica answers as leader"
    );

    // Every order of the list finds the leader, whichever replica comes first.
    let urls: Vec<String> = c.ids().iter().map(|id| c.url(*id)).collect();
    let mut previous = first;
    for rotation in 0..urls.len() {
        let mut list = urls.clone();
        list.rotate_left(rotation);
        let list = list.join(",");
        assert_eq!(job(&list, first)["name"], "first", "show through {list}");
        let id = submit(&list, &["-D", s.wd(), "--", "true"]);
        assert!(id > previous, "ids grow: {id} after {previous}");
        previous = id;
        assert_eq!(job(&servers, id)["state"], "PENDING");
    }
    assert_eq!(c.leaders(), vec![leader], "the leader stayed the same");

    // `gantry admin replicas` lists the three, one of them the leader, all caught up.
    let replicas = wait_for("every replica caught up", || {
        let out = gantry_ok(&servers, &["admin", "replicas", "-o", "json"]);
        let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
        rows.iter().all(|r| r["lag"] == 0).then_some(rows)
    });
    let ids: Vec<u64> = replicas.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
    let roles: Vec<&str> = replicas
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{roles:?}"
    );
    let leader_row = replicas.iter().find(|r| r["role"] == "leader").unwrap();
    assert_eq!(leader_row["id"].as_u64(), Some(leader));
    assert_eq!(leader_row["address"].as_str(), Some(c.url(leader).as_str()));
    assert!(replicas.iter().all(|r| r["term"] == leader_row["term"]));
}

#[test]
fn a_follower_refuses_clients_and_names_the_leader() {
    let s = three_replicas();
    let c = &s.cluster;
    let leader = c.leader();
    let followers = c.followers_of(leader);
    assert_eq!(followers.len(), 2);
    for follower in followers {
        let url = c.url(follower);
        // The follower alone: nowhere to move on to.
        let out = gantry(&url, &["queue", "--server", &url]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "replica {follower} (a follower) answered a client: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        eprintln!("replica {follower} refused: {}", stderr.trim());
        assert!(
            stderr.contains("not the leader"),
            "replica {follower}: {stderr}"
        );
        let leader_listen = &c.replica(leader).listen;
        assert!(
            stderr.contains(&format!("replica {leader}")) || stderr.contains(leader_listen),
            "replica {follower} does not name the leader (replica {leader} at {leader_listen}): \
             {stderr}"
        );
    }
}

/// What the submitting threads saw: each acknowledged id with when its call started.
#[derive(Default)]
struct Acks {
    ids: Vec<(u64, Instant)>,
    failures: usize,
    last_failure: String,
}

impl Acks {
    fn started_after(&self, moment: Instant) -> usize {
        self.ids.iter().filter(|(_, t)| *t > moment).count()
    }
}

/// Runs `gantry submit --parsable` in a loop until `stop`; every id a successful call
/// printed is recorded. A failed call (no leader for a moment) is simply tried again.
fn submitter(servers: String, wd: String, stop: Arc<AtomicBool>, acks: Arc<Mutex<Acks>>) {
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let out = gantry(&servers, &["submit", "--parsable", "-D", &wd, "--", "true"]);
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().parse::<u64>() {
            Ok(id) if out.status.success() => acks.lock().unwrap().ids.push((id, started)),
            _ => {
                let mut acks = acks.lock().unwrap();
                acks.failures += 1;
                acks.last_failure = String::from_utf8_lossy(&out.stderr).into_owned();
                drop(acks);
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Waits until every job in `ids` is COMPLETED. Bounded by progress: fails when no job
/// of them completes for `DEADLINE`, or as soon as one ends otherwise.
fn wait_all_completed(c: &Cluster, ids: &BTreeSet<u64>) {
    let servers = c.servers();
    let mut remaining = ids.len();
    let mut progress = Instant::now();
    loop {
        if let Some(jobs) = try_all_jobs(&servers) {
            let states: BTreeMap<u64, &Value> = jobs
                .iter()
                .map(|j| (j["id"].as_u64().unwrap(), j))
                .collect();
            let mut waiting = Vec::new();
            for id in ids {
                let state = states.get(id).and_then(|j| j["state"].as_str());
                match state {
                    Some("COMPLETED") => {}
                    Some("PENDING" | "RUNNING") => waiting.push(*id),
                    Some(_) => panic!("acknowledged job {id} did not complete: {}", states[id]),
                    None => panic!("acknowledged job {id} is missing from the queue"),
                }
            }
            if waiting.is_empty() {
                return;
            }
            if waiting.len() < remaining {
                remaining = waiting.len();
                progress = Instant::now();
            }
            assert!(
                progress.elapsed() < DEADLINE,
                "no job completed for {DEADLINE:?}; {} still waiting, e.g. {}; replica logs:\n{}",
                waiting.len(),
                states[&waiting[0]],
                c.log_tails()
            );
        } else {
            assert!(
                progress.elapsed() < DEADLINE,
                "no leader answered for {DEADLINE:?}; replica logs:\n{}",
                c.log_tails()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kill_9_of_the_leader_during_a_submit_storm_loses_no_acknowledged_job() {
    const CLIENTS: usize = 8;
    /// Acknowledged submits wanted on each side of the kill.
    const EACH_SIDE: usize = 40;
    const STORM_SIDE: Duration = Duration::from_secs(3);

    let mut s = three_replicas();
    let _node = s.node();
    let servers = s.cluster.servers();
    s.cluster.leader();

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Acks::default()));
    let storm_start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (servers, wd) = (servers.clone(), s.wd().to_string());
            let (stop, acks) = (stop.clone(), acks.clone());
            thread::spawn(move || submitter(servers, wd, stop, acks))
        })
        .collect();
    // Stop the storm even when an assertion below fails.
    let stop_guard = StopOnDrop(stop.clone());

    wait_for("acknowledged submits before the kill", || {
        (acks.lock().unwrap().ids.len() >= EACH_SIDE && storm_start.elapsed() >= STORM_SIDE)
            .then_some(())
    });
    // The leader of now: a busy machine may have had an election during the storm.
    let leader = s.cluster.leader();
    s.cluster.kill9(leader);
    let killed_at = Instant::now();
    wait_for("acknowledged submits started after the kill", || {
        let acks = acks.lock().unwrap();
        (acks.started_after(killed_at) >= EACH_SIDE && killed_at.elapsed() >= STORM_SIDE)
            .then_some(())
    });
    drop(stop_guard);
    for client in clients {
        client.join().unwrap();
    }
    let acks = Arc::try_unwrap(acks).ok().unwrap().into_inner().unwrap();
    eprintln!(
        "storm: {} acknowledged ({} before the kill), {} failed calls (last: {})",
        acks.ids.len(),
        acks.ids.len() - acks.started_after(killed_at),
        acks.failures,
        acks.last_failure.trim()
    );

    let new_leader = s.cluster.leader();
    assert_ne!(new_leader, leader, "the killed replica cannot lead");

    // No two clients were handed the same id.
    let acked: BTreeSet<u64> = acks.ids.iter().map(|(id, _)| *id).collect();
    assert_eq!(acked.len(), acks.ids.len(), "an id was acknowledged twice");

    // Every acknowledged job exists, exactly once.
    for id in &acked {
        let shown = job(&servers, *id);
        assert_eq!(shown["id"], *id, "gantry show {id}");
    }
    let listed = try_all_jobs(&servers).expect("the new leader answers");
    let mut seen = BTreeMap::new();
    for j in &listed {
        *seen.entry(j["id"].as_u64().unwrap()).or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a job id is listed twice: {seen:?}"
    );
    for id in &acked {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "acknowledged job {id} is not listed"
        );
    }

    wait_all_completed(&s.cluster, &acked);
}

/// Sets the flag when dropped, so helper threads stop on every way out of a test.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A shell command that records its start in `starts` (one line per launch), waits for
/// `release` to exist, then prints "done".
fn held_job(starts: &Path, release: &Path) -> String {
    format!(
        "echo $$ >> {}; {}; echo done",
        starts.display(),
        until_exists(release)
    )
}

#[test]
fn all_replicas_killed_and_restarted_keep_history() {
    let mut s = three_replicas();
    let node = s.node();
    let servers = s.cluster.servers();

    let completed = submit(&servers, &["-J", "quick", "-D", s.wd(), "--", "true"]);
    wait_state(&servers, completed, "COMPLETED");
    let starts = s.work.join("held.starts");
    let release = s.work.join("release");
    let held = submit(
        &servers,
        &[
            "-J",
            "held",
            "-G",
            "2",
            "-D",
            s.wd(),
            "--",
            "sh",
            "-c",
            &held_job(&starts, &release),
        ],
    );
    let running = wait_state(&servers, held, "RUNNING");
    wait_for("the held job to start", || {
        fs::read_to_string(&starts).ok().filter(|t| !t.is_empty())
    });
    let before = try_all_jobs(&servers).unwrap();

    s.cluster.kill9_all();
    assert!(
        try_all_jobs(&servers).is_none(),
        "a replica still answers after all were killed"
    );
    let ids = s.cluster.ids();
    s.cluster.restart_many(&ids);
    s.cluster.leader();

    let done = job(&servers, completed);
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["exit_code"], 0);
    let still = job(&servers, held);
    assert_eq!(
        still["state"], "RUNNING",
        "a restart of every replica must not disturb a running job: {still}"
    );
    assert_eq!(still["allocation"], running["allocation"]);
    assert_eq!(still["start_time"], running["start_time"]);
    // The history is the same as before the outage, job for job.
    let after = try_all_jobs(&servers).unwrap();
    let key = |jobs: &[Value]| -> Vec<(Value, Value, Value)> {
        jobs.iter()
            .map(|j| (j["id"].clone(), j["name"].clone(), j["state"].clone()))
            .collect()
    };
    assert_eq!(key(&after), key(&before));

    // The node follows the new leader and the job it kept running reports its end.
    wait_nodes_up(&servers, 1);
    fs::write(&release, "").unwrap();
    let ended = wait_state(&servers, held, "COMPLETED");
    assert_eq!(ended["exit_code"], 0);
    let output = fs::read_to_string(s.work.join(format!("gantry-{held}.out"))).unwrap();
    assert!(output.contains("done"), "held job output: {output:?}");
    let launches = fs::read_to_string(&starts).unwrap();
    assert_eq!(
        launches.lines().count(),
        1,
        "the held job was launched more than once: {launches:?}"
    );

    let next = submit(&servers, &["-D", s.wd(), "--", "true"]);
    assert!(
        next > held && next > completed,
        "id {next} handed out again after the restart"
    );
    wait_state(&servers, next, "COMPLETED");
    drop(node);
}
