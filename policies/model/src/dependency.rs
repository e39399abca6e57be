//! Job dependencies (`gantry submit -d afterok:12:13,afterany:14`, Slurm's syntax): a job
//! starts only once the jobs it depends on have ended the way it asks.

use serde::{Deserialize, Serialize};

use crate::job::{JobId, JobState};

/// More dependencies than this is a script gone wrong, not a request.
pub const MAX_DEPENDENCIES: usize = 64;

/// How a job must have ended for a dependency on it to be met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Condition {
    /// Completed successfully (exit 0).
    AfterOk,
    /// Ended, however.
    AfterAny,
    /// Ended without success (failed, cancelled, timed out, lost with its node).
    AfterNotOk,
}

impl Condition {
    pub const ALL: [Condition; 3] = [
        Condition::AfterOk,
        Condition::AfterAny,
        Condition::AfterNotOk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::AfterOk => "afterok",
            Condition::AfterAny => "afterany",
            Condition::AfterNotOk => "afternotok",
        }
    }

    pub fn parse(text: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Whether a job that ended in `state` meets it.
    pub fn met_by(self, state: JobState) -> bool {
        match self {
            Condition::AfterOk => state == JobState::Completed,
            Condition::AfterAny => state.is_terminal(),
            Condition::AfterNotOk => state.is_terminal() && state != JobState::Completed,
        }
    }
}

/// One dependency: on `job`, ending as `condition` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dependency {
    pub condition: Condition,
    pub job: JobId,
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.condition.as_str(), self.job)
    }
}

/// Reads Slurm's form: `afterok:12`, `afterok:12:13`, `afterok:12,afterany:14`. Slurm's `?`
/// (any one of) and its other conditions are refused rather than misread.
pub fn parse_dependencies(text: &str) -> Result<Vec<Dependency>, String> {
    let text = text.trim();
    if text.contains('?') {
        return Err(format!(
            "only dependencies that must all be met are supported (',' between them), not '?' (got {text:?})"
        ));
    }
    let mut out = Vec::new();
    for item in text.split(',') {
        let mut words = item.trim().split(':');
        let name = words.next().unwrap_or_default();
        let condition = Condition::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Condition::ALL.map(Condition::as_str).to_vec();
            format!(
                "{name:?} is not a dependency type ({}), in {text:?}",
                known.join(", ")
            )
        })?;
        let mut any = false;
        for id in words {
            let job = id
                .parse::<JobId>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| format!("{id:?} is not a job id, in {text:?}"))?;
            out.push(Dependency { condition, job });
            any = true;
        }
        if !any {
            return Err(format!("{name} names no job: {name}:JOBID, in {text:?}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_forms_parse_and_print_back() {
        let deps = parse_dependencies("afterok:12:13,afterany:14").unwrap();
        let shown: Vec<String> = deps.iter().map(Dependency::to_string).collect();
        assert_eq!(shown, ["afterok:12", "afterok:13", "afterany:14"]);
        for bad in [
            "afterok",
            "after:3",
            "afterok:x",
            "afterok:0",
            "afterok:1?afterany:2",
            "",
        ] {
            assert!(parse_dependencies(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions_are_met_by_how_the_job_ended() {
        use JobState::*;
        assert!(Condition::AfterOk.met_by(Completed));
        assert!(!Condition::AfterOk.met_by(Failed));
        assert!(!Condition::AfterOk.met_by(Running));
        assert!(Condition::AfterAny.met_by(Cancelled));
        assert!(!Condition::AfterAny.met_by(Pending));
        assert!(Condition::AfterNotOk.met_by(Timeout));
        assert!(!Condition::AfterNotOk.met_by(Completed));
    }
}
