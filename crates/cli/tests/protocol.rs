//! The wire protocol's refusals, sent as raw HTTP so nothing on the client side helps.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{ACCESS_KEY, SECRET_KEY, Server};
use flotilla_api::Credentials;
use flotilla_api::sigv4::{SignedRequest, sign};
use serde_json::Value;

const ECS: &str = "AmazonEC2ContainerServiceV20141113";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Request<'a> {
    target: &'a str,
    body: &'a [u8],
    secret: &'a str,
    access_key: &'a str,
    at: i64,
    region: &'a str,
    signed: bool,
}

impl<'a> Request<'a> {
    fn new(target: &'a str, body: &'a [u8]) -> Request<'a> {
        Request {
            target,
            body,
            secret: SECRET_KEY,
            access_key: ACCESS_KEY,
            at: now(),
            region: "us-east-1",
            signed: true,
        }
    }
}

/// Sends one HTTP/1.1 request and returns (status, JSON body).
fn send(server: &Server, req: Request<'_>) -> (u16, Value) {
    let host = format!("127.0.0.1:{}", server.port);
    let mut headers = vec![
        ("content-type".to_owned(), "application/x-amz-json-1.1".to_owned()),
        ("host".to_owned(), host.clone()),
        ("x-amz-target".to_owned(), req.target.to_owned()),
    ];
    if req.signed {
        let creds = Credentials { access_key_id: req.access_key.into(), secret_access_key: req.secret.into() };
        let unsigned = SignedRequest { method: "POST", path: "/", query: "", headers: headers.clone(), body: req.body };
        headers.extend(sign(&unsigned, &creds, req.region, "ecs", req.at));
    }
    let mut raw = format!("POST / HTTP/1.1\r\ncontent-length: {}\r\nconnection: close\r\n", req.body.len());
    for (k, v) in &headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let mut stream = TcpStream::connect(&host).unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    stream.write_all(req.body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["__type"].as_str().unwrap_or("<none>")
}

#[test]
fn signature_refusals_use_aws_codes() {
    let server = Server::start();
    let target = format!("{ECS}.ListClusters");
    let (status, ok) = send(&server, Request::new(&target, b"{}"));
    assert_eq!(status, 200, "{ok}");
    assert!(ok["clusterArns"].is_array());

    let (status, v) = send(&server, Request { signed: false, ..Request::new(&target, b"{}") });
    assert_eq!((status, code(&v)), (403, "MissingAuthenticationTokenException"));
    let (_, v) = send(&server, Request { secret: "wrong", ..Request::new(&target, b"{}") });
    assert_eq!(code(&v), "InvalidSignatureException");
    let (_, v) = send(&server, Request { access_key: "AKIANOBODY", ..Request::new(&target, b"{}") });
    assert_eq!(code(&v), "UnrecognizedClientException");
    let (_, v) = send(&server, Request { at: now() - 6 * 60, ..Request::new(&target, b"{}") });
    assert_eq!(code(&v), "InvalidSignatureException");
    assert!(v["message"].as_str().unwrap().starts_with("Signature expired"), "{v}");
    let (_, v) = send(&server, Request { at: now() - 4 * 60, ..Request::new(&target, b"{}") });
    assert!(v["clusterArns"].is_array(), "4 minutes of skew is allowed: {v}");
    let (_, v) = send(&server, Request { region: "eu-west-1", ..Request::new(&target, b"{}") });
    assert_eq!(code(&v), "InvalidSignatureException");
}

#[test]
fn malformed_requests_get_errors_naming_the_problem() {
    let server = Server::start();
    let register = format!("{ECS}.RegisterTaskDefinition");

    let (status, v) = send(&server, Request::new(&register, b"{not json"));
    assert_eq!((status, code(&v)), (400, "SerializationException"));

    let (_, v) = send(&server, Request::new(&format!("{ECS}.LaunchRockets"), b"{}"));
    assert_eq!(code(&v), "UnknownOperationException");
    let (_, v) = send(&server, Request::new("NoSuchService.Op", b"{}"));
    assert_eq!(code(&v), "UnknownOperationException");

    let (_, v) = send(&server, Request::new(&register, br#"{"family":"x"}"#));
    assert_eq!(code(&v), "InvalidParameterException");
    assert!(v["message"].as_str().unwrap().contains("'containerDefinitions'"), "{v}");

    let body = br#"{"family":"x","containerDefinitions":[{"name":"a","image":"i","memory":"lots"}]}"#;
    let (_, v) = send(&server, Request::new(&register, body));
    assert_eq!(code(&v), "SerializationException");
    assert!(v["message"].as_str().unwrap().contains("containerDefinitions[0].memory"), "{v}");

    let (_, v) = send(&server, Request::new(&format!("{ECS}.ListClusters"), br#"{"maxResults": 1000}"#));
    assert_eq!(code(&v), "InvalidParameterException");
    assert!(v["message"].as_str().unwrap().contains("maxResults"), "{v}");

    let (_, v) = send(&server, Request::new(&format!("{ECS}.ListClusters"), br#"{"nextToken": "zz"}"#));
    assert_eq!(code(&v), "InvalidParameterException");

    // Operations in the ECS model that Flotilla does not serve yet say so.
    let (status, v) = send(&server, Request::new(&format!("{ECS}.ListAccountSettings"), b"{}"));
    assert_eq!((status, code(&v)), (400, "UnsupportedFeatureException"));

    // Still alive and consistent after all that.
    let (status, _) = send(&server, Request::new(&format!("{ECS}.ListClusters"), b""));
    assert_eq!(status, 200);
}

#[test]
fn oversized_body_gets_an_aws_error_without_being_read() {
    let server = Server::start();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    // Announce 64 MiB and send none of it: the limit is enforced on the declared length.
    let head = format!(
        "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\nx-amz-target: {ECS}.ListClusters\r\ncontent-length: {}\r\n\r\n",
        64 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the error body is in (or the server closes); a timeout fails the test.
    while !String::from_utf8_lossy(&response).contains("Exception\"") {
        let n = stream.read(&mut chunk).expect("server answers before the 10 s timeout");
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("RequestEntityTooLargeException"), "{text}");
}

#[test]
fn listens_on_loopback_by_default() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla")).args(["up", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[default: 127.0.0.1:7780]"), "{help}");
}
