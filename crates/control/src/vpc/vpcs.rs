//! VPCs: CreateVpc, DescribeVpcs, DeleteVpc, and the default network every account starts with.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};

use super::keys;
use super::security_groups::SecurityGroup;
use super::subnets::Subnet;
use super::tags::validate_tags;
use super::{
    Filterable, Ipv4Cidr, NetworkError, NetworkResource, ResourceFilter, Tag, ZONE_LETTERS, check_id, encode, list,
    load, load_stale, new_id,
};
use crate::Control;

/// The default VPC's block, as on AWS.
pub const DEFAULT_VPC_CIDR: &str = "172.31.0.0/16";
/// Blocks a VPC may not use: they mean something else on every host.
const HOST_RESERVED: [(&str, &str); 4] = [
    ("0.0.0.0/8", "this-network addresses"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (the task metadata endpoint lives there)"),
    ("224.0.0.0/3", "multicast and reserved space"),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vpc {
    pub id: String,
    pub cidr: Ipv4Cidr,
    pub is_default: bool,
    /// The VPC's `default` security group, created and deleted with it.
    pub default_security_group_id: String,
    pub cidr_association_id: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// A VPC's VXLAN network identifier between hosts, from its id: 24 bits of its FNV-1a hash,
/// never 0. Creating a VPC picks another id when this would collide with an existing VPC's, so
/// the VNI is stable (nothing to store) and unique among VPCs.
pub fn vni_of(vpc_id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in vpc_id.as_bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    match (hash >> 24) ^ (hash & 0x00ff_ffff) {
        0 => 1,
        vni => vni,
    }
}

impl Vpc {
    /// The VPC's VXLAN network identifier between hosts ([`vni_of`]).
    pub fn vni(&self) -> u32 {
        vni_of(&self.id)
    }

    /// The VPC's DNS resolver: the block's base address plus two, as on AWS.
    pub fn dns_resolver(&self) -> Ipv4Addr {
        self.cidr.nth(2).expect("VPC blocks have at least 16 addresses")
    }
}

impl Filterable for Vpc {
    const RESOURCE: NetworkResource = NetworkResource::Vpc;
    const PREFIX: &'static str = keys::VPCS;
    const FILTERS: &'static [&'static str] = &[
        "vpc-id",
        "cidr",
        "cidr-block",
        "cidr-block-association.cidr-block",
        "cidr-block-association.association-id",
        "cidr-block-association.state",
        "state",
        "is-default",
        "isDefault",
        "instance-tenancy",
    ];

    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        Some(match name {
            "vpc-id" => vec![self.id.clone()],
            "cidr" | "cidr-block" | "cidr-block-association.cidr-block" => vec![self.cidr.to_string()],
            "cidr-block-association.association-id" => vec![self.cidr_association_id.clone()],
            "cidr-block-association.state" | "state" => vec!["available".into()],
            "is-default" | "isDefault" => vec![self.is_default.to_string()],
            "instance-tenancy" => vec!["default".into()],
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
pub struct CreateVpcInput {
    pub cidr_block: String,
    pub tags: Vec<Tag>,
}

/// Every VPC's block, kept in one record so that non-overlap is checked in one compare.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct VpcIndex {
    vpcs: BTreeMap<String, Ipv4Cidr>,
}

impl VpcIndex {
    /// Whether a VPC here already has the VNI `id` would get.
    fn vni_taken(&self, id: &str) -> bool {
        let vni = vni_of(id);
        self.vpcs.keys().any(|other| other != id && vni_of(other) == vni)
    }
}

/// Written with the default network, so that it is created once and a deleted default VPC
/// stays deleted, as on AWS.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DefaultNetworkMarker {
    vpc_id: String,
}

fn parse_block(text: &str) -> Result<Ipv4Cidr, NetworkError> {
    text.parse().map_err(|_| {
        NetworkError::invalid_value(format!(
            "Value ({text}) for parameter cidrBlock is invalid. This is not a valid CIDR block."
        ))
    })
}

impl Control {
    async fn vpc_index(&self) -> Result<(VpcIndex, u64), NetworkError> {
        Ok(load::<VpcIndex>(self.store.as_ref(), keys::VPC_INDEX).await?.unwrap_or_default())
    }

    /// Why `cidr` cannot be a VPC's block here, if it cannot.
    fn vpc_block_problem(&self, index: &VpcIndex, cidr: Ipv4Cidr) -> Option<String> {
        if !(16..=28).contains(&cidr.prefix()) {
            return Some("VPC blocks must be between /16 and /28".into());
        }
        for (block, what) in HOST_RESERVED {
            let block: Ipv4Cidr = block.parse().expect("reserved blocks are CIDRs");
            if block.overlaps(cidr) {
                return Some(format!("it overlaps {block}, {what}"));
            }
        }
        let pool = self.public_ip_pool();
        if pool.overlaps(cidr) {
            return Some(format!("it overlaps {pool}, the public IP pool tasks' public addresses come from"));
        }
        index.vpcs.iter().find(|(_, other)| other.overlaps(cidr)).map(|(id, other)| {
            format!(
                "it overlaps {id} ({other}). Flotilla routes every VPC on one host, so VPC blocks must not overlap; pick another range"
            )
        })
    }

    pub async fn create_vpc(&self, input: CreateVpcInput) -> Result<Vpc, NetworkError> {
        let cidr = parse_block(&input.cidr_block)?;
        validate_tags(&input.tags)?;
        let mut vpc = Vpc {
            id: new_id("vpc"),
            cidr,
            is_default: false,
            default_security_group_id: new_id("sg"),
            cidr_association_id: new_id("vpc-cidr-assoc"),
            tags: input.tags,
        };
        loop {
            let (mut index, revision) = self.vpc_index().await?;
            if let Some(reason) = self.vpc_block_problem(&index, cidr) {
                return Err(NetworkError::VpcRange { cidr: cidr.to_string(), reason });
            }
            while index.vni_taken(&vpc.id) {
                vpc.id = new_id("vpc");
            }
            let group = SecurityGroup::default_for(&vpc.id, &vpc.default_security_group_id);
            index.vpcs.insert(vpc.id.clone(), cidr);
            let txn = Txn::new()
                .when(Compare::revision(keys::VPC_INDEX, revision))
                .when(Compare::absent(keys::vpc(&vpc.id)))
                .then(Op::put(keys::VPC_INDEX, encode(&index)))
                .then(Op::put(keys::vpc(&vpc.id), encode(&vpc)))
                .then(Op::put(keys::security_group(&group.id), encode(&group)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(vpc);
            }
        }
    }

    /// VPCs by id (all of them if `ids` is empty) that pass every filter.
    pub async fn describe_vpcs(&self, ids: &[String], filters: &[ResourceFilter]) -> Result<Vec<Vpc>, NetworkError> {
        self.describe(ids, filters).await
    }

    /// One VPC, possibly stale (a VPC's CIDR and VNI never change).
    pub async fn vpc(&self, id: &str) -> Result<Vpc, NetworkError> {
        check_id(NetworkResource::Vpc, id)?;
        load_stale::<Vpc>(self.store.as_ref(), &keys::vpc(id))
            .await?
            .ok_or_else(|| NetworkError::not_found(NetworkResource::Vpc, id))
    }

    /// The default VPC, unless the user deleted it.
    pub async fn default_vpc(&self) -> Result<Option<Vpc>, NetworkError> {
        let all = list::<Vpc>(self.store.as_ref(), keys::VPCS).await?;
        Ok(all.into_iter().map(|(v, _)| v).find(|v| v.is_default))
    }

    /// Deletes a VPC that has no subnets and no security groups but its default one.
    pub async fn delete_vpc(&self, id: &str) -> Result<Vpc, NetworkError> {
        check_id(NetworkResource::Vpc, id)?;
        let key = keys::vpc(id);
        loop {
            // The VPC's revision is read before its members are listed: a member added after
            // this read rewrites the VPC and fails the compare below.
            let (vpc, vpc_revision) = load::<Vpc>(self.store.as_ref(), &key)
                .await?
                .ok_or_else(|| NetworkError::not_found(NetworkResource::Vpc, id))?;
            let subnets: Vec<String> = list::<Subnet>(self.store.as_ref(), keys::SUBNETS)
                .await?
                .into_iter()
                .filter(|(s, _)| s.vpc_id == vpc.id)
                .map(|(s, _)| s.id)
                .collect();
            if !subnets.is_empty() {
                return Err(NetworkError::DependencyViolation {
                    resource: "vpc",
                    id: vpc.id,
                    reason: format!("delete its subnets first ({})", subnets.join(", ")),
                });
            }
            let groups: Vec<String> = list::<SecurityGroup>(self.store.as_ref(), keys::SECURITY_GROUPS)
                .await?
                .into_iter()
                .filter(|(g, _)| g.vpc_id == vpc.id && g.id != vpc.default_security_group_id)
                .map(|(g, _)| g.id)
                .collect();
            if !groups.is_empty() {
                return Err(NetworkError::DependencyViolation {
                    resource: "vpc",
                    id: vpc.id,
                    reason: format!("delete its security groups first ({})", groups.join(", ")),
                });
            }
            let (mut index, index_revision) = self.vpc_index().await?;
            index.vpcs.remove(&vpc.id);
            let txn = Txn::new()
                .when(Compare::revision(&key, vpc_revision))
                .when(Compare::revision(keys::VPC_INDEX, index_revision))
                .then(Op::put(keys::VPC_INDEX, encode(&index)))
                .then(Op::delete(&key))
                .then(Op::delete(keys::security_group(&vpc.default_security_group_id)));
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(vpc);
            }
        }
    }

    /// Creates, once per installation, what every AWS account starts with: the default VPC
    /// (172.31.0.0/16) with its `default` security group, and a default subnet per zone
    /// (172.31.0.0/20 in `<region>a`, 172.31.16.0/20 in `<region>b`, ...). Safe to call on every
    /// start and concurrently. If the user deletes the default VPC it is not recreated.
    pub async fn ensure_default_network(&self) -> Result<(), NetworkError> {
        let cidr: Ipv4Cidr = DEFAULT_VPC_CIDR.parse().expect("the default VPC block is a CIDR");
        loop {
            if self.store.get(keys::DEFAULT_NETWORK).await?.is_some() {
                return Ok(());
            }
            let (mut index, index_revision) = self.vpc_index().await?;
            if let Some(reason) = self.vpc_block_problem(&index, cidr) {
                // Only possible for a store written before default networks existed.
                tracing::warn!(%cidr, reason, "not creating the default VPC");
                return Ok(());
            }
            let mut vpc = Vpc {
                id: new_id("vpc"),
                cidr,
                is_default: true,
                default_security_group_id: new_id("sg"),
                cidr_association_id: new_id("vpc-cidr-assoc"),
                tags: Vec::new(),
            };
            while index.vni_taken(&vpc.id) {
                vpc.id = new_id("vpc");
            }
            let group = SecurityGroup::default_for(&vpc.id, &vpc.default_security_group_id);
            index.vpcs.insert(vpc.id.clone(), cidr);
            let marker = DefaultNetworkMarker { vpc_id: vpc.id.clone() };
            let mut txn = Txn::new()
                .when(Compare::absent(keys::DEFAULT_NETWORK))
                .when(Compare::revision(keys::VPC_INDEX, index_revision))
                .then(Op::put(keys::DEFAULT_NETWORK, encode(&marker)))
                .then(Op::put(keys::VPC_INDEX, encode(&index)))
                .then(Op::put(keys::vpc(&vpc.id), encode(&vpc)))
                .then(Op::put(keys::security_group(&group.id), encode(&group)));
            for (i, letter) in ZONE_LETTERS.iter().enumerate() {
                let block = Ipv4Cidr::containing(Ipv4Addr::new(172, 31, 16 * i as u8, 0), 20);
                let mut subnet = Subnet::new(&vpc.id, block, format!("{}{letter}", self.identity.region), Vec::new());
                subnet.default_for_az = true;
                subnet.map_public_ip_on_launch = true;
                txn = txn.then(Op::put(keys::subnet(&subnet.id), encode(&subnet)));
            }
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                tracing::info!(vpc = %vpc.id, "created the default VPC");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnis_are_24_bits_nonzero_and_a_collision_is_seen() {
        // Two ids whose VNIs collide (a birthday search over 24 bits): creating the second
        // VPC would pick another id.
        let mut seen = std::collections::HashMap::new();
        let (first, second) = (0u64..)
            .find_map(|i| {
                let id = format!("vpc-{i:017x}");
                let vni = vni_of(&id);
                assert!(vni > 0 && vni < 1 << 24);
                seen.insert(vni, id.clone()).map(|prev| (prev, id))
            })
            .unwrap();
        let cidr: Ipv4Cidr = "10.0.0.0/16".parse().unwrap();
        let index = VpcIndex { vpcs: BTreeMap::from([(first.clone(), cidr)]) };
        assert!(index.vni_taken(&second));
        assert!(!index.vni_taken(&first), "a VPC does not collide with itself");
        assert!(!index.vni_taken("vpc-0123456789abcdef0") || vni_of("vpc-0123456789abcdef0") == vni_of(&first));
    }
}
