//! The load balancer data plane: every load balancer of an [`LbSnapshot`] made real on this
//! host. Application load balancers proxy HTTP/1.1 and HTTP/2 (HTTPS listeners) and evaluate
//! their rules; network load balancers forward TCP connections (TLS terminated). Each target
//! group health-checks its targets with its own settings; targets leave rotation when
//! unhealthy or draining, and verdicts go back to the control plane as [`TargetReport`]s.
//!
//! The plane serves on threads of its own, a current-thread runtime per core (`workers`):
//! connections stay on the worker that accepted them, the request path shares nothing between
//! threads.
//!
//! Sockets come from [`Sockets`], so the agent decides which network namespace a listener or
//! an upstream connection lives in; this crate knows no namespaces, no store and no AWS wire.
//!
//! [`Plane::apply`] runs after every change of the configuration, so it is cheap and
//! idempotent: a socket stays open while some listener wants its address (its connections
//! keep going), a listener's routing is swapped whole, and targets that stay keep their
//! verdicts, counters, health checks and keep-alive connections.

mod alb;
mod groups;
mod h1;
mod health;
mod listeners;
mod nlb;
mod rules;
mod tls;
mod upstream;
mod workers;

use std::future::Future;
use std::hash::RandomState;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flotilla_host::lb::{LbSnapshot, TargetReport};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::groups::Groups;
use crate::listeners::Listeners;
use crate::workers::Workers;

/// TLS to a target without verifying its certificate (the agent's HTTPS pod probes too).
pub use crate::upstream::tls_connect;

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
    /// A bound, listening, non-blocking socket at `addr`, made by [`listener`] (in the right
    /// place): the plane asks for one per worker thread on the same address.
    fn listen(&self, addr: SocketAddr, place: Place) -> io::Result<std::net::TcpListener>;
    /// A connection to a target (or to a health-check port).
    fn connect(&self, addr: SocketAddrV4) -> BoxFuture<'static, io::Result<TcpStream>>;
}

/// A listening, non-blocking socket at `addr` that other sockets of this user may listen on
/// too (`SO_REUSEPORT`; the kernel spreads connections across them), so each worker thread
/// of the plane accepts its own; bound in the caller's network namespace. An address taken
/// by a socket without `SO_REUSEPORT` is refused as usual. `SO_REUSEADDR` too, so a
/// restarted server binds again over old connections still in `TIME_WAIT`.
pub fn listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A listener that could not be made real (its port is taken, its certificate unusable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerProblem {
    pub listener_arn: String,
    pub problem: String,
}

/// What every part of the plane shares.
pub(crate) struct Shared {
    pub sockets: Arc<dyn Sockets>,
    pub reports: mpsc::UnboundedSender<TargetReport>,
    /// Keys the opaque stickiness cookies.
    pub cookie_key: RandomState,
    pub epoch: Instant,
}

struct State {
    groups: Groups,
    listeners: Listeners,
    /// Reports wait here until the first `apply` (inside the runtime) starts their batching.
    unbatched: Option<(mpsc::UnboundedReceiver<TargetReport>, mpsc::Sender<Vec<TargetReport>>)>,
}

/// The running data plane.
pub struct Plane {
    shared: Arc<Shared>,
    host_address: Option<std::net::IpAddr>,
    state: Mutex<State>,
    /// Declared last: dropped after the listeners are closed.
    workers: Workers,
}

impl Plane {
    /// A plane with nothing to serve yet, its worker threads started. `host_address`: where
    /// internet-facing load balancers listen on the host (`None`: nowhere). Target reports
    /// arrive on the receiver, batched.
    pub fn new(
        sockets: Arc<dyn Sockets>,
        host_address: Option<std::net::IpAddr>,
    ) -> io::Result<(Plane, mpsc::Receiver<Vec<TargetReport>>)> {
        let (batches, rx) = mpsc::channel(64);
        let (reports, unbatched) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { sockets, reports, cookie_key: RandomState::new(), epoch: Instant::now() });
        let state =
            State { groups: Groups::default(), listeners: Listeners::default(), unbatched: Some((unbatched, batches)) };
        let workers = Workers::start()?;
        Ok((Plane { shared, host_address, state: Mutex::new(state), workers }, rx))
    }

    /// Makes `snapshot` real: listeners opened, changed and closed, routing and health checks
    /// replaced (connections in flight keep going). Returns what could not be done.
    pub async fn apply(&self, snapshot: &LbSnapshot) -> Vec<ListenerProblem> {
        let mut state = self.state.lock().unwrap();
        if let Some((from, to)) = state.unbatched.take() {
            tokio::spawn(groups::batch_reports(from, to));
        }
        let State { groups, listeners, .. } = &mut *state;
        groups.update(&snapshot.target_groups, &self.shared);
        listeners.update(snapshot, groups, self.host_address, &self.shared, self.workers.handles())
    }

    /// Closes every listener and stops every health check.
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().unwrap();
        state.listeners.close();
        state.groups.close();
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap();
        state.listeners.close();
        state.groups.close();
    }
}
