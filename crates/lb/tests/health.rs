//! Health checks, fail-open, draining, and `apply` as the agent calls it: repeatedly, with
//! sockets that may be taken.

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use flotilla_host::lb::*;

const A: &str = "arn:tg/a";

fn snapshot(lb_ip: Ipv4Addr, port: u16, group: TargetGroupSpec) -> LbSnapshot {
    LbSnapshot {
        load_balancers: vec![load_balancer(
            LbKind::Application,
            lb_ip,
            vec![listener(port, ListenerProtocol::Http, forward(A))],
        )],
        target_groups: vec![group],
    }
}

fn report(target: &TargetSpec, observation: TargetObservation) -> TargetReport {
    TargetReport { target_group_arn: A.into(), ip: target.ip, port: target.port, observation }
}

/// Backends that answered `n` requests through `addr`.
async fn backends_seen(addr: SocketAddr, n: usize) -> HashSet<String> {
    let mut client = Client::connect(addr).await;
    let mut seen = HashSet::new();
    for _ in 0..n {
        seen.insert(client.get("/", &[]).await.backend().to_string());
    }
    seen
}

#[tokio::test]
async fn verdicts_follow_checks_and_traffic_follows_verdicts() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 20, 1), "a").await;
    let b = Backend::start(Ipv4Addr::new(127, 0, 20, 2), "b").await;
    let (ta, tb) = (TargetSpec { healthy: None, ..a.target() }, TargetSpec { healthy: None, ..b.target() });
    let mut checked = group(A, vec![ta.clone(), tb.clone()]);
    checked.health_check = health_check(HealthProtocol::Http, 1);
    let lb_ip = Ipv4Addr::new(127, 0, 20, 10);
    let port = free_port(lb_ip);
    let addr = SocketAddr::from((lb_ip, port));
    let (plane, mut reports) = plane();
    assert_eq!(plane.apply(&snapshot(lb_ip, port, checked.clone())).await, vec![]);

    // Two passes each (the first at once, the second an interval later): both healthy.
    let mut healthy = Vec::new();
    while healthy.len() < 2 {
        healthy.extend(next_reports(&mut reports, Duration::from_secs(5)).await);
    }
    healthy.sort_by_key(|r| r.ip);
    assert_eq!(healthy, vec![report(&ta, TargetObservation::Healthy), report(&tb, TargetObservation::Healthy)]);
    // The control plane records them and sends them back: nothing changes, nothing is reported.
    checked.targets =
        vec![TargetSpec { healthy: Some(true), ..ta.clone() }, TargetSpec { healthy: Some(true), ..tb.clone() }];
    assert_eq!(plane.apply(&snapshot(lb_ip, port, checked.clone())).await, vec![]);
    assert_eq!(backends_seen(addr, 6).await, HashSet::from(["a".to_string(), "b".to_string()]));

    a.health.store(500, Ordering::SeqCst);
    let unhealthy = next_reports(&mut reports, Duration::from_secs(5)).await;
    assert_eq!(
        unhealthy,
        vec![report(
            &ta,
            TargetObservation::Unhealthy {
                reason: "Target.ResponseCodeMismatch".into(),
                description: "Health checks failed with these codes: [500]".into(),
            }
        )]
    );
    assert_eq!(backends_seen(addr, 6).await, HashSet::from(["b".to_string()]));

    // Every target unhealthy: all of them take traffic again (fail open).
    b.health.store(503, Ordering::SeqCst);
    let unhealthy = next_reports(&mut reports, Duration::from_secs(5)).await;
    assert_eq!(unhealthy.len(), 1);
    assert_eq!(unhealthy[0].ip, tb.ip);
    assert_eq!(backends_seen(addr, 6).await, HashSet::from(["a".to_string(), "b".to_string()]));

    a.health.store(200, Ordering::SeqCst);
    assert_eq!(next_reports(&mut reports, Duration::from_secs(5)).await, vec![report(&ta, TargetObservation::Healthy)]);
    assert_eq!(backends_seen(addr, 6).await, HashSet::from(["a".to_string()]));
    plane.shutdown().await;
}

#[tokio::test]
async fn refused_timed_out_and_tcp_checks_give_elb_reasons() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 21, 1), "a").await;
    let closed = Ipv4Addr::new(127, 0, 21, 2);
    let refused = TargetSpec { ip: closed, port: free_port(closed), draining: false, healthy: None };
    let mut slow = group(A, vec![TargetSpec { healthy: None, ..a.target() }, refused.clone()]);
    slow.health_check = health_check(HealthProtocol::Http, 1);
    slow.health_check.path = "/slow?ms=3000".into();
    let lb_ip = Ipv4Addr::new(127, 0, 21, 10);
    let port = free_port(lb_ip);
    let (plane, mut reports) = plane();
    assert_eq!(plane.apply(&snapshot(lb_ip, port, slow.clone())).await, vec![]);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next_reports(&mut reports, Duration::from_secs(8)).await);
    }
    seen.sort_by_key(|r| r.ip);
    assert_eq!(
        seen,
        vec![
            report(
                &a.target(),
                TargetObservation::Unhealthy {
                    reason: "Target.Timeout".into(),
                    description: "Request timed out".into()
                }
            ),
            report(
                &refused,
                TargetObservation::Unhealthy {
                    reason: "Target.FailedHealthChecks".into(),
                    description: "Health checks failed".into()
                }
            ),
        ]
    );

    // TCP checks only connect: the backend passes, the closed port still fails.
    slow.health_check.protocol = HealthProtocol::Tcp;
    assert_eq!(plane.apply(&snapshot(lb_ip, port, slow)).await, vec![]);
    assert_eq!(
        next_reports(&mut reports, Duration::from_secs(5)).await,
        vec![report(&a.target(), TargetObservation::Healthy)]
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(reports.try_recv().is_err(), "no verdict changed, so nothing more is reported");
}

#[tokio::test]
async fn draining_finishes_in_flight_requests_then_reports_drained() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 22, 1), "a").await;
    let b = Backend::start(Ipv4Addr::new(127, 0, 22, 2), "b").await;
    let mut g = group(A, vec![a.target()]);
    g.health_check.enabled = false;
    let lb_ip = Ipv4Addr::new(127, 0, 22, 10);
    let port = free_port(lb_ip);
    let addr = SocketAddr::from((lb_ip, port));
    let (plane, mut reports) = plane();
    assert_eq!(plane.apply(&snapshot(lb_ip, port, g.clone())).await, vec![]);

    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1500", &[]).await });
    eventually(Duration::from_secs(5), "the slow request to reach a", async || a.requests.load(Ordering::SeqCst) == 1)
        .await;
    g.targets = vec![TargetSpec { draining: true, ..a.target() }, b.target()];
    assert_eq!(plane.apply(&snapshot(lb_ip, port, g.clone())).await, vec![]);
    assert_eq!(backends_seen(addr, 6).await, HashSet::from(["b".to_string()]));
    assert!(reports.try_recv().is_err(), "a request is still in flight");

    let answer = slow.await.unwrap();
    assert_eq!((answer.status, answer.backend()), (200, "a"));
    assert_eq!(
        next_reports(&mut reports, Duration::from_secs(5)).await,
        vec![report(&a.target(), TargetObservation::Drained)]
    );
    // Re-applied while still draining: reported once only.
    assert_eq!(plane.apply(&snapshot(lb_ip, port, g)).await, vec![]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(reports.try_recv().is_err());
}

#[tokio::test]
async fn a_taken_port_is_a_problem_and_reapply_keeps_connections() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 23, 1), "a").await;
    let mut g = group(A, vec![a.target()]);
    g.health_check.enabled = false;
    let lb_ip = Ipv4Addr::new(127, 0, 23, 10);
    let port = free_port(lb_ip);
    let addr = SocketAddr::from((lb_ip, port));
    let (plane, _reports) = plane();

    let squatter = std::net::TcpListener::bind(addr).unwrap();
    let problems = plane.apply(&snapshot(lb_ip, port, g.clone())).await;
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].listener_arn, format!("listener/{port}"));
    assert!(problems[0].problem.contains("in use"), "{}", problems[0].problem);
    drop(squatter);
    assert_eq!(plane.apply(&snapshot(lb_ip, port, g.clone())).await, vec![]);

    let mut client = Client::connect(addr).await;
    assert_eq!(client.get("/", &[]).await.backend(), "a");
    // The same configuration again, then with a rule added: the client's connection goes on
    // and sees the new routing.
    assert_eq!(plane.apply(&snapshot(lb_ip, port, g.clone())).await, vec![]);
    assert_eq!(client.get("/", &[]).await.backend(), "a");
    let mut changed = snapshot(lb_ip, port, g);
    changed.load_balancers[0].listeners[0].rules = vec![RuleSpec {
        arn: "rule/1".into(),
        priority: 1,
        conditions: vec![RuleCondition::PathPattern { values: vec!["/teapot".into()] }],
        action: ActionSpec::FixedResponse { status: 418, content_type: None, body: None },
    }];
    assert_eq!(plane.apply(&changed).await, vec![]);
    assert_eq!(client.get("/teapot", &[]).await.status, 418);
    assert_eq!(client.get("/", &[]).await.backend(), "a");

    // Gone from the snapshot: nothing listens any more.
    assert_eq!(plane.apply(&LbSnapshot::default()).await, vec![]);
    eventually(Duration::from_secs(5), "the listener to close", async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}
