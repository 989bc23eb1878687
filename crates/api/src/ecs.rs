//! ECS operations: request members in, control-plane call, response shape out.

use flotilla_control::{
    CapacityProviderStrategyItem, ClusterInclude, ClusterSetting, Control, CreateClusterInput, CreateServiceInput,
    DeleteServiceInput, FamilyStatusFilter, ListServiceDeploymentsInput, ListServicesInput, ListTaskDefinitionsInput,
    ListTasksInput, RunTaskInput, SortOrder, StopType, UpdateServiceInput,
};
use flotilla_types::task::DesiredStatus;
use flotilla_types::task_definition::{Tag, TaskDefinitionSpec, TaskDefinitionStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::json::{ResourceArn, UntagResource, parse, strip_nulls};

fn failures(items: impl IntoIterator<Item = (String, String)>) -> Value {
    Value::Array(items.into_iter().map(|(arn, reason)| json!({"arn": arn, "reason": reason})).collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterRef {
    cluster: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeClusters {
    #[serde(default)]
    clusters: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Paging {
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateClusterSettings {
    cluster: String,
    settings: Vec<ClusterSetting>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateCluster {
    cluster: String,
    configuration: Option<Value>,
    settings: Option<Vec<ClusterSetting>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PutClusterCapacityProviders {
    cluster: String,
    capacity_providers: Vec<String>,
    default_capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeCapacityProviders {
    #[serde(default)]
    capacity_providers: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskDefinitionRef {
    task_definition: String,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListTaskDefinitions {
    family_prefix: Option<String>,
    status: Option<TaskDefinitionStatus>,
    sort: Option<String>,
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListFamilies {
    family_prefix: Option<String>,
    status: Option<String>,
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeleteTaskDefinitions {
    task_definitions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagResource {
    resource_arn: String,
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeTasks {
    cluster: Option<String>,
    tasks: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StopTask {
    cluster: Option<String>,
    task: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListTasks {
    cluster: Option<String>,
    family: Option<String>,
    desired_status: Option<String>,
    started_by: Option<String>,
    launch_type: Option<String>,
    service_name: Option<String>,
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeServices {
    cluster: Option<String>,
    services: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListServicesByNamespace {
    namespace: String,
    max_results: Option<i32>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeServiceDeployments {
    service_deployment_arns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeServiceRevisions {
    service_revision_arns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StopServiceDeployment {
    service_deployment_arn: String,
    #[serde(default)]
    stop_type: StopType,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateTaskProtection {
    cluster: String,
    tasks: Vec<String>,
    protection_enabled: bool,
    expires_in_minutes: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GetTaskProtection {
    cluster: String,
    #[serde(default)]
    tasks: Vec<String>,
}

fn registered_by(control: &Control) -> String {
    control.identity().iam_root()
}

/// Every ECS operation Flotilla serves, each with its typed input.
pub(crate) enum EcsRequest {
    CreateCluster(CreateClusterInput),
    DescribeClusters(DescribeClusters),
    ListClusters(Paging),
    DeleteCluster(ClusterRef),
    UpdateClusterSettings(UpdateClusterSettings),
    UpdateCluster(UpdateCluster),
    PutClusterCapacityProviders(PutClusterCapacityProviders),
    DescribeCapacityProviders(DescribeCapacityProviders),
    RegisterTaskDefinition(TaskDefinitionSpec),
    DescribeTaskDefinition(TaskDefinitionRef),
    ListTaskDefinitions(ListTaskDefinitions),
    ListTaskDefinitionFamilies(ListFamilies),
    DeregisterTaskDefinition(TaskDefinitionRef),
    DeleteTaskDefinitions(DeleteTaskDefinitions),
    RunTask(RunTaskInput),
    DescribeTasks(DescribeTasks),
    StopTask(StopTask),
    ListTasks(ListTasks),
    TagResource(TagResource),
    UntagResource(UntagResource),
    ListTagsForResource(ResourceArn),
    CreateService(Box<CreateServiceInput>),
    UpdateService(Box<UpdateServiceInput>),
    DeleteService(DeleteServiceInput),
    DescribeServices(DescribeServices),
    ListServices(ListServicesInput),
    ListServicesByNamespace(ListServicesByNamespace),
    ListServiceDeployments(ListServiceDeploymentsInput),
    DescribeServiceDeployments(DescribeServiceDeployments),
    DescribeServiceRevisions(DescribeServiceRevisions),
    StopServiceDeployment(StopServiceDeployment),
    UpdateTaskProtection(UpdateTaskProtection),
    GetTaskProtection(GetTaskProtection),
}

impl EcsRequest {
    /// Reads one operation's model-checked input into its variant; an operation Flotilla does
    /// not serve is refused here, before anything runs.
    pub(crate) fn parse(operation: &str, input: Value) -> Result<EcsRequest, ApiError> {
        Ok(match operation {
            "CreateCluster" => EcsRequest::CreateCluster(parse(input)?),
            "DescribeClusters" => EcsRequest::DescribeClusters(parse(input)?),
            "ListClusters" => EcsRequest::ListClusters(parse(input)?),
            "DeleteCluster" => EcsRequest::DeleteCluster(parse(input)?),
            "UpdateClusterSettings" => EcsRequest::UpdateClusterSettings(parse(input)?),
            "UpdateCluster" => EcsRequest::UpdateCluster(parse(input)?),
            "PutClusterCapacityProviders" => EcsRequest::PutClusterCapacityProviders(parse(input)?),
            "DescribeCapacityProviders" => EcsRequest::DescribeCapacityProviders(parse(input)?),
            "RegisterTaskDefinition" => EcsRequest::RegisterTaskDefinition(parse(input)?),
            "DescribeTaskDefinition" => EcsRequest::DescribeTaskDefinition(parse(input)?),
            "ListTaskDefinitions" => EcsRequest::ListTaskDefinitions(parse(input)?),
            "ListTaskDefinitionFamilies" => EcsRequest::ListTaskDefinitionFamilies(parse(input)?),
            "DeregisterTaskDefinition" => EcsRequest::DeregisterTaskDefinition(parse(input)?),
            "DeleteTaskDefinitions" => EcsRequest::DeleteTaskDefinitions(parse(input)?),
            "RunTask" => EcsRequest::RunTask(parse(input)?),
            "DescribeTasks" => EcsRequest::DescribeTasks(parse(input)?),
            "StopTask" => EcsRequest::StopTask(parse(input)?),
            "ListTasks" => EcsRequest::ListTasks(parse(input)?),
            "TagResource" => EcsRequest::TagResource(parse(input)?),
            "UntagResource" => EcsRequest::UntagResource(parse(input)?),
            "ListTagsForResource" => EcsRequest::ListTagsForResource(parse(input)?),
            "CreateService" => EcsRequest::CreateService(Box::new(parse(input)?)),
            "UpdateService" => EcsRequest::UpdateService(Box::new(parse(input)?)),
            "DeleteService" => EcsRequest::DeleteService(parse(input)?),
            "DescribeServices" => EcsRequest::DescribeServices(parse(input)?),
            "ListServices" => EcsRequest::ListServices(parse(input)?),
            "ListServicesByNamespace" => EcsRequest::ListServicesByNamespace(parse(input)?),
            "ListServiceDeployments" => EcsRequest::ListServiceDeployments(parse(input)?),
            "DescribeServiceDeployments" => EcsRequest::DescribeServiceDeployments(parse(input)?),
            "DescribeServiceRevisions" => EcsRequest::DescribeServiceRevisions(parse(input)?),
            "StopServiceDeployment" => EcsRequest::StopServiceDeployment(parse(input)?),
            "UpdateTaskProtection" => EcsRequest::UpdateTaskProtection(parse(input)?),
            "GetTaskProtection" => EcsRequest::GetTaskProtection(parse(input)?),
            other => {
                return Err(ApiError::new(
                    "UnsupportedFeatureException",
                    format!("Flotilla does not implement {other} yet. See `flotilla --help` for what it serves."),
                ));
            }
        })
    }
}

/// Runs one request; the one place its `Result` becomes the answer.
pub(crate) async fn execute(control: &Control, request: EcsRequest) -> Result<Value, ApiError> {
    let answer = match request {
        EcsRequest::CreateCluster(req) => {
            let cluster = control.create_cluster(req).await?;
            json!({ "cluster": cluster })
        }
        EcsRequest::DescribeClusters(req) => {
            let include = ClusterInclude::parse(&req.include)?;
            let (clusters, missing) = control.describe_clusters(&req.clusters, include).await?;
            json!({ "clusters": clusters, "failures": failures(missing.into_iter().map(|arn| (arn, "MISSING".to_owned()))) })
        }
        EcsRequest::ListClusters(req) => {
            let page = control.list_clusters(req.max_results, req.next_token.as_deref()).await?;
            json!({ "clusterArns": page.items, "nextToken": page.next_token })
        }
        EcsRequest::DeleteCluster(req) => {
            let cluster = req.cluster.ok_or_else(|| ApiError::invalid_parameter("cluster: required"))?;
            json!({ "cluster": control.delete_cluster(&cluster).await? })
        }
        EcsRequest::UpdateCluster(req) => {
            json!({ "cluster": control.update_cluster_configuration(&req.cluster, req.configuration, req.settings).await? })
        }
        EcsRequest::UpdateClusterSettings(req) => {
            json!({ "cluster": control.update_cluster_settings(&req.cluster, req.settings).await? })
        }
        EcsRequest::PutClusterCapacityProviders(req) => {
            let cluster = control
                .put_cluster_capacity_providers(
                    &req.cluster,
                    req.capacity_providers,
                    req.default_capacity_provider_strategy,
                )
                .await?;
            json!({ "cluster": cluster })
        }
        EcsRequest::DescribeCapacityProviders(req) => {
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
        EcsRequest::RegisterTaskDefinition(spec) => {
            let (definition, tags) = control.register_task_definition(spec, Some(registered_by(control))).await?;
            json!({ "taskDefinition": definition, "tags": tags })
        }
        EcsRequest::DescribeTaskDefinition(req) => {
            let (definition, tags) = control.describe_task_definition(&req.task_definition).await?;
            if req.include.iter().any(|i| i == "TAGS") {
                json!({ "taskDefinition": definition, "tags": tags })
            } else {
                json!({ "taskDefinition": definition })
            }
        }
        EcsRequest::ListTaskDefinitions(req) => {
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
        EcsRequest::ListTaskDefinitionFamilies(req) => {
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
        EcsRequest::DeregisterTaskDefinition(req) => {
            json!({ "taskDefinition": control.deregister_task_definition(&req.task_definition).await? })
        }
        EcsRequest::DeleteTaskDefinitions(req) => {
            let (done, failed) = control.delete_task_definitions(&req.task_definitions).await?;
            json!({ "taskDefinitions": done, "failures": failures(failed) })
        }
        EcsRequest::RunTask(req) => {
            let (tasks, failed) = control.run_task(req).await?;
            json!({ "tasks": tasks, "failures": failures(failed) })
        }
        EcsRequest::DescribeTasks(req) => {
            let with_tags = req.include.iter().any(|i| i == "TAGS");
            let (tasks, missing) = control.describe_tasks(req.cluster.as_deref(), &req.tasks, with_tags).await?;
            json!({ "tasks": tasks, "failures": failures(missing) })
        }
        EcsRequest::StopTask(req) => {
            json!({ "task": control.stop_task(req.cluster.as_deref(), &req.task, req.reason).await? })
        }
        EcsRequest::ListTasks(req) => {
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
        EcsRequest::TagResource(req) => {
            control.tag_resource(&req.resource_arn, req.tags).await?;
            json!({})
        }
        EcsRequest::UntagResource(req) => {
            control.untag_resource(&req.resource_arn, req.tag_keys).await?;
            json!({})
        }
        EcsRequest::ListTagsForResource(req) => {
            json!({ "tags": control.list_tags(&req.resource_arn).await? })
        }
        EcsRequest::CreateService(req) => json!({ "service": control.create_service(*req).await? }),
        EcsRequest::UpdateService(req) => json!({ "service": control.update_service(*req).await? }),
        EcsRequest::DeleteService(req) => json!({ "service": control.delete_service(req).await? }),
        EcsRequest::DescribeServices(req) => {
            let with_tags = req.include.iter().any(|i| i == "TAGS");
            let (services, missing) =
                control.describe_services(req.cluster.as_deref(), &req.services, with_tags).await?;
            json!({ "services": services, "failures": failures(missing) })
        }
        EcsRequest::ListServices(req) => {
            let page = control.list_services(req).await?;
            json!({ "serviceArns": page.items, "nextToken": page.next_token })
        }
        EcsRequest::ListServicesByNamespace(req) => {
            let page =
                control.list_services_by_namespace(&req.namespace, req.max_results, req.next_token.as_deref()).await?;
            json!({ "serviceArns": page.items, "nextToken": page.next_token })
        }
        EcsRequest::ListServiceDeployments(req) => {
            let page = control.list_service_deployments(req).await?;
            json!({ "serviceDeployments": page.items, "nextToken": page.next_token })
        }
        EcsRequest::DescribeServiceDeployments(req) => {
            let (found, missing) = control.describe_service_deployments(&req.service_deployment_arns).await?;
            json!({ "serviceDeployments": found, "failures": failures(missing) })
        }
        EcsRequest::DescribeServiceRevisions(req) => {
            let (found, missing) = control.describe_service_revisions(&req.service_revision_arns).await?;
            json!({ "serviceRevisions": found, "failures": failures(missing) })
        }
        EcsRequest::StopServiceDeployment(req) => {
            let arn = control.stop_service_deployment(&req.service_deployment_arn, req.stop_type).await?;
            json!({ "serviceDeploymentArn": arn })
        }
        EcsRequest::UpdateTaskProtection(req) => {
            let (done, failed) = control
                .update_task_protection(&req.cluster, &req.tasks, req.protection_enabled, req.expires_in_minutes)
                .await?;
            json!({ "protectedTasks": done, "failures": failures(failed) })
        }
        EcsRequest::GetTaskProtection(req) => {
            let (found, failed) = control.get_task_protection(&req.cluster, &req.tasks).await?;
            json!({ "protectedTasks": found, "failures": failures(failed) })
        }
    };
    Ok(strip_nulls(answer))
}
