//! `Network`: the declarative, idempotent API over one nft table and the host links it owns.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};

use crate::error::{NetError, NetlinkError, Object};
use crate::netlink::{Route, Socket};
use crate::netns;
use crate::nft::{self, Direction, Nft, Script, quote};
use crate::spec::*;
use crate::state::{Group, Iface, State};

/// The host data plane. Calls are synchronous and serialised (use `spawn_blocking` from
/// async code); each either completes or leaves a state that the same call, repeated, or
/// `remove_*`/`cleanup`, finishes.
pub struct Network {
    pub(crate) table: String,
    host_netns: Option<File>,
    pub(crate) nft: Nft,
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    /// A route socket in the host namespace.
    pub(crate) host: Socket,
    /// A conntrack socket there.
    pub(crate) conntrack: Socket,
    pub(crate) state: State,
}

pub(crate) fn nl(object: &Object, op: impl Into<String>) -> impl FnOnce(NetlinkError) -> NetError {
    let object = object.clone();
    let op = op.into();
    move |source| NetError::netlink(&object, op, source)
}

fn open_socket(object: &Object, netns: Option<&File>, open: fn() -> io::Result<Socket>) -> Result<Socket, NetError> {
    let opened = match netns {
        None => open(),
        Some(netns) => netns::run_in_file(netns, open).and_then(|r| r),
    };
    opened.map_err(|e| NetError::netlink(object, "open socket", NetlinkError::from_io(e)))
}

/// Drops conntrack's memory of `addrs`. Kernels without ctnetlink have nothing to forget
/// that this crate could reach, so "not supported" is not an error.
pub(crate) fn forget(conntrack: &mut Socket, object: &Object, addrs: &[std::net::Ipv4Addr]) -> Result<(), NetError> {
    match conntrack.forget_connections(addrs) {
        Err(e) if e.errno == libc::EOPNOTSUPP || e.errno == libc::EPROTONOSUPPORT => Ok(()),
        result => result.map(drop).map_err(nl(object, format!("delete tracked connections of {addrs:?}"))),
    }
}

/// Routing between interfaces needs forwarding on, as for any router (Docker and Kubernetes
/// turn it on the same way).
fn enable_forwarding(object: &Object, netns: Option<&File>) -> Result<(), NetError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let set = || -> io::Result<()> {
        if std::fs::read_to_string(PATH)?.trim() != "1" {
            std::fs::write(PATH, "1")?;
        }
        Ok(())
    };
    let result = match netns {
        None => set(),
        Some(netns) => netns::run_in_file(netns, set).and_then(|r| r),
    };
    result.map_err(|source| NetError::Sysctl { object: object.clone(), path: PATH, source })
}

impl Network {
    /// Creates (or adopts) the table and its base chains and reads back what an earlier
    /// `Network` on the same table left.
    pub fn new(config: NetConfig) -> Result<Network, NetError> {
        check_table(&config.nft_table)?;
        let table = config.nft_table.clone();
        let object = Object::Network(table.clone());
        let host_netns = match &config.host_netns {
            None => None,
            Some(path) => Some(File::open(path).map_err(|source| NetError::Netns {
                object: object.clone(),
                path: path.clone(),
                source,
            })?),
        };
        let host = open_socket(&object, host_netns.as_ref(), Socket::open)?;
        let conntrack = open_socket(&object, host_netns.as_ref(), Socket::open_conntrack)?;
        enable_forwarding(&object, host_netns.as_ref())?;
        let nft_netns = match &host_netns {
            None => None,
            Some(file) => Some(file.try_clone().map_err(|source| NetError::Netns {
                object: object.clone(),
                path: config.host_netns.clone().unwrap_or_default(),
                source,
            })?),
        };
        let nft = Nft::new(nft_netns);
        let mut script = Script::new(&table);
        nft::base_ruleset(&mut script, config.uplink.as_deref());
        nft.apply(&object, &script)?;
        let state = State::recover(&table, &nft.list_table(&object, &table)?);
        Ok(Network { table, host_netns, nft, inner: Mutex::new(Inner { host, conntrack, state }) })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the VPC's addresses known to the rules and puts its router (base+1) and resolver
    /// (base+2) addresses on a host dummy device.
    pub fn ensure_vpc(&self, spec: &VpcSpec) -> Result<VpcStatus, NetError> {
        check_vpc(spec)?;
        let object = Object::Vpc(spec.id.clone());
        let status = VpcStatus::new(&self.table, &spec.id, spec.cidr);
        let mut inner = self.lock();
        let Inner { host, state, .. } = &mut *inner;
        match state.vpcs.get(&spec.id) {
            Some(existing) if existing.cidr != spec.cidr => {
                return Err(NetError::VpcCidrChanged {
                    id: spec.id.clone(),
                    existing: existing.cidr,
                    requested: spec.cidr,
                });
            }
            Some(_) => {}
            None => {
                if let Some(other) =
                    state.vpcs.values().find(|v| v.cidr.contains(&spec.cidr) || spec.cidr.contains(&v.cidr))
                {
                    return Err(NetError::VpcOverlap {
                        id: spec.id.clone(),
                        cidr: spec.cidr,
                        other: other.id.clone(),
                        other_cidr: other.cidr,
                    });
                }
                let mut script = Script::new(&self.table);
                nft::vpc_elements(&mut script, &status, false);
                self.nft.apply(&object, &script)?;
                state.vpcs.insert(spec.id.clone(), status.clone());
            }
        }
        let name = &status.host_link;
        let alias = link_alias(&self.table, "vpc", &spec.id);
        let link = match host.link(name).map_err(nl(&object, format!("get link {name}")))? {
            Some(link) => link,
            None => {
                host.create_dummy(name).map_err(nl(&object, format!("create dummy {name}")))?;
                let link = host.link(name).map_err(nl(&object, format!("get link {name}")))?;
                link.ok_or_else(|| NetError::netlink(&object, format!("find new link {name}"), enodev()))?
            }
        };
        claim(&spec.id, &link, &alias)?;
        if !link.up || link.alias.as_deref() != Some(alias.as_str()) {
            host.set_link(link.index, None, Some(&alias), None).map_err(nl(&object, format!("set up {name}")))?;
        }
        for addr in [status.router, status.resolver] {
            host.replace_address(link.index, addr, 32, true)
                .map_err(nl(&object, format!("add address {addr}/32 to {name}")))?;
        }
        Ok(status)
    }

    /// Removes the VPC's dummy device and elements. Refused while an interface is in it.
    pub fn remove_vpc(&self, id: &str) -> Result<(), NetError> {
        check_id(id)?;
        let mut inner = self.lock();
        self.remove_vpc_in(&mut inner, id)
    }

    fn remove_vpc_in(&self, inner: &mut Inner, id: &str) -> Result<(), NetError> {
        let object = Object::Vpc(id.to_string());
        if let Some(interface) = inner.state.interface_in_vpc(id) {
            return Err(NetError::VpcInUse { id: id.to_string(), interface: interface.to_string() });
        }
        if let Some(ip) = inner.state.lb_addr_in_vpc(id) {
            return Err(NetError::VpcInUse { id: id.to_string(), interface: format!("load balancer address {ip}") });
        }
        self.remove_overlay_in(inner, id)?;
        let name = vpc_link_name(&self.table, id);
        delete_own_link(&mut inner.host, &object, id, &name, &link_alias(&self.table, "vpc", id))?;
        if let Some(status) = inner.state.vpcs.get(id) {
            let mut script = Script::new(&self.table);
            nft::vpc_elements(&mut script, status, true);
            self.nft.apply(&object, &script)?;
            inner.state.vpcs.remove(id);
        }
        Ok(())
    }

    /// Creates the group or atomically replaces its rules; running interfaces see the new
    /// rules as soon as this returns. Connections already established stay up (as on AWS).
    pub fn ensure_security_group(&self, spec: &SecurityGroupSpec) -> Result<(), NetError> {
        check_group(spec)?;
        let object = Object::SecurityGroup(spec.id.clone());
        let mut inner = self.lock();
        let state = &mut inner.state;
        if let Some(Group { vpc_id: Some(existing), .. }) = state.groups.get(&spec.id)
            && *existing != spec.vpc_id
        {
            return Err(NetError::SecurityGroupVpc {
                id: spec.id.clone(),
                existing: existing.clone(),
                requested: spec.vpc_id.clone(),
            });
        }
        let peers: BTreeSet<String> = spec
            .ingress
            .iter()
            .chain(&spec.egress)
            .filter_map(|r| match &r.peer {
                Peer::SecurityGroup(g) => Some(g.clone()),
                Peer::Cidr(_) => None,
            })
            .collect();
        let mut script = Script::new(&self.table);
        script.member_set(&spec.id);
        for peer in &peers {
            script.member_set(peer);
        }
        let ingress: Vec<String> = spec.ingress.iter().map(|r| nft::group_rule(r, Direction::Ingress)).collect();
        let egress: Vec<String> = spec.egress.iter().map(|r| nft::group_rule(r, Direction::Egress)).collect();
        script.replace_chain(&nft::ingress_chain(&spec.id), &ingress);
        script.replace_chain(&nft::egress_chain(&spec.id), &egress);
        let group = Group { vpc_id: Some(spec.vpc_id.clone()), peers: peers.clone() };
        let previous = state.groups.insert(spec.id.clone(), group);
        state.member_sets.insert(spec.id.clone());
        state.member_sets.extend(peers);
        let orphans = state.orphan_member_sets();
        for orphan in &orphans {
            script.delete_member_set(orphan);
        }
        if let Err(e) = self.nft.apply(&object, &script) {
            // Put the mirror back as the table still is.
            match previous {
                Some(previous) => state.groups.insert(spec.id.clone(), previous),
                None => state.groups.remove(&spec.id),
            };
            return Err(e);
        }
        for orphan in orphans {
            state.member_sets.remove(&orphan);
        }
        Ok(())
    }

    /// Removes the group. Refused while an interface is in it or another group's rules name it.
    pub fn remove_security_group(&self, id: &str) -> Result<(), NetError> {
        check_id(id)?;
        let mut inner = self.lock();
        if let Some(interface) = inner.state.interface_using_group(id) {
            return Err(NetError::SecurityGroupInUse { id: id.to_string(), interface: interface.to_string() });
        }
        if let Some(by) = inner.state.group_referencing(id) {
            return Err(NetError::SecurityGroupReferenced { id: id.to_string(), by: by.to_string() });
        }
        self.remove_groups_in(&mut inner, &[id.to_string()])
    }

    /// Deletes the chains of `ids` and every member set left unowned and unused.
    fn remove_groups_in(&self, inner: &mut Inner, ids: &[String]) -> Result<(), NetError> {
        let object = match ids {
            [id] => Object::SecurityGroup(id.clone()),
            _ => Object::Network(self.table.clone()),
        };
        let state = &mut inner.state;
        for id in ids {
            if let Some(interface) = state.interface_using_group(id) {
                return Err(NetError::SecurityGroupInUse { id: id.clone(), interface: interface.to_string() });
            }
        }
        let mut script = Script::new(&self.table);
        for id in ids {
            script.delete_chain(&nft::ingress_chain(id)).delete_chain(&nft::egress_chain(id));
        }
        let removed: Vec<(String, Option<Group>)> =
            ids.iter().map(|id| (id.clone(), state.groups.remove(id))).collect();
        let orphans = state.orphan_member_sets();
        for orphan in &orphans {
            script.delete_member_set(orphan);
        }
        if let Err(e) = self.nft.apply(&object, &script) {
            for (id, group) in removed {
                if let Some(group) = group {
                    state.groups.insert(id, group);
                }
            }
            return Err(e);
        }
        for orphan in orphans {
            state.member_sets.remove(&orphan);
        }
        Ok(())
    }

    /// Makes the task's interface exist as specified: rules first (so the link is never
    /// unguarded), then the veth pair, addresses, neighbour and routes on both sides.
    pub fn ensure_interface(&self, spec: &InterfaceSpec) -> Result<InterfaceStatus, NetError> {
        check_id(&spec.id)?;
        let object = Object::Interface(spec.id.clone());
        let mut inner = self.lock();
        // The address was another host's until now: this host's record of that goes first.
        self.forget_remote_in(&mut inner, spec.ip)?;
        let Inner { host, conntrack, state } = &mut *inner;
        let vpc =
            state.vpcs.get(&spec.vpc_id).cloned().ok_or_else(|| NetError::UnknownVpc { id: spec.vpc_id.clone() })?;
        check_interface(spec, &vpc)?;
        for id in &spec.security_groups {
            let group = state.groups.get(id).ok_or_else(|| NetError::UnknownSecurityGroup { id: id.clone() })?;
            if let Some(vpc_id) = &group.vpc_id
                && *vpc_id != spec.vpc_id
            {
                return Err(NetError::SecurityGroupVpc {
                    id: id.clone(),
                    existing: vpc_id.clone(),
                    requested: spec.vpc_id.clone(),
                });
            }
        }
        if let Some(public) = spec.public_ip
            && let Some(v) = state.vpcs.values().find(|v| v.cidr.contains(&public))
        {
            let reason = format!("public address {public} is inside VPC {} ({})", v.id, v.cidr);
            return Err(NetError::InvalidSpec { object, reason });
        }
        for (other, iface) in &state.interfaces {
            if *other == spec.id {
                continue;
            }
            if iface.ip == spec.ip || (spec.public_ip.is_some() && iface.public_ip == spec.public_ip) {
                let ip = if iface.ip == spec.ip { spec.ip } else { spec.public_ip.unwrap_or(spec.ip) };
                return Err(NetError::AddressInUse { id: spec.id.clone(), ip, other: other.clone() });
            }
        }
        let existing = state.interfaces.get(&spec.id).cloned();
        if let Some(existing) = &existing {
            if existing.ip != spec.ip {
                let existing = existing.ip.to_string();
                return Err(NetError::InterfaceChanged { id: spec.id.clone(), field: "address", existing });
            }
            if let Some(vpc_id) = &existing.vpc_id
                && *vpc_id != spec.vpc_id
            {
                return Err(NetError::InterfaceChanged { id: spec.id.clone(), field: "VPC", existing: vpc_id.clone() });
            }
        }
        let link =
            existing.as_ref().map(|e| e.link.clone()).unwrap_or_else(|| interface_link_name(&self.table, &spec.id));
        let groups: BTreeSet<String> = spec.security_groups.iter().cloned().collect();
        let (out_chain, in_chain) = (nft::interface_out_chain(&link), nft::interface_in_chain(&link));
        let ip = spec.ip;
        let mut script = Script::new(&self.table);
        script.replace_chain(&out_chain, &nft::interface_out_rules(ip, &vpc, &spec.security_groups));
        script.replace_chain(&in_chain, &nft::interface_in_rules(&vpc, &spec.security_groups));
        let name = quote(&link);
        script
            .cmd("add element", format_args!("ifaces {{ {name} }}"))
            .cmd("add element", format_args!("if_ip {{ {name} comment {} : {ip} }}", quote(&spec.id)))
            .cmd("add element", format_args!("egress {{ {name} : jump {out_chain} }}"))
            .cmd("add element", format_args!("ingress {{ {name} : jump {in_chain} }}"));
        let old_groups = existing.as_ref().map(|e| e.groups.clone()).unwrap_or_default();
        for group in groups.difference(&old_groups) {
            script.cmd("add element", format_args!("{} {{ {ip} }}", nft::member_set(group)));
        }
        for group in old_groups.difference(&groups) {
            script.delete_element(&nft::member_set(group), &ip.to_string(), &ip.to_string());
        }
        let old_public = existing.as_ref().and_then(|e| e.public_ip);
        if old_public != spec.public_ip {
            if let Some(old) = old_public {
                script.unmap_public(ip, old);
            }
            if let Some(public) = spec.public_ip {
                script.map_public(ip, public);
            }
        }
        self.nft.apply(&object, &script)?;
        if let Some(old) = old_public.filter(|old| Some(*old) != spec.public_ip) {
            forget(conntrack, &object, &[old])?;
        }
        let iface =
            Iface { link: link.clone(), vpc_id: Some(spec.vpc_id.clone()), ip, groups, public_ip: spec.public_ip };
        state.interfaces.insert(spec.id.clone(), iface);

        let task_netns = File::open(&spec.netns).map_err(|source| NetError::Netns {
            object: object.clone(),
            path: spec.netns.clone(),
            source,
        })?;
        let alias = link_alias(&self.table, "eni", &spec.id);
        let host_link = match host.link(&link).map_err(nl(&object, format!("get link {link}")))? {
            Some(l) => l,
            None => {
                host.create_veth(&link, HOST_MAC, TASK_LINK, spec.mac, task_netns.as_raw_fd(), VPC_MTU)
                    .map_err(nl(&object, format!("create veth {link} / {TASK_LINK} in {}", spec.netns.display())))?;
                let l = host.link(&link).map_err(nl(&object, format!("get link {link}")))?;
                l.ok_or_else(|| NetError::netlink(&object, format!("find new link {link}"), enodev()))?
            }
        };
        claim(&spec.id, &host_link, &alias)?;
        // A link made by an older version has the default MTU: it is raised in place.
        let mtu = (host_link.mtu != Some(VPC_MTU)).then_some(VPC_MTU);
        if !host_link.up || host_link.alias.as_deref() != Some(alias.as_str()) || mtu.is_some() {
            host.set_link(host_link.index, None, Some(&alias), mtu).map_err(nl(&object, format!("set up {link}")))?;
        }
        // The task side first, and the host's neighbour entry for the task fixed like the
        // task's for its gateway: the route appears only once the task can answer, and the host
        // never ARPs for it. (An ARP sent before the task side was up failed, and the first
        // connection to a new task then stalled for the kernel's 1 s retry.)
        self.configure_task_side(&object, spec, &vpc, &task_netns)?;
        host.replace_neighbour(host_link.index, ip, spec.mac).map_err(nl(&object, format!("neighbour {ip}")))?;
        let route =
            Route { dst: ip, dst_len: 32, oif: host_link.index, gateway: None, prefsrc: Some(vpc.router), mtu: None };
        host.replace_route(&route).map_err(nl(&object, format!("route {ip}/32 dev {link}")))?;
        Ok(InterfaceStatus {
            id: spec.id.clone(),
            host_link: link,
            host_mac: HOST_MAC,
            link_present: true,
            vpc_id: Some(spec.vpc_id.clone()),
            ip: Some(ip),
            public_ip: spec.public_ip,
            security_groups: spec.security_groups.clone(),
        })
    }

    /// Inside the task: `eth0` up with its MAC, MTU and `ip/prefix`, the gateway's permanent
    /// neighbour entry, and the subnet, VPC and default routes through the gateway. The address
    /// has no prefix route, so even same-subnet traffic goes through the host (and its rules).
    /// The VPC is reached at [`VPC_MTU`], everything else at [`INTERNET_MTU`] (the default
    /// route's MTU).
    fn configure_task_side(
        &self,
        object: &Object,
        spec: &InterfaceSpec,
        vpc: &VpcStatus,
        netns: &File,
    ) -> Result<(), NetError> {
        let mut task = netns::run_in_file(netns, Socket::open).and_then(|r| r).map_err(|e| {
            NetError::netlink(
                object,
                format!("open route socket in {}", spec.netns.display()),
                NetlinkError::from_io(e),
            )
        })?;
        let eth0 = task.link(TASK_LINK).map_err(nl(object, format!("get link {TASK_LINK}")))?;
        let eth0 = eth0.ok_or_else(|| {
            NetError::netlink(object, format!("find {TASK_LINK} in {}", spec.netns.display()), enodev())
        })?;
        if !eth0.up || eth0.mac != Some(spec.mac) || eth0.mtu != Some(VPC_MTU) {
            let mac = (eth0.mac != Some(spec.mac)).then_some(spec.mac);
            let mtu = (eth0.mtu != Some(VPC_MTU)).then_some(VPC_MTU);
            task.set_link(eth0.index, mac, None, mtu).map_err(nl(object, format!("set up {TASK_LINK}")))?;
        }
        task.replace_address(eth0.index, spec.ip, spec.prefix_len, false)
            .map_err(nl(object, format!("add address {}/{} to {TASK_LINK}", spec.ip, spec.prefix_len)))?;
        task.replace_neighbour(eth0.index, GATEWAY, HOST_MAC).map_err(nl(object, format!("neighbour {GATEWAY}")))?;
        let subnet = ipnet::Ipv4Net::new(spec.ip, spec.prefix_len).expect("checked").trunc();
        let mut routes = vec![(subnet.network(), spec.prefix_len, None)];
        if vpc.cidr != subnet {
            routes.push((vpc.cidr.network(), vpc.cidr.prefix_len(), None));
        }
        routes.push((std::net::Ipv4Addr::UNSPECIFIED, 0, Some(INTERNET_MTU)));
        for (dst, dst_len, mtu) in routes {
            let route = Route { dst, dst_len, oif: eth0.index, gateway: Some(GATEWAY), prefsrc: None, mtu };
            task.replace_route(&route).map_err(nl(object, format!("route {dst}/{dst_len} via {GATEWAY}")))?;
        }
        Ok(())
    }

    /// Removes the interface: link first (taking its peer and routes with it), then its
    /// rules and elements. Nothing to remove is not an error.
    pub fn remove_interface(&self, id: &str) -> Result<(), NetError> {
        check_id(id)?;
        let mut inner = self.lock();
        self.remove_interface_in(&mut inner, id)
    }

    fn remove_interface_in(&self, inner: &mut Inner, id: &str) -> Result<(), NetError> {
        let object = Object::Interface(id.to_string());
        let known = inner.state.interfaces.get(id).cloned();
        let link = known.as_ref().map(|i| i.link.clone()).unwrap_or_else(|| interface_link_name(&self.table, id));
        delete_own_link(&mut inner.host, &object, id, &link, &link_alias(&self.table, "eni", id))?;
        let Some(iface) = known else { return Ok(()) };
        let (out_chain, in_chain) = (nft::interface_out_chain(&link), nft::interface_in_chain(&link));
        let (name, ip) = (quote(&link), iface.ip);
        let mut script = Script::new(&self.table);
        script.cmd("add chain", format_args!("{out_chain}")).cmd("add chain", format_args!("{in_chain}"));
        script
            .delete_element("egress", &format!("{name} : jump {out_chain}"), &name)
            .delete_element("ingress", &format!("{name} : jump {in_chain}"), &name)
            .delete_element("ifaces", &name, &name)
            .delete_element("if_ip", &format!("{name} : {ip}"), &name);
        for group in &iface.groups {
            script.delete_element(&nft::member_set(group), &ip.to_string(), &ip.to_string());
        }
        if let Some(public) = iface.public_ip {
            script.unmap_public(ip, public);
        }
        script.delete_chain(&out_chain).delete_chain(&in_chain);
        self.nft.apply(&object, &script)?;
        inner.state.interfaces.remove(id);
        let addrs: Vec<_> = [Some(ip), iface.public_ip].into_iter().flatten().collect();
        forget(&mut inner.conntrack, &object, &addrs)?;
        Ok(())
    }

    /// Every interface this table has rules or a host link for, for orphan detection.
    pub fn list_interfaces(&self) -> Result<Vec<InterfaceStatus>, NetError> {
        let mut inner = self.lock();
        let object = Object::Network(self.table.clone());
        let links = inner.host.links().map_err(nl(&object, "list links"))?;
        let mut out: BTreeMap<String, InterfaceStatus> = inner
            .state
            .interfaces
            .iter()
            .map(|(id, i)| {
                let status = InterfaceStatus {
                    id: id.clone(),
                    host_link: i.link.clone(),
                    host_mac: HOST_MAC,
                    link_present: links.iter().any(|l| l.name == i.link),
                    vpc_id: i.vpc_id.clone(),
                    ip: Some(i.ip),
                    public_ip: i.public_ip,
                    security_groups: i.groups.iter().cloned().collect(),
                };
                (id.clone(), status)
            })
            .collect();
        for link in &links {
            let Some(id) = link.alias.as_deref().and_then(|a| parse_alias(&self.table, "eni", a)) else { continue };
            out.entry(id.to_string()).or_insert_with(|| InterfaceStatus {
                id: id.to_string(),
                host_link: link.name.clone(),
                host_mac: link.mac.unwrap_or(HOST_MAC),
                link_present: true,
                vpc_id: None,
                ip: None,
                public_ip: None,
                security_groups: Vec::new(),
            });
        }
        Ok(out.into_values().collect())
    }

    /// Removes every interface, group and VPC of this table that is not kept, wherever it
    /// came from: after a crash, interfaces found only as links are removed too. A kept
    /// interface keeps its VPC and groups (removing them is refused with the usual errors);
    /// a kept group keeps the member sets its rules name.
    pub fn cleanup(
        &self,
        keep: &[String],
        keep_vpcs: &[String],
        keep_sgs: &[String],
    ) -> Result<CleanupReport, NetError> {
        let mut report = CleanupReport::default();
        let ids: Vec<String> =
            self.list_interfaces()?.into_iter().map(|i| i.id).filter(|id| !keep.contains(id)).collect();
        let mut inner = self.lock();
        for id in ids {
            self.remove_interface_in(&mut inner, &id)?;
            report.interfaces.push(id);
        }
        // Remote interfaces are members of groups: the overlays of VPCs not kept go first.
        for vpc in self.overlay_vpcs_in(&mut inner)? {
            if !keep_vpcs.contains(&vpc) {
                self.remove_overlay_in(&mut inner, &vpc)?;
            }
        }
        self.remove_orphan_overlay_chains_in(&mut inner, keep_vpcs)?;
        // Load balancer addresses are the load balancers' to remove (`remove_lb_address`): their
        // groups and VPCs stay with them.
        let groups: Vec<String> = inner
            .state
            .groups
            .keys()
            .filter(|g| !keep_sgs.contains(g) && !inner.state.lb_addrs.values().any(|a| a.groups.contains(*g)))
            .cloned()
            .collect();
        if !groups.is_empty() || !inner.state.orphan_member_sets().is_empty() {
            self.remove_groups_in(&mut inner, &groups)?;
        }
        report.security_groups = groups;
        let object = Object::Network(self.table.clone());
        let mut vpcs: BTreeSet<String> = inner.state.vpcs.keys().cloned().collect();
        for link in inner.host.links().map_err(nl(&object, "list links"))? {
            if let Some(id) = link.alias.as_deref().and_then(|a| parse_alias(&self.table, "vpc", a)) {
                vpcs.insert(id.to_string());
            }
        }
        let lb_vpcs: BTreeSet<String> = inner.state.lb_addrs.values().filter_map(|a| a.vpc_id.clone()).collect();
        for id in vpcs.into_iter().filter(|v| !keep_vpcs.contains(v) && !lb_vpcs.contains(v)) {
            self.remove_vpc_in(&mut inner, &id)?;
            report.vpcs.push(id);
        }
        Ok(report)
    }

    /// Removes everything this `Network` made (VPC devices, groups, the nft table), when no
    /// interface or load balancer address is left; `Ok(false)` (and nothing removed) while one is. For a clean
    /// shutdown with no tasks running: the host is left as it was. The `Network` must not be
    /// used afterwards (its base chains are gone); a new one rebuilds them.
    pub fn dismantle(&self) -> Result<bool, NetError> {
        if !self.list_interfaces()?.is_empty() || !self.lock().state.lb_addrs.is_empty() {
            return Ok(false);
        }
        self.cleanup(&[], &[], &[])?;
        let object = Object::Network(self.table.clone());
        let mut inner = self.lock();
        self.nft.delete_table(&object, &self.table)?;
        inner.state = State::default();
        Ok(true)
    }

    /// The host namespace this `Network` works in, when it is not the caller's.
    pub fn host_netns(&self) -> Option<&File> {
        self.host_netns.as_ref()
    }
}

pub(crate) fn enodev() -> NetlinkError {
    NetlinkError { errno: libc::ENODEV, message: None }
}

/// Refuses a link whose alias says it belongs to something else. A link with no alias is
/// ours: the alias is set right after creation, so only a crash in between leaves none.
pub(crate) fn claim(id: &str, link: &crate::netlink::Link, alias: &str) -> Result<(), NetError> {
    match &link.alias {
        Some(found) if found != alias => {
            Err(NetError::NameClash { id: id.to_string(), name: link.name.clone(), alias: Some(found.clone()) })
        }
        _ => Ok(()),
    }
}

fn delete_own_link(host: &mut Socket, object: &Object, id: &str, name: &str, alias: &str) -> Result<(), NetError> {
    if let Some(link) = host.link(name).map_err(nl(object, format!("get link {name}")))? {
        claim(id, &link, alias)?;
        host.delete_link(name).map_err(nl(object, format!("delete link {name}")))?;
    }
    Ok(())
}
