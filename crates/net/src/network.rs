//! `Network`: the declarative, idempotent API over one nft table and the host links it owns.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::batch::Batch;
use crate::error::{NetError, NetlinkError, Object};
use crate::netlink::Socket;
use crate::netns;
use crate::nft::{self, Direction, Nft, Script};
use crate::spec::*;
use crate::state::{Group, State};

/// The host data plane. Calls are synchronous (use `spawn_blocking` from async code); each
/// either completes or leaves a state that the same call, repeated, or `remove_*`/`cleanup`,
/// finishes. Interface changes of different interfaces run side by side (`interface.rs`);
/// every other change runs alone.
pub struct Network {
    pub(crate) table: String,
    host_netns: Option<File>,
    pub(crate) nft: Nft,
    /// Held shared by interface changes, exclusively by every other change (`lock`).
    shape: RwLock<()>,
    inner: Mutex<Inner>,
    /// Interfaces with a change in flight: one change per interface at a time.
    busy: Mutex<BTreeSet<String>>,
    freed: Condvar,
    /// Route and conntrack sockets in the host namespace for changes made outside `inner`.
    spare_routes: Mutex<Vec<Socket>>,
    spare_conntrack: Mutex<Vec<Socket>>,
    /// Task veths being removed are moved to this device group and deleted a group at a time.
    pub(crate) doomed: u32,
    pub(crate) reaper: Batch<(), ()>,
    /// Addresses whose tracked connections are to be deleted, a table walk at a time.
    forgetter: Batch<Vec<Ipv4Addr>, Result<(), NetlinkError>>,
    /// The host namespace's `nf_conntrack_count`, opened there (a sysctl file reads the
    /// namespace it was opened in); `None` without connection tracking.
    tracked: Option<File>,
}

/// The whole `Network`: no interface change is in flight while it is held.
pub(crate) struct Exclusive<'a> {
    inner: MutexGuard<'a, Inner>,
    _shape: RwLockWriteGuard<'a, ()>,
}

impl Deref for Exclusive<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl DerefMut for Exclusive<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}

/// One interface's turn; the next change of that interface waits for it.
pub(crate) struct Turn<'a> {
    network: &'a Network,
    id: String,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut busy = self.network.busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        busy.remove(&self.id);
        self.network.freed.notify_all();
    }
}

/// A socket taken from a pool, put back when dropped.
pub(crate) struct Spare<'a> {
    pool: &'a Mutex<Vec<Socket>>,
    socket: Option<Socket>,
}

impl Deref for Spare<'_> {
    type Target = Socket;
    fn deref(&self) -> &Socket {
        self.socket.as_ref().expect("held until dropped")
    }
}

impl DerefMut for Spare<'_> {
    fn deref_mut(&mut self) -> &mut Socket {
        self.socket.as_mut().expect("held until dropped")
    }
}

impl Drop for Spare<'_> {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            self.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(socket);
        }
    }
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

/// The number of connections the reading namespace tracks.
const CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

/// Drops conntrack's memory of `addrs`. Kernels without ctnetlink have nothing to forget
/// that this crate could reach, so "not supported" is not an error.
pub(crate) fn forget(conntrack: &mut Socket, object: &Object, addrs: &[Ipv4Addr]) -> Result<(), NetError> {
    forget_quietly(conntrack, addrs).map_err(nl(object, format!("delete tracked connections of {addrs:?}")))
}

/// [`forget`], where a kernel without connection tracking over netlink has nothing to forget.
fn forget_quietly(conntrack: &mut Socket, addrs: &[Ipv4Addr]) -> Result<(), NetlinkError> {
    match conntrack.forget_connections(addrs) {
        Err(e) if e.errno == libc::EOPNOTSUPP || e.errno == libc::EPROTONOSUPPORT => Ok(()),
        result => result.map(drop),
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
        let open_count = || File::open(CONNTRACK_COUNT).ok();
        let tracked = match &host_netns {
            None => open_count(),
            Some(netns) => netns::run_in_file(netns, open_count).ok().flatten(),
        };
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
        let mut state = State::recover(&table, &nft.list_table(&object, &table)?);
        let mut script = Script::new(&table);
        let filled = crate::interface::upgrade_interfaces(&mut script, &mut state);
        let unused = state.unused_interface_chains();
        for chain in &unused {
            script.delete_chain(chain);
        }
        nft.apply(&object, &script)?;
        for chain in unused {
            state.interface_chains.remove(&chain);
        }
        for chain in filled {
            state.interface_chains.insert(chain, true);
        }
        Ok(Network {
            table,
            host_netns,
            nft,
            shape: RwLock::new(()),
            inner: Mutex::new(Inner { host, conntrack, state }),
            busy: Mutex::new(BTreeSet::new()),
            freed: Condvar::new(),
            spare_routes: Mutex::new(Vec::new()),
            spare_conntrack: Mutex::new(Vec::new()),
            doomed: doomed_group(&config.nft_table),
            reaper: Batch::new(),
            forgetter: Batch::new(),
            tracked,
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The whole `Network`, once no interface change is in flight.
    pub(crate) fn lock(&self) -> Exclusive<'_> {
        let shape = self.shape.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        Exclusive { inner: self.inner(), _shape: shape }
    }

    /// Held by an interface change for its whole length: no other kind of change runs meanwhile.
    pub(crate) fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.shape.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The mirror, for a moment (never across a kernel wait).
    pub(crate) fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until no other change of interface `id` is in flight, and holds that turn.
    pub(crate) fn interface_turn(&self, id: &str) -> Turn<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while busy.contains(id) {
            busy = self.freed.wait(busy).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        busy.insert(id.to_string());
        Turn { network: self, id: id.to_string() }
    }

    /// A route socket in the host namespace, for one change.
    pub(crate) fn host_socket(&self, object: &Object) -> Result<Spare<'_>, NetError> {
        self.spare(&self.spare_routes, object, Socket::open)
    }

    /// A conntrack socket in the host namespace, for one change.
    pub(crate) fn conntrack_socket(&self, object: &Object) -> Result<Spare<'_>, NetError> {
        self.spare(&self.spare_conntrack, object, Socket::open_conntrack)
    }

    /// [`forget`] for changes made outside `inner`: the kernel walks its whole
    /// connection-tracking table (every namespace's) for one dump, so removals at the same
    /// time share one walk instead of each making its own.
    pub(crate) fn forget_shared(&self, object: &Object, addrs: Vec<Ipv4Addr>) -> Result<(), NetError> {
        let what = format!("delete tracked connections of {addrs:?}");
        let outcome = self.forgetter.submit(addrs, |batch| {
            if self.tracks_nothing() {
                return Ok(());
            }
            let all: Vec<Ipv4Addr> = batch.into_iter().flatten().collect();
            let mut socket = self.conntrack_socket(object).map_err(|e| NetlinkError {
                errno: libc::EIO,
                message: Some(format!("no connection-tracking socket: {e}")),
            })?;
            forget_quietly(&mut socket, &all)
        });
        outcome.map_err(nl(object, what))
    }

    /// Whether the host namespace tracks no connection at all, so that no walk of the
    /// connection-tracking table can find one to forget. The walk visits every bucket of the
    /// kernel's table, which all namespaces share (262,144 here), whatever it holds: ~5% of
    /// the machine's CPU during task churn. Unknown (no count to read) is not nothing.
    fn tracks_nothing(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let Some(count) = &self.tracked else { return false };
        let mut buf = [0u8; 24];
        let Ok(n) = count.read_at(&mut buf, 0) else { return false };
        std::str::from_utf8(&buf[..n]).is_ok_and(|text| text.trim() == "0")
    }

    fn spare<'a>(
        &'a self,
        pool: &'a Mutex<Vec<Socket>>,
        object: &Object,
        open: fn() -> io::Result<Socket>,
    ) -> Result<Spare<'a>, NetError> {
        let idle = pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let socket = match idle {
            Some(socket) => socket,
            None => open_socket(object, self.host_netns.as_ref(), open)?,
        };
        Ok(Spare { pool, socket: Some(socket) })
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
        self.remove_vips_in(&mut inner.state, id)?;
        self.remove_unused_interface_chains_in(inner)?;
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
        for id in ids {
            if let Some(interface) = inner.state.interface_using_group(id) {
                return Err(NetError::SecurityGroupInUse { id: id.clone(), interface: interface.to_string() });
            }
        }
        // Unused profile chains may still jump to the groups' chains.
        self.remove_unused_interface_chains_in(inner)?;
        let state = &mut inner.state;
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

    /// Deletes the interface chains no interface jumps to (interface changes leave them, as
    /// deleting a chain with rules makes the kernel wait; `State::interface_chains`).
    pub(crate) fn remove_unused_interface_chains_in(&self, inner: &mut Inner) -> Result<(), NetError> {
        let unused = inner.state.unused_interface_chains();
        if unused.is_empty() {
            return Ok(());
        }
        let mut script = Script::new(&self.table);
        for chain in &unused {
            script.delete_chain(chain);
        }
        self.nft.apply(&Object::Network(self.table.clone()), &script)?;
        for chain in unused {
            inner.state.interface_chains.remove(&chain);
        }
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
        let vips: Vec<String> = inner.state.vips.keys().filter(|v| !keep_vpcs.contains(v)).cloned().collect();
        for vpc in vips {
            self.remove_vips_in(&mut inner.state, &vpc)?;
        }
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
        self.remove_unused_interface_chains_in(&mut inner)?;
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

pub(crate) fn delete_own_link(
    host: &mut Socket,
    object: &Object,
    id: &str,
    name: &str,
    alias: &str,
) -> Result<(), NetError> {
    if let Some(link) = host.link(name).map_err(nl(object, format!("get link {name}")))? {
        claim(id, &link, alias)?;
        host.delete_link(name).map_err(nl(object, format!("delete link {name}")))?;
    }
    Ok(())
}
