//! Load balancers and public addresses across two hosts (privileged: run as root). Both
//! "hosts" (network namespaces joined by a veth underlay) hold the load balancers' addresses,
//! as every agent serves every load balancer; the target runs on host B only.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::Result;
use common::*;
use flotilla_net::{LbAddressSpec, Network, OverlaySpec, Peer, Protocol, RemoteInterface, Rule, netns};
use socket2::{Domain, Socket, Type};

const A_UNDERLAY: &str = "192.168.78.1";
const B_UNDERLAY: &str = "192.168.78.2";
const PUBLIC: &str = "198.18.0.70";

fn lb(ip: &str, groups: &[&str]) -> LbAddressSpec {
    LbAddressSpec {
        vpc_id: "vpc-olb".into(),
        ip: ip.parse().unwrap(),
        ports: vec![80],
        security_groups: groups.iter().map(|g| g.to_string()).collect(),
        public_ip: None,
    }
}

/// Connects from `source` (a local address of the host) to `to`, as a load balancer does.
fn connect_from(host: &Netns, source: &str, to: SocketAddrV4) -> std::io::Result<()> {
    let source: Ipv4Addr = source.parse().unwrap();
    netns::run_in(&host.path, move || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::from((source, 0)).into())?;
        socket.connect_timeout(&SocketAddr::V4(to).into(), Duration::from_secs(1))
    })?
}

#[test]
fn a_load_balancer_reaches_targets_on_another_host_as_their_groups_allow() -> Result<()> {
    let (a, mut b) = two_hosts("olb", A_UNDERLAY, B_UNDERLAY)?;
    let web_rules =
        |lb_port: u16| vec![Rule::new(Protocol::Tcp, Some((lb_port, lb_port)), Peer::SecurityGroup("sg-lb".into()))];
    for lab in [&a, &b] {
        lab.vpc("vpc-olb", "10.70.0.0/16")?;
        lab.group("sg-lb", "vpc-olb", vec![tcp(80, "0.0.0.0/0")], vec![all_to("0.0.0.0/0")])?;
        lab.group("sg-other", "vpc-olb", vec![tcp(80, "0.0.0.0/0")], vec![all_to("0.0.0.0/0")])?;
        lab.group("sg-web", "vpc-olb", web_rules(8080), vec![all_to("0.0.0.0/0")])?;
        lab.net.ensure_lb_address(&lb("10.70.0.10", &["sg-lb"]))?;
        lab.net.ensure_lb_address(&lb("10.70.0.11", &["sg-other"]))?;
    }
    let web = b.task("eni-olb-b", "vpc-olb", "10.70.2.20", &["sg-web"], Some(PUBLIC))?;
    let server = b.tasks[web].listen(any_addr(8080))?;
    // Host A has no task in the VPC, only the load balancers: B does not know it as a peer.
    let spec = OverlaySpec {
        vpc_id: "vpc-olb".into(),
        vni: 300,
        local_ip: A_UNDERLAY.parse()?,
        remotes: vec![RemoteInterface {
            ip: "10.70.2.20".parse()?,
            host_ip: B_UNDERLAY.parse()?,
            security_groups: vec!["sg-web".into()],
        }],
    };
    a.net.ensure_overlay(&spec)?;
    b.net.ensure_overlay(&OverlaySpec { local_ip: B_UNDERLAY.parse()?, remotes: vec![], ..spec.clone() })?;

    let target = addr("10.70.2.20", 8080);
    connect_from(&a.host, "10.70.0.10", target).expect("A's load balancer reaches B's task");
    // The target sees A's underlay address (the reply must come back to A, not to B's own copy
    // of the load balancer's address).
    assert_eq!(server.next_peer(Duration::from_secs(2))?.ip().to_string(), A_UNDERLAY);
    connect_from(&b.host, "10.70.0.10", target).expect("B's own load balancer too");
    assert_eq!(server.next_peer(Duration::from_secs(2))?.ip().to_string(), "10.70.0.10");
    // The target's groups are judged on A: a load balancer it does not admit is refused.
    assert!(connect_from(&a.host, "10.70.0.11", target).is_err(), "sg-other is not admitted");
    a.group("sg-web", "vpc-olb", vec![], vec![all_to("0.0.0.0/0")])?;
    assert!(connect_from(&a.host, "10.70.0.10", target).is_err(), "revoked on A");
    a.group("sg-web", "vpc-olb", web_rules(8080), vec![all_to("0.0.0.0/0")])?;
    connect_from(&a.host, "10.70.0.10", target).expect("admitted again");
    // The remote interface's groups change: judged by the new ones, through another chain of
    // the sets of groups remote interfaces have (the one left unused goes).
    let rin_chains = |lab: &Lab| -> Result<usize> {
        let table = lab.nft(&["list", "table", "inet", "t_olb_a"])?;
        Ok(table.lines().filter(|l| l.trim().starts_with("chain rin_")).count())
    };
    let moved = |groups: &[&str]| OverlaySpec {
        remotes: vec![RemoteInterface {
            security_groups: groups.iter().map(|g| g.to_string()).collect(),
            ..spec.remotes[0].clone()
        }],
        ..spec.clone()
    };
    a.net.ensure_overlay(&moved(&["sg-other"]))?;
    assert!(connect_from(&a.host, "10.70.0.10", target).is_err(), "sg-other admits port 80 only");
    assert_eq!(rin_chains(&a)?, 1);
    a.net.ensure_overlay(&spec)?;
    connect_from(&a.host, "10.70.0.10", target).expect("in sg-web again");
    assert_eq!(rin_chains(&a)?, 1);
    // A host process that is not a load balancer does not get into the overlay from outside
    // the VPC.
    assert!(connect_from(&a.host, A_UNDERLAY, target).is_err(), "A's underlay address is not a load balancer");

    // The public address lives on B: announced there, reached from the underlay by ARP.
    b.group("sg-web", "vpc-olb", vec![tcp(8080, "0.0.0.0/0")], vec![all_to("0.0.0.0/0")])?;
    b.net.announce_public(B_UNDERLAY.parse()?, PUBLIC.parse()?)?;
    a.host.ip(&["route", "add", "198.18.0.0/24", "dev", "ul0"])?;
    assert!(a.host.reaches(addr(PUBLIC, 8080)), "the public address answers on B from the underlay");
    assert!(b.host.ip(&["-4", "addr", "show", "dev", "ul0"])?.contains(PUBLIC));
    // After a restart the announcement is read back, and one no task keeps is withdrawn.
    let again = Network::new(Lab::config("olb-b", &b.host))?;
    assert_eq!(again.withdraw_publics_except(B_UNDERLAY.parse()?, &[])?, vec![PUBLIC.parse::<Ipv4Addr>()?]);
    assert!(!b.host.ip(&["-4", "addr", "show", "dev", "ul0"])?.contains(PUBLIC));
    drop(again);

    for lab in [&a, &b] {
        lab.net.cleanup(&[], &[], &[])?;
    }
    b.tasks.clear();
    Ok(())
}
