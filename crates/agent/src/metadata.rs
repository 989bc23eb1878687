//! The task metadata endpoint (v4), as Fargate serves it at `169.254.170.2`.
//!
//! Each task gets its own listener, bound inside the task's network namespace on an address
//! added to its loopback interface. A container can therefore reach only its own task's
//! metadata, and nothing needs routing between the task and the host. It listens on the ECS
//! agent's port 51679 rather than 80: inside the task's namespace port 80 belongs to the
//! user's containers (a web server binding 0.0.0.0:80 must not collide with us), and
//! containers find the endpoint through `ECS_CONTAINER_METADATA_URI_V4`, which carries the port.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flotilla_types::task::Task;
use flotilla_types::task_definition::TaskDefinition;
use serde_json::{Value, json};

pub const METADATA_ADDR: &str = "169.254.170.2";
pub const METADATA_PORT: u16 = 51679;
pub const METADATA_BASE: &str = "http://169.254.170.2:51679/v4";

/// Where the endpoint reads the live task from.
pub trait MetadataSource: Send + Sync + 'static {
    fn task(&self) -> impl Future<Output = Option<(Task, TaskDefinition)>> + Send;
    fn stats(&self) -> impl Future<Output = Option<flotilla_sandbox::TaskStats>> + Send;
}

/// Binds `169.254.170.2:51679` inside the network namespace at `netns`.
pub fn listen_in_netns(netns: &Path) -> io::Result<std::net::TcpListener> {
    let ip: Ipv4Addr = METADATA_ADDR.parse().map_err(io::Error::other)?;
    let addr = flotilla_net::Ipv4Net::new(ip, 32).map_err(io::Error::other)?;
    flotilla_net::netns::replace_address(netns, "lo", addr).map_err(io::Error::other)?;
    // The socket belongs to the namespace of the thread that creates it; `run_in` enters it
    // on a throwaway thread so the rest of the process never leaves the host's.
    flotilla_net::netns::run_in(netns, || {
        let listener = std::net::TcpListener::bind((ip, METADATA_PORT))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?
}

/// Serves the endpoint on `listener` until the returned handle is aborted.
pub fn serve<S: MetadataSource>(
    listener: std::net::TcpListener,
    source: Arc<S>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new()
        .route("/v4/{container}", get(container::<S>))
        .route("/v4/{container}/task", get(task::<S>))
        .route("/v4/{container}/stats", get(container_stats::<S>))
        .route("/v4/{container}/task/stats", get(task_stats::<S>))
        .with_state(source);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such container in this task").into_response()
}

fn rfc3339(t: Option<flotilla_types::Timestamp>) -> Value {
    t.map(|t| Value::String(t.rfc3339())).unwrap_or(Value::Null)
}

fn container_json(task: &Task, def: &TaskDefinition, name: &str) -> Option<Value> {
    let c = task.containers.iter().find(|c| c.name == name)?;
    let cdef = def.container_definitions.iter().find(|d| d.name.as_deref() == Some(name))?;
    let log = cdef.log_configuration.as_ref();
    let ip = c.network_interfaces.first().and_then(|n| n.private_ipv4_address.clone());
    Some(json!({
        "DockerId": format!("{}-{}", task.id(), name),
        "Name": name,
        "DockerName": format!("ecs-{}-{}-{}", def.family, def.revision, name),
        "Image": c.image,
        "ImageID": c.image_digest,
        "Labels": {
            "com.amazonaws.ecs.cluster": task.cluster_arn,
            "com.amazonaws.ecs.container-name": name,
            "com.amazonaws.ecs.task-arn": task.task_arn,
            "com.amazonaws.ecs.task-definition-family": def.family,
            "com.amazonaws.ecs.task-definition-version": def.revision.to_string(),
        },
        "DesiredStatus": task.desired_status.as_str(),
        "KnownStatus": c.last_status,
        "ExitCode": c.exit_code,
        "Limits": { "CPU": c.cpu.as_deref().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0), "Memory": c.memory.as_deref().and_then(|v| v.parse::<u64>().ok()) },
        "CreatedAt": rfc3339(Some(task.created_at)),
        "StartedAt": rfc3339(task.started_at),
        "Type": "NORMAL",
        "ContainerARN": c.container_arn,
        "LogDriver": log.map(|l| l.log_driver.clone()),
        "LogOptions": log.and_then(|l| l.options.clone()),
        "Health": c.health_status.map(|h| json!({ "status": h })),
        "Networks": [{
            "NetworkMode": "awsvpc",
            "IPv4Addresses": ip.into_iter().collect::<Vec<_>>(),
        }],
    }))
}

/// `<task-id>-<container>` in the URL names the container that is asking.
fn container_name<'a>(task: &Task, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(task.id())?.strip_prefix('-')
}

async fn container<S: MetadataSource>(State(s): State<Arc<S>>, UrlPath(key): UrlPath<String>) -> Response {
    let Some((task, def)) = s.task().await else { return not_found() };
    match container_name(&task, &key).and_then(|n| container_json(&task, &def, n)) {
        Some(v) => axum::Json(v).into_response(),
        None => not_found(),
    }
}

async fn task<S: MetadataSource>(State(s): State<Arc<S>>, UrlPath(key): UrlPath<String>) -> Response {
    let Some((task, def)) = s.task().await else { return not_found() };
    if container_name(&task, &key).is_none() {
        return not_found();
    }
    let containers: Vec<Value> = task.containers.iter().filter_map(|c| container_json(&task, &def, &c.name)).collect();
    let cpu = flotilla_types::parse_cpu(&task.cpu).unwrap_or(0);
    axum::Json(json!({
        "Cluster": task.cluster_arn,
        "TaskARN": task.task_arn,
        "Family": def.family,
        "Revision": def.revision.to_string(),
        "DesiredStatus": task.desired_status.as_str(),
        "KnownStatus": task.last_status.as_str(),
        "Limits": { "CPU": f64::from(cpu) / 1024.0, "Memory": task.memory.parse::<u64>().unwrap_or(0) },
        "PullStartedAt": rfc3339(task.pull_started_at),
        "PullStoppedAt": rfc3339(task.pull_stopped_at),
        "AvailabilityZone": task.availability_zone,
        "LaunchType": "FARGATE",
        "Containers": containers,
        "EphemeralStorageMetrics": {"Utilized": 0, "Reserved": task.ephemeral_storage.as_ref().map(|e| e.size_in_gi_b).unwrap_or(20) * 1024},
    }))
    .into_response()
}

fn stats_json(stats: &flotilla_sandbox::ResourceStats) -> Value {
    json!({
        "read": rfc3339(Some(flotilla_types::Timestamp::now())),
        "cpu_stats": { "cpu_usage": { "total_usage": stats.cpu_usage_ns } },
        "memory_stats": { "usage": stats.memory_usage_bytes, "limit": stats.memory_limit_bytes, "stats": { "working_set": stats.memory_working_set_bytes } },
        "pids_stats": { "current": stats.pids },
    })
}

async fn container_stats<S: MetadataSource>(State(s): State<Arc<S>>, UrlPath(key): UrlPath<String>) -> Response {
    let Some((task, _)) = s.task().await else { return not_found() };
    let Some(name) = container_name(&task, &key) else { return not_found() };
    match s.stats().await.and_then(|st| st.containers.get(name).map(stats_json)) {
        Some(v) => axum::Json(v).into_response(),
        None => not_found(),
    }
}

async fn task_stats<S: MetadataSource>(State(s): State<Arc<S>>, UrlPath(key): UrlPath<String>) -> Response {
    let Some((task, _)) = s.task().await else { return not_found() };
    if container_name(&task, &key).is_none() {
        return not_found();
    }
    let Some(stats) = s.stats().await else { return not_found() };
    let map: serde_json::Map<String, Value> =
        stats.containers.iter().map(|(name, st)| (format!("{}-{name}", task.id()), stats_json(st))).collect();
    axum::Json(Value::Object(map)).into_response()
}
