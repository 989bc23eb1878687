//! Task interfaces: the part of the data plane every task start and stop goes through, so the
//! part that runs side by side. An interface change holds the `Network`'s shape lock shared
//! (VPC, group, overlay and load balancer changes hold it exclusively, so none of them ever
//! sees an interface half made), takes its own interface's turn, and holds the mirror's mutex
//! only to read and update the mirror: the kernel's waits (creating and deleting the veth
//! pair, which takes ~20 ms for the kernel to finish) and the nft transaction (shared with
//! the other changes in flight, `nft.rs`) happen outside it, on sockets of their own.
//!
//! **Architecture Invariant:** an interface is in the mirror from before its rules are
//! submitted until after its link is gone and its rules are removed, so its addresses are
//! never taken by another interface while its link may still hold them (`AddressInUse`).

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::{NetError, NetlinkError, Object};
use crate::netlink::{Route, Socket};
use crate::netns;
use crate::network::{Inner, Network, claim, delete_own_link, enodev, forget, nl};
use crate::nft::{self, Script, quote};
use crate::phases::{Phase, timed};
use crate::spec::*;
use crate::state::{Iface, State};

/// An interface change worked out from the mirror: the rules to apply, then the link.
struct Plan {
    script: Script,
    link: String,
    vpc: VpcStatus,
    /// The public address the interface had before, when it changes.
    old_public: Option<std::net::Ipv4Addr>,
    /// The mirror's entry before this change, put back if the rules cannot be applied.
    previous: Option<Iface>,
    /// The profile chains the interface jumps to, filled once the script is applied.
    chains: [String; 2],
}

impl Network {
    /// Makes the task's interface exist as specified: rules first (so the link is never
    /// unguarded), then the veth pair, addresses, neighbour and routes on both sides.
    /// Interfaces of different ids are made side by side.
    pub fn ensure_interface(&self, spec: &InterfaceSpec) -> Result<InterfaceStatus, NetError> {
        check_id(&spec.id)?;
        let object = Object::Interface(spec.id.clone());
        let _shared = self.shared();
        let _turn = self.interface_turn(&spec.id);
        let plan = timed("plan", || {
            let mut inner = self.inner();
            // The address was another host's until now: this host's record of that goes first.
            self.forget_remote_in(&mut inner, spec.ip)?;
            self.plan_interface(&mut inner.state, spec)
        })?;
        let Plan { script, link, vpc, old_public, previous, chains } = plan;
        // The interface left another profile's chains (its groups changed), maybe unused now.
        let moved = previous.as_ref().is_some_and(|p| p.out_chain.as_ref() != Some(&chains[0]));
        let applied = timed("nft", || self.nft.apply(&object, &script));
        {
            let mut inner = self.inner();
            if let Err(e) = applied {
                // Put the mirror back as the table still is.
                match previous {
                    Some(previous) => inner.state.interfaces.insert(spec.id.clone(), previous),
                    None => inner.state.interfaces.remove(&spec.id),
                };
                return Err(e);
            }
            for chain in chains {
                inner.state.interface_chains.insert(chain, true);
            }
        }
        if let Some(old) = old_public.filter(|old| Some(*old) != spec.public_ip) {
            self.forget_shared(&object, vec![old])?;
        }
        let mut host = timed("host socket", || self.host_socket(&object))?;
        self.plumb(&mut host, &object, spec, &vpc, &link)?;
        drop(host);
        if moved {
            drop((_turn, _shared));
            self.remove_unused_interface_chains()?;
        }
        Ok(InterfaceStatus {
            id: spec.id.clone(),
            host_link: link,
            host_mac: HOST_MAC,
            link_present: true,
            vpc_id: Some(spec.vpc_id.clone()),
            ip: Some(spec.ip),
            public_ip: spec.public_ip,
            security_groups: spec.security_groups.clone(),
        })
    }

    /// Checks `spec` against the mirror, works out the rules, and records the interface in
    /// the mirror (so no other interface takes its addresses meanwhile).
    fn plan_interface(&self, state: &mut State, spec: &InterfaceSpec) -> Result<Plan, NetError> {
        let object = Object::Interface(spec.id.clone());
        let vpc =
            state.vpcs.get(&spec.vpc_id).cloned().ok_or_else(|| NetError::UnknownVpc { id: spec.vpc_id.clone() })?;
        check_interface(spec, &vpc)?;
        state.check_groups_in(&spec.security_groups, &spec.vpc_id)?;
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
        let ip = spec.ip;
        let mut script = Script::new(&self.table);
        let (out_chain, in_chain) = fill_profile(&mut script, state, &vpc, &groups);
        let name = quote(&link);
        script
            .cmd("add element", format_args!("ifaces {{ {name} }}"))
            .cmd("add element", format_args!("if_ip {{ {name} comment {} : {ip} }}", quote(&spec.id)))
            .cmd("add element", format_args!("if_addrs {{ {name} . {ip} }}"));
        let old_chains = existing.as_ref().map(|e| (e.out_chain.as_deref(), e.in_chain.as_deref()));
        point(&mut script, "egress", &name, old_chains.and_then(|c| c.0), &out_chain);
        point(&mut script, "ingress", &name, old_chains.and_then(|c| c.1), &in_chain);
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
        let iface = Iface {
            link: link.clone(),
            vpc_id: Some(spec.vpc_id.clone()),
            ip,
            groups,
            public_ip: spec.public_ip,
            out_chain: Some(out_chain.clone()),
            in_chain: Some(in_chain.clone()),
        };
        let previous = state.interfaces.insert(spec.id.clone(), iface);
        Ok(Plan { script, link, vpc, old_public, previous, chains: [out_chain, in_chain] })
    }

    /// The veth pair, its host side's alias, MTU and state, the task side, the host's
    /// neighbour entry and `/32` route, on `host` (a socket of the caller's own).
    fn plumb(
        &self,
        host: &mut Socket,
        object: &Object,
        spec: &InterfaceSpec,
        vpc: &VpcStatus,
        link: &str,
    ) -> Result<(), NetError> {
        let task_netns = File::open(&spec.netns).map_err(|source| NetError::Netns {
            object: object.clone(),
            path: spec.netns.clone(),
            source,
        })?;
        let alias = link_alias(&self.table, "eni", &spec.id);
        let host_link =
            timed("host link", || match host.link(link).map_err(nl(object, format!("get link {link}")))? {
                Some(l) => Ok(l),
                None => {
                    host.create_veth(link, HOST_MAC, TASK_LINK, spec.mac, task_netns.as_raw_fd(), VPC_MTU)
                        .map_err(nl(object, format!("create veth {link} / {TASK_LINK} in {}", spec.netns.display())))?;
                    let l = host.link(link).map_err(nl(object, format!("get link {link}")))?;
                    l.ok_or_else(|| NetError::netlink(object, format!("find new link {link}"), enodev()))
                }
            })?;
        claim(&spec.id, &host_link, &alias)?;
        // A link made by an older version has the default MTU: it is raised in place.
        let mtu = (host_link.mtu != Some(VPC_MTU)).then_some(VPC_MTU);
        if !host_link.up || host_link.alias.as_deref() != Some(alias.as_str()) || mtu.is_some() {
            timed("host link up", || host.set_link(host_link.index, None, Some(&alias), mtu))
                .map_err(nl(object, format!("set up {link}")))?;
        }
        // The task side first, and the host's neighbour entry for the task fixed like the
        // task's for its gateway: the route appears only once the task can answer, and the host
        // never ARPs for it. (An ARP sent before the task side was up failed, and the first
        // connection to a new task then stalled for the kernel's 1 s retry.)
        self.configure_task_side(object, spec, vpc, &task_netns)?;
        let ip = spec.ip;
        timed("host neighbour", || host.replace_neighbour(host_link.index, ip, spec.mac))
            .map_err(nl(object, format!("neighbour {ip}")))?;
        let route =
            Route { dst: ip, dst_len: 32, oif: host_link.index, gateway: None, prefsrc: Some(vpc.router), mtu: None };
        timed("host route", || host.replace_route(&route)).map_err(nl(object, format!("route {ip}/32 dev {link}")))?;
        Ok(())
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
        let mut task =
            timed("task socket", || netns::run_in_file(netns, Socket::open)).and_then(|r| r).map_err(|e| {
                NetError::netlink(
                    object,
                    format!("open route socket in {}", spec.netns.display()),
                    NetlinkError::from_io(e),
                )
            })?;
        let _task_side = Phase::start("task side");
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
    /// rules and elements. Nothing to remove is not an error. Interfaces of different ids are
    /// removed side by side; each stays in the mirror (its addresses taken) until it is gone.
    pub fn remove_interface(&self, id: &str) -> Result<(), NetError> {
        check_id(id)?;
        self.remove_interface_alone(id)?;
        self.remove_unused_interface_chains()
    }

    /// [`Network::remove_interface`] but for the profile chains it may leave unused.
    fn remove_interface_alone(&self, id: &str) -> Result<(), NetError> {
        let object = Object::Interface(id.to_string());
        let _shared = self.shared();
        let _turn = self.interface_turn(id);
        let known = self.inner().state.interfaces.get(id).cloned();
        let link = known.as_ref().map(|i| i.link.clone()).unwrap_or_else(|| interface_link_name(&self.table, id));
        let alias = link_alias(&self.table, "eni", id);
        let mut host = self.host_socket(&object)?;
        // Deleting a veth waits for the kernel (~20 ms), and concurrent deletions wait one
        // after another inside it: the link joins the table's doomed group (keeping its alias,
        // so a crash leaves it findable) and is deleted with every other doomed link at once.
        let found = timed("find link", || host.link(&link)).map_err(nl(&object, format!("get link {link}")))?;
        if let Some(found) = found {
            claim(id, &found, &alias)?;
            timed("doom link", || host.set_group(found.index, self.doomed))
                .map_err(nl(&object, format!("doom link {link}")))?;
            timed("reap", || self.reap(&mut host));
        }
        // Whatever a failed batch left.
        timed("own link", || delete_own_link(&mut host, &object, id, &link, &alias))?;
        drop(host);
        let Some(iface) = known else { return Ok(()) };
        timed("nft", || self.nft.apply(&object, &removal_script(&self.table, &link, &iface)))?;
        self.inner().state.interfaces.remove(id);
        let addrs: Vec<_> = [Some(iface.ip), iface.public_ip].into_iter().flatten().collect();
        timed("conntrack", || self.forget_shared(&object, addrs))
    }

    /// Deletes the interface chains that no interface uses any more (the last interface of a
    /// profile left it), holding the whole `Network`: an interface change in flight may be
    /// about to jump to them. Deleting a chain with rules makes the kernel wait an RCU grace
    /// period, so this is paid once per profile, not per interface.
    fn remove_unused_interface_chains(&self) -> Result<(), NetError> {
        if self.inner().state.unused_interface_chains().is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        self.remove_unused_interface_chains_in(&mut inner)
    }

    /// Returns once a batch deletion of the doomed group that started after the caller's link
    /// joined it has run, running one if none is: removals at the same time share one kernel
    /// wait. A batch that fails leaves each caller to delete its own link.
    fn reap(&self, host: &mut Socket) {
        // A failure is each caller's to find: its link is still there, and it deletes it alone.
        self.reaper.submit((), |_| drop(host.delete_group(self.doomed)));
    }

    /// [`Network::remove_interface`] for a caller that holds the whole `Network` (`cleanup`).
    pub(crate) fn remove_interface_in(&self, inner: &mut Inner, id: &str) -> Result<(), NetError> {
        let object = Object::Interface(id.to_string());
        let known = inner.state.interfaces.get(id).cloned();
        let link = known.as_ref().map(|i| i.link.clone()).unwrap_or_else(|| interface_link_name(&self.table, id));
        delete_own_link(&mut inner.host, &object, id, &link, &link_alias(&self.table, "eni", id))?;
        let Some(iface) = known else { return Ok(()) };
        self.nft.apply(&object, &removal_script(&self.table, &link, &iface))?;
        inner.state.interfaces.remove(id);
        let addrs: Vec<_> = [Some(iface.ip), iface.public_ip].into_iter().flatten().collect();
        forget(&mut inner.conntrack, &object, &addrs)
    }
}

/// Deletes the interface's elements (each whether or not it is still there). The chains it
/// jumped to are its profile's, shared: they go when unused, with the next change that holds
/// the whole `Network` ([`Network::remove_unused_interface_chains_in`]).
fn removal_script(table: &str, link: &str, iface: &Iface) -> Script {
    let (name, ip) = (quote(link), iface.ip);
    let mut script = Script::new(table);
    for (map, chain) in [("egress", &iface.out_chain), ("ingress", &iface.in_chain)] {
        if let Some(chain) = chain {
            script.cmd("add chain", format_args!("{chain}"));
            script.delete_element(map, &format!("{name} : jump {chain}"), &name);
        }
    }
    script
        .delete_element("ifaces", &name, &name)
        .delete_element("if_ip", &format!("{name} : {ip}"), &name)
        .delete_element("if_addrs", &format!("{name} . {ip}"), &format!("{name} . {ip}"));
    for group in &iface.groups {
        script.delete_element(&nft::member_set(group), &ip.to_string(), &ip.to_string());
    }
    if let Some(public) = iface.public_ip {
        script.unmap_public(ip, public);
    }
    script
}

/// The chains of the profile `vpc` + `groups`, created and filled by `script` unless this
/// mirror knows them filled (interfaces planned meanwhile fill them too, as the first script
/// may not be applied first; filling is idempotent). Filling a chain that has rules deletes
/// them, which makes the kernel wait an RCU grace period: only the first interface of a
/// profile pays it, and only after a start.
pub(crate) fn fill_profile(
    script: &mut Script,
    state: &mut State,
    vpc: &VpcStatus,
    groups: &BTreeSet<String>,
) -> (String, String) {
    let (out_chain, in_chain) = nft::profile_chains(vpc, groups);
    for (chain, rules) in
        [(&out_chain, nft::interface_out_rules(vpc, groups)), (&in_chain, nft::interface_in_rules(vpc, groups))]
    {
        if state.interface_chains.get(chain) != Some(&true) {
            script.replace_chain(chain, &rules);
            state.interface_chains.entry(chain.clone()).or_insert(false);
        }
    }
    (out_chain, in_chain)
}

/// Points `name`'s element of `map` at `chain`, replacing the one it had (`old`): an element's
/// data cannot be changed by adding it again.
fn point(script: &mut Script, map: &str, name: &str, old: Option<&str>, chain: &str) {
    if let Some(old) = old.filter(|old| *old != chain) {
        script.delete_element(map, &format!("{name} : jump {old}"), name);
    }
    script.cmd("add element", format_args!("{map} {{ {name} : jump {chain} }}"));
}

/// At a start (`state` freshly recovered, so no chain counts as filled): fills the profile
/// chains of every interface of a known VPC with this version's rules, points the interfaces
/// at them (replacing older versions' per-interface chains, which then go as unused) and gives
/// each its anti-spoofing element. Returns the chains filled, once `script` is applied.
pub(crate) fn upgrade_interfaces(script: &mut Script, state: &mut State) -> BTreeSet<String> {
    let mut filled = BTreeSet::new();
    let ids: Vec<String> = state.interfaces.keys().cloned().collect();
    for id in ids {
        let iface = &state.interfaces[&id];
        let Some(vpc) = iface.vpc_id.as_ref().and_then(|v| state.vpcs.get(v)).cloned() else { continue };
        let groups = iface.groups.clone();
        let (out_chain, in_chain) = nft::profile_chains(&vpc, &groups);
        if !filled.contains(&out_chain) {
            fill_profile(script, state, &vpc, &groups);
            filled.extend([out_chain.clone(), in_chain.clone()]);
        }
        let iface = state.interfaces.get_mut(&id).expect("listed above");
        let (name, ip) = (quote(&iface.link), iface.ip);
        script.cmd("add element", format_args!("if_addrs {{ {name} . {ip} }}"));
        point(script, "egress", &name, iface.out_chain.as_deref(), &out_chain);
        point(script, "ingress", &name, iface.in_chain.as_deref(), &in_chain);
        iface.out_chain = Some(out_chain);
        iface.in_chain = Some(in_chain);
    }
    filled
}
