//! The HTTPS listener API servers call back into Flotilla on, one for every cluster:
//!
//! - `POST /eks/<cluster>/authenticate`: a `TokenReview` (authentication.k8s.io/v1, the API
//!   server's `--authentication-token-webhook-version=v1`) for an `aws eks get-token` token
//!   ([`token`]).
//! - `POST /eks/<cluster>/mutate`: an `AdmissionReview` (admission.k8s.io/v1) for a pod being
//!   created, which a matching ACTIVE Fargate profile hands to the Fargate scheduler
//!   ([`admission`]).
//!
//! The listener's CA and key stay in its directory (`<data>/eks-webhook`), so API servers
//! started with its CA keep trusting it across Flotilla restarts; its serving certificate is
//! issued again at every start (for the address it listens on). Its address is recorded there
//! too: without `--eks-webhook-listen`, a restart listens where the last one did.
//!
//! The webhooks do not authenticate their callers: a token review only says what the token
//! itself proves, and a mutation only computes a patch; neither changes anything.

pub mod admission;
pub mod token;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use flotilla_eks::{ClusterRecord, FargateProfile, KubeAccess, PlaneFuture};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::plane::WebhookEndpoint;
use crate::plane::pki::{Authority, Leaf};

/// Where the listener is when neither `--eks-webhook-listen` nor an earlier start says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8449";

/// The largest review body read.
const MAX_BODY: usize = 4 << 20;

/// The clusters and profiles the webhooks answer for (`flotilla_eks::Eks`).
pub trait Clusters: Send + Sync {
    fn cluster<'a>(&'a self, name: &'a str) -> PlaneFuture<'a, Result<Option<ClusterRecord>, String>>;
    /// The cluster's profiles, every status.
    fn profiles<'a>(&'a self, cluster: &'a str) -> PlaneFuture<'a, Result<Vec<FargateProfile>, String>>;
    /// How Flotilla reaches the cluster's API server as its administrator (to read `aws-auth`).
    fn access<'a>(&'a self, cluster: &'a str) -> PlaneFuture<'a, Result<KubeAccess, String>>;
}

impl Clusters for flotilla_eks::Eks {
    fn cluster<'a>(&'a self, name: &'a str) -> PlaneFuture<'a, Result<Option<ClusterRecord>, String>> {
        Box::pin(async move { flotilla_eks::Eks::cluster(self, name).await.map_err(|e| e.to_string()) })
    }

    fn profiles<'a>(&'a self, cluster: &'a str) -> PlaneFuture<'a, Result<Vec<FargateProfile>, String>> {
        Box::pin(async move { flotilla_eks::Eks::profiles(self, cluster).await.map_err(|e| e.to_string()) })
    }

    fn access<'a>(&'a self, cluster: &'a str) -> PlaneFuture<'a, Result<KubeAccess, String>> {
        Box::pin(async move { flotilla_eks::Eks::access(self, cluster).await.map_err(|e| e.to_string()) })
    }
}

/// The request a presigned URL stands for: what a SigV4 verifier checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresignedRequest {
    /// `host[:port]` as the URL names it (the signed `host` header).
    pub host: String,
    pub path: String,
    /// The raw query string, signature included.
    pub query: String,
    /// Lowercased names; `host` and every other header the URL was signed with.
    pub headers: Vec<(String, String)>,
}

/// Who signed a presigned request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsIdentity {
    /// The principal's ARN: `arn:aws:iam::ACCOUNT:root|user/...`, or
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub arn: String,
    pub account: String,
    /// GetCallerIdentity's `UserId`.
    pub user_id: String,
    pub access_key_id: String,
    /// For an assumed role's session: the role's ARN and the session's name.
    pub role: Option<(String, String)>,
}

/// Checks presigned STS GetCallerIdentity requests (Flotilla's SigV4 verifier; `flotilla-cli`
/// holds the glue, which keeps this crate free of the API's).
pub trait CallerVerifier: Send + Sync {
    /// The signer of `request`, if its signature holds, it is current (EKS tokens last 15
    /// minutes) and its key is valid; else why not.
    fn verify<'a>(&'a self, request: &'a PresignedRequest) -> PlaneFuture<'a, Result<AwsIdentity, String>>;
}

/// The running listener.
pub struct Webhooks {
    endpoint: WebhookEndpoint,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// What each connection's handler needs.
struct State {
    clusters: Arc<dyn Clusters>,
    callers: Arc<dyn CallerVerifier>,
}

/// What the listener serves: one closed set of actions, parsed from (method, path).
enum Action<'a> {
    Authenticate { cluster: &'a str },
    Mutate { cluster: &'a str },
}

fn parse_action<'a>(method: &Method, path: &'a str) -> Option<Action<'a>> {
    if method != Method::POST {
        return None;
    }
    let rest = path.strip_prefix("/eks/")?;
    let (cluster, what) = rest.split_once('/')?;
    if cluster.is_empty() {
        return None;
    }
    match what {
        "authenticate" => Some(Action::Authenticate { cluster }),
        "mutate" => Some(Action::Mutate { cluster }),
        _ => None,
    }
}

impl Webhooks {
    /// Listens for API servers: on `listen` when given, else where the last start in `dir`
    /// did, else on [`DEFAULT_LISTEN`], or (when that is taken) a free loopback port. Serves
    /// nothing until [`Bound::serve`]: the planes need the address first, and what serves
    /// needs the planes.
    pub async fn bind(dir: &Path, listen: Option<SocketAddr>) -> Result<Bound, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let recorded_path = dir.join("listen");
        let listener = match listen {
            Some(addr) => TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?,
            None => {
                let recorded = std::fs::read_to_string(&recorded_path).ok().and_then(|s| s.trim().parse().ok());
                let preferred: SocketAddr =
                    recorded.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a socket address"));
                match TcpListener::bind(preferred).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(
                            "the EKS webhook listener cannot take {preferred} ({e}); listening on a free loopback port (API servers already launched are started again with it)"
                        );
                        TcpListener::bind(("127.0.0.1", 0))
                            .await
                            .map_err(|e| format!("cannot listen on loopback: {e}"))?
                    }
                }
            }
        };
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        crate::plane::pki::write_file(&recorded_path, local.to_string().as_bytes(), false)
            .map_err(|e| e.to_string())?;
        let (tls, ca_pem) = {
            let dir = dir.to_owned();
            tokio::task::spawn_blocking(move || tls(&dir, local)).await.map_err(|e| e.to_string())??
        };
        let host = if local.ip().is_unspecified() { "127.0.0.1".to_owned() } else { local.ip().to_string() };
        let host = if local.is_ipv6() { format!("[{host}]") } else { host };
        let endpoint = WebhookEndpoint { base_url: format!("https://{host}:{}", local.port()), ca_pem };
        Ok(Bound { listener, tls, endpoint, local })
    }

    /// [`Webhooks::bind`] and [`Bound::serve`] at once.
    pub async fn start(
        dir: &Path,
        listen: Option<SocketAddr>,
        clusters: Arc<dyn Clusters>,
        callers: Arc<dyn CallerVerifier>,
    ) -> Result<Webhooks, String> {
        Ok(Webhooks::bind(dir, listen).await?.serve(clusters, callers))
    }

    /// Where API servers reach the listener, and the CA that vouches for it.
    pub fn endpoint(&self) -> WebhookEndpoint {
        self.endpoint.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// A listener bound, not yet serving.
pub struct Bound {
    listener: TcpListener,
    tls: TlsAcceptor,
    endpoint: WebhookEndpoint,
    local: SocketAddr,
}

impl Bound {
    pub fn endpoint(&self) -> WebhookEndpoint {
        self.endpoint.clone()
    }

    pub fn serve(self, clusters: Arc<dyn Clusters>, callers: Arc<dyn CallerVerifier>) -> Webhooks {
        let state = Arc::new(State { clusters, callers });
        let task = tokio::spawn(serve(self.listener, self.tls, state));
        Webhooks { endpoint: self.endpoint, local: self.local, task }
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The listener's CA (kept) and a serving certificate for `local` (issued now).
fn tls(dir: &Path, local: SocketAddr) -> Result<(TlsAcceptor, String), String> {
    let ca = Authority::load_or_create(dir, "ca", "flotilla-eks-webhooks").map_err(|e| e.to_string())?;
    let ip = local.ip().to_string();
    let mut sans = vec!["127.0.0.1", "localhost"];
    if !local.ip().is_unspecified() && !local.ip().is_loopback() {
        sans.push(&ip);
    }
    let leaf =
        Leaf { common_name: "flotilla-eks-webhooks", organizations: &[], sans: &sans, server: true, client: false };
    let (cert_pem, key_pem) = ca.issue(&leaf).map_err(|e| e.to_string())?;
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), ca.pem().to_owned()))
}

async fn serve(listener: TcpListener, tls: TlsAcceptor, state: Arc<State>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("EKS webhook listener: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (tls, state) = (tls.clone(), state.clone());
        tokio::spawn(async move {
            let stream = match tls.accept(stream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, "EKS webhook TLS handshake: {e}");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(%peer, "EKS webhook connection: {e}");
            }
        });
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .expect("a well-formed response")
}

async fn handle(state: &State, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let Some(action) = parse_action(req.method(), &path) else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"message": format!("no webhook at {} {path}", req.method())}),
        );
    };
    let body = match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return json(StatusCode::BAD_REQUEST, &serde_json::json!({"message": format!("unreadable body: {e}")}));
        }
    };
    let answer = match action {
        Action::Authenticate { cluster } => {
            token::review(state.clusters.as_ref(), state.callers.as_ref(), cluster, &body).await
        }
        Action::Mutate { cluster } => admission::review(state.clusters.as_ref(), cluster, &body).await,
    };
    match answer {
        Ok(review) => json(StatusCode::OK, &review),
        Err(message) => json(StatusCode::BAD_REQUEST, &serde_json::json!({"message": message})),
    }
}

/// Where the listener keeps its files: beside the clusters' directories (`<data>/eks/<name>`),
/// not among them, so that no cluster name can collide with it.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("eks-webhook")
}
