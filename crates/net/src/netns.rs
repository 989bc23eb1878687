//! Running code inside a network namespace named by a file (`/run/netns/<name>`, a task's
//! pinned `<task-dir>/ns/net`, or `/proc/<pid>/ns/net`).
//!
//! A namespace is entered on a fresh thread that ends afterwards, so no thread of the caller's
//! (a tokio worker, say) is ever left in the wrong namespace. Sockets opened there keep acting
//! in that namespace after the thread is gone.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Runs `f` on a new thread that has joined the network namespace at `netns`.
pub fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = File::open(netns)?;
    run_in_file(&file, f)
}

/// As [`run_in`], with the namespace already open.
pub fn run_in_file<T: Send>(netns: &File, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            enter(netns)?;
            Ok(f())
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Moves the calling thread into the network namespace open at `netns`.
pub(crate) fn enter(netns: &File) -> io::Result<()> {
    // SAFETY: setns(2) on a descriptor we hold open; it only changes this thread's namespace.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
