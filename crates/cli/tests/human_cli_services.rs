//! `flotilla services` and `flotilla services show`, against servers that need no root: one
//! with a simulated host (tasks reach RUNNING, the scheduler settles, and an image that cannot
//! be pulled holds a rollout in progress) and one that serves the API only (tasks stay
//! PROVISIONING, so they count as pending).

mod common;

use std::time::Duration;

use common::{Server, cells, stdout};
use serde_json::{Value, json};

/// The lines of `show`'s output from the title line starting with `title` up to the next
/// blank line.
fn section<'a>(out: &'a str, title: &str) -> &'a str {
    let start = if out.starts_with(title) { Some(0) } else { out.find(&format!("\n{title}")).map(|i| i + 1) };
    let rest = &out[start.unwrap_or_else(|| panic!("no section {title} in:\n{out}"))..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

fn json_out(server: &Server, args: &[&str]) -> Value {
    serde_json::from_str(&stdout(&server.flotilla(args))).expect("flotilla -o json prints JSON")
}

fn default_subnets(server: &Server) -> String {
    let out = server.aws_json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
    let ids: Vec<&str> = out["Subnets"].as_array().unwrap().iter().map(|s| s["SubnetId"].as_str().unwrap()).collect();
    format!("awsvpcConfiguration={{subnets=[{}]}}", ids.join(","))
}

/// Registers `family` running `image` (once per call: a new revision) and returns its ARN.
fn register(server: &Server, family: &str, image: &str) -> String {
    let mut body = common::task_definition(family);
    body["containerDefinitions"][0]["image"] = json!(image);
    let body = body.to_string();
    let out = server.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &body]);
    out["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_owned()
}

fn create_service(server: &Server, cluster: &str, name: &str, td: &str, count: u32) {
    let network = default_subnets(server);
    let count = count.to_string();
    server.aws_json(&[
        "ecs",
        "create-service",
        "--cluster",
        cluster,
        "--service-name",
        name,
        "--task-definition",
        td,
        "--desired-count",
        &count,
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
    ]);
}

#[test]
fn services_table_and_show_once_the_service_is_steady() {
    let server = Server::start_simulated(1);
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    register(&server, "svc-cli", "busybox:latest");
    create_service(&server, "default", "web", "svc-cli", 2);

    // Steady: both tasks RUNNING and the one deployment COMPLETED, as the list's JSON says.
    common::wait_for("web to reach a steady state", Duration::from_secs(30), || {
        let listed = json_out(&server, &["services", "-o", "json"]);
        let web = &listed["services"][0];
        web["runningCount"] == 2 && web["deployments"][0]["rolloutState"] == "COMPLETED"
    });

    let table = stdout(&server.flotilla(&["services"]));
    let rows = cells(&table);
    assert_eq!(rows[0], ["NAME", "STATUS", "DESIRED", "RUNNING", "PENDING", "TASK DEFINITION", "ROLLOUT"], "{table}");
    assert_eq!(rows[1..], [["web", "ACTIVE", "2", "2", "0", "svc-cli:1", "COMPLETED"]], "{table}");

    // The JSON is DescribeServices' own service object: what the AWS CLI shows too.
    let listed = json_out(&server, &["services", "-o", "json"]);
    let described = server.aws_json(&["ecs", "describe-services", "--services", "web"]);
    let (ours, theirs) = (&listed["services"][0], &described["services"][0]);
    for key in ["serviceArn", "serviceName", "status", "desiredCount", "runningCount", "taskDefinition"] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    assert_eq!(ours["deployments"][0]["id"], theirs["deployments"][0]["id"]);

    let show = stdout(&server.flotilla(&["services", "show", "web"]));
    let fields = cells(section(&show, "Service"));
    let field = |name: &str| {
        fields.iter().find(|r| r[0] == name).unwrap_or_else(|| panic!("no field {name} in:\n{show}"))[1].clone()
    };
    assert_eq!(field("name"), "web");
    assert_eq!(field("status"), "ACTIVE");
    assert_eq!(field("task definition"), "svc-cli:1");
    assert_eq!(field("desired / running / pending"), "2 / 2 / 0");
    assert_eq!(field("launch"), "FARGATE");
    assert_eq!(field("deployments"), "minimum healthy 100%, maximum 200%, circuit breaker off");

    let deployments = cells(section(&show, "Deployments"));
    assert_eq!(deployments.len(), 2, "one deployment:\n{show}");
    let d = &deployments[1];
    assert!(d[0].starts_with("ecs-svc/") && d[0].len() == "ecs-svc/".len() + 19, "{show}");
    assert_eq!(d[1..8], ["PRIMARY", "svc-cli:1", "2", "2", "0", "0", "COMPLETED"], "{show}");

    // Newest first: the steady state came after the start of both tasks.
    let events = cells(section(&show, "Events"));
    let messages: Vec<&str> = events[1..].iter().map(|e| e[1].as_str()).collect();
    let steady = messages.iter().position(|m| *m == "(service web) has reached a steady state.");
    let started = messages.iter().position(|m| m.starts_with("(service web) has started "));
    assert!(matches!((steady, started), (Some(s), Some(t)) if s < t), "{show}");
    let times: Vec<&str> = events[1..].iter().map(|e| e[0].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "events newest first: {times:?}");

    let limited = stdout(&server.flotilla(&["services", "show", "web", "--events", "1"]));
    assert_eq!(cells(section(&limited, "Events")).len(), 2, "{limited}");

    let raw = json_out(&server, &["services", "show", "web", "-o", "json"]);
    assert_eq!(raw["services"][0]["serviceArn"], ours["serviceArn"]);
    assert_eq!(raw["failures"], json!([]));

    // A revision whose image cannot be pulled (the simulated host's `missing` tag) never
    // starts, so the rollout stays in progress with the old tasks kept running (minimum
    // healthy 100%) and both deployments listed.
    let broken = register(&server, "svc-cli", "busybox:missing");
    server.aws_json(&["ecs", "update-service", "--service", "web", "--task-definition", &broken]);
    common::wait_for("a failed task in the new deployment", Duration::from_secs(30), || {
        let listed = json_out(&server, &["services", "-o", "json"]);
        listed["services"][0]["deployments"][0]["failedTasks"].as_i64().unwrap_or(0) > 0
    });
    let show = stdout(&server.flotilla(&["services", "show", "web"]));
    let deployments = cells(section(&show, "Deployments"));
    let summary: Vec<&[String]> = deployments[1..].iter().map(|d| &d[1..8]).collect();
    assert_eq!(summary.len(), 2, "{show}");
    assert_eq!(summary[0][..3], ["PRIMARY", "svc-cli:2", "2"], "{show}");
    assert_eq!(summary[0][6], "IN_PROGRESS", "{show}");
    assert_ne!(summary[0][5], "0", "failed tasks counted: {show}");
    assert_eq!(summary[1], ["ACTIVE", "svc-cli:1", "2", "2", "0", "0", "COMPLETED"], "{show}");
    // The new revision's next attempt may be PENDING at any moment (failed launches are
    // retried with a delay), so that column is only bounded by the new deployment's desired 2.
    let table = stdout(&server.flotilla(&["services"]));
    let row = &cells(&table)[1];
    assert_eq!(row[1..4], ["ACTIVE", "2", "2"], "{table}");
    assert!(row[4].parse::<u32>().is_ok_and(|pending| pending <= 2), "{table}");
    assert_eq!(row[5..], ["svc-cli:2", "IN_PROGRESS"], "{table}");
}

#[test]
fn services_lists_every_page_of_a_cluster_and_names_what_is_missing() {
    let server = Server::start_no_agent();
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "prod"]);
    register(&server, "svc-list", "busybox:latest");
    // More than one ListServices page (10) and one DescribeServices batch (10).
    let names: Vec<String> = (0..12).map(|i| format!("s{i:02}")).collect();
    for name in &names {
        create_service(&server, "prod", name, "svc-list", 0);
    }
    create_service(&server, "default", "web", "svc-list", 2);

    let listed = json_out(&server, &["services", "--cluster", "prod", "-o", "json"]);
    let mut got: Vec<&str> =
        listed["services"].as_array().unwrap().iter().map(|s| s["serviceName"].as_str().unwrap()).collect();
    got.sort();
    assert_eq!(got, names);
    let table = stdout(&server.flotilla(&["services"]));
    let rows = cells(&table);
    assert_eq!(rows.len(), 2, "only the default cluster's service:\n{table}");
    // Without an agent the tasks stay PROVISIONING: placed, pending, never running.
    assert_eq!(rows[1], ["web", "ACTIVE", "2", "0", "2", "svc-list:1", "IN_PROGRESS"], "{table}");

    let out = server.flotilla(&["services", "show", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no service nope in cluster default") && err.contains("MISSING"), "{err}");
}
