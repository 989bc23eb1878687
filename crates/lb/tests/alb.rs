//! Application load balancers through real sockets: rules, actions, headers, keep-alive,
//! upgrades, stickiness, weights and ELB's error pages.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use common::*;
use flotilla_host::lb::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: &str = "arn:tg/a";
const B: &str = "arn:tg/b";

/// A load balancer on `lb_ip` with an HTTP listener: default forward to group A, plus `rules`.
async fn alb(lb_ip: Ipv4Addr, groups: Vec<TargetGroupSpec>, rules: Vec<RuleSpec>) -> (flotilla_lb::Plane, SocketAddr) {
    let (plane, _reports) = plane();
    let port = free_port(lb_ip);
    let mut http = listener(port, ListenerProtocol::Http, forward(A));
    http.rules = rules;
    let snapshot = LbSnapshot {
        load_balancers: vec![load_balancer(LbKind::Application, lb_ip, vec![http])],
        target_groups: groups,
    };
    assert_eq!(plane.apply(&snapshot).await, vec![]);
    (plane, SocketAddr::from((lb_ip, port)))
}

/// A request's extra headers.
type Headers = Vec<(&'static str, &'static str)>;

fn rule(priority: u32, conditions: Vec<RuleCondition>, action: ActionSpec) -> RuleSpec {
    RuleSpec { arn: format!("rule/{priority}"), priority, conditions, action }
}

#[tokio::test]
async fn rules_route_by_each_condition_in_priority_order() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 10, 1), "a").await;
    let b = Backend::start(Ipv4Addr::new(127, 0, 10, 2), "b").await;
    let groups = vec![group(A, vec![a.target()]), group(B, vec![b.target()])];
    let to_b = |conditions| rule(10, conditions, forward(B));
    let cases: Vec<(RuleCondition, &str, Headers, &str, Headers)> = vec![
        (RuleCondition::PathPattern { values: vec!["/api/*".into()] }, "/api/users", vec![], "/web/api", vec![]),
        (
            RuleCondition::HostHeader { values: vec!["*.B.example.com".into()] },
            "/",
            vec![("host", "www.b.example.com:8080")],
            "/",
            vec![("host", "www.a.example.com")],
        ),
        (
            RuleCondition::HttpHeader { name: "X-Canary".into(), values: vec!["y?s".into()] },
            "/",
            vec![("x-canary", "YES")],
            "/",
            vec![("x-canary", "no")],
        ),
        (
            RuleCondition::QueryString { values: vec![QueryMatch { key: Some("v".into()), value: "2".into() }] },
            "/?v=2",
            vec![],
            "/?v=1",
            vec![],
        ),
        (RuleCondition::SourceIp { values: vec!["127.0.0.0/8".parse().unwrap()] }, "/", vec![], "", vec![]),
    ];
    for (i, (condition, hit, hit_headers, miss, miss_headers)) in cases.into_iter().enumerate() {
        let lb_ip = Ipv4Addr::new(127, 0, 11, i as u8 + 1);
        let (_plane, addr) = alb(lb_ip, groups.clone(), vec![to_b(vec![condition.clone()])]).await;
        let answer = get(addr, hit, &hit_headers).await;
        assert_eq!((answer.status, answer.backend()), (200, "b"), "{condition:?} should match {hit}");
        if !miss.is_empty() {
            let answer = get(addr, miss, &miss_headers).await;
            assert_eq!(answer.backend(), "a", "{condition:?} should not match {miss}");
        }
    }

    // Methods, and priority: the lower number wins when both match.
    let lb_ip = Ipv4Addr::new(127, 0, 11, 20);
    let fixed = |body: &str| ActionSpec::FixedResponse { status: 418, content_type: None, body: Some(body.into()) };
    let rules = vec![
        rule(1, vec![RuleCondition::HttpRequestMethod { values: vec!["DELETE".into()] }], fixed("first")),
        rule(2, vec![RuleCondition::PathPattern { values: vec!["*".into()] }], forward(B)),
    ];
    let (_plane, addr) = alb(lb_ip, groups, rules).await;
    let delete = http::Request::delete("/x").header("host", "h").body(Default::default()).unwrap();
    let answer = Client::connect(addr).await.send(delete).await;
    assert_eq!((answer.status, answer.body.as_str()), (418, "first"));
    assert_eq!(get(addr, "/x", &[]).await.backend(), "b");
}

#[tokio::test]
async fn redirect_and_fixed_response() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 12, 1), "a").await;
    let redirect = ActionSpec::Redirect(RedirectSpec {
        protocol: "HTTPS".into(),
        host: "#{host}".into(),
        port: "443".into(),
        path: "/v2/#{path}".into(),
        query: "#{query}".into(),
        status: 301,
    });
    let fixed = ActionSpec::FixedResponse {
        status: 503,
        content_type: Some("application/json".into()),
        body: Some("{\"down\":true}".into()),
    };
    let rules = vec![
        rule(1, vec![RuleCondition::PathPattern { values: vec!["/old/*".into()] }], redirect),
        rule(2, vec![RuleCondition::PathPattern { values: vec!["/maintenance".into()] }], fixed),
    ];
    let (_plane, addr) = alb(Ipv4Addr::new(127, 0, 12, 10), vec![group(A, vec![a.target()])], rules).await;
    let answer = get(addr, "/old/page?x=1", &[]).await;
    assert_eq!(answer.status, 301);
    assert_eq!(answer.headers["location"], "https://app.example.com:443/v2/old/page?x=1");
    let answer = get(addr, "/maintenance", &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (503, "{\"down\":true}"));
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn forwarded_headers_and_keep_alive_on_both_sides() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 13, 1), "a").await;
    // No health checks: their connections would count too.
    let mut unchecked = group(A, vec![a.target()]);
    unchecked.health_check.enabled = false;
    let (_plane, addr) = alb(Ipv4Addr::new(127, 0, 13, 10), vec![unchecked], vec![]).await;
    let mut client = Client::connect(addr).await;
    let answer = client.get("/", &[("x-forwarded-for", "203.0.113.7")]).await;
    let body = answer.body;
    assert!(body.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    assert!(body.contains(&format!("x-forwarded-port: {}\n", addr.port())), "{body}");
    assert!(body.contains("host: app.example.com\n"), "{body}");
    let trace = body.lines().find_map(|l| l.strip_prefix("x-amzn-trace-id: Root=1-")).expect("a trace id");
    let (time, id) = trace.split_once('-').unwrap();
    assert!(time.len() == 8 && id.len() == 24 && trace.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    for _ in 0..20 {
        assert_eq!(client.get("/", &[]).await.status, 200);
    }
    // 21 requests on one client connection, carried on one connection to the target.
    assert_eq!(a.requests.load(Ordering::SeqCst), 21);
    assert_eq!(a.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn upgrade_passes_bytes_both_ways() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 14, 1), "a").await;
    let (_plane, addr) = alb(Ipv4Addr::new(127, 0, 14, 10), vec![group(A, vec![a.target()])], vec![]).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    for message in [&b"hello"[..], b"and again"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn weights_split_requests_and_group_stickiness_holds() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 15, 1), "a").await;
    let b = Backend::start(Ipv4Addr::new(127, 0, 15, 2), "b").await;
    let weighted = |stickiness_s| ActionSpec::Forward {
        target_groups: vec![WeightedGroup { arn: A.into(), weight: 3 }, WeightedGroup { arn: B.into(), weight: 1 }],
        stickiness_s,
    };
    let groups = vec![group(A, vec![a.target()]), group(B, vec![b.target()])];
    let rules = vec![
        rule(1, vec![RuleCondition::PathPattern { values: vec!["/w".into()] }], weighted(None)),
        rule(2, vec![RuleCondition::PathPattern { values: vec!["/sticky".into()] }], weighted(Some(60))),
    ];
    let (_plane, addr) = alb(Ipv4Addr::new(127, 0, 15, 10), groups, rules).await;
    let mut client = Client::connect(addr).await;
    let mut counts = HashMap::new();
    for _ in 0..400 {
        *counts.entry(client.get("/w", &[]).await.backend().to_string()).or_insert(0) += 1;
    }
    let a_share = counts["a"] as f64 / 400.0;
    assert!((0.65..0.85).contains(&a_share), "3:1 weights gave {counts:?}");

    let first = client.get("/sticky", &[]).await;
    let cookie = first.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("AWSALBTG="), "{cookie}");
    for _ in 0..30 {
        assert_eq!(client.get("/sticky", &[("cookie", &cookie)]).await.backend(), first.backend());
    }
}

#[tokio::test]
async fn target_stickiness_round_robin_and_no_targets() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 16, 1), "a").await;
    let b = Backend::start(Ipv4Addr::new(127, 0, 16, 2), "b").await;
    let mut sticky = group(A, vec![a.target(), b.target()]);
    sticky.stickiness_s = Some(120);
    let empty = group(B, vec![]);
    let rules = vec![rule(1, vec![RuleCondition::PathPattern { values: vec!["/none".into()] }], forward(B))];
    let (_plane, addr) = alb(Ipv4Addr::new(127, 0, 16, 10), vec![sticky, empty], rules).await;
    let mut client = Client::connect(addr).await;
    let seen: Vec<String> = {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(client.get("/", &[]).await.backend().to_string());
        }
        seen
    };
    assert!(seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()), "round robin: {seen:?}");
    let first = client.get("/", &[]).await;
    let cookie = first.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("AWSALB=") && cookie.contains("Max-Age=120"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap();
    for _ in 0..10 {
        assert_eq!(client.get("/", &[("cookie", cookie)]).await.backend(), first.backend());
    }
    // A cookie naming no target is ignored.
    assert_eq!(client.get("/", &[("cookie", "AWSALB=0000")]).await.status, 200);

    let answer = client.get("/none", &[]).await;
    assert_eq!(answer.status, 503);
    assert!(answer.body.contains("503 Service Temporarily Unavailable"), "{}", answer.body);
}

#[tokio::test]
async fn connect_failure_is_502_and_slow_target_504() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 17, 1), "a").await;
    let closed = Ipv4Addr::new(127, 0, 17, 2);
    let dead = TargetSpec { ip: closed, port: free_port(closed), draining: false, healthy: Some(true) };
    let lb_ip = Ipv4Addr::new(127, 0, 17, 10);
    let port = free_port(lb_ip);
    let http = listener(port, ListenerProtocol::Http, forward(A));
    let mut lb = load_balancer(LbKind::Application, lb_ip, vec![http]);
    lb.idle_timeout_s = 1;
    let (plane, _reports) = plane();
    let snapshot = LbSnapshot { load_balancers: vec![lb.clone()], target_groups: vec![group(A, vec![dead])] };
    assert_eq!(plane.apply(&snapshot).await, vec![]);
    let addr = SocketAddr::from((lb_ip, port));
    assert_eq!(get(addr, "/", &[]).await.status, 502);

    let snapshot = LbSnapshot { load_balancers: vec![lb], target_groups: vec![group(A, vec![a.target()])] };
    assert_eq!(plane.apply(&snapshot).await, vec![]);
    let answer = get(addr, "/slow?ms=3000", &[]).await;
    assert_eq!(answer.status, 504);
    assert!(answer.body.contains("504 Gateway Time-out"));
}
