//! What `/proc` tells about processes: is a pid still our supervisor, which processes are in a
//! process group. Pid files can outlive their process and pids get reused, so nothing is
//! signalled on the word of a pid file alone.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The arguments of a running process; `None` when it is gone (a zombie has none either).
pub fn cmdline(pid: u32) -> Option<Vec<Vec<u8>>> {
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if bytes.is_empty() {
        return None;
    }
    Some(
        bytes
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

/// True when `pid` is alive and one of its arguments is exactly `job_dir`: the supervisor of
/// that job, not some process that got its pid later.
pub fn is_supervisor_of(pid: u32, job_dir: &Path) -> bool {
    let wanted = job_dir.as_os_str().as_bytes();
    cmdline(pid).is_some_and(|args| args.iter().any(|a| a.as_slice() == wanted))
}

/// The pids of every process on the machine.
fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The supervisor of `job_dir`, searched among all processes (for when its pid file is missing).
pub fn find_supervisor_of(job_dir: &Path) -> Option<u32> {
    all_pids()
        .into_iter()
        .find(|pid| is_supervisor_of(*pid, job_dir))
}

/// State letter and process group of a process, from `/proc/<pid>/stat`.
fn state_and_group(pid: u32) -> Option<(u8, u32)> {
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| matches!(state_and_group(*pid), Some((state, group)) if group == pgid && state != b'Z' && state != b'X'))
        .collect()
}

/// True when the environment of `pid` holds `entry` (`NAME=value`). Needs the right to read
/// it (same user, or root).
pub fn environ_has(pid: u32, entry: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        env.split(|b| *b == 0)
            .any(|e| OsStr::from_bytes(e) == OsStr::new(entry))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_its_own_process() {
        let me = std::process::id();
        assert!(cmdline(me).is_some_and(|args| !args.is_empty()));
        let (state, group) = state_and_group(me).unwrap();
        assert_ne!(state, b'Z');
        assert_eq!(
            group,
            u32::try_from(nix::unistd::getpgrp().as_raw()).unwrap()
        );
        assert!(live_group_members(group).contains(&me));
        assert!(!is_supervisor_of(me, Path::new("/no/such/job/dir")));
    }
}
