//! SSM Parameter Store and Secrets Manager through the AWS CLI, and a task's `secrets` (the
//! seeds' task definition names an SSM parameter ARN) arriving in its container's environment.
//! Privileged: CI runs these as root, like the server itself.

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use serde_json::json;

#[test]
fn parameters_and_secrets_through_the_aws_cli() {
    let f = Fixture::new();
    let s = &f.server;
    let put =
        s.aws_json(&["ssm", "put-parameter", "--name", "/app/db/url", "--value", "mysql://db", "--type", "String"]);
    assert_eq!(put["Version"], 1);
    let again = s.aws(&["ssm", "put-parameter", "--name", "/app/db/url", "--value", "x", "--type", "String"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("ParameterAlreadyExists"), "{again:?}");
    s.aws_json(&["ssm", "put-parameter", "--name", "/app/db/url", "--value", "mysql://db2", "--overwrite"]);
    let got = s.aws_json(&["ssm", "get-parameter", "--name", "/app/db/url"]);
    assert_eq!(
        (got["Parameter"]["Value"].as_str(), got["Parameter"]["Version"].as_i64()),
        (Some("mysql://db2"), Some(2))
    );
    s.aws_json(&["ssm", "put-parameter", "--name", "/app/key", "--value", "s3cr3t", "--type", "SecureString"]);
    let hidden = s.aws_json(&["ssm", "get-parameter", "--name", "/app/key"]);
    assert_ne!(hidden["Parameter"]["Value"], "s3cr3t", "a SecureString is shown only with decryption");
    let shown = s.aws_json(&["ssm", "get-parameter", "--name", "/app/key", "--with-decryption"]);
    assert_eq!(shown["Parameter"]["Value"], "s3cr3t");
    let by_path = s.aws_json(&["ssm", "get-parameters-by-path", "--path", "/app", "--recursive"]);
    assert_eq!(by_path["Parameters"].as_array().map(Vec::len), Some(2), "{by_path}");
    let missing = s.aws(&["ssm", "get-parameter", "--name", "/nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("ParameterNotFound"), "{missing:?}");
    let bad = s.aws(&["ssm", "put-parameter", "--name", "aws-reserved", "--value", "v", "--type", "String"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ValidationException"), "{bad:?}");

    let created = s.aws_json(&[
        "secretsmanager",
        "create-secret",
        "--name",
        "prod/db",
        "--secret-string",
        r#"{"password":"pw1"}"#,
    ]);
    let arn = created["ARN"].as_str().unwrap().to_owned();
    assert!(arn.starts_with("arn:aws:secretsmanager:us-east-1:") && arn.contains(":secret:prod/db-"), "{arn}");
    s.aws_json(&[
        "secretsmanager",
        "put-secret-value",
        "--secret-id",
        &arn,
        "--secret-string",
        r#"{"password":"pw2"}"#,
    ]);
    let value = s.aws_json(&["secretsmanager", "get-secret-value", "--secret-id", "prod/db"]);
    assert_eq!(value["SecretString"], r#"{"password":"pw2"}"#);
    assert_eq!(value["VersionStages"], json!(["AWSCURRENT"]));
    let previous =
        s.aws_json(&["secretsmanager", "get-secret-value", "--secret-id", &arn, "--version-stage", "AWSPREVIOUS"]);
    assert_eq!(previous["SecretString"], r#"{"password":"pw1"}"#);
    let listed = s.aws_json(&["secretsmanager", "list-secrets"]);
    assert_eq!(listed["SecretList"][0]["Name"], "prod/db", "{listed}");
    s.aws_json(&["secretsmanager", "delete-secret", "--secret-id", &arn, "--force-delete-without-recovery"]);
    let gone = s.aws(&["secretsmanager", "get-secret-value", "--secret-id", "prod/db"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("ResourceNotFoundException"), "{gone:?}");
}

#[test]
fn a_tasks_secrets_reach_its_environment_and_a_missing_one_stops_it() {
    let f = Fixture::new();
    let s = &f.server;
    s.aws_json(&["ssm", "put-parameter", "--name", "api-key", "--value", "k-123", "--type", "SecureString"]);
    let param_arn =
        s.aws_json(&["ssm", "get-parameter", "--name", "api-key"])["Parameter"]["ARN"].as_str().unwrap().to_owned();
    let secret = s.aws_json(&[
        "secretsmanager",
        "create-secret",
        "--name",
        "db",
        "--secret-string",
        r#"{"password":"pw","user":"app"}"#,
    ]);
    let secret_arn = secret["ARN"].as_str().unwrap().to_owned();

    let mut c = f.container("app", &["sh", "-c", "echo key=$API_KEY pw=$DB_PASSWORD all=$DB; sleep 1000"]);
    c["secrets"] = json!([
        {"name": "API_KEY", "valueFrom": param_arn},
        {"name": "DB_PASSWORD", "valueFrom": format!("{secret_arn}:password::")},
        {"name": "DB", "valueFrom": secret_arn},
    ]);
    let td = f.register("with-secrets", json!([c]), json!({}));
    let task = f.run(&td);
    let lines = f.wait_log(&task, "app", "key=");
    assert!(lines.iter().any(|l| l.contains(r#"key=k-123 pw=pw all={"password":"pw","user":"app"}"#)), "{lines:?}");
    s.aws_json(&["ecs", "stop-task", "--task", &task]);
    f.wait_status(&task, "STOPPED", Duration::from_secs(60));

    let mut c = f.container("app", &["sh", "-c", "echo should not run"]);
    c["secrets"] = json!([{"name": "MISSING", "valueFrom": "/no/such/parameter"}]);
    let td = f.register("missing-secret", json!([c]), json!({}));
    let task = f.run(&td);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(60));
    let reason = stopped["stoppedReason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("ResourceInitializationError: unable to pull secrets or registry auth"), "{stopped}");
    assert!(reason.contains("/no/such/parameter"), "{reason}");
    assert_eq!(stopped["stopCode"], "TaskFailedToStart", "{stopped}");
}

#[test]
fn repository_credentials_log_in_to_a_private_registry() {
    let f = Fixture::new();
    let s = &f.server;
    let private = f.rt.block_on(flotilla_image::testing::Registry::start_with(flotilla_image::testing::Htpasswd::new(
        "puller", "pull-pw",
    )));
    f.rt.block_on(private.push_image("private", Some("latest"), &flotilla_image::testing::busybox_image()));
    let login = s.aws_json(&[
        "secretsmanager",
        "create-secret",
        "--name",
        "registry-login",
        "--secret-string",
        r#"{"username":"puller","password":"pull-pw"}"#,
    ]);
    let mut c = f.container("app", &["sh", "-c", "echo pulled with a login; sleep 1000"]);
    c["image"] = json!(private.reference("private:latest"));
    c["repositoryCredentials"] = json!({"credentialsParameter": login["ARN"]});
    let td = f.register("private-image", json!([c.clone()]), json!({}));
    let task = f.run(&td);
    f.wait_log(&task, "app", "pulled with a login");
    s.aws_json(&["ecs", "stop-task", "--task", &task]);
    f.wait_status(&task, "STOPPED", Duration::from_secs(60));

    // Without the login the registry refuses the pull (of a tag this host never pulled: a
    // cached copy would be used, as the ECS agent does when a registry cannot be reached).
    f.rt.block_on(private.push_image("private", Some("other"), &flotilla_image::testing::busybox_image()));
    c["image"] = json!(private.reference("private:other"));
    c.as_object_mut().unwrap().remove("repositoryCredentials");
    let td = f.register("private-image-anonymous", json!([c]), json!({}));
    let task = f.run(&td);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(60));
    let reason = stopped["stoppedReason"].as_str().unwrap_or_default().to_owned()
        + stopped["containers"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("CannotPullContainerError"), "{stopped}");
}
