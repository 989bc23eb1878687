//! Commands run in this host's containers on request (ECS Exec, `flotilla exec`): the
//! agent's [`ExecTarget`]. It finds the task's sandbox, starts the command through
//! [`Sandbox::exec_interactive`] and relays bytes between the process's terminal (or pipes)
//! and the [`ExecChannel`], with readiness from the runtime's reactor (`AsyncFd`), no thread
//! per session.
//!
//! Two tasks per session: `input` writes stdin and applies resizes; `output` reads the
//! terminal (or stdout and stderr), then sends the exit status. When the session drops its
//! input sender, `output` drops the process's lifeline ([`flotilla_sandbox::ExecProcess::exit`])
//! and the host kills the command and its session; when the command ends, `input` stops too.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use flotilla_host::BoxFuture;
use flotilla_host::exec::{ExecChannel, ExecError, ExecInput, ExecOutput, ExecRequest, ExecTarget, TermSize};
use flotilla_sandbox::{ExecProcess, ExecStdio, InteractiveSpec, SandboxError};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use crate::Agent;

/// Messages buffered each way.
const CHANNEL_DEPTH: usize = 64;
/// Bytes read from the process at once.
const CHUNK: usize = 32 << 10;
/// Stdin bytes held for a process that does not read them before input stops being taken.
const STDIN_BUFFER: usize = 1 << 20;
/// After the process ended, how long its output is still read: something it left running
/// may hold the terminal or pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
const DEFAULT_SIZE: TermSize = TermSize { cols: 80, rows: 24 };

impl ExecTarget for Agent {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecChannel, ExecError>> {
        Box::pin(async move {
            if request.command.is_empty() {
                return Err(ExecError::Failed("the command is empty".to_string()));
            }
            let task_id = self
                .assignments
                .lock()
                .expect("assignment table poisoned")
                .get(&request.task_arn)
                .map(|a| a.task.id().to_owned())
                .ok_or_else(|| ExecError::TaskNotFound(request.task_arn.clone()))?;
            let size = request.size.unwrap_or(DEFAULT_SIZE);
            let spec =
                InteractiveSpec { argv: request.command.clone(), tty: request.tty, cols: size.cols, rows: size.rows };
            let process = self
                .sandbox
                .exec_interactive(&task_id, &request.container, spec)
                .await
                .map_err(|e| exec_error(e, &request))?;
            tracing::info!(task = %task_id, container = %request.container, pid = process.pid, "exec session started");
            relay(process).map_err(|e| ExecError::Failed(format!("relaying the command's streams: {e}")))
        })
    }
}

/// The sandbox's refusals in the session's terms.
fn exec_error(e: SandboxError, request: &ExecRequest) -> ExecError {
    match e {
        SandboxError::TaskNotFound { .. } => ExecError::TaskNotFound(request.task_arn.clone()),
        SandboxError::NotFound { .. } => ExecError::ContainerNotFound(request.container.clone()),
        SandboxError::InvalidState { .. } => ExecError::NotRunning(request.container.clone()),
        SandboxError::InvalidSpec(e) => ExecError::Failed(e.to_string()),
        e @ (SandboxError::ShimIo { .. } | SandboxError::ShimStart { .. } | SandboxError::ShimTimeout { .. }) => {
            ExecError::Unavailable(e.to_string())
        }
        e => ExecError::Failed(e.to_string()),
    }
}

/// Starts relaying a started process's streams; the channel the session holds.
pub fn relay(process: ExecProcess) -> io::Result<ExecChannel> {
    let (in_tx, in_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let (stdin, terminal, readers) = match process.stdio {
        ExecStdio::Tty { master } => {
            let master = Arc::new(async_fd(master)?);
            (Some(master.clone()), Some(master.clone()), vec![(master, Stream::Stdout)])
        }
        ExecStdio::Pipes { stdin, stdout, stderr } => (
            Some(Arc::new(async_fd(stdin)?)),
            None,
            vec![(Arc::new(async_fd(stdout)?), Stream::Stdout), (Arc::new(async_fd(stderr)?), Stream::Stderr)],
        ),
    };
    tokio::spawn(input(in_rx, stdin, terminal, stop_tx, done_rx));
    tokio::spawn(output(readers, process.exit, out_tx, stop_rx, done_tx));
    Ok(ExecChannel { input: in_tx, output: out_rx })
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<File>> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the File owns the descriptor for the AsyncFd's whole life and never changes it.
    unsafe { AsyncFd::register(File::from(fd)) }.map_err(io::Error::from)
}

fn set_size(terminal: &AsyncFd<File>, size: TermSize) {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Session -> process. Ends when the session drops its sender (then `stop` tells `output`
/// to end the process) or when `output` is done.
async fn input(
    mut rx: mpsc::Receiver<ExecInput>,
    mut stdin: Option<Arc<AsyncFd<File>>>,
    terminal: Option<Arc<AsyncFd<File>>>,
    stop: oneshot::Sender<()>,
    mut done: oneshot::Receiver<()>,
) {
    let mut pending: VecDeque<u8> = VecDeque::new();
    let mut close_when_written = false;
    loop {
        let writer = stdin.clone().filter(|_| !pending.is_empty());
        tokio::select! {
            _ = &mut done => return,
            msg = rx.recv(), if pending.len() < STDIN_BUFFER => match msg {
                None => {
                    let _ = stop.send(());
                    return;
                }
                Some(ExecInput::Stdin(bytes)) => {
                    if stdin.is_some() {
                        pending.extend(bytes);
                    }
                }
                Some(ExecInput::Resize(size)) => {
                    if let Some(t) = &terminal {
                        set_size(t, size);
                    }
                }
                // A terminal has no end of input of its own (^D is the line discipline's).
                Some(ExecInput::CloseStdin) => close_when_written = terminal.is_none(),
            },
            guard = async {
                match &writer {
                    Some(fd) => fd.writable().await.ok(),
                    None => std::future::pending().await,
                }
            } => {
                let Some(mut guard) = guard else {
                    stdin = None;
                    continue;
                };
                let (front, _) = pending.as_slices();
                match guard.try_io(|fd| fd.get_ref().write(front)) {
                    Ok(Ok(n)) => {
                        pending.drain(..n);
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The process closed its stdin (or ended): nothing more to write.
                    Ok(Err(_)) => {
                        stdin = None;
                        pending.clear();
                    }
                    Err(_would_block) => {}
                }
            }
        }
        if close_when_written && pending.is_empty() && terminal.is_none() {
            stdin = None;
        }
    }
}

/// Process -> session: output until the process has ended and its streams are drained (or
/// a moment after its end), then `Exit`. Returns early, ending the process, on `stop`.
async fn output(
    readers: Vec<(Arc<AsyncFd<File>>, Stream)>,
    mut exit: BoxFuture<'static, Result<i32, SandboxError>>,
    tx: mpsc::Sender<ExecOutput>,
    mut stop: oneshot::Receiver<()>,
    _done: oneshot::Sender<()>,
) {
    let mut open: Vec<bool> = vec![true; readers.len()];
    let mut status: Option<Result<i32, SandboxError>> = None;
    let drain = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain);
    loop {
        if status.is_some() && !open.contains(&true) {
            break;
        }
        tokio::select! {
            // Dropped or sent: the session is gone. Dropping `exit` ends the process.
            _ = &mut stop => return,
            s = &mut exit, if status.is_none() => {
                status = Some(s);
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = &mut drain, if status.is_some() => break,
            (i, stream, chunk) = read_stream(&readers, &open, 0) => {
                if !forward(&tx, &mut open, i, stream, chunk).await {
                    return;
                }
            }
            (i, stream, chunk) = read_stream(&readers, &open, 1) => {
                if !forward(&tx, &mut open, i, stream, chunk).await {
                    return;
                }
            }
        }
    }
    match status {
        Some(Ok(code)) => {
            let _ = tx.send(ExecOutput::Exit(code)).await;
        }
        // The host lost the process (its shim died): the stream ends without an exit.
        Some(Err(e)) => tracing::warn!(error = %e, "exec session lost its process"),
        None => {}
    }
}

/// The next chunk of stream `i`, if it is still open (else never).
fn read_stream(
    readers: &[(Arc<AsyncFd<File>>, Stream)],
    open: &[bool],
    i: usize,
) -> impl Future<Output = (usize, Stream, Option<Vec<u8>>)> + use<> {
    let reader = readers.get(i).filter(|_| open.get(i) == Some(&true)).map(|(fd, s)| (fd.clone(), *s));
    async move {
        match reader {
            Some((fd, stream)) => (i, stream, read_chunk(&fd).await),
            None => std::future::pending().await,
        }
    }
}

/// Sends a chunk on, or marks its stream ended. False when the session is gone.
async fn forward(
    tx: &mpsc::Sender<ExecOutput>,
    open: &mut [bool],
    i: usize,
    stream: Stream,
    chunk: Option<Vec<u8>>,
) -> bool {
    let Some(bytes) = chunk else {
        open[i] = false;
        return true;
    };
    let msg = match stream {
        Stream::Stdout => ExecOutput::Stdout(bytes),
        Stream::Stderr => ExecOutput::Stderr(bytes),
    };
    tx.send(msg).await.is_ok()
}

/// One chunk; `None` at the end (EOF, or EIO from a terminal whose other side closed).
async fn read_chunk(fd: &AsyncFd<File>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut guard = fd.readable().await.ok()?;
        match guard.try_io(|f| f.get_ref().read(&mut buf)) {
            Ok(Ok(0)) => return None,
            Ok(Ok(n)) => {
                buf.truncate(n);
                return Some(buf);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => return None,
            Err(_would_block) => {}
        }
    }
}
