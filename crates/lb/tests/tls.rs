//! HTTPS listeners (HTTP/1.1 and HTTP/2 from clients, certificates chosen by SNI) and network
//! load balancers (TCP and TLS forwarding, half-close, connections closed with their target).

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use flotilla_host::lb::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

const A: &str = "arn:tg/a";

struct TestCert {
    pem: CertificatePem,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn certificate(name: &str) -> TestCert {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    TestCert {
        pem: CertificatePem {
            arn: format!("arn:aws:acm:us-east-1:000000000000:certificate/{name}"),
            chain_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
        },
        der: made.cert.der().clone(),
    }
}

/// A client trusting `certs`, offering `alpn`.
fn connector(certs: &[&TestCert], alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert.der.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(ServerName::try_from(name.to_string()).unwrap(), tcp).await.unwrap()
}

#[tokio::test]
async fn https_serves_http1_and_http2_with_the_certificate_sni_names() {
    let a = Backend::start(Ipv4Addr::new(127, 0, 30, 1), "a").await;
    let (one, two) = (certificate("one.example.com"), certificate("two.example.com"));
    let lb_ip = Ipv4Addr::new(127, 0, 30, 10);
    let port = free_port(lb_ip);
    let mut https = listener(port, ListenerProtocol::Https, forward(A));
    https.certificates = vec![one.pem.clone(), two.pem.clone()];
    let snapshot = LbSnapshot {
        load_balancers: vec![load_balancer(LbKind::Application, lb_ip, vec![https])],
        target_groups: vec![group(A, vec![a.target()])],
    };
    let (plane, _reports) = plane();
    assert_eq!(plane.apply(&snapshot).await, vec![]);
    let addr = SocketAddr::from((lb_ip, port));

    // HTTP/1.1, default certificate.
    let tls = tls_connect(&connector(&[&one], &[b"http/1.1"]), addr, "one.example.com").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("/").header("host", "one.example.com").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("a\n") && body.contains("x-forwarded-proto: https\n"), "{body}");

    // HTTP/2, the other certificate by SNI; several streams on one connection.
    let tls = tls_connect(&connector(&[&two], &[b"h2"]), addr, "two.example.com").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], two.der);
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for i in 0..5 {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            let request =
                http::Request::get(format!("https://two.example.com/{i}")).body(Empty::<Bytes>::new()).unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).to_string())
        }));
    }
    for stream in streams {
        let (status, body) = stream.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("host: two.example.com\n"), "{body}");
    }

    // An unusable certificate is the listener's problem, not a panic.
    let mut broken = snapshot.clone();
    broken.load_balancers[0].listeners[0].certificates[0].key_pem = "not a key".into();
    let problems = plane.apply(&broken).await;
    assert_eq!(problems.len(), 1);
    assert!(problems[0].problem.contains("key"), "{}", problems[0].problem);
}

/// A TCP backend: reads until the client closes its side, then answers `name:` and what it
/// read, and closes.
async fn tcp_backend(ip: Ipv4Addr, name: &'static str) -> SocketAddrV4 {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let SocketAddr::V4(addr) = listener.local_addr().unwrap() else { unreachable!() };
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).await.is_ok() {
                    let _ = stream.write_all(format!("{name}:").as_bytes()).await;
                    let _ = stream.write_all(&got).await;
                }
            });
        }
    });
    addr
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, message: &[u8]) -> String {
    stream.write_all(message).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}

fn nlb_target(addr: SocketAddrV4) -> TargetSpec {
    TargetSpec { ip: *addr.ip(), port: addr.port(), draining: false, healthy: Some(true) }
}

#[tokio::test]
async fn network_load_balancer_forwards_tcp_and_tls() {
    let a = tcp_backend(Ipv4Addr::new(127, 0, 31, 1), "a").await;
    let b = tcp_backend(Ipv4Addr::new(127, 0, 31, 2), "b").await;
    let cert = certificate("nlb.example.com");
    let lb_ip = Ipv4Addr::new(127, 0, 31, 10);
    let (tcp_port, tls_port) = (free_port(lb_ip), free_port(lb_ip));
    let mut tls = listener(tls_port, ListenerProtocol::Tls, forward(A));
    tls.certificates = vec![cert.pem.clone()];
    let mut targets = group(A, vec![nlb_target(a), nlb_target(b)]);
    targets.protocol = TargetProtocol::Tcp;
    targets.health_check = health_check(HealthProtocol::Tcp, 300);
    let nlb = load_balancer(LbKind::Network, lb_ip, vec![listener(tcp_port, ListenerProtocol::Tcp, forward(A)), tls]);
    let snapshot = LbSnapshot { load_balancers: vec![nlb], target_groups: vec![targets] };
    let (plane, _reports) = plane();
    assert_eq!(plane.apply(&snapshot).await, vec![]);

    let mut seen = HashSet::new();
    for i in 0..20 {
        let stream = TcpStream::connect((lb_ip, tcp_port)).await.unwrap();
        let answer = exchange(stream, format!("hello {i}").as_bytes()).await;
        let (name, echoed) = answer.split_once(':').unwrap();
        assert_eq!(echoed, format!("hello {i}"));
        seen.insert(name.to_string());
    }
    assert_eq!(seen, HashSet::from(["a".to_string(), "b".to_string()]), "connections spread over both");

    let big = vec![7u8; 4 << 20];
    let stream = TcpStream::connect((lb_ip, tcp_port)).await.unwrap();
    let answer = exchange(stream, &big).await;
    assert_eq!(answer.len(), 2 + big.len());

    let stream = tls_connect(&connector(&[&cert], &[]), SocketAddr::from((lb_ip, tls_port)), "nlb.example.com").await;
    let answer = exchange(stream, b"over tls").await;
    assert!(answer == "a:over tls" || answer == "b:over tls", "{answer}");
}

#[tokio::test]
async fn a_removed_target_loses_its_connections() {
    let a = tcp_backend(Ipv4Addr::new(127, 0, 32, 1), "a").await;
    let lb_ip = Ipv4Addr::new(127, 0, 32, 10);
    let port = free_port(lb_ip);
    let mut targets = group(A, vec![nlb_target(a)]);
    targets.health_check.enabled = false;
    let nlb = load_balancer(LbKind::Network, lb_ip, vec![listener(port, ListenerProtocol::Tcp, forward(A))]);
    let mut snapshot = LbSnapshot { load_balancers: vec![nlb], target_groups: vec![targets] };
    let (plane, _reports) = plane();
    assert_eq!(plane.apply(&snapshot).await, vec![]);

    let mut stream = TcpStream::connect((lb_ip, port)).await.unwrap();
    stream.write_all(b"held open").await.unwrap();
    snapshot.target_groups[0].targets.clear();
    assert_eq!(plane.apply(&snapshot).await, vec![]);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the connection ends with its target: {read:?}");
}
