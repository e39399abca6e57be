//! The signals a supervisor reacts to. Each handler writes a byte into a socket pair (the
//! self-pipe trick, via signal-hook), so waiting for "the job ended, we were asked to stop, or
//! a deadline passed" is one `poll`: no busy sleeping, and no signal is missed between a check
//! and the wait.
//!
//! Signals are handled rather than blocked on purpose: a blocked mask would be inherited by
//! the job (std's `Command` does not reset it), while handlers are reset by `exec`.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use signal_hook::consts::signal::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook::low_level::pipe;

/// Longest single wait; waking up early is harmless, the caller recomputes its deadlines.
const MAX_WAIT_MS: u64 = 3_600_000;

pub struct SignalWatch {
    /// Readable after SIGTERM or SIGINT: stop the job.
    stop: UnixStream,
    /// Readable after SIGCHLD: a child ended.
    child: UnixStream,
}

impl SignalWatch {
    pub fn install() -> io::Result<SignalWatch> {
        let (stop, stop_write) = UnixStream::pair()?;
        let (child, child_write) = UnixStream::pair()?;
        stop.set_nonblocking(true)?;
        child.set_nonblocking(true)?;
        pipe::register(SIGTERM, stop_write.try_clone()?)?;
        pipe::register(SIGINT, stop_write)?;
        pipe::register(SIGCHLD, child_write)?;
        // A handler that only sets an unused flag: a hang-up must not kill the supervisor.
        signal_hook::flag::register(SIGHUP, Arc::new(AtomicBool::new(false)))?;
        Ok(SignalWatch { stop, child })
    }

    /// Waits until a signal arrives or `timeout` passes (`None`: no timeout); true when a stop
    /// (SIGTERM or SIGINT) was received.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Rounded up, so the wait never ends just before a deadline and spins.
            Some(t) => {
                let ms = u64::try_from(t.as_nanos().div_ceil(1_000_000))
                    .unwrap_or(MAX_WAIT_MS)
                    .min(MAX_WAIT_MS);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [
            PollFd::new(self.stop.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.child.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                // Should never happen; back off a little rather than spin.
                eprintln!("gantry-supervisor: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        drain(&self.child);
        drain(&self.stop)
    }
}

/// Empties a wake-up socket; true when it held anything.
fn drain(mut socket: &UnixStream) -> bool {
    let mut buf = [0u8; 64];
    let mut any = false;
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return any,
            Ok(_) => any = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return any,
        }
    }
}
