//! The shim's socket protocol: one JSON object per line, one request then one reply per
//! exchange, over `<task-dir>/shim.sock` (mode 0600: whoever can connect is root over the
//! task). A connection may carry several exchanges in sequence.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ephemeral::PooledScratch;
use crate::sandbox::InteractiveSpec;
use crate::status::{ExecResult, ExecSpec, TaskStats, TaskStatus};
use crate::task::TaskSpec;

/// File names inside a task directory that both sides need to agree on.
pub const SOCKET_FILE: &str = "shim.sock";
pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "shim.lock";
pub const SHIM_LOG_FILE: &str = "shim.log";
pub const CONTAINERS_DIR: &str = "containers";
pub const CONTAINER_LOG_FILE: &str = "log.jsonl";
/// Under the sandbox root, beside the task directories: the builtin runtime's compiled seccomp
/// filters, shared by every task of the host (`flotilla_runtime::seccomp`). Starts with a dot,
/// so no task id can name it.
pub const SECCOMP_CACHE_DIR: &str = ".seccomp-cache";

/// Longest accepted message line; a task spec with many containers stays far below this.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Set the sandbox up. Idempotent: repeating it with the same spec succeeds.
    Create {
        spec: Box<TaskSpec>,
        /// A ready scratch filesystem of the spec's size to use instead of making one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scratch: Option<PooledScratch>,
    },
    /// Start a created container.
    Start {
        container: String,
    },
    /// Send a signal to a running container's first process.
    Kill {
        container: String,
        signal: i32,
    },
    State,
    /// Reply with `State` as soon as the task's generation differs from `seen`, or after
    /// `timeout_ms` with the state as it is then. The agent's way to learn of a container's
    /// start or exit within milliseconds without sampling `State`. The shim cannot tell a
    /// waiter that hung up: keep `timeout_ms` to seconds.
    Wait {
        seen: u64,
        timeout_ms: u64,
    },
    Stats,
    /// Run a command inside a running container and wait for it (health checks).
    Exec {
        container: String,
        exec: ExecSpec,
    },
    /// Kill everything and remove every trace of the task, then the shim exits. Idempotent.
    Destroy,
    /// Start a command in a running container for an interactive session and keep this
    /// connection for it: the reply `ExecStarted` carries, as `SCM_RIGHTS` descriptors, the
    /// terminal's master (`tty`) or the process's stdin, stdout and stderr pipe ends, in that
    /// order; `ExecExited` follows when it has been reaped. Closing the connection kills the
    /// process and everything in its session.
    ExecStream {
        container: String,
        exec: InteractiveSpec,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", content = "body", rename_all = "snake_case")]
pub enum Reply {
    Created(CreateReport),
    Started(StartReport),
    Signalled,
    State(TaskStatus),
    Stats(TaskStats),
    Exec(ExecResult),
    Destroyed,
    ExecStarted {
        pid: u32,
    },
    /// The exit status, as a shell reports it (the code, or 128 + the signal).
    ExecExited {
        code: i32,
    },
    Error(ShimError),
}

/// Phase name -> microseconds; what creating or starting cost, for metrics and benchmarks.
pub type Timings = BTreeMap<String, u64>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateReport {
    /// The task's network namespace, for the network layer to configure.
    pub netns: PathBuf,
    /// False when loop devices were unavailable and the scratch space is an unlimited directory.
    pub ephemeral_storage_limited: bool,
    pub timings: Timings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartReport {
    pub pid: u32,
    pub timings: Timings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ShimError {
    pub kind: ShimErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShimErrorKind {
    /// The spec cannot run (bad user, missing command, bad ulimit, ...).
    InvalidSpec,
    /// No such container, or the task was never created.
    NotFound,
    /// The request does not fit the current state (start twice, signal an exited container).
    InvalidState,
    /// `create` with a spec different from the one the task already has.
    AlreadyExists,
    /// The host failed: runc, a mount, a cgroup write.
    Runtime,
    /// The request could not be parsed.
    Protocol,
}

impl ShimError {
    pub fn new(kind: ShimErrorKind, message: impl Into<String>) -> Self {
        ShimError { kind, message: message.into() }
    }
}

/// Writes one message as a JSON line.
pub fn write_message<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Reads one JSON line; `Ok(None)` at a clean end of stream.
pub fn read_message<R: BufRead, T: DeserializeOwned>(r: &mut R) -> io::Result<Option<T>> {
    let mut line = Vec::new();
    let n = io::Read::take(&mut *r, MAX_MESSAGE_BYTES as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message too long or truncated"));
    }
    serde_json::from_slice(&line).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One blocking exchange with a shim. For tests and for cleanup paths that cannot be async.
pub fn request_blocking(socket: &Path, req: &Request, timeout: Duration) -> io::Result<Reply> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    write_message(&mut writer, req)?;
    let mut reader = io::BufReader::new(stream);
    read_message(&mut reader)?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "shim closed the connection"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_single_lines() {
        let req = Request::Kill { container: "web".into(), signal: 15 };
        let mut buf = Vec::new();
        write_message(&mut buf, &req).unwrap();
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(std::str::from_utf8(&buf).unwrap(), "{\"op\":\"kill\",\"container\":\"web\",\"signal\":15}\n");
        let back: Request = read_message(&mut &buf[..]).unwrap().unwrap();
        assert_eq!(back, req);

        let reply = Reply::Error(ShimError::new(ShimErrorKind::NotFound, "no container \"x\""));
        let mut buf = Vec::new();
        write_message(&mut buf, &reply).unwrap();
        let back: Reply = read_message(&mut &buf[..]).unwrap().unwrap();
        assert_eq!(back, reply);
        assert_eq!(read_message::<_, Reply>(&mut &b""[..]).unwrap(), None);
    }

    #[test]
    fn wait_is_a_plain_request() {
        let mut buf = Vec::new();
        write_message(&mut buf, &Request::Wait { seen: 7, timeout_ms: 250 }).unwrap();
        assert_eq!(std::str::from_utf8(&buf).unwrap(), "{\"op\":\"wait\",\"seen\":7,\"timeout_ms\":250}\n");
        // A state from a shim that predates generations still parses, as generation 0.
        let old = br#"{"reply":"state","body":{"taskId":"t","phase":"ready","containers":[]}}"#;
        let Some(Reply::State(st)) = read_message(&mut &[&old[..], b"\n"].concat()[..]).unwrap() else {
            panic!("not a state reply")
        };
        assert_eq!(st.generation, 0);
    }
}
