//! What a sandbox reports back: container states (a small state machine with an explicit
//! transition table), resource usage, exec results.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lifecycle of one container inside a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Root filesystem and runtime config prepared; the process has not been started.
    Created,
    /// The container's process is running.
    Running,
    /// The process has ended (or never could start). Terminal, unless restarted in place.
    Exited,
}

impl ContainerState {
    /// The whole transition table: anything not listed here is a bug or a bad request.
    pub fn can_transition(self, to: ContainerState) -> bool {
        use ContainerState::*;
        matches!((self, to), (Created, Running) | (Created, Exited) | (Running, Exited))
    }

    pub fn can_start(self) -> bool {
        self == ContainerState::Created
    }

    /// An ended container may be started again in place (a pod's `restartPolicy`): the same
    /// bundle and root filesystem, a new process. Exited is terminal otherwise.
    pub fn can_restart(self) -> bool {
        self == ContainerState::Exited
    }

    pub fn can_signal(self) -> bool {
        self == ContainerState::Running
    }
}

/// Observed state of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerState,
    /// Host PID of the container's first process while it runs.
    pub pid: Option<u32>,
    /// Exit code as a shell reports it: the code, or 128 + signal number.
    /// `None` once exited means the status was lost (the process ended while no shim watched it).
    pub exit_code: Option<i32>,
    /// The kernel OOM killer ended a process of this container.
    pub oom_killed: bool,
    /// Epoch milliseconds.
    pub started_at: Option<u64>,
    pub exited_at: Option<u64>,
    /// Why the container stopped or failed to start, when it was not a plain exit.
    pub reason: Option<String>,
}

impl ContainerStatus {
    /// A prepared container that has not started.
    pub fn created(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.to_string(),
            state: ContainerState::Created,
            pid: None,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            exited_at: None,
            reason: None,
        }
    }
}

/// `ContainerStatus::reason` of a container the kernel's OOM killer ended (ECS's text).
pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";

/// Observed state of a whole task sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub task_id: String,
    pub phase: TaskPhase,
    pub containers: Vec<ContainerStatus>,
    /// Moves on every observed change (a container started, exited or was OOM-killed, the
    /// phase changed), so a caller can wait for the next one with `Sandbox::wait_change`.
    /// Never 0 for a live task, so waiting with `seen = 0` returns at once. (A shim from
    /// before generations reports 0; `LinuxSandbox` then samples its state instead.)
    #[serde(default)]
    pub generation: u64,
}

impl TaskStatus {
    pub fn container(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskPhase {
    /// The shim is setting the sandbox up (or died while doing so).
    Creating,
    /// The sandbox exists; containers can be started.
    Ready,
    /// Teardown has begun; only `destroy` is accepted.
    Destroying,
}

/// Resource usage of one cgroup (a container or the whole task).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStats {
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory charged to the cgroup, page cache included.
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file cache: what the kernel cannot simply drop (what
    /// `docker stats` and Container Insights report as used memory).
    pub memory_working_set_bytes: u64,
    /// Hard limit; `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
    pub pids: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageStats {
    pub used_bytes: u64,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStats {
    pub task: ResourceStats,
    pub containers: BTreeMap<String, ResourceStats>,
    pub ephemeral_storage: StorageStats,
}

/// A command to run inside a running container (health checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// `None` when the command was killed at the timeout.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Combined stdout and stderr, truncated to the first 64 KiB.
    pub output: String,
}

#[cfg(test)]
mod tests {
    use super::ContainerState::*;

    #[test]
    fn transition_table() {
        assert!(Created.can_transition(Running));
        assert!(Created.can_transition(Exited));
        assert!(Running.can_transition(Exited));
        assert!(!Exited.can_transition(Running));
        assert!(!Running.can_transition(Created));
        assert!(!Exited.can_transition(Exited));
    }
}
