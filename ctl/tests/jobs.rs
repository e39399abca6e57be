//! End to end through the real binaries: a scheduler, a node daemon with declared GPUs,
//! and the `gantry` CLI, all on 127.0.0.1 with OS-picked ports.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;
use std::path::Path;

use gantry_testkit::scripts::until_exists;
use gantry_testkit::{
    Noded, Schedd, gantry, gantry_ok, job, process_group_alive, submit, wait_for, wait_nodes_up,
    wait_state,
};
use serde_json::Value;

/// Fields drop in order: the node daemon (which kills the jobs left, found by their pid
/// files) and the scheduler go before their directory does.
struct Cluster {
    _node: Noded,
    schedd: Schedd,
    work: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn cluster(gpus: u32) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let gpus = gpus.to_string();
    let node = Noded::start(
        &schedd.url,
        "node1",
        &dir.path().join("node1"),
        &["--gpus", &gpus, "--cpus", "16", "--mem", "16G"],
    );
    wait_nodes_up(&schedd.url, 1);
    Cluster {
        _node: node,
        schedd,
        work,
        _dir: dir,
    }
}

fn work_dir(c: &Cluster) -> &str {
    c.work.to_str().unwrap()
}

fn output(c: &Cluster, id: u64) -> String {
    fs::read_to_string(c.work.join(format!("gantry-{id}.out"))).unwrap_or_default()
}

#[test]
fn a_two_gpu_job_sees_exactly_its_two_gpus() {
    let c = cluster(4);
    let url = &c.schedd.url;
    let id = submit(
        url,
        &[
            "-G",
            "2",
            "-D",
            work_dir(&c),
            "--",
            "sh",
            "-c",
            "echo \"gpus=$CUDA_VISIBLE_DEVICES job=$GANTRY_JOB_ID\"",
        ],
    );
    let done = wait_state(url, id, "COMPLETED");
    let out = output(&c, id);
    let line = out
        .lines()
        .find(|l| l.starts_with("gpus="))
        .unwrap_or_else(|| panic!("output: {out:?}"));
    let gpus: Vec<u32> = line["gpus=".len()..line.find(' ').unwrap()]
        .split(',')
        .map(|g| g.parse().unwrap())
        .collect();
    assert_eq!(gpus.len(), 2, "{line}");
    assert_ne!(gpus[0], gpus[1]);
    assert!(
        gpus.iter().all(|g| *g < 4),
        "indices of the node's 4 GPUs: {gpus:?}"
    );
    assert!(line.ends_with(&format!("job={id}")), "{line}");
    let alloc: Vec<u64> = done["allocation"][0]["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_u64().unwrap())
        .collect();
    assert_eq!(
        alloc,
        gpus.iter().map(|g| u64::from(*g)).collect::<Vec<_>>(),
        "what ran is what was allocated"
    );
    assert_eq!(done["exit_code"], 0);
}

#[test]
fn three_two_gpu_jobs_on_a_four_gpu_node_run_two_at_a_time() {
    let c = cluster(4);
    let url = &c.schedd.url;
    // Each job holds its GPUs until a file appears, so the test decides when they end.
    let release = c.work.join("release");
    let script = until_exists(&release);
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            submit(
                url,
                &["-G", "2", "-D", work_dir(&c), "--", "sh", "-c", &script],
            )
        })
        .collect();
    wait_for("two jobs running", || {
        let states: Vec<String> = ids
            .iter()
            .map(|id| gantry_testkit::job_state(url, *id))
            .collect();
        (states.iter().filter(|s| *s == "RUNNING").count() == 2).then_some(())
    });
    let third = job(url, ids[2]);
    assert_eq!(third["state"], "PENDING");
    assert!(
        third["reason"].as_str().unwrap().contains("Resources"),
        "{}",
        third["reason"]
    );
    let nodes = gantry_testkit::nodes(url);
    assert_eq!(nodes[0]["gpus_allocated"], 4);
    fs::write(&release, "").unwrap();
    for id in &ids {
        wait_state(url, *id, "COMPLETED");
    }
    let gpus_of = |id: u64| -> Vec<Value> {
        job(url, id)["allocation"][0]["gpus"]
            .as_array()
            .unwrap()
            .clone()
    };
    let (a, b) = (gpus_of(ids[0]), gpus_of(ids[1]));
    assert!(
        a.iter().all(|g| !b.contains(g)),
        "the two concurrent jobs shared a GPU: {a:?} {b:?}"
    );
}

#[test]
fn cancel_of_a_running_job_ends_it_cancelled_and_leaves_no_process() {
    let c = cluster(2);
    let url = &c.schedd.url;
    let id = submit(
        url,
        &[
            "-G",
            "1",
            "-D",
            work_dir(&c),
            "--",
            "sh",
            "-c",
            "echo pgid=$$; sleep 1000 & sleep 1000; wait",
        ],
    );
    wait_state(url, id, "RUNNING");
    let pgid: i32 = wait_for("the job to print its pid", || {
        output(&c, id)
            .lines()
            .find_map(|l| l.strip_prefix("pgid=").and_then(|p| p.trim().parse().ok()))
    });
    assert!(process_group_alive(pgid));
    let out = gantry_ok(url, &["cancel", &id.to_string()]);
    assert!(out.contains(&id.to_string()), "{out}");
    let ended = wait_state(url, id, "CANCELLED");
    assert!(ended["end_time"].is_string());
    wait_for("the job's process group to be gone", || {
        (!process_group_alive(pgid)).then_some(())
    });
    // Cancelling it again is an error that names the job.
    let again = gantry(url, &["cancel", &id.to_string()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains(&id.to_string()));
}

#[test]
fn a_job_over_its_time_limit_ends_timeout() {
    let c = cluster(1);
    let url = &c.schedd.url;
    let id = submit(
        url,
        &["-t", "2s", "-D", work_dir(&c), "--", "sleep", "1000"],
    );
    let ended = wait_state(url, id, "TIMEOUT");
    assert!(
        ended["reason"].as_str().unwrap().contains("time limit"),
        "{}",
        ended["reason"]
    );
}

#[test]
fn failures_are_reported_with_their_exit_code() {
    let c = cluster(1);
    let url = &c.schedd.url;
    let id = submit(url, &["-D", work_dir(&c), "--", "sh", "-c", "exit 3"]);
    let ended = wait_state(url, id, "FAILED");
    assert_eq!(ended["exit_code"], 3);
    let missing = submit(url, &["-D", work_dir(&c), "--", "/no/such/program"]);
    let ended = wait_state(url, missing, "FAILED");
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .contains("/no/such/program"),
        "{}",
        ended["reason"]
    );
}

#[test]
fn a_script_with_directives_runs_in_its_directory_with_its_output_file() {
    let c = cluster(2);
    let url = &c.schedd.url;
    let script = c.work.join("job.sh");
    fs::write(&script, "#!/bin/sh\n#GANTRY -J named -G 1\n#GANTRY -o custom-%j.log\necho \"name=$GANTRY_JOB_NAME pwd=$(pwd) arg=$1\"\n").unwrap();
    let out = gantry_testkit::gantry_in(
        url,
        &["submit", "--parsable", "job.sh", "hello"],
        Some(&c.work),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let done = wait_state(url, id, "COMPLETED");
    assert_eq!(done["name"], "named");
    assert_eq!(done["gpus_per_node"], 1);
    let text = fs::read_to_string(c.work.join(format!("custom-{id}.log"))).unwrap();
    let canonical = fs::canonicalize(&c.work).unwrap();
    assert!(
        text.contains(&format!("name=named pwd={} arg=hello", canonical.display()))
            || text.contains(&format!("name=named pwd={} arg=hello", c.work.display())),
        "{text}"
    );
    assert!(Path::new(&c.work).join(format!("custom-{id}.log")).exists());
}

#[test]
fn a_two_node_gang_starts_one_process_per_node_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let url = schedd.url.as_str();
    let args = ["--gpus", "2", "--cpus", "4", "--mem", "4G"];
    let _a = Noded::start(url, "node-a", &dir.path().join("a"), &args);
    let _b = Noded::start(url, "node-b", &dir.path().join("b"), &args);
    wait_nodes_up(url, 2);
    let script = "echo \"rank=$GANTRY_NODE_RANK of $GANTRY_NUM_NODES on $GANTRY_NODE gpus=$CUDA_VISIBLE_DEVICES nodes=$GANTRY_NODELIST\"";
    let id = submit(
        url,
        &[
            "-N",
            "2",
            "-G",
            "2",
            "-o",
            "out-%j-%n.log",
            "-D",
            work.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let done = wait_state(url, id, "COMPLETED");
    let nodes: Vec<&str> = done["allocation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["node-a", "node-b"]);
    for (rank, node) in nodes.iter().enumerate() {
        let text = fs::read_to_string(work.join(format!("out-{id}-{rank}.log"))).unwrap();
        assert_eq!(
            text.trim(),
            format!("rank={rank} of 2 on {node} gpus=0,1 nodes=node-a,node-b")
        );
    }
}

/// Backfill end to end: a 4-GPU job waits for GPUs a 1-hour job holds and gets them
/// reserved; a 2-GPU job without a time limit (it could run into that reservation) waits,
/// reserved in its turn after it; a 2-GPU job that ends well before then, submitted last,
/// starts at once on the free GPUs.
#[test]
fn a_short_job_backfills_while_longer_ones_hold_reservations() {
    let c = cluster(4);
    let url = &c.schedd.url;
    let wd = work_dir(&c);
    let long = submit(
        url,
        &["-G", "2", "-t", "1h", "-D", wd, "--", "sleep", "1000"],
    );
    wait_state(url, long, "RUNNING");
    let big = submit(url, &["-G", "4", "-t", "10m", "-D", wd, "--", "true"]);
    let unlimited = submit(url, &["-G", "2", "-D", wd, "--", "sleep", "1000"]);
    let short = submit(
        url,
        &["-G", "2", "-t", "5m", "-D", wd, "--", "sleep", "1000"],
    );
    wait_state(url, short, "RUNNING");
    let reason = |id| job(url, id)["reason"].as_str().unwrap().to_string();
    wait_for("the big job's reservation", || {
        reason(big)
            .contains("reserved, starts within")
            .then_some(())
    });
    assert_eq!(gantry_testkit::job_state(url, unlimited), "PENDING");
    // After the big job's 10 minutes, that is, about 1:10 from now.
    assert!(
        reason(unlimited).starts_with("Resources: reserved, starts within 1:"),
        "{}",
        reason(unlimited)
    );
    gantry_ok(url, &["cancel", &long.to_string(), &short.to_string()]);
    wait_state(url, big, "COMPLETED");
    wait_state(url, unlimited, "RUNNING");
    gantry_ok(url, &["cancel", &unlimited.to_string()]);
}

/// GPU models: a job asking for H100s lands on the H100 node; one asking for a model no node
/// has is refused at submit; a job whose main request can never run here runs in its
/// alternative, and `gantry show` says so.
#[test]
fn jobs_land_on_the_gpu_model_they_ask_for_or_on_an_alternative() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let url = schedd.url.as_str();
    let node = |name: &str, model: &str| {
        let args = [
            "--gpus",
            "2",
            "--gpu-model",
            model,
            "--cpus",
            "4",
            "--mem",
            "4G",
        ];
        Noded::start(url, name, &dir.path().join(name), &args)
    };
    let _a = node("node-a", "NVIDIA A100-SXM4-80GB");
    let _h = node("node-h", "NVIDIA H100 80GB HBM3");
    wait_nodes_up(url, 2);
    let wd = work.to_str().unwrap();
    let nodes_of = |job: &Value| -> Vec<String> {
        job["allocation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["node"].as_str().unwrap().to_string())
            .collect()
    };

    let h100 = submit(url, &["-G", "2:h100", "-D", wd, "--", "true"]);
    let done = wait_state(url, h100, "COMPLETED");
    assert_eq!(nodes_of(&done), ["node-h"]);
    assert_eq!(done["gpu_model"], "h100");
    assert_eq!(done["shape"], 0);

    let refused = gantry(url, &["submit", "-G", "1:v100", "-D", wd, "--", "true"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("asks for v100 GPUs; no node has any"),
        "{stderr}"
    );

    // Four H100s on one node exist nowhere; two A100s at half speed do.
    let alt = submit(
        url,
        &[
            "-G",
            "4:h100",
            "--alt",
            "2:a100@0.5",
            "-t",
            "10m",
            "-D",
            wd,
            "--",
            "true",
        ],
    );
    let done = wait_state(url, alt, "COMPLETED");
    assert_eq!(nodes_of(&done), ["node-a"]);
    assert_eq!(done["shape"], 1);
    assert_eq!(done["alternatives"], serde_json::json!(["1x2:a100@0.5"]));
    let shown = gantry_ok(url, &["show", &alt.to_string()]);
    assert!(shown.contains("gpus_per_node: 4:h100"), "{shown}");
    assert!(
        shown.contains("alternative: 1: 1x2:a100@0.5 (runs this way)"),
        "{shown}"
    );

    let bad = gantry(
        url,
        &["submit", "--alt", "2x8@fast", "-D", wd, "--", "true"],
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("--alt: a speed is a factor"), "{stderr}");
}

/// The fabric: with a topology file, `gantry nodes --topology` shows the tree and a two-node
/// gang lands under one leaf switch even when first fit would straddle two.
#[test]
fn a_gang_lands_under_one_leaf_switch_of_the_topology_file() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let topology = dir.path().join("topology.toml");
    fs::write(
        &topology,
        "[[switch]]\nname = \"spine\"\n\n\
         [[switch]]\nname = \"leaf-a\"\nparent = \"spine\"\nnodes = [\"n1\"]\n\n\
         [[switch]]\nname = \"leaf-b\"\nparent = \"spine\"\nnodes = [\"n[2-3]\"]\n",
    )
    .unwrap();
    let schedd = Schedd::start(
        &dir.path().join("schedd"),
        &["--topology", topology.to_str().unwrap()],
    );
    let url = schedd.url.as_str();
    let args = ["--gpus", "2", "--cpus", "4", "--mem", "4G"];
    let _nodes: Vec<Noded> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| Noded::start(url, name, &dir.path().join(name), &args))
        .collect();
    wait_nodes_up(url, 3);
    let tree = gantry_ok(url, &["nodes", "--topology"]);
    assert_eq!(
        tree,
        "spine\n  leaf-a\n    n1  IDLE  GPUs 0/2\n  leaf-b\n    n2  IDLE  GPUs 0/2\n    n3  IDLE  GPUs 0/2\n"
    );
    let id = submit(
        url,
        &[
            "-N",
            "2",
            "-G",
            "2",
            "-D",
            work.to_str().unwrap(),
            "--",
            "true",
        ],
    );
    let done = wait_state(url, id, "COMPLETED");
    let nodes: Vec<&str> = done["allocation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["n2", "n3"]);
}

/// Pools and labels: a job runs in its pool (`-p`, or the default pool) on nodes with every
/// label it requires (`-C`); a pool or label no node has is refused at submit; a job waiting
/// for its pool's busy nodes says so; the default pool is a setting.
#[test]
fn jobs_run_in_their_pool_on_nodes_with_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let wd = work.to_str().unwrap();
    let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let url = schedd.url.as_str();
    let common = ["--gpus", "2", "--cpus", "4", "--mem", "4G"];
    let _plain = Noded::start(url, "plain", &dir.path().join("plain"), &common);
    let mut gpu_args = common.to_vec();
    gpu_args.extend(["--pool", "gpu", "--label", "ib,nvme"]);
    let _fast = Noded::start(url, "fast", &dir.path().join("fast"), &gpu_args);
    wait_nodes_up(url, 2);
    let nodes: Value = serde_json::from_str(&gantry_ok(url, &["nodes", "-o", "json"])).unwrap();
    let fast = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "fast")
        .unwrap();
    assert_eq!(
        (&fast["pool"], &fast["labels"]),
        (&Value::from("gpu"), &serde_json::json!(["ib", "nvme"]))
    );
    let node_of = |job: &Value| job["allocation"][0]["node"].as_str().unwrap().to_string();

    let labelled = submit(
        url,
        &["-p", "gpu", "-C", "ib", "-G", "1", "-D", wd, "--", "true"],
    );
    let done = wait_state(url, labelled, "COMPLETED");
    assert_eq!(node_of(&done), "fast");
    assert_eq!(
        (&done["pool"], &done["constraints"]),
        (&Value::from("gpu"), &serde_json::json!(["ib"]))
    );
    let plain = submit(url, &["-G", "2", "-D", wd, "--", "true"]);
    let done = wait_state(url, plain, "COMPLETED");
    assert_eq!(node_of(&done), "plain");
    assert_eq!(done["pool"], "default");

    for (args, needle) in [
        (
            vec!["-p", "debug"],
            "asks for pool debug; no node is in it (pools: default, gpu)",
        ),
        (
            vec!["-p", "gpu", "-C", "a100"],
            "asks for nodes with pool gpu, label(s) a100; none has them (labels there: ib, nvme)",
        ),
        (
            vec!["-C", "ib"],
            "asks for nodes with pool default, label(s) ib; none has them (labels there: none)",
        ),
    ] {
        let mut argv = vec!["submit"];
        argv.extend(args);
        argv.extend(["-D", wd, "--", "true"]);
        let out = gantry(url, &argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{argv:?}: {stderr}"
        );
    }

    // The gpu pool's node busy: a job of that pool waits for it, not for the idle plain node.
    let holder = submit(
        url,
        &[
            "-p", "gpu", "-G", "2", "-t", "5m", "-D", wd, "--", "sleep", "300",
        ],
    );
    wait_state(url, holder, "RUNNING");
    let waiting = submit(
        url,
        &["-p", "gpu", "-G", "1", "-t", "1m", "-D", wd, "--", "true"],
    );
    let reason = wait_for("the job of the busy pool to explain its wait", || {
        let shown = job(url, waiting);
        let reason = shown["reason"].as_str().unwrap_or_default().to_string();
        reason.starts_with("Resources").then_some(reason)
    });
    assert!(reason.contains("reserved"), "{reason}");
    let explained = gantry_ok(url, &["queue", "--explain"]);
    assert!(explained.contains(&waiting.to_string()), "{explained}");

    // Jobs without -p go to the default pool, a setting fixed at submit.
    gantry_ok(url, &["admin", "config", "set", "pool.default", "gpu"]);
    let moved = submit(url, &["-G", "1", "-D", wd, "--", "true"]);
    assert_eq!(job(url, moved)["pool"], "gpu");
    gantry_ok(url, &["cancel", &holder.to_string()]);
    let done = wait_state(url, moved, "COMPLETED");
    assert_eq!(node_of(&done), "fast");
}

/// Dependencies, Slurm's way: a job waits for the jobs it depends on (its reason says which),
/// starts once they have ended as it asks, and is cancelled, saying why, when they cannot.
#[test]
fn a_job_starts_after_its_dependencies_or_is_cancelled_when_they_fail() {
    let c = cluster(2);
    let url = c.schedd.url.as_str();
    let wd = work_dir(&c);
    let gate = c.work.join("gate");
    // Runs until the test creates the gate file.
    let first = submit(url, &["-D", wd, "--", "sh", "-c", &until_exists(&gate)]);
    wait_state(url, first, "RUNNING");
    let after_ok = submit(
        url,
        &["-d", &format!("afterok:{first}"), "-D", wd, "--", "true"],
    );
    // Fails once the test creates its gate: the jobs that depend on it are submitted while
    // it has not ended (a plain `false` could end first, and they would be refused).
    let fail_gate = c.work.join("fail-gate");
    let failing = submit(
        url,
        &[
            "-D",
            wd,
            "--",
            "sh",
            "-c",
            &format!("{}; false", until_exists(&fail_gate)),
        ],
    );
    let after_failing = submit(
        url,
        &["-d", &format!("afterok:{failing}"), "-D", wd, "--", "true"],
    );
    let on_failure = submit(
        url,
        &[
            "-d",
            &format!("afternotok:{failing}"),
            "-D",
            wd,
            "--",
            "true",
        ],
    );

    let reason = wait_for("the dependent job to explain its wait", || {
        let reason = job(url, after_ok)["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        reason.starts_with("Dependency").then_some(reason)
    });
    assert_eq!(reason, format!("Dependency: waits for afterok:{first}"));
    assert_eq!(
        job(url, after_ok)["dependencies"],
        serde_json::json!([format!("afterok:{first}")])
    );

    fs::write(&fail_gate, "").unwrap();
    let cancelled = wait_state(url, after_failing, "CANCELLED");
    assert_eq!(
        cancelled["reason"],
        format!("dependency afterok:{failing} can never be met: job {failing} ended FAILED")
    );
    wait_state(url, on_failure, "COMPLETED");
    assert_eq!(job(url, after_ok)["state"], "PENDING");

    fs::write(&gate, "").unwrap();
    wait_state(url, first, "COMPLETED");
    wait_state(url, after_ok, "COMPLETED");

    for (deps, needle) in [
        ("afterok:9999", "job 9999 does not exist"),
        (
            &format!("afterok:{failing}") as &str,
            "can never be met: job",
        ),
        ("after:1", "is not a dependency type"),
    ] {
        let out = gantry(url, &["submit", "-d", deps, "-D", wd, "--", "true"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{deps}: {stderr}"
        );
    }
}
