//! The shim is a child subreaper: container processes become its children once `runc create`
//! exits, and it must collect their exit statuses. One thread waits for SIGCHLD and reaps
//! every child with `waitpid(-1)`; whoever cares about a pid registers for it.
//!
//! Every child must therefore be spawned through [`Reaper::spawn`]: spawning holds the same
//! lock the reaper holds while reaping, so a fast-exiting child is never reaped before its
//! waiter is registered, and std's own internal waitpid on a failed exec cannot race us.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How a process ended, as a shell would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit code, or 128 + the signal number.
    pub code: i32,
    pub signal: Option<i32>,
}

impl ExitInfo {
    fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            ExitInfo { code: 128 + sig, signal: Some(sig) }
        } else {
            ExitInfo { code: libc::WEXITSTATUS(status), signal: None }
        }
    }

    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Result of asking to watch a pid that is not a freshly spawned child.
pub enum Watch {
    /// The exit will arrive here.
    Pending(Receiver<ExitInfo>),
    /// The process is gone and its status was not ours to collect.
    Lost,
}

/// Work to do once a process has exited, run by the reaper thread outside its lock.
type ExitAction = Box<dyn FnOnce(Option<ExitInfo>) + Send>;

/// Who learns of a pid's exit.
enum Waiter {
    Channel(Sender<ExitInfo>),
    /// Instead of a thread blocked on a channel for as long as the process lives.
    Action(ExitAction),
}

#[derive(Default)]
struct Inner {
    /// Incremented on every reap; lets a late registration tell a stale status from its own.
    seq: u64,
    waiters: HashMap<i32, Waiter>,
    unclaimed: HashMap<i32, (u64, ExitInfo)>,
}

pub struct Reaper {
    inner: Mutex<Inner>,
    /// The reaper's own thread, until [`Reaper::reap_on_this_thread`] takes over from it.
    thread: Mutex<Option<JoinHandle<()>>>,
    handed_over: AtomicBool,
}

fn sigchld_set() -> libc::sigset_t {
    // SAFETY: the sigset is initialised by sigemptyset before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Blocks SIGCHLD in the calling thread. Call before any thread exists, so that every later
/// thread inherits the mask and only the reaper thread's sigwait sees the signal.
pub fn block_sigchld() {
    // SAFETY: the sigset is initialised by sigemptyset before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

impl Reaper {
    pub fn start() -> Arc<Reaper> {
        let reaper = Arc::new(Reaper {
            inner: Mutex::new(Inner::default()),
            thread: Mutex::new(None),
            handed_over: AtomicBool::new(false),
        });
        let r = reaper.clone();
        let thread = std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || {
                let set = sigchld_set();
                loop {
                    let mut sig = 0;
                    // SAFETY: `set` and `sig` are valid for the call.
                    unsafe { libc::sigwait(&set, &mut sig) };
                    if r.handed_over.load(Ordering::SeqCst) {
                        return;
                    }
                    r.reap_all();
                }
            })
            .expect("spawning the reaper thread");
        *reaper.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        // Children may have exited before the thread started waiting.
        reaper.reap_all();
        reaper
    }

    /// Ends the reaper's own thread and reaps on the calling thread from now on, which also
    /// waits for `fd` and calls `on_ready` whenever it is readable; never returns. The shim's
    /// main thread, once set up, waits for connections this way: one thread fewer per task.
    pub fn reap_on_this_thread(&self, fd: BorrowedFd<'_>, mut on_ready: impl FnMut()) -> ! {
        let set = sigchld_set();
        // SAFETY: signalfd reads the valid `set`; SIGCHLD is blocked in every thread
        // (block_sigchld), so its signals queue for the descriptor.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if raw < 0 {
            // Keep the reaper thread; only wait for `fd` here.
            tracing::warn!(error = %io::Error::last_os_error(), "signalfd; the reaper keeps its thread");
            loop {
                let mut fds = [rustix::event::PollFd::from_borrowed_fd(fd, rustix::event::PollFlags::IN)];
                if rustix::event::poll(&mut fds, None).is_ok() {
                    on_ready();
                }
            }
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let sigfd = unsafe { OwnedFd::from_raw_fd(raw) };
        self.handed_over.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // A SIGCHLD for that thread alone ends its sigwait; it sees `handed_over` and returns.
            // SAFETY: the thread has not been joined, so its pthread_t is valid.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), libc::SIGCHLD) };
            let _ = thread.join();
        }
        // Exits between the thread's last reap and the descriptor's creation are pending.
        self.reap_all();
        loop {
            let mut fds = [
                rustix::event::PollFd::from_borrowed_fd(fd, rustix::event::PollFlags::IN),
                rustix::event::PollFd::new(&sigfd, rustix::event::PollFlags::IN),
            ];
            if rustix::event::poll(&mut fds, None).is_err() {
                continue;
            }
            let (fd_ready, sig_ready) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
            if sig_ready {
                let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
                // SAFETY: reads into a buffer of the size of one signalfd_siginfo.
                while unsafe { libc::read(sigfd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
                self.reap_all();
            }
            if fd_ready {
                on_ready();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reap_all(&self) {
        let mut actions = Vec::new();
        let mut inner = self.lock();
        while let Ok(Some((pid, status))) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
            let pid = pid.as_raw_nonzero().get();
            let info = ExitInfo::from_wait_status(status.as_raw());
            inner.seq += 1;
            match inner.waiters.remove(&pid) {
                Some(Waiter::Channel(tx)) => {
                    let _ = tx.send(info);
                }
                Some(Waiter::Action(action)) => actions.push((action, info)),
                None => {
                    let seq = inner.seq;
                    inner.unclaimed.insert(pid, (seq, info));
                    // Orphans re-parented to us that nobody watches would otherwise pile up.
                    if inner.unclaimed.len() > 4096 {
                        let cutoff = seq.saturating_sub(2048);
                        inner.unclaimed.retain(|_, (s, _)| *s > cutoff);
                    }
                }
            }
        }
        drop(inner);
        for (action, info) in actions {
            action(Some(info));
        }
    }

    /// The current reap sequence number: take it before starting something whose process
    /// you will only learn about later (runc create's container init).
    pub fn mark(&self) -> u64 {
        self.lock().seq
    }

    /// Spawns `cmd` and returns a receiver for its exit. Never use `Child::wait` on the result.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Receiver<ExitInfo>)> {
        let mut inner = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        inner.unclaimed.remove(&pid);
        let (tx, rx) = mpsc::channel();
        inner.waiters.insert(pid, Waiter::Channel(tx));
        Ok((child, rx))
    }

    /// Like `Command::output`, through the reaper.
    pub fn output(&self, cmd: &mut Command) -> io::Result<Output> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let (mut child, rx) = self.spawn(cmd)?;
        let mut stderr = child.stderr.take();
        let err_thread = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut buf);
            }
            buf
        });
        let mut stdout = Vec::new();
        if let Some(mut s) = child.stdout.take() {
            s.read_to_end(&mut stdout)?;
        }
        let stderr = err_thread.join().unwrap_or_default();
        let exit = rx.recv().map_err(|_| io::Error::other("reaper dropped a waiter"))?;
        Ok(Output { status: exit_status(exit), stdout, stderr })
    }

    /// Watches a process that became our child without us spawning it (a container's init
    /// after runc create exits). `since` is a [`Reaper::mark`] taken before it was created.
    pub fn watch(&self, pid: i32, since: u64) -> Watch {
        let mut inner = self.lock();
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            // Alive (or our unreaped zombie): any recorded status for this pid is a
            // predecessor's.
            inner.unclaimed.remove(&pid);
            let (tx, rx) = mpsc::channel();
            inner.waiters.insert(pid, Waiter::Channel(tx));
            return Watch::Pending(rx);
        }
        match inner.unclaimed.remove(&pid) {
            Some((seq, info)) if seq > since => {
                let (tx, rx) = mpsc::channel();
                let _ = tx.send(info);
                Watch::Pending(rx)
            }
            _ => Watch::Lost,
        }
    }

    /// Runs `action` once `pid`, watched through `watch`, has exited: with its status, or
    /// `None` if the status was lost. It runs on the reaper thread (or on the caller's, if the
    /// exit is already known), so it must not block: start a thread for slow work. This keeps
    /// no thread waiting for a process that may run for months.
    pub fn then(&self, pid: i32, watch: Watch, action: impl FnOnce(Option<ExitInfo>) + Send + 'static) {
        let rx = match watch {
            Watch::Lost => return action(None),
            Watch::Pending(rx) => rx,
        };
        let mut inner = self.lock();
        // Under the lock the reaper cannot send: either the status is in the channel already,
        // or the channel's sender still waits in `waiters` and the action takes its place.
        match rx.try_recv() {
            Ok(info) => {
                drop(inner);
                action(Some(info))
            }
            Err(mpsc::TryRecvError::Empty) if inner.waiters.contains_key(&pid) => {
                inner.waiters.insert(pid, Waiter::Action(Box::new(action)));
            }
            Err(_) => {
                drop(inner);
                action(None)
            }
        }
    }
}

fn exit_status(exit: ExitInfo) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match exit.signal {
        Some(sig) => std::process::ExitStatus::from_raw(sig),
        None => std::process::ExitStatus::from_raw(exit.code << 8),
    }
}

/// Waits for a process that is not our child to exit, via a pidfd (for containers adopted
/// from a previous shim: their exit status is not ours to collect).
pub fn wait_non_child(pid: i32) {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else { return };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return; // ESRCH: already gone.
    };
    let mut pfd = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
    // Readable once the process has exited; a signal's EINTR just waits again.
    while let Err(rustix::io::Errno::INTR) = rustix::event::poll(&mut pfd, None) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals() {
        // 3 << 8: exited with 3.
        assert_eq!(ExitInfo::from_wait_status(3 << 8), ExitInfo { code: 3, signal: None });
        // Killed by SIGKILL.
        assert_eq!(ExitInfo::from_wait_status(9), ExitInfo { code: 137, signal: Some(9) });
    }
}
