//! awsvpc on this host: each task's elastic network interface, from the control plane's
//! record (address, MAC, groups) to the data plane (`flotilla_net`) and the VPC's resolver.
//!
//! The control plane owns everything durable: the interface record and its address leases
//! (`HostApi::ensure_interface`, keyed by the task ARN so a resumed launch finds the same
//! one), the VPCs and their groups (`HostApi::vpc`). This module makes the kernel match them: the VPC's host addresses, the security
//! groups of the VPC, the task's veth, the DNS listener on the VPC's resolver address, and the
//! task's `/etc/resolv.conf`.
//!
//! **Architecture Invariant:** the kernel state is derived. After a crash, `cleanup` removes
//! every interface whose task is not live and `attach` (idempotent) restores the rest; a
//! security group change re-applies every group of the VPCs this host serves.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use flotilla_host::lb::{LbKind, LoadBalancerSpec};
use flotilla_host::{BoxFuture, GroupRule, GroupView, HostApi, InterfaceLease, RulePeer, RuleProtocol, VpcView};
use flotilla_net::{
    InterfaceSpec, LbAddressSpec, Network, OverlaySpec, Peer, Protocol, RemoteInterface, Rule, SecurityGroupSpec,
    VirtualService, VpcSpec,
};

use crate::AgentError;

mod adopt;

/// The VPC resolvers this host serves: the DNS server answering `<service>.<namespace>`
/// for a VPC on its resolver address (Cloud Map's, wired in by whoever builds the agent).
pub trait Resolvers: Send + Sync {
    /// Starts answering for `vpc_id` on these sockets.
    fn serve_vpc(&self, vpc_id: &str, udp: std::net::UdpSocket, tcp: std::net::TcpListener) -> std::io::Result<()>;
    /// The addresses served, with their VPC.
    fn bindings(&self) -> Vec<(SocketAddr, String)>;
    fn unbind(&self, addr: SocketAddr);
    /// Replaces the names answered besides Cloud Map's (load balancers' `DNSName`s, Kubernetes
    /// Services' names): per VPC, names and their addresses.
    fn set_names(&self, names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>);
}

/// A host's task networking as the supervisor uses it: the real data plane
/// ([`Networking`]) or none at all (the simulated agent).
pub trait TaskNetwork: Send + Sync {
    /// Plumbs the interface into the namespace at `netns` and points `resolv_conf` at the
    /// VPC's resolver. Idempotent.
    fn attach<'a>(
        &'a self,
        lease: &'a InterfaceLease,
        netns: &'a Path,
        resolv_conf: &'a Path,
    ) -> BoxFuture<'a, Result<(), AgentError>>;
    /// Removes the interface from the host. Idempotent.
    fn detach<'a>(&'a self, lease: &'a InterfaceLease) -> BoxFuture<'a, Result<(), AgentError>>;
    /// After a restart: removes every interface, VPC and group the host holds beyond `keep`.
    fn cleanup<'a>(&'a self, keep: &'a [InterfaceLease]) -> BoxFuture<'a, Result<(), AgentError>>;
    /// Re-applies the groups of every VPC served; removes deleted VPCs' host side.
    fn resync(&self) -> BoxFuture<'_, Result<(), AgentError>>;
    /// A clean shutdown with no task left removes the host side entirely.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
    /// Makes the VPC side of these load balancers real (their VPCs' host sides and groups,
    /// each private address with its listener ports, public address and groups, their
    /// `DNSName`s at the VPC resolvers); what fails is logged, and `false` says to call again.
    /// Addresses of other load balancers stay until [`TaskNetwork::retire_load_balancers`].
    fn ensure_load_balancers<'a>(&'a self, lbs: &'a [LoadBalancerSpec]) -> BoxFuture<'a, bool>;
    /// Removes the addresses of every load balancer but these (after their listeners closed).
    fn retire_load_balancers<'a>(&'a self, keep: &'a [LoadBalancerSpec]) -> BoxFuture<'a, Result<(), AgentError>>;
    /// After a restart: whether `lease` is wired already as it says, with its VPC's host side
    /// served, so that adopting its task needs no [`TaskNetwork::attach`].
    fn wired<'a>(&'a self, _lease: &'a InterfaceLease) -> BoxFuture<'a, bool> {
        Box::pin(async { false })
    }
    /// The task endpoint's listener: `169.254.170.2:80` on the host side of every task's
    /// interface; `None` where tasks have no network to reach it by.
    fn task_endpoint(&self) -> BoxFuture<'_, Result<Option<std::net::TcpListener>, AgentError>> {
        Box::pin(async { Ok(None) })
    }
}

/// No data plane: interfaces are recorded by the control plane but never plumbed (the
/// simulated agent, whose tasks have no kernel namespaces).
pub struct NoNetwork;

impl TaskNetwork for NoNetwork {
    fn attach<'a>(&'a self, _: &'a InterfaceLease, _: &'a Path, _: &'a Path) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async { Ok(()) })
    }
    fn detach<'a>(&'a self, _: &'a InterfaceLease) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async { Ok(()) })
    }
    fn cleanup<'a>(&'a self, _: &'a [InterfaceLease]) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async { Ok(()) })
    }
    fn resync(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async { Ok(()) })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn ensure_load_balancers<'a>(&'a self, _: &'a [LoadBalancerSpec]) -> BoxFuture<'a, bool> {
        Box::pin(async { true })
    }
    fn retire_load_balancers<'a>(&'a self, _: &'a [LoadBalancerSpec]) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(async { Ok(()) })
    }
}

fn net_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::Network { reason: e.to_string() }
}

/// The host's awsvpc machinery: one data plane and one DNS server for every VPC.
pub struct Networking {
    host: Arc<dyn HostApi>,
    region: String,
    net: Arc<Network>,
    dns: Arc<dyn Resolvers>,
    /// Held shared by interface attaches and detaches, which run side by side, and
    /// exclusively by VPC-level changes (a VPC's host side made, groups re-applied, a VPC
    /// released, cleanup, load balancers, shutdown), so a VPC is never removed under an
    /// interface being added to it.
    vpc_turn: tokio::sync::RwLock<()>,
    /// VPCs whose host side was complete after the last exclusive change, with their status:
    /// an attach into one of them whose groups are all applied needs neither the exclusive
    /// turn nor a call to the control plane.
    hosted: std::sync::Mutex<HashMap<String, flotilla_net::VpcStatus>>,
    /// VPCs whose resolver this process serves.
    served: std::sync::Mutex<HashSet<String>>,
    /// VPCs whose groups the data plane holds as of the last change (each change to a group
    /// re-applies them), and those groups: an attach applies groups only when these miss one.
    synced: std::sync::Mutex<(HashSet<String>, HashMap<String, String>)>,
    /// This host on the network between hosts, when it has one: VPCs then span hosts.
    underlay: Option<Underlay>,
    /// VPCs whose overlay the data plane holds, and the remote interfaces it routes (a
    /// network change re-applies it when they differ).
    overlaid: std::sync::Mutex<HashMap<String, Vec<RemoteInterface>>>,
    /// The groups of each VPC as last applied: a network change that leaves them as they were
    /// (an interface created elsewhere) re-applies nothing.
    applied_groups: std::sync::Mutex<HashMap<String, Vec<GroupView>>>,
    /// The host's interfaces as listed at the first adoption (`adopt.rs`).
    listed: tokio::sync::OnceCell<HashMap<String, flotilla_net::InterfaceStatus>>,
    /// The names the VPC resolvers answer besides Cloud Map's: load balancers' (`.0`) and
    /// virtual services' (`.1`), per VPC; published together ([`Resolvers::set_names`]).
    names: std::sync::Mutex<(VpcNames, VpcNames)>,
}

/// Per VPC, DNS names and their addresses.
type VpcNames = HashMap<String, HashMap<String, Vec<Ipv4Addr>>>;

/// Who this host is to the overlay.
struct Underlay {
    host_id: String,
    ip: Ipv4Addr,
}

fn parse_mac(mac: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = mac.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.try_into().map_err(|_| format!("interface MAC '{mac}' is malformed"))
}

fn net_rule(rule: &GroupRule) -> Option<Rule> {
    let port = |p: Option<i32>| p.filter(|p| (0..=65535).contains(p)).map(|p| p as u16);
    let protocol = match rule.protocol {
        RuleProtocol::All => Protocol::All,
        RuleProtocol::Tcp => Protocol::Tcp,
        RuleProtocol::Udp => Protocol::Udp,
        RuleProtocol::Icmp => Protocol::Icmp,
        // The data plane filters TCP, UDP and ICMP by port; a rule for another protocol
        // number admits nothing rather than more than it says.
        RuleProtocol::Other(_) => return None,
    };
    let peer = match &rule.peer {
        RulePeer::Cidr(c) => Peer::Cidr(*c),
        RulePeer::Group(g) => Peer::SecurityGroup(g.clone()),
    };
    let (from_port, to_port) = match protocol {
        // TCP/UDP 0-65535 or -1: every port.
        Protocol::Tcp | Protocol::Udp => match (port(rule.from_port), port(rule.to_port)) {
            (Some(0), Some(65535)) | (None, _) | (_, None) => (None, None),
            (from, to) => (from, to),
        },
        Protocol::Icmp => (port(rule.from_port), port(rule.to_port)),
        Protocol::All => (None, None),
    };
    Some(Rule { protocol, from_port, to_port, peer })
}

fn group_spec(group: &GroupView) -> SecurityGroupSpec {
    SecurityGroupSpec {
        id: group.id.clone(),
        vpc_id: group.vpc_id.clone(),
        ingress: group.ingress.iter().filter_map(net_rule).collect(),
        egress: group.egress.iter().filter_map(net_rule).collect(),
    }
}

impl Networking {
    pub fn new(host: Arc<dyn HostApi>, region: String, net: Arc<Network>, dns: Arc<dyn Resolvers>) -> Networking {
        Networking {
            host,
            region,
            net,
            dns,
            vpc_turn: tokio::sync::RwLock::new(()),
            hosted: std::sync::Mutex::new(HashMap::new()),
            served: std::sync::Mutex::new(HashSet::new()),
            synced: std::sync::Mutex::new((HashSet::new(), HashMap::new())),
            underlay: None,
            overlaid: std::sync::Mutex::new(HashMap::new()),
            applied_groups: std::sync::Mutex::new(HashMap::new()),
            listed: tokio::sync::OnceCell::new(),
            names: std::sync::Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    /// Spans VPCs across hosts: this host (`host_id`, the control plane's id for it) is at
    /// `underlay_ip` ([`flotilla_host::HostSpec::underlay_ip`]), and routes its VPCs' interfaces
    /// on other hosts through the overlay. Without it, VPCs stay on this host.
    pub fn with_underlay(mut self, host_id: impl Into<String>, underlay_ip: Ipv4Addr) -> Networking {
        self.underlay = Some(Underlay { host_id: host_id.into(), ip: underlay_ip });
        self
    }

    pub fn network(&self) -> &Arc<Network> {
        &self.net
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Network) -> Result<T, flotilla_net::NetError> + Send + 'static,
    ) -> Result<T, AgentError> {
        let net = self.net.clone();
        match tokio::task::spawn_blocking(move || f(&net)).await {
            Ok(result) => result.map_err(net_err),
            Err(e) => Err(net_err(format!("network setup panicked: {e}"))),
        }
    }

    /// Plumbs `eni` into the namespace at `netns` and points `resolv_conf` at the VPC's
    /// resolver. Idempotent: an adopted task's interface is checked the same way.
    async fn attach_lease(&self, eni: &InterfaceLease, netns: &Path, resolv_conf: &Path) -> Result<(), AgentError> {
        let mut turn = self.vpc_turn.read().await;
        let status = match self.hosted_status(&eni.vpc_id, &eni.security_groups) {
            Some(status) => status,
            None => {
                drop(turn);
                let exclusive = self.vpc_turn.write().await;
                let status = self.ensure_host_side(&eni.vpc_id, &eni.security_groups).await?;
                turn = exclusive.downgrade();
                status
            }
        };
        let spec = InterfaceSpec {
            id: eni.id.clone(),
            vpc_id: eni.vpc_id.clone(),
            netns: netns.to_owned(),
            ip: eni.private_ip,
            prefix_len: eni.subnet.prefix_len(),
            mac: parse_mac(&eni.mac).map_err(net_err)?,
            security_groups: eni.security_groups.clone(),
            public_ip: eni.public_ip,
        };
        self.blocking(move |net| with_phases(&spec.id, "interface set up", || net.ensure_interface(&spec))).await?;
        // Between hosts, a public address lives on its task's host, which announces it.
        if let (Some(underlay), Some(public)) = (&self.underlay, eni.public_ip) {
            let local = underlay.ip;
            self.blocking(move |net| net.announce_public(local, public)).await?;
        }
        let search = search_domain(&self.region);
        rewrite_in_place(resolv_conf, &status.resolv_conf(&[search.as_str()]))
            .map_err(|e| net_err(format!("cannot write {}: {e}", resolv_conf.display())))?;
        drop(turn);
        Ok(())
    }

    /// The VPC's status when its host side is complete for an interface in `groups`.
    fn hosted_status(&self, vpc_id: &str, groups: &[String]) -> Option<flotilla_net::VpcStatus> {
        let status = self.hosted.lock().expect("hosted lock").get(vpc_id).cloned()?;
        let synced = self.synced.lock().expect("synced lock");
        let complete = synced.0.contains(vpc_id) && groups.iter().all(|g| synced.1.contains_key(g));
        complete.then_some(status)
    }

    /// The VPC's host side (router and resolver addresses, every group of the VPC once one of
    /// `groups` is missing, the resolver served). The caller holds `vpc_turn` exclusively.
    async fn ensure_host_side(&self, vpc_id: &str, groups: &[String]) -> Result<flotilla_net::VpcStatus, AgentError> {
        let vpc = self.vpc(vpc_id).await?.ok_or_else(|| net_err(format!("VPC {vpc_id} does not exist")))?;
        let vpc_spec = VpcSpec { id: vpc.id.clone(), cidr: vpc.cidr };
        let status = self.blocking(move |net| net.ensure_vpc(&vpc_spec)).await?;
        let current = {
            let synced = self.synced.lock().expect("synced lock");
            synced.0.contains(&vpc.id) && groups.iter().all(|g| synced.1.contains_key(g))
        };
        if !current {
            self.apply_groups(&vpc.id, vpc.groups.clone()).await?;
        }
        let overlaid = self.overlaid.lock().expect("overlaid lock").contains_key(&vpc.id);
        let mut complete = true;
        if !overlaid && let Err(e) = self.apply_overlay(&vpc).await {
            // The host's own tasks still reach each other; the next network change retries.
            tracing::warn!(vpc = %vpc.id, error = %e, "cannot route the VPC's interfaces on other hosts");
            complete = false;
        }
        if let Err(e) = self.apply_virtual_services(&vpc).await {
            tracing::warn!(vpc = %vpc.id, error = %e, "cannot route the VPC's virtual services");
            complete = false;
        }
        self.serve_dns(&vpc.id, status.resolver).await?;
        if complete {
            self.hosted.lock().expect("hosted lock").insert(vpc.id.clone(), status.clone());
        }
        Ok(status)
    }

    /// Routes the VPC's interfaces on other hosts through the overlay (and only those), when
    /// this host has an underlay address; nothing otherwise.
    async fn apply_overlay(&self, vpc: &VpcView) -> Result<(), AgentError> {
        let Some(underlay) = &self.underlay else { return Ok(()) };
        if vpc.vni == 0 {
            return Err(net_err(format!("the control plane gave VPC {} no VNI", vpc.id)));
        }
        let remotes: Vec<RemoteInterface> = vpc
            .interfaces
            .iter()
            .filter(|i| i.host_id.as_deref() != Some(underlay.host_id.as_str()))
            .filter_map(|i| {
                let host_ip = i.underlay_ip.filter(|ip| *ip != underlay.ip)?;
                Some(RemoteInterface { ip: i.private_ip, host_ip, security_groups: i.security_groups.clone() })
            })
            .collect();
        if self.overlaid.lock().expect("overlaid lock").get(&vpc.id) == Some(&remotes) {
            return Ok(());
        }
        let spec = OverlaySpec { vpc_id: vpc.id.clone(), vni: vpc.vni, local_ip: underlay.ip, remotes };
        let remotes = spec.remotes.clone();
        self.blocking(move |net| net.ensure_overlay(&spec)).await?;
        self.overlaid.lock().expect("overlaid lock").insert(vpc.id.clone(), remotes);
        Ok(())
    }

    /// Makes the VPC's virtual services (Kubernetes ClusterIPs) the data plane's: the whole
    /// set, replacing what was there (a no-op in the data plane when unchanged). Services and
    /// backends the data plane would refuse (a virtual address inside the VPC, a backend
    /// outside it) are left out, so one bad record cannot keep the others away.
    async fn apply_virtual_services(&self, vpc: &VpcView) -> Result<(), AgentError> {
        let services: Vec<VirtualService> = vpc
            .virtual_services
            .iter()
            .filter(|s| !vpc.cidr.contains(&s.ip) && s.port != 0)
            .filter_map(|s| {
                let protocol = match s.protocol {
                    RuleProtocol::Tcp => Protocol::Tcp,
                    RuleProtocol::Udp => Protocol::Udp,
                    _ => return None,
                };
                let backends = s
                    .backends
                    .iter()
                    .filter(|b| vpc.cidr.contains(&b.ip) && b.port != 0)
                    .map(|b| (b.ip, b.port))
                    .collect();
                Some(VirtualService { ip: s.ip, port: s.port, protocol, backends })
            })
            .collect();
        let vpc_id = vpc.id.clone();
        self.blocking(move |net| net.ensure_virtual_services(&vpc_id, &services)).await?;
        let mut names: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
        for s in &vpc.virtual_services {
            for name in &s.names {
                let ips = names.entry(name.trim_end_matches('.').to_ascii_lowercase()).or_default();
                if !ips.contains(&s.ip) {
                    ips.push(s.ip);
                }
            }
        }
        let unchanged = self.names.lock().expect("names lock").1.get(&vpc.id).map_or(names.is_empty(), |n| *n == names);
        if !unchanged {
            self.publish_names(|all| {
                if names.is_empty() {
                    all.1.remove(&vpc.id);
                } else {
                    all.1.insert(vpc.id.clone(), names);
                }
            });
        }
        Ok(())
    }

    /// One load balancer's addresses in its VPC.
    async fn ensure_load_balancer(&self, lb: &LoadBalancerSpec) -> Result<(), AgentError> {
        // Application load balancers admit what their groups allow; network ones, the VPC.
        let groups = match lb.kind {
            LbKind::Application => lb.security_groups.clone(),
            LbKind::Network => Vec::new(),
        };
        let _turn = self.vpc_turn.write().await;
        self.ensure_host_side(&lb.vpc_id, &lb.security_groups).await?;
        let mut ports: Vec<u16> = lb.listeners.iter().map(|l| l.port).collect();
        ports.sort_unstable();
        ports.dedup();
        for address in &lb.addresses {
            let spec = LbAddressSpec {
                vpc_id: lb.vpc_id.clone(),
                ip: address.private_ip,
                ports: ports.clone(),
                security_groups: groups.clone(),
                public_ip: address.public_ip,
            };
            self.blocking(move |net| net.ensure_lb_address(&spec)).await?;
        }
        Ok(())
    }

    async fn ensure_lbs(&self, lbs: &[LoadBalancerSpec]) -> bool {
        let mut all = true;
        let mut names: HashMap<String, HashMap<String, Vec<Ipv4Addr>>> = HashMap::new();
        for lb in lbs {
            match self.ensure_load_balancer(lb).await {
                Ok(()) => {
                    let ips = lb.addresses.iter().map(|a| a.private_ip).collect();
                    names.entry(lb.vpc_id.clone()).or_default().insert(lb.dns_name.to_ascii_lowercase(), ips);
                }
                Err(e) => {
                    tracing::warn!(lb = %lb.arn, error = %e, "cannot give the load balancer its VPC addresses; retrying");
                    all = false;
                }
            }
        }
        self.publish_names(|all| all.0 = names);
        all
    }

    /// Changes the names the VPC resolvers answer and publishes them all.
    fn publish_names(&self, change: impl FnOnce(&mut (VpcNames, VpcNames))) {
        let mut names = self.names.lock().expect("names lock");
        change(&mut names);
        let mut all = names.1.clone();
        for (vpc, lbs) in &names.0 {
            all.entry(vpc.clone()).or_default().extend(lbs.iter().map(|(n, ips)| (n.clone(), ips.clone())));
        }
        self.dns.set_names(all);
    }

    async fn retire_lbs(&self, keep: &[LoadBalancerSpec]) -> Result<(), AgentError> {
        let keep: HashSet<Ipv4Addr> = keep.iter().flat_map(|lb| lb.addresses.iter().map(|a| a.private_ip)).collect();
        let _turn = self.vpc_turn.write().await;
        let stale: Vec<Ipv4Addr> = self
            .blocking(|net| Ok(net.list_lb_addresses()))
            .await?
            .into_iter()
            .map(|a| a.ip)
            .filter(|ip| !keep.contains(ip))
            .collect();
        for ip in stale {
            tracing::debug!(%ip, "removing the address of a load balancer that is gone");
            self.blocking(move |net| net.remove_lb_address(ip)).await?;
        }
        Ok(())
    }

    async fn vpc(&self, vpc_id: &str) -> Result<Option<flotilla_host::VpcView>, AgentError> {
        Ok(self.host.vpc(vpc_id).await?)
    }

    /// Removes the task's interface from the data plane. Idempotent. The VPC's host side
    /// (router and resolver addresses, its groups) stays while the VPC exists, so the next
    /// task in it starts without rebuilding it. Detaches run side by side, with each other
    /// and with attaches.
    async fn detach_lease(&self, eni: &InterfaceLease) -> Result<(), AgentError> {
        let _turn = self.vpc_turn.read().await;
        if let (Some(underlay), Some(public)) = (&self.underlay, eni.public_ip) {
            let local = underlay.ip;
            self.blocking(move |net| net.withdraw_public(local, public)).await?;
        }
        let id = eni.id.clone();
        self.blocking(move |net| with_phases(&id, "interface removed", || net.remove_interface(&id))).await
    }

    async fn release_vpc_if_unused(&self, vpc_id: &str) -> Result<(), AgentError> {
        let interfaces = self.blocking(|net| net.list_interfaces()).await?;
        if interfaces.iter().any(|i| i.vpc_id.as_deref() == Some(vpc_id)) {
            return Ok(());
        }
        self.hosted.lock().expect("hosted lock").remove(vpc_id);
        let mut groups = self.groups_in(vpc_id).await;
        {
            let mut synced = self.synced.lock().expect("synced lock");
            synced.0.remove(vpc_id);
            groups.extend(synced.1.iter().filter(|(_, v)| *v == vpc_id).map(|(g, _)| g.clone()));
            groups.sort();
            groups.dedup();
        }
        if self.underlay.is_some() {
            // Remote interfaces are members of the VPC's groups: they go first.
            let vpc = vpc_id.to_owned();
            self.blocking(move |net| net.remove_overlay(&vpc)).await?;
        }
        self.overlaid.lock().expect("overlaid lock").remove(vpc_id);
        if self.names.lock().expect("names lock").1.contains_key(vpc_id) {
            self.publish_names(|all| drop(all.1.remove(vpc_id)));
        }
        self.applied_groups.lock().expect("applied groups lock").remove(vpc_id);
        let removed = self.served.lock().expect("served lock").remove(vpc_id);
        if removed {
            for (addr, vpc) in self.dns.bindings() {
                if vpc == vpc_id {
                    self.dns.unbind(addr);
                }
            }
        }
        self.remove_groups(groups).await?;
        let vpc = vpc_id.to_owned();
        self.blocking(move |net| net.remove_vpc(&vpc)).await
    }

    /// Removes groups from the data plane, in turns (groups may name each other); a group
    /// still used or named elsewhere stays. Forgets the ones removed.
    async fn remove_groups(&self, groups: Vec<String>) -> Result<(), AgentError> {
        let removed = self
            .blocking(move |net| {
                let mut left = groups;
                let mut removed = Vec::new();
                loop {
                    let before = left.len();
                    let mut failure = None;
                    left.retain(|g| match net.remove_security_group(g) {
                        Ok(()) => {
                            removed.push(g.clone());
                            false
                        }
                        Err(
                            flotilla_net::NetError::SecurityGroupReferenced { .. }
                            | flotilla_net::NetError::SecurityGroupInUse { .. },
                        ) => true,
                        Err(e) => {
                            failure.get_or_insert(e);
                            true
                        }
                    });
                    if let Some(e) = failure {
                        return Err(e);
                    }
                    if left.is_empty() || left.len() == before {
                        return Ok(removed);
                    }
                }
            })
            .await?;
        let mut synced = self.synced.lock().expect("synced lock");
        for g in removed {
            synced.1.remove(&g);
        }
        Ok(())
    }

    /// The security groups of `vpc_id`, as the control plane has them now.
    async fn groups_of(&self, vpc_id: &str) -> Result<Vec<GroupView>, AgentError> {
        Ok(self.vpc(vpc_id).await?.map(|v| v.groups).unwrap_or_default())
    }

    /// Ids of the groups the data plane holds for `vpc_id`, as the control plane knows them.
    async fn groups_in(&self, vpc_id: &str) -> Vec<String> {
        self.groups_of(vpc_id).await.map(|gs| gs.into_iter().map(|g| g.id).collect()).unwrap_or_default()
    }

    /// Applies `groups`, every security group of `vpc_id` as the control plane has it now.
    async fn apply_groups(&self, vpc_id: &str, groups: Vec<GroupView>) -> Result<(), AgentError> {
        // Forgotten until applied: a failure below re-applies at the next change.
        self.applied_groups.lock().expect("applied groups lock").remove(vpc_id);
        let views = groups.clone();
        let specs: Vec<SecurityGroupSpec> = groups.iter().map(group_spec).collect();
        self.blocking(move |net| specs.iter().try_for_each(|s| net.ensure_security_group(s))).await?;
        // Groups deleted from the control plane (never while an interface uses them) go.
        let stale: Vec<String> = {
            let mut synced = self.synced.lock().expect("synced lock");
            synced.0.insert(vpc_id.to_owned());
            let stale = synced
                .1
                .iter()
                .filter(|(g, v)| *v == vpc_id && !groups.iter().any(|x| &x.id == *g))
                .map(|(g, _)| g.clone())
                .collect();
            synced.1.extend(groups.into_iter().map(|g| (g.id, vpc_id.to_owned())));
            stale
        };
        self.remove_groups(stale).await?;
        self.applied_groups.lock().expect("applied groups lock").insert(vpc_id.to_owned(), views);
        Ok(())
    }

    /// Re-applies the groups (and the overlay, the VPC's interfaces on other hosts) of every
    /// VPC this host serves, after a group or interface changed, and removes the host side of
    /// VPCs that were deleted. A group deleted from the control plane (which refuses while an interface
    /// uses it) stays in the data plane, unused, until its VPC's host side goes.
    async fn resync_groups(&self) -> Result<(), AgentError> {
        // In turn with attaches, so none can read the set below before a change lands.
        let _turn = self.vpc_turn.write().await;
        let interfaces = self.blocking(|net| net.list_interfaces()).await?;
        let mut vpcs: HashSet<String> = interfaces.iter().filter_map(|i| i.vpc_id.clone()).collect();
        vpcs.extend(self.synced.lock().expect("synced lock").0.iter().cloned());
        for vpc in vpcs {
            match self.vpc(&vpc).await? {
                // Deleted (which the control plane allows only once its subnets, and so its
                // interfaces, are gone): its host side goes too.
                None => self.release_vpc_if_unused(&vpc).await?,
                Some(view) => {
                    let applied =
                        self.applied_groups.lock().expect("applied groups lock").get(&vpc) == Some(&view.groups);
                    if !applied {
                        self.apply_groups(&vpc, view.groups.clone()).await?;
                    }
                    self.apply_overlay(&view).await?;
                    if let Err(e) = self.apply_virtual_services(&view).await {
                        tracing::warn!(%vpc, error = %e, "cannot route the VPC's virtual services; the next change retries");
                    }
                }
            }
        }
        Ok(())
    }

    async fn serve_dns(&self, vpc_id: &str, resolver: Ipv4Addr) -> Result<(), AgentError> {
        if self.served.lock().expect("served lock").contains(vpc_id) {
            return Ok(());
        }
        let addr = SocketAddr::from((resolver, 53));
        let bind = move || -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
            Ok((std::net::UdpSocket::bind(addr)?, std::net::TcpListener::bind(addr)?))
        };
        let sockets = match self.net.host_netns() {
            None => bind(),
            Some(ns) => flotilla_net::netns::run_in_file(ns, bind).and_then(|r| r),
        };
        let (udp, tcp) = sockets.map_err(|e| net_err(format!("cannot serve DNS on {addr} for {vpc_id}: {e}")))?;
        self.dns.serve_vpc(vpc_id, udp, tcp).map_err(net_err)?;
        self.served.lock().expect("served lock").insert(vpc_id.to_owned());
        Ok(())
    }

    /// The task endpoint's address on the host side, and one listener there.
    async fn bind_task_endpoint(&self) -> Result<Option<std::net::TcpListener>, AgentError> {
        self.blocking(|net| net.ensure_task_endpoint()).await?;
        let addr = SocketAddr::from((flotilla_net::TASK_ENDPOINT, flotilla_net::TASK_ENDPOINT_PORT));
        let bind = move || -> std::io::Result<std::net::TcpListener> {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        let listener = match self.net.host_netns() {
            None => bind(),
            Some(ns) => flotilla_net::netns::run_in_file(ns, bind).and_then(|r| r),
        };
        listener.map(Some).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (another program listens on port 80 on every address of the task network's \
                 namespace: stop it, bind it to specific addresses, or run the task network in \
                 its own namespace with --net-namespace)"
            } else {
                ""
            };
            net_err(format!("cannot listen on {addr} for the task endpoint: {e}{hint}"))
        })
    }

    /// On a clean shutdown with no task interface left, removes the host side entirely (VPC
    /// devices, groups, the nft table), so a host that runs no tasks keeps nothing of ours.
    async fn dismantle(&self) {
        let _turn = self.vpc_turn.write().await;
        self.hosted.lock().expect("hosted lock").clear();
        match self.blocking(|net| net.dismantle()).await {
            Ok(true) => tracing::debug!("task network removed"),
            Ok(false) => tracing::debug!("tasks still have interfaces; the task network stays for them"),
            Err(e) => tracing::warn!(error = %e, "could not remove the task network; the next start cleans it"),
        }
    }

    /// After a restart: removes every interface (and VPC, group) of the data plane that no
    /// live task holds.
    async fn cleanup_except(&self, keep: &[InterfaceLease]) -> Result<(), AgentError> {
        let keep_ids: Vec<String> = keep.iter().map(|e| e.id.clone()).collect();
        let keep_vpcs: Vec<String> = keep.iter().map(|e| e.vpc_id.clone()).collect();
        let mut keep_sgs = Vec::new();
        for vpc in &keep_vpcs {
            keep_sgs.extend(self.groups_in(vpc).await);
        }
        let _turn = self.vpc_turn.write().await;
        self.hosted.lock().expect("hosted lock").clear();
        let report = self.blocking(move |net| net.cleanup(&keep_ids, &keep_vpcs, &keep_sgs)).await?;
        if !report.interfaces.is_empty() || !report.vpcs.is_empty() {
            tracing::info!(?report, "removed network plumbing left by tasks that are gone");
        }
        if let Some(underlay) = &self.underlay {
            let (local, publics): (Ipv4Addr, Vec<Ipv4Addr>) =
                (underlay.ip, keep.iter().filter_map(|e| e.public_ip).collect());
            let stale = self.blocking(move |net| net.withdraw_publics_except(local, &publics)).await?;
            if !stale.is_empty() {
                tracing::info!(?stale, "stopped announcing public addresses of tasks that are gone");
            }
        }
        Ok(())
    }
}

impl TaskNetwork for Networking {
    fn attach<'a>(
        &'a self,
        lease: &'a InterfaceLease,
        netns: &'a Path,
        resolv_conf: &'a Path,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(self.attach_lease(lease, netns, resolv_conf))
    }
    fn detach<'a>(&'a self, lease: &'a InterfaceLease) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(self.detach_lease(lease))
    }
    fn cleanup<'a>(&'a self, keep: &'a [InterfaceLease]) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(self.cleanup_except(keep))
    }
    fn resync(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(self.resync_groups())
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.dismantle())
    }
    fn ensure_load_balancers<'a>(&'a self, lbs: &'a [LoadBalancerSpec]) -> BoxFuture<'a, bool> {
        Box::pin(self.ensure_lbs(lbs))
    }
    fn retire_load_balancers<'a>(&'a self, keep: &'a [LoadBalancerSpec]) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(self.retire_lbs(keep))
    }
    fn task_endpoint(&self) -> BoxFuture<'_, Result<Option<std::net::TcpListener>, AgentError>> {
        Box::pin(self.bind_task_endpoint())
    }
    fn wired<'a>(&'a self, lease: &'a InterfaceLease) -> BoxFuture<'a, bool> {
        Box::pin(self.wired(lease))
    }
}

/// The search domain of the region's private DNS names, as on EC2.
fn search_domain(region: &str) -> String {
    if region == "us-east-1" { "ec2.internal".to_owned() } else { format!("{region}.compute.internal") }
}

/// Rewrites a file that is bind-mounted into containers: truncating and writing keeps the
/// inode, so every container's mount sees the new text.
fn rewrite_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

/// Runs an interface change and, at debug level, logs where it spent its time (the
/// supervisor's phase timings).
fn with_phases<T>(interface: &str, done: &'static str, change: impl FnOnce() -> T) -> T {
    let log = tracing::enabled!(tracing::Level::DEBUG);
    if log {
        flotilla_net::phases::record();
    }
    let out = change();
    if log {
        tracing::debug!(interface, phases = ?flotilla_net::phases::take(), "{done}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_or_are_refused() {
        assert_eq!(parse_mac("02:0a:ff:00:01:02").unwrap(), [2, 10, 255, 0, 1, 2]);
        assert!(parse_mac("02:0a").is_err());
    }

    fn rule(protocol: RuleProtocol, from: Option<i32>, to: Option<i32>) -> GroupRule {
        GroupRule { protocol, from_port: from, to_port: to, peer: RulePeer::Cidr("10.0.0.0/16".parse().unwrap()) }
    }

    #[test]
    fn rules_translate_to_the_data_plane() {
        let tcp = net_rule(&rule(RuleProtocol::Tcp, Some(80), Some(90))).unwrap();
        assert_eq!((tcp.protocol, tcp.from_port, tcp.to_port), (Protocol::Tcp, Some(80), Some(90)));
        assert_eq!(tcp.peer, Peer::Cidr("10.0.0.0/16".parse().unwrap()));
        let every_port = net_rule(&rule(RuleProtocol::Udp, Some(0), Some(65535))).unwrap();
        assert_eq!((every_port.from_port, every_port.to_port), (None, None));
        let any_icmp = net_rule(&rule(RuleProtocol::Icmp, Some(-1), Some(-1))).unwrap();
        assert_eq!((any_icmp.from_port, any_icmp.to_port), (None, None));
        let echo = net_rule(&rule(RuleProtocol::Icmp, Some(8), Some(-1))).unwrap();
        assert_eq!((echo.from_port, echo.to_port), (Some(8), None));
        assert_eq!(net_rule(&rule(RuleProtocol::All, None, None)).unwrap().protocol, Protocol::All);
        assert!(net_rule(&rule(RuleProtocol::Other(47), None, None)).is_none(), "GRE admits nothing");
    }
}
