//! Error types shared by the host-facing modules, and the one client-facing error.

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};

use crate::protocol::{ShimError, ShimErrorKind};
use crate::task::SpecError;

/// An I/O failure on a specific path: every host operation reports what it touched.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct PathError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl PathError {
    pub fn new(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        PathError { op, path: path.as_ref().to_path_buf(), source }
    }
}

/// `map_err` shorthand: `fs::read(p).map_err(at("read", p))`.
pub fn at<P: AsRef<Path>>(op: &'static str, path: P) -> impl FnOnce(io::Error) -> PathError {
    move |source| PathError::new(op, path, source)
}

/// Renders an error with its whole `source()` chain, for messages that cross the socket.
pub fn chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// What the agent sees from a [`crate::Sandbox`].
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid task spec: {0}")]
    InvalidSpec(#[from] SpecError),
    #[error("task {task_id} not found")]
    TaskNotFound { task_id: String },
    #[error("task {task_id}: {message}")]
    NotFound { task_id: String, message: String },
    #[error("task {task_id}: {message}")]
    InvalidState { task_id: String, message: String },
    #[error("task {task_id} already exists with a different spec")]
    AlreadyExists { task_id: String },
    /// The host failed to do what was asked (runc, mounts, cgroups); the message has the detail.
    #[error("task {task_id}: {message}")]
    Runtime { task_id: String, message: String },
    #[error("task {task_id}: starting the shim failed: {message}")]
    ShimStart { task_id: String, message: String },
    #[error("task {task_id}: talking to the shim failed")]
    ShimIo {
        task_id: String,
        #[source]
        source: io::Error,
    },
    #[error("task {task_id}: the shim did not answer within {seconds} s")]
    ShimTimeout { task_id: String, seconds: u64 },
    #[error("task {task_id}: unexpected reply from the shim: {reply}")]
    Protocol { task_id: String, reply: String },
    #[error(transparent)]
    Host(#[from] PathError),
}

impl SandboxError {
    pub(crate) fn from_shim(task_id: &str, err: ShimError) -> Self {
        let task_id = task_id.to_string();
        let message = err.message;
        match err.kind {
            ShimErrorKind::InvalidSpec => SandboxError::InvalidSpec(SpecError::invalid(message)),
            ShimErrorKind::NotFound => SandboxError::NotFound { task_id, message },
            ShimErrorKind::InvalidState => SandboxError::InvalidState { task_id, message },
            ShimErrorKind::AlreadyExists => SandboxError::AlreadyExists { task_id },
            ShimErrorKind::Runtime => SandboxError::Runtime { task_id, message },
            ShimErrorKind::Protocol => SandboxError::Protocol { task_id, reply: message },
        }
    }
}
