//! TCP bulk throughput between two tasks of one VPC on different hosts (veth, host A's
//! routing and nft table, VXLAN over the underlay, host B's, veth) against two tasks of the
//! same VPC on one host, same run (issue 12, benchmark d: at least 70%). Run as root:
//! `cargo bench -p flotilla-net --bench overlay`.
//!
//! Two network namespaces play the hosts, each with its own `Network` (`NetConfig::host_netns`),
//! joined by a veth underlay of MTU `FLOTILLA_BENCH_UNDERLAY_MTU` (default 1500, an Ethernet
//! LAN's; the overlay runs at 50 less). One VPC, one group allowing the test port from the VPC;
//! tasks A1 and A2 on host A, B1 on host B. Paths, measured in interleaved rounds of one new
//! connection each on which the sender writes `BUF`-sized buffers for a fixed time:
//! - A1 -> A2, same host;
//! - A1 -> B1, across hosts.
//!
//! `FLOTILLA_BENCH_ROUNDS` (default 5) and `FLOTILLA_BENCH_SECS` (default 2) change the run;
//! `FLOTILLA_BENCH_PATHS=same|cross` runs one path only (to profile it);
//! `FLOTILLA_BENCH_HOOK` is a shell command run once everything exists (the hosts' namespaces
//! in `$HOST_A`, `$HOST_B`), to try a change by hand.
//! Everything made is removed on the way out (error and panic included).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{BUF, Netns, env_or, listen, round, run, stats, task_interface};
use flotilla_net::{
    NetConfig, Network, OverlaySpec, Peer, Protocol, RemoteInterface, Rule, SecurityGroupSpec, VpcSpec,
};

const PORT: u16 = 5202;
const VPC: &str = "vpc-ovtput";
const CIDR: &str = "10.72.0.0/16";
const GROUP: &str = "sg-ovtput";
const VNI: u32 = 4242;
const A1: Ipv4Addr = Ipv4Addr::new(10, 72, 1, 10);
const A2: Ipv4Addr = Ipv4Addr::new(10, 72, 1, 11);
const B1: Ipv4Addr = Ipv4Addr::new(10, 72, 2, 10);
const UNDERLAY_A: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 1);
const UNDERLAY_B: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 2);

/// One host: its namespace, its `Network` and its tasks' namespaces.
struct Host {
    net: Option<Network>,
    table: String,
    tasks: Vec<Netns>,
    ns: Netns,
}

impl Host {
    fn new(tag: &str) -> Result<Host> {
        let ns = Netns::new("ovl", tag)?;
        let table = format!("bench_ovl_{tag}_{}", std::process::id());
        let config = NetConfig { nft_table: table.clone(), uplink: None, host_netns: Some(ns.path.clone()) };
        let mut host = Host { net: None, table, tasks: Vec::new(), ns };
        host.net = Some(Network::new(config).context("Network::new")?);
        let net = host.net();
        net.ensure_vpc(&VpcSpec { id: VPC.into(), cidr: CIDR.parse()? })?;
        let tcp = Rule::new(Protocol::Tcp, Some((PORT, PORT)), Peer::Cidr(CIDR.parse()?));
        let group =
            SecurityGroupSpec { id: GROUP.into(), vpc_id: VPC.into(), ingress: vec![tcp.clone()], egress: vec![tcp] };
        net.ensure_security_group(&group)?;
        Ok(host)
    }

    fn net(&self) -> &Network {
        self.net.as_ref().expect("network")
    }

    fn task(&mut self, tag: &str, ip: Ipv4Addr) -> Result<PathBuf> {
        let ns = Netns::new("ovl", tag)?;
        let spec = task_interface("ovl", tag, &ns, ip, VPC, GROUP);
        let path = ns.path.clone();
        self.tasks.push(ns);
        self.net().ensure_interface(&spec).with_context(|| format!("ensure_interface {}", spec.id))?;
        Ok(path)
    }

    fn overlay(&self, local: Ipv4Addr, remotes: &[(Ipv4Addr, Ipv4Addr)]) -> Result<u32> {
        let remotes = remotes
            .iter()
            .map(|&(ip, host_ip)| RemoteInterface { ip, host_ip, security_groups: vec![GROUP.into()] })
            .collect();
        let spec = OverlaySpec { vpc_id: VPC.into(), vni: VNI, local_ip: local, remotes };
        Ok(self.net().ensure_overlay(&spec)?.mtu)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(net) = self.net.take()
            && let Err(e) = net.cleanup(&[], &[], &[])
        {
            eprintln!("cleanup: {e}");
        }
        let _ = run("ip", &["netns", "exec", &self.ns.name, "nft", "delete", "table", "inet", &self.table]);
        self.tasks.clear();
    }
}

fn main() -> Result<()> {
    let rounds: usize = env_or("FLOTILLA_BENCH_ROUNDS", 5)?;
    let secs: f64 = env_or("FLOTILLA_BENCH_SECS", 2.0)?;
    let underlay_mtu: u32 = env_or("FLOTILLA_BENCH_UNDERLAY_MTU", 1500)?;
    if rounds == 0 || secs <= 0.0 {
        bail!("FLOTILLA_BENCH_ROUNDS and FLOTILLA_BENCH_SECS must be positive");
    }
    let secs = Duration::from_secs_f64(secs);
    let mut a = Host::new("a")?;
    let mut b = Host::new("b")?;
    run("ip", &["-n", &a.ns.name, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &b.ns.name])?;
    for (host, ip) in [(&a, UNDERLAY_A), (&b, UNDERLAY_B)] {
        run("ip", &["-n", &host.ns.name, "link", "set", "ul0", "mtu", &underlay_mtu.to_string()])?;
        run("ip", &["-n", &host.ns.name, "addr", "add", &format!("{ip}/24"), "dev", "ul0"])?;
        run("ip", &["-n", &host.ns.name, "link", "set", "ul0", "up"])?;
    }
    let a1 = a.task("a1", A1)?;
    let a2 = a.task("a2", A2)?;
    let b1 = b.task("b1", B1)?;
    let mtu = a.overlay(UNDERLAY_A, &[(B1, UNDERLAY_B)])?;
    b.overlay(UNDERLAY_B, &[(A1, UNDERLAY_A), (A2, UNDERLAY_A)])?;

    if let Ok(hook) = std::env::var("FLOTILLA_BENCH_HOOK") {
        let status =
            Command::new("sh").args(["-c", &hook]).env("HOST_A", &a.ns.name).env("HOST_B", &b.ns.name).status()?;
        ensure!(status.success(), "FLOTILLA_BENCH_HOOK failed: {status}");
    }
    let same = (listen(&a2, SocketAddrV4::new(A2, PORT))?, SocketAddrV4::new(A2, PORT));
    let cross = (listen(&b1, SocketAddrV4::new(B1, PORT))?, SocketAddrV4::new(B1, PORT));
    println!(
        "TCP bulk throughput, {rounds} rounds x {:.1} s per path, interleaved, {} KiB writes; underlay MTU {underlay_mtu}, overlay MTU {mtu}",
        secs.as_secs_f64(),
        BUF / 1024
    );
    for (listener, to) in [&same, &cross] {
        round(listener, &a1, *to, Duration::from_millis(300)).context("warm-up")?;
    }
    // `FLOTILLA_BENCH_PATHS=same` or `cross` runs one path only, to profile it.
    let only = std::env::var("FLOTILLA_BENCH_PATHS").unwrap_or_default();
    let (mut same_gbps, mut cross_gbps) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        if only != "cross" {
            same_gbps.push(round(&same.0, &a1, same.1, secs).context("same host")?);
        }
        if only != "same" {
            cross_gbps.push(round(&cross.0, &a1, cross.1, secs).context("across hosts")?);
        }
    }
    if !only.is_empty() {
        let gbps = stats(if only == "same" { &same_gbps } else { &cross_gbps }).0;
        println!("{only}: {gbps:.2} Gbit/s (median)");
        return Ok(());
    }
    println!();
    println!("{:<46} {:>8} {:>8} {:>8}", "path (Gbit/s)", "median", "min", "max");
    let (s, smin, smax) = stats(&same_gbps);
    let (c, cmin, cmax) = stats(&cross_gbps);
    println!("{:<46} {s:>8.2} {smin:>8.2} {smax:>8.2}", "A1 -> A2, same host (veth, nft, veth)");
    println!("{:<46} {c:>8.2} {cmin:>8.2} {cmax:>8.2}", "A1 -> B1, across hosts (VXLAN)");
    let ratio = c / s * 100.0;
    let verdict = if ratio >= 70.0 { "met" } else { "NOT met" };
    println!();
    println!("ratio cross-host/same-host: {ratio:.0}% (target: at least 70%, {verdict})");
    drop((same, cross));
    drop(a);
    drop(b);
    Ok(())
}
