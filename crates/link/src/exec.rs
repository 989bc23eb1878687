//! ECS Exec over an agent's stream: the server registers a [`RemoteExec`] per connected
//! agent in the control plane's [`ExecTargets`], which carries each session as frames
//! (`Exec`, `ExecInput`, `ExecEnd` down; `ExecStarted`, `ExecOutput`, `ExecEnded` up), and
//! the agent serves them with its own [`ExecTarget`] ([`AgentExec`]).
//!
//! The invariant of `flotilla_host::exec` holds across the link: a session whose input
//! sender is dropped sends `ExecEnd`, and the agent drops the command's input then; a lost
//! connection ends every session on both sides at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_host::BoxFuture;
use flotilla_host::exec::{ExecChannel, ExecError, ExecInput, ExecOutput, ExecRequest, ExecTarget, ExecTargets};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::protocol::{AgentFrame, ServerFrame};

/// How long the server waits for an agent to start a command.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const DEPTH: usize = 64;

struct Pending {
    started: Option<oneshot::Sender<Result<(), ExecError>>>,
    output: mpsc::UnboundedSender<ExecOutput>,
}

#[derive(Default)]
struct Sessions {
    open: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server's side: one connected agent's host as an [`ExecTarget`].
#[derive(Clone)]
pub(crate) struct RemoteExec {
    host_id: String,
    /// Weak: sessions must not keep the agent's stream open once the server ends it.
    tx: mpsc::WeakSender<Result<ServerFrame, Status>>,
    sessions: Arc<Sessions>,
}

impl RemoteExec {
    /// Registers the agent's host in `targets` for as long as the returned guard lives.
    pub(crate) fn register(
        targets: &ExecTargets,
        host_id: &str,
        tx: &mpsc::Sender<Result<ServerFrame, Status>>,
    ) -> Registered {
        let exec = RemoteExec { host_id: host_id.to_owned(), tx: tx.downgrade(), sessions: Arc::default() };
        let target: Arc<dyn ExecTarget> = Arc::new(exec.clone());
        targets.register(host_id, target.clone());
        Registered { exec, target, targets: targets.clone() }
    }

    /// An exec frame from the agent.
    async fn send(tx: &mpsc::WeakSender<Result<ServerFrame, Status>>, frame: ServerFrame) -> bool {
        match tx.upgrade() {
            Some(tx) => tx.send(Ok(frame)).await.is_ok(),
            None => false,
        }
    }

    fn receive(&self, frame: AgentFrame) {
        let mut open = self.sessions.lock();
        match frame {
            AgentFrame::ExecStarted { id, result } => {
                let failed = result.is_err();
                if let Some(started) = open.get_mut(&id).and_then(|p| p.started.take()) {
                    let _ = started.send(result);
                }
                if failed {
                    open.remove(&id);
                }
            }
            AgentFrame::ExecOutput { id, output } => {
                if let Some(p) = open.get(&id) {
                    let _ = p.output.send(output);
                }
            }
            AgentFrame::ExecEnded { id } => {
                open.remove(&id);
            }
            _ => {}
        }
    }
}

/// A [`RemoteExec`] registered under its host id; dropped when the agent's stream ends,
/// which ends its sessions (their output streams close without an exit).
pub(crate) struct Registered {
    exec: RemoteExec,
    target: Arc<dyn ExecTarget>,
    targets: ExecTargets,
}

impl Registered {
    pub(crate) fn receive(&self, frame: AgentFrame) {
        self.exec.receive(frame);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.exec.sessions.lock().clear();
        // A newer stream of the same host may have registered itself meanwhile.
        if self.targets.get(&self.exec.host_id).is_some_and(|t| Arc::ptr_eq(&t, &self.target)) {
            self.targets.remove(&self.exec.host_id);
        }
    }
}

impl ExecTarget for RemoteExec {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecChannel, ExecError>> {
        Box::pin(async move {
            let id = self.sessions.next_id.fetch_add(1, Ordering::Relaxed);
            let (started_tx, started) = oneshot::channel();
            let (raw_tx, mut raw) = mpsc::unbounded_channel();
            self.sessions.lock().insert(id, Pending { started: Some(started_tx), output: raw_tx });
            let gone = |what: &str| ExecError::Unavailable(format!("host {}: {what}", self.host_id));
            if !RemoteExec::send(&self.tx, ServerFrame::Exec { id, request }).await {
                self.sessions.lock().remove(&id);
                return Err(gone("its agent disconnected"));
            }
            match tokio::time::timeout(START_TIMEOUT, started).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(_)) => return Err(gone("its agent disconnected")),
                Err(_) => {
                    self.sessions.lock().remove(&id);
                    RemoteExec::send(&self.tx, ServerFrame::ExecEnd { id }).await;
                    return Err(gone("its agent did not start the command in time"));
                }
            }
            let (input, mut input_rx) = mpsc::channel::<ExecInput>(DEPTH);
            let (output_tx, output) = mpsc::channel(DEPTH);
            let (tx, sessions) = (self.tx.clone(), self.sessions.clone());
            tokio::spawn(async move {
                while let Some(input) = input_rx.recv().await {
                    if !RemoteExec::send(&tx, ServerFrame::ExecInput { id, input }).await {
                        break;
                    }
                }
                // The session dropped its sender: the agent ends the command.
                RemoteExec::send(&tx, ServerFrame::ExecEnd { id }).await;
                sessions.lock().remove(&id);
            });
            tokio::spawn(async move {
                while let Some(out) = raw.recv().await {
                    if output_tx.send(out).await.is_err() {
                        break;
                    }
                }
            });
            Ok(ExecChannel { input, output })
        })
    }
}

/// The agent's side: serves the server's exec frames with the agent's [`ExecTarget`].
#[derive(Default)]
pub(crate) struct AgentExec {
    target: Mutex<Option<Arc<dyn ExecTarget>>>,
    /// Each running command's input, by session id.
    inputs: Mutex<HashMap<u64, mpsc::UnboundedSender<ExecInput>>>,
}

impl AgentExec {
    pub(crate) fn serve(&self, target: Arc<dyn ExecTarget>) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
    }

    fn inputs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<ExecInput>>> {
        self.inputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection is gone: every command's session with it.
    pub(crate) fn end_all(&self) {
        self.inputs().clear();
    }

    /// An exec frame from the server; `send` puts frames on the current connection.
    pub(crate) fn receive(&self, frame: ServerFrame, send: impl Fn(AgentFrame) + Send + Sync + 'static) {
        match frame {
            ServerFrame::Exec { id, request } => {
                let target = self.target.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let (in_tx, in_rx) = mpsc::unbounded_channel();
                self.inputs().insert(id, in_tx);
                tokio::spawn(run(target, id, request, in_rx, send));
            }
            ServerFrame::ExecInput { id, input } => {
                if let Some(tx) = self.inputs().get(&id) {
                    let _ = tx.send(input);
                }
            }
            ServerFrame::ExecEnd { id } => {
                self.inputs().remove(&id);
            }
            _ => {}
        }
    }
}

async fn run(
    target: Option<Arc<dyn ExecTarget>>,
    id: u64,
    request: ExecRequest,
    mut input: mpsc::UnboundedReceiver<ExecInput>,
    send: impl Fn(AgentFrame) + Send + Sync + 'static,
) {
    let Some(target) = target else {
        let e = ExecError::Unavailable("this agent runs no commands on request".to_owned());
        send(AgentFrame::ExecStarted { id, result: Err(e) });
        return;
    };
    let channel = match target.exec(request).await {
        Ok(c) => c,
        Err(e) => {
            send(AgentFrame::ExecStarted { id, result: Err(e) });
            return;
        }
    };
    send(AgentFrame::ExecStarted { id, result: Ok(()) });
    let ExecChannel { input: to_process, mut output } = channel;
    // Input until the server ends the session (or the connection is lost); dropping
    // `to_process` then ends the command.
    tokio::spawn(async move {
        while let Some(i) = input.recv().await {
            if to_process.send(i).await.is_err() {
                break;
            }
        }
    });
    while let Some(out) = output.recv().await {
        send(AgentFrame::ExecOutput { id, output: out });
    }
    send(AgentFrame::ExecEnded { id });
}
