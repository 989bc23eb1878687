//! What the store keeps per service, in ECS's field names: the `Service` that DescribeServices
//! returns, its deployments and events, and the scheduler's own bookkeeping beside it.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_types::task::NetworkConfiguration;
use flotilla_types::{Tag, Timestamp};
use serde::{Deserialize, Serialize};

use crate::capacity::CapacityProviderStrategyItem;

/// Most events a service keeps, as ECS shows them.
pub(crate) const MAX_EVENTS: usize = 100;
/// Most service deployments and revisions a service remembers.
pub(crate) const MAX_HISTORY: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    Active,
    Draining,
    Inactive,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    #[serde(default)]
    pub enable: bool,
    #[serde(default)]
    pub rollback: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_healthy_percent: Option<i32>,
}

impl DeploymentConfiguration {
    pub(crate) fn maximum(&self) -> i32 {
        self.maximum_percent.unwrap_or(200)
    }

    pub(crate) fn minimum(&self) -> i32 {
        self.minimum_healthy_percent.unwrap_or(100)
    }

    pub(crate) fn breaker(&self) -> CircuitBreaker {
        self.deployment_circuit_breaker.clone().unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRegistry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentController {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    Primary,
    Active,
    Inactive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    InProgress,
    Completed,
    Failed,
}

/// One entry of `deployments`: a revision of the service being rolled out or kept running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/<19 digits>`; the `startedBy` of its tasks.
    pub id: String,
    pub status: DeploymentStatus,
    pub task_definition: String,
    pub desired_count: i32,
    pub pending_count: i32,
    pub running_count: i32,
    pub failed_tasks: i32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    pub platform_version: String,
    pub platform_family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
    pub rollout_state: RolloutState,
    pub rollout_state_reason: String,
}

impl Deployment {
    /// The digits after `ecs-svc/`, shared by its service deployment and revision ARNs.
    pub(crate) fn number(&self) -> &str {
        self.id.strip_prefix("ecs-svc/").unwrap_or(&self.id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: Timestamp,
    pub message: String,
}

/// A service as DescribeServices returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub service_arn: String,
    pub service_name: String,
    pub cluster_arn: String,
    pub load_balancers: Vec<LoadBalancer>,
    pub service_registries: Vec<ServiceRegistry>,
    pub status: ServiceStatus,
    pub desired_count: i32,
    pub running_count: i32,
    pub pending_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    pub platform_version: String,
    pub platform_family: String,
    pub task_definition: String,
    pub deployment_configuration: DeploymentConfiguration,
    pub deployments: Vec<Deployment>,
    pub events: Vec<ServiceEvent>,
    pub created_at: Timestamp,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<i32>,
    pub scheduling_strategy: String,
    pub deployment_controller: DeploymentController,
    #[serde(rename = "enableECSManagedTags")]
    pub enable_ecs_managed_tags: bool,
    pub propagate_tags: String,
    pub enable_execute_command: bool,
    /// Only in answers that asked for TAGS; never stored here (see `ServiceRecord::tags`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

/// A service revision: the configuration one deployment rolls out (DescribeServiceRevisions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRevision {
    pub service_revision_arn: String,
    pub service_arn: String,
    pub cluster_arn: String,
    pub task_definition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    pub platform_version: String,
    pub platform_family: String,
    pub load_balancers: Vec<LoadBalancer>,
    pub service_registries: Vec<ServiceRegistry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceDeploymentStatus {
    Pending,
    Successful,
    Stopped,
    StopRequested,
    InProgress,
    RollbackRequested,
    RollbackInProgress,
    RollbackSuccessful,
    RollbackFailed,
}

impl ServiceDeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceDeploymentStatus::Pending => "PENDING",
            ServiceDeploymentStatus::Successful => "SUCCESSFUL",
            ServiceDeploymentStatus::Stopped => "STOPPED",
            ServiceDeploymentStatus::StopRequested => "STOP_REQUESTED",
            ServiceDeploymentStatus::InProgress => "IN_PROGRESS",
            ServiceDeploymentStatus::RollbackRequested => "ROLLBACK_REQUESTED",
            ServiceDeploymentStatus::RollbackInProgress => "ROLLBACK_IN_PROGRESS",
            ServiceDeploymentStatus::RollbackSuccessful => "ROLLBACK_SUCCESSFUL",
            ServiceDeploymentStatus::RollbackFailed => "ROLLBACK_FAILED",
        }
    }

    /// Still moving: the scheduler may change it.
    pub(crate) fn is_open(self) -> bool {
        matches!(
            self,
            ServiceDeploymentStatus::Pending
                | ServiceDeploymentStatus::InProgress
                | ServiceDeploymentStatus::StopRequested
                | ServiceDeploymentStatus::RollbackRequested
                | ServiceDeploymentStatus::RollbackInProgress
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSummary {
    pub arn: String,
    pub requested_task_count: i32,
    pub running_task_count: i32,
    pub pending_task_count: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    pub reason: String,
    pub started_at: Timestamp,
    pub service_revision_arn: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerState {
    /// TRIGGERED, MONITORING, MONITORING_COMPLETE or DISABLED.
    pub status: String,
    pub failure_count: i32,
    pub threshold: i32,
}

/// One service deployment: the move from the revisions that were running to a target one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDeployment {
    pub service_deployment_arn: String,
    pub service_arn: String,
    pub cluster_arn: String,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub source_service_revisions: Vec<RevisionSummary>,
    pub target_service_revision: RevisionSummary,
    pub status: ServiceDeploymentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub deployment_configuration: DeploymentConfiguration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    pub deployment_circuit_breaker: BreakerState,
}

impl ServiceDeployment {
    /// The `deployments` id this service deployment rolls out: its target revision's number.
    pub(crate) fn deployment_id(&self) -> String {
        let number = self.target_service_revision.arn.rsplit('/').next().unwrap_or_default();
        format!("ecs-svc/{number}")
    }
}

/// Launch retries after tasks that never reached RUNNING, as ECS's service throttle does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Tasks in a row that stopped before running (or crashed at once on their own).
    pub failures: u32,
    /// No task is launched before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_launch_at: Option<Timestamp>,
    /// The "unable to consistently start tasks" event was written for this run of failures.
    #[serde(default)]
    pub reported: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<Timestamp>,
}

/// Everything the store keeps per service (`ecs/services/<cluster>/<name>`), written in one
/// transaction by a request or one scheduler pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    pub service: Service,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The CreateService token and request fingerprint, for idempotent retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<(String, String)>,
    /// Every revision, oldest first (bounded).
    #[serde(default)]
    pub revisions: Vec<ServiceRevision>,
    /// Revisions (by number) whose tasks may use ECS Exec, restored on a rollback.
    #[serde(default)]
    pub exec_revisions: BTreeSet<String>,
    /// Every service deployment, oldest first (bounded).
    #[serde(default)]
    pub history: Vec<ServiceDeployment>,
    #[serde(default)]
    pub backoff: Backoff,
    /// Stopped tasks whose stop the scheduler has counted (failures, backoff); forgotten
    /// once the task record is reaped.
    #[serde(default)]
    pub accounted: BTreeSet<String>,
    /// Tasks the scheduler is taking out of service (Cloud Map deregistration first); each
    /// is stopped once no registry answers with it.
    #[serde(default)]
    pub draining: Vec<Draining>,
    /// Tasks registered in Cloud Map by the scheduler: task id to Cloud Map service id.
    #[serde(default)]
    pub registered: BTreeMap<String, String>,
    /// Tasks registered in target groups by the scheduler; a task's entry stays until every
    /// group has drained it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, Vec<RegisteredTarget>>,
    /// The last pass found the service steady (one deployment, all running).
    #[serde(default)]
    pub steady: bool,
}

/// A task's address as registered in one target group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredTarget {
    pub target_group_arn: String,
    pub ip: std::net::Ipv4Addr,
    pub port: u16,
    /// Deregistered by the scheduler; the entry goes once the group no longer has it.
    #[serde(default)]
    pub deregistered: bool,
}

/// A task on its way out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Draining {
    pub task_id: String,
    pub reason: String,
}
