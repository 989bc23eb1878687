//! Container processes: start (`runc start` of a container created ahead, see
//! `precreate.rs`, or else `runc run -d`, with our FIFOs as stdio), exit tracking,
//! re-attaching to containers a previous shim started, and exec for health checks.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_sandbox::protocol::{ShimError, ShimErrorKind, StartReport, Timings};
use flotilla_sandbox::{ContainerState, ExecResult, ExecSpec, OOM_REASON, TaskPhase};

use super::{Runtime, ShimResult, io_err, runtime_err};
use crate::logs::{LogFile, make_fifos, now_millis, open_reader, open_writer, pump};
use crate::reaper::{ExitInfo, Watch, wait_non_child};
use crate::runc::read_pid;

/// ECS's reason text for an OOM kill.
const EXEC_OUTPUT_LIMIT: usize = 64 << 10;

/// How the end of a container's process will be learned.
pub(super) enum ExitSource {
    /// Our child (its pid): the exact status arrives through the reaper.
    Child(i32, Watch),
    /// Started by a previous shim: we can see that it ends, not how.
    Adopted(i32),
}

/// See [`Runtime::container_stdio`].
pub(super) struct Stdio {
    pub cdir: PathBuf,
    pub out_w: File,
    pub err_w: File,
    pub pumps_done: Receiver<()>,
    pub pid_file: PathBuf,
}

impl Runtime {
    pub(super) fn start(self: &Arc<Self>, name: &str) -> ShimResult<StartReport> {
        let mut timings = Timings::new();
        let t = Instant::now();
        // Waits for a `runc create` of this container in flight (`precreate.rs`).
        let _ops = self.lock_ops();
        timings.insert("ops_wait".into(), t.elapsed().as_micros() as u64);
        self.require_phase(TaskPhase::Ready)?;
        let state = self.container_state(name)?;
        if !state.can_start() && !state.can_restart() {
            return Err(ShimError::new(ShimErrorKind::InvalidState, format!("container {name:?} is {state:?}")));
        }
        if state.can_restart() {
            // Started again in place: runc forgets the ended process first; `started` clears
            // the exit.
            let _ = self.runc.delete(name);
        }
        let pre = self.lock_precreated().remove(name);
        if let Some(pre) = pre {
            return self.start_precreated(name, pre, timings);
        }
        let Stdio { cdir, out_w, err_w, pumps_done, pid_file } = self.container_stdio(name)?;

        let mark = self.reaper.mark();
        let t = Instant::now();
        // Both writers move into runc's stdio and are closed once runc exits: from then on
        // only the container holds them, and the pumps see EOF when it is gone.
        let ran = self.runc.run_detached(name, &cdir, &pid_file, &cdir.join("runc.log"), out_w, err_w);
        timings.insert("runc_run".into(), t.elapsed().as_micros() as u64);
        if let Err(e) = ran {
            return Err(self.start_failed(name, &e)?);
        }
        // The process may already have ended: the reaper keeps statuses reaped since `mark`.
        let pid = match read_pid(&pid_file) {
            Ok(pid) => pid,
            Err(e) => {
                let err = io_err("reading", &pid_file, e);
                let _ = self.runc.kill(name, libc::SIGKILL, true);
                let _ = self.runc.delete(name);
                self.record_exit(name, None, Some(format!("CannotStartContainerError: {}", err.message)))?;
                return Err(err);
            }
        };
        let watch = self.reaper.watch(pid, mark);
        self.started(name, pid, watch, pumps_done, timings)
    }

    /// A runc step that should have started the container failed: runc forgets it, and the
    /// container is recorded as exited with `CannotStartContainerError`. Returns the error
    /// to send back.
    pub(super) fn start_failed(&self, name: &str, e: &crate::runc::RuncError) -> ShimResult<ShimError> {
        let msg = flotilla_sandbox::error::chain(e);
        let _ = self.runc.delete(name);
        self.record_exit(name, None, Some(format!("CannotStartContainerError: {msg}")))?;
        Ok(runtime_err(e))
    }

    /// The container's init `pid` runs the user's command: record it RUNNING and watch it.
    pub(super) fn started(
        self: &Arc<Self>,
        name: &str,
        pid: i32,
        watch: Watch,
        pumps_done: Receiver<()>,
        timings: Timings,
    ) -> ShimResult<StartReport> {
        self.update(|st| {
            if let Some(c) = st.container_mut(name) {
                c.state = ContainerState::Running;
                c.pid = Some(pid as u32);
                c.started_at = Some(now_millis());
                (c.exit_code, c.exited_at, c.reason, c.oom_killed) = (None, None, None, false);
            }
        })?;
        self.spawn_exit_watcher(name, ExitSource::Child(pid, watch), pumps_done);
        tracing::info!(container = name, pid, ?timings, "container started");
        Ok(StartReport { pid: pid as u32, timings })
    }

    /// The container's output FIFOs (writers for runc's stdio, readers pumping into its log)
    /// and a fresh pid file path: what `runc create` and `runc run` both need.
    pub(super) fn container_stdio(&self, name: &str) -> ShimResult<Stdio> {
        let cdir = self.container_dir(name);
        let (out_fifo, err_fifo) = make_fifos(&cdir).map_err(|e| io_err("mkfifo in", &cdir, e))?;
        let out_w = open_writer(&out_fifo).map_err(|e| io_err("opening", &out_fifo, e))?;
        let err_w = open_writer(&err_fifo).map_err(|e| io_err("opening", &err_fifo, e))?;
        let pumps_done = self.attach_logs(name, &cdir)?;
        let pid_file = cdir.join("init.pid");
        let _ = std::fs::remove_file(&pid_file);
        Ok(Stdio { cdir, out_w, err_w, pumps_done, pid_file })
    }

    /// Opens the container's log and starts its pump (both streams on one thread). The
    /// receiver yields once per stream at EOF.
    pub(super) fn attach_logs(&self, name: &str, cdir: &Path) -> ShimResult<Receiver<()>> {
        let log_path = cdir.join(flotilla_sandbox::protocol::CONTAINER_LOG_FILE);
        let log = LogFile::open(&log_path, self.cfg.log_limits).map_err(|e| io_err("opening", &log_path, e))?;
        let log = Arc::new(Mutex::new(log));
        self.syncer.register(&log);
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), log.clone());
        let (tx, rx) = mpsc::channel();
        let mut streams = Vec::with_capacity(2);
        for (stream, fifo) in [("stdout", "stdout.fifo"), ("stderr", "stderr.fifo")] {
            let path = cdir.join(fifo);
            streams.push((stream, open_reader(&path).map_err(|e| io_err("opening", &path, e))?));
        }
        pump(streams, log, self.syncer.clone(), tx).map_err(|e| io_err("starting the log pump of", cdir, e))?;
        Ok(rx)
    }

    /// Records the container's exit once it happens. For our own child no thread waits while
    /// it runs (a shim's threads are paid per task): the reaper starts one at the exit.
    pub(super) fn spawn_exit_watcher(self: &Arc<Self>, name: &str, source: ExitSource, pumps_done: Receiver<()>) {
        let rt = self.clone();
        let name = name.to_string();
        match source {
            ExitSource::Child(pid, watch) => self.reaper.then(pid, watch, move |exit| {
                let (rt2, name2) = (rt.clone(), name.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("exit-{name}"))
                    .spawn(move || rt2.record_exit_after_logs(&name2, exit, pumps_done));
                if let Err(e) = spawned {
                    tracing::error!(container = name, error = %e, "no thread for the exit; recording it on the reaper's");
                    // The receiver went with the closure that failed to start: record at once.
                    let (_tx, rx) = mpsc::channel();
                    rt.record_exit_after_logs(&name, exit, rx);
                }
            }),
            ExitSource::Adopted(pid) => {
                std::thread::Builder::new()
                    .name(format!("exit-{name}"))
                    .spawn(move || {
                        wait_non_child(pid);
                        rt.record_exit_after_logs(&name, None, pumps_done);
                    })
                    .expect("spawning an exit watcher");
            }
        }
    }

    fn record_exit_after_logs(&self, name: &str, exit: Option<ExitInfo>, pumps_done: Receiver<()>) {
        // Give the pumps a moment to write what the container said last, so that a caller
        // who sees "exited" finds the complete log. (With a shared PID namespace an orphan may
        // keep the FIFO open; do not wait for it forever.)
        let deadline = Instant::now() + Duration::from_secs(2);
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if pumps_done.recv_timeout(left).is_err() {
                break;
            }
        }
        let reason = if exit.is_none() {
            Some("exit status lost: the container ended while no shim was watching it".to_string())
        } else {
            None
        };
        if let Err(e) = self.record_exit(name, exit, reason) {
            tracing::error!(container = name, error = %e, "recording exit");
        }
    }

    /// Records that a container has ended; checks the OOM counter of its cgroup first.
    pub(super) fn record_exit(&self, name: &str, exit: Option<ExitInfo>, reason: Option<String>) -> ShimResult<()> {
        let oom = self.cgroups.oom_kills(&self.task_id, Some(name)).unwrap_or(0) > 0;
        let killed = exit.is_none_or(|e| e.signal == Some(libc::SIGKILL));
        let oom_killed = oom && killed;
        let exit_code = if oom_killed { Some(128 + libc::SIGKILL) } else { exit.map(|e| e.code) };
        let reason = if oom_killed { Some(OOM_REASON.to_string()) } else { reason };
        tracing::info!(container = name, ?exit_code, oom_killed, "container exited");
        self.update(|st| {
            if let Some(c) = st.container_mut(name)
                && c.state.can_transition(ContainerState::Exited)
            {
                c.state = ContainerState::Exited;
                c.pid = None;
                c.exit_code = exit_code;
                c.oom_killed = oom_killed;
                c.exited_at = Some(now_millis());
                c.reason = reason;
            }
        })
    }

    /// A new shim on an existing task: re-attach to running containers, settle the others.
    pub(super) fn adopt(self: &Arc<Self>) {
        self.end_orphaned_execs();
        let containers: Vec<(String, ContainerState)> =
            self.lock_state().containers.iter().map(|c| (c.name.clone(), c.state)).collect();
        for (name, state) in containers {
            let runc_state = self.runc.state(&name).unwrap_or_else(|e| {
                tracing::warn!(container = name, error = %e, "runc state while adopting");
                None
            });
            match (state, runc_state) {
                (ContainerState::Running, Some(s)) if s.status == "running" || s.status == "paused" => {
                    let cdir = self.container_dir(&name);
                    match self.attach_logs(&name, &cdir) {
                        Ok(done) => self.spawn_exit_watcher(&name, ExitSource::Adopted(s.pid), done),
                        Err(e) => {
                            tracing::error!(container = name, error = %e, "re-attaching logs");
                            let (_tx, rx) = mpsc::channel();
                            self.spawn_exit_watcher(&name, ExitSource::Adopted(s.pid), rx);
                        }
                    }
                    tracing::info!(container = name, pid = s.pid, "adopted running container");
                }
                (ContainerState::Running, _) => {
                    let reason = "exit status lost: the container ended while no shim was watching it";
                    if let Err(e) = self.record_exit(&name, None, Some(reason.into())) {
                        tracing::error!(container = name, error = %e, "recording exit while adopting");
                    }
                }
                (ContainerState::Created, Some(_)) => {
                    // Created ahead of its start by the previous shim (or it died during a
                    // `runc run`): the start will run it from a clean slate.
                    let _ = self.runc.delete(&name);
                }
                _ => {}
            }
        }
    }

    pub(super) fn exec(&self, name: &str, spec: &ExecSpec) -> ShimResult<ExecResult> {
        if spec.argv.is_empty() {
            return Err(ShimError::new(ShimErrorKind::InvalidSpec, "exec needs a command"));
        }
        if !self.container_state(name)?.can_signal() {
            return Err(ShimError::new(ShimErrorKind::InvalidState, format!("container {name:?} is not running")));
        }
        let n = self.exec_seq.fetch_add(1, Ordering::Relaxed);
        let pid_file = self.container_dir(name).join(format!("exec-{n}.pid"));
        let (read, write) = pipe().map_err(|e| runtime_err(&e))?;
        let output = collect_output(read);

        let mark = self.reaper.mark();
        if let Err(e) = self.runc.exec_detached(name, &spec.argv, &pid_file, write) {
            let _ = std::fs::remove_file(&pid_file);
            if self.container_state(name)? != ContainerState::Running {
                return Err(ShimError::new(ShimErrorKind::InvalidState, format!("container {name:?} is not running")));
            }
            // The command could not be started (not found, not executable): a failed check,
            // with runc's explanation as output. 126 is what `docker exec` returns then.
            let text = output.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
            tracing::debug!(container = name, error = %e, "exec failed to start");
            return Ok(ExecResult { exit_code: Some(126), timed_out: false, output: text });
        }
        let pid = read_pid(&pid_file).map_err(|e| io_err("reading", &pid_file, e))?;
        let _ = std::fs::remove_file(&pid_file);
        let timeout = Duration::from_millis(spec.timeout_ms);
        let (exit_code, timed_out) = match self.reaper.watch(pid, mark) {
            Watch::Lost => (None, false),
            Watch::Pending(rx) => match rx.recv_timeout(timeout) {
                Ok(exit) => (Some(exit.code), false),
                Err(_) => {
                    // `pid` is our unreaped child (its waiter is still registered), so the
                    // number cannot have been reused.
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                    let _ = rx.recv_timeout(Duration::from_secs(5));
                    (None, true)
                }
            },
        };
        // Something the command left behind may hold the pipe open; do not wait on it long.
        let text = output.recv_timeout(Duration::from_millis(500)).unwrap_or_default();
        Ok(ExecResult { exit_code, timed_out, output: text })
    }
}

fn pipe() -> std::io::Result<(File, File)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

/// Reads a pipe to EOF on a thread, keeping the first [`EXEC_OUTPUT_LIMIT`] bytes.
fn collect_output(mut read: File) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = EXEC_OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
    });
    rx
}
