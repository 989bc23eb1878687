//! Desired state in (`...Spec`), observed state out (`...Status`), and the checks a spec must
//! pass before anything touches the kernel.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::error::{NetError, Object};

/// The link-local next hop every task routes through; the host side answers for it.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The MAC of every host-side veth (as Calico does): the task's permanent neighbour entry for
/// [`GATEWAY`] points at it, so tasks never ARP for their gateway.
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The task-side name of its interface.
pub const TASK_LINK: &str = "eth0";
/// The MTU of both ends of every task veth, and so of traffic within a VPC. AWS uses 9001;
/// here a VPC never leaves the host (the rules drop VPC destinations with no live interface),
/// so its traffic can use the largest MTU a veth takes, as loopback does. Per-packet work (two
/// veth hops, routing, conntrack, the chains) dominates throughput through the host: this
/// takes task-to-task TCP from about 55% of loopback (1500) or 60-80% (9001) to about 95%
/// (`benches/throughput.rs`).
pub const VPC_MTU: u32 = 65535;
/// The MTU of a task's default route: traffic leaving the VPC (through NAT or a public
/// address) is sized for the internet, as on AWS, whatever the veth allows.
pub const INTERNET_MTU: u32 = 1500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The `inet` table holding every rule, set and map; one per `Network`.
    pub nft_table: String,
    /// Where tasks' egress leaves the host and is masqueraded. `None`: through whichever
    /// interface the route picks, as long as it is not a task interface.
    pub uplink: Option<String>,
    /// The host's network namespace. `None`: the one the `Network` is created in. Tests give
    /// each `Network` a namespace of its own to play the host.
    pub host_netns: Option<PathBuf>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { nft_table: "flotilla".into(), uplink: None, host_netns: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcSpec {
    pub id: String,
    pub cidr: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcStatus {
    pub id: String,
    pub cidr: Ipv4Net,
    /// CIDR base + 1, on the host: the source of host-originated traffic to the VPC's tasks.
    pub router: Ipv4Addr,
    /// CIDR base + 2, on the host: where the VPC's DNS server binds (TCP and UDP 53).
    pub resolver: Ipv4Addr,
    /// The host dummy device carrying `router` and `resolver`.
    pub host_link: String,
}

impl VpcStatus {
    pub(crate) fn new(table: &str, id: &str, cidr: Ipv4Net) -> Self {
        let base = u32::from(cidr.network());
        VpcStatus {
            id: id.to_string(),
            cidr,
            router: Ipv4Addr::from(base + 1),
            resolver: Ipv4Addr::from(base + 2),
            host_link: vpc_link_name(table, id),
        }
    }

    /// The `/etc/resolv.conf` a task of this VPC should see.
    pub fn resolv_conf(&self, search: &[&str]) -> String {
        let mut conf = format!("nameserver {}\n", self.resolver);
        if !search.is_empty() {
            conf.push_str(&format!("search {}\n", search.join(" ")));
        }
        conf
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    /// Every protocol (EC2's `-1`); ports are ignored.
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Cidr(Ipv4Net),
    /// The private addresses of every interface in that group.
    SecurityGroup(String),
}

/// One permission. Ports are a range (`None` on both ends: all); for ICMP, as in EC2,
/// `from_port` is the type and `to_port` the code (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub protocol: Protocol,
    pub from_port: Option<u16>,
    pub to_port: Option<u16>,
    pub peer: Peer,
}

impl Rule {
    pub fn new(protocol: Protocol, ports: Option<(u16, u16)>, peer: Peer) -> Self {
        Rule { protocol, from_port: ports.map(|p| p.0), to_port: ports.map(|p| p.1), peer }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupSpec {
    pub id: String,
    pub vpc_id: String,
    /// Allowed inbound traffic; everything else is dropped (replies always pass).
    pub ingress: Vec<Rule>,
    /// Allowed outbound traffic; with no rules nothing leaves (AWS's default group has
    /// `0.0.0.0/0` all, but that is the control plane's to say).
    pub egress: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// The ENI id.
    pub id: String,
    pub vpc_id: String,
    /// The task's network namespace file (`<task-dir>/ns/net`).
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    /// The subnet's prefix length: the task sees `ip/prefix_len` on `eth0`.
    pub prefix_len: u8,
    pub mac: [u8; 6],
    /// 1 to 5 groups; traffic passes if any of them allows it.
    pub security_groups: Vec<String>,
    pub public_ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStatus {
    pub id: String,
    /// The host end of the veth pair, `fl<8 hex>`.
    pub host_link: String,
    pub host_mac: [u8; 6],
    /// Whether the host link exists (rules are made before it and removed after it).
    pub link_present: bool,
    /// Known while the interface's rules exist.
    pub vpc_id: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub public_ip: Option<Ipv4Addr>,
    pub security_groups: Vec<String>,
}

/// A load balancer's private address in a VPC: a local address of the VPC's host side (like
/// the router and resolver), which the VPC's tasks may reach on `ports` (TCP) as far as
/// `security_groups` allow (none: every task of the VPC may). The address counts as a member of
/// its groups, so a target may admit "the load balancer's group"; `public_ip` is 1:1 NAT'd to
/// it like an interface's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbAddressSpec {
    pub vpc_id: String,
    pub ip: Ipv4Addr,
    pub ports: Vec<u16>,
    pub security_groups: Vec<String>,
    pub public_ip: Option<Ipv4Addr>,
}

/// The UDP port of the overlay (IANA's VXLAN port).
pub const VXLAN_PORT: u16 = 4789;
/// What VXLAN adds to each packet over IPv4 (outer IP 20, UDP 8, VXLAN 8, inner Ethernet 14):
/// the overlay's MTU is the underlay's less this.
pub const VXLAN_OVERHEAD: u32 = 50;

/// A VPC's share of the overlay on this host: one VXLAN device (the VPC's VNI, this host's
/// underlay address as the outer source) and, for every interface of the VPC on another host,
/// a route to it through that host. Remote interfaces are members of their groups here, so a
/// rule naming a group admits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    pub vpc_id: String,
    /// 1 to 2^24 - 1, unique among VPCs (the control plane's to say).
    pub vni: u32,
    /// This host's underlay address; a link of the host must hold it.
    pub local_ip: Ipv4Addr,
    /// The whole set: remote interfaces not listed are removed.
    pub remotes: Vec<RemoteInterface>,
}

/// An interface of the VPC on another host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteInterface {
    pub ip: Ipv4Addr,
    /// The underlay address of the host holding it.
    pub host_ip: Ipv4Addr,
    pub security_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayStatus {
    pub vpc_id: String,
    /// The VXLAN device, `flvx<8 hex>`.
    pub link: String,
    pub vni: u32,
    /// The MTU of the device and of the routes through it.
    pub mtu: u32,
    /// How many remote interfaces are routed (a remote address a local interface has is not).
    pub remotes: usize,
}

/// What `cleanup` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub interfaces: Vec<String>,
    pub vpcs: Vec<String>,
    pub security_groups: Vec<String>,
}

/// Ids become nft names and link aliases: `[A-Za-z0-9-]{1,64}` (EC2's all fit).
pub(crate) fn check_id(id: &str) -> Result<(), NetError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok { Ok(()) } else { Err(NetError::InvalidId { id: id.to_string() }) }
}

pub(crate) fn check_table(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(NetError::InvalidTable { name: name.to_string() }) }
}

/// An id as part of an nft name; reversible since ids have no `_`.
pub(crate) fn nft_name(id: &str) -> String {
    id.replace('-', "_")
}

pub(crate) fn id_from_nft_name(name: &str) -> String {
    name.replace('_', "-")
}

pub(crate) fn fnv1a(parts: &[&str]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for part in parts {
        for &b in part.as_bytes().iter().chain(b"\0") {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash
}

/// 64-bit FNV-1a, for names that many distinct inputs share a namespace with (collisions
/// must not happen in practice, not just rarely).
pub(crate) fn fnv1a64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(b"\0") {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// The device group a table's doomed task veths are moved to, to be deleted together (never
/// 0, the kernel's default group).
pub(crate) fn doomed_group(table: &str) -> u32 {
    fnv1a(&[table, "doomed"]) | 0x8000_0000
}

/// The host end of an interface's veth pair. The table is part of the hash so that two
/// `Network`s sharing a namespace never pick the same name for the same ENI id.
pub(crate) fn interface_link_name(table: &str, id: &str) -> String {
    format!("fl{:08x}", fnv1a(&[table, "eni", id]))
}

pub(crate) fn vpc_link_name(table: &str, id: &str) -> String {
    format!("flvpc{:08x}", fnv1a(&[table, "vpc", id]))
}

pub(crate) fn overlay_link_name(table: &str, vpc_id: &str) -> String {
    format!("flvx{:08x}", fnv1a(&[table, "vxlan", vpc_id]))
}

/// The MAC of a host's VXLAN devices, from its underlay address: a host's neighbour entry for
/// another host (on the device) points at it and its FDB entry sends it to that address, so
/// no MAC needs to travel between hosts.
pub(crate) fn overlay_mac(host_ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = host_ip.octets();
    [0x0e, 0xf1, a, b, c, d]
}

/// The alias marking a host link as ours; `list_interfaces` and `cleanup` find links by it.
pub(crate) fn link_alias(table: &str, kind: &str, id: &str) -> String {
    format!("flotilla/{table}/{kind}/{id}")
}

pub(crate) fn parse_alias<'a>(table: &str, kind: &str, alias: &'a str) -> Option<&'a str> {
    alias.strip_prefix("flotilla/")?.strip_prefix(table)?.strip_prefix('/')?.strip_prefix(kind)?.strip_prefix('/')
}

pub(crate) fn check_vpc(spec: &VpcSpec) -> Result<(), NetError> {
    check_id(&spec.id)?;
    if spec.cidr.prefix_len() > 28 || spec.cidr.prefix_len() < 8 || spec.cidr.network() != spec.cidr.addr() {
        let reason = format!("CIDR {} must be a network address with a /8 to /28 prefix", spec.cidr);
        return Err(NetError::InvalidSpec { object: Object::Vpc(spec.id.clone()), reason });
    }
    Ok(())
}

pub(crate) fn check_group(spec: &SecurityGroupSpec) -> Result<(), NetError> {
    check_id(&spec.id)?;
    check_id(&spec.vpc_id)?;
    for rule in spec.ingress.iter().chain(&spec.egress) {
        let invalid = |reason: String| NetError::InvalidSpec { object: Object::SecurityGroup(spec.id.clone()), reason };
        if let Peer::SecurityGroup(peer) = &rule.peer {
            check_id(peer)?;
        }
        match rule.protocol {
            Protocol::Tcp | Protocol::Udp => {
                if let (Some(from), Some(to)) = (rule.from_port, rule.to_port)
                    && from > to
                {
                    return Err(invalid(format!("port range {from}-{to} is empty")));
                }
            }
            Protocol::Icmp => {
                if rule.from_port.into_iter().chain(rule.to_port).any(|v| v > 255) {
                    return Err(invalid("ICMP type and code are 0 to 255".into()));
                }
            }
            Protocol::All => {}
        }
    }
    Ok(())
}

pub(crate) fn check_interface(spec: &InterfaceSpec, vpc: &VpcStatus) -> Result<(), NetError> {
    check_id(&spec.id)?;
    let invalid = |reason: String| NetError::InvalidSpec { object: Object::Interface(spec.id.clone()), reason };
    if spec.security_groups.is_empty() || spec.security_groups.len() > 5 {
        return Err(invalid(format!("has {} security groups; 1 to 5 are allowed", spec.security_groups.len())));
    }
    for group in &spec.security_groups {
        check_id(group)?;
    }
    let subnet =
        Ipv4Net::new(spec.ip, spec.prefix_len).map_err(|_| invalid(format!("bad prefix /{}", spec.prefix_len)))?;
    if spec.prefix_len > 30 || !vpc.cidr.contains(&subnet.trunc()) {
        return Err(invalid(format!("subnet {} is not within VPC {} ({})", subnet.trunc(), vpc.id, vpc.cidr)));
    }
    if spec.ip == subnet.network() || spec.ip == subnet.broadcast() || spec.ip == vpc.router || spec.ip == vpc.resolver
    {
        return Err(invalid(format!("{} is a reserved address of its subnet or VPC", spec.ip)));
    }
    if spec.mac[0] & 1 != 0 || spec.mac == [0; 6] || spec.mac == HOST_MAC {
        return Err(invalid("MAC must be unicast, non-zero and not the host side's".into()));
    }
    Ok(())
}

pub(crate) fn check_overlay(spec: &OverlaySpec, vpc: &VpcStatus) -> Result<(), NetError> {
    check_id(&spec.vpc_id)?;
    let invalid = |reason: String| NetError::InvalidSpec { object: Object::Vpc(spec.vpc_id.clone()), reason };
    if spec.vni == 0 || spec.vni >= 1 << 24 {
        return Err(invalid(format!("VNI {} is not 1 to 16777215", spec.vni)));
    }
    let mut seen = std::collections::BTreeSet::new();
    for remote in &spec.remotes {
        if !vpc.cidr.contains(&remote.ip) || remote.ip == vpc.router || remote.ip == vpc.resolver {
            return Err(invalid(format!("remote interface {} is not an address of {}", remote.ip, vpc.cidr)));
        }
        if !seen.insert(remote.ip) {
            return Err(invalid(format!("remote interface {} is listed twice", remote.ip)));
        }
        if remote.host_ip == spec.local_ip {
            return Err(invalid(format!("remote interface {} is on this host ({})", remote.ip, remote.host_ip)));
        }
        for group in &remote.security_groups {
            check_id(group)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_are_stable() {
        let a = interface_link_name("flotilla", "eni-0123456789abcdef0");
        assert_eq!(a.len(), 10);
        assert_eq!(a, interface_link_name("flotilla", "eni-0123456789abcdef0"));
        assert_ne!(a, interface_link_name("other", "eni-0123456789abcdef0"));
        assert!(vpc_link_name("flotilla", "vpc-1").len() <= 15);
    }

    #[test]
    fn alias_round_trip() {
        let alias = link_alias("t1", "eni", "eni-1");
        assert_eq!(parse_alias("t1", "eni", &alias), Some("eni-1"));
        assert_eq!(parse_alias("t", "eni", &alias), None);
        assert_eq!(parse_alias("t1", "vpc", &alias), None);
    }

    #[test]
    fn ids_and_tables() {
        assert!(check_id("sg-0abc").is_ok());
        assert!(check_id("sg_0abc").is_err());
        assert!(check_id("").is_err());
        assert!(check_table("flotilla_t1").is_ok());
        assert!(check_table("1abc").is_err());
        assert_eq!(id_from_nft_name(&nft_name("sg-1-a")), "sg-1-a");
    }

    #[test]
    fn interface_checks() {
        let vpc = VpcStatus::new("t", "vpc-1", "10.1.0.0/16".parse().unwrap());
        let mut spec = InterfaceSpec {
            id: "eni-1".into(),
            vpc_id: "vpc-1".into(),
            netns: "/x".into(),
            ip: "10.1.1.5".parse().unwrap(),
            prefix_len: 24,
            mac: [2, 0, 0, 0, 0, 1],
            security_groups: vec!["sg-1".into()],
            public_ip: None,
        };
        assert!(check_interface(&spec, &vpc).is_ok());
        spec.ip = "10.2.1.5".parse().unwrap();
        assert!(check_interface(&spec, &vpc).is_err());
        spec.ip = "10.1.0.2".parse().unwrap();
        assert!(check_interface(&spec, &vpc).is_err());
        spec.ip = "10.1.1.5".parse().unwrap();
        spec.prefix_len = 8;
        assert!(check_interface(&spec, &vpc).is_err());
        spec.prefix_len = 24;
        spec.mac = [1, 0, 0, 0, 0, 1];
        assert!(check_interface(&spec, &vpc).is_err());
    }

    #[test]
    fn resolv_conf() {
        let vpc = VpcStatus::new("t", "vpc-1", "10.1.0.0/16".parse().unwrap());
        assert_eq!(vpc.resolv_conf(&["ns.local"]), "nameserver 10.1.0.2\nsearch ns.local\n");
    }
}
