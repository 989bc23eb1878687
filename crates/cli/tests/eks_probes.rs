//! EKS on Fargate, the pods' probes: a real Kubernetes 1.20 control plane registered with a
//! real `flotilla up`; the agent runs the pods' httpGet and tcpSocket probes from inside the
//! pods' network namespaces. A busybox `httpd` pod with an httpGet readiness probe (on a named
//! port) becomes Ready, NotReady when its file is removed (`kubectl exec rm`), Ready again when
//! it is back, while its tcpSocket liveness probe on the same port keeps it running; a
//! container whose tcpSocket liveness probe finds nobody listening is killed and started again
//! in place (`restartCount`) under restartPolicy Always, and fails its pod with the reason
//! under Never.

mod common;
#[path = "eks_pods/plane.rs"]
#[allow(dead_code)]
mod plane;

use std::time::Duration;

use common::eks::register_cluster;
use common::fixture::Fixture;
use common::wait_for;
use plane::KubePlane;
use serde_json::{Value, json};

const NS: &str = "probed";

fn pod(name: &str, container: Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "schedulerName": "fargate-scheduler", "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 2, "containers": [container],
        },
    })
    .to_string()
}

fn get(kube: &KubePlane, name: &str) -> Value {
    kube.kubectl_json(&["get", "pod", "-n", NS, name])
}

fn ready(pod: &Value) -> Option<bool> {
    let conditions = pod["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some(ready["status"] == "True")
}

#[test]
fn readiness_follows_an_http_probe_and_liveness_failures_restart_or_fail_the_pod() {
    let kube = KubePlane::start(false);
    let f = Fixture::new();
    register_cluster(&f.server, "demo", &kube.kubeconfig, NS, &f.subnet);
    kube.create_namespace(NS);

    // Both probes on one container: readiness by HTTP on the port's name, liveness by TCP.
    kube.apply(&pod(
        "web",
        json!({
            "name": "web", "image": f.image,
            "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/ready.html && exec httpd -f -p 8080 -h /www"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready.html", "port": "http"},
                "periodSeconds": 1, "failureThreshold": 1},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 2},
        }),
    ));
    // Nobody listens on 9999: the liveness probe fails twice and the container is killed,
    // then started again in place (restartPolicy Always) after the kubelet's 10 s back-off...
    let dead = |restart_policy: &str| {
        let container = json!({
            "name": "main", "image": f.image, "command": ["sleep", "3600"],
            "livenessProbe": {"tcpSocket": {"port": 9999}, "initialDelaySeconds": 1,
                "periodSeconds": 1, "failureThreshold": 2},
        });
        pod(&format!("dead-{}", restart_policy.to_lowercase()), container)
            .replace("\"Always\"", &format!("\"{restart_policy}\""))
    };
    kube.apply(&dead("Always"));
    // ...or, under restartPolicy Never, the pod fails with the reason.
    kube.apply(&dead("Never"));

    wait_for("web Ready", Duration::from_secs(120), || ready(&get(&kube, "web")) == Some(true));
    let web = get(&kube, "web");
    assert_eq!(web["status"]["containerStatuses"][0]["ready"], true, "{web:#}");

    kube.kubectl_ok(&["exec", "-n", NS, "web", "--", "rm", "/www/ready.html"]);
    wait_for("web NotReady once its file is gone", Duration::from_secs(30), || {
        ready(&get(&kube, "web")) == Some(false)
    });
    let web = get(&kube, "web");
    assert_eq!(web["status"]["phase"], "Running", "readiness does not stop the pod: {web:#}");
    assert_eq!(web["status"]["containerStatuses"][0]["ready"], false, "{web:#}");
    kube.kubectl_ok(&["exec", "-n", NS, "web", "--", "sh", "-c", "echo ok > /www/ready.html"]);
    wait_for("web Ready again", Duration::from_secs(30), || ready(&get(&kube, "web")) == Some(true));

    wait_for("dead-always restarted in place", Duration::from_secs(90), || {
        get(&kube, "dead-always")["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)
    });
    let always = get(&kube, "dead-always");
    assert_eq!(always["status"]["phase"], "Running", "{always:#}");
    let uid = always["metadata"]["uid"].clone();
    wait_for("dead-never Failed for its liveness probe", Duration::from_secs(60), || {
        get(&kube, "dead-never")["status"]["phase"] == "Failed"
    });
    let never = get(&kube, "dead-never");
    assert_eq!(never["status"]["message"], "Container main failed liveness probe", "{never:#}");
    assert!(never["status"]["containerStatuses"][0]["state"]["terminated"].is_object(), "{never:#}");
    assert_eq!(never["status"]["containerStatuses"][0]["restartCount"], 0);
    // web's liveness probe passed all along; dead-always is the same pod, restarted.
    let web = get(&kube, "web");
    assert_eq!(
        (&web["status"]["phase"], &web["status"]["containerStatuses"][0]["restartCount"]),
        (&json!("Running"), &json!(0))
    );
    assert_eq!(get(&kube, "dead-always")["metadata"]["uid"], uid);

    for name in ["web", "dead-always", "dead-never"] {
        kube.kubectl_ok(&["delete", "pod", "-n", NS, name, "--wait=false"]);
    }
    wait_for("no running tasks", Duration::from_secs(120), || {
        let out = f.server.aws_json(&["ecs", "list-tasks", "--cluster", "eks-demo", "--desired-status", "RUNNING"]);
        out["taskArns"].as_array().unwrap().is_empty()
    });
    drop(f);
}
