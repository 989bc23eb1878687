//! VPC networking as the control plane records it: VPCs, subnets, security groups, network
//! interfaces (ENIs) and the address management (IPAM) behind them. The EC2 API in `api::ec2`
//! and RunTask speak to this module; the data plane (`crates/net`, driven by the agent) watches
//! the records and makes them real on the host. Nothing here touches the kernel.
//!
//! # Store layout
//! Every record is JSON under `ec2/` ([`keys`]), so one watch on `ec2/` sees every change:
//!
//! | key | record |
//! |---|---|
//! | `ec2/vpcs/<vpc-id>` | [`Vpc`] |
//! | `ec2/subnets/<subnet-id>` | [`Subnet`] |
//! | `ec2/sgs/<sg-id>` | [`SecurityGroup`], rules included |
//! | `ec2/enis/<eni-id>` | [`NetworkInterface`] |
//! | `ec2/ips/<subnet-id>/<ip>` | [`AddressLease`]: the private IP belongs to that ENI |
//! | `ec2/public-ips/<ip>` | [`AddressLease`]: the public IP belongs to that ENI |
//! | `ec2/attachments/<attachment>` | [`AddressLease`]-shaped index: the ENI of e.g. a task ARN |
//! | `ec2/vpc-index` | every VPC's CIDR, for the non-overlap check |
//! | `ec2/default-network` | marker: the default VPC was created once |
//! | `ec2/virtual-services/<vpc-id>/<owner>` | one owner's virtual services in the VPC (`virtual_services.rs`) |
//!
//! # Invariants and how they are kept
//! Every method is one request's worth of work: read, decide, compare-and-write, retry only
//! its own conflicts. The invariants hold across processes because each is one compare:
//! - **No address is leased twice.** An ENI and its leases are written in one transaction that
//!   requires the lease keys to be absent.
//! - **VPC CIDRs never overlap** (Flotilla routes every VPC on one host). Creating or deleting
//!   a VPC compares and rewrites `ec2/vpc-index`.
//! - **Nothing is deleted while something depends on it.** Adding or removing a subnet or a
//!   security group rewrites its VPC's record (unchanged, if nothing else changed) and a delete
//!   compares that record, so a delete cannot miss a concurrent create. ENIs rewrite their
//!   subnet (its `availableIpAddressCount`), which subnet and security-group deletes compare;
//!   ENI creation and rules naming another group compare that group's record, so a group
//!   deleted meanwhile fails them.
//!
//! Inside one process, allocations in one subnet queue on a mutex rather than conflict.
//!
//! # Public IPs
//! Tasks with `assignPublicIp=ENABLED` get an address from the public pool, a [`Control`]
//! setting ([`Control::with_public_ip_pool`]), by default `198.18.0.0/24` (RFC 2544 benchmark
//! space: routable on the host, never on the internet). The pool's first and last addresses
//! are not handed out.

mod awsvpc;
mod cidr;
mod elb;
mod error;
mod interfaces;
pub mod keys;
mod security_groups;
mod subnets;
mod tags;
#[cfg(test)]
mod tests;
mod virtual_services;
mod vpcs;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use flotilla_store::{KeyValue, Revision, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Control;

pub use awsvpc::AwsvpcPlacement;
pub use cidr::{CidrError, Ipv4Cidr};
pub use elb::ElbVpcs;
pub use error::{NetworkError, NetworkResource};
pub use interfaces::{AddressLease, GroupRef, NetworkInterface, NetworkInterfaceSpec};
pub use security_groups::{
    GroupSelector, IpProtocol, RuleChange, RuleDirection, RulePeer, RulePeerSpec, RuleSpec, SecurityGroup,
    SecurityGroupRule,
};
pub use subnets::{CreateSubnetInput, RESERVED_ADDRESSES, Subnet};
pub use tags::TagRemoval;
pub use vpcs::{CreateVpcInput, DEFAULT_VPC_CIDR, Vpc, vni_of};

/// The public IP pool unless configured otherwise.
pub const DEFAULT_PUBLIC_IP_POOL: &str = "198.18.0.0/24";
/// Availability zones per region: `<region>a`, `<region>b`, `<region>c`.
pub const ZONE_LETTERS: [char; 3] = ['a', 'b', 'c'];

/// Networking resources carry the one [`Tag`] of every service.
pub use flotilla_types::Tag;

/// One Describe filter: a resource matches when any of its values for `name` matches any of
/// `values`, where `*` and `?` are wildcards. Several filters must all match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceFilter {
    pub name: String,
    pub values: Vec<String>,
}

/// A resource the EC2 Describe operations list: what its filters look at, and where it lives.
trait Filterable: DeserializeOwned {
    const RESOURCE: NetworkResource;
    /// The store prefix every record of this kind is under.
    const PREFIX: &'static str;
    /// The filter names [`Filterable::filter_values`] answers (besides the tag filters).
    const FILTERS: &'static [&'static str];

    /// The values of this resource for filter `name`; `None` if the filter does not apply to
    /// this kind of resource.
    fn filter_values(&self, name: &str) -> Option<Vec<String>>;
    fn tags(&self) -> &[Tag];
    fn id(&self) -> &str;
}

/// The resources of `all` that `wanted` picks and that pass every filter, in order.
fn select<T: Filterable>(
    all: Vec<T>,
    wanted: impl Fn(&T) -> bool,
    filters: &[ResourceFilter],
) -> Result<Vec<T>, NetworkError> {
    let mut out = Vec::new();
    for item in all {
        if wanted(&item) && matches_filters(&item, filters)? {
            out.push(item);
        }
    }
    Ok(out)
}

/// Refuses filters `T` does not have, whether or not there is anything to filter.
fn check_filters<T: Filterable>(filters: &[ResourceFilter]) -> Result<(), NetworkError> {
    for filter in filters {
        let tag = filter.name.starts_with("tag:") || filter.name == "tag-key" || filter.name == "tag-value";
        if !tag && !T::FILTERS.contains(&filter.name.as_str()) {
            return Err(NetworkError::invalid_value(format!("The filter '{}' is invalid", filter.name)));
        }
    }
    Ok(())
}

fn matches_filters<T: Filterable>(item: &T, filters: &[ResourceFilter]) -> Result<bool, NetworkError> {
    for filter in filters {
        let values = if let Some(key) = filter.name.strip_prefix("tag:") {
            item.tags().iter().filter(|t| t.key == key).map(|t| t.value.clone()).collect()
        } else if filter.name == "tag-key" {
            item.tags().iter().map(|t| t.key.clone()).collect()
        } else if filter.name == "tag-value" {
            item.tags().iter().map(|t| t.value.clone()).collect()
        } else {
            item.filter_values(&filter.name)
                .ok_or_else(|| NetworkError::invalid_value(format!("The filter '{}' is invalid", filter.name)))?
        };
        if !values.iter().any(|v| filter.values.iter().any(|pattern| glob(pattern, v))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// EC2 filter wildcards: `*` any run of characters, `?` one character, `\` escapes.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some('?') => {
                pi += 1;
                ti += 1;
                continue;
            }
            Some('\\') if p.get(pi + 1) == Some(&t[ti]) => {
                pi += 2;
                ti += 1;
                continue;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((bp, bt)) => {
                pi = bp;
                ti = bt + 1;
                backtrack = Some((bp, bt + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A new id such as `vpc-0a1b2c3d4e5f60718`: the prefix and 17 random hex digits, as AWS.
fn new_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &hex[..17])
}

/// Whether `id` has the shape of an id of `resource` (8 or 17 hex digits after the prefix).
fn well_formed_id(resource: NetworkResource, id: &str) -> bool {
    id.strip_prefix(resource.id_prefix())
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_id(resource: NetworkResource, id: &str) -> Result<(), NetworkError> {
    if well_formed_id(resource, id) { Ok(()) } else { Err(NetworkError::MalformedId { resource, id: id.to_owned() }) }
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, NetworkError> {
    serde_json::from_slice(&kv.value).map_err(|source| NetworkError::CorruptRecord { key: kv.key.clone(), source })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("network records always serialise")
}

async fn load<T: DeserializeOwned>(store: &dyn Store, key: &str) -> Result<Option<(T, Revision)>, NetworkError> {
    match store.get(key).await? {
        Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
        None => Ok(None),
    }
}

/// [`load`], possibly stale (`Store::get_stale`): for lookups whose revision feeds no compare.
async fn load_stale<T: DeserializeOwned>(store: &dyn Store, key: &str) -> Result<Option<T>, NetworkError> {
    store.get_stale(key).await?.map(|kv| decode(&kv)).transpose()
}

/// Every record under `prefix` with its key and revision.
async fn list<T: DeserializeOwned>(store: &dyn Store, prefix: &str) -> Result<Vec<(T, Revision)>, NetworkError> {
    store.list_prefix(prefix).await?.iter().map(|kv| Ok((decode(kv)?, kv.mod_revision))).collect()
}

/// Networking settings and in-process queues of a [`Control`].
pub(crate) struct NetworkState {
    public_ip_pool: Ipv4Cidr,
    /// Allocations in one subnet queue here instead of conflicting in the store.
    subnet_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Public-address allocations queue here for the same reason.
    public_lock: tokio::sync::Mutex<()>,
    /// Interface deletions waiting for their subnet's turn, by subnet: whoever gets the turn
    /// deletes every one queued by then in one transaction.
    releases: Mutex<HashMap<String, Vec<interfaces::Release>>>,
}

impl Default for NetworkState {
    fn default() -> NetworkState {
        NetworkState {
            public_ip_pool: DEFAULT_PUBLIC_IP_POOL.parse().expect("the default pool is a CIDR"),
            subnet_locks: Mutex::new(HashMap::new()),
            public_lock: tokio::sync::Mutex::new(()),
            releases: Mutex::new(HashMap::new()),
        }
    }
}

impl Control {
    /// Public IPs for tasks with `assignPublicIp=ENABLED` come from `pool` (default
    /// [`DEFAULT_PUBLIC_IP_POOL`]). Addresses already leased outside a new pool stay leased
    /// until their interfaces are deleted.
    pub fn with_public_ip_pool(mut self, pool: Ipv4Cidr) -> Control {
        self.network.public_ip_pool = pool;
        self
    }

    pub fn public_ip_pool(&self) -> Ipv4Cidr {
        self.network.public_ip_pool
    }

    /// This region's availability zones.
    pub fn availability_zones(&self) -> Vec<String> {
        ZONE_LETTERS.iter().map(|l| format!("{}{l}", self.identity.region)).collect()
    }

    /// The DNS name EC2 gives a private address: `ip-10-0-1-23.ec2.internal` in us-east-1,
    /// `ip-10-0-1-23.<region>.compute.internal` elsewhere.
    pub fn private_dns_name(&self, ip: Ipv4Addr) -> String {
        let host = ip.to_string().replace('.', "-");
        if self.identity.region == "us-east-1" {
            format!("ip-{host}.ec2.internal")
        } else {
            format!("ip-{host}.{}.compute.internal", self.identity.region)
        }
    }

    /// Every `T`, once filters `T` does not have and ids that are malformed or name nothing
    /// have been refused (in that order, as EC2 checks them): what each Describe starts from.
    async fn describable<T: Filterable>(
        &self,
        ids: &[String],
        filters: &[ResourceFilter],
    ) -> Result<Vec<T>, NetworkError> {
        check_filters::<T>(filters)?;
        for id in ids {
            check_id(T::RESOURCE, id)?;
        }
        let all: Vec<T> = list(self.store.as_ref(), T::PREFIX).await?.into_iter().map(|(r, _)| r).collect();
        if let Some(missing) = ids.iter().find(|id| !all.iter().any(|r| r.id() == id.as_str())) {
            return Err(NetworkError::not_found(T::RESOURCE, missing.as_str()));
        }
        Ok(all)
    }

    /// A Describe: the `T`s named by `ids` (all of them if `ids` is empty) that pass every filter.
    async fn describe<T: Filterable>(
        &self,
        ids: &[String],
        filters: &[ResourceFilter],
    ) -> Result<Vec<T>, NetworkError> {
        let all = self.describable::<T>(ids, filters).await?;
        select(all, |r| ids.is_empty() || ids.iter().any(|id| id == r.id()), filters)
    }

    fn subnet_lock(&self, subnet_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.network.subnet_locks.lock().expect("subnet lock table poisoned");
        locks.entry(subnet_id.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn filter_wildcards() {
        assert!(glob("10.0.*", "10.0.1.0/24"));
        assert!(glob("*", ""));
        assert!(glob("web-?", "web-1"));
        assert!(!glob("web-?", "web-12"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("x\\*", "x*"));
        assert!(!glob("x\\*", "xy"));
    }

    #[test]
    fn ids_look_like_aws_ids() {
        let id = new_id("vpc");
        assert_eq!(id.len(), 4 + 17);
        assert!(well_formed_id(NetworkResource::Vpc, &id));
        assert!(well_formed_id(NetworkResource::Vpc, "vpc-12345678"));
        assert!(!well_formed_id(NetworkResource::Vpc, "vpc-xyz"));
        assert!(!well_formed_id(NetworkResource::Subnet, &id));
    }
}
