//! The reading side of runc's exec-FIFO hand-shake, which the builtin runtime keeps: a created
//! init waits to open `<root>/<id>/exec.fifo` for writing, writes one byte and execs (closing
//! it); whoever starts the container reads that byte to the end and removes the FIFO. Used by
//! this runtime's `start` and by the shim for either runtime (saving a process per start).

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::sys::err_at;

const POLL_INTERVAL: Timespec = Timespec { tv_sec: 0, tv_nsec: 100_000_000 };

/// Completes the hand-shake on `fifo`; `Ok(false)` when there is no FIFO (nothing created, or
/// another runtime's layout). `alive` says whether the init is still there: if it dies before
/// its byte arrives, that is the error. Never blocks on a dead init.
pub fn complete_start(fifo: &Path, alive: &dyn Fn() -> bool) -> io::Result<bool> {
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(fifo)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(err_at("opening", fifo, e)),
    };
    let dead = || io::Error::other("container process is already dead");
    let mut got = Vec::new();
    loop {
        let mut pfd = [PollFd::new(&file, PollFlags::IN)];
        // A 100 ms timeout lets us notice a dead init.
        let rc = match rustix::event::poll(&mut pfd, Some(&POLL_INTERVAL)) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(err_at("waiting on", fifo, e.into())),
        };
        let hung_up = pfd[0].revents().contains(PollFlags::HUP);
        if rc == 0 {
            // No byte yet (or the writer has not closed it): is the init still there?
            if !alive() {
                return Err(dead());
            }
            continue;
        }
        let mut buf = [0u8; 16];
        match (&file).read(&mut buf) {
            // The init wrote its byte and exec'd (closing the FIFO): started.
            Ok(0) if !got.is_empty() => break,
            // HUP without a byte: the init died before it could exec.
            Ok(0) if hung_up => return Err(dead()),
            Ok(0) => continue,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err_at("reading", fifo, e)),
        }
    }
    std::fs::remove_file(fifo).map_err(|e| err_at("removing", fifo, e))?;
    Ok(true)
}
