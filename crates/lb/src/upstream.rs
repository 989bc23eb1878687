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

use http::HeaderName;
use hyper::body::Incoming;
use hyper::{Request, Response};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::h1::{self, Connection, Outgoing, TargetBody};
use crate::workers::PerWorker;
use crate::{Sockets, tls};

/// How long an unused upstream connection is kept: below the usual keep-alive of servers
/// (nginx 75 s), so the plane closes it before the target does.
const POOL_IDLE: Duration = Duration::from_secs(55);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keep-alive connections to one target: idle ones wait here between requests. Dropped with
/// the target, which closes them. Leaner than a general client (no per-request URI keying):
/// the plane knows which target each request goes to.
pub(crate) struct Upstream {
    sockets: Arc<dyn Sockets>,
    addr: SocketAddrV4,
    tls: bool,
    /// Most recently used last (taken first, so the oldest age out at the front). Per worker:
    /// a connection belongs to the runtime of the worker that made it.
    idle: PerWorker<Mutex<VecDeque<(Connection, Instant)>>>,
}

/// Why a request got no response from its target.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect")]
    Connect(#[source] io::Error),
    #[error("the request failed")]
    Request(#[source] io::Error),
}

impl Upstream {
    pub fn new(sockets: Arc<dyn Sockets>, addr: SocketAddrV4, tls: bool) -> Arc<Upstream> {
        Arc::new(Upstream { sockets, addr, tls, idle: PerWorker::new(|| Mutex::new(VecDeque::new())) })
    }

    /// Sends `req` (`Host` set; written in origin form) on an idle connection or a new one, in
    /// the caller's task, without the headers named in `drop` and with the lines `add`; the
    /// response body reads the connection as it is polled.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Incoming>,
        drop: &[HeaderName],
        add: &[u8],
    ) -> Result<Response<TargetBody>, UpstreamError> {
        let (parts, mut body) = req.into_parts();
        let request = Outgoing::new(&parts, &body, drop, add);
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.open().await?, false),
            };
            match h1::exchange(&mut conn, &request, &mut body).await {
                Ok((mut parts, framing)) => {
                    let body = TargetBody::new(conn, &mut parts, framing, self.clone());
                    return Ok(Response::from_parts(parts, body));
                }
                // A kept-alive connection the target closed as it was taken: the request did
                // not get there, so it goes again (on the next idle connection or a new one),
                // as long as it had no body to lose and sending it twice would do no harm.
                Err(error)
                    if reused
                        && request.bodyless
                        && request.idempotent
                        && matches!(
                            error.kind(),
                            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        ) => {}
                Err(error) => return Err(UpstreamError::Request(error)),
            }
        }
    }

    /// A connection back from a response read whole.
    pub(crate) fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.local().lock().unwrap();
        // Connections unused for too long are closed here, so a pool that grew in a burst
        // shrinks again.
        while idle.front().is_some_and(|(_, since)| since.elapsed() > POOL_IDLE) {
            idle.pop_front();
        }
        idle.push_back((conn, Instant::now()));
    }

    fn take_idle(&self) -> Option<Connection> {
        loop {
            let (mut conn, since) = self.idle.local().lock().unwrap().pop_back()?;
            if since.elapsed() <= POOL_IDLE && conn.is_open() {
                return Some(conn);
            }
        }
    }

    async fn open(&self) -> Result<Connection, UpstreamError> {
        let stream = connect(self.sockets.as_ref(), self.addr).await.map_err(UpstreamError::Connect)?;
        let stream = if self.tls {
            TargetStream::Tls(Box::new(tls_connect(stream, self.addr).await.map_err(UpstreamError::Connect)?))
        } else {
            TargetStream::Plain(stream)
        };
        Ok(Connection::new(stream))
    }
}

/// TLS to a target, as ELB does it: the target's certificate is not verified.
pub async fn tls_connect(stream: TcpStream, addr: SocketAddrV4) -> io::Result<TlsStream<TcpStream>> {
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
