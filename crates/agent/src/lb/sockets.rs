//! The load balancers' sockets: listeners on the host's load-balancer address (the server's own
//! network namespace) or on a load balancer's private address in the task network, and
//! upstream connections made inside the task network (targets are only reachable there), from
//! the load balancer's own address when it has one in the target's VPC, so a target's group
//! can admit "the load balancer's group".
//!
//! A socket belongs to the namespace of the thread that creates it. Upstream connections are
//! on the hot path of every proxied connection, so one long-lived thread sits in the task
//! network and keeps a small stock of fresh sockets: a connection takes one without crossing
//! threads (a thread entering the namespace per connection costs tens of microseconds), and
//! the thread tops the stock up behind it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};

use flotilla_lb::{BoxFuture, Place, Sockets};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// Fresh sockets kept ready; refilled when it falls to half.
const STOCK: usize = 64;

/// [`Sockets`] for the agent's load balancers.
pub struct LbSockets {
    maker: Arc<SocketMaker>,
    /// Target address -> the load balancer address connections to it come from.
    sources: RwLock<HashMap<Ipv4Addr, Ipv4Addr>>,
}

impl LbSockets {
    /// `vpc_netns`: the task network's namespace (`None`: this process's own).
    pub fn new(vpc_netns: Option<File>) -> io::Result<LbSockets> {
        Ok(LbSockets { maker: SocketMaker::start(vpc_netns)?, sources: RwLock::default() })
    }

    /// Replaces which load balancer address connections to each target come from.
    pub fn set_sources(&self, sources: HashMap<Ipv4Addr, Ipv4Addr>) {
        *self.sources.write().expect("sources lock") = sources;
    }

    fn source_for(&self, target: &Ipv4Addr) -> Option<Ipv4Addr> {
        self.sources.read().expect("sources lock").get(target).copied()
    }

    /// A fresh TCP socket in the task network.
    pub async fn socket(&self) -> io::Result<Socket> {
        self.maker.take().await
    }
}

impl Sockets for LbSockets {
    fn listen(&self, addr: SocketAddr, place: Place) -> io::Result<std::net::TcpListener> {
        let bind = move || flotilla_lb::listener(addr);
        match (place, &self.maker.netns) {
            (Place::Vpc, Some(netns)) => flotilla_net::netns::run_in_file(netns, bind)?,
            _ => bind(),
        }
    }

    fn connect(&self, addr: SocketAddrV4) -> BoxFuture<'static, io::Result<TcpStream>> {
        let source = self.source_for(addr.ip());
        let maker = self.maker.clone();
        Box::pin(async move {
            let socket = maker.take().await?;
            if let Some(source) = source {
                // The port is chosen at connect time, per destination, so many upstream
                // connections share one source address without running out of ports.
                set_bind_address_no_port(&socket);
                // The address may be gone already (the load balancer being deleted): the
                // connection then comes from the host's own address in the VPC.
                if let Err(e) = socket.bind(&SocketAddr::from((source, 0)).into()) {
                    tracing::debug!(%source, error = %e, "cannot connect from the load balancer's address");
                }
            }
            let stream = TcpSocket::from_std_stream(socket.into());
            let stream = stream.connect(SocketAddr::V4(addr)).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

fn set_bind_address_no_port(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn new_socket() -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    Ok(socket)
}

enum Request {
    /// Top the stock up.
    Refill,
    /// One socket now (the stock ran out).
    One(oneshot::Sender<io::Result<Socket>>),
}

/// The thread that makes sockets inside the task network, and its stock.
struct SocketMaker {
    netns: Option<File>,
    stock: Arc<Mutex<Vec<Socket>>>,
    requests: Option<Mutex<std_mpsc::Sender<Request>>>,
}

impl SocketMaker {
    fn start(netns: Option<File>) -> io::Result<Arc<SocketMaker>> {
        let stock = Arc::new(Mutex::new(Vec::with_capacity(STOCK)));
        let Some(ns) = &netns else {
            // Our own namespace: any thread makes them, no stock needed.
            return Ok(Arc::new(SocketMaker { netns, stock, requests: None }));
        };
        let ns = ns.try_clone()?;
        let (tx, rx) = std_mpsc::channel::<Request>();
        let thread_stock = stock.clone();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        std::thread::Builder::new().name("lb-sockets".into()).spawn(move || {
            if let Err(e) = flotilla_net::netns::enter(&ns) {
                let _ = ready_tx.send(Err(e));
                return;
            }
            fill(&thread_stock);
            let _ = ready_tx.send(Ok(()));
            // Ends when the last sender (the `SocketMaker`) is dropped.
            while let Ok(request) = rx.recv() {
                match request {
                    Request::Refill => fill(&thread_stock),
                    Request::One(reply) => {
                        let _ = reply.send(new_socket());
                        fill(&thread_stock);
                    }
                }
            }
        })?;
        ready_rx.recv().map_err(|_| io::Error::other("the socket thread ended"))??;
        Ok(Arc::new(SocketMaker { netns, stock, requests: Some(Mutex::new(tx)) }))
    }

    async fn take(&self) -> io::Result<Socket> {
        let Some(requests) = &self.requests else { return new_socket() };
        let (taken, left) = {
            let mut stock = self.stock.lock().expect("socket stock lock");
            (stock.pop(), stock.len())
        };
        let send = |r| requests.lock().expect("socket request lock").send(r).map_err(|_| gone());
        match taken {
            Some(socket) => {
                if left == STOCK / 2 {
                    send(Request::Refill)?;
                }
                Ok(socket)
            }
            None => {
                let (tx, rx) = oneshot::channel();
                send(Request::One(tx))?;
                rx.await.map_err(|_| gone())?
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the load balancer socket thread has ended")
}

fn fill(stock: &Mutex<Vec<Socket>>) {
    let missing = STOCK.saturating_sub(stock.lock().expect("socket stock lock").len());
    let mut made = Vec::with_capacity(missing);
    for _ in 0..missing {
        match new_socket() {
            Ok(s) => made.push(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make sockets in the task network");
                break;
            }
        }
    }
    stock.lock().expect("socket stock lock").extend(made);
}
