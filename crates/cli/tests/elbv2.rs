//! The ELBv2 API through the real AWS CLI (`aws elbv2`): the Query protocol in, XML out, parsed
//! by botocore. Each resource is made, described, changed and deleted; the refusals issue 11
//! lists come back with ELB's codes; tags and paging work as the CLI drives them. The server
//! runs without an agent: nothing here needs traffic, only the control plane's answers.

mod common;

use std::net::TcpListener;

use common::ecs::{default_vpc, zone_subnets};
use common::{Server, free_port};
use serde_json::Value;

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}")).to_owned()
}

fn elbv2(server: &Server, args: &[&str]) -> Value {
    let mut full = vec!["elbv2"];
    full.extend_from_slice(args);
    server.aws_json(&full)
}

/// Runs `aws elbv2 ...` expecting failure with `code`; returns the CLI's message.
fn elbv2_err(server: &Server, args: &[&str], code: &str) -> String {
    let mut full = vec!["elbv2"];
    full.extend_from_slice(args);
    let stderr = server.aws_err(&full);
    assert!(stderr.contains(&format!("({code})")), "aws elbv2 {args:?}: expected {code}, got: {stderr}");
    stderr
}

fn target_group(server: &Server, vpc: &str, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["create-target-group", "--name", name, "--protocol", "HTTP", "--port", "80"];
    args.extend_from_slice(&["--vpc-id", vpc, "--target-type", "ip"]);
    args.extend_from_slice(extra);
    text(&elbv2(server, &args)["TargetGroups"][0]["TargetGroupArn"])
}

fn load_balancer(server: &Server, name: &str, extra: &[&str]) -> Value {
    let subnets = zone_subnets(server);
    let mut args = vec!["create-load-balancer", "--name", name, "--subnets", &subnets[0].1, &subnets[1].1];
    args.extend_from_slice(extra);
    elbv2(server, &args)["LoadBalancers"][0].clone()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn forward_to(group: &str) -> String {
    format!("Type=forward,TargetGroupArn={group}")
}

#[test]
fn load_balancers_listeners_and_rules_through_the_cli() {
    let server = Server::start_no_agent();
    let vpc = default_vpc(&server);
    let web = target_group(&server, &vpc, "web", &["--health-check-path", "/health", "--matcher", "HttpCode=200-299"]);
    let api = target_group(&server, &vpc, "api", &[]);

    let lb = load_balancer(&server, "front", &["--tags", "Key=team,Value=a"]);
    let lb_arn = text(&lb["LoadBalancerArn"]);
    assert!(lb_arn.contains(":loadbalancer/app/front/"), "{lb_arn}");
    assert!(
        text(&lb["DNSName"]).starts_with("front-") && text(&lb["DNSName"]).ends_with(".us-east-1.elb.amazonaws.com")
    );
    assert_eq!((text(&lb["Type"]), text(&lb["Scheme"])), ("application".into(), "internet-facing".into()));
    assert_eq!(lb["AvailabilityZones"].as_array().unwrap().len(), 2);
    // The same request again is the same load balancer.
    assert_eq!(text(&load_balancer(&server, "front", &["--tags", "Key=team,Value=a"])["LoadBalancerArn"]), lb_arn);
    elbv2_err(
        &server,
        &["create-load-balancer", "--name", "front", "--subnets", &zone_subnets(&server)[0].1],
        "ValidationError",
    );
    let internal = load_balancer(&server, "inside", &["--scheme", "internal"]);
    elbv2_err(
        &server,
        &[
            "create-load-balancer",
            "--name",
            "inside",
            "--subnets",
            &zone_subnets(&server)[0].1,
            &zone_subnets(&server)[2].1,
        ],
        "DuplicateLoadBalancerName",
    );
    assert!(text(&internal["DNSName"]).starts_with("internal-inside-"));

    let port = free_port().to_string();
    let listener = elbv2(
        &server,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port,
            "--default-actions",
            &forward_to(&web),
        ],
    );
    let listener_arn = text(&listener["Listeners"][0]["ListenerArn"]);
    let again = [
        "create-listener",
        "--load-balancer-arn",
        &lb_arn,
        "--protocol",
        "HTTP",
        "--port",
        &port,
        "--default-actions",
        "Type=fixed-response,FixedResponseConfig={StatusCode=503}",
    ];
    elbv2_err(&server, &again, "DuplicateListener");
    // The internal load balancer does not listen on the host, but its groups are its own.
    let taken = ["create-listener", "--load-balancer-arn", &text(&internal["LoadBalancerArn"]), "--protocol", "HTTP"];
    let mut taken = taken.to_vec();
    taken.extend_from_slice(&["--port", &port, "--default-actions"]);
    let to_web = forward_to(&web);
    taken.push(&to_web);
    elbv2_err(&server, &taken, "TargetGroupAssociationLimit");
    // A port another program holds on the load balancer address is refused, and nothing is made.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().port().to_string();
    let message = elbv2_err(
        &server,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &held,
            "--default-actions",
            &forward_to(&api),
        ],
        "ValidationError",
    );
    assert!(message.contains(&format!("Port {held} is already taken")), "{message}");
    let listeners = elbv2(&server, &["describe-listeners", "--load-balancer-arn", &lb_arn]);
    assert_eq!(listeners["Listeners"].as_array().unwrap().len(), 1);
    elbv2_err(
        &server,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTPS",
            "--port",
            &free_port().to_string(),
            "--certificates",
            "CertificateArn=arn:aws:acm:us-east-1:000000000000:certificate/none",
            "--default-actions",
            &forward_to(&api),
        ],
        "CertificateNotFound",
    );

    // Rules: path and host conditions, weighted forwards, priorities.
    let rule = |priority: &str, condition: &str, action: &str| {
        vec![
            "create-rule".to_owned(),
            "--listener-arn".to_owned(),
            listener_arn.clone(),
            "--priority".to_owned(),
            priority.to_owned(),
            "--conditions".to_owned(),
            condition.to_owned(),
            "--actions".to_owned(),
            action.to_owned(),
        ]
    };
    let path = rule("10", "Field=path-pattern,Values=/api/*", &forward_to(&api));
    let path_rule = text(&elbv2(&server, &args(&path))["Rules"][0]["RuleArn"]);
    let weighted = format!(
        "Type=forward,ForwardConfig={{TargetGroups=[{{TargetGroupArn={api},Weight=1}},{{TargetGroupArn={web},Weight=3}}]}}"
    );
    let host = rule("20", "Field=host-header,HostHeaderConfig={Values=[*.example.com]}", &weighted);
    let host_rule = text(&elbv2(&server, &args(&host))["Rules"][0]["RuleArn"]);
    elbv2_err(&server, &args(&rule("10", "Field=path-pattern,Values=/x", &forward_to(&api))), "PriorityInUse");
    elbv2_err(&server, &args(&rule("30", "Field=cookie,Values=x", &forward_to(&api))), "ValidationError");
    let redirect = rule(
        "30",
        "Field=http-header,HttpHeaderConfig={HttpHeaderName=X-Old,Values=[1]}",
        "Type=redirect,RedirectConfig={Protocol=HTTPS,Port=443,StatusCode=HTTP_301}",
    );
    elbv2(&server, &args(&redirect));
    let rules = elbv2(&server, &["describe-rules", "--listener-arn", &listener_arn]);
    let rules = rules["Rules"].as_array().unwrap();
    let priorities: Vec<String> = rules.iter().map(|r| text(&r["Priority"])).collect();
    assert_eq!(priorities, ["10", "20", "30", "default"]);
    assert_eq!(rules[3]["IsDefault"], true);
    assert_eq!(rules[0]["Conditions"][0]["Values"][0], "/api/*");
    assert_eq!(rules[1]["Actions"][0]["ForwardConfig"]["TargetGroups"][1]["Weight"], 3);
    elbv2_err(&server, &["delete-rule", "--rule-arn", &text(&rules[3]["RuleArn"])], "OperationNotPermitted");
    elbv2_err(
        &server,
        &["set-rule-priorities", "--rule-priorities", &format!("RuleArn={path_rule},Priority=20")],
        "PriorityInUse",
    );
    let swapped = elbv2(
        &server,
        &[
            "set-rule-priorities",
            "--rule-priorities",
            &format!("RuleArn={path_rule},Priority=20"),
            &format!("RuleArn={host_rule},Priority=10"),
        ],
    );
    assert_eq!(swapped["Rules"].as_array().unwrap().len(), 2);
    let modified =
        elbv2(&server, &["modify-rule", "--rule-arn", &path_rule, "--conditions", "Field=path-pattern,Values=/v2/*"]);
    assert_eq!(modified["Rules"][0]["Priority"], "20");
    assert_eq!(modified["Rules"][0]["Conditions"][0]["PathPatternConfig"]["Values"][0], "/v2/*");
    elbv2(&server, &["delete-rule", "--rule-arn", &path_rule]);
    elbv2_err(&server, &["delete-rule", "--rule-arn", &path_rule], "RuleNotFound");

    // Groups in use cannot go; the load balancer names them.
    elbv2_err(&server, &["delete-target-group", "--target-group-arn", &web], "ResourceInUse");
    let groups = elbv2(&server, &["describe-target-groups", "--load-balancer-arn", &lb_arn]);
    let names: Vec<String> =
        groups["TargetGroups"].as_array().unwrap().iter().map(|g| text(&g["TargetGroupName"])).collect();
    assert_eq!(names, ["api", "web"]);
    assert_eq!(groups["TargetGroups"][1]["HealthCheckPath"], "/health");
    assert_eq!(groups["TargetGroups"][1]["Matcher"]["HttpCode"], "200-299");
    assert_eq!(groups["TargetGroups"][1]["LoadBalancerArns"][0], lb_arn.as_str());

    let modified = elbv2(
        &server,
        &[
            "modify-listener",
            "--listener-arn",
            &listener_arn,
            "--default-actions",
            "Type=fixed-response,FixedResponseConfig={StatusCode=404,ContentType=text/plain,MessageBody=nothing}",
        ],
    );
    assert_eq!(modified["Listeners"][0]["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"], "404");
    // `web` is still the weighted rule's.
    elbv2_err(&server, &["delete-target-group", "--target-group-arn", &web], "ResourceInUse");

    let attrs = elbv2(
        &server,
        &[
            "modify-load-balancer-attributes",
            "--load-balancer-arn",
            &lb_arn,
            "--attributes",
            "Key=idle_timeout.timeout_seconds,Value=120",
        ],
    );
    assert!(
        attrs["Attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["Key"] == "idle_timeout.timeout_seconds" && a["Value"] == "120")
    );
    elbv2_err(
        &server,
        &["modify-load-balancer-attributes", "--load-balancer-arn", &lb_arn, "--attributes", "Key=bogus,Value=1"],
        "ValidationError",
    );

    // Deleting the load balancer deletes its listeners and rules and frees its groups.
    elbv2(&server, &["delete-load-balancer", "--load-balancer-arn", &lb_arn]);
    elbv2(&server, &["delete-load-balancer", "--load-balancer-arn", &lb_arn]);
    elbv2_err(&server, &["describe-load-balancers", "--load-balancer-arns", &lb_arn], "LoadBalancerNotFound");
    elbv2_err(&server, &["describe-listeners", "--listener-arns", &listener_arn], "ListenerNotFound");
    elbv2_err(&server, &["describe-rules", "--rule-arns", &host_rule], "RuleNotFound");
    elbv2(&server, &["delete-target-group", "--target-group-arn", &web]);
    elbv2(&server, &["delete-target-group", "--target-group-arn", &api]);
    elbv2_err(&server, &["describe-target-groups", "--target-group-arns", &web], "TargetGroupNotFound");
    // The port it held is free for another load balancer.
    let again = load_balancer(&server, "again", &[]);
    let group = target_group(&server, &vpc, "again", &[]);
    elbv2(
        &server,
        &[
            "create-listener",
            "--load-balancer-arn",
            &text(&again["LoadBalancerArn"]),
            "--protocol",
            "HTTP",
            "--port",
            &port,
            "--default-actions",
            &forward_to(&group),
        ],
    );
    drop(holder);
}

#[test]
fn target_groups_targets_tags_and_paging() {
    let server = Server::start_no_agent();
    let vpc = default_vpc(&server);
    let message = elbv2_err(
        &server,
        &[
            "create-target-group",
            "--name",
            "inst",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--vpc-id",
            &vpc,
            "--target-type",
            "instance",
        ],
        "ValidationError",
    );
    assert!(message.contains("TargetType"), "{message}");
    elbv2_err(
        &server,
        &[
            "create-target-group",
            "--name",
            "slow",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--vpc-id",
            &vpc,
            "--target-type",
            "ip",
            "--health-check-timeout-seconds",
            "40",
        ],
        "ValidationError",
    );
    elbv2_err(
        &server,
        &[
            "create-target-group",
            "--name",
            "bad_name",
            "--protocol",
            "HTTP",
            "--port",
            "80",
            "--vpc-id",
            &vpc,
            "--target-type",
            "ip",
        ],
        "ValidationError",
    );
    let tcp = elbv2(
        &server,
        &[
            "create-target-group",
            "--name",
            "tcp",
            "--protocol",
            "TCP",
            "--port",
            "7",
            "--vpc-id",
            &vpc,
            "--target-type",
            "ip",
        ],
    );
    let tcp = &tcp["TargetGroups"][0];
    assert_eq!(
        (text(&tcp["HealthCheckProtocol"]), tcp["HealthCheckTimeoutSeconds"].as_u64()),
        ("TCP".into(), Some(10))
    );
    let web = target_group(&server, &vpc, "web", &[]);
    elbv2_err(
        &server,
        &[
            "create-target-group",
            "--name",
            "web",
            "--protocol",
            "HTTP",
            "--port",
            "8080",
            "--vpc-id",
            &vpc,
            "--target-type",
            "ip",
        ],
        "DuplicateTargetGroupName",
    );
    let changed = elbv2(
        &server,
        &[
            "modify-target-group",
            "--target-group-arn",
            &web,
            "--health-check-interval-seconds",
            "10",
            "--healthy-threshold-count",
            "2",
        ],
    );
    assert_eq!(changed["TargetGroups"][0]["HealthCheckIntervalSeconds"], 10);
    let attrs = elbv2(
        &server,
        &[
            "modify-target-group-attributes",
            "--target-group-arn",
            &web,
            "--attributes",
            "Key=deregistration_delay.timeout_seconds,Value=0",
            "Key=stickiness.enabled,Value=true",
            "Key=stickiness.type,Value=lb_cookie",
        ],
    );
    let value =
        |key: &str| attrs["Attributes"].as_array().unwrap().iter().find(|a| a["Key"] == key).map(|a| text(&a["Value"]));
    assert_eq!(value("deregistration_delay.timeout_seconds").as_deref(), Some("0"));
    assert_eq!(value("stickiness.lb_cookie.duration_seconds").as_deref(), Some("86400"));
    elbv2_err(
        &server,
        &[
            "modify-target-group-attributes",
            "--target-group-arn",
            &web,
            "--attributes",
            "Key=stickiness.type,Value=app_cookie",
        ],
        "ValidationError",
    );

    // Targets: unused while no load balancer forwards to the group, gone at once with no delay.
    elbv2_err(&server, &["register-targets", "--target-group-arn", &web, "--targets", "Id=i-0abc"], "ValidationError");
    elbv2(
        &server,
        &["register-targets", "--target-group-arn", &web, "--targets", "Id=172.31.0.10", "Id=172.31.0.11,Port=8080"],
    );
    let health = elbv2(&server, &["describe-target-health", "--target-group-arn", &web]);
    let health = health["TargetHealthDescriptions"].as_array().unwrap();
    assert_eq!(health.len(), 2);
    assert!(
        health
            .iter()
            .all(|h| h["TargetHealth"]["State"] == "unused" && h["TargetHealth"]["Reason"] == "Target.NotInUse")
    );
    let subnets = zone_subnets(&server);
    let lb = elbv2(&server, &["create-load-balancer", "--name", "front", "--subnets", &subnets[0].1, &subnets[1].1]);
    let lb_arn = text(&lb["LoadBalancers"][0]["LoadBalancerArn"]);
    elbv2(
        &server,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &free_port().to_string(),
            "--default-actions",
            &forward_to(&web),
        ],
    );
    let one = elbv2(
        &server,
        &[
            "describe-target-health",
            "--target-group-arn",
            &web,
            "--targets",
            "Id=172.31.0.11,Port=8080",
            "Id=172.31.0.99",
        ],
    );
    let one = one["TargetHealthDescriptions"].as_array().unwrap();
    assert_eq!(one[0]["TargetHealth"]["State"], "initial");
    assert_eq!(one[0]["HealthCheckPort"], "8080");
    assert_eq!(
        (one[1]["TargetHealth"]["State"].as_str(), one[1]["TargetHealth"]["Reason"].as_str()),
        (Some("unused"), Some("Target.NotRegistered"))
    );
    elbv2(&server, &["deregister-targets", "--target-group-arn", &web, "--targets", "Id=172.31.0.10"]);
    let left = elbv2(&server, &["describe-target-health", "--target-group-arn", &web]);
    assert_eq!(left["TargetHealthDescriptions"].as_array().unwrap().len(), 1);
    let tcp_arn = text(&tcp["TargetGroupArn"]);
    elbv2_err(
        &server,
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &free_port().to_string(),
            "--default-actions",
            &forward_to(&tcp_arn),
        ],
        "IncompatibleProtocols",
    );

    // Tags on load balancers and target groups.
    elbv2(&server, &["add-tags", "--resource-arns", &lb_arn, &web, "--tags", "Key=env,Value=prod", "Key=team,Value=a"]);
    elbv2(&server, &["remove-tags", "--resource-arns", &lb_arn, "--tag-keys", "team"]);
    let tags = elbv2(&server, &["describe-tags", "--resource-arns", &lb_arn, &web]);
    let tags = tags["TagDescriptions"].as_array().unwrap();
    assert_eq!(tags[0]["Tags"].as_array().unwrap().len(), 1);
    assert_eq!(tags[1]["Tags"].as_array().unwrap().len(), 2);
    assert_eq!(text(&tags[1]["ResourceArn"]), web);

    // Paging: page by page with each answer's marker. (The CLI walks pages by itself only when
    // not given `--page-size`, which here is the operation's own member.)
    for name in ["g1", "g2", "g3"] {
        target_group(&server, &vpc, name, &[]);
    }
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut walk = vec!["describe-target-groups", "--page-size", "2"];
        if let Some(m) = &marker {
            walk.extend_from_slice(&["--marker", m]);
        }
        let page = elbv2(&server, &walk);
        pages += 1;
        let items = page["TargetGroups"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        names.extend(items.iter().map(|g| text(&g["TargetGroupName"])));
        match page.get("NextMarker") {
            Some(m) => marker = Some(text(m)),
            None => break,
        }
    }
    assert_eq!((pages, names), (3, vec!["g1", "g2", "g3", "tcp", "web"].into_iter().map(String::from).collect()));
    elbv2_err(&server, &["describe-load-balancers", "--marker", "forged"], "ValidationError");
    elbv2_err(&server, &["describe-load-balancers", "--names", "nope"], "LoadBalancerNotFound");
    let unknown = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/nope/0123456789abcdef";
    elbv2_err(
        &server,
        &["register-targets", "--target-group-arn", unknown, "--targets", "Id=172.31.0.5"],
        "TargetGroupNotFound",
    );
}
