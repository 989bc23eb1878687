//! The interface the agent programs against. It speaks of tasks and containers only: how a
//! backend isolates them (runc and namespaces today, a microVM later) stays behind it.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;
use crate::protocol::Timings;
use crate::status::{ExecResult, ExecSpec, TaskStats, TaskStatus};
use crate::task::TaskSpec;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the network layer needs to wire a task up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum NetworkAttachment {
    /// A Linux network namespace (pinned file) with only `lo` up.
    NetNs { path: PathBuf },
}

/// A created task sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskHandle {
    pub task_id: String,
    pub network: NetworkAttachment,
    /// False when the host could not enforce `ephemeralStorage` (no loop devices).
    pub ephemeral_storage_limited: bool,
    /// Cost of each setup phase in microseconds.
    pub timings: Timings,
}

/// A started container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStarted {
    pub pid: u32,
    pub timings: Timings,
}

/// A command to start in a running container for an interactive session (ECS Exec): the
/// container's own process settings with `argv` in place of its command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InteractiveSpec {
    pub argv: Vec<String>,
    /// A pseudo-terminal from the container's `/dev/pts` (stdout and stderr merged), or pipes.
    pub tty: bool,
    /// The terminal's first size in cells; 0 leaves the kernel's default.
    #[serde(default)]
    pub cols: u16,
    #[serde(default)]
    pub rows: u16,
}

/// The started process's ends: the terminal's master, or its stdin, stdout and stderr pipes.
#[derive(Debug)]
pub enum ExecStdio {
    Tty { master: OwnedFd },
    Pipes { stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd },
}

/// A command started by [`Sandbox::exec_interactive`].
///
/// **Invariant:** `exit` is the process's lifeline: dropping it before it resolves kills the
/// process and everything in its session (closing the master alone would only hang it up).
pub struct ExecProcess {
    /// The process's pid on the host.
    pub pid: u32,
    pub stdio: ExecStdio,
    /// Its exit status, as a shell reports it (the code, or 128 + the signal), once it has
    /// ended; an error when the host lost track of it (its shim died).
    pub exit: BoxFuture<'static, Result<i32, SandboxError>>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess").field("pid", &self.pid).field("stdio", &self.stdio).finish_non_exhaustive()
    }
}

/// Fails to compile if a change to [`Sandbox`] makes it unusable as `dyn Sandbox`.
const _: Option<&dyn Sandbox> = None;

/// A host's sandbox backend. Object-safe, so the agent can hold an `Arc<dyn Sandbox>` and
/// tests can substitute a simulated one. Every operation is idempotent where that makes
/// sense (`create_task` with the same spec, `destroy`), so callers may retry after a crash.
pub trait Sandbox: Send + Sync {
    /// Sets up the task's isolation and every container's filesystem; starts nothing.
    fn create_task(&self, spec: TaskSpec) -> BoxFuture<'_, Result<TaskHandle, SandboxError>>;
    fn start_container<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<ContainerStarted, SandboxError>>;
    /// The directory behind a created task's local volume `volume` as this process reaches it
    /// (through the task's mount namespace), for the agent to fill before any container starts;
    /// `None` where volumes are not directories on this host (a simulated sandbox) or the
    /// task's shim does not answer.
    fn volume_dir(&self, task_id: &str, volume: &str) -> Option<std::path::PathBuf> {
        let _ = (task_id, volume);
        None
    }
    /// Sends `signal` (a Linux signal number) to the container's first process.
    fn signal<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
        signal: i32,
    ) -> BoxFuture<'a, Result<(), SandboxError>>;
    fn state<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskStatus, SandboxError>>;
    /// Waits until the task's observed state differs from generation `seen` (a container
    /// started, exited, was OOM-killed, the phase changed), or `timeout` passes; returns the
    /// current state either way, so callers loop on it instead of sampling `state`.
    /// `seen = 0` returns at once (no live task has generation 0). A task that is gone is
    /// `TaskNotFound`; one being destroyed wakes its waiters with phase `Destroying` first.
    fn wait_change<'a>(
        &'a self,
        task_id: &'a str,
        seen: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<TaskStatus, SandboxError>>;
    fn stats<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskStats, SandboxError>>;
    /// Runs a command in a running container (health checks) and waits up to its timeout.
    fn exec<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
        exec: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecResult, SandboxError>>;
    /// Starts a command in a running container for an interactive session and hands over its
    /// terminal or pipes; see [`ExecProcess`]. Errors: `TaskNotFound`, `NotFound` (no such
    /// container), `InvalidState` (not running), `InvalidSpec` (the command cannot be run).
    fn exec_interactive<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
        spec: InteractiveSpec,
    ) -> BoxFuture<'a, Result<ExecProcess, SandboxError>>;
    /// Kills everything and removes every trace of the task, logs included. Idempotent.
    fn destroy<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>>;
    /// After an agent restart: finds the tasks this backend still has on the host and makes
    /// sure each is supervised again. Returns their ids.
    fn adopt_existing(&self) -> BoxFuture<'_, Result<Vec<String>, SandboxError>>;
    /// The container's log: JSON lines `{"t": epoch_ms, "stream": "stdout"|"stderr", "line": ...}`,
    /// rotated to `<path>.1` past a size cap.
    fn container_log(&self, task_id: &str, container: &str) -> PathBuf;
    /// The task's network namespace: a pinned file the network layer enters to plumb the
    /// task's interface. Exists from `create_task` until `destroy`.
    fn network_namespace(&self, task_id: &str) -> PathBuf;
    /// The task's `/etc/resolv.conf` as its containers see it (bind-mounted read-only into
    /// each one, before the network is attached): the network layer rewrites it *in place*,
    /// since replacing the file would leave the containers' mounts on the old one.
    fn resolv_conf(&self, task_id: &str) -> PathBuf;
}
