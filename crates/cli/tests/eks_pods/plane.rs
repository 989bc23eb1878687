//! A real Kubernetes 1.20 control plane for the test (etcd, kube-apiserver, and
//! kube-controller-manager, as /work/shared/tools/kubernetes/smoke.sh runs them): what an
//! operator would register with Flotilla. Stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::common::{free_port, wait_for};

pub struct KubePlane {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    pub kubeconfig: PathBuf,
    children: Vec<Child>,
}

fn run(dir: &std::path::Path, command: &str) {
    let out = Command::new("bash").arg("-c").arg(command).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
}

impl KubePlane {
    /// With `verify_kubelets`, the API server checks kubelets' serving certificates against
    /// the cluster CA (`--kubelet-certificate-authority`), and the controller manager signs
    /// kubelet-serving requests with it (`csrsigning`), as kubeadm's clusters do.
    pub fn start(verify_kubelets: bool) -> KubePlane {
        let bin = flotilla_k8s::test_binaries().expect("the Kubernetes 1.20 binaries");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let d = d.as_path();
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        // A CA and a serving certificate it signs (rustls refuses a CA certificate as a leaf).
        run(
            d,
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=test-ca && \
             openssl req -newkey rsa:2048 -nodes -keyout api.key -out api.csr -subj /CN=kube-apiserver && \
             printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext && \
             openssl x509 -req -in api.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out api.crt -days 1 -extfile ext && \
             openssl genrsa -out sa.key 2048 && openssl rsa -in sa.key -pubout -out sa.pub",
        );
        let token = "fargate-test-token".to_owned();
        std::fs::write(d.join("tokens.csv"), format!("{token},admin,1,\"system:masters\"\n")).unwrap();
        let log = |name: &str| Stdio::from(std::fs::File::create(d.join(name)).unwrap());
        let etcd = Command::new("etcd")
            .args(["--data-dir", &d.join("etcd").display().to_string()])
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{etcd_port}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{etcd_port}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
            .stdout(log("etcd.log"))
            .stderr(log("etcd.err"))
            .spawn()
            .expect("etcd (Debian's etcd-server) runs");
        let verify: &[&str] = if verify_kubelets { &["--kubelet-certificate-authority=ca.crt"] } else { &[] };
        let api = Command::new(bin.join("kube-apiserver"))
            .current_dir(d)
            .args(verify)
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .args(["--bind-address=127.0.0.1", &format!("--secure-port={api_port}"), "--insecure-port=0"])
            .args(["--tls-cert-file=api.crt", "--tls-private-key-file=api.key", "--token-auth-file=tokens.csv"])
            .args(["--authorization-mode=RBAC", "--service-account-key-file=sa.pub"])
            .args([
                "--service-account-signing-key-file=sa.key",
                "--service-account-issuer=https://kubernetes.default.svc",
            ])
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            // Fargate nodes' kubelet APIs are on the host, which each node reports as its ExternalIP.
            .arg("--kubelet-preferred-address-types=ExternalIP,InternalIP,Hostname")
            .stdout(log("api.log"))
            .stderr(log("api.err"))
            .spawn()
            .expect("kube-apiserver runs");
        let endpoint = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = d.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{endpoint}\", certificate-authority: \"{}\"}}}}]\n\
                 users: [{{name: a, user: {{token: {token}}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: a}}}}]\ncurrent-context: t\n",
                d.join("ca.crt").display()
            ),
        )
        .unwrap();
        let mut plane = KubePlane { dir, endpoint, kubeconfig, children: vec![etcd, api] };
        wait_for("the API server to answer", Duration::from_secs(90), || {
            plane.kubectl(&["get", "ns"]).status.success()
        });
        let signing: &[&str] = if verify_kubelets {
            &["--cluster-signing-cert-file=ca.crt", "--cluster-signing-key-file=ca.key"]
        } else {
            &[]
        };
        let kcm = Command::new(bin.join("kube-controller-manager"))
            .current_dir(plane.dir.path())
            .arg(format!("--kubeconfig={}", plane.kubeconfig.display()))
            .arg(format!(
                "--controllers=deployment,replicaset,namespace,serviceaccount,serviceaccount-token,garbagecollector,disruption,endpoint{}",
                if verify_kubelets { ",csrsigning" } else { "" }
            ))
            .args(signing)
            .args(["--root-ca-file=ca.crt", "--leader-elect=false", "--service-account-private-key-file=sa.key"])
            .arg("--use-service-account-credentials=false")
            // Several planes run at once: no fixed health ports (10252, 10257).
            .args(["--port=0", "--secure-port=0"])
            .stdout(log("kcm.log"))
            .stderr(log("kcm.err"))
            .spawn()
            .expect("kube-controller-manager runs");
        plane.children.push(kcm);
        wait_for("the default service account", Duration::from_secs(60), || {
            plane.kubectl(&["get", "serviceaccount", "default"]).status.success()
        });
        plane
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl").arg("--kubeconfig").arg(&self.kubeconfig).args(args).output().expect("kubectl runs")
    }

    /// Creates `namespace` and waits for its default service account's token: Kubernetes
    /// 1.20 admits pods only then (before, it answers 500 "No API token found").
    pub fn create_namespace(&self, namespace: &str) {
        self.kubectl_ok(&["create", "namespace", namespace]);
        wait_for("the namespace's service account token", Duration::from_secs(60), || {
            let args = ["get", "serviceaccount", "default", "-n", namespace, "-o", "jsonpath={.secrets[0].name}"];
            let out = self.kubectl(&args);
            out.status.success() && !out.stdout.is_empty()
        });
    }

    /// kubectl's stdout, asserting success.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).unwrap()
    }

    /// `kubectl apply` of a YAML/JSON document.
    pub fn apply(&self, document: &str) {
        let path = self.dir.path().join("apply.yaml");
        std::fs::write(&path, document).unwrap();
        self.kubectl_ok(&["apply", "-f", &path.display().to_string()]);
    }

    /// The pod's eviction through the eviction API (`policy/v1beta1`): kubectl's output and
    /// whether it was allowed.
    pub fn evict(&self, namespace: &str, pod: &str) -> (bool, String) {
        let body = format!(
            r#"{{"apiVersion":"policy/v1beta1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"{namespace}"}}}}"#
        );
        let path = self.dir.path().join(format!("evict-{pod}.json"));
        std::fs::write(&path, body).unwrap();
        let out = self.kubectl(&[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{namespace}/pods/{pod}/eviction"),
            "-f",
            &path.display().to_string(),
        ]);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

impl Drop for KubePlane {
    fn drop(&mut self) {
        // The controller manager and API server first, etcd last.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `pod` is Running, Ready and not being deleted.
pub fn running(pod: &serde_json::Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}
