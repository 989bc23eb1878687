//! Shared fixtures for the privileged sandbox tests: prerequisite checks (fail loudly with
//! the package to install), a busybox image layer, unique task ids, deadline polling.
#![allow(dead_code)]

use std::future::Future;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flotilla_sandbox::protocol::{Request, SOCKET_FILE, request_blocking};
use flotilla_sandbox::{
    ContainerSpec, ContainerState, ContainerStatus, LinuxSandbox, LinuxSandboxConfig, Sandbox, TaskSpec, TaskStatus,
};

pub const SHIM: &str = env!("CARGO_BIN_EXE_flotilla-shim");

/// Panics with the fix when something the tests need is missing. Never skips.
pub fn require_prerequisites() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("these tests create namespaces, cgroups and mounts: run them as root");
    }
    let runc = Command::new("runc").arg("--version").output();
    if !runc.is_ok_and(|o| o.status.success()) {
        panic!("runc is missing: apt-get install -y runc");
    }
    if !is_static_elf(Path::new("/bin/busybox")) {
        panic!("a static /bin/busybox is missing: apt-get install -y busybox-static");
    }
    if Command::new("mkfs.ext4").arg("-V").output().is_err() {
        panic!("mkfs.ext4 is missing: apt-get install -y e2fsprogs");
    }
}

/// A static ELF has no PT_INTERP program header.
fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else { return false };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16at(54), u16at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) != 3
    })
}

/// One image layer: static busybox with all its applets, a user database with root and an
/// unprivileged `app` user, and an httpd document root.
pub fn busybox_layer() -> PathBuf {
    static LAYER: OnceLock<PathBuf> = OnceLock::new();
    LAYER
        .get_or_init(|| {
            require_prerequisites();
            let base = PathBuf::from("/tmp/flotilla-sandbox-test-layers");
            std::fs::create_dir_all(&base).unwrap();
            // Layers of earlier test processes that are gone are garbage now.
            for entry in std::fs::read_dir(&base).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("busybox-").and_then(|p| p.parse::<u32>().ok())
                    && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
            let layer = base.join(format!("busybox-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&layer);
            for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app", "var/www", "data"] {
                std::fs::create_dir_all(layer.join(d)).unwrap();
            }
            std::fs::copy("/bin/busybox", layer.join("bin/busybox")).unwrap();
            let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                if applet != "busybox" && !applet.is_empty() {
                    symlink("busybox", layer.join("bin").join(applet)).unwrap();
                }
            }
            std::fs::write(
                layer.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/:/bin/false\n",
            )
            .unwrap();
            std::fs::write(layer.join("etc/group"), "root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n")
                .unwrap();
            std::fs::write(layer.join("var/www/index.html"), "hello from the web container\n").unwrap();
            Command::new("chmod").arg("1777").arg(layer.join("tmp")).status().unwrap();
            layer
        })
        .clone()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Unique across test binaries, tests and runs: `<tag>-<pid>-<n>`.
pub fn task_id(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub struct Env {
    pub sandbox: LinuxSandbox,
    pub root: tempfile::TempDir,
}

pub fn config(root: &Path) -> LinuxSandboxConfig {
    LinuxSandboxConfig {
        root: root.to_path_buf(),
        shim_binary: PathBuf::from(SHIM),
        runc_binary: PathBuf::from("runc"),
        // `FLOTILLA_RUNTIME=runc` runs the same tests against runc.
        runtime: std::env::var("FLOTILLA_RUNTIME").unwrap_or_else(|_| "auto".into()),
        cgroup_parent: "flotilla".into(),
        init_binary: None,
        request_timeout: Duration::from_secs(60),
        scratch_pool: Default::default(),
        // `FLOTILLA_SHARED_SCRATCH=1` runs the same tests on the shared scratch filesystem.
        ..Default::default()
    }
}

pub fn env() -> Env {
    env_with(|_| {})
}

/// An environment whose tasks get a scratch filesystem each (loop-mounted ext4, pooled), as
/// hosts without btrfs do.
pub fn env_per_task_scratch() -> Env {
    env_with(|c| c.shared_scratch = false)
}

pub fn env_with(change: impl FnOnce(&mut LinuxSandboxConfig)) -> Env {
    require_prerequisites();
    // On the real disk: the scratch space of the tasks lives under the root.
    let root = tempfile::Builder::new().prefix("flotilla-sandbox-").tempdir_in("/var/tmp").unwrap();
    let mut config = config(root.path());
    change(&mut config);
    Env { sandbox: LinuxSandbox::new(config), root }
}

impl Env {
    /// Destroys the task when dropped, even if the test panicked first.
    pub fn guard(&self, task_id: &str) -> TaskGuard {
        TaskGuard(self.sandbox.task_dir(task_id))
    }
}

pub struct TaskGuard(pub PathBuf);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let socket = self.0.join(SOCKET_FILE);
        if socket.exists() {
            let _ = request_blocking(&socket, &Request::Destroy, Duration::from_secs(60));
        }
    }
}

/// A container running `argv` from the busybox layer.
pub fn container(name: &str, argv: &[&str]) -> ContainerSpec {
    let mut c = ContainerSpec::new(name, vec![busybox_layer()]);
    c.entry_point = Some(argv.iter().map(|s| s.to_string()).collect());
    c
}

pub fn task(task_id: &str, containers: Vec<ContainerSpec>) -> TaskSpec {
    TaskSpec {
        task_id: task_id.to_string(),
        cpu_units: 512,
        memory_mib: 1024,
        pids_limit: Some(256),
        pid_mode_task: false,
        ephemeral_storage_gib: Some(1),
        hostname: None,
        volumes: Vec::new(),
        efs_volumes: Vec::new(),
        containers,
    }
}

/// Polls `f` until it yields a value or `timeout` passes (then panics naming `what`).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the container has exited and returns its status.
pub async fn wait_exited(sandbox: &LinuxSandbox, task_id: &str, name: &str, timeout: Duration) -> ContainerStatus {
    wait_for(&format!("{task_id}/{name} to exit"), timeout, || async {
        let st: TaskStatus = sandbox.state(task_id).await.unwrap();
        st.container(name).filter(|c| c.state == ContainerState::Exited).cloned()
    })
    .await
}

pub async fn wait_running(sandbox: &LinuxSandbox, task_id: &str, name: &str) -> ContainerStatus {
    let st = sandbox.state(task_id).await.unwrap();
    let c = st.container(name).unwrap().clone();
    assert_eq!(c.state, ContainerState::Running, "{c:?}");
    c
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct LogRecord {
    pub t: u64,
    pub stream: String,
    pub line: String,
}

pub fn read_log(path: &Path) -> Vec<LogRecord> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}"))).collect()
}

/// The stdout lines of a container's log, joined.
pub fn stdout_of(env: &Env, task_id: &str, name: &str) -> String {
    read_log(&env.sandbox.container_log(task_id, name))
        .into_iter()
        .filter(|r| r.stream == "stdout")
        .map(|r| r.line + "\n")
        .collect()
}

/// Runs a one-shot container (in its own task) to completion; returns its status and stdout.
pub async fn run_once(env: &Env, tag: &str, c: ContainerSpec) -> (ContainerStatus, String) {
    let id = task_id(tag);
    let _guard = env.guard(&id);
    let name = c.name.clone();
    env.sandbox.create_task(task(&id, vec![c])).await.unwrap();
    env.sandbox.start_container(&id, &name).await.unwrap();
    let status = wait_exited(&env.sandbox, &id, &name, Duration::from_secs(30)).await;
    let out = stdout_of(env, &id, &name);
    env.sandbox.destroy(&id).await.unwrap();
    (status, out)
}

/// Alive and not a zombie waiting to be reaped by someone else.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// The parent pid of a process, from /proc.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

/// `path` (absolute, under the task directory `dir`) as reached through the task's mount
/// namespace, where its shim mounted its filesystems.
pub fn in_task(dir: &Path, path: &Path) -> PathBuf {
    let root = flotilla_sandbox::mntns::shim_root(dir).expect("the task's shim answers");
    flotilla_sandbox::mntns::under(&root, path)
}

/// Makes `cmd` run in the task's mount namespace, as the shim runs its runtime.
pub fn in_task_mounts<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let ns = std::fs::File::open(format!("/proc/{}/ns/mnt", shim_pid(dir).expect("the task's shim runs"))).unwrap();
    // SAFETY: between fork and exec the child only calls setns(2), async-signal-safe; `ns`
    // lives in the closure, so its descriptor is open then.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The mount table of the task's mount namespace (its shim's).
pub fn task_mounts(dir: &Path) -> Vec<flotilla_sandbox::mount::MountInfo> {
    let pid = shim_pid(dir).expect("the task's shim runs");
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    flotilla_sandbox::mount::parse_mountinfo(&text)
}

/// The shim serving a task directory: the process holding its lock file.
pub fn shim_pid(dir: &Path) -> Option<u32> {
    let lock = dir.join("shim.lock");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|p| p == lock) {
                return Some(pid);
            }
        }
    }
    None
}
