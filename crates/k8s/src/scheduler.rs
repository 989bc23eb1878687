//! The Fargate scheduler: every pod that asks for `fargate-scheduler` in an ACTIVE cluster
//! runs as a Flotilla task with its own awsvpc address, on a `fargate-ip-...` node of its own.
//!
//! One worker per ACTIVE cluster watches its pods (`spec.schedulerName=fargate-scheduler`) and
//! gives each pod a supervisor (`pod.rs`). Tasks run through the control plane's own ECS entry
//! points, in an ECS cluster named `eks-<cluster>` made on first use: a pod is a task definition
//! family `eks-<cluster>-<pod uid>` (one revision, deregistered when the pod goes) and a task
//! `startedBy` the pod's uid, which is how a restarted Flotilla finds (adopts) the tasks of the
//! pods it was running.

pub mod files;
mod node;
mod pod;
pub mod services;
pub mod spec;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_control::{Control, CreateClusterInput, ListTasksInput};
use flotilla_eks::{ClusterRecord, ClusterStatus, Eks, FargateProfile, KubeAccess, PlaneFuture, PlaneSource};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::kubelet::Kubelet;

pub use node::{KUBELET_VERSION, node_name};

/// The scheduler name pods ask for (set by the profile admission webhook).
pub const SCHEDULER_NAME: &str = "fargate-scheduler";

/// How often the set of ACTIVE clusters is read again.
const CLUSTER_PASS: Duration = Duration::from_secs(3);

/// Where the scheduler learns of clusters, how to reach them and their profiles: EKS
/// ([`Eks`]), or a fixed set in tests.
pub trait PodClusters: Send + Sync {
    /// The ACTIVE clusters.
    fn active(&self) -> PlaneFuture<'_, Result<Vec<ClusterRecord>, String>>;
    fn access<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<KubeAccess, String>>;
    /// The cluster's profiles (every status; matching keeps the ACTIVE ones).
    fn profiles<'a>(&'a self, cluster: &'a str) -> PlaneFuture<'a, Result<Vec<FargateProfile>, String>>;
}

impl PodClusters for Eks {
    fn active(&self) -> PlaneFuture<'_, Result<Vec<ClusterRecord>, String>> {
        Box::pin(async move {
            let all = self.clusters().await.map_err(|e| e.to_string())?;
            Ok(all.into_iter().filter(|c| c.status == ClusterStatus::Active).collect())
        })
    }

    fn access<'a>(&'a self, cluster: &'a ClusterRecord) -> PlaneFuture<'a, Result<KubeAccess, String>> {
        Box::pin(async move {
            match &cluster.source {
                // What Flotilla uses to reach a registered cluster is in its record.
                PlaneSource::Registered { endpoint, ca_pem, auth } => {
                    Ok(KubeAccess { endpoint: endpoint.clone(), ca_pem: ca_pem.clone(), auth: auth.clone() })
                }
                PlaneSource::Launched => self.access(&cluster.name).await.map_err(|e| e.to_string()),
            }
        })
    }

    fn profiles<'a>(&'a self, cluster: &'a str) -> PlaneFuture<'a, Result<Vec<FargateProfile>, String>> {
        Box::pin(async move { self.profiles(cluster).await.map_err(|e| e.to_string()) })
    }
}

/// What every pod supervisor of one cluster shares.
pub(crate) struct ClusterContext {
    name: String,
    ecs_cluster: String,
    region: String,
    security_groups: Vec<String>,
    /// The cluster's VPC: where its Services' ClusterIPs are routed (`services.rs`).
    vpc_id: String,
    client: kube::Client,
    control: Arc<Control>,
    clusters: Arc<dyn PodClusters>,
    kubelet: Arc<Kubelet>,
    /// The pods whose files the control plane asks for (`files.rs`).
    files: Arc<files::PodFiles>,
    /// Its nodes' kubelet APIs' TLS: the cluster-signed serving certificate when it signs
    /// one, and the client CA the API server's certificate must chain to, when known.
    kubelet_tls: tokio_rustls::TlsAcceptor,
}

impl ClusterContext {
    async fn profiles(&self) -> Result<Vec<FargateProfile>, String> {
        self.clusters.profiles(&self.name).await
    }
}

/// The ECS cluster a cluster's pods run in.
pub fn ecs_cluster(cluster: &str) -> String {
    format!("eks-{cluster}")
}

pub struct FargateScheduler {
    clusters: Arc<dyn PodClusters>,
    control: Arc<Control>,
    kubelet: Arc<Kubelet>,
    files: Arc<files::PodFiles>,
}

impl FargateScheduler {
    /// `kubelet` serves the nodes' kubelet API on the host (see [`Kubelet`]).
    pub fn new(clusters: Arc<dyn PodClusters>, control: Arc<Control>, kubelet: Arc<Kubelet>) -> FargateScheduler {
        FargateScheduler { clusters, control, kubelet, files: Default::default() }
    }

    /// Tracks the pods' file volumes in `files`, the provider attached to the control plane
    /// (`Control::attach_task_files`); without it no task gets its pod's files.
    pub fn with_files(mut self, files: Arc<files::PodFiles>) -> FargateScheduler {
        self.files = files;
        self
    }

    /// Schedules the pods of every ACTIVE cluster until `shutdown` is true. Tasks keep running
    /// across a shutdown (a restart adopts them); a cluster that stops being ACTIVE has its
    /// pods' tasks stopped.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut workers: HashMap<String, (String, watch::Sender<bool>, tokio::task::JoinHandle<()>)> = HashMap::new();
        let mut tick = tokio::time::interval(CLUSTER_PASS);
        // Whether the records of clusters deleted while Flotilla was down are gone.
        let mut swept = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            let active = match self.clusters.active().await {
                Ok(active) => active,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list EKS clusters; retrying");
                    continue;
                }
            };
            if !swept {
                let names: Vec<String> = active.iter().map(|c| c.name.clone()).collect();
                services::forget_all_but(&self.control, &names).await;
                swept = true;
            }
            let live: HashSet<(String, String)> = active.iter().map(|c| (c.name.clone(), c.arn.clone())).collect();
            let ended: Vec<String> = workers
                .iter()
                .filter(|(name, (arn, _, handle))| {
                    handle.is_finished() || !live.contains(&((*name).clone(), arn.clone()))
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in ended {
                let (arn, stop, handle) = workers.remove(&name).expect("listed above");
                let _ = stop.send(true);
                let _ = handle.await;
                if !live.contains(&(name.clone(), arn)) {
                    self.stop_cluster_tasks(&name).await;
                    services::forget(&self.control, &name).await;
                }
            }
            for cluster in active {
                if workers.contains_key(&cluster.name) {
                    continue;
                }
                match self.context(&cluster).await {
                    Ok(ctx) => {
                        let (stop, stopped) = watch::channel(false);
                        let handle = tokio::spawn(watch_pods(Arc::new(ctx), stopped));
                        workers.insert(cluster.name.clone(), (cluster.arn.clone(), stop, handle));
                    }
                    Err(e) => {
                        tracing::warn!(cluster = %cluster.name, error = %e, "cannot schedule the cluster's pods yet")
                    }
                }
            }
        }
        for (_, (_, stop, handle)) in workers {
            let _ = stop.send(true);
            let _ = handle.await;
        }
    }

    async fn context(&self, cluster: &ClusterRecord) -> Result<ClusterContext, String> {
        let access = self.clusters.access(cluster).await?;
        let client = crate::plane::client(&access).await?;
        let ecs_cluster = ecs_cluster(&cluster.name);
        let input = CreateClusterInput { cluster_name: Some(ecs_cluster.clone()), ..Default::default() };
        self.control
            .create_cluster(input)
            .await
            .map_err(|e| format!("cannot create ECS cluster {ecs_cluster}: {e}"))?;
        let address = self.kubelet.address();
        // A launched plane's API server presents a client certificate its CA signed
        // (`--kubelet-client-certificate`): only it may read logs or run commands. A
        // registered cluster's API server may present none (then the listener's address is the
        // only guard: loopback by default).
        let client_ca = match &cluster.source {
            PlaneSource::Launched => Some(access.ca_pem.as_str()),
            PlaneSource::Registered { .. } => None,
        };
        let signed = crate::kubelet::serving::cluster_signed(&client, &cluster.name, address, client_ca).await;
        let kubelet_tls = match signed {
            Ok(tls) => tls,
            Err(e) => {
                tracing::info!(cluster = %cluster.name, reason = %e, "Fargate nodes' kubelet API serves a self-signed certificate");
                self.kubelet.self_signed(client_ca).map_err(|e| e.to_string())?
            }
        };
        Ok(ClusterContext {
            name: cluster.name.clone(),
            ecs_cluster,
            region: self.control.identity().region.clone(),
            security_groups: cluster.security_group_ids.clone(),
            vpc_id: cluster.vpc_id.clone(),
            client,
            control: self.control.clone(),
            clusters: self.clusters.clone(),
            kubelet: self.kubelet.clone(),
            files: self.files.clone(),
            kubelet_tls,
        })
    }

    /// A cluster that went away: its pods' tasks go too.
    async fn stop_cluster_tasks(&self, name: &str) {
        let cluster = ecs_cluster(name);
        let input = ListTasksInput { cluster: Some(cluster.clone()), ..Default::default() };
        let Ok(page) = self.control.list_tasks(input).await else { return };
        for task in page.items {
            let _ = self.control.stop_task(Some(&cluster), &task, Some("EKS cluster deleted".into())).await;
        }
    }
}

/// Follows the cluster's Fargate pods until `stop`: one supervisor per pod, told of each change.
async fn watch_pods(ctx: Arc<ClusterContext>, mut stop: watch::Receiver<bool>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.schedulerName={SCHEDULER_NAME}"));
    let mut events = std::pin::pin!(watcher(pods, config));
    let mut supervisors: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let routes = tokio::spawn(services::follow(ctx.clone(), stop.clone()));
    tracing::info!(cluster = %ctx.name, "scheduling the cluster's Fargate pods");
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(event) = event else { break };
        let seen = |pod: Pod, supervisors: &mut HashMap<String, watch::Sender<Option<Pod>>>| {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            match supervisors.get(&uid) {
                Some(tx) => {
                    tx.send_replace(Some(pod));
                }
                None => {
                    let (tx, rx) = watch::channel(Some(pod));
                    tokio::spawn(pod::supervise(ctx.clone(), rx));
                    supervisors.insert(uid.clone(), tx);
                }
            }
            uid
        };
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(pod)) => {
                let uid = seen(pod, &mut supervisors);
                listed.insert(uid);
            }
            Ok(watcher::Event::InitDone) => {
                supervisors.retain(|uid, tx| {
                    let keep = listed.contains(uid);
                    if !keep {
                        tx.send_replace(None);
                    }
                    keep
                });
            }
            Ok(watcher::Event::Apply(pod)) => {
                seen(pod, &mut supervisors);
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(tx) = supervisors.remove(&pod.metadata.uid.clone().unwrap_or_default()) {
                    tx.send_replace(None);
                }
            }
            Err(e) => {
                tracing::debug!(cluster = %ctx.name, error = %e, "pod watch failed; it retries");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // Dropping the senders tells each supervisor to let go without stopping its task.
    drop(supervisors);
    routes.abort();
}
