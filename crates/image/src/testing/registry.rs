//! A real `docker-registry` on loopback (or, over TLS, on a non-loopback address of
//! this machine), and helpers to push images to it over the registry HTTP API.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::build::{TestImage, sha256};

const READY_DEADLINE: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// How a [`Registry`] authenticates clients. [`Anonymous`] and [`Htpasswd`] are
/// provided; anything else (a Bearer token server, say) implements this trait.
pub trait RegistryAuth: Send + Sync + 'static {
    /// Extra top-level sections for the registry's `config.yml`, typically `auth:`;
    /// empty for none. `dir` is the registry's private temporary directory, for
    /// files the sections point at (an htpasswd file, a certificate bundle). Called
    /// once per start attempt, each with a fresh `dir`.
    fn config_yaml(&self, dir: &Path) -> String;

    /// The credentials [`Registry`]'s push helpers send for `repo` (they need pull
    /// and push access to it).
    fn authorization(&self, repo: &str) -> Authorization;
}

/// Credentials on one request to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

/// No authentication: anyone may pull and push.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl RegistryAuth for Anonymous {
    fn config_yaml(&self, _dir: &Path) -> String {
        String::new()
    }

    fn authorization(&self, _repo: &str) -> Authorization {
        Authorization::None
    }
}

/// HTTP Basic authentication of one user against an htpasswd file.
#[derive(Debug, Clone)]
pub struct Htpasswd {
    pub user: String,
    pub password: String,
}

impl Htpasswd {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Htpasswd {
        Htpasswd { user: user.into(), password: password.into() }
    }
}

impl RegistryAuth for Htpasswd {
    fn config_yaml(&self, dir: &Path) -> String {
        // The registry accepts bcrypt only; cost 4 (the minimum) keeps tests fast.
        let hash = bcrypt::hash(&self.password, 4).unwrap();
        let file = dir.join("htpasswd");
        fs::write(&file, format!("{}:{hash}\n", self.user)).unwrap();
        format!("auth:\n  htpasswd:\n    realm: flotilla-test\n    path: {}\n", file.display())
    }

    fn authorization(&self, _repo: &str) -> Authorization {
        Authorization::Basic { user: self.user.clone(), password: self.password.clone() }
    }
}

/// A `docker-registry serve` child process on `127.0.0.1` (plain HTTP), or over TLS
/// on a non-loopback address ([`Registry::start_tls`]), killed on drop. Its storage,
/// config, certificates and log live in a temporary directory removed on drop.
pub struct Registry {
    child: Child,
    host: String,
    /// `http` or `https`.
    scheme: &'static str,
    /// The PEM certificate of the CA that signed the registry's certificate (TLS only).
    ca_pem: Option<String>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    auth: Box<dyn RegistryAuth>,
}

/// A CA and the certificate it signed for one IP address, all PEM.
struct TlsFiles {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn tls_files(ip: IpAddr) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "flotilla test registry CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, ip.to_string());
    params.subject_alt_names = vec![SanType::IpAddress(ip)];
    let cert = params.signed_by(&key, &issuer).unwrap();
    TlsFiles { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// An IPv4 address of this machine that is not loopback, for a registry that clients
/// must reach over TLS (they dial loopback registries over plain HTTP): the source
/// address of the default route, else the first such address of an interface.
/// `Err` says why there is none.
pub fn non_loopback_ipv4() -> Result<Ipv4Addr, String> {
    let usable = |ip: Ipv4Addr| !ip.is_loopback() && !ip.is_unspecified() && TcpListener::bind((ip, 0)).is_ok();
    // Connecting a UDP socket sends nothing; it only picks the route's source address.
    let routed = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("1.1.1.1:53").map(|()| s))
        .and_then(|s| s.local_addr())
        .ok()
        .and_then(|a| match a.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        });
    if let Some(ip) = routed.filter(|ip| usable(*ip)) {
        return Ok(ip);
    }
    let listed = Command::new("ip").args(["-4", "-o", "addr", "show"]).output();
    let listed = match listed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => return Err(format!("no default route, and `ip -4 -o addr show` failed: {}", out.status)),
        Err(e) => return Err(format!("no default route, and `ip -4 -o addr show` could not run: {e}")),
    };
    // `2: eth0    inet 192.0.2.2/24 brd ... scope global eth0`
    listed
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse::<Ipv4Addr>().ok()
        })
        .find(|ip| usable(*ip))
        .ok_or_else(|| "this machine has no non-loopback IPv4 address (no default route, none on any interface)".into())
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("host", &self.host).field("dir", &self.dir.path()).finish_non_exhaustive()
    }
}

fn registry_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("docker-registry"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "docker-registry is not installed: run `apt-get install -y docker-registry` \
                 (these tests pull from a real registry on 127.0.0.1)"
            )
        })
}

fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

fn read_log(dir: &Path) -> String {
    fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
}

/// Polls `/v2/` until the registry answers; `Err` carries its log.
async fn wait_ready(child: &mut Child, url: &str, http: &reqwest::Client, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_DEADLINE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}\n{}", read_log(dir)));
        }
        if let Ok(resp) = http.get(url).send().await {
            // 401 counts: the registry is up and asking for credentials.
            if resp.status().is_success() || resp.status() == 401 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("not ready after {READY_DEADLINE:?}\n{}", read_log(dir)))
}

impl Registry {
    /// An anonymous registry.
    pub async fn start() -> Registry {
        Self::start_with(Anonymous).await
    }

    /// A registry authenticating clients with `auth`.
    pub async fn start_with(auth: impl RegistryAuth) -> Registry {
        Self::spawn(Box::new(auth), IpAddr::V4(Ipv4Addr::LOCALHOST), None).await
    }

    /// A registry serving HTTPS on a non-loopback address of this machine
    /// ([`non_loopback_ipv4`]; clients dial loopback registries over plain HTTP),
    /// authenticating clients with `auth`. Its certificate, for that IP address, is
    /// signed by a fresh CA: [`Registry::ca_pem`]. `Err` says why it cannot run
    /// here (no such address), for the test to print and skip.
    pub async fn start_tls(auth: impl RegistryAuth) -> Result<Registry, String> {
        let ip = non_loopback_ipv4()?;
        let tls = tls_files(IpAddr::V4(ip));
        Ok(Self::spawn(Box::new(auth), IpAddr::V4(ip), Some(tls)).await)
    }

    async fn spawn(auth: Box<dyn RegistryAuth>, ip: IpAddr, tls: Option<TlsFiles>) -> Registry {
        let binary = registry_binary();
        let mut http = reqwest::Client::builder().no_proxy();
        if let Some(tls) = &tls {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(tls.ca_pem.as_bytes()).unwrap());
        }
        let http = http.build().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        // The port is free when picked but another process could take it before the
        // registry binds; a registry that exits early is retried on a new port.
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().unwrap();
            let host = format!("{ip}:{}", free_port(ip));
            let tls_yaml = match &tls {
                Some(tls) => {
                    let (cert, key) = (dir.path().join("registry.crt"), dir.path().join("registry.key"));
                    fs::write(&cert, &tls.cert_pem).unwrap();
                    fs::write(&key, &tls.key_pem).unwrap();
                    format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display())
                }
                None => String::new(),
            };
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {host}\n  secret: flotilla-test-secret\n\
                 {tls_yaml}\
                 {}",
                dir.path().join("data").display(),
                auth.config_yaml(dir.path()),
            );
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).unwrap();
            let log = fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
            match wait_ready(&mut child, &format!("{scheme}://{host}/v2/"), &http, dir.path()).await {
                Ok(()) => {
                    let ca_pem = tls.map(|t| t.ca_pem);
                    return Registry { child, host, scheme, ca_pem, dir, http, auth };
                }
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = log;
                }
            }
        }
        panic!("docker-registry did not become ready; its log:\n{last_log}");
    }

    /// `127.0.0.1:<port>`, or `<ip>:<port>` over TLS.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The PEM certificate of the CA that signed the registry's certificate, for
    /// clients to trust; `None` over plain HTTP.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// `https://<host>` over TLS, else `http://<host>`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }

    /// An image reference on this registry: `<host>/<repo_and_tag>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host)
    }

    /// The registry's log so far, access log included.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// Blob GETs the registry has served, from its access log.
    pub fn blob_gets(&self) -> usize {
        self.log().lines().filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:")).count()
    }

    /// Waits until the access log shows `n` blob GETs: the registry writes the line
    /// just after the response, so it may trail the client by a moment.
    pub async fn wait_blob_gets(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.blob_gets() < n {
            assert!(Instant::now() < deadline, "expected {n} blob GETs, log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The file the registry serves `digest` (`sha256:<hex>`) from, to corrupt it.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    fn authorize(&self, request: reqwest::RequestBuilder, repo: &str) -> reqwest::RequestBuilder {
        match self.auth.authorization(repo) {
            Authorization::None => request,
            Authorization::Basic { user, password } => request.basic_auth(user, Some(password)),
            Authorization::Bearer(token) => request.bearer_auth(token),
        }
    }

    /// Uploads `bytes` as a blob of `repo`; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let start = self
            .authorize(self.http.post(format!("{}/v2/{repo}/blobs/uploads/", self.base_url())), repo)
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 202, "starting upload: {}", start.text().await.unwrap());
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let mut url = if location.starts_with("http") { location } else { format!("{}{location}", self.base_url()) };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        // Monolithic upload: the whole blob in the closing PUT.
        let done = self
            .authorize(self.http.put(url), repo)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201, "uploading blob: {}", done.text().await.unwrap());
        digest
    }

    /// Puts a manifest (or index) under `reference`, a tag or a digest.
    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let resp = self
            .authorize(self.http.put(format!("{}/v2/{repo}/manifests/{reference}", self.base_url())), repo)
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "pushing manifest: {}", resp.text().await.unwrap());
    }

    /// Pushes blobs and the manifest; tags it when `tag` is given (else by digest).
    pub async fn push_image(&self, repo: &str, tag: Option<&str>, image: &TestImage) {
        for layer in &image.layers {
            self.push_blob(repo, &layer.blob).await;
        }
        self.push_blob(repo, &image.config).await;
        let reference = tag.map(str::to_owned).unwrap_or_else(|| image.manifest_digest());
        self.push_manifest(repo, &reference, &image.manifest_media_type, &image.manifest).await;
    }
}
