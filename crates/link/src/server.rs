//! The servers' end: authenticates each agent's stream, then serves its calls and watches
//! with the control plane's [`HostApi`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use flotilla_host::exec::ExecTargets;
use flotilla_host::{BoxFuture, Events, HostApi, HostApiError};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Status, Streaming};
use tower_service::Service;

use crate::exec::{Registered, RemoteExec};
use crate::protocol::{AgentFrame, CONNECT_PATH, Call, HOST_HEADER, JsonCodec, SERVICE, ServerFrame, Watch};

/// Frames that may wait for a slow agent before its stream pushes back.
const QUEUE: usize = 1024;
/// HTTP/2 pings find an agent whose host vanished without closing its connection.
const KEEPALIVE: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks hosts' tokens. The control plane implements it (tokens stored hashed).
pub trait HostAuth: Send + Sync {
    /// `Ok` when `token` is `host_id`'s current token.
    fn check<'a>(&'a self, host_id: &'a str, token: &'a str) -> BoxFuture<'a, Result<(), AuthError>>;
    /// Resolves once `token` stops being `host_id`'s (revoked or replaced): the stream it
    /// opened is closed at once.
    fn revoked<'a>(&'a self, host_id: &'a str, token: &'a str) -> BoxFuture<'a, ()>;
    /// Whether `host_id` may act on `task_arn`: the task is assigned to it, or no longer
    /// exists (what is left of it is the host's to clean up). A host reads and reports on its
    /// own tasks only, their secrets included.
    fn may_act_on<'a>(&'a self, host_id: &'a str, task_arn: &'a str) -> BoxFuture<'a, Result<bool, AuthError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown host or wrong token")]
    Refused,
    #[error("cannot check the host's token: {reason}")]
    Unavailable { reason: String },
}

/// Serves the host API to agents: one bidirectional gRPC stream per agent.
#[derive(Clone)]
pub struct LinkServer {
    host: Arc<dyn HostApi>,
    auth: Arc<dyn HostAuth>,
    /// Set when the server shuts down: open streams end so that their agents move on.
    closing: Arc<watch::Sender<bool>>,
    /// Where connected agents' hosts are offered for ECS Exec, if anywhere.
    exec_targets: Option<ExecTargets>,
}

impl LinkServer {
    pub fn new(host: Arc<dyn HostApi>, auth: Arc<dyn HostAuth>) -> LinkServer {
        LinkServer { host, auth, closing: Arc::new(watch::channel(false).0), exec_targets: None }
    }

    /// Offers each connected agent's host in `targets` while its stream is open, so that
    /// commands run in its containers on request (ECS Exec).
    pub fn with_exec_targets(mut self, targets: ExecTargets) -> LinkServer {
        self.exec_targets = Some(targets);
        self
    }

    /// Serves agents on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let closing = self.closing.clone();
        let shutdown = async move {
            shutdown.await;
            closing.send_replace(true);
        };
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(KEEPALIVE))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_service(self)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
    }

    async fn open(
        &self,
        request: tonic::Request<Streaming<AgentFrame>>,
    ) -> Result<ReceiverStream<Result<ServerFrame, Status>>, Status> {
        let (host_id, token) = credentials(request.metadata())?;
        match self.auth.check(&host_id, &token).await {
            Ok(()) => {}
            Err(AuthError::Refused) => {
                tracing::warn!(host = %host_id, "agent refused: unknown host or wrong token");
                return Err(Status::unauthenticated(format!(
                    "host {host_id}: unknown host or wrong token; issue one with `flotilla hosts add {host_id}` and start the agent with it"
                )));
            }
            Err(e @ AuthError::Unavailable { .. }) => return Err(Status::unavailable(e.to_string())),
        }
        tracing::info!(host = %host_id, "agent connected");
        let (tx, rx) = mpsc::channel(QUEUE);
        let closing = self.closing.subscribe();
        let exec = self.exec_targets.as_ref().map(|targets| RemoteExec::register(targets, &host_id, &tx));
        let session = Session { host: self.host.clone(), auth: self.auth.clone(), host_id, token, tx, closing, exec };
        tokio::spawn(session.run(request.into_inner()));
        Ok(ReceiverStream::new(rx))
    }
}

/// The host id and bearer token of a stream's metadata.
fn credentials(metadata: &tonic::metadata::MetadataMap) -> Result<(String, String), Status> {
    let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let host_id = text(HOST_HEADER).filter(|h| !h.is_empty()).ok_or_else(|| {
        Status::unauthenticated(format!("no host id: the agent sends it in the {HOST_HEADER} metadata"))
    })?;
    let token = text("authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        .ok_or_else(|| Status::unauthenticated(format!("host {host_id}: no bearer token")))?;
    Ok((host_id, token))
}

impl NamedService for LinkServer {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for LinkServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move {
            if request.uri().path() != CONNECT_PATH {
                return Ok(Status::unimplemented(format!("no method {}", request.uri().path())).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(JsonCodec::<ServerFrame, AgentFrame>::default());
            Ok(grpc.streaming(Connect(server), request).await)
        })
    }
}

/// The `Connect` method as tonic's streaming handler wants it.
struct Connect(LinkServer);

impl Service<tonic::Request<Streaming<AgentFrame>>> for Connect {
    type Response = tonic::Response<ReceiverStream<Result<ServerFrame, Status>>>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Streaming<AgentFrame>>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move { server.open(request).await.map(tonic::Response::new) })
    }
}

/// One agent's stream. Its calls and watches run as tasks of the session: when the stream
/// ends (or the token is revoked), they end with it.
struct Session {
    host: Arc<dyn HostApi>,
    auth: Arc<dyn HostAuth>,
    host_id: String,
    token: String,
    tx: mpsc::Sender<Result<ServerFrame, Status>>,
    closing: watch::Receiver<bool>,
    /// The host's exec target, unregistered (its sessions ended) with the stream.
    exec: Option<Registered>,
}

impl Session {
    async fn run(self, mut inbound: Streaming<AgentFrame>) {
        let mut tasks = JoinSet::new();
        let mut watches = HashMap::new();
        let auth = self.auth.clone();
        let (host_id, token) = (self.host_id.clone(), self.token.clone());
        let revoked = auth.revoked(&host_id, &token);
        tokio::pin!(revoked);
        let closing = shut_down(self.closing.clone());
        tokio::pin!(closing);
        let why = loop {
            tokio::select! {
                _ = &mut revoked => {
                    let _ = self.tx.send(Err(Status::unauthenticated(format!(
                        "host {}: its token was revoked; issue a new one with `flotilla hosts add {}`",
                        self.host_id, self.host_id
                    )))).await;
                    break "token revoked".to_owned();
                }
                frame = inbound.message() => match frame {
                    Ok(Some(AgentFrame::Call { id, call })) => {
                        let (host, auth, tx) = (self.host.clone(), self.auth.clone(), self.tx.clone());
                        let refusal = self.foreign(call.host_id());
                        let host_id = self.host_id.clone();
                        tasks.spawn(async move {
                            let refusal = match (refusal, call.task_arn()) {
                                (Some(e), _) => Some(e),
                                (None, Some(task_arn)) => not_its_task(auth.as_ref(), &host_id, task_arn).await,
                                (None, None) => None,
                            };
                            let result = match refusal {
                                Some(e) => Err(e),
                                None => answer(host.as_ref(), call).await,
                            };
                            let _ = tx.send(Ok(ServerFrame::Answer { id, result })).await;
                        });
                    }
                    Ok(Some(AgentFrame::Watch { id, watch })) => {
                        let (host, tx) = (self.host.clone(), self.tx.clone());
                        let refusal = self.foreign(watch.host_id());
                        let handle = tasks.spawn(async move {
                            match refusal {
                                Some(e) => {
                                    let _ = tx.send(Ok(ServerFrame::Event { id, event: Err(e) })).await;
                                }
                                None => follow(host.as_ref(), watch, id, tx).await,
                            }
                        });
                        if let Some(old) = watches.insert(id, handle) {
                            old.abort();
                        }
                    }
                    Ok(Some(AgentFrame::Unwatch { id })) => {
                        if let Some(handle) = watches.remove(&id) {
                            handle.abort();
                        }
                    }
                    Ok(Some(
                        frame @ (AgentFrame::ExecStarted { .. }
                        | AgentFrame::ExecOutput { .. }
                        | AgentFrame::ExecEnded { .. }),
                    )) => {
                        if let Some(exec) = &self.exec {
                            exec.receive(frame);
                        }
                    }
                    Ok(None) => break "stream closed".to_owned(),
                    Err(status) => break status.message().to_owned(),
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = &mut closing => break "server shutting down".to_owned(),
            }
        };
        tracing::info!(host = %self.host_id, reason = %why, "agent disconnected");
    }

    /// A refusal when a call names a host other than the stream's own.
    fn foreign(&self, named: Option<&str>) -> Option<HostApiError> {
        let named = named?;
        (named != self.host_id)
            .then(|| HostApiError::Refused { reason: format!("host {} cannot act for host {named}", self.host_id) })
    }
}

/// A refusal when `task_arn` is not `host_id`'s to act on.
async fn not_its_task(auth: &dyn HostAuth, host_id: &str, task_arn: &str) -> Option<HostApiError> {
    match auth.may_act_on(host_id, task_arn).await {
        Ok(true) => None,
        Ok(false) => {
            Some(HostApiError::Refused { reason: format!("task {task_arn} is not assigned to host {host_id}") })
        }
        Err(e) => Some(HostApiError::Unavailable { reason: e.to_string() }),
    }
}

async fn shut_down(mut closing: watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

fn json<T: Serialize>(result: Result<T, HostApiError>) -> Result<Value, HostApiError> {
    result.and_then(|v| {
        serde_json::to_value(v)
            .map_err(|e| HostApiError::Unavailable { reason: format!("cannot encode an answer: {e}") })
    })
}

async fn answer(host: &dyn HostApi, call: Call) -> Result<Value, HostApiError> {
    match call {
        Call::Register { spec } => json(host.register(spec).await),
        Call::Report { report } => json(host.report(*report).await),
        Call::EnsureInterface { task_arn, attachment_id, awsvpc } => {
            json(host.ensure_interface(&task_arn, &attachment_id, &awsvpc).await)
        }
        Call::Interface { task_arn } => json(host.interface(&task_arn).await),
        Call::ReleaseInterface { task_arn } => json(host.release_interface(&task_arn).await),
        Call::Interfaces { host_id } => json(host.interfaces(&host_id).await),
        Call::Vpc { vpc_id } => json(host.vpc(&vpc_id).await),
        Call::TaskSecrets { task_arn } => json(host.task_secrets(&task_arn).await),
        Call::TaskVolumes { task_arn } => json(host.task_volumes(&task_arn).await),
        Call::TaskRoleCredentials { task_arn } => json(host.task_role_credentials(&task_arn).await),
        Call::ReportTargets { reports } => json(host.report_targets(reports).await),
        Call::Heartbeat { host_id } => json(host.heartbeat(&host_id).await),
        Call::EnsureLogGroup { group, create } => json(host.ensure_log_group(&group, create).await),
        Call::PutLogs { group, stream, events } => json(host.put_logs(&group, &stream, events).await),
    }
}

async fn follow(host: &dyn HostApi, watch: Watch, id: u64, tx: mpsc::Sender<Result<ServerFrame, Status>>) {
    match watch {
        Watch::Assignments { host_id, since } => forward(host.assignments(&host_id, since), id, tx).await,
        Watch::Network => forward(host.network_changes(), id, tx).await,
        Watch::LoadBalancers { host_id } => forward(host.load_balancers(&host_id), id, tx).await,
        Watch::ServiceDiscovery => forward(host.service_discovery(), id, tx).await,
    }
}

/// Sends a stream's events down until it closes or the agent is gone.
async fn forward<T: Serialize>(mut events: Events<T>, id: u64, tx: mpsc::Sender<Result<ServerFrame, Status>>) {
    loop {
        let event = events.next().await;
        let closed = matches!(event, Err(HostApiError::Closed));
        if tx.send(Ok(ServerFrame::Event { id, event: json(event) })).await.is_err() || closed {
            return;
        }
    }
}
