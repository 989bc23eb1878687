//! `flotilla server`: the API and the control plane over a store that several servers may
//! share, and the link that agents on other hosts connect to. No agent: tasks run on hosts
//! whose `flotilla agent` connects here.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use flotilla_api::{Credentials, router};
use flotilla_control::Control;
use flotilla_host::BoxFuture;
use flotilla_link::{AuthError, HostAuth, LinkServer};
use flotilla_store::{Compare, EmbeddedStore, Op, Store, TlsFiles, Txn, TxnOutcome};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::home::{Home, InstallIdentity};
use crate::plane::{ControlPlane, PlaneOptions, no_delay, shutdown_signal};

/// Where the installation's identity and root credentials live in a shared store: written
/// once by the first server, read by every other.
const IDENTITY_KEY: &str = "flotilla/identity";
const CREDENTIALS_KEY: &str = "flotilla/credentials";

pub struct ServerOptions {
    /// `etcd://h1:2379,h2:2379`, `file:PATH` or a path (embedded); `None`: the data dir's.
    pub store: Option<String>,
    /// TLS to the etcd members, as etcd's own `--cacert`, `--cert` and `--key`.
    pub store_tls: TlsFiles,
    pub listen: SocketAddr,
    pub agent_listen: SocketAddr,
    pub data_dir: std::path::PathBuf,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub public_ip_pool: flotilla_control::Ipv4Cidr,
    /// `--efs-root` (default `<data-dir>/efs`).
    pub efs_root: Option<std::path::PathBuf>,
    /// `--require-roles`: Fargate's rules for task definitions without an execution role.
    pub require_roles: bool,
    /// `--kms-key-file` (default [`crate::home::default_kms_key_file`]); the same for every
    /// server of a store.
    pub kms_key_file: Option<std::path::PathBuf>,
    /// `--kubernetes-bin`, `--eks-webhook-listen`: EKS clusters' control planes.
    pub kubernetes: crate::kubernetes::KubernetesArgs,
}

/// The store a server uses: etcd, shared with the other servers, or an embedded one.
async fn open_store(url: Option<&str>, tls: &TlsFiles, home: &Home) -> anyhow::Result<Arc<dyn Store>> {
    let path = match url {
        None => home.store_path(),
        Some(url) if url.starts_with("etcd://") => {
            return flotilla_store::open(url, tls).await.with_context(|| format!("cannot use the store {url}"));
        }
        Some(url) => std::path::PathBuf::from(url.strip_prefix("file:").unwrap_or(url)),
    };
    let store = EmbeddedStore::open(&path)
        .with_context(|| format!("cannot open the store {}; is another flotilla using it?", path.display()))?;
    Ok(Arc::new(store))
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SharedCredentials {
    access_key_id: String,
    secret_access_key: String,
}

/// `proposal` written at `key` unless something is there already; what is there wins.
async fn first_wins<T: Serialize + DeserializeOwned>(store: &dyn Store, key: &str, proposal: T) -> anyhow::Result<T> {
    let txn = Txn::new().when(Compare::absent(key)).then(Op::put(key, serde_json::to_vec(&proposal)?));
    if let TxnOutcome::Committed(_) = store.txn(txn).await.with_context(|| format!("cannot write {key}"))? {
        return Ok(proposal);
    }
    let kv = store.get(key).await?.with_context(|| format!("{key} vanished while being read"))?;
    serde_json::from_slice(&kv.value).with_context(|| format!("{key} in the store is corrupt"))
}

pub async fn run(opts: ServerOptions) -> anyhow::Result<()> {
    let home = Home::open(&opts.data_dir)?;
    let store = open_store(opts.store.as_deref(), &opts.store_tls, &home).await?;
    // One identity and one set of root credentials for every server of the store: the
    // first server's. This data dir records them too, for the CLI on this machine.
    let proposed = InstallIdentity {
        region: opts.region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
        account_id: opts.account_id.clone().unwrap_or_else(|| "000000000000".to_owned()),
    };
    let identity = first_wins(store.as_ref(), IDENTITY_KEY, proposed).await?;
    if opts.region.as_ref().is_some_and(|r| *r != identity.region)
        || opts.account_id.as_ref().is_some_and(|a| *a != identity.account_id)
    {
        bail!(
            "the store belongs to region {} and account {}; start with those (or omit --region/--account-id)",
            identity.region,
            identity.account_id
        );
    }
    home.identity(Some(&identity.region), Some(&identity.account_id))?;
    let (local, _) = home.credentials()?;
    let proposed = SharedCredentials { access_key_id: local.access_key_id, secret_access_key: local.secret_access_key };
    let shared = first_wins(store.as_ref(), CREDENTIALS_KEY, proposed).await?;
    let credentials = Credentials { access_key_id: shared.access_key_id, secret_access_key: shared.secret_access_key };
    home.record_credentials(&credentials)?;

    let plane = ControlPlane::start(
        store,
        PlaneOptions {
            region: identity.region.clone(),
            account_id: identity.account_id.clone(),
            public_ip_pool: opts.public_ip_pool,
            lb_address: None,
            logs_dir: home.dir.join("logs"),
            efs_root: opts.efs_root.clone().unwrap_or_else(|| home.dir.join("efs")),
            require_roles: opts.require_roles,
            kms_key_file: home.kms_key_file(opts.kms_key_file.as_deref())?,
            root_credentials: credentials.clone(),
            data_dir: home.dir.clone(),
            kubernetes: opts.kubernetes.clone(),
            eks_planes: None,
        },
    )
    .await?;
    // Connected agents' hosts serve ECS Exec through their streams.
    let link = LinkServer::new(plane.host_api.clone(), Arc::new(TokenAuth(plane.control.clone())))
        .with_exec_targets(plane.exec_targets.clone());
    let agents = tokio::net::TcpListener::bind(opts.agent_listen).await.with_context(|| {
        format!("cannot listen for agents on {}; pick another with --agent-listen", opts.agent_listen)
    })?;
    let agents_addr = agents.local_addr()?;
    let (stop_link, link_stopped) = tokio::sync::watch::channel(false);
    let link = tokio::spawn(link.serve(agents, async move {
        let mut stopped = link_stopped;
        let _ = stopped.wait_for(|s| *s).await;
    }));

    // EKS on Fargate: the pods of ACTIVE EKS clusters run as this plane's tasks (one server).
    let fargate = crate::fargate::start(&plane, plane.eks.clone(), opts.listen.ip(), stop_link.subscribe())?;

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick another with --listen", opts.listen))?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    println!("Flotilla server at {endpoint} (region {}, account {})", identity.region, identity.account_id);
    println!("  agents connect to http://{agents_addr}");
    println!("  data dir: {}", home.dir.display());
    plane.print_kms_key_file();
    crate::up::print_usage(&endpoint, &credentials, &identity.region);
    println!("Add a host with: flotilla hosts add HOST_ID");
    home.record_endpoint(&endpoint)?;

    let state = plane.api_state(&credentials);
    // With the peer's address: policies' `aws:SourceIp`.
    axum::serve(no_delay(listener), router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    let _ = stop_link.send(true);
    let _ = fargate.await;
    match link.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "the agent link failed"),
        Err(e) => tracing::warn!(error = %e, "the agent link panicked"),
        Ok(Ok(())) => {}
    }
    plane.stop().await;
    println!("Flotilla server stopped.");
    Ok(())
}

/// Hosts' tokens as the control plane keeps them.
struct TokenAuth(Arc<Control>);

impl HostAuth for TokenAuth {
    fn check<'a>(&'a self, host_id: &'a str, token: &'a str) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            match self.0.check_host_token(host_id, token).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(AuthError::Refused),
                Err(e) => Err(AuthError::Unavailable { reason: e.to_string() }),
            }
        })
    }

    fn revoked<'a>(&'a self, host_id: &'a str, token: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.0.host_token_revoked(host_id, token))
    }

    fn may_act_on<'a>(&'a self, host_id: &'a str, task_arn: &'a str) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            match self.0.host_may_act_on(host_id, task_arn).await {
                Ok(allowed) => Ok(allowed),
                // Not a task ARN at all: the call itself refuses it.
                Err(flotilla_control::ControlError::InvalidParameter(_)) => Ok(true),
                Err(e) => Err(AuthError::Unavailable { reason: e.to_string() }),
            }
        })
    }
}
