//! Each Fargate node's kubelet API, as far as the API server needs it for `kubectl logs`:
//! `GET /containerLogs/<namespace>/<pod>/<container>` (`follow`, `tailLines`, `timestamps`,
//! `sinceSeconds`, `limitBytes`), served from Flotilla's log store, where the pod's task ships
//! its containers' output.
//!
//! Task addresses live in the task network, which the host (and an API server on it) cannot
//! route to, so every node's kubelet listens on the host instead (the address Flotilla's API
//! listens on; loopback by default), one port per node: the node reports it as its
//! `daemonEndpoints.kubeletEndpoint.Port`, with the host as its ExternalIP, and the API server
//! is launched with `--kubelet-preferred-address-types=ExternalIP,InternalIP,Hostname`.
//! HTTPS with a certificate made at start: API servers do not verify kubelets' serving
//! certificates unless told to.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flotilla_logs::EventQuery;
use flotilla_logs::LogStore;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("cannot make the kubelet's serving certificate: {0}")]
    Certificate(String),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: IpAddr, source: std::io::Error },
}

mod exec;
pub mod serving;

pub use exec::PodExec;

/// One node's pod: where its output is (the log group, and each container's stream) and its
/// task (for exec).
#[derive(Clone, Debug)]
pub struct NodeLogs {
    pub namespace: String,
    pub pod: String,
    pub ecs_cluster: String,
    pub task_arn: String,
    pub group: String,
    pub streams: BTreeMap<String, String>,
}

/// The kubelet APIs of this process's Fargate nodes.
pub struct Kubelet {
    address: IpAddr,
    logs: Arc<LogStore>,
    exec: Option<PodExec>,
    /// The self-signed serving certificate (PEM) and its key (PKCS#8 DER), for clusters that
    /// sign none.
    self_signed: (String, Vec<u8>),
}

/// One node's listener; dropping it stops it.
pub struct NodeServer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    /// Nodes' kubelet APIs listen on `address` (one port each) and read `logs`.
    pub fn new(address: IpAddr, logs: Arc<LogStore>) -> Result<Kubelet, KubeletError> {
        let key = rcgen::KeyPair::generate().map_err(|e| KubeletError::Certificate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .map_err(|e| KubeletError::Certificate(e.to_string()))?;
        params.subject_alt_names.push(rcgen::SanType::IpAddress(address));
        params.distinguished_name.push(rcgen::DnType::CommonName, "flotilla-fargate-kubelet");
        let cert = params.self_signed(&key).map_err(|e| KubeletError::Certificate(e.to_string()))?;
        Ok(Kubelet { address, logs, exec: None, self_signed: (cert.pem(), key.serialize_der()) })
    }

    /// Serves `kubectl exec` through Flotilla's exec path.
    pub fn with_exec(mut self, exec: PodExec) -> Kubelet {
        self.exec = Some(exec);
        self
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The self-signed serving certificate, admitting only clients `client_ca` signed when given.
    pub fn self_signed(&self, client_ca: Option<&str>) -> Result<TlsAcceptor, KubeletError> {
        let key = rcgen::KeyPair::try_from(self.self_signed.1.as_slice())
            .map_err(|e| KubeletError::Certificate(e.to_string()))?;
        serving::acceptor(&self.self_signed.0, &key, client_ca).map_err(KubeletError::Certificate)
    }

    /// Starts one node's kubelet API, on a port of its own, with `tls` (the cluster's
    /// `serving::cluster_signed` certificate, or [`Kubelet::self_signed`]).
    pub async fn serve(&self, node: NodeLogs, tls: TlsAcceptor) -> Result<NodeServer, KubeletError> {
        let listener = TcpListener::bind(SocketAddr::new(self.address, 0))
            .await
            .map_err(|source| KubeletError::Listen { address: self.address, source })?;
        let port =
            listener.local_addr().map_err(|source| KubeletError::Listen { address: self.address, source })?.port();
        let app = Router::new()
            .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
            .route("/exec/{namespace}/{pod}/{container}", get(exec::exec).post(exec::exec))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(Arc::new(NodeState { node, logs: self.logs.clone(), exec: self.exec.clone() }));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (tls, app) = (tls.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(NodeServer { port, task })
    }
}

struct NodeState {
    node: NodeLogs,
    logs: Arc<LogStore>,
    exec: Option<PodExec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogOptions {
    #[serde(default)]
    follow: Option<String>,
    tail_lines: Option<i64>,
    #[serde(default)]
    timestamps: Option<String>,
    since_seconds: Option<i64>,
    limit_bytes: Option<usize>,
}

fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1" | ""))
}

fn now_ms() -> i64 {
    flotilla_types::Timestamp::now().0
}

/// A line as the kubelet writes it: with `timestamps`, RFC 3339 first.
fn line(message: &str, timestamp: i64, timestamps: bool) -> String {
    let mut out = String::new();
    if timestamps {
        let t = flotilla_types::Timestamp(timestamp).rfc3339();
        out.push_str(&format!("{}000000Z ", &t[..23]));
    }
    out.push_str(message.trim_end_matches('\n'));
    out.push('\n');
    out
}

async fn container_logs(
    State(state): State<Arc<NodeState>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(options): Query<LogOptions>,
) -> Response {
    let node = &state.node;
    if namespace != node.namespace || pod != node.pod {
        return (StatusCode::NOT_FOUND, format!("pod {namespace}/{pod} is not on this node\n")).into_response();
    }
    let Some(stream) = node.streams.get(&container) else {
        return (StatusCode::NOT_FOUND, format!("container {container} is not in pod {namespace}/{pod}\n"))
            .into_response();
    };
    let timestamps = flag(&options.timestamps);
    let start = options.since_seconds.map(|s| now_ms() - s * 1000);
    // What is there now (the newest `tailLines`, or all of it), oldest first.
    let mut lines: Vec<(i64, String)> = Vec::new();
    let mut token = None;
    loop {
        let query =
            EventQuery { start_time: start, start_from_head: true, next_token: token.clone(), ..Default::default() };
        match state.logs.get_log_events(&node.group, stream, &query) {
            Ok(page) => {
                if page.events.is_empty() {
                    break;
                }
                lines.extend(page.events.iter().map(|e| (e.timestamp, e.message.clone())));
                token = Some(page.next_forward_token);
            }
            // No output yet: the stream is made with the container's first line.
            Err(_) => break,
        }
    }
    if let Some(tail) = options.tail_lines {
        let keep = usize::try_from(tail.max(0)).unwrap_or(0);
        lines.drain(..lines.len().saturating_sub(keep));
    }
    let mut text: String = lines.iter().map(|(t, m)| line(m, *t, timestamps)).collect();
    if let Some(limit) = options.limit_bytes {
        text.truncate(limit);
    }
    if !flag(&options.follow) {
        return text.into_response();
    }
    let logs = state.logs.clone();
    let (group, stream) = (node.group.clone(), stream.clone());
    let from = logs.end_position(&group, &stream).ok();
    let head = futures::stream::once(async move { Ok::<_, std::io::Error>(text) });
    let rest = futures::stream::unfold((logs, group, stream, from), move |(logs, group, stream, from)| async move {
        let mut from = from;
        loop {
            if let Some(position) = from {
                let mut follow = logs.follow(&group, &stream, position);
                let events = follow.next(1000).await.ok()?;
                let next = follow.position();
                let text: String = events.iter().map(|e| line(&e.message, e.timestamp, timestamps)).collect();
                return Some((Ok(text), (logs, group, stream, Some(next))));
            }
            // The stream does not exist yet: wait for it.
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            from = logs.end_position(&group, &stream).ok().map(|_| flotilla_logs::Position::START);
        }
    });
    Response::new(Body::from_stream(futures::StreamExt::chain(head, rest)))
}
