//! Subnets: CreateSubnet, DescribeSubnets, DeleteSubnet.

use std::net::Ipv4Addr;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};

use super::keys;
use super::tags::validate_tags;
use super::vpcs::Vpc;
use super::{
    Filterable, Ipv4Cidr, NetworkError, NetworkResource, ResourceFilter, Tag, check_id, encode, list, load, load_stale,
    new_id,
};
use crate::Control;

/// Addresses of every subnet that no interface gets: the network address, the router (+1),
/// the DNS server (+2), one reserved for future use (+3), and the broadcast address.
pub const RESERVED_ADDRESSES: u64 = 5;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub cidr: Ipv4Cidr,
    pub availability_zone: String,
    pub default_for_az: bool,
    pub map_public_ip_on_launch: bool,
    /// Kept current by every allocation and release, which also serialises them against
    /// DeleteSubnet.
    pub available_ip_address_count: u64,
    /// Where the next address search starts (an offset into the block), so that a released
    /// address is not handed out again at once.
    #[serde(default)]
    pub next_offset: u64,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl Subnet {
    pub(crate) fn new(vpc_id: &str, cidr: Ipv4Cidr, availability_zone: String, tags: Vec<Tag>) -> Subnet {
        Subnet {
            id: new_id("subnet"),
            vpc_id: vpc_id.to_owned(),
            cidr,
            availability_zone,
            default_for_az: false,
            map_public_ip_on_launch: false,
            available_ip_address_count: cidr.size() - RESERVED_ADDRESSES,
            next_offset: 0,
            tags,
        }
    }

    /// The subnet's router, the first address after the network address: tasks' default route.
    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.nth(1).expect("subnets have at least 16 addresses")
    }

    /// Addresses interfaces can get.
    pub fn usable_addresses(&self) -> u64 {
        self.cidr.size() - RESERVED_ADDRESSES
    }

    /// Whether `ip` is one of the five addresses no interface gets.
    pub fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        match self.cidr.offset_of(ip) {
            Some(offset) => offset <= 3 || offset == self.cidr.size() - 1,
            None => true,
        }
    }
}

impl Filterable for Subnet {
    const RESOURCE: NetworkResource = NetworkResource::Subnet;
    const PREFIX: &'static str = keys::SUBNETS;
    const FILTERS: &'static [&'static str] = &[
        "subnet-id",
        "vpc-id",
        "cidr",
        "cidr-block",
        "cidrBlock",
        "availability-zone",
        "availabilityZone",
        "default-for-az",
        "defaultForAz",
        "map-public-ip-on-launch",
        "available-ip-address-count",
        "state",
    ];

    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        Some(match name {
            "subnet-id" => vec![self.id.clone()],
            "vpc-id" => vec![self.vpc_id.clone()],
            "cidr" | "cidr-block" | "cidrBlock" => vec![self.cidr.to_string()],
            "availability-zone" | "availabilityZone" => vec![self.availability_zone.clone()],
            "default-for-az" | "defaultForAz" => vec![self.default_for_az.to_string()],
            "map-public-ip-on-launch" => vec![self.map_public_ip_on_launch.to_string()],
            "available-ip-address-count" => vec![self.available_ip_address_count.to_string()],
            "state" => vec!["available".into()],
            _ => return None,
        })
    }

    fn tags(&self) -> &[Tag] {
        &self.tags
    }

    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Clone, Debug, Default)]
pub struct CreateSubnetInput {
    pub vpc_id: String,
    pub cidr_block: String,
    /// `<region>a` if absent.
    pub availability_zone: Option<String>,
    pub tags: Vec<Tag>,
}

impl Control {
    pub async fn create_subnet(&self, input: CreateSubnetInput) -> Result<Subnet, NetworkError> {
        check_id(NetworkResource::Vpc, &input.vpc_id)?;
        let text = &input.cidr_block;
        let cidr: Ipv4Cidr = text.parse().map_err(|_| {
            NetworkError::invalid_value(format!(
                "Value ({text}) for parameter cidrBlock is invalid. This is not a valid CIDR block."
            ))
        })?;
        if !(16..=28).contains(&cidr.prefix()) {
            return Err(NetworkError::SubnetRange {
                cidr: cidr.to_string(),
                reason: "subnet blocks must be between /16 and /28".into(),
            });
        }
        let zones = self.availability_zones();
        let zone = input.availability_zone.clone().unwrap_or_else(|| zones[0].clone());
        if !zones.contains(&zone) {
            return Err(NetworkError::invalid_value(format!(
                "Value ({zone}) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: {}.",
                zones.join(", ")
            )));
        }
        validate_tags(&input.tags)?;
        let subnet = Subnet::new(&input.vpc_id, cidr, zone, input.tags);
        let vpc_key = keys::vpc(&input.vpc_id);
        loop {
            let (vpc, vpc_revision) = load::<Vpc>(self.store.as_ref(), &vpc_key)
                .await?
                .ok_or_else(|| NetworkError::not_found(NetworkResource::Vpc, input.vpc_id.as_str()))?;
            if !vpc.cidr.contains(cidr) {
                return Err(NetworkError::SubnetRange {
                    cidr: cidr.to_string(),
                    reason: format!("it is not inside the block of {} ({})", vpc.id, vpc.cidr),
                });
            }
            let siblings = list::<Subnet>(self.store.as_ref(), keys::SUBNETS).await?;
            if let Some((other, _)) = siblings.iter().find(|(s, _)| s.vpc_id == vpc.id && s.cidr.overlaps(cidr)) {
                return Err(NetworkError::SubnetConflict {
                    cidr: cidr.to_string(),
                    subnet_id: other.id.clone(),
                    existing: other.cidr.to_string(),
                });
            }
            // Rewriting the VPC serialises this against DeleteVpc and overlapping creates.
            let txn = Txn::new()
                .when(Compare::revision(&vpc_key, vpc_revision))
                .when(Compare::absent(keys::subnet(&subnet.id)))
                .then(Op::put(&vpc_key, encode(&vpc)))
                .then(Op::put(keys::subnet(&subnet.id), encode(&subnet)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(subnet);
            }
        }
    }

    /// Subnets by id (all of them if `ids` is empty) that pass every filter.
    pub async fn describe_subnets(
        &self,
        ids: &[String],
        filters: &[ResourceFilter],
    ) -> Result<Vec<Subnet>, NetworkError> {
        self.describe(ids, filters).await
    }

    /// One subnet, possibly stale (a subnet's CIDR, VPC and zone never change).
    pub async fn subnet(&self, id: &str) -> Result<Subnet, NetworkError> {
        check_id(NetworkResource::Subnet, id)?;
        load_stale::<Subnet>(self.store.as_ref(), &keys::subnet(id))
            .await?
            .ok_or_else(|| NetworkError::not_found(NetworkResource::Subnet, id))
    }

    /// Deletes a subnet no network interface uses.
    pub async fn delete_subnet(&self, id: &str) -> Result<Subnet, NetworkError> {
        check_id(NetworkResource::Subnet, id)?;
        let key = keys::subnet(id);
        loop {
            // Read before the leases are listed: an allocation after this read rewrites the
            // subnet and fails the compare below.
            let (subnet, revision) = load::<Subnet>(self.store.as_ref(), &key)
                .await?
                .ok_or_else(|| NetworkError::not_found(NetworkResource::Subnet, id))?;
            let vpc_key = keys::vpc(&subnet.vpc_id);
            let vpc = load::<Vpc>(self.store.as_ref(), &vpc_key).await?;
            let leases = self.store.list_prefix(&keys::private_ips(id)).await?;
            if !leases.is_empty() {
                let mut users = Vec::new();
                for kv in &leases {
                    users.push(super::decode::<super::AddressLease>(kv)?.network_interface_id);
                }
                return Err(NetworkError::DependencyViolation {
                    resource: "subnet",
                    id: id.to_owned(),
                    reason: format!("network interfaces still use it ({})", users.join(", ")),
                });
            }
            let mut txn = Txn::new().when(Compare::revision(&key, revision)).then(Op::delete(&key));
            if let Some((vpc, vpc_revision)) = vpc {
                txn = txn.when(Compare::revision(&vpc_key, vpc_revision)).then(Op::put(&vpc_key, encode(&vpc)));
            }
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(subnet);
            }
        }
    }
}
