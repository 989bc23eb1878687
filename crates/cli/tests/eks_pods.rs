//! EKS on Fargate, the pods' side: a real Kubernetes 1.20 control plane (API server and
//! controller manager on etcd), registered with a real `flotilla up` as an ACTIVE cluster with
//! a Fargate profile, whose Deployment's pods run as Flotilla tasks on `fargate-ip-...` nodes;
//! `kubectl logs` reads their output through the nodes' kubelet API; evictions honour a PDB;
//! what Fargate refuses stays Pending with its reason.

mod common;
#[path = "eks_pods/plane.rs"]
mod plane;

use std::time::Duration;

use common::eks::{create_cluster, eks_role, register_cluster};
use common::fixture::Fixture;
use common::{Server, wait_for};
use plane::{KubePlane, running};
use serde_json::Value;

const NS: &str = "fargate-workload";

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

fn fargate_nodes(plane: &KubePlane) -> Vec<Value> {
    let list = plane.kubectl_json(&["get", "nodes"]);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn eks_tasks(server: &Server, status: &str) -> Vec<String> {
    let out = server.aws_json(&["ecs", "list-tasks", "--cluster", "eks-demo", "--desired-status", status]);
    out["taskArns"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
}

/// A Kubernetes plane, and a Flotilla (with a registry holding busybox) that has it as the
/// registered, ACTIVE cluster `demo` with a profile for [`NS`].
fn setup(verify_kubelets: bool) -> (KubePlane, Fixture) {
    let kube = KubePlane::start(verify_kubelets);
    let f = Fixture::new();
    register_cluster(&f.server, "demo", &kube.kubeconfig, NS, &f.subnet);
    let described = f.server.aws_json(&["eks", "describe-cluster", "--name", "demo"]);
    assert_eq!(described["cluster"]["endpoint"], kube.endpoint.as_str());
    kube.create_namespace(NS);
    (kube, f)
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
    let (kube, f) = setup(true);
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
}

#[test]
fn pods_end_as_their_tasks_do_and_survive_a_flotilla_restart() {
    // A cluster that signs no kubelet certificates: the nodes' own self-signed one serves.
    let (kube, f) = setup(false);
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
}

/// Kills what a failed test left running of a launched plane (it outlives Flotilla by design).
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let needle = self.0.display().to_string();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) && !cmdline.contains("flotilla up") {
                let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// The whole of EKS on Fargate as a user meets it: `aws eks create-cluster` launches the plane,
/// `aws eks create-fargate-profile`, `aws eks update-kubeconfig`, then kubectl (through `aws eks
/// get-token`) applies the seed's Deployment, which the admission webhook hands to the Fargate
/// scheduler: Running pods on fargate-ip nodes, logs and exec through the launched API server
/// (which verifies the nodes' kubelet certificates), and DeleteCluster ends their tasks.
#[test]
fn a_launched_cluster_runs_its_profile_s_deployment_on_fargate() {
    let binaries = flotilla_k8s::test_binaries().expect("the Kubernetes test binaries");
    let bin = binaries.display().to_string();
    let webhook = format!("127.0.0.1:{}", common::free_port());
    let f = Fixture::with_server_flags(&["--kubernetes-bin", &bin, "--eks-webhook-listen", &webhook]);
    let _reaper = Reaper(f.server.data_dir.join("eks"));
    let server = &f.server;
    let role_arn = eks_role(server, "eks");
    create_cluster(server, "demo", &role_arn);
    server.aws_json(&[
        "eks",
        "create-fargate-profile",
        "--cluster-name",
        "demo",
        "--fargate-profile-name",
        "fargate",
        "--pod-execution-role-arn",
        &role_arn,
        "--selectors",
        &format!("namespace={NS}"),
    ]);
    wait_for("the profile to be ACTIVE", Duration::from_secs(60), || {
        let out = server.aws_json(&[
            "eks",
            "describe-fargate-profile",
            "--cluster-name",
            "demo",
            "--fargate-profile-name",
            "fargate",
        ]);
        out["fargateProfile"]["status"] == "ACTIVE"
    });
    let kubeconfig = server.data_dir.join("kubeconfig-test");
    let out = server.aws(&["eks", "update-kubeconfig", "--name", "demo", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", common::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", common::SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", server.endpoint())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap()
    };
    let json = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = kubectl(&all);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(kubectl(&["create", "namespace", NS]).status.success());
    // The seed's Deployment as a user writes it: no schedulerName (admission sets it).
    let manifest = server.data_dir.join("deployment.yaml");
    std::fs::write(&manifest, deployment(&f.image).replace("      schedulerName: fargate-scheduler\n", "")).unwrap();
    wait_for("the Deployment applied", Duration::from_secs(60), || {
        kubectl(&["apply", "-f", manifest.to_str().unwrap()]).status.success()
    });
    let pods = || json(&["get", "pods", "-n", NS])["items"].as_array().cloned().unwrap_or_default();
    wait_for("2 Running pods", Duration::from_secs(180), || pods().iter().filter(|p| running(p)).count() == 2);
    for pod in pods() {
        assert_eq!(pod["spec"]["schedulerName"], "fargate-scheduler");
        assert_eq!(pod["metadata"]["labels"]["eks.amazonaws.com/fargate-profile"], "fargate");
        assert_eq!(pod["metadata"]["annotations"]["CapacityProvisioned"], "0.25vCPU 0.5GB");
        assert!(pod["spec"]["nodeName"].as_str().unwrap().starts_with("fargate-ip-"), "{pod:#}");
    }
    let name = pods()[0]["metadata"]["name"].as_str().unwrap().to_owned();
    wait_for("kubectl logs", Duration::from_secs(30), || {
        String::from_utf8_lossy(&kubectl(&["logs", "-n", NS, &name]).stdout).contains(&format!("hello from {name}"))
    });
    let out = kubectl(&["exec", "-n", NS, &name, "--", "sh", "-c", "echo exec in $POD_NAME"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("exec in {name}"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The node's kubelet API admits only the API server (its kubelet client certificate).
    let node = json(&["get", "node", pods()[0]["spec"]["nodeName"].as_str().unwrap()]);
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap();
    let url = format!("https://127.0.0.1:{port}/containerLogs/{NS}/{name}/web");
    let out = std::process::Command::new("curl").args(["-sk", "--max-time", "10", &url]).output().unwrap();
    assert!(!out.status.success() && out.stdout.is_empty(), "a client without a certificate: {out:?}");

    // DeleteCluster: the plane goes, and with it its pods' tasks.
    server.aws_json(&["eks", "delete-fargate-profile", "--cluster-name", "demo", "--fargate-profile-name", "fargate"]);
    wait_for("the profile gone", Duration::from_secs(60), || {
        server.aws_json(&["eks", "list-fargate-profiles", "--cluster-name", "demo"])["fargateProfileNames"]
            .as_array()
            .is_some_and(|n| n.is_empty())
    });
    server.aws_json(&["eks", "delete-cluster", "--name", "demo"]);
    wait_for("the cluster's tasks stopped", Duration::from_secs(120), || eks_tasks(server, "RUNNING").is_empty());
    wait_for("the cluster gone", Duration::from_secs(120), || {
        server.aws_json(&["eks", "list-clusters"])["clusters"].as_array().is_some_and(|c| c.is_empty())
    });
}
