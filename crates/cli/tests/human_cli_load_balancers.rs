//! `flotilla load-balancers`, `flotilla load-balancers show` and `flotilla certificates`,
//! against a server that serves the API only (no root): load balancers, listeners, rules and
//! targets are made with the real AWS CLI, and targets registered by hand stay `initial`, as
//! no agent ever checks them.

mod common;

use common::ecs::default_vpc;
use common::elb::{import_certificate, self_signed, two_subnets};
use common::{Server, cells, free_port, stdout};
use serde_json::{Value, json};

/// The lines of `show`'s output from the title line `title` up to the next blank line.
fn section<'a>(out: &'a str, title: &str) -> &'a str {
    let title = format!("{title}\n");
    let start = if out.starts_with(&title) { Some(0) } else { out.find(&format!("\n{title}")).map(|i| i + 1) };
    let rest = &out[start.unwrap_or_else(|| panic!("no section {title} in:\n{out}"))..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

fn json_out(server: &Server, args: &[&str]) -> Value {
    serde_json::from_str(&stdout(&server.flotilla(args))).expect("flotilla -o json prints JSON")
}

fn load_balancer(server: &Server, name: &str, kind: &str, scheme: &str) -> Value {
    let subnets = two_subnets(server);
    let mut args = vec!["elbv2", "create-load-balancer", "--name", name, "--type", kind, "--scheme", scheme];
    args.push("--subnets");
    args.extend(subnets.iter().map(String::as_str));
    server.aws_json(&args)["LoadBalancers"][0].clone()
}

fn target_group(server: &Server, name: &str, protocol: &str, port: &str) -> String {
    let vpc = default_vpc(server);
    let mut args = vec!["elbv2", "create-target-group", "--name", name, "--protocol", protocol, "--port", port];
    args.extend(["--vpc-id", &vpc, "--target-type", "ip"]);
    if protocol == "HTTP" {
        args.extend(["--health-check-path", "/health"]);
    }
    server.aws_json(&args)["TargetGroups"][0]["TargetGroupArn"].as_str().unwrap().to_owned()
}

fn listener(server: &Server, lb: &str, protocol: &str, port: &str, actions: &Value, more: &[&str]) -> String {
    let actions = actions.to_string();
    let mut args = vec!["elbv2", "create-listener", "--load-balancer-arn", lb, "--protocol", protocol, "--port", port];
    args.extend_from_slice(more);
    args.extend(["--default-actions", &actions]);
    server.aws_json(&args)["Listeners"][0]["ListenerArn"].as_str().unwrap().to_owned()
}

fn forward(target_group: &str) -> Value {
    json!([{"Type": "forward", "TargetGroupArn": target_group}])
}

/// A self-signed certificate for `name` imported into ACM; its ARN.
fn imported_certificate(server: &Server, dir: &std::path::Path, name: &str) -> String {
    let (cert, key) = self_signed(dir, name);
    import_certificate(server, &cert, &key)
}

#[test]
fn load_balancers_table_and_show_with_rules_in_words_and_target_health() {
    let server = Server::start_no_agent();
    assert_eq!(stdout(&server.flotilla(&["load-balancers"])).trim(), "(none)");
    assert_eq!(json_out(&server, &["load-balancers", "-o", "json"]), json!({"LoadBalancers": []}));

    // An internal application load balancer (its listeners live in the VPC, so ports 80 and
    // 443 of this machine stay out of it) with path, host and weighted rules, and HTTPS.
    let front = load_balancer(&server, "front", "application", "internal");
    let front_arn = front["LoadBalancerArn"].as_str().unwrap();
    let web = target_group(&server, "web", "HTTP", "80");
    let api = target_group(&server, "api", "HTTP", "8080");
    let http = listener(&server, front_arn, "HTTP", "80", &forward(&web), &[]);
    let dir = tempfile::tempdir().unwrap();
    let cert = imported_certificate(&server, dir.path(), "app.example.com");
    let certificates = format!("CertificateArn={cert}");
    listener(&server, front_arn, "HTTPS", "443", &forward(&web), &["--certificates", &certificates]);
    let rule = |priority: &str, conditions: Value, actions: Value| {
        let (conditions, actions) = (conditions.to_string(), actions.to_string());
        server.aws_json(&[
            "elbv2",
            "create-rule",
            "--listener-arn",
            &http,
            "--priority",
            priority,
            "--conditions",
            &conditions,
            "--actions",
            &actions,
        ]);
    };
    rule(
        "20",
        json!([{"Field": "host-header", "HostHeaderConfig": {"Values": ["old.example.com"]}}]),
        json!([{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}]),
    );
    rule(
        "10",
        json!([
            {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}},
            {"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": ["GET", "HEAD"]}},
        ]),
        json!([{"Type": "forward", "ForwardConfig": {"TargetGroups": [
            {"TargetGroupArn": api, "Weight": 3}, {"TargetGroupArn": web, "Weight": 1},
        ]}}]),
    );
    // Targets registered by hand: with no agent to check them they stay `initial`.
    server.aws_json(&[
        "elbv2",
        "register-targets",
        "--target-group-arn",
        &web,
        "--targets",
        "Id=172.31.0.10,Port=80",
        "Id=172.31.16.11,Port=8080",
    ]);

    // An internet-facing network load balancer, on a free port of the host's address.
    let edge = load_balancer(&server, "edge", "network", "internet-facing");
    let raw = target_group(&server, "raw", "TCP", "5000");
    let edge_port = free_port().to_string();
    listener(&server, edge["LoadBalancerArn"].as_str().unwrap(), "TCP", &edge_port, &forward(&raw), &[]);

    let table = stdout(&server.flotilla(&["load-balancers"]));
    let mut rows = cells(&table);
    assert_eq!(rows[0], ["NAME", "TYPE", "SCHEME", "STATE", "DNS NAME", "LISTENERS"], "{table}");
    rows[1..].sort();
    let dns = |lb: &Value| lb["DNSName"].as_str().unwrap().to_owned();
    assert!(dns(&front).starts_with("internal-front-"), "{front}");
    assert_eq!(
        rows[1..],
        [
            ["edge", "network", "internet-facing", "active", &dns(&edge), &format!("TCP:{edge_port}")],
            ["front", "application", "internal", "active", &dns(&front), "HTTP:80, HTTPS:443"],
        ],
        "{table}"
    );

    // The JSON is DescribeLoadBalancers' own objects, each with its listeners.
    let listed = json_out(&server, &["load-balancers", "-o", "json"]);
    let ours = listed["LoadBalancers"].as_array().unwrap().iter().find(|lb| lb["LoadBalancerName"] == "front").unwrap();
    for key in ["LoadBalancerArn", "DNSName", "Scheme", "Type", "VpcId"] {
        assert_eq!(ours[key], front[key], "{key}");
    }
    let mut ports: Vec<&str> =
        ours["Listeners"].as_array().unwrap().iter().map(|l| l["Port"].as_str().unwrap()).collect();
    ports.sort();
    assert_eq!(ports, ["443", "80"]);

    let show = stdout(&server.flotilla(&["load-balancers", "show", "front"]));
    let fields = cells(section(&show, "Load balancer"));
    let field = |name: &str| {
        fields.iter().find(|r| r[0] == name).unwrap_or_else(|| panic!("no field {name} in:\n{show}"))[1].clone()
    };
    assert_eq!(field("name"), "front");
    assert_eq!(field("arn"), front_arn);
    assert_eq!(field("scheme"), "internal");
    assert_eq!(field("state"), "active");
    assert_eq!(field("DNS name"), dns(&front));
    assert_eq!(field("VPC"), default_vpc(&server));
    assert_eq!(field("zones").matches("subnet-").count(), 2, "{show}");

    let listeners = cells(section(&show, "Listeners"));
    assert_eq!(listeners[1][..2], ["HTTP:80", "-"], "{show}");
    assert_eq!(listeners[2][..2], ["HTTPS:443", "app.example.com"], "{show}");
    assert!(listeners[2][2].starts_with("ELBSecurityPolicy"), "{show}");

    let rules = cells(section(&show, "Rules"));
    assert_eq!(rules[0], ["LISTENER", "PRIORITY", "CONDITIONS", "ACTION"], "{show}");
    assert_eq!(
        rules[1..],
        [
            ["HTTP:80", "10", "path /api/* and method GET or HEAD", "forward to api (weight 3), web (weight 1)"],
            ["HTTP:80", "20", "host old.example.com", "redirect 301 to https://#{host}:443/#{path}"],
            ["HTTP:80", "default", "(any request)", "forward to web (weight 1)"],
            ["HTTPS:443", "default", "(any request)", "forward to web (weight 1)"],
        ],
        "{show}"
    );

    let groups = cells(section(&show, "Target groups"));
    assert_eq!(groups[1][..3], ["api", "HTTP", "8080"], "in the order the rules name them:\n{show}");
    assert_eq!(groups[2][..3], ["web", "HTTP", "80"], "{show}");
    assert_eq!(groups[2][3], "HTTP /health expecting 200, every 30 s, healthy after 5, unhealthy after 2", "{show}");

    let targets = cells(section(&show, "Targets"));
    assert_eq!(targets[0], ["TARGET GROUP", "TARGET", "STATE", "REASON", "DESCRIPTION"], "{show}");
    let health = server.aws_json(&["elbv2", "describe-target-health", "--target-group-arn", &web]);
    let reason = health["TargetHealthDescriptions"][0]["TargetHealth"]["Reason"].as_str().unwrap();
    let mut web_targets: Vec<&[String]> = targets[1..].iter().filter(|t| t[0] == "web").map(|t| &t[1..4]).collect();
    web_targets.sort();
    assert_eq!(
        web_targets,
        [["172.31.0.10:80", "initial", reason], ["172.31.16.11:8080", "initial", reason]],
        "{show}"
    );
    assert!(targets.iter().any(|t| t[..] == ["api", "-", "-", "-", "no targets registered"]), "{show}");

    // A deregistered target drains (for the group's deregistration delay) and says why.
    server.aws_json(&[
        "elbv2",
        "deregister-targets",
        "--target-group-arn",
        &web,
        "--targets",
        "Id=172.31.16.11,Port=8080",
    ]);
    let health = server.aws_json(&["elbv2", "describe-target-health", "--target-group-arn", &web]);
    let draining = health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["Target"]["Id"] == "172.31.16.11")
        .unwrap_or_else(|| panic!("a draining target is still described: {health}"));
    let show = stdout(&server.flotilla(&["load-balancers", "show", "front"]));
    let targets = cells(section(&show, "Targets"));
    let row = targets.iter().find(|t| t[1] == "172.31.16.11:8080").unwrap_or_else(|| panic!("{show}"));
    assert_eq!(row[2], "draining", "{show}");
    assert_eq!(row[3], draining["TargetHealth"]["Reason"].as_str().unwrap(), "{show}");
    assert_eq!(row[4], draining["TargetHealth"]["Description"].as_str().unwrap(), "{show}");

    // The JSON holds each API answer whole; the ARN finds the same load balancer.
    let raw = json_out(&server, &["load-balancers", "show", front_arn, "-o", "json"]);
    assert_eq!(raw["LoadBalancer"]["LoadBalancerArn"], front["LoadBalancerArn"]);
    let http_rules = raw["Listeners"].as_array().unwrap().iter().find(|l| l["Port"] == "80").unwrap();
    assert_eq!(http_rules["Rules"].as_array().unwrap().len(), 3);
    let web_group = &raw["TargetGroups"][1];
    assert_eq!(web_group["TargetGroupArn"], json!(web));
    assert_eq!(web_group["TargetHealthDescriptions"].as_array().unwrap().len(), 2);

    let nlb = stdout(&server.flotilla(&["load-balancers", "show", "edge"]));
    assert_eq!(
        cells(section(&nlb, "Rules"))[1],
        ["TCP:".to_owned() + &edge_port, "default".into(), "(any request)".into(), "forward to raw (weight 1)".into()],
        "{nlb}"
    );
    assert!(cells(section(&nlb, "Target groups"))[1][3].starts_with("TCP connect, every 30 s, healthy after"), "{nlb}");

    // The certificate knows the load balancer that serves it.
    let table = stdout(&server.flotilla(&["certificates"]));
    let rows = cells(&table);
    assert_eq!(rows[0], ["DOMAIN", "STATUS", "NOT AFTER", "IN USE BY"], "{table}");
    assert_eq!(rows[1][..2], ["app.example.com", "ISSUED"], "{table}");
    assert_eq!(rows[1][3], "front", "{table}");
    let described = server.aws_json(&["acm", "describe-certificate", "--certificate-arn", &cert]);
    // The AWS CLI (v1) prints timestamps as they come: epoch seconds.
    let not_after = described["Certificate"]["NotAfter"].as_f64().unwrap();
    assert_eq!(rows[1][2], flotilla_types::Timestamp((not_after * 1000.0).round() as i64).rfc3339(), "{table}");
    let listed = json_out(&server, &["certificates", "-o", "json"]);
    assert_eq!(listed["Certificates"][0]["CertificateArn"], json!(cert));
    assert_eq!(listed["Certificates"][0]["InUseBy"], json!([front_arn]));

    let out = server.flotilla(&["load-balancers", "show", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no load balancer nope") && err.contains("`flotilla load-balancers` lists them"), "{err}");
}

/// The client reads ELB's pages to the end: asked one at a time, it still finds every load
/// balancer.
#[test]
fn describe_pages_are_followed_to_the_last() {
    let server = Server::start_no_agent();
    for name in ["a", "b", "c"] {
        load_balancer(&server, name, "application", "internal");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let first = runtime.block_on(client.elbv2("DescribeLoadBalancers", &[("PageSize", "1")])).unwrap();
    assert_eq!(first["LoadBalancers"].as_array().unwrap().len(), 1, "{first}");
    assert!(first["NextMarker"].is_string(), "more than one page: {first}");
    let all =
        runtime.block_on(client.elbv2_all("DescribeLoadBalancers", &[("PageSize", "1")], "LoadBalancers")).unwrap();
    let mut names: Vec<&str> = all.iter().map(|lb| lb["LoadBalancerName"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
}
