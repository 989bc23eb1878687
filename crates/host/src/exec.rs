//! Commands run inside a running container on request (ECS Exec, `flotilla exec`): what a
//! session on the API side asks of the host that runs the task, and the two byte streams
//! between them.
//!
//! The direction is the reverse of the rest of the host API (the control plane asks, the
//! host answers), so a host offers an [`ExecTarget`] and the control plane finds it by host
//! id in [`ExecTargets`]. `flotilla up` registers its in-process agent; a remote transport
//! registers a target that carries the same messages over its stream.
//!
//! **Invariant:** the process lives exactly as long as its channel: when the session side
//! drops its [`ExecChannel::input`] sender, the host kills the process (and everything it
//! started in the container), so an abandoned session leaves nothing running.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::BoxFuture;

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

/// One command to run in one container of one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    pub task_arn: String,
    pub container: String,
    /// `argv`, not a shell line: the session side splits ECS's `command` string.
    pub command: Vec<String>,
    /// With a pseudo-terminal (stdout and stderr merged, as on a terminal) or with pipes.
    pub tty: bool,
    /// The terminal's first size; `None` = 80x24.
    pub size: Option<TermSize>,
}

/// From the session to the process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExecInput {
    Stdin(Vec<u8>),
    Resize(TermSize),
    /// Stdin is closed (without a terminal the process sees EOF; with one, nothing).
    CloseStdin,
}

/// From the process to the session. `Exit` is the last message; the stream then ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The exit status, as a shell reports it: the code, or 128 + the signal that killed it.
    Exit(i32),
}

/// A started command's two streams.
#[derive(Debug)]
pub struct ExecChannel {
    pub input: mpsc::Sender<ExecInput>,
    pub output: mpsc::Receiver<ExecOutput>,
}

/// Why a command could not be started. Texts are what a user reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ExecError {
    #[error("task {0} is not running on this host")]
    TaskNotFound(String),
    #[error("container {0} does not exist in the task")]
    ContainerNotFound(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The command itself could not be started (not found, not executable).
    #[error("{0}")]
    Failed(String),
    #[error("the host is unreachable: {0}")]
    Unavailable(String),
}

/// A host that can run commands in its tasks' containers.
pub trait ExecTarget: Send + Sync {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecChannel, ExecError>>;
}

/// The hosts that accept [`ExecRequest`]s, by host id.
#[derive(Clone, Default)]
pub struct ExecTargets {
    targets: Arc<RwLock<HashMap<String, Arc<dyn ExecTarget>>>>,
}

impl ExecTargets {
    pub fn new() -> ExecTargets {
        ExecTargets::default()
    }

    /// Registers (or replaces) the target of `host_id`.
    pub fn register(&self, host_id: impl Into<String>, target: Arc<dyn ExecTarget>) {
        self.targets.write().unwrap_or_else(|e| e.into_inner()).insert(host_id.into(), target);
    }

    pub fn remove(&self, host_id: &str) {
        self.targets.write().unwrap_or_else(|e| e.into_inner()).remove(host_id);
    }

    pub fn get(&self, host_id: &str) -> Option<Arc<dyn ExecTarget>> {
        self.targets.read().unwrap_or_else(|e| e.into_inner()).get(host_id).cloned()
    }
}

impl std::fmt::Debug for ExecTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self.targets.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        f.debug_struct("ExecTargets").field("hosts", &hosts).finish()
    }
}
