//! Probes against real listeners in a real network namespace (root, as the agent runs).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use flotilla_sandbox::ContainerStatus;
use flotilla_sandbox::sim::SimSandbox;
use flotilla_types::task_definition::PodContainer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace with `lo` up, deleted on drop.
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("fltest-probe-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let ok = |c: &mut Command| assert!(c.status().expect("ip").success(), "{c:?}");
        ok(Command::new("ip").args(["netns", "add", &name]));
        ok(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Netns { path: PathBuf::from(format!("/run/netns/{name}")), name }
    }

    /// An HTTP server inside the namespace on 127.0.0.1:`port`: `/ok` 200, `/moved` 302,
    /// anything else 404; `/echo` answers 200 only when the probe's header arrived.
    fn serve(&self, port: u16) {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let listener = flotilla_net::netns::run_in(&self.path, || std::net::TcpListener::bind(addr)).unwrap().unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
                    let status = match path.as_str() {
                        "/ok" => "200 OK",
                        "/moved" => "302 Found",
                        "/echo" if head.contains("X-Probe: yes\r\n") && head.contains("kube-probe/") => "200 OK",
                        _ => "404 Not Found",
                    };
                    let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

fn probe(action: ProbeAction, success: u32, failure: u32) -> ContainerProbe {
    ContainerProbe {
        action,
        initial_delay_seconds: 0,
        period_seconds: 10,
        timeout_seconds: 1,
        success_threshold: success,
        failure_threshold: failure,
    }
}

fn get(path: &str) -> ProbeAction {
    ProbeAction::HttpGet { host: None, port: 8080, path: path.into(), https: false, headers: vec![] }
}

#[test]
fn verdicts_move_only_at_their_thresholds() {
    let mut readiness = Run::new(probe(get("/"), 2, 3), false);
    readiness.record(true);
    assert!(!readiness.verdict && !readiness.decided, "one success of two");
    readiness.record(true);
    assert!(readiness.verdict);
    readiness.record(false);
    readiness.record(false);
    readiness.record(true);
    readiness.record(false);
    assert!(readiness.verdict, "the failures were not in a row");
    readiness.record(false);
    readiness.record(false);
    assert!(!readiness.verdict);
}

#[test]
fn requests_and_status_lines() {
    let addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 80);
    let plain = request(addr, "/healthz", &[]);
    assert!(plain.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:80\r\nUser-Agent: kube-probe/"), "{plain}");
    let header = |n: &str, v: &str| KeyValuePair { name: Some(n.into()), value: Some(v.into()) };
    let custom = request(addr, "/", &[header("host", "example.com"), header("X-Bad", "a\r\nb")]);
    assert!(!custom.contains("Host: 10.0.0.5") && custom.contains("host: example.com\r\n"), "{custom}");
    assert!(!custom.contains("X-Bad"), "a header that would break the framing is left out: {custom}");
    assert_eq!(status_code(b"HTTP/1.1 302 Found\r\n"), Some(302));
    assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
    assert_eq!(target(Some("10.1.2.3"), 80, None), Some(SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 80)));
    assert_eq!(target(Some("web.local"), 80, Some(Ipv4Addr::LOCALHOST)), None, "names are not resolved");
    assert_eq!(target(None, 0, Some(Ipv4Addr::LOCALHOST)), None);
}

#[tokio::test]
async fn tcp_and_http_probes_run_inside_the_task_namespace() {
    let ns = Netns::new();
    ns.serve(8080);
    let inside = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080);
    assert!(connect(&ns.path, inside).await.is_ok());
    // A listener of the host's own is not what a probe from the task reaches.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let refused = connect(&ns.path, SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port)).await;
    assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(http_get(&ns.path, inside, "/ok", false, &[]).await.unwrap(), 200);
    assert_eq!(http_get(&ns.path, inside, "/moved", false, &[]).await.unwrap(), 302);
    assert_eq!(http_get(&ns.path, inside, "/gone", false, &[]).await.unwrap(), 404);
    let header = [KeyValuePair { name: Some("X-Probe".into()), value: Some("yes".into()) }];
    assert_eq!(http_get(&ns.path, inside, "/echo", false, &header).await.unwrap(), 200);
    assert!(passing(302).is_ok() && passing(404).is_err() && passing(199).is_err());
}

fn running(name: &str) -> SandboxStatus {
    let mut c = ContainerStatus::created(name);
    c.state = ContainerState::Running;
    c.started_at = Some(Timestamp::now().0 as u64);
    SandboxStatus { task_id: "t".into(), phase: flotilla_sandbox::TaskPhase::Ready, containers: vec![c], generation: 1 }
}

fn prober(ns: &Netns, probes: PodContainer) -> Prober {
    let web = ContainerDefinition { name: Some("web".into()), pod: Some(probes), ..Default::default() };
    let sandbox: Arc<dyn Sandbox> = SimSandbox::new();
    let mut p = Prober::new(sandbox, "t", &[web]).expect("probes");
    p.netns = ns.path.clone();
    p
}

/// Makes every probe due now (instead of waiting out its period).
fn due_now(p: &mut Prober) {
    for c in &mut p.containers {
        for run in [&mut c.startup, &mut c.readiness, &mut c.liveness].into_iter().flatten() {
            if run.next_at.is_some() {
                run.next_at = Some(Instant::now());
            }
        }
    }
}

#[tokio::test]
async fn readiness_follows_the_server_and_liveness_failures_fail_the_container() {
    let ns = Netns::new();
    ns.serve(8080);
    let me = Some(Ipv4Addr::LOCALHOST);
    let status = running("web");
    let mut p = prober(
        &ns,
        PodContainer {
            readiness: Some(probe(get("/ok"), 1, 1)),
            liveness: Some(probe(ProbeAction::TcpSocket { host: None, port: 8081 }, 1, 2)),
            startup: None,
            restart_policy: None,
        },
    );
    assert!(p.next_due().is_none(), "nothing is scheduled before the container is seen running");
    let first = p.pass(&status, me).await;
    assert_eq!(first.health, vec![("web".to_string(), HealthStatus::Healthy)]);
    assert!(first.failed.is_empty(), "one liveness failure of two");
    assert!(p.next_due().unwrap() > Instant::now() + Duration::from_secs(5), "next in a period (10 s)");
    due_now(&mut p);
    let second = p.pass(&status, me).await;
    assert_eq!(second.failed, ["web"]);
    // Started again (a new start time): the probes begin afresh, one failure is not enough.
    let mut again = status.clone();
    again.containers[0].started_at = Some(again.containers[0].started_at.unwrap() + 1);
    assert!(p.pass(&again, me).await.failed.is_empty());

    // Readiness goes with the file served; a stopped container is not probed.
    let mut p = prober(&ns, PodContainer { readiness: Some(probe(get("/gone"), 1, 1)), ..Default::default() });
    assert_eq!(p.pass(&status, me).await.health, vec![("web".to_string(), HealthStatus::Unhealthy)]);
    let mut exited = running("web");
    exited.containers[0].state = ContainerState::Exited;
    let down = p.pass(&exited, me).await;
    assert_eq!(down.health, [("web".to_string(), HealthStatus::Unknown)], "not ready while it waits to restart");
    assert!(down.failed.is_empty());
    assert!(p.next_due().is_none(), "an exited container has nothing due");
}

#[tokio::test]
async fn readiness_and_liveness_wait_for_the_startup_probe() {
    let ns = Netns::new();
    let me = Some(Ipv4Addr::LOCALHOST);
    let status = running("web");
    let tcp = || ProbeAction::TcpSocket { host: None, port: 8080 };
    let mut p = prober(
        &ns,
        PodContainer {
            readiness: Some(probe(tcp(), 1, 1)),
            liveness: Some(probe(ProbeAction::TcpSocket { host: None, port: 9 }, 1, 1)),
            startup: Some(probe(tcp(), 1, 3)),
            restart_policy: None,
        },
    );
    // Nobody listens yet: the startup probe fails (below its threshold), liveness (which
    // would fail at once) does not run, and the container is not ready.
    let waiting = p.pass(&status, me).await;
    assert_eq!(waiting.health[0].1, HealthStatus::Unknown);
    assert!(waiting.failed.is_empty());
    ns.serve(8080);
    due_now(&mut p);
    // Started: now liveness runs (and fails, threshold 1), readiness passes.
    let started = p.pass(&status, me).await;
    assert_eq!(started.health[0].1, HealthStatus::Healthy);
    assert_eq!(started.failed, ["web"]);
    // A startup probe that never passes stops the task too.
    let mut p = prober(
        &ns,
        PodContainer {
            readiness: None,
            liveness: None,
            startup: Some(probe(ProbeAction::TcpSocket { host: None, port: 9 }, 1, 1)),
            restart_policy: None,
        },
    );
    assert_eq!(p.pass(&status, me).await.failed, ["web"]);
}
