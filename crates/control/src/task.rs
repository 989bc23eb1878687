//! Tasks: RunTask, StopTask, DescribeTasks, ListTasks, and the updates the agent reports.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::task::{
    Container, ContainerStatus, DesiredStatus, NetworkConfiguration, StopCode, Task, TaskOverride, TaskStatus,
};
use flotilla_types::task_definition::{Tag, TaskDefinition, TaskDefinitionStatus};
use flotilla_types::{Arn, ResourceKind, TaskSize, Timestamp, parse_cpu, parse_memory};
use serde::{Deserialize, Serialize};

use crate::capacity::{CapacityProviderStrategyItem, FARGATE, validate_strategy_items};
use crate::host::Reservation;
use crate::page::{Page, paginate};
use crate::record::{Read, decode, encode, list_as, load, load_as, task_key, tasks_prefix, token_key};
use crate::tags::validate_tags;
use crate::{Control, ControlError};
use flotilla_host::Host;

/// Most tasks one RunTask may start, as on AWS.
const MAX_COUNT: i32 = 10;

/// The part of a [`TaskRecord`] ListTasks filters on: with 1,000 tasks, decoding whole
/// records made a page take ~10 ms.
#[derive(Deserialize)]
struct ListedRecord {
    task: ListedTask,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedTask {
    task_arn: String,
    task_definition_arn: String,
    desired_status: DesiredStatus,
    launch_type: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    started_by: Option<String>,
}

/// What the store keeps per task: the task and what it was launched with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub task: Task,
    #[serde(default)]
    pub network_configuration: Option<NetworkConfiguration>,
    /// The host the task is assigned to; `None` while no host can take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Task scale-in protection: until when the service scheduler must not choose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<Timestamp>,
    /// What the task holds on its host's allocation until it is STOPPED; `None` for tasks
    /// made while no host was registered (adopted without a reservation) and once released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<Reservation>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskInput {
    pub cluster: Option<String>,
    pub task_definition: String,
    pub count: Option<i32>,
    pub launch_type: Option<String>,
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    pub network_configuration: Option<NetworkConfiguration>,
    pub overrides: Option<TaskOverride>,
    pub started_by: Option<String>,
    pub group: Option<String>,
    pub tags: Option<Vec<Tag>>,
    pub client_token: Option<String>,
    pub enable_execute_command: Option<bool>,
    pub platform_version: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ListTasksInput {
    pub cluster: Option<String>,
    pub family: Option<String>,
    pub desired_status: Option<DesiredStatus>,
    pub started_by: Option<String>,
    pub launch_type: Option<String>,
    pub service_name: Option<String>,
    pub max_results: Option<i32>,
    pub next_token: Option<String>,
}

/// What a RunTask with a clientToken produced, so a retry returns the same tasks.
#[derive(Serialize, Deserialize)]
struct TokenRecord {
    request: String,
    task_arns: Vec<String>,
}

pub(crate) fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A stable spread of task ids over a few choices.
fn id_hash(id: &str) -> usize {
    id.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
}

/// `network` with `subnet` moved to the front: the subnet the task's interface is made in
/// first.
pub(crate) fn subnet_first(network: &NetworkConfiguration, subnet: &str) -> NetworkConfiguration {
    let mut out = network.clone();
    if let Some(awsvpc) = out.awsvpc_configuration.as_mut()
        && let Some(i) = awsvpc.subnets.iter().position(|s| s == subnet)
    {
        let chosen = awsvpc.subnets.remove(i);
        awsvpc.subnets.insert(0, chosen);
    }
    out
}

/// How one new task is launched: everything about it that is not its task definition.
pub(crate) struct Launch {
    pub id: String,
    pub capacity_provider: Option<String>,
    pub platform_version: Option<String>,
    pub group: Option<String>,
    pub started_by: Option<String>,
    pub enable_execute_command: bool,
    pub tags: Vec<Tag>,
    /// Subnets in the order to try; the first one's zone is `availability_zone`.
    pub network_configuration: Option<NetworkConfiguration>,
    pub availability_zone: Option<String>,
}

/// Assigns each of `count` tasks a capacity provider: `base` first, then by weight.
pub(crate) fn place(strategy: &[CapacityProviderStrategyItem], count: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(count);
    if let Some(based) = strategy.iter().find(|i| i.base > 0) {
        out.extend(std::iter::repeat_n(based.capacity_provider.clone(), (based.base as usize).min(count)));
    }
    let total: i32 = strategy.iter().map(|i| i.weight).sum();
    let mut placed = vec![0i64; strategy.len()];
    while out.len() < count && total > 0 {
        // The provider furthest below its weighted share gets the next task.
        let n = out.len() as i64 + 1;
        let (best, _) = strategy
            .iter()
            .enumerate()
            .filter(|(_, item)| item.weight > 0)
            .map(|(i, item)| (i, n * i64::from(item.weight) - placed[i] * i64::from(total)))
            .max_by_key(|&(i, deficit)| (deficit, std::cmp::Reverse(i)))
            .expect("some provider has weight");
        placed[best] += 1;
        out.push(strategy[best].capacity_provider.clone());
    }
    out
}

/// The task size after overrides, checked against the Fargate table and the containers.
pub(crate) fn task_size(definition: &TaskDefinition, overrides: &TaskOverride) -> Result<TaskSize, ControlError> {
    let cpu_text = overrides.cpu.as_deref().or(definition.cpu.as_deref()).unwrap_or("256");
    let memory_text = overrides.memory.as_deref().or(definition.memory.as_deref()).unwrap_or("512");
    let cpu = parse_cpu(cpu_text)
        .ok_or_else(|| ControlError::invalid(format!("overrides.cpu: '{cpu_text}' is not a CPU value.")))?;
    let memory = parse_memory(memory_text)
        .ok_or_else(|| ControlError::invalid(format!("overrides.memory: '{memory_text}' is not a memory value.")))?;
    let size = TaskSize::new(cpu, memory).map_err(|e| ControlError::invalid(format!("overrides: {e}")))?;
    let mut cpu_sum = 0i64;
    let mut memory_sum = 0i64;
    for c in &definition.container_definitions {
        let name = c.name.as_deref().unwrap_or_default();
        let o = overrides.container_overrides.iter().find(|o| o.name.as_deref() == Some(name));
        cpu_sum += i64::from(o.and_then(|o| o.cpu).or(c.cpu).unwrap_or(0));
        let reservation = o.and_then(|o| o.memory_reservation).or(c.memory_reservation);
        let limit = o.and_then(|o| o.memory).or(c.memory);
        memory_sum += i64::from(reservation.or(limit).unwrap_or(0));
        if let Some(limit) = limit
            && i64::from(limit) > i64::from(size.memory)
        {
            return Err(ControlError::invalid(format!(
                "overrides: container {name} memory {limit} MiB exceeds the task memory {} MiB.",
                size.memory
            )));
        }
    }
    if cpu_sum > i64::from(size.cpu) {
        return Err(ControlError::invalid(format!(
            "overrides: the containers' cpu ({cpu_sum}) exceeds the task cpu ({}).",
            size.cpu
        )));
    }
    if memory_sum > i64::from(size.memory) {
        return Err(ControlError::invalid(format!(
            "overrides: the containers' memory ({memory_sum} MiB) exceeds the task memory ({} MiB).",
            size.memory
        )));
    }
    Ok(size)
}

impl Control {
    pub async fn run_task(&self, input: RunTaskInput) -> Result<(Vec<Task>, Vec<(String, String)>), ControlError> {
        let count = input.count.unwrap_or(1);
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(ControlError::invalid(format!("count: must be between 1 and {MAX_COUNT}, got {count}.")));
        }
        let tags = input.tags.clone().unwrap_or_default();
        validate_tags(&tags)?;
        if let Some(token) = &input.client_token
            && (token.is_empty() || token.len() > 64)
        {
            return Err(ControlError::invalid("clientToken: must be 1 to 64 characters."));
        }
        let (cluster, _) = self.active_cluster(input.cluster.as_deref()).await?;

        // Launch type or capacity provider strategy, never both; the cluster default otherwise.
        let strategy = match (&input.launch_type, &input.capacity_provider_strategy) {
            (Some(_), Some(s)) if !s.is_empty() => {
                return Err(ControlError::invalid(
                    "Specifying both a launchType and capacityProviderStrategy is not supported.",
                ));
            }
            (Some(lt), _) if lt != FARGATE => {
                return Err(ControlError::invalid(format!(
                    "launchType: Flotilla runs Fargate tasks only; use FARGATE instead of {lt}."
                )));
            }
            (Some(_), _) => Vec::new(),
            (None, Some(s)) if !s.is_empty() => s.clone(),
            _ => cluster.default_capacity_provider_strategy.clone(),
        };
        validate_strategy_items(&strategy)?;
        for item in &strategy {
            if !cluster.capacity_providers.contains(&item.capacity_provider) {
                return Err(ControlError::invalid(format!(
                    "capacityProviderStrategy: capacity provider {} is not associated with cluster {}; add it with PutClusterCapacityProviders.",
                    item.capacity_provider, cluster.cluster_name
                )));
            }
        }

        let (definition, _) = self.describe_task_definition(&input.task_definition).await.map_err(|e| match e {
            ControlError::Client(_) => ControlError::invalid(format!(
                "taskDefinition: {} does not exist or has no ACTIVE revision.",
                input.task_definition
            )),
            other => other,
        })?;
        if definition.status != TaskDefinitionStatus::Active {
            return Err(ControlError::client(format!(
                "TaskDefinition is inactive: {} cannot run new tasks.",
                definition.task_definition_arn
            )));
        }
        self.check_task_roles(&definition).await?;
        let mut placement = None;
        if definition.network_mode.as_deref() == Some("awsvpc") {
            let awsvpc = input.network_configuration.as_ref().and_then(|n| n.awsvpc_configuration.as_ref());
            let Some(awsvpc) = awsvpc else {
                return Err(ControlError::invalid(
                    "Network Configuration must be provided when networkMode 'awsvpc' is specified: pass networkConfiguration.awsvpcConfiguration with at least one subnet.",
                ));
            };
            // The subnets and groups must exist and share one VPC, as on Fargate.
            placement = Some(self.validate_awsvpc(&awsvpc.subnets, &awsvpc.security_groups).await?);
        }
        let overrides = input.overrides.clone().unwrap_or_default();
        for o in &overrides.container_overrides {
            let name = o.name.as_deref().unwrap_or_default();
            if !definition.container_definitions.iter().any(|c| c.name.as_deref() == Some(name)) {
                return Err(ControlError::invalid(format!(
                    "overrides.containerOverrides: Override for container named {name} is not a container in the TaskDefinition."
                )));
            }
        }
        let size = task_size(&definition, &overrides)?;

        // Idempotency: the same token and request returns the tasks it made the first time.
        let request_fingerprint = serde_json::to_string(&(
            &input.task_definition,
            count,
            &input.launch_type,
            &input.overrides,
            &input.started_by,
            &input.group,
            &input.network_configuration,
        ))
        .expect("serialisable");
        let token = input.client_token.as_ref().map(|t| token_key(&cluster.cluster_name, t));
        if let Some(key) = &token
            && let Some((existing, _)) = load::<TokenRecord>(self.store.as_ref(), key).await?
        {
            if existing.request != request_fingerprint {
                return Err(ControlError::invalid(
                    "clientToken: this token was already used for a different RunTask request; use a new token.",
                ));
            }
            let (tasks, _) = self.describe_tasks(Some(&cluster.cluster_name), &existing.task_arns, true).await?;
            return Ok((tasks, Vec::new()));
        }

        let providers = if strategy.is_empty() {
            vec![None; count as usize]
        } else {
            place(&strategy, count as usize).into_iter().map(Some).collect()
        };
        let now = Timestamp::now();
        let mut placer = self.placer().await?;
        let reservation = Reservation::from(size);
        let mut records = Vec::new();
        let mut failures: Vec<(String, String)> = Vec::new();
        for provider in providers {
            let id = new_task_id();
            // Fargate spreads a RunTask's tasks over its subnets: each starts at one picked by
            // its id; when no host in that subnet's zone has room, the next subnet's zone.
            let subnets: Vec<Option<&crate::vpc::Subnet>> = match &placement {
                Some(p) => {
                    let start = id_hash(&id) % p.subnets.len();
                    (0..p.subnets.len()).map(|i| Some(&p.subnets[(start + i) % p.subnets.len()])).collect()
                }
                None => vec![None],
            };
            let mut chosen = None;
            let mut unplaced = Vec::new();
            for subnet in subnets {
                if placer.no_hosts() {
                    chosen = Some((subnet, None));
                    break;
                }
                match placer.place(subnet.map(|s| s.availability_zone.as_str()), reservation, &Default::default()) {
                    Ok(host) => {
                        chosen = Some((subnet, Some(host.clone())));
                        break;
                    }
                    Err(u) => unplaced.extend(u.hosts),
                }
            }
            let Some((subnet, host)) = chosen else {
                for (host, reason) in unplaced {
                    let arn = self
                        .identity
                        .ecs(ResourceKind::ContainerInstance, format!("{}/{host}", cluster.cluster_name))
                        .to_string();
                    if !failures.iter().any(|(a, r)| *a == arn && r == reason) {
                        failures.push((arn, reason.to_owned()));
                    }
                }
                continue;
            };
            let (network_configuration, availability_zone) = match subnet {
                Some(first) => (
                    input.network_configuration.as_ref().map(|n| subnet_first(n, &first.id)),
                    Some(first.availability_zone.clone()),
                ),
                None => (input.network_configuration.clone(), None),
            };
            let launch = Launch {
                id,
                capacity_provider: provider,
                platform_version: input.platform_version.clone(),
                group: Some(input.group.clone().unwrap_or_else(|| format!("family:{}", definition.family))),
                started_by: input.started_by.clone(),
                enable_execute_command: input.enable_execute_command.unwrap_or(false),
                tags: tags.clone(),
                network_configuration,
                availability_zone,
            };
            let mut record = self.new_task(
                &cluster.cluster_name,
                &cluster.cluster_arn,
                &definition,
                size,
                &overrides,
                launch,
                host.as_ref(),
                now,
            );
            record.reservation = host.is_some().then_some(reservation);
            records.push(record);
        }
        if records.is_empty() {
            return Ok((Vec::new(), failures));
        }

        let mut txn = placer.commit_ops(Txn::new());
        if let Some(key) = &token {
            let token_record = TokenRecord {
                request: request_fingerprint,
                task_arns: records.iter().map(|r| r.task.task_arn.clone()).collect(),
            };
            txn = txn.when(Compare::absent(key)).then(Op::put(key, encode(&token_record)));
        }
        for record in &records {
            txn = txn.then(Op::put(task_key(&cluster.cluster_name, record.task.id()), encode(record)));
        }
        match self.store.txn(txn).await? {
            TxnOutcome::Committed(_) => {
                let mut tasks: Vec<Task> = records.into_iter().map(|r| r.task).collect();
                tasks.iter_mut().for_each(Task::show_managed_agents);
                Ok((tasks, failures))
            }
            // A concurrent retry with the same token won the race (answer with its tasks), or
            // another placement took room on a chosen host first (place again).
            TxnOutcome::Conflict => Box::pin(self.run_task(input)).await,
        }
    }

    /// The record of one new task, PROVISIONING, assigned to `host`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_task(
        &self,
        cluster_name: &str,
        cluster_arn: &str,
        definition: &TaskDefinition,
        size: TaskSize,
        overrides: &TaskOverride,
        launch: Launch,
        host: Option<&Host>,
        now: Timestamp,
    ) -> TaskRecord {
        let id = launch.id;
        let task_arn = self.identity.task(cluster_name, &id).to_string();
        let containers = definition
            .container_definitions
            .iter()
            .map(|c| {
                let name = c.name.clone().unwrap_or_default();
                let o = overrides.container_overrides.iter().find(|o| o.name.as_deref() == Some(name.as_str()));
                Container {
                    container_arn: self
                        .identity
                        .container(cluster_name, &id, &uuid::Uuid::new_v4().to_string())
                        .to_string(),
                    task_arn: task_arn.clone(),
                    name,
                    image: c.image.clone().unwrap_or_default(),
                    image_digest: None,
                    runtime_id: None,
                    last_status: ContainerStatus::Pending,
                    exit_code: None,
                    reason: None,
                    network_bindings: Vec::new(),
                    network_interfaces: Vec::new(),
                    health_status: c.health_check.as_ref().map(|_| flotilla_types::task::HealthStatus::Unknown),
                    restart_count: None,
                    cpu: Some(o.and_then(|o| o.cpu).or(c.cpu).unwrap_or(0).to_string()),
                    memory: o.and_then(|o| o.memory).or(c.memory).map(|m| m.to_string()),
                    memory_reservation: o
                        .and_then(|o| o.memory_reservation)
                        .or(c.memory_reservation)
                        .map(|m| m.to_string()),
                    managed_agents: Vec::new(),
                }
            })
            .collect();
        let task = Task {
            cpu: size.cpu.to_string(),
            memory: size.memory.to_string(),
            containers,
            overrides: overrides.clone(),
            capacity_provider_name: launch.capacity_provider,
            platform_version: launch.platform_version.filter(|v| v != "LATEST").unwrap_or_else(|| "1.4.0".into()),
            availability_zone: launch
                .availability_zone
                .or_else(|| host.map(|h| h.spec.availability_zone.clone()))
                .unwrap_or_else(|| format!("{}a", self.identity.region)),
            attributes: vec![serde_json::json!({"name": "ecs.cpu-architecture", "value": "x86_64"})],
            group: launch.group,
            started_by: launch.started_by,
            enable_execute_command: launch.enable_execute_command,
            ephemeral_storage: overrides.ephemeral_storage.clone().or_else(|| definition.ephemeral_storage.clone()),
            tags: Some(launch.tags),
            ..Task::provisioning(task_arn, cluster_arn.to_owned(), definition.task_definition_arn.clone(), now)
        };
        TaskRecord {
            task,
            network_configuration: launch.network_configuration,
            host_id: host.map(|h| h.spec.id.clone()),
            protection: None,
            reservation: None,
        }
    }

    /// Resolves a `task` member (id or ARN) within a cluster to the store key's parts.
    pub(crate) fn task_ref(&self, cluster: &str, task: &str) -> Result<(String, String), ControlError> {
        if task.starts_with("arn:") {
            let arn = Arn::parse(task)
                .filter(|a| a.kind == ResourceKind::Task)
                .ok_or_else(|| ControlError::invalid(format!("task: '{task}' is not a task ARN.")))?;
            let (c, id) = arn.resource.split_once('/').unwrap_or((cluster, arn.resource.as_str()));
            return Ok((c.to_owned(), id.to_owned()));
        }
        Ok((cluster.to_owned(), task.to_owned()))
    }

    pub async fn describe_tasks(
        &self,
        cluster: Option<&str>,
        tasks: &[String],
        include_tags: bool,
    ) -> Result<(Vec<Task>, Vec<(String, String)>), ControlError> {
        if tasks.is_empty() || tasks.len() > 100 {
            return Err(ControlError::invalid("tasks: give 1 to 100 task ids or ARNs."));
        }
        let cluster = self.cluster_name(cluster)?;
        let refs = tasks.iter().map(|raw| self.task_ref(&cluster, raw)).collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<String> = refs.iter().map(|(c, id)| task_key(c, id)).collect();
        // Read together: on a networked store each read is a round trip.
        let records = futures_util::future::join_all(
            keys.iter().map(|key| load_as::<TaskRecord>(self.store.as_ref(), key, Read::Stale)),
        )
        .await;
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for ((raw, (c, id)), record) in tasks.iter().zip(refs).zip(records) {
            match record? {
                Some((record, _)) => {
                    let mut task = record.task;
                    task.show_managed_agents();
                    if !include_tags {
                        task.tags = None;
                    }
                    found.push(task);
                }
                None => missing.push((
                    if raw.starts_with("arn:") { raw.clone() } else { self.identity.task(&c, &id).to_string() },
                    "MISSING".to_owned(),
                )),
            }
        }
        Ok((found, missing))
    }

    pub async fn list_tasks(&self, input: ListTasksInput) -> Result<Page<String>, ControlError> {
        let (cluster, _) = self.active_cluster_as(input.cluster.as_deref(), Read::Stale).await?;
        let desired = input.desired_status.unwrap_or(DesiredStatus::Running);
        let family_arn_part = input.family.as_ref().map(|f| format!("task-definition/{f}:"));
        let service_group = input.service_name.as_ref().map(|s| format!("service:{s}"));
        let mut items = Vec::new();
        for kv in list_as(self.store.as_ref(), &tasks_prefix(&cluster.cluster_name), Read::Stale).await? {
            let record: ListedRecord = decode(&kv)?;
            let t = &record.task;
            let keep = t.desired_status == desired
                && family_arn_part.as_ref().is_none_or(|f| t.task_definition_arn.contains(f.as_str()))
                && input.started_by.as_ref().is_none_or(|s| t.started_by.as_ref() == Some(s))
                && input.launch_type.as_ref().is_none_or(|l| &t.launch_type == l)
                && service_group.as_ref().is_none_or(|g| t.group.as_ref() == Some(g));
            if keep {
                items.push((kv.key, record.task.task_arn));
            }
        }
        paginate(items, input.max_results, input.next_token.as_deref(), 100)
    }

    pub async fn stop_task(
        &self,
        cluster: Option<&str>,
        task: &str,
        reason: Option<String>,
    ) -> Result<Task, ControlError> {
        let cluster = self.cluster_name(cluster)?;
        let (c, id) = self.task_ref(&cluster, task)?;
        let reason = reason.unwrap_or_else(|| "Task stopped by user".to_owned());
        if reason.len() > 255 {
            return Err(ControlError::invalid("reason: at most 255 characters."));
        }
        self.update_task(&c, &id, |t| {
            crate::service::request_stop(t, StopCode::UserInitiated, &reason);
            Ok(())
        })
        .await
        .map(|mut t| {
            t.show_managed_agents();
            t
        })
        .map_err(|e| match e {
            ControlError::ResourceNotFound { .. } => {
                ControlError::invalid(format!("task: The referenced task was not found: {task}"))
            }
            other => other,
        })
    }

    /// Applies `change` to one task with compare-and-write, bumping its `version`; `change`
    /// sees the latest record on every retry.
    pub(crate) async fn update_task(
        &self,
        cluster: &str,
        task_id: &str,
        change: impl Fn(&mut Task) -> Result<(), ControlError>,
    ) -> Result<Task, ControlError> {
        let key = task_key(cluster, task_id);
        loop {
            let Some((mut record, rev)) = load::<TaskRecord>(self.store.as_ref(), &key).await? else {
                return Err(ControlError::ResourceNotFound { arn: format!("{cluster}/{task_id}") });
            };
            let before = record.task.clone();
            change(&mut record.task)?;
            if record.task == before {
                return Ok(record.task);
            }
            if record.task.last_status != before.last_status
                && !before.last_status.can_transition_to(record.task.last_status)
            {
                return Err(ControlError::client(format!(
                    "task {task_id} cannot go from {} back to {}",
                    before.last_status.as_str(),
                    record.task.last_status.as_str()
                )));
            }
            record.task.version = before.version + 1;
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(record.task);
            }
        }
    }

    /// Every task record (all clusters), possibly stale: for overviews.
    pub async fn all_tasks(&self) -> Result<Vec<TaskRecord>, ControlError> {
        self.store.list_prefix_stale(crate::record::TASKS).await?.iter().map(decode).collect()
    }

    /// Forgets STOPPED tasks that stopped before `cutoff` (Fargate keeps them at least an hour).
    pub async fn reap_stopped_tasks(&self, cutoff: Timestamp) -> Result<usize, ControlError> {
        let mut reaped = 0;
        for kv in self.store.list_prefix(crate::record::TASKS).await? {
            let record: TaskRecord = decode(&kv)?;
            let t = &record.task;
            if t.last_status == TaskStatus::Stopped && t.stopped_at.is_some_and(|s| s < cutoff) {
                let txn = Txn::new().when(Compare::revision(&kv.key, kv.mod_revision)).then(Op::delete(&kv.key));
                if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                    reaped += 1;
                }
            }
        }
        Ok(reaped)
    }

    /// Running and pending task counts of one cluster (counts only: possibly stale).
    pub(crate) async fn task_counts(&self, cluster: &str) -> Result<(i32, i32), ControlError> {
        let (mut running, mut pending) = (0, 0);
        for kv in self.store.list_prefix_stale(&tasks_prefix(cluster)).await? {
            let record: TaskRecord = decode(&kv)?;
            match record.task.last_status {
                TaskStatus::Running => running += 1,
                s if s.is_pending() => pending += 1,
                _ => {}
            }
        }
        Ok((running, pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(p: &str, base: i32, weight: i32) -> CapacityProviderStrategyItem {
        CapacityProviderStrategyItem { capacity_provider: p.into(), base, weight }
    }

    #[test]
    fn placement_honours_base_then_weight() {
        let s = [item("FARGATE", 2, 1), item("FARGATE_SPOT", 0, 3)];
        let placed = place(&s, 10);
        assert_eq!(&placed[..2], ["FARGATE", "FARGATE"]);
        let spot = placed[2..].iter().filter(|p| *p == "FARGATE_SPOT").count();
        assert_eq!(spot, 6, "{placed:?}");
    }

    #[test]
    fn placement_with_zero_weight_provider_uses_base_only() {
        let s = [item("FARGATE", 1, 0), item("FARGATE_SPOT", 0, 1)];
        assert_eq!(place(&s, 3), ["FARGATE", "FARGATE_SPOT", "FARGATE_SPOT"]);
    }
}
