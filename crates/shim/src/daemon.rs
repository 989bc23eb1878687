//! Detaching from the agent: double fork + setsid, so the shim is nobody's child and has no
//! controlling terminal or process group in common with the agent, and survives the agent's
//! death. The launching process waits on a pipe until the daemon reports "ready" (socket
//! listening) or an error, then exits with a matching status; the agent only waits for that.

use std::fs::File;
use std::io::{self, Read, Write};
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
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let first = fork()?;
    if let Some(first) = rustix::process::Pid::from_raw(first) {
        drop(write);
        // Reaps the intermediate child, which exits right after its own fork.
        let _ = rustix::process::waitpid(Some(first), rustix::process::WaitOptions::empty());
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
    // In the first child we are not a group leader, so this cannot fail.
    let _ = rustix::process::setsid();
    if fork()? > 0 {
        // SAFETY: _exit skips atexit handlers and buffers that belong to the parent.
        unsafe { libc::_exit(0) };
    }
    std::env::set_current_dir("/")?;
    let devnull = File::open("/dev/null")?;
    let logfile = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    rustix::stdio::dup2_stdin(&devnull)?;
    rustix::stdio::dup2_stdout(&logfile)?;
    rustix::stdio::dup2_stderr(&logfile)?;
    Ok(Ready { pipe: Some(File::from(write)) })
}
