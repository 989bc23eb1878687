//! The host, the outside world and the VPC resolver, as seen from tasks and back
//! (privileged: run as root).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use common::*;
use flotilla_net::VPC_MTU;

#[test]
fn host_reaches_task_when_its_group_allows() -> Result<()> {
    let mut lab = Lab::new("host")?;
    lab.vpc("vpc-host", "10.50.0.0/16")?;
    lab.group("sg-host", "vpc-host", vec![], vec![all_to("0.0.0.0/0")])?;
    let t = lab.task("eni-host-t", "vpc-host", "10.50.1.10", &["sg-host"], None)?;
    let root = tempfile::tempdir()?;
    std::fs::write(root.path().join("index.html"), "hello from the task\n")?;
    let root_arg = root.path().to_string_lossy();
    let _httpd = spawn(lab.tasks[t].exec(&["busybox", "httpd", "-f", "-p", "80", "-h", &root_arg]))?;
    assert!(eventually(Duration::from_secs(5), || lab.tasks[t].reaches(addr("127.0.0.1", 80))), "httpd listening");
    let curl = || {
        let out = lab.host.exec(&["curl", "-sf", "--max-time", "1", "http://10.50.1.10/"]).output();
        out.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    assert_eq!(curl(), None, "ingress is closed");

    // Opened as a user would: tcp 80 from anywhere.
    lab.group("sg-host", "vpc-host", vec![tcp(80, "0.0.0.0/0"), tcp(81, "10.50.0.1/32")], vec![all_to("0.0.0.0/0")])?;
    assert_eq!(curl().as_deref(), Some("hello from the task\n"));

    // Host-originated traffic comes from the VPC's router address (base + 1).
    let server = lab.tasks[t].listen(any_addr(81))?;
    assert!(lab.host.reaches(addr("10.50.1.10", 81)));
    assert_eq!(server.next_peer(Duration::from_secs(1))?.ip(), "10.50.0.1".parse::<IpAddr>()?);
    Ok(())
}

#[test]
fn egress_is_masqueraded_and_public_addresses_are_one_to_one() -> Result<()> {
    let mut lab = Lab::new("nat")?;
    let ext = lab.external()?;
    lab.vpc("vpc-nat", "10.30.0.0/16")?;
    lab.group("sg-nat", "vpc-nat", vec![tcp(8080, "0.0.0.0/0")], vec![all_to("0.0.0.0/0")])?;
    let p = lab.task("eni-nat-p", "vpc-nat", "10.30.1.10", &["sg-nat"], None)?;
    let q = lab.task("eni-nat-q", "vpc-nat", "10.30.1.11", &["sg-nat"], Some("198.18.0.7"))?;
    let outside = ext.listen(any_addr(9000))?;
    let _p_server = lab.tasks[p].listen(any_addr(8080))?;
    let q_server = lab.tasks[q].listen(any_addr(8080))?;

    // Private-only: out through the host's address, never reachable from outside.
    assert!(lab.tasks[p].reaches(addr("192.0.2.2", 9000)));
    assert_eq!(outside.next_peer(Duration::from_secs(1))?.ip().to_string(), "192.0.2.1");
    assert!(ext.blocked(addr("10.30.1.10", 8080)), "private address from outside");

    // Public: egress appears from the public address, and outside reaches in through it.
    assert!(lab.tasks[q].reaches(addr("192.0.2.2", 9000)));
    assert_eq!(outside.next_peer(Duration::from_secs(1))?.ip().to_string(), "198.18.0.7");
    assert!(ext.reaches(addr("198.18.0.7", 8080)), "public address from outside");
    assert_eq!(q_server.next_peer(Duration::from_secs(1))?.ip().to_string(), "192.0.2.2");
    assert!(ext.blocked(addr("10.30.1.11", 8080)), "a public task's private address from outside");
    assert!(ext.blocked(addr("198.18.0.7", 8081)), "the group still applies");

    // Another VPC gets in through the public address only, as through the internet.
    lab.vpc("vpc-nat2", "10.31.0.0/16")?;
    lab.group("sg-nat2", "vpc-nat2", vec![], vec![all_to("0.0.0.0/0")])?;
    let r = lab.task("eni-nat-r", "vpc-nat2", "10.31.1.10", &["sg-nat2"], None)?;
    assert!(lab.tasks[r].reaches(addr("198.18.0.7", 8080)), "public address from another VPC");
    assert_eq!(q_server.next_peer(Duration::from_secs(1))?.ip().to_string(), "10.31.1.10");
    assert!(lab.tasks[r].blocked(addr("10.30.1.11", 8080)), "private address from another VPC");

    // Dropping the public address (same interface) closes the way in.
    let spec = interface("eni-nat-q", "vpc-nat", &lab.tasks[q], "10.30.1.11", &["sg-nat"], None)?;
    lab.net.ensure_interface(&spec)?;
    assert!(!lab.conntrack()?.contains("=198.18.0.7 "), "no connection keeps the old public address");
    assert!(ext.blocked(addr("198.18.0.7", 8080)));
    assert!(lab.tasks[q].reaches(addr("192.0.2.2", 9000)));
    assert_eq!(outside.next_peer(Duration::from_secs(1))?.ip().to_string(), "192.0.2.1");
    Ok(())
}

#[test]
fn resolver_address_serves_its_own_vpc_only() -> Result<()> {
    let mut lab = Lab::new("dns")?;
    let a = lab.vpc("vpc-dns-a", "10.40.0.0/16")?;
    lab.vpc("vpc-dns-b", "10.41.0.0/16")?;
    assert_eq!(a.resolver.to_string(), "10.40.0.2");
    assert_eq!(a.resolv_conf(&[]), "nameserver 10.40.0.2\n");
    // Groups do not govern the resolver (as on AWS): these allow no egress at all.
    lab.group("sg-dns-a", "vpc-dns-a", vec![], vec![])?;
    lab.group("sg-dns-b", "vpc-dns-b", vec![], vec![all_to("0.0.0.0/0")])?;
    let ta = lab.task("eni-dns-a", "vpc-dns-a", "10.40.1.10", &["sg-dns-a"], None)?;
    let tb = lab.task("eni-dns-b", "vpc-dns-b", "10.41.1.10", &["sg-dns-b"], None)?;

    // Bindable by a host process, on port 53 and others.
    let dns = lab.host.listen(addr("10.40.0.2", 53))?;
    let _other = lab.host.listen(addr("10.40.0.2", 2222))?;
    let udp = flotilla_net::netns::run_in(&lab.host.path, || std::net::UdpSocket::bind("10.40.0.2:53"))??;
    drop(udp);

    assert!(lab.tasks[ta].reaches(addr("10.40.0.2", 53)), "own VPC's resolver");
    assert_eq!(dns.next_peer(Duration::from_secs(1))?.ip().to_string(), "10.40.1.10");
    assert!(lab.tasks[ta].blocked(addr("10.40.0.2", 2222)), "only DNS is served to tasks");
    assert!(lab.tasks[tb].blocked(addr("10.40.0.2", 53)), "another VPC's resolver");
    Ok(())
}

#[test]
fn vpc_traffic_gets_large_packets_and_the_internet_1500() -> Result<()> {
    let mut lab = Lab::new("mtu")?;
    lab.vpc("vpc-mtu", "10.60.0.0/16")?;
    lab.group("sg-mtu", "vpc-mtu", vec![tcp(80, "10.60.0.0/16")], vec![all_to("0.0.0.0/0")])?;
    let t = lab.task("eni-mtu", "vpc-mtu", "10.60.1.10", &["sg-mtu"], None)?;
    let mtu = |out: &str| out.split("mtu ").nth(1).and_then(|s| s.split_whitespace().next()).map(str::to_string);
    let task = &lab.tasks[t];
    assert_eq!(mtu(&task.ip(&["link", "show", "eth0"])?).as_deref(), Some(VPC_MTU.to_string().as_str()));
    let host_link = lab.net.list_interfaces()?.remove(0).host_link;
    assert_eq!(mtu(&lab.host.ip(&["link", "show", &host_link])?).as_deref(), Some(VPC_MTU.to_string().as_str()));
    // The subnet and the rest of the VPC at the device's MTU; the internet at 1500.
    assert_eq!(mtu(&task.ip(&["route", "get", "10.60.1.11"])?), None);
    assert_eq!(mtu(&task.ip(&["route", "get", "10.60.9.9"])?), None);
    assert_eq!(mtu(&task.ip(&["route", "get", "192.0.2.2"])?).as_deref(), Some("1500"));

    // An interface made with the default MTU is raised in place.
    task.ip(&["link", "set", "eth0", "mtu", "1500"])?;
    lab.host.ip(&["link", "set", &host_link, "mtu", "1500"])?;
    let spec = interface("eni-mtu", "vpc-mtu", task, "10.60.1.10", &["sg-mtu"], None)?;
    lab.net.ensure_interface(&spec)?;
    assert_eq!(mtu(&task.ip(&["link", "show", "eth0"])?).as_deref(), Some(VPC_MTU.to_string().as_str()));
    assert_eq!(mtu(&lab.host.ip(&["link", "show", &host_link])?).as_deref(), Some(VPC_MTU.to_string().as_str()));
    Ok(())
}
