//! Interactive exec (ECS Exec, `flotilla exec`): a command started in a running container
//! with a terminal or pipes, whose descriptors go to the caller over its connection.
//!
//! The connection is the process's lifeline. The reply `ExecStarted` carries the terminal's
//! master (made inside the container by the OCI runtime and sent to a console socket, as
//! runc does) or the caller's pipe ends; `ExecExited` follows once the reaper has the status.
//! When the caller closes the connection, every process of the command's session still in
//! the task is killed (the runtime makes the command a session leader), so an abandoned
//! session leaves nothing running. Each live command is recorded in `<task>/exec/<pid>`
//! (its start time), so that a shim that adopts the task after a crash kills those whose
//! connection died with the old shim.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flotilla_runtime::pty;
use flotilla_sandbox::InteractiveSpec;
use flotilla_sandbox::protocol::{Reply, ShimError, ShimErrorKind, write_message};

use super::{Runtime, ShimResult, io_err};
use crate::reaper::Watch;
use crate::runc::read_pid;

/// Records of live interactive commands, inside the task directory.
const EXEC_DIR: &str = "exec";
/// Longest path a unix socket address holds, less some room.
const MAX_SOCKET_PATH: usize = 100;

/// A started command, not yet handed over.
struct Started {
    pid: i32,
    /// The master, or stdin's write end, stdout's and stderr's read ends.
    fds: Vec<OwnedFd>,
    watch: Watch,
}

impl Runtime {
    /// Serves one `ExecStream` request on `conn` until the command has ended (and after, in
    /// a thread that waits for the caller to hang up).
    pub fn exec_stream(self: &Arc<Self>, name: &str, spec: &InteractiveSpec, conn: &UnixStream) {
        let started = match self.start_interactive(name, spec) {
            Ok(s) => s,
            Err(e) => {
                let mut w = conn;
                let _ = write_message(&mut w, &Reply::Error(e));
                return;
            }
        };
        let pid = started.pid;
        tracing::info!(container = name, pid, tty = spec.tty, argv = ?spec.argv, "interactive exec started");
        let line = message(&Reply::ExecStarted { pid: pid as u32 });
        let fds: Vec<BorrowedFd<'_>> = started.fds.iter().map(AsFd::as_fd).collect();
        let sent = pty::send_fds(conn.as_fd(), &line, &fds);
        drop(started.fds);
        if sent.is_err() {
            // Nobody holds its other ends: end it now.
            self.kill_session(pid);
        } else if let Ok(watcher) = conn.try_clone() {
            let rt = self.clone();
            let spawned = std::thread::Builder::new().name(format!("exec-{pid}")).spawn(move || {
                // Nothing is expected from the caller: any end of its side ends the session.
                let mut buf = [0u8; 64];
                while matches!((&watcher).read(&mut buf), Ok(n) if n > 0) {}
                rt.kill_session(pid);
            });
            if spawned.is_err() {
                self.kill_session(pid);
            }
        } else {
            self.kill_session(pid);
        }
        // The reaper's status; -1 when it was lost (it cannot be: the watch began before the
        // process could end, see `Reaper::watch`).
        let code = match started.watch {
            Watch::Pending(rx) => rx.recv().map_or(-1, |e| e.code),
            Watch::Lost => -1,
        };
        let _ = std::fs::remove_file(self.exec_record(pid));
        tracing::info!(container = name, pid, code, "interactive exec ended");
        let mut w = conn;
        let _ = write_message(&mut w, &Reply::ExecExited { code });
    }

    fn start_interactive(&self, name: &str, spec: &InteractiveSpec) -> ShimResult<Started> {
        if spec.argv.is_empty() {
            return Err(ShimError::new(ShimErrorKind::InvalidSpec, "exec needs a command"));
        }
        if !self.container_state(name)?.can_signal() {
            return Err(ShimError::new(ShimErrorKind::InvalidState, format!("container {name:?} is not running")));
        }
        let n = self.exec_seq.fetch_add(1, Ordering::Relaxed);
        let cdir = self.container_dir(name);
        let pid_file = cdir.join(format!("exec-{n}.pid"));
        let log = cdir.join(format!("exec-{n}.log"));
        let result = self.run_interactive(name, spec, n, &pid_file, &log);
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(&log);
        result
    }

    fn run_interactive(
        &self,
        name: &str,
        spec: &InteractiveSpec,
        n: u64,
        pid_file: &Path,
        log: &Path,
    ) -> ShimResult<Started> {
        let mut console = None;
        let mut ours = Vec::new();
        let stdio = if spec.tty {
            let path = self.console_path(n);
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).map_err(|e| io_err("binding", &path, e))?;
            listener.set_nonblocking(true).map_err(|e| io_err("configuring", &path, e))?;
            console = Some((path, listener));
            [Stdio::null(), Stdio::null(), Stdio::null()]
        } else {
            let (in_r, in_w) = pipe()?;
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            ours.extend([in_w, out_r, err_r]);
            [Stdio::from(in_r), Stdio::from(out_w), Stdio::from(err_w)]
        };
        let mark = self.reaper.mark();
        let ran = self.runc.exec_interactive(
            name,
            &spec.argv,
            pid_file,
            log,
            console.as_ref().map(|(path, _)| path.as_path()),
            stdio,
        );
        let accepted = console.map(|(path, listener)| {
            let _ = std::fs::remove_file(&path);
            listener.accept()
        });
        if let Err(e) = ran {
            if self.container_state(name)? != flotilla_sandbox::ContainerState::Running {
                return Err(ShimError::new(ShimErrorKind::InvalidState, format!("container {name:?} is not running")));
            }
            // The command could not be started (not found, not executable, a bad user): the
            // runtime's own words, which a user can act on.
            let message = match e {
                crate::runc::RuncError::Failed { message, .. } => message,
                other => flotilla_sandbox::error::chain(&other),
            };
            return Err(ShimError::new(ShimErrorKind::InvalidSpec, message));
        }
        let pid = read_pid(pid_file).map_err(|e| io_err("reading", pid_file, e))?;
        let watch = self.reaper.watch(pid, mark);
        let got = || -> ShimResult<()> {
            if let Some(accepted) = accepted {
                let (sock, _) = accepted.map_err(|e| {
                    ShimError::new(ShimErrorKind::Runtime, format!("the runtime sent no terminal: {e}"))
                })?;
                let master = pty::recv_master(sock.as_fd())
                    .map_err(|e| ShimError::new(ShimErrorKind::Runtime, format!("receiving the terminal: {e}")))?;
                if spec.cols > 0 && spec.rows > 0 {
                    let _ = pty::set_size(master.as_fd(), spec.cols, spec.rows);
                }
                ours.push(master);
            }
            self.record_exec(pid)
        };
        if let Err(e) = got() {
            self.kill_session(pid);
            if let Watch::Pending(rx) = watch {
                let _ = rx.recv_timeout(Duration::from_secs(5));
            }
            return Err(e);
        }
        Ok(Started { pid, fds: ours, watch })
    }

    /// A path for the console socket: in the task directory, or the temporary directory if
    /// that makes too long an address.
    fn console_path(&self, n: u64) -> PathBuf {
        let file = format!("exec-{n}.sock");
        let in_task = self.cfg.task_dir.join(&file);
        if in_task.as_os_str().len() < MAX_SOCKET_PATH {
            in_task
        } else {
            std::env::temp_dir().join(format!("flotilla-{}-{file}", std::process::id()))
        }
    }

    fn exec_record(&self, pid: i32) -> PathBuf {
        self.cfg.task_dir.join(EXEC_DIR).join(pid.to_string())
    }

    fn record_exec(&self, pid: i32) -> ShimResult<()> {
        let dir = self.cfg.task_dir.join(EXEC_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io_err("mkdir", &dir, e))?;
        let started = proc_stat(pid).map_or(0, |s| s.start_time);
        let path = self.exec_record(pid);
        std::fs::write(&path, started.to_string()).map_err(|e| io_err("writing", &path, e))
    }

    /// Kills every live process of the task in the session `sid` (an interactive command and
    /// what it started), until none is left.
    pub(super) fn kill_session(&self, sid: i32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let members: Vec<i32> = self
                .cgroups
                .task_pids(&self.task_id)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| i32::try_from(p).ok())
                .filter(|&p| proc_stat(p).is_some_and(|s| s.session == sid && !s.dead))
                .collect();
            if members.is_empty() || Instant::now() > deadline {
                return;
            }
            for p in members {
                // SAFETY: plain integers.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// After a shim restart: the commands the previous shim served lost their connection
    /// with it, so they end now (their new parent reaps them).
    pub(super) fn end_orphaned_execs(&self) {
        let dir = self.cfg.task_dir.join(EXEC_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for entry in entries.flatten() {
            let pid: Option<i32> = entry.file_name().to_str().and_then(|s| s.parse().ok());
            let recorded: Option<u64> = std::fs::read_to_string(entry.path()).ok().and_then(|s| s.trim().parse().ok());
            if let (Some(pid), Some(recorded)) = (pid, recorded)
                && proc_stat(pid).is_some_and(|s| s.start_time == recorded && !s.dead)
            {
                tracing::info!(pid, "ending an interactive exec whose session ended with the previous shim");
                self.kill_session(pid);
            }
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn message(reply: &Reply) -> Vec<u8> {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    line
}

fn pipe() -> ShimResult<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| ShimError::new(ShimErrorKind::Runtime, format!("pipe: {e}")))
}

struct ProcStat {
    session: i32,
    start_time: u64,
    /// A zombie, or gone.
    dead: bool,
}

/// Fields of `/proc/<pid>/stat` after the command name: state, ppid, pgrp, session, ...,
/// start time (the 20th).
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(ProcStat {
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
        dead: matches!(fields.first(), Some(&"Z") | Some(&"X")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_session_and_a_start_time() {
        let me = proc_stat(std::process::id() as i32).unwrap();
        // CI may run us in a PID namespace whose session leader is outside it: the kernel then
        // shows session 0 in /proc and getsid alike, so compare with getsid, not with 0.
        let sid = unsafe { libc::getsid(0) };
        assert_eq!(me.session, sid);
        assert!(me.start_time > 0 && !me.dead);
        assert!(proc_stat(-1).is_none());
    }
}
