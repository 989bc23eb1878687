//! IAM and STS end to end through the real AWS CLI (and boto3 for paging): users and their
//! keys authenticate as themselves until made inactive or deleted, roles hand out temporary
//! credentials that work only with their session token, IAM's errors arrive with IAM's codes,
//! AWS's managed policies are there from the start, and everything survives a restart.

mod common;

use std::process::Command;

use common::Server;
use serde_json::{Value, json};

const ACCOUNT_ROOT_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"ACCOUNT"},"Action":"sts:AssumeRole"}]}"#;

/// The AWS CLI signing with other credentials.
fn aws_as(s: &Server, key: &str, secret: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command: Command = s.aws_command();
    command.env("AWS_ACCESS_KEY_ID", key).env("AWS_SECRET_ACCESS_KEY", secret);
    match token {
        Some(t) => command.env("AWS_SESSION_TOKEN", t),
        None => command.env_remove("AWS_SESSION_TOKEN"),
    };
    command.args(args).output().unwrap()
}

fn ok_json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn err_text(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "unexpectedly succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn account(s: &Server) -> String {
    s.aws_json(&["sts", "get-caller-identity"])["Account"].as_str().unwrap().to_owned()
}

#[test]
fn users_keys_and_iam_errors() {
    let s = Server::start_no_agent();
    let me = s.aws_json(&["sts", "get-caller-identity"]);
    let acct = me["Account"].as_str().unwrap();
    assert_eq!(me["Arn"], format!("arn:aws:iam::{acct}:root"), "the printed credentials stay the account root");

    let user = s.aws_json(&["iam", "create-user", "--user-name", "alice", "--path", "/team/"]);
    assert_eq!(user["User"]["Arn"], format!("arn:aws:iam::{acct}:user/team/alice"));
    assert!(s.aws_err(&["iam", "create-user", "--user-name", "alice"]).contains("EntityAlreadyExists"));
    let missing = s.aws_err(&["iam", "get-user", "--user-name", "bob"]);
    assert!(
        missing.contains("NoSuchEntity") && missing.contains("The user with name bob cannot be found."),
        "{missing}"
    );

    let key = s.aws_json(&["iam", "create-access-key", "--user-name", "alice"])["AccessKey"].clone();
    let (id, secret) = (key["AccessKeyId"].as_str().unwrap(), key["SecretAccessKey"].as_str().unwrap());
    assert_eq!(key["Status"], "Active");
    let who = ok_json(&aws_as(&s, id, secret, None, &["sts", "get-caller-identity"]));
    assert_eq!(who["Arn"], user["User"]["Arn"]);
    assert_eq!(who["UserId"], user["User"]["UserId"]);
    let wrong = aws_as(&s, id, "not-the-secret-not-the-secret-not-the-sec", None, &["sts", "get-caller-identity"]);
    assert!(err_text(&wrong).contains("SignatureDoesNotMatch"));

    let second = s.aws_json(&["iam", "create-access-key", "--user-name", "alice"])["AccessKey"]["AccessKeyId"].clone();
    assert!(s.aws_err(&["iam", "create-access-key", "--user-name", "alice"]).contains("LimitExceeded"));
    let keys = s.aws_json(&["iam", "list-access-keys", "--user-name", "alice"]);
    assert_eq!(keys["AccessKeyMetadata"].as_array().unwrap().len(), 2);

    s.aws_json(&["iam", "update-access-key", "--user-name", "alice", "--access-key-id", id, "--status", "Inactive"]);
    let inactive = err_text(&aws_as(&s, id, secret, None, &["sts", "get-caller-identity"]));
    assert!(inactive.contains("InvalidClientTokenId"), "{inactive}");
    let inactive_ecs = err_text(&aws_as(&s, id, secret, None, &["ecs", "list-clusters"]));
    assert!(inactive_ecs.contains("UnrecognizedClientException"), "{inactive_ecs}");
    s.aws_json(&["iam", "update-access-key", "--user-name", "alice", "--access-key-id", id, "--status", "Active"]);
    ok_json(&aws_as(&s, id, secret, None, &["sts", "get-caller-identity"]));
    assert!(s.aws_err(&["iam", "delete-user", "--user-name", "alice"]).contains("DeleteConflict"));
    s.aws_json(&["iam", "delete-access-key", "--user-name", "alice", "--access-key-id", id]);
    assert!(err_text(&aws_as(&s, id, secret, None, &["sts", "get-caller-identity"])).contains("InvalidClientTokenId"));

    // Inline policies: broken JSON is refused; a good one comes back as it went in.
    let broken = s.aws_err(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "alice",
        "--policy-name",
        "p",
        "--policy-document",
        "{\"Version\":",
    ]);
    assert!(broken.contains("MalformedPolicyDocument"), "{broken}");
    let doc =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecs:List*", "Resource": "*"}]});
    s.aws_json(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "alice",
        "--policy-name",
        "p",
        "--policy-document",
        &doc.to_string(),
    ]);
    let got = s.aws_json(&["iam", "get-user-policy", "--user-name", "alice", "--policy-name", "p"]);
    assert_eq!(got["PolicyDocument"], doc, "the CLI decodes the URL-encoded document");
    assert_eq!(s.aws_json(&["iam", "list-user-policies", "--user-name", "alice"])["PolicyNames"], json!(["p"]));

    // Managed policies: AWS's from the start; the account's own, attached, cannot go.
    let aws = s.aws_json(&["iam", "list-policies", "--scope", "AWS"]);
    let names: Vec<&str> =
        aws["Policies"].as_array().unwrap().iter().map(|p| p["PolicyName"].as_str().unwrap()).collect();
    assert!(names.contains(&"AdministratorAccess") && names.contains(&"AmazonECSTaskExecutionRolePolicy"), "{names:?}");
    let exec = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy";
    let v1 = s.aws_json(&["iam", "get-policy-version", "--policy-arn", exec, "--version-id", "v1"]);
    assert!(
        v1["PolicyVersion"]["Document"]["Statement"][0]["Action"]
            .as_array()
            .unwrap()
            .contains(&json!("ecr:BatchGetImage"))
    );
    let created = s.aws_json(&["iam", "create-policy", "--policy-name", "read", "--policy-document", &doc.to_string()]);
    let arn = created["Policy"]["Arn"].as_str().unwrap();
    assert_eq!(arn, format!("arn:aws:iam::{acct}:policy/read"));
    s.aws_json(&["iam", "attach-user-policy", "--user-name", "alice", "--policy-arn", arn]);
    let attached = s.aws_json(&["iam", "list-attached-user-policies", "--user-name", "alice"]);
    assert_eq!(attached["AttachedPolicies"], json!([{"PolicyName": "read", "PolicyArn": arn}]));
    assert_eq!(s.aws_json(&["iam", "get-policy", "--policy-arn", arn])["Policy"]["AttachmentCount"], 1);
    assert!(s.aws_err(&["iam", "delete-policy", "--policy-arn", arn]).contains("DeleteConflict"));
    s.aws_json(&["iam", "detach-user-policy", "--user-name", "alice", "--policy-arn", arn]);
    s.aws_json(&["iam", "delete-policy", "--policy-arn", arn]);
    let gone = s.aws_err(&["iam", "get-policy", "--policy-arn", arn]);
    assert!(gone.contains("NoSuchEntity"), "{gone}");
    s.aws_json(&["iam", "delete-user-policy", "--user-name", "alice", "--policy-name", "p"]);
    s.aws_json(&["iam", "delete-access-key", "--user-name", "alice", "--access-key-id", second.as_str().unwrap()]);
    s.aws_json(&["iam", "delete-user", "--user-name", "alice"]);
}

#[test]
fn boto3_pages_iam_listings() {
    let s = Server::start_no_agent();
    for name in ["u1", "u2", "u3"] {
        s.aws_json(&["iam", "create-user", "--user-name", name]);
    }
    let script = r#"
import boto3, json, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
first = iam.list_users(MaxItems=2)
second = iam.list_users(MaxItems=2, Marker=first["Marker"])
names = [u["UserName"] for u in first["Users"] + second["Users"]]
print(json.dumps({"names": names, "truncated": [first["IsTruncated"], second["IsTruncated"]]}))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &s.endpoint(), common::ACCESS_KEY, common::SECRET_KEY])
        .output()
        .unwrap();
    let answer = ok_json(&out);
    assert_eq!(answer, json!({"names": ["u1", "u2", "u3"], "truncated": [true, false]}));
}

#[test]
fn assumed_role_credentials_need_their_session_token() {
    let s = Server::start_no_agent();
    let acct = account(&s);
    let trust = ACCOUNT_ROOT_TRUST.replace("ACCOUNT", &format!("arn:aws:iam::{acct}:root"));
    let role = s.aws_json(&[
        "iam",
        "create-role",
        "--role-name",
        "app",
        "--assume-role-policy-document",
        &trust,
        "--description",
        "the app",
    ]);
    let role_arn = role["Role"]["Arn"].as_str().unwrap().to_owned();
    assert_eq!(role_arn, format!("arn:aws:iam::{acct}:role/app"));
    let got = s.aws_json(&["iam", "get-role", "--role-name", "app"]);
    assert_eq!(got["Role"]["AssumeRolePolicyDocument"]["Statement"][0]["Action"], "sts:AssumeRole");
    assert_eq!(got["Role"]["MaxSessionDuration"], 3600);
    let broken = s.aws_err(&["iam", "create-role", "--role-name", "b", "--assume-role-policy-document", "nope"]);
    assert!(broken.contains("MalformedPolicyDocument"), "{broken}");
    let policy =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]});
    s.aws_json(&[
        "iam",
        "put-role-policy",
        "--role-name",
        "app",
        "--policy-name",
        "ecs",
        "--policy-document",
        &policy.to_string(),
    ]);
    assert_eq!(s.aws_json(&["iam", "list-role-policies", "--role-name", "app"])["PolicyNames"], json!(["ecs"]));

    // (Durations under 900 s the CLI refuses itself; the server's check is tested in crates/iam.)
    let too_long = s.aws_err(&[
        "sts",
        "assume-role",
        "--role-arn",
        &role_arn,
        "--role-session-name",
        "s1",
        "--duration-seconds",
        "7200",
    ]);
    assert!(too_long.contains("MaxSessionDuration"), "{too_long}");

    let assumed = s.aws_json(&["sts", "assume-role", "--role-arn", &role_arn, "--role-session-name", "s1"]);
    let creds = &assumed["Credentials"];
    let (id, secret, token) = (
        creds["AccessKeyId"].as_str().unwrap(),
        creds["SecretAccessKey"].as_str().unwrap(),
        creds["SessionToken"].as_str().unwrap(),
    );
    assert!(id.starts_with("ASIA"), "{id}");
    assert!(creds["Expiration"].as_str().is_some());
    let session_arn = format!("arn:aws:sts::{acct}:assumed-role/app/s1");
    assert_eq!(assumed["AssumedRoleUser"]["Arn"], session_arn);

    let who = ok_json(&aws_as(&s, id, secret, Some(token), &["sts", "get-caller-identity"]));
    assert_eq!(who["Arn"], session_arn);
    assert!(who["UserId"].as_str().unwrap().ends_with(":s1"));
    ok_json(&aws_as(&s, id, secret, Some(token), &["ecs", "list-clusters"]));
    let without = err_text(&aws_as(&s, id, secret, None, &["sts", "get-caller-identity"]));
    assert!(without.contains("InvalidClientTokenId"), "{without}");
    let forged = err_text(&aws_as(&s, id, secret, Some("forged"), &["ecs", "list-clusters"]));
    assert!(forged.contains("UnrecognizedClientException"), "{forged}");

    // A user whose own policies do not allow sts:AssumeRole is refused, though the role
    // trusts its account.
    s.aws_json(&["iam", "create-user", "--user-name", "dev"]);
    let key = s.aws_json(&["iam", "create-access-key", "--user-name", "dev"])["AccessKey"].clone();
    let (uid, usecret) = (key["AccessKeyId"].as_str().unwrap(), key["SecretAccessKey"].as_str().unwrap());
    let denied = err_text(&aws_as(
        &s,
        uid,
        usecret,
        None,
        &["sts", "assume-role", "--role-arn", &role_arn, "--role-session-name", "dev-session"],
    ));
    assert!(denied.contains("AccessDenied"), "{denied}");

    assert!(s.aws_err(&["iam", "delete-role", "--role-name", "app"]).contains("DeleteConflict"));
    s.aws_json(&["iam", "delete-role-policy", "--role-name", "app", "--policy-name", "ecs"]);
    s.aws_json(&["iam", "delete-role", "--role-name", "app"]);
    assert!(s.aws_err(&["iam", "get-role", "--role-name", "app"]).contains("NoSuchEntity"));
}

#[test]
fn iam_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    server.aws_json(&["iam", "create-user", "--user-name", "erin"]);
    let key = server.aws_json(&["iam", "create-access-key", "--user-name", "erin"])["AccessKey"].clone();
    let acct = account(&server);
    let trust = ACCOUNT_ROOT_TRUST.replace("ACCOUNT", &acct);
    server.aws_json(&["iam", "create-role", "--role-name", "kept", "--assume-role-policy-document", &trust]);
    let role_arn = format!("arn:aws:iam::{acct}:role/kept");
    let assumed = server.aws_json(&["sts", "assume-role", "--role-arn", &role_arn, "--role-session-name", "before"]);
    server.kill9();
    drop(server);

    let server = Server::start_in(dir.path());
    let (id, secret) = (key["AccessKeyId"].as_str().unwrap(), key["SecretAccessKey"].as_str().unwrap());
    let who = ok_json(&aws_as(&server, id, secret, None, &["sts", "get-caller-identity"]));
    assert_eq!(who["Arn"], format!("arn:aws:iam::{acct}:user/erin"));
    let c = &assumed["Credentials"];
    let session = aws_as(
        &server,
        c["AccessKeyId"].as_str().unwrap(),
        c["SecretAccessKey"].as_str().unwrap(),
        c["SessionToken"].as_str(),
        &["sts", "get-caller-identity"],
    );
    assert_eq!(ok_json(&session)["Arn"], format!("arn:aws:sts::{acct}:assumed-role/kept/before"));
    assert_eq!(server.aws_json(&["iam", "get-role", "--role-name", "kept"])["Role"]["Arn"], role_arn);
}
