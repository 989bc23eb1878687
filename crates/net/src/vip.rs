//! Virtual services per VPC (Kubernetes ClusterIPs, kube-proxy's job): traffic from a VPC's
//! task interfaces to a virtual `ip:port` is DNAT'd to one of its backends, round robin,
//! before the security groups judge the flow, so the client's egress and the backend's ingress
//! rules see the backend's real address, as with kube-proxy. Replies are un-NAT'd by
//! conntrack (every task's traffic crosses the host). A virtual service with no backends
//! rejects (kube-proxy's `REJECT`).
//!
//! The ruleset: `vipnat` (nat prerouting, priority -160, before the egress chains at -150)
//! sends a task's new flows by source address through `vip_vpcs` (VPC CIDR → `jump
//! vip_<hash>`, comment: `<vpc id> <digest of the set>`), whose chain holds one rule per
//! virtual service. A task reaching its own service (hairpin) would receive a packet from its
//! own address, which Linux drops as a martian: `viphairpin` (nat postrouting, just before
//! `srcnat`) SNATs those flows to the VPC's router address (base+1) through `vip_hairpin`
//! (`backend . backend` → router, comment: VPC id), as kube-proxy masquerades them.
//!
//! The table is the record: after a restart the digest in the element's comment tells whether
//! a set is already in place; the hairpin elements are read back with their VPC.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::error::{NetError, Object};
use crate::network::Network;
use crate::nft::{Script, quote};
use crate::spec::{Protocol, VpcStatus, check_id, fnv1a};

/// One virtual `ip:port` (a ClusterIP's port) and the backends it spreads new flows over.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VirtualService {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Private addresses in the VPC and their ports; none: connections are refused.
    pub backends: Vec<(Ipv4Addr, u16)>,
}

/// A VPC's virtual services as the table has them.
#[derive(Debug, Clone, Default)]
pub(crate) struct VipSet {
    /// Of the services' canonical text; what the `vip_vpcs` element's comment carries.
    pub digest: String,
    /// Backends with a `vip_hairpin` element.
    pub hairpin: BTreeSet<Ipv4Addr>,
}

/// The base-ruleset parts: maps and base chains (`nft::base_ruleset` adds them).
pub(crate) const MAPS: [(&str, &str); 2] = [
    // VPC CIDR -> jump to its chain of virtual services (comment: VPC id and digest).
    ("vip_vpcs", "map vip_vpcs { type ipv4_addr : verdict; flags interval; }"),
    // Backend . backend -> its VPC's router address (comment: VPC id): hairpin flows.
    ("vip_hairpin", "map vip_hairpin { type ipv4_addr . ipv4_addr : ipv4_addr; }"),
];

/// `(name, hook, rules)` of the base chains.
pub(crate) const CHAINS: [(&str, &str, &str); 2] = [
    ("vipnat", "type nat hook prerouting priority -160", "iifname @ifaces ip saddr vmap @vip_vpcs"),
    (
        "viphairpin",
        "type nat hook postrouting priority 99",
        "oifname @ifaces ct status dnat snat ip to ip saddr . ip daddr map @vip_hairpin",
    ),
];

pub(crate) fn vip_chain(table: &str, vpc_id: &str) -> String {
    format!("vip_{:08x}", fnv1a(&[table, "vip", vpc_id]))
}

fn proto(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Udp => "udp",
        _ => "tcp",
    }
}

/// The chain's rules, one per service: DNAT round robin over its backends, or reject.
pub(crate) fn rules(services: &[VirtualService]) -> Vec<String> {
    services
        .iter()
        .map(|s| {
            let mut rule = format!("ip daddr {} meta l4proto {} th dport {} ", s.ip, proto(s.protocol), s.port);
            match s.backends.as_slice() {
                [] => rule.push_str("reject"),
                [(ip, port)] => write!(rule, "dnat ip to {ip}:{port}").expect("write to String"),
                many => {
                    write!(rule, "dnat ip to numgen inc mod {} map {{ ", many.len()).expect("write to String");
                    let elements: Vec<String> =
                        many.iter().enumerate().map(|(i, (ip, port))| format!("{i} : {ip} . {port}")).collect();
                    write!(rule, "{} }}", elements.join(", ")).expect("write to String");
                }
            }
            rule
        })
        .collect()
}

/// Sorted, deduplicated services (backends too): the same set gives the same digest.
fn canonical(services: &[VirtualService]) -> Vec<VirtualService> {
    let mut out: Vec<VirtualService> = services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.backends.sort();
            s.backends.dedup();
            s
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| (a.ip, a.port, a.protocol) == (b.ip, b.port, b.protocol));
    out
}

fn digest(services: &[VirtualService]) -> String {
    let text: String = services.iter().map(|s| format!("{s:?};")).collect();
    format!("{:08x}{:08x}", fnv1a(&["a", &text]), fnv1a(&["b", &text]))
}

fn check(vpc: &VpcStatus, services: &[VirtualService]) -> Result<(), NetError> {
    let invalid = |reason: String| NetError::InvalidSpec { object: Object::Vpc(vpc.id.clone()), reason };
    for s in services {
        if !matches!(s.protocol, Protocol::Tcp | Protocol::Udp) {
            return Err(invalid(format!("virtual service {}:{}: protocol must be TCP or UDP", s.ip, s.port)));
        }
        if s.port == 0 || vpc.cidr.contains(&s.ip) {
            return Err(invalid(format!(
                "virtual service {}:{} is not a port outside the VPC's {}",
                s.ip, s.port, vpc.cidr
            )));
        }
        if let Some((ip, port)) = s.backends.iter().find(|(ip, port)| *port == 0 || !vpc.cidr.contains(ip)) {
            return Err(invalid(format!(
                "virtual service {}:{}: backend {ip}:{port} is not in {}",
                s.ip, s.port, vpc.cidr
            )));
        }
    }
    Ok(())
}

impl Network {
    /// Makes the VPC's virtual services exactly `services` (the whole set replaces what was
    /// there; an empty one removes them), in one transaction. The VPC must exist
    /// ([`Network::ensure_vpc`]). Runs beside interface changes, one change per VPC at a time.
    pub fn ensure_virtual_services(&self, vpc_id: &str, services: &[VirtualService]) -> Result<(), NetError> {
        check_id(vpc_id)?;
        let object = Object::Vpc(vpc_id.to_string());
        let _shape = self.shared();
        let _turn = self.interface_turn(&format!("vip/{vpc_id}"));
        let (vpc, existing) = {
            let inner = self.inner();
            let vpc = inner.state.vpcs.get(vpc_id).cloned();
            (vpc.ok_or_else(|| NetError::UnknownVpc { id: vpc_id.to_string() })?, inner.state.vips.get(vpc_id).cloned())
        };
        check(&vpc, services)?;
        let services = canonical(services);
        if services.is_empty() {
            if existing.is_none() {
                return Ok(());
            }
            let mut script = Script::new(&self.table);
            remove_script(&mut script, &self.table, &vpc, existing.as_ref());
            self.nft.apply(&object, &script)?;
            self.inner().state.vips.remove(vpc_id);
            return Ok(());
        }
        let digest = digest(&services);
        if existing.as_ref().is_some_and(|e| e.digest == digest) {
            return Ok(());
        }
        let hairpin: BTreeSet<Ipv4Addr> = services.iter().flat_map(|s| s.backends.iter().map(|(ip, _)| *ip)).collect();
        let old = existing.map(|e| e.hairpin).unwrap_or_default();
        let chain = vip_chain(&self.table, vpc_id);
        let cidr = vpc.cidr;
        let mut script = Script::new(&self.table);
        script.replace_chain(&chain, &rules(&services));
        // The element is replaced for its comment (the digest).
        script.delete_element("vip_vpcs", &format!("{cidr} : jump {chain}"), &cidr.to_string());
        let comment = quote(&format!("{vpc_id} {digest}"));
        script.cmd("add element", format_args!("vip_vpcs {{ {cidr} comment {comment} : jump {chain} }}"));
        for ip in hairpin.difference(&old) {
            let router = vpc.router;
            script
                .cmd("add element", format_args!("vip_hairpin {{ {ip} . {ip} comment {} : {router} }}", quote(vpc_id)));
        }
        for ip in old.difference(&hairpin) {
            script.delete_element("vip_hairpin", &format!("{ip} . {ip} : {}", vpc.router), &format!("{ip} . {ip}"));
        }
        self.nft.apply(&object, &script)?;
        self.inner().state.vips.insert(vpc_id.to_string(), VipSet { digest, hairpin });
        Ok(())
    }

    /// Removes the VPC's virtual services; nothing to remove is not an error.
    pub fn remove_virtual_services(&self, vpc_id: &str) -> Result<(), NetError> {
        check_id(vpc_id)?;
        let mut inner = self.lock();
        self.remove_vips_in(&mut inner.state, vpc_id)
    }

    /// The VPCs that have virtual services in the table.
    pub fn list_virtual_service_vpcs(&self) -> Vec<String> {
        self.inner().state.vips.keys().cloned().collect()
    }

    /// [`Network::remove_virtual_services`] under the exclusive lock (`remove_vpc`, `cleanup`).
    pub(crate) fn remove_vips_in(&self, state: &mut crate::state::State, vpc_id: &str) -> Result<(), NetError> {
        let Some(existing) = state.vips.get(vpc_id).cloned() else { return Ok(()) };
        let object = Object::Vpc(vpc_id.to_string());
        let mut script = Script::new(&self.table);
        match state.vpcs.get(vpc_id) {
            Some(vpc) => remove_script(&mut script, &self.table, vpc, Some(&existing)),
            None => {
                // The VPC is gone from the table: find its element by the chain it jumps to.
                let listing = self.nft.list_table(&object, &self.table)?;
                let chain = vip_chain(&self.table, vpc_id);
                for key in element_keys_jumping_to(&listing, &chain) {
                    script.cmd("delete element", format_args!("vip_vpcs {{ {key} }}"));
                }
                for ip in &existing.hairpin {
                    script.cmd("delete element", format_args!("vip_hairpin {{ {ip} . {ip} }}"));
                }
                script.delete_chain(&chain);
            }
        }
        self.nft.apply(&object, &script)?;
        state.vips.remove(vpc_id);
        Ok(())
    }
}

/// Deletes the VPC's element, hairpin elements and chain, whether present or not.
fn remove_script(script: &mut Script, table: &str, vpc: &VpcStatus, existing: Option<&VipSet>) {
    let chain = vip_chain(table, &vpc.id);
    let cidr = vpc.cidr;
    script.delete_element("vip_vpcs", &format!("{cidr} : jump {chain}"), &cidr.to_string());
    for ip in existing.map(|e| &e.hairpin).into_iter().flatten() {
        script.delete_element("vip_hairpin", &format!("{ip} . {ip} : {}", vpc.router), &format!("{ip} . {ip}"));
    }
    script.delete_chain(&chain);
}

/// The CIDRs (as nft writes them) of `vip_vpcs` elements that jump to `chain`.
fn element_keys_jumping_to(listing: &serde_json::Value, chain: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for item in listing.get("nftables").and_then(|v| v.as_array()).into_iter().flatten() {
        let Some(map) = item.get("map").filter(|m| m.get("name").and_then(|n| n.as_str()) == Some("vip_vpcs")) else {
            continue;
        };
        for pair in map.get("elem").and_then(|e| e.as_array()).into_iter().flatten() {
            let Some([key, data]) = pair.as_array().map(Vec::as_slice) else { continue };
            let target = data.get("jump").and_then(|j| j.get("target")).and_then(|t| t.as_str());
            if target != Some(chain) {
                continue;
            }
            let key = key.get("elem").and_then(|e| e.get("val")).unwrap_or(key);
            if let Some(net) = crate::state::as_net(key) {
                keys.push(net.to_string());
            }
        }
    }
    keys
}

/// What `State::recover` reads back: `vip_vpcs` elements (VPC id and digest from the comment)
/// and `vip_hairpin` elements (VPC id from the comment).
pub(crate) fn recover_element(
    vips: &mut BTreeMap<String, VipSet>,
    map: &str,
    key: &serde_json::Value,
    comment: Option<&str>,
) {
    match map {
        "vip_vpcs" => {
            if let Some((vpc, digest)) = comment.and_then(|c| c.split_once(' ')) {
                vips.entry(vpc.to_string()).or_default().digest = digest.to_string();
            }
        }
        "vip_hairpin" => {
            let ip = key.get("concat").and_then(|c| c.as_array()).and_then(|c| c.first()).and_then(|v| v.as_str());
            if let (Some(vpc), Some(ip)) = (comment, ip.and_then(|ip| ip.parse().ok())) {
                vips.entry(vpc.to_string()).or_default().hairpin.insert(ip);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(backends: &[(&str, u16)]) -> VirtualService {
        VirtualService {
            ip: "10.100.0.10".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
            backends: backends.iter().map(|(ip, port)| (ip.parse().unwrap(), *port)).collect(),
        }
    }

    #[test]
    fn rules_dnat_round_robin_or_reject() {
        let rules =
            rules(&[service(&[]), service(&[("10.1.0.5", 8080)]), service(&[("10.1.0.5", 8080), ("10.1.0.6", 8081)])]);
        assert_eq!(rules[0], "ip daddr 10.100.0.10 meta l4proto tcp th dport 80 reject");
        assert_eq!(rules[1], "ip daddr 10.100.0.10 meta l4proto tcp th dport 80 dnat ip to 10.1.0.5:8080");
        assert_eq!(
            rules[2],
            "ip daddr 10.100.0.10 meta l4proto tcp th dport 80 dnat ip to numgen inc mod 2 map { 0 : 10.1.0.5 . 8080, 1 : 10.1.0.6 . 8081 }"
        );
    }

    #[test]
    fn the_digest_ignores_order() {
        let a = [service(&[("10.1.0.5", 8080), ("10.1.0.6", 8080)])];
        let b = [service(&[("10.1.0.6", 8080), ("10.1.0.5", 8080), ("10.1.0.6", 8080)])];
        assert_eq!(digest(&canonical(&a)), digest(&canonical(&b)));
        assert_ne!(digest(&canonical(&a)), digest(&canonical(&[service(&[("10.1.0.5", 8080)])])));
    }
}
