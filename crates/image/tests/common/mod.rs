//! A real `docker-registry` on loopback for the pull tests, and helpers to push
//! images to it over the registry HTTP API.
#![allow(dead_code)]

pub mod build;
pub mod token;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use build::TestImage;

const READY_DEADLINE: Duration = Duration::from_secs(30);

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// How the registry authenticates clients.
pub enum RegistryAuth {
    None,
    Htpasswd { user: String, password: String },
    Token(token::TokenServer),
}

/// A `docker-registry serve` child process, killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`
    pub host: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    auth: RegistryAuth,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub async fn start() -> Registry {
        Self::start_with(RegistryAuth::None).await
    }

    pub async fn start_with(mut auth: RegistryAuth) -> Registry {
        let binary = registry_binary();
        // The port is free when picked but another process could take it before the
        // registry binds; a registry that exits early is retried on a new port.
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let auth_yaml = match &auth {
                RegistryAuth::None => String::new(),
                RegistryAuth::Htpasswd { user, password } => {
                    let hash = bcrypt::hash(password, 4).unwrap();
                    let file = dir.path().join("htpasswd");
                    fs::write(&file, format!("{user}:{hash}\n")).unwrap();
                    format!("auth:\n  htpasswd:\n    realm: flotilla-test\n    path: {}\n", file.display())
                }
                RegistryAuth::Token(server) => server.registry_yaml(dir.path()),
            };
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {host}\n  secret: flotilla-test-secret\n\
                 {auth_yaml}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).unwrap();
            let log = fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(&binary)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
            let mut registry =
                Registry { child, host, dir, http: reqwest::Client::builder().no_proxy().build().unwrap(), auth };
            match registry.wait_ready().await {
                Ok(()) => return registry,
                Err(log) => {
                    last_log = log;
                    auth = std::mem::replace(&mut registry.auth, RegistryAuth::None);
                }
            }
        }
        panic!("docker-registry did not become ready; its log:\n{last_log}");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        let url = format!("http://{}/v2/", self.host);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.log());
            }
            if let Ok(resp) = self.http.get(&url).send().await {
                // 401 counts: the registry is up and asking for credentials.
                if resp.status().is_success() || resp.status() == 401 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("not ready after {READY_DEADLINE:?}\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
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

    /// The file the registry serves `digest` from.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host)
    }

    fn authorize(&self, request: reqwest::RequestBuilder, repo: &str) -> reqwest::RequestBuilder {
        match &self.auth {
            RegistryAuth::None => request,
            RegistryAuth::Htpasswd { user, password } => request.basic_auth(user, Some(password)),
            RegistryAuth::Token(server) => request.bearer_auth(server.mint(repo, &["pull", "push"])),
        }
    }

    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = build::sha256(bytes);
        let start = self
            .authorize(self.http.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.host)), repo)
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 202, "starting upload: {}", start.text().await.unwrap());
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let mut url = if location.starts_with("http") { location } else { format!("http://{}{location}", self.host) };
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

    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let resp = self
            .authorize(self.http.put(format!("http://{}/v2/{repo}/manifests/{reference}", self.host)), repo)
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

/// A fresh store root inside a temp dir.
pub struct StoreDir {
    pub dir: tempfile::TempDir,
}

impl StoreDir {
    pub fn new() -> StoreDir {
        StoreDir { dir: tempfile::tempdir().unwrap() }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
