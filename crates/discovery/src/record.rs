//! Cloud Map's resources as stored, and where they live in the store.
//!
//! Key layout (all under `servicediscovery/`):
//! - `namespaces/<ns-id>`: a [`Namespace`] that exists (its create operation succeeded).
//! - `namespace-names/<name>`: a [`NameClaim`]; taken when the create is *requested*, so two
//!   concurrent creates of one name cannot both be accepted.
//! - `services/<srv-id>` and `service-names/<ns-id>/<name>`: a [`Service`] and its claim.
//! - `instances/<srv-id>/<instance-id>`: an [`Instance`].
//! - `operations/<op-id>`: an [`Operation`]; `pending/<op-id>` marks it unfinished.
//!
//! Counters shown on the wire (`ServiceCount`, `InstanceCount`) are kept in the parent record and
//! written in the same transaction as the child, so compare-and-write on the parent also guards
//! "delete only when empty" against a concurrent create.

use std::collections::BTreeMap;

use flotilla_store::KeyValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{DiscoveryError, Result};

pub const PREFIX: &str = "servicediscovery/";
pub(crate) const NAMESPACES: &str = "servicediscovery/namespaces/";
pub(crate) const SERVICES: &str = "servicediscovery/services/";
pub(crate) const INSTANCES: &str = "servicediscovery/instances/";
pub(crate) const OPERATIONS: &str = "servicediscovery/operations/";
pub(crate) const PENDING: &str = "servicediscovery/pending/";

pub(crate) fn namespace_key(id: &str) -> String {
    format!("{NAMESPACES}{id}")
}

/// Names are DNS names: one namespace per name whatever its case.
pub(crate) fn namespace_name_key(name: &str) -> String {
    format!("servicediscovery/namespace-names/{}", name.to_ascii_lowercase())
}

pub(crate) fn service_key(id: &str) -> String {
    format!("{SERVICES}{id}")
}

pub(crate) fn service_name_key(namespace_id: &str, name: &str) -> String {
    format!("servicediscovery/service-names/{namespace_id}/{}", name.to_ascii_lowercase())
}

pub(crate) fn instances_prefix(service_id: &str) -> String {
    format!("{INSTANCES}{service_id}/")
}

pub(crate) fn instance_key(service_id: &str, instance_id: &str) -> String {
    format!("{INSTANCES}{service_id}/{instance_id}")
}

pub(crate) fn operation_key(id: &str) -> String {
    format!("{OPERATIONS}{id}")
}

pub(crate) fn pending_key(id: &str) -> String {
    format!("{PENDING}{id}")
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|source| DiscoveryError::CorruptRecord { key: kv.key.clone(), source })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise")
}

/// `<prefix><n lowercase letters and digits>`, the shape of Cloud Map's ids.
pub(crate) fn new_id(prefix: &str, n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bits: u128 = rand::random();
    let mut out = String::with_capacity(prefix.len() + n);
    out.push_str(prefix);
    for i in 0..n {
        if i > 0 && i % 25 == 0 {
            bits = rand::random();
        }
        out.push(ALPHABET[(bits & 31) as usize] as char);
        bits >>= 5;
    }
    out
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub use flotilla_types::Tag;
pub(crate) use flotilla_types::tag::merge as merge_tags;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NamespaceType {
    DnsPrivate,
}

impl NamespaceType {
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceType::DnsPrivate => "DNS_PRIVATE",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub id: String,
    pub arn: String,
    pub name: String,
    pub kind: NamespaceType,
    /// The VPC whose resolver answers for this namespace.
    pub vpc: String,
    pub description: Option<String>,
    pub creator_request_id: Option<String>,
    pub created_millis: i64,
    /// The TTL of the zone's SOA record, which also bounds how long resolvers cache NXDOMAIN.
    pub soa_ttl: u32,
    pub hosted_zone_id: String,
    pub service_count: u32,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// Who holds a namespace name, from the moment its creation is requested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NameClaim {
    pub id: String,
    pub creator_request_id: Option<String>,
    /// The operation creating the namespace (namespaces only).
    pub operation_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoutingPolicy {
    Multivalue,
    Weighted,
}

impl RoutingPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingPolicy::Multivalue => "MULTIVALUE",
            RoutingPolicy::Weighted => "WEIGHTED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    A,
    Aaaa,
    Srv,
    Cname,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Srv => "SRV",
            RecordType::Cname => "CNAME",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub kind: RecordType,
    pub ttl: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub routing_policy: RoutingPolicy,
    pub records: Vec<DnsRecord>,
}

impl DnsConfig {
    pub fn ttl(&self, kind: RecordType) -> Option<u32> {
        self.records.iter().find(|r| r.kind == kind).map(|r| r.ttl)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceType {
    Http,
    DnsHttp,
    Dns,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Http => "HTTP",
            ServiceType::DnsHttp => "DNS_HTTP",
            ServiceType::Dns => "DNS",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub arn: String,
    pub name: String,
    pub namespace_id: String,
    pub description: Option<String>,
    pub creator_request_id: Option<String>,
    pub created_millis: i64,
    pub kind: ServiceType,
    pub dns: Option<DnsConfig>,
    /// `Some` when the service has a custom health check (`HealthCheckCustomConfig`); the value
    /// is the deprecated `FailureThreshold`, echoed back as given.
    pub custom_health: Option<Option<u32>>,
    pub instance_count: u32,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// An instance's health is the one health of every service (stored as `HEALTHY`, ...).
pub use flotilla_types::task::HealthStatus;

/// Attribute names with a meaning to Cloud Map's DNS records.
pub const ATTR_IPV4: &str = "AWS_INSTANCE_IPV4";
pub const ATTR_IPV6: &str = "AWS_INSTANCE_IPV6";
pub const ATTR_PORT: &str = "AWS_INSTANCE_PORT";
pub const ATTR_CNAME: &str = "AWS_INSTANCE_CNAME";
pub const ATTR_ALIAS: &str = "AWS_ALIAS_DNS_NAME";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub service_id: String,
    pub attributes: BTreeMap<String, String>,
    pub creator_request_id: Option<String>,
    /// Custom health as last reported; only meaningful when the service has a custom check.
    pub health: HealthStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    CreateNamespace,
    DeleteNamespace,
    RegisterInstance,
    DeregisterInstance,
}

impl OperationType {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::CreateNamespace => "CREATE_NAMESPACE",
            OperationType::DeleteNamespace => "DELETE_NAMESPACE",
            OperationType::RegisterInstance => "REGISTER_INSTANCE",
            OperationType::DeregisterInstance => "DEREGISTER_INSTANCE",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationStatus {
    Submitted,
    Pending,
    Success,
    Fail,
}

impl OperationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Submitted => "SUBMITTED",
            OperationStatus::Pending => "PENDING",
            OperationStatus::Success => "SUCCESS",
            OperationStatus::Fail => "FAIL",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, OperationStatus::Success | OperationStatus::Fail)
    }

    /// The only moves an operation makes: SUBMITTED → PENDING → SUCCESS | FAIL.
    pub fn can_become(self, next: OperationStatus) -> bool {
        use OperationStatus::*;
        matches!((self, next), (Submitted, Pending) | (Pending, Success) | (Pending, Fail))
    }
}

/// What an operation does when it runs; the resource it creates is fixed when it is requested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Work {
    CreateNamespace(Namespace),
    DeleteNamespace { namespace_id: String },
    RegisterInstance(Instance),
    DeregisterInstance { service_id: String, instance_id: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub kind: OperationType,
    pub status: OperationStatus,
    pub namespace_id: Option<String>,
    pub service_id: Option<String>,
    pub instance_id: Option<String>,
    pub created_millis: i64,
    pub updated_millis: i64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub(crate) work: Work,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_cloud_maps_shape() {
        let id = new_id("ns-", 16);
        assert_eq!(id.len(), 19);
        assert!(id[3..].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{id}");
        assert_ne!(new_id("ns-", 16), id);
        assert_eq!(new_id("", 40).len(), 40);
    }

    #[test]
    fn operations_only_move_forward() {
        use OperationStatus::*;
        assert!(Submitted.can_become(Pending));
        assert!(Pending.can_become(Success) && Pending.can_become(Fail));
        assert!(!Submitted.can_become(Success) && !Success.can_become(Pending) && !Fail.can_become(Success));
    }

    #[test]
    fn tags_merge_by_key() {
        let mut tags = vec![Tag { key: "a".into(), value: "1".into() }];
        merge_tags(
            &mut tags,
            vec![Tag { key: "a".into(), value: "2".into() }, Tag { key: "b".into(), value: "3".into() }],
        );
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].value, "2");
    }
}
