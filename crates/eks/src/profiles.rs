//! CreateFargateProfile, DescribeFargateProfile, ListFargateProfiles and DeleteFargateProfile
//! with EKS's rules: 1 to 5 selectors, each with a namespace and at most 5 labels; subnets of
//! the cluster's VPC (the cluster's own when none are given); at most 10 profiles a cluster;
//! one profile CREATING or DELETING at a time a cluster; the cluster ACTIVE. Profiles are
//! immutable: there is no update.
//!
//! EKS refuses public subnets (a route to an internet gateway); Flotilla's VPCs have no route
//! tables or internet gateways, so every subnet of the cluster's VPC is accepted.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::Tag;
use flotilla_types::time::Timestamp;

use crate::clusters::{Listing, check_role_arn, paged, valid_name};
use crate::record::{StoredCluster, cluster_key, encode, profile_key};
use crate::{ClusterStatus, Eks, EksError, FargateProfile, ProfileStatus, Selector, check_tags};

/// Selectors a profile may have, and labels a selector may have.
pub const MAX_SELECTORS: usize = 5;
pub const MAX_LABELS: usize = 5;
/// Fargate profiles a cluster may have.
pub const MAX_PROFILES: usize = 10;

/// A CreateFargateProfile request, as checked by the model.
#[derive(Clone, Debug, Default)]
pub struct NewProfile {
    pub cluster_name: String,
    pub name: String,
    pub pod_execution_role_arn: String,
    pub subnets: Vec<String>,
    pub selectors: Vec<Selector>,
    pub tags: Vec<Tag>,
}

fn check_selectors(selectors: &[Selector]) -> Result<(), EksError> {
    if selectors.is_empty() {
        return Err(EksError::InvalidParameter("selectors: a Fargate profile needs at least one selector.".into()));
    }
    if selectors.len() > MAX_SELECTORS {
        return Err(EksError::InvalidParameter(format!(
            "selectors: a Fargate profile can have at most {MAX_SELECTORS} selectors, got {}.",
            selectors.len()
        )));
    }
    for (i, selector) in selectors.iter().enumerate() {
        if selector.namespace.is_empty() {
            return Err(EksError::InvalidParameter(format!(
                "selectors[{i}].namespace: every selector needs a namespace."
            )));
        }
        if selector.labels.len() > MAX_LABELS {
            return Err(EksError::InvalidParameter(format!(
                "selectors[{i}].labels: a selector can have at most {MAX_LABELS} labels, got {}.",
                selector.labels.len()
            )));
        }
    }
    Ok(())
}

/// A uuid-shaped id, as EKS appends to each profile's ARN.
fn profile_id() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl Eks {
    pub async fn create_profile(&self, new: NewProfile) -> Result<FargateProfile, EksError> {
        if !valid_name(&new.name) {
            return Err(EksError::InvalidParameter(format!(
                "fargateProfileName: {:?} must be 1 to 100 characters: a letter or digit, then letters, digits, hyphens and underscores.",
                new.name
            )));
        }
        check_role_arn("podExecutionRoleArn", &new.pod_execution_role_arn)?;
        check_selectors(&new.selectors)?;
        check_tags(&new.tags).map_err(EksError::InvalidParameter)?;
        let cluster_key = cluster_key(&new.cluster_name);
        for _ in 0..crate::CONFLICT_RETRIES {
            let (stored, revision) = self
                .read::<StoredCluster>(&cluster_key)
                .await?
                .ok_or_else(|| EksError::ClusterNotFound(new.cluster_name.clone()))?;
            let cluster = &stored.cluster;
            if cluster.status != ClusterStatus::Active {
                return Err(EksError::InvalidRequest(format!(
                    "Cluster '{}' is not in ACTIVE status (it is {}).",
                    cluster.name,
                    cluster.status.as_str()
                )));
            }
            let existing = self.profiles(&cluster.name).await?;
            if existing.iter().any(|p| p.name == new.name) {
                return Err(EksError::InUse(format!(
                    "A Fargate Profile already exists with this name in this cluster: {}",
                    new.name
                )));
            }
            if let Some(busy) =
                existing.iter().find(|p| matches!(p.status, ProfileStatus::Creating | ProfileStatus::Deleting))
            {
                return Err(EksError::InUse(format!(
                    "Cannot create Fargate Profile {} because cluster {} currently has Fargate profile {} in status {}",
                    new.name,
                    cluster.name,
                    busy.name,
                    busy.status.as_str()
                )));
            }
            if existing.len() >= MAX_PROFILES {
                return Err(EksError::LimitExceeded(format!(
                    "Cluster {} already has {MAX_PROFILES} Fargate profiles, the most a cluster may have.",
                    cluster.name
                )));
            }
            let subnets = if new.subnets.is_empty() { cluster.subnet_ids.clone() } else { new.subnets.clone() };
            for id in &subnets {
                let subnet = self.vpcs()?.subnet(id).await.map_err(|e| self.vpc_failure(e))?.ok_or_else(|| {
                    EksError::InvalidParameter(format!("subnets: the subnet ID '{id}' does not exist"))
                })?;
                if subnet.vpc_id != cluster.vpc_id {
                    return Err(EksError::InvalidParameter(format!(
                        "subnets: subnet {id} is in {}, not in the cluster's VPC {}.",
                        subnet.vpc_id, cluster.vpc_id
                    )));
                }
            }
            let profile = FargateProfile {
                name: new.name.clone(),
                arn: self.identity.eks_fargate_profile(&cluster.name, &new.name, &profile_id()),
                cluster_name: cluster.name.clone(),
                created_at: Timestamp::now(),
                pod_execution_role_arn: new.pod_execution_role_arn.clone(),
                subnets,
                selectors: new.selectors.clone(),
                status: ProfileStatus::Creating,
                tags: new.tags.clone(),
            };
            // Rewriting the cluster's record (unchanged) makes concurrent creations conflict,
            // so "one profile CREATING at a time" holds among them.
            let key = profile_key(&cluster.name, &new.name);
            let txn = Txn::new()
                .when(Compare::revision(&cluster_key, revision))
                .when(Compare::absent(&key))
                .then(Op::put(&cluster_key, encode(&stored)))
                .then(Op::put(&key, encode(&profile)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(profile);
            }
        }
        Err(EksError::InUse(format!("Cluster {} is being changed by other requests; retry.", new.cluster_name)))
    }

    pub async fn describe_profile(&self, cluster: &str, name: &str) -> Result<FargateProfile, EksError> {
        self.require_cluster(cluster).await?;
        Ok(self
            .read::<FargateProfile>(&profile_key(cluster, name))
            .await?
            .ok_or_else(|| EksError::ProfileNotFound(name.to_string()))?
            .0)
    }

    /// Profile names by name, one page.
    pub async fn list_profiles(
        &self,
        cluster: &str,
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Listing<String>, EksError> {
        self.require_cluster(cluster).await?;
        let names = self.profiles(cluster).await?.into_iter().map(|p| (p.name.clone(), p.name)).collect();
        paged(names, max_results, next_token)
    }

    /// Marks the profile DELETING (the reconciler forgets it), one at a time a cluster.
    pub async fn delete_profile(&self, cluster: &str, name: &str) -> Result<FargateProfile, EksError> {
        let cluster_key = cluster_key(cluster);
        let key = profile_key(cluster, name);
        for _ in 0..crate::CONFLICT_RETRIES {
            let (stored, cluster_revision) = self
                .read::<StoredCluster>(&cluster_key)
                .await?
                .ok_or_else(|| EksError::ClusterNotFound(cluster.into()))?;
            let existing = self.profiles(cluster).await?;
            let Some(mut profile) = existing.iter().find(|p| p.name == name).cloned() else {
                return Err(EksError::ProfileNotFound(name.to_string()));
            };
            if profile.status == ProfileStatus::Deleting {
                return Ok(profile);
            }
            if let Some(busy) = existing
                .iter()
                .find(|p| p.name != name && matches!(p.status, ProfileStatus::Creating | ProfileStatus::Deleting))
            {
                return Err(EksError::InUse(format!(
                    "Cannot delete Fargate Profile {name} because cluster {cluster} currently has Fargate profile {} in status {}",
                    busy.name,
                    busy.status.as_str()
                )));
            }
            let Some((_, revision)) = self.read::<FargateProfile>(&key).await? else {
                return Err(EksError::ProfileNotFound(name.to_string()));
            };
            profile.status = ProfileStatus::Deleting;
            let txn = Txn::new()
                .when(Compare::revision(&cluster_key, cluster_revision))
                .when(Compare::revision(&key, revision))
                .then(Op::put(&cluster_key, encode(&stored)))
                .then(Op::put(&key, encode(&profile)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(profile);
            }
        }
        Err(EksError::InUse(format!("Cluster {cluster} is being changed by other requests; retry.")))
    }

    async fn require_cluster(&self, cluster: &str) -> Result<(), EksError> {
        match self.store.get(&cluster_key(cluster)).await? {
            Some(_) => Ok(()),
            None => Err(EksError::ClusterNotFound(cluster.to_string())),
        }
    }
}
