//! Virtual services (privileged: run as root): a task reaches backends through a virtual
//! `ip:port`, new connections spread over every backend, no backends refuse, the backend's
//! groups still judge the flow, a task reaches itself through its own service (hairpin), and
//! the set survives a restart and goes with `ensure_virtual_services(vpc, &[])`, `remove_vpc`
//! and `cleanup`.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use common::*;
use flotilla_net::{Network, Protocol, VirtualService};

fn service(ip: &str, port: u16, backends: &[(&str, u16)]) -> VirtualService {
    VirtualService {
        ip: ip.parse().unwrap(),
        port,
        protocol: Protocol::Tcp,
        backends: backends.iter().map(|(ip, port)| (ip.parse().unwrap(), *port)).collect(),
    }
}

/// Which of `servers` the next connection arrived at, and from where.
fn arrived_at(servers: &[&Server]) -> Result<(usize, SocketAddr)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        for (i, server) in servers.iter().enumerate() {
            if let Ok(peer) = server.next_peer(Duration::ZERO) {
                return Ok((i, peer));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("no backend got the connection")
}

#[test]
fn a_virtual_service_spreads_a_vpcs_connections_over_its_backends() -> Result<()> {
    let mut lab = Lab::new("vip")?;
    lab.vpc("vpc-vip", "10.70.0.0/16")?;
    lab.group("sg-web", "vpc-vip", vec![tcp(8080, "10.70.0.0/16")], vec![all_to("0.0.0.0/0")])?;
    lab.group("sg-closed", "vpc-vip", vec![tcp(8080, "10.99.0.0/16")], vec![all_to("0.0.0.0/0")])?;
    lab.group("sg-client", "vpc-vip", vec![], vec![all_to("0.0.0.0/0")])?;
    let a = lab.task("eni-vip-a", "vpc-vip", "10.70.1.10", &["sg-web"], None)?;
    let b = lab.task("eni-vip-b", "vpc-vip", "10.70.1.11", &["sg-web"], None)?;
    let closed = lab.task("eni-vip-x", "vpc-vip", "10.70.1.12", &["sg-closed"], None)?;
    let client = lab.task("eni-vip-c", "vpc-vip", "10.70.1.20", &["sg-client"], None)?;
    let servers = [
        lab.tasks[a].listen(any_addr(8080))?,
        lab.tasks[b].listen(any_addr(8080))?,
        lab.tasks[closed].listen(any_addr(8080))?,
    ];
    let all = [&servers[0], &servers[1], &servers[2]];
    let web = service("10.100.0.10", 80, &[("10.70.1.10", 8080), ("10.70.1.11", 8080)]);
    let empty = service("10.100.0.11", 80, &[]);
    let guarded = service("10.100.0.12", 80, &[("10.70.1.12", 8080)]);
    let set = [web.clone(), empty.clone(), guarded.clone()];
    lab.net.ensure_virtual_services("vpc-vip", &set)?;
    lab.net.ensure_virtual_services("vpc-vip", &set)?;

    // Both backends over many connections; the backend sees the client's own address.
    let mut seen = [0; 3];
    for _ in 0..10 {
        lab.tasks[client].connect(addr("10.100.0.10", 80), Duration::from_secs(3))?;
        let (i, peer) = arrived_at(&all)?;
        assert_eq!(peer.ip().to_string(), "10.70.1.20", "no source NAT between tasks");
        seen[i] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0 && seen[2] == 0, "both backends and only them: {seen:?}");

    // No backends: refused at once (kube-proxy's REJECT), not left to time out.
    let refused = lab.tasks[client].connect(addr("10.100.0.11", 80), Duration::from_secs(3));
    assert_eq!(refused.err().map(|e| e.kind()), Some(ErrorKind::ConnectionRefused));
    // The backend's groups judge the real destination.
    assert!(lab.tasks[client].blocked(addr("10.100.0.12", 80)), "the backend's group admits 10.99/16 only");
    assert!(servers[2].next_peer(Duration::ZERO).is_err());
    assert!(lab.host.blocked(addr("10.100.0.10", 80)), "only the VPC's tasks have the service");

    // Hairpin: a backend reaching its own service gets to itself, from the VPC's router.
    lab.net.ensure_virtual_services("vpc-vip", &[service("10.100.0.10", 80, &[("10.70.1.10", 8080)])])?;
    for _ in 0..3 {
        lab.tasks[a].connect(addr("10.100.0.10", 80), Duration::from_secs(3))?;
        let (i, peer) = arrived_at(&all)?;
        assert_eq!((i, peer.ip().to_string()), (0, "10.70.0.1".to_string()));
    }
    // The replaced set: the old service's other backend and the others are gone.
    assert!(lab.tasks[client].blocked(addr("10.100.0.11", 80)), "no longer a service: dropped by nothing, not refused");

    // A restart reads the set back: the same set is a no-op, another replaces it.
    let again = Network::new(Lab::config("vip", &lab.host))?;
    assert_eq!(again.list_virtual_service_vpcs(), vec!["vpc-vip".to_string()]);
    let before = lab.nft(&["list", "table", "inet", again.table()])?;
    again.ensure_virtual_services("vpc-vip", &[service("10.100.0.10", 80, &[("10.70.1.10", 8080)])])?;
    assert_eq!(lab.nft(&["list", "table", "inet", again.table()])?, before, "the same set changes nothing");
    again.ensure_virtual_services("vpc-vip", &set)?;
    lab.tasks[client].connect(addr("10.100.0.10", 80), Duration::from_secs(3))?;
    arrived_at(&all)?;

    // Removal restores the table; a VPC not kept loses its services in a cleanup.
    again.ensure_virtual_services("vpc-vip", &[])?;
    let table = lab.nft(&["list", "table", "inet", again.table()])?;
    assert!(
        !table.contains("10.100.0.") && !table.contains("chain vip_") && !table.contains("10.70.1.10 . 10.70.1.10"),
        "{table}"
    );
    assert!(again.list_virtual_service_vpcs().is_empty());
    assert!(lab.tasks[client].blocked(addr("10.100.0.10", 80)));
    again.ensure_virtual_services("vpc-vip", &set)?;
    again.cleanup(&[], &[], &[])?;
    let table = lab.nft(&["list", "table", "inet", again.table()])?;
    assert!(
        !table.contains("10.100.0.") && !table.contains("chain vip_") && again.list_virtual_service_vpcs().is_empty(),
        "{table}"
    );
    Ok(())
}

#[test]
fn virtual_services_are_refused_outside_their_rules() -> Result<()> {
    let lab = Lab::new("vipbad")?;
    assert!(lab.net.ensure_virtual_services("vpc-none", &[service("10.100.0.1", 80, &[])]).is_err(), "unknown VPC");
    lab.vpc("vpc-vb", "10.71.0.0/16")?;
    let bad = [
        service("10.71.0.50", 80, &[]),
        service("10.100.0.1", 0, &[]),
        service("10.100.0.1", 80, &[("10.72.0.5", 80)]),
        VirtualService { protocol: Protocol::Icmp, ..service("10.100.0.1", 80, &[]) },
    ];
    for one in bad {
        let err = lab.net.ensure_virtual_services("vpc-vb", std::slice::from_ref(&one));
        assert!(err.is_err(), "{one:?} accepted");
    }
    lab.net.ensure_virtual_services("vpc-vb", &[service("10.100.0.1", 53, &[("10.71.1.5", 53)])])?;
    lab.net.remove_vpc("vpc-vb")?;
    assert!(lab.net.list_virtual_service_vpcs().is_empty(), "the VPC took its services along");
    Ok(())
}
