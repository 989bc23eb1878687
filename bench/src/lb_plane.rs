//! Runs Flotilla's load balancer data plane alone, on host sockets, from a JSON `LbSnapshot`
//! (`bench/lb_http.sh`, `bench/lb_tcp.sh`): the proxy measured without a control plane or
//! task networking around it. Prints `ready` once every listener is open; runs until killed.
//!
//! Usage: lb-plane SNAPSHOT.json

use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::sync::Arc;

use anyhow::{Context, bail};
use flotilla_host::lb::LbSnapshot;
use flotilla_lb::{BoxFuture, Place, Plane, Sockets};
use tokio::net::TcpStream;

struct HostSockets;

impl Sockets for HostSockets {
    fn listen(&self, addr: SocketAddr, _: Place) -> io::Result<TcpListener> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    fn connect(&self, addr: SocketAddrV4) -> BoxFuture<'static, io::Result<TcpStream>> {
        Box::pin(TcpStream::connect(addr))
    }
}

fn main() -> anyhow::Result<()> {
    // LB_PLANE_THREADS: the runtime's workers (default: one per core, as the agent's runtime).
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = std::env::var("LB_PLANE_THREADS").ok().and_then(|t| t.parse().ok()) {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).context("usage: lb-plane SNAPSHOT.json")?;
    let snapshot: LbSnapshot =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {path}"))?)
            .with_context(|| format!("parsing {path}"))?;
    let (plane, mut reports) = Plane::new(Arc::new(HostSockets), None);
    let problems = plane.apply(&snapshot).await;
    if !problems.is_empty() {
        bail!("listeners not open: {problems:?}");
    }
    println!("ready");
    // Verdicts go to stderr, so a benchmark shows a target flapping under load.
    tokio::spawn(async move {
        while let Some(batch) = reports.recv().await {
            for report in batch {
                eprintln!("{}:{} {:?}", report.ip, report.port, report.observation);
            }
        }
    });
    tokio::signal::ctrl_c().await?;
    plane.shutdown().await;
    Ok(())
}
