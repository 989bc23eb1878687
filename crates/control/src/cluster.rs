//! Clusters: CreateCluster, DescribeClusters, ListClusters, DeleteCluster,
//! UpdateClusterSettings, PutClusterCapacityProviders.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::ResourceKind;
use flotilla_types::Tag;
use flotilla_types::task_definition::KeyValuePair;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capacity::{CapacityProviderStrategyItem, validate_strategy};
use crate::page::{Page, paginate};
use crate::record::{CLUSTERS, Read, cluster_key, decode, encode, list_as, load, load_as};
use crate::tags::validate_tags;
use crate::{Control, ControlError};

pub const DEFAULT_CLUSTER: &str = "default";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSetting {
    pub name: String,
    pub value: String,
}

/// A cluster as stored; serialises to the ECS `Cluster` shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub cluster_arn: String,
    pub cluster_name: String,
    pub status: String,
    pub registered_container_instances_count: i32,
    pub running_tasks_count: i32,
    pub pending_tasks_count: i32,
    pub active_services_count: i32,
    /// Only in DescribeClusters answers that ask for STATISTICS; never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Vec<KeyValuePair>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Vec<ClusterSetting>>,
    pub capacity_providers: Vec<String>,
    pub default_capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_connect_defaults: Option<Value>,
}

/// What CreateCluster accepts (the ECS request members Flotilla uses).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateClusterInput {
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    #[serde(default)]
    pub settings: Option<Vec<ClusterSetting>>,
    #[serde(default)]
    pub configuration: Option<Value>,
    #[serde(default)]
    pub capacity_providers: Option<Vec<String>>,
    #[serde(default)]
    pub default_capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    #[serde(default)]
    pub service_connect_defaults: Option<Value>,
}

/// Optional parts of DescribeClusters' answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterInclude {
    pub settings: bool,
    pub tags: bool,
    pub statistics: bool,
    pub configurations: bool,
}

impl ClusterInclude {
    pub fn parse(values: &[String]) -> Result<ClusterInclude, ControlError> {
        let mut include = ClusterInclude::default();
        for v in values {
            match v.as_str() {
                "SETTINGS" => include.settings = true,
                "TAGS" => include.tags = true,
                "STATISTICS" => include.statistics = true,
                "CONFIGURATIONS" => include.configurations = true,
                "ATTACHMENTS" => {}
                other => {
                    return Err(ControlError::invalid(format!(
                        "include: '{other}' is not one of ATTACHMENTS, CONFIGURATIONS, SETTINGS, STATISTICS, TAGS."
                    )));
                }
            }
        }
        Ok(include)
    }

    fn apply(self, mut cluster: Cluster) -> Cluster {
        if !self.settings {
            cluster.settings = None;
        }
        if !self.tags {
            cluster.tags = None;
        }
        if !self.statistics {
            cluster.statistics = None;
        }
        if !self.configurations {
            cluster.configuration = None;
        }
        cluster
    }
}

/// DescribeClusters' STATISTICS: the cluster's task and service counts split by launch type,
/// under the names and in the order ECS answers with. Every Flotilla task is a Fargate task
/// (FARGATE_SPOT included, as on ECS), so the EC2 counts are zero by construction rather
/// than unknown.
fn statistics(cluster: &Cluster, draining: i32) -> Vec<KeyValuePair> {
    [
        ("runningEC2TasksCount", 0),
        ("runningFargateTasksCount", cluster.running_tasks_count),
        ("pendingEC2TasksCount", 0),
        ("pendingFargateTasksCount", cluster.pending_tasks_count),
        ("activeEC2ServiceCount", 0),
        ("activeFargateServiceCount", cluster.active_services_count),
        ("drainingEC2ServiceCount", 0),
        ("drainingFargateServiceCount", draining),
    ]
    .into_iter()
    .map(|(name, value)| KeyValuePair { name: Some(name.to_owned()), value: Some(value.to_string()) })
    .collect()
}

fn validate_cluster_name(name: &str) -> Result<(), ControlError> {
    let ok = (1..=255).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ControlError::invalid(format!(
            "clusterName: '{name}' is invalid. Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
        )))
    }
}

fn validate_settings(settings: &[ClusterSetting]) -> Result<(), ControlError> {
    for s in settings {
        if s.name != "containerInsights" {
            return Err(ControlError::invalid(format!(
                "settings.name: '{}' is not a cluster setting; use containerInsights.",
                s.name
            )));
        }
        if !matches!(s.value.as_str(), "enabled" | "disabled" | "enhanced") {
            return Err(ControlError::invalid(format!(
                "settings.value: containerInsights must be enabled, disabled or enhanced, got '{}'.",
                s.value
            )));
        }
    }
    Ok(())
}

impl Control {
    /// Resolves a `cluster` request member (name, ARN, or absent for `default`) to a name.
    pub fn cluster_name(&self, cluster: Option<&str>) -> Result<String, ControlError> {
        let raw = cluster.unwrap_or(DEFAULT_CLUSTER);
        if raw.starts_with("arn:") {
            return match flotilla_types::Arn::parse(raw) {
                Some(arn) if arn.kind == ResourceKind::Cluster => Ok(arn.resource),
                _ => Err(ControlError::invalid(format!("cluster: '{raw}' is not a cluster ARN."))),
            };
        }
        Ok(raw.to_owned())
    }

    pub async fn create_cluster(&self, input: CreateClusterInput) -> Result<Cluster, ControlError> {
        let name = input.cluster_name.unwrap_or_else(|| DEFAULT_CLUSTER.to_owned());
        validate_cluster_name(&name)?;
        let tags = input.tags.unwrap_or_default();
        validate_tags(&tags)?;
        let mut settings = input.settings.unwrap_or_default();
        validate_settings(&settings)?;
        if !settings.iter().any(|s| s.name == "containerInsights") {
            settings.push(ClusterSetting { name: "containerInsights".into(), value: "disabled".into() });
        }
        let providers = input.capacity_providers.unwrap_or_default();
        let strategy = input.default_capacity_provider_strategy.unwrap_or_default();
        validate_strategy(&providers, &strategy)?;
        validate_configuration(input.configuration.as_ref())?;

        let key = cluster_key(&name);
        loop {
            let existing = load::<Cluster>(self.store.as_ref(), &key).await?;
            let revision = match existing {
                // CreateCluster is idempotent for an active cluster, as on AWS.
                Some((cluster, _)) if cluster.status == "ACTIVE" => return Ok(cluster),
                Some((_, rev)) => rev,
                None => 0,
            };
            let cluster = Cluster {
                cluster_arn: self.identity.cluster(&name).to_string(),
                cluster_name: name.clone(),
                status: "ACTIVE".into(),
                registered_container_instances_count: 0,
                running_tasks_count: 0,
                pending_tasks_count: 0,
                active_services_count: 0,
                statistics: None,
                tags: Some(tags.clone()),
                settings: Some(settings.clone()),
                capacity_providers: providers.clone(),
                default_capacity_provider_strategy: strategy.clone(),
                configuration: input.configuration.clone(),
                service_connect_defaults: input.service_connect_defaults.clone(),
            };
            let txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::put(&key, encode(&cluster)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(cluster);
            }
        }
    }

    /// Clusters by name or ARN; the second list holds the ones not found (as `MISSING` failures).
    pub async fn describe_clusters(
        &self,
        clusters: &[String],
        include: ClusterInclude,
    ) -> Result<(Vec<Cluster>, Vec<String>), ControlError> {
        let wanted: Vec<String> =
            if clusters.is_empty() { vec![DEFAULT_CLUSTER.to_owned()] } else { clusters.to_vec() };
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for raw in &wanted {
            let name = match self.cluster_name(Some(raw)) {
                Ok(name) => name,
                Err(_) => {
                    missing.push(raw.clone());
                    continue;
                }
            };
            match load_as::<Cluster>(self.store.as_ref(), &cluster_key(&name), Read::Stale).await? {
                Some((mut cluster, _)) => {
                    (cluster.running_tasks_count, cluster.pending_tasks_count) = self.task_counts(&name).await?;
                    let (active, draining) = self.service_counts(&name, Read::Stale).await?;
                    cluster.active_services_count = active + draining;
                    cluster.statistics = Some(statistics(&cluster, draining));
                    found.push(include.apply(cluster))
                }
                None => missing.push(if raw.starts_with("arn:") {
                    raw.clone()
                } else {
                    self.identity.cluster(&name).to_string()
                }),
            }
        }
        Ok((found, missing))
    }

    /// Loads an ACTIVE cluster or fails with ClusterNotFound.
    pub async fn active_cluster(&self, cluster: Option<&str>) -> Result<(Cluster, u64), ControlError> {
        self.active_cluster_as(cluster, Read::Latest).await
    }

    /// [`Self::active_cluster`] as fresh as `read` asks (read APIs: stale).
    pub(crate) async fn active_cluster_as(
        &self,
        cluster: Option<&str>,
        read: Read,
    ) -> Result<(Cluster, u64), ControlError> {
        let name = self.cluster_name(cluster)?;
        match load_as::<Cluster>(self.store.as_ref(), &cluster_key(&name), read).await? {
            Some((c, rev)) if c.status == "ACTIVE" => Ok((c, rev)),
            _ => Err(ControlError::ClusterNotFound { cluster: name }),
        }
    }

    pub async fn list_clusters(
        &self,
        max_results: Option<i32>,
        next_token: Option<&str>,
    ) -> Result<Page<String>, ControlError> {
        let mut items = Vec::new();
        for kv in list_as(self.store.as_ref(), CLUSTERS, Read::Stale).await? {
            let cluster: Cluster = decode(&kv)?;
            if cluster.status == "ACTIVE" {
                items.push((kv.key, cluster.cluster_arn));
            }
        }
        paginate(items, max_results, next_token, 100)
    }

    pub async fn delete_cluster(&self, cluster: &str) -> Result<Cluster, ControlError> {
        let (mut current, rev) = self.active_cluster(Some(cluster)).await?;
        (current.running_tasks_count, current.pending_tasks_count) = self.task_counts(&current.cluster_name).await?;
        let (active, draining) = self.service_counts(&current.cluster_name, Read::Latest).await?;
        if active + draining > 0 {
            return Err(ControlError::ClusterContainsServices { cluster: current.cluster_name });
        }
        if current.running_tasks_count + current.pending_tasks_count > 0 {
            return Err(ControlError::ClusterContainsTasks { cluster: current.cluster_name });
        }
        current.status = "INACTIVE".into();
        let key = cluster_key(&current.cluster_name);
        match self
            .store
            .txn(Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&current))))
            .await?
        {
            TxnOutcome::Committed(_) => Ok(current),
            TxnOutcome::Conflict => Err(ControlError::client("The cluster changed while it was being deleted; retry.")),
        }
    }

    /// Applies `change` to an ACTIVE cluster with compare-and-write, retrying on conflicts.
    pub(crate) async fn update_cluster(
        &self,
        cluster: &str,
        change: impl Fn(&mut Cluster) -> Result<(), ControlError>,
    ) -> Result<Cluster, ControlError> {
        loop {
            let (mut current, rev) = self.active_cluster(Some(cluster)).await?;
            change(&mut current)?;
            let key = cluster_key(&current.cluster_name);
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, encode(&current)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(current);
            }
        }
    }

    pub async fn update_cluster_settings(
        &self,
        cluster: &str,
        settings: Vec<ClusterSetting>,
    ) -> Result<Cluster, ControlError> {
        validate_settings(&settings)?;
        self.update_cluster(cluster, |c| {
            let current = c.settings.get_or_insert_with(Vec::new);
            for s in &settings {
                match current.iter_mut().find(|x| x.name == s.name) {
                    Some(existing) => existing.value = s.value.clone(),
                    None => current.push(s.clone()),
                }
            }
            Ok(())
        })
        .await
    }

    /// UpdateCluster: replaces the members given (`configuration`, `settings`); the ones
    /// left out stay as they were.
    pub async fn update_cluster_configuration(
        &self,
        cluster: &str,
        configuration: Option<Value>,
        settings: Option<Vec<ClusterSetting>>,
    ) -> Result<Cluster, ControlError> {
        validate_configuration(configuration.as_ref())?;
        if let Some(settings) = &settings {
            validate_settings(settings)?;
        }
        self.update_cluster(cluster, |c| {
            if let Some(configuration) = &configuration {
                c.configuration = Some(configuration.clone());
            }
            if let Some(settings) = &settings {
                let current = c.settings.get_or_insert_with(Vec::new);
                for s in settings {
                    match current.iter_mut().find(|x| x.name == s.name) {
                        Some(existing) => existing.value = s.value.clone(),
                        None => current.push(s.clone()),
                    }
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn put_cluster_capacity_providers(
        &self,
        cluster: &str,
        providers: Vec<String>,
        strategy: Vec<CapacityProviderStrategyItem>,
    ) -> Result<Cluster, ControlError> {
        validate_strategy(&providers, &strategy)?;
        self.update_cluster(cluster, |c| {
            c.capacity_providers = providers.clone();
            c.default_capacity_provider_strategy = strategy.clone();
            Ok(())
        })
        .await
    }
}

/// Checks `configuration.executeCommandConfiguration` as ECS does: a log configuration goes
/// with `logging: OVERRIDE` and only with it.
fn validate_configuration(configuration: Option<&Value>) -> Result<(), ControlError> {
    let Some(exec) = configuration.and_then(|c| c.get("executeCommandConfiguration")) else {
        return Ok(());
    };
    let logging = exec.get("logging").and_then(Value::as_str).unwrap_or("DEFAULT");
    let log = exec.get("logConfiguration");
    match (logging, log) {
        ("OVERRIDE", None) => Err(ControlError::invalid(
            "executeCommandConfiguration.logConfiguration: required when logging is OVERRIDE.",
        )),
        ("DEFAULT" | "NONE", Some(_)) => Err(ControlError::invalid(format!(
            "executeCommandConfiguration.logConfiguration: only allowed when logging is OVERRIDE, not {logging}."
        ))),
        _ => Ok(()),
    }
}
