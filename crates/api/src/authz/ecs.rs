//! ECS operations as IAM sees them, after the Service Authorization Reference: cluster
//! operations act on the cluster's ARN, RunTask on the task definition's (with `ecs:cluster`),
//! task and service operations on the task's and service's ARNs (with `ecs:cluster`), and the
//! operations AWS gives no resource (ListClusters, RegisterTaskDefinition, the task-definition
//! reads and lists) on `*`.
//!
//! One deliberate choice: the cluster-scoped lists (ListTasks, ListServices,
//! ListContainerInstances, ListServiceDeployments' service) are checked against the cluster's
//! ARN with `ecs:cluster`, so that a user allowed `ecs:List*` on one cluster (by `Resource` or
//! by an `ecs:cluster` condition) lists that cluster and no other. (AWS checks ListTasks against
//! container instances and ListServices against `*` with `ecs:cluster`; Fargate has no container
//! instances, and a policy written with the `ecs:cluster` condition behaves the same either way.)
//!
//! `iam:PassRole` is checked, as ECS does, wherever a role is handed to tasks: the roles a
//! RegisterTaskDefinition names, and the task and execution roles that RunTask, StartTask,
//! CreateService and UpdateService give their tasks (the task definition's, or RunTask's
//! overrides).

use std::sync::LazyLock;

use flotilla_types::Identity;
use flotilla_types::arn::Arn;
use serde_json::Value;

use super::Target;
use crate::server::ApiState;

fn text<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn list<'a>(input: &'a Value, key: &str) -> Vec<&'a str> {
    input.get(key).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// A cluster's name from a name or an ARN (ECS's `default` when none is given).
fn cluster_name(raw: Option<&str>) -> String {
    match raw {
        None => "default".to_owned(),
        Some(r) => Arn::parse(r).map_or_else(|| r.to_owned(), |arn| arn.resource),
    }
}

fn cluster_arn(id: &Identity, raw: Option<&str>) -> String {
    id.cluster(&cluster_name(raw)).to_string()
}

/// A task or service named by ARN or by id/name within `cluster`.
fn in_cluster(raw: &str, id: &Identity, cluster: &str, make: fn(&Identity, &str, &str) -> Arn) -> String {
    if raw.starts_with("arn:") { raw.to_owned() } else { make(id, cluster, raw).to_string() }
}

fn task(id: &Identity, cluster: &str, raw: &str) -> String {
    in_cluster(raw, id, cluster, Identity::task)
}

fn service(id: &Identity, cluster: &str, raw: &str) -> String {
    in_cluster(raw, id, cluster, Identity::service)
}

/// The task definition a request names, as its full ARN with the revision (a bare family
/// resolves to its latest ACTIVE revision, as ECS authorises it).
async fn task_definition(
    state: &ApiState,
    raw: &str,
) -> (String, Option<flotilla_types::task_definition::TaskDefinition>) {
    let id = state.control.identity();
    let described = state.control.describe_task_definition(raw).await.ok().map(|(td, _)| td);
    if let Some(td) = &described {
        return (td.task_definition_arn.clone(), described);
    }
    let arn = if raw.starts_with("arn:") {
        raw.to_owned()
    } else {
        match raw.rsplit_once(':').and_then(|(f, r)| Some((f, r.parse::<u32>().ok()?))) {
            Some((family, revision)) => id.task_definition(family, revision).to_string(),
            // No such family: the operation fails on its own once authorised.
            None => id.ecs(flotilla_types::arn::ResourceKind::TaskDefinition, raw).to_string(),
        }
    };
    (arn, None)
}

/// What `operation` acts on.
pub(super) async fn targets(state: &ApiState, operation: &str, input: &Value) -> Vec<Target> {
    let id = state.control.identity();
    let cluster_raw = text(input, "cluster");
    // Made only for the operations that name a cluster (every request of a user comes here).
    let cluster = LazyLock::new(|| cluster_name(cluster_raw));
    let cluster_arn = LazyLock::new(|| cluster_arn(id, cluster_raw));
    let in_cluster = |resource: String| Target::new(resource).with("ecs:cluster", cluster_arn.clone());
    match operation {
        "CreateCluster" => vec![Target::new(id.cluster(text(input, "clusterName").unwrap_or("default")).to_string())],
        "DescribeClusters" => {
            let names = list(input, "clusters");
            let names = if names.is_empty() { vec!["default"] } else { names };
            names
                .into_iter()
                .map(|c| self::cluster_arn(id, Some(c)))
                .map(|arn| Target::new(arn.clone()).with("ecs:cluster", arn))
                .collect()
        }
        "DeleteCluster"
        | "UpdateCluster"
        | "UpdateClusterSettings"
        | "PutClusterCapacityProviders"
        | "ListTasks"
        | "ListServices"
        | "ListContainerInstances" => vec![in_cluster(cluster_arn.clone())],
        "RunTask" | "StartTask" => {
            let (arn, _) = task_definition(state, text(input, "taskDefinition").unwrap_or_default()).await;
            vec![in_cluster(arn)]
        }
        "DescribeTasks" | "GetTaskProtection" | "UpdateTaskProtection" => {
            list(input, "tasks").into_iter().map(|t| in_cluster(task(id, &cluster, t))).collect()
        }
        "StopTask" => vec![in_cluster(task(id, &cluster, text(input, "task").unwrap_or_default()))],
        // ExecuteCommand needs both the cluster and the task.
        "ExecuteCommand" => {
            let task_arn = task(id, &cluster, text(input, "task").unwrap_or_default());
            let mut t = in_cluster(task_arn.clone()).with("ecs:task", task_arn);
            if let Some(container) = text(input, "container") {
                t = t.with("ecs:container-name", container);
            }
            vec![in_cluster(cluster_arn.clone()), t]
        }
        "CreateService" => {
            let mut t = in_cluster(service(id, &cluster, text(input, "serviceName").unwrap_or_default()));
            if let Some(td) = text(input, "taskDefinition") {
                t = t.with("ecs:task-definition", task_definition(state, td).await.0);
            }
            vec![t]
        }
        "UpdateService" | "DeleteService" | "ListServiceDeployments" => {
            vec![in_cluster(service(id, &cluster, text(input, "service").unwrap_or_default()))]
        }
        "DescribeServices" => {
            list(input, "services").into_iter().map(|s| in_cluster(service(id, &cluster, s))).collect()
        }
        "DescribeServiceDeployments" => list(input, "serviceDeploymentArns").into_iter().map(Target::new).collect(),
        "DescribeServiceRevisions" => list(input, "serviceRevisionArns").into_iter().map(Target::new).collect(),
        "StopServiceDeployment" => vec![Target::new(text(input, "serviceDeploymentArn").unwrap_or("*"))],
        "DeleteTaskDefinitions" => list(input, "taskDefinitions")
            .into_iter()
            .map(|td| match td.rsplit_once(':').and_then(|(f, r)| Some((f, r.parse::<u32>().ok()?))) {
                Some((family, revision)) if !td.starts_with("arn:") => id.task_definition(family, revision).to_string(),
                _ => td.to_owned(),
            })
            .map(Target::new)
            .collect(),
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            vec![Target::new(text(input, "resourceArn").unwrap_or("*"))]
        }
        // ListClusters, the task-definition reads, lists and (de)registration, capacity
        // providers (Fargate's are AWS-managed), ListServicesByNamespace: no resource on AWS.
        _ => vec![Target::any()],
    }
}

/// The roles `operation` hands to tasks, for `iam:PassRole`.
pub(super) async fn passed_roles(state: &ApiState, operation: &str, input: &Value) -> Vec<String> {
    let mut roles: Vec<String> = Vec::new();
    match operation {
        "RegisterTaskDefinition" => {
            roles.extend(["taskRoleArn", "executionRoleArn"].iter().filter_map(|k| text(input, k)).map(str::to_owned));
        }
        "RunTask" | "StartTask" | "CreateService" | "UpdateService" => {
            let overrides = input.get("overrides").cloned().unwrap_or(Value::Null);
            let definition = match text(input, "taskDefinition") {
                Some(raw) => task_definition(state, raw).await.1,
                None => None,
            };
            let task_role = text(&overrides, "taskRoleArn")
                .map(str::to_owned)
                .or_else(|| definition.as_ref().and_then(|d| d.task_role_arn.clone()));
            let execution_role = text(&overrides, "executionRoleArn")
                .map(str::to_owned)
                .or_else(|| definition.as_ref().and_then(|d| d.execution_role_arn.clone()));
            roles.extend(task_role.into_iter().chain(execution_role));
        }
        _ => {}
    }
    roles.dedup();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        let id = Identity::new("us-east-1", "123456789012");
        assert_eq!(cluster_arn(&id, None), "arn:aws:ecs:us-east-1:123456789012:cluster/default");
        assert_eq!(
            cluster_arn(&id, Some("arn:aws:ecs:us-east-1:123456789012:cluster/prod")),
            "arn:aws:ecs:us-east-1:123456789012:cluster/prod"
        );
        assert_eq!(task(&id, "prod", "abc"), "arn:aws:ecs:us-east-1:123456789012:task/prod/abc");
        assert_eq!(service(&id, "prod", "web"), "arn:aws:ecs:us-east-1:123456789012:service/prod/web");
    }
}
