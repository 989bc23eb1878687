//! Services and Cloud Map: a service task's address is registered in its Cloud Map service
//! once the task serves (RUNNING, and HEALTHY if it has health checks) and deregistered before
//! the scheduler stops it, so the VPC resolver only answers with live tasks.

use std::collections::{BTreeMap, HashSet};

use flotilla_discovery::{ATTR_IPV4, ATTR_PORT, DiscoveryError};
use flotilla_types::task::ENI_ATTACHMENT;

use super::model::{ServiceRecord, ServiceStatus};
use super::scheduler::Observed;
use crate::page::{Page, paginate_by};
use crate::{Control, ControlError};

/// The Cloud Map service id in a registry ARN (`...:service/srv-...`).
fn registry_id(arn: &str) -> Option<&str> {
    if !arn.starts_with("arn:aws:servicediscovery:") {
        return None;
    }
    arn.split_once(":service/").map(|(_, id)| id).filter(|id| !id.is_empty())
}

fn store_error(e: DiscoveryError) -> ControlError {
    match e {
        DiscoveryError::Store(source) => ControlError::Store(source),
        other => ControlError::invalid(other.to_string()),
    }
}

impl Control {
    /// The Cloud Map service a `serviceRegistries` entry names; it must exist.
    pub(crate) async fn registry_service(&self, arn: &str) -> Result<flotilla_discovery::Service, ControlError> {
        let Some(id) = registry_id(arn) else {
            return Err(ControlError::invalid(format!(
                "serviceRegistries.registryArn: '{arn}' is not a Cloud Map service ARN (arn:aws:servicediscovery:<region>:<account>:service/srv-...)."
            )));
        };
        let Some(discovery) = self.discovery() else {
            return Err(ControlError::invalid("serviceRegistries: Cloud Map is not running on this server."));
        };
        discovery.service(id).await.map_err(|e| match e {
            DiscoveryError::ServiceNotFound { .. } => ControlError::invalid(format!(
                "serviceRegistries: the Cloud Map service {arn} does not exist; create it with `aws servicediscovery create-service`."
            )),
            other => store_error(other),
        })
    }

    /// Registers the serving tasks that are not yet, deregisters those that no longer serve;
    /// answers which tasks some Cloud Map service may still return.
    pub(crate) async fn sync_registries(
        &self,
        rec: &mut ServiceRecord,
        tasks: &[Observed],
        serving: &[usize],
        leaving: &[String],
    ) -> Result<HashSet<String>, ControlError> {
        let mut answering = HashSet::new();
        let Some(discovery) = self.discovery() else { return Ok(answering) };
        if rec.service.service_registries.is_empty() && rec.registered.is_empty() {
            return Ok(answering);
        }
        let draining: Vec<&str> = rec.draining.iter().map(|d| d.task_id.as_str()).collect();
        let serves = |id: &str| {
            serving.iter().any(|&i| tasks[i].id() == id) && !leaving.iter().any(|l| l == id) && !draining.contains(&id)
        };

        // Out first: a task that stops serving is no longer answered for.
        for (task_id, service_id) in rec.registered.clone() {
            if serves(&task_id) {
                continue;
            }
            match discovery.deregister_instance(&service_id, &task_id).await {
                Ok(_) | Err(DiscoveryError::InstanceNotFound { .. }) | Err(DiscoveryError::ServiceNotFound { .. }) => {
                    rec.registered.remove(&task_id);
                }
                Err(e) => {
                    tracing::warn!(task = %task_id, error = %e, "deregistering a task from Cloud Map failed; retrying")
                }
            }
        }

        if rec.service.status == ServiceStatus::Active
            && let Some(registry) = rec.service.service_registries.first().cloned()
            && let Some(service_id) = registry.registry_arn.as_deref().and_then(registry_id).map(str::to_owned)
        {
            let cluster = super::input::cluster_of(&rec.service.cluster_arn);
            for &i in serving {
                let t = &tasks[i];
                if !serves(t.id()) || !t.ready() || rec.registered.contains_key(t.id()) {
                    continue;
                }
                let Some(ip) = t.address() else { continue };
                let mut attributes = BTreeMap::from([
                    (ATTR_IPV4.to_owned(), ip),
                    ("AVAILABILITY_ZONE".to_owned(), t.task().availability_zone.clone()),
                    ("REGION".to_owned(), self.identity.region.clone()),
                    ("ECS_CLUSTER_NAME".to_owned(), cluster.clone()),
                    ("ECS_SERVICE_NAME".to_owned(), rec.service.service_name.clone()),
                    ("AWS_INIT_HEALTH_STATUS".to_owned(), "HEALTHY".to_owned()),
                ]);
                if let Some(port) = registry.port.or(registry.container_port) {
                    attributes.insert(ATTR_PORT.to_owned(), port.to_string());
                }
                match discovery.register_instance(&service_id, t.id(), attributes, None).await {
                    Ok(_) => {
                        rec.registered.insert(t.id().to_owned(), service_id.clone());
                    }
                    Err(e) => {
                        tracing::warn!(task = %t.id(), error = %e, "registering a task in Cloud Map failed; retrying")
                    }
                }
            }
        }

        // What may still be answered: what we registered, and instances not yet gone.
        answering.extend(rec.registered.keys().cloned());
        let mut services: Vec<String> = rec.registered.values().cloned().collect();
        if let Some(id) =
            rec.service.service_registries.first().and_then(|r| r.registry_arn.as_deref()).and_then(registry_id)
        {
            services.push(id.to_owned());
        }
        services.sort();
        services.dedup();
        for service_id in services {
            let mut token: Option<String> = None;
            loop {
                let page = match discovery.list_instances(&service_id, None, token.as_deref()).await {
                    Ok(page) => page,
                    Err(DiscoveryError::ServiceNotFound { .. }) => break,
                    Err(e) => return Err(store_error(e)),
                };
                answering.extend(page.items.into_iter().map(|i| i.id));
                match page.next_token {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        }
        Ok(answering)
    }

    /// ListServicesByNamespace: services registered in a Cloud Map namespace (name, id or ARN).
    pub async fn list_services_by_namespace(
        &self,
        namespace: &str,
        max_results: Option<i32>,
        next_token: Option<&str>,
    ) -> Result<Page<String>, ControlError> {
        let not_found = || ControlError::NamespaceNotFound { namespace: namespace.to_owned() };
        let Some(discovery) = self.discovery() else { return Err(not_found()) };
        let id = namespace.rsplit('/').next().unwrap_or(namespace);
        let found = match discovery.namespace(id).await {
            Ok(ns) => Some(ns),
            Err(DiscoveryError::NamespaceNotFound { .. }) => {
                discovery.namespace_named(namespace).await.map_err(store_error)?
            }
            Err(e) => return Err(store_error(e)),
        };
        let ns = found.ok_or_else(not_found)?;
        let mut items = Vec::new();
        for (record, _) in self.all_services().await? {
            if record.service.status == ServiceStatus::Inactive {
                continue;
            }
            for r in &record.service.service_registries {
                let Some(sid) = r.registry_arn.as_deref().and_then(registry_id) else { continue };
                if let Ok(s) = discovery.service(sid).await
                    && s.namespace_id == ns.id
                {
                    items.push((record.service.service_arn.clone(), record.service.service_arn.clone()));
                }
            }
        }
        items.sort();
        items.dedup();
        // As ListServices: 10 a page unless asked for up to 100.
        paginate_by(items, max_results, next_token, 10, 100)
    }
}

impl Observed {
    /// The task's private address, from its network interface attachment.
    pub(crate) fn address(&self) -> Option<String> {
        let attachment = self.task().attachments.iter().find(|a| a.kind == ENI_ATTACHMENT)?;
        attachment
            .details
            .iter()
            .find(|d| d.name.as_deref() == Some("privateIPv4Address"))
            .and_then(|d| d.value.clone())
    }
}
