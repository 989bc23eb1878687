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

use ipnet::Ipv4Net;

use crate::error::AddressError;
use crate::netlink::Socket;

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

/// Adds `addr` to the link named `link` inside the network namespace at `netns`, or replaces
/// it if it is there (as `ip addr replace`), over one netlink socket opened in that namespace.
/// The kernel adds the prefix route, as `ip` lets it.
pub fn replace_address(netns: &Path, link: &str, addr: Ipv4Net) -> Result<(), AddressError> {
    let path = || netns.to_path_buf();
    let mut socket = run_in(netns, Socket::open)
        .map_err(|source| AddressError::Netns { netns: path(), source })?
        .map_err(|source| AddressError::Socket { netns: path(), source })?;
    let netlink = |op, source| AddressError::Netlink { netns: path(), link: link.to_string(), op, source };
    let found = socket.link(link).map_err(|e| netlink("RTM_GETLINK", e))?;
    let index = found.ok_or_else(|| AddressError::NoLink { netns: path(), link: link.to_string() })?.index;
    socket.replace_address(index, addr.addr(), addr.prefix_len(), true).map_err(|e| netlink("RTM_NEWADDR", e))
}

/// Moves the calling thread into the network namespace open at `netns`, for good: for a
/// long-lived thread that makes sockets there (everything else should use [`run_in`]).
pub fn enter(netns: &File) -> io::Result<()> {
    // SAFETY: setns(2) on a descriptor we hold open; it only changes this thread's namespace.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
