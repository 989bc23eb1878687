//! Load balancers and public addresses between hosts (issue 12, point 4) on the real local
//! cluster of `scripts/dev-cluster.sh` (agents host-a/b/c in namespaces of their own on an
//! underlay bridge), driven through the AWS CLI:
//! - an internet-facing application load balancer, served by every host on its underlay
//!   address, in front of a service with one task per host: every host's listener reaches
//!   every task; the targets admit only the load balancer's group, and revoking that rule
//!   shuts the load balancer out; a stopped task drains and traffic goes to the others only,
//!   and so it does when a host dies;
//! - an internal network load balancer, reached by its DNS name from a task on every host,
//!   reaches every target; so do the targets' Cloud Map name and the VPC resolver on every host;
//! - a task's public address answers from outside, on whichever host the task runs.
//!
//! Privileged (root); uses the machine's fixed dev-cluster names, so one runs at a time.

mod cluster_support;
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};

use cluster_support::*;
use common::http::{Response, get};
use common::wait_for;
use serde_json::Value;

/// The hosts' underlay addresses, where internet-facing listeners listen (dev-cluster.sh).
const HOST_ADDRESSES: [&str; 3] = ["10.77.0.11", "10.77.0.12", "10.77.0.13"];
const ALB_PORT: u16 = 80;
const NLB_PORT: u16 = 9090;

/// A web server on PORT whose page is its task's metadata (so a response names its task).
fn web_command() -> Vec<String> {
    let script = format!(
        "mkdir -p /www && until wget -q -O /www/index.html \"$ECS_CONTAINER_METADATA_URI_V4/task\"; do sleep 0.2; done; \
         exec httpd -f -p {PORT} -h /www"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// A task that fetches each `(label, url)` every 300 ms and logs `<label>:<task id>` (the task
/// that answered) or `<label>:failed`, and logs `resolved:<address>` for each address `name`
/// resolves to.
fn prober_command(urls: &[(&str, String)], name: &str) -> Vec<String> {
    let mut script = format!(
        "while true; do for a in $(nslookup {name} 2>/dev/null | grep -o '[0-9]*\\.[0-9]*\\.[0-9]*\\.[0-9]*'); do \
         echo \"resolved:$a\"; done; "
    );
    for (label, url) in urls {
        script.push_str(&format!(
            "b=$(timeout 3 wget -q -O - {url} 2>/dev/null); id=$(echo \"$b\" | grep -o 'task/[^\"]*' | head -n 1); \
             if [ -n \"$id\" ]; then echo \"{label}:${{id##*/}}\"; else echo {label}:failed; fi; "
        ));
    }
    script.push_str("sleep 0.3; done");
    vec!["sh".into(), "-c".into(), script]
}

/// Creates the private DNS namespace `name` in `vpc`; its id.
fn dns_namespace(c: &Cluster, name: &str, vpc: &str) -> String {
    let op = c.json(&["servicediscovery", "create-private-dns-namespace", "--name", name, "--vpc", vpc]);
    let op_id = op["OperationId"].as_str().unwrap().to_owned();
    let mut namespace = String::new();
    wait_for("the namespace created", START, || {
        let op = c.json(&["servicediscovery", "get-operation", "--operation-id", &op_id]);
        namespace = op["Operation"]["Targets"]["NAMESPACE"].as_str().unwrap_or_default().to_owned();
        op["Operation"]["Status"] == "SUCCESS"
    });
    namespace
}

fn elb(c: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["elbv2"];
    all.extend_from_slice(args);
    c.json(&all)
}

fn allow(c: &Cluster, group: &str, port: u16, source: &[&str]) {
    let port = port.to_string();
    let mut args = vec!["ec2", "authorize-security-group-ingress", "--group-id", group, "--protocol", "tcp"];
    args.extend(["--port", &port]);
    args.extend_from_slice(source);
    c.json(&args);
}

/// The id of the task a response came from (its page is the task's metadata, whose
/// `TaskARN` ends in the id).
fn responder(response: &Response) -> Option<String> {
    let arn = response.body.split("\"TaskARN\":\"").nth(1)?.split('"').next()?;
    Some(id_of(arn).to_owned())
}

/// `n` requests to `addr`: responder task id (or the failure) -> count.
fn spread(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let key = match get(addr, "web", "/", &[]) {
            Ok(r) if r.status == 200 => responder(&r).unwrap_or_else(|| format!("unknown: {}", r.body)),
            Ok(r) => format!("status {}", r.status),
            Err(e) => format!("error: {e}"),
        };
        *seen.entry(key).or_default() += 1;
    }
    seen
}

fn listener(host: &str, port: u16) -> SocketAddr {
    SocketAddr::new(host.parse().unwrap(), port)
}

fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks.iter().map(|t| id_of(t["taskArn"].as_str().unwrap()).to_owned()).collect()
}

fn healthy_targets(c: &Cluster, group: &str) -> BTreeSet<String> {
    let health = elb(c, &["describe-target-health", "--target-group-arn", group]);
    health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["TargetHealth"]["State"] == "healthy")
        .map(|d| d["Target"]["Id"].as_str().unwrap().to_owned())
        .collect()
}

/// A service of one task per zone (so per host) behind `target_group`, all targets healthy.
fn service_behind(
    c: &Cluster,
    name: &str,
    subnets: &HashMap<String, String>,
    group: &str,
    target_group: &str,
) -> Vec<Value> {
    let td = c.register_ports(name, "web", &as_strs(&web_command()), &[PORT]);
    let all: Vec<&str> = ZONES.iter().map(|z| subnets[*z].as_str()).collect();
    let network =
        format!("awsvpcConfiguration={{subnets=[{}],securityGroups=[{group}],assignPublicIp=DISABLED}}", all.join(","));
    let balancer = format!("targetGroupArn={target_group},containerName=web,containerPort={PORT}");
    c.json(&[
        "ecs",
        "create-service",
        "--service-name",
        name,
        "--task-definition",
        &td,
        "--desired-count",
        "3",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
        "--load-balancers",
        &balancer,
    ]);
    let tasks = c.wait_service_running(name, 3, SETTLE);
    assert_eq!(per_zone(&tasks), ZONES.iter().map(|z| ((*z).to_owned(), 1)).collect(), "one task per host");
    let ips: BTreeSet<String> = tasks.iter().map(private_ip).collect();
    wait_for(&format!("{name}'s 3 targets healthy"), SETTLE, || healthy_targets(c, target_group) == ips);
    tasks
}

fn target_group(c: &Cluster, name: &str, protocol: &str, vpc: &str) -> String {
    let port = PORT.to_string();
    let created = elb(
        c,
        &[
            "create-target-group",
            "--name",
            name,
            "--protocol",
            protocol,
            "--port",
            &port,
            "--vpc-id",
            vpc,
            "--target-type",
            "ip",
            "--health-check-interval-seconds",
            "5",
            "--health-check-timeout-seconds",
            "2",
            "--healthy-threshold-count",
            "2",
            "--unhealthy-threshold-count",
            "2",
        ],
    );
    let arn = created["TargetGroups"][0]["TargetGroupArn"].as_str().unwrap().to_owned();
    elb(
        c,
        &[
            "modify-target-group-attributes",
            "--target-group-arn",
            &arn,
            "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=3",
        ],
    );
    arn
}

/// a. An internet-facing ALB: every host's listener reaches the tasks on every host; only the
/// load balancer's group gets in; a stopped task drains out of the rotation.
fn application_load_balancer(c: &Cluster, vpc: &str, subnets: &HashMap<String, String>) {
    let lb_sg = security_group(c, vpc, "alb");
    allow(c, &lb_sg, ALB_PORT, &["--cidr", "0.0.0.0/0"]);
    let web_sg = security_group(c, vpc, "alb-targets");
    allow(c, &web_sg, PORT, &["--source-group", &lb_sg]);
    let all: Vec<&str> = ZONES.iter().map(|z| subnets[*z].as_str()).collect();
    let mut args = vec!["create-load-balancer", "--name", "web", "--type", "application"];
    args.extend(["--scheme", "internet-facing", "--security-groups", &lb_sg, "--subnets"]);
    args.extend(&all);
    let lb = elb(c, &args);
    let lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"].as_str().unwrap().to_owned();
    let tg = target_group(c, "web", "HTTP", vpc);
    let forward = format!("Type=forward,TargetGroupArn={tg}");
    let port = ALB_PORT.to_string();
    let listener_args =
        ["create-listener", "--load-balancer-arn", &lb_arn, "--protocol", "HTTP", "--port", &port, "--default-actions"];
    let mut largs = listener_args.to_vec();
    largs.push(&forward);
    elb(c, &largs);

    let tasks = service_behind(c, "web", subnets, &web_sg, &tg);
    let all_ids = ids(&tasks);
    for host in HOST_ADDRESSES {
        let mut seen = BTreeMap::new();
        // Round robin over three targets: a few rounds see them all.
        wait_for(&format!("every task through {host}'s listener"), START, || {
            seen = spread(listener(host, ALB_PORT), 12);
            seen.keys().cloned().collect::<BTreeSet<_>>() == all_ids
        });
        eprintln!("cluster_lb: through {host}: {seen:?}");
    }

    // The task on host-b stops: it drains, then every request goes to the others.
    let on_b = tasks.iter().find(|t| zone_of(t) == "us-east-1b").unwrap();
    let (b_arn, b_id) = (on_b["taskArn"].as_str().unwrap().to_owned(), id_of(on_b["taskArn"].as_str().unwrap()));
    c.json(&["ecs", "stop-task", "--task", &b_arn]);
    c.wait_status(&b_arn, "STOPPED", START);
    // Every request is answered, by the others (or by a replacement already healthy).
    let answered = |k: &String| k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit());
    for host in HOST_ADDRESSES {
        let seen = spread(listener(host, ALB_PORT), 12);
        assert!(seen.keys().all(|k| answered(k) && k != b_id), "through {host} after host-b's task stopped: {seen:?}");
    }
    // The service replaces it; the replacement joins the rotation.
    let replaced = c.wait_service_running("web", 3, SETTLE);
    let replaced_ids = ids(&replaced);
    let ips: BTreeSet<String> = replaced.iter().map(private_ip).collect();
    wait_for("the replacement healthy", SETTLE, || healthy_targets(c, &tg) == ips);
    wait_for("every task, the replacement too, through host-a's listener", START, || {
        spread(listener(HOST_ADDRESSES[0], ALB_PORT), 12).keys().cloned().collect::<BTreeSet<_>>() == replaced_ids
    });
    // host-b dies: its target fails the other hosts' health checks, and their listeners send
    // every request to the tasks on host-a and host-c. Each host's load balancer checks
    // targets itself (as each ALB node does), so the API may show the first host's verdict
    // while another's checks are still counting their failures: each listener is waited for.
    let on_b = replaced.iter().find(|t| zone_of(t) == "us-east-1b").expect("the replacement is on host-b");
    let (b_ip, b_id) = (private_ip(on_b), id_of(on_b["taskArn"].as_str().unwrap()).to_owned());
    c.script("kill-host", &["host-b"]);
    wait_for("host-b's target out of the healthy ones", SETTLE, || !healthy_targets(c, &tg).contains(&b_ip));
    for host in [HOST_ADDRESSES[0], HOST_ADDRESSES[2]] {
        wait_for(&format!("{host}'s listener to answer every request from host-a and host-c"), SETTLE, || {
            let seen = spread(listener(host, ALB_PORT), 12);
            seen.keys().all(|k| answered(k) && *k != b_id)
        });
    }
    c.script("start-host", &["host-b"]);

    // Groups still apply: without the rule admitting the load balancer's group, its
    // connections to the targets (on this host or another) are dropped. (Last: the service
    // replaces targets that stay unhealthy.)
    c.json(&[
        "ec2",
        "revoke-security-group-ingress",
        "--group-id",
        &web_sg,
        "--protocol",
        "tcp",
        "--port",
        &PORT.to_string(),
        "--source-group",
        &lb_sg,
    ]);
    wait_for("the targets unhealthy once the load balancer's group is not admitted", SETTLE, || {
        healthy_targets(c, &tg).is_empty()
    });
    for host in HOST_ADDRESSES {
        let seen = spread(listener(host, ALB_PORT), 1);
        assert!(!seen.keys().any(answered), "a target answered through {host} without its rule: {seen:?}");
    }
    c.json(&["ecs", "delete-service", "--service", "web", "--force"]);
}

/// b. An internal NLB, reached by its DNS name from a task on every host, reaches every target.
fn network_load_balancer(c: &Cluster, vpc: &str, subnets: &HashMap<String, String>) {
    let web_sg = security_group(c, vpc, "nlb-targets");
    allow(c, &web_sg, PORT, &["--cidr", "172.31.0.0/16"]);
    let all: Vec<&str> = ZONES.iter().map(|z| subnets[*z].as_str()).collect();
    let mut args = vec!["create-load-balancer", "--name", "tcp", "--type", "network", "--scheme", "internal"];
    args.push("--subnets");
    args.extend(&all);
    let lb = elb(c, &args);
    let lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"].as_str().unwrap().to_owned();
    let dns = lb["LoadBalancers"][0]["DNSName"].as_str().unwrap().to_owned();
    let tg = target_group(c, "tcp", "TCP", vpc);
    let forward = format!("Type=forward,TargetGroupArn={tg}");
    let port = NLB_PORT.to_string();
    elb(
        c,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "TCP",
            "--port",
            &port,
            "--default-actions",
            &forward,
        ],
    );
    let tasks = service_behind(c, "tcp", subnets, &web_sg, &tg);
    let all_ids = ids(&tasks);

    // The same tasks by a Cloud Map name, answered by each host's VPC resolver.
    let namespace = dns_namespace(c, "xlb.local", vpc);
    let dns_config = format!("NamespaceId={namespace},DnsRecords=[{{Type=A,TTL=5}}]");
    let service = c.json(&["servicediscovery", "create-service", "--name", "tcp", "--dns-config", &dns_config]);
    let service_id = service["Service"]["Id"].as_str().unwrap().to_owned();
    for task in &tasks {
        let ipv4 = format!("AWS_INSTANCE_IPV4={}", private_ip(task));
        let instance = id_of(task["taskArn"].as_str().unwrap());
        let mut args = vec!["servicediscovery", "register-instance", "--service-id", &service_id];
        args.extend(["--instance-id", instance, "--attributes", &ipv4]);
        c.json(&args);
    }

    let prober_sg = security_group(c, vpc, "nlb-clients");
    let urls =
        [("via-lb", format!("http://{dns}:{NLB_PORT}/")), ("cloud-map", format!("http://tcp.xlb.local:{PORT}/"))];
    let td = c.register("nlb-prober", "prober", &as_strs(&prober_command(&urls, "tcp.xlb.local")));
    let probers: Vec<String> = ZONES.iter().map(|z| c.run(&td, &subnets[*z], &[&prober_sg])).collect();
    for (prober, zone) in probers.iter().zip(ZONES) {
        assert_eq!(zone_of(&c.wait_status(prober, "RUNNING", START)), zone);
    }
    for (prober, zone) in probers.iter().zip(ZONES) {
        let mut seen = BTreeSet::new();
        wait_for(&format!("the prober in {zone} to reach every target through {dns}"), START, || {
            seen =
                c.logs(prober, "prober").iter().filter_map(|l| l.strip_prefix("via-lb:")).map(str::to_owned).collect();
            all_ids.is_subset(&seen)
        });
        eprintln!("cluster_lb: NLB from {zone}: {seen:?}");
        let mut named = BTreeSet::new();
        wait_for(&format!("the prober in {zone} to reach a task by its Cloud Map name"), START, || {
            named = c
                .logs(prober, "prober")
                .iter()
                .filter_map(|l| l.strip_prefix("cloud-map:"))
                .map(str::to_owned)
                .collect();
            named.iter().any(|id| all_ids.contains(id))
        });
        let ips: BTreeSet<String> = tasks.iter().map(private_ip).collect();
        wait_for(&format!("the prober in {zone} to resolve the name to every task"), START, || {
            let resolved: BTreeSet<String> = c
                .logs(prober, "prober")
                .iter()
                .filter_map(|l| l.strip_prefix("resolved:"))
                .map(str::to_owned)
                .collect();
            ips.is_subset(&resolved)
        });
        eprintln!("cluster_lb: Cloud Map from {zone}: reached {named:?}, resolved all of {ips:?}");
    }
    for prober in &probers {
        c.json(&["ecs", "stop-task", "--task", prober]);
    }
    c.json(&["ecs", "delete-service", "--service", "tcp", "--force"]);
}

/// c. A task with a public address on host-c answers on it from outside (this machine, on the
/// underlay bridge), and stops answering once stopped.
fn public_address(c: &Cluster, vpc: &str, subnets: &HashMap<String, String>) {
    let sg = security_group(c, vpc, "public-web");
    allow(c, &sg, PORT, &["--cidr", "0.0.0.0/0"]);
    let td = c.register("public-web", "web", &as_strs(&web_command()));
    let network = format!(
        "awsvpcConfiguration={{subnets=[{}],securityGroups=[{sg}],assignPublicIp=ENABLED}}",
        subnets["us-east-1c"]
    );
    let out = c.json(&[
        "ecs",
        "run-task",
        "--task-definition",
        &td,
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
    ]);
    let arn = out["tasks"][0]["taskArn"].as_str().unwrap().to_owned();
    let task = c.wait_status(&arn, "RUNNING", START);
    assert_eq!(zone_of(&task), "us-east-1c");
    let eni = common::attachment_detail(&task, "networkInterfaceId").unwrap().to_owned();
    let enis = c.json(&["ec2", "describe-network-interfaces", "--network-interface-ids", &eni]);
    let public: Ipv4Addr = enis["NetworkInterfaces"][0]["Association"]["PublicIp"].as_str().unwrap().parse().unwrap();
    let addr = SocketAddr::new(public.into(), PORT);
    wait_for(&format!("{public} to answer from outside"), START, || {
        get(addr, "web", "/", &[]).is_ok_and(|r| r.status == 200 && responder(&r).as_deref() == Some(id_of(&arn)))
    });
    c.json(&["ecs", "stop-task", "--task", &arn]);
    c.wait_status(&arn, "STOPPED", START);
    assert!(get(addr, "web", "/", &[]).is_err(), "{public} still answers after its task stopped");
}

#[test]
fn load_balancers_and_public_addresses_across_hosts() {
    let world = World::start();
    let c = &world.cluster;
    let subnets = zone_subnets(c);
    let vpcs = c.json(&["ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true"]);
    let vpc = vpcs["Vpcs"][0]["VpcId"].as_str().unwrap().to_owned();

    public_address(c, &vpc, &subnets);
    eprintln!("cluster_lb: c. public address done");
    application_load_balancer(c, &vpc, &subnets);
    eprintln!("cluster_lb: a. application load balancer done");
    network_load_balancer(c, &vpc, &subnets);
    eprintln!("cluster_lb: b. network load balancer done");
}
