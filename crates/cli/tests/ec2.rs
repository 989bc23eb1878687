//! EC2 networking through the real AWS CLI: the Query protocol in, XML out, parsed by botocore.

mod common;

use common::Server;
use serde_json::Value;

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// Runs `aws ec2 ...` expecting failure with `code`; returns the CLI's message.
fn ec2_err(server: &Server, args: &[&str], code: &str) -> String {
    let mut full = vec!["ec2"];
    full.extend_from_slice(args);
    let stderr = server.aws_err(&full);
    assert!(stderr.contains(&format!("({code})")), "aws {args:?}: expected {code}, got: {stderr}");
    stderr
}

fn ec2(server: &Server, args: &[&str]) -> Value {
    let mut full = vec!["ec2"];
    full.extend_from_slice(args);
    server.aws_json(&full)
}

fn create_vpc(server: &Server, cidr: &str) -> String {
    text(&ec2(server, &["create-vpc", "--cidr-block", cidr])["Vpc"]["VpcId"]).to_owned()
}

#[test]
fn a_fresh_server_has_the_default_network() {
    let server = Server::start();
    let vpcs = ec2(&server, &["describe-vpcs", "--filters", "Name=is-default,Values=true"]);
    let vpcs = vpcs["Vpcs"].as_array().unwrap();
    assert_eq!(vpcs.len(), 1, "{vpcs:?}");
    let vpc = &vpcs[0];
    assert_eq!(vpc["CidrBlock"], "172.31.0.0/16");
    assert_eq!(vpc["IsDefault"], true);
    assert_eq!(vpc["State"], "available");
    let vpc_id = text(&vpc["VpcId"]);
    assert!(vpc_id.starts_with("vpc-") && vpc_id.len() == 21, "{vpc_id}");

    let subnets = ec2(&server, &["describe-subnets", "--filters", &format!("Name=vpc-id,Values={vpc_id}")]);
    let mut subnets: Vec<(String, String, bool, bool)> = subnets["Subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                text(&s["AvailabilityZone"]).to_owned(),
                text(&s["CidrBlock"]).to_owned(),
                s["DefaultForAz"].as_bool().unwrap(),
                s["MapPublicIpOnLaunch"].as_bool().unwrap(),
            )
        })
        .collect();
    subnets.sort();
    assert!(subnets.len() >= 2, "{subnets:?}");
    assert_eq!(subnets[0], ("us-east-1a".into(), "172.31.0.0/20".into(), true, true));
    assert_eq!(subnets[1], ("us-east-1b".into(), "172.31.16.0/20".into(), true, true));

    let groups = ec2(
        &server,
        &[
            "describe-security-groups",
            "--filters",
            &format!("Name=vpc-id,Values={vpc_id}"),
            "Name=group-name,Values=default",
        ],
    );
    let group = &groups["SecurityGroups"][0];
    let group_id = text(&group["GroupId"]);
    assert_eq!(group["IpPermissions"][0]["IpProtocol"], "-1");
    assert_eq!(group["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"], group_id, "members reach each other");
    assert_eq!(group["IpPermissionsEgress"][0]["IpProtocol"], "-1");
    assert_eq!(group["IpPermissionsEgress"][0]["IpRanges"][0]["CidrIp"], "0.0.0.0/0");
    ec2_err(&server, &["delete-security-group", "--group-id", group_id], "CannotDelete");
    ec2_err(&server, &["delete-security-group", "--group-name", "default"], "CannotDelete");

    let zones = ec2(&server, &["describe-availability-zones"]);
    let names: Vec<&str> =
        zones["AvailabilityZones"].as_array().unwrap().iter().map(|z| text(&z["ZoneName"])).collect();
    assert_eq!(names, ["us-east-1a", "us-east-1b", "us-east-1c"]);
}

#[test]
fn the_seed_security_group_commands_work_verbatim() {
    let server = Server::start();
    let vpc_id = create_vpc(&server, "10.0.0.0/16");
    // shared/seeds: "创建安全组" and "添加入站规则", with this server's VPC id.
    let created = server.aws_json(&[
        "ec2",
        "create-security-group",
        "--group-name",
        "fargate-sg",
        "--description",
        "Security group for Fargate tasks",
        "--vpc-id",
        &vpc_id,
    ]);
    let group_id = text(&created["GroupId"]).to_owned();
    assert!(group_id.starts_with("sg-") && group_id.len() == 20, "{group_id}");
    let authorized = server.aws_json(&[
        "ec2",
        "authorize-security-group-ingress",
        "--group-id",
        &group_id,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "0.0.0.0/0",
    ]);
    assert_eq!(authorized["Return"], true);
    let rule = &authorized["SecurityGroupRules"][0];
    assert!(text(&rule["SecurityGroupRuleId"]).starts_with("sgr-"));
    assert_eq!(rule["GroupId"], group_id.as_str());
    assert_eq!((&rule["IpProtocol"], &rule["FromPort"], &rule["ToPort"]), (&"tcp".into(), &80.into(), &80.into()));
    assert_eq!(rule["CidrIpv4"], "0.0.0.0/0");
    assert_eq!(rule["IsEgress"], false);

    let described = ec2(&server, &["describe-security-groups", "--group-ids", &group_id]);
    let group = &described["SecurityGroups"][0];
    assert_eq!(group["GroupName"], "fargate-sg");
    assert_eq!(group["Description"], "Security group for Fargate tasks");
    assert_eq!(group["VpcId"], vpc_id.as_str());
    let ingress = &group["IpPermissions"][0];
    assert_eq!(
        (&ingress["IpProtocol"], &ingress["FromPort"], &ingress["ToPort"]),
        (&"tcp".into(), &80.into(), &80.into())
    );
    assert_eq!(ingress["IpRanges"][0]["CidrIp"], "0.0.0.0/0");

    // The same rule again, and malformed ones.
    let port80 = ["authorize-security-group-ingress", "--group-id", &group_id, "--protocol", "tcp", "--port", "80"];
    ec2_err(&server, &[&port80[..], &["--cidr", "0.0.0.0/0"]].concat(), "InvalidPermission.Duplicate");
    ec2_err(&server, &[&port80[..], &["--cidr", "10.0.0.0/33"]].concat(), "InvalidPermission.Malformed");
    ec2_err(&server, &[&port80[..], &["--cidr", "10.0.0.1/8"]].concat(), "InvalidPermission.Malformed");
    ec2_err(
        &server,
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &group_id,
            "--protocol",
            "tcp",
            "--port",
            "90-80",
            "--cidr",
            "10.0.0.0/8",
        ],
        "InvalidPermission.Malformed",
    );
    ec2_err(
        &server,
        &[
            "authorize-security-group-ingress",
            "--group-id",
            "sg-0123456789abcdef0",
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            "0.0.0.0/0",
        ],
        "InvalidGroup.NotFound",
    );

    // The legacy flat form, the JSON form with a source group, and egress.
    ec2(
        &server,
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &group_id,
            "--ip-protocol",
            "tcp",
            "--from-port",
            "443",
            "--to-port",
            "443",
            "--cidr-ip",
            "10.0.0.0/8",
        ],
    );
    let self_rule = format!(
        r#"[{{"IpProtocol":"udp","FromPort":53,"ToPort":53,"UserIdGroupPairs":[{{"GroupId":"{group_id}","Description":"dns"}}]}}]"#
    );
    ec2(&server, &["authorize-security-group-ingress", "--group-id", &group_id, "--ip-permissions", &self_rule]);
    ec2(
        &server,
        &[
            "authorize-security-group-egress",
            "--group-id",
            &group_id,
            "--protocol",
            "tcp",
            "--port",
            "5432",
            "--cidr",
            "10.0.2.0/24",
        ],
    );
    let group = &ec2(&server, &["describe-security-groups", "--group-ids", &group_id])["SecurityGroups"][0];
    assert_eq!(group["IpPermissions"].as_array().unwrap().len(), 3, "{group}");
    let dns = group["IpPermissions"].as_array().unwrap().iter().find(|p| p["IpProtocol"] == "udp").unwrap();
    assert_eq!(dns["UserIdGroupPairs"][0]["GroupId"], group_id.as_str());
    assert_eq!(dns["UserIdGroupPairs"][0]["Description"], "dns");
    assert_eq!(group["IpPermissionsEgress"].as_array().unwrap().len(), 2, "{group}");

    // Revoke what was granted; revoking it again finds nothing.
    let revoke80 = [
        "revoke-security-group-ingress",
        "--group-id",
        &group_id,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "0.0.0.0/0",
    ];
    let revoked = ec2(&server, &revoke80);
    assert_eq!(revoked["Return"], true);
    assert_eq!(revoked["RevokedSecurityGroupRules"][0]["SecurityGroupRuleId"], rule["SecurityGroupRuleId"]);
    ec2_err(&server, &revoke80, "InvalidPermission.NotFound");
    ec2(
        &server,
        &[
            "revoke-security-group-egress",
            "--group-id",
            &group_id,
            "--protocol",
            "tcp",
            "--port",
            "5432",
            "--cidr",
            "10.0.2.0/24",
        ],
    );
    ec2_err(
        &server,
        &[
            "revoke-security-group-egress",
            "--group-id",
            &group_id,
            "--protocol",
            "tcp",
            "--port",
            "5432",
            "--cidr",
            "10.0.2.0/24",
        ],
        "InvalidPermission.NotFound",
    );

    ec2_err(
        &server,
        &["create-security-group", "--group-name", "fargate-sg", "--description", "again", "--vpc-id", &vpc_id],
        "InvalidGroup.Duplicate",
    );
    ec2(&server, &["delete-security-group", "--group-id", &group_id]);
    ec2_err(&server, &["describe-security-groups", "--group-ids", &group_id], "InvalidGroup.NotFound");
}

#[test]
fn vpcs_and_subnets_have_ec2s_rules_and_errors() {
    let server = Server::start();
    let created = ec2(
        &server,
        &[
            "create-vpc",
            "--cidr-block",
            "10.0.0.0/16",
            "--tag-specifications",
            "ResourceType=vpc,Tags=[{Key=Name,Value=prod}]",
        ],
    );
    let vpc_id = text(&created["Vpc"]["VpcId"]).to_owned();
    assert_eq!(created["Vpc"]["Tags"][0]["Value"], "prod");
    assert_eq!(created["Vpc"]["IsDefault"], false);

    let stderr = ec2_err(&server, &["create-vpc", "--cidr-block", "10.0.128.0/20"], "InvalidVpc.Range");
    assert!(stderr.contains(&vpc_id) && stderr.contains("one host"), "{stderr}");
    ec2_err(&server, &["create-vpc", "--cidr-block", "10.0.0.0/8"], "InvalidVpc.Range");
    ec2_err(&server, &["create-vpc", "--cidr-block", "10.1.0.0/29"], "InvalidVpc.Range");
    ec2_err(&server, &["create-vpc", "--cidr-block", "ten/16"], "InvalidParameterValue");

    for filter in ["Name=tag:Name,Values=prod", "Name=cidr,Values=10.0.0.0/16", &format!("Name=vpc-id,Values={vpc_id}")]
    {
        let found = ec2(&server, &["describe-vpcs", "--filters", filter]);
        assert_eq!(found["Vpcs"].as_array().unwrap().len(), 1, "{filter}: {found}");
    }
    assert_eq!(ec2(&server, &["describe-vpcs", "--vpc-ids", &vpc_id])["Vpcs"][0]["VpcId"], vpc_id.as_str());
    ec2_err(&server, &["describe-vpcs", "--vpc-ids", "vpc-0123456789abcdef0"], "InvalidVpcID.NotFound");
    ec2_err(&server, &["describe-vpcs", "--filters", "Name=flavour,Values=x"], "InvalidParameterValue");

    let subnet = ec2(&server, &["create-subnet", "--vpc-id", &vpc_id, "--cidr-block", "10.0.1.0/24"]);
    let subnet_id = text(&subnet["Subnet"]["SubnetId"]).to_owned();
    assert_eq!(subnet["Subnet"]["AvailabilityZone"], "us-east-1a");
    assert_eq!(subnet["Subnet"]["AvailableIpAddressCount"], 251, "five addresses are reserved");
    let b = ec2(
        &server,
        &["create-subnet", "--vpc-id", &vpc_id, "--cidr-block", "10.0.2.0/24", "--availability-zone", "us-east-1b"],
    );
    let b_id = text(&b["Subnet"]["SubnetId"]).to_owned();
    ec2_err(&server, &["create-subnet", "--vpc-id", &vpc_id, "--cidr-block", "10.1.0.0/24"], "InvalidSubnet.Range");
    ec2_err(&server, &["create-subnet", "--vpc-id", &vpc_id, "--cidr-block", "10.0.3.0/29"], "InvalidSubnet.Range");
    ec2_err(
        &server,
        &["create-subnet", "--vpc-id", &vpc_id, "--cidr-block", "10.0.1.128/25"],
        "InvalidSubnet.Conflict",
    );
    ec2_err(
        &server,
        &["create-subnet", "--vpc-id", "vpc-0123456789abcdef0", "--cidr-block", "10.0.9.0/24"],
        "InvalidVpcID.NotFound",
    );

    let in_vpc = ec2(&server, &["describe-subnets", "--filters", &format!("Name=vpc-id,Values={vpc_id}")]);
    assert_eq!(in_vpc["Subnets"].as_array().unwrap().len(), 2);
    let in_b = ec2(
        &server,
        &[
            "describe-subnets",
            "--filters",
            &format!("Name=vpc-id,Values={vpc_id}"),
            "Name=availability-zone,Values=us-east-1b",
        ],
    );
    assert_eq!(in_b["Subnets"][0]["SubnetId"], b_id.as_str());
    assert_eq!(
        ec2(&server, &["describe-subnets", "--subnet-ids", &subnet_id])["Subnets"][0]["CidrBlock"],
        "10.0.1.0/24"
    );
    ec2_err(&server, &["describe-subnets", "--subnet-ids", "subnet-0123456789abcdef0"], "InvalidSubnetID.NotFound");

    ec2(&server, &["create-tags", "--resources", &subnet_id, "--tags", "Key=tier,Value=private"]);
    let tagged = ec2(&server, &["describe-subnets", "--filters", "Name=tag:tier,Values=private"]);
    assert_eq!(tagged["Subnets"][0]["SubnetId"], subnet_id.as_str());
    ec2(&server, &["delete-tags", "--resources", &subnet_id, "--tags", "Key=tier"]);
    assert!(
        ec2(&server, &["describe-subnets", "--filters", "Name=tag-key,Values=tier"])["Subnets"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Nothing goes while something depends on it.
    let group =
        ec2(&server, &["create-security-group", "--group-name", "app", "--description", "app", "--vpc-id", &vpc_id]);
    let group_id = text(&group["GroupId"]).to_owned();
    ec2_err(&server, &["delete-vpc", "--vpc-id", &vpc_id], "DependencyViolation");
    ec2(&server, &["delete-subnet", "--subnet-id", &subnet_id]);
    ec2(&server, &["delete-subnet", "--subnet-id", &b_id]);
    ec2_err(&server, &["delete-subnet", "--subnet-id", &b_id], "InvalidSubnetID.NotFound");
    ec2_err(&server, &["delete-vpc", "--vpc-id", &vpc_id], "DependencyViolation");
    ec2(&server, &["delete-security-group", "--group-id", &group_id]);
    ec2(&server, &["delete-vpc", "--vpc-id", &vpc_id]);
    ec2_err(&server, &["describe-vpcs", "--vpc-ids", &vpc_id], "InvalidVpcID.NotFound");
    ec2_err(&server, &["delete-vpc", "--vpc-id", "vpc-nothex"], "InvalidVpcID.Malformed");
    // The block is free again.
    create_vpc(&server, "10.0.0.0/16");
}

#[test]
fn security_groups_in_the_default_vpc_and_references() {
    let server = Server::start();
    // No --vpc-id: the default VPC, and GroupName works as an id there.
    let web =
        text(&ec2(&server, &["create-security-group", "--group-name", "web", "--description", "web tier"])["GroupId"])
            .to_owned();
    let db =
        text(&ec2(&server, &["create-security-group", "--group-name", "db", "--description", "db tier"])["GroupId"])
            .to_owned();
    let default_vpc = ec2(&server, &["describe-vpcs", "--filters", "Name=is-default,Values=true"]);
    let default_vpc = text(&default_vpc["Vpcs"][0]["VpcId"]).to_owned();
    let by_name = ec2(&server, &["describe-security-groups", "--group-names", "web"]);
    assert_eq!(by_name["SecurityGroups"][0]["GroupId"], web.as_str());
    assert_eq!(by_name["SecurityGroups"][0]["VpcId"], default_vpc.as_str());
    ec2_err(&server, &["describe-security-groups", "--group-names", "nope"], "InvalidGroup.NotFound");
    ec2_err(
        &server,
        &["create-security-group", "--group-name", "default", "--description", "x"],
        "InvalidGroup.Reserved",
    );

    // db admits web by group name (the CLI's --source-group), which pins web.
    ec2(
        &server,
        &[
            "authorize-security-group-ingress",
            "--group-name",
            "db",
            "--protocol",
            "tcp",
            "--port",
            "5432",
            "--source-group",
            "web",
        ],
    );
    let db_group = &ec2(&server, &["describe-security-groups", "--group-ids", &db])["SecurityGroups"][0];
    assert_eq!(db_group["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"], web.as_str());
    let filtered =
        ec2(&server, &["describe-security-groups", "--filters", &format!("Name=ip-permission.group-id,Values={web}")]);
    assert_eq!(filtered["SecurityGroups"][0]["GroupId"], db.as_str());
    ec2_err(&server, &["delete-security-group", "--group-name", "web"], "DependencyViolation");
    ec2(
        &server,
        &[
            "revoke-security-group-ingress",
            "--group-name",
            "db",
            "--protocol",
            "tcp",
            "--port",
            "5432",
            "--source-group",
            "web",
        ],
    );
    ec2(&server, &["delete-security-group", "--group-name", "web"]);
    ec2(&server, &["delete-security-group", "--group-id", &db]);
    ec2_err(&server, &["delete-security-group", "--group-id", &db], "InvalidGroup.NotFound");
    ec2_err(&server, &["delete-security-group", "--group-id", "sg-zz"], "InvalidGroupId.Malformed");
}

#[test]
fn network_interfaces_are_described() {
    let server = Server::start();
    assert!(ec2(&server, &["describe-network-interfaces"])["NetworkInterfaces"].as_array().unwrap().is_empty());
    let subnets = ec2(&server, &["describe-subnets"]);
    let subnet_id = text(&subnets["Subnets"][0]["SubnetId"]);
    let none =
        ec2(&server, &["describe-network-interfaces", "--filters", &format!("Name=subnet-id,Values={subnet_id}")]);
    assert!(none["NetworkInterfaces"].as_array().unwrap().is_empty());
    ec2_err(
        &server,
        &["describe-network-interfaces", "--network-interface-ids", "eni-0123456789abcdef0"],
        "InvalidNetworkInterfaceID.NotFound",
    );
    ec2_err(&server, &["describe-network-interfaces", "--filters", "Name=colour,Values=x"], "InvalidParameterValue");
}

#[test]
fn dry_runs_and_unknown_actions_get_ec2_errors() {
    let server = Server::start();
    ec2_err(&server, &["create-vpc", "--cidr-block", "10.0.0.0/16", "--dry-run"], "DryRunOperation");
    assert!(
        ec2(&server, &["describe-vpcs", "--filters", "Name=cidr,Values=10.0.0.0/16"])["Vpcs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    ec2_err(&server, &["describe-instances"], "InvalidAction");
}
