//! Cloud Map through the real AWS CLI: the seed's `aws servicediscovery` commands verbatim (with
//! `--endpoint-url`), then the rest of the lifecycle a task's registration goes through.
//!
//! The seed's VPC id is accepted on syntax alone for now; validation against existing VPCs comes
//! with the EC2 API.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

/// `get-operation` until the operation finishes; its final state.
fn finished(server: &Server, operation_id: &str) -> Value {
    let start = Instant::now();
    loop {
        let op = server.aws_json(&["servicediscovery", "get-operation", "--operation-id", operation_id]);
        let status = op["Operation"]["Status"].as_str().unwrap().to_owned();
        if status == "SUCCESS" || status == "FAIL" {
            return op["Operation"].clone();
        }
        assert!(["SUBMITTED", "PENDING"].contains(&status.as_str()), "{op}");
        assert!(start.elapsed() < Duration::from_secs(10), "operation {operation_id} still {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn succeeded(server: &Server, answer: &Value) -> Value {
    let op = finished(server, answer["OperationId"].as_str().expect("an OperationId"));
    assert_eq!(op["Status"], "SUCCESS", "{op}");
    op
}

#[test]
fn seed_commands_then_the_registration_lifecycle() {
    let server = Server::start();

    // 创建服务发现命名空间 (the seed, verbatim)
    let created = server.aws_json(&[
        "servicediscovery",
        "create-private-dns-namespace",
        "--name",
        "example.local",
        "--vpc",
        "vpc-12345678",
    ]);
    let op = succeeded(&server, &created);
    assert_eq!(op["Type"], "CREATE_NAMESPACE");
    let ns_id = op["Targets"]["NAMESPACE"].as_str().unwrap().to_owned();
    assert!(ns_id.starts_with("ns-") && ns_id.len() == 19, "{ns_id}");

    let ns = server.aws_json(&["servicediscovery", "get-namespace", "--id", &ns_id])["Namespace"].clone();
    assert_eq!(ns["Name"], "example.local");
    assert_eq!(ns["Type"], "DNS_PRIVATE");
    let arn = ns["Arn"].as_str().unwrap();
    assert!(arn.starts_with("arn:aws:servicediscovery:us-east-1:") && arn.ends_with(&format!(":namespace/{ns_id}")));
    assert_eq!(ns["Properties"]["HttpProperties"]["HttpName"], "example.local");
    let private = server.aws_json(&[
        "servicediscovery",
        "list-namespaces",
        "--filters",
        "Name=TYPE,Values=DNS_PRIVATE,Condition=EQ",
    ]);
    assert_eq!(private["Namespaces"].as_array().unwrap().len(), 1);
    let again = server.aws_err(&[
        "servicediscovery",
        "create-private-dns-namespace",
        "--name",
        "example.local",
        "--vpc",
        "vpc-12345678",
    ]);
    assert!(again.contains("NamespaceAlreadyExists"), "{again}");

    // 创建服务 (the seed, verbatim but for the namespace id it names)
    let dns_config = format!("NamespaceId={ns_id},DnsRecords=[{{Type=A,TTL=60}}]");
    let service = server.aws_json(&[
        "servicediscovery",
        "create-service",
        "--name",
        "myapp",
        "--dns-config",
        &dns_config,
        "--health-check-custom-config",
        "FailureThreshold=1",
    ])["Service"]
        .clone();
    let srv_id = service["Id"].as_str().unwrap().to_owned();
    assert!(srv_id.starts_with("srv-"), "{service}");
    assert_eq!(service["NamespaceId"], ns_id.as_str());
    assert_eq!(service["DnsConfig"]["DnsRecords"][0], serde_json::json!({"Type": "A", "TTL": 60}));
    assert_eq!(service["DnsConfig"]["RoutingPolicy"], "MULTIVALUE");
    let filter = format!("Name=NAMESPACE_ID,Values={ns_id},Condition=EQ");
    let services = server.aws_json(&["servicediscovery", "list-services", "--filters", &filter]);
    assert_eq!(services["Services"][0]["Id"], srv_id.as_str());
    let dup = server.aws_err(&["servicediscovery", "create-service", "--name", "myapp", "--namespace-id", &ns_id]);
    assert!(dup.contains("ServiceAlreadyExists"), "{dup}");

    // A task registers, as ECS does for a service with serviceRegistries.
    let missing_ip = server.aws_err(&[
        "servicediscovery",
        "register-instance",
        "--service-id",
        &srv_id,
        "--instance-id",
        "task-1",
        "--attributes",
        "color=blue",
    ]);
    assert!(missing_ip.contains("InvalidInput") && missing_ip.contains("AWS_INSTANCE_IPV4"), "{missing_ip}");
    for (id, ip) in [("task-1", "10.0.0.5"), ("task-2", "10.0.0.6")] {
        let attributes = format!("AWS_INSTANCE_IPV4={ip},AWS_INSTANCE_PORT=80,color=blue");
        let registered = server.aws_json(&[
            "servicediscovery",
            "register-instance",
            "--service-id",
            &srv_id,
            "--instance-id",
            id,
            "--attributes",
            &attributes,
        ]);
        let op = succeeded(&server, &registered);
        assert_eq!(op["Targets"]["INSTANCE"], id);
    }
    let listed = server.aws_json(&["servicediscovery", "list-instances", "--service-id", &srv_id]);
    let ids: Vec<&str> = listed["Instances"].as_array().unwrap().iter().map(|i| i["Id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["task-1", "task-2"]);
    assert_eq!(listed["Instances"][0]["Attributes"]["AWS_INSTANCE_IPV4"], "10.0.0.5");
    let one =
        server.aws_json(&["servicediscovery", "get-instance", "--service-id", &srv_id, "--instance-id", "task-2"]);
    assert_eq!(one["Instance"]["Attributes"]["AWS_INSTANCE_PORT"], "80");

    let found = server.discover(&["--namespace-name", "example.local", "--service-name", "myapp"]);
    assert_eq!(found["Instances"].as_array().unwrap().len(), 2);
    assert_eq!(found["Instances"][0]["HealthStatus"], "HEALTHY");
    assert_eq!(found["Instances"][0]["NamespaceName"], "example.local");
    let filtered = server.discover(&[
        "--namespace-name",
        "example.local",
        "--service-name",
        "myapp",
        "--query-parameters",
        "color=red",
    ]);
    assert!(filtered["Instances"].as_array().unwrap().is_empty());

    // Nothing in use can be deleted.
    let in_use = server.aws_err(&["servicediscovery", "delete-service", "--id", &srv_id]);
    assert!(in_use.contains("ResourceInUse"), "{in_use}");
    let in_use = server.aws_err(&["servicediscovery", "delete-namespace", "--id", &ns_id]);
    assert!(in_use.contains("ResourceInUse"), "{in_use}");

    // What is registered survives a SIGKILL of the server.
    let mut server = server;
    let data_dir = server.data_dir.clone();
    server.kill9();
    let restarted = Server::start_in(&data_dir);
    let listed = restarted.aws_json(&["servicediscovery", "list-instances", "--service-id", &srv_id]);
    assert_eq!(listed["Instances"].as_array().unwrap().len(), 2);

    // The task stops: deregistration, then everything is taken down.
    for id in ["task-1", "task-2"] {
        let gone = restarted.aws_json(&[
            "servicediscovery",
            "deregister-instance",
            "--service-id",
            &srv_id,
            "--instance-id",
            id,
        ]);
        succeeded(&restarted, &gone);
    }
    let unknown = restarted.aws_err(&[
        "servicediscovery",
        "deregister-instance",
        "--service-id",
        &srv_id,
        "--instance-id",
        "task-1",
    ]);
    assert!(unknown.contains("InstanceNotFound"), "{unknown}");
    let found = restarted.discover(&["--namespace-name", "example.local", "--service-name", "myapp"]);
    assert!(found["Instances"].as_array().unwrap().is_empty());
    restarted.aws_json(&["servicediscovery", "delete-service", "--id", &srv_id]);
    let gone = restarted.aws_err(&["servicediscovery", "get-service", "--id", &srv_id]);
    assert!(gone.contains("ServiceNotFound"), "{gone}");
    let deleted = restarted.aws_json(&["servicediscovery", "delete-namespace", "--id", &ns_id]);
    assert_eq!(succeeded(&restarted, &deleted)["Type"], "DELETE_NAMESPACE");
    let gone = restarted.aws_err(&["servicediscovery", "get-namespace", "--id", &ns_id]);
    assert!(gone.contains("NamespaceNotFound"), "{gone}");
    let no_op = restarted.aws_err(&["servicediscovery", "get-operation", "--operation-id", "nope"]);
    assert!(no_op.contains("OperationNotFound"), "{no_op}");
    let ops = restarted.aws_json(&["servicediscovery", "list-operations"]);
    assert_eq!(ops["Operations"].as_array().unwrap().len(), 6);
}
