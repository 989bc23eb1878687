//! Control planes: [`Planes`] implements `flotilla_eks::ControlPlanes`.
//!
//! A launched cluster lives in `<data>/eks/<cluster>/`: its CA and the certificates made from it
//! (the API server's serving certificate; client certificates for Flotilla, the controller
//! manager and the API server's calls to kubelets), the service-account key pair, the ports it
//! was given, etcd's data, and per process a pid file and a log. Debian's `etcd`,
//! `kube-apiserver` and `kube-controller-manager` run from there, on loopback.
//!
//! **Flotilla restarts adopt.** The processes run in their own process groups and outlive
//! Flotilla (as an EKS control plane outlives its console): kubectl keeps working while
//! Flotilla restarts, and nothing of the cluster's state depends on how Flotilla stopped. The
//! next `ensure` finds each process by its pid file (checked against `/proc/<pid>/cmdline`
//! naming the cluster's directory), starts only what is missing, from the same directory and
//! ports, and supervises them again. Only `remove` (DeleteCluster) stops them.

mod config;
mod kubeconfig;
pub mod pki;
mod process;
mod ready;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_eks::{ClusterRecord, ControlPlanes, KubeAccess, KubeAuth, PlaneFuture, PlaneSource};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use tokio::sync::{Mutex, watch};

pub use config::{Layout, client};
pub use kubeconfig::access_from_kubeconfig;
use process::Component;

/// The name of the admission webhook's registration in every cluster.
pub const WEBHOOK_CONFIGURATION: &str = "flotilla-fargate-profiles";

/// How long `ensure` waits for a plane to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the API servers reach Flotilla's webhooks.
#[derive(Clone, Debug)]
pub struct WebhookEndpoint {
    /// `https://host:port`: the webhook listener.
    pub base_url: String,
    /// The CA its certificate chains to.
    pub ca_pem: String,
}

impl WebhookEndpoint {
    pub fn authenticate_url(&self, cluster: &str) -> String {
        format!("{}/eks/{cluster}/authenticate", self.base_url)
    }

    pub fn mutate_url(&self, cluster: &str) -> String {
        format!("{}/eks/{cluster}/mutate", self.base_url)
    }
}

/// Control planes Flotilla launches (or is given), one directory each under `root`.
pub struct Planes {
    root: PathBuf,
    /// Where kube-apiserver and kube-controller-manager are (or why they are not).
    binaries: Result<PathBuf, String>,
    webhook: WebhookEndpoint,
    running: Mutex<HashMap<String, Running>>,
}

/// A launched plane this process supervises.
struct Running {
    stop: watch::Sender<bool>,
    supervisor: tokio::task::JoinHandle<HashMap<Component, std::process::Child>>,
}

impl Planes {
    /// `root`: `<data>/eks`. `binaries`: `flotilla_k8s::find_binaries`' answer (an error is
    /// reported by each launch, so registered clusters work without the binaries).
    pub fn new(root: PathBuf, binaries: Result<PathBuf, String>, webhook: WebhookEndpoint) -> Planes {
        // Absolute: the processes run in their cluster's directory, and their command lines
        // name it (how a restart finds them).
        let root = std::path::absolute(&root).unwrap_or(root);
        let binaries = binaries.map(|b| std::path::absolute(&b).unwrap_or(b));
        Planes { root, binaries, webhook, running: Mutex::new(HashMap::new()) }
    }

    fn dir(&self, cluster: &str) -> Result<PathBuf, String> {
        let plain = !cluster.is_empty()
            && cluster.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !cluster.starts_with(['-', '_']);
        if !plain {
            return Err(format!("cluster name {cluster:?} cannot name a directory"));
        }
        Ok(self.root.join(cluster))
    }

    /// The layout of a launched cluster's directory (for tests and operators: its admin
    /// kubeconfig, logs).
    pub fn layout(&self, cluster: &str) -> Result<Layout, String> {
        Ok(Layout::new(self.dir(cluster)?))
    }

    async fn ensure_launched(&self, cluster: &ClusterRecord) -> Result<(String, String), String> {
        let dir = self.dir(&cluster.name)?;
        let mut running = self.running.lock().await;
        if !running.contains_key(&cluster.name) {
            let binaries = self.binaries.clone()?;
            let etcd = which("etcd").ok_or("etcd is not on PATH; install Debian's etcd-server")?;
            let service_ip = first_service_address(&cluster.service_ipv4_cidr)?;
            let prepared = {
                let (dir, webhook, cluster) = (dir.clone(), self.webhook.clone(), cluster.name.clone());
                tokio::task::spawn_blocking(move || config::prepare(&dir, &cluster, service_ip, &webhook))
                    .await
                    .map_err(|e| e.to_string())??
            };
            let launches = prepared.layout.launches(&binaries, &etcd, &cluster.service_ipv4_cidr);
            if prepared.webhook_moved {
                // The API server reads its token webhook's address only at start.
                process::stop(&dir, Component::ApiServer, None, Duration::from_secs(15)).await;
            }
            let mut children = HashMap::new();
            for launch in &launches {
                match process::running_pid(&dir, launch.component) {
                    Some(pid) => {
                        tracing::info!(cluster = cluster.name, component = launch.component.name(), pid, "adopted")
                    }
                    None => {
                        children.insert(launch.component, process::spawn(&dir, launch)?);
                    }
                }
            }
            let (stop, stopped) = watch::channel(false);
            let supervisor =
                tokio::spawn(process::supervise(cluster.name.clone(), dir.clone(), launches, children, stopped));
            running.insert(cluster.name.clone(), Running { stop, supervisor });
        }
        drop(running);
        let layout = Layout::new(dir);
        wait_ready(&layout).await?;
        let client = layout.admin_client().await?;
        install_webhook(&client, &cluster.name, &self.webhook, Unreachable::Fail).await?;
        Ok((layout.endpoint()?, layout.ca_pem()?))
    }

    async fn remove_launched(&self, cluster: &ClusterRecord) -> Result<(), String> {
        let dir = self.dir(&cluster.name)?;
        let mut children = match self.running.lock().await.remove(&cluster.name) {
            Some(running) => {
                let _ = running.stop.send(true);
                running.supervisor.await.unwrap_or_default()
            }
            None => HashMap::new(),
        };
        for component in Component::ALL.into_iter().rev() {
            process::stop(&dir, component, children.get_mut(&component), Duration::from_secs(15)).await;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", dir.display())),
        }
    }

    /// Stops supervising (the processes keep running, to be adopted by the next start).
    pub async fn detach(&self) {
        for (_, running) in self.running.lock().await.drain() {
            let _ = running.stop.send(true);
            let _ = running.supervisor.await;
        }
    }
}

impl ControlPlanes for Planes {
    fn ensure<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<(String, String), String>> {
        Box::pin(async move {
            match &cluster.source {
                PlaneSource::Launched => self.ensure_launched(cluster).await,
                PlaneSource::Registered { endpoint, ca_pem, .. } => {
                    let access = registered_access(cluster)?;
                    let client = config::client(&access).await?;
                    let version = client.apiserver_version().await.map_err(|e| format!("{endpoint}: {e}"))?;
                    tracing::info!(cluster = cluster.name, version = version.git_version, "registered cluster answers");
                    install_webhook(&client, &cluster.name, &self.webhook, Unreachable::Ignore).await?;
                    Ok((endpoint.clone(), ca_pem.clone()))
                }
            }
        })
    }

    fn remove<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match &cluster.source {
                PlaneSource::Launched => self.remove_launched(cluster).await,
                PlaneSource::Registered { .. } => {
                    let client = config::client(&registered_access(cluster)?).await?;
                    let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client);
                    match api.delete(WEBHOOK_CONFIGURATION, &Default::default()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(e) => Err(format!("cannot remove Flotilla's admission webhook: {e}")),
                    }
                }
            }
        })
    }

    fn access<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<KubeAccess, String>> {
        Box::pin(async move {
            match &cluster.source {
                PlaneSource::Launched => Layout::new(self.dir(&cluster.name)?).admin_access(),
                PlaneSource::Registered { .. } => registered_access(cluster),
            }
        })
    }
}

fn registered_access(cluster: &ClusterRecord) -> Result<KubeAccess, String> {
    match &cluster.source {
        PlaneSource::Registered { endpoint, ca_pem, auth } => {
            Ok(KubeAccess { endpoint: endpoint.clone(), ca_pem: ca_pem.clone(), auth: auth.clone() })
        }
        PlaneSource::Launched => Err(format!("cluster {} is launched, not registered", cluster.name)),
    }
}

/// Waits until the API server's `/readyz` says ok (its RBAC roles bootstrapped included).
async fn wait_ready(layout: &Layout) -> Result<(), String> {
    let access = layout.admin_access()?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match ready::readyz(&access).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "the API server did not become ready in {}s ({last}); see {}",
        READY_TIMEOUT.as_secs(),
        layout.dir.join("kube-apiserver.log").display()
    ))
}

/// What the API server does with a pod when Flotilla's admission webhook cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unreachable {
    /// A launched plane: pod creation fails, and the controllers creating pods retry until
    /// Flotilla is back. A pod that matches a Fargate profile must never be left to a scheduler
    /// that is not Fargate's: a launched plane has none, and it would stay Pending unnoticed.
    /// Flotilla's own processes create no pods, so nothing waits on itself.
    Fail,
    /// A registered cluster, whose own scheduler and nodes run everything else: Flotilla being
    /// away must not stop the cluster's pods (CoreDNS among them); a profile's pod created
    /// meanwhile goes to the cluster's own scheduler.
    Ignore,
}

/// Registers Flotilla's admission webhook in the cluster (replacing an older registration).
async fn install_webhook(
    client: &kube::Client,
    cluster: &str,
    webhook: &WebhookEndpoint,
    unreachable: Unreachable,
) -> Result<(), String> {
    use base64::Engine;
    let wanted: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION, "labels": {"app.kubernetes.io/managed-by": "flotilla"}},
        "webhooks": [{
            "name": "fargate-profiles.eks.flotilla.internal",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": format!("{unreachable:?}"),
            "timeoutSeconds": 10,
            "reinvocationPolicy": "Never",
            "clientConfig": {
                "url": webhook.mutate_url(cluster),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&webhook.ca_pem),
            },
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
        }],
    }))
    .map_err(|e| e.to_string())?;
    let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client.clone());
    let failed = |e: kube::Error| format!("cannot register Flotilla's admission webhook: {e}");
    match api.get_opt(WEBHOOK_CONFIGURATION).await.map_err(failed)? {
        None => api.create(&Default::default(), &wanted).await.map(|_| ()).map_err(failed),
        Some(existing) if existing.webhooks == wanted.webhooks => Ok(()),
        Some(existing) => {
            let mut replacement = wanted;
            replacement.metadata.resource_version = existing.metadata.resource_version;
            api.replace(WEBHOOK_CONFIGURATION, &Default::default(), &replacement).await.map(|_| ()).map_err(failed)
        }
    }
}

/// The first address of a service CIDR: the `kubernetes` Service's, which the API server's
/// certificate must name.
fn first_service_address(cidr: &str) -> Result<Ipv4Addr, String> {
    let bad = || format!("service CIDR {cidr:?} is not an IPv4 CIDR block");
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    if !(1..=30).contains(&len) {
        return Err(bad());
    }
    let network = u32::from(addr) & (u32::MAX << (32 - len));
    Ok(Ipv4Addr::from(network + 1))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

impl Layout {
    /// What Flotilla uses to reach this plane as its administrator (`system:masters`).
    pub fn admin_access(&self) -> Result<KubeAccess, String> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok(KubeAccess {
            endpoint: self.endpoint()?,
            ca_pem: self.ca_pem()?,
            auth: KubeAuth::ClientCertificate {
                cert_pem: read(&self.dir.join("admin.crt"))?,
                key_pem: read(&self.dir.join("admin.key"))?,
            },
        })
    }

    async fn admin_client(&self) -> Result<kube::Client, String> {
        config::client(&self.admin_access()?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_service_takes_the_first_address() {
        assert_eq!(first_service_address("10.100.0.0/16").unwrap(), Ipv4Addr::new(10, 100, 0, 1));
        assert_eq!(first_service_address("172.20.5.7/16").unwrap(), Ipv4Addr::new(172, 20, 0, 1));
        assert!(first_service_address("10.0.0.0").is_err());
        assert!(first_service_address("10.0.0.0/31").is_err());
    }
}
