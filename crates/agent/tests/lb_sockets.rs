//! The load balancers' sockets against the kernel (privileged: run as root): listeners in the
//! task network's namespace or the host's, upstream connections made in the task network and
//! from the load balancer's address, and what a connection costs against entering the
//! namespace on a thread per connection (the numbers are printed; run with `--nocapture`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_agent::lb::LbSockets;
use flotilla_lb::{Place, Sockets};

struct Netns {
    name: String,
    path: std::path::PathBuf,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("fltest-lbsock-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status().unwrap().success();
        assert!(ok, "ip netns add (tests need root)");
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(["-n", &name]).args(args).status().unwrap().success();
            assert!(ok, "ip {args:?}");
        };
        ip(&["link", "set", "lo", "up"]);
        // The load balancer's address and a target's, both only in this namespace.
        ip(&["addr", "add", "10.99.0.9/32", "dev", "lo"]);
        ip(&["addr", "add", "10.99.1.5/32", "dev", "lo"]);
        Netns { path: format!("/run/netns/{name}").into(), name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_live_in_the_task_network_and_connect_from_the_load_balancer() {
    let ns = Netns::new();
    let sockets = LbSockets::new(Some(std::fs::File::open(&ns.path).unwrap())).unwrap();
    let target: SocketAddr = "10.99.1.5:0".parse().unwrap();

    // A listener on a task-network address exists there only.
    assert!(sockets.listen(target, Place::Host).is_err(), "not an address of this namespace");
    let listener = tokio::net::TcpListener::from_std(sockets.listen(target, Place::Vpc).unwrap()).unwrap();
    let SocketAddr::V4(target) = listener.local_addr().unwrap() else { unreachable!() };
    let host_listener = sockets.listen("127.0.0.1:0".parse().unwrap(), Place::Host).unwrap();
    assert!(host_listener.local_addr().unwrap().ip().is_loopback());

    let host_listener = tokio::net::TcpListener::from_std(host_listener).unwrap();
    let host_addr = host_listener.local_addr().unwrap();
    // Accepted and dropped, so the backlogs never fill.
    let accepting = [listener, host_listener].map(|l| {
        tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                drop(stream);
            }
        })
    });
    // Without a source: the namespace picks one. With one: from the load balancer's address.
    drop(sockets.connect(target).await.unwrap());
    sockets.set_sources([(*target.ip(), Ipv4Addr::new(10, 99, 0, 9))].into());
    let stream = sockets.connect(target).await.unwrap();
    assert_eq!(stream.local_addr().unwrap().ip().to_string(), "10.99.0.9");
    assert!(stream.nodelay().unwrap());
    drop(stream);

    // What a connection costs: sockets from the stock against a thread per connection.
    const N: u32 = 2000;
    let start = Instant::now();
    for _ in 0..N {
        drop(sockets.connect(target).await.unwrap());
    }
    let stocked = start.elapsed() / N;
    let start = Instant::now();
    for _ in 0..N {
        let path = ns.path.clone();
        let stream = tokio::task::spawn_blocking(move || {
            flotilla_net::netns::run_in(&path, || {
                std::net::TcpStream::connect(SocketAddrV4::new(*target.ip(), target.port()))
            })
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
        drop(stream);
    }
    let per_thread = start.elapsed() / N;
    let start = Instant::now();
    for _ in 0..N {
        drop(tokio::net::TcpStream::connect(host_addr).await.unwrap());
    }
    let plain = start.elapsed() / N;
    println!(
        "connect + close, mean of {N}: {stocked:?} from the stock, {per_thread:?} entering the namespace per connection, {plain:?} plain loopback in this namespace"
    );
    assert!(stocked < Duration::from_millis(5), "{stocked:?} per connection");
    accepting.iter().for_each(tokio::task::JoinHandle::abort);
}
