//! EKS on Fargate, Services: a real Kubernetes 1.20 plane (API server and controller manager,
//! whose endpoints controller fills each Service's Endpoints from Ready pods) registered with a
//! real `flotilla up`; a client pod reaches a Deployment's pods through their Service's
//! ClusterIP, which the hosts route as kube-proxy would (DNAT to a Ready endpoint); no Ready
//! endpoint, or no Service, and the ClusterIP leads nowhere.

mod common;
#[path = "eks_pods/plane.rs"]
#[allow(dead_code)]
mod plane;

use std::collections::BTreeSet;
use std::time::Duration;

use common::eks::register_cluster;
use common::fixture::Fixture;
use common::wait_for;
use plane::{KubePlane, running};
use serde_json::Value;

const NS: &str = "fargate-services";

/// Two busybox HTTP servers on port 8080, each answering its own pod name, and their Service
/// (port 80 -> 8080); a client pod that only sleeps.
fn workload(image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      schedulerName: fargate-scheduler
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c"]
        args: ["mkdir -p /tmp/www && echo $POD_NAME > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}}}
spec:
  schedulerName: fargate-scheduler
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: {image}, command: [sleep, "3600"]}}]
"#
    )
}

fn web_pods(kube: &KubePlane) -> Vec<Value> {
    let list = kube.kubectl_json(&["get", "pods", "-n", NS, "-l", "app=web"]);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The body the client gets from `http://<host>:<port>/` (`None`: the request failed). Over
/// `busybox nc`: the test image's static busybox crashes in `wget`.
fn fetch_port(kube: &KubePlane, host: &str, port: u16) -> Option<String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {host} {port}");
    let out = kube.kubectl(&["exec", "-n", NS, "client", "--", "sh", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.trim().to_owned());
    body.filter(|_| out.status.success() && text.starts_with("HTTP/1.1 200"))
}

fn fetch(kube: &KubePlane, host: &str) -> Option<String> {
    fetch_port(kube, host, 80)
}

#[test]
fn a_client_pod_reaches_a_deployment_through_its_cluster_ip() {
    let kube = KubePlane::start(false);
    let f = Fixture::new();
    register_cluster(&f.server, "svc", &kube.kubeconfig, NS, &f.subnet);
    kube.create_namespace(NS);
    kube.apply(&workload(&f.image));
    wait_for("2 Ready web pods and the client", Duration::from_secs(180), || {
        let client = kube.kubectl_json(&["get", "pod", "-n", NS, "client"]);
        web_pods(&kube).iter().filter(|p| running(p)).count() == 2 && running(&client)
    });
    let names: BTreeSet<String> =
        web_pods(&kube).iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()).collect();
    let service = kube.kubectl_json(&["get", "service", "-n", NS, "web"]);
    let ip = service["spec"]["clusterIP"].as_str().expect("a ClusterIP").to_owned();
    assert!(ip.starts_with("10.96."), "{service:#}");

    // Both pods answer through the one address, each with its own name.
    let mut seen = BTreeSet::new();
    wait_for("the client to reach both pods through the ClusterIP", Duration::from_secs(90), || {
        if let Some(body) = fetch(&kube, &ip) {
            assert!(names.contains(&body), "{body:?} is not one of {names:?}");
            seen.insert(body);
        }
        seen == names
    });

    // The VPC's resolver answers the Service's names with its ClusterIP.
    for name in [format!("web.{NS}.svc.cluster.local"), format!("web.{NS}")] {
        wait_for("the Service's name to lead to a pod", Duration::from_secs(30), || {
            fetch(&kube, &name).is_some_and(|body| names.contains(&body))
        });
    }

    // No Ready endpoint: the ClusterIP refuses.
    kube.kubectl_ok(&["scale", "deployment", "-n", NS, "web", "--replicas=0"]);
    wait_for("the ClusterIP to lead nowhere once the pods are gone", Duration::from_secs(90), || {
        fetch(&kube, &ip).is_none()
    });

    // Back to one pod, then the Service deleted: routing stops.
    kube.kubectl_ok(&["scale", "deployment", "-n", NS, "web", "--replicas=1"]);
    wait_for("the new pod to answer through the ClusterIP", Duration::from_secs(120), || {
        fetch(&kube, &ip).is_some_and(|body| body.starts_with("web-"))
    });
    kube.kubectl_ok(&["delete", "service", "-n", NS, "web"]);
    wait_for("the deleted Service's ClusterIP to lead nowhere", Duration::from_secs(60), || {
        fetch(&kube, &ip).is_none()
    });
    let pod = web_pods(&kube).into_iter().find(running).expect("the web pod still runs");
    let pod_ip = pod["status"]["podIP"].as_str().unwrap().to_owned();
    let direct = fetch_port(&kube, &pod_ip, 8080);
    assert!(direct.as_ref().is_some_and(|body| body.starts_with("web-")), "the pod itself still answers: {direct:?}");

    // Pods gone, tasks stopped: nothing is left running when the server goes.
    kube.kubectl_ok(&["delete", "deployment", "-n", NS, "web"]);
    kube.kubectl_ok(&["delete", "pod", "-n", NS, "client", "--wait=false"]);
    wait_for("every pod's task stopped", Duration::from_secs(120), || {
        let out = f.server.aws_json(&["ecs", "list-tasks", "--cluster", "eks-svc", "--desired-status", "RUNNING"]);
        out["taskArns"].as_array().is_some_and(Vec::is_empty)
    });
    drop(f);
}
