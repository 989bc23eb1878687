//! What one `Network` has made, mirrored in memory so that each change can be computed as a
//! delta. The nft table is the record: every change lands there in one transaction, and
//! `State::recover` rebuilds this mirror from `nft -j list table` when a `Network` starts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::error::NetError;
use crate::spec::{VpcStatus, id_from_nft_name};

#[derive(Debug, Default)]
pub(crate) struct State {
    pub vpcs: BTreeMap<String, VpcStatus>,
    pub groups: BTreeMap<String, Group>,
    /// Groups that have a member set: every ensured group, plus groups named as a peer before
    /// they were ensured.
    pub member_sets: BTreeSet<String>,
    pub interfaces: BTreeMap<String, Iface>,
    /// The chains interfaces jump to (`nft::profile_chains`, and older versions' per-interface
    /// ones), each `true` once this process has filled it with the current rules. A chain no
    /// interface uses any more stays until the next change that holds the whole `Network`
    /// ([`State::unused_interface_chains`]): deleting a chain with rules waits out an RCU grace
    /// period in the kernel, which interface changes do not pay.
    pub interface_chains: BTreeMap<String, bool>,
    pub lb_addrs: BTreeMap<Ipv4Addr, LbAddr>,
    /// Interfaces of served VPCs on other hosts (the `peers` map).
    pub remotes: BTreeMap<Ipv4Addr, Remote>,
    /// VXLAN devices that have an `ovl_<dev>` chain.
    pub overlay_links: BTreeSet<String>,
    /// Public addresses announced on the underlay link (the `announced` set).
    pub announced: BTreeSet<Ipv4Addr>,
    /// VPCs with virtual services (`src/vip.rs`).
    pub vips: BTreeMap<String, crate::vip::VipSet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    pub vpc_id: String,
    pub host_ip: Ipv4Addr,
    pub groups: BTreeSet<String>,
    /// The chain its `remote_in` element jumps to (none when it has none).
    pub chain: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct LbAddr {
    pub vpc_id: Option<String>,
    pub ports: BTreeSet<u16>,
    pub groups: BTreeSet<String>,
    pub public_ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    /// Unknown for groups recovered after a restart.
    pub vpc_id: Option<String>,
    /// Groups whose member sets this group's rules use.
    pub peers: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Iface {
    pub link: String,
    pub vpc_id: Option<String>,
    pub ip: Ipv4Addr,
    pub groups: BTreeSet<String>,
    pub public_ip: Option<Ipv4Addr>,
    /// The chains its `egress` and `ingress` elements jump to (none when it has no element).
    pub out_chain: Option<String>,
    pub in_chain: Option<String>,
}

impl State {
    /// Refuses a group this mirror does not know, or one of another VPC than `vpc_id`.
    pub fn check_groups_in(&self, groups: &[String], vpc_id: &str) -> Result<(), NetError> {
        for id in groups {
            let group = self.groups.get(id).ok_or_else(|| NetError::UnknownSecurityGroup { id: id.clone() })?;
            if let Some(existing) = &group.vpc_id
                && existing != vpc_id
            {
                return Err(NetError::SecurityGroupVpc {
                    id: id.clone(),
                    existing: existing.clone(),
                    requested: vpc_id.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Rebuilds the mirror from the table's JSON listing.
    pub fn recover(table: &str, listing: &Value) -> State {
        let mut state = State::default();
        let mut members: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        let mut if_ip = Vec::new();
        let mut snat = BTreeMap::new();
        let mut lb_ips = Vec::new();
        let mut lb_ports: Vec<(Ipv4Addr, u16)> = Vec::new();
        let mut peers = Vec::new();
        let mut jumps: BTreeMap<(&str, String), String> = BTreeMap::new();
        let mut remote_jumps: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        let items = listing.get("nftables").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for item in items {
            if let Some(set) = item.get("set") {
                let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
                let elems = set.get("elem").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                if name == "vpc_cidrs" {
                    for elem in elems {
                        let (val, comment) = elem_parts(elem);
                        if let (Some(cidr), Some(id)) = (as_net(val), comment) {
                            state.vpcs.insert(id.to_string(), VpcStatus::new(table, id, cidr));
                        }
                    }
                } else if name == "announced" {
                    state.announced.extend(elems.iter().filter_map(|e| as_ip(elem_parts(e).0)));
                } else if name == "lb_addrs" {
                    lb_ips.extend(elems.iter().filter_map(|e| as_ip(elem_parts(e).0)));
                } else if let Some(group) = name.strip_prefix("sgm_") {
                    let group = id_from_nft_name(group);
                    state.member_sets.insert(group.clone());
                    let ips = elems.iter().filter_map(|e| as_ip(elem_parts(e).0));
                    members.entry(group).or_default().extend(ips);
                }
            } else if let Some(map) = item.get("map") {
                let name = map.get("name").and_then(Value::as_str).unwrap_or_default();
                let elems = map.get("elem").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                for pair in elems.iter().filter_map(Value::as_array) {
                    let [key, data] = pair.as_slice() else { continue };
                    let (key, comment) = elem_parts(key);
                    crate::vip::recover_element(&mut state.vips, name, key, comment);
                    match name {
                        "if_ip" => {
                            if let (Some(link), Some(id), Some(ip)) = (key.as_str(), comment, as_ip(data)) {
                                if_ip.push((link.to_string(), id.to_string(), ip));
                            }
                        }
                        "remote_in" => {
                            let target = data.get("jump").and_then(|j| j.get("target")).and_then(Value::as_str);
                            if let (Some(ip), Some(target)) = (as_ip(key), target) {
                                remote_jumps.insert(ip, target.to_string());
                            }
                        }
                        "peers" => {
                            if let (Some(ip), Some(vpc), Some(host)) = (as_ip(key), comment, as_ip(data)) {
                                peers.push((ip, vpc.to_string(), host));
                            }
                        }
                        "lb_in" => {
                            if let Some(pair) = as_ip_port(key) {
                                lb_ports.push(pair);
                            }
                        }
                        "egress" | "ingress" => {
                            let target = data.get("jump").and_then(|j| j.get("target")).and_then(Value::as_str);
                            if let (Some(link), Some(target)) = (key.as_str(), target) {
                                let map = if name == "egress" { "egress" } else { "ingress" };
                                jumps.insert((map, link.to_string()), target.to_string());
                            }
                        }
                        "snat_pub" => {
                            if let (Some(private), Some(public)) = (as_ip(key), as_ip(data)) {
                                snat.insert(private, public);
                            }
                        }
                        _ => {}
                    }
                }
            } else if let Some(chain) = item.get("chain") {
                let name = chain.get("name").and_then(Value::as_str).unwrap_or_default();
                if let Some(group) = name.strip_prefix("sgi_") {
                    state.groups.entry(id_from_nft_name(group)).or_default();
                } else if let Some(link) = name.strip_prefix("ovl_") {
                    state.overlay_links.insert(link.to_string());
                } else if crate::nft::is_interface_chain(name) {
                    state.interface_chains.insert(name.to_string(), false);
                }
            } else if let Some(rule) = item.get("rule") {
                let chain = rule.get("chain").and_then(Value::as_str).unwrap_or_default();
                if let Some(group) = chain.strip_prefix("sgi_").or_else(|| chain.strip_prefix("sge_")) {
                    let mut peers = BTreeSet::new();
                    collect_member_refs(rule.get("expr").unwrap_or(&Value::Null), &mut peers);
                    state.groups.entry(id_from_nft_name(group)).or_default().peers.extend(peers);
                }
            }
        }
        for (link, id, ip) in if_ip {
            let vpc_id = state.vpcs.values().find(|v| v.cidr.contains(&ip)).map(|v| v.id.clone());
            let groups = members.iter().filter(|(_, ips)| ips.contains(&ip)).map(|(g, _)| g.clone()).collect();
            let public_ip = snat.get(&ip).copied();
            let out_chain = jumps.remove(&("egress", link.clone()));
            let in_chain = jumps.remove(&("ingress", link.clone()));
            state.interfaces.insert(id, Iface { link, vpc_id, ip, groups, public_ip, out_chain, in_chain });
        }
        for (ip, vpc_id, host_ip) in peers {
            let groups = members.iter().filter(|(_, ips)| ips.contains(&ip)).map(|(g, _)| g.clone()).collect();
            let chain = remote_jumps.remove(&ip);
            state.remotes.insert(ip, Remote { vpc_id, host_ip, groups, chain });
        }
        for ip in lb_ips {
            let vpc_id = state.vpcs.values().find(|v| v.cidr.contains(&ip)).map(|v| v.id.clone());
            let groups = members.iter().filter(|(_, ips)| ips.contains(&ip)).map(|(g, _)| g.clone()).collect();
            let ports = lb_ports.iter().filter(|(a, _)| *a == ip).map(|(_, p)| *p).collect();
            let public_ip = snat.get(&ip).copied();
            state.lb_addrs.insert(ip, LbAddr { vpc_id, ports, groups, public_ip });
        }
        state
    }

    /// An interface, or a load balancer address, that is a member of `group`.
    pub fn interface_using_group(&self, group: &str) -> Option<String> {
        let interface = self.interfaces.iter().find(|(_, i)| i.groups.contains(group)).map(|(id, _)| id.clone());
        interface
            .or_else(|| {
                let (ip, _) = self.lb_addrs.iter().find(|(_, a)| a.groups.contains(group))?;
                Some(format!("load balancer address {ip}"))
            })
            .or_else(|| {
                let (ip, _) = self.remotes.iter().find(|(_, r)| r.groups.contains(group))?;
                Some(format!("remote interface {ip}"))
            })
    }

    /// Interface chains that no interface (or remote interface) jumps to.
    pub fn unused_interface_chains(&self) -> Vec<String> {
        let used: BTreeSet<&str> = self
            .interfaces
            .values()
            .flat_map(|i| [i.out_chain.as_deref(), i.in_chain.as_deref()])
            .chain(self.remotes.values().map(|r| r.chain.as_deref()))
            .flatten()
            .collect();
        self.interface_chains.keys().filter(|c| !used.contains(c.as_str())).cloned().collect()
    }

    /// A load balancer address in `vpc`.
    pub fn lb_addr_in_vpc(&self, vpc: &str) -> Option<Ipv4Addr> {
        self.lb_addrs.iter().find(|(_, a)| a.vpc_id.as_deref() == Some(vpc)).map(|(ip, _)| *ip)
    }

    pub fn interface_in_vpc(&self, vpc: &str) -> Option<&str> {
        self.interfaces.iter().find(|(_, i)| i.vpc_id.as_deref() == Some(vpc)).map(|(id, _)| id.as_str())
    }

    /// A group other than `group` whose rules name `group` as a peer.
    pub fn group_referencing(&self, group: &str) -> Option<&str> {
        self.groups.iter().find(|(id, g)| id.as_str() != group && g.peers.contains(group)).map(|(id, _)| id.as_str())
    }

    /// Member sets that no ensured group owns and no rule uses.
    pub fn orphan_member_sets(&self) -> Vec<String> {
        self.member_sets
            .iter()
            .filter(|g| {
                !self.groups.contains_key(*g)
                    && self.group_referencing(g).is_none()
                    && !self.remotes.values().any(|r| r.groups.contains(*g))
            })
            .cloned()
            .collect()
    }
}

/// An element, with its comment when it has one (`{"elem": {"val": .., "comment": ..}}`).
fn elem_parts(value: &Value) -> (&Value, Option<&str>) {
    match value.get("elem") {
        Some(elem) => (elem.get("val").unwrap_or(&Value::Null), elem.get("comment").and_then(Value::as_str)),
        None => (value, None),
    }
}

fn as_ip(value: &Value) -> Option<Ipv4Addr> {
    value.as_str()?.parse().ok()
}

/// A `lb_in` key: `{"concat": ["10.0.0.5", 80]}`.
fn as_ip_port(value: &Value) -> Option<(Ipv4Addr, u16)> {
    let parts = value.get("concat")?.as_array()?;
    let [ip, port] = parts.as_slice() else { return None };
    Some((as_ip(ip)?, u16::try_from(port.as_u64()?).ok()?))
}

pub(crate) fn as_net(value: &Value) -> Option<Ipv4Net> {
    if let Some(prefix) = value.get("prefix") {
        let addr = as_ip(prefix.get("addr")?)?;
        let len = u8::try_from(prefix.get("len")?.as_u64()?).ok()?;
        return Ipv4Net::new(addr, len).ok();
    }
    as_ip(value).map(Ipv4Net::from)
}

fn collect_member_refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            if let Some(group) = s.strip_prefix("@sgm_") {
                out.insert(id_from_nft_name(group));
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_member_refs(v, out)),
        Value::Object(fields) => fields.values().for_each(|v| collect_member_refs(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_from_listing() {
        // Shaped as nft 1.0.6 prints it.
        let listing: Value = serde_json::from_str(
            r#"{"nftables": [
            {"set": {"name": "vpc_cidrs", "elem": [{"elem": {"val": {"prefix": {"addr": "10.1.0.0", "len": 16}}, "comment": "vpc-1"}}]}},
            {"set": {"name": "sgm_sg_a", "elem": ["10.1.0.5"]}},
            {"set": {"name": "sgm_sg_b", "elem": ["10.1.7.7"]}},
            {"map": {"name": "peers", "elem": [[{"elem": {"val": "10.1.7.7", "comment": "vpc-1"}}, "192.0.2.2"]]}},
            {"map": {"name": "remote_in", "elem": [["10.1.7.7", {"jump": {"target": "rin_00000000000000bb"}}]]}},
            {"map": {"name": "if_ip", "elem": [[{"elem": {"val": "fl00000001", "comment": "eni-1"}}, "10.1.0.5"]]}},
            {"map": {"name": "egress", "elem": [["fl00000001", {"jump": {"target": "ifo_00000000000000aa"}}]]}},
            {"map": {"name": "ingress", "elem": [["fl00000001", {"jump": {"target": "in_fl00000001"}}]]}},
            {"map": {"name": "snat_pub", "elem": [["10.1.0.5", "198.18.0.7"], ["10.1.0.9", "198.18.0.8"]]}},
            {"set": {"name": "lb_addrs", "elem": ["10.1.0.9"]}},
            {"set": {"name": "sgm_sg_c", "elem": ["10.1.0.9"]}},
            {"map": {"name": "lb_in", "elem": [[{"concat": ["10.1.0.9", 80]}, {"jump": {"target": "lb_10_1_0_9"}}], [{"concat": ["10.1.0.9", 443]}, {"jump": {"target": "lb_10_1_0_9"}}]]}},
            {"chain": {"name": "sgi_sg_a"}},
            {"chain": {"name": "sge_sg_a"}},
            {"chain": {"name": "sgi_sg_c"}},
            {"chain": {"name": "ovl_flvx00000001"}},
            {"chain": {"name": "ifo_00000000000000aa"}},
            {"chain": {"name": "ifi_00000000000000aa"}},
            {"chain": {"name": "in_fl00000001"}},
            {"rule": {"chain": "sgi_sg_a", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@sgm_sg_b"}}, {"accept": null}]}}
        ]}"#,
        )
        .unwrap();
        let state = State::recover("t", &listing);
        assert_eq!(state.vpcs["vpc-1"].cidr.to_string(), "10.1.0.0/16");
        let iface = &state.interfaces["eni-1"];
        assert_eq!(iface.link, "fl00000001");
        assert_eq!(iface.vpc_id.as_deref(), Some("vpc-1"));
        assert_eq!(iface.groups.iter().collect::<Vec<_>>(), vec!["sg-a"]);
        assert_eq!(iface.public_ip, Some("198.18.0.7".parse().unwrap()));
        assert_eq!(iface.out_chain.as_deref(), Some("ifo_00000000000000aa"));
        assert_eq!(iface.in_chain.as_deref(), Some("in_fl00000001"));
        assert_eq!(state.interface_chains.len(), 3);
        assert!(state.interface_chains.values().all(|filled| !filled), "filled by an unknown version");
        assert_eq!(state.unused_interface_chains(), ["ifi_00000000000000aa"]);
        assert!(state.groups["sg-a"].peers.contains("sg-b"));
        assert_eq!(state.group_referencing("sg-b"), Some("sg-a"));
        assert!(state.orphan_member_sets().is_empty());
        let lb = &state.lb_addrs[&"10.1.0.9".parse().unwrap()];
        assert_eq!(lb.vpc_id.as_deref(), Some("vpc-1"));
        assert_eq!(lb.ports.iter().copied().collect::<Vec<_>>(), vec![80, 443]);
        assert_eq!(lb.groups.iter().collect::<Vec<_>>(), vec!["sg-c"]);
        assert_eq!(lb.public_ip, Some("198.18.0.8".parse().unwrap()));
        assert_eq!(state.interface_using_group("sg-c").as_deref(), Some("load balancer address 10.1.0.9"));
        let remote = &state.remotes[&"10.1.7.7".parse().unwrap()];
        assert_eq!((remote.vpc_id.as_str(), remote.host_ip.to_string()), ("vpc-1", "192.0.2.2".to_string()));
        assert_eq!(remote.groups.iter().collect::<Vec<_>>(), vec!["sg-b"]);
        assert_eq!(remote.chain.as_deref(), Some("rin_00000000000000bb"));
        assert_eq!(state.interface_using_group("sg-b").as_deref(), Some("remote interface 10.1.7.7"));
        assert!(state.overlay_links.contains("flvx00000001"));
    }
}
