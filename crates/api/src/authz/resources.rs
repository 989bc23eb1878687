//! The resources of every service but ECS, after AWS's Service Authorization Reference: an
//! operation on a named resource acts on its ARN, a Describe/List or a create whose ARN is not
//! known yet acts on `*` or the ARN pattern AWS documents for it.

use flotilla_types::Identity;
use serde_json::Value;

use super::Target;
use crate::server::ApiState;

fn text<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn list<'a>(input: &'a Value, key: &str) -> Vec<&'a str> {
    input.get(key).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// Targets for `field` in `input` (one value or a list), or `*` when it is absent.
fn named(input: &Value, field: &str, arn: impl Fn(&str) -> String) -> Vec<Target> {
    let mut names = list(input, field);
    if let Some(one) = text(input, field) {
        names.push(one);
    }
    if names.is_empty() { vec![Target::any()] } else { names.into_iter().map(|n| Target::new(arn(n))).collect() }
}

fn keep_arn(s: &str) -> String {
    s.to_owned()
}

/// Operations AWS answers for anyone with valid credentials.
pub(super) fn always_allowed(signing_name: &str, operation: &str) -> bool {
    matches!((signing_name, operation), ("sts", "GetCallerIdentity"))
}

pub(super) async fn targets(
    state: &ApiState,
    id: &Identity,
    signing_name: &str,
    operation: &str,
    input: &Value,
) -> Vec<Target> {
    match signing_name {
        "logs" => logs(id, operation, input),
        "ssm" => match operation {
            "GetParameters" | "DeleteParameters" => named(input, "Names", |n| id.ssm_parameter(n)),
            "GetParameter" | "PutParameter" | "DeleteParameter" => named(input, "Name", |n| id.ssm_parameter(n)),
            "GetParametersByPath" => named(input, "Path", |n| id.ssm_parameter(n)),
            _ => vec![Target::any()],
        },
        "secretsmanager" => match (operation, text(input, "SecretId")) {
            ("CreateSecret", _) => named(input, "Name", |n| id.secret(n, "??????")),
            (_, Some(secret)) => vec![Target::new(secret_arn(state, id, secret).await)],
            _ => vec![Target::any()],
        },
        "servicediscovery" => servicediscovery(id, operation, input),
        "acm" => named(input, "CertificateArn", keep_arn),
        "ec2" => ec2(id, operation, input),
        "elasticloadbalancing" => elbv2(id, operation, input),
        "elasticfilesystem" => efs(id, operation, input),
        "eks" => eks(state, id, operation, input).await,
        "iam" => iam(id, operation, input),
        "sts" => match operation {
            "AssumeRole" => named(input, "RoleArn", keep_arn),
            _ => vec![Target::any()],
        },
        "kms" => kms(id, operation, input),
        // Flotilla's own operations and anything not mapped yet: the action on `*`.
        _ => vec![Target::any()],
    }
}

fn logs(id: &Identity, operation: &str, input: &Value) -> Vec<Target> {
    let group = text(input, "logGroupName").or_else(|| text(input, "logGroupIdentifier"));
    let group_arn = |g: &str| if g.starts_with("arn:") { g.to_owned() } else { format!("{}:*", id.log_group(g)) };
    match (operation, group, text(input, "logStreamName")) {
        ("PutLogEvents" | "GetLogEvents" | "DeleteLogStream", Some(g), Some(s)) if !g.starts_with("arn:") => {
            vec![Target::new(id.log_stream(g, s))]
        }
        ("TagResource" | "UntagResource" | "ListTagsForResource", _, _) => named(input, "resourceArn", keep_arn),
        ("DescribeLogGroups", _, _) => vec![Target::any()],
        (_, Some(g), _) => vec![Target::new(group_arn(g))],
        _ => vec![Target::any()],
    }
}

/// A secret's ARN from its name or ARN (the name's ARN carries a random suffix only the store
/// knows; a secret that does not exist is checked as `NAME-??????`, then not found).
async fn secret_arn(state: &ApiState, id: &Identity, secret: &str) -> String {
    if secret.starts_with("arn:") {
        return secret.to_owned();
    }
    match state.secrets.as_deref() {
        Some(secrets) => match secrets.describe_secret(secret).await {
            Ok(found) => found.arn,
            Err(_) => id.secret(secret, "??????"),
        },
        None => id.secret(secret, "??????"),
    }
}

fn servicediscovery(id: &Identity, operation: &str, input: &Value) -> Vec<Target> {
    match operation {
        "GetNamespace" | "DeleteNamespace" => named(input, "Id", |n| id.servicediscovery_namespace(n)),
        "GetService" | "DeleteService" => named(input, "Id", |n| id.servicediscovery_service(n)),
        "CreateService" => named(input, "NamespaceId", |n| id.servicediscovery_namespace(n)),
        "RegisterInstance"
        | "DeregisterInstance"
        | "GetInstance"
        | "ListInstances"
        | "GetInstancesHealthStatus"
        | "UpdateInstanceCustomHealthStatus" => named(input, "ServiceId", |n| id.servicediscovery_service(n)),
        "TagResource" | "UntagResource" | "ListTagsForResource" => named(input, "ResourceARN", keep_arn),
        _ => vec![Target::any()],
    }
}

/// An EC2 resource id's ARN, by its prefix.
fn ec2_arn(id: &Identity, resource: &str) -> String {
    match resource.split_once('-').map(|(p, _)| p) {
        Some("vpc") => id.vpc(resource),
        Some("subnet") => id.subnet(resource),
        Some("sg") => id.security_group(resource),
        Some("sgr") => id.security_group_rule(resource),
        Some("eni") => id.network_interface(resource),
        _ => "*".to_owned(),
    }
}

fn ec2(id: &Identity, operation: &str, input: &Value) -> Vec<Target> {
    let mut out = match operation {
        "CreateVpc" => vec![Target::new(id.vpc("*"))],
        "DeleteVpc" => named(input, "VpcId", |v| id.vpc(v)),
        "CreateSubnet" => vec![Target::new(id.subnet("*"))],
        "DeleteSubnet" => named(input, "SubnetId", |s| id.subnet(s)),
        "CreateSecurityGroup" => vec![Target::new(id.security_group("*"))],
        "DeleteSecurityGroup"
        | "AuthorizeSecurityGroupIngress"
        | "AuthorizeSecurityGroupEgress"
        | "RevokeSecurityGroupIngress"
        | "RevokeSecurityGroupEgress" => named(input, "GroupId", |g| id.security_group(g)),
        "CreateTags" | "DeleteTags" => named(input, "Resources", |r| ec2_arn(id, r)),
        _ => vec![Target::any()],
    };
    // Creating in a VPC acts on the VPC too.
    if matches!(operation, "CreateSubnet" | "CreateSecurityGroup")
        && let Some(vpc) = text(input, "VpcId")
    {
        out.push(Target::new(id.vpc(vpc)));
    }
    out
}

fn elbv2(id: &Identity, operation: &str, input: &Value) -> Vec<Target> {
    match operation {
        "CreateLoadBalancer" => {
            let kind = if text(input, "Type") == Some("network") { "net" } else { "app" };
            named(input, "Name", |n| id.load_balancer(kind, n, "*"))
        }
        "CreateTargetGroup" => named(input, "Name", |n| id.target_group(n, "*")),
        "DeleteLoadBalancer" | "ModifyLoadBalancerAttributes" | "CreateListener" => {
            named(input, "LoadBalancerArn", keep_arn)
        }
        "ModifyTargetGroup"
        | "DeleteTargetGroup"
        | "ModifyTargetGroupAttributes"
        | "RegisterTargets"
        | "DeregisterTargets" => named(input, "TargetGroupArn", keep_arn),
        "ModifyListener" | "DeleteListener" | "CreateRule" => named(input, "ListenerArn", keep_arn),
        "ModifyRule" | "DeleteRule" => named(input, "RuleArn", keep_arn),
        "SetRulePriorities" => {
            let rules: Vec<Target> = input
                .get("RulePriorities")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|r| text(r, "RuleArn")).map(Target::new).collect())
                .unwrap_or_default();
            if rules.is_empty() { vec![Target::any()] } else { rules }
        }
        "AddTags" | "RemoveTags" => named(input, "ResourceArns", keep_arn),
        // ELBv2's Describe* operations have no resource-level permissions.
        _ => vec![Target::any()],
    }
}

fn efs(id: &Identity, operation: &str, input: &Value) -> Vec<Target> {
    let by_id = |r: &str| if r.starts_with("fsap-") { id.efs_access_point(r) } else { id.efs_file_system(r) };
    match operation {
        "CreateFileSystem" => vec![Target::new(id.efs_file_system("*"))],
        "DeleteAccessPoint" => named(input, "AccessPointId", |a| id.efs_access_point(a)),
        "TagResource" | "UntagResource" | "ListTagsForResource" => named(input, "ResourceId", by_id),
        "DescribeAccessPoints" if text(input, "AccessPointId").is_some() => {
            named(input, "AccessPointId", |a| id.efs_access_point(a))
        }
        _ if text(input, "FileSystemId").is_some() => named(input, "FileSystemId", |f| id.efs_file_system(f)),
        _ => vec![Target::any()],
    }
}

/// EKS's resources: a cluster by name, a Fargate profile by its ARN (its id looked up, or `*`
/// when it does not exist), tagging by the ARN given; ListClusters acts on `*`.
async fn eks(state: &ApiState, id: &Identity, operation: &str, input: &Value) -> Vec<Target> {
    match operation {
        "CreateCluster" | "DescribeCluster" | "DeleteCluster" => named(input, "name", |n| id.eks_cluster(n)),
        "CreateFargateProfile" | "ListFargateProfiles" => named(input, "clusterName", |n| id.eks_cluster(n)),
        "DescribeFargateProfile" | "DeleteFargateProfile" => {
            let (Some(cluster), Some(name)) = (text(input, "clusterName"), text(input, "fargateProfileName")) else {
                return vec![Target::any()];
            };
            let known = match state.eks.as_deref() {
                Some(eks) => eks.profiles(cluster).await.unwrap_or_default().into_iter().find(|p| p.name == name),
                None => None,
            };
            vec![Target::new(known.map_or_else(|| id.eks_fargate_profile(cluster, name, "*"), |p| p.arn))]
        }
        "TagResource" | "UntagResource" | "ListTagsForResource" => named(input, "resourceArn", keep_arn),
        _ => vec![Target::any()],
    }
}

/// IAM's resources: users, roles and customer-managed policies of the account (IAM is global:
/// no region).
fn iam(id: &Identity, operation: &str, input: &Value) -> Vec<Target> {
    let account = &id.account;
    if let Some(arn) = text(input, "PolicyArn").filter(|_| !operation.contains("User") && !operation.contains("Role")) {
        return vec![Target::new(arn)];
    }
    if let Some(user) = text(input, "UserName") {
        return vec![Target::new(format!("arn:aws:iam::{account}:user/{user}"))];
    }
    if let Some(role) = text(input, "RoleName") {
        return vec![Target::new(format!("arn:aws:iam::{account}:role/{role}"))];
    }
    if operation == "CreatePolicy"
        && let Some(name) = text(input, "PolicyName")
    {
        return vec![Target::new(format!("arn:aws:iam::{account}:policy/{name}"))];
    }
    vec![Target::any()]
}

fn kms(id: &Identity, operation: &str, input: &Value) -> Vec<Target> {
    let region = &id.region;
    let account = &id.account;
    let key = |k: &str| {
        if k.starts_with("arn:") {
            k.to_owned()
        } else if k.starts_with("alias/") {
            format!("arn:aws:kms:{region}:{account}:{k}")
        } else {
            format!("arn:aws:kms:{region}:{account}:key/{k}")
        }
    };
    match operation {
        "CreateKey" | "ListKeys" | "ListAliases" => vec![Target::any()],
        _ => named(input, "KeyId", key),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn resources_by_service() {
        let id = Identity::new("us-east-1", "123456789012");
        let t = ec2(&id, "AuthorizeSecurityGroupIngress", &json!({"GroupId": "sg-1"}));
        assert_eq!(t, vec![Target::new("arn:aws:ec2:us-east-1:123456789012:security-group/sg-1")]);
        assert_eq!(ec2(&id, "DescribeVpcs", &json!({})), vec![Target::any()]);
        let t = logs(&id, "PutLogEvents", &json!({"logGroupName": "/app", "logStreamName": "s"}));
        assert_eq!(t, vec![Target::new("arn:aws:logs:us-east-1:123456789012:log-group:/app:log-stream:s")]);
        let t = logs(&id, "CreateLogStream", &json!({"logGroupName": "/app", "logStreamName": "s"}));
        assert_eq!(t, vec![Target::new("arn:aws:logs:us-east-1:123456789012:log-group:/app:*")]);
        let t = elbv2(&id, "CreateLoadBalancer", &json!({"Name": "web"}));
        assert_eq!(t, vec![Target::new("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/*")]);
        let t = efs(&id, "DeleteFileSystem", &json!({"FileSystemId": "fs-1"}));
        assert_eq!(t, vec![Target::new("arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-1")]);
        let t = iam(&id, "PutUserPolicy", &json!({"UserName": "alice"}));
        assert_eq!(t, vec![Target::new("arn:aws:iam::123456789012:user/alice")]);
    }
}
