//! TCP bulk throughput from one awsvpc task to another (veth, the host's routing and its nft
//! table, veth), against the same transfer over 127.0.0.1 (issue 4, target b: at least 70% of
//! loopback). Run as root: `cargo bench -p flotilla-net --bench throughput`.
//!
//! Everything happens in network namespaces of the bench's own: a private "host" (as the
//! tests build it, `NetConfig::host_netns`) holding one VPC, one security group allowing TCP
//! on the test port from the VPC CIDR, and two task namespaces with an interface each. The
//! paths are measured in interleaved rounds, each a new connection on which a sender writes
//! `BUF`-sized buffers for a fixed time while a receiver reads and counts:
//! - task A -> task B, through the host;
//! - loopback in a namespace with no netfilter rules (task A's): the kernel's TCP stack alone;
//! - loopback in the host namespace, where Flotilla's table (and so conntrack) is loaded.
//!
//! `FLOTILLA_BENCH_ROUNDS` (default 5) and `FLOTILLA_BENCH_SECS` (default 2) change the run;
//! `FLOTILLA_BENCH_PATHS=task` (or `lo`, `hostlo`, comma-separated) runs only some paths, to
//! profile one; `FLOTILLA_BENCH_HOOK` is a shell command run once the namespaces exist (their
//! names in `$HOST`, `$TASK_A`, `$TASK_B`, the table in `$TABLE`), to try a change to the data plane by hand.
//! Everything created (namespaces, links, the nft table) is removed on the way out, error,
//! panic or Ctrl-C (which ends the run after the current round) included.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{BUF, Netns, env_or, listen, round, run, stats, task_interface};
use flotilla_net::{NetConfig, Network, Peer, Protocol, Rule, SecurityGroupSpec, VpcSpec};

const PORT: u16 = 5201;
const VPC: &str = "vpc-tput";
const CIDR: &str = "10.71.0.0/16";
const GROUP: &str = "sg-tput";
const A: Ipv4Addr = Ipv4Addr::new(10, 71, 1, 10);
const B: Ipv4Addr = Ipv4Addr::new(10, 71, 1, 11);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The bench's world. Dropping it removes the interfaces, group and VPC (links and rules),
/// then the nft table, then the namespaces.
struct World {
    net: Option<Network>,
    table: String,
    tasks: Vec<Netns>,
    host: Netns,
}

impl World {
    fn new() -> Result<World> {
        let host = Netns::new("tput", "host")?;
        let table = format!("bench_tput_{}", std::process::id());
        let config = NetConfig { nft_table: table.clone(), uplink: None, host_netns: Some(host.path.clone()) };
        let mut world = World { net: None, table, tasks: Vec::new(), host };
        world.net = Some(Network::new(config).context("Network::new")?);
        let net = world.net();
        net.ensure_vpc(&VpcSpec { id: VPC.into(), cidr: CIDR.parse()? })?;
        let tcp = Rule::new(Protocol::Tcp, Some((PORT, PORT)), Peer::Cidr(CIDR.parse()?));
        let group =
            SecurityGroupSpec { id: GROUP.into(), vpc_id: VPC.into(), ingress: vec![tcp.clone()], egress: vec![tcp] };
        net.ensure_security_group(&group)?;
        for (tag, ip) in [("a", A), ("b", B)] {
            let ns = Netns::new("tput", tag)?;
            let spec = task_interface("tput", tag, &ns, ip, VPC, GROUP);
            world.tasks.push(ns);
            world.net().ensure_interface(&spec).with_context(|| format!("ensure_interface {}", spec.id))?;
        }
        Ok(world)
    }

    fn net(&self) -> &Network {
        self.net.as_ref().expect("network")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(net) = self.net.take()
            && let Err(e) = net.cleanup(&[], &[], &[])
        {
            eprintln!("cleanup: {e}");
        }
        let _ = run("ip", &["netns", "exec", &self.host.name, "nft", "delete", "table", "inet", &self.table]);
        self.tasks.clear();
    }
}

struct Case {
    name: &'static str,
    listener: TcpListener,
    from: PathBuf,
    to: SocketAddrV4,
    gbps: Vec<f64>,
}

/// What shapes the task path, for the record: the veths' MTU and offloads, and the kernel.
fn describe(world: &World) -> String {
    let host = &world.host.name;
    let links = run("ip", &["-n", host, "-o", "link", "show", "type", "veth"]).unwrap_or_default();
    let link = links.split(':').nth(1).map(|s| s.trim().split('@').next().unwrap_or("").to_string());
    let mut out = String::new();
    if let Some(link) = link {
        let mtu = links.split("mtu ").nth(1).and_then(|s| s.split(' ').next()).unwrap_or("?");
        out.push_str(&format!("host veth {link}: mtu {mtu}"));
        if let Ok(k) = run("ip", &["netns", "exec", host, "ethtool", "-k", &link]) {
            let on: Vec<&str> = k
                .lines()
                .filter_map(|l| l.split_once(": "))
                .filter(|(name, v)| {
                    v.starts_with("on")
                        && [
                            "tcp-segmentation-offload",
                            "generic-segmentation-offload",
                            "generic-receive-offload",
                            "rx-gro-list",
                            "rx-udp-gro-forwarding",
                        ]
                        .contains(&name.trim())
                })
                .map(|(name, _)| name.trim())
                .collect();
            out.push_str(&format!(
                "; offloads on: {}",
                if on.is_empty() { "none listed".into() } else { on.join(", ") }
            ));
        }
    }
    out
}

fn main() -> Result<()> {
    let rounds: usize = env_or("FLOTILLA_BENCH_ROUNDS", 5)?;
    let secs: f64 = env_or("FLOTILLA_BENCH_SECS", 2.0)?;
    if rounds == 0 || secs <= 0.0 {
        bail!("FLOTILLA_BENCH_ROUNDS and FLOTILLA_BENCH_SECS must be positive");
    }
    let secs = Duration::from_secs_f64(secs);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let world = World::new()?;
    let (a, b) = (&world.tasks[0].path, &world.tasks[1].path);
    let lo = |port| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut paths = vec![
        Case {
            name: "task A -> task B (veth, host nft, veth)",
            listener: listen(b, SocketAddrV4::new(B, PORT))?,
            from: a.clone(),
            to: SocketAddrV4::new(B, PORT),
            gbps: Vec::new(),
        },
        Case {
            name: "loopback, namespace without rules",
            listener: listen(a, lo(PORT))?,
            from: a.clone(),
            to: lo(PORT),
            gbps: Vec::new(),
        },
        Case {
            name: "loopback, host namespace (table loaded)",
            listener: listen(&world.host.path, lo(PORT))?,
            from: world.host.path.clone(),
            to: lo(PORT),
            gbps: Vec::new(),
        },
    ];
    println!(
        "TCP bulk throughput, {rounds} rounds x {:.1} s per path, interleaved, {} KiB writes",
        secs.as_secs_f64(),
        BUF / 1024
    );
    println!("{}", describe(&world));
    if let Ok(hook) = std::env::var("FLOTILLA_BENCH_HOOK") {
        let status = Command::new("sh")
            .args(["-c", &hook])
            .env("HOST", &world.host.name)
            .env("TASK_A", &world.tasks[0].name)
            .env("TASK_B", &world.tasks[1].name)
            .env("TABLE", &world.table)
            .status()?;
        ensure!(status.success(), "FLOTILLA_BENCH_HOOK failed: {status}");
    }
    if let Ok(only) = std::env::var("FLOTILLA_BENCH_PATHS") {
        let keys = ["task", "lo", "hostlo"];
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        ensure!(only.iter().all(|k| keys.contains(k)), "FLOTILLA_BENCH_PATHS takes {}", keys.join(","));
        let mut keys = keys.iter();
        paths.retain(|_| keys.next().is_some_and(|k| only.contains(k)));
    }
    // A warm-up round per path, not counted: first connections pay for cold caches.
    for path in &paths {
        round(&path.listener, &path.from, path.to, Duration::from_millis(300)).with_context(|| path.name)?;
    }
    for _ in 0..rounds {
        ensure!(!STOP.load(Ordering::Relaxed), "interrupted");
        for path in &mut paths {
            let gbps = round(&path.listener, &path.from, path.to, secs).with_context(|| path.name)?;
            path.gbps.push(gbps);
        }
    }
    println!();
    println!("{:<42} {:>8} {:>8} {:>8}", "path (Gbit/s)", "median", "min", "max");
    for path in &paths {
        let (median, min, max) = stats(&path.gbps);
        println!("{:<42} {median:>8.2} {min:>8.2} {max:>8.2}", path.name);
    }
    if paths.len() < 3 {
        return Ok(());
    }
    let task = stats(&paths[0].gbps).0;
    let bare = stats(&paths[1].gbps).0;
    let host = stats(&paths[2].gbps).0;
    println!();
    let ratio = task / bare * 100.0;
    let verdict = if ratio >= 70.0 { "met" } else { "NOT met" };
    println!("ratio task-to-task/loopback: {ratio:.0}% (target: at least 70%, {verdict}; loopback without rules)");
    println!("  against loopback in the host namespace (table loaded): {:.0}%", task / host * 100.0);
    drop(paths);
    drop(world);
    Ok(())
}
