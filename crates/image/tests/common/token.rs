//! A minimal Docker token server (the `realm` of a Bearer challenge) for the
//! registry's `auth: token` mode: it checks Basic credentials and issues ES256 JWTs
//! that `docker-registry` verifies against our self-signed certificate. Pass it to
//! `Registry::start_with`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flotilla_image::testing::{Authorization, RegistryAuth};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const SERVICE: &str = "flotilla-test-registry";
const ISSUER: &str = "flotilla-test-issuer";

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    serial: AtomicUsize,
}

impl Signer {
    fn mint(&self, repo: &str, actions: &[&str]) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)]});
        let claims = json!({
            "iss": ISSUER, "sub": "tester", "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now - 10,
            "jti": format!("t{}", self.serial.fetch_add(1, Ordering::SeqCst)),
            "access": [{"type": "repository", "name": repo, "actions": actions}],
        });
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

pub struct TokenServer {
    pub addr: String,
    signer: Arc<Signer>,
    cert_pem: String,
    /// Token requests served (granted or refused).
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    pub async fn start(user: &str, password: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["flotilla-test-token".to_owned()]).unwrap().self_signed(&key).unwrap();
        let signer = Arc::new(Signer {
            key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &SystemRandom::new())
                .unwrap(),
            cert_der: cert.der().to_vec(),
            serial: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let (task_signer, task_requests) = (signer.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let (signer, requests, expected) = (task_signer.clone(), task_requests.clone(), expected.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let request = String::from_utf8_lossy(&buf).into_owned();
                    let authorized = request
                        .lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == expected);
                    let target = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let scope = query_param(&target, "scope").unwrap_or_default();
                    let repo = scope.split(':').nth(1).unwrap_or_default().to_owned();
                    let (status, body) = if authorized && query_param(&target, "service").as_deref() == Some(SERVICE) {
                        let token = signer.mint(&repo, &["pull"]);
                        ("200 OK", json!({"token": token, "expires_in": 300}).to_string())
                    } else {
                        ("401 Unauthorized", json!({"details": "bad credentials"}).to_string())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        TokenServer { addr, cert_pem: cert.pem(), signer, requests, task }
    }

    pub fn mint(&self, repo: &str, actions: &[&str]) -> String {
        self.signer.mint(repo, actions)
    }
}

impl RegistryAuth for TokenServer {
    /// The registry's `auth:` section; writes the certificate bundle into `dir`.
    fn config_yaml(&self, dir: &Path) -> String {
        let bundle = dir.join("token.pem");
        std::fs::write(&bundle, &self.cert_pem).unwrap();
        format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.addr,
            bundle.display()
        )
    }

    /// A token minted directly, for the push helpers.
    fn authorization(&self, repo: &str) -> Authorization {
        Authorization::Bearer(self.mint(repo, &["pull", "push"]))
    }
}

fn query_param(target: &str, key: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
