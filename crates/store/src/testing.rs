//! Real etcd clusters for tests (feature `testing`): `n` members of Debian's `etcd` on free
//! loopback ports, each with its data dir in one temporary directory. Members can be killed
//! (SIGKILL) and started again on the same data; dropping the cluster kills every member.
//!
//! A member also dies with the thread that started it (so a killed test leaves no etcd
//! behind): start and restart members from a thread that outlives them (the test's own, or a
//! runtime worker), not from `spawn_blocking`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{EtcdOptions, EtcdStore, StoreError, TlsFiles};

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
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers (it has elected a leader).
    /// Panics if `etcd` is missing (`scripts/deps.sh` installs it) or the cluster never forms.
    pub async fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::Builder::new().prefix("flotilla-etcd-").tempdir().expect("a temp dir for etcd");
        let members = (0..n)
            .map(|i| Member { name: format!("m{i}"), client_port: free_port(), peer_port: free_port(), child: None })
            .collect();
        let token = dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut cluster = EtcdCluster { dir, token, members };
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

    /// Options for [`EtcdStore::connect`] under `prefix`, with every member.
    pub fn options(&self, prefix: &str) -> EtcdOptions {
        let mut options = EtcdOptions::from_url(&self.url(), TlsFiles::default()).expect("cluster URL parses");
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

    /// Starts member `i` again on its data dir (it rejoins the cluster).
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
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
        let client = format!("http://127.0.0.1:{}", member.client_port);
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
            // Flotilla's transactions can be larger than etcd's default of 128 operations.
            .args(["--max-txn-ops", "10000"])
            .args(["--logger", "zap", "--log-level", "warn"])
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

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}
