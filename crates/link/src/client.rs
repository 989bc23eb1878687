//! The agent's end: [`RemoteHostApi`] implements the host API over one stream to any of the
//! servers, and keeps it whole across reconnects.
//!
//! Calls without an answer are sent again on the next connection (every call is safe to
//! repeat: reports merge monotonically, interfaces are per task). Watches are opened again:
//! the assignment stream from the newest revision received, so the agent is neither told a
//! change twice nor misses one. While no server is reachable, calls fail with `Unavailable`
//! within [`UNREACHABLE_AFTER`]: the agent's fence relies on heartbeats failing fast.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_host::discovery::{DiscoverySnapshot, DiscoveryWatch};
use flotilla_host::lb::{LbSnapshot, LbWatch, TargetReport};
use flotilla_host::{
    AssignmentEvent, AssignmentWatch, BoxFuture, Events, Host, HostApi, HostApiError, HostSpec, InterfaceLease,
    LogEvent, NetworkChanged, NetworkWatch, TaskReport, TaskSecrets, TaskVolumes, VpcView,
};
use flotilla_types::task::{AwsvpcConfiguration, Task};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;

use crate::exec::AgentExec;
use crate::protocol::{AgentFrame, CONNECT_PATH, Call, HOST_HEADER, JsonCodec, ServerFrame, Watch};

/// How long calls wait for a server while none is reachable before failing `Unavailable`.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(1);
/// How long a call waits for its answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Heartbeats must fail fast: a host whose servers do not answer is on its way to its fence.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings find a server that vanished without closing the connection.
const KEEPALIVE: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// How often a refused token is tried again (an operator may have re-added the host).
const REFUSED_RETRY: Duration = Duration::from_secs(5);

/// The link as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    Connected {
        server: String,
    },
    /// No server reachable since `since`.
    Down {
        since: Instant,
        reason: String,
    },
    /// A server refused the host's token; `reason` says what to do.
    Refused {
        reason: String,
    },
}

struct Pending {
    call: Call,
    reply: oneshot::Sender<Result<Value, HostApiError>>,
    /// Sent on a connection (which may have been lost since).
    sent: bool,
}

/// Where a watch's events go: decoded by the reader, which must never wait on the agent.
enum Sink {
    Assignments(mpsc::UnboundedSender<Result<AssignmentEvent, HostApiError>>),
    Network(mpsc::UnboundedSender<Result<NetworkChanged, HostApiError>>),
    LoadBalancers(mpsc::UnboundedSender<Result<LbSnapshot, HostApiError>>),
    ServiceDiscovery(mpsc::UnboundedSender<Result<DiscoverySnapshot, HostApiError>>),
}

struct Following {
    /// As it is opened again after a reconnect (assignments: from the newest revision).
    watch: Watch,
    sink: Sink,
}

#[derive(Default)]
struct State {
    /// The current connection's outbound frames; `None` while disconnected.
    out: Option<mpsc::UnboundedSender<AgentFrame>>,
    pending: HashMap<u64, Pending>,
    watches: HashMap<u64, Following>,
}

struct Shared {
    host_id: String,
    state: Mutex<State>,
    next_id: AtomicU64,
    status: watch::Sender<LinkStatus>,
    exec: AgentExec,
}

/// The host API of a remote control plane, over one authenticated stream to any of
/// `servers`. Dropping it closes the stream.
pub struct RemoteHostApi {
    shared: Arc<Shared>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for RemoteHostApi {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl RemoteHostApi {
    /// Starts connecting (in the background) to the first reachable of `servers`
    /// (`http://host:port`, or `host:port`) as `host_id` with its token.
    pub fn connect(servers: Vec<String>, host_id: impl Into<String>, token: impl Into<String>) -> RemoteHostApi {
        let servers: Vec<String> =
            servers.into_iter().map(|s| if s.contains("://") { s } else { format!("http://{s}") }).collect();
        let (status, _) =
            watch::channel(LinkStatus::Down { since: Instant::now(), reason: "not connected yet".to_owned() });
        let shared = Arc::new(Shared {
            host_id: host_id.into(),
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            status,
            exec: AgentExec::default(),
        });
        let driver = tokio::spawn(drive(shared.clone(), servers, token.into()));
        RemoteHostApi { shared, driver }
    }

    /// Serves the servers' exec sessions (ECS Exec in this host's containers) with `target`.
    pub fn serve_exec(&self, target: Arc<dyn flotilla_host::exec::ExecTarget>) {
        self.shared.exec.serve(target);
    }

    /// The link's state, now and as it changes.
    pub fn status(&self) -> watch::Receiver<LinkStatus> {
        self.shared.status.subscribe()
    }

    /// Waits for a connection; the status that stood at `within` otherwise.
    pub async fn connected(&self, within: Duration) -> Result<(), LinkStatus> {
        let mut status = self.status();
        let outcome = tokio::time::timeout(within, async {
            loop {
                match &*status.borrow_and_update() {
                    LinkStatus::Connected { .. } => return Ok(()),
                    refused @ LinkStatus::Refused { .. } => return Err(refused.clone()),
                    LinkStatus::Down { .. } => {}
                }
                if status.changed().await.is_err() {
                    return Err(LinkStatus::Refused { reason: "the link stopped".to_owned() });
                }
            }
        })
        .await;
        outcome.unwrap_or_else(|_| Err(status.borrow().clone()))
    }

    async fn call<T: DeserializeOwned>(&self, call: Call) -> Result<T, HostApiError> {
        let timeout = if matches!(call, Call::Heartbeat { .. }) { HEARTBEAT_TIMEOUT } else { CALL_TIMEOUT };
        let value = self.shared.call(call, timeout).await?;
        serde_json::from_value(value)
            .map_err(|e| HostApiError::Unavailable { reason: format!("the server's answer is malformed: {e}") })
    }

    fn follow<T: Send + 'static>(
        &self,
        watch: Watch,
        sink: impl FnOnce(mpsc::UnboundedSender<Result<T, HostApiError>>) -> Sink,
    ) -> Events<T> {
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::channel(64);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = self.shared.state.lock().expect("link state poisoned");
            if let Some(out) = &state.out {
                let _ = out.send(AgentFrame::Watch { id, watch: watch.clone() });
            }
            state.watches.insert(id, Following { watch, sink: sink(raw_tx) });
        }
        // Hands events to the agent at its pace; the reader never waits on it.
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            while let Some(event) = raw_rx.recv().await {
                let closed = matches!(event, Err(HostApiError::Closed));
                if tx.send(event).await.is_err() || closed {
                    break;
                }
            }
            if let Some(shared) = shared.upgrade() {
                shared.unwatch(id);
            }
        });
        Events::new(rx)
    }
}

/// Removes a pending call whose caller gave up.
struct Forget<'a>(&'a Shared, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("link state poisoned").pending.remove(&self.1);
    }
}

impl Shared {
    async fn call(&self, call: Call, timeout: Duration) -> Result<Value, HostApiError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut state = self.state.lock().expect("link state poisoned");
            let sent = match &state.out {
                Some(out) => out.send(AgentFrame::Call { id, call: call.clone() }).is_ok(),
                None => false,
            };
            state.pending.insert(id, Pending { call, reply, sent });
        }
        let _forget = Forget(self, id);
        let mut status = self.status.subscribe();
        tokio::select! {
            answer = answer => answer.unwrap_or(Err(HostApiError::Closed)),
            _ = tokio::time::sleep(timeout) => Err(HostApiError::Unavailable {
                reason: format!("no answer from the server within {timeout:?}"),
            }),
            reason = unreachable(&mut status) => Err(HostApiError::Unavailable { reason }),
        }
    }

    fn unwatch(&self, id: u64) {
        let mut state = self.state.lock().expect("link state poisoned");
        if state.watches.remove(&id).is_some()
            && let Some(out) = &state.out
        {
            let _ = out.send(AgentFrame::Unwatch { id });
        }
    }

    /// A new connection: watches are opened again and unanswered calls sent again.
    fn attach(&self, out: mpsc::UnboundedSender<AgentFrame>, server: &str) {
        let mut state = self.state.lock().expect("link state poisoned");
        for (id, following) in &state.watches {
            let _ = out.send(AgentFrame::Watch { id: *id, watch: following.watch.clone() });
            // Changes to VPCs and groups during the gap were not seen: one tick covers them.
            if let Sink::Network(sink) = &following.sink {
                let _ = sink.send(Ok(NetworkChanged));
            }
        }
        for (id, pending) in &mut state.pending {
            let _ = out.send(AgentFrame::Call { id: *id, call: pending.call.clone() });
            pending.sent = true;
        }
        state.out = Some(out);
        drop(state);
        self.status.send_replace(LinkStatus::Connected { server: server.to_owned() });
    }

    fn detach(&self, reason: String) {
        // Sessions live as long as their connection.
        self.exec.end_all();
        let mut state = self.state.lock().expect("link state poisoned");
        state.out = None;
        // A call sent on the lost connection that may not be repeated fails now (its caller
        // retries knowing it may have been applied); the others are sent again on the next.
        let unrepeatable: Vec<u64> =
            state.pending.iter().filter(|(_, p)| p.sent && !p.call.repeatable()).map(|(id, _)| *id).collect();
        for id in unrepeatable {
            if let Some(p) = state.pending.remove(&id) {
                let _ = p.reply.send(Err(HostApiError::Unavailable {
                    reason: format!("the connection was lost before the server answered: {reason}"),
                }));
            }
        }
        drop(state);
        self.status.send_modify(|status| {
            if matches!(status, LinkStatus::Connected { .. }) {
                *status = LinkStatus::Down { since: Instant::now(), reason };
            }
        });
    }

    fn receive(&self, frame: ServerFrame) {
        let mut state = self.state.lock().expect("link state poisoned");
        match frame {
            frame @ (ServerFrame::Exec { .. } | ServerFrame::ExecInput { .. } | ServerFrame::ExecEnd { .. }) => {
                // Frames of a session go out on the connection it came in on.
                let out = state.out.clone();
                drop(state);
                self.exec.receive(frame, move |f| {
                    if let Some(out) = &out {
                        let _ = out.send(f);
                    }
                });
            }
            ServerFrame::Answer { id, result } => {
                if let Some(pending) = state.pending.remove(&id) {
                    let _ = pending.reply.send(result);
                }
            }
            ServerFrame::Event { id, event } => {
                let Some(following) = state.watches.get_mut(&id) else { return };
                let closed = matches!(event, Err(HostApiError::Closed));
                match &following.sink {
                    Sink::Assignments(sink) => {
                        let event = decode::<AssignmentEvent>(event);
                        if let (Ok(e), Watch::Assignments { since, .. }) = (&event, &mut following.watch) {
                            *since = (*since).max(Some(revision(e)));
                        }
                        let _ = sink.send(event);
                    }
                    Sink::Network(sink) => {
                        let _ = sink.send(decode(event));
                    }
                    Sink::LoadBalancers(sink) => {
                        let _ = sink.send(decode(event));
                    }
                    Sink::ServiceDiscovery(sink) => {
                        let _ = sink.send(decode(event));
                    }
                }
                // The server ended the stream: the agent follows it again if it wants to.
                if closed {
                    state.watches.remove(&id);
                }
            }
        }
    }
}

fn decode<T: DeserializeOwned>(event: Result<Value, HostApiError>) -> Result<T, HostApiError> {
    event.and_then(|v| {
        serde_json::from_value(v)
            .map_err(|e| HostApiError::Unavailable { reason: format!("the server sent a malformed event: {e}") })
    })
}

fn revision(event: &AssignmentEvent) -> u64 {
    match event {
        AssignmentEvent::Snapshot { revision, .. } | AssignmentEvent::Removed { revision, .. } => *revision,
        AssignmentEvent::Changed { assignment } => assignment.revision,
    }
}

/// Resolves, with the reason, once no server has been reachable for [`UNREACHABLE_AFTER`]
/// (at once if the token was refused).
async fn unreachable(status: &mut watch::Receiver<LinkStatus>) -> String {
    loop {
        let now = status.borrow_and_update().clone();
        match now {
            LinkStatus::Connected { .. } => {}
            LinkStatus::Refused { reason } => return reason,
            LinkStatus::Down { since, reason } => {
                tokio::select! {
                    _ = tokio::time::sleep_until(since + UNREACHABLE_AFTER) => {
                        return format!("no server reachable: {reason}");
                    }
                    _ = status.changed() => continue,
                }
            }
        }
        if status.changed().await.is_err() {
            return "the link stopped".to_owned();
        }
    }
}

enum ConnectError {
    Refused(String),
    Unreachable(String),
}

/// Connects to the servers in turn, forever, and reads each connection until it ends.
async fn drive(shared: Arc<Shared>, servers: Vec<String>, token: String) {
    let mut backoff = MIN_BACKOFF;
    let mut next = 0;
    loop {
        let server = &servers[next % servers.len()];
        match connect(server, &shared.host_id, &token).await {
            Ok((inbound, out)) => {
                tracing::info!(server, "connected to the control plane");
                backoff = MIN_BACKOFF;
                shared.attach(out, server);
                let reason = read(&shared, inbound).await;
                tracing::warn!(server, reason = %reason, "lost the control plane; reconnecting");
                shared.detach(reason);
                // Another server first: this one may be the one that went away.
                next += 1;
            }
            Err(ConnectError::Refused(reason)) => {
                let changed = shared.status.send_if_modified(|status| {
                    let refused = LinkStatus::Refused { reason: reason.clone() };
                    let changed = *status != refused;
                    *status = refused;
                    changed
                });
                if changed {
                    tracing::error!(server, "the server refused this host's token: {reason}");
                }
                tokio::time::sleep(REFUSED_RETRY).await;
            }
            Err(ConnectError::Unreachable(reason)) => {
                tracing::debug!(server, reason = %reason, "cannot reach the server");
                shared.status.send_modify(|status| match status {
                    LinkStatus::Down { reason: r, .. } => *r = reason.clone(),
                    _ => *status = LinkStatus::Down { since: Instant::now(), reason: reason.clone() },
                });
                next += 1;
                if next % servers.len() == 0 {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Reads a connection's frames until it ends; returns why it did.
async fn read(shared: &Shared, mut inbound: Streaming<ServerFrame>) -> String {
    loop {
        match inbound.message().await {
            Ok(Some(frame)) => shared.receive(frame),
            Ok(None) => return "the server closed the stream".to_owned(),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                let reason = status.message().to_owned();
                tracing::error!("the server closed the stream: {reason}");
                shared.status.send_replace(LinkStatus::Refused { reason: reason.clone() });
                return reason;
            }
            Err(status) => return status.message().to_owned(),
        }
    }
}

async fn connect(
    server: &str,
    host_id: &str,
    token: &str,
) -> Result<(Streaming<ServerFrame>, mpsc::UnboundedSender<AgentFrame>), ConnectError> {
    let unreachable = |e: &dyn std::fmt::Display| ConnectError::Unreachable(format!("{server}: {e}"));
    let endpoint = tonic::transport::Endpoint::from_shared(server.to_owned())
        .map_err(|e| unreachable(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(|e| unreachable(&source_chain(&e)))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| unreachable(&source_chain(&e)))?;
    let (out, outbound) = mpsc::unbounded_channel();
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(outbound));
    let header = |v: String| {
        v.parse().map_err(|_| ConnectError::Refused("the host id or token is not a valid header value".to_owned()))
    };
    request.metadata_mut().insert("authorization", header(format!("Bearer {token}"))?);
    request.metadata_mut().insert(HOST_HEADER, header(host_id.to_owned())?);
    let path = http::uri::PathAndQuery::from_static(CONNECT_PATH);
    let opened = tokio::time::timeout(
        CONNECT_TIMEOUT * 3,
        grpc.streaming(request, path, JsonCodec::<AgentFrame, ServerFrame>::default()),
    )
    .await
    .map_err(|_| unreachable(&"the stream did not open in time"))?;
    match opened {
        Ok(response) => Ok((response.into_inner(), out)),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            Err(ConnectError::Refused(status.message().to_owned()))
        }
        Err(status) => Err(unreachable(&status.message())),
    }
}

/// An error with its causes, for a connection error whose top level says only "transport error".
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl HostApi for RemoteHostApi {
    fn register(&self, spec: HostSpec) -> BoxFuture<'_, Result<Host, HostApiError>> {
        Box::pin(self.call(Call::Register { spec }))
    }

    fn assignments(&self, host_id: &str, since: Option<u64>) -> AssignmentWatch {
        self.follow(Watch::Assignments { host_id: host_id.to_owned(), since }, Sink::Assignments)
    }

    fn report(&self, report: TaskReport) -> BoxFuture<'_, Result<Task, HostApiError>> {
        Box::pin(self.call(Call::Report { report: Box::new(report) }))
    }

    fn ensure_interface<'a>(
        &'a self,
        task_arn: &'a str,
        attachment_id: &'a str,
        awsvpc: &'a AwsvpcConfiguration,
    ) -> BoxFuture<'a, Result<InterfaceLease, HostApiError>> {
        Box::pin(self.call(Call::EnsureInterface {
            task_arn: task_arn.to_owned(),
            attachment_id: attachment_id.to_owned(),
            awsvpc: awsvpc.clone(),
        }))
    }

    fn interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<Option<InterfaceLease>, HostApiError>> {
        Box::pin(self.call(Call::Interface { task_arn: task_arn.to_owned() }))
    }

    fn release_interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(self.call(Call::ReleaseInterface { task_arn: task_arn.to_owned() }))
    }

    fn interfaces<'a>(&'a self, host_id: &'a str) -> BoxFuture<'a, Result<Vec<InterfaceLease>, HostApiError>> {
        Box::pin(self.call(Call::Interfaces { host_id: host_id.to_owned() }))
    }

    fn vpc<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<Option<VpcView>, HostApiError>> {
        Box::pin(self.call(Call::Vpc { vpc_id: vpc_id.to_owned() }))
    }

    fn network_changes(&self) -> NetworkWatch {
        self.follow(Watch::Network, Sink::Network)
    }

    fn task_secrets<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<TaskSecrets, HostApiError>> {
        Box::pin(self.call(Call::TaskSecrets { task_arn: task_arn.to_owned() }))
    }

    fn task_volumes<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<TaskVolumes, HostApiError>> {
        Box::pin(self.call(Call::TaskVolumes { task_arn: task_arn.to_owned() }))
    }

    fn task_role_credentials<'a>(
        &'a self,
        task_arn: &'a str,
    ) -> BoxFuture<'a, Result<flotilla_host::RoleCredentials, HostApiError>> {
        Box::pin(self.call(Call::TaskRoleCredentials { task_arn: task_arn.to_owned() }))
    }

    fn load_balancers(&self, host_id: &str) -> LbWatch {
        self.follow(Watch::LoadBalancers { host_id: host_id.to_owned() }, Sink::LoadBalancers)
    }

    fn report_targets(&self, reports: Vec<TargetReport>) -> BoxFuture<'_, Result<(), HostApiError>> {
        Box::pin(self.call(Call::ReportTargets { reports }))
    }

    fn heartbeat<'a>(&'a self, host_id: &'a str) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(self.call(Call::Heartbeat { host_id: host_id.to_owned() }))
    }

    fn service_discovery(&self) -> DiscoveryWatch {
        self.follow(Watch::ServiceDiscovery, Sink::ServiceDiscovery)
    }

    fn ensure_log_group<'a>(&'a self, group: &'a str, create: bool) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(self.call(Call::EnsureLogGroup { group: group.to_owned(), create }))
    }

    fn put_logs<'a>(
        &'a self,
        group: &'a str,
        stream: &'a str,
        events: Vec<LogEvent>,
    ) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(self.call(Call::PutLogs { group: group.to_owned(), stream: stream.to_owned(), events }))
    }
}
