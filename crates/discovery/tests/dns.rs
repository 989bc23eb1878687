//! The VPC resolver over real sockets: namespaces answered per VPC, records following
//! registrations, everything else relayed to an upstream DNS server (a real one, written here).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flotilla_discovery::dns::{DnsServer, Upstreams};
use flotilla_discovery::{Discovery, DnsRecord, NewPrivateDnsNamespace, NewService, OperationStatus, RecordType};
use flotilla_store::{EmbeddedStore, Store};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType as QType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// A real DNS server on loopback that answers every A question with [`UPSTREAM_ANSWER`], over
/// UDP and TCP, counting the questions it gets.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    // The kernel picks a free UDP port; the same TCP port may be someone else's (a busy
    // machine has many connections), so pick again until both are ours.
    let mut attempts = 0;
    let (udp, addr, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        match TcpListener::bind(addr).await {
            Ok(tcp) => break (udp, addr, tcp),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 50 => attempts += 1,
            Err(e) => panic!("binding TCP {addr}: {e}"),
        }
    };
    let asked = Arc::new(AtomicUsize::new(0));
    fn reply(query: &[u8]) -> Vec<u8> {
        let request = Message::from_vec(query).unwrap();
        let mut response = Message::response(request.id, request.op_code);
        response.metadata.recursion_available = true;
        for q in &request.queries {
            response.add_query(q.clone());
            if q.query_type() == QType::A {
                response.add_answer(Record::from_rdata(q.name().clone(), 300, RData::A(A(UPSTREAM_ANSWER))));
            }
        }
        response.to_vec().unwrap()
    }
    let counter = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = udp.send_to(&reply(&buf[..n]), peer).await;
        }
    });
    let counter = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let len = stream.read_u16().await.unwrap() as usize;
            let mut query = vec![0u8; len];
            stream.read_exact(&mut query).await.unwrap();
            let answer = reply(&query);
            stream.write_all(&(answer.len() as u16).to_be_bytes()).await.unwrap();
            stream.write_all(&answer).await.unwrap();
        }
    });
    (addr, asked)
}

fn question(name: &str, qtype: QType) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    q
}

async fn ask(server: SocketAddr, name: &str, qtype: QType) -> Message {
    let q = question(name, qtype);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(&q.to_vec().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await.expect("an answer").unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.id, q.id);
    assert_eq!(answer.message_type, MessageType::Response);
    answer
}

async fn ask_tcp(server: SocketAddr, name: &str, qtype: QType) -> Message {
    let q = question(name, qtype).to_vec().unwrap();
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    stream.write_all(&q).await.unwrap();
    let len = stream.read_u16().await.unwrap() as usize;
    let mut answer = vec![0u8; len];
    stream.read_exact(&mut answer).await.unwrap();
    Message::from_vec(&answer).unwrap()
}

fn ips(m: &Message) -> BTreeSet<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

async fn wait_until<F: Future<Output = bool>>(what: &str, deadline: Duration, mut check: impl FnMut() -> F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn succeeded(sd: &Discovery, op: &str) -> flotilla_discovery::Operation {
    let start = Instant::now();
    loop {
        let found = sd.operation(op).await.unwrap();
        if found.status.is_finished() {
            assert_eq!(found.status, OperationStatus::Success, "{found:?}");
            return found;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "operation {op} did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn attrs(ip: &str, port: u16) -> std::collections::BTreeMap<String, String> {
    [("AWS_INSTANCE_IPV4", ip.to_owned()), ("AWS_INSTANCE_PORT", port.to_string())]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_per_vpc_follows_registrations_and_forwards_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
    let sd = Discovery::start(store.clone(), "us-east-1", "123456789012");
    let op = sd
        .create_private_dns_namespace(NewPrivateDnsNamespace {
            name: "local".into(),
            vpc: "vpc-aaaa1111".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ns_id = succeeded(&sd, &op).await.namespace_id.unwrap();
    let service = sd
        .create_service(NewService {
            name: "myapp".into(),
            dns_namespace_id: Some(ns_id.clone()),
            dns_records: Some(vec![
                DnsRecord { kind: RecordType::A, ttl: 60 },
                DnsRecord { kind: RecordType::Srv, ttl: 30 },
            ]),
            ..Default::default()
        })
        .await
        .unwrap();
    for (id, ip) in [("task-1", "10.0.0.5"), ("task-2", "10.0.0.6")] {
        let op = sd.register_instance(&service.id, id, attrs(ip, 8080), None).await.unwrap();
        succeeded(&sd, &op).await;
    }

    let (upstream, asked) = upstream().await;
    let dns = DnsServer::start(store.clone(), Upstreams { servers: vec![upstream], timeout: Duration::from_secs(2) })
        .await
        .unwrap();
    let vpc_a = dns.bind_vpc("vpc-aaaa1111", "127.0.1.2:0".parse().unwrap()).await.unwrap();
    let vpc_b = dns.bind_vpc("vpc-bbbb2222", "127.0.2.2:0".parse().unwrap()).await.unwrap();
    assert_eq!(dns.bindings().len(), 2);

    // The namespace's own VPC: every registered address, authoritatively, with the service's TTL.
    let answer = ask(vpc_a, "myapp.local.", QType::A).await;
    assert_eq!(answer.response_code, ResponseCode::NoError);
    assert!(answer.authoritative);
    assert_eq!(ips(&answer), BTreeSet::from([Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)]));
    assert!(answer.answers.iter().all(|r| r.ttl == 60));
    assert_eq!(ips(&ask(vpc_a, "MyApp.LOCAL.", QType::A).await).len(), 2, "names are case-insensitive");
    assert_eq!(ips(&ask_tcp(vpc_a, "myapp.local.", QType::A).await).len(), 2, "over TCP too");

    // SRV: one record per instance, pointing at a per-instance A record.
    let srv = ask(vpc_a, "myapp.local.", QType::SRV).await;
    assert_eq!(srv.answers.len(), 2);
    let RData::SRV(first) = &srv.answers[0].data else { panic!("{srv:?}") };
    assert_eq!(first.port, 8080);
    assert_eq!(srv.additionals.len(), 2);
    let target = ask(vpc_a, &first.target.to_ascii(), QType::A).await;
    assert_eq!(ips(&target).len(), 1);

    // Unknown names inside the namespace do not exist, and are not asked upstream.
    let before = asked.load(Ordering::SeqCst);
    let missing = ask(vpc_a, "nothere.local.", QType::A).await;
    assert_eq!(missing.response_code, ResponseCode::NXDomain);
    assert!(matches!(&missing.authorities[0].data, RData::SOA(_)));
    let soa = ask(vpc_a, "local.", QType::SOA).await;
    assert_eq!(soa.answers.len(), 1);
    assert_eq!(asked.load(Ordering::SeqCst), before);

    // Another VPC does not see the namespace: its question goes upstream like any other.
    let elsewhere = ask(vpc_b, "myapp.local.", QType::A).await;
    assert_eq!(ips(&elsewhere), BTreeSet::from([UPSTREAM_ANSWER]));
    assert!(!elsewhere.authoritative);
    let outside = ask(vpc_a, "example.com.", QType::A).await;
    assert_eq!(ips(&outside), BTreeSet::from([UPSTREAM_ANSWER]));
    assert_eq!(ips(&ask_tcp(vpc_a, "example.com.", QType::A).await), BTreeSet::from([UPSTREAM_ANSWER]));
    assert_eq!(asked.load(Ordering::SeqCst), before + 3);

    // Deregistration takes the address out; the last one takes the name out.
    sd.deregister_instance(&service.id, "task-1").await.unwrap();
    wait_until("task-1 to leave DNS", Duration::from_secs(1), || async {
        ips(&ask(vpc_a, "myapp.local.", QType::A).await) == BTreeSet::from([Ipv4Addr::new(10, 0, 0, 6)])
    })
    .await;
    sd.deregister_instance(&service.id, "task-2").await.unwrap();
    wait_until("the name to disappear", Duration::from_secs(1), || async {
        ask(vpc_a, "myapp.local.", QType::A).await.response_code == ResponseCode::NXDomain
    })
    .await;
    // And a registration is answered within a second.
    sd.register_instance(&service.id, "task-3", attrs("10.0.0.7", 80), None).await.unwrap();
    wait_until("task-3 to be answered", Duration::from_secs(1), || async {
        ips(&ask(vpc_a, "myapp.local.", QType::A).await) == BTreeSet::from([Ipv4Addr::new(10, 0, 0, 7)])
    })
    .await;

    assert!(dns.unbind(vpc_b));
    assert!(!dns.unbind(vpc_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_servfail_when_no_upstream_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
    // A bound UDP socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstreams = Upstreams { servers: vec![silent.local_addr().unwrap()], timeout: Duration::from_millis(200) };
    let dns = DnsServer::start(store, upstreams).await.unwrap();
    let addr = dns.bind_vpc("vpc-aaaa1111", "127.0.1.3:0".parse().unwrap()).await.unwrap();
    let answer = ask(addr, "example.com.", QType::A).await;
    assert_eq!(answer.response_code, ResponseCode::ServFail);
    assert_eq!(answer.queries.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_names_set_for_a_vpc_there_only() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
    let (upstream, asked) = upstream().await;
    let dns =
        DnsServer::start(store, Upstreams { servers: vec![upstream], timeout: Duration::from_secs(2) }).await.unwrap();
    let vpc_a = dns.bind_vpc("vpc-aaaa1111", "127.0.1.4:0".parse().unwrap()).await.unwrap();
    let vpc_b = dns.bind_vpc("vpc-bbbb2222", "127.0.2.4:0".parse().unwrap()).await.unwrap();
    let name = "internal-web-1234567890.us-east-1.elb.amazonaws.com";
    let addrs = vec![Ipv4Addr::new(10, 0, 1, 9), Ipv4Addr::new(10, 0, 2, 9)];
    dns.set_names([("vpc-aaaa1111".to_owned(), [(format!("{name}."), addrs.clone())].into())].into());

    // Its VPC: the addresses, whatever the case of the question, and no AAAA.
    let answer = ask(vpc_a, &format!("{}.", name.to_ascii_uppercase()), QType::A).await;
    assert_eq!(answer.response_code, ResponseCode::NoError);
    assert_eq!(ips(&answer), addrs.iter().copied().collect());
    let answer = ask_tcp(vpc_a, &format!("{name}."), QType::A).await;
    assert_eq!(ips(&answer), addrs.iter().copied().collect());
    let answer = ask(vpc_a, &format!("{name}."), QType::AAAA).await;
    assert_eq!((answer.response_code, answer.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(asked.load(Ordering::SeqCst), 0, "answered here, never relayed");

    // Another VPC does not see it: relayed like any other name.
    let answer = ask(vpc_b, &format!("{name}."), QType::A).await;
    assert_eq!(ips(&answer), BTreeSet::from([UPSTREAM_ANSWER]));

    // Replaced whole: gone once the load balancer is.
    dns.set_names(Default::default());
    let answer = ask(vpc_a, &format!("{name}."), QType::A).await;
    assert_eq!(ips(&answer), BTreeSet::from([UPSTREAM_ANSWER]));
}
