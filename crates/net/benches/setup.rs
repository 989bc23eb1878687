//! Per-interface setup time, `ensure_interface` against the same steps done with `ip` and
//! `nft` commands, each into a task namespace that already exists. Run as root:
//! `cargo bench -p flotilla-net --bench setup`. The process first moves into a network
//! namespace of its own, which plays the host (so nothing touches the machine's networks).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_net::{InterfaceSpec, NetConfig, Network, Peer, Protocol, Rule, SecurityGroupSpec, VpcSpec};

const RUNS: usize = 20;

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("spawn");
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // SAFETY: unshare(2) on this (the main, still single-purpose) thread; everything below,
    // including spawned commands, then works in the new namespace.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
    run("ip", &["link", "set", "lo", "up"]);
    let table = format!("bench_{}", std::process::id());
    let net = Network::new(NetConfig { nft_table: table.clone(), ..NetConfig::default() }).expect("network");
    net.ensure_vpc(&VpcSpec { id: "vpc-bench".into(), cidr: "10.70.0.0/16".parse().unwrap() }).expect("vpc");
    let open = Rule::new(Protocol::All, None, Peer::Cidr("0.0.0.0/0".parse().unwrap()));
    let group = SecurityGroupSpec {
        id: "sg-bench".into(),
        vpc_id: "vpc-bench".into(),
        ingress: vec![open.clone()],
        egress: vec![open],
    };
    net.ensure_security_group(&group).expect("group");

    let pid = std::process::id();
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    // Alternate, so that drift on the machine hits both equally.
    for i in 0..RUNS {
        let ns = Netns::new(format!("flbench-{pid}-ours-{i}"));
        let ip = Ipv4Addr::new(10, 70, 1, 10 + i as u8);
        let spec = InterfaceSpec {
            id: format!("eni-bench-{i}"),
            vpc_id: "vpc-bench".into(),
            netns: format!("/run/netns/{}", ns.0).into(),
            ip,
            prefix_len: 24,
            mac: [2, 0x42, 10, 70, 1, 10 + i as u8],
            security_groups: vec!["sg-bench".into()],
            public_ip: None,
        };
        let start = Instant::now();
        net.ensure_interface(&spec).expect("ensure_interface");
        ours.push(start.elapsed());

        let ns2 = Netns::new(format!("flbench-{pid}-peer-{i}"));
        let host = format!("flpeer{i}");
        let ip = Ipv4Addr::new(10, 70, 2, 10 + i as u8).to_string();
        let mac = format!("02:42:0a:46:02:{:02x}", 10 + i);
        let n = ns2.0.as_str();
        let start = Instant::now();
        run(
            "ip",
            &[
                "link",
                "add",
                &host,
                "address",
                "ee:ee:ee:ee:ee:ee",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                &mac,
                "netns",
                n,
            ],
        );
        run("ip", &["link", "set", &host, "up"]);
        run("ip", &["-n", n, "link", "set", "eth0", "up"]);
        run("ip", &["-n", n, "addr", "add", &format!("{ip}/24"), "dev", "eth0", "noprefixroute"]);
        run(
            "ip",
            &[
                "-n",
                n,
                "neigh",
                "replace",
                "169.254.1.1",
                "lladdr",
                "ee:ee:ee:ee:ee:ee",
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
        run("ip", &["-n", n, "route", "add", "10.70.2.0/24", "via", "169.254.1.1", "dev", "eth0", "onlink"]);
        run("ip", &["-n", n, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink"]);
        run("ip", &["route", "add", &format!("{ip}/32"), "dev", &host, "src", "10.70.0.1"]);
        run("nft", &["add", "element", "inet", &table, "ifaces", &format!("{{ \"{host}\" }}")]);
        peer.push(start.elapsed());
        run("ip", &["link", "del", &host]);
        net.remove_interface(&spec.id).expect("remove_interface");
    }
    net.cleanup(&[], &[], &[]).expect("cleanup");
    let (ours, peer) = (median(ours), median(peer));
    println!("per-interface setup, median of {RUNS} (namespace already there):");
    println!("  flotilla-net ensure_interface: {}", ms(ours));
    println!("  ip/nft commands (9 commands):  {}", ms(peer));
    println!("  ratio: {:.2}x", ours.as_secs_f64() / peer.as_secs_f64());
}
