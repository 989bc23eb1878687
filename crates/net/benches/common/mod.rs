//! What the network benches share: namespaces, one timed TCP transfer between two of them,
//! and the medians they print.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use flotilla_net::{InterfaceSpec, netns};

/// Bytes per write and per read.
pub const BUF: usize = 128 * 1024;

pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    ensure!(out.status.success(), "{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named namespace with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    /// `flbench-<bench>-<pid>-<tag>`.
    pub fn new(bench: &str, tag: &str) -> Result<Netns> {
        let name = format!("flbench-{bench}-{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { path: PathBuf::from(format!("/run/netns/{name}")), name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// One round: a new connection from namespace `from` to a listener, `BUF`-sized writes for
/// `secs`, then EOF. Returns the receiver's count over the receiver's time, in Gbit/s.
pub fn round(listener: &TcpListener, from: &Path, to: SocketAddrV4, secs: Duration) -> Result<f64> {
    let mut sender = netns::run_in(from, || TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_secs(3)))?
        .with_context(|| format!("connect to {to}"))?;
    // The connection is already complete in the backlog; a short wait covers a slow machine.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut receiver = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    receiver.set_nonblocking(false)?;
    receiver.set_read_timeout(Some(Duration::from_secs(10)))?;
    let start = Instant::now();
    let (received, elapsed) = std::thread::scope(|scope| -> Result<(u64, Duration)> {
        let writer = scope.spawn(move || -> Result<()> {
            let buf = vec![0x5au8; BUF];
            let start = Instant::now();
            while start.elapsed() < secs {
                sender.write_all(&buf)?;
            }
            sender.shutdown(Shutdown::Write)?;
            Ok(())
        });
        let mut buf = vec![0u8; BUF];
        let mut received = 0u64;
        loop {
            match receiver.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received += n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("read"),
            }
        }
        let elapsed = start.elapsed();
        writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)).context("write")?;
        Ok((received, elapsed))
    })?;
    ensure!(received > 0, "nothing received from {to}");
    Ok(received as f64 * 8.0 / elapsed.as_secs_f64() / 1e9)
}

pub fn listen(ns: &Path, addr: SocketAddrV4) -> Result<TcpListener> {
    let listener = netns::run_in(ns, || TcpListener::bind(addr))?.with_context(|| format!("bind {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Median, lowest and highest.
pub fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    (median, sorted[0], sorted[sorted.len() - 1])
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

/// A task's interface in `vpc` with `group`, in namespace `ns`: `eni-<bench>-<tag>`, a /24, a
/// MAC made from its address.
pub fn task_interface(bench: &str, tag: &str, ns: &Netns, ip: Ipv4Addr, vpc: &str, group: &str) -> InterfaceSpec {
    let o = ip.octets();
    InterfaceSpec {
        id: format!("eni-{bench}-{tag}"),
        vpc_id: vpc.into(),
        netns: ns.path.clone(),
        ip,
        prefix_len: 24,
        mac: [0x02, 0x42, o[0], o[1], o[2], o[3]],
        security_groups: vec![group.into()],
        public_ip: None,
    }
}
