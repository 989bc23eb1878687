//! Task roles end to end: an unmodified AWS SDK (boto3, in an image built from this machine's
//! python) inside a task finds its credentials through `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`
//! at the task endpoint (`169.254.170.2:80`, on the host side of the task's interface) and calls
//! Flotilla as its task role; a task without a role gets no variable and no credentials; a task
//! never gets another's; the v4 metadata answers at the same address while the containers keep
//! their own port 80.
//!
//! Tasks reach the API where Fargate's containers find everything: the task endpoint, which
//! `flotilla up` (agent and API in one process) makes serve the API too, and which containers
//! are given as `AWS_ENDPOINT_URL` with their region: the SDK is given nothing by the test.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::fixture::Fixture;
use common::{Server, wait_for};
use serde_json::{Value, json};

/// What the task with the role runs: its own web server on port 80, then the metadata, then
/// (its groups allowing any egress) a host service through the endpoint's address, which it
/// must not reach, then boto3 with no credentials but what it finds itself. One line per step,
/// flushed.
const WITH_ROLE: &str = r#"
import json, os, socket, sys, time, urllib.request
def say(*a): print(*a, flush=True)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(); say("bound:80")
meta = json.load(urllib.request.urlopen(os.environ["ECS_CONTAINER_METADATA_URI_V4"] + "/task", timeout=10))
say("meta:" + meta["TaskARN"])
try:
    socket.create_connection(("169.254.170.2", 8081), timeout=3); say("other-port:reached")
except Exception as e:
    say("other-port:blocked")
say("uri:" + os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", ""))
say("keys:" + ",".join(k for k in os.environ if k.startswith("AWS_ACCESS") or k.startswith("AWS_SECRET")))
for k in ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"]: say(k + "=" + os.environ.get(k, ""))
import boto3, botocore
try:
    sts = boto3.client("sts")
    say("caller:" + sts.get_caller_identity()["Arn"])
    ssm = boto3.client("ssm")
    say("allowed:" + ssm.get_parameter(Name="/app/config")["Parameter"]["Value"])
    try:
        ssm.get_parameter(Name="/other/secret"); say("other:read")
    except botocore.exceptions.ClientError as e:
        say("other:" + e.response["Error"]["Code"])
except Exception as e:
    say("error:" + repr(e))
say("done")
time.sleep(1000)
"#;

/// What a task without a role runs (in a group that allows no egress at all): no variable,
/// its own metadata, another task's credentials refused, and the API (which it reaches at the
/// endpoint, groups not governing it) refusing it: the SDK finds no credentials, and a request
/// with none is refused by the API.
const WITHOUT_ROLE: &str = r#"
import json, os, socket, time, urllib.request, urllib.error
def say(*a): print(*a, flush=True)
say("uri:" + os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "none"))
try:
    meta = json.load(urllib.request.urlopen(os.environ["ECS_CONTAINER_METADATA_URI_V4"], timeout=10))
    say("meta:" + meta["Name"])
except Exception as e:
    say("meta:error " + repr(e))
for name, path in [("theirs", os.environ["THEIRS"]), ("made-up", "/v2/credentials/0123456789abcdef0123456789abcdef")]:
    try:
        urllib.request.urlopen("http://169.254.170.2" + path, timeout=10); say(name + ":200")
    except urllib.error.HTTPError as e:
        say(name + ":" + str(e.code))
    except Exception as e:
        say(name + ":error " + repr(e))
import boto3, botocore
try:
    boto3.client("ssm").get_parameter(Name="/app/config"); say("sdk:read")
except botocore.exceptions.NoCredentialsError:
    say("sdk:NoCredentialsError")
except Exception as e:
    say("sdk:error " + repr(e))
unsigned = urllib.request.Request(os.environ["AWS_ENDPOINT_URL"] + "/", data=b'{"Name": "/app/config"}', headers={
    "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonSSM.GetParameter"})
try:
    urllib.request.urlopen(unsigned, timeout=10); say("unsigned:200")
except urllib.error.HTTPError as e:
    say("unsigned:" + str(e.code) + " " + json.load(e).get("__type", ""))
except Exception as e:
    say("unsigned:error " + repr(e))
say("done")
time.sleep(1000)
"#;

fn python_container(f: &Fixture, image: &str, python: &str, name: &str, script: &str, env: Value) -> Value {
    let mut c = f.container(name, &[python, "-c", script]);
    c["image"] = json!(image);
    c["environment"] = env;
    c
}

/// The container's log once it printed "done"; what went wrong (the task, its log) if it
/// stops or takes too long first.
fn finished(f: &Fixture, task: &str, container: &str) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let lines = f.logs(task, container);
        if lines.iter().any(|l| l == "done") {
            return lines;
        }
        let described = f.describe(task);
        if described["lastStatus"] == "STOPPED" || start.elapsed() > Duration::from_secs(90) {
            panic!("{container} never finished: {described:#}\nlog: {lines:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value after `prefix` in the first log line that starts with it.
fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines.iter().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in {lines:#?}"))
}

#[test]
fn an_unmodified_sdk_in_a_task_calls_flotilla_as_its_task_role_and_no_other_task_gets_its_credentials() {
    let f = Fixture::new();
    let (image, python) = common::python::image();
    f.rt.block_on(f._registry.push_image("python", Some("latest"), &image));
    let image = f._registry.reference("python:latest");
    let s = &f.server;

    // A role ECS tasks may assume, allowed to read one parameter path.
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    let role =
        s.aws_json(&["iam", "create-role", "--role-name", "app", "--assume-role-policy-document", &trust.to_string()]);
    let role_arn = role["Role"]["Arn"].as_str().unwrap().to_owned();
    // Only from the VPC: the API must see the task's own address as the caller's.
    let vpcs = s.aws_json(&["ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true"]);
    let vpc = vpcs["Vpcs"][0]["VpcId"].as_str().unwrap();
    let cidr = vpcs["Vpcs"][0]["CidrBlock"].as_str().unwrap();
    let allow = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["ssm:GetParameter", "ssm:GetParameters"], "Resource": "arn:aws:ssm:*:*:parameter/app/*",
        "Condition": {"IpAddress": {"aws:SourceIp": cidr}}}]});
    s.aws_json(&[
        "iam",
        "put-role-policy",
        "--role-name",
        "app",
        "--policy-name",
        "ssm",
        "--policy-document",
        &allow.to_string(),
    ]);
    s.aws_json(&["ssm", "put-parameter", "--name", "/app/config", "--value", "from-the-role", "--type", "String"]);
    s.aws_json(&["ssm", "put-parameter", "--name", "/other/secret", "--value", "not-yours", "--type", "String"]);

    // A host service listening on every address of the host side, port 8081.
    let host_service =
        flotilla_net::netns::run_in(&s.netns.path, || std::net::TcpListener::bind(("0.0.0.0", 8081))).unwrap().unwrap();
    std::thread::spawn(move || {
        for mut c in host_service.incoming().flatten() {
            let _ = c.write_all(b"host service\n");
        }
    });
    let mut control = s.netns.connect(SocketAddr::from(([169, 254, 170, 2], 8081)), Duration::from_secs(2)).unwrap();
    let mut greeting = String::new();
    control.read_to_string(&mut greeting).unwrap();
    assert_eq!(greeting, "host service\n", "the host service answers on the host side");
    let env = json!([]);
    let td = f.register(
        "with-role",
        json!([python_container(&f, &image, &python.executable, "app", WITH_ROLE, env)]),
        json!({"taskRoleArn": role_arn}),
    );
    let task = f.run(&td);
    let task_id = task.rsplit('/').next().unwrap().to_owned();
    let lines = finished(&f, &task, "app");
    assert_eq!(line(&lines, "bound:"), "80", "the container binds its own port 80");
    assert_eq!(line(&lines, "meta:"), task, "the v4 metadata at 169.254.170.2 is the task's: {lines:#?}");
    assert_eq!(line(&lines, "other-port:"), "blocked", "no other host service through the endpoint's address");
    let uri = line(&lines, "uri:").to_owned();
    assert!(uri.starts_with("/v2/credentials/") && uri.len() == "/v2/credentials/".len() + 32, "{uri}");
    assert_eq!(line(&lines, "keys:"), "", "no keys in the environment");
    assert_eq!(line(&lines, "AWS_ENDPOINT_URL="), "http://169.254.170.2", "the API is at the task endpoint");
    let region = task.split(':').nth(3).unwrap();
    assert_eq!(line(&lines, "AWS_REGION="), region);
    assert_eq!(line(&lines, "AWS_DEFAULT_REGION="), region);
    let account = task.split(':').nth(4).unwrap();
    assert_eq!(line(&lines, "caller:"), format!("arn:aws:sts::{account}:assumed-role/app/{task_id}"), "{lines:#?}");
    assert_eq!(line(&lines, "allowed:"), "from-the-role", "{lines:#?}");
    assert_eq!(line(&lines, "other:"), "AccessDeniedException", "{lines:#?}");

    // Another task (without a role), in a group that allows no egress at all: the endpoint is
    // still its own (groups do not govern it), but it has no variable and gets neither the
    // first task's credentials nor any for a made-up id.
    let closed = s.aws_json(&[
        "ec2",
        "create-security-group",
        "--group-name",
        "closed",
        "--description",
        "closed",
        "--vpc-id",
        vpc,
    ]);
    let closed = closed["GroupId"].as_str().unwrap();
    s.aws_json(&[
        "ec2",
        "revoke-security-group-egress",
        "--group-id",
        closed,
        "--ip-permissions",
        "IpProtocol=-1,IpRanges=[{CidrIp=0.0.0.0/0}]",
    ]);
    let described = s.aws_json(&["ec2", "describe-security-groups", "--group-ids", closed]);
    assert_eq!(described["SecurityGroups"][0]["IpPermissionsEgress"], json!([]), "{described}");
    let env = json!([{"name": "THEIRS", "value": uri}]);
    let td = f.register(
        "without-role",
        json!([python_container(&f, &image, &python.executable, "probe", WITHOUT_ROLE, env)]),
        json!({}),
    );
    let network =
        format!("awsvpcConfiguration={{subnets=[{}],securityGroups=[{closed}],assignPublicIp=DISABLED}}", f.subnet);
    let other = f.run_in(&td, &network, &[]);
    let lines = finished(&f, &other, "probe");
    assert_eq!(line(&lines, "uri:"), "none", "{lines:#?}");
    assert_eq!(line(&lines, "meta:"), "probe", "{lines:#?}");
    assert_eq!(line(&lines, "theirs:"), "400", "{lines:#?}");
    assert_eq!(line(&lines, "made-up:"), "400", "{lines:#?}");
    assert_eq!(line(&lines, "sdk:"), "NoCredentialsError", "{lines:#?}");
    let unsigned = line(&lines, "unsigned:");
    assert!(unsigned.starts_with("4") && unsigned.ends_with("MissingAuthenticationTokenException"), "{lines:#?}");

    // Nor does the host itself, which is not the task.
    let from_host = get_from_host(s, &uri);
    assert!(from_host.starts_with("HTTP/1.1 400"), "{from_host}");

    f.stop_all(&[&task, &other]);
    // Once stopped, nothing answers for the task any more.
    wait_for("the endpoint forgets the task", Duration::from_secs(10), || {
        get_from_host(s, &uri).starts_with("HTTP/1.1 400")
    });
}

/// `GET <path>` at the task endpoint from the server's host side.
fn get_from_host(s: &Server, path: &str) -> String {
    let to = SocketAddr::from(([169, 254, 170, 2], 80));
    let mut stream = s.netns.connect(to, Duration::from_secs(5)).expect("the endpoint listens on the host side");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 169.254.170.2\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}
