//! Security groups and VPC isolation between tasks (privileged: run as root).

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use flotilla_net::{NetError, Peer, Protocol, Rule};

#[test]
fn group_rules_open_revoke_and_name_peers() -> Result<()> {
    let mut lab = Lab::new("sg")?;
    lab.vpc("vpc-sg", "10.10.0.0/16")?;
    lab.group("sg-web", "vpc-sg", vec![tcp(80, "10.10.0.0/16")], vec![all_to("0.0.0.0/0")])?;
    lab.group("sg-client", "vpc-sg", vec![], vec![all_to("0.0.0.0/0")])?;
    lab.group("sg-other", "vpc-sg", vec![], vec![all_to("0.0.0.0/0")])?;
    let a = lab.task("eni-sg-a", "vpc-sg", "10.10.1.10", &["sg-web"], None)?;
    // Same subnet as A: still routed through the host, so still filtered.
    let b = lab.task("eni-sg-b", "vpc-sg", "10.10.1.11", &["sg-client"], None)?;
    let c = lab.task("eni-sg-c", "vpc-sg", "10.10.2.12", &["sg-other"], None)?;
    let server = lab.tasks[a].listen(any_addr(80))?;
    let _server_b = lab.tasks[b].listen(any_addr(80))?;
    let web = addr("10.10.1.10", 80);

    assert!(lab.tasks[b].reaches(web), "B reaches A:80 with tcp 80 open to the VPC");
    assert_eq!(server.next_peer(Duration::from_secs(1))?.ip().to_string(), "10.10.1.11");
    assert!(lab.tasks[a].blocked(addr("10.10.1.11", 80)), "B's group admits nothing");

    // Revoke: new connections fail as soon as the call returns, interfaces untouched;
    // connections already tracked carry on (as on AWS).
    let mut established = lab.tasks[b].connect(web, Duration::from_secs(3))?;
    let start = Instant::now();
    lab.group("sg-web", "vpc-sg", vec![], vec![all_to("0.0.0.0/0")])?;
    let applied = start.elapsed();
    assert!(lab.tasks[b].blocked(web), "revoked");
    assert!(applied < Duration::from_secs(1), "revoking took {applied:?}");
    server.next_peer(Duration::from_secs(1))?;
    established.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut seen = String::new();
    established.read_to_string(&mut seen)?;
    assert_eq!(seen, "10.10.1.11", "the established connection still carries data");

    // Source-group rule: members of sg-client get in, others do not.
    let by_group = Rule::new(Protocol::Tcp, Some((80, 80)), Peer::SecurityGroup("sg-client".into()));
    lab.group("sg-web", "vpc-sg", vec![by_group], vec![all_to("0.0.0.0/0")])?;
    assert!(lab.tasks[b].reaches(web), "B is in sg-client");
    assert!(lab.tasks[c].blocked(web), "C is not");

    // Joining the group later (same interface, new groups) lets C in; leaving shuts it out.
    let spec = interface("eni-sg-c", "vpc-sg", &lab.tasks[c], "10.10.2.12", &["sg-other", "sg-client"], None)?;
    lab.net.ensure_interface(&spec)?;
    assert!(lab.tasks[c].reaches(web), "C joined sg-client");
    let spec = interface("eni-sg-c", "vpc-sg", &lab.tasks[c], "10.10.2.12", &["sg-other"], None)?;
    lab.net.ensure_interface(&spec)?;
    assert!(lab.tasks[c].blocked(web), "C left sg-client");

    // A group with no egress rules lets nothing out.
    lab.group("sg-client", "vpc-sg", vec![], vec![])?;
    assert!(lab.tasks[b].blocked(web), "B has no egress");

    // In-use and referenced groups cannot be removed.
    assert!(matches!(lab.net.remove_security_group("sg-web"), Err(NetError::SecurityGroupInUse { .. })));
    assert!(matches!(lab.net.remove_security_group("sg-client"), Err(NetError::SecurityGroupInUse { .. })));
    lab.net.remove_interface("eni-sg-b")?;
    assert!(matches!(lab.net.remove_security_group("sg-client"), Err(NetError::SecurityGroupReferenced { .. })));
    Ok(())
}

#[test]
fn vpcs_are_isolated_even_when_groups_allow_all() -> Result<()> {
    let mut lab = Lab::new("iso")?;
    lab.vpc("vpc-iso1", "10.20.0.0/16")?;
    lab.vpc("vpc-iso2", "10.21.0.0/16")?;
    lab.group("sg-iso1", "vpc-iso1", vec![all_to("0.0.0.0/0")], vec![all_to("0.0.0.0/0")])?;
    lab.group("sg-iso2", "vpc-iso2", vec![all_to("0.0.0.0/0")], vec![all_to("0.0.0.0/0")])?;
    let a = lab.task("eni-iso-a", "vpc-iso1", "10.20.1.10", &["sg-iso1"], None)?;
    let a2 = lab.task("eni-iso-a2", "vpc-iso1", "10.20.3.10", &["sg-iso1"], None)?;
    let d = lab.task("eni-iso-d", "vpc-iso2", "10.21.1.10", &["sg-iso2"], None)?;
    let _server = lab.tasks[a].listen(any_addr(80))?;
    let _server_d = lab.tasks[d].listen(any_addr(80))?;

    assert!(lab.tasks[a2].reaches(addr("10.20.1.10", 80)), "same VPC, other subnet");
    assert!(lab.tasks[d].blocked(addr("10.20.1.10", 80)), "other VPC");
    assert!(lab.tasks[a].blocked(addr("10.21.1.10", 80)), "other VPC, the other way");
    // An address of the VPC with no interface behind it goes nowhere.
    assert!(lab.tasks[a].blocked(addr("10.20.9.9", 80)));

    // Groups of one VPC cannot guard another's interfaces; overlapping CIDRs are refused.
    let err = lab.task("eni-iso-x", "vpc-iso2", "10.21.1.11", &["sg-iso1"], None).unwrap_err();
    assert!(matches!(err.downcast_ref::<NetError>(), Some(NetError::SecurityGroupVpc { .. })), "{err}");
    let err = lab.vpc("vpc-iso3", "10.20.128.0/17").unwrap_err();
    assert!(matches!(err.downcast_ref::<NetError>(), Some(NetError::VpcOverlap { .. })), "{err}");
    Ok(())
}

/// Whether a datagram sent from `from` (an address of `ns`) to `to` arrives at `listener`.
fn datagram_arrives(
    ns: &Netns,
    from: &str,
    to: std::net::SocketAddrV4,
    listener: &std::net::UdpSocket,
) -> Result<bool> {
    let sender = flotilla_net::netns::run_in(&ns.path, || std::net::UdpSocket::bind(addr(from, 0)))??;
    sender.send_to(from.as_bytes(), to)?;
    listener.set_read_timeout(Some(Duration::from_millis(700)))?;
    let mut buf = [0; 64];
    loop {
        match listener.recv_from(&mut buf) {
            // A late datagram of an earlier send is not this one's.
            Ok((n, _)) if &buf[..n] != from.as_bytes() => continue,
            Ok(_) => return Ok(true),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A task sends only from its own address: from one it gives itself (another task's, or a
/// free one of its subnet) nothing leaves, though the groups admit the whole VPC.
#[test]
fn a_task_sends_only_from_its_own_address() -> Result<()> {
    let mut lab = Lab::new("sp")?;
    lab.vpc("vpc-sp", "10.12.0.0/16")?;
    lab.group("sg-sp", "vpc-sp", vec![all_to("10.12.0.0/16")], vec![all_to("0.0.0.0/0")])?;
    let a = lab.task("eni-sp-a", "vpc-sp", "10.12.1.10", &["sg-sp"], None)?;
    let b = lab.task("eni-sp-b", "vpc-sp", "10.12.1.11", &["sg-sp"], None)?;
    lab.task("eni-sp-c", "vpc-sp", "10.12.1.12", &["sg-sp"], None)?;
    let listener = flotilla_net::netns::run_in(&lab.tasks[a].path, || std::net::UdpSocket::bind(any_addr(5353)))??;
    let to = addr("10.12.1.10", 5353);
    for forged in ["10.12.1.12", "10.12.1.99"] {
        lab.tasks[b].ip(&["addr", "add", &format!("{forged}/32"), "dev", "eth0"])?;
    }
    assert!(datagram_arrives(&lab.tasks[b], "10.12.1.11", to, &listener)?, "from its own address");
    for forged in ["10.12.1.12", "10.12.1.99"] {
        assert!(!datagram_arrives(&lab.tasks[b], forged, to, &listener)?, "from {forged}");
    }
    // Its own address still works after the others were refused (the drop is per packet).
    assert!(datagram_arrives(&lab.tasks[b], "10.12.1.11", to, &listener)?, "from its own address again");
    Ok(())
}
