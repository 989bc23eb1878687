//! The second half of benchmark 3a: from the RunTask response to the container's first HTTP
//! response (busybox `httpd` on port 8080 of the task's own address), against `runc run` of
//! the same busybox bundle serving the same way on the host's loopback (runc's container
//! shares the host's network namespace, so the peer pays for no network at all: the floor).
//!
//! Flotilla's task addresses live in the server's network namespace (`BENCH_NETNS`, set by
//! `bench/common.sh`): the poller enters it on a thread of its own. It polls every
//! millisecond: DescribeTasks until the interface has an address, then a connect and
//! `GET /hostname` until an `HTTP/` status line comes back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_bench::{describe, remove_runc, run_task, spawn_runc_run, stop_all, wait_all};

pub const HTTP_COMMAND: [&str; 6] = ["httpd", "-f", "-p", "8080", "-h", "/etc"];

/// One request; true once any HTTP status line comes back.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(20)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /hostname HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 8];
    matches!(s.read(&mut buf), Ok(n) if n >= 5 && &buf[..5] == b"HTTP/")
}

/// Polls `addr` from the namespace `netns` (if any) until it answers; ms since `since`.
fn wait_http(addr: SocketAddr, netns: Option<&Path>, since: Instant) -> anyhow::Result<f64> {
    let netns = netns.map(std::fs::File::open).transpose().context("opening the server's network namespace")?;
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = &netns {
                // SAFETY: a valid namespace fd; setns(CLONE_NEWNET) moves only this thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while !answers(addr) {
                if Instant::now() > deadline {
                    bail!("{addr} did not answer HTTP within 30 s");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(since.elapsed().as_secs_f64() * 1000.0)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("HTTP poller panicked"))?
    })
}

/// RunTask response -> first HTTP response from the task; then stops it.
pub async fn flotilla_round(c: &flotilla_cli::client::Client, td: &str, netns: Option<&Path>) -> anyhow::Result<f64> {
    let arns = run_task(c, td, 1).await?;
    let since = Instant::now();
    let ip = loop {
        let tasks = describe(c, &arns).await?;
        let ip = tasks[0]["attachments"][0]["details"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["name"] == "privateIPv4Address")
            .and_then(|d| d["value"].as_str().map(str::to_owned));
        if let Some(ip) = ip {
            break ip;
        }
        if since.elapsed() > Duration::from_secs(30) {
            bail!("task {} got no address", arns[0]);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let addr: SocketAddr = format!("{ip}:8080").parse().context("task address")?;
    let netns = netns.map(Path::to_path_buf);
    let ms = tokio::task::spawn_blocking(move || wait_http(addr, netns.as_deref(), since)).await??;
    stop_all(c, &arns).await?;
    wait_all(c, &arns, "STOPPED", Duration::from_secs(60), Duration::from_millis(20)).await?;
    Ok(ms)
}

/// The peer's bundle serves on `port` of the host's loopback: no network namespace of its own.
pub fn host_network_bundle(bundle: &Path, port: u16) -> anyhow::Result<()> {
    let cfg = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg)?)?;
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
    }
    spec["process"]["args"] = serde_json::json!(["httpd", "-f", "-p", format!("127.0.0.1:{port}"), "-h", "/etc"]);
    std::fs::write(&cfg, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

/// `runc run` spawned -> first HTTP response on the host's loopback; then kill and delete.
pub fn runc_round(bundle: &Path, id: &str, port: u16) -> anyhow::Result<f64> {
    let since = Instant::now();
    let mut child = spawn_runc_run(bundle, id, Stdio::null())?;
    let result = wait_http(SocketAddr::from(([127, 0, 0, 1], port)), None, since);
    remove_runc(id, &mut child);
    result
}
