//! Conversions between the wire types (`gantry_proto`) and the domain model (`gantry_model`):
//! the one place that knows both, used by the scheduler, the node daemon and the CLI.

use gantry_model::{self as model, ExitReason, JobState};
use gantry_proto as pb;

/// A wire job spec into the domain one; `Err` only for what the domain cannot hold (an
/// unknown dependency type). Other problems (no program) are reported by
/// [`model::JobSpec::validate`], which callers run next.
pub fn spec_from_pb(spec: &pb::JobSpec) -> Result<model::JobSpec, model::SpecError> {
    let program = match spec.program.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(pb::program::Kind::Script(s)) => model::Program::Script {
            path: s.path.clone(),
            body: s.body.clone(),
            args: s.args.clone(),
        },
        Some(pb::program::Kind::Command(c)) => model::Program::Command {
            argv: c.argv.clone(),
        },
        None => model::Program::Command { argv: vec![] },
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let dependencies = spec
        .dependencies
        .iter()
        .map(dependency_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(model::JobSpec {
        name: spec.name.clone(),
        account: spec.account.clone(),
        num_nodes: spec.num_nodes,
        gpus_per_node: spec.gpus_per_node,
        gpu_model: non_empty(&spec.gpu_model),
        alternatives: spec.alternatives.iter().map(alternative_from_pb).collect(),
        qos: if spec.qos.is_empty() {
            "normal".to_string()
        } else {
            spec.qos.clone()
        },
        deadline_ms: (spec.deadline_ms > 0).then_some(spec.deadline_ms),
        pool: non_empty(&spec.pool),
        constraints: spec.constraints.clone(),
        dependencies,
        cpus_per_node: spec.cpus_per_node,
        mem_per_node_mib: spec.mem_per_node_mib,
        time_limit_ms: (spec.time_limit_ms > 0).then_some(spec.time_limit_ms),
        program,
        work_dir: spec.work_dir.clone(),
        stdout_path: non_empty(&spec.stdout_path),
        stderr_path: non_empty(&spec.stderr_path),
        env: spec
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        checkpoint: spec.checkpoint.as_ref().map(checkpoint_from_pb),
        requeue: model::RequeuePolicy {
            on_node_failure: !spec.no_requeue,
            on_timeout: spec.requeue_on_timeout,
        },
        reservation: non_empty(&spec.reservation),
        open_mode: match spec.open_mode.as_str() {
            "" => None,
            mode => Some(
                model::OpenMode::parse(mode)
                    .ok_or_else(|| model::SpecError::BadOpenMode(mode.to_string()))?,
            ),
        },
    })
}

pub fn checkpoint_from_pb(c: &pb::Checkpoint) -> model::Checkpoint {
    model::Checkpoint {
        signal: c.signal.clone(),
        lead_ms: c.lead_ms,
        interval_ms: (c.interval_ms > 0).then_some(c.interval_ms),
        to: if c.whole_job {
            model::SignalTarget::Job
        } else {
            model::SignalTarget::Batch
        },
    }
}

pub fn checkpoint_to_pb(c: &model::Checkpoint) -> pb::Checkpoint {
    pb::Checkpoint {
        signal: c.signal.clone(),
        lead_ms: c.lead_ms,
        interval_ms: c.interval_ms.unwrap_or(0),
        whole_job: c.to == model::SignalTarget::Job,
    }
}

pub fn dependency_from_pb(dep: &pb::Dependency) -> Result<model::Dependency, model::SpecError> {
    let condition = model::Condition::parse(&dep.condition).ok_or_else(|| {
        model::SpecError::BadDependency(format!(
            "{:?} is not a dependency type (afterok, afterany, afternotok)",
            dep.condition
        ))
    })?;
    Ok(model::Dependency {
        condition,
        job: dep.job_id,
    })
}

pub fn dependency_to_pb(dep: &model::Dependency) -> pb::Dependency {
    pb::Dependency {
        condition: dep.condition.as_str().to_string(),
        job_id: dep.job,
    }
}

pub fn alternative_from_pb(alt: &pb::Alternative) -> model::Alternative {
    model::Alternative {
        num_nodes: alt.num_nodes,
        gpus_per_node: alt.gpus_per_node,
        gpu_model: (!alt.gpu_model.is_empty()).then(|| alt.gpu_model.clone()),
        speed: alt.speed_permille,
    }
}

pub fn alternative_to_pb(alt: &model::Alternative) -> pb::Alternative {
    pb::Alternative {
        num_nodes: alt.num_nodes,
        gpus_per_node: alt.gpus_per_node,
        gpu_model: alt.gpu_model.clone().unwrap_or_default(),
        speed_permille: alt.speed,
    }
}

pub fn env_to_pb(env: &[(String, String)]) -> Vec<pb::EnvVar> {
    env.iter()
        .map(|(name, value)| pb::EnvVar {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

pub fn program_to_pb(program: &model::Program) -> pb::Program {
    let kind = match program {
        model::Program::Script { path, body, args } => pb::program::Kind::Script(pb::Script {
            path: path.clone(),
            body: body.clone(),
            args: args.clone(),
        }),
        model::Program::Command { argv } => {
            pb::program::Kind::Command(pb::CommandLine { argv: argv.clone() })
        }
    };
    pb::Program { kind: Some(kind) }
}

pub fn spec_to_pb(spec: &model::JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        name: spec.name.clone(),
        account: spec.account.clone(),
        num_nodes: spec.num_nodes,
        gpus_per_node: spec.gpus_per_node,
        cpus_per_node: spec.cpus_per_node,
        mem_per_node_mib: spec.mem_per_node_mib,
        time_limit_ms: spec.time_limit_ms.unwrap_or(0),
        program: Some(program_to_pb(&spec.program)),
        work_dir: spec.work_dir.clone(),
        stdout_path: spec.stdout_path.clone().unwrap_or_default(),
        stderr_path: spec.stderr_path.clone().unwrap_or_default(),
        env: env_to_pb(&spec.env),
        gpu_model: spec.gpu_model.clone().unwrap_or_default(),
        alternatives: spec.alternatives.iter().map(alternative_to_pb).collect(),
        qos: spec.qos.clone(),
        deadline_ms: spec.deadline_ms.unwrap_or(0),
        pool: spec.pool.clone().unwrap_or_default(),
        constraints: spec.constraints.clone(),
        dependencies: spec.dependencies.iter().map(dependency_to_pb).collect(),
        checkpoint: spec.checkpoint.as_ref().map(checkpoint_to_pb),
        no_requeue: !spec.requeue.on_node_failure,
        requeue_on_timeout: spec.requeue.on_timeout,
        reservation: spec.reservation.clone().unwrap_or_default(),
        open_mode: spec
            .open_mode
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
    }
}

pub fn state_to_pb(state: JobState) -> pb::JobState {
    match state {
        JobState::Pending => pb::JobState::Pending,
        JobState::Running => pb::JobState::Running,
        JobState::Completed => pb::JobState::Completed,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
        JobState::Timeout => pb::JobState::Timeout,
        JobState::NodeFail => pb::JobState::NodeFail,
    }
}

/// A wire state number into the domain state; `None` for unspecified or unknown numbers.
pub fn state_from_pb(state: i32) -> Option<JobState> {
    match pb::JobState::try_from(state).ok()? {
        pb::JobState::Unspecified => None,
        pb::JobState::Pending => Some(JobState::Pending),
        pb::JobState::Running => Some(JobState::Running),
        pb::JobState::Completed => Some(JobState::Completed),
        pb::JobState::Failed => Some(JobState::Failed),
        pb::JobState::Cancelled => Some(JobState::Cancelled),
        pb::JobState::Timeout => Some(JobState::Timeout),
        pb::JobState::NodeFail => Some(JobState::NodeFail),
    }
}

/// The name people see for a node state (`IDLE`, `MIXED`...).
pub fn node_state_name(state: i32) -> &'static str {
    match pb::NodeState::try_from(state) {
        Ok(pb::NodeState::Idle) => "IDLE",
        Ok(pb::NodeState::Mixed) => "MIXED",
        Ok(pb::NodeState::Allocated) => "ALLOCATED",
        Ok(pb::NodeState::Draining) => "DRAINING",
        Ok(pb::NodeState::Drained) => "DRAINED",
        Ok(pb::NodeState::Down) => "DOWN",
        Ok(pb::NodeState::Unspecified) | Err(_) => "UNKNOWN",
    }
}

pub fn exit_reason_to_pb(reason: ExitReason) -> pb::ExitReason {
    match reason {
        ExitReason::Exited => pb::ExitReason::Exited,
        ExitReason::Cancelled => pb::ExitReason::Cancelled,
        ExitReason::Timeout => pb::ExitReason::Timeout,
        ExitReason::LaunchFailed => pb::ExitReason::LaunchFailed,
        ExitReason::Lost => pb::ExitReason::Lost,
        ExitReason::NodeShutdown => pb::ExitReason::NodeShutdown,
        ExitReason::Fenced => pb::ExitReason::Fenced,
        ExitReason::Preempted => pb::ExitReason::Preempted,
    }
}

/// A wire exit reason number; unspecified or unknown numbers read as a plain exit, so the
/// exit code and signal decide.
pub fn exit_reason_from_pb(reason: i32) -> ExitReason {
    match pb::ExitReason::try_from(reason) {
        Ok(pb::ExitReason::Cancelled) => ExitReason::Cancelled,
        Ok(pb::ExitReason::Timeout) => ExitReason::Timeout,
        Ok(pb::ExitReason::LaunchFailed) => ExitReason::LaunchFailed,
        Ok(pb::ExitReason::Lost) => ExitReason::Lost,
        Ok(pb::ExitReason::NodeShutdown) => ExitReason::NodeShutdown,
        Ok(pb::ExitReason::Fenced) => ExitReason::Fenced,
        Ok(pb::ExitReason::Preempted) => ExitReason::Preempted,
        Ok(pb::ExitReason::Exited | pb::ExitReason::Unspecified) | Err(_) => ExitReason::Exited,
    }
}

pub fn gpu_from_pb(gpu: &pb::Gpu) -> model::Gpu {
    model::Gpu {
        index: gpu.index,
        model: gpu.model.clone(),
        memory_mib: gpu.memory_mib,
        nvlink_group: gpu.nvlink_group,
        numa_node: u32::try_from(gpu.numa_node).ok(),
        uuid: gpu.uuid.clone(),
    }
}

pub fn gpu_to_pb(gpu: &model::Gpu) -> pb::Gpu {
    pb::Gpu {
        index: gpu.index,
        model: gpu.model.clone(),
        memory_mib: gpu.memory_mib,
        nvlink_group: gpu.nvlink_group,
        numa_node: gpu
            .numa_node
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(-1),
        uuid: gpu.uuid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip() {
        let spec = model::JobSpec {
            name: "n".into(),
            account: "a".into(),
            num_nodes: 2,
            gpus_per_node: 8,
            gpu_model: Some("h100".into()),
            alternatives: vec![model::Alternative {
                num_nodes: 4,
                gpus_per_node: 8,
                gpu_model: Some("a100".into()),
                speed: 600,
            }],
            qos: "high".into(),
            deadline_ms: Some(1_800_000_000_000),
            pool: Some("gpu".into()),
            constraints: vec!["ib".into(), "nvme".into()],
            dependencies: vec![model::Dependency {
                condition: model::Condition::AfterNotOk,
                job: 7,
            }],
            cpus_per_node: 16,
            mem_per_node_mib: 4096,
            time_limit_ms: Some(60_000),
            program: model::Program::Script {
                path: "/x/run.sh".into(),
                body: "#!/bin/sh\necho hi\n".into(),
                args: vec!["a".into()],
            },
            work_dir: "/x".into(),
            stdout_path: Some("out-%j".into()),
            stderr_path: None,
            env: vec![("A".into(), "1".into())],
            checkpoint: Some(model::Checkpoint {
                signal: "SIGUSR2".into(),
                lead_ms: 30_000,
                interval_ms: Some(600_000),
                to: model::SignalTarget::Job,
            }),
            requeue: model::RequeuePolicy {
                on_node_failure: false,
                on_timeout: true,
            },
            reservation: Some("demo".into()),
            open_mode: Some(model::OpenMode::Truncate),
        };
        assert_eq!(spec_from_pb(&spec_to_pb(&spec)), Ok(spec));
    }

    #[test]
    fn exit_reasons_round_trip() {
        for r in ExitReason::ALL {
            assert_eq!(exit_reason_from_pb(exit_reason_to_pb(r) as i32), r);
        }
        assert_eq!(exit_reason_from_pb(99), ExitReason::Exited);
    }

    #[test]
    fn states_round_trip() {
        for s in JobState::ALL {
            assert_eq!(state_from_pb(state_to_pb(s) as i32), Some(s));
        }
        assert_eq!(state_from_pb(0), None);
        assert_eq!(state_from_pb(99), None);
    }
}
