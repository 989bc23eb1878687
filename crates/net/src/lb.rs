//! Load balancer addresses in a VPC: each is a `/32` on the VPC's host device (next to the
//! router and resolver), so the host's own sockets (the agent's load balancers) listen and
//! connect from it. Tasks of the VPC reach it on its listener ports through the `lb_in` map
//! (judged by the load balancer's groups' ingress rules), it is a member of its groups' sets
//! (`sgm_<sg>`), and its public address is 1:1 NAT'd to it, as for an interface.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::error::{NetError, Object};
use crate::network::{Inner, Network, forget, nl};
use crate::nft::{self, Script};
use crate::spec::{LbAddressSpec, check_id, vpc_link_name};
use crate::state::LbAddr;

impl Network {
    /// Makes the load balancer address exist as specified: rules and elements first, then the
    /// address on the VPC's host device. The VPC ([`Network::ensure_vpc`]) and the groups
    /// ([`Network::ensure_security_group`]) must exist.
    pub fn ensure_lb_address(&self, spec: &LbAddressSpec) -> Result<(), NetError> {
        check_id(&spec.vpc_id)?;
        let object = Object::LbAddress(spec.ip);
        let invalid = |reason: String| NetError::InvalidSpec { object: object.clone(), reason };
        let mut inner = self.lock();
        let Inner { host, conntrack, state } = &mut *inner;
        let vpc =
            state.vpcs.get(&spec.vpc_id).cloned().ok_or_else(|| NetError::UnknownVpc { id: spec.vpc_id.clone() })?;
        if !vpc.cidr.contains(&spec.ip) || spec.ip == vpc.router || spec.ip == vpc.resolver {
            return Err(invalid(format!("{} is not a free address of VPC {} ({})", spec.ip, vpc.id, vpc.cidr)));
        }
        if spec.security_groups.len() > 5 {
            return Err(invalid(format!("has {} security groups; at most 5", spec.security_groups.len())));
        }
        for id in &spec.security_groups {
            check_id(id)?;
        }
        state.check_groups_in(&spec.security_groups, &spec.vpc_id)?;
        if let Some((id, _)) = state.interfaces.iter().find(|(_, i)| {
            i.ip == spec.ip
                || (spec.public_ip.is_some() && (i.public_ip == spec.public_ip || Some(i.ip) == spec.public_ip))
        }) {
            return Err(NetError::AddressInUse {
                id: format!("load balancer {}", spec.ip),
                ip: spec.ip,
                other: id.clone(),
            });
        }
        if let Some(public) = spec.public_ip
            && let Some(v) = state.vpcs.values().find(|v| v.cidr.contains(&public))
        {
            return Err(invalid(format!("public address {public} is inside VPC {} ({})", v.id, v.cidr)));
        }
        let existing = state.lb_addrs.get(&spec.ip).cloned().unwrap_or_default();
        let ports: BTreeSet<u16> = spec.ports.iter().copied().collect();
        let groups: BTreeSet<String> = spec.security_groups.iter().cloned().collect();
        let (ip, chain) = (spec.ip, nft::lb_chain(spec.ip));
        let mut script = Script::new(&self.table);
        script.replace_chain(&chain, &nft::lb_rules(&spec.security_groups));
        script.cmd("add element", format_args!("lb_addrs {{ {ip} }}"));
        for port in ports.difference(&existing.ports) {
            script.cmd("add element", format_args!("lb_in {{ {ip} . {port} : jump {chain} }}"));
        }
        for port in existing.ports.difference(&ports) {
            script.delete_element("lb_in", &format!("{ip} . {port} : jump {chain}"), &format!("{ip} . {port}"));
        }
        for group in groups.difference(&existing.groups) {
            script.cmd("add element", format_args!("{} {{ {ip} }}", nft::member_set(group)));
        }
        for group in existing.groups.difference(&groups) {
            script.delete_element(&nft::member_set(group), &ip.to_string(), &ip.to_string());
        }
        if existing.public_ip != spec.public_ip {
            if let Some(old) = existing.public_ip {
                script.unmap_public(ip, old);
            }
            if let Some(public) = spec.public_ip {
                script.map_public(ip, public);
            }
        }
        self.nft.apply(&object, &script)?;
        if let Some(old) = existing.public_ip.filter(|old| Some(*old) != spec.public_ip) {
            forget(conntrack, &object, &[old])?;
        }
        let addr = LbAddr { vpc_id: Some(spec.vpc_id.clone()), ports, groups, public_ip: spec.public_ip };
        state.lb_addrs.insert(ip, addr);

        let name = vpc_link_name(&self.table, &spec.vpc_id);
        let link = host.link(&name).map_err(nl(&object, format!("get link {name}")))?;
        let link = link.ok_or_else(|| NetError::UnknownVpc { id: spec.vpc_id.clone() })?;
        host.replace_address(link.index, ip, 32, true).map_err(nl(&object, format!("add address {ip}/32 to {name}")))
    }

    /// Removes the load balancer address: the address first (so nothing new reaches it), then
    /// its rules and elements, then what conntrack remembers of it. Nothing to remove is not
    /// an error.
    pub fn remove_lb_address(&self, ip: Ipv4Addr) -> Result<(), NetError> {
        let object = Object::LbAddress(ip);
        let mut inner = self.lock();
        let Inner { host, conntrack, state } = &mut *inner;
        let Some(addr) = state.lb_addrs.get(&ip).cloned() else { return Ok(()) };
        let vpc_id =
            addr.vpc_id.clone().or_else(|| state.vpcs.values().find(|v| v.cidr.contains(&ip)).map(|v| v.id.clone()));
        if let Some(vpc_id) = vpc_id {
            let name = vpc_link_name(&self.table, &vpc_id);
            if let Some(link) = host.link(&name).map_err(nl(&object, format!("get link {name}")))? {
                host.delete_address(link.index, ip, 32)
                    .map_err(nl(&object, format!("delete address {ip}/32 from {name}")))?;
            }
        }
        let chain = nft::lb_chain(ip);
        let mut script = Script::new(&self.table);
        script.cmd("add chain", format_args!("{chain}"));
        for port in &addr.ports {
            script.delete_element("lb_in", &format!("{ip} . {port} : jump {chain}"), &format!("{ip} . {port}"));
        }
        for group in &addr.groups {
            script.delete_element(&nft::member_set(group), &ip.to_string(), &ip.to_string());
        }
        if let Some(public) = addr.public_ip {
            script.unmap_public(ip, public);
        }
        script.delete_element("lb_addrs", &ip.to_string(), &ip.to_string());
        script.delete_chain(&chain);
        self.nft.apply(&object, &script)?;
        state.lb_addrs.remove(&ip);
        let addrs: Vec<_> = [Some(ip), addr.public_ip].into_iter().flatten().collect();
        forget(conntrack, &object, &addrs)
    }

    /// Every load balancer address this table holds (after a restart: as the table has them;
    /// a VPC whose host side is gone shows as an empty id).
    pub fn list_lb_addresses(&self) -> Vec<LbAddressSpec> {
        let inner = self.lock();
        inner
            .state
            .lb_addrs
            .iter()
            .map(|(ip, a)| LbAddressSpec {
                vpc_id: a.vpc_id.clone().unwrap_or_default(),
                ip: *ip,
                ports: a.ports.iter().copied().collect(),
                security_groups: a.groups.iter().cloned().collect(),
                public_ip: a.public_ip,
            })
            .collect()
    }
}
