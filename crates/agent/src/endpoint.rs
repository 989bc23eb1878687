//! The task endpoint at `http://169.254.170.2` (port 80), as Fargate serves it: the v4 task
//! metadata (`/v4/<container id>...`, also under `/v3/`) and the task role's credentials
//! (`/v2/credentials/<id>`, the container credentials provider every AWS SDK reads when
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is set).
//!
//! Every other request goes to Flotilla's AWS API when the agent runs in the same process as
//! the API server (`flotilla up`): containers get `AWS_ENDPOINT_URL=http://169.254.170.2`, so an
//! unmodified SDK reaches the API here, as the task (the connection's source address is the
//! task's, which the API sees as `aws:SourceIp`) and signed with the task role's credentials;
//! the API authenticates and authorises it as it does any request. Elsewhere (an agent on
//! another host) those requests get a JSON 404 saying the API is not served on this host.
//!
//! One listener serves every task of the host, on the host side of the tasks' interfaces
//! (`flotilla_net`'s task endpoint address; a task's own port 80 stays its own). It knows the
//! asking task by the connection's source address: each task's address is its interface's,
//! which the data plane's anti-spoofing guarantees, and a host's VPCs never overlap. A task sees
//! only its own metadata, and a credential id is served only to the task it belongs to.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flotilla_host::{HostApi, HostApiError};
use flotilla_types::task::Task;
use flotilla_types::task_definition::TaskDefinition;
use serde_json::json;

use crate::credentials::Credentials;
use crate::metadata;

/// Where the endpoint reads a live task and its stats from (the agent).
pub(crate) trait Source: Send + Sync + 'static {
    fn task(&self, task_arn: &str) -> Option<(Task, TaskDefinition)>;
    fn stats(&self, task_id: &str) -> impl Future<Output = Option<flotilla_sandbox::TaskStats>> + Send;
    fn host(&self) -> &dyn HostApi;
}

#[derive(Clone, Debug)]
struct Caller {
    task_id: String,
    task_arn: String,
    /// `None` for a task without a task role.
    credential_id: Option<String>,
}

/// The tasks the endpoint serves, by address, and their credentials.
pub(crate) struct Endpoint {
    tasks: RwLock<HashMap<Ipv4Addr, Caller>>,
    credentials: Credentials,
}

/// A task served while this lives.
pub(crate) struct Registration {
    endpoint: Arc<Endpoint>,
    ip: Ipv4Addr,
    task_arn: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut tasks = self.endpoint.tasks.write().expect("endpoint table poisoned");
        // The address may be another task's already (its interface was released first).
        if tasks.get(&self.ip).is_some_and(|c| c.task_arn == self.task_arn) {
            tasks.remove(&self.ip);
        }
        drop(tasks);
        self.endpoint.credentials.forget(&self.task_arn);
    }
}

impl Endpoint {
    /// Credential ids keyed by the key in `state_dir`.
    pub fn new(state_dir: &Path) -> Arc<Endpoint> {
        Arc::new(Endpoint { tasks: RwLock::new(HashMap::new()), credentials: Credentials::open(state_dir) })
    }

    /// The relative URI of the task's credentials, for its containers' environment.
    pub fn credentials_uri(&self, task_arn: &str) -> String {
        format!("/v2/credentials/{}", self.credentials.id(task_arn))
    }

    /// Serves the task at `ip` until the registration is dropped; `role`: it has a task role.
    pub fn register(self: &Arc<Self>, ip: Ipv4Addr, task: &Task, role: bool) -> Registration {
        let caller = Caller {
            task_id: task.id().to_owned(),
            task_arn: task.task_arn.clone(),
            credential_id: role.then(|| self.credentials.id(&task.task_arn)),
        };
        self.tasks.write().expect("endpoint table poisoned").insert(ip, caller);
        Registration { endpoint: self.clone(), ip, task_arn: task.task_arn.clone() }
    }

    /// Fetches the task's credentials ahead of its containers' first ask (failures are the
    /// containers' to see, when they ask).
    pub async fn prefetch(&self, host: &dyn HostApi, task_arn: &str) {
        if let Err(e) = self.credentials.get(host, task_arn).await {
            tracing::warn!(task = task_arn, error = %e, "no task role credentials yet");
        }
    }

    fn caller(&self, peer: SocketAddr) -> Option<Caller> {
        let SocketAddr::V4(peer) = peer else { return None };
        self.tasks.read().expect("endpoint table poisoned").get(peer.ip()).cloned()
    }
}

struct Served<S> {
    endpoint: Arc<Endpoint>,
    source: Arc<S>,
}

impl<S> Clone for Served<S> {
    fn clone(&self) -> Self {
        Served { endpoint: self.endpoint.clone(), source: self.source.clone() }
    }
}

/// Serves the endpoint on `listener` until the returned handle is aborted; every request it
/// does not answer itself goes to `api` (Flotilla's AWS API, in-process) when given.
pub(crate) fn serve<S: Source>(
    listener: std::net::TcpListener,
    endpoint: Arc<Endpoint>,
    source: Arc<S>,
    api: Option<Router>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut app = Router::new().route("/v2/credentials/{id}", get(credentials::<S>));
    for version in ["v3", "v4"] {
        app = app
            .route(&format!("/{version}/{{container}}"), get(container::<S>))
            .route(&format!("/{version}/{{container}}/task"), get(task::<S>))
            .route(&format!("/{version}/{{container}}/stats"), get(container_stats::<S>))
            .route(&format!("/{version}/{{container}}/task/stats"), get(task_stats::<S>));
    }
    let app = match api {
        Some(api) => app.fallback_service(api),
        None => app.fallback(api_not_served),
    };
    let app = app.with_state(Served { endpoint, source });
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    }))
}

/// Without the API in this process (an agent on another host than the API servers).
async fn api_not_served() -> Response {
    let message = "Flotilla's AWS API is not served at the task endpoint on this host (its agent does not run \
                   in the API server's process); call the API servers' address instead";
    (StatusCode::NOT_FOUND, axum::Json(json!({"__type": "UnknownOperationException", "message": message})))
        .into_response()
}

/// The error shape ECS's agent answers credential requests with.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"code": code, "message": message, "HTTPErrorCode": status.as_u16()}))).into_response()
}

async fn credentials<S: Source>(
    State(s): State<Served<S>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let invalid =
        || refusal(StatusCode::BAD_REQUEST, "InvalidIdInRequest", "CredentialsV2Request: Credentials not found");
    // Only the task the id belongs to, from its own address, gets its credentials.
    let Some(caller) = s.endpoint.caller(peer) else { return invalid() };
    let Some(own) = caller.credential_id.as_deref() else { return invalid() };
    if !constant_time_eq(own.as_bytes(), id.as_bytes()) {
        return invalid();
    }
    match s.endpoint.credentials.get(s.source.host(), &caller.task_arn).await {
        Ok(c) => axum::Json(json!({
            "RoleArn": c.role_arn,
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key,
            "Token": c.session_token,
            "Expiration": c.expiration.rfc3339(),
        }))
        .into_response(),
        Err(HostApiError::Refused { reason }) => refusal(StatusCode::FORBIDDEN, "AccessDenied", &reason),
        Err(e) => refusal(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", &e.to_string()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The asking task as recorded (its id, the task, its definition).
fn asking<S: Source>(s: &Served<S>, peer: SocketAddr) -> Option<(String, Task, TaskDefinition)> {
    let caller = s.endpoint.caller(peer)?;
    let (task, def) = s.source.task(&caller.task_arn)?;
    Some((caller.task_id, task, def))
}

async fn container<S: Source>(
    State(s): State<Served<S>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(key): UrlPath<String>,
) -> Response {
    match asking(&s, peer) {
        Some((_, task, def)) => metadata::container(&task, &def, &key),
        None => metadata::not_found(),
    }
}

async fn task<S: Source>(
    State(s): State<Served<S>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(key): UrlPath<String>,
) -> Response {
    match asking(&s, peer) {
        Some((_, task, def)) => metadata::task(&task, &def, &key),
        None => metadata::not_found(),
    }
}

async fn container_stats<S: Source>(
    State(s): State<Served<S>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(key): UrlPath<String>,
) -> Response {
    match asking(&s, peer) {
        Some((id, task, _)) => metadata::container_stats(&task, &key, s.source.stats(&id).await.as_ref()),
        None => metadata::not_found(),
    }
}

async fn task_stats<S: Source>(
    State(s): State<Served<S>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(key): UrlPath<String>,
) -> Response {
    match asking(&s, peer) {
        Some((id, task, _)) => metadata::task_stats(&task, &key, s.source.stats(&id).await.as_ref()),
        None => metadata::not_found(),
    }
}
