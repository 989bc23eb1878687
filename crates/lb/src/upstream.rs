//! Connections to targets: a keep-alive client per target whose connections come from
//! [`Sockets::connect`](crate::Sockets::connect), so they start where the targets are
//! reachable.

use std::future::Future;
use std::io;
use std::net::SocketAddrV4;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::{Sockets, tls};

/// How long an unused upstream connection is kept: below the usual keep-alive of servers
/// (nginx 75 s), so the plane closes it before the target does.
const POOL_IDLE: Duration = Duration::from_secs(55);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to one target whatever the URI says (the URI only names it for the pool), over
/// TLS for HTTPS target groups.
#[derive(Clone)]
pub(crate) struct TargetConnector {
    sockets: Arc<dyn Sockets>,
    addr: SocketAddrV4,
    tls: bool,
}

impl tower_service::Service<Uri> for TargetConnector {
    type Response = TokioIo<TargetStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TargetStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (connect, addr, tls) = (connect(self.sockets.as_ref(), self.addr), self.addr, self.tls);
        Box::pin(async move {
            let stream = connect.await?;
            Ok(TokioIo::new(if tls {
                TargetStream::Tls(Box::new(tls_connect(stream, addr).await?))
            } else {
                TargetStream::Plain(stream)
            }))
        })
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

impl Connection for TargetStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
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

pub(crate) fn client(sockets: Arc<dyn Sockets>, addr: SocketAddrV4, tls: bool) -> Client<TargetConnector, Incoming> {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(usize::MAX)
        .build(TargetConnector { sockets, addr, tls })
}
