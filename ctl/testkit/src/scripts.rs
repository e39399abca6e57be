//! Job scripts for tests of what jobs live through (preemption, requeues, drains): they
//! note their runs and steps in files of the work dir, which tests read to see exactly what
//! ran, when, and from where it resumed.

use std::fs;
use std::path::Path;

use crate::{bin, wait_for};

/// Shell that waits until the test creates `gate`: for a job that must still be running (or
/// not have ended yet) at some point of a test, where a fixed sleep could end first on a
/// loaded machine.
pub fn until_exists(gate: &Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display())
}

/// Writes a job script into `work`; returns its path as `gantry submit` takes it.
pub fn script(work: &Path, name: &str, body: &str) -> String {
    let path = work.join(name);
    fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

pub fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `path` has `count` lines.
pub fn wait_lines(what: &str, path: &Path, count: usize) {
    wait_for(what, || (lines(path).len() >= count).then_some(()));
}

/// A job script that counts to 40, one step at a time, each step appended to `work/steps`,
/// resuming from the count saved in its checkpoint dir; `trap` handles `signal` (`@SAVE@`
/// saves the count, `@GANTRY@` is the CLI), `step` runs after each step.
pub fn count_script(work: &Path, signal: &str, trap: &str, step: &str) -> String {
    let text = format!(
        r#"#!/bin/sh
dir="$GANTRY_CHECKPOINT_DIR"
n=0
[ -f "$dir/count" ] && n=$(cat "$dir/count")
echo "run $GANTRY_RESTART_COUNT from $n" >> @RUNS@
trap '{trap}' {signal}
while [ $n -lt 40 ]; do
  n=$((n + 1))
  echo $n >> @STEPS@
{step}
done
echo done >> @RUNS@
"#
    );
    let path = |name: &str| work.join(name).display().to_string();
    text.replace(
        "@SAVE@",
        r#"echo $n > "$dir/count.tmp" && mv "$dir/count.tmp" "$dir/count""#,
    )
    .replace("@RUNS@", &path("runs"))
    .replace("@STEPS@", &path("steps"))
    .replace("@RELEASE@", &path("release"))
    .replace("@GANTRY@", &bin("gantry").display().to_string())
}

/// On SIGUSR1 saves its count, reports the checkpoint and exits 0. Its first run stops at 20
/// until `release` exists.
pub fn counter(work: &Path) -> String {
    count_script(
        work,
        "USR1",
        "@SAVE@ && @GANTRY@ checkpoint done --progress $n; exit 0",
        "  while [ $n -eq 20 ] && [ ! -e @RELEASE@ ]; do sleep 0.05; done",
    )
}

/// A job script that notes each run (`run N`) in `work/runs`; its first run runs until
/// killed, later ones end at once. `setup` comes first (e.g. traps).
pub fn first_run_hangs(work: &Path, setup: &str) -> String {
    format!(
        "#!/bin/sh\n{setup}\necho \"run $GANTRY_RESTART_COUNT\" >> {runs}\n\
         [ \"$GANTRY_RESTART_COUNT\" -gt 0 ] && exit 0\nwhile true; do sleep 0.05; done\n",
        runs = work.join("runs").display()
    )
}
