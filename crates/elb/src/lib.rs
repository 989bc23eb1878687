//! Elastic Load Balancing v2, the control plane: load balancers, listeners, rules, target
//! groups and their targets, kept under `elbv2/` in the store. The data plane (`flotilla-lb`,
//! run by each agent) gets them as one [`LbSnapshot`] and reports what it sees of targets
//! back ([`Elb::record_targets`]).
//!
//! Store layout (`record.rs`): `elbv2/loadbalancers/<name>` holds a load balancer with its
//! listeners and their rules, so that a port, a priority or a listener's rules are checked and
//! changed in one compare-and-write; `elbv2/targetgroups/<name>` a target group with the
//! listeners and rules that forward to it (so DeleteTargetGroup and "one load balancer per
//! group" are decided on one record); `elbv2/targets/<group id>/<ip>:<port>` one registered
//! target, which the data plane's reports update without touching the group;
//! `elbv2/ports/<port>` the internet-facing listener that holds a host port.
//!
//! **Architecture Invariant:** no HTTP and no AWS wire format here; `api` maps [`ElbError`] to
//! ELB's codes.

mod action;
mod attributes;
mod listener;
mod load_balancer;
mod record;
mod rule;
mod snapshot;
mod tags;
mod target;
mod target_group;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;

use flotilla_acm::Acm;
use flotilla_store::{KeyValue, Store, StoreError, Txn, TxnOutcome};
use flotilla_types::Identity;
use flotilla_types::page::{self, Order, Page, PageError};

pub use action::{ActionInput, FixedResponseInput, ForwardInput, RedirectInput, WeightInput};
pub use attributes::{Attribute, LbAttributes, TgAttributes};
/// The data plane's vocabulary, which the records here are made of.
pub use flotilla_host::lb::{
    ActionSpec, HealthCheckSpec, HealthProtocol, LbKind, LbScheme, ListenerProtocol, QueryMatch, RedirectSpec,
    RuleCondition, TargetProtocol, WeightedGroup,
};
pub use listener::protocol_name as listener_protocol_name;
pub use listener::{DEFAULT_SSL_POLICY, ListenerChange, ListenerInput};
pub use load_balancer::{LoadBalancerInput, SubnetMapping};
pub use record::{Listener, LoadBalancer, Rule, TargetGroup, TargetRecord, Verdict, Zone};
pub use rule::{ConditionInput, RuleChange, RuleInput, RuleView};
pub use target::{TargetHealth, TargetId, TargetState};
pub use target_group::{
    HealthCheckInput, TargetGroupChange, TargetGroupFilter, TargetGroupInput, health_protocol_name,
    protocol_name as target_protocol_name,
};

#[derive(Debug, thiserror::Error)]
pub enum ElbError {
    /// Bad input (ELB's `ValidationError`).
    #[error("{0}")]
    Validation(String),
    /// A failure on our side outside the store (the VPC side); the request may be retried.
    #[error("{0}")]
    Internal(String),
    #[error("One or more load balancers not found")]
    LoadBalancerNotFound { name: String },
    #[error("A load balancer with the same name '{name}' exists, but with different settings")]
    DuplicateLoadBalancerName { name: String },
    #[error("One or more target groups not found")]
    TargetGroupNotFound { name: String },
    #[error("A target group with the same name '{name}' exists, but with different settings")]
    DuplicateTargetGroupName { name: String },
    #[error("One or more listeners not found")]
    ListenerNotFound { arn: String },
    #[error("A listener already exists on this port for this load balancer '{load_balancer}'")]
    DuplicateListener { load_balancer: String, port: u16 },
    #[error("One or more rules not found")]
    RuleNotFound { arn: String },
    #[error("Priority '{priority}' is currently in use")]
    PriorityInUse { priority: u32 },
    /// The resource is referenced (`ResourceInUse`).
    #[error("{0}")]
    ResourceInUse(String),
    /// A target ELB cannot register or find (`InvalidTarget`).
    #[error("{0}")]
    InvalidTarget(String),
    #[error("Certificate '{arn}' not found")]
    CertificateNotFound { arn: String },
    /// A combination ELB does not allow (`InvalidConfigurationRequest`).
    #[error("{0}")]
    InvalidConfigurationRequest(String),
    /// An action ELB cannot take (`InvalidLoadBalancerAction`).
    #[error("{0}")]
    InvalidLoadBalancerAction(String),
    /// A listener or target group protocol the load balancer's type does not speak.
    #[error("{0}")]
    IncompatibleProtocols(String),
    #[error("{0}")]
    UnsupportedProtocol(String),
    /// A target group already forwarded to by another load balancer.
    #[error("The following target groups cannot be associated with more than one load balancer: {arn}")]
    TargetGroupAssociationLimit { arn: String },
    #[error("You've reached the limit on the number of targets per target group ({limit})")]
    TooManyTargets { limit: usize },
    #[error("You've reached the limit on the number of tags per resource ({limit})")]
    TooManyTags { limit: usize },
    #[error("Duplicate tag keys: '{key}'")]
    DuplicateTagKeys { key: String },
    /// Deletion protection, or deleting a default rule.
    #[error("{0}")]
    OperationNotPermitted(String),
    #[error("The specified subnet '{id}' does not exist")]
    SubnetNotFound { id: String },
    #[error("{0}")]
    InvalidSubnet(String),
    #[error("{0}")]
    InvalidSecurityGroup(String),
    #[error("internal store failure")]
    Store(#[from] StoreError),
    #[error("stored record {key} cannot be read")]
    Corrupt { key: String, source: serde_json::Error },
}

pub type Result<T, E = ElbError> = std::result::Result<T, E>;

/// Says whether the host can listen on a port of its load-balancer address (a port another
/// program holds is refused before a listener is recorded).
pub type PortProbe = Arc<dyn Fn(u16) -> Result<(), String> + Send + Sync>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A subnet as load balancers need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    pub id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub cidr: ipnet::Ipv4Net,
}

/// A load balancer's node in one subnet: the interface ELB makes for it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    pub subnet_id: String,
    pub private_ip: Ipv4Addr,
    pub public_ip: Option<Ipv4Addr>,
}

/// The VPC side ELB needs from the control plane (implemented by `flotilla-control`, which
/// owns VPCs and address leases): lookups to validate requests, and one interface per subnet
/// for each load balancer (described `ELB app/<name>/<id>`, as AWS does).
pub trait Vpcs: Send + Sync {
    fn subnet<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SubnetInfo>, ElbError>>;
    /// The VPC of a security group, if it exists.
    fn security_group_vpc<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<String>, ElbError>>;
    /// The VPC's `default` security group.
    fn default_security_group<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<String, ElbError>>;
    /// Whether the VPC exists.
    fn vpc_exists<'a>(&'a self, vpc_id: &'a str) -> BoxFuture<'a, Result<bool, ElbError>>;
    /// The load balancer's interface in a subnet (made once, idempotent per `owner` and
    /// subnet), with a public address from the pool when `public`. `owner` is the load
    /// balancer's ARN, `description` its `ELB app/<name>/<id>`.
    fn ensure_node<'a>(
        &'a self,
        owner: &'a str,
        description: &'a str,
        subnet_id: &'a str,
        security_groups: &'a [String],
        public: bool,
    ) -> BoxFuture<'a, Result<NodeAddress, ElbError>>;
    /// Releases every interface of `owner`. Idempotent.
    fn release_nodes<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<(), ElbError>>;
}

pub struct Elb {
    store: Arc<dyn Store>,
    identity: Identity,
    acm: Arc<Acm>,
    vpcs: Arc<dyn Vpcs>,
    probe: Option<PortProbe>,
}

/// How many times a request re-reads and retries after losing a compare-and-write race.
const CONFLICT_RETRIES: usize = 20;

impl Elb {
    /// `probe`: checks ports of the host's load-balancer address before an internet-facing
    /// listener is recorded (`None`: no host address, nothing to check).
    pub fn new(
        store: Arc<dyn Store>,
        identity: Identity,
        acm: Arc<Acm>,
        vpcs: Arc<dyn Vpcs>,
        probe: Option<PortProbe>,
    ) -> Elb {
        Elb { store, identity, acm, vpcs, probe }
    }

    pub fn region(&self) -> &str {
        &self.identity.region
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    async fn list<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(T, u64)>> {
        let mut out = Vec::new();
        for kv in self.store.list_prefix(prefix).await? {
            out.push((decode(&kv)?, kv.mod_revision));
        }
        Ok(out)
    }

    /// Commits `txn`; `false` when a compare failed (the caller re-reads and retries).
    async fn commit(&self, txn: Txn) -> Result<bool> {
        Ok(matches!(self.store.txn(txn).await?, TxnOutcome::Committed(_)))
    }
}

/// The refusal when a request kept losing compare-and-write races.
fn busy(what: &str) -> ElbError {
    ElbError::Internal(format!("{what} is being changed by other requests; retry."))
}

pub(crate) fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|source| ElbError::Corrupt { key: kv.key.clone(), source })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("ELB records always serialise")
}

/// ELB's resource ids: 16 hex digits.
fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// ELB's page size: `PageSize` 1 to 400, 400 when not given.
const MAX_PAGE: usize = 400;

/// Pages `items` by `key` (unique) the way every Describe operation here does (`Marker`,
/// `PageSize`).
fn paginate<T>(items: Vec<T>, key: impl Fn(&T) -> String, size: Option<i64>, marker: Option<&str>) -> Result<Page<T>> {
    let refused = |e| match e {
        PageError::Size { got, max } => ElbError::Validation(format!("Page size '{got}' must be between 1 and {max}")),
        PageError::Token => ElbError::Validation("The marker is not one this server issued".into()),
    };
    let size = page::page_size(size, MAX_PAGE, MAX_PAGE).map_err(refused)?;
    let keyed = items.into_iter().map(|i| (key(&i), i)).collect();
    page::paginate(keyed, Order::Ascending, size, marker).map_err(refused)
}
