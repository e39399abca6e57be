//! The leader of a three-replica group is frozen with SIGSTOP (to the others and to the node
//! daemons, a partition) while jobs queue and both nodes are busy. A new leader is elected
//! and keeps scheduling; the node daemons leave the silent replica after their lease and
//! follow the new leader; the old one, resumed with SIGCONT, steps down. Every job appends
//! its start and end to one file: no job runs twice, and no GPU runs two jobs at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::BTreeMap;
use std::fs;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gantry_testkit::scripts::until_exists;
use gantry_testkit::{
    Cluster, DEADLINE, Noded, gantry, submit, try_all_jobs, wait_for, wait_nodes_up,
};

const JOBS: usize = 24;

/// One job's record in the shared file.
#[derive(Debug, Default, Clone)]
struct Run {
    node: String,
    gpu: String,
    start_ns: u128,
    end_ns: Option<u128>,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Every start and end line of the file, by job id; panics on a second start of a job.
fn runs(text: &str) -> BTreeMap<u64, Run> {
    let mut runs: BTreeMap<u64, Run> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [what, id, node, gpu, ns] = fields[..] else {
            panic!("a torn line in the run file: {line:?}");
        };
        let (id, ns): (u64, u128) = (id.parse().unwrap(), ns.parse().unwrap());
        match what {
            "start" => {
                let earlier = runs.insert(
                    id,
                    Run {
                        node: node.into(),
                        gpu: gpu.into(),
                        start_ns: ns,
                        end_ns: None,
                    },
                );
                assert!(
                    earlier.is_none(),
                    "job {id} started twice: {earlier:?}, then on {node} GPU {gpu}\n{text}"
                );
            }
            "end" => runs.get_mut(&id).expect("an end after its start").end_ns = Some(ns),
            other => panic!("unknown record {other:?}"),
        }
    }
    runs
}

#[test]
fn a_frozen_leader_is_replaced_steps_down_when_resumed_and_no_job_runs_twice() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    // Nodes leave a silent replica after their 3 s lease; the new leader gives them 20 s.
    let mut cluster = Cluster::start(
        &dir.path().join("cluster"),
        3,
        &[
            "--heartbeat-interval",
            "500ms",
            "--heartbeat-timeout",
            "20s",
        ],
    );
    let servers = cluster.servers();
    let _nodes: Vec<Noded> = ["node1", "node2"]
        .iter()
        .map(|name| {
            Noded::start(
                &servers,
                name,
                &dir.path().join(name),
                &["--gpus", "2", "--cpus", "4", "--mem", "4G"],
            )
        })
        .collect();
    wait_nodes_up(&servers, 2);

    let record = work.join("runs");
    // Jobs hold their GPUs until the test opens the gate once the leader is frozen, so work
    // is still queued then however slowly the submits went.
    let gate = work.join("gate");
    let script = format!(
        "r={}; echo \"start $GANTRY_JOB_ID $GANTRY_NODE $CUDA_VISIBLE_DEVICES $(date +%s%N)\" >> $r; \
         {}; \
         sleep 1; echo \"end $GANTRY_JOB_ID $GANTRY_NODE $CUDA_VISIBLE_DEVICES $(date +%s%N)\" >> $r",
        record.display(),
        until_exists(&gate)
    );
    let wd = work.to_str().unwrap();
    let ids: Vec<u64> = (0..JOBS)
        .map(|_| submit(&servers, &["-G", "1", "-D", wd, "--", "sh", "-c", &script]))
        .collect();
    // Four GPUs, four jobs at a time: wait until they are busy; the other 20 are queued.
    wait_for("four jobs running", || {
        let text = fs::read_to_string(&record).ok()?;
        (runs(&text).len() >= 4).then_some(())
    });

    let old = cluster.leader();
    cluster.stop(old);
    let frozen_at = now_ns();
    let frozen = Instant::now();
    let new = cluster.leader();
    assert_ne!(new, old, "a frozen replica cannot lead");
    fs::write(&gate, "").unwrap();
    eprintln!(
        "replica {new} leads {:?} after replica {old} was frozen",
        frozen.elapsed()
    );
    // The new leader schedules: jobs start after the freeze, on nodes that moved over.
    wait_for("a job started by the new leader", || {
        let text = fs::read_to_string(&record).ok()?;
        runs(&text)
            .values()
            .any(|r| r.start_ns > frozen_at)
            .then_some(())
    });

    cluster.cont(old);
    // Resumed, it hears of the newer term and refuses clients as a follower.
    wait_for("the resumed replica to step down", || {
        let url = cluster.url(old);
        let out = gantry(&url, &["queue", "--server", &url]);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success() && text.contains("not the leader")).then_some(())
    });
    assert_eq!(cluster.leaders(), vec![new]);

    // Every job completes, exactly once.
    let start = Instant::now();
    loop {
        let jobs = try_all_jobs(&servers).unwrap_or_default();
        let done = jobs.iter().filter(|j| j["state"] == "COMPLETED").count();
        if let Some(bad) = jobs
            .iter()
            .find(|j| !["PENDING", "RUNNING", "COMPLETED"].contains(&j["state"].as_str().unwrap()))
        {
            panic!("a job did not complete: {bad}\n{}", cluster.log_tails());
        }
        if done == JOBS {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE * 2,
            "{done} of {JOBS} jobs completed; replica logs:\n{}",
            cluster.log_tails()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let text = fs::read_to_string(&record).unwrap();
    let runs = runs(&text);
    assert_eq!(
        runs.keys().copied().collect::<Vec<_>>(),
        ids,
        "every job ran, each once"
    );
    // No GPU ran two jobs at once.
    // (start, end, job) of every run, by (node, GPU).
    type Spans = Vec<(u128, u128, u64)>;
    let mut by_gpu: BTreeMap<(String, String), Spans> = BTreeMap::new();
    for (id, run) in &runs {
        let end = run.end_ns.unwrap_or_else(|| panic!("job {id} has no end"));
        by_gpu
            .entry((run.node.clone(), run.gpu.clone()))
            .or_default()
            .push((run.start_ns, end, *id));
    }
    for (gpu, mut spans) in by_gpu {
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "jobs {} and {} overlap on {gpu:?}",
                pair[0].2,
                pair[1].2
            );
        }
    }
}
