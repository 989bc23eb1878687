use super::*;

fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"}, "spec": spec})).unwrap()
}

fn task(status: &str, containers: Value) -> Task {
    serde_json::from_value(json!({
        "taskArn": "arn:aws:ecs:us-east-1:1:task/eks-demo/abc", "clusterArn": "c", "taskDefinitionArn": "d",
        "lastStatus": status, "desiredStatus": "RUNNING", "cpu": "256", "memory": "512",
        "containers": containers, "overrides": {"containerOverrides": []}, "launchType": "FARGATE",
        "platformVersion": "1.4.0", "platformFamily": "Linux", "availabilityZone": "us-east-1a",
        "createdAt": 1_700_000_000.0, "startedAt": 1_700_000_001.0, "enableExecuteCommand": true, "version": 3,
    }))
    .unwrap()
}

fn container(name: &str, status: &str, exit: Option<i32>, health: Option<&str>) -> Value {
    json!({"containerArn": "x", "taskArn": "t", "name": name, "image": "busybox", "lastStatus": status,
        "exitCode": exit, "healthStatus": health, "runtimeId": "rid", "imageDigest": "sha256:1"})
}

fn condition(status: &Value, kind: &str) -> Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap()["status"].clone()
}

const HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn a_running_task_is_a_running_ready_pod() {
    let p = pod(json!({"containers": [{"name": "web", "image": "busybox"}]}));
    let t = task("RUNNING", json!([container("web", "RUNNING", None, None)]));
    let s = pod_status(&p, &t, Some(Ipv4Addr::new(10, 0, 0, 5)), HOST);
    assert_eq!(s["phase"], "Running");
    assert_eq!(condition(&s, "Ready"), "True");
    assert_eq!(s["podIP"], "10.0.0.5");
    assert_eq!(s["podIPs"], json!([{"ip": "10.0.0.5"}]));
    assert_eq!(s["hostIP"], "127.0.0.1");
    assert_eq!(s["startTime"], "2023-11-14T22:13:20Z");
    let c = &s["containerStatuses"][0];
    assert_eq!(c["state"]["running"]["startedAt"], "2023-11-14T22:13:21Z");
    assert_eq!(c["imageID"], "busybox@sha256:1");
    assert_eq!(c["containerID"], "flotilla://rid");
}

#[test]
fn a_probe_makes_ready_wait_for_healthy() {
    let p = pod(
        json!({"containers": [{"name": "web", "image": "busybox", "readinessProbe": {"exec": {"command": ["true"]}}}]}),
    );
    let unknown = task("RUNNING", json!([container("web", "RUNNING", None, Some("UNKNOWN"))]));
    assert_eq!(condition(&pod_status(&p, &unknown, None, HOST), "Ready"), "False");
    let healthy = task("RUNNING", json!([container("web", "RUNNING", None, Some("HEALTHY"))]));
    assert_eq!(condition(&pod_status(&p, &healthy, None, HOST), "Ready"), "True");
}

#[test]
fn liveness_alone_does_not_gate_ready_and_its_failure_fails_the_pod() {
    let p = pod(json!({"containers": [{"name": "web", "image": "busybox",
        "livenessProbe": {"tcpSocket": {"port": 1}}}]}));
    let running = task("RUNNING", json!([container("web", "RUNNING", None, None)]));
    assert_eq!(condition(&pod_status(&p, &running, None, HOST), "Ready"), "True");
    let mut restarted = running.clone();
    restarted.containers[0].restart_count = Some(2);
    assert_eq!(pod_status(&p, &restarted, None, HOST)["containerStatuses"][0]["restartCount"], 2);
    // Killed for its probe, the container may well exit 0 on SIGTERM: the pod still failed.
    let mut killed = task("STOPPED", json!([container("web", "STOPPED", Some(0), None)]));
    killed.stopped_reason = Some(flotilla_types::task_definition::liveness_failure("web"));
    let s = pod_status(&p, &killed, None, HOST);
    assert_eq!(s["phase"], "Failed");
    assert_eq!(s["message"], "Container web failed liveness probe");
    // A startup probe gates Ready as readiness does, until the agent reports it passed.
    let p = pod(json!({"containers": [{"name": "web", "image": "busybox",
        "startupProbe": {"tcpSocket": {"port": 1}}}]}));
    assert_eq!(condition(&pod_status(&p, &running, None, HOST), "Ready"), "False");
}

#[test]
fn a_stopped_task_is_succeeded_only_when_every_app_container_exited_zero() {
    let p = pod(json!({"initContainers": [{"name": "init", "image": "busybox"}],
        "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}));
    let done = |b: i32| {
        let containers = json!([
            container("init", "STOPPED", Some(0), None),
            container("a", "STOPPED", Some(0), None),
            container("b", "STOPPED", Some(b), None)
        ]);
        task("STOPPED", containers)
    };
    let ok = pod_status(&p, &done(0), None, HOST);
    assert_eq!(ok["phase"], "Succeeded");
    assert_eq!(ok["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    let failed = pod_status(&p, &done(2), None, HOST);
    assert_eq!(failed["phase"], "Failed");
    assert_eq!(failed["containerStatuses"][1]["state"]["terminated"]["exitCode"], 2);
    assert_eq!(failed["containerStatuses"][1]["state"]["terminated"]["reason"], "Error");
    assert_eq!(condition(&failed, "Ready"), "False");
}

#[test]
fn a_provisioning_task_is_a_pending_pod_with_containers_creating() {
    let p = pod(json!({"containers": [{"name": "web", "image": "busybox"}]}));
    let s = pod_status(&p, &task("PROVISIONING", json!([])), None, HOST);
    assert_eq!(s["phase"], "Pending");
    assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating");
    assert!(s.get("podIP").is_none());
}

#[test]
fn node_names_and_times_in_kubernetes_forms() {
    let name = node_name(Ipv4Addr::new(192, 168, 179, 65), "eu-central-1");
    assert_eq!(name, "fargate-ip-192-168-179-65.eu-central-1.compute.internal");
    assert_eq!(time(Timestamp(1_700_000_000_123)), "2023-11-14T22:13:20Z");
    assert_eq!(micro_time(Timestamp(1_700_000_000_123)), "2023-11-14T22:13:20.123000Z");
}
