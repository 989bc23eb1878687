//! The Linux backend: one `flotilla-shim` process per task, reached over the task's socket.
//! This side only spawns shims and forwards requests; all kernel work happens in the shim,
//! so the agent can crash or restart without touching a running task.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use crate::error::SandboxError;
use crate::protocol::{
    CONTAINER_LOG_FILE, CONTAINERS_DIR, LOCK_FILE, MAX_MESSAGE_BYTES, Reply, Request, SOCKET_FILE, STATE_FILE,
};
use crate::sandbox::{
    BoxFuture, ContainerStarted, ExecProcess, InteractiveSpec, NetworkAttachment, Sandbox, TaskHandle,
};
use crate::scratch_pool::{ScratchPool, ScratchPoolConfig};
use crate::status::{ExecResult, ExecSpec, TaskStats, TaskStatus};
use crate::task::{DEFAULT_EPHEMERAL_STORAGE_GIB, TaskSpec, valid_task_id};

#[derive(Debug, Clone)]
pub struct LinuxSandboxConfig {
    /// Task directories live here, one per task id. Keep it on a real disk: each task's
    /// scratch filesystem image is a (sparse) file inside its directory.
    pub root: PathBuf,
    pub shim_binary: PathBuf,
    pub runc_binary: PathBuf,
    /// The OCI runtime the shim drives: `builtin` (Flotilla's own, `flotilla-shim oci`),
    /// `runc`, or `auto` (builtin on cgroup v1 hosts, runc on v2 ones, where the builtin
    /// runtime has not yet run on a real host). Default: `$FLOTILLA_RUNTIME`, else `auto`.
    pub runtime: String,
    /// Cgroup parent of all tasks (`/sys/fs/cgroup/<ctrl>/<parent>/<task>` on v1).
    pub cgroup_parent: String,
    /// Static init for `initProcessEnabled`; `None` lets the shim look for tini-static.
    pub init_binary: Option<PathBuf>,
    /// Upper bound for one request other than exec (creating a task with many containers,
    /// destroying one that resists).
    pub request_timeout: Duration,
    /// Scratch filesystems made ahead of time (`scratch_pool.rs`).
    pub scratch_pool: ScratchPoolConfig,
    /// One shared btrfs for every task's scratch space (`shared_scratch`) where the host
    /// allows, instead of one ext4 per task. Opt-in (`FLOTILLA_SHARED_SCRATCH=1`): it saves
    /// ~0.3 MiB of slab and the mkfs per task (host memory all in measured the same:
    /// docs/benchmarks.md, issue 13), but btrfs's `statfs` ignores quota
    /// groups, so `df` in a task shows the whole filesystem rather than its ephemeral storage
    /// as Fargate does (writes past the limit still fail, with EDQUOT).
    pub shared_scratch: bool,
    /// Each task's mounts in a mount namespace of its shim's own (`mntns`), so that the
    /// host's table, which every new mount namespace copies, does not grow with the tasks.
    /// Default on; `FLOTILLA_TASK_MOUNT_NAMESPACES=0` keeps them in the host's.
    pub own_mount_namespaces: bool,
}

impl Default for LinuxSandboxConfig {
    fn default() -> Self {
        let shim_binary = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("flotilla-shim")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("flotilla-shim"));
        LinuxSandboxConfig {
            root: PathBuf::from("/var/lib/flotilla/tasks"),
            shim_binary,
            runc_binary: PathBuf::from("runc"),
            runtime: std::env::var("FLOTILLA_RUNTIME").unwrap_or_else(|_| "auto".to_string()),
            cgroup_parent: "flotilla".to_string(),
            init_binary: None,
            request_timeout: Duration::from_secs(120),
            scratch_pool: ScratchPoolConfig::default(),
            shared_scratch: std::env::var("FLOTILLA_SHARED_SCRATCH").is_ok_and(|v| v == "1"),
            own_mount_namespaces: std::env::var("FLOTILLA_TASK_MOUNT_NAMESPACES").map_or(true, |v| v != "0"),
        }
    }
}

pub struct LinuxSandbox {
    config: LinuxSandboxConfig,
    /// Per task, serialises its shim's launches so two requests for a dead shim do not race to
    /// restart it; different tasks' shims start side by side. An entry lives while a launch
    /// holds or awaits it.
    launching: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    pool: Option<ScratchPool>,
    /// The host's shared scratch filesystem (`shared_scratch`), when it has one: then no pool.
    shared: Option<crate::shared_scratch::SharedScratch>,
    /// The host's cgroup mounts, read once and handed to every shim (and by it to the
    /// runtime) so that no task start reads the whole mount table (`CGROUP_MOUNTS_ENV`).
    cgroup_mounts: Option<String>,
    /// What new shims make their mount namespaces from; `None` keeps tasks' mounts in the
    /// host's namespace.
    mount_template: Option<crate::mntns::Template>,
}

impl LinuxSandbox {
    /// Also starts filling the scratch filesystem pool in the background.
    /// Tasks' scratch space comes from the host's shared filesystem when it can be had (one
    /// btrfs, a subvolume per task); otherwise each task gets its own, from the pool.
    pub fn new(config: LinuxSandboxConfig) -> Self {
        let shared = config.shared_scratch.then(|| {
            let _ = std::fs::create_dir_all(&config.root);
            crate::shared_scratch::SharedScratch::open(&config.root)
        });
        let shared = shared.flatten();
        let pool = match shared {
            Some(_) => {
                // Started empty, it only clears what an earlier pool on this root left.
                let off = ScratchPoolConfig { default_ready: 0, ..ScratchPoolConfig::default() };
                ScratchPool::start(&config.root, DEFAULT_EPHEMERAL_STORAGE_GIB, off)
            }
            None => ScratchPool::start(&config.root, DEFAULT_EPHEMERAL_STORAGE_GIB, config.scratch_pool.clone()),
        };
        let cgroup_mounts = flotilla_runtime::mountinfo::cgroup_lines().ok().filter(|l| !l.is_empty());
        // After the shared scratch filesystem: the template copies what is mounted now.
        let mount_template = config.own_mount_namespaces.then(|| crate::mntns::Template::start(&config.root));
        let mount_template = match mount_template {
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no mount namespace template; tasks' mounts go in the host's namespace");
                None
            }
            Some(Ok(t)) => Some(t),
            None => None,
        };
        LinuxSandbox {
            config,
            launching: std::sync::Mutex::new(HashMap::new()),
            pool,
            shared,
            cgroup_mounts,
            mount_template,
        }
    }

    /// The host's shared scratch filesystem, when tasks' scratch space comes from one.
    pub fn shared_scratch(&self) -> Option<&crate::shared_scratch::SharedScratch> {
        self.shared.as_ref()
    }

    /// The scratch filesystem pool, if pooling is on and the host has loop devices.
    pub fn scratch_pool(&self) -> Option<&ScratchPool> {
        self.pool.as_ref()
    }

    pub fn config(&self) -> &LinuxSandboxConfig {
        &self.config
    }

    pub fn task_dir(&self, task_id: &str) -> PathBuf {
        self.config.root.join(task_id)
    }

    fn check_id(&self, task_id: &str) -> Result<PathBuf, SandboxError> {
        if !valid_task_id(task_id) {
            return Err(SandboxError::TaskNotFound { task_id: task_id.to_string() });
        }
        Ok(self.task_dir(task_id))
    }

    /// Starts a shim for `dir` unless one answers already. A shim started on a directory
    /// that has a state file adopts the task recorded there.
    async fn ensure_shim(&self, task_id: &str, dir: &Path) -> Result<(), SandboxError> {
        let turn = {
            let mut launching = self.launching.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            launching.entry(task_id.to_string()).or_default().clone()
        };
        let result = {
            let _guard = turn.lock().await;
            self.launch_shim(task_id, dir).await
        };
        let mut launching = self.launching.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Ours and the table's: nobody else holds or awaits this task's turn.
        if Arc::strong_count(&turn) == 2 {
            launching.remove(task_id);
        }
        result
    }

    async fn launch_shim(&self, task_id: &str, dir: &Path) -> Result<(), SandboxError> {
        if UnixStream::connect(dir.join(SOCKET_FILE)).await.is_ok() {
            return Ok(());
        }
        let mut cmd = tokio::process::Command::new(&self.config.shim_binary);
        cmd.arg("--task-dir")
            .arg(dir)
            .arg("--runc")
            .arg(&self.config.runc_binary)
            .arg("--runtime")
            .arg(&self.config.runtime)
            .arg("--cgroup-parent")
            .arg(&self.config.cgroup_parent);
        if let Some(init) = &self.config.init_binary {
            cmd.arg("--init").arg(init);
        }
        if let Some(shared) = &self.shared {
            cmd.arg("--scratch-holder").arg(shared.holder().to_string());
        }
        if let Some(template) = &self.mount_template {
            cmd.arg("--mount-template").arg(template.path());
        }
        if let Some(lines) = &self.cgroup_mounts {
            cmd.env(flotilla_runtime::mountinfo::CGROUP_MOUNTS_ENV, lines);
        }
        // The launcher exits once the daemonised shim listens (or has failed); its stderr
        // carries the failure.
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(false);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| SandboxError::ShimStart { task_id: task_id.to_string(), message: "timed out".into() })?
            .map_err(|e| SandboxError::ShimStart {
                task_id: task_id.to_string(),
                message: format!("{}: {e}", self.config.shim_binary.display()),
            })?;
        if !out.status.success() {
            return Err(SandboxError::ShimStart {
                task_id: task_id.to_string(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// A connection to the task's shim, restarting a dead shim once.
    pub(crate) async fn connect(&self, task_id: &str) -> Result<UnixStream, SandboxError> {
        let dir = self.check_id(task_id)?;
        if !dir.exists() {
            return Err(SandboxError::TaskNotFound { task_id: task_id.to_string() });
        }
        match UnixStream::connect(dir.join(SOCKET_FILE)).await {
            Ok(s) => Ok(s),
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) => {
                self.ensure_shim(task_id, &dir).await?;
                UnixStream::connect(dir.join(SOCKET_FILE))
                    .await
                    .map_err(|source| SandboxError::ShimIo { task_id: task_id.to_string(), source })
            }
            Err(source) => Err(SandboxError::ShimIo { task_id: task_id.to_string(), source }),
        }
    }

    /// One exchange with the task's shim, restarting a dead shim once.
    async fn call(&self, task_id: &str, req: &Request, timeout: Duration) -> Result<Reply, SandboxError> {
        let stream = self.connect(task_id).await?;
        let exchange = exchange(stream, req);
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(SandboxError::ShimTimeout { task_id: task_id.to_string(), seconds: timeout.as_secs() }),
            Ok(Err(source)) => Err(SandboxError::ShimIo { task_id: task_id.to_string(), source }),
            Ok(Ok(Reply::Error(e))) => Err(SandboxError::from_shim(task_id, e)),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    async fn create(&self, spec: TaskSpec) -> Result<TaskHandle, SandboxError> {
        spec.validate()?;
        let task_id = spec.task_id.clone();
        let dir = self.task_dir(&task_id);
        create_private_dir(&self.config.root)?;
        create_private_dir(&dir)?;
        let t = std::time::Instant::now();
        self.ensure_shim(&task_id, &dir).await?;
        let shim = t.elapsed();
        // Held until the shim has answered: it keeps the device attached while the shim takes
        // it over, and deletes the image if the shim did not (see `scratch_pool.rs`).
        let pooled = self.pool.as_ref().and_then(|p| p.take(spec.ephemeral_storage_gib()));
        let req = Request::Create { spec: Box::new(spec), scratch: pooled.as_ref().map(|p| p.scratch().clone()) };
        let pooled_scratch = pooled.is_some();
        let result = self.call(&task_id, &req, self.config.request_timeout).await;
        drop(pooled);
        if let Ok(Reply::Created(report)) = &result {
            let timings = &report.timings;
            tracing::debug!(task_id, ?shim, created = ?t.elapsed(), pooled_scratch, ?timings, "sandbox created");
        }
        match result {
            Ok(Reply::Created(report)) => Ok(TaskHandle {
                task_id,
                network: NetworkAttachment::NetNs { path: report.netns },
                ephemeral_storage_limited: report.ephemeral_storage_limited,
                timings: report.timings,
            }),
            Ok(other) => Err(unexpected(&task_id, &other)),
            Err(SandboxError::AlreadyExists { task_id }) => Err(SandboxError::AlreadyExists { task_id }),
            Err(e) => {
                // A half-built sandbox is worth nothing; leave no trace, report the cause.
                if let Err(cleanup) = self.remove(&task_id).await {
                    tracing::warn!(task_id, error = %cleanup, "cleaning up after a failed create");
                }
                Err(e)
            }
        }
    }

    async fn remove(&self, task_id: &str) -> Result<(), SandboxError> {
        let dir = self.check_id(task_id)?;
        if !dir.exists() {
            return Ok(());
        }
        match self.call(task_id, &Request::Destroy, self.config.request_timeout).await {
            Ok(Reply::Destroyed) | Err(SandboxError::TaskNotFound { .. }) => Ok(()),
            Ok(other) => Err(unexpected(task_id, &other)),
            Err(e) => Err(e),
        }
    }

    async fn adopt(&self) -> Result<Vec<String>, SandboxError> {
        let root = &self.config.root;
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(crate::error::PathError::new("read dir", root, e).into()),
        };
        let task_ids: Vec<String> = entries
            .flatten()
            .filter_map(|entry| {
                let task_id = entry.file_name().to_str().map(str::to_string)?;
                let dir = entry.path();
                (valid_task_id(&task_id) && (dir.join(STATE_FILE).exists() || dir.join(LOCK_FILE).exists()))
                    .then_some(task_id)
            })
            .collect();
        // Side by side: a restarted agent with 1,000 tasks would otherwise ask their shims one
        // after another before serving anything.
        let asks = task_ids.into_iter().map(|task_id| async move {
            match self.call(&task_id, &Request::State, self.config.request_timeout).await {
                Ok(Reply::State(_)) => Some(task_id),
                Ok(other) => {
                    tracing::warn!(task_id, reply = ?other, "unexpected reply while adopting");
                    None
                }
                Err(e) => {
                    tracing::warn!(task_id, error = %e, "could not adopt task");
                    None
                }
            }
        });
        let mut adopted: Vec<String> = at_most(ADOPT_AT_ONCE, asks).await.into_iter().flatten().collect();
        adopted.sort();
        Ok(adopted)
    }
}

/// Shims asked at once while adopting.
const ADOPT_AT_ONCE: usize = 64;

/// Runs `futures` with at most `limit` in flight; their outputs, in no particular order.
async fn at_most<F: Future>(limit: usize, futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending = futures.into_iter();
    let mut running: Vec<std::pin::Pin<Box<F>>> = pending.by_ref().take(limit).map(Box::pin).collect();
    let mut out = Vec::new();
    std::future::poll_fn(|cx| {
        let mut i = 0;
        while i < running.len() {
            match running[i].as_mut().poll(cx) {
                std::task::Poll::Ready(v) => {
                    out.push(v);
                    match pending.next() {
                        // Polled on the next turn of this loop, which registers its waker.
                        Some(next) => running[i] = Box::pin(next),
                        None => {
                            running.swap_remove(i);
                        }
                    }
                }
                std::task::Poll::Pending => i += 1,
            }
        }
        if running.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    out
}

async fn exchange(stream: UnixStream, req: &Request) -> io::Result<Reply> {
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await?;
    let mut reader = BufReader::new(read).take(MAX_MESSAGE_BYTES as u64 + 1);
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf).await?;
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the shim closed the connection without a reply"));
    }
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn create_private_dir(dir: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(crate::error::PathError::new("mkdir", dir, e).into()),
    }
}

pub(crate) fn unexpected(task_id: &str, reply: &Reply) -> SandboxError {
    SandboxError::Protocol { task_id: task_id.to_string(), reply: format!("{reply:?}") }
}

impl Sandbox for LinuxSandbox {
    fn create_task(&self, spec: TaskSpec) -> BoxFuture<'_, Result<TaskHandle, SandboxError>> {
        Box::pin(self.create(spec))
    }

    fn volume_dir(&self, task_id: &str, volume: &str) -> Option<PathBuf> {
        // The shim makes `<task>/data/volumes/<volume>` on the task's scratch filesystem,
        // mounted in its own namespace: reached through the shim's root.
        let simple = !volume.is_empty() && volume != "." && volume != ".." && !volume.contains('/');
        if !(valid_task_id(task_id) && simple) {
            return None;
        }
        let dir = self.task_dir(task_id);
        let root = crate::mntns::shim_root(&dir)?;
        Some(crate::mntns::under(&root, &dir.join("data").join("volumes").join(volume)))
    }

    fn start_container<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
    ) -> BoxFuture<'a, Result<ContainerStarted, SandboxError>> {
        Box::pin(async move {
            let req = Request::Start { container: container.to_string() };
            match self.call(task_id, &req, self.config.request_timeout).await? {
                Reply::Started(r) => Ok(ContainerStarted { pid: r.pid, timings: r.timings }),
                other => Err(unexpected(task_id, &other)),
            }
        })
    }

    fn signal<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
        signal: i32,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let req = Request::Kill { container: container.to_string(), signal };
            match self.call(task_id, &req, self.config.request_timeout).await? {
                Reply::Signalled => Ok(()),
                other => Err(unexpected(task_id, &other)),
            }
        })
    }

    fn state<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskStatus, SandboxError>> {
        Box::pin(async move {
            match self.call_read_only(task_id, &Request::State).await? {
                Reply::State(s) => Ok(s),
                other => Err(unexpected(task_id, &other)),
            }
        })
    }

    fn stats<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskStats, SandboxError>> {
        Box::pin(async move {
            match self.call_read_only(task_id, &Request::Stats).await? {
                Reply::Stats(s) => Ok(s),
                other => Err(unexpected(task_id, &other)),
            }
        })
    }

    fn exec<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
        exec: ExecSpec,
    ) -> BoxFuture<'a, Result<ExecResult, SandboxError>> {
        Box::pin(async move {
            // The shim enforces the command's timeout; allow for runc's own start-up on top.
            let timeout = Duration::from_millis(exec.timeout_ms) + Duration::from_secs(30);
            let req = Request::Exec { container: container.to_string(), exec };
            match self.call(task_id, &req, timeout).await? {
                Reply::Exec(r) => Ok(r),
                other => Err(unexpected(task_id, &other)),
            }
        })
    }

    fn exec_interactive<'a>(
        &'a self,
        task_id: &'a str,
        container: &'a str,
        spec: InteractiveSpec,
    ) -> BoxFuture<'a, Result<ExecProcess, SandboxError>> {
        Box::pin(self.exec_stream(task_id, container, spec))
    }

    fn destroy<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(self.remove(task_id))
    }

    fn adopt_existing(&self) -> BoxFuture<'_, Result<Vec<String>, SandboxError>> {
        Box::pin(self.adopt())
    }

    fn container_log(&self, task_id: &str, container: &str) -> PathBuf {
        self.task_dir(task_id).join(CONTAINERS_DIR).join(container).join(CONTAINER_LOG_FILE)
    }

    fn wait_change<'a>(
        &'a self,
        task_id: &'a str,
        seen: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<TaskStatus, SandboxError>> {
        Box::pin(self.wait(task_id, seen, timeout))
    }

    fn network_namespace(&self, task_id: &str) -> PathBuf {
        crate::namespaces::paths(&self.task_dir(task_id), false).net
    }

    fn resolv_conf(&self, task_id: &str) -> PathBuf {
        // Where the shim's create writes it (`rootfs::write_etc_files` into `<task>/etc`).
        self.task_dir(task_id).join("etc").join("resolv.conf")
    }
}

/// How long a wait on a shim that predates `Request::Wait` sleeps before sampling the state:
/// the agent's sampling period from before shims reported changes.
const LEGACY_WAIT: Duration = Duration::from_millis(100);

impl LinuxSandbox {
    /// The shim answers a `Wait` when its generation moves; this side only adds fallbacks.
    async fn wait(&self, task_id: &str, seen: u64, timeout: Duration) -> Result<TaskStatus, SandboxError> {
        let req = Request::Wait { seen, timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) };
        match self.call(task_id, &req, timeout.saturating_add(self.config.request_timeout)).await {
            Ok(Reply::State(s)) => Ok(s),
            Ok(other) => Err(unexpected(task_id, &other)),
            // A shim started by an older agent does not know `wait` (it answers that the
            // request could not be parsed): sample its state at the old pace.
            Err(SandboxError::Protocol { .. }) => {
                tokio::time::sleep(timeout.min(LEGACY_WAIT)).await;
                self.state(task_id).await
            }
            // The shim died under the wait (or the task was destroyed and it exited): `state`
            // starts a new shim, which adopts the task, or reports it gone.
            Err(SandboxError::ShimIo { .. }) => self.state(task_id).await,
            Err(e) => Err(e),
        }
    }

    /// An exchange that changes nothing, tried again while the shim it reached is dying. A
    /// killed shim's threads close its socket last, after its main thread is already gone, so
    /// a connection made in between is reset rather than refused; the next attempt finds the
    /// socket refused and starts a new shim, which adopts the task.
    async fn call_read_only(&self, task_id: &str, req: &Request) -> Result<Reply, SandboxError> {
        let mut pause = Duration::from_millis(10);
        for _ in 0..5 {
            match self.call(task_id, req, self.config.request_timeout).await {
                Err(SandboxError::ShimIo { .. }) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
        self.call(task_id, req, self.config.request_timeout).await
    }
}
