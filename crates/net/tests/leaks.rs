//! Nothing is left behind: by orderly removal, or by `cleanup` after a crash
//! (privileged: run as root).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use flotilla_net::{Network, Peer, Protocol, Rule};

fn peer_rule(group: &str) -> Rule {
    Rule::new(Protocol::Tcp, Some((80, 80)), Peer::SecurityGroup(group.into()))
}

/// Two VPCs, three groups (one naming itself, one naming another and a group never ensured),
/// three interfaces, one of them public.
fn populate(lab: &mut Lab) -> Result<()> {
    lab.vpc("vpc-lk1", "10.60.0.0/16")?;
    lab.vpc("vpc-lk2", "10.61.0.0/16")?;
    lab.group("sg-lk-a", "vpc-lk1", vec![tcp(80, "10.60.0.0/16"), peer_rule("sg-lk-a")], vec![all_to("0.0.0.0/0")])?;
    lab.group("sg-lk-b", "vpc-lk1", vec![peer_rule("sg-lk-a"), peer_rule("sg-lk-never")], vec![all_to("0.0.0.0/0")])?;
    lab.group("sg-lk-c", "vpc-lk2", vec![all_to("0.0.0.0/0")], vec![all_to("0.0.0.0/0")])?;
    lab.task("eni-lk-1", "vpc-lk1", "10.60.1.10", &["sg-lk-a"], None)?;
    lab.task("eni-lk-2", "vpc-lk1", "10.60.1.11", &["sg-lk-a", "sg-lk-b"], Some("198.18.0.9"))?;
    lab.task("eni-lk-3", "vpc-lk2", "10.61.1.10", &["sg-lk-c"], None)?;
    Ok(())
}

fn task_has_eth0(ns: &Netns) -> bool {
    ns.ip(&["-br", "link"]).map(|l| l.contains("eth0")).unwrap_or(true)
}

#[test]
fn removal_leaves_nothing_and_is_idempotent() -> Result<()> {
    let mut lab = Lab::new("lk")?;
    let baseline = lab.host_snapshot()?;
    populate(&mut lab)?;
    assert_ne!(lab.host_snapshot()?, baseline);
    let _server = lab.tasks[0].listen(any_addr(80))?;
    assert!(lab.tasks[1].reaches(addr("10.60.1.10", 80)), "the world works before it is taken down");
    assert!(lab.conntrack()?.contains("src=10.60.1.11 "), "and conntrack remembers it");

    for eni in ["eni-lk-1", "eni-lk-2", "eni-lk-3"] {
        lab.net.remove_interface(eni)?;
        lab.net.remove_interface(eni)?;
    }
    assert!(lab.tasks.iter().all(|t| !task_has_eth0(t)), "task ends go with the host ends");
    let tracked = lab.conntrack()?;
    for ip in ["10.60.1.10", "10.60.1.11", "10.61.1.10", "198.18.0.9"] {
        assert!(!tracked.contains(&format!("={ip} ")), "conntrack forgot {ip}: {tracked}");
    }
    for group in ["sg-lk-b", "sg-lk-a", "sg-lk-c"] {
        lab.net.remove_security_group(group)?;
        lab.net.remove_security_group(group)?;
    }
    for vpc in ["vpc-lk1", "vpc-lk2"] {
        lab.net.remove_vpc(vpc)?;
        lab.net.remove_vpc(vpc)?;
    }
    assert_eq!(lab.host_snapshot()?, baseline);
    assert!(lab.net.list_interfaces()?.is_empty());
    Ok(())
}

#[test]
fn cleanup_after_a_crash_removes_what_is_not_kept() -> Result<()> {
    let mut lab = Lab::new("crash")?;
    let baseline = lab.host_snapshot()?;
    populate(&mut lab)?;
    // One more, whose rules a crash (or an operator) lost: only its link is left.
    lab.task("eni-lk-4", "vpc-lk2", "10.61.1.11", &["sg-lk-c"], None)?;
    let link4 = status_of(&lab.net.list_interfaces()?, "eni-lk-4").unwrap().host_link.clone();
    let table = format!("t_{}", lab.tag);
    // Its elements only: the chains it jumped to are its profile's, which eni-lk-3 shares.
    let script = format!(
        "delete element inet {table} ingress {{ \"{link4}\" }}\ndelete element inet {table} egress {{ \"{link4}\" }}\n\
         delete element inet {table} ifaces {{ \"{link4}\" }}\ndelete element inet {table} if_ip {{ \"{link4}\" }}\n\
         delete element inet {table} if_addrs {{ \"{link4}\" . 10.61.1.11 }}\n\
         delete element inet {table} sgm_sg_lk_c {{ 10.61.1.11 }}\n"
    );
    let mut nft = lab.host.exec(&["nft", "-f", "-"]);
    let mut child = nft.stdin(std::process::Stdio::piped()).spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes())?;
    drop(child.stdin.take());
    assert!(child.wait()?.success());

    // The process dies without removing anything; a new one starts on the same table.
    lab.net = Network::new(Lab::config(&lab.tag, &lab.host))?;
    let found = lab.net.list_interfaces()?;
    assert_eq!(found.len(), 4, "{found:?}");
    let two = status_of(&found, "eni-lk-2").unwrap();
    assert!(two.link_present);
    assert_eq!(two.public_ip, Some("198.18.0.9".parse()?));
    assert_eq!(two.security_groups, ["sg-lk-a", "sg-lk-b"]);
    let four = status_of(&found, "eni-lk-4").unwrap();
    assert!(four.link_present && four.ip.is_none(), "{four:?}");

    // Keep one interface with its VPC and group: it still works; the rest is gone.
    let report = lab.net.cleanup(&["eni-lk-1".into()], &["vpc-lk1".into()], &["sg-lk-a".into()])?;
    assert_eq!(report.interfaces, ["eni-lk-2", "eni-lk-3", "eni-lk-4"]);
    assert_eq!(report.security_groups, ["sg-lk-b", "sg-lk-c"]);
    assert_eq!(report.vpcs, ["vpc-lk2"]);
    assert!(task_has_eth0(&lab.tasks[0]));
    assert!(lab.tasks[1..].iter().all(|t| !task_has_eth0(t)));
    let server = lab.tasks[0].listen(any_addr(80))?;
    let (other_ns, spec) = {
        let ns = Netns::new("crash-again")?;
        let spec = interface("eni-lk-5", "vpc-lk1", &ns, "10.60.1.12", &["sg-lk-a"], None)?;
        (ns, spec)
    };
    lab.net.ensure_interface(&spec)?;
    assert!(other_ns.reaches(addr("10.60.1.10", 80)), "the kept interface still works");
    assert_eq!(server.next_peer(Duration::from_secs(1))?.ip().to_string(), "10.60.1.12");

    lab.net.cleanup(&[], &[], &[])?;
    assert_eq!(lab.host_snapshot()?, baseline);
    assert!(!task_has_eth0(&other_ns) && !task_has_eth0(&lab.tasks[0]));
    Ok(())
}

#[test]
fn dismantle_waits_for_interfaces_then_leaves_the_host_as_it_was() -> Result<()> {
    let mut lab = Lab::new("dm")?;
    let links_before = lab.host.ip(&["-br", "link"])?;
    populate(&mut lab)?;
    assert!(!lab.net.dismantle()?, "refused while interfaces exist");
    assert!(lab.nft(&["list", "table", "inet", &format!("t_{}", lab.tag)]).is_ok(), "nothing removed");
    for eni in ["eni-lk-1", "eni-lk-2", "eni-lk-3"] {
        lab.net.remove_interface(eni)?;
    }
    assert!(lab.net.dismantle()?);
    assert!(lab.nft(&["list", "table", "inet", &format!("t_{}", lab.tag)]).is_err(), "the table is gone");
    assert_eq!(lab.host.ip(&["-br", "link"])?, links_before, "VPC devices are gone");
    Ok(())
}
