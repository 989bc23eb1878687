//! The seeds' AWS CLI commands, verbatim plus `--endpoint-url`, against the real server.

mod common;

use common::{SEED_TASK_DEFINITION, Server};
use serde_json::Value;

fn seed_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("task-definition.json");
    std::fs::write(&path, SEED_TASK_DEFINITION).unwrap();
    format!("file://{}", path.display())
}

#[test]
fn seed_cluster_and_task_definition_commands() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();

    let created = server.aws_json(&["ecs", "create-cluster", "--cluster-name", "fargate-cluster"]);
    assert_eq!(created["cluster"]["clusterName"], "fargate-cluster");
    assert_eq!(created["cluster"]["status"], "ACTIVE");
    assert_eq!(created["cluster"]["clusterArn"], "arn:aws:ecs:us-east-1:000000000000:cluster/fargate-cluster");

    let registered = server.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &seed_file(&dir)]);
    let td = &registered["taskDefinition"];
    assert_eq!(td["taskDefinitionArn"], "arn:aws:ecs:us-east-1:000000000000:task-definition/fargate-task:1");
    assert_eq!(td["revision"], 1);
    assert_eq!(td["status"], "ACTIVE");
    assert_eq!(td["cpu"], "256");
    assert_eq!(td["memory"], "512");
    assert_eq!(td["compatibilities"], serde_json::json!(["EC2", "FARGATE"]));
    assert!(td["registeredAt"].as_f64().unwrap() > 1.7e9, "registeredAt is epoch seconds: {}", td["registeredAt"]);
    let attrs: Vec<&str> =
        td["requiresAttributes"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(attrs.contains(&"ecs.capability.task-eni"), "{attrs:?}");
    assert!(attrs.contains(&"com.amazonaws.ecs.capability.logging-driver.awslogs"), "{attrs:?}");
    let web = &td["containerDefinitions"][0];
    assert_eq!(web["essential"], true);
    assert_eq!(web["portMappings"][0]["hostPort"], 80);
    assert_eq!(web["logConfiguration"]["options"]["awslogs-stream-prefix"], "ecs");

    // Seed: Container Insights.
    let updated = server.aws_json(&[
        "ecs",
        "update-cluster-settings",
        "--cluster",
        "fargate-cluster",
        "--settings",
        "name=containerInsights,value=enabled",
    ]);
    assert_eq!(updated["cluster"]["settings"][0]["value"], "enabled");

    // Describe by family, family:revision and ARN all find revision 1.
    for reference in
        ["fargate-task", "fargate-task:1", "arn:aws:ecs:us-east-1:000000000000:task-definition/fargate-task:1"]
    {
        let d = server.aws_json(&["ecs", "describe-task-definition", "--task-definition", reference]);
        assert_eq!(d["taskDefinition"]["revision"], 1, "{reference}");
        assert!(d.get("tags").is_none(), "tags only with --include TAGS");
    }
    let missing = server.aws_err(&["ecs", "describe-task-definition", "--task-definition", "fargate-task:9"]);
    assert!(missing.contains("ClientException"), "{missing}");
}

#[test]
fn describe_clusters_include_and_failures() {
    let server = Server::start();
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "a", "--tags", "key=team,value=core"]);
    let plain = server.aws_json(&["ecs", "describe-clusters", "--clusters", "a", "missing"]);
    assert_eq!(plain["clusters"][0]["clusterName"], "a");
    assert!(plain["clusters"][0].get("tags").is_none());
    assert!(plain["clusters"][0].get("settings").is_none());
    assert_eq!(plain["failures"][0]["reason"], "MISSING");
    assert_eq!(plain["failures"][0]["arn"], "arn:aws:ecs:us-east-1:000000000000:cluster/missing");
    let full = server.aws_json(&["ecs", "describe-clusters", "--clusters", "a", "--include", "TAGS", "SETTINGS"]);
    assert_eq!(full["clusters"][0]["tags"][0]["key"], "team");
    assert_eq!(full["clusters"][0]["settings"][0]["name"], "containerInsights");

    // Idempotent create; list; delete makes it INACTIVE and unlisted.
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "a"]);
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "b"]);
    let listed = server.aws_json(&["ecs", "list-clusters"]);
    assert_eq!(listed["clusterArns"].as_array().unwrap().len(), 2);
    let deleted = server.aws_json(&["ecs", "delete-cluster", "--cluster", "b"]);
    assert_eq!(deleted["cluster"]["status"], "INACTIVE");
    let listed = server.aws_json(&["ecs", "list-clusters"]);
    assert_eq!(listed["clusterArns"], serde_json::json!(["arn:aws:ecs:us-east-1:000000000000:cluster/a"]));
    let gone = server.aws_err(&["ecs", "delete-cluster", "--cluster", "b"]);
    assert!(gone.contains("ClusterNotFoundException"), "{gone}");
}

#[test]
fn capacity_providers() {
    let server = Server::start();
    let all = server.aws_json(&["ecs", "describe-capacity-providers"]);
    let names: Vec<&str> =
        all["capacityProviders"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["FARGATE", "FARGATE_SPOT"]);
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "c"]);
    let put = server.aws_json(&[
        "ecs",
        "put-cluster-capacity-providers",
        "--cluster",
        "c",
        "--capacity-providers",
        "FARGATE",
        "FARGATE_SPOT",
        "--default-capacity-provider-strategy",
        "capacityProvider=FARGATE,base=1,weight=1",
        "capacityProvider=FARGATE_SPOT,weight=4",
    ]);
    assert_eq!(put["cluster"]["capacityProviders"], serde_json::json!(["FARGATE", "FARGATE_SPOT"]));
    assert_eq!(put["cluster"]["defaultCapacityProviderStrategy"][1]["weight"], 4);
    let bad = server.aws_err(&[
        "ecs",
        "put-cluster-capacity-providers",
        "--cluster",
        "c",
        "--capacity-providers",
        "FARGATE",
        "--default-capacity-provider-strategy",
        "capacityProvider=FARGATE_SPOT,weight=1",
    ]);
    assert!(bad.contains("InvalidParameterException") && bad.contains("FARGATE_SPOT"), "{bad}");
    let missing =
        server.aws_json(&["ecs", "describe-capacity-providers", "--capacity-providers", "FARGATE", "EC2_ASG"]);
    assert_eq!(missing["capacityProviders"].as_array().unwrap().len(), 1);
    assert_eq!(missing["failures"][0]["arn"], "EC2_ASG");
}

fn register(server: &Server, family: &str) -> Value {
    let body = common::task_definition(family).to_string();
    server.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &body])
}

#[test]
fn task_definition_lifecycle_listing_and_tags() {
    let server = Server::start();
    for family in ["web", "web", "web", "worker", "web-api"] {
        register(&server, family);
    }
    let asc = server.aws_json(&["ecs", "list-task-definitions", "--family-prefix", "web"]);
    let arns: Vec<String> = asc["taskDefinitionArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(arns, ["web-api:1", "web:1", "web:2", "web:3"]);
    let desc = server.aws_json(&["ecs", "list-task-definitions", "--family-prefix", "web", "--sort", "DESC"]);
    assert_eq!(desc["taskDefinitionArns"][0].as_str().unwrap().rsplit('/').next().unwrap(), "web:3");
    // The CLI paginates with --page-size (maxResults) and still returns everything.
    let paged = server.aws_json(&["ecs", "list-task-definitions", "--page-size", "2"]);
    assert_eq!(paged["taskDefinitionArns"].as_array().unwrap().len(), 5);

    // Deregister web:3: `web` now resolves to web:2; web:3 is still describable by revision.
    let dereg = server.aws_json(&["ecs", "deregister-task-definition", "--task-definition", "web:3"]);
    assert_eq!(dereg["taskDefinition"]["status"], "INACTIVE");
    assert!(dereg["taskDefinition"]["deregisteredAt"].is_number());
    let latest = server.aws_json(&["ecs", "describe-task-definition", "--task-definition", "web"]);
    assert_eq!(latest["taskDefinition"]["revision"], 2);
    let inactive = server.aws_json(&["ecs", "list-task-definitions", "--status", "INACTIVE"]);
    assert_eq!(inactive["taskDefinitionArns"].as_array().unwrap().len(), 1);

    // Delete needs INACTIVE first; failures name the reason.
    let deleted = server.aws_json(&["ecs", "delete-task-definitions", "--task-definitions", "web:3", "web:2"]);
    assert_eq!(deleted["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS");
    assert_eq!(deleted["failures"][0]["arn"], "web:2");
    // Revision numbers are never reused, even after deletion.
    assert_eq!(register(&server, "web")["taskDefinition"]["revision"], 4);

    // Families.
    let families = server.aws_json(&["ecs", "list-task-definition-families", "--family-prefix", "w"]);
    assert_eq!(families["families"], serde_json::json!(["web", "web-api", "worker"]));
    server.aws_json(&["ecs", "deregister-task-definition", "--task-definition", "worker:1"]);
    let active = server.aws_json(&["ecs", "list-task-definition-families", "--status", "ACTIVE"]);
    assert_eq!(active["families"], serde_json::json!(["web", "web-api"]));
    let inactive = server.aws_json(&["ecs", "list-task-definition-families", "--status", "INACTIVE"]);
    assert_eq!(inactive["families"], serde_json::json!(["worker"]));

    // Tags on a task definition revision.
    let arn = "arn:aws:ecs:us-east-1:000000000000:task-definition/web:4";
    server.aws_json(&[
        "ecs",
        "tag-resource",
        "--resource-arn",
        arn,
        "--tags",
        "key=env,value=prod",
        "key=team,value=a",
    ]);
    server.aws_json(&["ecs", "tag-resource", "--resource-arn", arn, "--tags", "key=team,value=b"]);
    server.aws_json(&["ecs", "untag-resource", "--resource-arn", arn, "--tag-keys", "env"]);
    let tags = server.aws_json(&["ecs", "list-tags-for-resource", "--resource-arn", arn]);
    assert_eq!(tags["tags"], serde_json::json!([{"key": "team", "value": "b"}]));
    let with_tags =
        server.aws_json(&["ecs", "describe-task-definition", "--task-definition", "web:4", "--include", "TAGS"]);
    assert_eq!(with_tags["tags"][0]["value"], "b");
    let reserved = server.aws_err(&["ecs", "tag-resource", "--resource-arn", arn, "--tags", "key=aws:x,value=1"]);
    assert!(reserved.contains("InvalidParameterException"), "{reserved}");
    let nowhere = server.aws_err(&[
        "ecs",
        "list-tags-for-resource",
        "--resource-arn",
        "arn:aws:ecs:us-east-1:000000000000:cluster/none",
    ]);
    assert!(nowhere.contains("ResourceNotFoundException"), "{nowhere}");
}

#[test]
fn fargate_rejections_name_the_field() {
    let server = Server::start();
    let cases: &[(&str, &str)] = &[
        (
            r#"{"family":"x","networkMode":"bridge","cpu":"256","memory":"512","containerDefinitions":[{"name":"a","image":"i"}]}"#,
            "networkMode",
        ),
        (
            r#"{"family":"x","networkMode":"awsvpc","cpu":"256","memory":"4096","containerDefinitions":[{"name":"a","image":"i"}]}"#,
            "memory",
        ),
        (
            r#"{"family":"x","networkMode":"awsvpc","cpu":"1 vCPU","memory":"2 GB","containerDefinitions":[{"name":"a","image":"i","privileged":true}]}"#,
            "containerDefinitions[0].privileged",
        ),
        (
            r#"{"family":"x","networkMode":"awsvpc","cpu":"256","memory":"512","containerDefinitions":[{"name":"a","image":"i","healthCheck":{"command":["CMD","true"],"interval":1}}]}"#,
            "containerDefinitions[0].healthCheck.interval",
        ),
    ];
    for (body, field) in cases {
        let err = server.aws_err(&["ecs", "register-task-definition", "--cli-input-json", body]);
        assert!(err.contains("ClientException") && err.contains(field), "expected {field} in: {err}");
    }
    // The string forms are normalised.
    let ok = server.aws_json(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        r#"{"family":"x","networkMode":"awsvpc","cpu":"1 vCPU","memory":"2 GB","containerDefinitions":[{"name":"a","image":"i"}]}"#,
    ]);
    assert_eq!(ok["taskDefinition"]["cpu"], "1024");
    assert_eq!(ok["taskDefinition"]["memory"], "2048");
}
