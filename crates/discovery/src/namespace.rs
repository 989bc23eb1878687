//! Namespaces: private DNS zones, each attached to one VPC.

use flotilla_store::{Compare, Op, Txn, TxnOutcome};

use crate::error::{DiscoveryError, Result};
use crate::operation::{queue_ops, submitted};
use crate::record::{
    NAMESPACES, NameClaim, Namespace, NamespaceType, OperationType, Tag, Work, decode, encode, namespace_key,
    namespace_name_key, new_id, now_millis,
};
use crate::{CONFLICT_RETRIES, Discovery, Page, paginate};

/// The SOA TTL a private DNS namespace gets when the request names none.
const DEFAULT_SOA_TTL: u32 = 15;

#[derive(Clone, Debug, Default)]
pub struct NewPrivateDnsNamespace {
    pub name: String,
    /// The VPC whose resolver will answer for the namespace. Only its syntax is checked here:
    /// whether it exists is for the caller, which knows the VPCs.
    pub vpc: String,
    pub description: Option<String>,
    pub creator_request_id: Option<String>,
    pub soa_ttl: Option<u32>,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameMatch {
    Eq(String),
    BeginsWith(String),
}

impl NameMatch {
    fn matches(&self, name: &str) -> bool {
        match self {
            NameMatch::Eq(n) => n.eq_ignore_ascii_case(name),
            NameMatch::BeginsWith(p) => name.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct NamespaceQuery {
    /// Only namespaces of these types; `None` for all.
    pub types: Option<Vec<NamespaceType>>,
    pub name: Option<NameMatch>,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
}

/// A DNS name without its trailing dot: labels of letters, digits, `-` and `_`, at most 63
/// characters each and 253 in all.
pub(crate) fn check_dns_name(what: &str, name: &str, max: usize) -> Result<String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let invalid = |why: &str| DiscoveryError::InvalidInput(format!("{what} '{name}' is not a valid DNS name: {why}."));
    if trimmed.is_empty() || trimmed.len() > max {
        return Err(invalid(&format!("it must have 1 to {max} characters")));
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("each label must have 1 to 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(invalid("labels may hold only letters, digits, '-' and '_'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label cannot begin or end with '-'"));
        }
    }
    Ok(trimmed.to_owned())
}

fn check_vpc(vpc: &str) -> Result<()> {
    let ok = vpc.strip_prefix("vpc-").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 32 && rest.chars().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    });
    if ok { Ok(()) } else { Err(DiscoveryError::InvalidInput(format!("Vpc '{vpc}' is not a VPC id (vpc-...)."))) }
}

impl Discovery {
    /// `text` as a bare id: this installation's ARN of the given kind loses its prefix; anything
    /// else is taken as an id (and so names nothing if it is someone else's ARN).
    pub(crate) fn resource_id<'a>(&self, text: &'a str, kind: &str) -> &'a str {
        let prefix = self.identity.servicediscovery(kind, "");
        text.strip_prefix(prefix.as_str()).unwrap_or(text)
    }

    /// Requests a private DNS namespace; it exists once the returned operation succeeds.
    pub async fn create_private_dns_namespace(&self, req: NewPrivateDnsNamespace) -> Result<String> {
        let name = check_dns_name("Name", &req.name, 253)?;
        check_vpc(&req.vpc)?;
        let id = new_id("ns-", 16);
        let now = now_millis();
        let namespace = Namespace {
            arn: self.identity.servicediscovery_namespace(&id),
            id: id.clone(),
            name: name.clone(),
            kind: NamespaceType::DnsPrivate,
            vpc: req.vpc,
            description: req.description,
            creator_request_id: req.creator_request_id.clone(),
            created_millis: now,
            soa_ttl: req.soa_ttl.unwrap_or(DEFAULT_SOA_TTL),
            hosted_zone_id: format!("Z{}", new_id("", 20).to_ascii_uppercase()),
            service_count: 0,
            tags: req.tags,
        };
        let operation =
            submitted(OperationType::CreateNamespace, Work::CreateNamespace(namespace), Some(id.clone()), None, None);
        let claim_key = namespace_name_key(&name);
        let claim = NameClaim {
            id: id.clone(),
            creator_request_id: req.creator_request_id.clone(),
            operation_id: Some(operation.id.clone()),
        };
        for _ in 0..CONFLICT_RETRIES {
            if let Some(kv) = self.get(&claim_key).await? {
                let existing: NameClaim = decode(&kv)?;
                // A retry of the same request gets the same operation back.
                if existing.creator_request_id.is_some()
                    && existing.creator_request_id == req.creator_request_id
                    && let Some(op) = existing.operation_id
                {
                    return Ok(op);
                }
                return Err(DiscoveryError::NamespaceAlreadyExists {
                    name,
                    namespace_id: existing.id,
                    creator_request_id: existing.creator_request_id,
                });
            }
            let mut txn = Txn::new().when(Compare::absent(&claim_key)).then(Op::put(&claim_key, encode(&claim)));
            txn.ops.extend(queue_ops(&operation));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                self.work.notify_one();
                return Ok(operation.id);
            }
        }
        Err(DiscoveryError::InvalidInput(format!("Namespace {name} is being changed by other requests; retry.")))
    }

    pub async fn namespace(&self, id: &str) -> Result<Namespace> {
        let id = self.resource_id(id, "namespace");
        match self.get(&namespace_key(id)).await? {
            Some(kv) => decode(&kv),
            None => Err(DiscoveryError::NamespaceNotFound { id: id.to_owned() }),
        }
    }

    /// The namespace called `name` (any case), if it exists.
    pub async fn namespace_named(&self, name: &str) -> Result<Option<Namespace>> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let Some(kv) = self.get(&namespace_name_key(name)).await? else { return Ok(None) };
        let claim: NameClaim = decode(&kv)?;
        match self.get(&namespace_key(&claim.id)).await? {
            Some(kv) => Ok(Some(decode(&kv)?)),
            None => Ok(None),
        }
    }

    pub async fn list_namespaces(&self, query: &NamespaceQuery) -> Result<Page<Namespace>> {
        let mut namespaces = Vec::new();
        for kv in self.store.list_prefix(NAMESPACES).await? {
            let ns: Namespace = decode(&kv)?;
            let type_ok = query.types.as_ref().is_none_or(|types| types.contains(&ns.kind));
            let name_ok = query.name.as_ref().is_none_or(|m| m.matches(&ns.name));
            if type_ok && name_ok {
                namespaces.push(ns);
            }
        }
        paginate(namespaces, |ns| &ns.id, query.max_results, query.next_token.as_deref())
    }

    /// Requests the namespace's deletion; refused while it has services.
    pub async fn delete_namespace(&self, id: &str) -> Result<String> {
        let namespace = self.namespace(id).await?;
        if namespace.service_count > 0 {
            return Err(DiscoveryError::ResourceInUse(format!(
                "Namespace {} has {} service(s); delete them first.",
                namespace.id, namespace.service_count
            )));
        }
        for (_, op) in self.pending_operations().await? {
            if op.kind == OperationType::DeleteNamespace && op.namespace_id.as_deref() == Some(&namespace.id) {
                return Err(DiscoveryError::DuplicateRequest {
                    operation_id: op.id,
                    message: format!("Namespace {} is already being deleted", namespace.id),
                });
            }
        }
        let work = Work::DeleteNamespace { namespace_id: namespace.id.clone() };
        let operation = submitted(OperationType::DeleteNamespace, work, Some(namespace.id), None, None);
        self.queue(operation).await
    }

    pub(crate) async fn tag_namespace(&self, id: &str, update: impl Fn(&mut Vec<Tag>)) -> Result<bool> {
        let key = namespace_key(id);
        for _ in 0..CONFLICT_RETRIES {
            let Some(kv) = self.get(&key).await? else { return Ok(false) };
            let mut ns: Namespace = decode(&kv)?;
            update(&mut ns.tags);
            let txn = Txn::new().when(Compare::revision(&key, kv.mod_revision)).then(Op::put(&key, encode(&ns)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(true);
            }
        }
        Err(DiscoveryError::InvalidInput(format!("Namespace {id} is being changed by other requests; retry.")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_checked_and_normalised() {
        assert_eq!(check_dns_name("Name", "example.local.", 253).unwrap(), "example.local");
        assert_eq!(check_dns_name("Name", "_http._tcp", 127).unwrap(), "_http._tcp");
        for bad in ["", ".", "a..b", "-a.b", "a b", &"x".repeat(64)] {
            assert!(check_dns_name("Name", bad, 253).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vpc_ids_are_checked_syntactically() {
        assert!(check_vpc("vpc-12345678").is_ok());
        assert!(check_vpc("vpc-0a1b2c3d4e5f67890").is_ok());
        for bad in ["vpc-", "12345678", "vpc-ABC", "subnet-123"] {
            assert!(check_vpc(bad).is_err(), "{bad}");
        }
    }
}
