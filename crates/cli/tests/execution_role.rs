//! The execution role end to end, through the AWS CLI and real tasks: the platform reads a
//! task's secrets and writes its awslogs streams as the role its task definition names, and
//! a role that may not stops the task with AWS's own words; roles that do not exist (or do not
//! trust ECS tasks) are refused at RunTask and CreateService; `--require-roles` applies
//! Fargate's rules to task definitions without an execution role.
//! Privileged: CI runs these as root, like the server itself.

mod common;

use std::time::Duration;

use common::Server;
use common::fixture::Fixture;
use serde_json::{Value, json};

const TRUST_ECS_TASKS: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// Creates role `name` trusting `service`; its ARN.
fn create_role(s: &Server, name: &str, service: &str) -> String {
    let trust = TRUST_ECS_TASKS.replace("ecs-tasks.amazonaws.com", service);
    let out = s.aws_json(&["iam", "create-role", "--role-name", name, "--assume-role-policy-document", &trust]);
    out["Role"]["Arn"].as_str().expect("CreateRole answers the role's ARN").to_owned()
}

fn put_role_policy(s: &Server, role: &str, name: &str, statements: Value) {
    let document = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
    s.aws_json(&["iam", "put-role-policy", "--role-name", role, "--policy-name", name, "--policy-document", &document]);
}

/// The account of an ARN (`arn:aws:SERVICE:REGION:ACCOUNT:...`).
fn account_of(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap()
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

/// Runs `td` and waits for it to stop; its stopped reason (asserting it failed to start).
fn stopped_reason(f: &Fixture, td: &str) -> (String, String) {
    let task = f.run(td);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(60));
    assert_eq!(stopped["stopCode"], "TaskFailedToStart", "{stopped}");
    (task, stopped["stoppedReason"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn the_platform_reads_a_tasks_secrets_as_its_execution_role() {
    let f = Fixture::new();
    let s = &f.server;
    let role = create_role(s, "exec", "ecs-tasks.amazonaws.com");
    let account = account_of(&role).to_owned();
    let secret =
        s.aws_json(&["secretsmanager", "create-secret", "--name", "db", "--secret-string", r#"{"pw":"s3cr3t"}"#]);
    let secret_arn = secret["ARN"].as_str().unwrap().to_owned();
    s.aws_json(&["ssm", "put-parameter", "--name", "/app/key", "--value", "k-1", "--type", "SecureString"]);
    let param_arn = format!("arn:aws:ssm:us-east-1:{account}:parameter/app/key");

    // A role with no policy may read nothing: the task stops with AWS's error.
    let mut c = f.container("app", &["sh", "-c", "echo pw=$PW key=$KEY; sleep 1000"]);
    c["secrets"] = json!([{"name": "PW", "valueFrom": format!("{secret_arn}:pw::")}]);
    let td = f.register("asm", json!([c.clone()]), json!({"executionRoleArn": role}));
    let (task, reason) = stopped_reason(&f, &td);
    let expected = format!(
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: \
         unable to retrieve secret from asm: service call has been retried 1 time(s): failed to fetch secret \
         {secret_arn} from secrets manager: AccessDeniedException: User: arn:aws:sts::{account}:assumed-role/exec/{} \
         is not authorized to perform: secretsmanager:GetSecretValue on resource: {secret_arn} because no \
         identity-based policy allows the secretsmanager:GetSecretValue action",
        task_id(&task)
    );
    assert!(reason.starts_with(&expected), "{reason}\nexpected: {expected}");

    // The SSM form, for a parameter named by its name.
    let mut ssm = f.container("app", &["sh", "-c", "echo key=$KEY; sleep 1000"]);
    ssm["secrets"] = json!([{"name": "KEY", "valueFrom": "/app/key"}]);
    let ssm_td = f.register("ssm", json!([ssm]), json!({"executionRoleArn": role}));
    let (task, reason) = stopped_reason(&f, &ssm_td);
    let expected = format!(
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: \
         unable to retrieve secrets from ssm: service call has been retried 1 time(s): AccessDeniedException: User: \
         arn:aws:sts::{account}:assumed-role/exec/{} is not authorized to perform: ssm:GetParameters on resource: \
         {param_arn} because no identity-based policy allows the ssm:GetParameters action",
        task_id(&task)
    );
    assert!(reason.starts_with(&expected), "{reason}\nexpected: {expected}");

    // Allowed (and allowed its logs), the task runs with both secrets in its environment.
    put_role_policy(
        s,
        "exec",
        "read",
        json!([
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret_arn},
            {"Effect": "Allow", "Action": "ssm:GetParameters", "Resource": "arn:aws:ssm:*:*:parameter/app/*"},
            {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": "*"},
        ]),
    );
    c["secrets"] = json!([
        {"name": "PW", "valueFrom": format!("{secret_arn}:pw::")},
        {"name": "KEY", "valueFrom": "/app/key"},
    ]);
    let td = f.register("both", json!([c]), json!({"executionRoleArn": role}));
    let task = f.run(&td);
    let lines = f.wait_log(&task, "app", "pw=");
    assert!(lines.iter().any(|l| l.contains("pw=s3cr3t key=k-1")), "{lines:?}");
    f.stop_all(&[&task]);

    // An explicit deny wins over the allow, and says so.
    put_role_policy(s, "exec", "deny", json!([{"Effect": "Deny", "Action": "ssm:*", "Resource": "*"}]));
    let (_, reason) = stopped_reason(&f, &ssm_td);
    assert!(
        reason.contains("ssm:GetParameters on resource: ")
            && reason.contains("with an explicit deny in an identity-based policy"),
        "{reason}"
    );
}

#[test]
fn an_awslogs_task_whose_execution_role_may_not_write_its_logs_fails_like_ecs() {
    let f = Fixture::new();
    let s = &f.server;
    let role = create_role(s, "quiet", "ecs-tasks.amazonaws.com");
    let account = account_of(&role).to_owned();
    let c = f.container("app", &["sh", "-c", "echo logged as the role; sleep 1000"]);
    let td = f.register("logged", json!([c]), json!({"executionRoleArn": role}));

    let (task, reason) = stopped_reason(&f, &td);
    let id = task_id(&task);
    let expected = format!(
        "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: \
         failed to create Cloudwatch log stream: AccessDeniedException: User: \
         arn:aws:sts::{account}:assumed-role/quiet/{id} is not authorized to perform: logs:CreateLogStream on \
         resource: arn:aws:logs:us-east-1:{account}:log-group:/ecs/test:log-stream:ecs/app/{id} because no \
         identity-based policy allows the logs:CreateLogStream action"
    );
    assert!(reason.starts_with(&expected), "{reason}\nexpected: {expected}");

    // Streams but not the group it must create (awslogs-create-group): the group's refusal.
    put_role_policy(
        s,
        "quiet",
        "streams",
        json!([{"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "arn:aws:logs:*:*:log-group:/ecs/test:*"}]),
    );
    let (_, reason) = stopped_reason(&f, &td);
    assert!(
        reason.contains("failed to create Cloudwatch log group: AccessDeniedException: ")
            && reason.contains("logs:CreateLogGroup"),
        "{reason}"
    );

    put_role_policy(
        s,
        "quiet",
        "group",
        json!([{"Effect": "Allow", "Action": "logs:CreateLogGroup", "Resource": "arn:aws:logs:*:*:log-group:/ecs/test:*"}]),
    );
    let task = f.run(&td);
    f.wait_log(&task, "app", "logged as the role");
    f.stop_all(&[&task]);
}

/// A server without an agent, a cluster and a default subnet: RunTask's checks, no tasks.
fn api_only() -> (Server, String) {
    let s = Server::start_no_agent();
    s.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    let subnets = s.aws_json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
    let subnet = subnets["Subnets"][0]["SubnetId"].as_str().unwrap().to_owned();
    (s, format!("awsvpcConfiguration={{subnets=[{subnet}]}}"))
}

fn register(s: &Server, family: &str, container: Value, roles: Value) -> Result<String, String> {
    let mut body = json!({
        "family": family, "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "256", "memory": "512", "containerDefinitions": [container],
    });
    body.as_object_mut().unwrap().extend(roles.as_object().unwrap().clone());
    let out = s.aws(&["ecs", "register-task-definition", "--cli-input-json", &body.to_string()]);
    match out.status.success() {
        true => {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            Ok(v["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_owned())
        }
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

#[test]
fn roles_that_do_not_exist_or_do_not_trust_ecs_tasks_are_refused_at_run_task_and_create_service() {
    let (s, network) = api_only();
    let exec = create_role(&s, "exec", "ecs-tasks.amazonaws.com");
    let account = account_of(&exec).to_owned();
    create_role(&s, "for-ec2", "ec2.amazonaws.com");
    let missing = format!("arn:aws:iam::{account}:role/missing");
    let plain = json!({"name": "app", "image": "busybox:latest"});
    let run = |td: &str| s.aws(&["ecs", "run-task", "--task-definition", td, "--network-configuration", &network]);
    let assume = |role: &str| {
        format!(
            "An error occurred (ClientException) when calling the RunTask operation: ECS was unable to assume the \
             role '{role}' that was provided for this task. Please verify that the role being passed has the \
             proper trust relationship and permissions and that your IAM user has permissions to pass this role."
        )
    };

    // Not a role at all: refused when registered, as ECS does.
    let stack = format!("arn:aws:cloudformation:us-east-1:{account}:stack/app/1");
    let err = register(&s, "not-a-role", plain.clone(), json!({"taskRoleArn": stack})).unwrap_err();
    assert!(err.contains("(ClientException)") && err.trim().ends_with("Role is not valid"), "{err}");

    let td = register(&s, "no-such-role", plain.clone(), json!({"executionRoleArn": missing})).unwrap();
    let out = run(&td);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), assume(&missing), "{out:?}");

    let td =
        register(&s, "untrusting", plain.clone(), json!({"taskRoleArn": "for-ec2", "executionRoleArn": exec})).unwrap();
    let out = run(&td);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), assume("for-ec2"), "{out:?}");

    // Both roles exist and trust ECS tasks (one by its short name, as ECS takes it): it runs.
    let good = register(&s, "good", plain.clone(), json!({"taskRoleArn": "exec", "executionRoleArn": exec})).unwrap();
    let out = run(&good);
    assert!(out.status.success(), "{out:?}");

    let service = |td: &str| {
        s.aws(&[
            "ecs",
            "create-service",
            "--service-name",
            "web",
            "--task-definition",
            td,
            "--desired-count",
            "0",
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            &network,
        ])
    };
    let bad = register(&s, "no-such-role", plain, json!({"executionRoleArn": missing})).unwrap();
    let out = service(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(ClientException)") && err.contains(&format!("ECS was unable to assume the role '{missing}'")),
        "{err}"
    );
    assert!(service(&good).status.success());
    let err = s.aws_err(&["ecs", "update-service", "--service", "web", "--task-definition", &bad]);
    assert!(err.contains("(ClientException)") && err.contains("ECS was unable to assume the role"), "{err}");
}

#[test]
fn require_roles_applies_fargates_rules_to_definitions_without_an_execution_role() {
    let s = Server::start_flags(&["--no-agent".to_owned(), "--require-roles".to_owned()]);
    let logged = json!({"name": "app", "image": "busybox:latest", "logConfiguration": {"logDriver": "awslogs",
        "options": {"awslogs-group": "/ecs/x", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs"}}});
    let with_secret =
        json!({"name": "app", "image": "busybox:latest", "secrets": [{"name": "K", "valueFrom": "/app/key"}]});
    let private = json!({"name": "app", "image": "registry.example:5000/app:1",
        "repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:us-east-1:123456789012:secret:r-AbCdEf"}});
    let refusal =
        |m: &str| format!("An error occurred (ClientException) when calling the RegisterTaskDefinition operation: {m}");
    let cases = [
        (&logged, "Fargate requires task definition to have execution role ARN to support log driver awslogs."),
        (
            &with_secret,
            "When you are specifying container secrets, you must also specify a value for 'executionRoleArn'.",
        ),
        (
            &private,
            "Private repository authentication requires that the task definition specify a value for executionRoleArn.",
        ),
    ];
    for (container, message) in cases {
        let err = register(&s, "strict", container.clone(), json!({})).unwrap_err();
        assert_eq!(err.trim(), refusal(message));
        let role = json!({"executionRoleArn": "arn:aws:iam::123456789012:role/exec"});
        register(&s, "strict", container.clone(), role).unwrap();
    }
    // Nothing that needs the platform: no role needed.
    register(&s, "plain", json!({"name": "app", "image": "busybox:latest"}), json!({})).unwrap();
}
