//! Load balancer addresses in a VPC (privileged: run as root): a host process listens and
//! connects from them, tasks reach their listener ports as the load balancer's groups allow,
//! targets can admit the load balancer's group, the public address is 1:1 NAT'd, and all of it
//! survives a restart and goes with `remove_lb_address`.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Result;
use common::*;
use flotilla_net::{LbAddressSpec, Network, Peer, Protocol, Rule};

fn lb_spec(groups: &[&str]) -> LbAddressSpec {
    LbAddressSpec {
        vpc_id: "vpc-lb".into(),
        ip: "10.60.0.10".parse().unwrap(),
        ports: vec![80],
        security_groups: groups.iter().map(|g| g.to_string()).collect(),
        public_ip: Some("198.18.0.20".parse().unwrap()),
    }
}

/// A connection from `from` (a local address of the host namespace) to `to`.
fn connect_from(lab: &Lab, from: Ipv4Addr, to: std::net::SocketAddrV4) -> std::io::Result<TcpStream> {
    flotilla_net::netns::run_in(&lab.host.path, || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::from((from, 0)).into())?;
        socket.connect_timeout(&SocketAddr::V4(to).into(), Duration::from_millis(700))?;
        Ok(socket.into())
    })?
}

#[test]
fn a_load_balancer_address_serves_its_vpc_as_its_groups_allow() -> Result<()> {
    let mut lab = Lab::new("lbaddr")?;
    let ext = lab.external()?;
    lab.vpc("vpc-lb", "10.60.0.0/16")?;
    lab.group("sg-lb", "vpc-lb", vec![tcp(80, "10.60.0.0/16")], vec![all_to("0.0.0.0/0")])?;
    let from_lb = Rule::new(Protocol::Tcp, Some((8080, 8080)), Peer::SecurityGroup("sg-lb".into()));
    lab.group("sg-target", "vpc-lb", vec![from_lb], vec![all_to("0.0.0.0/0")])?;
    lab.group("sg-client", "vpc-lb", vec![], vec![all_to("0.0.0.0/0")])?;
    let target = lab.task("eni-lb-t", "vpc-lb", "10.60.1.10", &["sg-target"], None)?;
    let client = lab.task("eni-lb-c", "vpc-lb", "10.60.1.11", &["sg-client"], None)?;
    let target_server = lab.tasks[target].listen(any_addr(8080))?;

    lab.net.ensure_lb_address(&lb_spec(&["sg-lb"]))?;
    lab.net.ensure_lb_address(&lb_spec(&["sg-lb"]))?;
    let listener = lab.host.listen(addr("10.60.0.10", 80))?;
    let _other = lab.host.listen(addr("10.60.0.10", 81))?;

    assert!(lab.tasks[client].reaches(addr("10.60.0.10", 80)), "a task reaches the listener port");
    assert_eq!(listener.next_peer(Duration::from_secs(1))?.ip().to_string(), "10.60.1.11");
    assert!(lab.tasks[client].blocked(addr("10.60.0.10", 81)), "only listener ports");
    assert!(ext.reaches(addr("198.18.0.20", 80)), "the public address from outside");
    assert_eq!(listener.next_peer(Duration::from_secs(1))?.ip().to_string(), "192.0.2.2");
    assert!(ext.blocked(addr("10.60.0.10", 80)), "the private address from outside");

    // Upstream: from the load balancer's address, the target admits "the LB's group"; from
    // the host's router address it does not.
    let lb_ip: Ipv4Addr = "10.60.0.10".parse()?;
    connect_from(&lab, lb_ip, addr("10.60.1.10", 8080))?;
    assert_eq!(target_server.next_peer(Duration::from_secs(1))?.ip().to_string(), "10.60.0.10");
    assert!(lab.host.blocked(addr("10.60.1.10", 8080)), "the router address is not in the LB's group");

    // The groups' ingress rules govern: closed, then reopened.
    lab.group("sg-lb", "vpc-lb", vec![], vec![all_to("0.0.0.0/0")])?;
    assert!(lab.tasks[client].blocked(addr("10.60.0.10", 80)), "the LB's group admits nobody");
    lab.group("sg-lb", "vpc-lb", vec![tcp(80, "10.60.1.11/32")], vec![all_to("0.0.0.0/0")])?;
    assert!(lab.tasks[client].reaches(addr("10.60.0.10", 80)));
    assert!(lab.net.remove_security_group("sg-lb").is_err(), "a group in use by an LB address stays");

    // A restart reads the address back from the table.
    let again = Network::new(Lab::config("lbaddr", &lab.host))?;
    assert_eq!(again.list_lb_addresses(), vec![lb_spec(&["sg-lb"])]);
    // A cleanup keeping the tasks but not their VPC leaves the load balancer's address, its VPC and group alone.
    again.cleanup(&["eni-lb-t".into(), "eni-lb-c".into()], &[], &["sg-target".into(), "sg-client".into()])?;
    assert_eq!(again.list_lb_addresses().len(), 1);
    assert!(lab.tasks[client].reaches(addr("10.60.0.10", 80)));

    drop((listener, _other));
    again.remove_lb_address(lb_ip)?;
    again.remove_lb_address(lb_ip)?;
    assert!(again.list_lb_addresses().is_empty());
    assert!(lab.host.listen(addr("10.60.0.10", 80)).is_err(), "the address is gone from the host");
    let table = lab.nft(&["list", "table", "inet", again.table()])?;
    assert!(!table.contains("10.60.0.10"), "nothing of it is left in the table:\n{table}");
    assert!(ext.blocked(addr("198.18.0.20", 80)));
    Ok(())
}

#[test]
fn a_network_load_balancer_address_admits_the_whole_vpc() -> Result<()> {
    let mut lab = Lab::new("lbnlb")?;
    lab.vpc("vpc-lb", "10.61.0.0/16")?;
    lab.group("sg-c", "vpc-lb", vec![], vec![all_to("0.0.0.0/0")])?;
    let client = lab.task("eni-nlb-c", "vpc-lb", "10.61.1.11", &["sg-c"], None)?;
    let spec = LbAddressSpec {
        vpc_id: "vpc-lb".into(),
        ip: "10.61.0.10".parse()?,
        ports: vec![7000],
        security_groups: vec![],
        public_ip: None,
    };
    lab.net.ensure_lb_address(&spec)?;
    let _listener = lab.host.listen(addr("10.61.0.10", 7000))?;
    assert!(lab.tasks[client].reaches(addr("10.61.0.10", 7000)));
    assert!(lab.net.remove_vpc("vpc-lb").is_err(), "a VPC with a load balancer address stays");
    // Ports change in place.
    lab.net.ensure_lb_address(&LbAddressSpec { ports: vec![7001], ..spec.clone() })?;
    let _listener2 = lab.host.listen(addr("10.61.0.10", 7001))?;
    assert!(lab.tasks[client].blocked(addr("10.61.0.10", 7000)));
    assert!(lab.tasks[client].reaches(addr("10.61.0.10", 7001)));
    lab.net.remove_lb_address(spec.ip)?;
    assert!(!lab.net.dismantle()?, "the task's interface keeps the table");
    Ok(())
}
