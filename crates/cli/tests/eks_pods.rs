//! EKS on Fargate, the pods' side: a real Kubernetes 1.20 control plane (API server and
//! controller manager on etcd), registered with a real `flotilla up` as an ACTIVE cluster with
//! a Fargate profile, whose Deployment's pods run as Flotilla tasks on `fargate-ip-...` nodes;
//! `kubectl logs` reads their output through the nodes' kubelet API; evictions honour a PDB;
//! what Fargate refuses stays Pending with its reason.

mod common;
#[path = "eks_pods/plane.rs"]
mod plane;

use std::time::Duration;

use common::fixture::Fixture;
use common::{Server, wait_for};
use flotilla_eks::{ClusterRecord, ClusterStatus, FargateProfile, KubeAuth, PlaneSource, ProfileStatus, Selector};
use flotilla_store::{Op, Store, Txn};
use plane::KubePlane;
use serde_json::Value;

const NS: &str = "fargate-workload";

/// Writes what `aws eks` (CreateCluster of a registered cluster, CreateFargateProfile) would
/// leave in the store once both are ACTIVE, into a stopped server's data dir.
fn register_cluster(data_dir: &std::path::Path, plane: &KubePlane, subnet: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = flotilla_store::EmbeddedStore::open(data_dir.join("state.redb")).unwrap();
        let cluster = ClusterRecord {
            name: "demo".into(),
            arn: "arn:aws:eks:us-east-1:000000000000:cluster/demo".into(),
            status: ClusterStatus::Active,
            version: "1.20".into(),
            role_arn: "arn:aws:iam::000000000000:role/eks".into(),
            subnet_ids: vec![subnet.to_owned()],
            security_group_ids: vec![],
            vpc_id: String::new(),
            service_ipv4_cidr: "10.96.0.0/16".into(),
            endpoint: Some(plane.endpoint.clone()),
            ca_pem: Some(plane.ca_pem.clone()),
            creator_arn: "arn:aws:iam::000000000000:root".into(),
            created_at: flotilla_types::Timestamp::now(),
            source: PlaneSource::Registered {
                endpoint: plane.endpoint.clone(),
                ca_pem: plane.ca_pem.clone(),
                auth: KubeAuth::Token { token: plane.token.clone() },
            },
            tags: vec![],
            failure: None,
        };
        let profile = FargateProfile {
            name: "fargate".into(),
            arn: "arn:aws:eks:us-east-1:000000000000:fargateprofile/demo/fargate/1".into(),
            cluster_name: "demo".into(),
            created_at: flotilla_types::Timestamp::now(),
            pod_execution_role_arn: "arn:aws:iam::000000000000:role/pods".into(),
            subnets: vec![subnet.to_owned()],
            selectors: vec![Selector { namespace: NS.into(), labels: Default::default() }],
            status: ProfileStatus::Active,
            tags: vec![],
        };
        let txn = Txn::new()
            .then(Op::put("eks/clusters/demo", serde_json::to_vec(&cluster).unwrap()))
            .then(Op::put("eks/profiles/demo/fargate", serde_json::to_vec(&profile).unwrap()));
        store.txn(txn).await.unwrap();
    });
}

fn deployment(image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: simple-web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: simple-web}}}}
  template:
    metadata: {{labels: {{app: simple-web}}}}
    spec:
      schedulerName: fargate-scheduler
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c"]
        args: ["echo hello from $POD_NAME; exec sleep 3600"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        resources: {{requests: {{cpu: 250m, memory: 128Mi}}}}
"#
    )
}

fn pods(plane: &KubePlane) -> Vec<Value> {
    let list = plane.kubectl_json(&["get", "pods", "-n", NS, "-l", "app=simple-web"]);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn fargate_nodes(plane: &KubePlane) -> Vec<Value> {
    let list = plane.kubectl_json(&["get", "nodes"]);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn eks_tasks(server: &Server, status: &str) -> Vec<String> {
    let out = server.aws_json(&["ecs", "list-tasks", "--cluster", "eks-demo", "--desired-status", status]);
    out["taskArns"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
}

/// A Kubernetes plane, and a Flotilla (with a registry holding busybox) that has it as the
/// ACTIVE cluster `demo` with a profile for [`NS`]; the first server (killed) is kept for its
/// data dir.
fn setup(verify_kubelets: bool) -> (KubePlane, Fixture, Server) {
    let kube = KubePlane::start(verify_kubelets);
    let f = Fixture::new();
    let data_dir = f.server.data_dir.clone();
    let Fixture { server: mut first, subnet, _registry, image, rt } = f;
    first.kill9();
    register_cluster(&data_dir, &kube, &subnet);
    let f = Fixture { server: Server::start_in(&data_dir), subnet, _registry, image, rt };
    kube.kubectl_ok(&["create", "namespace", NS]);
    (kube, f, first)
}

fn pod(name: &str, image: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  schedulerName: fargate-scheduler\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  containers: [{{name: main, image: {image}, command: [sh, -c, \"{script}\"]}}]\n"
    )
}

fn phase(kube: &KubePlane, name: &str) -> Value {
    kube.kubectl_json(&["get", "pod", "-n", NS, name])
}

#[test]
fn a_deployment_runs_on_fargate_nodes_with_logs_evictions_and_refusals() {
    // The API server verifies the nodes' kubelet certificates, which the cluster signed.
    let (kube, f, first) = setup(true);
    kube.apply(&deployment(&f.image));
    wait_for("2 Running pods", Duration::from_secs(180), || pods(&kube).iter().filter(|p| running(p)).count() == 2);

    // Each pod on a node of its own, named after its task's address, as EKS names them.
    let nodes = fargate_nodes(&kube);
    assert_eq!(nodes.len(), 2, "{nodes:#?}");
    for pod in pods(&kube) {
        let ip = pod["status"]["podIP"].as_str().expect("a pod IP").to_owned();
        let node = pod["spec"]["nodeName"].as_str().unwrap();
        assert_eq!(node, format!("fargate-ip-{}.us-east-1.compute.internal", ip.replace('.', "-")));
        assert_eq!(pod["metadata"]["annotations"]["CapacityProvisioned"], "0.25vCPU 0.5GB");
        let node = nodes.iter().find(|n| n["metadata"]["name"] == node).expect("the pod's node");
        assert_eq!(node["metadata"]["labels"]["eks.amazonaws.com/compute-type"], "fargate");
        assert_eq!(node["spec"]["taints"][0]["key"], "eks.amazonaws.com/compute-type");
        let internal = node["status"]["addresses"].as_array().unwrap().iter().find(|a| a["type"] == "InternalIP");
        assert_eq!(internal.unwrap()["address"], ip.as_str());
        assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.20.2-eks-flotilla");
        assert!(pod["status"]["containerStatuses"][0]["state"]["running"].is_object(), "{pod:#}");
    }
    let wide = kube.kubectl_ok(&["get", "pods", "-n", NS, "-o", "wide"]);
    assert!(wide.contains("fargate-ip-"), "{wide}");
    assert_eq!(eks_tasks(&f.server, "RUNNING").len(), 2);

    // kubectl logs: API server -> the node's kubelet API on the host -> Flotilla's log store.
    let name = pods(&kube)[0]["metadata"]["name"].as_str().unwrap().to_owned();
    wait_for("kubectl logs shows the container's output", Duration::from_secs(30), || {
        let out = kube.kubectl(&["logs", "-n", NS, &name]);
        String::from_utf8_lossy(&out.stdout).contains(&format!("hello from {name}"))
    });

    // kubectl exec: API server -> the node's kubelet API (WebSocket, v5/v4.channel.k8s.io) ->
    // Flotilla's exec path into the task's container; the exit code comes back.
    let out =
        kube.kubectl(&["exec", "-n", NS, &name, "--", "sh", "-c", "echo from exec $POD_NAME; echo oops >&2; exit 3"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), format!("from exec {name}"), "stderr: {stderr}");
    assert!(stderr.contains("oops"), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let out = kube.kubectl(&["exec", "-i", "-n", NS, &name, "--", "cat"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // What Fargate refuses stays Pending with its reason.
    kube.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: on-host, namespace: {NS}}}\nspec:\n  schedulerName: fargate-scheduler\n  hostNetwork: true\n  containers: [{{name: c, image: {}}}]\n",
        f.image
    ));
    wait_for("a FailedScheduling event", Duration::from_secs(30), || {
        let events = kube.kubectl_json(&["get", "events", "-n", NS, "--field-selector", "involvedObject.name=on-host"]);
        events["items"].as_array().unwrap().iter().any(|e| {
            e["reason"] == "FailedScheduling"
                && e["message"] == "Pod not supported on Fargate: fields not supported: HostNetwork"
        })
    });
    let on_host = kube.kubectl_json(&["get", "pod", "-n", NS, "on-host"]);
    assert_eq!(on_host["status"]["phase"], "Pending");
    assert!(on_host["spec"]["nodeName"].is_null());
    kube.kubectl_ok(&["delete", "pod", "-n", NS, "on-host", "--wait=false"]);

    // A PDB with minAvailable 1 over 2 replicas: one eviction goes through, the second not.
    kube.apply(&format!(
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {{name: fg-pdb, namespace: {NS}}}\nspec: {{minAvailable: 1, selector: {{matchLabels: {{app: simple-web}}}}}}\n"
    ));
    wait_for("the PDB to allow one disruption", Duration::from_secs(30), || {
        kube.kubectl_json(&["get", "pdb", "-n", NS, "fg-pdb"])["status"]["disruptionsAllowed"] == 1
    });
    let before = pods(&kube);
    let victim = before[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let victim_node = before[0]["spec"]["nodeName"].as_str().unwrap().to_owned();
    let other = before[1]["metadata"]["name"].as_str().unwrap().to_owned();
    let (allowed, text) = kube.evict(NS, &victim);
    assert!(allowed, "the first eviction: {text}");
    let (allowed, text) = kube.evict(NS, &other);
    assert!(!allowed && text.contains("disruption budget"), "the second eviction is refused: {text}");

    // The evicted pod's task stops, its node goes, and the ReplicaSet's replacement runs.
    wait_for("the evicted pod and its node gone", Duration::from_secs(60), || {
        let names: Vec<String> =
            pods(&kube).iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()).collect();
        !names.contains(&victim) && fargate_nodes(&kube).iter().all(|n| n["metadata"]["name"] != victim_node.as_str())
    });
    assert_eq!(eks_tasks(&f.server, "STOPPED").len(), 1, "the evicted pod's task stopped");
    wait_for("2 Running pods again", Duration::from_secs(120), || {
        pods(&kube).iter().filter(|p| running(p)).count() == 2
    });

    // Deleting the Deployment retires every pod: tasks stopped, nodes and leases gone.
    kube.kubectl_ok(&["delete", "deployment", "-n", NS, "simple-web"]);
    wait_for("no pods, nodes or running tasks", Duration::from_secs(120), || {
        pods(&kube).is_empty() && fargate_nodes(&kube).is_empty() && eks_tasks(&f.server, "RUNNING").is_empty()
    });
    let leases = kube.kubectl_json(&["get", "leases", "-n", "kube-node-lease"]);
    assert_eq!(leases["items"].as_array().unwrap().len(), 0, "{leases:#}");
    drop(f);
    drop(first);
}

#[test]
fn pods_end_as_their_tasks_do_and_survive_a_flotilla_restart() {
    // A cluster that signs no kubelet certificates: the nodes' own self-signed one serves.
    let (kube, f, first) = setup(false);
    kube.apply(&pod("ok", &f.image, "echo done; exit 0"));
    kube.apply(&pod("fails", &f.image, "echo failing; exit 3"));
    kube.apply(&pod("sleeper", &f.image, "echo sleeping; exec sleep 3600"));
    wait_for("ok Succeeded and fails Failed", Duration::from_secs(120), || {
        phase(&kube, "ok")["status"]["phase"] == "Succeeded" && phase(&kube, "fails")["status"]["phase"] == "Failed"
    });
    let fails = phase(&kube, "fails");
    assert_eq!(fails["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3, "{fails:#}");
    assert_eq!(fails["status"]["containerStatuses"][0]["state"]["terminated"]["reason"], "Error");
    let ok = phase(&kube, "ok");
    assert_eq!(ok["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0, "{ok:#}");
    wait_for("sleeper Running", Duration::from_secs(60), || running(&phase(&kube, "sleeper")));

    // kubectl logs -f follows: lines written after it started arrive.
    kube.apply(&pod("ticker", &f.image, "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"));
    wait_for("ticker Running", Duration::from_secs(60), || running(&phase(&kube, "ticker")));
    let mut follow = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kube.kubeconfig)
        .args(["logs", "-f", "--tail=1", "-n", NS, "ticker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    let earlier = lines.next().unwrap().unwrap();
    let later = lines.nth(3).unwrap().unwrap();
    let tick = |l: &str| l.trim_start_matches("tick ").parse::<u32>().unwrap();
    assert!(tick(&later) > tick(&earlier), "{earlier} then {later}");
    follow.kill().unwrap();
    follow.wait().unwrap();
    let node = phase(&kube, "sleeper")["spec"]["nodeName"].as_str().unwrap().to_owned();

    // Flotilla dies and comes back: the task ran on; the pod is adopted, its node's kubelet API
    // answers on its new port.
    let data_dir = f.server.data_dir.clone();
    let Fixture { server: mut second, subnet, _registry, image, rt } = f;
    second.kill9();
    let f = Fixture { server: Server::start_in(&data_dir), subnet, _registry, image, rt };
    wait_for("kubectl logs after the restart", Duration::from_secs(60), || {
        let out = kube.kubectl(&["logs", "-n", NS, "sleeper"]);
        String::from_utf8_lossy(&out.stdout).contains("sleeping")
    });
    assert!(running(&phase(&kube, "sleeper")));
    assert_eq!(phase(&kube, "sleeper")["spec"]["nodeName"], node.as_str());
    assert_eq!(eks_tasks(&f.server, "RUNNING").len(), 2);

    for name in ["ok", "fails", "sleeper", "ticker"] {
        kube.kubectl_ok(&["delete", "pod", "-n", NS, name, "--wait=false"]);
    }
    wait_for("no pods, nodes or running tasks", Duration::from_secs(120), || {
        let left = kube.kubectl_json(&["get", "pods", "-n", NS]);
        left["items"].as_array().unwrap().is_empty()
            && fargate_nodes(&kube).is_empty()
            && eks_tasks(&f.server, "RUNNING").is_empty()
    });
    drop(f);
    drop(second);
    drop(first);
}
