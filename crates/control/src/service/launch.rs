//! The tasks a service's PRIMARY deployment starts: its task definition, spread over the zones
//! of its subnets and then over the hosts in each zone with room, each with its capacity
//! provider (base, then weight) and propagated tags.

use std::collections::{BTreeMap, HashMap};

use flotilla_types::task::TaskOverride;
use flotilla_types::task_definition::TaskDefinition;
use flotilla_types::{Tag, TaskSize, Timestamp};

use super::input::cluster_of;
use super::model::ServiceRecord;
use super::scheduler::Observed;
use crate::cluster::Cluster;
use crate::host::{Placer, Reservation, Unplaced};
use crate::task::{Launch, TaskRecord, new_task_id, place, subnet_first, task_size};
use crate::{Control, ControlError};

/// What launching the primary deployment's tasks reads from the store, read before the pass's
/// placer is taken: services then read at the same time and place one after another, and the
/// time a service holds the placer is its placements only (commits go in groups, `commits.rs`).
pub(crate) struct LaunchInputs {
    definition: TaskDefinition,
    definition_tags: Vec<Tag>,
    size: TaskSize,
    /// Zones of the deployment's subnets, in the order given, each with its subnets.
    zones: BTreeMap<String, Vec<String>>,
    zone_order: Vec<String>,
    cluster_record: Cluster,
}

impl Control {
    /// Reads what [`Control::launch`] needs for `rec`'s primary deployment.
    pub(crate) async fn launch_inputs(&self, rec: &ServiceRecord) -> Result<LaunchInputs, ControlError> {
        let deployment = rec.service.deployments.first().expect("a service has a primary deployment");
        let cluster = cluster_of(&rec.service.cluster_arn);
        let (definition, definition_tags) = self.describe_task_definition(&deployment.task_definition).await?;
        let size = task_size(&definition, &TaskOverride::default())?;
        let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut zone_order: Vec<String> = Vec::new();
        let subnets = deployment
            .network_configuration
            .as_ref()
            .and_then(|n| n.awsvpc_configuration.as_ref())
            .map(|a| a.subnets.clone())
            .unwrap_or_default();
        for id in &subnets {
            let subnet = self.subnet(id).await.map_err(|e| ControlError::invalid(format!("subnet {id}: {e}")))?;
            if !zone_order.contains(&subnet.availability_zone) {
                zone_order.push(subnet.availability_zone.clone());
            }
            zones.entry(subnet.availability_zone).or_default().push(id.clone());
        }
        // Stale is enough: the cluster record feeds no compare, and a stale read still sees
        // everything this process saw (the service record that woke the pass included).
        let (cluster_record, _) = self.active_cluster_as(Some(&cluster), crate::record::Read::Stale).await?;
        Ok(LaunchInputs { definition, definition_tags, size, zones, zone_order, cluster_record })
    }

    /// New task records for the primary deployment, spread over its zones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch(
        &self,
        rec: &ServiceRecord,
        inputs: LaunchInputs,
        tasks: &[Observed],
        primary: &[usize],
        count: usize,
        placer: &mut Placer,
        now: Timestamp,
    ) -> (Vec<TaskRecord>, Option<Unplaced>) {
        let deployment = rec.service.deployments.first().expect("a service has a primary deployment");
        let cluster = cluster_of(&rec.service.cluster_arn);
        let LaunchInputs { definition, definition_tags, size, zones, zone_order, cluster_record } = inputs;
        let overrides = TaskOverride::default();

        let mut per_zone: HashMap<String, usize> = HashMap::new();
        let mut per_subnet: HashMap<String, usize> = HashMap::new();
        let mut per_host: HashMap<String, usize> = HashMap::new();
        for &i in primary {
            let t = &tasks[i];
            if let Some(host) = &t.record.host_id {
                *per_host.entry(host.clone()).or_default() += 1;
            }
            *per_zone.entry(t.task().availability_zone.clone()).or_default() += 1;
            if let Some(first) = t
                .record
                .network_configuration
                .as_ref()
                .and_then(|n| n.awsvpc_configuration.as_ref())
                .and_then(|a| a.subnets.first())
            {
                *per_subnet.entry(first.clone()).or_default() += 1;
            }
        }

        let providers: Vec<Option<String>> = match &deployment.capacity_provider_strategy {
            Some(strategy) if !strategy.is_empty() => {
                place(strategy, primary.len() + count).into_iter().skip(primary.len()).map(Some).collect()
            }
            _ => vec![None; count],
        };
        let mut tags: Vec<Tag> = match rec.service.propagate_tags.as_str() {
            "TASK_DEFINITION" => definition_tags,
            "SERVICE" => rec.tags.clone(),
            _ => Vec::new(),
        };
        if rec.service.enable_ecs_managed_tags {
            tags.push(Tag { key: "aws:ecs:clusterName".into(), value: cluster.clone() });
            tags.push(Tag { key: "aws:ecs:serviceName".into(), value: rec.service.service_name.clone() });
        }
        let reservation = Reservation::from(size);
        let mut out = Vec::with_capacity(count);
        let mut unplaced = None;
        for provider in providers {
            // The zones with the fewest of this deployment's tasks first; within the first
            // zone with room, the host with the fewest of them, then the emptiest.
            let mut by_spread: Vec<&String> = zone_order.iter().collect();
            by_spread.sort_by_key(|z| per_zone.get(*z).copied().unwrap_or(0));
            let mut host = None;
            let mut zone_chosen = by_spread.first().map(|z| (*z).clone());
            if !placer.no_hosts() {
                let mut missed = Unplaced::default();
                let tries: Vec<Option<&String>> =
                    if by_spread.is_empty() { vec![None] } else { by_spread.iter().map(|z| Some(*z)).collect() };
                for zone in tries {
                    match placer.place(zone.map(String::as_str), reservation, &per_host) {
                        Ok(h) => {
                            host = Some(h.clone());
                            zone_chosen = zone.cloned();
                            break;
                        }
                        Err(u) => missed.hosts.extend(u.hosts),
                    }
                }
                if host.is_none() {
                    unplaced = Some(missed);
                    break;
                }
            }
            if let Some(h) = &host {
                *per_host.entry(h.spec.id.clone()).or_default() += 1;
            }
            let (network_configuration, availability_zone) = match &deployment.network_configuration {
                Some(network) if !zone_order.is_empty() => {
                    let zone = zone_chosen.expect("zone_order is not empty");
                    let subnet = zones[&zone]
                        .iter()
                        .min_by_key(|s| per_subnet.get(*s).copied().unwrap_or(0))
                        .expect("a zone has a subnet")
                        .clone();
                    *per_zone.entry(zone.clone()).or_default() += 1;
                    *per_subnet.entry(subnet.clone()).or_default() += 1;
                    (Some(subnet_first(network, &subnet)), Some(zone))
                }
                other => (other.clone(), None),
            };
            let launch = Launch {
                id: new_task_id(),
                capacity_provider: provider,
                platform_version: Some(deployment.platform_version.clone()),
                group: Some(format!("service:{}", rec.service.service_name)),
                started_by: Some(deployment.id.clone()),
                enable_execute_command: rec.exec_revisions.contains(deployment.number()),
                tags: tags.clone(),
                network_configuration,
                availability_zone,
            };
            let mut record = self.new_task(
                &cluster_record.cluster_name,
                &cluster_record.cluster_arn,
                &definition,
                size,
                &overrides,
                launch,
                host.as_ref(),
                now,
            );
            record.reservation = host.is_some().then_some(reservation);
            if deployment.launch_type.is_none() && record.task.capacity_provider_name.is_some() {
                record.task.launch_type = "FARGATE".into();
            }
            out.push(record);
        }
        (out, unplaced)
    }
}
