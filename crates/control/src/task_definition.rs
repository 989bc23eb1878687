//! Task definitions: RegisterTaskDefinition, DescribeTaskDefinition, ListTaskDefinitions,
//! ListTaskDefinitionFamilies, DeregisterTaskDefinition, DeleteTaskDefinitions.

use std::collections::BTreeMap;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::task_definition::{Attribute, Tag, TaskDefinition, TaskDefinitionSpec, TaskDefinitionStatus};
use flotilla_types::{Arn, ResourceKind, Timestamp, validate_for_fargate};
use serde::{Deserialize, Serialize};

use crate::page::{Page, paginate, paginate_desc};
use crate::record::{
    FAMILIES, Read, decode, encode, family_key, list_as, load, load_as, task_definition_key, task_definitions_prefix,
};
use crate::tags::validate_tags;
use crate::{Control, ControlError};

/// What the store keeps per revision: the definition and its tags.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TaskDefinitionRecord {
    pub definition: TaskDefinition,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// Per-family bookkeeping: the last revision ever handed out, so numbers are never reused.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FamilyRecord {
    latest: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FamilyStatusFilter {
    #[default]
    Active,
    Inactive,
    All,
}

#[derive(Clone, Debug, Default)]
pub struct ListTaskDefinitionsInput {
    pub family_prefix: Option<String>,
    pub status: Option<TaskDefinitionStatus>,
    pub sort: SortOrder,
    pub max_results: Option<i32>,
    pub next_token: Option<String>,
}

/// The `requiresAttributes` ECS derives from a definition: what a host must offer to run it.
fn required_attributes(spec: &TaskDefinitionSpec) -> Vec<Attribute> {
    let mut names = std::collections::BTreeSet::new();
    let mut add = |n: &str| {
        names.insert(n.to_owned());
    };
    if spec.network_mode.as_deref() == Some("awsvpc") {
        add("ecs.capability.task-eni");
        add("com.amazonaws.ecs.capability.docker-remote-api.1.18");
    }
    if spec.task_role_arn.is_some() {
        add("com.amazonaws.ecs.capability.task-iam-role");
    }
    for c in &spec.container_definitions {
        if let Some(log) = &c.log_configuration {
            add(&format!("com.amazonaws.ecs.capability.logging-driver.{}", log.log_driver));
            if log.log_driver == "awslogs" {
                add("com.amazonaws.ecs.capability.docker-remote-api.1.19");
                if spec.execution_role_arn.is_some() {
                    add("ecs.capability.execution-role-awslogs");
                }
            }
        }
        if c.health_check.is_some() {
            add("ecs.capability.container-health-check");
        }
        if c.depends_on.as_ref().is_some_and(|d| !d.is_empty()) {
            add("ecs.capability.container-ordering");
        }
        for secret in c.secrets.iter().flatten() {
            if secret.value_from.contains(":secretsmanager:") {
                add("ecs.capability.secrets.asm.environment-variables");
            } else {
                add("ecs.capability.secrets.ssm.environment-variables");
            }
        }
    }
    names.into_iter().map(|name| Attribute { name }).collect()
}

/// A `taskDefinition` request member: `family`, `family:revision` or an ARN.
enum Reference {
    Family(String),
    Revision(String, u32),
}

fn parse_reference(raw: &str) -> Result<Reference, ControlError> {
    let bad = || {
        ControlError::client(format!(
            "taskDefinition: '{raw}' is not a task definition family, family:revision or task definition ARN."
        ))
    };
    let body = if raw.starts_with("arn:") {
        match Arn::parse(raw) {
            Some(arn) if arn.kind == ResourceKind::TaskDefinition => arn.resource,
            _ => return Err(bad()),
        }
    } else {
        raw.to_owned()
    };
    if body.is_empty() {
        return Err(bad());
    }
    match body.rsplit_once(':') {
        Some((family, rev)) => {
            let rev: u32 = rev.parse().map_err(|_| bad())?;
            if family.is_empty() || rev == 0 {
                return Err(bad());
            }
            Ok(Reference::Revision(family.to_owned(), rev))
        }
        None if raw.starts_with("arn:") => Err(bad()),
        None => Ok(Reference::Family(body)),
    }
}

impl Control {
    pub async fn register_task_definition(
        &self,
        spec: TaskDefinitionSpec,
        registered_by: Option<String>,
    ) -> Result<(TaskDefinition, Vec<Tag>), ControlError> {
        let tags = spec.tags.clone().unwrap_or_default();
        validate_tags(&tags)?;
        let spec = validate_for_fargate(spec).map_err(|e| ControlError::client(e.message))?;
        crate::task_roles::check_role_form(spec.task_role_arn.as_deref())?;
        self.check_registered_roles(spec.execution_role_arn.as_deref(), &spec.container_definitions)?;
        let requires_attributes = required_attributes(&spec);
        let family = spec.family.clone();

        let lock = self.family_lock(&family);
        let _guard = lock.lock().await;
        loop {
            let fkey = family_key(&family);
            let (record, rev) = load::<FamilyRecord>(self.store.as_ref(), &fkey).await?.unwrap_or_default();
            let revision = record.latest + 1;
            let definition = TaskDefinition {
                task_definition_arn: self.identity.task_definition(&family, revision).to_string(),
                family: family.clone(),
                revision,
                status: TaskDefinitionStatus::Active,
                container_definitions: spec.container_definitions.clone(),
                task_role_arn: spec.task_role_arn.clone(),
                execution_role_arn: spec.execution_role_arn.clone(),
                network_mode: spec.network_mode.clone(),
                volumes: spec.volumes.clone().unwrap_or_default(),
                placement_constraints: spec.placement_constraints.clone().unwrap_or_default(),
                requires_attributes: requires_attributes.clone(),
                compatibilities: vec!["EC2".into(), "FARGATE".into()],
                requires_compatibilities: spec.requires_compatibilities.clone(),
                runtime_platform: spec.runtime_platform.clone(),
                cpu: spec.cpu.clone(),
                memory: spec.memory.clone(),
                pid_mode: spec.pid_mode.clone(),
                ipc_mode: spec.ipc_mode.clone(),
                proxy_configuration: spec.proxy_configuration.clone(),
                inference_accelerators: spec.inference_accelerators.clone(),
                ephemeral_storage: spec.ephemeral_storage.clone(),
                enable_fault_injection: spec.enable_fault_injection,
                registered_at: Timestamp::now(),
                deregistered_at: None,
                delete_requested_at: None,
                registered_by: registered_by.clone(),
            };
            let record = TaskDefinitionRecord { definition, tags: tags.clone() };
            let tkey = task_definition_key(&family, revision);
            let txn = Txn::new()
                .when(Compare::revision(&fkey, rev))
                .when(Compare::absent(&tkey))
                .then(Op::put(&fkey, encode(&FamilyRecord { latest: revision })))
                .then(Op::put(&tkey, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok((record.definition, record.tags));
            }
        }
    }

    async fn load_revision(
        &self,
        family: &str,
        revision: u32,
        read: Read,
    ) -> Result<Option<(TaskDefinitionRecord, u64)>, ControlError> {
        load_as(self.store.as_ref(), &task_definition_key(family, revision), read).await
    }

    /// The latest ACTIVE revision of a family, walking down from the newest.
    async fn latest_active(
        &self,
        family: &str,
        read: Read,
    ) -> Result<Option<(TaskDefinitionRecord, u64)>, ControlError> {
        let Some((fam, _)) = load_as::<FamilyRecord>(self.store.as_ref(), &family_key(family), read).await? else {
            return Ok(None);
        };
        for revision in (1..=fam.latest).rev() {
            if let Some((record, rev)) = self.load_revision(family, revision, read).await?
                && record.definition.status == TaskDefinitionStatus::Active
            {
                return Ok(Some((record, rev)));
            }
        }
        Ok(None)
    }

    async fn resolve(&self, raw: &str, read: Read) -> Result<Option<(TaskDefinitionRecord, u64)>, ControlError> {
        match parse_reference(raw)? {
            Reference::Family(family) => self.latest_active(&family, read).await,
            Reference::Revision(family, revision) => self.load_revision(&family, revision, read).await,
        }
    }

    /// DescribeTaskDefinition; the tags are those of the revision. Possibly stale: a revision's
    /// definition never changes once registered (only its status), and ECS's own answer is
    /// eventually consistent.
    pub async fn describe_task_definition(&self, raw: &str) -> Result<(TaskDefinition, Vec<Tag>), ControlError> {
        match self.resolve(raw, Read::Stale).await? {
            Some((record, _)) => Ok((record.definition, record.tags)),
            None => Err(ControlError::client("Unable to describe task definition.")),
        }
    }

    pub async fn list_task_definitions(&self, input: ListTaskDefinitionsInput) -> Result<Page<String>, ControlError> {
        let status = input.status.unwrap_or(TaskDefinitionStatus::Active);
        let prefix = task_definitions_prefix(input.family_prefix.as_deref().unwrap_or(""));
        let mut items = Vec::new();
        for kv in list_as(self.store.as_ref(), &prefix, Read::Stale).await? {
            let record: TaskDefinitionRecord = decode(&kv)?;
            if record.definition.status == status {
                items.push((kv.key, record.definition.task_definition_arn));
            }
        }
        match input.sort {
            SortOrder::Asc => paginate(items, input.max_results, input.next_token.as_deref(), 100),
            SortOrder::Desc => {
                items.reverse();
                paginate_desc(items, input.max_results, input.next_token.as_deref(), 100)
            }
        }
    }

    pub async fn list_task_definition_families(
        &self,
        family_prefix: Option<&str>,
        status: FamilyStatusFilter,
        max_results: Option<i32>,
        next_token: Option<&str>,
    ) -> Result<Page<String>, ControlError> {
        // family -> has an ACTIVE revision
        let mut families: BTreeMap<String, bool> = BTreeMap::new();
        let names: Vec<String> = self
            .store
            .list_prefix_stale(&format!("{FAMILIES}{}", family_prefix.unwrap_or("")))
            .await?
            .into_iter()
            .map(|kv| kv.key[FAMILIES.len()..].to_owned())
            .collect();
        for family in names {
            let active = self.latest_active(&family, Read::Stale).await?.is_some();
            families.insert(family, active);
        }
        let items = families
            .into_iter()
            .filter(|(_, active)| match status {
                FamilyStatusFilter::Active => *active,
                FamilyStatusFilter::Inactive => !*active,
                FamilyStatusFilter::All => true,
            })
            .map(|(family, _)| (family.clone(), family))
            .collect();
        paginate(items, max_results, next_token, 100)
    }

    /// Moves one revision to a new status, recording when.
    async fn transition(&self, raw: &str, next: TaskDefinitionStatus) -> Result<TaskDefinition, ControlError> {
        let (family, revision) = match parse_reference(raw)? {
            Reference::Revision(family, revision) => (family, revision),
            Reference::Family(_) => {
                return Err(ControlError::client(format!(
                    "taskDefinition: '{raw}' must name a revision (family:revision or a task definition ARN)."
                )));
            }
        };
        loop {
            let Some((mut record, rev)) = self.load_revision(&family, revision, Read::Latest).await? else {
                return Err(ControlError::client(format!("The specified task definition does not exist: {raw}")));
            };
            let current = record.definition.status;
            if current == next {
                return Ok(record.definition);
            }
            if !current.can_transition_to(next) {
                return Err(ControlError::client(format!(
                    "The task definition {family}:{revision} is {}; it must be {} first.",
                    current.as_str(),
                    if next == TaskDefinitionStatus::DeleteInProgress { "INACTIVE (deregister it)" } else { "ACTIVE" }
                )));
            }
            record.definition.status = next;
            match next {
                TaskDefinitionStatus::Inactive => record.definition.deregistered_at = Some(Timestamp::now()),
                TaskDefinitionStatus::DeleteInProgress => {
                    record.definition.delete_requested_at = Some(Timestamp::now())
                }
                TaskDefinitionStatus::Active => {}
            }
            let key = task_definition_key(&family, revision);
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(record.definition);
            }
        }
    }

    pub async fn deregister_task_definition(&self, raw: &str) -> Result<TaskDefinition, ControlError> {
        self.transition(raw, TaskDefinitionStatus::Inactive).await
    }

    /// DeleteTaskDefinitions: each reference either moves to DELETE_IN_PROGRESS or becomes a
    /// failure `(arn, reason)`.
    pub async fn delete_task_definitions(
        &self,
        refs: &[String],
    ) -> Result<(Vec<TaskDefinition>, Vec<(String, String)>), ControlError> {
        if refs.is_empty() || refs.len() > 10 {
            return Err(ControlError::invalid("taskDefinitions: give 1 to 10 task definitions."));
        }
        let mut done = Vec::new();
        let mut failures = Vec::new();
        for raw in refs {
            match self.transition(raw, TaskDefinitionStatus::DeleteInProgress).await {
                Ok(def) => done.push(def),
                Err(ControlError::Client(reason)) => failures.push((raw.clone(), reason)),
                Err(other) => return Err(other),
            }
        }
        Ok((done, failures))
    }
}
