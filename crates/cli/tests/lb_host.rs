//! Load balancers on the host (privileged: run as root): an internet-facing application load
//! balancer answers on the host's load-balancer address and reaches targets whose group admits
//! only the load balancer's group; it comes back after a kill -9 and leaves nothing behind
//! (listeners, addresses, rules) once deleted; an internal one is reached from another task by
//! its DNS name through the VPC resolver. Real tasks (busybox `httpd`) from the fixture
//! registry, everything through the AWS CLI.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::ecs::{SETTLE, default_vpc};
use common::elb::{two_subnets, vpc_group};
use common::fixture::Fixture;
use common::http::get;
use common::{Server, free_port, private_ip, wait_for};
use serde_json::json;

/// A task serving `<name> <a token unique to the task>` on port 80.
fn web_definition(f: &Fixture, name: &str) -> String {
    let script = format!(
        "mkdir -p /www && echo \"{name} $(cat /proc/sys/kernel/random/uuid)\" > /www/index.html && exec httpd -f -p 80 -h /www"
    );
    let mut container = f.container("web", &["sh", "-c", &script]);
    container["portMappings"] = json!([{"containerPort": 80, "protocol": "tcp"}]);
    f.register(name, json!([container]), json!({}))
}

/// Admits TCP `port` to `group` from `from` (`--cidr X` or `--source-group Y`).
fn allow(server: &Server, group: &str, port: u16, from: &[&str]) {
    let port = port.to_string();
    let mut args = vec!["ec2", "authorize-security-group-ingress", "--group-id", group, "--protocol", "tcp", "--port"];
    args.push(&port);
    args.extend_from_slice(from);
    server.aws_json(&args);
}

fn run_task(f: &Fixture, td: &str, group: &str) -> (String, String) {
    let network =
        format!("awsvpcConfiguration={{subnets=[{}],securityGroups=[{group}],assignPublicIp=DISABLED}}", f.subnet);
    let task = f.run_in(td, &network, &[]);
    let ip = private_ip(&f.wait_status(&task, "RUNNING", SETTLE)).to_string();
    (task, ip)
}

/// An application load balancer over the first two default subnets; its ARN and DNS name.
fn load_balancer(server: &Server, name: &str, scheme: &str, group: &str) -> (String, String) {
    let subnets = two_subnets(server);
    let mut args = vec!["elbv2", "create-load-balancer", "--name", name, "--scheme", scheme, "--subnets"];
    args.extend(subnets.iter().map(String::as_str));
    args.extend(["--security-groups", group]);
    let out = server.aws_json(&args);
    let lb = &out["LoadBalancers"][0];
    (lb["LoadBalancerArn"].as_str().unwrap().to_owned(), lb["DNSName"].as_str().unwrap().to_owned())
}

/// An HTTP listener on `port` forwarding to a new target group holding `targets`, checked
/// every 5 s.
fn forward_to(server: &Server, lb: &str, name: &str, port: u16, targets: &[&str]) -> String {
    let vpc = default_vpc(server);
    let out = server.aws_json(&[
        "elbv2",
        "create-target-group",
        "--name",
        name,
        "--protocol",
        "HTTP",
        "--port",
        "80",
        "--vpc-id",
        &vpc,
        "--target-type",
        "ip",
        "--health-check-interval-seconds",
        "5",
        "--health-check-timeout-seconds",
        "2",
        "--healthy-threshold-count",
        "2",
    ]);
    let tg = out["TargetGroups"][0]["TargetGroupArn"].as_str().unwrap().to_owned();
    let targets: Vec<String> = targets.iter().map(|ip| format!("Id={ip}")).collect();
    let mut args = vec!["elbv2", "register-targets", "--target-group-arn", &tg, "--targets"];
    args.extend(targets.iter().map(String::as_str));
    server.aws_json(&args);
    let port = port.to_string();
    let action = format!("Type=forward,TargetGroupArn={tg}");
    server.aws_json(&[
        "elbv2",
        "create-listener",
        "--load-balancer-arn",
        lb,
        "--protocol",
        "HTTP",
        "--port",
        &port,
        "--default-actions",
        &action,
    ]);
    tg
}

fn healthy(server: &Server, tg: &str) -> usize {
    let out = server.aws_json(&["elbv2", "describe-target-health", "--target-group-arn", tg]);
    let all = out["TargetHealthDescriptions"].as_array().unwrap();
    all.iter().filter(|d| d["TargetHealth"]["State"] == "healthy").count()
}

/// The private addresses of the load balancer's interfaces (`ELB app/<name>/<id>`).
fn lb_addresses(server: &Server, name: &str) -> BTreeSet<String> {
    let out = server.aws_json(&["ec2", "describe-network-interfaces"]);
    let prefix = format!("ELB app/{name}/");
    let enis = out["NetworkInterfaces"].as_array().unwrap();
    enis.iter()
        .filter(|e| e["Description"].as_str().is_some_and(|d| d.starts_with(&prefix)))
        .map(|e| e["PrivateIpAddress"].as_str().unwrap().to_owned())
        .collect()
}

/// The IPv4 addresses on the server's task-network host side.
fn host_side_addresses(server: &Server) -> String {
    let out = server.netns.exec(&["ip", "-4", "-o", "addr"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// TCP ports listening in the server's task-network namespace.
fn listening_in_netns(server: &Server) -> String {
    let out = server.netns.exec(&["ss", "-Hltn"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft_table(server: &Server) -> String {
    let out = server.netns.exec(&["nft", "list", "ruleset"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pages seen through `front` until both tasks have answered (or the deadline).
fn pages(front: SocketAddr) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let start = std::time::Instant::now();
    while seen.len() < 2 && start.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = get(front, "web.example.com", "/", &[])
            && r.status == 200
        {
            seen.insert(r.body.trim().to_owned());
        }
    }
    seen
}

#[test]
fn an_internet_facing_alb_serves_on_the_host_survives_a_kill_9_and_leaves_nothing_once_deleted() {
    let f = Fixture::new();
    let s = &f.server;
    // The load balancer admits the world on its port; the targets admit only the load
    // balancer's group, so health checks and requests must come from its addresses.
    let port = free_port();
    let lb_group = vpc_group(s, "front", &[]);
    allow(s, &lb_group, port, &["--cidr", "0.0.0.0/0"]);
    let target_group = vpc_group(s, "targets", &[]);
    allow(s, &target_group, 80, &["--source-group", &lb_group]);
    let td = web_definition(&f, "web");
    let (task_a, ip_a) = run_task(&f, &td, &target_group);
    let (task_b, ip_b) = run_task(&f, &td, &target_group);

    let (lb, _) = load_balancer(s, "front", "internet-facing", &lb_group);
    let tg = forward_to(s, &lb, "web", port, &[&ip_a, &ip_b]);
    wait_for("both targets healthy", SETTLE, || healthy(s, &tg) == 2);
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let before = pages(front);
    assert_eq!(before.len(), 2, "both tasks answer through the host address: {before:?}");

    // Its private addresses are on the task network's host side, once each.
    let addresses = lb_addresses(s, "front");
    assert_eq!(addresses.len(), 2, "one per subnet: {addresses:?}");
    let host_side = host_side_addresses(s);
    for ip in &addresses {
        assert_eq!(host_side.matches(&format!(" {ip}/32 ")).count(), 1, "{ip} on the host side:\n{host_side}");
    }

    // kill -9: nothing listens any more; a new server serves again with nothing doubled.
    let data_dir = s.data_dir.clone();
    let Fixture { mut server, subnet, _registry, image, rt } = f;
    server.kill9();
    assert!(TcpStream::connect(front).is_err(), "a killed server's listener is gone with it");
    let f = Fixture { server: Server::start_in(&data_dir), subnet, _registry, image, rt };
    let s = &f.server;
    wait_for("the listener back after the restart", Duration::from_secs(30), || {
        get(front, "web.example.com", "/", &[]).is_ok_and(|r| r.status == 200)
    });
    assert_eq!(pages(front), before, "the same two tasks answer");
    assert_eq!(lb_addresses(s, "front"), addresses, "the restart kept the load balancer's interfaces");
    let host_side = host_side_addresses(s);
    for ip in &addresses {
        assert_eq!(host_side.matches(&format!(" {ip}/32 ")).count(), 1, "{ip} once:\n{host_side}");
    }

    // Deleted: the host port closes, the addresses and their rules go.
    s.aws_json(&["elbv2", "delete-load-balancer", "--load-balancer-arn", &lb]);
    wait_for("the listener closed", Duration::from_secs(10), || TcpStream::connect(front).is_err());
    wait_for("the addresses gone", Duration::from_secs(10), || {
        let host_side = host_side_addresses(s);
        addresses.iter().all(|ip| !host_side.contains(&format!(" {ip}/32 ")))
    });
    let listening = listening_in_netns(s);
    assert!(!listening.contains(&format!(":{port} ")), "nothing listens in the task network:\n{listening}");
    let ruleset = nft_table(s);
    for ip in &addresses {
        assert!(!ruleset.contains(ip.as_str()), "no rule names {ip}:\n{ruleset}");
    }
    assert!(lb_addresses(s, "front").is_empty(), "the interfaces were released");
    f.stop_all(&[&task_a, &task_b]);
    drop(server);
}

#[test]
fn an_internal_load_balancer_is_reached_from_a_task_by_its_dns_name() {
    let f = Fixture::new();
    let s = &f.server;
    let lb_group = vpc_group(s, "internal", &[80]);
    let target_group = vpc_group(s, "targets", &[]);
    allow(s, &target_group, 80, &["--source-group", &lb_group]);
    let td = web_definition(&f, "web");
    let (web, ip) = run_task(&f, &td, &target_group);
    let (lb, dns_name) = load_balancer(s, "inside", "internal", &lb_group);
    assert!(dns_name.starts_with("internal-inside-"), "{dns_name}");
    let tg = forward_to(s, &lb, "inside", 80, &[&ip]);
    wait_for("the target healthy", SETTLE, || healthy(s, &tg) == 1);

    // A client task in the VPC's default group: the name resolves to the load balancer's
    // addresses, and the page comes through it. (Debian's busybox wget crashes with -T;
    // `timeout` bounds it instead.)
    let script = format!(
        "while true; do echo \"dns:$(nslookup {dns_name} | awk '/^Name:/{{n=1}} n && /^Address/{{print $NF}}' | sort | tr '\\n' ' ')\"; echo \"page:$(timeout 3 wget -q -O - http://{dns_name}/)\"; sleep 0.5; done"
    );
    let client_td = f.register("client", json!([f.container("client", &["sh", "-c", &script])]), json!({}));
    let client = f.run_in(&client_td, &f.network(), &[]);
    f.wait_status(&client, "RUNNING", SETTLE);
    let addresses = lb_addresses(s, "inside");
    let expected = format!("dns:{} ", addresses.iter().cloned().collect::<Vec<_>>().join(" "));
    f.wait_log(&client, "client", &expected);
    let lines = f.wait_log(&client, "client", "page:web ");
    assert!(lines.iter().any(|l| l.starts_with("page:web ")), "{lines:?}");
    let listening = listening_in_netns(s);
    for ip in &addresses {
        assert!(listening.contains(&format!("{ip}:80 ")), "listening on {ip} in the task network:\n{listening}");
    }

    s.aws_json(&["elbv2", "delete-load-balancer", "--load-balancer-arn", &lb]);
    wait_for("the addresses gone", Duration::from_secs(10), || {
        let host_side = host_side_addresses(s);
        addresses.iter().all(|ip| !host_side.contains(&format!(" {ip}/32 ")))
    });
    f.stop_all(&[&web, &client]);
}
