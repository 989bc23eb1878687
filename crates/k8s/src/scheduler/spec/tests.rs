use super::*;

fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"}, "spec": spec})).unwrap()
}

fn busybox() -> Value {
    json!({"name": "app", "image": "busybox"})
}

#[test]
fn refuses_what_fargate_refuses_in_its_words() {
    assert_eq!(refusal(&pod(json!({"containers": [busybox()]}))), None);
    let host = pod(json!({"hostNetwork": true, "containers": [busybox()]}));
    assert_eq!(refusal(&host).unwrap(), "Pod not supported on Fargate: fields not supported: HostNetwork");
    let port =
        pod(json!({"containers": [{"name": "a", "image": "b", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}));
    assert_eq!(refusal(&port).unwrap(), "Pod not supported on Fargate: fields not supported: HostPort");
    let privileged = pod(json!({"containers": [{"name": "a", "image": "b", "securityContext": {"privileged": true}}]}));
    assert_eq!(
        refusal(&privileged).unwrap(),
        "Pod not supported on Fargate: invalid SecurityContext fields: Privileged"
    );
    let gpu =
        pod(json!({"containers": [{"name": "a", "image": "b", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}));
    assert!(refusal(&gpu).unwrap().contains("nvidia.com/gpu"), "{:?}", refusal(&gpu));
    let mut daemon = pod(json!({"containers": [busybox()]}));
    daemon.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u"})).unwrap(),
    ]);
    assert_eq!(refusal(&daemon).unwrap(), "Pod not supported on Fargate: DaemonSet not supported");
}

#[test]
fn quantities() {
    assert_eq!(cpu_units("250m"), Some(256));
    assert_eq!(cpu_units("2"), Some(2048));
    assert_eq!(cpu_units("0.5"), Some(512));
    assert_eq!(mebibytes("512Mi"), Some(512));
    assert_eq!(mebibytes("2Gi"), Some(2048));
    assert_eq!(mebibytes("1G"), Some(954));
    assert_eq!(cpu_units("lots"), None);
}

#[test]
fn containers_become_an_awsvpc_task_definition() {
    let p = pod(json!({
        "terminationGracePeriodSeconds": 5,
        "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "token", "secret": {"secretName": "t"}}],
        "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
        "containers": [{
            "name": "web", "image": "busybox", "command": ["httpd"], "args": ["-f", "-p", "80"],
            "env": [{"name": "A", "value": "1"}],
            "ports": [{"containerPort": 80}],
            "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "4Gi"}},
            "volumeMounts": [{"name": "scratch", "mountPath": "/s"}, {"name": "token", "mountPath": "/t"}],
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
        }],
    }));
    let size = size(&p).unwrap();
    assert_eq!(size.capacity_provisioned, "0.25vCPU 0.5GB");
    let def = serde_json::to_value(task_definition(&p, "fam", &size, "demo", "us-east-1")).unwrap();
    assert_eq!(def["networkMode"], "awsvpc");
    assert_eq!(def["cpu"], "256");
    assert_eq!(def["volumes"], json!([{"name": "scratch"}, {"name": "token"}]));
    let init = &def["containerDefinitions"][0];
    assert_eq!(init["essential"], false);
    let web = &def["containerDefinitions"][1];
    assert_eq!(web["entryPoint"], json!(["httpd"]));
    assert_eq!(web["command"], json!(["-f", "-p", "80"]));
    assert_eq!(web["dependsOn"], json!([{"containerName": "init", "condition": "SUCCESS"}]));
    assert_eq!(web["memory"], 512, "a limit beyond the task is the task's memory");
    assert_eq!(web["memoryReservation"], 128);
    assert_eq!(
        web["mountPoints"],
        json!([
            {"sourceVolume": "scratch", "containerPath": "/s", "readOnly": false},
            {"sourceVolume": "token", "containerPath": "/t", "readOnly": true},
        ])
    );
    assert_eq!(web["healthCheck"]["command"], json!(["CMD", "true"]));
    assert_eq!(web["stopTimeout"], 5);
    assert_eq!(web["logConfiguration"]["options"]["awslogs-group"], "/aws/eks/demo/fargate");
}

#[test]
fn sized_by_fargate_s_table_and_refused_beyond_it() {
    let limits = pod(json!({"containers": [{"name": "nginx", "image": "nginx",
        "resources": {"limits": {"memory": "2Gi", "cpu": "2000m"}}}]}));
    assert_eq!(size(&limits).unwrap().capacity_provisioned, "2vCPU 4GB");
    assert_eq!(size(&pod(json!({"containers": [busybox()]}))).unwrap().capacity_provisioned, "0.25vCPU 0.5GB");
    let huge = pod(json!({"containers": [{"name": "a", "image": "b", "resources": {"requests": {"cpu": "64"}}}]}));
    assert!(size(&huge).unwrap_err().starts_with("Pod not supported on Fargate: "), "{:?}", size(&huge));
}

#[test]
fn init_containers_and_limits_never_overbook_the_task() {
    // An init container larger than the app (the pod is sized by it), and two app containers
    // whose memory limits add up past the task: Fargate's validation takes the definition.
    let p = pod(json!({
        "initContainers": [{"name": "migrate", "image": "busybox",
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}],
        "containers": [
            {"name": "app", "image": "busybox", "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "4Gi"}}},
            {"name": "proxy", "image": "busybox", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "4Gi"}}},
        ],
    }));
    let size = size(&p).unwrap();
    assert_eq!(size.capacity_provisioned, "2vCPU 5GB");
    let def = task_definition(&p, "fam", &size, "demo", "us-east-1");
    let json = serde_json::to_value(&def).unwrap();
    let init = &json["containerDefinitions"][0];
    assert!(init.get("cpu").is_none() && init.get("memoryReservation").is_none(), "{init}");
    let app = &json["containerDefinitions"][1];
    assert_eq!(app["cpu"], 256);
    assert_eq!(app["memoryReservation"], 512);
    assert!(app.get("memory").is_none(), "limits adding up past the task are the task's: {app}");
    flotilla_types::validate::validate_for_fargate(def).expect("Fargate takes it");
}
