//! Listening sockets and their routing: for each address a listener wants, one socket per
//! worker (`SO_REUSEPORT`), kept across snapshots while some listener still wants the address;
//! the routing they serve with is swapped whole (each worker has its own copy).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use flotilla_host::lb::{
    ActionSpec, CertificatePem, LbKind, LbScheme, LbSnapshot, ListenerProtocol, ListenerSpec, RedirectSpec,
    RuleCondition,
};
use http::{HeaderValue, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::groups::{Group, Groups};
use crate::workers::PerWorker;
use crate::{ListenerProblem, Place, Shared, alb, nlb, tls};

/// A listener's behaviour, as one connection or request sees it.
#[derive(Clone)]
pub(crate) struct Route {
    pub protocol: ListenerProtocol,
    pub port: u16,
    /// `X-Forwarded-Port`.
    pub port_header: HeaderValue,
    pub tls: Option<TlsAcceptor>,
    /// Lowest priority number first.
    pub rules: Vec<Rule>,
    pub default_action: Action,
    /// How long a target may take to answer (ELB's idle timeout): then 504.
    pub idle_timeout: Duration,
}

#[derive(Clone)]
pub(crate) struct Rule {
    pub conditions: Vec<RuleCondition>,
    pub action: Action,
}

#[derive(Clone)]
pub(crate) enum Action {
    Forward(Forward),
    Redirect(RedirectSpec),
    FixedResponse { status: StatusCode, content_type: HeaderValue, body: Bytes },
}

#[derive(Clone)]
pub(crate) struct Forward {
    /// Groups of the snapshot only (a forward to an unknown group leaves it out) with their
    /// weights.
    pub groups: Vec<(Arc<Group>, u32)>,
    pub total_weight: u32,
    /// Group stickiness (`AWSALBTG`) lifetime.
    pub stickiness: Option<u32>,
}

impl Forward {
    /// A group by weight, unless `sticky` (an `AWSALBTG` value) names one of them still
    /// weighted. Also whether the choice is new (so the cookie is to be set).
    pub fn choose(&self, sticky: Option<&str>) -> Option<(&Arc<Group>, bool)> {
        if self.groups.len() == 1 {
            return Some((&self.groups[0].0, false));
        }
        if let Some(value) = sticky.filter(|_| self.stickiness.is_some())
            && let Some((group, _)) = self.groups.iter().find(|(g, w)| *w > 0 && g.cookie == value)
        {
            return Some((group, false));
        }
        if self.total_weight == 0 {
            return self.groups.first().map(|(g, _)| (g, self.stickiness.is_some()));
        }
        let mut roll = rand::random_range(0..self.total_weight);
        for (group, weight) in &self.groups {
            if roll < *weight {
                return Some((group, self.stickiness.is_some()));
            }
            roll -= weight;
        }
        None
    }
}

/// The routing of one address, a copy per worker: a request reads its own worker's, so no
/// reference count or lock is shared between workers.
pub(crate) type Routes = PerWorker<RwLock<Arc<Route>>>;

/// One address listened on (a socket per worker).
struct Running {
    routes: Arc<Routes>,
    /// Closes the sockets and every connection they accepted.
    stop: CancellationToken,
}

/// Built TLS configurations by listener, kept while its certificates stay the same (parsing
/// keys on every snapshot would make `apply` slow).
struct TlsCache {
    certificates: Vec<CertificatePem>,
    acceptor: TlsAcceptor,
}

#[derive(Default)]
pub(crate) struct Listeners {
    running: HashMap<(Place, SocketAddr), Running>,
    tls: HashMap<String, TlsCache>,
}

impl Listeners {
    pub fn update(
        &mut self,
        snapshot: &LbSnapshot,
        groups: &Groups,
        host_address: Option<IpAddr>,
        shared: &Arc<Shared>,
        workers: &[Handle],
    ) -> Vec<ListenerProblem> {
        let mut problems = Vec::new();
        let mut wanted: HashMap<(Place, SocketAddr), (Arc<Route>, &str)> = HashMap::new();
        let mut tls_now = HashMap::new();
        for lb in &snapshot.load_balancers {
            let mut places: Vec<(Place, IpAddr)> =
                lb.addresses.iter().map(|a| (Place::Vpc, IpAddr::V4(a.private_ip))).collect();
            if lb.scheme == LbScheme::InternetFacing
                && let Some(host) = host_address
            {
                places.push((Place::Host, host));
            }
            let idle_timeout = Duration::from_secs(lb.idle_timeout_s.max(1).into());
            for listener in &lb.listeners {
                let route = match self.route(lb.kind, listener, idle_timeout, groups, &mut tls_now) {
                    Ok(route) => Arc::new(route),
                    Err(problem) => {
                        problems.push(ListenerProblem { listener_arn: listener.arn.clone(), problem });
                        continue;
                    }
                };
                let mut taken = HashSet::new();
                for &(place, ip) in &places {
                    let key = (place, SocketAddr::new(ip, listener.port));
                    if wanted.contains_key(&key) || !taken.insert(key) {
                        problems.push(ListenerProblem {
                            listener_arn: listener.arn.clone(),
                            problem: format!("{} is taken by another listener", key.1),
                        });
                        continue;
                    }
                    wanted.insert(key, (route.clone(), &listener.arn));
                }
            }
        }
        self.tls = tls_now;
        // Close first, so a port moving from one load balancer to another can be bound again.
        self.running.retain(|key, running| {
            let keep = wanted.contains_key(key);
            if !keep {
                running.stop.cancel();
            }
            keep
        });
        for (key @ (place, addr), (route, arn)) in wanted {
            if let Some(running) = self.running.get(&key) {
                for copy in running.routes.iter() {
                    *copy.write().unwrap() = Arc::new(Route::clone(&route));
                }
                continue;
            }
            match (0..workers.len()).map(|_| listen(shared, place, addr)).collect::<std::io::Result<Vec<_>>>() {
                Ok(sockets) => {
                    let routes = Arc::new(PerWorker::new(|| RwLock::new(Arc::new(Route::clone(&route)))));
                    let running = Running { routes, stop: CancellationToken::new() };
                    for (socket, worker) in sockets.into_iter().zip(workers) {
                        let (routes, stop, shared) = (running.routes.clone(), running.stop.clone(), shared.clone());
                        worker.spawn(async move {
                            // Registered with this worker's reactor: made inside its runtime.
                            match TcpListener::from_std(socket) {
                                Ok(socket) => accept(socket, routes, stop, shared).await,
                                Err(e) => tracing::warn!(error = %e, "cannot serve a load balancer socket"),
                            }
                        });
                    }
                    self.running.insert(key, running);
                }
                Err(e) => problems.push(ListenerProblem {
                    listener_arn: arn.to_string(),
                    problem: format!("cannot listen on {addr}: {e}"),
                }),
            }
        }
        problems
    }

    fn route(
        &self,
        kind: LbKind,
        spec: &ListenerSpec,
        idle_timeout: Duration,
        groups: &Groups,
        tls_now: &mut HashMap<String, TlsCache>,
    ) -> Result<Route, String> {
        let tls = match spec.protocol {
            ListenerProtocol::Http | ListenerProtocol::Tcp => None,
            ListenerProtocol::Https | ListenerProtocol::Tls => {
                let acceptor = match self.tls.get(&spec.arn) {
                    Some(cached) if cached.certificates == spec.certificates => cached.acceptor.clone(),
                    _ => {
                        let alpn: &[&[u8]] =
                            if spec.protocol == ListenerProtocol::Https { &[b"h2", b"http/1.1"] } else { &[] };
                        TlsAcceptor::from(tls::server_config(&spec.certificates, alpn)?)
                    }
                };
                tls_now.insert(
                    spec.arn.clone(),
                    TlsCache { certificates: spec.certificates.clone(), acceptor: acceptor.clone() },
                );
                Some(acceptor)
            }
        };
        let layer7 = matches!(spec.protocol, ListenerProtocol::Http | ListenerProtocol::Https);
        if layer7 != (kind == LbKind::Application) {
            return Err(format!("a {:?} listener on a {kind:?} load balancer", spec.protocol));
        }
        Ok(Route {
            protocol: spec.protocol,
            port: spec.port,
            port_header: HeaderValue::from(spec.port),
            tls,
            rules: spec
                .rules
                .iter()
                .map(|r| Rule { conditions: r.conditions.clone(), action: action(&r.action, groups) })
                .collect(),
            default_action: action(&spec.default_action, groups),
            idle_timeout,
        })
    }

    pub fn close(&mut self) {
        for running in self.running.values() {
            running.stop.cancel();
        }
        self.running.clear();
        self.tls.clear();
    }
}

fn action(spec: &ActionSpec, groups: &Groups) -> Action {
    match spec {
        ActionSpec::Forward { target_groups, stickiness_s } => {
            let groups: Vec<_> =
                target_groups.iter().filter_map(|w| Some((groups.get(&w.arn)?.clone(), w.weight))).collect();
            let total_weight = groups.iter().map(|(_, w)| w).sum();
            Action::Forward(Forward { groups, total_weight, stickiness: *stickiness_s })
        }
        ActionSpec::Redirect(spec) => Action::Redirect(spec.clone()),
        ActionSpec::FixedResponse { status, content_type, body } => Action::FixedResponse {
            status: StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            content_type: content_type
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok())
                .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8")),
            body: Bytes::from(body.clone().unwrap_or_default()),
        },
    }
}

fn listen(shared: &Shared, place: Place, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = shared.sockets.listen(addr, place)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// What a connection knows of where it came in.
pub(crate) struct Conn {
    pub routes: Arc<Routes>,
    pub peer: SocketAddr,
    /// The client's address as `X-Forwarded-For` names it, made once per connection.
    pub peer_ip: HeaderValue,
    pub stop: CancellationToken,
    pub shared: Arc<Shared>,
}

impl Conn {
    pub fn route(&self) -> Arc<Route> {
        self.routes.local().read().unwrap().clone()
    }
}

async fn accept(socket: TcpListener, routes: Arc<Routes>, stop: CancellationToken, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, usually: let connections finish before accepting more.
                tracing::warn!(error = %e, "load balancer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer_ip =
            HeaderValue::from_str(&peer.ip().to_canonical().to_string()).expect("an address is a valid header");
        let conn = Arc::new(Conn { routes: routes.clone(), peer, peer_ip, stop: stop.clone(), shared: shared.clone() });
        tokio::spawn(serve(stream, conn));
    }
}

async fn serve(stream: TcpStream, conn: Arc<Conn>) {
    let _ = stream.set_nodelay(true);
    let route = conn.route();
    let stop = conn.stop.clone();
    let serving = async move {
        match route.protocol {
            ListenerProtocol::Http | ListenerProtocol::Https => alb::serve(stream, conn, route.tls.clone()).await,
            ListenerProtocol::Tcp | ListenerProtocol::Tls => nlb::serve(stream, conn, route).await,
        }
    };
    tokio::select! {
        () = serving => {}
        () = stop.cancelled() => {}
    }
}
