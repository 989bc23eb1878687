//! The host API: the one interface between the control plane and the agent of a host.
//!
//! The shape follows ECS's own agent protocol and omicron's sled-agent: tasks are *assigned*
//! to a host; the agent follows its assignments (a snapshot, then every change), makes them
//! real, and sends typed [`TaskReport`]s back. Only the control plane turns reports into task
//! records. Everything the agent needs beyond its assignments (its tasks' interfaces, the
//! VPCs and security groups they live in, their secrets) is asked for here too, so the agent
//! never names a store key.
//!
//! **Architecture Invariant:** every type here is plain data (serde) and every call is one
//! request and one answer, or a stream of events: a remote transport carries it unchanged.
//! `flotilla up` uses the control plane's in-process implementation.

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;

use flotilla_types::Timestamp;
use flotilla_types::task::{
    AttachmentStatus, AwsvpcConfiguration, ContainerStatus, HealthStatus, InterfaceDetails, StopCode, Task, TaskStatus,
};
use flotilla_types::task_definition::TaskDefinition;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub mod discovery;
pub mod exec;
pub mod lb;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a host offers, as its agent registers it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    pub id: String,
    pub availability_zone: String,
    /// CPU units (1024 per vCPU) tasks may reserve.
    pub cpu: u32,
    /// MiB tasks may reserve.
    pub memory: u32,
    /// The host's address on the network between hosts (the underlay), which other hosts'
    /// VPC traffic to this host's tasks is sent to. `None` for a host alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_ip: Option<Ipv4Addr>,
    /// At most this many tasks at once (`--max-tasks`, what the host's own limits allow);
    /// `None`: as many as its CPU and memory take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
}

/// A registered host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    #[serde(flatten)]
    pub spec: HostSpec,
    pub registered_at: Timestamp,
    /// When the control plane last heard from the host's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// ACTIVE, or LOST once its agent was not heard from past the grace period (its tasks
    /// were then stopped); registering or heartbeating again makes it ACTIVE.
    #[serde(default)]
    pub status: HostStatus,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HostStatus {
    #[default]
    Active,
    Lost,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Active => "ACTIVE",
            HostStatus::Lost => "LOST",
        }
    }
}

/// One task as its host must run it: declarative ("ensure this task is in this state").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// The task as the control plane records it (desired status, what was reported so far).
    pub task: Task,
    pub definition: TaskDefinition,
    pub awsvpc: Option<AwsvpcConfiguration>,
    /// Orders the versions of one assignment: a later one replaces an earlier one.
    pub revision: u64,
    /// Some of the task's volumes are filled with files the control plane resolves at start
    /// ([`TaskVolumes::files`]; an EKS pod's configMap and secret volumes): the agent asks
    /// `task_volumes` for them. False for every plain ECS task, which skips the call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volume_files: bool,
}

impl Assignment {
    pub fn task_arn(&self) -> &str {
        &self.task.task_arn
    }
}

/// What the assignment stream carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum AssignmentEvent {
    /// The host's whole set, sent first and again whenever the stream had to resynchronise:
    /// `assignments` changed after the revision the stream was asked from (all of them when
    /// it was asked from none), `unchanged` names the host's other tasks, assigned and not
    /// changed since. A task in neither is no longer the host's.
    Snapshot {
        assignments: Vec<Assignment>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unchanged: Vec<String>,
        revision: u64,
    },
    /// A new or changed assignment.
    Changed { assignment: Box<Assignment> },
    /// The task is no longer the host's (its record was removed).
    Removed { task_arn: String, revision: u64 },
}

/// A stream of events from the control plane. Transport-agnostic: whoever implements the
/// host API feeds the channel.
pub struct Events<T> {
    rx: tokio::sync::mpsc::Receiver<Result<T, HostApiError>>,
}

impl<T> Events<T> {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Result<T, HostApiError>>) -> Events<T> {
        Events { rx }
    }

    /// The next event; `Err(HostApiError::Closed)` once the other side is gone.
    pub async fn next(&mut self) -> Result<T, HostApiError> {
        self.rx.recv().await.unwrap_or(Err(HostApiError::Closed))
    }

    /// The next event if one is already queued.
    pub fn try_next(&mut self) -> Option<Result<T, HostApiError>> {
        self.rx.try_recv().ok()
    }
}

pub type AssignmentWatch = Events<AssignmentEvent>;

/// Something changed in the VPCs or security groups a host may serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkChanged;

pub type NetworkWatch = Events<NetworkChanged>;

/// What happened to one container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// The container was started again in place: how often so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
}

impl ContainerReport {
    pub fn new(name: impl Into<String>) -> ContainerReport {
        ContainerReport { name: name.into(), ..Default::default() }
    }
}

/// The host asks for its task to stop (an essential container exited, a start failed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopRequest {
    pub code: StopCode,
    pub reason: String,
}

/// The task's elastic network interface attachment, as the host sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentReport {
    pub id: String,
    pub status: AttachmentStatus,
    /// Present once the interface is known; absent keeps what was reported before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<InterfaceDetails>,
}

/// One event of one task on a host. The control plane records a report in one transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub task_arn: String,
    /// When it happened on the host.
    pub at: Timestamp,
    /// The lifecycle status the task reached (it only moves forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerReport>,
    /// The task's health (from its essential containers').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentReport>,
}

impl TaskReport {
    pub fn new(task_arn: impl Into<String>) -> TaskReport {
        TaskReport {
            task_arn: task_arn.into(),
            at: Timestamp::now(),
            status: None,
            containers: Vec::new(),
            health: None,
            stop: None,
            attachment: None,
        }
    }

    pub fn status(mut self, status: TaskStatus) -> TaskReport {
        self.status = Some(status);
        self
    }

    pub fn container(mut self, container: ContainerReport) -> TaskReport {
        self.containers.push(container);
        self
    }

    pub fn stop(mut self, code: StopCode, reason: impl Into<String>) -> TaskReport {
        self.stop = Some(StopRequest { code, reason: reason.into() });
        self
    }

    pub fn attachment(mut self, attachment: AttachmentReport) -> TaskReport {
        self.attachment = Some(attachment);
        self
    }

    /// True when it says nothing.
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.containers.is_empty()
            && self.health.is_none()
            && self.stop.is_none()
            && self.attachment.is_none()
    }
}

/// A task's elastic network interface as the control plane allocated it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceLease {
    pub id: String,
    pub task_arn: String,
    pub subnet_id: String,
    /// The subnet's prefix: the task's address is configured with it.
    pub subnet: Ipv4Net,
    pub vpc_id: String,
    pub private_ip: Ipv4Addr,
    pub public_ip: Option<Ipv4Addr>,
    pub mac: String,
    pub private_dns_name: String,
    pub security_groups: Vec<String>,
}

impl InterfaceLease {
    pub fn details(&self) -> InterfaceDetails {
        InterfaceDetails {
            subnet_id: self.subnet_id.clone(),
            network_interface_id: self.id.clone(),
            mac_address: self.mac.clone(),
            private_dns_name: self.private_dns_name.clone(),
            private_ipv4_address: self.private_ip.to_string(),
        }
    }
}

/// The protocol a security group rule admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleProtocol {
    All,
    Tcp,
    Udp,
    Icmp,
    Other(u8),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RulePeer {
    Cidr(Ipv4Net),
    Group(String),
}

/// One allowed flow of a security group, as EC2 states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRule {
    pub protocol: RuleProtocol,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub peer: RulePeer,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    pub id: String,
    pub vpc_id: String,
    pub ingress: Vec<GroupRule>,
    pub egress: Vec<GroupRule>,
}

/// A VPC and every security group in it: what a host needs to serve it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcView {
    pub id: String,
    pub cidr: Ipv4Net,
    pub groups: Vec<GroupView>,
    /// The VPC's VXLAN network identifier between hosts: 1 to 2^24 - 1, stable and unique
    /// among VPCs. 0 from a control plane that predates the overlay.
    #[serde(default)]
    pub vni: u32,
    /// Every task interface of the VPC and the host it is on: a host routes the ones on other
    /// hosts through the overlay and counts them as members of their groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<VpcInterface>,
    /// Virtual `ip:port`s of the VPC (Kubernetes ClusterIPs), which every host serving the
    /// VPC DNATs its tasks' connections to, spread over the backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_services: Vec<VirtualService>,
}

/// A virtual `ip:port` in a VPC (a Kubernetes Service's ClusterIP and port) and the task
/// addresses behind it; none: connections to it are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualService {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `Tcp` or `Udp`.
    pub protocol: RuleProtocol,
    #[serde(default)]
    pub backends: Vec<ServiceBackend>,
    /// DNS names the VPC's resolver answers with `ip` (a Service's
    /// `<name>.<namespace>.svc.cluster.local`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// One backend of a [`VirtualService`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBackend {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// A task interface of a VPC, wherever it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcInterface {
    pub id: String,
    pub private_ip: Ipv4Addr,
    pub security_groups: Vec<String>,
    /// The host of its task; `None` while the task has none (or is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// That host's [`HostSpec::underlay_ip`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_ip: Option<Ipv4Addr>,
}

/// A registry login a container's `repositoryCredentials` names.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin").field("username", &self.username).finish_non_exhaustive()
    }
}

/// What a task needs from SSM and Secrets Manager before its containers exist.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSecrets {
    /// Container name -> (variable, value), in the definition's order.
    pub environment: HashMap<String, Vec<(String, String)>>,
    /// Container name -> its registry login.
    pub registry_logins: HashMap<String, RegistryLogin>,
}

impl std::fmt::Debug for TaskSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSecrets").finish_non_exhaustive()
    }
}

/// A task role's temporary credentials, as the agent's credential endpoint serves them to the
/// task's containers (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they stop working: the agent fetches fresh ones well before.
    pub expiration: Timestamp,
    /// The task role's ARN.
    pub role_arn: String,
}

impl std::fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("role_arn", &self.role_arn)
            .finish_non_exhaustive()
    }
}

/// A task's EFS volumes as the control plane resolved them when the task started: which file
/// system directory each volume mounts, so the agent needs no EFS records of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskVolumes {
    pub efs: Vec<EfsVolume>,
    /// Volumes the agent fills with files before the task's containers start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileVolume>,
}

/// A task volume whose content the control plane provides (a pod's configMap, secret,
/// downwardAPI or projected volume): the agent writes `files` into the volume's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileVolume {
    /// The task definition's volume name.
    pub name: String,
    pub files: Vec<VolumeFile>,
}

/// One file of a [`FileVolume`]. Its data may be a secret: `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFile {
    /// Relative to the volume, `/`-separated, without `.`, `..` or empty parts (the agent
    /// refuses any other).
    pub path: String,
    /// The content, base64 on the wire.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
    /// Permission bits, e.g. `0o644`.
    pub mode: u32,
}

impl std::fmt::Debug for VolumeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeFile")
            .field("path", &self.path)
            .field("len", &self.data.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish_non_exhaustive()
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// One `efsVolumeConfiguration`, resolved: the directory is `<EFS root>/<file_system_id>` plus
/// `path`, which the host resolves inside the file system's directory (never above it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EfsVolume {
    /// The task definition's volume name.
    pub name: String,
    pub file_system_id: String,
    /// Inside the file system, `/`-separated, without `.` or `..`: the access point's root
    /// directory joined with the volume's `rootDirectory`.
    pub path: String,
    /// The access point's root directory and how to create it if it is missing (EFS makes it
    /// on first use when the access point has `CreationInfo`).
    #[serde(default)]
    pub create_root: Option<EfsCreateRoot>,
    /// The access point's POSIX user: files created through it belong to this user.
    #[serde(default)]
    pub posix_user: Option<EfsPosixUser>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EfsCreateRoot {
    /// The access point's root directory inside the file system.
    pub path: String,
    pub owner_uid: u32,
    pub owner_gid: u32,
    /// Octal mode bits, e.g. `0o755`.
    pub permissions: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EfsPosixUser {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub secondary_gids: Vec<u32>,
}

/// One line of a container's output, as the `awslogs` driver ships it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum HostApiError {
    #[error("{what} not found")]
    NotFound { what: String },
    /// The request cannot succeed as asked; `reason` is what a user should read (for a task,
    /// the stopped reason, in AWS's words).
    #[error("{reason}")]
    Refused { reason: String },
    /// The control plane could not answer now (store or transport); retrying may succeed.
    #[error("the control plane is unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("the host API stream closed")]
    Closed,
}

/// The control plane as one host's agent sees it. Object-safe: the agent holds an
/// `Arc<dyn HostApi>`.
pub trait HostApi: Send + Sync {
    /// Registers (or re-registers) the host; its tasks stay its own.
    fn register(&self, spec: HostSpec) -> BoxFuture<'_, Result<Host, HostApiError>>;
    /// The host's assignments: a snapshot, then every change. `since`, the newest revision
    /// the agent already has (after a reconnect), spares it the assignments it knows.
    fn assignments(&self, host_id: &str, since: Option<u64>) -> AssignmentWatch;
    /// Records what happened to a task; returns the task as recorded.
    fn report(&self, report: TaskReport) -> BoxFuture<'_, Result<Task, HostApiError>>;
    /// The task's interface: the one it has, or a new one in its awsvpc configuration's
    /// subnets. Idempotent per task. `Refused` carries the task's stopped reason.
    fn ensure_interface<'a>(
        &'a self,
        task_arn: &'a str,
        attachment_id: &'a str,
        awsvpc: &'a AwsvpcConfiguration,
    ) -> BoxFuture<'a, Result<InterfaceLease, HostApiError>>;
    /// The task's interface, if it has one.
    fn interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<Option<InterfaceLease>, HostApiError>>;
    /// Releases the task's interface and its addresses. Idempotent.
    fn release_interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<(), HostApiError>>;
    /// Every task interface the host may hold (to clean up after a restart).
    fn interfaces<'a>(&'a self, host_id: &'a str) -> BoxFuture<'a, Result<Vec<InterfaceLease>, HostApiError>>;
    /// A VPC and its groups; `None` once it is deleted.
    fn vpc<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<Option<VpcView>, HostApiError>>;
    /// Ticks whenever a VPC or security group changes, or a task interface is created or
    /// released (so every host re-reads the VPC's [`VpcView::interfaces`]).
    fn network_changes(&self) -> NetworkWatch;
    /// The task's secrets and registry logins. `Refused` carries the task's stopped reason.
    fn task_secrets<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<TaskSecrets, HostApiError>>;
    /// The task's EFS volumes, resolved against the file systems, mount targets (in the task's
    /// zone) and access points, and the files of its file volumes ([`TaskVolumes::files`],
    /// when [`Assignment::volume_files`]). `Refused` carries the task's stopped reason
    /// (`ResourceInitializationError: failed to invoke EFS utils commands ...`);
    /// `Unavailable` (files not resolvable yet) is asked again.
    fn task_volumes<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<TaskVolumes, HostApiError>> {
        let _ = task_arn;
        Box::pin(async { Ok(TaskVolumes::default()) })
    }
    /// Fresh temporary credentials for the task's role (its RunTask override's
    /// `taskRoleArn`, else its definition's), assumed by `ecs-tasks.amazonaws.com` with the
    /// task id as the session name. `Refused` for a task without a task role, or whose role
    /// does not exist or does not trust ECS tasks.
    fn task_role_credentials<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<RoleCredentials, HostApiError>> {
        let _ = task_arn;
        Box::pin(async {
            Err(HostApiError::Refused { reason: "this control plane serves no task role credentials".into() })
        })
    }
    /// The load balancers the host serves: their whole configuration now, then again after
    /// every change.
    fn load_balancers(&self, host_id: &str) -> lb::LbWatch;
    /// Records what the host's load balancers saw of their targets (health verdicts, drained
    /// targets).
    fn report_targets(&self, reports: Vec<lb::TargetReport>) -> BoxFuture<'_, Result<(), HostApiError>>;
    /// The agent is alive. Sent every few seconds; a host not heard from past the control
    /// plane's grace period is lost. `NotFound` if the host is not registered (register again).
    fn heartbeat<'a>(&'a self, host_id: &'a str) -> BoxFuture<'a, Result<(), HostApiError>>;
    /// Checks the log group a task's `awslogs` driver writes to, creating it when `create`
    /// (`awslogs-create-group`). `Refused` carries the task's stopped reason. Logs live with
    /// the servers, not the hosts: they outlive the host that shipped them.
    fn ensure_log_group<'a>(&'a self, group: &'a str, create: bool) -> BoxFuture<'a, Result<(), HostApiError>>;
    /// Appends events, in order, to a log stream (made if it does not exist).
    fn put_logs<'a>(
        &'a self,
        group: &'a str,
        stream: &'a str,
        events: Vec<LogEvent>,
    ) -> BoxFuture<'a, Result<(), HostApiError>>;
    /// Cloud Map's records, whole, now and again after every change: what the VPC resolvers
    /// of a host that cannot read the store answer from.
    fn service_discovery(&self) -> discovery::DiscoveryWatch;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_travel_as_plain_json() {
        let report = TaskReport::new("arn:aws:ecs:us-east-1:000000000000:task/c/1")
            .status(TaskStatus::Running)
            .container(ContainerReport { status: Some(ContainerStatus::Running), ..ContainerReport::new("web") })
            .stop(StopCode::EssentialContainerExited, "Essential container in task exited");
        let text = serde_json::to_string(&report).unwrap();
        let back: TaskReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
        assert!(!back.is_empty());
        assert!(TaskReport::new("t").is_empty());
    }

    #[test]
    fn role_credentials_never_print_their_secrets() {
        let creds = RoleCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "the-secret".into(),
            session_token: "the-token".into(),
            expiration: Timestamp(0),
            role_arn: "arn:aws:iam::123456789012:role/app".into(),
        };
        let shown = format!("{creds:?}");
        assert!(
            shown.contains("ASIAEXAMPLE") && !shown.contains("the-secret") && !shown.contains("the-token"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let mut s = TaskSecrets::default();
        s.environment.insert("web".into(), vec![("API_KEY".into(), "hunter2".into())]);
        s.registry_logins.insert("web".into(), RegistryLogin { username: "u".into(), password: "p4ss".into() });
        let shown = format!("{s:?} {:?}", s.registry_logins["web"]);
        assert!(!shown.contains("hunter2") && !shown.contains("p4ss"), "{shown}");
    }

    #[test]
    fn volume_files_travel_as_base64_and_never_print() {
        let file = VolumeFile { path: "conf/a".into(), data: b"hunter2\n".to_vec(), mode: 0o400 };
        let volumes = TaskVolumes { efs: vec![], files: vec![FileVolume { name: "cfg".into(), files: vec![file] }] };
        let text = serde_json::to_string(&volumes).unwrap();
        assert!(text.contains(r#""data":"aHVudGVyMgo=""#), "{text}");
        assert_eq!(serde_json::from_str::<TaskVolumes>(&text).unwrap(), volumes);
        assert!(!format!("{volumes:?}").contains("hunter2"));
        // An older peer's answer has no files; an ECS task's carries none.
        assert_eq!(serde_json::from_str::<TaskVolumes>(r#"{"efs":[]}"#).unwrap(), TaskVolumes::default());
        assert_eq!(serde_json::to_string(&TaskVolumes::default()).unwrap(), r#"{"efs":[]}"#);
    }
}
