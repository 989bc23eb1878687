//! The task metadata endpoint (v4) documents, as Fargate serves them at
//! `http://169.254.170.2/v4/<container>`: the container, the task, and their stats. The
//! endpoint itself (one listener on the host side of every task's interface, which knows the
//! task by the connection's source) is `endpoint.rs`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flotilla_types::task::Task;
use flotilla_types::task_definition::TaskDefinition;
use serde_json::{Value, json};

/// What `ECS_CONTAINER_METADATA_URI_V4` starts with (the container's id follows).
pub const METADATA_BASE: &str = "http://169.254.170.2/v4";
/// Where containers call Flotilla's API (`AWS_ENDPOINT_URL`): the task endpoint, which serves
/// it when the API runs in the agent's process.
pub const API_ENDPOINT: &str = "http://169.254.170.2";

pub(crate) fn not_found() -> Response {
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

/// `GET /v4/<key>`: the asking container.
pub(crate) fn container(task: &Task, def: &TaskDefinition, key: &str) -> Response {
    match container_name(task, key).and_then(|n| container_json(task, def, n)) {
        Some(v) => axum::Json(v).into_response(),
        None => not_found(),
    }
}

/// `GET /v4/<key>/task`: the task and every container of it.
pub(crate) fn task(task: &Task, def: &TaskDefinition, key: &str) -> Response {
    if container_name(task, key).is_none() {
        return not_found();
    }
    let containers: Vec<Value> = task.containers.iter().filter_map(|c| container_json(task, def, &c.name)).collect();
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

/// `GET /v4/<key>/stats`: the asking container's stats.
pub(crate) fn container_stats(task: &Task, key: &str, stats: Option<&flotilla_sandbox::TaskStats>) -> Response {
    let Some(name) = container_name(task, key) else { return not_found() };
    match stats.and_then(|st| st.containers.get(name).map(stats_json)) {
        Some(v) => axum::Json(v).into_response(),
        None => not_found(),
    }
}

/// `GET /v4/<key>/task/stats`: every container's stats, by container id.
pub(crate) fn task_stats(task: &Task, key: &str, stats: Option<&flotilla_sandbox::TaskStats>) -> Response {
    if container_name(task, key).is_none() {
        return not_found();
    }
    let Some(stats) = stats else { return not_found() };
    let map: serde_json::Map<String, Value> =
        stats.containers.iter().map(|(name, st)| (format!("{}-{name}", task.id()), stats_json(st))).collect();
    axum::Json(Value::Object(map)).into_response()
}
