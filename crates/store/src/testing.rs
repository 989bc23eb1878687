//! Stores for tests (feature `testing`).
//!
//! Real etcd clusters: `n` members of Debian's `etcd` on free loopback ports, each with its
//! data dir in one temporary directory. Members can be killed (SIGKILL) and started again on
//! the same data; dropping the cluster kills every member.
//!
//! A member also dies with the thread that started it (so a killed test leaves no etcd
//! behind): start and restart members from a thread that outlives them (the test's own, or a
//! runtime worker), not from `spawn_blocking`.
//!
//! [`Hooked`]: a real store whose transactions go through a test's hook (to hold them, record
//! them, or change a record just before one), every other call going straight to the store.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    EtcdOptions, EtcdStore, KeyValue, Leadership, Revision, Store, StoreError, TlsFiles, Txn, TxnOutcome, Watch,
};

/// What a [`Hooked`] store does with each transaction, given the real store underneath.
#[async_trait]
pub trait TxnHook: Send + Sync + 'static {
    async fn txn(&self, inner: &dyn Store, txn: Txn) -> Result<TxnOutcome, StoreError>;
}

/// `inner` with its transactions sent through `hook`; every other call is `inner`'s own.
pub struct Hooked<S, H> {
    pub inner: S,
    pub hook: H,
}

#[async_trait]
impl<S: Store, H: TxnHook> Store for Hooked<S, H> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.list_prefix(prefix).await
    }
    async fn get_stale(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get_stale(key).await
    }
    async fn list_prefix_stale(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.list_prefix_stale(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.hook.txn(&self.inner, txn).await
    }
    fn watch(&self, prefix: &str) -> Watch {
        self.inner.watch(prefix)
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
    async fn acquire(&self, name: &str, holder: &str) -> Result<Leadership, StoreError> {
        self.inner.acquire(name, holder).await
    }
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    token: String,
    members: Vec<Member>,
    /// Set when the members serve clients over TLS and require a client certificate.
    tls: Option<TlsFiles>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers (it has elected a leader).
    /// Panics if `etcd` is missing (`scripts/deps.sh` installs it) or the cluster never forms.
    pub async fn start(n: usize) -> EtcdCluster {
        EtcdCluster::launch(n, false).await
    }

    /// As [`Self::start`], with members that serve clients over TLS only and require a client
    /// certificate (etcd's `--client-cert-auth`), from a CA made for the cluster with `openssl`.
    pub async fn start_tls(n: usize) -> EtcdCluster {
        EtcdCluster::launch(n, true).await
    }

    /// The CA, client certificate and key that the TLS cluster accepts.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    async fn launch(n: usize, tls: bool) -> EtcdCluster {
        let dir = tempfile::Builder::new().prefix("flotilla-etcd-").tempdir().expect("a temp dir for etcd");
        let members = (0..n)
            .map(|i| Member { name: format!("m{i}"), client_port: free_port(), peer_port: free_port(), child: None })
            .collect();
        let token = dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tls = tls.then(|| make_certificates(dir.path()));
        let mut cluster = EtcdCluster { dir, token, members, tls };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_ready().await;
        cluster
    }

    /// `127.0.0.1:PORT` of each member, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("127.0.0.1:{}", m.client_port)).collect()
    }

    /// `etcd://` URL naming every member, for [`crate::open`].
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// Options for [`EtcdStore::connect`] under `prefix`, with every member (and the client
    /// certificate, for a TLS cluster).
    pub fn options(&self, prefix: &str) -> EtcdOptions {
        let tls = self.tls.clone().unwrap_or_default();
        let mut options = EtcdOptions::from_url(&self.url(), tls).expect("cluster URL parses");
        options.prefix = prefix.to_owned();
        options
    }

    /// A store on this cluster, under the default prefix.
    pub async fn store(&self) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect(self.options("flotilla/")).await
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// SIGKILLs member `i` (no clean shutdown) and reaps it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data dir (it rejoins the cluster; [`Self::wait_healthy`]
    /// waits for that).
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    /// Waits until every running member answers a linearizable read through itself alone (it
    /// has a leader and has caught up), e.g. before stopping another one.
    pub async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for (i, endpoint) in self.endpoints().into_iter().enumerate() {
            if !self.is_running(i) {
                continue;
            }
            let mut options = self.options("health/");
            options.endpoints = vec![endpoint];
            loop {
                let answered = tokio::time::timeout(Duration::from_secs(5), EtcdStore::connect(options.clone())).await;
                if let Ok(Ok(_)) = answered {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "etcd member {i} did not become healthy within 60 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    fn spawn(&mut self, i: usize) {
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))
            .expect("etcd log file");
        let mut command = Command::new("etcd");
        command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            // Flotilla's transactions can be larger than etcd's defaults (128 operations,
            // 1.5 MiB): a service scaling by a thousand tasks writes them in one.
            .args(["--max-txn-ops", "10000", "--max-request-bytes", "33554432"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(self.tls.iter().flat_map(|tls| {
                let file = |p: &Option<PathBuf>| p.as_ref().expect("TLS file").display().to_string();
                let dir = self.dir.path();
                [
                    "--cert-file".to_owned(),
                    dir.join("server.pem").display().to_string(),
                    "--key-file".to_owned(),
                    dir.join("server.key").display().to_string(),
                    "--trusted-ca-file".to_owned(),
                    file(&tls.ca),
                    "--client-cert-auth".to_owned(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log);
        // SAFETY: prctl only, between fork and exec: async-signal-safe. The member dies with
        // the thread that started it, so a test that is killed leaves no etcd behind.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("etcd starts (scripts/deps.sh installs etcd-server)");
        self.members[i].child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), self.store()).await {
                return;
            }
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(child) = &mut m.child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    let log =
                        std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name))).unwrap_or_default();
                    panic!("etcd member {i} exited with {status}:\n{log}");
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "etcd cluster did not form within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl` in
/// `dir`.
fn make_certificates(dir: &Path) -> TlsFiles {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"],
        &key[..],
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=flotilla test CA"],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write client.ext");
    for name in ["server", "client"] {
        let (key_file, csr, pem, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        run(&[&["req"], &key[..], &["-keyout", &key_file, "-out", &csr, "-subj", &format!("/CN={name}")]].concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    TlsFiles { ca: Some(dir.join("ca.pem")), cert: Some(dir.join("client.pem")), key: Some(dir.join("client.key")) }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}
