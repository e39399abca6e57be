//! The checkpoint root: `<root>/<job id>` is a job's `GANTRY_CHECKPOINT_DIR`, kept across its
//! runs (and nodes, on shared storage).
//!
//! The root is `0711`: anyone may pass through it to their own job's dir, nobody but root may
//! list it. Each job's dir is its user's, `0700`. A dir outlives its job by the scheduler's
//! `checkpoint.keep`: the node daemon asks the leader now and then which of the dirs it finds
//! belong to jobs that ended that long ago (a `CheckpointSweep`), and removes those.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, chown, geteuid};
use tracing::{info, warn};

/// At most this many job ids go in one sweep request: the message stays small whatever the
/// root holds; the next sweep asks about the rest.
pub const MAX_SWEEP: usize = 10_000;

#[derive(Debug, Clone)]
pub struct CheckpointRoot {
    path: PathBuf,
}

impl CheckpointRoot {
    pub fn new(path: PathBuf) -> CheckpointRoot {
        CheckpointRoot { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the root `0711`, or lets users through one that exists without: jobs running
    /// as their users could not reach their dirs (a root made `0700` by an earlier version).
    pub fn prepare(&self) -> io::Result<()> {
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.path)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mode = fs::metadata(&self.path)?.permissions().mode() & 0o7777;
        if mode & 0o111 != 0o111 {
            let fixed = mode | 0o111;
            fs::set_permissions(&self.path, fs::Permissions::from_mode(fixed))?;
            warn!(
                root = %self.path.display(),
                "the checkpoint root was mode {mode:o}: jobs running as their users could not reach their checkpoint dirs; made it {fixed:o}"
            );
        }
        Ok(())
    }

    /// Job `id`'s dir, created if missing and given to `uid:gid` (a root daemon running a
    /// job as its user): `0700`, the user's alone.
    pub fn job_dir(&self, id: u64, uid: u32, gid: u32) -> io::Result<PathBuf> {
        let dir = self.path.join(id.to_string());
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if geteuid().is_root() {
            chown(&dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        Ok(dir)
    }

    /// The job ids of the dirs in the root, but those of `running`, at most [`MAX_SWEEP`].
    pub fn sweep_candidates(&self, running: &BTreeSet<u64>) -> Vec<u64> {
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) => {
                warn!(root = %self.path.display(), "cannot list the checkpoint root: {e}");
                return Vec::new();
            }
        };
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|id| !running.contains(id))
            .collect();
        ids.sort_unstable();
        ids.truncate(MAX_SWEEP);
        ids
    }

    /// Removes the dirs of jobs the scheduler says ended long enough ago, but any of
    /// `running` (a dir is never taken from under a job).
    pub fn remove(&self, ended: &[u64], running: &BTreeSet<u64>) {
        for id in ended.iter().filter(|id| !running.contains(id)) {
            let dir = self.path.join(id.to_string());
            match fs::remove_dir_all(&dir) {
                Ok(()) => {
                    info!(job = id, dir = %dir.display(), "checkpoint dir of an ended job removed")
                }
                // Another node sharing the root was first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(job = id, dir = %dir.display(), "cannot remove the checkpoint dir: {e}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_lets_users_through_and_sweeps_only_what_it_is_told() {
        let scratch = tempfile::tempdir().unwrap();
        let root = CheckpointRoot::new(scratch.path().join("checkpoints"));
        root.prepare().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(root.path()), 0o711);
        // A root an earlier version made 0700 is opened for users to pass.
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o700)).unwrap();
        root.prepare().unwrap();
        assert_eq!(mode(root.path()), 0o711);

        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        for id in [3, 7, 12] {
            let dir = root.job_dir(id, uid, gid).unwrap();
            assert_eq!(mode(&dir), 0o700);
            fs::write(dir.join("state"), "x").unwrap();
        }
        fs::create_dir(root.path().join("not-a-job")).unwrap();
        let running = BTreeSet::from([7]);
        assert_eq!(root.sweep_candidates(&running), [3, 12]);
        root.remove(&[3, 7, 99], &running);
        assert!(!root.path().join("3").exists());
        assert!(
            root.path().join("7/state").exists(),
            "a running job's dir stays"
        );
        assert!(root.path().join("12").exists(), "not named: it stays");
        // The same dir again for a later run: kept, still the user's.
        assert!(root.job_dir(12, uid, gid).unwrap().join("state").exists());
    }
}
