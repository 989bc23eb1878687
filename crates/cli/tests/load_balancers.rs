//! Load balancers end to end, as issue 11 checks them: a service of busybox `httpd` tasks behind
//! an application load balancer rolls to a new revision under a client that counts every
//! response (not one may fail), a task whose health path starts failing leaves rotation and is
//! replaced, rules route by path and host, an HTTPS listener serves an imported certificate to
//! `curl --cacert` (HTTP/1.1 and HTTP/2), and a network load balancer passes raw TCP to two
//! targets. Everything is made through the real AWS CLI; the load balancer is reached on the
//! host's load-balancer address (the API's, 127.0.0.1). Privileged, like the other container
//! tests.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ecs::{SETTLE, default_vpc, live_tasks, steady, wait_service};
use common::elb::{import_certificate, self_signed, two_subnets, vpc_group};
use common::fixture::Fixture;
use common::http::get;
use common::{Server, free_port, private_ip, wait_for};
use serde_json::json;

/// The health-check cadence of every target group here: ELB's shortest interval, its smallest
/// thresholds.
const INTERVAL_S: u64 = 5;
const UNHEALTHY_THRESHOLD: u64 = 2;

/// A web task: `index.html` says `<version> <a token unique to the task>`, `/health` answers
/// while the file exists, and `GET /cgi-bin/sick` deletes it (answering the task's page), so a
/// test can make one chosen task fail its health checks from outside.
fn web_script(version: &str) -> String {
    format!(
        r#"mkdir -p /www/cgi-bin /www/api
echo "{version} $(cat /proc/sys/kernel/random/uuid)" > /www/index.html
echo "api {version}" > /www/api/index.html
echo ok > /www/health
cat > /www/cgi-bin/sick <<'EOF'
#!/bin/sh
rm -f /www/health
printf 'Content-Type: text/plain\r\n\r\n'
cat /www/index.html
EOF
chmod +x /www/cgi-bin/sick
exec httpd -f -p 80 -h /www"#
    )
}

fn web_task_definition(f: &Fixture, family: &str, version: &str) -> String {
    let mut container = f.container("web", &["sh", "-c", &web_script(version)]);
    container["portMappings"] = json!([{"containerPort": 80, "protocol": "tcp"}]);
    f.register(family, json!([container]), json!({}))
}

/// An internet-facing load balancer of `kind` over the first two default subnets.
fn load_balancer(server: &Server, name: &str, kind: &str, group: Option<&str>) -> String {
    let subnets = two_subnets(server);
    let mut args = vec!["elbv2", "create-load-balancer", "--name", name, "--type", kind, "--subnets"];
    args.extend(subnets.iter().map(String::as_str));
    if let Some(group) = group {
        args.extend(["--security-groups", group]);
    }
    let out = server.aws_json(&args);
    let lb = &out["LoadBalancers"][0];
    assert_eq!(lb["Scheme"], "internet-facing", "{out:#}");
    lb["LoadBalancerArn"].as_str().unwrap().to_owned()
}

/// An `ip` target group with a quick health check on `path` (HTTP) or a connect (TCP), and a
/// short deregistration delay.
fn target_group(server: &Server, name: &str, protocol: &str, port: u16, health: &[&str]) -> String {
    let vpc = default_vpc(server);
    let port = port.to_string();
    let interval = INTERVAL_S.to_string();
    let unhealthy = UNHEALTHY_THRESHOLD.to_string();
    let mut args = vec![
        "elbv2",
        "create-target-group",
        "--name",
        name,
        "--protocol",
        protocol,
        "--port",
        &port,
        "--vpc-id",
        &vpc,
        "--target-type",
        "ip",
        "--health-check-interval-seconds",
        &interval,
        "--health-check-timeout-seconds",
        "2",
        "--healthy-threshold-count",
        "2",
        "--unhealthy-threshold-count",
        &unhealthy,
    ];
    args.extend_from_slice(health);
    let out = server.aws_json(&args);
    let arn = out["TargetGroups"][0]["TargetGroupArn"].as_str().unwrap().to_owned();
    server.aws_json(&[
        "elbv2",
        "modify-target-group-attributes",
        "--target-group-arn",
        &arn,
        "--attributes",
        "Key=deregistration_delay.timeout_seconds,Value=5",
    ]);
    arn
}

fn listener(server: &Server, lb: &str, protocol: &str, port: u16, target_group: &str, more: &[&str]) -> String {
    let port = port.to_string();
    let action = format!("Type=forward,TargetGroupArn={target_group}");
    let mut args = vec!["elbv2", "create-listener", "--load-balancer-arn", lb, "--protocol", protocol, "--port", &port];
    args.extend_from_slice(more);
    args.extend(["--default-actions", &action]);
    let out = server.aws_json(&args);
    out["Listeners"][0]["ListenerArn"].as_str().unwrap().to_owned()
}

/// Target health as `(address, state)`, sorted.
fn target_states(server: &Server, target_group: &str) -> Vec<(String, String)> {
    let out = server.aws_json(&["elbv2", "describe-target-health", "--target-group-arn", target_group]);
    let mut states: Vec<(String, String)> = out["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (d["Target"]["Id"].as_str().unwrap().to_owned(), d["TargetHealth"]["State"].as_str().unwrap().to_owned())
        })
        .collect();
    states.sort();
    states
}

fn healthy_targets(server: &Server, target_group: &str) -> BTreeSet<String> {
    target_states(server, target_group).into_iter().filter(|(_, s)| s == "healthy").map(|(ip, _)| ip).collect()
}

/// What a client hammering the listener saw.
#[derive(Default)]
struct Tally {
    ok: usize,
    /// Anything but a 200: the status, or the I/O error.
    failures: Vec<String>,
    /// The page of each 200, in order, with when it came.
    pages: Vec<(Instant, String)>,
}

/// Requests `GET /` on `to` back to back until `stop`.
fn hammer(to: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let result = get(to, "web.example.com", "/", &[]);
            let mut t = tally.lock().unwrap();
            match result {
                Ok(r) if r.status == 200 => {
                    t.ok += 1;
                    t.pages.push((Instant::now(), r.body.trim().to_owned()));
                }
                Ok(r) => t.failures.push(format!("HTTP {}: {}", r.status, r.body.trim())),
                Err(e) => t.failures.push(format!("error: {e}")),
            }
        }
    })
}

fn service_network(server: &Server, group: &str) -> String {
    let subnets = two_subnets(server);
    format!("awsvpcConfiguration={{subnets=[{}],securityGroups=[{group}],assignPublicIp=DISABLED}}", subnets.join(","))
}

#[test]
fn service_behind_an_alb_rolls_without_one_failed_request_and_replaces_what_fails_elb_checks() {
    let f = Fixture::new();
    let s = &f.server;
    let group = vpc_group(s, "web", &[80]);
    let lb = load_balancer(s, "web", "application", Some(&group));
    let tg = target_group(s, "web", "HTTP", 80, &["--health-check-path", "/health"]);
    let port = free_port();
    listener(s, &lb, "HTTP", port, &tg, &[]);
    let front: SocketAddr = ([127, 0, 0, 1], port).into();

    // ECS refuses what cannot work: a container port the task definition lacks.
    let v1 = web_task_definition(&f, "web", "v1");
    let network = service_network(s, &group);
    let bad = format!("targetGroupArn={tg},containerName=web,containerPort=8080");
    let err = s.aws_err(&[
        "ecs",
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        &v1,
        "--desired-count",
        "2",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
        "--load-balancers",
        &bad,
    ]);
    assert!(err.contains("InvalidParameterException") && err.contains("8080"), "{err}");

    let lbs = format!("targetGroupArn={tg},containerName=web,containerPort=80");
    s.aws_json(&[
        "ecs",
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        &v1,
        "--desired-count",
        "2",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
        "--load-balancers",
        &lbs,
    ]);
    // The deployment completes only once both targets are healthy in the group.
    wait_service(s, "web", "2 tasks healthy behind the load balancer", SETTLE, |svc| steady(svc, 2));
    let tasks = live_tasks(s, "web");
    let addresses: BTreeSet<String> = tasks.iter().map(|t| private_ip(t).to_string()).collect();
    assert_eq!(healthy_targets(s, &tg), addresses, "both tasks are registered and healthy");
    let first = get(front, "web.example.com", "/", &[]).expect("the listener answers");
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.body.starts_with("v1 "), "{first:?}");

    // Roll to v2 under load: every request answered 200.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let client = hammer(front, stop.clone(), tally.clone());
    let v2 = web_task_definition(&f, "web", "v2");
    s.aws_json(&["ecs", "update-service", "--service", "web", "--task-definition", &v2]);
    let rolled = wait_service(s, "web", "the v2 deployment to complete", SETTLE, |svc| {
        steady(svc, 2) && svc["deployments"][0]["taskDefinition"] == v2.as_str()
    });
    let done = Instant::now();
    wait_for("only v2 pages", Duration::from_secs(30), || {
        let t = tally.lock().unwrap();
        let recent: Vec<_> = t.pages.iter().filter(|(at, _)| *at > done).collect();
        recent.len() >= 20 && recent.iter().rev().take(20).all(|(_, p)| p.starts_with("v2 "))
    });
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let t = tally.lock().unwrap();
    assert!(
        t.failures.is_empty(),
        "{} of {} requests failed during the rollout: {:?}",
        t.failures.len(),
        t.ok + t.failures.len(),
        &t.failures[..t.failures.len().min(10)]
    );
    assert!(t.pages.iter().any(|(_, p)| p.starts_with("v1 ")), "the client saw v1 before the switch");
    assert!(
        t.pages.iter().filter(|(at, _)| *at > done).all(|(_, p)| p.starts_with("v2 ")),
        "after the deployment completed only v2 answers"
    );
    assert!(t.ok > 50, "the client kept requesting throughout: {} answers", t.ok);
    drop(t);
    let new_addresses: BTreeSet<String> = live_tasks(s, "web").iter().map(|t| private_ip(t).to_string()).collect();
    assert_eq!(healthy_targets(s, &tg), new_addresses, "the new tasks are the healthy targets: {rolled:#}");
    assert!(new_addresses.is_disjoint(&addresses), "the old tasks left the group");

    // Make one task fail its health path: it stops receiving requests within interval x
    // unhealthy threshold, and the scheduler replaces it.
    let sick = get(front, "web.example.com", "/cgi-bin/sick", &[]).expect("the sick page answers");
    let sick_page = sick.body.trim().to_owned();
    assert!(sick_page.starts_with("v2 "), "{sick:?}");
    let sick_at = Instant::now();
    let bound = Duration::from_secs(INTERVAL_S * UNHEALTHY_THRESHOLD);
    let mut last_seen = sick_at;
    wait_for("the sick task out of rotation", bound + Duration::from_secs(20), || {
        let r = get(front, "web.example.com", "/", &[]).expect("the listener answers");
        assert_eq!(r.status, 200, "the healthy task keeps serving: {r:?}");
        if r.body.trim() == sick_page {
            last_seen = Instant::now();
        }
        last_seen.elapsed() > Duration::from_secs(3)
    });
    let out_after = last_seen - sick_at;
    assert!(
        out_after <= bound + Duration::from_secs(4),
        "the sick task got requests for {out_after:?}, more than {bound:?} and a margin"
    );
    let replaced = wait_service(s, "web", "the sick task replaced", SETTLE, |svc| {
        let events = svc["events"].to_string();
        steady(svc, 2) && events.contains("failed ELB health checks in (target-group")
    });
    let stopped = s.aws_json(&["ecs", "list-tasks", "--service-name", "web", "--desired-status", "STOPPED"]);
    let stopped: Vec<&str> = stopped["taskArns"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let mut args = vec!["ecs", "describe-tasks", "--tasks"];
    args.extend(&stopped);
    let described = s.aws_json(&args);
    let reason = format!("Task failed ELB health checks in (target-group {tg})");
    assert!(
        described["tasks"].as_array().unwrap().iter().any(|t| t["stoppedReason"] == reason.as_str()),
        "a task stopped with ECS's reason {reason:?}: {described:#} {replaced:#}"
    );
    wait_for("two healthy targets again", SETTLE, || healthy_targets(s, &tg).len() == 2);

    s.aws_json(&["ecs", "delete-service", "--service", "web", "--force"]);
    s.aws_json(&["elbv2", "delete-load-balancer", "--load-balancer-arn", &lb]);
    wait_for("the listener closed", Duration::from_secs(10), || TcpStream::connect(front).is_err());
}

/// Runs a standalone web task in `subnet` and waits until it serves; its address.
fn run_web(f: &Fixture, td: &str, group: &str) -> String {
    let network =
        format!("awsvpcConfiguration={{subnets=[{}],securityGroups=[{group}],assignPublicIp=DISABLED}}", f.subnet);
    let task = f.run_in(td, &network, &[]);
    private_ip(&f.wait_status(&task, "RUNNING", SETTLE)).to_string()
}

fn register(server: &Server, target_group: &str, ip: &str) {
    let target = format!("Id={ip}");
    server.aws_json(&["elbv2", "register-targets", "--target-group-arn", target_group, "--targets", &target]);
}

#[test]
fn rules_route_by_path_and_host_and_https_serves_an_imported_certificate() {
    let f = Fixture::new();
    let s = &f.server;
    let group = vpc_group(s, "web", &[80]);
    let (web, api, admin) = (
        web_task_definition(&f, "web", "web"),
        web_task_definition(&f, "api", "api"),
        web_task_definition(&f, "admin", "admin"),
    );
    let (web_ip, api_ip, admin_ip) =
        (run_web(&f, &web, &group), run_web(&f, &api, &group), run_web(&f, &admin, &group));
    let health = ["--health-check-path", "/health"];
    let (web_tg, api_tg, admin_tg) = (
        target_group(s, "web", "HTTP", 80, &health),
        target_group(s, "api", "HTTP", 80, &health),
        target_group(s, "admin", "HTTP", 80, &health),
    );
    register(s, &web_tg, &web_ip);
    register(s, &api_tg, &api_ip);
    register(s, &admin_tg, &admin_ip);
    let lb = load_balancer(s, "front", "application", Some(&group));
    let port = free_port();
    let http = listener(s, &lb, "HTTP", port, &web_tg, &[]);
    let rule = |priority: &str, condition: &str, tg: &str| {
        let action = format!("Type=forward,TargetGroupArn={tg}");
        s.aws(&[
            "elbv2",
            "create-rule",
            "--listener-arn",
            &http,
            "--priority",
            priority,
            "--conditions",
            condition,
            "--actions",
            &action,
        ])
    };
    assert!(rule("10", "Field=path-pattern,Values=/api/*", &api_tg).status.success());
    assert!(rule("20", "Field=host-header,Values=admin.example.com", &admin_tg).status.success());
    let duplicate = rule("20", "Field=path-pattern,Values=/x/*", &api_tg);
    let err = String::from_utf8_lossy(&duplicate.stderr);
    assert!(err.contains("PriorityInUse"), "a second rule at priority 20 is refused: {err}");

    for tg in [&web_tg, &api_tg, &admin_tg] {
        wait_for("the target healthy", SETTLE, || healthy_targets(s, tg).len() == 1);
    }
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let page = |host: &str, path: &str| {
        let r = get(front, host, path, &[]).expect("the listener answers");
        assert_eq!(r.status, 200, "{host}{path}: {r:?}");
        r.body
    };
    assert!(page("www.example.com", "/").starts_with("web "));
    assert!(page("www.example.com", "/api/").starts_with("api api"), "path-pattern /api/* goes to the api group");
    assert!(page("admin.example.com", "/").starts_with("admin "), "host-header goes to the admin group");
    assert!(page("ADMIN.example.com", "/").starts_with("admin "), "host names compare without case");

    // HTTPS with a certificate imported into ACM; a malformed one is refused.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "app.example.com");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").unwrap();
    let err = s.aws_err(&[
        "acm",
        "import-certificate",
        "--certificate",
        &format!("fileb://{}", garbage.display()),
        "--private-key",
        &format!("fileb://{}", key.display()),
    ]);
    assert!(err.contains("ValidationException"), "{err}");
    let cert_arn = &import_certificate(s, &cert, &key);
    let tls_port = free_port();
    let certificates = format!("CertificateArn={cert_arn}");
    listener(s, &lb, "HTTPS", tls_port, &web_tg, &["--certificates", &certificates]);
    // A new listener is served once the agent has the load balancer's new snapshot.
    wait_for("the HTTPS listener served", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });
    for version in ["--http1.1", "--http2"] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", version, "-w", "\n%{http_version}", "--cacert"])
            .arg(&cert)
            .args(["--resolve", &format!("app.example.com:{tls_port}:127.0.0.1")])
            .arg(format!("https://app.example.com:{tls_port}/"))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl {version}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.starts_with("web "), "{text}");
        let expected = if version == "--http2" { "2" } else { "1.1" };
        assert_eq!(text.lines().last(), Some(expected), "{text}");
    }
    let err = s.aws_err(&["acm", "delete-certificate", "--certificate-arn", cert_arn]);
    assert!(err.contains("ResourceInUseException"), "a certificate a listener serves stays: {err}");
    let tasks: Vec<String> = live_tasks_all(s);
    f.stop_all(&tasks.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Every live task of the default cluster.
fn live_tasks_all(server: &Server) -> Vec<String> {
    let listed = server.aws_json(&["ecs", "list-tasks"]);
    listed["taskArns"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_network_load_balancer_passes_raw_tcp_to_two_targets() {
    let f = Fixture::new();
    let s = &f.server;
    let group = vpc_group(s, "echo", &[7000, 8080]);
    // Each target greets with its name, then echoes; httpd on 8080 answers the health check
    // so that checks never take the echo server's one connection.
    let echo = |name: &str| {
        let script = format!(
            "printf '#!/bin/sh\\necho {name}\\nexec cat\\n' > /echo.sh && chmod +x /echo.sh && mkdir -p /www && echo ok > /www/index.html && httpd -p 8080 -h /www && while true; do nc -l -p 7000 -e /echo.sh; done"
        );
        let mut container = f.container("echo", &["sh", "-c", &script]);
        container["portMappings"] = json!([{"containerPort": 7000}, {"containerPort": 8080}]);
        f.register(name, json!([container]), json!({}))
    };
    let (a, b) = (echo("alpha"), echo("beta"));
    let (a_ip, b_ip) = (run_web(&f, &a, &group), run_web(&f, &b, &group));
    let tg = target_group(s, "echo", "TCP", 7000, &["--health-check-protocol", "TCP", "--health-check-port", "8080"]);
    register(s, &tg, &a_ip);
    register(s, &tg, &b_ip);
    let lb = load_balancer(s, "echo", "network", None);
    let port = free_port();
    listener(s, &lb, "TCP", port, &tg, &[]);
    wait_for("both targets healthy", SETTLE, || healthy_targets(s, &tg).len() == 2);

    let mut seen = BTreeSet::new();
    let started = Instant::now();
    while seen.len() < 2 && started.elapsed() < Duration::from_secs(60) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { continue };
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut greeting = String::new();
        if reader.read_line(&mut greeting).is_err() || greeting.is_empty() {
            continue; // the target's nc was between two connections
        }
        stream.write_all(b"hello through the nlb\n").unwrap();
        let mut echoed = String::new();
        reader.read_line(&mut echoed).unwrap();
        assert_eq!(echoed, "hello through the nlb\n", "the bytes come back unchanged");
        seen.insert(greeting.trim().to_owned());
    }
    assert_eq!(seen, BTreeSet::from(["alpha".to_owned(), "beta".to_owned()]), "connections reach both targets");
    s.aws_json(&["elbv2", "delete-load-balancer", "--load-balancer-arn", &lb]);
    wait_for("the listener closed", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_err());
    let tasks = live_tasks_all(s);
    f.stop_all(&tasks.iter().map(String::as_str).collect::<Vec<_>>());
}
