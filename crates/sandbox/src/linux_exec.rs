//! Interactive exec through the task's shim (`Request::ExecStream`): one connection per
//! process, which carries the request, the reply with the process's descriptors, and later
//! its exit status. The connection is the process's lifeline: the shim kills the process's
//! session when it closes, so dropping [`ExecProcess::exit`] ends it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use flotilla_runtime::pty;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

use crate::error::SandboxError;
use crate::linux::{LinuxSandbox, unexpected};
use crate::protocol::{MAX_MESSAGE_BYTES, Reply, Request};
use crate::sandbox::{ExecProcess, ExecStdio, InteractiveSpec};

impl LinuxSandbox {
    pub(crate) async fn exec_stream(
        &self,
        task_id: &str,
        container: &str,
        spec: InteractiveSpec,
    ) -> Result<ExecProcess, SandboxError> {
        let tty = spec.tty;
        let io_err = |source: io::Error| SandboxError::ShimIo { task_id: task_id.to_string(), source };
        let mut stream = self.connect(task_id).await?;
        let req = Request::ExecStream { container: container.to_string(), exec: spec };
        let mut line = serde_json::to_vec(&req).map_err(io::Error::other).map_err(io_err)?;
        line.push(b'\n');
        let started = async {
            stream.write_all(&line).await?;
            read_reply_with_fds(&stream).await
        };
        let (reply, fds, rest) = tokio::time::timeout(self.config().request_timeout, started)
            .await
            .map_err(|_| SandboxError::ShimTimeout {
                task_id: task_id.to_string(),
                seconds: self.config().request_timeout.as_secs(),
            })?
            .map_err(io_err)?;
        let pid = match reply {
            Reply::ExecStarted { pid } => pid,
            Reply::Error(e) => return Err(SandboxError::from_shim(task_id, e)),
            other => return Err(unexpected(task_id, &other)),
        };
        let mut fds = fds.into_iter();
        let stdio = match (tty, fds.len(), fds.next(), fds.next(), fds.next()) {
            (true, 1, Some(master), None, None) => ExecStdio::Tty { master },
            (false, 3, Some(stdin), Some(stdout), Some(stderr)) => ExecStdio::Pipes { stdin, stdout, stderr },
            (_, n, ..) => return Err(wrong_fds(task_id, n)),
        };
        let task = task_id.to_string();
        let exit = Box::pin(async move {
            let io_err = |source: io::Error| SandboxError::ShimIo { task_id: task.clone(), source };
            match read_line(&mut stream, rest).await.map_err(io_err)? {
                Reply::ExecExited { code } => Ok(code),
                other => Err(unexpected(&task, &other)),
            }
        });
        Ok(ExecProcess { pid, stdio, exit })
    }
}

fn wrong_fds(task_id: &str, n: usize) -> SandboxError {
    SandboxError::Protocol { task_id: task_id.to_string(), reply: format!("exec reply carried {n} descriptors") }
}

/// Reads one reply line and the descriptors sent with it; also what followed the line.
async fn read_reply_with_fds(stream: &UnixStream) -> io::Result<(Reply, Vec<OwnedFd>, Vec<u8>)> {
    let mut got = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if let Some(end) = got.iter().position(|b| *b == b'\n') {
            let reply =
                serde_json::from_slice(&got[..end]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Ok((reply, fds, got[end + 1..].to_vec()));
        }
        if got.len() > MAX_MESSAGE_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply too long"));
        }
        let (n, more) = stream.async_io(Interest::READABLE, || pty::recv_fds(stream.as_fd(), &mut buf)).await?;
        fds.extend(more);
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the shim closed the connection without a reply"));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Reads one reply line, starting with `got`.
async fn read_line(stream: &mut UnixStream, mut got: Vec<u8>) -> io::Result<Reply> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.iter().position(|b| *b == b'\n') {
            return serde_json::from_slice(&got[..end]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if got.len() > MAX_MESSAGE_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply too long"));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the shim closed the connection"));
        }
        got.extend_from_slice(&buf[..n]);
    }
}
