//! ECS operations: request members in, control-plane call, response shape out.

use flotilla_control::{
    CapacityProviderStrategyItem, ClusterInclude, ClusterSetting, Control, CreateClusterInput, FamilyStatusFilter,
    ListTaskDefinitionsInput, ListTasksInput, RunTaskInput, SortOrder,
};
use flotilla_types::task::DesiredStatus;
use flotilla_types::task_definition::{Tag, TaskDefinitionSpec, TaskDefinitionStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::json::{parse, strip_nulls};

fn failures(items: impl IntoIterator<Item = (String, String)>) -> Value {
    Value::Array(items.into_iter().map(|(arn, reason)| json!({"arn": arn, "reason": reason})).collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterRef {
    cluster: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeClusters {
    #[serde(default)]
    clusters: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Paging {
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateClusterSettings {
    cluster: String,
    settings: Vec<ClusterSetting>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutClusterCapacityProviders {
    cluster: String,
    capacity_providers: Vec<String>,
    default_capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeCapacityProviders {
    #[serde(default)]
    capacity_providers: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskDefinitionRef {
    task_definition: String,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTaskDefinitions {
    family_prefix: Option<String>,
    status: Option<TaskDefinitionStatus>,
    sort: Option<String>,
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListFamilies {
    family_prefix: Option<String>,
    status: Option<String>,
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteTaskDefinitions {
    task_definitions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagResource {
    resource_arn: String,
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UntagResource {
    resource_arn: String,
    tag_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceArn {
    resource_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeTasks {
    cluster: Option<String>,
    tasks: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopTask {
    cluster: Option<String>,
    task: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTasks {
    cluster: Option<String>,
    family: Option<String>,
    desired_status: Option<String>,
    started_by: Option<String>,
    launch_type: Option<String>,
    service_name: Option<String>,
    max_results: Option<i32>,
    next_token: Option<String>,
}

fn registered_by(control: &Control) -> String {
    control.identity().iam_root()
}

/// Runs one ECS operation on already model-checked input.
pub async fn handle(control: &Control, operation: &str, input: Value) -> Result<Value, ApiError> {
    let answer = match operation {
        "CreateCluster" => {
            let cluster = control.create_cluster(parse::<CreateClusterInput>(input)?).await?;
            json!({ "cluster": cluster })
        }
        "DescribeClusters" => {
            let req: DescribeClusters = parse(input)?;
            let include = ClusterInclude::parse(&req.include)?;
            let (clusters, missing) = control.describe_clusters(&req.clusters, include).await?;
            json!({ "clusters": clusters, "failures": failures(missing.into_iter().map(|arn| (arn, "MISSING".to_owned()))) })
        }
        "ListClusters" => {
            let req: Paging = parse(input)?;
            let page = control.list_clusters(req.max_results, req.next_token.as_deref()).await?;
            json!({ "clusterArns": page.items, "nextToken": page.next_token })
        }
        "DeleteCluster" => {
            let req: ClusterRef = parse(input)?;
            let cluster = req.cluster.ok_or_else(|| ApiError::invalid_parameter("cluster: required"))?;
            json!({ "cluster": control.delete_cluster(&cluster).await? })
        }
        "UpdateClusterSettings" => {
            let req: UpdateClusterSettings = parse(input)?;
            json!({ "cluster": control.update_cluster_settings(&req.cluster, req.settings).await? })
        }
        "PutClusterCapacityProviders" => {
            let req: PutClusterCapacityProviders = parse(input)?;
            let cluster = control
                .put_cluster_capacity_providers(
                    &req.cluster,
                    req.capacity_providers,
                    req.default_capacity_provider_strategy,
                )
                .await?;
            json!({ "cluster": cluster })
        }
        "DescribeCapacityProviders" => {
            let req: DescribeCapacityProviders = parse(input)?;
            let with_tags = req.include.iter().any(|i| i == "TAGS");
            let (page, missing) = control
                .describe_capacity_providers(
                    &req.capacity_providers,
                    with_tags,
                    req.max_results,
                    req.next_token.as_deref(),
                )
                .await?;
            json!({
                "capacityProviders": page.items,
                "failures": failures(missing.into_iter().map(|arn| (arn, "MISSING".to_owned()))),
                "nextToken": page.next_token,
            })
        }
        "RegisterTaskDefinition" => {
            let spec: TaskDefinitionSpec = parse(input)?;
            let (definition, tags) = control.register_task_definition(spec, Some(registered_by(control))).await?;
            json!({ "taskDefinition": definition, "tags": tags })
        }
        "DescribeTaskDefinition" => {
            let req: TaskDefinitionRef = parse(input)?;
            let (definition, tags) = control.describe_task_definition(&req.task_definition).await?;
            if req.include.iter().any(|i| i == "TAGS") {
                json!({ "taskDefinition": definition, "tags": tags })
            } else {
                json!({ "taskDefinition": definition })
            }
        }
        "ListTaskDefinitions" => {
            let req: ListTaskDefinitions = parse(input)?;
            let sort = match req.sort.as_deref() {
                Some("DESC") => SortOrder::Desc,
                _ => SortOrder::Asc,
            };
            let page = control
                .list_task_definitions(ListTaskDefinitionsInput {
                    family_prefix: req.family_prefix,
                    status: req.status,
                    sort,
                    max_results: req.max_results,
                    next_token: req.next_token,
                })
                .await?;
            json!({ "taskDefinitionArns": page.items, "nextToken": page.next_token })
        }
        "ListTaskDefinitionFamilies" => {
            let req: ListFamilies = parse(input)?;
            let status = match req.status.as_deref() {
                Some("INACTIVE") => FamilyStatusFilter::Inactive,
                Some("ALL") => FamilyStatusFilter::All,
                _ => FamilyStatusFilter::Active,
            };
            let page = control
                .list_task_definition_families(
                    req.family_prefix.as_deref(),
                    status,
                    req.max_results,
                    req.next_token.as_deref(),
                )
                .await?;
            json!({ "families": page.items, "nextToken": page.next_token })
        }
        "DeregisterTaskDefinition" => {
            let req: TaskDefinitionRef = parse(input)?;
            json!({ "taskDefinition": control.deregister_task_definition(&req.task_definition).await? })
        }
        "DeleteTaskDefinitions" => {
            let req: DeleteTaskDefinitions = parse(input)?;
            let (done, failed) = control.delete_task_definitions(&req.task_definitions).await?;
            json!({ "taskDefinitions": done, "failures": failures(failed) })
        }
        "RunTask" => {
            let (tasks, failed) = control.run_task(parse::<RunTaskInput>(input)?).await?;
            json!({ "tasks": tasks, "failures": failures(failed) })
        }
        "DescribeTasks" => {
            let req: DescribeTasks = parse(input)?;
            let with_tags = req.include.iter().any(|i| i == "TAGS");
            let (tasks, missing) = control.describe_tasks(req.cluster.as_deref(), &req.tasks, with_tags).await?;
            json!({ "tasks": tasks, "failures": failures(missing) })
        }
        "StopTask" => {
            let req: StopTask = parse(input)?;
            json!({ "task": control.stop_task(req.cluster.as_deref(), &req.task, req.reason).await? })
        }
        "ListTasks" => {
            let req: ListTasks = parse(input)?;
            let desired_status = match req.desired_status.as_deref() {
                Some("STOPPED") => Some(DesiredStatus::Stopped),
                // PENDING is accepted by the model; Fargate tasks want RUNNING until they stop.
                _ => Some(DesiredStatus::Running),
            };
            let page = control
                .list_tasks(ListTasksInput {
                    cluster: req.cluster,
                    family: req.family,
                    desired_status,
                    started_by: req.started_by,
                    launch_type: req.launch_type,
                    service_name: req.service_name,
                    max_results: req.max_results,
                    next_token: req.next_token,
                })
                .await?;
            json!({ "taskArns": page.items, "nextToken": page.next_token })
        }
        "TagResource" => {
            let req: TagResource = parse(input)?;
            control.tag_resource(&req.resource_arn, req.tags).await?;
            json!({})
        }
        "UntagResource" => {
            let req: UntagResource = parse(input)?;
            control.untag_resource(&req.resource_arn, req.tag_keys).await?;
            json!({})
        }
        "ListTagsForResource" => {
            let req: ResourceArn = parse(input)?;
            json!({ "tags": control.list_tags(&req.resource_arn).await? })
        }
        other => {
            return Err(ApiError::new(
                "UnsupportedFeatureException",
                format!("Flotilla does not implement {other} yet. See `flotilla --help` for what it serves."),
            ));
        }
    };
    Ok(strip_nulls(answer))
}
