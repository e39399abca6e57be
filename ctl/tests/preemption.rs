//! Checkpoint-aware preemption end to end: a higher-QoS job preempts a running one, which is
//! warned with its checkpoint signal, saves its progress to `GANTRY_CHECKPOINT_DIR`, is
//! requeued, and resumes from it; one that ignores the warning is stopped after its lead.
//! Requeues on node failure and time limit, defragmentation moves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;
use std::path::Path;
use std::process::Command;

use gantry_testkit::scripts::{
    count_script, counter, first_run_hangs, lines, script, until_exists, wait_lines,
};
use gantry_testkit::{
    OneNode, Site, bin, gantry, gantry_ok, grant_high_qos_and_deadlines, job, nodes,
    preempt_at_once, submit, wait_nodes_up, wait_state,
};
use serde_json::Value;

/// A time the CLI printed (RFC 3339, ms), in ms since the epoch.
fn ms(time: &Value) -> u64 {
    let text = time.as_str().unwrap();
    let at = humantime::parse_rfc3339_weak(text).unwrap();
    at.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// GPU-seconds lost by a 1-GPU run from `from` (its start or last checkpoint) to its end,
/// rounded as `gantry show` rounds them.
fn lost_since(from: &Value, run: &Value) -> u64 {
    (ms(&run["end_time"]) - ms(from) + 500) / 1000
}

#[test]
fn a_preempted_job_checkpoints_is_requeued_and_resumes_where_it_stopped() {
    let c = OneNode::start(&["--gpus", "1", "--cpus", "4", "--mem", "4G"]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    preempt_at_once(url);
    grant_high_qos_and_deadlines(url);
    let script = script(work, "count.sh", &counter(work));

    let low = submit(
        url,
        &[
            "-G",
            "1",
            "-t",
            "1h",
            "-q",
            "low",
            "--checkpoint",
            "SIGUSR1@60s",
            "-D",
            wd,
            &script,
        ],
    );
    let shown = gantry_ok(url, &["show", &low.to_string()]);
    assert!(shown.contains("\ncheckpoint: SIGUSR1@60s\n"), "{shown}");
    let steps = work.join("steps");
    wait_lines("the low job to count to 20", &steps, 20);

    // Only the job itself may report its checkpoints: a made-up token is refused.
    let forged = Command::new(bin("gantry"))
        .args(["checkpoint", "done", "--progress", "99"])
        .env("GANTRY_SERVER", url)
        .env("GANTRY_JOB_ID", low.to_string())
        .env("GANTRY_RESTART_COUNT", "0")
        .env("GANTRY_JOB_TOKEN", "0123456789abcdef")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&forged.stderr);
    assert!(
        !forged.status.success() && stderr.contains("the token is not this run's"),
        "{stderr}"
    );
    assert!(job(url, low)["checkpoint"]["last"].is_null());

    // The only GPU is the low job's: a high-QoS job preempts it.
    let high = submit(
        url,
        &["-G", "1", "-t", "10m", "-q", "high", "-D", wd, "--", "true"],
    );
    wait_state(url, high, "COMPLETED");
    let done = wait_state(url, low, "COMPLETED");
    assert_eq!(done["attempt"], 1, "{done}");

    // It ran twice: from 0, then from its checkpoint at 20, and never repeated a step.
    assert_eq!(
        lines(&work.join("runs")),
        ["run 0 from 0", "run 1 from 20", "done"]
    );
    let counted: Vec<String> = (1..=40).map(|n| n.to_string()).collect();
    assert_eq!(lines(&steps), counted);
    let high = job(url, high);
    assert_eq!(high["attempt"], 0, "{high}");
    // Its first run reported the checkpoint it saved when warned.
    let checkpoint = &job(url, low)["checkpoint"];
    assert_eq!(checkpoint["progress"], 20, "{checkpoint}");
    assert!(checkpoint["last"].is_string(), "{checkpoint}");
    // Both runs are in its history.
    let runs = job(url, low)["attempts"].clone();
    let outcomes: Vec<(&str, &str)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (
                "PREEMPTED",
                &*format!("preempted for job {} of QoS high", high["id"])
            ),
            ("COMPLETED", "")
        ]
    );
    assert_eq!(runs[0]["allocation"][0], "node1:0");
    // What the preemption cost: the work since the checkpoint it saved when warned.
    assert_eq!(
        runs[0]["lost_gpu_seconds"],
        lost_since(&checkpoint["last"], &runs[0])
    );
    let shown = gantry_ok(url, &["show", &low.to_string()]);
    assert!(
        shown.contains("\nrun 0: PREEMPTED on node1:0 from "),
        "{shown}"
    );
}

#[test]
fn a_job_that_ignores_its_checkpoint_signal_is_stopped_after_its_lead_and_requeued() {
    let c = OneNode::start(&[
        "--gpus",
        "1",
        "--cpus",
        "4",
        "--mem",
        "4G",
        "--kill-grace",
        "1s",
    ]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    preempt_at_once(url);
    grant_high_qos_and_deadlines(url);
    let runs = work.join("runs");
    // Ignores SIGUSR1 and SIGTERM: only SIGKILL ends it.
    let script = script(
        work,
        "stubborn.sh",
        &first_run_hangs(work, "trap '' USR1 TERM"),
    );
    let low = submit(
        url,
        &[
            "-G",
            "1",
            "-t",
            "1h",
            "-q",
            "low",
            "--checkpoint",
            "SIGUSR1@1s",
            "-D",
            wd,
            &script,
        ],
    );
    wait_lines("the stubborn job to run", &runs, 1);
    let high = submit(url, &["-G", "1", "-q", "high", "-D", wd, "--", "true"]);
    wait_state(url, high, "COMPLETED");
    let done = wait_state(url, low, "COMPLETED");
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(lines(&runs), ["run 0", "run 1"]);
    // It never checkpointed: its whole first run is lost, at least its 1 s lead and the 1 s
    // kill grace, and the figure is in its history.
    let run = &done["attempts"][0];
    assert_eq!(run["outcome"], "PREEMPTED");
    let lost = run["lost_gpu_seconds"].as_u64().unwrap();
    assert_eq!(lost, lost_since(&run["start_time"], run));
    assert!(lost >= 2, "{run}");
    let shown = gantry_ok(url, &["show", &low.to_string()]);
    assert!(shown.contains(&format!(", {lost} GPU-s lost\n")), "{shown}");
}

#[test]
fn jobs_are_held_released_requeued_and_preempted_by_hand() {
    let c = OneNode::start(&["--gpus", "1", "--cpus", "4", "--mem", "4G"]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    let runs = work.join("runs");
    let release = work.join("release");
    let body = format!(
        "#!/bin/sh\necho \"run $GANTRY_RESTART_COUNT\" >> {}\n{}\n",
        runs.display(),
        until_exists(&release)
    );
    let script = script(work, "wait.sh", &body);
    let a = submit(url, &["-G", "1", "-t", "1h", "-D", wd, &script]);
    wait_lines("job a's first run", &runs, 1);
    let b = submit(url, &["-G", "1", "-D", wd, "--", "true"]);
    let (a_id, b_id) = (a.to_string(), b.to_string());

    let held = gantry_ok(url, &["hold", &b_id]);
    assert_eq!(
        held,
        format!("Job {b} held: it is not scheduled until released\n")
    );
    assert_eq!(job(url, b)["reason"], "held by root");
    // Requeued by hand: stopped, then (b being held) run again at once.
    gantry_ok(url, &["requeue", &a_id]);
    wait_lines("job a's second run", &runs, 2);
    gantry_ok(url, &["preempt", &a_id]);
    wait_lines("job a's third run", &runs, 3);
    assert_eq!(lines(&runs), ["run 0", "run 1", "run 2"]);
    assert_eq!(wait_state(url, a, "RUNNING")["attempt"], 2);
    assert_eq!(job(url, b)["state"], "PENDING");

    // Wrong asks are refused with the reason, and change nothing.
    for (args, needle) in [
        (vec!["hold", a_id.as_str()], "only pending jobs can be held"),
        (
            vec!["release", a_id.as_str()],
            &*format!("job {a} is not held"),
        ),
        (
            vec!["requeue", b_id.as_str()],
            "only running jobs can be requeued",
        ),
        (vec!["hold", "999"], "job 999 does not exist"),
        (vec!["hold", b_id.as_str(), "999"], "job 999 does not exist"),
    ] {
        let out = gantry(url, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(job(url, b)["reason"], "held by root");

    gantry_ok(url, &["release", &b_id]);
    fs::write(&release, "").unwrap();
    let done = wait_state(url, a, "COMPLETED");
    let outcomes: Vec<&str> = done["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["REQUEUED", "PREEMPTED", "COMPLETED"], "{done}");
    assert_eq!(done["attempts"][1]["reason"], "preempted by root");
    wait_state(url, b, "COMPLETED");
}

/// The Slurm idiom `scontrol requeue $SLURM_JOB_ID` from inside the job, which then exits at
/// once: the requeue is acknowledged, so every such job runs again, whichever of its exit and
/// the stop reaches the scheduler first (4 of 13 ended COMPLETED at attempt 0).
#[test]
fn a_job_that_requeues_itself_and_exits_at_once_runs_again() {
    let c = OneNode::start(&["--gpus", "4", "--cpus", "8", "--mem", "8G"]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    let runs = work.join("runs");
    let body = format!(
        "#!/bin/sh\necho \"$GANTRY_JOB_ID run $GANTRY_RESTART_COUNT\" >> {runs}\n\
         if [ \"$GANTRY_RESTART_COUNT\" -eq 0 ]; then {gantry} requeue \"$GANTRY_JOB_ID\" || exit 7; fi\n\
         exit 0\n",
        runs = runs.display(),
        gantry = bin("gantry").display(),
    );
    let script = script(work, "requeue_self.sh", &body);
    let ids: Vec<u64> = (0..8)
        .map(|_| submit(url, &["-G", "1", "-t", "10m", "-D", wd, &script]))
        .collect();
    for id in &ids {
        let done = wait_state(url, *id, "COMPLETED");
        assert_eq!(done["attempt"], 1, "{done}");
        assert_eq!(done["attempts"][0]["outcome"], "REQUEUED", "{done}");
    }
    assert_eq!(lines(&runs).len(), 2 * ids.len(), "{:?}", lines(&runs));
}

/// A requeued run appended to its output where the earlier run's lines were (its checkpoint
/// messages among them) — they were gone. `--open-mode truncate` starts every run afresh, as
/// Slurm's does, and `%r` in `-o` gives each run its own file (`%x`: the job's name, which
/// was written literally).
#[test]
fn a_requeued_job_keeps_its_earlier_runs_output() {
    let c = OneNode::start(&["--gpus", "1", "--cpus", "4", "--mem", "4G"]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    let body = format!(
        "#!/bin/sh\necho \"run $GANTRY_RESTART_COUNT of $GANTRY_JOB_NAME\"\n\
         if [ \"$GANTRY_RESTART_COUNT\" -eq 0 ]; then {gantry} requeue \"$GANTRY_JOB_ID\" >/dev/null; fi\n",
        gantry = bin("gantry").display(),
    );
    let script = script(work, "twice.sh", &body);
    let run = |args: &[&str]| {
        let mut all = vec!["-G", "1", "-t", "10m", "-D", wd];
        all.extend_from_slice(args);
        all.push(&script);
        let id = submit(url, &all);
        assert_eq!(wait_state(url, id, "COMPLETED")["attempt"], 1);
        id
    };
    let read = |name: String| fs::read_to_string(work.join(name)).unwrap();
    let id = run(&[]);
    assert_eq!(
        read(format!("gantry-{id}.out")),
        "run 0 of twice.sh\nrun 1 of twice.sh\n"
    );
    let id = run(&["--open-mode", "truncate"]);
    assert_eq!(read(format!("gantry-{id}.out")), "run 1 of twice.sh\n");
    let id = run(&["-J", "runs", "-o", "%x-%j.%r.out"]);
    assert_eq!(read(format!("runs-{id}.0.out")), "run 0 of runs\n");
    assert_eq!(read(format!("runs-{id}.1.out")), "run 1 of runs\n");
    let shown = gantry_ok(url, &["show", &id.to_string()]);
    assert!(
        shown.contains(&format!("stdout: {wd}/runs-{id}.1.out\n")),
        "{shown}"
    );
}

/// Saves its count and reports it every 10 steps. Its first run stops at 25 and waits
/// there; on SIGTERM it notes where it was stopped (without saving) and exits.
fn periodic_counter(work: &Path) -> String {
    count_script(
        work,
        "TERM",
        "echo \"run $GANTRY_RESTART_COUNT stopped at $n\" >> @RUNS@; exit 1",
        "  if [ $((n % 10)) -eq 0 ]; then @SAVE@ && @GANTRY@ checkpoint done --progress $n; fi
  while [ $n -eq 25 ] && [ \"$GANTRY_RESTART_COUNT\" -eq 0 ]; do sleep 0.05; done",
    )
}

/// kill -9 of a job's node daemon: the node's supervisor stops the job when its contact
/// lease runs out, the scheduler declares the node lost, and the job runs again on another
/// node from its last checkpoint — repeating less than one checkpoint interval of steps, and
/// never running twice at once.
#[test]
fn a_job_whose_node_dies_resumes_on_another_node_from_its_last_checkpoint() {
    // A 6 s timeout gives the job a kill grace of 2.25 s in its lease: time for its TERM trap
    // to note where it stopped on a loaded machine.
    let c = Site::start(&["--heartbeat-timeout", "6s", "--heartbeat-interval", "500ms"]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    let mut node1 = c.node("node1", 1);
    wait_nodes_up(url, 1);
    let script = script(work, "count.sh", &periodic_counter(work));
    let id = submit(
        url,
        &[
            "-G",
            "1",
            "-t",
            "1h",
            "--checkpoint-interval",
            "10s",
            "-D",
            wd,
            &script,
        ],
    );
    let steps = work.join("steps");
    wait_lines("the job's first run to count to 25", &steps, 25);
    let _node2 = c.node("node2", 1);
    wait_nodes_up(url, 2);

    node1.daemon.kill9();
    let done = wait_state(url, id, "COMPLETED");
    // Stopped at 25 before the second run began from the checkpoint at 20.
    assert_eq!(
        lines(&work.join("runs")),
        [
            "run 0 from 0",
            "run 0 stopped at 25",
            "run 1 from 20",
            "done"
        ]
    );
    let counted: Vec<String> = (1..=25).chain(21..=40).map(|n| n.to_string()).collect();
    assert_eq!(lines(&steps), counted);
    assert_eq!(done["checkpoint"]["progress"], 40, "{done}");
    let runs = &done["attempts"];
    assert_eq!(runs[0]["outcome"], "NODE_FAIL", "{done}");
    assert!(
        runs[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("node node1 lost"),
        "{done}"
    );
    assert_eq!(runs[0]["allocation"][0], "node1:0");
    assert_eq!(
        (&runs[1]["outcome"], &runs[1]["allocation"][0]),
        (&"COMPLETED".into(), &"node2:0".into())
    );
    assert!(runs[0]["lost_gpu_seconds"].as_u64().unwrap() >= 1, "{done}");
    let node1_state = nodes(url)
        .into_iter()
        .find(|n| n["name"] == "node1")
        .unwrap();
    assert_eq!(node1_state["state"], "DOWN");
}

/// `--requeue-on-timeout`: a run that reaches its limit is warned, stopped and run again; the
/// history shows it as TIMEOUT. Without the flag the job ends TIMEOUT.
#[test]
fn a_job_that_asks_is_requeued_at_its_time_limit() {
    let c = OneNode::start(&[
        "--gpus",
        "2",
        "--cpus",
        "4",
        "--mem",
        "4G",
        "--kill-grace",
        "1s",
    ]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    let runs = work.join("runs");
    // The first run outlives its limit.
    let script = script(work, "slow.sh", &first_run_hangs(work, ""));
    let again = submit(
        url,
        &[
            "-G",
            "1",
            "-t",
            "4s",
            "--requeue-on-timeout",
            "-D",
            wd,
            &script,
        ],
    );
    let once = submit(
        url,
        &["-G", "1", "-t", "4s", "-D", wd, "--", "sleep", "100"],
    );
    let done = wait_state(url, again, "COMPLETED");
    assert_eq!(lines(&runs), ["run 0", "run 1"]);
    let run = &done["attempts"][0];
    assert_eq!(
        (&run["outcome"], &run["reason"]),
        (&"TIMEOUT".into(), &"time limit reached".into())
    );
    assert_eq!(
        done["requeue_on"],
        serde_json::json!(["node_failure", "timeout"])
    );
    let ended = wait_state(url, once, "TIMEOUT");
    assert_eq!(ended["attempt"], 0, "{ended}");
}

/// Defragmentation: a 2-GPU gang finds one GPU free on each of two nodes; the scheduler moves
/// the checkpointable job on one of them to the other (warned, checkpointed, requeued,
/// resumed there), and the gang starts on the node it freed.
#[test]
fn a_checkpointable_job_is_moved_so_that_a_gang_fits() {
    let c = Site::start(&[]);
    let (url, work, wd) = (c.url(), &c.work, c.wd());
    for (key, value) in [("preempt.min_runtime", "0s"), ("defrag.per_hour", "2")] {
        gantry_ok(url, &["admin", "config", "set", key, value]);
    }
    let _node1 = c.node("node1", 2);
    wait_nodes_up(url, 1);
    let counter = script(work, "count.sh", &counter(work));
    let movable = submit(
        url,
        &[
            "-G",
            "1",
            "-t",
            "1h",
            "--checkpoint",
            "SIGUSR1@60s",
            "-D",
            wd,
            &counter,
        ],
    );
    wait_lines("the movable job to count to 20", &work.join("steps"), 20);
    // A job without a checkpoint contract takes node1's other GPU, then one of node2's.
    let hold = |name: &str| {
        let id = submit(url, &["-G", "1", "-D", wd, "--", "sleep", "1000"]);
        wait_state(url, id, "RUNNING");
        assert_eq!(job(url, id)["nodes"][0], name);
        id
    };
    let filler = hold("node1");
    let _node2 = c.node("node2", 2);
    wait_nodes_up(url, 2);
    let fixed = hold("node2");
    gantry_ok(url, &["cancel", &filler.to_string()]);
    wait_state(url, filler, "CANCELLED");

    let gang = submit(url, &["-G", "2", "-t", "10m", "-D", wd, "--", "true"]);
    let ran = wait_state(url, gang, "COMPLETED");
    assert_eq!(
        ran["allocation"][0]["gpus"],
        serde_json::json!([0, 1]),
        "{ran}"
    );
    assert_eq!(ran["nodes"][0], "node1");
    // The moved job went on from its checkpoint on node2.
    fs::write(work.join("release"), "").unwrap();
    let moved = wait_state(url, movable, "COMPLETED");
    assert_eq!(
        lines(&work.join("runs")),
        ["run 0 from 0", "run 1 from 20", "done"]
    );
    let runs = &moved["attempts"];
    assert_eq!(runs[0]["outcome"], "PREEMPTED", "{moved}");
    assert_eq!(
        runs[0]["reason"],
        format!("moved to defragment: job {gang} needs its GPUs together")
    );
    assert!(
        runs[0]["allocation"][0]
            .as_str()
            .unwrap()
            .starts_with("node1:")
    );
    assert!(
        runs[1]["allocation"][0]
            .as_str()
            .unwrap()
            .starts_with("node2:")
    );
    gantry_ok(url, &["cancel", &fixed.to_string()]);
}
