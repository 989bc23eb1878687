//! Privileged test fixtures: each test gets a network namespace of its own to play the host
//! (so tests run in parallel and nothing reaches the machine's real networks), task
//! namespaces, an optional "external" namespace, and TCP probes run inside namespaces.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flotilla_net::{
    InterfaceSpec, InterfaceStatus, NetConfig, Network, Peer, Protocol, Rule, SecurityGroupSpec, VpcSpec, VpcStatus,
    netns,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace (`/run/netns/<name>`) with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Netns> {
        let name = format!("fltest-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { path: PathBuf::from(format!("/run/netns/{name}")), name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(args);
        command
    }

    pub fn listen(&self, addr: SocketAddrV4) -> Result<Server> {
        let listener = netns::run_in(&self.path, || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        Ok(Server { listener })
    }

    /// Connects from inside the namespace; `Err` if no connection within `timeout`.
    pub fn connect(&self, to: SocketAddrV4, timeout: Duration) -> std::io::Result<TcpStream> {
        netns::run_in(&self.path, || TcpStream::connect_timeout(&SocketAddr::V4(to), timeout))?
    }

    /// Whether a TCP connection gets through (patiently: the machine may be busy).
    pub fn reaches(&self, to: SocketAddrV4) -> bool {
        self.connect(to, Duration::from_secs(3)).is_ok()
    }

    /// Whether a TCP connection fails. A permitted one completes in well under a millisecond
    /// here, so 700 ms without one is a drop (or a refusal).
    pub fn blocked(&self, to: SocketAddrV4) -> bool {
        self.connect(to, Duration::from_millis(700)).is_err()
    }

    /// Bytes sent by the peer of a connection from here to `to`, which it closes after.
    pub fn fetch(&self, to: SocketAddrV4) -> Result<String> {
        let mut stream = self.connect(to, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A listener inside some namespace; connections complete in its backlog without accept.
pub struct Server {
    pub listener: TcpListener,
}

impl Server {
    /// The peer address of the next connection, waiting up to `timeout`.
    pub fn next_peer(&self, timeout: Duration) -> Result<SocketAddr> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    let _ = stream.write_all(peer.ip().to_string().as_bytes());
                    return Ok(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e).context("no connection arrived"),
            }
        }
    }
}

/// A child process killed on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One test's world: a host namespace and a `Network` on a table named for the test.
pub struct Lab {
    pub tag: String,
    pub net: Network,
    pub host: Netns,
    pub tasks: Vec<Netns>,
}

impl Lab {
    pub fn new(tag: &str) -> Result<Lab> {
        let host = Netns::new(&format!("{tag}-host"))?;
        let net = Network::new(Lab::config(tag, &host))?;
        Ok(Lab { tag: tag.to_string(), net, host, tasks: Vec::new() })
    }

    pub fn config(tag: &str, host: &Netns) -> NetConfig {
        NetConfig {
            nft_table: format!("t_{}", tag.replace('-', "_")),
            uplink: None,
            host_netns: Some(host.path.clone()),
        }
    }

    pub fn vpc(&self, id: &str, cidr: &str) -> Result<VpcStatus> {
        Ok(self.net.ensure_vpc(&VpcSpec { id: id.into(), cidr: cidr.parse()? })?)
    }

    pub fn group(&self, id: &str, vpc: &str, ingress: Vec<Rule>, egress: Vec<Rule>) -> Result<()> {
        let spec = SecurityGroupSpec { id: id.into(), vpc_id: vpc.into(), ingress, egress };
        Ok(self.net.ensure_security_group(&spec)?)
    }

    /// A task namespace and its interface; returns the namespace's index in `tasks`.
    pub fn task(&mut self, eni: &str, vpc: &str, ip: &str, groups: &[&str], public_ip: Option<&str>) -> Result<usize> {
        let ns = Netns::new(&format!("{}-{eni}", self.tag))?;
        let spec = interface(eni, vpc, &ns, ip, groups, public_ip)?;
        self.net.ensure_interface(&spec)?;
        self.tasks.push(ns);
        Ok(self.tasks.len() - 1)
    }

    /// The host namespace's connection tracking table, one connection a line.
    pub fn conntrack(&self) -> Result<String> {
        let out = self.host.exec(&["cat", "/proc/net/nf_conntrack"]).output()?;
        anyhow::ensure!(out.status.success(), "reading /proc/net/nf_conntrack");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `nft` in the host namespace.
    /// Everything in the host namespace that this crate could leak.
    pub fn host_snapshot(&self) -> Result<String> {
        let table = format!("t_{}", self.tag);
        Ok([
            self.host.ip(&["-br", "link"])?,
            self.host.ip(&["-4", "addr"])?,
            self.host.ip(&["route", "show", "table", "all"])?,
            self.host.ip(&["neigh"])?,
            self.nft(&["list", "table", "inet", &table])?,
        ]
        .join("\n--\n"))
    }

    pub fn nft(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.host.name, "nft"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// An "external" host: its own namespace behind a veth from the host namespace, the host
    /// at 192.0.2.1/24 and it at 192.0.2.2/24, routing the public pool and 10/8 via the host.
    pub fn external(&self) -> Result<Netns> {
        let ext = Netns::new(&format!("{}-ext", self.tag))?;
        self.host.ip(&["link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", &ext.name])?;
        self.host.ip(&["addr", "add", "192.0.2.1/24", "dev", "ext0"])?;
        self.host.ip(&["link", "set", "ext0", "up"])?;
        ext.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"])?;
        ext.ip(&["link", "set", "eth0", "up"])?;
        ext.ip(&["route", "add", "198.18.0.0/24", "via", "192.0.2.1"])?;
        ext.ip(&["route", "add", "10.0.0.0/8", "via", "192.0.2.1"])?;
        Ok(ext)
    }
}

pub fn interface(
    eni: &str,
    vpc: &str,
    ns: &Netns,
    ip: &str,
    groups: &[&str],
    public_ip: Option<&str>,
) -> Result<InterfaceSpec> {
    let ip: Ipv4Addr = ip.parse()?;
    let o = ip.octets();
    Ok(InterfaceSpec {
        id: eni.into(),
        vpc_id: vpc.into(),
        netns: ns.path.clone(),
        ip,
        prefix_len: 24,
        mac: [0x02, 0x42, o[0], o[1], o[2], o[3]],
        security_groups: groups.iter().map(|g| g.to_string()).collect(),
        public_ip: public_ip.map(str::parse).transpose()?,
    })
}

pub fn tcp(ports: u16, cidr: &str) -> Rule {
    Rule::new(Protocol::Tcp, Some((ports, ports)), Peer::Cidr(cidr.parse().unwrap()))
}

pub fn all_to(cidr: &str) -> Rule {
    Rule::new(Protocol::All, None, Peer::Cidr(cidr.parse().unwrap()))
}

pub fn addr(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().unwrap(), port)
}

pub fn any_addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

/// Waits until `check` holds, up to `timeout`.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn spawn(mut command: Command) -> Result<Process> {
    Ok(Process(command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?))
}

pub fn status_of<'a>(list: &'a [InterfaceStatus], id: &str) -> Option<&'a InterfaceStatus> {
    list.iter().find(|s| s.id == id)
}

/// Two labs (hosts `{tag}-a` and `{tag}-b`) joined by a veth underlay (`ul0` on both sides,
/// MTU 1500) with addresses `a_ip`/24 and `b_ip`/24.
pub fn two_hosts(tag: &str, a_ip: &str, b_ip: &str) -> Result<(Lab, Lab)> {
    let a = Lab::new(&format!("{tag}-a"))?;
    let b = Lab::new(&format!("{tag}-b"))?;
    a.host.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &b.host.name])?;
    for (lab, ip) in [(&a, a_ip), (&b, b_ip)] {
        lab.host.ip(&["addr", "add", &format!("{ip}/24"), "dev", "ul0"])?;
        lab.host.ip(&["link", "set", "ul0", "up"])?;
    }
    Ok((a, b))
}
