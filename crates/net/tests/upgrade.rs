//! A table made by an older version is upgraded when a `Network` starts on it (privileged: run
//! as root).

mod common;

use anyhow::Result;
use common::*;

/// The chains an older version gave each interface, with the rules it gave them.
fn old_style(table: &str, link: &str, ip: &str) -> String {
    let out = [
        "meta nfproto != ipv4 drop".to_string(),
        format!("ip saddr != {ip} drop"),
        "ct state established,related accept".into(),
        "ip daddr 10.64.0.2 accept".into(),
        "ip daddr 169.254.170.2 tcp dport 80 accept".into(),
        "ip daddr @vpc_cidrs ip daddr != 10.64.0.0/16 drop".into(),
        "jump sge_sg_up".into(),
        "drop".into(),
    ];
    let r#in = [
        "meta nfproto != ipv4 drop",
        "ct state established,related accept",
        "iifname @overlays ip saddr != @vpc_cidrs accept",
        "ip saddr @vpc_cidrs ip saddr != 10.64.0.0/16 ct status & dnat == 0 drop",
        "jump sgi_sg_up",
        "drop",
    ];
    let mut script = String::new();
    for (chain, rules) in
        [(format!("out_{link}"), out.to_vec()), (format!("in_{link}"), r#in.map(String::from).to_vec())]
    {
        script += &format!("add chain inet {table} {chain}\n");
        for rule in rules {
            script += &format!("add rule inet {table} {chain} {rule}\n");
        }
    }
    for (map, chain) in [("egress", "out"), ("ingress", "in")] {
        script += &format!("delete element inet {table} {map} {{ \"{link}\" }}\n");
        script += &format!("add element inet {table} {map} {{ \"{link}\" : jump {chain}_{link} }}\n");
    }
    script
}

fn chains(listing: &str, prefix: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain "))
        .filter(|c| c.starts_with(prefix))
        .map(|c| c.trim_end_matches(" {").to_string())
        .collect()
}

/// The snapshot's blocks (links, addresses, ..., the table's sets and chains) sorted: the set
/// the upgrade adds is listed after the ones made before it.
fn in_any_order(snapshot: &str) -> Vec<&str> {
    let mut blocks: Vec<&str> = snapshot.split("\n\n").collect();
    blocks.sort();
    blocks
}

#[test]
fn per_interface_chains_become_profile_chains_on_start() -> Result<()> {
    let mut lab = Lab::new("up")?;
    let baseline = lab.host_snapshot()?;
    lab.vpc("vpc-up", "10.64.0.0/16")?;
    lab.group("sg-up", "vpc-up", vec![tcp(80, "10.64.0.0/16")], vec![all_to("0.0.0.0/0")])?;
    let a = lab.task("eni-up-a", "vpc-up", "10.64.1.10", &["sg-up"], None)?;
    let b = lab.task("eni-up-b", "vpc-up", "10.64.1.11", &["sg-up"], None)?;
    let table = format!("t_{}", lab.tag);
    let listing = lab.nft(&["list", "table", "inet", &table])?;
    let profile = chains(&listing, "ifo_");
    assert_eq!(profile.len(), 1, "two interfaces of one VPC and group share one profile: {listing}");
    let links: Vec<String> = ["eni-up-a", "eni-up-b"]
        .iter()
        .map(|eni| Ok(status_of(&lab.net.list_interfaces()?, eni).unwrap().host_link.clone()))
        .collect::<Result<_>>()?;

    // Make the table what an older version left: a chain pair per interface, no `if_addrs`.
    let mut script = old_style(&table, &links[0], "10.64.1.10") + &old_style(&table, &links[1], "10.64.1.11");
    let inward = profile[0].replacen("ifo_", "ifi_", 1);
    for chain in [&profile[0], &inward] {
        script += &format!("flush chain inet {table} {chain}\ndelete chain inet {table} {chain}\n");
    }
    script += &format!("delete set inet {table} if_addrs\n");
    let mut nft = lab.host.exec(&["nft", "-f", "-"]);
    let mut child = nft.stdin(std::process::Stdio::piped()).spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes())?;
    drop(child.stdin.take());
    assert!(child.wait()?.success(), "the old-style table:\n{script}");
    let _server = lab.tasks[a].listen(any_addr(80))?;
    assert!(lab.tasks[b].reaches(addr("10.64.1.10", 80)), "the old rules work");

    lab.net = flotilla_net::Network::new(Lab::config(&lab.tag, &lab.host))?;
    let listing = lab.nft(&["list", "table", "inet", &table])?;
    assert!(chains(&listing, "out_").is_empty() && chains(&listing, "in_").is_empty(), "{listing}");
    assert_eq!(chains(&listing, "ifo_"), profile, "{listing}");
    assert_eq!(chains(&listing, "ifi_"), [inward], "{listing}");
    let addrs = lab.nft(&["list", "set", "inet", &table, "if_addrs"])?;
    for (link, ip) in links.iter().zip(["10.64.1.10", "10.64.1.11"]) {
        assert!(addrs.contains(&format!("\"{link}\" . {ip}")), "{addrs}");
    }
    assert!(lab.tasks[b].reaches(addr("10.64.1.10", 80)), "the upgraded rules work");
    let _other = lab.tasks[b].listen(any_addr(81))?;
    assert!(lab.tasks[a].blocked(addr("10.64.1.11", 81)), "and still judge: the group admits port 80 only");

    // And a restart on an up-to-date table changes nothing.
    lab.net = flotilla_net::Network::new(Lab::config(&lab.tag, &lab.host))?;
    assert_eq!(lab.nft(&["list", "table", "inet", &table])?, listing);

    lab.net.cleanup(&[], &[], &[])?;
    assert_eq!(in_any_order(&lab.host_snapshot()?), in_any_order(&baseline), "nothing is left");
    Ok(())
}
