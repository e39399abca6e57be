//! The checkpoint root: `<root>/<cluster>/<job id>` is a job's `GANTRY_CHECKPOINT_DIR`, kept
//! across its runs (and nodes, on shared storage). Job ids are unique within a cluster only:
//! a new cluster (or one rebuilt from an empty store) starts again from job 1, and clusters may
//! share the storage, so each has its own folder, named as its scheduler names it.
//!
//! The root and each cluster's folder are `0711`: anyone may pass through them to their own
//! job's dir, nobody but root may list or write them. Each job's dir is its user's, `0700`; a
//! link where a folder should be is refused, never followed. A dir outlives its job by the
//! scheduler's `checkpoint.keep`: the node daemon asks the leader now and then which of the
//! dirs it finds belong to jobs that ended that long ago (a `CheckpointSweep`), and removes
//! those.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, lchown};
use std::path::{Path, PathBuf};

use nix::unistd::geteuid;
use tracing::{info, warn};

/// At most this many job ids go in one sweep request: the message stays small whatever the
/// root holds; the next sweep asks about the rest.
pub const MAX_SWEEP: usize = 10_000;

#[derive(Debug, Clone)]
pub struct CheckpointRoot {
    path: PathBuf,
}

/// Creates `dir` with `mode`, or checks that what is there is a directory — a link there is
/// refused, not followed.
fn make_dir(dir: &Path, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if fs::symlink_metadata(dir)?.is_dir() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a directory (a link?)", dir.display()),
                ))
            }
        }
        Err(e) => Err(e),
    }
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

    /// `<root>/<cluster>`, made if missing: root's alone to write (a folder others could
    /// write would let them plant links where job dirs go).
    fn cluster_dir(&self, cluster: &str) -> io::Result<PathBuf> {
        if cluster.is_empty() || !cluster.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the scheduler named the cluster {cluster:?}, not a name of letters and digits"
                ),
            ));
        }
        let dir = self.path.join(cluster);
        make_dir(&dir, 0o711)?;
        let meta = fs::symlink_metadata(&dir)?;
        if geteuid().is_root() && (meta.uid() != 0 || meta.mode() & 0o022 != 0) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} must be root's and writable by nobody else (owner uid {}, mode {:o})",
                    dir.display(),
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            ));
        }
        Ok(dir)
    }

    /// Job `id`'s dir in `cluster`, made if missing and given to `uid:gid` (a root daemon
    /// running a job as its user): `0700`, the user's alone.
    pub fn job_dir(&self, cluster: &str, id: u64, uid: u32, gid: u32) -> io::Result<PathBuf> {
        let dir = self.cluster_dir(cluster)?.join(id.to_string());
        make_dir(&dir, 0o700)?;
        if geteuid().is_root() {
            // A real directory in a folder only root writes: nothing can swap it for a link.
            lchown(&dir, Some(uid), Some(gid))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(dir)
    }

    /// The job ids of `cluster`'s dirs, but those of `running`, at most [`MAX_SWEEP`].
    pub fn sweep_candidates(&self, cluster: &str, running: &BTreeSet<u64>) -> Vec<u64> {
        let entries = match fs::read_dir(self.path.join(cluster)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                warn!(root = %self.path.display(), %cluster, "cannot list the checkpoint dirs: {e}");
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

    /// Removes `cluster`'s dirs of jobs the scheduler says ended long enough ago, but any of
    /// `running` (a dir is never taken from under a job).
    pub fn remove(&self, cluster: &str, ended: &[u64], running: &BTreeSet<u64>) {
        for id in ended.iter().filter(|id| !running.contains(id)) {
            let dir = self.path.join(cluster).join(id.to_string());
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
            let dir = root.job_dir("c1", id, uid, gid).unwrap();
            assert_eq!(mode(&dir), 0o700);
            fs::write(dir.join("state"), "x").unwrap();
        }
        assert_eq!(mode(&root.path().join("c1")), 0o711);
        // Another cluster's job 3 is another job.
        let other = root.job_dir("c2", 3, uid, gid).unwrap();
        assert!(!other.join("state").exists());
        fs::create_dir(root.path().join("c1/not-a-job")).unwrap();
        let running = BTreeSet::from([7]);
        assert_eq!(root.sweep_candidates("c1", &running), [3, 12]);
        root.remove("c1", &[3, 7, 99], &running);
        assert!(!root.path().join("c1/3").exists());
        assert!(root.path().join("c2/3").exists(), "another cluster's stays");
        assert!(
            root.path().join("c1/7/state").exists(),
            "a running job's dir stays"
        );
        assert!(root.path().join("c1/12").exists(), "not named: it stays");
        // The same dir again for a later run: kept, still the user's.
        let again = root.job_dir("c1", 12, uid, gid).unwrap();
        assert!(again.join("state").exists());
        // A link where a job's dir goes is refused, not followed; so is a bad cluster name.
        std::os::unix::fs::symlink("/etc", root.path().join("c1/40")).unwrap();
        let err = root.job_dir("c1", 40, uid, gid).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        assert!(root.job_dir("../x", 1, uid, gid).is_err());
    }
}
