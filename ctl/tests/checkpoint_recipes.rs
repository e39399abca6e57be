//! The user guide's checkpoint recipes, run as written — read out of `docs/user-guide.md`,
//! not copied — through a preemption and through time limits; and who a checkpoint signal
//! reaches (`--checkpoint`, `--signal`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gantry_testkit::scripts::{lines, script, wait_lines};
use gantry_testkit::{
    OneNode, bin, gantry, gantry_ok, grant_high_qos_and_deadlines, job, preempt_at_once, submit,
    submit_with, wait_state,
};

/// The first fenced block of `lang` after the line of the user guide that contains `marker`.
fn recipe(marker: &str, lang: &str) -> String {
    let guide = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/user-guide.md"
    ))
    .unwrap();
    let after = guide
        .split_once(marker)
        .unwrap_or_else(|| panic!("the user guide has no {marker:?}"))
        .1;
    let fence = format!("```{lang}\n");
    let body = after
        .split_once(&fence)
        .unwrap_or_else(|| panic!("no {lang} block after {marker:?}"))
        .1;
    body.split_once("\n```").unwrap().0.to_string() + "\n"
}

const SHELL_RECIPE: &str = "A complete shell job that resumes from its last step";
const PYTHON_RECIPE: &str = "And in Python";

/// What the recipes leave to the user: a step that takes a moment and notes itself in
/// `steps`, and for Python a stand-in for `torch` and the training code.
fn yours(work: &Path) {
    let step = work.join("do_one_step");
    fs::write(&step, "#!/bin/sh\nsleep 0.4\necho \"$1\" >> steps\n").unwrap();
    fs::set_permissions(&step, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        work.join("torch.py"),
        "import pickle\n\
         def save(obj, path):\n    with open(path, 'wb') as f: pickle.dump(obj, f)\n\
         def load(path):\n    with open(path, 'rb') as f: return pickle.load(f)\n",
    )
    .unwrap();
    fs::write(
        work.join("mytraining.py"),
        "import os, time\n\
         total_steps = int(os.environ['TOTAL_STEPS'])\n\
         class Stateful:\n    def state_dict(self): return {}\n    def load_state_dict(self, s): pass\n\
         model, optimizer = Stateful(), Stateful()\n\
         def train_one_step(step):\n    time.sleep(0.4)\n    \
         with open('steps', 'a') as f: f.write(f'{step + 1}\\n')\n",
    )
    .unwrap();
}

/// `gantry submit ARGS` with `gantry` on the job's PATH, `TOTAL_STEPS` and the Python
/// stand-ins' folder in its environment (a submit captures the submitter's).
fn submit_recipe(c: &OneNode, total: u32, args: &[&str]) -> u64 {
    let path = format!(
        "{}:{}",
        bin("gantry").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    submit_with(c.url(), &c.work, args, |command| {
        command
            .env("PATH", path)
            .env("TOTAL_STEPS", total.to_string())
            .env("PYTHONPATH", &c.work)
    })
}

fn steps_upto(n: u32) -> Vec<String> {
    (1..=n).map(|s| s.to_string()).collect()
}

fn outcomes(done: &serde_json::Value) -> Vec<String> {
    done["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect()
}

/// The recipe `marker` under `-t 6s --checkpoint SIGUSR1@3s --requeue-on-timeout`: warned 3 s
/// into each run, it saves and exits 0, is requeued as its time ran out, and the runs chain
/// until every step is done — each exactly once. (The guide's first recipe ended COMPLETED
/// after 5 of 20 steps.)
fn chains_at_the_time_limit(marker: &str, lang: &str, file: &str) {
    let c = OneNode::start(&["--gpus", "1", "--cpus", "4", "--mem", "4G"]);
    yours(&c.work);
    let job_script = script(&c.work, file, &recipe(marker, lang));
    let total = 12;
    let id = submit_recipe(
        &c,
        total,
        &[
            "-t",
            "6s",
            "--checkpoint",
            "SIGUSR1@3s",
            "--requeue-on-timeout",
            &job_script,
        ],
    );
    let done = wait_state(c.url(), id, "COMPLETED");
    assert_eq!(lines(&c.work.join("steps")), steps_upto(total), "{done}");
    let runs = outcomes(&done);
    assert!(runs.len() >= 2, "{done}");
    assert!(
        runs[..runs.len() - 1].iter().all(|r| r == "TIMEOUT"),
        "{runs:?}"
    );
    assert_eq!(runs.last().unwrap(), "COMPLETED");
    let out = fs::read_to_string(c.work.join(format!("gantry-{id}.out"))).unwrap();
    assert!(out.contains("run 0 starts at step 0\n"), "{out}");
    assert!(out.contains("warned (time_limit) after step"), "{out}");
    assert!(out.contains("run 1 starts at step "), "{out}");
    assert_eq!(done["checkpoint"]["progress"], total, "{done}");
}

#[test]
fn the_guides_shell_recipe_chains_its_runs_at_the_time_limit() {
    chains_at_the_time_limit(SHELL_RECIPE, "bash", "train.sh");
}

#[test]
fn the_guides_python_recipe_chains_its_runs_at_the_time_limit() {
    chains_at_the_time_limit(PYTHON_RECIPE, "python", "train.py");
}

/// The shell recipe preempted by a `high` job: warned, it saves and leaves, and resumes
/// where it stopped.
#[test]
fn the_guides_shell_recipe_resumes_after_a_preemption() {
    let c = OneNode::start(&["--gpus", "1", "--cpus", "4", "--mem", "4G"]);
    preempt_at_once(c.url());
    grant_high_qos_and_deadlines(c.url());
    yours(&c.work);
    let job_script = script(&c.work, "train.sh", &recipe(SHELL_RECIPE, "bash"));
    let total = 10;
    let id = submit_recipe(&c, total, &["-t", "1h", &job_script]);
    wait_lines("three steps", &c.work.join("steps"), 3);
    let high = submit(
        c.url(),
        &["-G", "1", "-q", "high", "-D", c.wd(), "--", "true"],
    );
    wait_state(c.url(), high, "COMPLETED");
    let done = wait_state(c.url(), id, "COMPLETED");
    assert_eq!(lines(&c.work.join("steps")), steps_upto(total), "{done}");
    assert_eq!(outcomes(&done), ["PREEMPTED", "COMPLETED"], "{done}");
    let out = fs::read_to_string(c.work.join(format!("gantry-{id}.out"))).unwrap();
    assert!(out.contains("warned (preemption) after step"), "{out}");
}

/// A job whose shell starts a helper without a handler for the checkpoint signal (as
/// `torchrun` and most launchers have none), warned by a requeue: `result` says whether the
/// helper outlived the warning. Runs after the first exit at once.
fn helper_survives_the_warning(c: &OneNode, how: &[&str]) -> bool {
    let result = c.work.join("result");
    let _ = fs::remove_file(&result);
    let body = format!(
        "#!/bin/sh\n[ \"$GANTRY_RESTART_COUNT\" -gt 0 ] && exit 0\n\
         sleep 600 & helper=$!\n\
         trap 'sleep 0.5; if kill -0 $helper 2>/dev/null; then echo alive; else echo killed; fi > {r}; \
         kill $helper; exit 0' USR1\n\
         echo started > {r}.started\n\
         while true; do sleep 0.05; done\n",
        r = result.display()
    );
    let job_script = script(&c.work, "helper.sh", &body);
    let mut args = vec!["-t", "1h", "-D", c.wd()];
    args.extend_from_slice(how);
    args.push(&job_script);
    let id = submit(c.url(), &args);
    wait_lines("the job to start", &c.work.join("result.started"), 1);
    let _ = fs::remove_file(c.work.join("result.started"));
    gantry_ok(c.url(), &["requeue", &id.to_string()]);
    wait_state(c.url(), id, "COMPLETED");
    match lines(&result).as_slice() {
        [word] => word == "alive",
        other => panic!("{how:?}: the job wrote {other:?}"),
    }
}

/// `--checkpoint` signals the batch shell only (a background `sleep` and a Python child
/// without a handler died of SIGUSR1); `--signal` has Slurm's meaning: `B:` the batch shell
/// only, without it every process of the job.
#[test]
fn the_checkpoint_signal_reaches_the_batch_shell_only_unless_asked() {
    let c = OneNode::start(&["--gpus", "1", "--cpus", "4", "--mem", "4G"]);
    assert!(helper_survives_the_warning(
        &c,
        &["--checkpoint", "SIGUSR1@60s"]
    ));
    assert!(helper_survives_the_warning(&c, &["--signal", "B:USR1@60"]));
    assert!(!helper_survives_the_warning(&c, &["--signal", "USR1@60"]));
    assert!(!helper_survives_the_warning(
        &c,
        &["--checkpoint", "job:SIGUSR1@60s"]
    ));
}

/// `--checkpoint USR1@30` is 30 seconds, as Slurm's `--signal=USR1@30` (it was 30 minutes), and
/// a lead that is not shorter than the time limit is refused (the job died of the signal at
/// its start).
#[test]
fn a_bare_checkpoint_lead_is_seconds_and_must_be_shorter_than_the_limit() {
    let c = OneNode::start(&["--gpus", "1", "--cpus", "4", "--mem", "4G"]);
    let id = submit(
        c.url(),
        &[
            "-t",
            "1m",
            "--checkpoint",
            "USR1@30",
            "-D",
            c.wd(),
            "--",
            "true",
        ],
    );
    assert_eq!(job(c.url(), id)["checkpoint"]["signal"], "SIGUSR1@30s");
    for (args, needle) in [
        (
            vec!["-t", "20s", "--checkpoint", "USR1@30m"],
            "must be shorter than the time limit",
        ),
        (
            vec!["-t", "30s", "--signal", "USR1@30"],
            "must be shorter than the time limit",
        ),
    ] {
        let mut all = vec!["submit"];
        all.extend(args.iter());
        all.extend(["-D", c.wd(), "--", "true"]);
        let out = gantry(c.url(), &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
}
