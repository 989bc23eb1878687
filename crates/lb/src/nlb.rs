//! Network load balancer listeners: each connection forwarded whole to one target (TLS
//! terminated first on TLS listeners), bytes copied both ways, each direction closed on its
//! own (half-close kept).

use std::sync::Arc;
use std::time::Duration;

use flotilla_host::lb::TargetProtocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use std::hash::BuildHasher;

use crate::groups::Target;
use crate::listeners::{Action, Conn, Route};
use crate::upstream::{TargetStream, connect, tls_connect};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per direction: large enough for bulk transfers to move in few system calls, small enough
/// that allocating them (zeroed) does not dominate short connections.
const BUFFER: usize = 32 * 1024;

pub(crate) async fn serve(stream: TcpStream, conn: Arc<Conn>, route: Arc<Route>) {
    let Action::Forward(forward) = &route.default_action else {
        return;
    };
    let Some((group, _)) = forward.choose(None) else {
        return;
    };
    // ELB's flow hash: one client connection keeps its target; different ones spread.
    let flow = conn.shared.cookie_key.hash_one(conn.peer) as usize;
    let Some(target) = group.pick(Some(flow)) else {
        return;
    };
    // TLS target groups get TLS from the load balancer too.
    let tls = group.settings().protocol == TargetProtocol::Tls;
    match &route.tls {
        None => pipe(stream, &conn, target, tls).await,
        Some(acceptor) => {
            if let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                pipe(stream, &conn, target, tls).await;
            }
        }
    }
}

async fn pipe<S>(mut client: S, conn: &Conn, target: Arc<Target>, tls: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _in_flight = target.begin();
    let Ok(upstream) = connect(conn.shared.sockets.as_ref(), target.addr).await else {
        return;
    };
    let mut upstream = if tls {
        match tls_connect(upstream, target.addr).await {
            Ok(upstream) => TargetStream::Tls(Box::new(upstream)),
            Err(_) => return,
        }
    } else {
        TargetStream::Plain(upstream)
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER) => {}
        () = target.removed.cancelled() => {}
    }
}
