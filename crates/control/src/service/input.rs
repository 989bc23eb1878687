//! What CreateService and UpdateService accept, the checks Fargate makes on it, and the
//! deployments a request starts.

use flotilla_types::task::NetworkConfiguration;
use flotilla_types::task_definition::TaskDefinition;
use flotilla_types::{Tag, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::deployment_number;
use super::model::*;
use crate::capacity::{CapacityProviderStrategyItem, FARGATE, validate_strategy_items};
use crate::cluster::Cluster;
use crate::tags::validate_tags;
use crate::{Control, ControlError};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateServiceInput {
    pub cluster: Option<String>,
    pub service_name: String,
    pub task_definition: Option<String>,
    pub load_balancers: Option<Vec<LoadBalancer>>,
    pub service_registries: Option<Vec<ServiceRegistry>>,
    pub desired_count: Option<i32>,
    pub client_token: Option<String>,
    pub launch_type: Option<String>,
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    pub platform_version: Option<String>,
    pub role: Option<String>,
    pub deployment_configuration: Option<DeploymentConfiguration>,
    pub placement_constraints: Option<Vec<Value>>,
    pub placement_strategy: Option<Vec<Value>>,
    pub network_configuration: Option<NetworkConfiguration>,
    pub health_check_grace_period_seconds: Option<i32>,
    pub scheduling_strategy: Option<String>,
    pub deployment_controller: Option<DeploymentController>,
    pub tags: Option<Vec<Tag>>,
    #[serde(rename = "enableECSManagedTags")]
    pub enable_ecs_managed_tags: Option<bool>,
    pub propagate_tags: Option<String>,
    pub enable_execute_command: Option<bool>,
}

impl CreateServiceInput {
    /// The request without its token: a retry with the same token must match it.
    pub(crate) fn fingerprint(&self) -> String {
        let mut copy = self.clone();
        copy.client_token = None;
        serde_json::to_string(&copy).expect("serialisable")
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateServiceInput {
    pub cluster: Option<String>,
    pub service: String,
    pub desired_count: Option<i32>,
    pub task_definition: Option<String>,
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    pub deployment_configuration: Option<DeploymentConfiguration>,
    pub network_configuration: Option<NetworkConfiguration>,
    pub placement_constraints: Option<Vec<Value>>,
    pub placement_strategy: Option<Vec<Value>>,
    pub platform_version: Option<String>,
    pub force_new_deployment: Option<bool>,
    pub health_check_grace_period_seconds: Option<i32>,
    pub deployment_controller: Option<DeploymentController>,
    pub enable_execute_command: Option<bool>,
    #[serde(rename = "enableECSManagedTags")]
    pub enable_ecs_managed_tags: Option<bool>,
    pub load_balancers: Option<Vec<LoadBalancer>>,
    pub propagate_tags: Option<String>,
    pub service_registries: Option<Vec<ServiceRegistry>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteServiceInput {
    pub cluster: Option<String>,
    pub service: String,
    pub force: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListServicesInput {
    pub cluster: Option<String>,
    pub launch_type: Option<String>,
    pub scheduling_strategy: Option<String>,
    pub max_results: Option<i32>,
    pub next_token: Option<String>,
}

/// What a create or update resolved: the definition and the launch settings it will use.
pub(crate) struct Checked {
    definition: TaskDefinition,
    launch_type: Option<String>,
    strategy: Option<Vec<CapacityProviderStrategyItem>>,
}

const PROPAGATE: [&str; 3] = ["TASK_DEFINITION", "SERVICE", "NONE"];

fn check_name(name: &str) -> Result<(), ControlError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ControlError::invalid(
            "serviceName: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed.",
        ))
    }
}

/// What Fargate refuses whatever the service: placement rules, other controllers, DAEMON.
fn check_fargate_only(
    placement_constraints: &Option<Vec<Value>>,
    placement_strategy: &Option<Vec<Value>>,
    controller: &Option<DeploymentController>,
) -> Result<(), ControlError> {
    if placement_constraints.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(ControlError::invalid("Placement constraints are not supported with FARGATE launch type."));
    }
    if placement_strategy.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ControlError::invalid("Placement strategies are not supported with FARGATE launch type."));
    }
    if let Some(c) = controller
        && c.kind != "ECS"
    {
        return Err(ControlError::Unsupported(format!(
            "deploymentController: the {} deployment controller is not supported by Flotilla; use ECS (rolling update).",
            c.kind
        )));
    }
    Ok(())
}

fn check_deployment_configuration(c: &DeploymentConfiguration) -> Result<(), ControlError> {
    if let Some(min) = c.minimum_healthy_percent
        && !(0..=100).contains(&min)
    {
        return Err(ControlError::invalid(format!(
            "deploymentConfiguration.minimumHealthyPercent: must be between 0 and 100, got {min}."
        )));
    }
    if let Some(max) = c.maximum_percent
        && !(100..=2000).contains(&max)
    {
        return Err(ControlError::invalid(format!(
            "deploymentConfiguration.maximumPercent: must be between 100 and 2000, got {max}."
        )));
    }
    Ok(())
}

/// The configuration as ECS echoes it: every default filled in.
fn normalised(c: Option<&DeploymentConfiguration>, base: Option<&DeploymentConfiguration>) -> DeploymentConfiguration {
    let pick = |f: fn(&DeploymentConfiguration) -> Option<i32>| c.and_then(f).or_else(|| base.and_then(f));
    DeploymentConfiguration {
        deployment_circuit_breaker: Some(
            c.and_then(|c| c.deployment_circuit_breaker.clone())
                .or_else(|| base.and_then(|b| b.deployment_circuit_breaker.clone()))
                .unwrap_or_default(),
        ),
        maximum_percent: Some(pick(|c| c.maximum_percent).unwrap_or(200)),
        minimum_healthy_percent: Some(pick(|c| c.minimum_healthy_percent).unwrap_or(100)),
    }
}

fn check_load_balancers(lbs: &[LoadBalancer], definition: &TaskDefinition) -> Result<(), ControlError> {
    if lbs.len() > 5 {
        return Err(ControlError::invalid("loadBalancers: a service can have at most 5 load balancers."));
    }
    for lb in lbs {
        if lb.load_balancer_name.is_some() {
            return Err(ControlError::invalid(
                "loadBalancers: Classic Load Balancers are not supported with the FARGATE launch type; give a targetGroupArn.",
            ));
        }
        let Some(tg) = &lb.target_group_arn else {
            return Err(ControlError::invalid("loadBalancers: targetGroupArn is required."));
        };
        if !tg.starts_with("arn:aws:elasticloadbalancing:") || !tg.contains(":targetgroup/") {
            return Err(ControlError::invalid(format!("loadBalancers: '{tg}' is not a target group ARN.")));
        }
        check_container_port("loadBalancers", lb.container_name.as_deref(), lb.container_port, definition)?;
    }
    Ok(())
}

/// `containerName`/`containerPort` must name a container of the task definition and one of
/// its port mappings.
fn check_container_port(
    what: &str,
    name: Option<&str>,
    port: Option<i32>,
    definition: &TaskDefinition,
) -> Result<(), ControlError> {
    let Some(name) = name else {
        return Err(ControlError::invalid(format!("{what}: containerName is required.")));
    };
    let Some(container) = definition.container_definitions.iter().find(|c| c.name.as_deref() == Some(name)) else {
        return Err(ControlError::invalid(format!(
            "{what}: the container {name} does not exist in the task definition."
        )));
    };
    let Some(port) = port else {
        return Err(ControlError::invalid(format!("{what}: containerPort is required.")));
    };
    let mapped = container.port_mappings.iter().flatten().any(|m| m.container_port == Some(port));
    if !mapped {
        return Err(ControlError::invalid(format!(
            "{what}: the container {name} did not have a container port {port} defined."
        )));
    }
    Ok(())
}

impl Control {
    /// Launch type or strategy, never both; the cluster's default strategy otherwise.
    fn launch_settings(
        &self,
        cluster: &Cluster,
        launch_type: Option<&str>,
        strategy: Option<&Vec<CapacityProviderStrategyItem>>,
    ) -> Result<(Option<String>, Option<Vec<CapacityProviderStrategyItem>>), ControlError> {
        match (launch_type, strategy) {
            (Some(_), Some(s)) if !s.is_empty() => Err(ControlError::invalid(
                "Specifying both a launchType and capacityProviderStrategy is not supported.",
            )),
            (Some(lt), _) if lt != FARGATE => Err(ControlError::invalid(format!(
                "launchType: Flotilla runs Fargate services only; use FARGATE instead of {lt}."
            ))),
            (Some(lt), _) => Ok((Some(lt.to_owned()), None)),
            (None, Some(s)) if !s.is_empty() => {
                validate_strategy_items(s)?;
                for item in s {
                    if !cluster.capacity_providers.contains(&item.capacity_provider) {
                        return Err(ControlError::invalid(format!(
                            "capacityProviderStrategy: capacity provider {} is not associated with cluster {}; add it with PutClusterCapacityProviders.",
                            item.capacity_provider, cluster.cluster_name
                        )));
                    }
                }
                Ok((None, Some(s.clone())))
            }
            _ if !cluster.default_capacity_provider_strategy.is_empty() => {
                Ok((None, Some(cluster.default_capacity_provider_strategy.clone())))
            }
            _ => Ok((Some(FARGATE.to_owned()), None)),
        }
    }

    async fn check_network(
        &self,
        definition: &TaskDefinition,
        network: Option<&NetworkConfiguration>,
    ) -> Result<(), ControlError> {
        if definition.network_mode.as_deref() != Some("awsvpc") {
            return Ok(());
        }
        let Some(awsvpc) = network.and_then(|n| n.awsvpc_configuration.as_ref()) else {
            return Err(ControlError::invalid(
                "Network Configuration must be provided when networkMode 'awsvpc' is specified: pass networkConfiguration.awsvpcConfiguration with at least one subnet.",
            ));
        };
        self.validate_awsvpc(&awsvpc.subnets, &awsvpc.security_groups).await?;
        Ok(())
    }

    async fn check_registries(
        &self,
        registries: &[ServiceRegistry],
        definition: &TaskDefinition,
    ) -> Result<(), ControlError> {
        if registries.len() > 1 {
            return Err(ControlError::invalid("serviceRegistries: a service can have only one service registry."));
        }
        for r in registries {
            let Some(arn) = &r.registry_arn else {
                return Err(ControlError::invalid("serviceRegistries: registryArn is required."));
            };
            self.registry_service(arn).await?;
            if r.container_name.is_some() || r.container_port.is_some() {
                check_container_port("serviceRegistries", r.container_name.as_deref(), r.container_port, definition)?;
            }
        }
        Ok(())
    }

    pub(crate) async fn check_create(
        &self,
        cluster: &Cluster,
        input: &CreateServiceInput,
    ) -> Result<Checked, ControlError> {
        check_name(&input.service_name)?;
        if input.scheduling_strategy.as_deref() == Some("DAEMON") {
            return Err(ControlError::invalid(
                "The DAEMON scheduling strategy is not supported with the FARGATE launch type; use REPLICA.",
            ));
        }
        if let Some(s) = &input.scheduling_strategy
            && s != "REPLICA"
        {
            return Err(ControlError::invalid(format!("schedulingStrategy: '{s}' is not REPLICA or DAEMON.")));
        }
        check_fargate_only(&input.placement_constraints, &input.placement_strategy, &input.deployment_controller)?;
        let Some(desired) = input.desired_count else {
            return Err(ControlError::invalid(
                "desiredCount: required for a service with the REPLICA scheduling strategy.",
            ));
        };
        if desired < 0 {
            return Err(ControlError::invalid(format!("desiredCount: must be 0 or more, got {desired}.")));
        }
        if let Some(token) = &input.client_token
            && (token.is_empty() || token.len() > 36)
        {
            return Err(ControlError::invalid("clientToken: must be 1 to 36 characters."));
        }
        if let Some(p) = &input.propagate_tags
            && !PROPAGATE.contains(&p.as_str())
        {
            return Err(ControlError::invalid(format!(
                "propagateTags: '{p}' is not TASK_DEFINITION, SERVICE or NONE."
            )));
        }
        if let Some(grace) = input.health_check_grace_period_seconds
            && grace < 0
        {
            return Err(ControlError::invalid("healthCheckGracePeriodSeconds: must be 0 or more."));
        }
        if let Some(c) = &input.deployment_configuration {
            check_deployment_configuration(c)?;
        }
        validate_tags(input.tags.as_deref().unwrap_or_default())?;
        let Some(reference) = &input.task_definition else {
            return Err(ControlError::invalid("taskDefinition: required for the ECS deployment controller."));
        };
        let definition = self.service_task_definition(reference).await?;
        self.check_task_roles(&definition).await?;
        let (launch_type, strategy) =
            self.launch_settings(cluster, input.launch_type.as_deref(), input.capacity_provider_strategy.as_ref())?;
        self.check_network(&definition, input.network_configuration.as_ref()).await?;
        check_load_balancers(input.load_balancers.as_deref().unwrap_or_default(), &definition)?;
        self.check_target_groups(input.load_balancers.as_deref().unwrap_or_default()).await?;
        self.check_registries(input.service_registries.as_deref().unwrap_or_default(), &definition).await?;
        Ok(Checked { definition, launch_type, strategy })
    }

    pub(crate) fn new_service_record(
        &self,
        cluster: &Cluster,
        input: &CreateServiceInput,
        checked: &Checked,
        fingerprint: &str,
        now: Timestamp,
    ) -> ServiceRecord {
        let service_arn = self.identity.service(&cluster.cluster_name, &input.service_name).to_string();
        let service = Service {
            service_arn,
            service_name: input.service_name.clone(),
            cluster_arn: cluster.cluster_arn.clone(),
            load_balancers: input.load_balancers.clone().unwrap_or_default(),
            service_registries: input.service_registries.clone().unwrap_or_default(),
            status: ServiceStatus::Active,
            desired_count: input.desired_count.unwrap_or(0),
            running_count: 0,
            pending_count: 0,
            launch_type: checked.launch_type.clone(),
            capacity_provider_strategy: checked.strategy.clone(),
            platform_version: input.platform_version.clone().unwrap_or_else(|| "LATEST".into()),
            platform_family: "Linux".into(),
            task_definition: checked.definition.task_definition_arn.clone(),
            deployment_configuration: normalised(input.deployment_configuration.as_ref(), None),
            deployments: Vec::new(),
            events: Vec::new(),
            created_at: now,
            created_by: self.identity.iam_root(),
            network_configuration: input.network_configuration.clone(),
            health_check_grace_period_seconds: input.health_check_grace_period_seconds,
            scheduling_strategy: "REPLICA".into(),
            deployment_controller: DeploymentController { kind: "ECS".into() },
            enable_ecs_managed_tags: input.enable_ecs_managed_tags.unwrap_or(false),
            propagate_tags: input.propagate_tags.clone().unwrap_or_else(|| "NONE".into()),
            enable_execute_command: input.enable_execute_command.unwrap_or(false),
            tags: None,
        };
        let mut record = ServiceRecord {
            service,
            tags: input.tags.clone().unwrap_or_default(),
            client_token: input.client_token.clone().map(|t| (t, fingerprint.to_owned())),
            revisions: Vec::new(),
            history: Vec::new(),
            backoff: Backoff::default(),
            accounted: Default::default(),
            draining: Vec::new(),
            exec_revisions: Default::default(),
            registered: Default::default(),
            targets: Default::default(),
            steady: false,
        };
        self.start_deployment(&mut record, now, None);
        record
    }

    /// Applies an UpdateService to the record; a change of what tasks run starts a deployment.
    pub(crate) async fn apply_update(
        &self,
        cluster: &Cluster,
        record: &mut ServiceRecord,
        input: &UpdateServiceInput,
        now: Timestamp,
    ) -> Result<(), ControlError> {
        check_fargate_only(&input.placement_constraints, &input.placement_strategy, &input.deployment_controller)?;
        if let Some(desired) = input.desired_count
            && desired < 0
        {
            return Err(ControlError::invalid(format!("desiredCount: must be 0 or more, got {desired}.")));
        }
        if let Some(c) = &input.deployment_configuration {
            check_deployment_configuration(c)?;
        }
        if let Some(p) = &input.propagate_tags
            && !PROPAGATE.contains(&p.as_str())
        {
            return Err(ControlError::invalid(format!(
                "propagateTags: '{p}' is not TASK_DEFINITION, SERVICE or NONE."
            )));
        }
        let s = &mut record.service;
        let definition = match &input.task_definition {
            // A new task definition's roles are checked, as CreateService checks them.
            Some(reference) => {
                let definition = self.service_task_definition(reference).await?;
                self.check_task_roles(&definition).await?;
                definition
            }
            None => self.service_task_definition(&s.task_definition).await?,
        };
        let (launch_type, strategy) = match &input.capacity_provider_strategy {
            Some(given) => self.launch_settings(cluster, None, Some(given))?,
            None => (s.launch_type.clone(), s.capacity_provider_strategy.clone()),
        };
        let network = input.network_configuration.clone().or_else(|| s.network_configuration.clone());
        self.check_network(&definition, network.as_ref()).await?;
        let load_balancers = input.load_balancers.clone().unwrap_or_else(|| s.load_balancers.clone());
        check_load_balancers(&load_balancers, &definition)?;
        if load_balancers != s.load_balancers {
            self.check_target_groups(&load_balancers).await?;
        }
        let registries = input.service_registries.clone().unwrap_or_else(|| s.service_registries.clone());
        self.check_registries(&registries, &definition).await?;

        let platform = input.platform_version.clone().unwrap_or_else(|| s.platform_version.clone());
        let exec = input.enable_execute_command.unwrap_or(s.enable_execute_command);
        let new_deployment = input.force_new_deployment.unwrap_or(false)
            || definition.task_definition_arn != s.task_definition
            || network != s.network_configuration
            || launch_type != s.launch_type
            || strategy != s.capacity_provider_strategy
            || platform != s.platform_version
            || load_balancers != s.load_balancers
            || registries != s.service_registries
            || exec != s.enable_execute_command;

        s.task_definition = definition.task_definition_arn.clone();
        s.network_configuration = network;
        s.launch_type = launch_type;
        s.capacity_provider_strategy = strategy;
        s.platform_version = platform;
        s.load_balancers = load_balancers;
        s.service_registries = registries;
        s.enable_execute_command = exec;
        if let Some(d) = input.desired_count {
            s.desired_count = d;
        }
        if input.deployment_configuration.is_some() {
            s.deployment_configuration =
                normalised(input.deployment_configuration.as_ref(), Some(&s.deployment_configuration));
        }
        if let Some(g) = input.health_check_grace_period_seconds {
            s.health_check_grace_period_seconds = Some(g);
        }
        if let Some(m) = input.enable_ecs_managed_tags {
            s.enable_ecs_managed_tags = m;
        }
        if let Some(p) = &input.propagate_tags {
            s.propagate_tags = p.clone();
        }
        let desired = s.desired_count;
        if new_deployment {
            self.start_deployment(record, now, None);
        } else if let Some(primary) = record.service.deployments.first_mut() {
            primary.desired_count = desired;
            primary.updated_at = now;
        }
        record.steady = false;
        Ok(())
    }

    /// Makes the service's current configuration a new revision and its PRIMARY deployment;
    /// what was PRIMARY becomes ACTIVE and is scaled in as the new one comes up. `reuse` makes
    /// an earlier revision PRIMARY again instead (a rollback).
    pub(crate) fn start_deployment(&self, record: &mut ServiceRecord, now: Timestamp, reuse: Option<&str>) {
        let cluster = cluster_of(&record.service.cluster_arn);
        let s = &record.service;
        let number = reuse.map(str::to_owned).unwrap_or_else(deployment_number);
        let revision_arn = self.identity.service_revision(&cluster, &s.service_name, &number);
        let revision = match record.revisions.iter().find(|r| r.service_revision_arn == revision_arn) {
            Some(existing) => existing.clone(),
            None => ServiceRevision {
                service_revision_arn: revision_arn.clone(),
                service_arn: s.service_arn.clone(),
                cluster_arn: s.cluster_arn.clone(),
                task_definition: s.task_definition.clone(),
                capacity_provider_strategy: s.capacity_provider_strategy.clone(),
                launch_type: s.launch_type.clone(),
                platform_version: s.platform_version.clone(),
                platform_family: s.platform_family.clone(),
                load_balancers: s.load_balancers.clone(),
                service_registries: s.service_registries.clone(),
                network_configuration: s.network_configuration.clone(),
                created_at: now,
            },
        };
        let id = format!("ecs-svc/{number}");
        let sources: Vec<RevisionSummary> = s
            .deployments
            .iter()
            .filter(|d| d.id != id)
            .map(|d| RevisionSummary {
                arn: self.identity.service_revision(&cluster, &s.service_name, d.number()),
                requested_task_count: d.desired_count,
                running_task_count: d.running_count,
                pending_task_count: d.pending_count,
            })
            .collect();
        let desired = s.desired_count;
        let threshold = breaker_threshold(desired);
        let config = s.deployment_configuration.clone();
        let service_arn = s.service_arn.clone();
        let cluster_arn = s.cluster_arn.clone();

        // The deployment that was rolling out stops where it is: superseded, not failed.
        for h in record.history.iter_mut().filter(|h| h.status.is_open() && h.deployment_id() != id) {
            h.status = ServiceDeploymentStatus::Stopped;
            h.status_reason.get_or_insert_with(|| "Superseded by a newer service deployment.".into());
            h.stopped_at = Some(now);
            h.updated_at = now;
        }
        let mut deployments = std::mem::take(&mut record.service.deployments);
        let kept = deployments.iter().position(|d| d.id == id).map(|i| deployments.remove(i));
        for d in &mut deployments {
            d.status = DeploymentStatus::Active;
            d.updated_at = now;
        }
        let primary = Deployment {
            id: id.clone(),
            status: DeploymentStatus::Primary,
            task_definition: revision.task_definition.clone(),
            desired_count: desired,
            pending_count: kept.as_ref().map_or(0, |d| d.pending_count),
            running_count: kept.as_ref().map_or(0, |d| d.running_count),
            failed_tasks: 0,
            created_at: kept.as_ref().map_or(now, |d| d.created_at),
            updated_at: now,
            capacity_provider_strategy: revision.capacity_provider_strategy.clone(),
            launch_type: revision.launch_type.clone(),
            // Deployments show the platform version LATEST resolved to.
            platform_version: if revision.platform_version == "LATEST" {
                "1.4.0".into()
            } else {
                revision.platform_version.clone()
            },
            platform_family: revision.platform_family.clone(),
            network_configuration: revision.network_configuration.clone(),
            rollout_state: RolloutState::InProgress,
            rollout_state_reason: format!("ECS deployment {id} in progress."),
        };
        deployments.insert(0, primary);
        record.service.deployments = deployments;
        if reuse.is_some() {
            // A rollback restores that revision's settings as the service's own.
            let s = &mut record.service;
            s.task_definition = revision.task_definition.clone();
            s.network_configuration = revision.network_configuration.clone();
            s.launch_type = revision.launch_type.clone();
            s.capacity_provider_strategy = revision.capacity_provider_strategy.clone();
            s.platform_version = revision.platform_version.clone();
            s.load_balancers = revision.load_balancers.clone();
            s.service_registries = revision.service_registries.clone();
            s.enable_execute_command = record.exec_revisions.contains(&number);
        } else {
            if record.service.enable_execute_command {
                record.exec_revisions.insert(number.clone());
            }
            record.revisions.push(revision);
            if record.revisions.len() > MAX_HISTORY {
                record.revisions.remove(0);
            }
            record.history.push(ServiceDeployment {
                service_deployment_arn: self.identity.service_deployment(
                    &cluster,
                    &record.service.service_name,
                    &number,
                ),
                service_arn,
                cluster_arn,
                created_at: now,
                started_at: Some(now),
                finished_at: None,
                stopped_at: None,
                updated_at: now,
                source_service_revisions: sources,
                target_service_revision: RevisionSummary {
                    arn: revision_arn,
                    requested_task_count: desired,
                    running_task_count: 0,
                    pending_task_count: 0,
                },
                status: ServiceDeploymentStatus::InProgress,
                status_reason: None,
                deployment_circuit_breaker: BreakerState {
                    status: if config.breaker().enable { "MONITORING" } else { "DISABLED" }.into(),
                    failure_count: 0,
                    threshold,
                },
                deployment_configuration: config,
                rollback: None,
            });
            if record.history.len() > MAX_HISTORY {
                record.history.remove(0);
            }
        }
        record.steady = false;
        record.backoff = Backoff::default();
    }
}

/// Failed tasks after which the circuit breaker fails a deployment.
pub(crate) fn breaker_threshold(desired: i32) -> i32 {
    ((desired.max(0) + 1) / 2).clamp(3, 200)
}

/// The cluster name in a cluster ARN.
pub(crate) fn cluster_of(cluster_arn: &str) -> String {
    cluster_arn.rsplit('/').next().unwrap_or(cluster_arn).to_owned()
}
