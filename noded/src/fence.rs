//! Fencing against deposed leaders.
//!
//! A leader that was frozen or cut off still believes it leads until it hears of a newer
//! term, and its state may lack what the new leader has since decided. A node daemon that
//! took its assignments from such a replica would kill jobs that are rightly running. The
//! scheduler names its Raft term in `Registered`; the node remembers the highest term it
//! has been registered under (in its data dir, so a restart remembers too) and refuses a
//! session from any replica with a lower one.

use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::warn;

use crate::jobdir::write_atomic;

const FILE: &str = "leader-term";

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "this replica leads term {offered}, but a leader of term {highest} has registered this node: \
     it is a deposed leader"
)]
pub struct StaleLeader {
    pub offered: u64,
    pub highest: u64,
}

#[derive(Debug)]
pub(crate) struct LeaderTerm {
    path: PathBuf,
    highest: u64,
}

impl LeaderTerm {
    /// The term recorded in `data_dir` (0 when none is: a fresh node accepts any leader).
    pub(crate) fn load(data_dir: &Path) -> LeaderTerm {
        let path = data_dir.join(FILE);
        let highest = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().unwrap_or_else(|_| {
                warn!(path = %path.display(), "unreadable leader term ignored");
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read the leader term");
                0
            }
        };
        LeaderTerm { path, highest }
    }

    /// Accepts a session under `term` unless a newer leader has been seen. Term 0 is a
    /// scheduler that names none (a group of one has no deposed leaders to fear).
    pub(crate) fn admit(&mut self, term: u64) -> Result<(), StaleLeader> {
        if term < self.highest && term != 0 {
            return Err(StaleLeader {
                offered: term,
                highest: self.highest,
            });
        }
        if term > self.highest {
            self.highest = term;
            // Kept in memory regardless: only a restart of this daemon would forget it.
            if let Err(e) = write_atomic(&self.path, term.to_string().as_bytes(), 0o644, true) {
                warn!(error = %e, "cannot record the leader term");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_term_is_refused_and_the_highest_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut terms = LeaderTerm::load(dir.path());
        assert_eq!(terms.admit(3), Ok(()));
        assert_eq!(terms.admit(3), Ok(()));
        assert_eq!(terms.admit(0), Ok(()));
        let mut terms = LeaderTerm::load(dir.path());
        assert_eq!(
            terms.admit(2),
            Err(StaleLeader {
                offered: 2,
                highest: 3
            })
        );
        assert_eq!(terms.admit(5), Ok(()));
        assert_eq!(LeaderTerm::load(dir.path()).highest, 5);
    }

    #[test]
    fn garbage_in_the_file_counts_as_no_term() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "not a number").unwrap();
        assert_eq!(LeaderTerm::load(dir.path()).highest, 0);
    }
}
