//! One VPC across two hosts (privileged: run as root). Each "host" is a network namespace
//! running its own `Network`; a veth between them is the underlay.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use flotilla_net::{NetError, Network, OverlaySpec, Peer, Protocol, RemoteInterface, Rule, netns};

const A_UNDERLAY: &str = "192.168.77.1";
const B_UNDERLAY: &str = "192.168.77.2";

fn remote(ip: &str, host: &str, groups: &[&str]) -> RemoteInterface {
    RemoteInterface {
        ip: ip.parse().unwrap(),
        host_ip: host.parse().unwrap(),
        security_groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn overlay(lab: &Lab, vpc: &str, vni: u32, local: &str, remotes: Vec<RemoteInterface>) -> Result<usize> {
    let spec = OverlaySpec { vpc_id: vpc.into(), vni, local_ip: local.parse()?, remotes };
    Ok(lab.net.ensure_overlay(&spec)?.remotes)
}

fn by_group(group: &str, port: u16) -> Rule {
    Rule::new(Protocol::Tcp, Some((port, port)), Peer::SecurityGroup(group.into()))
}

/// Serves `bytes` bytes to every connection on `port` inside `ns`, from a thread.
fn serve_bytes(ns: &Netns, port: u16, bytes: usize) -> Result<()> {
    let listener = netns::run_in(&ns.path, || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))??;
    std::thread::spawn(move || {
        let chunk = vec![7u8; 64 * 1024];
        for mut stream in listener.incoming().flatten() {
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if stream.write_all(&chunk[..n]).is_err() {
                    break;
                }
                left -= n;
            }
        }
    });
    Ok(())
}

#[test]
fn a_vpc_spans_two_hosts_with_groups_and_isolation() -> Result<()> {
    let (mut a, mut b) = two_hosts("ovl", A_UNDERLAY, B_UNDERLAY)?;
    for lab in [&a, &b] {
        lab.vpc("vpc-ov", "10.20.0.0/16")?;
        lab.vpc("vpc-ox", "10.30.0.0/16")?;
        lab.group("sg-web", "vpc-ov", vec![by_group("sg-client", 80)], vec![all_to("0.0.0.0/0")])?;
        lab.group("sg-client", "vpc-ov", vec![], vec![all_to("0.0.0.0/0")])?;
        lab.group("sg-x", "vpc-ox", vec![tcp(80, "0.0.0.0/0")], vec![all_to("0.0.0.0/0")])?;
    }
    let client = a.task("eni-ov-a", "vpc-ov", "10.20.1.10", &["sg-client"], None)?;
    let other = a.task("eni-ox-a", "vpc-ox", "10.30.1.10", &["sg-x"], None)?;
    let web = b.task("eni-ov-b", "vpc-ov", "10.20.2.20", &["sg-web"], None)?;
    let web_x = b.task("eni-ox-b", "vpc-ox", "10.30.2.20", &["sg-x"], None)?;
    let server = b.tasks[web].listen(any_addr(80))?;
    let _server_x = b.tasks[web_x].listen(any_addr(80))?;
    let (to_web, to_web_x) = (addr("10.20.2.20", 80), addr("10.30.2.20", 80));
    assert!(a.tasks[client].blocked(to_web), "no overlay yet: B's task is not reachable from A");

    assert_eq!(overlay(&a, "vpc-ov", 100, A_UNDERLAY, vec![remote("10.20.2.20", B_UNDERLAY, &["sg-web"])])?, 1);
    assert_eq!(overlay(&b, "vpc-ov", 100, B_UNDERLAY, vec![remote("10.20.1.10", A_UNDERLAY, &["sg-client"])])?, 1);
    overlay(&a, "vpc-ox", 200, A_UNDERLAY, vec![remote("10.30.2.20", B_UNDERLAY, &["sg-x"])])?;
    overlay(&b, "vpc-ox", 200, B_UNDERLAY, vec![remote("10.30.1.10", A_UNDERLAY, &["sg-x"])])?;
    // Applying the same spec again changes nothing.
    overlay(&a, "vpc-ov", 100, A_UNDERLAY, vec![remote("10.20.2.20", B_UNDERLAY, &["sg-web"])])?;

    // By private address, no NAT: B's group admits A's task by group membership.
    assert!(a.tasks[client].reaches(to_web), "A's client reaches B's web across hosts");
    assert_eq!(server.next_peer(Duration::from_secs(2))?.ip().to_string(), "10.20.1.10");
    assert!(a.tasks[other].reaches(to_web_x), "the other VPC's overlay works too");
    assert!(a.tasks[other].blocked(to_web), "a task of another VPC does not reach across hosts");

    // Bulk data at full-size segments: nothing is dropped for size on the 1500-byte underlay.
    serve_bytes(&b.tasks[web], 8080, 4 << 20)?;
    b.group(
        "sg-web",
        "vpc-ov",
        vec![by_group("sg-client", 80), by_group("sg-client", 8080)],
        vec![all_to("0.0.0.0/0")],
    )?;
    let mut stream = a.tasks[client].connect(addr("10.20.2.20", 8080), Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).context("reading 4 MiB across the overlay")?;
    assert_eq!(got.len(), 4 << 20);
    // The tunnel's own UDP flows are not tracked; the task flows inside are, on both hosts.
    for lab in [&a, &b] {
        let tracked = lab.conntrack()?;
        assert!(!tracked.contains("dport=4789"), "{tracked}");
        assert!(tracked.contains("dport=8080"), "{tracked}");
    }

    // Ingress is enforced on the destination host...
    b.group("sg-web", "vpc-ov", vec![], vec![all_to("0.0.0.0/0")])?;
    assert!(a.tasks[client].blocked(to_web), "B's group no longer admits sg-client");
    b.group("sg-web", "vpc-ov", vec![by_group("sg-client", 80)], vec![all_to("0.0.0.0/0")])?;
    assert!(a.tasks[client].reaches(to_web));
    // ...and egress on the source host.
    a.group("sg-client", "vpc-ov", vec![], vec![])?;
    assert!(a.tasks[client].blocked(to_web), "A's group lets nothing out");
    a.group("sg-client", "vpc-ov", vec![], vec![Rule::new(Protocol::All, None, Peer::SecurityGroup("sg-web".into()))])?;
    assert!(a.tasks[client].reaches(to_web), "egress to the remote task's group");

    // Overlapping VPC blocks are refused as on one host.
    let overlap = a.vpc("vpc-overlap", "10.20.5.0/24").unwrap_err();
    assert!(matches!(overlap.downcast_ref::<NetError>(), Some(NetError::VpcOverlap { .. })), "{overlap}");

    // A restarted Network reads the overlay back from the kernel and the table.
    let again = Network::new(Lab::config("ovl-a", &a.host))?;
    assert!(again.list_overlays()?.contains(&("vpc-ov".to_string(), 1)), "{:?}", again.list_overlays()?);
    drop(again);
    // The remote group member keeps its group from being removed.
    assert!(matches!(a.net.remove_security_group("sg-web"), Err(NetError::SecurityGroupInUse { .. })));

    // A remote interface that goes is no longer routed.
    assert_eq!(overlay(&a, "vpc-ov", 100, A_UNDERLAY, vec![])?, 0);
    assert!(a.tasks[client].blocked(to_web), "the remote interface was removed");
    assert!(!a.host.ip(&["route"])?.contains("10.20.2.20"), "its route went");

    // Cleanup leaves nothing of the overlay: devices, routes, peers, chains.
    for lab in [&mut a, &mut b] {
        lab.net.cleanup(&[], &[], &[])?;
        let links = lab.host.ip(&["-d", "link"])?;
        assert!(!links.contains("flvx") && !links.contains("vxlan"), "{links}");
        let table = lab.nft(&["list", "table", "inet", lab.net.table()])?;
        assert!(!table.contains("chain ovl_") && !table.contains("flvx"), "{table}");
        assert!(!lab.nft(&["list", "map", "inet", lab.net.table(), "peers"])?.contains("elements"));
        assert!(!lab.nft(&["list", "set", "inet", lab.net.table(), "underlay_addrs"])?.contains("elements"));
        assert!(lab.net.dismantle()?);
        lab.tasks.clear();
    }
    Ok(())
}

#[test]
fn overlay_specs_are_checked() -> Result<()> {
    let (a, _b) = two_hosts("ovc", A_UNDERLAY, B_UNDERLAY)?;
    a.vpc("vpc-oc", "10.40.0.0/16")?;
    let bad_vni = OverlaySpec { vpc_id: "vpc-oc".into(), vni: 0, local_ip: A_UNDERLAY.parse()?, remotes: vec![] };
    assert!(matches!(a.net.ensure_overlay(&bad_vni), Err(NetError::InvalidSpec { .. })));
    let outside = OverlaySpec { vni: 7, remotes: vec![remote("10.41.0.5", B_UNDERLAY, &[])], ..bad_vni.clone() };
    assert!(matches!(a.net.ensure_overlay(&outside), Err(NetError::InvalidSpec { .. })));
    let no_underlay = OverlaySpec { vni: 7, local_ip: "192.168.99.1".parse()?, ..bad_vni.clone() };
    assert!(matches!(a.net.ensure_overlay(&no_underlay), Err(NetError::InvalidSpec { .. })));
    let unknown = OverlaySpec { vpc_id: "vpc-none".into(), vni: 7, ..bad_vni };
    assert!(matches!(a.net.ensure_overlay(&unknown), Err(NetError::UnknownVpc { .. })));
    a.net.cleanup(&[], &[], &[])?;
    assert!(a.net.dismantle()?);
    Ok(())
}

/// A VXLAN frame for `vni` carrying UDP `from`:40000 -> `to`:9999 with `payload`, to the
/// device whose MAC is `mac`.
fn vxlan_frame(vni: u32, mac: [u8; 6], from: Ipv4Addr, to: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x08, 0, 0, 0];
    frame.extend_from_slice(&(vni << 8).to_be_bytes());
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&from.octets());
    ip.extend_from_slice(&to.octets());
    let sum = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&9999u16.to_be_bytes());
    frame.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Two hosts of one VPC allowing UDP 9999 within it: tasks A1 (10.50.1.10) and A2
/// (10.50.1.11) on host A, B1 (10.50.2.10) on host B, each host's overlay knowing the other's.
struct Injection {
    a: Lab,
    b: Lab,
    tasks: [usize; 3],
    underlay: [&'static str; 2],
    vni: u32,
}

impl Injection {
    fn new(tag: &str, vni: u32) -> Result<Injection> {
        let underlay = ["192.168.79.1", "192.168.79.2"];
        let (mut a, mut b) = two_hosts(tag, underlay[0], underlay[1])?;
        let (vpc, sg) = (format!("vpc-{tag}"), format!("sg-{tag}"));
        let udp = Rule::new(Protocol::Udp, Some((9999, 9999)), Peer::Cidr("10.50.0.0/16".parse()?));
        for lab in [&a, &b] {
            lab.vpc(&vpc, "10.50.0.0/16")?;
            lab.group(&sg, &vpc, vec![udp.clone()], vec![all_to("0.0.0.0/0")])?;
        }
        let a1 = a.task(&format!("eni-{tag}-a1"), &vpc, "10.50.1.10", &[&sg], None)?;
        let a2 = a.task(&format!("eni-{tag}-a2"), &vpc, "10.50.1.11", &[&sg], None)?;
        let b1 = b.task(&format!("eni-{tag}-b1"), &vpc, "10.50.2.10", &[&sg], None)?;
        overlay(&a, &vpc, vni, underlay[0], vec![remote("10.50.2.10", underlay[1], &[&sg])])?;
        let local = vec![remote("10.50.1.10", underlay[0], &[&sg]), remote("10.50.1.11", underlay[0], &[&sg])];
        overlay(&b, &vpc, vni, underlay[1], local)?;
        Ok(Injection { a, b, tasks: [a1, a2, b1], underlay, vni })
    }

    /// The MAC of `lab`'s VXLAN device.
    fn vxlan_mac(lab: &Lab) -> Result<[u8; 6]> {
        let links = lab.host.ip(&["-o", "link", "show", "type", "vxlan"])?;
        let mac = links.split("link/ether ").nth(1).context("the VXLAN device's MAC")?;
        let mac: Vec<u8> = mac[..17].split(':').map(|h| u8::from_str_radix(h, 16)).collect::<Result<_, _>>()?;
        Ok(mac.try_into().unwrap())
    }

    /// Sends the same frame (`from` -> `to`) to the VXLAN socket of host B (`to_b`) or A,
    /// first from the task A1, then from the other host (the control), and asserts that
    /// `receiver` gets only the control's, first.
    fn only_the_control_arrives(
        &self,
        to_b: bool,
        receiver: UdpSocket,
        (from, to): (&str, &str),
        control_payload: &str,
        what: &str,
    ) -> Result<()> {
        let (target, control) = if to_b { (1, 0) } else { (0, 1) };
        let labs = [&self.a, &self.b];
        let mac = Self::vxlan_mac(labs[target])?;
        let (from, to): (Ipv4Addr, Ipv4Addr) = (from.parse()?, to.parse()?);
        receiver.set_read_timeout(Some(Duration::from_secs(5)))?;
        let port = (self.underlay[target].parse::<Ipv4Addr>()?, flotilla_net::VXLAN_PORT);
        let attacker = &self.a.tasks[self.tasks[0]].path;
        let sender = netns::run_in(attacker, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
        sender.send_to(&vxlan_frame(self.vni, mac, from, to, b"from a task"), port)?;
        let control_ip: Ipv4Addr = self.underlay[control].parse()?;
        let host = netns::run_in(&labs[control].host.path, || UdpSocket::bind((control_ip, 0)))??;
        host.send_to(&vxlan_frame(self.vni, mac, from, to, control_payload.as_bytes()), port)?;
        let mut buf = [0u8; 64];
        let (n, source) = receiver.recv_from(&mut buf).context(format!("{what} arrives"))?;
        assert_eq!(String::from_utf8_lossy(&buf[..n]), control_payload, "the first frame to arrive");
        assert_eq!(source, std::net::SocketAddr::from((from, 40000)));
        receiver.set_nonblocking(true)?;
        assert!(receiver.recv_from(&mut buf).is_err(), "only {what} arrived");
        Ok(())
    }

    fn dismantle(mut self) -> Result<()> {
        for lab in [&mut self.a, &mut self.b] {
            lab.net.cleanup(&[], &[], &[])?;
            assert!(lab.net.dismantle()?);
            lab.tasks.clear();
        }
        Ok(())
    }
}

/// A task cannot reach another host's VXLAN socket: a frame it writes by hand, claiming a
/// source of its VPC it does not own, would otherwise come out of that host's VXLAN device
/// past its own host's anti-spoofing. The same frame sent by its host (the control) arrives.
#[test]
fn a_task_cannot_inject_frames_into_another_hosts_overlay() -> Result<()> {
    let lab = Injection::new("oj", 301)?;
    let victim = &lab.b.tasks[lab.tasks[2]].path;
    let receiver = netns::run_in(victim, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9999)))??;
    // Claiming to be the other task of host A.
    lab.only_the_control_arrives(true, receiver, ("10.50.1.11", "10.50.2.10"), "from host a", "host A's frame")?;
    lab.dismantle()
}

/// The outer UDP's fast path in `prerouting`/`input` (accepted before the tasks' rules) does
/// not open the host's VXLAN socket to its tasks: a frame a task sends there is dropped, the
/// same frame from the other host is delivered.
#[test]
fn a_task_cannot_inject_frames_through_its_hosts_vxlan_socket() -> Result<()> {
    let lab = Injection::new("oi", 300)?;
    let victim = &lab.a.tasks[lab.tasks[1]].path;
    let receiver = netns::run_in(victim, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9999)))??;
    let frame = ("10.50.2.10", "10.50.1.11");
    lab.only_the_control_arrives(false, receiver, frame, "from the peer", "the peer host's frame")?;
    lab.dismantle()
}
