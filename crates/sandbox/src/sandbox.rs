//! The interface the agent programs against. It speaks of tasks and containers only: how a
//! backend isolates them (runc and namespaces today, a microVM later) stays behind it.

use std::future::Future;
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
