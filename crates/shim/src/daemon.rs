//! Detaching from the agent: double fork + setsid, so the shim is nobody's child and has no
//! controlling terminal or process group in common with the agent, and survives the agent's
//! death. The launching process waits on a pipe until the daemon reports "ready" (socket
//! listening) or an error, then exits with a matching status; the agent only waits for that.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The daemon's end of the readiness pipe.
pub struct Ready {
    pipe: Option<File>,
}

impl Ready {
    /// For `--foreground`: nobody is waiting.
    pub fn none() -> Self {
        Ready { pipe: None }
    }

    pub fn ok(mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"ok\n");
        }
    }

    pub fn fail(mut self, message: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(format!("error: {message}\n").as_bytes());
        }
    }
}

fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: called while the process is single-threaded (before any thread is spawned), so
    // the child cannot inherit a lock held by another thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 { Err(io::Error::last_os_error()) } else { Ok(pid) }
}

/// Forks twice; returns only in the daemon. The original process exits 0 when the daemon
/// calls [`Ready::ok`], 1 (printing the message) on [`Ready::fail`] or if it dies first.
/// Must be called before any thread exists.
pub fn daemonize(log: &Path) -> io::Result<Ready> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned only here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let first = fork()?;
    if first > 0 {
        drop(write);
        let mut status = 0;
        // SAFETY: reaps the intermediate child, which exits right after its own fork.
        unsafe { libc::waitpid(first, &mut status, 0) };
        let mut msg = String::new();
        let _ = File::from(read).read_to_string(&mut msg);
        if msg.starts_with("ok") {
            std::process::exit(0);
        }
        let msg = msg.trim().strip_prefix("error: ").unwrap_or(msg.trim()).to_string();
        eprintln!("flotilla-shim: {}", if msg.is_empty() { "exited before becoming ready" } else { &msg });
        std::process::exit(1);
    }
    drop(read);
    // SAFETY: setsid has no preconditions; in the first child we are not a group leader.
    unsafe { libc::setsid() };
    if fork()? > 0 {
        // SAFETY: _exit skips atexit handlers and buffers that belong to the parent.
        unsafe { libc::_exit(0) };
    }
    std::env::set_current_dir("/")?;
    let devnull = File::open("/dev/null")?;
    let logfile = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    // SAFETY: dup2 onto the standard descriptors; the sources stay open for the call.
    unsafe {
        libc::dup2(devnull.as_raw_fd(), 0);
        libc::dup2(logfile.as_raw_fd(), 1);
        libc::dup2(logfile.as_raw_fd(), 2);
    }
    Ok(Ready { pipe: Some(File::from(write)) })
}
