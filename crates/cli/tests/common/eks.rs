//! What the EKS tests share: a role EKS may assume, two subnets in two zones, a launched
//! cluster made, an existing one registered and a Fargate profile made, each waited for
//! through the AWS CLI.

use std::path::Path;
use std::time::Duration;

use super::{Server, wait_for};

/// A role trusting `eks.amazonaws.com` (named `name`); its ARN.
pub fn eks_role(server: &Server, name: &str) -> String {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"eks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let role = server.aws_json(&["iam", "create-role", "--role-name", name, "--assume-role-policy-document", trust]);
    role["Role"]["Arn"].as_str().unwrap().to_owned()
}

/// Two subnets of the default VPC in different zones, `first` (when given) one of them.
pub fn two_subnets(server: &Server, first: Option<&str>) -> Vec<String> {
    let all = server.aws_json(&["ec2", "describe-subnets"]);
    let subnets = all["Subnets"].as_array().unwrap();
    let mut chosen: Vec<&serde_json::Value> =
        subnets.iter().filter(|s| Some(s["SubnetId"].as_str().unwrap()) == first).collect();
    for s in subnets {
        if chosen.len() == 2 {
            break;
        }
        if chosen.iter().all(|c| c["AvailabilityZone"] != s["AvailabilityZone"]) {
            chosen.push(s);
        }
    }
    chosen.iter().map(|s| s["SubnetId"].as_str().unwrap().to_owned()).collect()
}

/// The cluster's status as DescribeCluster gives it.
pub fn cluster_status(server: &Server, name: &str) -> String {
    let out = server.aws_json(&["eks", "describe-cluster", "--name", name]);
    out["cluster"]["status"].as_str().unwrap_or_default().to_owned()
}

/// `aws eks create-cluster` of `name` with `role_arn` in two subnets, waited for until ACTIVE
/// (a FAILED cluster fails the test with its description).
pub fn create_cluster(server: &Server, name: &str, role_arn: &str) {
    let vpc = format!("subnetIds={}", two_subnets(server, None).join(","));
    server.aws_json(&["eks", "create-cluster", "--name", name, "--role-arn", role_arn, "--resources-vpc-config", &vpc]);
    wait_for("the cluster to be ACTIVE", Duration::from_secs(240), || {
        let status = cluster_status(server, name);
        assert_ne!(status, "FAILED", "{}", server.aws_json(&["eks", "describe-cluster", "--name", name]));
        status == "ACTIVE"
    });
}

/// `aws eks create-fargate-profile` of `profile` on `cluster` selecting `namespace` (in
/// `subnet`, else the cluster's), waited for until ACTIVE.
pub fn create_fargate_profile(
    server: &Server,
    cluster: &str,
    profile: &str,
    role_arn: &str,
    subnet: Option<&str>,
    namespace: &str,
) {
    let names = ["--cluster-name", cluster, "--fargate-profile-name", profile];
    let selector = format!("namespace={namespace}");
    let mut create = vec!["eks", "create-fargate-profile"];
    create.extend(names);
    create.extend(["--pod-execution-role-arn", role_arn, "--selectors", &selector]);
    if let Some(subnet) = subnet {
        create.extend(["--subnets", subnet]);
    }
    server.aws_json(&create);
    wait_for("the profile to be ACTIVE", Duration::from_secs(60), || {
        let mut describe = vec!["eks", "describe-fargate-profile"];
        describe.extend(names);
        server.aws_json(&describe)["fargateProfile"]["status"] == "ACTIVE"
    });
}

/// Registers an existing cluster (`flotilla eks register` with its `kubeconfig`) as `name`,
/// in `subnet` and one of another zone, and gives it the profile `fargate` for `namespace` in
/// `subnet`, both waited for until ACTIVE.
pub fn register_cluster(server: &Server, name: &str, kubeconfig: &Path, namespace: &str, subnet: &str) {
    let role_arn = eks_role(server, "eks");
    // EKS wants subnets in two zones: the given one, and one of another zone.
    let subnets = two_subnets(server, Some(subnet)).join(",");
    let kubeconfig = kubeconfig.to_str().unwrap();
    let out = server.flotilla(&[
        "eks",
        "register",
        "--name",
        name,
        "--kubeconfig",
        kubeconfig,
        "--role-arn",
        &role_arn,
        "--subnets",
        &subnets,
        "--service-cidr",
        "10.96.0.0/16",
    ]);
    assert!(out.status.success(), "flotilla eks register: {}", String::from_utf8_lossy(&out.stderr));
    wait_for("the registered cluster to be ACTIVE", Duration::from_secs(60), || {
        let status = cluster_status(server, name);
        assert_ne!(status, "FAILED", "{}", server.aws_json(&["eks", "describe-cluster", "--name", name]));
        status == "ACTIVE"
    });
    create_fargate_profile(server, name, "fargate", &role_arn, Some(subnet), namespace);
}
