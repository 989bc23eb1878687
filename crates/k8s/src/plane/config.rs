//! A launched cluster's directory: certificates, keys, kubeconfigs and ports made once and
//! reused by every later start, and the command lines of its processes.

use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use flotilla_eks::{KubeAccess, KubeAuth};
use serde::{Deserialize, Serialize};

use super::WebhookEndpoint;
use super::pki::{self, Authority, Leaf};
use super::process::{Component, Launch};

/// The files of one launched cluster, under `dir`.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

/// The loopback ports a cluster was given at its first start, kept so that its endpoint (in
/// every kubeconfig written for it) never changes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    api_server: u16,
}

pub(super) struct Prepared {
    pub layout: Layout,
    /// The token webhook's address differs from what the running API server was started with.
    pub webhook_moved: bool,
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `contents` unless the file already holds them; whether it changed an existing file.
fn write_if_changed(path: &Path, contents: &str, secret: bool) -> Result<bool, String> {
    let old = std::fs::read_to_string(path).ok();
    if old.as_deref() == Some(contents) {
        return Ok(false);
    }
    pki::write_file(path, contents.as_bytes(), secret).map_err(|e| e.to_string())?;
    Ok(old.is_some())
}

/// A kubeconfig (JSON, which is YAML) for `server`, trusting `ca_file`, as `user`.
fn kubeconfig(server: &str, ca_file: &Path, user: serde_json::Value) -> String {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": ca_file}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    });
    serde_json::to_string_pretty(&config).expect("JSON values serialise")
}

fn cert_user(dir: &Path, stem: &str) -> serde_json::Value {
    serde_json::json!({
        "client-certificate": dir.join(format!("{stem}.crt")),
        "client-key": dir.join(format!("{stem}.key")),
    })
}

/// Makes (or completes) the directory of cluster `name`: everything its processes need.
pub(super) fn prepare(
    dir: &Path,
    name: &str,
    service_ip: Ipv4Addr,
    webhook: &WebhookEndpoint,
) -> Result<Prepared, String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let layout = Layout { dir: dir.to_owned() };
    let ports_path = dir.join("ports.json");
    if !ports_path.is_file() {
        let ports = Ports { etcd_client: free_port()?, etcd_peer: free_port()?, api_server: free_port()? };
        let json = serde_json::to_vec(&ports).expect("ports serialise");
        pki::write_file(&ports_path, &json, false).map_err(|e| e.to_string())?;
    }
    let e = |e: pki::PkiError| e.to_string();
    let ca = Authority::load_or_create(dir, "ca", &format!("flotilla-eks-{name}")).map_err(e)?;
    let service_ip = service_ip.to_string();
    let serving = Leaf {
        common_name: "kube-apiserver",
        organizations: &[],
        sans: &[
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            &service_ip,
        ],
        server: true,
        client: false,
    };
    ca.issue_file(dir, "apiserver", &serving, false).map_err(e)?;
    let client =
        |common_name, organizations| Leaf { common_name, organizations, sans: &[], server: false, client: true };
    ca.issue_file(dir, "admin", &client("flotilla", &["system:masters"]), false).map_err(e)?;
    ca.issue_file(dir, "controller-manager", &client("system:kube-controller-manager", &[]), false).map_err(e)?;
    ca.issue_file(dir, "kubelet-client", &client("kube-apiserver-kubelet-client", &["system:masters"]), false)
        .map_err(e)?;
    pki::key_pair_files(dir, "service-account").map_err(e)?;

    let endpoint = layout.endpoint()?;
    write_if_changed(&dir.join("webhook-ca.crt"), &webhook.ca_pem, false)?;
    let authn = kubeconfig(&webhook.authenticate_url(name), &dir.join("webhook-ca.crt"), serde_json::json!({}));
    let webhook_moved = write_if_changed(&dir.join("token-webhook.kubeconfig"), &authn, false)?;
    let kcm = kubeconfig(&endpoint, &ca.cert_path, cert_user(dir, "controller-manager"));
    write_if_changed(&dir.join("controller-manager.kubeconfig"), &kcm, false)?;
    let admin = kubeconfig(&endpoint, &ca.cert_path, cert_user(dir, "admin"));
    write_if_changed(&dir.join("admin.kubeconfig"), &admin, false)?;
    Ok(Prepared { layout, webhook_moved })
}

impl Layout {
    pub fn new(dir: PathBuf) -> Layout {
        Layout { dir }
    }

    fn ports(&self) -> Result<Ports, String> {
        let path = self.dir.join("ports.json");
        serde_json::from_str(&read(&path)?).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> Result<String, String> {
        Ok(format!("https://127.0.0.1:{}", self.ports()?.api_server))
    }

    pub fn ca_pem(&self) -> Result<String, String> {
        read(&self.dir.join("ca.crt"))
    }

    /// A kubeconfig for `kubectl` as Flotilla (`system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The command lines of the cluster's processes, in start order.
    pub(super) fn launches(&self, binaries: &Path, etcd: &Path, service_cidr: &str) -> Vec<Launch> {
        let Ok(ports) = self.ports() else { return Vec::new() };
        let d = |f: &str| self.dir.join(f).display().to_string();
        let etcd_client = format!("http://127.0.0.1:{}", ports.etcd_client);
        let etcd_peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
        let etcd = Launch {
            component: Component::Etcd,
            program: etcd.to_owned(),
            args: vec![
                "--name=default".into(),
                format!("--data-dir={}", d("etcd")),
                format!("--listen-client-urls={etcd_client}"),
                format!("--advertise-client-urls={etcd_client}"),
                format!("--listen-peer-urls={etcd_peer}"),
                format!("--initial-advertise-peer-urls={etcd_peer}"),
                format!("--initial-cluster=default={etcd_peer}"),
            ],
        };
        let api_server = Launch {
            component: Component::ApiServer,
            program: binaries.join("kube-apiserver"),
            args: vec![
                format!("--etcd-servers={etcd_client}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", ports.api_server),
                "--insecure-port=0".into(),
                format!("--tls-cert-file={}", d("apiserver.crt")),
                format!("--tls-private-key-file={}", d("apiserver.key")),
                format!("--client-ca-file={}", d("ca.crt")),
                "--authorization-mode=Node,RBAC".into(),
                format!("--service-cluster-ip-range={service_cidr}"),
                format!("--service-account-key-file={}", d("service-account.pub")),
                format!("--service-account-signing-key-file={}", d("service-account.key")),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--authentication-token-webhook-config-file={}", d("token-webhook.kubeconfig")),
                "--authentication-token-webhook-version=v1".into(),
                // A token's answer is cached this long: a short while, so that a changed
                // aws-auth mapping or a deleted IAM key takes effect soon.
                "--authentication-token-webhook-cache-ttl=30s".into(),
                format!("--kubelet-client-certificate={}", d("kubelet-client.crt")),
                format!("--kubelet-client-key={}", d("kubelet-client.key")),
                format!("--kubelet-certificate-authority={}", d("ca.crt")),
                // Fargate nodes' kubelet APIs listen on the host (the task network is not
                // routable from here), which each node reports as its ExternalIP; InternalIP is
                // the pod's address, as on EKS.
                "--kubelet-preferred-address-types=ExternalIP,InternalIP,Hostname".into(),
                "--allow-privileged=false".into(),
                "--profiling=false".into(),
            ],
        };
        let controller_manager = Launch {
            component: Component::ControllerManager,
            program: binaries.join("kube-controller-manager"),
            args: vec![
                format!("--kubeconfig={}", d("controller-manager.kubeconfig")),
                // No node lifecycle controller: Fargate nodes live and die with their pods, and
                // its eviction of pods from nodes without a kubelet's heartbeat is not ours.
                // csrsigning: Fargate nodes' kubelet-serving certificates, which the API server
                // checks against the cluster CA (`--kubelet-certificate-authority`).
                "--controllers=deployment,replicaset,statefulset,job,cronjob,namespace,serviceaccount,serviceaccount-token,garbagecollector,disruption,endpoint,endpointslice,podgc,csrsigning"
                    .into(),
                format!("--cluster-signing-cert-file={}", d("ca.crt")),
                format!("--cluster-signing-key-file={}", d("ca.key")),
                format!("--root-ca-file={}", d("ca.crt")),
                format!("--service-account-private-key-file={}", d("service-account.key")),
                "--use-service-account-credentials=true".into(),
                format!("--service-cluster-ip-range={service_cidr}"),
                "--leader-elect=false".into(),
                // The default client rate (20/s, burst 30) makes a Deployment scaled to 50 wait a
                // second and more for its own pod creations; Fargate pods start faster than that.
                "--kube-api-qps=200".into(),
                "--kube-api-burst=400".into(),
                // No listener: several clusters' controller managers share the host.
                "--secure-port=0".into(),
                "--port=0".into(),
                "--profiling=false".into(),
            ],
        };
        vec![etcd, api_server, controller_manager]
    }
}

/// A client for the API server `access` describes.
pub async fn client(access: &KubeAccess) -> Result<kube::Client, String> {
    // kube's TLS takes the process's default provider, which a binary linking more than one
    // (ring here, aws-lc-rs elsewhere) lacks until someone picks: ring, as everything here uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match &access.auth {
        KubeAuth::Token { token } => serde_json::json!({"token": token}),
        KubeAuth::ClientCertificate { cert_pem, key_pem } => {
            serde_json::json!({"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)})
        }
    };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": access.endpoint, "certificate-authority-data": b64(&access.ca_pem)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    });
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&config.to_string()).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("{}: {e}", access.endpoint))?;
    kube::Client::try_from(config).map_err(|e| format!("{}: {e}", access.endpoint))
}
