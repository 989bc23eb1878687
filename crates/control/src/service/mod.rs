//! ECS services: CreateService, UpdateService, DeleteService, DescribeServices, ListServices,
//! ListServicesByNamespace. What a request changes is the service's desired state (one record,
//! `ecs/services/<cluster>/<name>`); the scheduler (`scheduler.rs`) makes tasks match it.
//! `history.rs` serves service deployments and revisions, `protection.rs` task scale-in
//! protection, `registry.rs` the Cloud Map side.

mod commits;
mod history;
mod input;
mod launch;
mod model;
mod protection;
mod registry;
mod scheduler;
mod targets;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::task_definition::{TaskDefinition, TaskDefinitionStatus};
use flotilla_types::{Arn, ResourceKind, Timestamp};

pub use history::{ListServiceDeploymentsInput, ServiceDeploymentBrief, StopType};
pub use input::{CreateServiceInput, DeleteServiceInput, ListServicesInput, UpdateServiceInput};
pub use model::{
    BreakerState, CircuitBreaker, Deployment, DeploymentConfiguration, DeploymentController, DeploymentStatus,
    LoadBalancer, RevisionSummary, Rollback, RolloutState, Service, ServiceDeployment, ServiceDeploymentStatus,
    ServiceEvent, ServiceRecord, ServiceRegistry, ServiceRevision, ServiceStatus,
};
pub use protection::ProtectedTask;
pub use scheduler::PassSummary;
pub(crate) use scheduler::request_stop;

use crate::page::{Page, paginate_by};
use crate::record::{Read, decode, encode, list_as, load, load_as};
use crate::{Control, ControlError};

pub(crate) const SERVICES: &str = "ecs/services/";

pub(crate) fn services_prefix(cluster: &str) -> String {
    format!("{SERVICES}{cluster}/")
}

pub(crate) fn service_key(cluster: &str, name: &str) -> String {
    format!("{SERVICES}{cluster}/{name}")
}

/// A fresh deployment id's digits: ECS's `ecs-svc/` ids carry 19.
fn deployment_number() -> String {
    format!("{:019}", uuid::Uuid::new_v4().as_u128() % 10u128.pow(19))
}

impl Control {
    /// Resolves a `service` member (name or ARN) within a cluster to (cluster, name).
    pub(crate) fn service_ref(&self, cluster: &str, service: &str) -> Result<(String, String), ControlError> {
        if service.starts_with("arn:") {
            let arn = Arn::parse(service)
                .filter(|a| a.kind == ResourceKind::Service)
                .ok_or_else(|| ControlError::invalid(format!("service: '{service}' is not a service ARN.")))?;
            return Ok(match arn.resource.split_once('/') {
                Some((c, name)) => (c.to_owned(), name.to_owned()),
                None => (cluster.to_owned(), arn.resource),
            });
        }
        Ok((cluster.to_owned(), service.to_owned()))
    }

    pub(crate) async fn load_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<(ServiceRecord, u64)>, ControlError> {
        load::<ServiceRecord>(self.store.as_ref(), &service_key(cluster, name)).await
    }

    /// A task definition a service may run, found by family, family:revision or ARN.
    pub(crate) async fn service_task_definition(&self, reference: &str) -> Result<TaskDefinition, ControlError> {
        let (definition, _) = self.describe_task_definition(reference).await.map_err(|e| match e {
            ControlError::Client(_) | ControlError::InvalidParameter(_) => {
                ControlError::invalid(format!("TaskDefinition not found: {reference} has no ACTIVE revision."))
            }
            other => other,
        })?;
        if definition.status != TaskDefinitionStatus::Active {
            return Err(ControlError::invalid(format!(
                "TaskDefinition is inactive: {} cannot be used by a service; register a new revision.",
                definition.task_definition_arn
            )));
        }
        if let Some(required) = &definition.requires_compatibilities
            && !required.iter().any(|c| c == "FARGATE")
        {
            return Err(ControlError::invalid("Task definition does not support launch_type FARGATE."));
        }
        Ok(definition)
    }

    pub async fn create_service(&self, input: CreateServiceInput) -> Result<Service, ControlError> {
        let (cluster, _) = self.active_cluster(input.cluster.as_deref()).await?;
        let now = Timestamp::now();
        let fingerprint = input.fingerprint();
        let key = service_key(&cluster.cluster_name, &input.service_name);
        let checked = self.check_create(&cluster, &input).await?;
        loop {
            let existing = load::<ServiceRecord>(self.store.as_ref(), &key).await?;
            if let Some((record, _)) = &existing
                && record.service.status != ServiceStatus::Inactive
            {
                // A retry of the same request with the same token answers with the service it
                // made; anything else is a name clash.
                let retry = matches!((&record.client_token, &input.client_token),
                    (Some((token, print)), Some(given)) if token == given && *print == fingerprint);
                if retry {
                    return Ok(record.service.clone());
                }
                return Err(ControlError::invalid("Creation of service was not idempotent."));
            }
            let record = self.new_service_record(&cluster, &input, &checked, &fingerprint, now);
            let compare = match &existing {
                Some((_, rev)) => Compare::revision(&key, *rev),
                None => Compare::absent(&key),
            };
            let txn = Txn::new().when(compare).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                let mut service = record.service;
                service.tags = None;
                return Ok(service);
            }
        }
    }

    pub async fn update_service(&self, input: UpdateServiceInput) -> Result<Service, ControlError> {
        let cluster_name = self.cluster_name(input.cluster.as_deref())?;
        let (cluster, name) = self.service_ref(&cluster_name, &input.service)?;
        let (cluster_record, _) = self.active_cluster(Some(&cluster)).await?;
        let key = service_key(&cluster, &name);
        loop {
            let Some((mut record, rev)) = self.load_service(&cluster, &name).await? else {
                return Err(ControlError::ServiceNotFound);
            };
            if record.service.status != ServiceStatus::Active {
                return Err(ControlError::ServiceNotActive);
            }
            self.apply_update(&cluster_record, &mut record, &input, Timestamp::now()).await?;
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(record.service);
            }
        }
    }

    pub async fn delete_service(&self, input: DeleteServiceInput) -> Result<Service, ControlError> {
        let cluster_name = self.cluster_name(input.cluster.as_deref())?;
        let (cluster, name) = self.service_ref(&cluster_name, &input.service)?;
        self.active_cluster(Some(&cluster)).await?;
        let key = service_key(&cluster, &name);
        loop {
            let Some((mut record, rev)) = self.load_service(&cluster, &name).await? else {
                return Err(ControlError::ServiceNotFound);
            };
            match record.service.status {
                ServiceStatus::Inactive => return Err(ControlError::ServiceNotActive),
                ServiceStatus::Draining => return Ok(record.service),
                ServiceStatus::Active => {}
            }
            if record.service.desired_count > 0 && !input.force.unwrap_or(false) {
                return Err(ControlError::invalid("The service cannot be stopped while it is scaled above 0."));
            }
            record.service.desired_count = 0;
            record.service.status = ServiceStatus::Draining;
            for d in &mut record.service.deployments {
                if d.status == DeploymentStatus::Primary {
                    d.desired_count = 0;
                    d.updated_at = Timestamp::now();
                }
            }
            record.steady = false;
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(record.service);
            }
        }
    }

    pub async fn describe_services(
        &self,
        cluster: Option<&str>,
        services: &[String],
        include_tags: bool,
    ) -> Result<(Vec<Service>, Vec<(String, String)>), ControlError> {
        if services.is_empty() || services.len() > 10 {
            return Err(ControlError::invalid("services: give 1 to 10 service names or ARNs."));
        }
        let cluster_name = self.cluster_name(cluster)?;
        self.active_cluster_as(Some(&cluster_name), Read::Stale).await?;
        let refs = services.iter().map(|raw| self.service_ref(&cluster_name, raw)).collect::<Result<Vec<_>, _>>()?;
        // Read together: on a networked store each read is a round trip.
        let keys: Vec<String> = refs.iter().map(|(c, name)| service_key(c, name)).collect();
        let records = futures_util::future::join_all(
            keys.iter().map(|key| load_as::<ServiceRecord>(self.store.as_ref(), key, Read::Stale)),
        )
        .await;
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for ((c, name), record) in refs.into_iter().zip(records) {
            match record? {
                Some((record, _)) => {
                    let mut service = record.service;
                    service.tags = include_tags.then_some(record.tags);
                    found.push(service);
                }
                None => missing.push((self.identity.service(&c, &name).to_string(), "MISSING".to_owned())),
            }
        }
        Ok((found, missing))
    }

    pub async fn list_services(&self, input: ListServicesInput) -> Result<Page<String>, ControlError> {
        let (cluster, _) = self.active_cluster_as(input.cluster.as_deref(), Read::Stale).await?;
        if let Some(strategy) = &input.scheduling_strategy
            && strategy != "REPLICA"
            && strategy != "DAEMON"
        {
            return Err(ControlError::invalid(format!("schedulingStrategy: '{strategy}' is not REPLICA or DAEMON.")));
        }
        let mut items = Vec::new();
        for kv in list_as(self.store.as_ref(), &services_prefix(&cluster.cluster_name), Read::Stale).await? {
            let record: ServiceRecord = decode(&kv)?;
            let s = &record.service;
            let launch_type = s.launch_type.as_deref().unwrap_or(if s.capacity_provider_strategy.is_some() {
                ""
            } else {
                crate::capacity::FARGATE
            });
            // A deleted service (DRAINING, then INACTIVE) is no longer listed, as on ECS.
            let keep = s.status == ServiceStatus::Active
                && input.launch_type.as_deref().is_none_or(|l| l == launch_type)
                && input.scheduling_strategy.as_deref().is_none_or(|st| st == s.scheduling_strategy);
            if keep {
                items.push((kv.key, s.service_arn.clone()));
            }
        }
        // ECS answers 10 services a page unless asked for up to 100.
        paginate_by(items, input.max_results, input.next_token.as_deref(), 10, 100)
    }

    /// Every service record of every cluster, with its revision.
    pub(crate) async fn all_services(&self) -> Result<Vec<(ServiceRecord, u64)>, ControlError> {
        let kvs = self.store.list_prefix(SERVICES).await?;
        kvs.iter().map(|kv| Ok((decode(kv)?, kv.mod_revision))).collect()
    }

    /// (ACTIVE, DRAINING) services of a cluster: what DeleteCluster waits for (latest) and
    /// `activeServicesCount` counts (stale).
    pub(crate) async fn service_counts(&self, cluster: &str, read: Read) -> Result<(i32, i32), ControlError> {
        let (mut active, mut draining) = (0, 0);
        for kv in list_as(self.store.as_ref(), &services_prefix(cluster), read).await? {
            let record: ServiceRecord = decode(&kv)?;
            match record.service.status {
                ServiceStatus::Active => active += 1,
                ServiceStatus::Draining => draining += 1,
                ServiceStatus::Inactive => {}
            }
        }
        Ok((active, draining))
    }

    /// Tags of a service (TagResource and friends).
    pub(crate) async fn service_tags_mut(
        &self,
        cluster: &str,
        name: &str,
        change: impl Fn(&mut Vec<flotilla_types::Tag>) -> Result<(), ControlError>,
    ) -> Result<Vec<flotilla_types::Tag>, ControlError> {
        let key = service_key(cluster, name);
        loop {
            let Some((mut record, rev)) = self.load_service(cluster, name).await? else {
                return Err(ControlError::ResourceNotFound { arn: self.identity.service(cluster, name).to_string() });
            };
            let before = record.tags.clone();
            change(&mut record.tags)?;
            if record.tags == before {
                return Ok(record.tags);
            }
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(record.tags);
            }
        }
    }
}
