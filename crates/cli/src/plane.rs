//! The control plane as `flotilla up` and `flotilla server` assemble it: the control plane
//! over a store, load balancing and certificates, logs, secrets, Cloud Map, the host API it
//! serves to agents, and the background work (the service scheduler; retention of stopped
//! tasks, draining targets and logs).
//!
//! Work that must run once among all servers sharing a store runs under [`Store::acquire`]:
//! with the embedded store this process always holds it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flotilla_api::ApiState;
use flotilla_api::logs::LogStore;
use flotilla_api::servicediscovery::Discovery;
use flotilla_control::{Control, Identity, hold_role};
use flotilla_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct PlaneOptions {
    pub region: String,
    pub account_id: String,
    pub public_ip_pool: flotilla_control::Ipv4Cidr,
    /// The host address internet-facing load balancers listen on, when this process runs
    /// them: a port something else holds there is refused when a listener is created.
    pub lb_address: Option<IpAddr>,
    /// Where this server's log store lives.
    pub logs_dir: std::path::PathBuf,
    /// Where EFS file systems' directories live (shared with the agents in a cluster).
    pub efs_root: std::path::PathBuf,
    /// Fargate's rules for task definitions without an execution role (`--require-roles`).
    pub require_roles: bool,
    /// The KMS master key file (made if absent), kept apart from the data dir.
    pub kms_key_file: std::path::PathBuf,
    /// The account root's credentials (what `flotilla up` prints): IAM knows them without
    /// storing them.
    pub root_credentials: flotilla_api::Credentials,
    /// The data dir: EKS clusters' control planes and the webhook listener keep files there.
    pub data_dir: std::path::PathBuf,
    /// `--kubernetes-bin`, `--eks-webhook-listen`.
    pub kubernetes: crate::kubernetes::KubernetesArgs,
    /// Other control planes for EKS than the ones launched here (tests' stand-ins); `None`:
    /// flotilla-k8s's `Planes`.
    pub eks_planes: Option<Arc<dyn flotilla_eks::ControlPlanes>>,
}

pub struct ControlPlane {
    pub store: Arc<dyn Store>,
    pub control: Arc<Control>,
    pub elb: Arc<flotilla_elb::Elb>,
    pub acm: Arc<flotilla_acm::Acm>,
    pub efs: Arc<flotilla_efs::Efs>,
    /// EKS: clusters and Fargate profiles in the store, moved through their statuses by its
    /// reconciler (a singleton role).
    pub eks: Arc<flotilla_eks::Eks>,
    pub logs: Arc<LogStore>,
    pub secrets: Arc<flotilla_api::secrets::Secrets>,
    pub kms: Arc<flotilla_kms::Kms>,
    /// Where the KMS master key is, and whether this start made it.
    kms_key_file: (std::path::PathBuf, bool),
    pub discovery: Arc<Discovery>,
    /// IAM and STS over the same store: who signs requests and what they may do, and the
    /// roles tasks name.
    pub iam: Arc<flotilla_iam::Iam>,
    /// The host API as this control plane serves it, to in-process agents or over the link.
    pub host_api: Arc<dyn flotilla_host::HostApi>,
    /// The hosts that run commands in their containers (ECS Exec), by host id: in-process
    /// agents register here, and so does the link for each connected remote agent.
    pub exec_targets: flotilla_host::exec::ExecTargets,
    /// ECS Exec sessions (in memory: a restart ends them), run on `exec_targets`.
    pub exec_sessions: Arc<flotilla_exec::Sessions>,
    /// EKS clusters' control planes (for `Eks::with_planes`) and the webhook listener their
    /// API servers call.
    pub kubernetes: crate::kubernetes::Kubernetes,
    stop: watch::Sender<bool>,
    scheduler: JoinHandle<()>,
    detector: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    pub async fn start(store: Arc<dyn Store>, opts: PlaneOptions) -> anyhow::Result<ControlPlane> {
        let identity = Identity { region: opts.region.clone(), account: opts.account_id.clone() };
        let control = Arc::new(
            Control::new(store.clone(), identity)
                .with_public_ip_pool(opts.public_ip_pool)
                .with_require_roles(opts.require_roles),
        );
        control.ensure_default_network().await.context("cannot create the default VPC")?;
        let root = &opts.root_credentials;
        let root_keys = [(root.access_key_id.clone(), root.secret_access_key.clone())];
        let iam = flotilla_iam::Iam::open(store.clone(), control.identity().clone(), &root_keys)
            .await
            .context("cannot load IAM's users, roles and policies from the store")?;
        // The role Fargate task definitions name (the seeds' `ecsTaskExecutionRole`), made
        // once per store as the ECS console makes it on first use.
        iam.ensure_task_execution_role().await.context("cannot create the default ecsTaskExecutionRole")?;
        // Task definitions' roles are checked, the platform acts as a task's execution role, and
        // tasks get their task role's credentials (the host API).
        control.attach_iam(iam.clone());
        // EKS: the webhooks API servers call (tokens checked as the API checks signatures) and
        // the control planes Flotilla launches.
        let kubernetes = {
            let mut verifier =
                flotilla_api::sigv4::Verifier::new(&opts.region, &opts.account_id, std::slice::from_ref(root));
            verifier.attach_iam(iam.clone());
            let lookup = flotilla_eks::Eks::new(store.clone(), control.identity().clone());
            crate::kubernetes::start(&opts.data_dir, &opts.kubernetes, lookup, verifier).await?
        };
        // Elastic Load Balancing and the ACM certificates its TLS listeners serve.
        let acm = Arc::new(flotilla_acm::Acm::new(store.clone(), control.identity().clone()));
        let elb = Arc::new(flotilla_elb::Elb::new(
            store.clone(),
            control.identity().clone(),
            acm.clone(),
            Arc::new(flotilla_control::ElbVpcs(control.clone())),
            opts.lb_address.map(port_probe),
        ));
        control.attach_load_balancing(elb.clone());
        // ACM refuses to delete a certificate a listener serves.
        acm.set_users(elb.clone());
        // Logs live in their own file so that their volume never bloats the control-plane store.
        let logs = Arc::new(
            LogStore::open(&opts.logs_dir)
                .with_context(|| format!("cannot open the log store in {}", opts.logs_dir.display()))?,
        );
        // KMS: keys in the store, sealed under the master key from its own file; it refuses a
        // store whose keys were sealed under another.
        let (master, made) = flotilla_kms::MasterKey::load_or_create(&opts.kms_key_file)?;
        let kms = flotilla_kms::Kms::open(store.clone(), control.identity().clone(), master).await?;
        // SSM Parameter Store and Secrets Manager over the same store, for the API and for tasks,
        // their values encrypted with KMS; values stored in plaintext by older versions are
        // sealed now.
        let secrets = flotilla_api::secrets::Secrets::new(store.clone(), kms.clone());
        let sealed = secrets.seal_plaintext().await.context("cannot encrypt the secrets stored in plaintext")?;
        if sealed > 0 {
            tracing::info!(sealed, "encrypted secret values stored in plaintext by an earlier version");
        }
        // EFS: records in the store, data under the EFS root; mount targets take addresses
        // through the same VPC side as load balancers.
        let efs = Arc::new(flotilla_efs::Efs::new(
            store.clone(),
            control.identity().clone(),
            Arc::new(flotilla_control::ElbVpcs(control.clone())),
            opts.efs_root.clone(),
        ));
        // EKS: records in the store, subnets checked through the same VPC side; its reconciler
        // drives the Kubernetes side when one is given.
        let eks = {
            let eks = flotilla_eks::Eks::new(store.clone(), control.identity().clone())
                .with_vpcs(Arc::new(flotilla_control::ElbVpcs(control.clone())));
            let launched: Arc<dyn flotilla_eks::ControlPlanes> = kubernetes.planes.clone();
            Arc::new(eks.with_planes(opts.eks_planes.clone().unwrap_or(launched)))
        };
        let host_api: Arc<dyn flotilla_host::HostApi> = Arc::new(
            flotilla_control::LocalHostApi::new(control.clone(), Some(secrets.clone()))
                .with_logs(logs.clone())
                .with_efs(efs.clone()),
        );
        // Cloud Map over the same store; its worker completes namespace and instance operations.
        let discovery = Discovery::start(store.clone(), opts.region.clone(), opts.account_id.clone());
        control.attach_discovery(discovery.clone());

        let exec_targets = flotilla_host::exec::ExecTargets::new();
        let exec_sessions = Arc::new(flotilla_exec::Sessions::new(exec_targets.clone(), Some(logs.clone())));
        let (stop, _) = watch::channel(false);
        let background = vec![
            tokio::spawn({
                let (store, eks, stop) = (store.clone(), eks.clone(), stop.subscribe());
                async move {
                    hold_role(store.as_ref(), "eks", std::future::pending(), || eks.clone().run(stop.clone())).await
                }
            }),
            tokio::spawn(expire_logs(logs.clone())),
            tokio::spawn({
                let (store, control) = (store.clone(), control.clone());
                async move {
                    hold_role(store.as_ref(), "stopped-task-reaper", std::future::pending(), || {
                        reap_stopped_tasks(control.clone())
                    })
                    .await
                }
            }),
            tokio::spawn({
                let (store, elb) = (store.clone(), elb.clone());
                async move {
                    hold_role(store.as_ref(), "draining-expiry", std::future::pending(), || {
                        expire_draining(elb.clone())
                    })
                    .await
                }
            }),
        ];
        // The service scheduler: keeps every service's tasks as the service asks.
        let scheduler = {
            let mut stop = stop.subscribe();
            tokio::spawn(control.clone().run_service_scheduler(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        };
        // The host-failure detector: hosts unheard from past the grace are lost, their tasks
        // stopped (a singleton role too).
        let detector = {
            let mut stop = stop.subscribe();
            let liveness = flotilla_control::HostLiveness::from_env();
            tokio::spawn(control.clone().run_host_failure_detector(liveness, async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        };
        Ok(ControlPlane {
            store,
            control,
            elb,
            acm,
            efs,
            eks,
            logs,
            secrets,
            kms,
            kms_key_file: (opts.kms_key_file.clone(), made),
            discovery,
            iam,
            host_api,
            exec_targets,
            exec_sessions,
            kubernetes,
            stop,
            scheduler,
            detector,
            background,
        })
    }

    /// The AWS API over this control plane, for `credentials` (the account root's), with IAM
    /// authenticating every key and authorising every request.
    pub fn api_state(&self, credentials: &flotilla_api::Credentials) -> Arc<ApiState> {
        Arc::new(
            ApiState::new(self.control.clone(), std::slice::from_ref(credentials))
                .with_logs(self.logs.clone())
                .with_discovery(self.discovery.clone())
                .with_secrets(self.secrets.clone())
                .with_kms(self.kms.clone())
                .with_load_balancing(self.elb.clone(), self.acm.clone())
                .with_exec(self.exec_sessions.clone())
                .with_efs(self.efs.clone())
                .with_eks(self.eks.clone())
                .with_iam(self.iam.clone()),
        )
    }

    /// The banner's line about the KMS key file.
    pub fn print_kms_key_file(&self) {
        let (path, made) = &self.kms_key_file;
        let made = if *made { " (made now: back it up; without it no secret can be read)" } else { "" };
        println!("  KMS key file: {}{made}", path.display());
    }

    /// Lets the scheduler finish its pass and stops the background work.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.scheduler.await;
        let _ = self.detector.await;
        for task in self.background {
            task.abort();
        }
    }
}

/// The API's listener with Nagle's algorithm off on every connection: an exec session's data
/// channel writes small frames back to back (output, then its ack's answer), which Nagle and
/// the peer's delayed ACK would hold for tens of milliseconds each.
/// The concrete type (not `impl Listener`) so that the router can be served with each
/// connection's peer address (`into_make_service_with_connect_info`), which policies'
/// `aws:SourceIp` needs.
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    listener.tap_io(set_nodelay as fn(&mut tokio::net::TcpStream))
}

/// Forgets STOPPED tasks an hour after they stopped, as Fargate does.
async fn reap_stopped_tasks(control: Arc<Control>) {
    const RETENTION: Duration = Duration::from_secs(60 * 60);
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let cutoff = flotilla_types::Timestamp(flotilla_types::Timestamp::now().0 - RETENTION.as_millis() as i64);
        if let Err(e) = control.reap_stopped_tasks(cutoff).await {
            tracing::warn!(error = %e, "reaping stopped tasks failed; retrying at the next pass");
        }
    }
}

/// Ends the draining of targets whose deregistration delay has passed (those with nothing in
/// flight end earlier, when the data plane says so).
async fn expire_draining(elb: Arc<flotilla_elb::Elb>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Err(e) = elb.expire_draining().await {
            tracing::warn!(error = %e, "expiring draining targets failed; retrying in a second");
        }
    }
}

/// Applies the log groups' retention policies every few minutes.
async fn expire_logs(logs: Arc<LogStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tick.tick().await;
        if let Err(e) = logs.expire(flotilla_api::logs::now_millis()).await {
            tracing::warn!(error = %e, "log retention pass failed; retrying at the next one");
        }
    }
}

/// Refuses a port of the host's load-balancer address that another program holds (binding it
/// and letting go at once). The load balancers' own listeners are known from their records.
fn port_probe(address: IpAddr) -> flotilla_elb::PortProbe {
    Arc::new(move |port| match std::net::TcpListener::bind((address, port)) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("port {port} of {address} is not free: {e}")),
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
