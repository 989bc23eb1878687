//! A pod as Fargate sees it: what it refuses, how big the pod is, and the ECS task definition
//! that runs it. Pure: the pod's `valueFrom` environment is resolved before it gets here.

use std::collections::BTreeMap;

use flotilla_eks::sizing::{ContainerResources, PodSize, parse_quantity, sizing};
use flotilla_types::task_definition::TaskDefinitionSpec;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use serde_json::{Value, json};

/// What Fargate writes on a pod it refuses, before the reasons.
const UNSUPPORTED: &str = "Pod not supported on Fargate";

/// The resources Fargate has no device for.
const GPU_RESOURCES: [&str; 3] = ["nvidia.com/gpu", "amd.com/gpu", "aws.amazon.com/neuron"];

/// Why Fargate refuses `pod`, in EKS's words (the `FailedScheduling` event's message), or
/// `None` when it can run it.
pub fn refusal(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "DaemonSet") {
        return Some(format!("{UNSUPPORTED}: DaemonSet not supported"));
    }
    let mut fields = Vec::new();
    if spec.host_network == Some(true) {
        fields.push("HostNetwork");
    }
    if spec.host_pid == Some(true) {
        fields.push("HostPID");
    }
    if spec.host_ipc == Some(true) {
        fields.push("HostIPC");
    }
    let containers = || spec.init_containers.iter().flatten().chain(spec.containers.iter());
    if containers().any(|c| c.ports.iter().flatten().any(|p| p.host_port.is_some_and(|h| h != 0))) {
        fields.push("HostPort");
    }
    if !fields.is_empty() {
        return Some(format!("{UNSUPPORTED}: fields not supported: {}", fields.join(", ")));
    }
    if containers().any(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)) {
        return Some(format!("{UNSUPPORTED}: invalid SecurityContext fields: Privileged"));
    }
    for c in containers() {
        let resources = c.resources.as_ref();
        let named = resources
            .into_iter()
            .flat_map(|r| r.requests.iter().flatten().chain(r.limits.iter().flatten()))
            .map(|(name, _)| name.as_str())
            .find(|name| GPU_RESOURCES.contains(name));
        if let Some(name) = named {
            return Some(format!("{UNSUPPORTED}: resources not supported: {name} (container {})", c.name));
        }
    }
    if let Some(volume) = spec.volumes.iter().flatten().find(|v| v.host_path.is_some()) {
        return Some(format!("{UNSUPPORTED}: volumes not supported: {} is of type hostPath", volume.name));
    }
    None
}

/// The pod's Fargate size from its containers' requests (and limits), by Fargate's table
/// (`flotilla_eks::sizing`); a pod too large for Fargate is refused with its message.
pub fn size(pod: &Pod) -> Result<PodSize, String> {
    let resources = |c: &Container| ContainerResources {
        name: c.name.clone(),
        cpu_request: quantity(c, "requests", "cpu").map(str::to_owned),
        cpu_limit: quantity(c, "limits", "cpu").map(str::to_owned),
        memory_request: quantity(c, "requests", "memory").map(str::to_owned),
        memory_limit: quantity(c, "limits", "memory").map(str::to_owned),
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let init: Vec<_> = spec.init_containers.iter().flatten().map(resources).collect();
    let app: Vec<_> = spec.containers.iter().map(resources).collect();
    sizing(&init, &app).map_err(|e| format!("{UNSUPPORTED}: {e}"))
}

/// Where a pod's container output goes: one log group per cluster, one stream per container
/// (`<prefix>/<container>/<task id>`, awslogs' form).
pub fn log_group(cluster: &str) -> String {
    format!("/aws/eks/{cluster}/fargate")
}

pub const LOG_PREFIX: &str = "pod";

/// CPU units (1024 a vCPU), rounded up, from a Kubernetes quantity (`250m`, `0.5`, `2`).
pub fn cpu_units(quantity: &str) -> Option<u32> {
    u32::try_from(parse_quantity(quantity)?.scaled_up(1024)).ok()
}

/// MiB, rounded up, from a Kubernetes quantity (`512Mi`, `1G`, `1Gi`).
pub fn mebibytes(quantity: &str) -> Option<u32> {
    u32::try_from(parse_quantity(quantity)?.scaled_up(1).div_ceil(1024 * 1024)).ok()
}

fn quantity<'a>(c: &'a Container, kind: &str, resource: &str) -> Option<&'a str> {
    let r = c.resources.as_ref()?;
    let map = if kind == "requests" { r.requests.as_ref() } else { r.limits.as_ref() };
    map?.get(resource).map(|q| q.0.as_str())
}

/// An exec probe as an ECS health check (the readiness probe first, else the liveness probe):
/// ECS reports HEALTHY/UNHEALTHY, which the pod's Ready condition follows.
fn health_check(c: &Container) -> Option<Value> {
    let probe: &Probe = c.readiness_probe.as_ref().or(c.liveness_probe.as_ref())?;
    let command = probe.exec.as_ref()?.command.clone()?;
    let mut check = json!({ "command": std::iter::once("CMD".to_string()).chain(command).collect::<Vec<_>>() });
    let clamp = |v: Option<i32>, lo: i32, hi: i32, default: i32| v.unwrap_or(default).clamp(lo, hi);
    check["interval"] = json!(clamp(probe.period_seconds, 5, 300, 10));
    check["timeout"] = json!(clamp(probe.timeout_seconds, 2, 60, 2));
    check["retries"] = json!(clamp(probe.failure_threshold, 1, 10, 3));
    check["startPeriod"] = json!(clamp(probe.initial_delay_seconds, 0, 300, 0));
    Some(check)
}

/// One Kubernetes container as an ECS container definition, limits within the task's size.
fn container(c: &Container, size: &PodSize, init: bool, logs: &Value) -> Value {
    let mut out = json!({
        "name": c.name,
        "image": c.image.clone().unwrap_or_default(),
        "essential": !init,
        "logConfiguration": logs,
    });
    if let Some(command) = &c.command {
        out["entryPoint"] = json!(command);
    }
    if let Some(args) = &c.args {
        out["command"] = json!(args);
    }
    let env: Vec<Value> =
        c.env.iter().flatten().filter_map(|e| Some(json!({"name": e.name, "value": e.value.as_ref()?}))).collect();
    if !env.is_empty() {
        out["environment"] = json!(env);
    }
    let ports: Vec<Value> = c
        .ports
        .iter()
        .flatten()
        .map(|p| {
            json!({
                "containerPort": p.container_port,
                "protocol": p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
            })
        })
        .collect();
    if !ports.is_empty() {
        out["portMappings"] = json!(ports);
    }
    // Reservations are the app containers': they run together and their sum is what the pod
    // was sized by. An init container runs alone before them, so ECS's rule that the
    // containers' reservations fit the task together would count it twice; the task's size
    // (at least the largest init container's) is its bound.
    let request = |r: &str| quantity(c, "requests", r).or_else(|| quantity(c, "limits", r));
    if !init && let Some(cpu) = request("cpu").and_then(cpu_units) {
        out["cpu"] = json!(cpu.min(size.cpu));
    }
    if !init && let Some(reserved) = request("memory").and_then(mebibytes) {
        out["memoryReservation"] = json!(reserved.clamp(4, size.memory));
    }
    if !init && let Some(limit) = quantity(c, "limits", "memory").and_then(mebibytes) {
        out["memory"] = json!(limit.clamp(6, size.memory));
    }
    let mounts: Vec<Value> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| json!({"sourceVolume": m.name, "containerPath": m.mount_path, "readOnly": m.read_only.unwrap_or(false)}))
        .collect();
    if !mounts.is_empty() {
        out["mountPoints"] = json!(mounts);
    }
    if let Some(dir) = &c.working_dir {
        out["workingDirectory"] = json!(dir);
    }
    if let Some(user) = c.security_context.as_ref().and_then(|s| s.run_as_user) {
        out["user"] = json!(user.to_string());
    }
    if !init && let Some(check) = health_check(c) {
        out["healthCheck"] = check;
    }
    out
}

/// The task definition that runs `pod` (family `family`): app containers essential, init
/// containers run first, one after another, each to success (`dependsOn`), emptyDir volumes as
/// task volumes, and configMap, secret, downwardAPI and projected volumes as task volumes the
/// agent fills with their files (`files.rs`), mounted read-only. Mounts with a `subPath` are
/// not made.
pub fn task_definition(pod: &Pod, family: &str, size: &PodSize, cluster: &str, region: &str) -> TaskDefinitionSpec {
    let spec = pod.spec.clone().unwrap_or_default();
    let logs = json!({
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": log_group(cluster),
            "awslogs-region": region,
            "awslogs-stream-prefix": LOG_PREFIX,
            "awslogs-create-group": "true",
        }
    });
    let empty_dirs: BTreeMap<String, Value> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.empty_dir.is_some() || super::files::is_file_volume(v))
        .map(|v| (v.name.clone(), json!({"name": v.name})))
        .collect();
    let file_volumes: std::collections::BTreeSet<&str> =
        spec.volumes.iter().flatten().filter(|v| super::files::is_file_volume(v)).map(|v| v.name.as_str()).collect();
    let keep_mounts = |c: &Container| {
        let mut c = c.clone();
        if let Some(mounts) = c.volume_mounts.as_mut() {
            // ECS mount points mount a whole volume: a subPath mount has no equivalent yet.
            mounts.retain(|m| empty_dirs.contains_key(&m.name) && m.sub_path.as_deref().unwrap_or("").is_empty());
            for m in mounts.iter_mut().filter(|m| file_volumes.contains(m.name.as_str())) {
                // As a kubelet mounts them: always read-only.
                m.read_only = Some(true);
            }
        }
        c
    };
    let mut containers = Vec::new();
    let mut previous: Option<String> = None;
    for c in spec.init_containers.iter().flatten() {
        let mut def = container(&keep_mounts(c), size, true, &logs);
        if let Some(before) = &previous {
            def["dependsOn"] = json!([{"containerName": before, "condition": "SUCCESS"}]);
        }
        previous = Some(c.name.clone());
        containers.push(def);
    }
    for c in &spec.containers {
        let mut def = container(&keep_mounts(c), size, false, &logs);
        if let Some(before) = &previous {
            def["dependsOn"] = json!([{"containerName": before, "condition": "SUCCESS"}]);
        }
        if let Some(grace) = spec.termination_grace_period_seconds {
            def["stopTimeout"] = json!(grace.clamp(2, 120));
        }
        containers.push(def);
    }
    // Limits above requests may add up past the task's memory, which ECS refuses; the task's
    // own limit then bounds them together, as it bounds the pod.
    let limits: u32 = containers.iter().filter_map(|c| c["memory"].as_u64()).map(|m| m as u32).sum();
    if limits > size.memory {
        for c in &mut containers {
            if let Some(obj) = c.as_object_mut() {
                obj.remove("memory");
            }
        }
    }
    let definition = json!({
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": size.cpu.to_string(),
        "memory": size.memory.to_string(),
        "containerDefinitions": containers,
        "volumes": empty_dirs.into_values().collect::<Vec<_>>(),
    });
    serde_json::from_value(definition).expect("a task definition built from its own fields")
}

#[cfg(test)]
mod tests;
