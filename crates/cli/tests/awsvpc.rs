//! awsvpc end to end: every task gets an interface and address in its subnet, security groups
//! decide who reaches it (and changes reach running tasks), VPCs are isolated, Cloud Map names
//! resolve inside tasks, and nothing is left behind. Real tasks, the AWS CLI, and each test
//! server's task network in a namespace of its own (see `common::HostNetns`). Privileged.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::fixture::Fixture;
use common::{Server, private_ip, wait_for};
use serde_json::{Value, json};

const PORT: u16 = 8080;

fn group(server: &Server, vpc: &str, name: &str) -> String {
    let out = server.aws_json(&[
        "ec2",
        "create-security-group",
        "--group-name",
        name,
        "--description",
        name,
        "--vpc-id",
        vpc,
    ]);
    out["GroupId"].as_str().unwrap().to_owned()
}

/// `aws ec2 <verb>-security-group-ingress` for TCP 8080 from `source`.
fn ingress(server: &Server, verb: &str, group_id: &str, source: &[&str]) {
    let operation = format!("{verb}-security-group-ingress");
    let mut args = vec!["ec2", &operation, "--group-id", group_id, "--protocol", "tcp", "--port", "8080"];
    args.extend_from_slice(source);
    server.aws_json(&args);
}

fn allow(server: &Server, group_id: &str, source: &[&str]) {
    ingress(server, "authorize", group_id, source);
}

fn default_vpc(server: &Server) -> String {
    let vpcs = server.aws_json(&["ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true"]);
    vpcs["Vpcs"][0]["VpcId"].as_str().unwrap().to_owned()
}

fn network(subnet: &str, groups: &[&str]) -> String {
    format!("awsvpcConfiguration={{subnets=[{subnet}],securityGroups=[{}],assignPublicIp=DISABLED}}", groups.join(","))
}

/// An HTTP GET from the server's host side; `None` if the connection does not get through.
fn get_from_host(server: &Server, ip: Ipv4Addr) -> Option<String> {
    let mut stream = server.netns.connect(SocketAddr::from((ip, PORT)), Duration::from_millis(700)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// A web server task answering `hello from <name>` on 8080.
fn web(f: &Fixture, name: &str) -> Value {
    let script =
        format!("mkdir -p /www && echo 'hello from {name}' > /www/index.html && exec httpd -f -p {PORT} -h /www");
    f.container(name, &["sh", "-c", &script])
}

/// A group in the default VPC admitting TCP 8080 from `cidr`, and the web task definition.
struct Open {
    group: String,
    web_td: String,
}

fn open_web(f: &Fixture, cidr: &str) -> Open {
    let vpc = default_vpc(&f.server);
    let group = group(&f.server, &vpc, "open");
    allow(&f.server, &group, &["--cidr", cidr]);
    let web_td = f.register("web", json!([web(f, "web")]), json!({}));
    Open { group, web_td }
}

/// Runs the web task in `open`'s group; its ARN and, once RUNNING, its description.
fn run_web(f: &Fixture, open: &Open, public: bool) -> (String, Value) {
    let mut config = network(&f.subnet, &[&open.group]);
    if public {
        config = config.replace("DISABLED", "ENABLED");
    }
    let task = f.run_in(&open.web_td, &config, &[]);
    let running = f.wait_status(&task, "RUNNING", Duration::from_secs(120));
    (task, running)
}

/// A task that tries `url` every 300 ms and logs `<label>:reached` or `<label>:refused`.
fn prober(f: &Fixture, name: &str, urls: &[(&str, String)]) -> Value {
    let mut body = String::from("cat /etc/resolv.conf; while true; do ");
    for (label, url) in urls {
        body.push_str(&format!(
            // (Debian's busybox wget crashes with -T; `timeout` bounds it instead.)
            "if timeout 2 wget -q -O - {url} >/dev/null 2>&1; then echo {label}:reached; else echo {label}:refused; fi; "
        ));
    }
    body.push_str("sleep 0.3; done");
    f.container(name, &["sh", "-c", &body])
}

/// Links and rules the server's task network holds for tasks: veths (`fl<hash>`) and their
/// `in_`/`out_` chains. A VPC's own host side (`flvpc<hash>` with its router and resolver
/// addresses, its groups' chains) lives as long as the VPC; `vpc_links` counts those.
fn vpc_links(server: &Server) -> usize {
    let links = server.netns.exec(&["ip", "-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&links.stdout).lines().filter(|l| l.contains(": flvpc")).count()
}

fn plumbing(server: &Server) -> (Vec<String>, Vec<String>) {
    let links = server.netns.exec(&["ip", "-o", "link"]).output().unwrap();
    let links: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap().to_owned()))
        // `uplink0` is the test's own link to the `Outside` namespace.
        .filter(|n| n != "lo" && n != "uplink0" && !n.starts_with("flvpc"))
        .collect();
    let rules = server.netns.exec(&["nft", "list", "ruleset"]).output().unwrap();
    // A task's rules: the chains its interface's profile has (`ifo_`/`ifi_`, shared by the
    // interfaces of one VPC and set of groups, gone with the last of them; older versions'
    // per-interface `in_`/`out_`) and any element naming its host veth (`fl` + 8 hex digits).
    let chains: Vec<String> = String::from_utf8_lossy(&rules.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| {
            ["chain in_", "chain out_", "chain ifo_", "chain ifi_"].iter().any(|c| l.starts_with(c))
                || names_task_veth(l)
        })
        .map(str::to_owned)
        .collect();
    (links, chains)
}

/// Whether a ruleset line names a task's host veth (`"fl0a1b2c3d"`), not a VPC's or an
/// overlay's device (`flvpc...`, `flvx...`).
fn names_task_veth(line: &str) -> bool {
    line.match_indices("\"fl").any(|(at, _)| {
        let name = &line.as_bytes()[at + 3..];
        name.len() > 8 && name[..8].iter().all(u8::is_ascii_hexdigit) && name[8] == b'"'
    })
}

fn assert_no_task_plumbing(f: &Fixture) {
    wait_for("task network plumbing removed", Duration::from_secs(30), || {
        let (links, chains) = plumbing(&f.server);
        links.is_empty() && chains.is_empty()
    });
    let enis = f.server.aws_json(&["ec2", "describe-network-interfaces"]);
    assert_eq!(enis["NetworkInterfaces"], json!([]), "every task interface is deleted");
}

#[test]
fn tasks_talk_by_ip_and_name_as_their_security_groups_allow() {
    let f = Fixture::new();
    let s = &f.server;
    let vpc = default_vpc(s);
    let web_sg = group(s, &vpc, "web");
    let client_sg = group(s, &vpc, "client");

    let web_td = f.register("web", json!([web(&f, "web")]), json!({}));
    let web_task = f.run_in(&web_td, &network(&f.subnet, &[&web_sg]), &[]);
    let running = f.wait_status(&web_task, "RUNNING", Duration::from_secs(120));
    let ip = private_ip(&running);

    // The attachment and the containers show the interface, as on Fargate.
    let attachment = &running["attachments"][0];
    assert_eq!(attachment["type"], "ElasticNetworkInterface");
    assert_eq!(attachment["status"], "ATTACHED");
    let detail = |name: &str| {
        attachment["details"].as_array().unwrap().iter().find(|d| d["name"] == name).unwrap()["value"].clone()
    };
    assert_eq!(detail("subnetId"), f.subnet.as_str());
    assert!(detail("macAddress").as_str().unwrap().starts_with("02:"), "{attachment}");
    let dns_name = format!("ip-{}.ec2.internal", ip.to_string().replace('.', "-"));
    assert_eq!(detail("privateDnsName"), dns_name.as_str());
    assert_eq!(running["containers"][0]["networkInterfaces"][0]["privateIpv4Address"], ip.to_string().as_str());
    assert_eq!(running["containers"][0]["networkInterfaces"][0]["attachmentId"], attachment["id"]);
    let eni_id = detail("networkInterfaceId").as_str().unwrap().to_owned();
    let enis = s.aws_json(&["ec2", "describe-network-interfaces", "--network-interface-ids", &eni_id]);
    let eni = &enis["NetworkInterfaces"][0];
    assert_eq!(eni["PrivateIpAddress"], ip.to_string().as_str());
    assert_eq!(eni["Groups"][0]["GroupId"], web_sg.as_str());
    assert_eq!(eni["Status"], "in-use");

    // A Cloud Map name for the web task, answered by the VPC's resolver.
    let op = s.aws_json(&["servicediscovery", "create-private-dns-namespace", "--name", "corp.local", "--vpc", &vpc]);
    let op_id = op["OperationId"].as_str().unwrap().to_owned();
    let mut namespace = String::new();
    wait_for("namespace created", Duration::from_secs(10), || {
        let op = s.aws_json(&["servicediscovery", "get-operation", "--operation-id", &op_id]);
        namespace = op["Operation"]["Targets"]["NAMESPACE"].as_str().unwrap_or_default().to_owned();
        op["Operation"]["Status"] == "SUCCESS"
    });
    let dns_config = format!("NamespaceId={namespace},DnsRecords=[{{Type=A,TTL=5}}]");
    let service = s.aws_json(&["servicediscovery", "create-service", "--name", "web", "--dns-config", &dns_config]);
    let service_id = service["Service"]["Id"].as_str().unwrap().to_owned();
    let ipv4 = format!("AWS_INSTANCE_IPV4={ip}");
    let instance_id = web_task.rsplit('/').next().unwrap();
    s.aws_json(&[
        "servicediscovery",
        "register-instance",
        "--service-id",
        &service_id,
        "--instance-id",
        instance_id,
        "--attributes",
        &ipv4,
    ]);

    // The web group admits nobody yet: neither the client task nor the host gets through.
    let urls = [("ip", format!("http://{ip}:{PORT}/")), ("dns", format!("http://web.corp.local:{PORT}/"))];
    let client_td = f.register("client", json!([prober(&f, "client", &urls)]), json!({}));
    let client_task = f.run_in(&client_td, &network(&f.subnet, &[&client_sg]), &[]);
    let lines = f.wait_log(&client_task, "client", "ip:refused");
    assert!(lines.iter().any(|l| l == "nameserver 172.31.0.2"), "resolv.conf names the VPC resolver: {lines:?}");
    assert!(!lines.iter().any(|l| l.ends_with(":reached")), "{lines:?}");
    assert!(get_from_host(s, ip).is_none(), "the host is not in any allowed source yet");

    // Opening the port to the client's group reaches the running tasks: by IP and by name.
    allow(s, &web_sg, &["--source-group", &client_sg]);
    f.wait_log(&client_task, "client", "ip:reached");
    f.wait_log(&client_task, "client", "dns:reached");
    assert!(get_from_host(s, ip).is_none(), "a source-group rule does not admit the host");

    // Allowing the VPC's CIDR admits the host (it speaks from the VPC's router address).
    allow(s, &web_sg, &["--cidr", "172.31.0.0/16"]);
    let mut page = None;
    wait_for("the host reaches the web task", Duration::from_secs(5), || {
        page = get_from_host(s, ip);
        page.is_some()
    });
    assert!(page.unwrap().contains("hello from web"));

    // Closing it again applies too (new connections refused).
    ingress(s, "revoke", &web_sg, &["--cidr", "172.31.0.0/16"]);
    wait_for("the host is refused again", Duration::from_secs(5), || get_from_host(s, ip).is_none());

    for stopped in f.stop_all(&[&web_task, &client_task]) {
        assert_eq!(stopped["attachments"][0]["status"], "DELETED", "{stopped}");
    }
    assert_no_task_plumbing(&f);
}

#[test]
fn vpcs_are_isolated_from_each_other() {
    let f = Fixture::new();
    let s = &f.server;
    let open = open_web(&f, "0.0.0.0/0");
    let (web_task, running) = run_web(&f, &open, false);
    let ip = private_ip(&running);

    let other = s.aws_json(&["ec2", "create-vpc", "--cidr-block", "10.20.0.0/16"]);
    let other_vpc = other["Vpc"]["VpcId"].as_str().unwrap().to_owned();
    let subnet = s.aws_json(&["ec2", "create-subnet", "--vpc-id", &other_vpc, "--cidr-block", "10.20.1.0/24"]);
    let other_subnet = subnet["Subnet"]["SubnetId"].as_str().unwrap().to_owned();
    let other_sg = group(s, &other_vpc, "anything");

    let urls = [("web", format!("http://{ip}:{PORT}/"))];
    let prober_td = f.register("prober", json!([prober(&f, "prober", &urls)]), json!({}));
    let inside = f.run_in(&prober_td, &network(&f.subnet, &[&open.group]), &[]);
    let outside = f.run_in(&prober_td, &network(&other_subnet, &[&other_sg]), &[]);
    let outside_ip = private_ip(&f.wait_status(&outside, "RUNNING", Duration::from_secs(60)));
    assert!("10.20.1.0/24".parse::<ipnet::Ipv4Net>().unwrap().contains(&outside_ip), "{outside_ip}");

    // The same group admits everyone; only the VPC boundary keeps the other task out.
    f.wait_log(&inside, "prober", "web:reached");
    wait_for("several attempts from the other VPC", Duration::from_secs(30), || {
        f.logs(&outside, "prober").iter().filter(|l| l.starts_with("web:")).count() >= 4
    });
    let attempts = f.logs(&outside, "prober");
    assert!(!attempts.iter().any(|l| l == "web:reached"), "{attempts:?}");
    // The other VPC has its own resolver.
    assert!(attempts.iter().any(|l| l == "nameserver 10.20.0.2"), "{attempts:?}");

    f.stop_all(&[&web_task, &inside, &outside]);
    assert_no_task_plumbing(&f);

    // Both VPCs keep their host side while they exist; deleting one removes its own.
    assert_eq!(vpc_links(s), 2);
    s.aws_json(&["ec2", "delete-security-group", "--group-id", &other_sg]);
    s.aws_json(&["ec2", "delete-subnet", "--subnet-id", &other_subnet]);
    s.aws_json(&["ec2", "delete-vpc", "--vpc-id", &other_vpc]);
    wait_for("the deleted VPC's host side removed", Duration::from_secs(10), || vpc_links(s) == 1);
    let rules = s.netns.exec(&["nft", "list", "ruleset"]).output().unwrap();
    let other_chain = format!("sgi_{}", other_sg.replace('-', "_"));
    assert!(!String::from_utf8_lossy(&rules.stdout).contains(&other_chain), "its groups' rules go too");
}

#[test]
fn fifty_concurrent_run_tasks_get_distinct_addresses() {
    let f = Fixture::new();
    let s = &f.server;
    let vpc = default_vpc(s);
    // 59 usable addresses (64 minus AWS's five reserved): 50 tasks leave 9.
    let subnet = s.aws_json(&["ec2", "create-subnet", "--vpc-id", &vpc, "--cidr-block", "172.31.240.0/26"]);
    let subnet_id = subnet["Subnet"]["SubnetId"].as_str().unwrap().to_owned();
    let available = || {
        let out = s.aws_json(&["ec2", "describe-subnets", "--subnet-ids", &subnet_id]);
        out["Subnets"][0]["AvailableIpAddressCount"].as_i64().unwrap()
    };
    assert_eq!(available(), 59);
    let td = f.register("idle", json!([f.container("idle", &["sleep", "1000"])]), json!({}));
    let client = s.client();
    let arns = f.run_concurrently(&td, 50, &subnet_id);
    let describe = || f.rt.block_on(client.ecs("DescribeTasks", json!({"tasks": arns}))).unwrap();
    wait_for("50 tasks RUNNING", Duration::from_secs(300), || {
        describe()["tasks"].as_array().unwrap().iter().filter(|t| t["lastStatus"] == "RUNNING").count() == 50
    });
    let ips: Vec<Ipv4Addr> = describe()["tasks"].as_array().unwrap().iter().map(private_ip).collect();
    let distinct: HashSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), 50, "no address handed to two live tasks: {ips:?}");
    let block: ipnet::Ipv4Net = "172.31.240.0/26".parse().unwrap();
    for ip in &ips {
        let offset = u32::from(*ip) - u32::from(block.network());
        assert!(block.contains(ip) && (4..63).contains(&offset), "{ip} is a usable address of the subnet");
    }
    assert_eq!(available(), 9);
    for arn in &arns {
        f.rt.block_on(client.ecs("StopTask", json!({"task": arn}))).unwrap();
    }
    wait_for("50 tasks STOPPED", Duration::from_secs(300), || {
        describe()["tasks"].as_array().unwrap().iter().all(|t| t["lastStatus"] == "STOPPED")
    });
    assert_eq!(available(), 59, "every address released");
    assert_no_task_plumbing(&f);
}

#[test]
fn interfaces_survive_a_server_kill_9_and_nothing_leaks_after() {
    let f = Fixture::new();
    let open = open_web(&f, "172.31.0.0/16");
    let (web_task, running) = run_web(&f, &open, false);
    let ip = private_ip(&running);
    wait_for("the host reaches the web task", Duration::from_secs(10), || get_from_host(&f.server, ip).is_some());

    let data_dir = f.server.data_dir.clone();
    let Fixture { mut server, subnet, _registry, image, rt } = f;
    server.kill9();
    // The task keeps serving while no server runs: its interface is in the kernel.
    assert!(get_from_host(&server, ip).unwrap().contains("hello from web"));
    let f = Fixture { server: Server::start_in(&data_dir), subnet, _registry, image, rt };
    wait_for("the adopted task still reachable", Duration::from_secs(30), || get_from_host(&f.server, ip).is_some());
    // Rule changes still reach it after the restart.
    ingress(&f.server, "revoke", &open.group, &["--cidr", "172.31.0.0/16"]);
    wait_for("the host is refused after the revoke", Duration::from_secs(5), || get_from_host(&f.server, ip).is_none());
    f.stop_all(&[&web_task]);
    assert_no_task_plumbing(&f);
    drop(server);
}

#[test]
fn two_hundred_tasks_come_and_go_without_leaking_addresses_or_plumbing() {
    let f = Fixture::new();
    let s = &f.server;
    let available = || {
        let out = s.aws_json(&["ec2", "describe-subnets", "--subnet-ids", &f.subnet]);
        out["Subnets"][0]["AvailableIpAddressCount"].as_i64().unwrap()
    };
    let before = available();
    let td = f.register("blip", json!([f.container("blip", &["true"])]), json!({}));
    let client = s.client();
    let mut arns = Vec::new();
    for _ in 0..20 {
        let body = json!({"taskDefinition": td, "launchType": "FARGATE", "count": 10,
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": [f.subnet]}}});
        let out = f.rt.block_on(client.ecs("RunTask", body)).unwrap();
        assert_eq!(out["failures"], json!([]), "{out}");
        arns.extend(out["tasks"].as_array().unwrap().iter().map(|t| t["taskArn"].as_str().unwrap().to_owned()));
    }
    assert_eq!(arns.len(), 200);
    wait_for("200 tasks STOPPED", Duration::from_secs(600), || {
        arns.chunks(100).all(|chunk| {
            let out = f.rt.block_on(client.ecs("DescribeTasks", json!({"tasks": chunk}))).unwrap();
            out["tasks"].as_array().unwrap().iter().all(|t| t["lastStatus"] == "STOPPED")
        })
    });
    // Each one had its own interface and exited 0 (so it really ran with its network).
    let out = f.rt.block_on(client.ecs("DescribeTasks", json!({"tasks": arns[..100]}))).unwrap();
    for t in out["tasks"].as_array().unwrap() {
        assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
        assert_eq!(t["attachments"][0]["status"], "DELETED", "{t}");
    }
    assert_eq!(available(), before, "no address leaked");
    assert_no_task_plumbing(&f);
    let leases = s.netns.exec(&["ip", "-o", "addr"]).output().unwrap();
    let leftover: Vec<String> = String::from_utf8_lossy(&leases.stdout)
        .lines()
        .filter(|l| !l.contains(" lo ") && !l.contains(": flvpc"))
        .map(str::to_owned)
        .collect();
    assert_eq!(leftover, Vec::<String>::new(), "no task address left on the host side");
}

/// A namespace outside the VPC, linked to the server's host side the way the internet would
/// be: it routes the public pool (and, to prove the point, the VPC's private block) to the host.
struct Outside {
    name: String,
    path: std::path::PathBuf,
}

impl Outside {
    fn new(server: &Server) -> Outside {
        let name = format!("{}-out", server.netns.name);
        let run = |args: &[&str]| {
            let status = std::process::Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {}", args.join(" "));
        };
        run(&["netns", "add", &name]);
        let host = server.netns.name.as_str();
        run(&["-n", host, "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns", &name]);
        run(&["-n", host, "addr", "add", "192.0.2.1/30", "dev", "uplink0"]);
        run(&["-n", host, "link", "set", "uplink0", "up"]);
        run(&["-n", &name, "addr", "add", "192.0.2.2/30", "dev", "eth0"]);
        run(&["-n", &name, "link", "set", "eth0", "up"]);
        run(&["-n", &name, "link", "set", "lo", "up"]);
        run(&["-n", &name, "route", "add", "198.18.0.0/24", "via", "192.0.2.1"]);
        run(&["-n", &name, "route", "add", "172.31.0.0/16", "via", "192.0.2.1"]);
        let path = std::path::PathBuf::from(format!("/run/netns/{name}"));
        Outside { name, path }
    }

    fn get(&self, ip: Ipv4Addr) -> Option<String> {
        let to = SocketAddr::from((ip, PORT));
        let connect = || std::net::TcpStream::connect_timeout(&to, Duration::from_millis(700));
        let mut stream = flotilla_net::netns::run_in(&self.path, connect).ok()?.ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        Some(body)
    }
}

impl Outside {
    /// An HTTP server on 192.0.2.2:8080 out there; returns the peer addresses it has seen.
    fn serve(&self) -> std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>> {
        let listener = flotilla_net::netns::run_in(&self.path, || std::net::TcpListener::bind(("192.0.2.2", PORT)))
            .unwrap()
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for (mut stream, peer) in listener.incoming().flatten().filter_map(|s| s.peer_addr().map(|p| (s, p)).ok()) {
                record.lock().unwrap().push(peer);
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 18\r\n\r\nhello from outside");
            }
        });
        seen
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[test]
fn a_public_ip_is_reachable_from_outside_and_a_private_one_is_not() {
    let f = Fixture::new();
    let s = &f.server;
    let open = open_web(&f, "0.0.0.0/0");
    let (public, public_task) = run_web(&f, &open, true);
    let (private, private_task) = run_web(&f, &open, false);
    let private_ip_of_private = private_ip(&private_task);

    let eni_id = common::attachment_detail(&public_task, "networkInterfaceId").unwrap().to_owned();
    let enis = s.aws_json(&["ec2", "describe-network-interfaces", "--network-interface-ids", &eni_id]);
    let public_ip: Ipv4Addr =
        enis["NetworkInterfaces"][0]["Association"]["PublicIp"].as_str().unwrap().parse().unwrap();
    assert!("198.18.0.0/24".parse::<ipnet::Ipv4Net>().unwrap().contains(&public_ip), "{public_ip}");

    let outside = Outside::new(s);
    let mut page = None;
    wait_for("the public address answers from outside", Duration::from_secs(10), || {
        page = outside.get(public_ip);
        page.is_some()
    });
    assert!(page.unwrap().contains("hello from web"));
    // Even with a route to the VPC, nothing outside reaches a private address.
    assert!(outside.get(private_ip_of_private).is_none(), "private addresses are not reachable from outside");
    assert!(outside.get(private_ip(&public_task)).is_none(), "nor the public task's private address");
    // Inside the VPC (the host), the private address works.
    assert!(get_from_host(s, private_ip_of_private).is_some());

    // A task without a public address still reaches out, through NAT.
    let seen = outside.serve();
    let urls = [("out", format!("http://192.0.2.2:{PORT}/"))];
    let prober_td = f.register("prober", json!([prober(&f, "prober", &urls)]), json!({}));
    let prober_task = f.run_in(&prober_td, &network(&f.subnet, &[&open.group]), &[]);
    f.wait_log(&prober_task, "prober", "out:reached");
    let peers = seen.lock().unwrap().clone();
    assert!(peers.iter().all(|p| p.ip() == Ipv4Addr::new(192, 0, 2, 1)), "masqueraded behind the host: {peers:?}");
    f.stop_all(&[&prober_task]);

    f.stop_all(&[&public, &private]);
    let leased = s.aws_json(&[
        "ec2",
        "describe-network-interfaces",
        "--filters",
        &format!("Name=association.public-ip,Values={public_ip}"),
    ]);
    assert_eq!(leased["NetworkInterfaces"], json!([]), "the public address is released");
    assert_no_task_plumbing(&f);
}
