//! Application load balancer listeners: HTTP/1.1 (and HTTP/2 when a TLS client offers it) from
//! clients, rules, and HTTP/1.1 keep-alive to targets; upgrades (WebSocket) passed through.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::groups::InFlight;
use crate::h1::TargetBody;
use crate::listeners::{Action, Conn, Forward, Route};
use crate::rules::{self, RedirectFrom, RequestView};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const GROUP_COOKIE: &str = "AWSALBTG";
const TARGET_COOKIE: &str = "AWSALB";

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// Client headers not passed to targets: the forwarded ones the load balancer writes itself,
/// and (but for upgrades, which need `Connection: upgrade`) the hop-by-hop ones, which belong to
/// one hop. Left out as the request head is written, which is cheaper than removing them from
/// the map.
const NOT_FORWARDED: [HeaderName; 9] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_PORT,
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub(crate) async fn serve(stream: TcpStream, conn: Arc<Conn>, tls: Option<TlsAcceptor>) {
    let Some(acceptor) = tls else {
        return serve_http1(TokioIo::new(stream), conn, "http").await;
    };
    let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
        return;
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let service = service_fn(move |req| handle(conn.clone(), "https", req));
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    } else {
        serve_http1(TokioIo::new(stream), conn, "https").await;
    }
}

async fn serve_http1<I>(io: I, conn: Arc<Conn>, scheme: &'static str)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(conn.clone(), scheme, req));
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

async fn handle(
    conn: Arc<Conn>,
    scheme: &'static str,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let route = conn.route();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let host = host_without_port(host);
    let view = RequestView {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query().unwrap_or(""),
        host,
        headers: req.headers(),
        source: match conn.peer.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        },
    };
    let action = route
        .rules
        .iter()
        .find(|rule| rules::matches(&rule.conditions, &view))
        .map_or(&route.default_action, |rule| &rule.action);
    Ok(match action {
        Action::FixedResponse { status, content_type, body } => Response::builder()
            .status(*status)
            .header(header::CONTENT_TYPE, content_type.clone())
            .header(header::SERVER, "awselb/2.0")
            .body(ProxyBody::Full(Some(body.clone())))
            .expect("a valid response"),
        Action::Redirect(spec) => {
            let from = RedirectFrom { protocol: scheme, host, port: route.port, path: view.path, query: view.query };
            let location = rules::redirect_location(spec, &from);
            let status = if spec.status == 301 { StatusCode::MOVED_PERMANENTLY } else { StatusCode::FOUND };
            match HeaderValue::from_str(&location) {
                Ok(location) => Response::builder()
                    .status(status)
                    .header(header::LOCATION, location)
                    .header(header::SERVER, "awselb/2.0")
                    .body(ProxyBody::Full(None))
                    .expect("a valid response"),
                Err(_) => elb_error(StatusCode::BAD_REQUEST),
            }
        }
        Action::Forward(forward) => self::forward(&conn, &route, forward, scheme, req).await,
    })
}

fn host_without_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        return &host[..end + 2];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

async fn forward(
    conn: &Conn,
    route: &Route,
    forward: &Forward,
    scheme: &'static str,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some((group, new_group)) = forward.choose(cookie(&req, GROUP_COOKIE)) else {
        return elb_error(StatusCode::SERVICE_UNAVAILABLE);
    };
    let stickiness = group.settings().stickiness;
    let sticky = stickiness.and_then(|_| group.sticky(cookie(&req, TARGET_COOKIE)?));
    let Some(target) = sticky.or_else(|| group.pick(None)) else {
        return elb_error(StatusCode::SERVICE_UNAVAILABLE);
    };
    let guard = target.begin();

    let upgrading = req.version() <= Version::HTTP_11 && req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    if req.version() == Version::HTTP_2
        && !req.headers().contains_key(header::HOST)
        && let Some(authority) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, authority);
    }
    let add = forwarded_headers(req.headers(), conn, route, scheme);
    let drop = if upgrading { &NOT_FORWARDED[..3] } else { &NOT_FORWARDED[..] };

    let response = match tokio::time::timeout(route.idle_timeout, target.upstream.send(req, drop, &add)).await {
        Ok(Ok(_)) if target.is_gone() => return elb_error(StatusCode::BAD_GATEWAY),
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            tracing::debug!(target = %target.addr, ?error, "no response from the target");
            return elb_error(StatusCode::BAD_GATEWAY);
        }
        Err(_) => return elb_error(StatusCode::GATEWAY_TIMEOUT),
    };
    let (mut parts, body) = response.into_parts();

    if new_group && let Some(lifetime) = forward.stickiness {
        append_cookie(&mut parts.headers, GROUP_COOKIE, &group.cookie, lifetime);
    }
    if let Some(lifetime) = stickiness {
        append_cookie(&mut parts.headers, TARGET_COOKIE, &target.cookie, lifetime);
    }

    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client_upgrade), Some((mut upstream, early))) = (client_upgrade, body.into_upgraded()) else {
            return elb_error(StatusCode::BAD_GATEWAY);
        };
        let removed = target.removed.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let Ok(client) = client_upgrade.await else {
                return;
            };
            let mut client = TokioIo::new(client);
            // What the target sent in the new protocol right behind its 101.
            if !early.is_empty() && client.write_all(&early).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                () = removed.cancelled() => {}
            }
        });
        return Response::from_parts(parts, ProxyBody::Full(None));
    }
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ProxyBody::Upstream(UpstreamBody { inner: body, guard }))
}

/// The header lines `X-Forwarded-For` (appended to), `-Proto`, `-Port` and a trace id when the
/// client sent none; written straight into the request head.
fn forwarded_headers(headers: &http::HeaderMap, conn: &Conn, route: &Route, scheme: &'static str) -> Vec<u8> {
    let mut add = Vec::with_capacity(160);
    add.extend_from_slice(b"x-forwarded-for: ");
    if let Some(before) = headers.get(&X_FORWARDED_FOR) {
        add.extend_from_slice(before.as_bytes());
        add.extend_from_slice(b", ");
    }
    add.extend_from_slice(conn.peer_ip.as_bytes());
    add.extend_from_slice(b"\r\nx-forwarded-proto: ");
    add.extend_from_slice(scheme.as_bytes());
    add.extend_from_slice(b"\r\nx-forwarded-port: ");
    add.extend_from_slice(route.port_header.as_bytes());
    add.extend_from_slice(b"\r\n");
    if !headers.contains_key(&X_AMZN_TRACE_ID) {
        // Hex by hand: the formatting machinery cost a measurable share of a request.
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let id = rand::random::<u128>();
        add.extend_from_slice(b"x-amzn-trace-id: Root=1-");
        push_hex(&mut add, u128::from(secs as u32), 8);
        add.push(b'-');
        push_hex(&mut add, id, 24);
        add.extend_from_slice(b"\r\n");
    }
    add
}

/// The low `digits` hex digits of `value`, most significant first, zero-padded.
fn push_hex(out: &mut Vec<u8>, value: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend((0..digits).rev().map(|i| HEX[((value >> (4 * i)) & 0xf) as usize]));
}

/// Removes the headers that belong to one hop; most messages have none, so one pass over
/// the names first instead of a lookup for each.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let hop_by_hop = &NOT_FORWARDED[3..];
    if headers.keys().any(|name| hop_by_hop.contains(name)) {
        for name in hop_by_hop {
            headers.remove(name);
        }
    }
}

fn cookie<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn append_cookie(headers: &mut http::HeaderMap, name: &str, value: &str, lifetime_s: u32) {
    if let Ok(cookie) = HeaderValue::from_str(&format!("{name}={value}; Max-Age={lifetime_s}; Path=/")) {
        headers.append(header::SET_COOKIE, cookie);
    }
}

/// ELB's own error pages.
fn elb_error(status: StatusCode) -> Response<ProxyBody> {
    let title = match status {
        StatusCode::BAD_GATEWAY => "502 Bad Gateway",
        StatusCode::SERVICE_UNAVAILABLE => "503 Service Temporarily Unavailable",
        StatusCode::GATEWAY_TIMEOUT => "504 Gateway Time-out",
        _ => "400 Bad Request",
    };
    let body = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html")
        .header(header::SERVER, "awselb/2.0")
        .body(ProxyBody::Full(Some(Bytes::from(body))))
        .expect("a valid response")
}

/// A response body: the load balancer's own, or a target's.
pub(crate) enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// A target's response body: keeps the request counted in flight until it is sent whole or
/// dropped, and ends (at its next frame) if the target is removed.
pub(crate) struct UpstreamBody {
    inner: TargetBody,
    guard: InFlight,
}

type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Full(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(body) => {
                if body.guard.target().is_gone() {
                    return Poll::Ready(Some(Err("the target was removed".into())));
                }
                Pin::new(&mut body.inner).poll_frame(cx).map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(body) => body.is_none(),
            ProxyBody::Upstream(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(body) => SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(body) => body.inner.size_hint(),
        }
    }
}
