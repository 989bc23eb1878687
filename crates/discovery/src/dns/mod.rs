//! The VPC resolver: a DNS server that answers for the namespaces of one VPC per listening
//! address and relays every other question to the host's resolvers.
//!
//! A namespace is private to its VPC, so the server is told, for each address it listens on,
//! which VPC asks there ([`DnsServer::bind_vpc`]); a question that arrives on VPC A's address
//! never sees VPC B's namespaces. The zones are a cache of the store, rebuilt whenever anything
//! under `servicediscovery/` changes, so a registration is answered as soon as it commits.
//!
//! Names that other parts of Flotilla own (a load balancer's `DNSName`) are handed to the
//! server whole, per VPC ([`DnsServer::set_names`]), and answered before the namespaces.
//!
//! The server loop is ours (UDP and TCP over tokio); `hickory-proto` only encodes and decodes
//! messages, which keeps the dependency small.

mod forward;
mod zones;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use flotilla_store::{Store, StoreError};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use forward::Upstreams;
use zones::{MAX_UDP_PAYLOAD, Zones};

use crate::record::{INSTANCES, NAMESPACES, PREFIX, SERVICES};

/// Questions handled at once per listener; more are dropped and the client retries.
const MAX_IN_FLIGHT: usize = 256;
/// TCP connections served at once per listener.
const MAX_TCP_CONNECTIONS: usize = 64;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The TTL of a [`DnsServer::set_names`] answer (ELB's own: its addresses can change).
const NAME_TTL: u32 = 60;

/// Names with their IPv4 addresses (lowercase, without the trailing dot), by the VPC that may
/// resolve them.
pub type VpcNames = HashMap<String, HashMap<String, Vec<Ipv4Addr>>>;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{addr} already serves DNS for {vpc}")]
    AlreadyBound { addr: SocketAddr, vpc: String },
}

enum Transport {
    Udp,
    Tcp,
}

struct Shared {
    zones: RwLock<Arc<Zones>>,
    names: RwLock<Arc<VpcNames>>,
    upstreams: Upstreams,
    /// Our own addresses, never used as upstreams (that would loop).
    bound: RwLock<Vec<SocketAddr>>,
}

struct Listener {
    vpc: String,
    tasks: [JoinHandle<()>; 2],
}

/// The DNS server for every VPC of this host. Dropping it stops all its listeners.
pub struct DnsServer {
    shared: Arc<Shared>,
    listeners: Mutex<HashMap<SocketAddr, Listener>>,
    refresher: JoinHandle<()>,
}

impl DnsServer {
    /// Loads the zones from `store` and keeps them current; listens nowhere until
    /// [`DnsServer::bind_vpc`].
    pub async fn start(store: Arc<dyn Store>, upstreams: Upstreams) -> Result<DnsServer, crate::DiscoveryError> {
        // Watch first, then load: no change can fall between the two.
        let watch = store.watch(PREFIX);
        let zones = Zones::load(store.as_ref()).await?;
        let shared = Arc::new(Shared {
            zones: RwLock::new(Arc::new(zones)),
            names: RwLock::default(),
            upstreams,
            bound: RwLock::default(),
        });
        let refresher = tokio::spawn(refresh(store, shared.clone(), watch));
        Ok(DnsServer { shared, listeners: Mutex::new(HashMap::new()), refresher })
    }

    /// Answers, on `addr` (UDP and TCP), for the namespaces of `vpc_id`. Port 0 picks a free
    /// port, the same for both transports; returns the address bound.
    pub async fn bind_vpc(&self, vpc_id: &str, addr: SocketAddr) -> Result<SocketAddr, DnsError> {
        if let Some(l) = self.listeners.lock().expect("listeners lock").get(&addr) {
            return Err(DnsError::AlreadyBound { addr, vpc: l.vpc.clone() });
        }
        let (udp, tcp) = bind_pair(addr).await?;
        self.serve(vpc_id, addr, udp, tcp)
    }

    /// Like [`DnsServer::bind_vpc`], on sockets the caller bound: the host's data plane may
    /// live in another network namespace, where only the caller can open them. Both must be
    /// non-blocking (tokio's requirement) and bound to the same address.
    pub fn serve_vpc(
        &self,
        vpc_id: &str,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
    ) -> Result<SocketAddr, DnsError> {
        let addr = udp.local_addr().map_err(|source| DnsError::Bind { addr: ([0, 0, 0, 0], 0).into(), source })?;
        if let Some(l) = self.listeners.lock().expect("listeners lock").get(&addr) {
            return Err(DnsError::AlreadyBound { addr, vpc: l.vpc.clone() });
        }
        let bind = |source| DnsError::Bind { addr, source };
        udp.set_nonblocking(true).map_err(bind)?;
        tcp.set_nonblocking(true).map_err(bind)?;
        let udp = UdpSocket::from_std(udp).map_err(bind)?;
        let tcp = TcpListener::from_std(tcp).map_err(bind)?;
        self.serve(vpc_id, addr, udp, tcp)
    }

    fn serve(&self, vpc_id: &str, addr: SocketAddr, udp: UdpSocket, tcp: TcpListener) -> Result<SocketAddr, DnsError> {
        let local = udp.local_addr().map_err(|source| DnsError::Bind { addr, source })?;
        let vpc: Arc<str> = vpc_id.into();
        let tasks = [
            tokio::spawn(serve_udp(self.shared.clone(), vpc.clone(), Arc::new(udp))),
            tokio::spawn(serve_tcp(self.shared.clone(), vpc, tcp)),
        ];
        let mut listeners = self.listeners.lock().expect("listeners lock");
        if let Some(l) = listeners.get(&local) {
            tasks.iter().for_each(JoinHandle::abort);
            return Err(DnsError::AlreadyBound { addr: local, vpc: l.vpc.clone() });
        }
        listeners.insert(local, Listener { vpc: vpc_id.to_owned(), tasks });
        self.shared.bound.write().expect("bound lock").push(local);
        tracing::debug!(%local, vpc = vpc_id, "serving VPC DNS");
        Ok(local)
    }

    /// Replaces the names answered outside Cloud Map's namespaces (load balancers' `DNSName`s):
    /// each VPC's resolver answers its own with A records, and nothing else for them.
    pub fn set_names(&self, names: VpcNames) {
        let names = names
            .into_iter()
            .map(|(vpc, names)| {
                let names = names.into_iter().map(|(n, ips)| (n.trim_end_matches('.').to_ascii_lowercase(), ips));
                (vpc, names.collect())
            })
            .collect();
        *self.shared.names.write().expect("names lock") = Arc::new(names);
    }

    /// Stops listening on `addr`; false if nothing listened there.
    pub fn unbind(&self, addr: SocketAddr) -> bool {
        let Some(listener) = self.listeners.lock().expect("listeners lock").remove(&addr) else { return false };
        listener.tasks.iter().for_each(JoinHandle::abort);
        self.shared.bound.write().expect("bound lock").retain(|a| *a != addr);
        true
    }

    /// Every address served, with its VPC.
    pub fn bindings(&self) -> Vec<(SocketAddr, String)> {
        self.listeners.lock().expect("listeners lock").iter().map(|(a, l)| (*a, l.vpc.clone())).collect()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.refresher.abort();
        for listener in self.listeners.lock().expect("listeners lock").values() {
            listener.tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut last = None;
    // With port 0 the UDP port may be taken for TCP; try a few.
    for _ in 0..if addr.port() == 0 { 10 } else { 1 } {
        let udp = UdpSocket::bind(addr).await.map_err(|source| DnsError::Bind { addr, source })?;
        let local = udp.local_addr().map_err(|source| DnsError::Bind { addr, source })?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(DnsError::Bind { addr, source: last.expect("tried at least once") })
}

/// Rebuilds the zones whenever the store changes under `servicediscovery/`.
async fn refresh(store: Arc<dyn Store>, shared: Arc<Shared>, mut watch: flotilla_store::Watch) {
    let relevant = |key: &str| [NAMESPACES, SERVICES, INSTANCES].iter().any(|p| key.starts_with(p));
    let mut dirty = false;
    loop {
        if !dirty {
            match watch.next().await {
                Ok(event) => dirty = relevant(event.key()),
                Err(StoreError::WatchLagged { .. }) => {
                    watch = store.watch(PREFIX);
                    dirty = true;
                }
                Err(_) => return,
            }
            continue;
        }
        // Take every change already waiting, then rebuild once.
        loop {
            match tokio::time::timeout(Duration::ZERO, watch.next()).await {
                Err(_) => break,
                Ok(Ok(_)) => {}
                Ok(Err(StoreError::WatchLagged { .. })) => {
                    watch = store.watch(PREFIX);
                    break;
                }
                Ok(Err(_)) => return,
            }
        }
        match Zones::load(store.as_ref()).await {
            Ok(zones) => {
                *shared.zones.write().expect("zones lock") = Arc::new(zones);
                dirty = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload service discovery zones; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn serve_udp(shared: Arc<Shared>, vpc: Arc<str>, socket: Arc<UdpSocket>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else { continue };
        let query = buf[..n].to_vec();
        let (shared, vpc, socket) = (shared.clone(), vpc.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(answer) = shared.handle(&vpc, &query, Transport::Udp).await {
                let _ = socket.send_to(&answer, peer).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(shared: Arc<Shared>, vpc: Arc<str>, listener: TcpListener) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else { continue };
        let (shared, vpc) = (shared.clone(), vpc.clone());
        tokio::spawn(async move {
            let _ = serve_connection(&shared, &vpc, stream).await;
            drop(permit);
        });
    }
}

async fn serve_connection(shared: &Shared, vpc: &str, mut stream: TcpStream) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else { return Ok(()) };
        let mut query = vec![0u8; len? as usize];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await.map_err(std::io::Error::other)??;
        let Some(answer) = shared.handle(vpc, &query, Transport::Tcp).await else { return Ok(()) };
        let Ok(len) = u16::try_from(answer.len()) else { return Ok(()) };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&answer);
        stream.write_all(&framed).await?;
    }
}

impl Shared {
    /// The bytes to send back for `query`, or `None` to stay silent.
    async fn handle(&self, vpc: &str, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            // Unreadable: FORMERR if there is at least a header to answer to.
            Err(_) if query.len() >= 12 => return error_reply(query, ResponseCode::FormErr),
            Err(_) => return None,
        };
        if request.message_type != MessageType::Query {
            return None;
        }
        if request.op_code != OpCode::Query {
            return error_reply(query, ResponseCode::NotImp);
        }
        if request.queries.len() != 1 {
            return error_reply(query, ResponseCode::FormErr);
        }
        let names = self.names.read().expect("names lock").clone();
        if let Some(response) = answer_name(&names, vpc, &request) {
            return response.to_vec().ok();
        }
        let zones = self.zones.read().expect("zones lock").clone();
        if let Some(response) = zones.answer(vpc, &request) {
            let bytes = response.to_vec().ok()?;
            let limit = request.max_payload().min(MAX_UDP_PAYLOAD.max(512)) as usize;
            if matches!(transport, Transport::Udp) && bytes.len() > limit {
                return response.truncate().to_vec().ok();
            }
            return Some(bytes);
        }
        let bound = self.bound.read().expect("bound lock").clone();
        let skip = |s: SocketAddr| bound.contains(&s);
        let relayed = match transport {
            Transport::Udp => self.upstreams.udp(query, skip).await,
            Transport::Tcp => self.upstreams.tcp(query, skip).await,
        };
        relayed.or_else(|| error_reply(query, ResponseCode::ServFail))
    }
}

/// The answer for a name given to [`DnsServer::set_names`], or `None` when it is not one of
/// `vpc`'s.
fn answer_name(names: &VpcNames, vpc: &str, request: &Message) -> Option<Message> {
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
    let query = request.queries.first()?;
    if query.query_class() != DNSClass::IN {
        return None;
    }
    let qname = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let ips = names.get(vpc)?.get(&qname)?;
    let mut response = Message::response(request.id, request.op_code);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(query.clone());
    if matches!(query.query_type(), RecordType::A | RecordType::ANY) {
        for ip in ips {
            response.add_answer(Record::from_rdata(query.name().clone(), NAME_TTL, RData::A(A(*ip))));
        }
    }
    Some(response)
}

/// A reply with only the header (id, opcode, RD copied) and the question, and `code`.
fn error_reply(query: &[u8], code: ResponseCode) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    let op_code = OpCode::from_u8((query.get(2)? >> 3) & 0x0f);
    let mut reply = Message::error_msg(id, op_code, code);
    reply.metadata.recursion_desired = query[2] & 1 == 1;
    reply.metadata.recursion_available = true;
    if let Ok(request) = Message::from_vec(query) {
        reply.add_queries(request.queries);
    }
    reply.to_vec().ok()
}
