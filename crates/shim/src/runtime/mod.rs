//! The task as the shim owns it: setup (`create.rs`), container processes (`container.rs`,
//! created ahead of their start by `precreate.rs`), teardown (`destroy.rs`), and the cheap
//! queries here.
//!
//! Concurrency: `ops` serialises the operations that change the host (create, start,
//! destroy); `state` is held only for short reads and updates, so `state`, `stats`, `kill`
//! and `exec` answer while a start is in progress.

mod container;
mod create;
mod destroy;
mod exec;
mod precreate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use flotilla_sandbox::cgroup::Cgroups;
use flotilla_sandbox::error::chain;
use flotilla_sandbox::protocol::{CONTAINERS_DIR, Reply, Request, ShimError, ShimErrorKind};
use flotilla_sandbox::spec::HostLimits;
use flotilla_sandbox::{ContainerState, TaskPhase, TaskStats, TaskStatus};

use crate::logs::{LogLimits, SharedLog, Syncer};
use crate::reaper::Reaper;
use crate::runc::Runc;
use crate::state::Persisted;

pub struct ShimConfig {
    pub task_dir: PathBuf,
    pub runc: PathBuf,
    pub runtime: RuntimeKind,
    pub cgroup_parent: String,
    pub init: Option<PathBuf>,
    /// This binary, re-executed as `pause` for shared PID namespaces.
    pub self_exe: PathBuf,
    pub log_limits: LogLimits,
    /// The root of the host's shared scratch filesystem, when the agent has one.
    pub shared_scratch: Option<std::os::fd::OwnedFd>,
    /// The host's mount namespace, when the task's mounts live in one of the shim's own
    /// (`flotilla_sandbox::mntns`): the network namespace is pinned there too.
    pub host_mounts: Option<std::os::fd::OwnedFd>,
}

pub struct Runtime {
    cfg: ShimConfig,
    task_id: String,
    reaper: Arc<Reaper>,
    runc: Runc,
    cgroups: Cgroups,
    host_limits: HostLimits,
    state: Mutex<Persisted>,
    /// Signalled by [`Runtime::update`] after every change, for `Wait` requests.
    changed: Condvar,
    ops: Mutex<()>,
    syncer: Arc<Syncer>,
    logs: Mutex<HashMap<String, SharedLog>>,
    /// Containers whose `runc create` already ran (`precreate.rs`).
    precreated: Mutex<precreate::PrecreatedMap>,
    exec_seq: AtomicU64,
}

/// Which OCI runtime creates the task's containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// The builtin runtime on cgroup v1, runc on cgroup v2 (where the builtin one, device
    /// filter included, has not yet run on a real v2 host).
    Auto,
    /// `flotilla-shim oci` (crates/runtime), state under `<task>/oci`.
    Builtin,
    /// runc, state under `<task>/runc`.
    Runc,
}

impl RuntimeKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RuntimeKind::Auto),
            "builtin" => Ok(RuntimeKind::Builtin),
            "runc" => Ok(RuntimeKind::Runc),
            other => Err(format!("unknown runtime {other:?} (auto, builtin or runc)")),
        }
    }

    /// The runtime a task uses: the one whose state directory it already has (a task keeps
    /// its runtime across shim restarts), else the configured one (`Auto` resolved).
    fn choose(configured: RuntimeKind, task_dir: &Path, cgroups: &Cgroups) -> RuntimeKind {
        if task_dir.join("runc").exists() {
            RuntimeKind::Runc
        } else if task_dir.join("oci").exists() {
            RuntimeKind::Builtin
        } else if configured == RuntimeKind::Auto {
            if cgroups.version() == 2 { RuntimeKind::Runc } else { RuntimeKind::Builtin }
        } else {
            configured
        }
    }

    fn driver(self, cfg: &ShimConfig, reaper: Arc<Reaper>) -> Runc {
        match self {
            RuntimeKind::Builtin | RuntimeKind::Auto => {
                // Beside the task directories: one cache for the host's tasks.
                let root = cfg.task_dir.parent().unwrap_or(&cfg.task_dir);
                let cache = root.join(flotilla_sandbox::protocol::SECCOMP_CACHE_DIR);
                Runc::builtin(cfg.self_exe.clone(), cfg.task_dir.join("oci"), &cache, reaper)
            }
            RuntimeKind::Runc => Runc::new(cfg.runc.clone(), vec![], cfg.task_dir.join("runc"), reaper),
        }
    }
}

pub type ShimResult<T> = Result<T, ShimError>;

pub(crate) fn runtime_err(e: &dyn std::error::Error) -> ShimError {
    ShimError::new(ShimErrorKind::Runtime, chain(e))
}

pub(crate) fn io_err(what: &str, path: &Path, e: std::io::Error) -> ShimError {
    ShimError::new(ShimErrorKind::Runtime, format!("{what} {}: {e}", path.display()))
}

impl Runtime {
    /// Opens the task directory. If a previous shim left a state file, the task is adopted:
    /// its containers are re-attached (see `container.rs`).
    pub fn open(cfg: ShimConfig, reaper: Arc<Reaper>) -> Result<Arc<Runtime>, String> {
        let task_id = cfg
            .task_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("task dir {} has no usable name", cfg.task_dir.display()))?
            .to_string();
        let existing = Persisted::load(&cfg.task_dir).map_err(|e| format!("reading state.json: {e}"))?;
        let cgroup_parent = existing.as_ref().map_or(cfg.cgroup_parent.clone(), |p| p.cgroup_parent.clone());
        let cgroups = Cgroups::detect(&cgroup_parent).map_err(|e| chain(&e))?;
        let kind = RuntimeKind::choose(cfg.runtime, &cfg.task_dir, &cgroups);
        let runc = kind.driver(&cfg, reaper.clone());
        let adopting = existing.is_some();
        let state = existing.unwrap_or_else(|| Persisted::new(task_id.clone(), cgroup_parent));
        let rt = Arc::new(Runtime {
            cfg,
            task_id,
            reaper,
            runc,
            cgroups,
            host_limits: HostLimits::current(),
            state: Mutex::new(state),
            changed: Condvar::new(),
            ops: Mutex::new(()),
            syncer: Syncer::new(),
            logs: Mutex::new(HashMap::new()),
            precreated: Mutex::new(HashMap::new()),
            exec_seq: AtomicU64::new(0),
        });
        if adopting {
            rt.adopt();
        }
        Ok(rt)
    }

    pub fn handle(self: &Arc<Self>, req: Request) -> Reply {
        let result = match req {
            Request::Create { spec, scratch } => self.create(*spec, scratch).map(Reply::Created),
            Request::Start { container } => self.start(&container).map(Reply::Started),
            Request::Kill { container, signal } => self.kill(&container, signal).map(|()| Reply::Signalled),
            Request::State => Ok(Reply::State(self.lock_state().status())),
            Request::Wait { seen, timeout_ms } => Ok(Reply::State(self.wait(seen, Duration::from_millis(timeout_ms)))),
            Request::Stats => self.stats().map(Reply::Stats),
            Request::Exec { container, exec } => self.exec(&container, &exec).map(Reply::Exec),
            Request::Destroy => self.destroy().map(|()| Reply::Destroyed),
            Request::ExecStream { .. } => {
                Err(ShimError::new(ShimErrorKind::Protocol, "exec_stream needs a connection of its own"))
            }
        };
        result.unwrap_or_else(Reply::Error)
    }

    fn lock_state(&self) -> MutexGuard<'_, Persisted> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_ops(&self) -> MutexGuard<'_, ()> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_precreated(&self) -> MutexGuard<'_, precreate::PrecreatedMap> {
        self.precreated.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to the state, persists the result and wakes the waiters. Every change of
    /// the task goes through here (a container's exit too: its watcher thread records it as
    /// soon as the reaper hands it the status), so waiters learn of each one at once.
    fn update(&self, f: impl FnOnce(&mut Persisted)) -> ShimResult<()> {
        let mut st = self.lock_state();
        f(&mut st);
        st.changed();
        let saved = st.save(&self.cfg.task_dir);
        drop(st);
        // Even an unsaved change is what `State` now reports.
        self.changed.notify_all();
        saved.map_err(|e| io_err("writing", &Persisted::path(&self.cfg.task_dir), e))
    }

    /// The state once its generation differs from `seen`, or after `timeout`.
    fn wait(&self, seen: u64, timeout: Duration) -> TaskStatus {
        self.wait_while(timeout, |st| st.generation == seen).status()
    }

    /// Blocks while `busy` holds of the state, for at most `timeout`; every update wakes it.
    fn wait_while(&self, timeout: Duration, busy: impl FnMut(&mut Persisted) -> bool) -> MutexGuard<'_, Persisted> {
        let st = self.lock_state();
        self.changed.wait_timeout_while(st, timeout, busy).unwrap_or_else(|e| e.into_inner()).0
    }

    fn container_dir(&self, name: &str) -> PathBuf {
        self.cfg.task_dir.join(CONTAINERS_DIR).join(name)
    }

    fn data_dir(&self) -> PathBuf {
        self.cfg.task_dir.join("data")
    }

    fn require_phase(&self, phase: TaskPhase) -> ShimResult<()> {
        let current = self.lock_state().phase;
        if current != phase {
            return Err(ShimError::new(
                ShimErrorKind::InvalidState,
                format!("task is {current:?}, the request needs {phase:?}"),
            ));
        }
        Ok(())
    }

    fn container_state(&self, name: &str) -> ShimResult<ContainerState> {
        let st = self.lock_state();
        st.containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.state)
            .ok_or_else(|| ShimError::new(ShimErrorKind::NotFound, format!("no container {name:?} in this task")))
    }

    fn kill(&self, name: &str, signal: i32) -> ShimResult<()> {
        if !self.container_state(name)?.can_signal() {
            return Err(ShimError::new(ShimErrorKind::InvalidState, format!("container {name:?} is not running")));
        }
        // With a shared PID namespace, killing the container's init would leave its children
        // running (they re-parent to the task's pause process): SIGKILL takes the whole cgroup.
        let pid_shared = self.lock_state().spec.as_ref().is_some_and(|s| s.pid_mode_task);
        let all = pid_shared && signal == libc::SIGKILL;
        match self.runc.kill(name, signal, all) {
            Ok(()) => Ok(()),
            // It exited between our check and runc's.
            Err(_) if self.container_state(name)? == ContainerState::Exited => Ok(()),
            Err(e) => Err(runtime_err(&e)),
        }
    }

    fn stats(&self) -> ShimResult<TaskStats> {
        let names: Vec<String> = self.lock_state().containers.iter().map(|c| c.name.clone()).collect();
        // Containers first, their task after: counters only grow, so a task read last is never
        // behind the sum of its containers (a busy container would otherwise overtake it).
        let mut containers = std::collections::BTreeMap::new();
        for name in names {
            if let Some(s) = self.cgroups.stats(&self.task_id, Some(&name)).map_err(|e| runtime_err(&e))? {
                containers.insert(name, s);
            }
        }
        let task = self.cgroups.stats(&self.task_id, None).map_err(|e| runtime_err(&e))?.unwrap_or_default();
        let data = self.data_dir();
        let ephemeral_storage = if flotilla_sandbox::shared_scratch::is_subvolume(&data) {
            flotilla_sandbox::shared_scratch::usage(&data).map_err(|e| runtime_err(&e))?
        } else if data.exists() {
            flotilla_sandbox::ephemeral::usage(&data).map_err(|e| runtime_err(&e))?
        } else {
            Default::default()
        };
        Ok(TaskStats { task, containers, ephemeral_storage })
    }
}
