//! The host API served in process (`flotilla up`): the agent's calls become control-plane
//! calls, and the assignment stream follows the store's task records for one host.

use std::collections::HashMap;
use std::sync::Arc;

use flotilla_host::{
    Assignment, AssignmentEvent, AssignmentWatch, BoxFuture, Events, GroupRule, GroupView, Host, HostApi, HostApiError,
    HostSpec, InterfaceLease, LogEvent, NetworkChanged, NetworkWatch, RulePeer, RuleProtocol, TaskReport, TaskSecrets,
    TaskVolumes, VpcInterface, VpcView,
};
use flotilla_logs::{InputEvent, LogError, LogStore};
use flotilla_secrets::Secrets;
use flotilla_store::{Event, StoreError};
use flotilla_types::task::{AwsvpcConfiguration, Task};
use flotilla_types::task_definition::TaskDefinition;
use ipnet::Ipv4Net;
use tokio::sync::mpsc;

use crate::record::{Read, TASKS, decode};
use crate::task::TaskRecord;
use crate::vpc::keys;
use crate::{
    Control, ControlError, IpProtocol, Ipv4Cidr, NetworkError, NetworkInterface, NetworkInterfaceSpec, ResourceFilter,
    SecurityGroup, SecurityGroupRule,
};

/// How many events may wait for a slow agent before the stream pushes back.
const QUEUE: usize = 1024;

pub struct LocalHostApi {
    pub(super) control: Arc<Control>,
    /// SSM Parameter Store and Secrets Manager, for `secrets` and `repositoryCredentials`.
    secrets: Option<Arc<Secrets>>,
    /// Where the hosts' `awslogs` output goes: this server's log store.
    logs: Option<Arc<LogStore>>,
    /// EFS, for tasks' `efsVolumeConfiguration`s.
    efs: Option<Arc<flotilla_efs::Efs>>,
}

impl LocalHostApi {
    pub fn new(control: Arc<Control>, secrets: Option<Arc<Secrets>>) -> LocalHostApi {
        LocalHostApi { control, secrets, logs: None, efs: None }
    }

    /// Resolves tasks' EFS volumes against `efs`.
    pub fn with_efs(mut self, efs: Arc<flotilla_efs::Efs>) -> LocalHostApi {
        self.efs = Some(efs);
        self
    }

    /// Takes the hosts' container output into `logs`.
    pub fn with_logs(mut self, logs: Arc<LogStore>) -> LocalHostApi {
        self.logs = Some(logs);
        self
    }

    fn log_store(&self) -> Result<&LogStore, HostApiError> {
        self.logs.as_deref().ok_or_else(|| HostApiError::Refused {
            reason: "ResourceInitializationError: this server keeps no logs (awslogs is not served)".to_owned(),
        })
    }

    async fn ensure_group(&self, group: &str, create: bool) -> Result<(), HostApiError> {
        let logs = self.log_store()?;
        if logs.log_group(group).is_ok() {
            return Ok(());
        }
        if !create {
            return Err(HostApiError::Refused {
                reason: format!(
                    "ResourceInitializationError: failed to validate logger args: The specified log group does not exist: {group}. Create it, or set awslogs-create-group to true."
                ),
            });
        }
        logs.ensure_group(group).await.map(|_| ()).map_err(|e| match e.is_internal() {
            true => unavailable(e),
            false => HostApiError::Refused {
                reason: format!("ResourceInitializationError: failed to create log group {group}: {e}"),
            },
        })
    }

    async fn append_logs(&self, group: &str, stream: &str, events: Vec<LogEvent>) -> Result<(), HostApiError> {
        let logs = self.log_store()?;
        let refused = |e: LogError| match e.is_internal() {
            true => unavailable(e),
            false => HostApiError::Refused { reason: e.to_string() },
        };
        logs.ensure_stream(group, stream).await.map_err(refused)?;
        let events = events.into_iter().map(|e| InputEvent::new(e.timestamp, e.message)).collect();
        logs.append(group, stream, events).await.map(|_| ()).map_err(refused)
    }
}

fn unavailable(e: impl std::fmt::Display) -> HostApiError {
    HostApiError::Unavailable { reason: e.to_string() }
}

impl From<ControlError> for HostApiError {
    fn from(e: ControlError) -> HostApiError {
        match e {
            ControlError::ResourceNotFound { arn } => HostApiError::NotFound { what: arn },
            ControlError::Client(reason) | ControlError::InvalidParameter(reason) => HostApiError::Refused { reason },
            other => unavailable(other),
        }
    }
}

impl From<NetworkError> for HostApiError {
    fn from(e: NetworkError) -> HostApiError {
        match e {
            NetworkError::Store(_) | NetworkError::CorruptRecord { .. } => unavailable(e),
            other => HostApiError::Refused { reason: other.to_string() },
        }
    }
}

fn net(cidr: &Ipv4Cidr) -> Ipv4Net {
    Ipv4Net::new(cidr.network(), cidr.prefix()).expect("a stored CIDR has a valid prefix")
}

fn rule(r: &SecurityGroupRule) -> GroupRule {
    GroupRule {
        protocol: match r.protocol {
            IpProtocol::All => RuleProtocol::All,
            IpProtocol::Tcp => RuleProtocol::Tcp,
            IpProtocol::Udp => RuleProtocol::Udp,
            IpProtocol::Icmp => RuleProtocol::Icmp,
            IpProtocol::Other(n) => RuleProtocol::Other(n),
        },
        from_port: r.from_port,
        to_port: r.to_port,
        peer: match &r.peer {
            crate::RulePeer::Cidr(c) => RulePeer::Cidr(net(c)),
            crate::RulePeer::Group(g) => RulePeer::Group(g.clone()),
        },
    }
}

fn group(g: &SecurityGroup) -> GroupView {
    GroupView {
        id: g.id.clone(),
        vpc_id: g.vpc_id.clone(),
        ingress: g.ingress.iter().map(rule).collect(),
        egress: g.egress.iter().map(rule).collect(),
    }
}

/// Tells from a task record's stored bytes, without decoding them, that it is not assigned to
/// one host. Every host's assignment stream hears of every task record written, so when
/// thousands are placed at once, decoding each record (a few KB of JSON) once per host was
/// most of a server's work. `encode` (compact serde_json) writes the record's host as
/// `"hostId":"<id>"`: a record without those bytes is not the host's. One with them may still
/// not be (the bytes inside a nested object): the caller decodes it and checks.
#[derive(Clone)]
struct HostFilter(Arc<memchr::memmem::Finder<'static>>);

impl HostFilter {
    fn new(host_id: &str) -> HostFilter {
        let mut needle = b"\"hostId\":".to_vec();
        needle.extend(serde_json::to_vec(host_id).expect("a string serialises"));
        HostFilter(Arc::new(memchr::memmem::Finder::new(&needle).into_owned()))
    }

    /// False only for a record that is certainly not assigned to the host.
    fn may_hold(&self, value: &[u8]) -> bool {
        self.0.find(value).is_some()
    }
}

/// Follows the task records of one host and feeds them to the stream as assignments.
struct Follower {
    control: Arc<Control>,
    host_id: String,
    filter: HostFilter,
    tx: mpsc::Sender<Result<AssignmentEvent, HostApiError>>,
    definitions: HashMap<String, TaskDefinition>,
    /// The newest revision the agent has: a snapshot leaves out what it already knows.
    since: Option<u64>,
}

impl Follower {
    async fn definition(&mut self, arn: &str) -> Result<TaskDefinition, ControlError> {
        if let Some(d) = self.definitions.get(arn) {
            return Ok(d.clone());
        }
        let (d, _) = self.control.describe_task_definition(arn).await?;
        self.definitions.insert(arn.to_owned(), d.clone());
        Ok(d)
    }

    async fn assignment(&mut self, record: TaskRecord, revision: u64) -> Result<Option<Assignment>, ControlError> {
        if record.host_id.as_deref() != Some(self.host_id.as_str()) {
            return Ok(None);
        }
        let definition = self.definition(&record.task.task_definition_arn).await?;
        let awsvpc = record.network_configuration.and_then(|n| n.awsvpc_configuration);
        let volume_files = self.control.task_files().is_some_and(|f| f.serves(&record.task));
        Ok(Some(Assignment { task: record.task, definition, awsvpc, revision, volume_files }))
    }

    async fn snapshot(&mut self) -> Result<AssignmentEvent, ControlError> {
        let revision = self.control.store.revision().await?;
        let mut assignments = Vec::new();
        let mut unchanged = Vec::new();
        for kv in self.control.store.list_prefix(TASKS).await? {
            if !self.filter.may_hold(&kv.value) {
                continue;
            }
            let record: TaskRecord = decode(&kv)?;
            if self.since.is_some_and(|since| kv.mod_revision <= since) {
                if record.host_id.as_deref() == Some(self.host_id.as_str()) {
                    unchanged.push(record.task.task_arn);
                }
            } else if let Some(a) = self.assignment(record, kv.mod_revision).await? {
                assignments.push(a);
            }
        }
        Ok(AssignmentEvent::Snapshot { assignments, unchanged, revision })
    }

    fn removed(&self, key: &str, revision: u64) -> AssignmentEvent {
        let resource = key.strip_prefix(TASKS).unwrap_or(key);
        let (cluster, id) = resource.split_once('/').unwrap_or(("", resource));
        let task_arn = self.control.identity().task(cluster, id).to_string();
        AssignmentEvent::Removed { task_arn, revision }
    }

    async fn send(&mut self, event: Result<AssignmentEvent, HostApiError>) -> bool {
        let revision = match &event {
            Ok(AssignmentEvent::Snapshot { revision, .. } | AssignmentEvent::Removed { revision, .. }) => {
                Some(*revision)
            }
            Ok(AssignmentEvent::Changed { assignment }) => Some(assignment.revision),
            Err(_) => None,
        };
        if self.tx.send(event).await.is_err() {
            return false;
        }
        self.since = self.since.max(revision);
        true
    }

    /// Runs until the agent drops its end or the store closes.
    async fn run(mut self) {
        loop {
            // Watch first, then list: a change between the two shows up twice, never not at all.
            let filter = self.filter.clone();
            let mut watch = self.control.store.watch(TASKS).puts_where(move |value| filter.may_hold(value));
            let snapshot = self.snapshot().await.map_err(HostApiError::from);
            let failed = snapshot.is_err();
            if !self.send(snapshot).await {
                return;
            }
            if failed {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            loop {
                let event = match watch.next().await {
                    Ok(Event::Put(kv)) => {
                        let record = match decode::<TaskRecord>(&kv) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::warn!(key = %kv.key, error = %e, "unreadable task record skipped");
                                continue;
                            }
                        };
                        match self.assignment(record, kv.mod_revision).await {
                            Ok(Some(a)) => Ok(AssignmentEvent::Changed { assignment: Box::new(a) }),
                            Ok(None) => continue,
                            Err(e) => Err(HostApiError::from(e)),
                        }
                    }
                    Ok(Event::Delete { key, revision }) => Ok(self.removed(&key, revision)),
                    // Too slow to keep up: start over with a fresh snapshot.
                    Err(StoreError::WatchLagged { .. }) => break,
                    Err(_) => {
                        let _ = self.send(Err(HostApiError::Closed)).await;
                        return;
                    }
                };
                if !self.send(event).await {
                    return;
                }
            }
        }
    }
}

impl LocalHostApi {
    async fn lease(&self, eni: NetworkInterface) -> Result<InterfaceLease, HostApiError> {
        let subnet = self.control.subnet(&eni.subnet_id).await?;
        Ok(InterfaceLease {
            task_arn: eni.attachment.clone().unwrap_or_default(),
            subnet: net(&subnet.cidr),
            id: eni.id,
            subnet_id: eni.subnet_id,
            vpc_id: eni.vpc_id,
            private_ip: eni.private_ip,
            public_ip: eni.public_ip,
            mac: eni.mac,
            private_dns_name: eni.private_dns_name,
            security_groups: eni.groups.into_iter().map(|g| g.id).collect(),
        })
    }

    async fn make_interface(
        &self,
        task_arn: &str,
        attachment_id: &str,
        awsvpc: &AwsvpcConfiguration,
    ) -> Result<InterfaceLease, HostApiError> {
        if let Some(existing) = self.control.network_interface_for(task_arn).await? {
            return self.lease(existing).await;
        }
        let placement = self.control.validate_awsvpc(&awsvpc.subnets, &awsvpc.security_groups).await.map_err(|e| {
            HostApiError::Refused { reason: format!("ResourceInitializationError: invalid awsvpcConfiguration: {e}") }
        })?;
        // The control plane put the task's subnet (and so its zone) first; the others are
        // tried in order only if that one has no address left.
        let description = self.control.identity().attachment(attachment_id);
        let mut last = String::new();
        for subnet in &placement.subnets {
            let spec = NetworkInterfaceSpec {
                subnet_id: subnet.id.clone(),
                security_group_ids: placement.security_group_ids.clone(),
                description: Some(description.to_string()),
                assign_public_ip: awsvpc.public_ip(),
                attachment: Some(task_arn.to_owned()),
            };
            match self.control.create_network_interface(spec).await {
                Ok(eni) => return self.lease(eni).await,
                Err(e @ (NetworkError::Store(_) | NetworkError::CorruptRecord { .. })) => return Err(unavailable(e)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(HostApiError::Refused {
            reason: format!("ResourceInitializationError: unable to create the task's network interface: {last}"),
        })
    }

    /// Task interfaces whose task is this host's or gone.
    async fn host_interfaces(&self, host_id: &str) -> Result<Vec<InterfaceLease>, HostApiError> {
        let mut out = Vec::new();
        for eni in self.control.describe_network_interfaces(&[], &[]).await? {
            let Some(task_arn) = eni.attachment.as_deref() else { continue };
            let Ok(key) = self.control.task_key_of(task_arn) else { continue };
            let owner = match self.control.store.get_stale(&key).await.map_err(unavailable)? {
                Some(kv) => decode::<TaskRecord>(&kv)?.host_id,
                None => None,
            };
            if owner.as_deref().is_none_or(|h| h == host_id) {
                out.push(self.lease(eni).await?);
            }
        }
        Ok(out)
    }

    async fn vpc_view(&self, vpc_id: &str) -> Result<Option<VpcView>, HostApiError> {
        let vpc = match self.control.vpc(vpc_id).await {
            Ok(v) => v,
            Err(NetworkError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let filter = ResourceFilter { name: "vpc-id".into(), values: vec![vpc_id.to_owned()] };
        let groups = self.control.describe_security_groups(&[], &[], std::slice::from_ref(&filter)).await?;
        let interfaces = self.vpc_interfaces(filter).await?;
        let virtual_services = self.control.virtual_services(vpc_id).await?;
        Ok(Some(VpcView {
            vni: vpc.vni(),
            id: vpc.id,
            cidr: net(&vpc.cidr),
            groups: groups.iter().map(group).collect(),
            interfaces,
            virtual_services,
        }))
    }

    /// The VPC's interfaces with their tasks' hosts (for the overlay between hosts).
    /// Empty while no host has an underlay address (one host: nothing to route between hosts,
    /// and nothing to read per interface).
    async fn vpc_interfaces(&self, vpc: ResourceFilter) -> Result<Vec<VpcInterface>, HostApiError> {
        let underlays: HashMap<String, Option<std::net::Ipv4Addr>> =
            self.control.hosts_as(Read::Stale).await?.into_iter().map(|h| (h.spec.id, h.spec.underlay_ip)).collect();
        if underlays.values().all(Option::is_none) {
            return Ok(Vec::new());
        }
        let enis = self.control.describe_network_interfaces(&[], &[vpc]).await?;
        let mut out = Vec::with_capacity(enis.len());
        for eni in enis {
            let key = eni.attachment.as_deref().and_then(|arn| self.control.task_key_of(arn).ok());
            let host_id = match key {
                Some(key) => match self.control.store.get_stale(&key).await.map_err(unavailable)? {
                    Some(kv) => decode::<TaskRecord>(&kv)?.host_id,
                    None => None,
                },
                None => None,
            };
            out.push(VpcInterface {
                underlay_ip: host_id.as_ref().and_then(|h| underlays.get(h).copied().flatten()),
                host_id,
                id: eni.id,
                private_ip: eni.private_ip,
                security_groups: eni.groups.into_iter().map(|g| g.id).collect(),
            });
        }
        Ok(out)
    }

    async fn secrets_of(&self, task_arn: &str) -> Result<TaskSecrets, HostApiError> {
        let key = self.control.task_key_of(task_arn)?;
        let kv = self.control.store.get_stale(&key).await.map_err(unavailable)?;
        let record: TaskRecord = decode(&kv.ok_or_else(|| HostApiError::NotFound { what: task_arn.to_owned() })?)?;
        let (definition, _) = self.control.describe_task_definition(&record.task.task_definition_arn).await?;
        // With an execution role the platform fetches as that role, and writes its logs as it.
        let role = self.control.execution_role(&definition, record.task.id());
        let secrets = super::secrets::resolve(self.secrets.as_deref(), &definition, role.as_ref()).await?;
        if let Some(role) = &role {
            super::secrets::check_logs(role, self.logs.as_deref(), &definition, record.task.id()).await?;
        }
        Ok(secrets)
    }
}

impl LocalHostApi {
    async fn volumes_of(&self, task_arn: &str) -> Result<TaskVolumes, HostApiError> {
        let key = self.control.task_key_of(task_arn)?;
        let kv = self.control.store.get_stale(&key).await.map_err(unavailable)?;
        let record: TaskRecord = decode(&kv.ok_or_else(|| HostApiError::NotFound { what: task_arn.to_owned() })?)?;
        let (definition, _) = self.control.describe_task_definition(&record.task.task_definition_arn).await?;
        let files = match self.control.task_files() {
            Some(provider) if provider.serves(&record.task) => provider.files(&record.task).await?,
            _ => Vec::new(),
        };
        if definition.volumes.iter().all(|v| v.efs_volume_configuration.is_none()) {
            return Ok(TaskVolumes { files, ..Default::default() });
        }
        let efs = self.efs.as_deref().ok_or_else(|| HostApiError::Refused {
            reason: "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: \
                     this server does not serve EFS"
                .into(),
        })?;
        let mut volumes = efs.task_volumes(&definition.volumes, &record.task.availability_zone).await?;
        volumes.files = files;
        Ok(volumes)
    }
}

impl HostApi for LocalHostApi {
    fn task_volumes<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<TaskVolumes, HostApiError>> {
        Box::pin(self.volumes_of(task_arn))
    }

    fn register(&self, spec: HostSpec) -> BoxFuture<'_, Result<Host, HostApiError>> {
        Box::pin(async move { Ok(self.control.register_host(spec).await?) })
    }

    fn assignments(&self, host_id: &str, since: Option<u64>) -> AssignmentWatch {
        let (tx, rx) = mpsc::channel(QUEUE);
        let follower = Follower {
            control: self.control.clone(),
            host_id: host_id.to_owned(),
            filter: HostFilter::new(host_id),
            tx,
            definitions: HashMap::new(),
            since,
        };
        tokio::spawn(follower.run());
        Events::new(rx)
    }

    fn report(&self, report: TaskReport) -> BoxFuture<'_, Result<Task, HostApiError>> {
        Box::pin(async move { Ok(self.control.apply_report(&report).await?) })
    }

    fn ensure_interface<'a>(
        &'a self,
        task_arn: &'a str,
        attachment_id: &'a str,
        awsvpc: &'a AwsvpcConfiguration,
    ) -> BoxFuture<'a, Result<InterfaceLease, HostApiError>> {
        Box::pin(self.make_interface(task_arn, attachment_id, awsvpc))
    }

    fn interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<Option<InterfaceLease>, HostApiError>> {
        Box::pin(async move {
            match self.control.network_interface_for(task_arn).await? {
                Some(eni) => Ok(Some(self.lease(eni).await?)),
                None => Ok(None),
            }
        })
    }

    fn release_interface<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(async move {
            if let Some(eni) = self.control.network_interface_for(task_arn).await? {
                self.control.delete_network_interface(&eni.id).await?;
            }
            Ok(())
        })
    }

    fn interfaces<'a>(&'a self, host_id: &'a str) -> BoxFuture<'a, Result<Vec<InterfaceLease>, HostApiError>> {
        Box::pin(self.host_interfaces(host_id))
    }

    fn vpc<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<Option<VpcView>, HostApiError>> {
        Box::pin(self.vpc_view(vpc_id))
    }

    fn network_changes(&self) -> NetworkWatch {
        let (tx, rx) = mpsc::channel(16);
        let store = self.control.store.clone();
        tokio::spawn(async move {
            // Interfaces too: every host serving the VPC routes them (the overlay); and the
            // VPCs' virtual services (ClusterIPs), which every such host DNATs.
            let relevant = |key: &str| {
                key.starts_with(keys::SECURITY_GROUPS)
                    || key.starts_with(keys::VPCS)
                    || key.starts_with(keys::NETWORK_INTERFACES)
                    || key.starts_with(keys::VIRTUAL_SERVICES)
            };
            let mut changes = store.watch(keys::PREFIX);
            loop {
                let dirty = match changes.next().await {
                    Ok(event) => relevant(event.key()),
                    Err(StoreError::WatchLagged { .. }) => {
                        changes = store.watch(keys::PREFIX);
                        true
                    }
                    Err(_) => return,
                };
                // A full queue already holds a tick: nothing is lost by dropping this one.
                if dirty && let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Ok(NetworkChanged)) {
                    return;
                }
            }
        });
        Events::new(rx)
    }

    fn task_secrets<'a>(&'a self, task_arn: &'a str) -> BoxFuture<'a, Result<TaskSecrets, HostApiError>> {
        Box::pin(self.secrets_of(task_arn))
    }

    fn task_role_credentials<'a>(
        &'a self,
        task_arn: &'a str,
    ) -> BoxFuture<'a, Result<flotilla_host::RoleCredentials, HostApiError>> {
        Box::pin(self.role_credentials_of(task_arn))
    }

    fn load_balancers(&self, _host_id: &str) -> flotilla_host::lb::LbWatch {
        // One host serves every load balancer today; placement across hosts comes with etcd.
        super::lb::watch(self.control.store.clone(), self.control.elb().cloned())
    }

    fn report_targets(&self, reports: Vec<flotilla_host::lb::TargetReport>) -> BoxFuture<'_, Result<(), HostApiError>> {
        Box::pin(super::lb::record(self.control.elb(), reports))
    }

    fn heartbeat<'a>(&'a self, host_id: &'a str) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(async move { Ok(self.control.host_heartbeat(host_id).await?) })
    }

    fn service_discovery(&self) -> flotilla_host::discovery::DiscoveryWatch {
        super::discovery::watch(self.control.store.clone())
    }

    fn ensure_log_group<'a>(&'a self, group: &'a str, create: bool) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(self.ensure_group(group, create))
    }

    fn put_logs<'a>(
        &'a self,
        group: &'a str,
        stream: &'a str,
        events: Vec<LogEvent>,
    ) -> BoxFuture<'a, Result<(), HostApiError>> {
        Box::pin(self.append_logs(group, stream, events))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use flotilla_store::{EmbeddedStore, Op, Txn};
    use flotilla_types::{Identity, Timestamp};

    use super::*;
    use crate::host::Reservation;
    use crate::record::{encode, task_key};
    use crate::{CreateSubnetInput, CreateVpcInput, vni_of};

    const CLUSTER: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/c";

    fn task_arn(id: &str) -> String {
        format!("arn:aws:ecs:us-east-1:123456789012:task/c/{id}")
    }

    async fn put_task(control: &Control, id: &str, host_id: Option<&str>) {
        let task = Task::provisioning(task_arn(id), CLUSTER.into(), format!("{CLUSTER}-td"), Timestamp(1));
        let record = TaskRecord {
            task,
            network_configuration: None,
            host_id: host_id.map(str::to_owned),
            protection: None,
            reservation: None,
        };
        control.store.txn(Txn::new().then(Op::put(task_key("c", id), encode(&record)))).await.unwrap();
    }

    #[test]
    fn the_host_filter_passes_every_record_of_its_host_and_no_other_hosts() {
        let record = |host_id: Option<&str>| {
            let task = Task::provisioning(task_arn("t"), CLUSTER.into(), format!("{CLUSTER}-td"), Timestamp(1));
            let reservation = Some(Reservation { cpu: 256, memory: 512 });
            let host_id = host_id.map(str::to_owned);
            encode(&TaskRecord { task, network_configuration: None, host_id, protection: None, reservation })
        };
        for id in ["host-1", "h\"q\\uot\u{e9}d\n"] {
            let filter = HostFilter::new(id);
            assert!(filter.may_hold(&record(Some(id))), "{id}'s own record filtered out");
            let decoded: TaskRecord = serde_json::from_slice(&record(Some(id))).unwrap();
            assert_eq!(decoded.host_id.as_deref(), Some(id));
        }
        let filter = HostFilter::new("host-1");
        for other in [Some("host-10"), Some("host-"), Some("xhost-1"), None] {
            assert!(!filter.may_hold(&record(other)), "{other:?}'s record passed host-1's filter");
        }
    }

    #[tokio::test]
    async fn a_vpc_view_carries_its_vni_and_where_its_interfaces_are() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
        let identity = Identity { region: "us-east-1".into(), account: "123456789012".into() };
        let control = Arc::new(Control::new(Arc::new(store), identity));
        let api = LocalHostApi::new(control.clone(), None);

        let input = |cidr: &str| CreateVpcInput { cidr_block: cidr.into(), tags: Vec::new() };
        let vpc = control.create_vpc(input("10.50.0.0/16")).await.unwrap();
        let other = control.create_vpc(input("10.60.0.0/16")).await.unwrap();
        let subnet = control
            .create_subnet(CreateSubnetInput {
                vpc_id: vpc.id.clone(),
                cidr_block: "10.50.1.0/24".into(),
                availability_zone: None,
                tags: Vec::new(),
            })
            .await
            .unwrap();
        for (id, underlay) in [("host-a", Some("192.0.2.1")), ("host-b", None)] {
            let spec = HostSpec {
                id: id.into(),
                availability_zone: "us-east-1a".into(),
                cpu: 1024,
                memory: 2048,
                underlay_ip: underlay.map(|u| u.parse().unwrap()),
                max_tasks: None,
            };
            control.register_host(spec).await.unwrap();
        }
        put_task(&control, "t1", Some("host-a")).await;
        put_task(&control, "t2", Some("host-b")).await;
        put_task(&control, "t3", None).await;
        let mut ips = HashMap::new();
        for id in ["t1", "t2", "t3"] {
            let spec = NetworkInterfaceSpec {
                subnet_id: subnet.id.clone(),
                attachment: Some(task_arn(id)),
                ..Default::default()
            };
            let eni = control.create_network_interface(spec).await.unwrap();
            ips.insert(id, eni.private_ip);
        }

        let view = api.vpc(&vpc.id).await.unwrap().unwrap();
        assert_eq!(view.vni, vni_of(&vpc.id));
        assert!(view.vni > 0 && view.vni < 1 << 24);
        assert_ne!(view.vni, api.vpc(&other.id).await.unwrap().unwrap().vni, "VNIs are unique among VPCs");
        assert_eq!(view.interfaces.len(), 3);
        let of = |id: &str| view.interfaces.iter().find(|i| i.private_ip == ips[id]).unwrap();
        assert_eq!(of("t1").host_id.as_deref(), Some("host-a"));
        assert_eq!(of("t1").underlay_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(of("t1").security_groups, vec![vpc.default_security_group_id.clone()]);
        assert_eq!((of("t2").host_id.as_deref(), of("t2").underlay_ip), (Some("host-b"), None));
        assert_eq!((of("t3").host_id.as_deref(), of("t3").underlay_ip), (None, None));
        assert!(api.vpc(&other.id).await.unwrap().unwrap().interfaces.is_empty());
        // With no host on an underlay there is nothing to route between hosts.
        let lone = HostSpec { underlay_ip: None, ..control.hosts().await.unwrap()[0].spec.clone() };
        control.register_host(lone).await.unwrap();
        assert!(api.vpc(&vpc.id).await.unwrap().unwrap().interfaces.is_empty());

        // Creating or releasing an interface ticks every host's network watch.
        let mut changes = api.network_changes();
        tokio::task::yield_now().await;
        api.release_interface(&task_arn("t3")).await.unwrap();
        let tick = tokio::time::timeout(std::time::Duration::from_secs(5), changes.next()).await;
        assert!(matches!(tick, Ok(Ok(NetworkChanged))), "{tick:?}");
    }
}
