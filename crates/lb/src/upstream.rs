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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::Sockets;

/// How long an unused upstream connection is kept: below the usual keep-alive of servers
/// (nginx 75 s), so the plane closes it before the target does.
const POOL_IDLE: Duration = Duration::from_secs(55);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to one target whatever the URI says (the URI only names it for the pool).
#[derive(Clone)]
pub(crate) struct TargetConnector {
    sockets: Arc<dyn Sockets>,
    addr: SocketAddrV4,
}

impl tower_service::Service<Uri> for TargetConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let connect = connect(self.sockets.as_ref(), self.addr);
        Box::pin(async move { Ok(TokioIo::new(connect.await?)) })
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

pub(crate) fn client(sockets: Arc<dyn Sockets>, addr: SocketAddrV4) -> Client<TargetConnector, Incoming> {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(usize::MAX)
        .build(TargetConnector { sockets, addr })
}
