//! A service's deployment history: ListServiceDeployments, DescribeServiceDeployments,
//! DescribeServiceRevisions, and StopServiceDeployment for a manual rollback.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::{Arn, ResourceKind, Timestamp};
use serde::{Deserialize, Serialize};

use super::model::*;
use super::service_key;
use crate::page::{Page, paginate_desc};
use crate::record::encode;
use crate::{Control, ControlError};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedAtFilter {
    pub before: Option<Timestamp>,
    pub after: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListServiceDeploymentsInput {
    pub service: String,
    pub cluster: Option<String>,
    pub status: Option<Vec<ServiceDeploymentStatus>>,
    pub created_at: Option<CreatedAtFilter>,
    pub next_token: Option<String>,
    pub max_results: Option<i32>,
}

/// One line of ListServiceDeployments.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDeploymentBrief {
    pub service_deployment_arn: String,
    pub service_arn: String,
    pub cluster_arn: String,
    pub started_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub target_service_revision_arn: String,
    pub status: ServiceDeploymentStatus,
    pub status_reason: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StopType {
    Abort,
    #[default]
    Rollback,
}

/// (cluster, service, id) of a service deployment or revision ARN.
fn parts(arn: &str, kind: ResourceKind) -> Option<(String, String, String)> {
    let parsed = Arn::parse(arn).filter(|a| a.kind == kind)?;
    let mut it = parsed.resource.splitn(3, '/');
    Some((it.next()?.to_owned(), it.next()?.to_owned(), it.next()?.to_owned()))
}

impl Control {
    async fn service_for_history(&self, cluster: Option<&str>, service: &str) -> Result<ServiceRecord, ControlError> {
        let cluster_name = self.cluster_name(cluster)?;
        let (c, name) = self.service_ref(&cluster_name, service)?;
        self.active_cluster(Some(&c)).await?;
        match self.load_service(&c, &name).await? {
            Some((record, _)) => Ok(record),
            None => Err(ControlError::ServiceNotFound),
        }
    }

    pub async fn list_service_deployments(
        &self,
        input: ListServiceDeploymentsInput,
    ) -> Result<Page<ServiceDeploymentBrief>, ControlError> {
        let record = self.service_for_history(input.cluster.as_deref(), &input.service).await?;
        let filter = input.created_at.unwrap_or_default();
        let items = record
            .history
            .iter()
            .filter(|h| input.status.as_ref().is_none_or(|s| s.contains(&h.status)))
            .filter(|h| filter.before.is_none_or(|b| h.created_at < b) && filter.after.is_none_or(|a| h.created_at > a))
            .map(|h| {
                // Newest first: walked in descending order of creation.
                let key = format!("{:020}/{}", h.created_at.0, h.service_deployment_arn);
                let brief = ServiceDeploymentBrief {
                    service_deployment_arn: h.service_deployment_arn.clone(),
                    service_arn: h.service_arn.clone(),
                    cluster_arn: h.cluster_arn.clone(),
                    started_at: h.started_at,
                    created_at: h.created_at,
                    finished_at: h.finished_at,
                    target_service_revision_arn: h.target_service_revision.arn.clone(),
                    status: h.status,
                    status_reason: h.status_reason.clone(),
                };
                (key, brief)
            })
            .collect();
        paginate_desc(items, input.max_results, input.next_token.as_deref(), 100)
    }

    pub async fn describe_service_deployments(
        &self,
        arns: &[String],
    ) -> Result<(Vec<ServiceDeployment>, Vec<(String, String)>), ControlError> {
        self.find_in_services(arns, ResourceKind::ServiceDeployment, "serviceDeploymentArns", |r, arn| {
            r.history.into_iter().find(|h| h.service_deployment_arn == arn)
        })
        .await
    }

    pub async fn describe_service_revisions(
        &self,
        arns: &[String],
    ) -> Result<(Vec<ServiceRevision>, Vec<(String, String)>), ControlError> {
        self.find_in_services(arns, ResourceKind::ServiceRevision, "serviceRevisionArns", |r, arn| {
            r.revisions.into_iter().find(|v| v.service_revision_arn == arn)
        })
        .await
    }

    /// Looks up 1 to 20 ARNs of things kept in service records; the rest are MISSING.
    async fn find_in_services<T>(
        &self,
        arns: &[String],
        kind: ResourceKind,
        member: &str,
        pick: impl Fn(ServiceRecord, &str) -> Option<T>,
    ) -> Result<(Vec<T>, Vec<(String, String)>), ControlError> {
        if arns.is_empty() || arns.len() > 20 {
            return Err(ControlError::invalid(format!("{member}: give 1 to 20 ARNs.")));
        }
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for arn in arns {
            let hit = match parts(arn, kind) {
                Some((cluster, service, _)) => {
                    self.load_service(&cluster, &service).await?.and_then(|(r, _)| pick(r, arn))
                }
                None => None,
            };
            match hit {
                Some(item) => found.push(item),
                None => missing.push((arn.clone(), "MISSING".to_owned())),
            }
        }
        Ok((found, missing))
    }

    /// Stops a deployment in progress: ROLLBACK returns to the revision it replaced, ABORT
    /// leaves the service where it is and launches nothing more for it.
    pub async fn stop_service_deployment(&self, arn: &str, stop_type: StopType) -> Result<String, ControlError> {
        let not_found = || ControlError::ServiceDeploymentNotFound { arn: arn.to_owned() };
        let (cluster, service, _) = parts(arn, ResourceKind::ServiceDeployment).ok_or_else(not_found)?;
        let key = service_key(&cluster, &service);
        loop {
            let Some((mut record, rev)) = self.load_service(&cluster, &service).await? else {
                return Err(not_found());
            };
            let Some(h) = record.history.iter().find(|h| h.service_deployment_arn == arn).cloned() else {
                return Err(not_found());
            };
            let primary = record.service.deployments.first().map(|d| d.id.clone());
            if !h.status.is_open() || primary.as_deref() != Some(h.deployment_id().as_str()) {
                return Err(ControlError::Conflict(format!(
                    "The service deployment is {} and cannot be stopped; only a deployment in progress can.",
                    h.status.as_str()
                )));
            }
            let now = Timestamp::now();
            let name = record.service.service_name.clone();
            match stop_type {
                StopType::Rollback => {
                    let target = record
                        .history
                        .iter()
                        .rev()
                        .find(|o| {
                            o.deployment_id() != h.deployment_id() && o.status == ServiceDeploymentStatus::Successful
                        })
                        .map(|o| o.deployment_id())
                        .ok_or_else(|| {
                            ControlError::Conflict(
                                "There is no earlier successful deployment to roll back to; use stopType ABORT.".into(),
                            )
                        })?;
                    if let Some(d) = record.service.deployments.first_mut() {
                        d.rollout_state = RolloutState::Failed;
                        d.rollout_state_reason = "Service deployment rolled back because of a stop request.".into();
                        d.updated_at = now;
                    }
                    let event = ServiceEvent {
                        id: uuid::Uuid::new_v4().to_string(),
                        created_at: now,
                        message: format!("(service {name}) rolling back to deployment {target}."),
                    };
                    record.service.events.insert(0, event);
                    record.service.events.truncate(MAX_EVENTS);
                    self.roll_back(
                        &mut record,
                        &h.deployment_id(),
                        &target,
                        "Service deployment rolled back because of a stop request.".into(),
                        now,
                    );
                }
                StopType::Abort => {
                    if let Some(d) = record.service.deployments.first_mut() {
                        d.rollout_state = RolloutState::Failed;
                        d.rollout_state_reason =
                            "Service deployment stopped by a StopServiceDeployment request.".into();
                        d.updated_at = now;
                    }
                    if let Some(entry) = record.history.iter_mut().find(|o| o.service_deployment_arn == arn) {
                        entry.status = ServiceDeploymentStatus::Stopped;
                        entry.status_reason = Some("Stopped by a StopServiceDeployment request.".into());
                        entry.stopped_at = Some(now);
                        entry.updated_at = now;
                    }
                }
            }
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&record)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(arn.to_owned());
            }
        }
    }
}
