//! Tasks: the lifecycle Fargate reports and the records DescribeTasks returns.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Timestamp;
use crate::task_definition::{KeyValuePair, Tag};

/// `lastStatus` of a task, in lifecycle order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    Provisioning,
    Pending,
    Activating,
    Running,
    Deactivating,
    Stopping,
    Deprovisioning,
    Stopped,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Activating => "ACTIVATING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Deprovisioning => "DEPROVISIONING",
            TaskStatus::Stopped => "STOPPED",
        }
    }

    /// Tasks only move forward; any state before STOPPED may be cut short to a later one
    /// (a task that fails to start goes from PENDING straight to STOPPING or STOPPED).
    pub fn can_transition_to(self, next: TaskStatus) -> bool {
        next > self
    }

    /// Counted as pending (not yet running) in cluster statistics.
    pub fn is_pending(self) -> bool {
        matches!(self, TaskStatus::Provisioning | TaskStatus::Pending | TaskStatus::Activating)
    }
}

/// `desiredStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    Running,
    Stopped,
}

impl DesiredStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredStatus::Running => "RUNNING",
            DesiredStatus::Stopped => "STOPPED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopCode {
    TaskFailedToStart,
    EssentialContainerExited,
    UserInitiated,
    ServiceSchedulerInitiated,
    SpotInterruption,
    TerminationNotice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    Unknown,
}

impl HealthStatus {
    /// A task's health from its essential containers': UNHEALTHY beats UNKNOWN beats HEALTHY.
    pub fn combine(statuses: impl IntoIterator<Item = HealthStatus>) -> HealthStatus {
        let mut out = HealthStatus::Healthy;
        for s in statuses {
            match s {
                HealthStatus::Unhealthy => return HealthStatus::Unhealthy,
                HealthStatus::Unknown => out = HealthStatus::Unknown,
                HealthStatus::Healthy => {}
            }
        }
        out
    }
}

/// `lastStatus` of a container: ECS reports only these three.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    #[default]
    Pending,
    Running,
    Stopped,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Pending => "PENDING",
            ContainerStatus::Running => "RUNNING",
            ContainerStatus::Stopped => "STOPPED",
        }
    }
}

/// The `status` of a task attachment (ECS's elastic network interface lifecycle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttachmentStatus {
    Precreated,
    Created,
    Attaching,
    Attached,
    Detaching,
    Detached,
    Deleted,
    Failed,
}

/// ECS's attachment type name for a task's elastic network interface.
pub const ENI_ATTACHMENT: &str = "ElasticNetworkInterface";

/// What a task's elastic network interface is, once the control plane made it: the
/// `details` of its attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceDetails {
    pub subnet_id: String,
    pub network_interface_id: String,
    pub mac_address: String,
    pub private_dns_name: String,
    pub private_ipv4_address: String,
}

impl InterfaceDetails {
    /// As DescribeTasks lists them, in ECS's order.
    pub fn to_pairs(&self) -> Vec<KeyValuePair> {
        [
            ("subnetId", &self.subnet_id),
            ("networkInterfaceId", &self.network_interface_id),
            ("macAddress", &self.mac_address),
            ("privateDnsName", &self.private_dns_name),
            ("privateIPv4Address", &self.private_ipv4_address),
        ]
        .into_iter()
        .map(|(name, value)| KeyValuePair { name: Some(name.to_owned()), value: Some(value.clone()) })
        .collect()
    }
}

/// A task attachment (today only its elastic network interface).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: AttachmentStatus,
    #[serde(default)]
    pub details: Vec<KeyValuePair>,
}

impl Attachment {
    pub fn eni(id: &str, status: AttachmentStatus, details: Option<&InterfaceDetails>) -> Attachment {
        Attachment {
            id: id.to_owned(),
            kind: ENI_ATTACHMENT.to_owned(),
            status,
            details: details.map(InterfaceDetails::to_pairs).unwrap_or_default(),
        }
    }

    pub fn is_eni(&self) -> bool {
        self.kind == ENI_ATTACHMENT
    }
}

/// `assignPublicIp` of an awsvpc configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssignPublicIp {
    Enabled,
    #[default]
    Disabled,
}

/// `networkConfiguration.awsvpcConfiguration`, parsed once where it enters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsvpcConfiguration {
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub assign_public_ip: AssignPublicIp,
}

impl AwsvpcConfiguration {
    pub fn public_ip(&self) -> bool {
        self.assign_public_ip == AssignPublicIp::Enabled
    }
}

/// `networkConfiguration` of RunTask (and, later, services).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awsvpc_configuration: Option<AwsvpcConfiguration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ipv4_address: Option<String>,
}

/// One container of a task, as DescribeTasks shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub container_arn: String,
    pub task_arn: String,
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    pub last_status: ContainerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<Value>,
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    /// How often the container was started again in place (a pod's `restartPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<String>,
    /// Shown, never stored: [`Task::show_managed_agents`] derives them on the way out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_agents: Vec<ManagedAgent>,
}

/// The agent ECS runs beside a container (only `ExecuteCommandAgent` on Fargate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAgent {
    pub name: String,
    pub last_status: ContainerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<Timestamp>,
}

/// The managed agent that serves ECS Exec.
pub const EXECUTE_COMMAND_AGENT: &str = "ExecuteCommandAgent";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Vec<KeyValuePair>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i32>,
    #[serde(flatten)]
    pub other: crate::task_definition::Extra,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverride {
    #[serde(default)]
    pub container_overrides: Vec<ContainerOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<crate::task_definition::EphemeralStorage>,
}

/// A task as DescribeTasks returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub task_arn: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    pub last_status: TaskStatus,
    pub desired_status: DesiredStatus,
    pub cpu: String,
    pub memory: String,
    pub containers: Vec<Container>,
    pub overrides: TaskOverride,
    pub launch_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_provider_name: Option<String>,
    pub platform_version: String,
    pub platform_family: String,
    pub availability_zone: String,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub attributes: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<HealthStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity_at: Option<Timestamp>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<StopCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    pub enable_execute_command: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<crate::task_definition::EphemeralStorage>,
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
}

impl Task {
    /// A task as RunTask records it before any host has seen it: PROVISIONING, desired
    /// RUNNING, no containers yet and nothing of its life stamped but `created_at`.
    pub fn provisioning(
        task_arn: String,
        cluster_arn: String,
        task_definition_arn: String,
        created_at: Timestamp,
    ) -> Task {
        Task {
            task_arn,
            cluster_arn,
            task_definition_arn,
            last_status: TaskStatus::Provisioning,
            desired_status: DesiredStatus::Running,
            cpu: String::new(),
            memory: String::new(),
            containers: Vec::new(),
            overrides: TaskOverride::default(),
            launch_type: "FARGATE".to_owned(),
            capacity_provider_name: None,
            platform_version: "1.4.0".to_owned(),
            platform_family: "Linux".to_owned(),
            availability_zone: String::new(),
            attachments: Vec::new(),
            attributes: Vec::new(),
            group: None,
            started_by: None,
            health_status: Some(HealthStatus::Unknown),
            connectivity: None,
            connectivity_at: None,
            created_at,
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            stopping_at: None,
            execution_stopped_at: None,
            stopped_at: None,
            stop_code: None,
            stopped_reason: None,
            enable_execute_command: false,
            ephemeral_storage: None,
            version: 1,
            tags: None,
        }
    }

    /// Fills each container's `managedAgents` as ECS reports them for a task run with
    /// `enableExecuteCommand`: Flotilla's exec agent is the host itself, so the agent is
    /// RUNNING exactly while its container is, from when the container started.
    pub fn show_managed_agents(&mut self) {
        let enabled = self.enable_execute_command;
        let started = self.started_at;
        for c in &mut self.containers {
            c.managed_agents = if enabled {
                vec![ManagedAgent {
                    name: EXECUTE_COMMAND_AGENT.to_owned(),
                    last_status: c.last_status,
                    last_started_at: (c.last_status != ContainerStatus::Pending).then_some(started).flatten(),
                }]
            } else {
                Vec::new()
            };
        }
    }

    /// The task id: the last path element of its ARN.
    pub fn id(&self) -> &str {
        self.task_arn.rsplit('/').next().unwrap_or(&self.task_arn)
    }

    /// The cluster's name: the last path element of its ARN.
    pub fn cluster_name(&self) -> &str {
        self.cluster_arn.rsplit('/').next().unwrap_or(&self.cluster_arn)
    }

    /// The task's elastic network interface attachment, once it has one.
    pub fn eni_attachment(&self) -> Option<&Attachment> {
        self.attachments.iter().find(|a| a.is_eni())
    }

    pub fn container(&self, name: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.name == name)
    }

    pub fn container_mut(&mut self, name: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_only_moves_forward() {
        assert!(TaskStatus::Provisioning.can_transition_to(TaskStatus::Pending));
        assert!(TaskStatus::Pending.can_transition_to(TaskStatus::Stopped));
        assert!(!TaskStatus::Running.can_transition_to(TaskStatus::Pending));
        assert!(!TaskStatus::Stopped.can_transition_to(TaskStatus::Stopped));
    }

    #[test]
    fn task_health_prefers_the_worst() {
        use HealthStatus::*;
        assert_eq!(HealthStatus::combine([Healthy, Unknown, Healthy]), Unknown);
        assert_eq!(HealthStatus::combine([Unknown, Unhealthy]), Unhealthy);
        assert_eq!(HealthStatus::combine([]), Healthy);
    }

    #[test]
    fn wire_names() {
        assert_eq!(serde_json::to_string(&TaskStatus::Deprovisioning).unwrap(), "\"DEPROVISIONING\"");
        assert_eq!(serde_json::to_string(&StopCode::EssentialContainerExited).unwrap(), "\"EssentialContainerExited\"");
        assert_eq!(serde_json::to_string(&ContainerStatus::Running).unwrap(), "\"RUNNING\"");
        assert_eq!(serde_json::to_string(&AttachmentStatus::Precreated).unwrap(), "\"PRECREATED\"");
    }

    #[test]
    fn attachments_keep_ecs_shape() {
        let details = InterfaceDetails {
            subnet_id: "subnet-1".into(),
            network_interface_id: "eni-1".into(),
            mac_address: "02:00:00:00:00:01".into(),
            private_dns_name: "ip-10-0-0-5.ec2.internal".into(),
            private_ipv4_address: "10.0.0.5".into(),
        };
        let a = serde_json::to_value(Attachment::eni("a-1", AttachmentStatus::Attached, Some(&details))).unwrap();
        assert_eq!(a["type"], "ElasticNetworkInterface");
        assert_eq!(a["status"], "ATTACHED");
        assert_eq!(a["details"][4]["name"], "privateIPv4Address");
        assert_eq!(a["details"][4]["value"], "10.0.0.5");
        let pending = serde_json::to_value(Attachment::eni("a-1", AttachmentStatus::Precreated, None)).unwrap();
        assert_eq!(pending["details"], serde_json::json!([]));
    }

    #[test]
    fn awsvpc_configuration_parses_as_runtask_sends_it() {
        let n: NetworkConfiguration = serde_json::from_value(serde_json::json!({
            "awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"], "assignPublicIp": "ENABLED"}
        }))
        .unwrap();
        let a = n.awsvpc_configuration.unwrap();
        assert_eq!(a.subnets, ["subnet-1"]);
        assert_eq!(a.security_groups, ["sg-1"]);
        assert!(a.public_ip());
        let d: AwsvpcConfiguration = serde_json::from_value(serde_json::json!({"subnets": ["s"]})).unwrap();
        assert!(!d.public_ip());
    }
}
