//! Per-interface setup time, `ensure_interface` against the same steps done with `ip` and
//! `nft` commands, each into a task namespace that already exists; then, with
//! `SETUP_PREFILL=N`, the same `ensure_interface` again once N other interfaces exist (each in
//! its own task namespace, one VPC and one security group shared by all, as
//! `bench/density.sh`'s tasks), split by phase (`flotilla_net::phases`), so what grows with
//! the interface count shows. Run as root: `cargo bench -p flotilla-net --bench setup`. The
//! process first moves into a network namespace of its own, which plays the host (so nothing
//! touches the machine's networks).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_net::{InterfaceSpec, NetConfig, Network, Peer, Protocol, Rule, SecurityGroupSpec, VpcSpec, phases};

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

/// The sample below which nine in ten lie.
fn p90(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() * 9 / 10]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// An interface of the bench's VPC and group, numbered `n` (its address and MAC follow).
fn spec(n: usize, ns: &Netns) -> InterfaceSpec {
    let (hi, lo) = (10 + n / 250, 2 + n % 250);
    InterfaceSpec {
        id: format!("eni-bench-{n}"),
        vpc_id: "vpc-bench".into(),
        netns: format!("/run/netns/{}", ns.0).into(),
        ip: Ipv4Addr::new(10, 70, hi as u8, lo as u8),
        prefix_len: 16,
        mac: [2, 0x42, 10, 70, hi as u8, lo as u8],
        security_groups: vec!["sg-bench".into()],
        public_ip: None,
    }
}

/// `RUNS` attaches (each removed again, so the count stays), timed whole and by phase.
struct Attaches {
    whole: Vec<Duration>,
    phases: BTreeMap<&'static str, Vec<Duration>>,
}

impl Attaches {
    fn measure(net: &Network, tag: &str, first: usize) -> Attaches {
        let mut out = Attaches { whole: Vec::new(), phases: BTreeMap::new() };
        // Deleted after the runs: a namespace's deletion goes on in the kernel's workqueue after
        // `ip netns del` returns, and would compete with the next attach.
        let mut used = Vec::with_capacity(RUNS);
        for i in 0..RUNS {
            let ns = Netns::new(format!("flbench-{}-{tag}-{i}", std::process::id()));
            let spec = spec(first + i, &ns);
            phases::record();
            let start = Instant::now();
            net.ensure_interface(&spec).expect("ensure_interface");
            out.whole.push(start.elapsed());
            let mut sums: BTreeMap<&'static str, Duration> = BTreeMap::new();
            for (name, took) in phases::take() {
                *sums.entry(name).or_default() += took;
            }
            for (name, took) in sums {
                out.phases.entry(name).or_default().push(took);
            }
            net.remove_interface(&spec.id).expect("remove_interface");
            used.push(ns);
        }
        out
    }

    fn print(&self, label: &str) {
        let whole = &self.whole;
        println!(
            "ensure_interface {label}, median / p90 of {RUNS}: {} / {}",
            ms(median(whole.clone())),
            ms(p90(whole.clone()))
        );
        for (name, samples) in &self.phases {
            println!("  {name:<16} {} / {}", ms(median(samples.clone())), ms(p90(samples.clone())));
        }
    }
}

fn main() {
    // SAFETY: unshare(2) on this (the main, still single-purpose) thread; everything below,
    // including spawned commands, then works in the new namespace.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
    run("ip", &["link", "set", "lo", "up"]);
    let prefill: usize =
        std::env::var("SETUP_PREFILL").map(|v| v.parse().expect("SETUP_PREFILL: a count")).unwrap_or(0);
    assert!(prefill + 2 * RUNS <= 250 * 180, "SETUP_PREFILL too large for the bench's /16");
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
        let spec = spec(prefill + RUNS + i, &ns);
        let start = Instant::now();
        net.ensure_interface(&spec).expect("ensure_interface");
        ours.push(start.elapsed());

        let ns2 = Netns::new(format!("flbench-{pid}-peer-{i}"));
        let host = format!("flpeer{i}");
        let ip = Ipv4Addr::new(10, 70, 255, 10 + i as u8).to_string();
        let mac = format!("02:42:0a:46:ff:{:02x}", 10 + i);
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
        run("ip", &["-n", n, "addr", "add", &format!("{ip}/16"), "dev", "eth0", "noprefixroute"]);
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
        run("ip", &["-n", n, "route", "add", "10.70.0.0/16", "via", "169.254.1.1", "dev", "eth0", "onlink"]);
        run("ip", &["-n", n, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink"]);
        run("ip", &["route", "add", &format!("{ip}/32"), "dev", &host, "src", "10.70.0.1"]);
        run("nft", &["add", "element", "inet", &table, "ifaces", &format!("{{ \"{host}\" }}")]);
        peer.push(start.elapsed());
        run("ip", &["link", "del", &host]);
        net.remove_interface(&spec.id).expect("remove_interface");
    }
    let (ours, peer) = (median(ours), median(peer));
    println!("per-interface setup, median of {RUNS} (namespace already there):");
    println!("  flotilla-net ensure_interface: {}", ms(ours));
    println!("  ip/nft commands (9 commands):  {}", ms(peer));
    println!("  ratio: {:.2}x", ours.as_secs_f64() / peer.as_secs_f64());

    if prefill > 0 {
        let empty = Attaches::measure(&net, "empty", prefill);
        let mut filled = Vec::with_capacity(prefill);
        let start = Instant::now();
        for n in 0..prefill {
            let ns = Netns(format!("flbench-{pid}-fill-{n}"));
            run("ip", &["netns", "add", &ns.0]);
            net.ensure_interface(&spec(n, &ns)).expect("prefill ensure_interface");
            filled.push(ns);
        }
        println!("prefilled {prefill} interfaces in {:.1} s", start.elapsed().as_secs_f64());
        let full = Attaches::measure(&net, "full", prefill);
        empty.print("with 0 other interfaces");
        full.print(&format!("with {prefill} other interfaces"));
        let ratio = median(full.whole.clone()).as_secs_f64() / median(empty.whole.clone()).as_secs_f64();
        println!("ratio {prefill} / 0: {ratio:.2}x");
        net.cleanup(&[], &[], &[]).expect("cleanup");
        drop(filled);
    } else {
        net.cleanup(&[], &[], &[]).expect("cleanup");
    }
}
