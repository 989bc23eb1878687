//! Services: a name in a namespace, and the DNS records its instances get.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};

use crate::error::{DiscoveryError, Result};
use crate::namespace::check_dns_name;
use crate::record::{
    DnsConfig, DnsRecord, NameClaim, Namespace, RecordType, RoutingPolicy, SERVICES, Service, ServiceType, Tag, decode,
    encode, namespace_key, new_id, now_millis, service_key, service_name_key,
};
use crate::{CONFLICT_RETRIES, Discovery, Page, paginate};

#[derive(Clone, Debug, Default)]
pub struct NewService {
    pub name: String,
    pub namespace_id: Option<String>,
    /// The deprecated `DnsConfig.NamespaceId`, which the seeds still use.
    pub dns_namespace_id: Option<String>,
    pub description: Option<String>,
    pub creator_request_id: Option<String>,
    pub routing_policy: Option<RoutingPolicy>,
    /// `Some` when the request has a `DnsConfig`.
    pub dns_records: Option<Vec<DnsRecord>>,
    /// `Some` for a custom health check, with its deprecated `FailureThreshold`.
    pub custom_health: Option<Option<u32>>,
    /// `Type=HTTP`: discoverable through the API only, no DNS records.
    pub http_only: bool,
    pub tags: Vec<Tag>,
}

/// The records Cloud Map would accept, in the combinations Route 53 allows.
fn check_dns_config(policy: Option<RoutingPolicy>, records: Vec<DnsRecord>) -> Result<DnsConfig> {
    let invalid = |m: &str| Err(DiscoveryError::InvalidInput(m.to_owned()));
    if records.is_empty() {
        return invalid("DnsConfig.DnsRecords must name at least one record type.");
    }
    let mut kinds: Vec<RecordType> = records.iter().map(|r| r.kind).collect();
    kinds.sort();
    kinds.dedup();
    if kinds.len() != records.len() {
        return invalid("DnsConfig.DnsRecords names a record type more than once.");
    }
    let policy = policy.unwrap_or(RoutingPolicy::Multivalue);
    if kinds.contains(&RecordType::Cname) {
        if kinds.len() > 1 {
            return invalid("A CNAME record cannot be combined with other record types in DnsConfig.DnsRecords.");
        }
        if policy != RoutingPolicy::Weighted {
            return invalid("A service with a CNAME record must use the WEIGHTED routing policy.");
        }
    }
    Ok(DnsConfig { routing_policy: policy, records })
}

impl Discovery {
    pub async fn create_service(&self, req: NewService) -> Result<Service> {
        let namespace_id = match (&req.namespace_id, &req.dns_namespace_id) {
            (Some(top), Some(dns)) if self.resource_id(top, "namespace") != self.resource_id(dns, "namespace") => {
                return Err(DiscoveryError::InvalidInput(
                    "NamespaceId and DnsConfig.NamespaceId name different namespaces.".into(),
                ));
            }
            (Some(id), _) | (None, Some(id)) => self.resource_id(id, "namespace").to_owned(),
            (None, None) => return Err(DiscoveryError::InvalidInput("NamespaceId is required.".into())),
        };
        let name = match check_dns_name("Name", &req.name, 127) {
            Ok(name) => name,
            // The apex of the namespace, as Cloud Map allows for API-only services.
            Err(_) if req.name == "." && req.dns_records.is_none() => req.name.clone(),
            Err(e) => return Err(e),
        };
        let (kind, dns) = match (req.dns_records, req.http_only) {
            (Some(_), true) => {
                return Err(DiscoveryError::InvalidInput("A service of Type HTTP cannot have a DnsConfig.".into()));
            }
            (Some(records), false) => (ServiceType::DnsHttp, Some(check_dns_config(req.routing_policy, records)?)),
            (None, _) => (ServiceType::Http, None),
        };
        let ns_key = namespace_key(&namespace_id);
        let claim_key = service_name_key(&namespace_id, &name);
        let id = new_id("srv-", 16);
        let service = Service {
            arn: self.identity.servicediscovery_service(&id),
            id: id.clone(),
            name: name.clone(),
            namespace_id: namespace_id.clone(),
            description: req.description,
            creator_request_id: req.creator_request_id.clone(),
            created_millis: now_millis(),
            kind,
            dns,
            custom_health: req.custom_health,
            instance_count: 0,
            tags: req.tags,
        };
        let claim = NameClaim { id, creator_request_id: req.creator_request_id.clone(), operation_id: None };
        for _ in 0..CONFLICT_RETRIES {
            let Some(ns_kv) = self.get(&ns_key).await? else {
                return Err(DiscoveryError::NamespaceNotFound { id: namespace_id });
            };
            if let Some(kv) = self.get(&claim_key).await? {
                let existing: NameClaim = decode(&kv)?;
                if existing.creator_request_id.is_some() && existing.creator_request_id == req.creator_request_id {
                    return self.service(&existing.id).await;
                }
                return Err(DiscoveryError::ServiceAlreadyExists {
                    name,
                    service_id: existing.id,
                    creator_request_id: existing.creator_request_id,
                });
            }
            let mut namespace: Namespace = decode(&ns_kv)?;
            namespace.service_count += 1;
            let txn = Txn::new()
                .when(Compare::revision(&ns_key, ns_kv.mod_revision))
                .when(Compare::absent(&claim_key))
                .then(Op::put(&ns_key, encode(&namespace)))
                .then(Op::put(&claim_key, encode(&claim)))
                .then(Op::put(service_key(&service.id), encode(&service)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(service);
            }
        }
        Err(DiscoveryError::InvalidInput(format!(
            "Namespace {namespace_id} is being changed by other requests; retry."
        )))
    }

    pub async fn service(&self, id: &str) -> Result<Service> {
        let id = self.resource_id(id, "service");
        match self.get(&service_key(id)).await? {
            Some(kv) => decode(&kv),
            None => Err(DiscoveryError::ServiceNotFound { id: id.to_owned() }),
        }
    }

    /// Services, of the given namespaces only when `namespace_ids` is `Some`.
    pub async fn list_services(
        &self,
        namespace_ids: Option<&[String]>,
        max_results: Option<usize>,
        next_token: Option<&str>,
    ) -> Result<Page<Service>> {
        let wanted: Option<Vec<&str>> =
            namespace_ids.map(|ids| ids.iter().map(|id| self.resource_id(id, "namespace")).collect());
        let mut services = Vec::new();
        for kv in self.store.list_prefix(SERVICES).await? {
            let service: Service = decode(&kv)?;
            if wanted.as_ref().is_none_or(|ids| ids.contains(&service.namespace_id.as_str())) {
                services.push(service);
            }
        }
        paginate(services, |s| &s.id, max_results, next_token)
    }

    /// Deletes a service that has no instances.
    pub async fn delete_service(&self, id: &str) -> Result<()> {
        let id = self.resource_id(id, "service").to_owned();
        let key = service_key(&id);
        for _ in 0..CONFLICT_RETRIES {
            let Some(kv) = self.get(&key).await? else { return Err(DiscoveryError::ServiceNotFound { id }) };
            let service: Service = decode(&kv)?;
            if service.instance_count > 0 {
                return Err(DiscoveryError::ResourceInUse(format!(
                    "Service {id} has {} registered instance(s); deregister them first.",
                    service.instance_count
                )));
            }
            let mut txn = Txn::new()
                .when(Compare::revision(&key, kv.mod_revision))
                .then(Op::delete(&key))
                .then(Op::delete(service_name_key(&service.namespace_id, &service.name)));
            let ns_key = namespace_key(&service.namespace_id);
            if let Some(ns_kv) = self.get(&ns_key).await? {
                let mut namespace: Namespace = decode(&ns_kv)?;
                namespace.service_count = namespace.service_count.saturating_sub(1);
                txn =
                    txn.when(Compare::revision(&ns_key, ns_kv.mod_revision)).then(Op::put(&ns_key, encode(&namespace)));
            }
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(());
            }
        }
        Err(DiscoveryError::InvalidInput(format!("Service {id} is being changed by other requests; retry.")))
    }

    /// The service and the store revision of its instance set, which changes with every
    /// registration and deregistration.
    pub(crate) async fn service_with_revision(&self, id: &str) -> Result<(Service, u64)> {
        match self.get(&service_key(id)).await? {
            Some(kv) => Ok((decode(&kv)?, kv.mod_revision)),
            None => Err(DiscoveryError::ServiceNotFound { id: id.to_owned() }),
        }
    }

    pub(crate) async fn tag_service(&self, id: &str, update: impl Fn(&mut Vec<Tag>)) -> Result<bool> {
        let key = service_key(id);
        for _ in 0..CONFLICT_RETRIES {
            let Some(kv) = self.get(&key).await? else { return Ok(false) };
            let mut service: Service = decode(&kv)?;
            update(&mut service.tags);
            let txn = Txn::new().when(Compare::revision(&key, kv.mod_revision)).then(Op::put(&key, encode(&service)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(true);
            }
        }
        Err(DiscoveryError::InvalidInput(format!("Service {id} is being changed by other requests; retry.")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: RecordType) -> DnsRecord {
        DnsRecord { kind, ttl: 60 }
    }

    #[test]
    fn dns_configs_follow_route53s_rules() {
        let ok = check_dns_config(None, vec![rec(RecordType::A), rec(RecordType::Srv)]).unwrap();
        assert_eq!(ok.routing_policy, RoutingPolicy::Multivalue);
        assert!(check_dns_config(None, vec![]).is_err());
        assert!(check_dns_config(None, vec![rec(RecordType::A), rec(RecordType::A)]).is_err());
        assert!(check_dns_config(None, vec![rec(RecordType::Cname)]).is_err());
        assert!(check_dns_config(Some(RoutingPolicy::Weighted), vec![rec(RecordType::Cname)]).is_ok());
        assert!(
            check_dns_config(Some(RoutingPolicy::Weighted), vec![rec(RecordType::Cname), rec(RecordType::A)]).is_err()
        );
    }
}
