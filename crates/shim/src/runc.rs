//! Driving runc 1.1 as containerd's runc shim does, with the shim's fds as the container's
//! stdio: `create` then `start`, or `run -d` (both in one invocation), `kill`, `delete`,
//! `state`, `exec -d`. One runc state root per task, inside the task directory. With the
//! builtin runtime, `kill`, `delete` and `state` run in the shim's own process.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde::Deserialize;

use crate::reaper::{ExitInfo, Reaper};

#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("running {binary} (apt-get install -y runc)")]
    Spawn {
        binary: String,
        #[source]
        source: io::Error,
    },
    #[error("runc {op} {id}: {message}")]
    Failed { op: &'static str, id: String, message: String },
    #[error("runc state {id}: unreadable output")]
    BadState {
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct RuncState {
    pub pid: i32,
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
}

pub struct Runc {
    binary: PathBuf,
    /// Arguments before runc's own (`oci` for the builtin runtime).
    prefix: Vec<String>,
    root: PathBuf,
    reaper: Arc<Reaper>,
    /// The builtin runtime: `kill`, `delete` and `state` run in this process
    /// (`flotilla_runtime::in_process`), not as `flotilla-shim oci ...`.
    in_process: bool,
}

impl Runc {
    pub fn new(binary: PathBuf, prefix: Vec<String>, root: PathBuf, reaper: Arc<Reaper>) -> Self {
        Runc { binary, prefix, root, reaper, in_process: false }
    }

    /// The builtin runtime (`self_exe oci ...`), its cheap commands run in this process and
    /// its compiled seccomp filters kept in `seccomp_cache`.
    pub fn builtin(self_exe: PathBuf, root: PathBuf, seccomp_cache: &Path, reaper: Arc<Reaper>) -> Self {
        let prefix = vec!["oci".to_string(), "--seccomp-cache".to_string(), seccomp_cache.display().to_string()];
        Runc { binary: self_exe, prefix, root, reaper, in_process: true }
    }

    /// A builtin command's outcome as a runc run's: the error's text is what runc's stderr
    /// would have said.
    fn in_process<T>(op: &'static str, id: &str, result: io::Result<T>) -> Result<T, RuncError> {
        result.map_err(|e| RuncError::Failed { op, id: id.to_string(), message: e.to_string() })
    }

    fn command(&self, log: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.prefix).arg("--root").arg(&self.root);
        if let Some(log) = log {
            cmd.arg("--log").arg(log).arg("--log-format").arg("json");
        }
        cmd
    }

    fn spawn_err(&self, source: io::Error) -> RuncError {
        RuncError::Spawn { binary: self.binary.display().to_string(), source }
    }

    /// Runs a runc command whose stdout/stderr we capture.
    fn run(&self, op: &'static str, id: &str, cmd: &mut Command) -> Result<Vec<u8>, RuncError> {
        let out = self.reaper.output(cmd).map_err(|e| self.spawn_err(e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let message = stderr.trim().lines().last().unwrap_or("failed without a message").to_string();
            return Err(RuncError::Failed { op, id: id.to_string(), message });
        }
        Ok(out.stdout)
    }

    /// `runc create`: sets the container up and leaves its init waiting for `start`. The
    /// init inherits `stdout`/`stderr`; when runc exits it becomes our child.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: &Path,
        stdout: File,
        stderr: File,
    ) -> Result<(), RuncError> {
        self.detached("create", &["create"], id, bundle, pid_file, log, stdout, stderr)
    }

    /// Lets a created container's init exec the command, as `runc start` does: runc's init
    /// waits to open `<root>/<id>/exec.fifo` for writing, writes one byte, and execs (which
    /// closes it); `runc start` reads the byte to the end and removes the FIFO, which is what
    /// makes runc consider the container running. Doing that here saves a runc process (a
    /// Go start-up, ~5 ms) on every start. Without the FIFO (another runc layout) it runs
    /// `runc start`. `pid` is the init's; if it dies first, that is the error.
    pub fn start(&self, id: &str, pid: i32) -> Result<(), RuncError> {
        let fifo = self.root.join(id).join("exec.fifo");
        let alive = || Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
        match flotilla_runtime::complete_start(&fifo, &alive) {
            Ok(true) => Ok(()),
            Ok(false) => self.run("start", id, self.command(None).arg("start").arg(id)).map(drop),
            Err(e) => Err(RuncError::Failed { op: "start", id: id.to_string(), message: e.to_string() }),
        }
    }

    /// `runc run --detach`: sets the container up and starts it in one runc invocation (one
    /// Go start-up instead of create's and start's). The init inherits `stdout`/`stderr`; when
    /// runc exits it is running and has become our child. On failure runc has removed it.
    pub fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: &Path,
        stdout: File,
        stderr: File,
    ) -> Result<(), RuncError> {
        self.detached("run", &["run", "--detach"], id, bundle, pid_file, log, stdout, stderr)
    }

    /// `create` or `run -d`: runc exits once the container's init exists (and, for `run`,
    /// has started the command), leaving it to us.
    #[allow(clippy::too_many_arguments)]
    fn detached(
        &self,
        op: &'static str,
        args: &[&str],
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: &Path,
        stdout: File,
        stderr: File,
    ) -> Result<(), RuncError> {
        let mut cmd = self.command(Some(log));
        cmd.args(args).arg("--bundle").arg(bundle).arg("--pid-file").arg(pid_file).arg(id);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let (_child, rx) = self.reaper.spawn(&mut cmd).map_err(|e| self.spawn_err(e))?;
        let exit = rx.recv().unwrap_or(ExitInfo { code: -1, signal: None });
        if !exit.success() {
            // runc's stderr is the container's; its structured log has the reason.
            return Err(RuncError::Failed { op, id: id.to_string(), message: last_error(log, exit) });
        }
        Ok(())
    }

    /// Signals the container's init, or with `all` every process in its cgroup.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuncError> {
        if self.in_process {
            return Self::in_process("kill", id, flotilla_runtime::in_process::kill(&self.root, id, signal, all));
        }
        let mut cmd = self.command(None);
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(id).arg(signal.to_string());
        self.run("kill", id, &mut cmd).map(drop)
    }

    /// Removes runc's record and the container's cgroup. Missing containers are fine.
    pub fn delete(&self, id: &str) -> Result<(), RuncError> {
        let deleted = if self.in_process {
            Self::in_process("delete", id, flotilla_runtime::in_process::delete(&self.root, id, true))
        } else {
            self.run("delete", id, self.command(None).arg("delete").arg("--force").arg(id)).map(drop)
        };
        match deleted {
            Ok(_) => Ok(()),
            Err(RuncError::Failed { message, .. }) if message.contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `None` when runc has no such container.
    pub fn state(&self, id: &str) -> Result<Option<RuncState>, RuncError> {
        let printed = if self.in_process {
            Self::in_process("state", id, flotilla_runtime::in_process::state(&self.root, id).map(String::into_bytes))
        } else {
            self.run("state", id, self.command(None).arg("state").arg(id))
        };
        match printed {
            Ok(out) => serde_json::from_slice(&out)
                .map(Some)
                .map_err(|source| RuncError::BadState { id: id.to_string(), source }),
            Err(RuncError::Failed { message, .. }) if message.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `runc exec -d`: starts `argv` in the container and returns once it runs; the process
    /// then becomes our child. Its stdout and stderr go to `output`.
    pub fn exec_detached(&self, id: &str, argv: &[String], pid_file: &Path, output: File) -> Result<(), RuncError> {
        let err = output.try_clone().map_err(|e| self.spawn_err(e))?;
        let mut cmd = self.command(None);
        cmd.arg("exec").arg("--detach").arg("--pid-file").arg(pid_file).arg(id).args(argv);
        cmd.stdin(Stdio::null()).stdout(output).stderr(err);
        let (_child, rx) = self.reaper.spawn(&mut cmd).map_err(|e| self.spawn_err(e))?;
        let exit = rx.recv().unwrap_or(ExitInfo { code: -1, signal: None });
        if !exit.success() {
            return Err(RuncError::Failed {
                op: "exec",
                id: id.to_string(),
                message: format!("exit status {}", exit.code),
            });
        }
        Ok(())
    }

    /// `runc exec --detach` for an interactive session: with `console`, `--tty
    /// --console-socket` (runc makes the terminal inside the container and sends its master
    /// there); without, the process keeps `stdio` (stdin, stdout, stderr). Returns once the
    /// process runs; it then becomes our child. Errors carry runc's reason from `log`.
    pub fn exec_interactive(
        &self,
        id: &str,
        argv: &[String],
        pid_file: &Path,
        log: &Path,
        console: Option<&Path>,
        stdio: [Stdio; 3],
    ) -> Result<(), RuncError> {
        let mut cmd = self.command(Some(log));
        cmd.arg("exec").arg("--detach");
        if let Some(socket) = console {
            cmd.arg("--tty").arg("--console-socket").arg(socket);
        }
        cmd.arg("--pid-file").arg(pid_file).arg(id).args(argv);
        let [stdin, stdout, stderr] = stdio;
        cmd.stdin(stdin).stdout(stdout).stderr(stderr);
        let (_child, rx) = self.reaper.spawn(&mut cmd).map_err(|e| self.spawn_err(e))?;
        let exit = rx.recv().unwrap_or(ExitInfo { code: -1, signal: None });
        if !exit.success() {
            return Err(RuncError::Failed { op: "exec", id: id.to_string(), message: last_error(log, exit) });
        }
        Ok(())
    }
}

/// The last `"level":"error"` message of a runc JSON log.
fn last_error(log: &Path, exit: ExitInfo) -> String {
    #[derive(Deserialize)]
    struct Line {
        level: String,
        msg: String,
    }
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<Line>(l).ok())
                .find(|l| l.level == "error")
                .map(|l| l.msg)
        })
        .unwrap_or_else(|| format!("exit status {}", exit.code))
}

/// A zombie: dead, not yet reaped.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

/// Reads a pid file written by runc.
pub fn read_pid(path: &Path) -> io::Result<i32> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("pid file holds {text:?}")))
}
