//! Just enough rtnetlink (`NETLINK_ROUTE`) for point-to-point task interfaces, over one blocking
//! socket. A netlink socket acts in the network namespace its creator was in when it was opened
//! (see `netns::run_in`), whichever thread uses it later.
//!
//! Hand-rolled rather than `rtnetlink` because every call here is one request and one ACK on a
//! socket bound to a namespace chosen at open time: a blocking socket does that in a few hundred
//! lines with no async runtime, and keeps the crate's build at `libc` + `ipnet`.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::NetlinkError;

type Result<T> = std::result::Result<T, NetlinkError>;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// Set on an error message that carries extended-ACK attributes.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_GROUP: u16 = 27;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NOPREFIXROUTE: u32 = 0x200;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTAX_MTU: u16 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NUD_PERMANENT: u16 = 0x80;
/// An FDB entry of the device itself (a VXLAN device's remote table), not of a bridge.
const NTF_SELF: u8 = 0x02;
const AF_BRIDGE: u8 = libc::AF_BRIDGE as u8;

const IFF_UP: u32 = libc::IFF_UP as u32;
const AF_INET: u8 = libc::AF_INET as u8;

/// One request under construction: header, fixed struct, attributes (nests patched on close).
struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    fn new(ty: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[0; NLMSG_HDRLEN]);
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Message { buf, nests: Vec::new() }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).expect("netlink attribute over 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.raw(data)
    }

    fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(ty, &data)
    }

    fn begin(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("unbalanced netlink nest");
        let len = u16::try_from(self.buf.len() - start).expect("netlink nest over 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// Iterates `(type, payload)` over a run of netlink attributes.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        Some((ty, payload))
    })
}

fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// A network device as the kernel reports it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub index: i32,
    pub name: String,
    pub up: bool,
    pub mac: Option<[u8; 6]>,
    pub alias: Option<String>,
    pub mtu: Option<u32>,
    /// For a VXLAN device: its VNI and local (source) address.
    pub vxlan: Option<(u32, Option<Ipv4Addr>)>,
}

impl Link {
    fn parse(payload: &[u8]) -> Option<Link> {
        if payload.len() < 16 {
            return None;
        }
        let index = i32::from_ne_bytes(payload[4..8].try_into().ok()?);
        let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
        let mut link = Link {
            index,
            name: String::new(),
            up: flags & IFF_UP != 0,
            mac: None,
            alias: None,
            mtu: None,
            vxlan: None,
        };
        for (ty, data) in attrs(&payload[16..]) {
            match ty {
                IFLA_IFNAME => link.name = c_string(data),
                IFLA_ADDRESS => link.mac = data.try_into().ok(),
                IFLA_MTU => link.mtu = data.try_into().ok().map(u32::from_ne_bytes),
                IFLA_IFALIAS => link.alias = Some(c_string(data)).filter(|a| !a.is_empty()),
                IFLA_LINKINFO => link.vxlan = parse_vxlan(data),
                _ => {}
            }
        }
        Some(link)
    }
}

/// A VXLAN device's VNI and local address, from its `IFLA_LINKINFO`.
fn parse_vxlan(linkinfo: &[u8]) -> Option<(u32, Option<Ipv4Addr>)> {
    let mut kind = None;
    let mut data = None;
    for (ty, payload) in attrs(linkinfo) {
        match ty {
            IFLA_INFO_KIND => kind = Some(c_string(payload)),
            IFLA_INFO_DATA => data = Some(payload),
            _ => {}
        }
    }
    if kind.as_deref() != Some("vxlan") {
        return None;
    }
    let (mut vni, mut local) = (None, None);
    for (ty, payload) in attrs(data?) {
        match ty {
            IFLA_VXLAN_ID => vni = payload.try_into().ok().map(u32::from_ne_bytes),
            IFLA_VXLAN_LOCAL => local = <[u8; 4]>::try_from(payload).ok().map(Ipv4Addr::from),
            _ => {}
        }
    }
    Some((vni?, local))
}

/// A route to add (or replace) in the main table.
pub(crate) struct Route {
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub oif: i32,
    pub gateway: Option<Ipv4Addr>,
    pub prefsrc: Option<Ipv4Addr>,
    /// A path MTU lower than the device's, for traffic this route carries.
    pub mtu: Option<u32>,
}

pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Opens a route socket in the calling thread's network namespace.
    pub fn open() -> std::io::Result<Socket> {
        Socket::open_protocol(libc::NETLINK_ROUTE)
    }

    /// Opens a conntrack (`NETLINK_NETFILTER`) socket in the calling thread's namespace.
    pub fn open_conntrack() -> std::io::Result<Socket> {
        Socket::open_protocol(libc::NETLINK_NETFILTER)
    }

    fn open_protocol(protocol: libc::c_int) -> std::io::Result<Socket> {
        // SAFETY: plain socket(2); the result is checked before it is wrapped.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for opt in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: the option value points at a live c_int of the size given. Failure only
            // means an old kernel without extended ACKs, which costs error detail, not function.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        Ok(Socket { fd, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// Sends `msg` and calls `on_reply` for every reply until the ACK (or the end of a dump).
    fn exchange(&mut self, mut msg: Message, mut on_reply: impl FnMut(&[u8])) -> Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = msg.buf.len() as u32;
        msg.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        msg.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        let mut addr: libc::sockaddr_nl = unsafe_zeroed_sockaddr();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: buffer and address are live for the call and their lengths are passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.buf.as_ptr().cast(),
                msg.buf.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(NetlinkError::from_io(std::io::Error::last_os_error()));
        }
        loop {
            // SAFETY: receives into our own buffer, bounded by its length.
            let n = unsafe {
                libc::recv(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), libc::MSG_TRUNC)
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::from_io(err));
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(NetlinkError { errno: libc::EMSGSIZE, message: Some("netlink reply truncated".into()) });
            }
            let mut data = &self.buf[..n];
            while data.len() >= NLMSG_HDRLEN {
                let mlen = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
                if mlen < NLMSG_HDRLEN || mlen > data.len() {
                    break;
                }
                let ty = u16::from_ne_bytes([data[4], data[5]]);
                let flags = u16::from_ne_bytes([data[6], data[7]]);
                let mseq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
                let payload = &data[NLMSG_HDRLEN..mlen];
                data = &data[mlen.next_multiple_of(4).min(data.len())..];
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => return parse_ack(payload, flags),
                    NLMSG_DONE => {
                        let code = payload.get(0..4).map(|b| i32::from_ne_bytes(b.try_into().unwrap())).unwrap_or(0);
                        return if code < 0 { Err(NetlinkError { errno: -code, message: None }) } else { Ok(()) };
                    }
                    _ => on_reply(payload),
                }
            }
        }
    }

    fn request(&mut self, msg: Message) -> Result<()> {
        self.exchange(msg, |_| {})
    }

    /// The link named `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = Message::new(RTM_GETLINK, NLM_F_ACK);
        msg.raw(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, name);
        let mut found = None;
        match self.exchange(msg, |payload| found = Link::parse(payload)) {
            Ok(()) => Ok(found),
            Err(e) if e.errno == libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let mut msg = Message::new(RTM_GETLINK, NLM_F_DUMP);
        msg.raw(&ifinfomsg(0, 0, 0));
        let mut links = Vec::new();
        self.exchange(msg, |payload| links.extend(Link::parse(payload)))?;
        Ok(links)
    }

    /// Creates a veth pair with `mtu` on both ends: `host` here and up, `peer` in the namespace
    /// open at `peer_netns` and down (veth cannot open a peer before the pair is linked:
    /// `ENOTCONN`).
    pub fn create_veth(
        &mut self,
        host: &str,
        host_mac: [u8; 6],
        peer: &str,
        peer_mac: [u8; 6],
        peer_netns: RawFd,
        mtu: u32,
    ) -> Result<()> {
        let mut msg = Message::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        msg.raw(&ifinfomsg(0, IFF_UP, IFF_UP))
            .attr_str(IFLA_IFNAME, host)
            .attr(IFLA_ADDRESS, &host_mac)
            .attr(IFLA_MTU, &mtu.to_ne_bytes());
        msg.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"veth").begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
        msg.raw(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, peer)
            .attr(IFLA_ADDRESS, &peer_mac)
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .attr(IFLA_NET_NS_FD, &(peer_netns as u32).to_ne_bytes());
        msg.end().end().end();
        self.request(msg)
    }

    /// Creates an up device that only holds addresses: a dummy, or an ifb on kernels built
    /// without the dummy driver (an ifb transmits nothing unless tc redirects to it, and
    /// traffic to local addresses never leaves through their device anyway).
    pub fn create_dummy(&mut self, name: &str) -> Result<()> {
        let create = |socket: &mut Self, kind: &[u8]| {
            let mut msg = Message::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
            msg.raw(&ifinfomsg(0, IFF_UP, IFF_UP)).attr_str(IFLA_IFNAME, name);
            msg.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, kind).end();
            socket.request(msg)
        };
        match create(self, b"dummy") {
            Err(e) if e.errno == libc::EOPNOTSUPP => create(self, b"ifb"),
            result => result,
        }
    }

    /// Brings a link up and sets its MAC, alias and MTU where given.
    pub fn set_link(&mut self, index: i32, mac: Option<[u8; 6]>, alias: Option<&str>, mtu: Option<u32>) -> Result<()> {
        let mut msg = Message::new(RTM_SETLINK, NLM_F_ACK);
        msg.raw(&ifinfomsg(index, IFF_UP, IFF_UP));
        if let Some(mac) = mac {
            msg.attr(IFLA_ADDRESS, &mac);
        }
        if let Some(mtu) = mtu {
            msg.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        if let Some(alias) = alias {
            msg.attr(IFLA_IFALIAS, alias.as_bytes());
        }
        self.request(msg)
    }

    /// Puts link `index` in device group `group`.
    pub fn set_group(&mut self, index: i32, group: u32) -> Result<()> {
        let mut msg = Message::new(RTM_SETLINK, NLM_F_ACK);
        msg.raw(&ifinfomsg(index, 0, 0)).attr(IFLA_GROUP, &group.to_ne_bytes());
        self.request(msg)
    }

    /// Deletes every link in device group `group` in one kernel batch (one wait for the
    /// kernel, however many links); `false` if the group had none.
    pub fn delete_group(&mut self, group: u32) -> Result<bool> {
        let mut msg = Message::new(RTM_DELLINK, NLM_F_ACK);
        msg.raw(&ifinfomsg(0, 0, 0)).attr(IFLA_GROUP, &group.to_ne_bytes());
        match self.request(msg) {
            Ok(()) => Ok(true),
            Err(e) if e.errno == libc::ENODEV => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the link named `name`; `false` if there was none.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut msg = Message::new(RTM_DELLINK, NLM_F_ACK);
        msg.raw(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, name);
        match self.request(msg) {
            Ok(()) => Ok(true),
            Err(e) if e.errno == libc::ENODEV => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds (or replaces) `ip/prefix_len` on a link; `prefix_route: false` keeps the kernel from
    /// adding an on-link route for the prefix.
    pub fn replace_address(&mut self, index: i32, ip: Ipv4Addr, prefix_len: u8, prefix_route: bool) -> Result<()> {
        let mut msg = Message::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        let mut ifa = [AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE, 0, 0, 0, 0];
        ifa[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        msg.raw(&ifa).attr(IFA_LOCAL, &ip.octets()).attr(IFA_ADDRESS, &ip.octets());
        if !prefix_route {
            msg.attr(IFA_FLAGS, &IFA_F_NOPREFIXROUTE.to_ne_bytes());
        }
        self.request(msg)
    }

    /// Deletes `ip/prefix_len` from a link; `false` if it was not there.
    pub fn delete_address(&mut self, index: i32, ip: Ipv4Addr, prefix_len: u8) -> Result<bool> {
        let mut msg = Message::new(RTM_DELADDR, NLM_F_ACK);
        let mut ifa = [AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE, 0, 0, 0, 0];
        ifa[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        msg.raw(&ifa).attr(IFA_LOCAL, &ip.octets()).attr(IFA_ADDRESS, &ip.octets());
        match self.request(msg) {
            Ok(()) => Ok(true),
            Err(e) if e.errno == libc::EADDRNOTAVAIL || e.errno == libc::ENOENT || e.errno == libc::ENODEV => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds (or replaces) a route. A gateway is taken as on-link: it is never on a prefix the
    /// device has an address in.
    pub fn replace_route(&mut self, route: &Route) -> Result<()> {
        let mut msg = Message::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        let scope = if route.gateway.is_some() { RT_SCOPE_UNIVERSE } else { RT_SCOPE_LINK };
        let flags = if route.gateway.is_some() { RTNH_F_ONLINK } else { 0 };
        let mut rtm = [AF_INET, route.dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0, 0, 0, 0];
        rtm[8..12].copy_from_slice(&flags.to_ne_bytes());
        msg.raw(&rtm);
        if route.dst_len > 0 {
            msg.attr(RTA_DST, &route.dst.octets());
        }
        if let Some(gateway) = route.gateway {
            msg.attr(RTA_GATEWAY, &gateway.octets());
        }
        if let Some(src) = route.prefsrc {
            msg.attr(RTA_PREFSRC, &src.octets());
        }
        if let Some(mtu) = route.mtu {
            msg.begin(RTA_METRICS).attr(RTAX_MTU, &mtu.to_ne_bytes()).end();
        }
        msg.attr(RTA_OIF, &(route.oif as u32).to_ne_bytes());
        self.request(msg)
    }

    /// Adds (or replaces) a permanent IPv4 neighbour entry.
    pub fn replace_neighbour(&mut self, index: i32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        let mut msg = Message::new(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        let mut ndm = [0u8; 12];
        ndm[0] = AF_INET;
        ndm[4..8].copy_from_slice(&index.to_ne_bytes());
        ndm[8..10].copy_from_slice(&NUD_PERMANENT.to_ne_bytes());
        msg.raw(&ndm).attr(NDA_DST, &ip.octets()).attr(NDA_LLADDR, &mac);
        self.request(msg)
    }
}

/// VXLAN devices, their forwarding (FDB) entries and what routes need of them.
impl Socket {
    /// Creates an up VXLAN device: `vni`, `local` as the outer source, UDP `port`, no
    /// learning (every remote MAC is programmed), `mtu` for the inner packets.
    pub fn create_vxlan(
        &mut self,
        name: &str,
        mac: [u8; 6],
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        mtu: u32,
    ) -> Result<()> {
        let mut msg = Message::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        msg.raw(&ifinfomsg(0, IFF_UP, IFF_UP))
            .attr_str(IFLA_IFNAME, name)
            .attr(IFLA_ADDRESS, &mac)
            .attr(IFLA_MTU, &mtu.to_ne_bytes());
        msg.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"vxlan").begin(IFLA_INFO_DATA);
        msg.attr(IFLA_VXLAN_ID, &vni.to_ne_bytes())
            .attr(IFLA_VXLAN_LOCAL, &local.octets())
            .attr(IFLA_VXLAN_LEARNING, &[0])
            .attr(IFLA_VXLAN_PORT, &port.to_be_bytes());
        msg.end().end();
        self.request(msg)
    }

    /// The index of the link holding `ip`, if one does.
    pub fn link_with_address(&mut self, ip: Ipv4Addr) -> Result<Option<i32>> {
        let mut msg = Message::new(RTM_GETADDR, NLM_F_DUMP);
        msg.raw(&[AF_INET, 0, 0, 0, 0, 0, 0, 0]);
        let mut found = None;
        self.exchange(msg, |payload| {
            let Some(index) = payload.get(4..8).map(|b| u32::from_ne_bytes(b.try_into().unwrap())) else { return };
            let has = attrs(payload.get(8..).unwrap_or_default())
                .any(|(ty, data)| ty == IFA_LOCAL && data == ip.octets().as_slice());
            if has && payload[0] == AF_INET {
                found = Some(index as i32);
            }
        })?;
        Ok(found)
    }

    /// Deletes the route `dst/dst_len` through `oif` (only that one); `false` if there was none.
    pub fn delete_route(&mut self, dst: Ipv4Addr, dst_len: u8, oif: i32) -> Result<bool> {
        let mut msg = Message::new(RTM_DELROUTE, NLM_F_ACK);
        msg.raw(&[AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, 0, 0, 0, 0, 0, 0, 0]);
        msg.attr(RTA_DST, &dst.octets()).attr(RTA_OIF, &(oif as u32).to_ne_bytes());
        match self.request(msg) {
            Ok(()) => Ok(true),
            Err(e) if e.errno == libc::ESRCH || e.errno == libc::ENOENT || e.errno == libc::ENODEV => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn neighbour_message(ty: u16, flags: u16, family: u8, index: i32, ntf: u8) -> Message {
        let mut msg = Message::new(ty, flags);
        let mut ndm = [0u8; 12];
        ndm[0] = family;
        ndm[4..8].copy_from_slice(&index.to_ne_bytes());
        ndm[8..10].copy_from_slice(&NUD_PERMANENT.to_ne_bytes());
        ndm[10] = ntf;
        msg.raw(&ndm);
        msg
    }

    /// Deletes an IPv4 neighbour entry; `false` if there was none.
    pub fn delete_neighbour(&mut self, index: i32, ip: Ipv4Addr) -> Result<bool> {
        let mut msg = Self::neighbour_message(RTM_DELNEIGH, NLM_F_ACK, AF_INET, index, 0);
        msg.attr(NDA_DST, &ip.octets());
        absent_is_false(self.request(msg))
    }

    /// The IPv4 neighbour entries of one link: address and MAC.
    pub fn neighbours(&mut self, index: i32) -> Result<Vec<(Ipv4Addr, Option<[u8; 6]>)>> {
        let mut msg = Message::new(RTM_GETNEIGH, NLM_F_DUMP);
        msg.raw(&[AF_INET, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut out = Vec::new();
        self.exchange(msg, |payload| {
            if payload.len() < 12 || payload[0] != AF_INET {
                return;
            }
            if i32::from_ne_bytes(payload[4..8].try_into().unwrap()) != index {
                return;
            }
            let (mut ip, mut mac) = (None, None);
            for (ty, data) in attrs(&payload[12..]) {
                match ty {
                    NDA_DST => ip = <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from),
                    NDA_LLADDR => mac = data.try_into().ok(),
                    _ => {}
                }
            }
            out.extend(ip.map(|ip| (ip, mac)));
        })?;
        Ok(out)
    }

    /// Adds (or replaces) the VXLAN device's forwarding entry: frames for `mac` go to `dst`.
    pub fn replace_fdb(&mut self, index: i32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()> {
        let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut msg = Self::neighbour_message(RTM_NEWNEIGH, flags, AF_BRIDGE, index, NTF_SELF);
        msg.attr(NDA_LLADDR, &mac).attr(NDA_DST, &dst.octets());
        self.request(msg)
    }

    /// Deletes the VXLAN device's forwarding entry for `mac`; `false` if there was none.
    pub fn delete_fdb(&mut self, index: i32, mac: [u8; 6], dst: Ipv4Addr) -> Result<bool> {
        let mut msg = Self::neighbour_message(RTM_DELNEIGH, NLM_F_ACK, AF_BRIDGE, index, NTF_SELF);
        msg.attr(NDA_LLADDR, &mac).attr(NDA_DST, &dst.octets());
        absent_is_false(self.request(msg))
    }
}

fn absent_is_false(result: Result<()>) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.errno == libc::ENOENT || e.errno == libc::ENODEV || e.errno == libc::ESRCH => Ok(false),
        Err(e) => Err(e),
    }
}

const IPCTNL_MSG_CT_GET: u16 = 1 << 8 | 1;
const IPCTNL_MSG_CT_DELETE: u16 = 1 << 8 | 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

impl Socket {
    /// Deletes every tracked IPv4 connection with one of `addrs` at either end, in either
    /// direction, so that an address handed to a new interface inherits nothing ("established"
    /// would let old peers past its groups). Returns how many were deleted.
    pub fn forget_connections(&mut self, addrs: &[Ipv4Addr]) -> Result<usize> {
        let nfgenmsg = [AF_INET, 0, 0, 0];
        let mut msg = Message::new(IPCTNL_MSG_CT_GET, NLM_F_DUMP);
        msg.raw(&nfgenmsg);
        let mut doomed = Vec::new();
        self.exchange(msg, |payload| {
            let Some(attributes) = payload.get(4..) else { return };
            let mut orig = None;
            let mut involved = false;
            for (ty, tuple) in attrs(attributes) {
                if ty != CTA_TUPLE_ORIG && ty != CTA_TUPLE_REPLY {
                    continue;
                }
                if ty == CTA_TUPLE_ORIG {
                    orig = Some(tuple.to_vec());
                }
                // CTA_TUPLE_IP holds CTA_IP_V4_SRC and CTA_IP_V4_DST: either end counts.
                for (_, ip) in attrs(tuple).filter(|(t, _)| *t == CTA_TUPLE_IP).flat_map(|(_, ip)| attrs(ip)) {
                    if let Ok(octets) = <[u8; 4]>::try_from(ip) {
                        involved |= addrs.contains(&Ipv4Addr::from(octets));
                    }
                }
            }
            if involved && let Some(orig) = orig {
                doomed.push(orig);
            }
        })?;
        let mut deleted = 0;
        for tuple in doomed {
            let mut msg = Message::new(IPCTNL_MSG_CT_DELETE, NLM_F_ACK);
            msg.raw(&nfgenmsg).attr(CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple);
            match self.request(msg) {
                Ok(()) => deleted += 1,
                // Gone in the meantime.
                Err(e) if e.errno == libc::ENOENT => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

fn unsafe_zeroed_sockaddr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value (the kernel's address).
    unsafe { std::mem::zeroed() }
}

/// An `NLMSG_ERROR` payload: errno 0 is the ACK; otherwise the extended-ACK message if present.
fn parse_ack(payload: &[u8], flags: u16) -> Result<()> {
    let Some(code) = payload.get(0..4) else {
        return Err(NetlinkError { errno: libc::EIO, message: Some("short netlink error message".into()) });
    };
    let code = i32::from_ne_bytes(code.try_into().unwrap());
    if code == 0 {
        return Ok(());
    }
    let mut message = None;
    // With NETLINK_CAP_ACK the original request is echoed as its header only.
    if flags & NLM_F_ACK_TLVS != 0 && payload.len() > 4 + NLMSG_HDRLEN {
        for (ty, data) in attrs(&payload[4 + NLMSG_HDRLEN..]) {
            if ty == NLMSGERR_ATTR_MSG {
                message = Some(c_string(data));
            }
        }
    }
    Err(NetlinkError { errno: -code, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_are_patched_and_padded() {
        let mut msg = Message::new(RTM_NEWLINK, 0);
        msg.begin(IFLA_LINKINFO).attr(IFLA_INFO_KIND, b"veth").end();
        // header + nest(4) + attr(4 + 4)
        assert_eq!(msg.buf.len(), NLMSG_HDRLEN + 12);
        assert_eq!(u16::from_ne_bytes([msg.buf[16], msg.buf[17]]), 12);
        let parsed: Vec<_> = attrs(&msg.buf[NLMSG_HDRLEN..]).collect();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, IFLA_LINKINFO);
        let inner: Vec<_> = attrs(parsed[0].1).collect();
        assert_eq!(inner, vec![(IFLA_INFO_KIND, &b"veth"[..])]);
    }

    #[test]
    fn ack_with_message() {
        let mut payload = (-libc::EEXIST).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; NLMSG_HDRLEN]);
        let text = b"File exists here\0";
        payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        let err = parse_ack(&payload, NLM_F_ACK_TLVS).unwrap_err();
        assert_eq!(err.errno, libc::EEXIST);
        assert_eq!(err.message.as_deref(), Some("File exists here"));
        assert!(parse_ack(&0i32.to_ne_bytes(), 0).is_ok());
    }
}
