//! Instances: what a service's name resolves to.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use flotilla_store::{Compare, Op, Txn, TxnOutcome};

use crate::error::{DiscoveryError, Result};
use crate::operation::submitted;
use crate::record::{
    ATTR_ALIAS, ATTR_CNAME, ATTR_IPV4, ATTR_IPV6, ATTR_PORT, HealthStatus, Instance, OperationType, RecordType,
    Service, Work, decode, encode, instance_key, instances_prefix,
};
use crate::{CONFLICT_RETRIES, Discovery, Page, paginate};

/// Cloud Map's limit on attributes per instance.
const MAX_ATTRIBUTES: usize = 30;

/// Which instances DiscoverInstances returns, for services with a custom health check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthFilter {
    #[default]
    Healthy,
    Unhealthy,
    All,
    HealthyOrElseAll,
}

/// The answer to DiscoverInstances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub namespace_name: String,
    pub service_name: String,
    pub instances: Vec<Instance>,
    /// Changes whenever an instance of the service is registered or deregistered.
    pub revision: u64,
}

/// The attributes a service's DNS records need, in the forms DNS can use.
fn check_attributes(service: &Service, attributes: &BTreeMap<String, String>) -> Result<()> {
    let invalid = |m: String| Err(DiscoveryError::InvalidInput(m));
    if attributes.len() > MAX_ATTRIBUTES {
        return invalid(format!("An instance can have at most {MAX_ATTRIBUTES} attributes."));
    }
    if attributes.contains_key(ATTR_ALIAS) {
        return invalid(format!("{ATTR_ALIAS} (an Elastic Load Balancing alias) is not supported by Flotilla."));
    }
    if let Some(ip) = attributes.get(ATTR_IPV4)
        && ip.parse::<Ipv4Addr>().is_err()
    {
        return invalid(format!("{ATTR_IPV4} '{ip}' is not an IPv4 address."));
    }
    if let Some(ip) = attributes.get(ATTR_IPV6)
        && ip.parse::<Ipv6Addr>().is_err()
    {
        return invalid(format!("{ATTR_IPV6} '{ip}' is not an IPv6 address."));
    }
    if let Some(port) = attributes.get(ATTR_PORT)
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return invalid(format!("{ATTR_PORT} '{port}' is not a port number (1-65535)."));
    }
    let Some(dns) = &service.dns else { return Ok(()) };
    let has = |k: RecordType| dns.ttl(k).is_some();
    let (a, aaaa) = (has(RecordType::A), has(RecordType::Aaaa));
    if a && aaaa && !attributes.contains_key(ATTR_IPV4) && !attributes.contains_key(ATTR_IPV6) {
        return invalid(format!("The service has A and AAAA records: give {ATTR_IPV4} or {ATTR_IPV6}."));
    }
    if a && !aaaa && !attributes.contains_key(ATTR_IPV4) {
        return invalid(format!("The service has an A record: {ATTR_IPV4} is required."));
    }
    if aaaa && !a && !attributes.contains_key(ATTR_IPV6) {
        return invalid(format!("The service has an AAAA record: {ATTR_IPV6} is required."));
    }
    if has(RecordType::Srv) && !attributes.contains_key(ATTR_PORT) {
        return invalid(format!("The service has an SRV record: {ATTR_PORT} is required."));
    }
    if has(RecordType::Cname) && !attributes.contains_key(ATTR_CNAME) {
        return invalid(format!("The service has a CNAME record: {ATTR_CNAME} is required."));
    }
    Ok(())
}

impl Discovery {
    /// Requests that `instance_id` be registered (or its attributes replaced); returns the
    /// operation's id.
    pub async fn register_instance(
        &self,
        service_id: &str,
        instance_id: &str,
        attributes: BTreeMap<String, String>,
        creator_request_id: Option<String>,
    ) -> Result<String> {
        let service = self.service(service_id).await?;
        check_attributes(&service, &attributes)?;
        let health = if service.custom_health.is_some() { HealthStatus::Healthy } else { HealthStatus::Unknown };
        let instance = Instance {
            id: instance_id.to_owned(),
            service_id: service.id.clone(),
            attributes,
            creator_request_id,
            health,
        };
        let op = submitted(
            OperationType::RegisterInstance,
            Work::RegisterInstance(instance),
            Some(service.namespace_id),
            Some(service.id),
            Some(instance_id.to_owned()),
        );
        self.queue(op).await
    }

    /// Requests that `instance_id` be deregistered; returns the operation's id.
    pub async fn deregister_instance(&self, service_id: &str, instance_id: &str) -> Result<String> {
        let service = self.service(service_id).await?;
        let registered = self.get(&instance_key(&service.id, instance_id)).await?.is_some();
        // A registration still in flight counts: it is applied before this deregistration.
        let registering = registered
            || self.pending_operations().await?.iter().any(|(_, op)| {
                op.kind == OperationType::RegisterInstance
                    && op.service_id.as_deref() == Some(&service.id)
                    && op.instance_id.as_deref() == Some(instance_id)
            });
        if !registering {
            return Err(DiscoveryError::InstanceNotFound {
                service_id: service.id,
                instance_id: instance_id.to_owned(),
            });
        }
        let work = Work::DeregisterInstance { service_id: service.id.clone(), instance_id: instance_id.to_owned() };
        let op = submitted(
            OperationType::DeregisterInstance,
            work,
            Some(service.namespace_id),
            Some(service.id),
            Some(instance_id.to_owned()),
        );
        self.queue(op).await
    }

    pub async fn instance(&self, service_id: &str, instance_id: &str) -> Result<Instance> {
        let service = self.service(service_id).await?;
        match self.get(&instance_key(&service.id, instance_id)).await? {
            Some(kv) => decode(&kv),
            None => Err(DiscoveryError::InstanceNotFound { service_id: service.id, instance_id: instance_id.into() }),
        }
    }

    async fn instances_of(&self, service_id: &str) -> Result<Vec<Instance>> {
        self.store.list_prefix(&instances_prefix(service_id)).await?.iter().map(decode).collect()
    }

    pub async fn list_instances(
        &self,
        service_id: &str,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> Result<Page<Instance>> {
        let service = self.service(service_id).await?;
        let instances = self.instances_of(&service.id).await?;
        paginate(instances, |i| &i.id, max_results, next_token)
    }

    /// Instances of `service_name` in the namespace called `namespace_name` whose attributes
    /// match all of `query` (and all of `optional`, if any do).
    pub async fn discover_instances(
        &self,
        namespace_name: &str,
        service_name: &str,
        query: &BTreeMap<String, String>,
        optional: &BTreeMap<String, String>,
        health: HealthFilter,
        max_results: Option<usize>,
    ) -> Result<Discovered> {
        let Some(namespace) = self.namespace_named(namespace_name).await? else {
            return Err(DiscoveryError::NamespaceNotFound { id: namespace_name.to_owned() });
        };
        let claim_key = crate::record::service_name_key(&namespace.id, service_name);
        let Some(claim_kv) = self.get(&claim_key).await? else {
            return Err(DiscoveryError::ServiceNotFound { id: service_name.to_owned() });
        };
        let claim: crate::record::NameClaim = decode(&claim_kv)?;
        let (service, revision) = self.service_with_revision(&claim.id).await?;
        let matches = |i: &Instance, wanted: &BTreeMap<String, String>| {
            wanted.iter().all(|(k, v)| i.attributes.get(k) == Some(v))
        };
        let mut instances: Vec<Instance> =
            self.instances_of(&service.id).await?.into_iter().filter(|i| matches(i, query)).collect();
        if !optional.is_empty() && instances.iter().any(|i| matches(i, optional)) {
            instances.retain(|i| matches(i, optional));
        }
        if service.custom_health.is_some() {
            let healthy = |i: &Instance| i.health == HealthStatus::Healthy;
            match health {
                HealthFilter::All => {}
                HealthFilter::Healthy => instances.retain(healthy),
                HealthFilter::Unhealthy => instances.retain(|i| !healthy(i)),
                HealthFilter::HealthyOrElseAll => {
                    if instances.iter().any(healthy) {
                        instances.retain(healthy);
                    }
                }
            }
        }
        instances.truncate(max_results.unwrap_or(100));
        Ok(Discovered { namespace_name: namespace.name, service_name: service.name, instances, revision })
    }

    /// The revision DiscoverInstances would report now.
    pub async fn instances_revision(&self, namespace_name: &str, service_name: &str) -> Result<u64> {
        let none = BTreeMap::new();
        let found =
            self.discover_instances(namespace_name, service_name, &none, &none, HealthFilter::All, Some(1)).await?;
        Ok(found.revision)
    }

    /// Records the health an instance reports through its service's custom health check.
    pub async fn update_custom_health(&self, service_id: &str, instance_id: &str, healthy: bool) -> Result<()> {
        let service = self.service(service_id).await?;
        if service.custom_health.is_none() {
            return Err(DiscoveryError::CustomHealthNotFound { service_id: service.id });
        }
        let key = instance_key(&service.id, instance_id);
        for _ in 0..CONFLICT_RETRIES {
            let Some(kv) = self.get(&key).await? else {
                return Err(DiscoveryError::InstanceNotFound {
                    service_id: service.id,
                    instance_id: instance_id.into(),
                });
            };
            let mut instance: Instance = decode(&kv)?;
            instance.health = if healthy { HealthStatus::Healthy } else { HealthStatus::Unhealthy };
            let txn = Txn::new().when(Compare::revision(&key, kv.mod_revision)).then(Op::put(&key, encode(&instance)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
        Err(DiscoveryError::InvalidInput(format!("Instance {instance_id} is being changed by other requests; retry.")))
    }

    /// The health of the service's instances (of `only` those, when given).
    pub async fn health_statuses(
        &self,
        service_id: &str,
        only: Option<&[String]>,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> Result<Page<(String, HealthStatus)>> {
        let service = self.service(service_id).await?;
        let statuses: Vec<(String, HealthStatus)> = self
            .instances_of(&service.id)
            .await?
            .into_iter()
            .filter(|i| only.is_none_or(|ids| ids.contains(&i.id)))
            .map(|i| (i.id, i.health))
            .collect();
        paginate(statuses, |(id, _)| id, max_results, next_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{DnsConfig, DnsRecord, RoutingPolicy, ServiceType};

    fn service(records: &[RecordType]) -> Service {
        Service {
            id: "srv-1".into(),
            arn: String::new(),
            name: "web".into(),
            namespace_id: "ns-1".into(),
            description: None,
            creator_request_id: None,
            created_millis: 0,
            kind: ServiceType::DnsHttp,
            dns: Some(DnsConfig {
                routing_policy: RoutingPolicy::Multivalue,
                records: records.iter().map(|&kind| DnsRecord { kind, ttl: 60 }).collect(),
            }),
            custom_health: None,
            instance_count: 0,
            tags: vec![],
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn attributes_must_serve_the_services_records() {
        let a = service(&[RecordType::A]);
        assert!(check_attributes(&a, &attrs(&[(ATTR_IPV4, "10.0.0.5")])).is_ok());
        assert!(check_attributes(&a, &attrs(&[("color", "blue")])).is_err());
        assert!(check_attributes(&a, &attrs(&[(ATTR_IPV4, "10.0.0.500")])).is_err());
        let srv = service(&[RecordType::A, RecordType::Srv]);
        assert!(check_attributes(&srv, &attrs(&[(ATTR_IPV4, "10.0.0.5")])).is_err());
        assert!(check_attributes(&srv, &attrs(&[(ATTR_IPV4, "10.0.0.5"), (ATTR_PORT, "80")])).is_ok());
        assert!(check_attributes(&srv, &attrs(&[(ATTR_IPV4, "10.0.0.5"), (ATTR_PORT, "0")])).is_err());
        let both = service(&[RecordType::A, RecordType::Aaaa]);
        assert!(check_attributes(&both, &attrs(&[(ATTR_IPV6, "fd00::1")])).is_ok());
        assert!(check_attributes(&a, &attrs(&[(ATTR_IPV4, "10.0.0.5"), (ATTR_ALIAS, "x")])).is_err());
    }
}
