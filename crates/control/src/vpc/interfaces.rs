//! Network interfaces (ENIs) and the address management behind them: one private address per
//! interface from its subnet, and optionally one public address from the public pool.
//!
//! An address belongs to an interface when its lease key exists (`ec2/ips/<subnet>/<ip>`,
//! `ec2/public-ips/<ip>`); the interface and its leases are written, and deleted, in one
//! transaction that requires the lease keys to be absent, so no address is ever leased twice.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use flotilla_store::{Compare, Op, Txn, TxnOutcome};
use flotilla_types::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::keys;
use super::security_groups::SecurityGroup;
use super::subnets::Subnet;
use super::vpcs::Vpc;
use super::{Filterable, NetworkError, NetworkResource, ResourceFilter, Tag, check_id, decode, encode, load, new_id};
use crate::Control;

/// Most security groups one interface may have, as on AWS.
pub const MAX_GROUPS_PER_INTERFACE: usize = 5;

/// The value of a lease key: who holds the address (or, under `ec2/attachments/`, which
/// interface belongs to the attachment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressLease {
    pub network_interface_id: String,
}

/// A security group as an interface records it; names never change, so they are kept here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    pub id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub private_ip: Ipv4Addr,
    /// `02:..`: locally administered, as AWS's.
    pub mac: String,
    pub private_dns_name: String,
    pub groups: Vec<GroupRef>,
    pub public_ip: Option<Ipv4Addr>,
    pub description: String,
    /// What the interface is for, e.g. a task ARN; at most one interface per attachment.
    pub attachment: Option<String>,
    /// EC2's id for the attachment (`eni-attach-...`), present with `attachment`.
    pub attachment_id: Option<String>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl Filterable for NetworkInterface {
    const RESOURCE: NetworkResource = NetworkResource::NetworkInterface;
    const PREFIX: &'static str = keys::NETWORK_INTERFACES;
    const FILTERS: &'static [&'static str] = &[
        "network-interface-id",
        "subnet-id",
        "vpc-id",
        "availability-zone",
        "group-id",
        "group-name",
        "private-ip-address",
        "addresses.private-ip-address",
        "private-dns-name",
        "mac-address",
        "description",
        "association.public-ip",
        "status",
        "interface-type",
        "attachment.attachment-id",
        "attachment.status",
    ];

    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        Some(match name {
            "network-interface-id" => vec![self.id.clone()],
            "subnet-id" => vec![self.subnet_id.clone()],
            "vpc-id" => vec![self.vpc_id.clone()],
            "availability-zone" => vec![self.availability_zone.clone()],
            "group-id" => self.groups.iter().map(|g| g.id.clone()).collect(),
            "group-name" => self.groups.iter().map(|g| g.name.clone()).collect(),
            "private-ip-address" | "addresses.private-ip-address" => vec![self.private_ip.to_string()],
            "private-dns-name" => vec![self.private_dns_name.clone()],
            "mac-address" => vec![self.mac.clone()],
            "description" => vec![self.description.clone()],
            "association.public-ip" => self.public_ip.iter().map(|ip| ip.to_string()).collect(),
            "status" => vec![if self.attachment.is_some() { "in-use" } else { "available" }.to_owned()],
            "interface-type" => vec!["interface".into()],
            "attachment.attachment-id" => self.attachment_id.iter().cloned().collect(),
            "attachment.status" => self.attachment.iter().map(|_| "attached".to_owned()).collect(),
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

/// What an interface is wanted for.
#[derive(Clone, Debug, Default)]
pub struct NetworkInterfaceSpec {
    pub subnet_id: String,
    /// The subnet's VPC's `default` group when empty.
    pub security_group_ids: Vec<String>,
    pub description: Option<String>,
    pub assign_public_ip: bool,
    /// E.g. the task ARN. Creating an interface for an attachment that already has one
    /// returns that one, so a retried or resumed launch never leaks an address.
    pub attachment: Option<String>,
}

fn new_mac() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", bytes[0], bytes[1], bytes[2], bytes[3], bytes[4])
}

/// The address a lease key names.
fn leased_address(key: &str) -> Option<Ipv4Addr> {
    key.rsplit('/').next()?.parse().ok()
}

/// An interface deletion waiting for its subnet's turn, and where its answer goes.
pub(super) struct Release {
    id: String,
    answer: oneshot::Sender<Result<Option<NetworkInterface>, NetworkError>>,
}

/// Adds to `txn` the deletion of `interface` (compared on its `revision`) and of every lease it holds.
fn release_ops(txn: Txn, interface: &NetworkInterface, revision: flotilla_store::Revision) -> Txn {
    let key = keys::network_interface(&interface.id);
    let mut txn = txn
        .when(Compare::revision(&key, revision))
        .then(Op::delete(&key))
        .then(Op::delete(keys::private_ip(&interface.subnet_id, interface.private_ip)));
    if let Some(ip) = interface.public_ip {
        txn = txn.then(Op::delete(keys::public_ip(ip)));
    }
    if let Some(attachment) = &interface.attachment {
        txn = txn.then(Op::delete(keys::attachment(attachment)));
    }
    txn
}

/// The next free address at or after the subnet's cursor, wrapping around; `None` if full.
fn pick_private(subnet: &Subnet, used: &HashSet<Ipv4Addr>) -> Option<u64> {
    let size = subnet.cidr.size();
    // Offsets 0..=3 and the last one are reserved.
    let (first, last) = (4, size - 2);
    let span = last - first + 1;
    let start = subnet.next_offset.clamp(first, last + 1);
    (0..span).map(|i| first + (start - first + i) % span).find(|&offset| {
        let ip = subnet.cidr.nth(offset).expect("offset inside the block");
        !used.contains(&ip)
    })
}

impl Control {
    /// Creates an interface in a subnet with the next free private address (and a public one
    /// from the pool if asked), or returns the interface the spec's attachment already has.
    pub async fn create_network_interface(&self, spec: NetworkInterfaceSpec) -> Result<NetworkInterface, NetworkError> {
        check_id(NetworkResource::Subnet, &spec.subnet_id)?;
        let mut group_ids: Vec<String> = Vec::new();
        for id in &spec.security_group_ids {
            check_id(NetworkResource::SecurityGroup, id)?;
            if !group_ids.contains(id) {
                group_ids.push(id.clone());
            }
        }
        if group_ids.len() > MAX_GROUPS_PER_INTERFACE {
            return Err(NetworkError::invalid_value(format!(
                "An interface may have at most {MAX_GROUPS_PER_INTERFACE} security groups; {} were given.",
                group_ids.len()
            )));
        }
        let description = spec.description.clone().unwrap_or_default();
        if description.chars().count() > 255 {
            return Err(NetworkError::invalid_value("Interface descriptions may be at most 255 characters."));
        }
        let lock = self.subnet_lock(&spec.subnet_id);
        let _subnet_turn = lock.lock().await;
        let _pool_turn = if spec.assign_public_ip { Some(self.network.public_lock.lock().await) } else { None };
        let subnet_key = keys::subnet(&spec.subnet_id);
        loop {
            let attachment_key = spec.attachment.as_deref().map(keys::attachment);
            let mut attachment_revision = 0;
            if let Some(key) = &attachment_key
                && let Some((lease, revision)) = load::<AddressLease>(self.store.as_ref(), key).await?
            {
                match load::<NetworkInterface>(
                    self.store.as_ref(),
                    &keys::network_interface(&lease.network_interface_id),
                )
                .await?
                {
                    Some((existing, _)) => return Ok(existing),
                    // An index entry without its interface cannot be written by this module;
                    // replace it rather than refuse the attachment forever.
                    None => attachment_revision = revision,
                }
            }
            let (mut subnet, subnet_revision) = load::<Subnet>(self.store.as_ref(), &subnet_key)
                .await?
                .ok_or_else(|| NetworkError::not_found(NetworkResource::Subnet, spec.subnet_id.as_str()))?;
            let ids = if group_ids.is_empty() {
                let (vpc, _) = load::<Vpc>(self.store.as_ref(), &keys::vpc(&subnet.vpc_id))
                    .await?
                    .ok_or_else(|| NetworkError::not_found(NetworkResource::Vpc, subnet.vpc_id.as_str()))?;
                vec![vpc.default_security_group_id]
            } else {
                group_ids.clone()
            };
            let mut groups = Vec::new();
            let mut group_revisions = Vec::new();
            for id in &ids {
                let (group, revision) = load::<SecurityGroup>(self.store.as_ref(), &keys::security_group(id))
                    .await?
                    .ok_or_else(|| NetworkError::not_found(NetworkResource::SecurityGroup, id.as_str()))?;
                if group.vpc_id != subnet.vpc_id {
                    return Err(NetworkError::InvalidParameter(format!(
                        "Security group {} and subnet {} belong to different networks ({} and {}).",
                        group.id, subnet.id, group.vpc_id, subnet.vpc_id
                    )));
                }
                group_revisions.push((keys::security_group(id), revision));
                groups.push(GroupRef { id: group.id, name: group.name });
            }

            let leases = self.store.list_prefix(&keys::private_ips(&subnet.id)).await?;
            let used: HashSet<Ipv4Addr> = leases.iter().filter_map(|kv| leased_address(&kv.key)).collect();
            let offset = pick_private(&subnet, &used)
                .ok_or_else(|| NetworkError::InsufficientAddresses { subnet_id: subnet.id.clone() })?;
            let private_ip = subnet.cidr.nth(offset).expect("picked inside the block");
            let public_ip = if spec.assign_public_ip { Some(self.pick_public().await?) } else { None };

            let id = new_id("eni");
            let interface = NetworkInterface {
                id: id.clone(),
                subnet_id: subnet.id.clone(),
                vpc_id: subnet.vpc_id.clone(),
                availability_zone: subnet.availability_zone.clone(),
                private_ip,
                mac: new_mac(),
                private_dns_name: self.private_dns_name(private_ip),
                groups,
                public_ip,
                description: description.clone(),
                attachment: spec.attachment.clone(),
                attachment_id: spec.attachment.as_ref().map(|_| new_id("eni-attach")),
                created_at: Timestamp::now(),
                tags: Vec::new(),
            };
            subnet.available_ip_address_count = subnet.usable_addresses().saturating_sub(used.len() as u64 + 1);
            subnet.next_offset = offset + 1;
            let lease = encode(&AddressLease { network_interface_id: id.clone() });
            let private_key = keys::private_ip(&subnet.id, private_ip);
            let mut txn = Txn::new()
                .when(Compare::revision(&subnet_key, subnet_revision))
                .when(Compare::absent(&private_key))
                .when(Compare::absent(keys::network_interface(&id)))
                .then(Op::put(&subnet_key, encode(&subnet)))
                .then(Op::put(&private_key, lease.clone()))
                .then(Op::put(keys::network_interface(&id), encode(&interface)));
            for (key, revision) in group_revisions {
                txn = txn.when(Compare::revision(key, revision));
            }
            if let Some(ip) = public_ip {
                txn = txn.when(Compare::absent(keys::public_ip(ip))).then(Op::put(keys::public_ip(ip), lease.clone()));
            }
            if let Some(key) = attachment_key {
                txn = txn.when(Compare::revision(&key, attachment_revision)).then(Op::put(key, lease));
            }
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(interface);
            }
        }
    }

    /// The lowest free address of the public pool, leaving out its first and last.
    async fn pick_public(&self) -> Result<Ipv4Addr, NetworkError> {
        let pool = self.public_ip_pool();
        let used: HashSet<Ipv4Addr> =
            self.store.list_prefix(keys::PUBLIC_IPS).await?.iter().filter_map(|kv| leased_address(&kv.key)).collect();
        let range = if pool.size() > 2 { 1..pool.size() - 1 } else { 0..pool.size() };
        range
            .filter_map(|offset| pool.nth(offset))
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| NetworkError::PublicPoolExhausted { pool: pool.to_string() })
    }

    /// Deletes an interface and releases its addresses. Idempotent: `None` if there was no
    /// such interface. Deletions in one subnet at the same time share one transaction (one
    /// fsync, one write of the subnet): each queues, waits for its subnet's turn, and whoever
    /// gets the turn deletes every interface queued by then. A thousand tasks stopping at
    /// once would otherwise release their addresses one fsync after another.
    pub async fn delete_network_interface(&self, id: &str) -> Result<Option<NetworkInterface>, NetworkError> {
        check_id(NetworkResource::NetworkInterface, id)?;
        let Some((first, _)) = load::<NetworkInterface>(self.store.as_ref(), &keys::network_interface(id)).await?
        else {
            return Ok(None);
        };
        let subnet_id = first.subnet_id;
        let (answer, mut answered) = oneshot::channel();
        let release = Release { id: id.to_owned(), answer };
        self.network
            .releases
            .lock()
            .expect("release queue poisoned")
            .entry(subnet_id.clone())
            .or_default()
            .push(release);
        let lock = self.subnet_lock(&subnet_id);
        let _subnet_turn = lock.lock().await;
        match answered.try_recv() {
            // An earlier turn's batch took this one.
            Ok(done) => return done,
            // That turn was cancelled half-way: delete alone (deleting is idempotent).
            Err(oneshot::error::TryRecvError::Closed) => return self.delete_interface_alone(id).await,
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let batch =
            self.network.releases.lock().expect("release queue poisoned").remove(&subnet_id).unwrap_or_default();
        self.delete_interfaces(&subnet_id, batch).await;
        // The batch held this one (it was queued before the turn, and only the turn takes).
        match answered.try_recv() {
            Ok(done) => done,
            Err(_) => self.delete_interface_alone(id).await,
        }
    }

    /// Deletes a batch of one subnet's interfaces in one transaction, answering each; if the
    /// transaction loses a race or fails, each is deleted alone. The caller holds the
    /// subnet's turn.
    async fn delete_interfaces(&self, subnet_id: &str, batch: Vec<Release>) {
        let mut found = Vec::new();
        for release in batch {
            match load::<NetworkInterface>(self.store.as_ref(), &keys::network_interface(&release.id)).await {
                Ok(Some((interface, revision))) => found.push((release, interface, revision)),
                Ok(None) => drop(release.answer.send(Ok(None))),
                Err(e) => drop(release.answer.send(Err(e))),
            }
        }
        if found.is_empty() {
            return;
        }
        let mut txn = Txn::new();
        for (_, interface, revision) in &found {
            txn = release_ops(txn, interface, *revision);
        }
        let committed = match self.with_subnet_count(txn, subnet_id, found.len() as u64).await {
            Ok(txn) => matches!(self.store.txn(txn).await, Ok(TxnOutcome::Committed(_))),
            Err(_) => false,
        };
        for (release, interface, _) in found {
            let done = if committed { Ok(Some(interface)) } else { self.delete_interface_alone(&release.id).await };
            let _ = release.answer.send(done);
        }
    }

    /// Deletes one interface (compare-and-write, retried on its own conflicts). The caller
    /// holds the subnet's turn.
    async fn delete_interface_alone(&self, id: &str) -> Result<Option<NetworkInterface>, NetworkError> {
        let key = keys::network_interface(id);
        loop {
            let Some((interface, revision)) = load::<NetworkInterface>(self.store.as_ref(), &key).await? else {
                return Ok(None);
            };
            let txn = release_ops(Txn::new(), &interface, revision);
            let txn = self.with_subnet_count(txn, &interface.subnet_id, 1).await?;
            if let TxnOutcome::Committed(_) = self.store.txn(txn).await? {
                return Ok(Some(interface));
            }
        }
    }

    /// `txn`, which releases `released` of the subnet's addresses, also writing the subnet's
    /// available count (compared on the subnet's revision). A subnet already gone is left out.
    async fn with_subnet_count(&self, txn: Txn, subnet_id: &str, released: u64) -> Result<Txn, NetworkError> {
        let subnet_key = keys::subnet(subnet_id);
        let Some((mut subnet, subnet_revision)) = load::<Subnet>(self.store.as_ref(), &subnet_key).await? else {
            return Ok(txn);
        };
        let leased = self.store.list_prefix(&keys::private_ips(subnet_id)).await?.len() as u64;
        subnet.available_ip_address_count = subnet.usable_addresses().saturating_sub(leased.saturating_sub(released));
        Ok(txn.when(Compare::revision(&subnet_key, subnet_revision)).then(Op::put(&subnet_key, encode(&subnet))))
    }

    /// Interfaces by id (all of them if `ids` is empty) that pass every filter.
    pub async fn describe_network_interfaces(
        &self,
        ids: &[String],
        filters: &[ResourceFilter],
    ) -> Result<Vec<NetworkInterface>, NetworkError> {
        self.describe(ids, filters).await
    }

    /// The interface of an attachment (e.g. a task ARN), if it has one.
    pub async fn network_interface_for(&self, attachment: &str) -> Result<Option<NetworkInterface>, NetworkError> {
        let Some(kv) = self.store.get(&keys::attachment(attachment)).await? else { return Ok(None) };
        let lease: AddressLease = decode(&kv)?;
        Ok(load(self.store.as_ref(), &keys::network_interface(&lease.network_interface_id)).await?.map(|(n, _)| n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(cidr: &str) -> Subnet {
        Subnet::new("vpc-12345678", cidr.parse().unwrap(), "us-east-1a".into(), Vec::new())
    }

    #[test]
    fn picks_skip_reserved_addresses_and_wrap() {
        let mut s = subnet("10.0.1.0/28");
        let mut used = HashSet::new();
        assert_eq!(pick_private(&s, &used), Some(4));
        s.next_offset = 14;
        assert_eq!(pick_private(&s, &used), Some(14));
        s.next_offset = 15;
        assert_eq!(pick_private(&s, &used), Some(4), "wraps past the broadcast address");
        for offset in 4..=14 {
            used.insert(s.cidr.nth(offset).unwrap());
        }
        assert_eq!(pick_private(&s, &used), None);
        assert_eq!(s.usable_addresses(), 11);
    }
}
