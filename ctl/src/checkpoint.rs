//! `gantry checkpoint done`: run from inside a job, it tells the scheduler the job completed a
//! checkpoint. The job proves who it is with the secret its node daemon gave it
//! (`GANTRY_JOB_TOKEN`), so no other job or user can report for it.

use anyhow::{Context, bail};
use clap::Subcommand;
use gantry_model::checkpoint::DONE_FILE;
use gantry_proto as pb;

use crate::client::Scheduler;

#[derive(Subcommand, Debug, Clone)]
pub enum CheckpointCommand {
    /// Report that this job has just completed a checkpoint (run it from inside the job):
    /// a preemption then costs only the work since, and `gantry show` tells when it was
    Done {
        /// How far the job got, in its own units (a step, an epoch...)
        #[arg(long, value_name = "N")]
        progress: Option<u64>,
        /// The job's work is done: when this run exits with code 0 the job is COMPLETED,
        /// even if it was being stopped to run again (a preemption, a time limit with
        /// --requeue-on-timeout)
        #[arg(long = "final")]
        work_done: bool,
    },
}

/// The job this process belongs to, from the variables its node daemon set.
fn this_job(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<(u64, u32, String)> {
    let var = |name: &str| {
        env(name).with_context(|| {
            format!("{name} is not set: `gantry checkpoint done` runs inside a Gantry job")
        })
    };
    let id = var("GANTRY_JOB_ID")?;
    let job = id
        .parse()
        .with_context(|| format!("GANTRY_JOB_ID {id:?} is not a job id"))?;
    let run = var("GANTRY_RESTART_COUNT")?;
    let attempt = run
        .parse()
        .with_context(|| format!("GANTRY_RESTART_COUNT {run:?} is not a run number"))?;
    let token = var("GANTRY_JOB_TOKEN")?;
    if token.is_empty() {
        bail!("GANTRY_JOB_TOKEN is empty: the scheduler gave this job no token");
    }
    Ok((job, attempt, token))
}

pub async fn run(command: CheckpointCommand, scheduler: &mut Scheduler) -> anyhow::Result<()> {
    let CheckpointCommand::Done {
        progress,
        work_done,
    } = command;
    let (job_id, attempt, token) = this_job(|name| std::env::var(name).ok())?;
    let request = pb::CheckpointDoneRequest {
        job_id,
        attempt,
        token,
        has_progress: progress.is_some(),
        progress: progress.unwrap_or(0),
        work_done,
    };
    scheduler
        .call_retrying(|mut client| {
            let request = request.clone();
            async move { client.checkpoint_done(request).await }
        })
        .await
        .with_context(|| format!("cannot report job {job_id}'s checkpoint"))?;
    // Tells the job's supervisor, if it is waiting for this checkpoint to stop the job.
    if let Some(dir) = std::env::var_os("GANTRY_CHECKPOINT_DIR") {
        let marker = std::path::Path::new(&dir).join(DONE_FILE);
        std::fs::write(&marker, format!("{attempt}\n"))
            .with_context(|| format!("cannot write {}", marker.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_comes_from_its_environment_or_the_error_says_what_is_missing() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        const FULL: [(&str, &str); 3] = [
            ("GANTRY_JOB_ID", "12"),
            ("GANTRY_RESTART_COUNT", "1"),
            ("GANTRY_JOB_TOKEN", "abc"),
        ];
        assert_eq!(this_job(env(&FULL)).unwrap(), (12, 1, "abc".to_string()));
        let err = this_job(env(&[])).unwrap_err().to_string();
        assert!(err.contains("GANTRY_JOB_ID is not set"), "{err}");
        let err = this_job(env(&[("GANTRY_JOB_ID", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a job id"), "{err}");
        let err = this_job(env(&[
            ("GANTRY_JOB_ID", "1"),
            ("GANTRY_RESTART_COUNT", "0"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("GANTRY_JOB_TOKEN is not set"), "{err}");
    }
}
