//! What the scheduler writes to the API server: the Fargate node of a pod, its lease, the
//! binding, events, and the pod's status as its task's record says.

use std::net::{IpAddr, Ipv4Addr};

use flotilla_types::Timestamp;
use flotilla_types::task::{ContainerStatus, HealthStatus, Task, TaskStatus};
use flotilla_types::task_definition::is_liveness_failure;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// The version the nodes report (`kubectl get nodes` VERSION), EKS's form.
pub const KUBELET_VERSION: &str = "v1.20.2-eks-flotilla";

/// `fargate-ip-10-0-1-5.us-east-1.compute.internal`.
pub fn node_name(ip: Ipv4Addr, region: &str) -> String {
    let [a, b, c, d] = ip.octets();
    format!("fargate-ip-{a}-{b}-{c}-{d}.{region}.compute.internal")
}

/// Kubernetes' `Time` (seconds) for a Flotilla timestamp.
pub fn time(t: Timestamp) -> String {
    let text = t.rfc3339();
    format!("{}Z", &text[..19])
}

/// Kubernetes' `MicroTime`.
pub fn micro_time(t: Timestamp) -> String {
    let text = t.rfc3339();
    format!("{}000Z", &text[..23])
}

/// The node a pod runs on: one per pod, as on Fargate. `host` is where its kubelet API listens
/// (port `kubelet_port`): the API server reaches it as the node's ExternalIP (the launched API
/// server prefers that address type), since task addresses are not routable from the host.
pub fn node(name: &str, pod_ip: Ipv4Addr, host: IpAddr, kubelet_port: u16, zone: &str, region: &str) -> Value {
    let now = time(Timestamp::now());
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "eks.amazonaws.com/compute-type": "fargate",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": zone,
                "topology.kubernetes.io/region": region,
                "failure-domain.beta.kubernetes.io/zone": zone,
                "failure-domain.beta.kubernetes.io/region": region,
            },
        },
        "spec": {
            "taints": [{"key": "eks.amazonaws.com/compute-type", "value": "fargate", "effect": "NoSchedule"}],
        },
        "status": node_status(name, pod_ip, host, kubelet_port, &now),
    })
}

pub fn node_status(name: &str, pod_ip: Ipv4Addr, host: IpAddr, kubelet_port: u16, now: &str) -> Value {
    json!({
        "addresses": [
            {"type": "InternalIP", "address": pod_ip.to_string()},
            {"type": "ExternalIP", "address": host.to_string()},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "nodeInfo": {
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux", "architecture": "amd64",
            "containerRuntimeVersion": "flotilla://1", "osImage": "Flotilla Fargate",
            "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
        },
    })
}

/// The node's lease in `kube-node-lease`, renewed while the pod lives.
pub fn lease(name: &str, seconds: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": seconds, "renewTime": micro_time(Timestamp::now())},
    })
}

pub fn binding(pod: &Pod, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    })
}

/// A core/v1 Event about `pod` from the fargate-scheduler.
pub fn event(pod: &Pod, kind: &str, reason: &str, message: &str) -> Value {
    let now = time(Timestamp::now());
    let name = pod.metadata.name.clone().unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": pod.metadata.namespace},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "name": name,
            "namespace": pod.metadata.namespace, "uid": pod.metadata.uid,
            "resourceVersion": pod.metadata.resource_version,
        },
        "type": kind,
        "reason": reason,
        "message": message,
        "source": {"component": "fargate-scheduler"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

fn condition(kind: &str, ok: bool, since: &str) -> Value {
    json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastTransitionTime": since, "lastProbeTime": null})
}

/// The pod's status as its task's record says, given the host address the node reports.
/// STOPPED is Succeeded when every app container exited 0 (and none was killed for its
/// liveness probe), else Failed. App containers the pod's `restartPolicy` restarts are
/// started again in place by the agent, which counts them (`restartCount`).
pub fn pod_status(pod: &Pod, task: &Task, pod_ip: Option<Ipv4Addr>, host: IpAddr) -> Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let app: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let inits: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    let started = task.started_at.map(time);
    let created = time(task.created_at);
    let since = started.clone().unwrap_or_else(|| created.clone());
    let stopped_at = task.stopped_at.or(task.execution_stopped_at).map(time);
    let container_state = |c: &flotilla_types::task::Container| -> (Value, bool) {
        match c.last_status {
            ContainerStatus::Running => (json!({"running": {"startedAt": since}}), true),
            ContainerStatus::Stopped => {
                let code = c.exit_code.unwrap_or(if task.last_status == TaskStatus::Stopped { 137 } else { 0 });
                let reason = if code == 0 { "Completed" } else { "Error" };
                let mut t = json!({"exitCode": code, "reason": reason, "startedAt": since,
                    "finishedAt": stopped_at.clone().unwrap_or_else(|| time(Timestamp::now()))});
                if let Some(message) = &c.reason {
                    t["message"] = json!(message);
                }
                (json!({"terminated": t}), false)
            }
            _ => (json!({"waiting": {"reason": "ContainerCreating"}}), false),
        }
    };
    let healthy = |c: &flotilla_types::task::Container| c.health_status != Some(HealthStatus::Unhealthy);
    // Readiness (and a startup probe, which readiness waits for) gate Ready; the agent
    // reports the verdict as the container's health. A liveness probe alone does not.
    let has_check = |name: &str| {
        let probes = spec.containers.iter().find(|c| c.name == name).and_then(super::spec::probes::probes);
        probes.is_some_and(|p| p.readiness.is_some() || p.startup.is_some())
    };
    let statuses = |names: &[&str], init: bool| -> Vec<Value> {
        names
            .iter()
            .map(|name| {
                let image = spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .find(|c| c.name == *name)
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                let Some(c) = task.containers.iter().find(|c| c.name == *name) else {
                    return json!({"name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
                        "started": false, "state": {"waiting": {"reason": "ContainerCreating"}}});
                };
                let (state, running) = container_state(c);
                let ready = if init {
                    c.last_status == ContainerStatus::Stopped && c.exit_code == Some(0)
                } else {
                    running && (!has_check(name) || c.health_status == Some(HealthStatus::Healthy)) && healthy(c)
                };
                let restarts = c.restart_count.unwrap_or(0);
                let mut s = json!({
                    "name": name, "image": image, "ready": ready, "restartCount": restarts, "started": running,
                    "state": state,
                    "imageID": c.image_digest.as_ref().map(|d| format!("{image}@{d}")).unwrap_or_default(),
                });
                if let Some(id) = &c.runtime_id {
                    s["containerID"] = json!(format!("flotilla://{id}"));
                }
                s
            })
            .collect()
    };
    let app_statuses = statuses(&app, false);
    let init_statuses = statuses(&inits, true);
    let all_ready = app_statuses.iter().all(|s| s["ready"] == true);
    let inits_done = init_statuses.iter().all(|s| s["ready"] == true);
    let phase = match task.last_status {
        TaskStatus::Running => "Running",
        TaskStatus::Stopped => {
            let all_zero = app.iter().all(|n| task.containers.iter().any(|c| c.name == *n && c.exit_code == Some(0)));
            // A container killed for its liveness probe fails the pod whatever it exited with.
            let killed = task.stopped_reason.as_deref().is_some_and(is_liveness_failure);
            if all_zero && !killed { "Succeeded" } else { "Failed" }
        }
        s if s > TaskStatus::Running => "Running",
        _ => "Pending",
    };
    let running = phase == "Running";
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition("PodScheduled", true, &created),
            condition("Initialized", inits_done && task.last_status >= TaskStatus::Running, &since),
            condition("ContainersReady", running && all_ready, &since),
            condition("Ready", running && all_ready, &since),
        ],
        "hostIP": host.to_string(),
        "startTime": created,
        "containerStatuses": app_statuses,
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if let Some(ip) = pod_ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    if task.last_status == TaskStatus::Stopped
        && let Some(reason) = &task.stopped_reason
    {
        status["message"] = json!(reason);
        status["reason"] = json!(match task.stop_code {
            Some(flotilla_types::task::StopCode::TaskFailedToStart) => "TaskFailedToStart",
            _ => "TaskStopped",
        });
    }
    status
}

/// The task's private address (its elastic network interface's), once it has one.
pub fn task_address(task: &Task) -> Option<Ipv4Addr> {
    task.attachments
        .iter()
        .flat_map(|a| a.details.iter())
        .find(|d| d.name.as_deref() == Some("privateIPv4Address"))
        .and_then(|d| d.value.as_deref()?.parse().ok())
}

#[cfg(test)]
mod tests;
