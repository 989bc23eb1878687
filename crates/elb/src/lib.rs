//! Elastic Load Balancing v2, the control plane: load balancers, listeners, rules, target
//! groups and their targets, kept under `elbv2/` in the store. The data plane (`flotilla-lb`,
//! run by each agent) gets them as one [`LbSnapshot`] and reports what it sees of targets
//! back ([`Elb::record_targets`]).
//!
//! **Architecture Invariant:** no HTTP and no AWS wire format here; `api` maps [`ElbError`] to
//! ELB's codes.

use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;

use flotilla_acm::Acm;
use flotilla_host::lb::{LbSnapshot, TargetReport};
use flotilla_store::Store;
use flotilla_types::Identity;

#[derive(Debug, thiserror::Error)]
pub enum ElbError {
    #[error("{0}")]
    Validation(String),
    /// A failure on our side (the store); the request may be retried.
    #[error("{0}")]
    Internal(String),
}

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
    #[allow(dead_code)]
    store: Arc<dyn Store>,
    #[allow(dead_code)]
    identity: Identity,
    #[allow(dead_code)]
    acm: Arc<Acm>,
    #[allow(dead_code)]
    vpcs: Arc<dyn Vpcs>,
    #[allow(dead_code)]
    probe: Option<PortProbe>,
}

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

    /// Everything the data plane serves.
    pub async fn snapshot(&self) -> Result<LbSnapshot, ElbError> {
        Ok(LbSnapshot::default())
    }

    /// Records the data plane's observations.
    pub async fn record_targets(&self, _reports: Vec<TargetReport>) -> Result<(), ElbError> {
        Ok(())
    }
}
