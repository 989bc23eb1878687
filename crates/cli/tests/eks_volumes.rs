//! EKS on Fargate, pods' configMap, secret and service account token volumes: a real
//! Kubernetes 1.20 plane registered with a real `flotilla up`; the files a pod's containers
//! read are the cluster's, written into the task's volumes before they start and refreshed
//! while they run; a pod naming a missing ConfigMap stays Pending with the kubelet's
//! FailedMount event until it exists.

mod common;
#[path = "eks_pods/plane.rs"]
#[allow(dead_code)] // Some of its helpers are eks_pods's alone.
mod plane;

use std::time::Duration;

use common::eks::register_cluster;
use common::fixture::Fixture;
use common::wait_for;
use plane::KubePlane;
use serde_json::Value;

const NS: &str = "fargate-files";

fn pod(kube: &KubePlane, name: &str) -> Value {
    kube.kubectl_json(&["get", "pod", "-n", NS, name])
}

fn logs(kube: &KubePlane, name: &str) -> String {
    String::from_utf8_lossy(&kube.kubectl(&["logs", "-n", NS, name]).stdout).into_owned()
}

fn events(kube: &KubePlane, name: &str, reason: &str) -> Vec<String> {
    let selector = format!("involvedObject.name={name}");
    let list = kube.kubectl_json(&["get", "events", "-n", NS, "--field-selector", &selector]);
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items.iter().filter(|e| e["reason"] == reason).map(|e| e["message"].as_str().unwrap_or("").to_owned()).collect()
}

#[test]
fn config_maps_secrets_and_the_token_are_files_in_the_pods_volumes() {
    let kube = KubePlane::start(false);
    let f = Fixture::new();
    register_cluster(&f.server, "files", &kube.kubeconfig, NS, &f.subnet);
    kube.create_namespace(NS);
    kube.kubectl_ok(&["create", "configmap", "app-config", "-n", NS, "--from-literal=app.conf=hello config"]);
    kube.kubectl_ok(&["create", "secret", "generic", "app-secret", "-n", NS, "--from-literal=password=s3cret"]);

    // One configMap with items and a mode, one secret whole; the token's secret volume is the
    // service account admission's.
    let script = "echo CONF=$(cat /etc/app/conf/app.conf); echo MODE=$(stat -c %a /etc/app/conf/app.conf); \
                  echo PASS=$(cat /etc/secret/password); \
                  test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo TOKEN=yes; \
                  test -s /var/run/secrets/kubernetes.io/serviceaccount/ca.crt && echo CA=yes; \
                  echo PROJECTED=$(cut -d. -f1 /var/run/secrets/tokens/vault | head -c 2); \
                  touch /etc/app/new 2>/dev/null || echo READONLY=yes; exec sleep 3600";
    kube.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: {NS}}}
spec:
  schedulerName: fargate-scheduler
  terminationGracePeriodSeconds: 2
  volumes:
  - name: config
    configMap: {{name: app-config, items: [{{key: app.conf, path: conf/app.conf, mode: 0400}}]}}
  - name: secret
    secret: {{secretName: app-secret}}
  - name: tokens
    projected: {{sources: [{{serviceAccountToken: {{path: vault, audience: vault, expirationSeconds: 600}}}}]}}
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "{script}"]
    volumeMounts:
    - {{name: config, mountPath: /etc/app}}
    - {{name: secret, mountPath: /etc/secret}}
    - {{name: tokens, mountPath: /var/run/secrets/tokens}}
"#,
        image = f.image
    ));
    wait_for("the reader's files in its logs", Duration::from_secs(180), || {
        logs(&kube, "reader").contains("READONLY=")
    });
    let out = logs(&kube, "reader");
    // A JWT's header is base64 JSON: `ey`.
    for line in ["CONF=hello config", "MODE=400", "PASS=s3cret", "TOKEN=yes", "CA=yes", "PROJECTED=ey", "READONLY=yes"]
    {
        assert!(out.lines().any(|l| l == line), "{line} in:\n{out}");
    }
    let out = kube.kubectl(&[
        "exec",
        "-n",
        NS,
        "reader",
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), NS, "{}", String::from_utf8_lossy(&out.stderr));

    // A changed ConfigMap reaches the running pod, as a kubelet refreshes it.
    kube.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-config, namespace: {NS}}}\ndata: {{app.conf: changed}}\n"
    ));
    wait_for("the changed ConfigMap in the running pod", Duration::from_secs(120), || {
        let out = kube.kubectl(&["exec", "-n", NS, "reader", "--", "cat", "/etc/app/conf/app.conf"]);
        String::from_utf8_lossy(&out.stdout) == "changed"
    });

    // A missing ConfigMap: Pending, with the kubelet's words, until it exists.
    kube.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: waiting, namespace: {NS}}}
spec:
  schedulerName: fargate-scheduler
  terminationGracePeriodSeconds: 2
  volumes: [{{name: later, configMap: {{name: later}}}}]
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "echo LATER=$(cat /etc/later/k); exec sleep 3600"]
    volumeMounts: [{{name: later, mountPath: /etc/later}}]
"#,
        image = f.image
    ));
    let expected = r#"MountVolume.SetUp failed for volume "later" : configmap "later" not found"#;
    wait_for("a FailedMount event", Duration::from_secs(60), || {
        events(&kube, "waiting", "FailedMount").iter().any(|m| m == expected)
    });
    let waiting = pod(&kube, "waiting");
    assert_eq!(waiting["status"]["phase"], "Pending", "{waiting:#}");
    assert!(waiting["spec"]["nodeName"].is_null(), "{waiting:#}");
    kube.kubectl_ok(&["create", "configmap", "later", "-n", NS, "--from-literal=k=now here"]);
    wait_for("the waiting pod runs with the file", Duration::from_secs(120), || {
        logs(&kube, "waiting").lines().any(|l| l == "LATER=now here")
    });

    kube.kubectl_ok(&["delete", "pod", "-n", NS, "reader", "waiting"]);
    wait_for("no running tasks", Duration::from_secs(120), || {
        let out = f.server.aws_json(&["ecs", "list-tasks", "--cluster", "eks-files", "--desired-status", "RUNNING"]);
        out["taskArns"].as_array().is_some_and(|a| a.is_empty())
    });
    drop(f);
}
