//! Every request is authorised by the caller's IAM policies, end to end with the real AWS CLI
//! and boto3: a user allowed `ecs:Describe*`/`ecs:List*` on one cluster reads it, cannot
//! RunTask and cannot see another cluster; an explicit Deny beats an Allow; `aws:SourceIp`
//! is the connection's address; EC2 and ELBv2 refuse with their own codes; `iam:PassRole` is
//! needed to hand a role to a task. The root keys `flotilla up` prints may do everything.

mod common;

use std::process::Output;
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

struct User {
    name: String,
    key: String,
    secret: String,
}

fn create_user(server: &Server, name: &str) -> User {
    server.aws_json(&["iam", "create-user", "--user-name", name]);
    let key = server.aws_json(&["iam", "create-access-key", "--user-name", name]);
    User {
        name: name.to_owned(),
        key: key["AccessKey"]["AccessKeyId"].as_str().unwrap().to_owned(),
        secret: key["AccessKey"]["SecretAccessKey"].as_str().unwrap().to_owned(),
    }
}

fn put_policy(server: &Server, user: &User, name: &str, statements: Value) {
    let document = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
    server.aws_json(&[
        "iam",
        "put-user-policy",
        "--user-name",
        &user.name,
        "--policy-name",
        name,
        "--policy-document",
        &document,
    ]);
}

/// The AWS CLI as `user`.
fn aws_as(server: &Server, user: &User, args: &[&str]) -> Output {
    server
        .aws_command()
        .env("AWS_ACCESS_KEY_ID", &user.key)
        .env("AWS_SECRET_ACCESS_KEY", &user.secret)
        .args(args)
        .output()
        .expect("the aws CLI runs")
}

/// Waits until `user` may do `args` (a policy just written is in force within moments), then
/// returns the answer.
fn allowed(server: &Server, user: &User, args: &[&str]) -> Value {
    let mut last = String::new();
    let mut answer = Value::Null;
    common::wait_for(&format!("{args:?} to be allowed ({last})"), Duration::from_secs(10), || {
        let out = aws_as(server, user, args);
        if out.status.success() {
            answer = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            true
        } else {
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            false
        }
    });
    answer
}

fn refused(server: &Server, user: &User, args: &[&str]) -> String {
    let out = aws_as(server, user, args);
    assert!(!out.status.success(), "{args:?} was allowed: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn account(server: &Server) -> String {
    server.aws_json(&["sts", "get-caller-identity"])["Account"].as_str().unwrap().to_owned()
}

fn register(server: &Server, family: &str, extra: Value) -> String {
    let mut body = common::task_definition(family);
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let out = server.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &body.to_string()]);
    out["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_owned()
}

#[test]
fn one_clusters_reader_reads_it_and_nothing_else() {
    let server = Server::start_no_agent();
    let account = account(&server);
    for cluster in ["prod", "dev"] {
        server.aws_json(&["ecs", "create-cluster", "--cluster-name", cluster]);
    }
    let web = register(&server, "web", json!({}));
    let prod = format!("arn:aws:ecs:us-east-1:{account}:cluster/prod");
    let alice = create_user(&server, "alice");
    put_policy(
        &server,
        &alice,
        "prod-reader",
        json!([{
            "Effect": "Allow",
            "Action": ["ecs:Describe*", "ecs:List*"],
            "Resource": "*",
            "Condition": {"ArnEquals": {"ecs:cluster": prod}}
        }]),
    );

    let clusters = allowed(&server, &alice, &["ecs", "describe-clusters", "--clusters", "prod"]);
    assert_eq!(clusters["clusters"][0]["clusterArn"], prod.as_str());
    allowed(&server, &alice, &["ecs", "list-tasks", "--cluster", "prod"]);
    allowed(&server, &alice, &["ecs", "list-services", "--cluster", prod.as_str()]);

    // Not the other cluster, by name or by ARN, nor anything in it.
    let err = refused(&server, &alice, &["ecs", "describe-clusters", "--clusters", "dev"]);
    assert!(err.contains("(AccessDeniedException)"), "{err}");
    assert!(
        err.contains(&format!(
            "User: arn:aws:iam::{account}:user/alice is not authorized to perform: ecs:DescribeClusters on resource: \
             arn:aws:ecs:us-east-1:{account}:cluster/dev because no identity-based policy allows the ecs:DescribeClusters action"
        )),
        "{err}"
    );
    let dev_arn = format!("arn:aws:ecs:us-east-1:{account}:cluster/dev");
    refused(&server, &alice, &["ecs", "describe-clusters", "--clusters", &dev_arn]);
    refused(&server, &alice, &["ecs", "list-tasks", "--cluster", "dev"]);
    refused(&server, &alice, &["ecs", "describe-clusters", "--clusters", "prod", "dev"]);

    // Reading is not running.
    let err = refused(&server, &alice, &["ecs", "run-task", "--cluster", "prod", "--task-definition", "web"]);
    assert!(err.contains("(AccessDeniedException)"), "{err}");
    assert!(
        err.contains(&format!(
            "User: arn:aws:iam::{account}:user/alice is not authorized to perform: ecs:RunTask on resource: {web} \
             because no identity-based policy allows the ecs:RunTask action"
        )),
        "{err}"
    );

    // The same through boto3, raw error shape included.
    let script = r#"
import boto3, botocore, json, sys
ecs = boto3.client("ecs", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
out = {"prod": ecs.describe_clusters(clusters=["prod"])["clusters"][0]["clusterName"]}
try:
    ecs.describe_clusters(clusters=["dev"])
    out["dev"] = "allowed"
except botocore.exceptions.ClientError as e:
    out["dev"] = [e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]]
print(json.dumps(out))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &server.endpoint(), &alice.key, &alice.secret])
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("python3 with boto3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer, json!({"prod": "prod", "dev": ["AccessDeniedException", 403]}));

    // An explicit Deny beats the Allow.
    put_policy(
        &server,
        &alice,
        "no-services",
        json!([{"Effect": "Deny", "Action": "ecs:ListServices", "Resource": "*"}]),
    );
    common::wait_for("the deny to apply", Duration::from_secs(10), || {
        let out = aws_as(&server, &alice, &["ecs", "list-services", "--cluster", "prod"]);
        let err = String::from_utf8_lossy(&out.stderr);
        !out.status.success() && err.contains("with an explicit deny in an identity-based policy")
    });
    allowed(&server, &alice, &["ecs", "list-tasks", "--cluster", "prod"]);

    // Other protocols refuse with their own codes.
    let err = refused(&server, &alice, &["ec2", "describe-vpcs"]);
    assert!(err.contains("(UnauthorizedOperation)"), "{err}");
    assert!(err.contains("You are not authorized to perform this operation. User: "), "{err}");
    assert!(err.contains("ec2:DescribeVpcs"), "{err}");
    let err = refused(&server, &alice, &["elbv2", "describe-load-balancers"]);
    assert!(err.contains("(AccessDenied)"), "{err}");
    assert!(err.contains("elasticloadbalancing:DescribeLoadBalancers"), "{err}");

    // The root may do everything, as before.
    server.aws_json(&["ecs", "describe-clusters", "--clusters", "dev"]);
    server.aws_json(&["ec2", "describe-vpcs"]);
}

#[test]
fn source_ip_conditions_see_the_connections_address() {
    let server = Server::start_no_agent();
    let local = create_user(&server, "local");
    put_policy(
        &server,
        &local,
        "from-here",
        json!([{"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}]),
    );
    let remote = create_user(&server, "remote");
    put_policy(
        &server,
        &remote,
        "from-the-office",
        json!([{"Effect": "Allow", "Action": "ecs:ListClusters", "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:db8::/32"]}}}]),
    );
    allowed(&server, &local, &["ecs", "list-clusters"]);
    // Give the second user's policy the same moment to apply before concluding from a refusal.
    let _ = allowed(&server, &local, &["ecs", "list-clusters"]);
    let err = refused(&server, &remote, &["ecs", "list-clusters"]);
    assert!(err.contains("(AccessDeniedException)") && err.contains("ecs:ListClusters on resource: *"), "{err}");
}

#[test]
fn handing_a_role_to_a_task_needs_pass_role() {
    let server = Server::start_no_agent();
    let account = account(&server);
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    .to_string();
    server.aws_json(&["iam", "create-role", "--role-name", "app", "--assume-role-policy-document", &trust]);
    let role = format!("arn:aws:iam::{account}:role/app");
    register(&server, "with-role", json!({"taskRoleArn": role}));

    let deployer = create_user(&server, "deployer");
    put_policy(
        &server,
        &deployer,
        "ecs",
        json!([{"Effect": "Allow", "Action": ["ecs:RunTask", "ecs:RegisterTaskDefinition"], "Resource": "*"}]),
    );
    let run = ["ecs", "run-task", "--task-definition", "with-role", "--launch-type", "FARGATE"];
    common::wait_for("PassRole to be the refusal", Duration::from_secs(10), || {
        let out = aws_as(&server, &deployer, &run);
        let err = String::from_utf8_lossy(&out.stderr);
        !out.status.success()
            && err.contains("(AccessDeniedException)")
            && err.contains(&format!(
                "User: arn:aws:iam::{account}:user/deployer is not authorized to perform: iam:PassRole on resource: {role}"
            ))
    });
    // Registering a task definition that names the role needs it too.
    let mut body = common::task_definition("another");
    body["executionRoleArn"] = json!(role);
    let err = refused(&server, &deployer, &["ecs", "register-task-definition", "--cli-input-json", &body.to_string()]);
    assert!(err.contains("iam:PassRole"), "{err}");

    // With PassRole on that role, RunTask is authorised (whatever the task's fate after).
    put_policy(&server, &deployer, "pass", json!([{"Effect": "Allow", "Action": "iam:PassRole", "Resource": role}]));
    common::wait_for("PassRole to be granted", Duration::from_secs(10), || {
        let out = aws_as(&server, &deployer, &run);
        !String::from_utf8_lossy(&out.stderr).contains("AccessDenied")
    });
}
