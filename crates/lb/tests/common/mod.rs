//! Real sockets on loopback for the data plane's tests: a `Sockets` that binds and connects on
//! the host, small hyper backends on 127.0.0.x, snapshot builders and a plain HTTP/1.1 client.
#![allow(dead_code)] // each test file uses a different part of this module

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_host::lb::*;
use flotilla_lb::{BoxFuture, Place, Plane, Sockets};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Listens and connects on the host, wherever a load balancer asks.
pub struct HostSockets;

impl Sockets for HostSockets {
    fn listen(&self, addr: SocketAddr, _: Place) -> io::Result<StdListener> {
        flotilla_lb::listener(addr)
    }

    fn connect(&self, addr: SocketAddrV4) -> BoxFuture<'static, io::Result<TcpStream>> {
        Box::pin(TcpStream::connect(addr))
    }
}

pub fn plane() -> (Plane, mpsc::Receiver<Vec<TargetReport>>) {
    Plane::new(Arc::new(HostSockets), None).unwrap()
}

/// A free port on `ip` (bound, then released).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    StdListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// A backend answering with its name and the headers it got; `/health` with the status set in
/// `health`; `/slow?ms=N` after N ms; upgrades (any protocol) by echoing bytes.
pub struct Backend {
    pub addr: SocketAddrV4,
    pub name: String,
    pub health: Arc<AtomicU16>,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(ip: Ipv4Addr, name: &str) -> Backend {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else { unreachable!() };
        let health = Arc::new(AtomicU16::new(200));
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (h, c, r, n) = (health.clone(), connections.clone(), requests.clone(), name.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let (h, r, n) = (h.clone(), r.clone(), n.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, n.clone(), h.clone(), r.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend { addr, name: name.to_string(), health, connections, requests, task }
    }

    pub fn target(&self) -> TargetSpec {
        TargetSpec { ip: *self.addr.ip(), port: self.addr.port(), draining: false, healthy: Some(true) }
    }
}

async fn answer(
    mut req: Request<Incoming>,
    name: String,
    health: Arc<AtomicU16>,
    requests: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/health" {
        let status = health.load(Ordering::SeqCst);
        return Ok(Response::builder().status(status).body(Full::new(Bytes::new())).unwrap());
    }
    requests.fetch_add(1, Ordering::SeqCst);
    if req.uri().path() == "/slow" {
        let ms: u64 = req.uri().query().and_then(|q| q.strip_prefix("ms=")).and_then(|m| m.parse().ok()).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(protocol) = req.headers().get("upgrade").cloned() {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", protocol)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let mut body = format!("{name}\n");
    for (k, v) in req.headers() {
        body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    Ok(Response::builder().header("x-backend", name).body(Full::new(Bytes::from(body))).unwrap())
}

pub fn health_check(protocol: HealthProtocol, interval_s: u32) -> HealthCheckSpec {
    HealthCheckSpec {
        enabled: true,
        protocol,
        port: None,
        path: "/health".into(),
        interval_s,
        timeout_s: 1,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        matcher: "200".into(),
    }
}

pub fn group(arn: &str, targets: Vec<TargetSpec>) -> TargetGroupSpec {
    TargetGroupSpec {
        arn: arn.into(),
        name: arn.rsplit('/').next().unwrap().into(),
        protocol: TargetProtocol::Http,
        port: 80,
        vpc_id: "vpc-1".into(),
        // Long enough that tests not about health never see a check change a verdict.
        health_check: health_check(HealthProtocol::Http, 300),
        deregistration_delay_s: 300,
        slow_start_s: 0,
        stickiness_s: None,
        targets,
    }
}

pub fn forward(arn: &str) -> ActionSpec {
    ActionSpec::Forward { target_groups: vec![WeightedGroup { arn: arn.into(), weight: 1 }], stickiness_s: None }
}

pub fn listener(port: u16, protocol: ListenerProtocol, default_action: ActionSpec) -> ListenerSpec {
    ListenerSpec {
        arn: format!("listener/{port}"),
        port,
        protocol,
        certificates: Vec::new(),
        rules: Vec::new(),
        default_action,
    }
}

/// A load balancer listening on `ip` (its one private address).
pub fn load_balancer(kind: LbKind, ip: Ipv4Addr, listeners: Vec<ListenerSpec>) -> LoadBalancerSpec {
    LoadBalancerSpec {
        arn: format!("lb/{ip}"),
        name: "lb".into(),
        kind,
        scheme: LbScheme::Internal,
        vpc_id: "vpc-1".into(),
        dns_name: "internal-lb-1.us-east-1.elb.amazonaws.com".into(),
        addresses: vec![LbAddress { subnet_id: "subnet-1".into(), private_ip: ip, public_ip: None }],
        security_groups: Vec::new(),
        idle_timeout_s: 60,
        listeners,
    }
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn backend(&self) -> &str {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// One HTTP/1.1 connection, for as many requests as a test sends on it.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection.with_upgrades());
        Client { sender }
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::get(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", "app.example.com");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Full::new(Bytes::new())).unwrap()).await
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        let response = self.sender.send_request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer { status: parts.status.as_u16(), headers: parts.headers, body: String::from_utf8_lossy(&body).into() }
    }
}

/// A GET on a connection of its own.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    Client::connect(addr).await.get(path, headers).await
}

/// Waits for `condition` up to `limit`.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next batch of reports, within `limit`.
pub async fn next_reports(rx: &mut mpsc::Receiver<Vec<TargetReport>>, limit: Duration) -> Vec<TargetReport> {
    tokio::time::timeout(limit, rx.recv()).await.expect("a report in time").expect("the plane is running")
}
