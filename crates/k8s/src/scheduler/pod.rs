//! One pod's life on Fargate: refused, or sized, run as a task, given a node, bound, kept in
//! step with its task, and retired with its node when the pod goes.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_control::{ListTasksInput, RunTaskInput};
use flotilla_types::task::{DesiredStatus, Task, TaskStatus};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::ClusterContext;
use super::node::{self, node_name, pod_status, task_address};
use super::spec;
use crate::kubelet::{NodeLogs, NodeServer};

/// How often a pod whose volumes name something missing is tried again.
const MOUNT_RETRY: Duration = Duration::from_secs(2);
/// Marks a [`start`] error that is a `FailedMount` (the pod stays Pending, tried again).
const FAILED_MOUNT: &str = "FailedMount: ";

/// How long a node's lease lasts; renewed every quarter of it.
const LEASE_SECONDS: i32 = 40;
/// How often a running pod's status is compared with its task.
const SYNC: Duration = Duration::from_secs(1);
/// ...and how often, until the task has an address, whether it has one.
const PLACING: Duration = Duration::from_millis(200);

/// A pod's name for messages: `namespace/name`.
fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""))
}

/// What a pod holds while it runs: its task, node, lease renewal and kubelet listener.
struct Placed {
    task_arn: String,
    node: Option<String>,
    ip: Option<Ipv4Addr>,
    lease: Option<tokio::task::JoinHandle<()>>,
    kubelet: Option<NodeServer>,
    family: Option<String>,
    last_status: Option<Value>,
}

/// Follows one pod (its latest version arrives on `pod`; `None` once it is gone) until it is
/// retired.
pub(super) async fn supervise(ctx: Arc<ClusterContext>, mut pod: watch::Receiver<Option<Pod>>) {
    let Some(mut first) = pod.borrow_and_update().clone() else { return };
    let key = pod_key(&first);
    let mut failed_mount = None;
    let mut placed = loop {
        match start(&ctx, &first).await {
            Ok(Some(placed)) => break placed,
            Ok(None) => return,
            Err(message) => match message.strip_prefix(FAILED_MOUNT) {
                // Pending until what its volumes name exists, as a kubelet retries the mount.
                Some(mount) => {
                    if failed_mount.as_deref() != Some(mount) {
                        emit(&ctx, &first, "Warning", "FailedMount", mount).await;
                        failed_mount = Some(mount.to_owned());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(MOUNT_RETRY) => {}
                        changed = pod.changed() => if changed.is_err() { return },
                    }
                    match pod.borrow_and_update().clone() {
                        Some(p) if p.metadata.deletion_timestamp.is_none() => first = p,
                        _ => return,
                    }
                }
                None => {
                    tracing::warn!(cluster = %ctx.name, pod = %key, %message, "cannot run the pod on Fargate");
                    emit(&ctx, &first, "Warning", "FailedScheduling", &message).await;
                    return;
                }
            },
        }
    };
    loop {
        let current = pod.borrow().clone();
        let gone = match &current {
            None => true,
            Some(p) => p.metadata.deletion_timestamp.is_some(),
        };
        if gone {
            retire(&ctx, current.as_ref().unwrap_or(&first), &mut placed, current.is_some()).await;
            return;
        }
        let current = current.expect("checked above");
        if let Err(e) = sync(&ctx, &current, &mut placed).await {
            tracing::debug!(cluster = %ctx.name, pod = %key, error = %e, "pod status sync failed; retrying");
        }
        // Quicker until the pod has settled (bound and Ready, or ended): binding waits on the
        // task's address, and `kubectl rollout status` on Ready.
        let pause =
            if placed.kubelet.is_some() && placed.last_status.as_ref().is_some_and(settled) { SYNC } else { PLACING };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = pod.changed() => if changed.is_err() {
                // The cluster's worker stopped (shutdown): the task keeps running, adopted on restart.
                stop_local(&mut placed);
                return;
            }
        }
    }
}

async fn emit(ctx: &ClusterContext, pod: &Pod, kind: &str, reason: &str, message: &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), ns);
    let event: Event = serde_json::from_value(node::event(pod, kind, reason, message)).expect("an event");
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, "cannot record an event");
    }
}

/// Finds the pod's task (adoption after a restart) or refuses, sizes and runs it; waits for the
/// task's address, then makes the node and binds the pod. `Ok(None)`: nothing to follow.
async fn start(ctx: &ClusterContext, pod: &Pod) -> Result<Option<Placed>, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    if let Some(task_arn) = ctx.task_of(&uid).await? {
        tracing::info!(cluster = %ctx.name, pod = %pod_key(pod), task = %task_arn, "adopting the pod's task");
        ctx.files.track(&ctx.client, pod);
        let mut placed =
            Placed { task_arn, node: bound, ip: None, lease: None, kubelet: None, family: None, last_status: None };
        place(ctx, pod, &mut placed).await?;
        return Ok(Some(placed));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let ended = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
    if bound.is_some() && ended {
        // Ended long ago: its task's record is reaped. Nothing left to run or report.
        return Ok(None);
    }
    if bound.is_some() {
        // Bound by us before, and its task is gone (Flotilla was down when it stopped).
        let status = json!({"status": {"phase": "Failed", "reason": "NodeLost",
            "message": "The pod's Fargate task is gone."}});
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or(""));
        let _ = pods
            .patch_status(pod.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&status))
            .await;
        return Ok(None);
    }
    if let Some(reason) = spec::refusal(pod) {
        return Err(reason);
    }
    let size = spec::size(pod)?;
    let profiles = ctx.profiles().await?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    let profile = flotilla_eks::match_profile(&profiles, &namespace, &labels).ok_or_else(|| {
        format!(
            "Pod not supported on Fargate: no ACTIVE Fargate profile matches namespace {namespace} and the pod's labels"
        )
    })?;
    // Checked before the task runs (and read again when its host asks): a kubelet does not
    // start a pod whose volumes it cannot set up.
    if let Err(super::files::Unresolved::Missing(m) | super::files::Unresolved::Unreachable(m)) =
        super::files::resolve(&ctx.client, pod).await
    {
        return Err(format!("{FAILED_MOUNT}{m}"));
    }
    ctx.files.track(&ctx.client, pod);
    let resolved = resolve_env(ctx, pod).await?;
    let family = format!("eks-{}-{}", ctx.name, uid);
    let definition = spec::task_definition(&resolved, &family, &size, &ctx.name, &ctx.region);
    ctx.control
        .register_task_definition(definition, Some(format!("eks:{}", ctx.name)))
        .await
        .map_err(|e| format!("cannot register the pod's task definition: {e}"))?;
    let mut network = json!({"awsvpcConfiguration": {"subnets": profile.subnets, "assignPublicIp": "DISABLED"}});
    if !ctx.security_groups.is_empty() {
        network["awsvpcConfiguration"]["securityGroups"] = json!(ctx.security_groups);
    }
    let input = RunTaskInput {
        cluster: Some(ctx.ecs_cluster.clone()),
        task_definition: family.clone(),
        launch_type: Some("FARGATE".into()),
        network_configuration: Some(serde_json::from_value(network).expect("a network configuration")),
        started_by: Some(uid.clone()),
        // `kubectl exec` runs through ECS Exec's path.
        enable_execute_command: Some(true),
        group: Some(format!("eks:{namespace}")),
        tags: Some(vec![
            serde_json::from_value(json!({"key": "eks:pod", "value": pod_key(pod)})).expect("a tag"),
            serde_json::from_value(json!({"key": "eks:fargate-profile", "value": profile.name})).expect("a tag"),
        ]),
        ..Default::default()
    };
    let (tasks, failures) =
        ctx.control.run_task(input).await.map_err(|e| format!("cannot start the pod's task: {e}"))?;
    let Some(task) = tasks.first() else {
        return Err(format!("cannot start the pod's task: {failures:?}"));
    };
    tracing::info!(cluster = %ctx.name, pod = %pod_key(pod), task = %task.task_arn, capacity = %size.capacity_provisioned, "pod runs as a task");
    let mut placed = Placed {
        task_arn: task.task_arn.clone(),
        node: None,
        ip: None,
        lease: None,
        kubelet: None,
        family: Some(family),
        last_status: None,
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let annotate = json!({"metadata": {"annotations": {"CapacityProvisioned": size.capacity_provisioned}}});
    pods.patch(pod.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .map_err(|e| format!("cannot annotate the pod: {e}"))?;
    place(ctx, pod, &mut placed).await?;
    Ok(Some(placed))
}

/// Replaces each `valueFrom` of the pod's containers with its value: ConfigMap and Secret keys
/// read from the cluster, and the pod's own fields. A missing optional key drops the variable.
async fn resolve_env(ctx: &ClusterContext, pod: &Pod) -> Result<Pod, String> {
    let mut pod = pod.clone();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(spec) = pod.spec.as_mut() else { return Ok(pod) };
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        let Some(env) = c.env.as_mut() else { continue };
        let mut kept = Vec::new();
        for mut var in env.drain(..) {
            let Some(from) = var.value_from.take() else {
                kept.push(var);
                continue;
            };
            let value = if let Some(r) = from.config_map_key_ref {
                let map = maps.get_opt(&r.name).await.map_err(|e| e.to_string())?;
                let found = map.and_then(|m| m.data).and_then(|d| d.get(&r.key).cloned());
                match (found, r.optional == Some(true)) {
                    (Some(v), _) => Some(v),
                    (None, true) => None,
                    (None, false) => {
                        return Err(format!("configmap {}: key {} not found (env {})", r.name, r.key, var.name));
                    }
                }
            } else if let Some(r) = from.secret_key_ref {
                let secret = secrets.get_opt(&r.name).await.map_err(|e| e.to_string())?;
                let found = secret
                    .and_then(|s| s.data)
                    .and_then(|d| d.get(&r.key).map(|b| String::from_utf8_lossy(&b.0).into_owned()));
                match (found, r.optional == Some(true)) {
                    (Some(v), _) => Some(v),
                    (None, true) => None,
                    (None, false) => {
                        return Err(format!("secret {}: key {} not found (env {})", r.name, r.key, var.name));
                    }
                }
            } else if let Some(f) = from.field_ref {
                match f.field_path.as_str() {
                    "metadata.name" => Some(name.clone()),
                    "metadata.namespace" => Some(ns.clone()),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(value) = value {
                var.value = Some(value);
                kept.push(var);
            }
        }
        *env = kept;
    }
    Ok(pod)
}

/// Once the task has its address, makes the node (and its lease and kubelet API) and binds the
/// pod to it, unless it is bound already.
async fn place(ctx: &ClusterContext, pod: &Pod, placed: &mut Placed) -> Result<(), String> {
    let task = ctx.task(&placed.task_arn).await?;
    let Some(ip) = task_address(&task) else {
        // Not yet (the sync comes back), or stopped before it had one (the sync says why).
        return Ok(());
    };
    placed.ip = Some(ip);
    let name = node_name(ip, &ctx.region);
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
    let task_id = placed.task_arn.rsplit('/').next().unwrap_or_default().to_owned();
    let logs = NodeLogs {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        ecs_cluster: ctx.ecs_cluster.clone(),
        task_arn: placed.task_arn.clone(),
        group: spec::log_group(&ctx.name),
        streams: containers.map(|c| (c.name.clone(), format!("{}/{}/{task_id}", spec::LOG_PREFIX, c.name))).collect(),
    };
    let server = ctx
        .kubelet
        .serve(logs, ctx.kubelet_tls.clone())
        .await
        .map_err(|e| format!("cannot serve the node's kubelet API: {e}"))?;
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let body: Node = serde_json::from_value(node::node(
        &name,
        ip,
        ctx.kubelet.address(),
        server.port,
        &task.availability_zone,
        &ctx.region,
    ))
    .expect("a node");
    match nodes.create(&PostParams::default(), &body).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => return Err(format!("cannot create node {name}: {e}")),
    }
    // Status is the node's own subresource: set it explicitly (the port changes on adoption).
    let status = json!({"status": node::node_status(&name, ip, ctx.kubelet.address(), server.port, &node::time(flotilla_types::Timestamp::now()))});
    nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| format!("cannot set node {name}'s status: {e}"))?;
    if placed.lease.is_none() {
        placed.lease = Some(tokio::spawn(renew_lease(ctx.client.clone(), name.clone())));
    }
    if placed.node.is_none() {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or(""));
        let binding = node::binding(pod, &name);
        pods.create_subresource::<Value, Value>(
            "binding",
            pod.metadata.name.as_deref().unwrap_or(""),
            &PostParams::default(),
            &binding,
        )
        .await
        .map_err(|e| format!("cannot bind the pod to {name}: {e}"))?;
        emit(ctx, pod, "Normal", "Scheduled", &format!("Successfully assigned {} to {name}", pod_key(pod))).await;
    }
    placed.node = Some(name);
    // Last: a failure above is tried again by the next sync.
    placed.kubelet = Some(server);
    Ok(())
}

/// Keeps the node's lease fresh (made if missing) until aborted.
async fn renew_lease(client: kube::Client, name: String) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(Duration::from_secs((LEASE_SECONDS / 4) as u64));
    loop {
        tick.tick().await;
        let renew = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": node::micro_time(flotilla_types::Timestamp::now())}});
        match leases.patch(&name, &PatchParams::default(), &Patch::Merge(&renew)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                let lease: Lease = serde_json::from_value(node::lease(&name, LEASE_SECONDS)).expect("a lease");
                if let Err(e) = leases.create(&PostParams::default(), &lease).await {
                    tracing::debug!(node = %name, error = %e, "cannot create the node's lease");
                }
            }
            Err(e) => tracing::debug!(node = %name, error = %e, "cannot renew the node's lease"),
        }
    }
}

/// Patches the pod's status when the task's record says something new.
async fn sync(ctx: &ClusterContext, pod: &Pod, placed: &mut Placed) -> Result<(), String> {
    let task = ctx.task(&placed.task_arn).await?;
    if placed.kubelet.is_none() && task_address(&task).is_some() {
        place(ctx, pod, placed).await?;
    }
    if placed.node.is_none() && task.last_status != TaskStatus::Stopped {
        // Pending until bound: the pod says nothing of a task that has no node yet.
        return Ok(());
    }
    let status = pod_status(pod, &task, placed.ip, ctx.kubelet.address());
    if placed.last_status.as_ref() == Some(&status) {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or(""));
    pods.patch_status(
        pod.metadata.name.as_deref().unwrap_or(""),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map_err(|e| e.to_string())?;
    placed.last_status = Some(status);
    Ok(())
}

/// Whether a pod status needs watching only at the slow pace: Running and Ready, or ended.
fn settled(status: &Value) -> bool {
    match status["phase"].as_str() {
        Some("Succeeded" | "Failed") => true,
        Some("Running") => status["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")),
        _ => false,
    }
}

/// The pod is being deleted (or is gone): stop its task within the pod's grace period, delete
/// the pod object as a kubelet does (grace 0, this uid only), then its node and lease.
async fn retire(ctx: &ClusterContext, pod: &Pod, placed: &mut Placed, delete_pod: bool) {
    let key = pod_key(pod);
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).clamp(0, 120) as u64;
    if let Err(e) = ctx.control.stop_task(Some(&ctx.ecs_cluster), &placed.task_arn, Some("Pod deleted".into())).await {
        tracing::warn!(pod = %key, error = %e, "cannot stop the pod's task");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grace + 10);
    while tokio::time::Instant::now() < deadline {
        match ctx.task(&placed.task_arn).await {
            Ok(t) if t.last_status != TaskStatus::Stopped => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => break,
        }
    }
    if delete_pod {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or(""));
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match pods.delete(pod.metadata.name.as_deref().unwrap_or(""), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %key, error = %e, "cannot delete the pod"),
        }
    }
    stop_local(placed);
    ctx.files.forget(pod.metadata.uid.as_deref().unwrap_or_default());
    if let Some(name) = placed.node.take() {
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
        for result in [
            nodes.delete(&name, &DeleteParams::default()).await.map(|_| ()),
            leases.delete(&name, &DeleteParams::default()).await.map(|_| ()),
        ] {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => tracing::warn!(node = %name, error = %e, "cannot delete the node or its lease"),
            }
        }
    }
    if let Some(family) = placed
        .family
        .take()
        .or_else(|| Some(format!("eks-{}-{}", ctx.name, pod.metadata.uid.clone().unwrap_or_default())))
    {
        let _ = ctx.control.deregister_task_definition(&format!("{family}:1")).await;
    }
    tracing::info!(cluster = %ctx.name, pod = %key, "pod retired");
}

/// Ends what this process holds for the pod (lease renewal, kubelet listener).
fn stop_local(placed: &mut Placed) {
    if let Some(lease) = placed.lease.take() {
        lease.abort();
    }
    placed.kubelet.take();
}

impl ClusterContext {
    /// The task started for pod `uid`, running or (for a pod that ended) stopped, if any.
    async fn task_of(&self, uid: &str) -> Result<Option<String>, String> {
        for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let input = ListTasksInput {
                cluster: Some(self.ecs_cluster.clone()),
                started_by: Some(uid.to_owned()),
                desired_status: Some(desired),
                ..Default::default()
            };
            let page = self.control.list_tasks(input).await.map_err(|e| e.to_string())?;
            if let Some(task) = page.items.into_iter().next() {
                return Ok(Some(task));
            }
        }
        Ok(None)
    }

    async fn task(&self, arn: &str) -> Result<Task, String> {
        let (tasks, _) = self
            .control
            .describe_tasks(Some(&self.ecs_cluster), &[arn.to_owned()], false)
            .await
            .map_err(|e| e.to_string())?;
        tasks.into_iter().next().ok_or_else(|| format!("task {arn} is gone"))
    }
}

#[cfg(test)]
mod tests {
    use super::settled;
    use serde_json::json;

    #[test]
    fn a_pod_settles_once_ready_or_ended() {
        let ready = |r: &str| json!({"phase": "Running", "conditions": [{"type": "Ready", "status": r}]});
        assert!(settled(&ready("True")));
        assert!(!settled(&ready("False")));
        assert!(!settled(&json!({"phase": "Pending"})));
        assert!(settled(&json!({"phase": "Failed"})));
        assert!(settled(&json!({"phase": "Succeeded"})));
    }
}
