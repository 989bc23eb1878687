//! Connections to targets: keep-alive connections per target, made by
//! [`Sockets::connect`](crate::Sockets::connect), so they start where the targets are
//! reachable.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::{Sockets, tls};

/// How long an unused upstream connection is kept: below the usual keep-alive of servers
/// (nginx 75 s), so the plane closes it before the target does.
const POOL_IDLE: Duration = Duration::from_secs(55);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keep-alive connections to one target: idle ones wait here between requests. Dropped with
/// the target, which closes them. Leaner than a general client (no per-request URI keying or
/// retries): the plane knows which target each request goes to.
pub(crate) struct Upstream {
    sockets: Arc<dyn Sockets>,
    addr: SocketAddrV4,
    tls: bool,
    /// Most recently used last (taken first, so the oldest age out at the front).
    idle: Mutex<VecDeque<(SendRequest<Incoming>, Instant)>>,
}

/// A connection lent to one request; back to the pool when its response has been read whole.
pub(crate) struct Lease {
    sender: SendRequest<Incoming>,
    pool: Arc<Upstream>,
}

impl Lease {
    pub fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap();
        // Connections unused for too long are closed here, so a pool that grew in a burst
        // shrinks again.
        while idle.front().is_some_and(|(sender, since)| sender.is_closed() || since.elapsed() > POOL_IDLE) {
            idle.pop_front();
        }
        idle.push_back((self.sender, Instant::now()));
    }
}

/// Why a request got no response from its target.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect")]
    Connect(#[source] io::Error),
    #[error("the request failed")]
    Request(#[source] hyper::Error),
}

impl Upstream {
    pub fn new(sockets: Arc<dyn Sockets>, addr: SocketAddrV4, tls: bool) -> Arc<Upstream> {
        Arc::new(Upstream { sockets, addr, tls, idle: Mutex::new(VecDeque::new()) })
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection or a new one.
    pub async fn send(self: &Arc<Self>, req: Request<Incoming>) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let mut sender = match self.take_idle().await {
            Some(sender) => sender,
            None => self.open().await?,
        };
        let response = sender.send_request(req).await.map_err(UpstreamError::Request)?;
        Ok((response, Lease { sender, pool: self.clone() }))
    }

    async fn take_idle(&self) -> Option<SendRequest<Incoming>> {
        loop {
            let (mut sender, since) = self.idle.lock().unwrap().pop_back()?;
            if sender.is_closed() || since.elapsed() > POOL_IDLE {
                continue;
            }
            // Ready at once unless the connection is still finishing its last response.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn open(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
        let stream = connect(self.sockets.as_ref(), self.addr).await.map_err(UpstreamError::Connect)?;
        let stream = if self.tls {
            TargetStream::Tls(Box::new(tls_connect(stream, self.addr).await.map_err(UpstreamError::Connect)?))
        } else {
            TargetStream::Plain(stream)
        };
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(UpstreamError::Request)?;
        tokio::spawn(connection.with_upgrades());
        Ok(sender)
    }
}

/// TLS to a target, as ELB does it: the target's certificate is not verified.
pub(crate) async fn tls_connect(stream: TcpStream, addr: SocketAddrV4) -> io::Result<TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(tls::insecure_client());
    connector.connect(ServerName::IpAddress((*addr.ip()).into()), stream).await
}

/// A connection to a target, plain or TLS.
pub(crate) enum TargetStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for TargetStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            TargetStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TargetStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            TargetStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            TargetStream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TargetStream::Plain(s) => s.is_write_vectored(),
            TargetStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            TargetStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            TargetStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A connection to `addr` with Nagle off (requests and responses are written whole).
pub(crate) fn connect(
    sockets: &dyn Sockets,
    addr: SocketAddrV4,
) -> impl Future<Output = io::Result<TcpStream>> + Send + 'static {
    let connecting = sockets.connect(addr);
    async move {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
