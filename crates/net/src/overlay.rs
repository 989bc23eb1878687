//! One VPC across hosts: per VPC and host, a VXLAN device (the VPC's VNI, the host's underlay
//! address as the outer source, no learning), and per interface of the VPC on another host a
//! `/32` route through that host (`via <its underlay address> onlink`), whose neighbour entry
//! on the device is the host's overlay MAC and whose FDB entry sends that MAC to the host.
//! Remote interfaces are members of their groups' sets here, so ingress is judged on the
//! destination host and egress on the source host by the same rules as between local tasks.
//!
//! The record: the `peers` map (remote address -> host, comment: VPC id) is a superset of the
//! routes (entries are added before their routes and removed after them), and the device's
//! neighbour entries are a superset of its FDB entries; both are read back after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::error::{NetError, Object};
use crate::netlink::{Route, Socket};
use crate::network::{Inner, Network, claim, enodev, nl};
use crate::nft::{self, Script, quote};
use crate::spec::*;
use crate::state::Remote;

impl Network {
    /// Makes the VPC's overlay match `spec`: the VXLAN device (recreated if its VNI or local
    /// address changed), every remote interface routed and in its groups, and no others. The VPC
    /// ([`Network::ensure_vpc`]) must exist. A remote address that a local interface or load
    /// balancer holds is skipped: the local one is live, the control plane's view is behind.
    pub fn ensure_overlay(&self, spec: &OverlaySpec) -> Result<OverlayStatus, NetError> {
        let object = Object::Vpc(spec.vpc_id.clone());
        let mut inner = self.lock();
        let Inner { host, state, .. } = &mut *inner;
        let vpc =
            state.vpcs.get(&spec.vpc_id).cloned().ok_or_else(|| NetError::UnknownVpc { id: spec.vpc_id.clone() })?;
        check_overlay(spec, &vpc)?;
        let (link, mtu) = self.ensure_overlay_link(host, &object, spec)?;

        let local: BTreeSet<Ipv4Addr> =
            state.interfaces.values().map(|i| i.ip).chain(state.lb_addrs.keys().copied()).collect();
        let mut wanted: BTreeMap<Ipv4Addr, Remote> = spec
            .remotes
            .iter()
            .filter(|r| !local.contains(&r.ip))
            .map(|r| {
                let remote = Remote {
                    vpc_id: spec.vpc_id.clone(),
                    host_ip: r.host_ip,
                    groups: r.security_groups.iter().cloned().collect(),
                    chain: None,
                };
                (r.ip, remote)
            })
            .collect();
        let current: BTreeMap<Ipv4Addr, Remote> =
            state.remotes.iter().filter(|(_, r)| r.vpc_id == spec.vpc_id).map(|(ip, r)| (*ip, r.clone())).collect();

        // Routes of remotes that went (or moved host) go before their record does.
        for (ip, old) in &current {
            if wanted.get(ip).is_none_or(|new| new.host_ip != old.host_ip) {
                host.delete_route(*ip, 32, link.index).map_err(nl(&object, format!("delete route {ip}/32")))?;
            }
        }
        let mut script = Script::new(&self.table);
        let name = quote(&link.name);
        let chain = nft::overlay_in_chain(&link.name);
        script.replace_chain(&chain, &nft::overlay_in_rules(&vpc));
        script.cmd("add element", format_args!("overlays {{ {name} }}"));
        script.cmd("add element", format_args!("underlay_addrs {{ {} }}", spec.local_ip));
        script.cmd("add element", format_args!("overlay_in {{ {name} : jump {chain} }}"));
        let mut new_sets = BTreeSet::new();
        for (ip, remote) in &wanted {
            let old = current.get(ip);
            if old.is_some_and(|o| o.host_ip != remote.host_ip) {
                script.delete_element("peers", &format!("{ip} : {}", old.unwrap().host_ip), &ip.to_string());
            }
            if old.is_none_or(|o| o.host_ip != remote.host_ip) {
                let vpc_id = quote(&spec.vpc_id);
                script.cmd("add element", format_args!("peers {{ {ip} comment {vpc_id} : {} }}", remote.host_ip));
            }
            let old_groups = old.map(|o| o.groups.clone()).unwrap_or_default();
            for group in remote.groups.difference(&old_groups) {
                if !state.member_sets.contains(group) {
                    script.member_set(group);
                    new_sets.insert(group.clone());
                }
                script.cmd("add element", format_args!("{} {{ {ip} }}", nft::member_set(group)));
            }
            for group in old_groups.difference(&remote.groups) {
                script.delete_element(&nft::member_set(group), &ip.to_string(), &ip.to_string());
            }
        }
        for (ip, old) in current.iter().filter(|(ip, _)| !wanted.contains_key(ip)) {
            remove_remote_elements(&mut script, *ip, old);
        }
        // This host's load balancers reach the remote interfaces as their groups allow,
        // judged here, from this host's underlay address.
        // One chain per set of groups, filled (again) here: which of the groups this host has
        // may have changed since.
        let mut filled = BTreeSet::new();
        for (ip, remote) in wanted.iter_mut() {
            let groups: Vec<&String> = remote.groups.iter().filter(|g| state.groups.contains_key(*g)).collect();
            let chain = nft::remote_in_chain(&vpc, &groups);
            if filled.insert(chain.clone()) {
                script.replace_chain(&chain, &nft::remote_in_rules(&vpc, &groups));
            }
            if let Some(old) = current.get(ip).and_then(|c| c.chain.as_ref()).filter(|old| **old != chain) {
                script.delete_element("remote_in", &format!("{ip} : jump {old}"), &ip.to_string());
            }
            script.cmd("add element", format_args!("remote_in {{ {ip} : jump {chain} }}"));
            remote.chain = Some(chain);
        }
        script.replace_chain(nft::OVERLAY_SNAT, &[format!("ip saddr @lb_addrs snat ip to {}", spec.local_ip)]);
        self.nft.apply(&object, &script)?;
        state.overlay_links.insert(link.name.clone());
        state.member_sets.extend(new_sets);
        state.remotes.retain(|_, r| r.vpc_id != spec.vpc_id);
        state.remotes.extend(wanted.clone());
        for chain in filled {
            state.interface_chains.insert(chain, true);
        }

        // Hosts first (FDB, then the neighbour entry that records it), then routes through them.
        let hosts: BTreeSet<Ipv4Addr> = wanted.values().map(|r| r.host_ip).collect();
        for &host_ip in &hosts {
            let mac = overlay_mac(host_ip);
            host.replace_fdb(link.index, mac, host_ip).map_err(nl(&object, format!("FDB entry for {host_ip}")))?;
            host.replace_neighbour(link.index, host_ip, mac)
                .map_err(nl(&object, format!("neighbour {host_ip} on {}", link.name)))?;
        }
        for (ip, remote) in &wanted {
            let route = Route {
                dst: *ip,
                dst_len: 32,
                oif: link.index,
                gateway: Some(remote.host_ip),
                prefsrc: Some(vpc.router),
                mtu: Some(mtu),
            };
            host.replace_route(&route).map_err(nl(&object, format!("route {ip}/32 via {}", remote.host_ip)))?;
        }
        let neighbours =
            host.neighbours(link.index).map_err(nl(&object, format!("list neighbours of {}", link.name)))?;
        for (host_ip, _) in neighbours.into_iter().filter(|(ip, _)| !hosts.contains(ip)) {
            host.delete_fdb(link.index, overlay_mac(host_ip), host_ip)
                .map_err(nl(&object, format!("delete FDB entry for {host_ip}")))?;
            host.delete_neighbour(link.index, host_ip).map_err(nl(&object, format!("delete neighbour {host_ip}")))?;
        }
        // Chains of sets of groups no remote interface has any more, and older versions'
        // per-address ones.
        self.remove_unused_interface_chains_in(&mut inner)?;
        Ok(OverlayStatus { vpc_id: spec.vpc_id.clone(), link: link.name, vni: spec.vni, mtu, remotes: wanted.len() })
    }

    /// The VPC's VXLAN device as `spec` wants it; returns it with the overlay's MTU (the
    /// underlay link's less [`VXLAN_OVERHEAD`]).
    fn ensure_overlay_link(
        &self,
        host: &mut Socket,
        object: &Object,
        spec: &OverlaySpec,
    ) -> Result<(crate::netlink::Link, u32), NetError> {
        let name = overlay_link_name(&self.table, &spec.vpc_id);
        let alias = link_alias(&self.table, "vxlan", &spec.vpc_id);
        let underlay = host.link_with_address(spec.local_ip).map_err(nl(object, "list addresses"))?;
        let underlay = underlay.ok_or_else(|| NetError::InvalidSpec {
            object: object.clone(),
            reason: format!("underlay address {} is on no link of this host", spec.local_ip),
        })?;
        let underlay_mtu = host
            .links()
            .map_err(nl(object, "list links"))?
            .into_iter()
            .find(|l| l.index == underlay)
            .and_then(|l| l.mtu)
            .unwrap_or(1500);
        let mtu = underlay_mtu.saturating_sub(VXLAN_OVERHEAD).max(576);
        if let Some(existing) = host.link(&name).map_err(nl(object, format!("get link {name}")))? {
            claim(&spec.vpc_id, &existing, &alias)?;
            if existing.vxlan != Some((spec.vni, Some(spec.local_ip))) {
                // A new VNI or underlay address: the device is remade (its routes go with it and
                // are put back below).
                host.delete_link(&name).map_err(nl(object, format!("delete link {name}")))?;
            }
        }
        let link = match host.link(&name).map_err(nl(object, format!("get link {name}")))? {
            Some(link) => link,
            None => {
                let mac = overlay_mac(spec.local_ip);
                host.create_vxlan(&name, mac, spec.vni, spec.local_ip, VXLAN_PORT, mtu).map_err(nl(
                    object,
                    format!("create VXLAN device {name} (VNI {}, local {})", spec.vni, spec.local_ip),
                ))?;
                let link = host.link(&name).map_err(nl(object, format!("get link {name}")))?;
                link.ok_or_else(|| NetError::netlink(object, format!("find new link {name}"), enodev()))?
            }
        };
        let new_mtu = (link.mtu != Some(mtu)).then_some(mtu);
        if !link.up || link.alias.as_deref() != Some(alias.as_str()) || new_mtu.is_some() {
            host.set_link(link.index, None, Some(&alias), new_mtu).map_err(nl(object, format!("set up {name}")))?;
        }
        Ok((link, mtu))
    }

    /// Removes the VPC's overlay: its device (taking its routes, neighbour and FDB entries
    /// with it), then the remote interfaces' elements and the device's chain. Nothing to
    /// remove is not an error.
    pub fn remove_overlay(&self, vpc_id: &str) -> Result<(), NetError> {
        check_id(vpc_id)?;
        let mut inner = self.lock();
        self.remove_overlay_in(&mut inner, vpc_id)
    }

    pub(crate) fn remove_overlay_in(&self, inner: &mut Inner, vpc_id: &str) -> Result<(), NetError> {
        let object = Object::Vpc(vpc_id.to_string());
        let name = overlay_link_name(&self.table, vpc_id);
        let alias = link_alias(&self.table, "vxlan", vpc_id);
        let link = inner.host.link(&name).map_err(nl(&object, format!("get link {name}")))?;
        let has_remotes = inner.state.remotes.values().any(|r| r.vpc_id == vpc_id);
        if link.is_none() && !has_remotes && !inner.state.overlay_links.contains(&name) {
            return Ok(());
        }
        if let Some(link) = link {
            claim(vpc_id, &link, &alias)?;
            inner.host.delete_link(&name).map_err(nl(&object, format!("delete link {name}")))?;
        }
        let remotes: Vec<(Ipv4Addr, Remote)> =
            inner.state.remotes.iter().filter(|(_, r)| r.vpc_id == vpc_id).map(|(ip, r)| (*ip, r.clone())).collect();
        let mut script = Script::new(&self.table);
        for (ip, remote) in &remotes {
            remove_remote_elements(&mut script, *ip, remote);
        }
        remove_device_elements(&mut script, &name);
        let last = inner.state.overlay_links.iter().all(|l| *l == name);
        if last {
            script.cmd("flush set", format_args!("underlay_addrs"));
            script.cmd("flush chain", format_args!("{}", nft::OVERLAY_SNAT));
        }
        self.nft.apply(&object, &script)?;
        inner.state.remotes.retain(|_, r| r.vpc_id != vpc_id);
        inner.state.overlay_links.remove(&name);
        self.remove_unused_interface_chains_in(inner)
    }

    /// Forgets a remote interface whose address a local interface is about to take (the task
    /// moved here before the other host's view caught up).
    pub(crate) fn forget_remote_in(&self, inner: &mut Inner, ip: Ipv4Addr) -> Result<(), NetError> {
        let Some(remote) = inner.state.remotes.get(&ip).cloned() else { return Ok(()) };
        let object = Object::Vpc(remote.vpc_id.clone());
        let name = overlay_link_name(&self.table, &remote.vpc_id);
        if let Some(link) = inner.host.link(&name).map_err(nl(&object, format!("get link {name}")))? {
            inner.host.delete_route(ip, 32, link.index).map_err(nl(&object, format!("delete route {ip}/32")))?;
        }
        let mut script = Script::new(&self.table);
        remove_remote_elements(&mut script, ip, &remote);
        self.nft.apply(&object, &script)?;
        inner.state.remotes.remove(&ip);
        Ok(())
    }

    /// Removes the `ovl_<dev>` chains (and elements) of VXLAN devices that belong to none of
    /// `vpcs` and have no device left (after a crash between the two).
    pub(crate) fn remove_orphan_overlay_chains_in(&self, inner: &mut Inner, vpcs: &[String]) -> Result<(), NetError> {
        let object = Object::Network(self.table.clone());
        let kept: BTreeSet<String> = vpcs.iter().map(|v| overlay_link_name(&self.table, v)).collect();
        let orphans: Vec<String> = inner.state.overlay_links.iter().filter(|l| !kept.contains(*l)).cloned().collect();
        if orphans.is_empty() {
            return Ok(());
        }
        let mut script = Script::new(&self.table);
        for name in &orphans {
            if inner.host.link(name).map_err(nl(&object, format!("get link {name}")))?.is_some() {
                continue;
            }
            remove_device_elements(&mut script, name);
        }
        if inner.state.overlay_links.iter().all(|l| orphans.contains(l)) {
            script.cmd("flush set", format_args!("underlay_addrs"));
        }
        self.nft.apply(&object, &script)?;
        inner.state.overlay_links.retain(|l| !orphans.contains(l));
        Ok(())
    }

    /// The VPCs this table has an overlay device or remote interfaces for.
    pub(crate) fn overlay_vpcs_in(&self, inner: &mut Inner) -> Result<BTreeSet<String>, NetError> {
        let object = Object::Network(self.table.clone());
        let mut vpcs: BTreeSet<String> = inner.state.remotes.values().map(|r| r.vpc_id.clone()).collect();
        for link in inner.host.links().map_err(nl(&object, "list links"))? {
            if let Some(id) = link.alias.as_deref().and_then(|a| parse_alias(&self.table, "vxlan", a)) {
                vpcs.insert(id.to_string());
            }
        }
        Ok(vpcs)
    }

    /// Each VPC with an overlay here and how many remote interfaces it routes.
    pub fn list_overlays(&self) -> Result<Vec<(String, usize)>, NetError> {
        let mut inner = self.lock();
        let vpcs = self.overlay_vpcs_in(&mut inner)?;
        let count = |vpc: &String| inner.state.remotes.values().filter(|r| &r.vpc_id == vpc).count();
        Ok(vpcs.iter().map(|v| (v.clone(), count(v))).collect())
    }
}

fn remove_device_elements(script: &mut Script, link: &str) {
    let (quoted, chain) = (quote(link), nft::overlay_in_chain(link));
    script.cmd("add chain", format_args!("{chain}"));
    script.delete_element("overlay_in", &format!("{quoted} : jump {chain}"), &quoted);
    script.delete_element("overlays", &quoted, &quoted);
    script.delete_chain(&chain);
}

/// Its chain is shared: it goes once unused (`Network::remove_unused_interface_chains_in`).
fn remove_remote_elements(script: &mut Script, ip: Ipv4Addr, remote: &Remote) {
    if let Some(chain) = &remote.chain {
        script.cmd("add chain", format_args!("{chain}"));
        script.delete_element("remote_in", &format!("{ip} : jump {chain}"), &ip.to_string());
    }
    script.delete_element("peers", &format!("{ip} : {}", remote.host_ip), &ip.to_string());
    for group in &remote.groups {
        script.delete_element(&nft::member_set(group), &ip.to_string(), &ip.to_string());
    }
}
