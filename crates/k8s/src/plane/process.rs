//! The processes of a launched plane: how each is started, found again after Flotilla restarts
//! (its pid file, and `/proc/<pid>/cmdline` naming the cluster's directory, so a reused pid is
//! never taken for ours), stopped, and restarted when it dies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

/// The parts of a launched control plane, in start order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Etcd, Component::ApiServer, Component::ControllerManager];

    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
        }
    }
}

/// How to run one component: its program and arguments (which name the cluster's directory).
#[derive(Clone, Debug)]
pub struct Launch {
    pub component: Component,
    pub program: PathBuf,
    pub args: Vec<String>,
}

fn pid_file(dir: &Path, component: Component) -> PathBuf {
    dir.join(format!("{}.pid", component.name()))
}

/// Whether `pid` is a live process whose command line names `dir` (a zombie's is empty).
fn is_ours(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    !needle.is_empty() && cmdline.windows(needle.len()).any(|w| w == needle)
}

/// The running process of `component` for the cluster in `dir`, if any.
pub fn running_pid(dir: &Path, component: Component) -> Option<u32> {
    let pid = std::fs::read_to_string(pid_file(dir, component)).ok()?.trim().parse().ok()?;
    is_ours(pid, dir).then_some(pid)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; the pid was just checked to be ours.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Starts `launch` for the cluster in `dir`, output appended to `<dir>/<name>.log`, in a process
/// group of its own (a terminal's Ctrl-C for Flotilla is not for it), and records its pid.
pub fn spawn(dir: &Path, launch: &Launch) -> Result<Child, String> {
    let log_path = dir.join(format!("{}.log", launch.component.name()));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| format!("{}: {e}", log_path.display()))?;
    let child = Command::new(&launch.program)
        .args(&launch.args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", launch.program.display()))?;
    let pid_path = pid_file(dir, launch.component);
    super::pki::write_file(&pid_path, child.id().to_string().as_bytes(), false).map_err(|e| e.to_string())?;
    Ok(child)
}

/// Stops `component` of the cluster in `dir` if it runs: SIGTERM, then SIGKILL after `grace`.
/// `child`, when this process started it, is reaped.
pub async fn stop(dir: &Path, component: Component, child: Option<&mut Child>, grace: Duration) {
    let Some(pid) = running_pid(dir, component) else {
        if let Some(child) = child {
            let _ = child.try_wait();
        }
        return;
    };
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    let mut child = child;
    loop {
        if let Some(child) = child.as_deref_mut() {
            let _ = child.try_wait();
        }
        if !is_ours(pid, dir) {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(component = component.name(), pid, "did not stop on SIGTERM; killing it");
            signal(pid, libc::SIGKILL);
            if let Some(child) = child.as_deref_mut() {
                let _ = child.wait();
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(pid_file(dir, component));
}

/// Restart pacing per component: 1 s after a death, doubling to a minute for one that keeps
/// dying, back to 1 s once it has stayed up a minute.
struct Backoff {
    delay: Duration,
    next: Instant,
    started: Instant,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Keeps the plane in `dir` running until `stop` fires: every second each component is
/// checked and one that is gone is started again (logged, with backoff). `children`: the
/// processes this Flotilla started (to reap them); adopted ones are watched through their pid.
pub async fn supervise(
    cluster: String,
    dir: PathBuf,
    launches: Vec<Launch>,
    mut children: HashMap<Component, Child>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> HashMap<Component, Child> {
    let now = Instant::now();
    let mut backoff: HashMap<Component, Backoff> = launches
        .iter()
        .map(|l| (l.component, Backoff { delay: Duration::from_secs(1), next: now, started: now }))
        .collect();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return children,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        for launch in &launches {
            if let Some(child) = children.get_mut(&launch.component)
                && let Ok(Some(status)) = child.try_wait()
            {
                tracing::warn!(cluster, component = launch.component.name(), %status, "exited");
                children.remove(&launch.component);
            }
            if running_pid(&dir, launch.component).is_some() {
                continue;
            }
            let pace = backoff.get_mut(&launch.component).expect("a backoff per launch");
            let now = Instant::now();
            if now < pace.next {
                continue;
            }
            if now.duration_since(pace.started) > MAX_BACKOFF {
                pace.delay = Duration::from_secs(1);
            }
            tracing::warn!(
                cluster,
                component = launch.component.name(),
                log = %dir.join(format!("{}.log", launch.component.name())).display(),
                "not running; starting it again"
            );
            match spawn(&dir, launch) {
                Ok(child) => {
                    children.insert(launch.component, child);
                }
                Err(e) => tracing::error!(cluster, component = launch.component.name(), "{e}"),
            }
            pace.started = now;
            pace.next = now + pace.delay;
            pace.delay = (pace.delay * 2).min(MAX_BACKOFF);
        }
    }
}
